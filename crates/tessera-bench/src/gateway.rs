//! The gateway modes. `forward-auth` asks Tessera's forward-auth endpoint
//! directly (a `GET /gateway/auth` on the gRPC port's HTTP/2 connection, as
//! the floor's health `Check` travels), so that its ratio to the floor is
//! the cost of the answer alone. `nginx` measures a real gateway in front
//! of an application twice in the same run: alone, and asking Tessera about
//! every request (`auth_request`, examples/gateway/nginx.conf as shipped).
//! Both nginx phases are driven over HTTP/1.1 keep-alive connections, one
//! per call in flight, and hit the same in-process application.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The shipped nginx configuration, its `${…}` placeholders replaced here.
const NGINX_CONF: &str = include_str!("../../../examples/gateway/nginx.conf");

/// The host and path every gateway-mode request names; the bench's routes
/// file maps them to the bench audience, with a scope its tokens hold.
pub const HOST: &str = "api.bench.invalid";
/// See [`HOST`].
pub const PATH: &str = "/items/42?view=full";

/// The routes file the server is started with when a gateway mode runs:
/// [`HOST`] and [`PATH`] need `audience` and the scope `read`.
pub fn routes_toml(audience: &str) -> String {
    format!(
        "[[route]]\nhost = \"{HOST}\"\npath_prefix = \"/items\"\naudience = \"{audience}\"\nscopes = [\"read\"]\n"
    )
}

/// An application answering every request `200 ok` on keep-alive
/// HTTP/1.1 connections: what nginx proxies to. Stops when dropped.
pub struct App {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    pub async fn start() -> Result<Self, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("application: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_ok(stream));
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers each request on `stream` (head only: nginx sends no body here)
/// until the peer closes it.
async fn serve_ok(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    while let Ok(end) = read_head(&mut stream, &mut buf).await {
        buf.drain(..end);
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Reads from `stream` into `buf` until it holds a whole message head
/// (through the blank line); returns where the head ends.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(i + 4);
        }
        if buf.len() > 64 * 1024 {
            return Err("head over 64 KiB".into());
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// One request on a keep-alive HTTP/1.1 connection; `Ok` on a 200, with
/// whether the connection stays open (`false` after `Connection: close`,
/// which nginx sends every `keepalive_requests`). The response body (by
/// `Content-Length`) is read and dropped.
pub async fn get(stream: &mut TcpStream, request: &[u8]) -> Result<bool, String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1024);
    let end = read_head(stream, &mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let field = |wanted: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    let length: usize = field("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let keep = field("connection").is_none_or(|v| v != "close");
    let mut rest = buf.len() - end;
    while rest < length {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) => return Err("connection closed in the body".into()),
            Ok(n) => rest += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    match head.split(' ').nth(1) {
        Some("200") => Ok(keep),
        other => Err(format!("HTTP {}", other.unwrap_or("?"))),
    }
}

/// The request a client of the application sends through nginx.
pub fn request(token: &str) -> Vec<u8> {
    format!("GET {PATH} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n\r\n")
        .into_bytes()
}

/// nginx running the shipped configuration in a directory of its own, with
/// `auth_request` to Tessera or with that one directive removed (alone).
/// Killed, and its directory removed, when dropped.
pub struct Nginx {
    pub addr: SocketAddr,
    _child: tokio::process::Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Nginx {
    pub async fn start(
        tessera: &str,
        app: SocketAddr,
        key: Option<&str>,
        ask_tessera: bool,
    ) -> Result<Self, String> {
        let port = crate::server::free_port()?;
        let dir =
            std::env::temp_dir().join(format!("tessera-bench-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut conf = NGINX_CONF
            .replace("${TESSERA}", tessera.trim_start_matches("http://"))
            .replace("${TESSERA_SCHEME}", "http")
            .replace("${TESSERA_CA}", "unused.pem")
            .replace("${TESSERA_NAME}", "localhost")
            .replace("${UPSTREAM}", &app.to_string())
            .replace("${LISTEN}", &format!("127.0.0.1:{port}"))
            .replace("${GATEWAY_KEY}", key.unwrap_or_default())
            .replace("access_log access.log;", "access_log off;");
        if !ask_tessera {
            let directive = "auth_request /_tessera_auth;";
            if conf.matches(directive).count() != 1 {
                return Err(format!(
                    "examples/gateway/nginx.conf: no single `{directive}`"
                ));
            }
            conf = conf.replace(directive, "");
        }
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
        let child = tokio::process::Command::new(nginx_binary()?)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .args(["-e", "stderr", "-g", "master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("nginx: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(Self {
                    addr,
                    _child: child,
                    dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("nginx did not listen on {addr}"))
    }
}

/// `nginx` on PATH or in /usr/sbin (Debian's place for it).
fn nginx_binary() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .ok_or_else(|| "nginx is missing: scripts/services.sh installs it".to_owned())
}
