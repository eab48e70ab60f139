//! Gateways in front of a Tessera under test: nginx (`auth_request`) and
//! Caddy (`forward_auth`) run from the configurations shipped in
//! examples/gateway, an upstream that answers with the headers it received,
//! and a raw HTTP/1.1 GET that names its own Host. scripts/services.sh
//! installs nginx and Caddy.

use crate::harness::free_port;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NGINX_CONF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/gateway/nginx.conf"
);
const CADDYFILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/gateway/Caddyfile"
);

/// A gateway process listening on a free loopback port, with its
/// configuration and logs in a temporary directory of its own. Dropped, the
/// process is killed and the directory removed.
pub struct Gateway {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl Gateway {
    /// nginx running examples/gateway/nginx.conf, its placeholders replaced.
    /// One process (`master_process off`), so that killing it leaves no
    /// worker behind holding the port. Blocks until the port accepts
    /// connections (at most ~10 s).
    pub fn nginx(tessera: SocketAddr, upstream: SocketAddr, gateway_key: &str) -> Self {
        let bin = binary("nginx");
        let port = free_port();
        let dir = temp_dir("nginx");
        let conf = std::fs::read_to_string(NGINX_CONF)
            .unwrap_or_else(|e| panic!("{NGINX_CONF}: {e}"))
            .replace("${TESSERA}", &tessera.to_string())
            .replace("${TESSERA_SCHEME}", "http")
            .replace("${TESSERA_CA}", "unused.pem")
            .replace("${TESSERA_NAME}", "localhost")
            .replace("${UPSTREAM}", &upstream.to_string())
            .replace("${LISTEN}", &format!("127.0.0.1:{port}"))
            .replace("${GATEWAY_KEY}", gateway_key);
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        // -p: the prefix every relative path of the file (pid, logs, temp
        // files) lives under; -e: the error log until the file is read
        // (nginx's compiled-in one is under /var/log).
        let mut command = Command::new(bin);
        command.arg("-p").arg(&dir).arg("-c").arg(&conf_path);
        command.args(["-e", "stderr", "-g", "master_process off;"]);
        Self::start(command, port, dir)
    }

    /// Caddy running examples/gateway/Caddyfile, its placeholders taken from
    /// the environment; its state (autosave, storage) in the temporary
    /// directory. Blocks until the port accepts connections (at most ~10 s).
    pub fn caddy(tessera: SocketAddr, upstream: SocketAddr, gateway_key: &str) -> Self {
        let bin = binary("caddy");
        let port = free_port();
        let dir = temp_dir("caddy");
        let caddyfile = dir.join("Caddyfile");
        std::fs::copy(CADDYFILE, &caddyfile).unwrap_or_else(|e| panic!("{CADDYFILE}: {e}"));
        let mut command = Command::new(bin);
        command
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&caddyfile)
            .env("TESSERA", tessera.to_string())
            .env("UPSTREAM", upstream.to_string())
            .env("LISTEN", port.to_string())
            .env("GATEWAY_KEY", gateway_key)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("HOME", &dir);
        Self::start(command, port, dir)
    }

    /// Starts `command` in `dir` (stdout and stderr to `dir/output.log`)
    /// and waits until `port` accepts a TCP connection.
    fn start(mut command: Command, port: u16, dir: PathBuf) -> Self {
        let output = std::fs::File::create(dir.join("output.log")).unwrap();
        let child = command
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        let mut gateway = Self { port, child, dir };
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                return gateway;
            }
            let exited = gateway.child.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let why = exited.map_or_else(
                    || "it did not listen within 10 s".to_owned(),
                    |status| format!("it exited ({status})"),
                );
                panic!("{command:?}: {why} on port {port}\n{}", gateway.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the process wrote, and nginx's error log.
    fn logs(&self) -> String {
        ["output.log", "error.log"]
            .iter()
            .filter_map(|name| {
                let text = std::fs::read_to_string(self.dir.join(name)).ok()?;
                Some(format!("--- {name}:\n{text}"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `name` on PATH, else in /usr/sbin (where Debian puts nginx, off a
/// non-root PATH). A missing one fails the test, naming its installer.
fn binary(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::iter::once(PathBuf::from("/usr/sbin")))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!("{name} is missing: scripts/services.sh installs it (apt-get install {name})")
        })
}

/// A fresh directory `tessera-<what>-<random>` under the temporary
/// directory.
fn temp_dir(what: &str) -> PathBuf {
    let id: String = tessera_domain::random_bytes(6)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = std::env::temp_dir().join(format!("tessera-{what}-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An HTTP/1.1 server on a free loopback port standing for the application
/// behind a gateway: every request is answered 200 with, as a JSON object,
/// the headers it arrived with (names lower-cased, a repeated header's
/// values joined with ", "), and the connection closed. Dropped, it stops.
pub struct Upstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(echo_headers(stream));
            }
        });
        Self { addr, task }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request: its head read, its body (by Content-Length) read and
/// dropped, its headers sent back as JSON.
async fn echo_headers(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut headers = serde_json::Map::new();
    for (name, value) in head.lines().skip(1).filter_map(|l| l.split_once(':')) {
        let value = value.trim();
        headers
            .entry(name.trim().to_ascii_lowercase())
            .and_modify(|seen| {
                if let serde_json::Value::String(seen) = seen {
                    seen.push_str(", ");
                    seen.push_str(value);
                }
            })
            .or_insert_with(|| value.into());
    }
    // Read the body before answering: closing on unread bytes would reset
    // the connection under the gateway.
    let length = headers
        .get("content-length")
        .and_then(|v| v.as_str()?.parse::<usize>().ok())
        .unwrap_or(0);
    let mut unread = (end + 4 + length).saturating_sub(buf.len());
    while unread > 0 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => unread = unread.saturating_sub(n),
        }
    }
    let body = serde_json::Value::Object(headers).to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Where the head of an HTTP message ends (the offset of its blank line's
/// `\r\n\r\n`), once it is all in `buf`.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// A plain HTTP/1.1 GET of `path` on `addr`, with `Host: {host}` and
/// `headers`: the status, the response headers (lower-cased names) and the
/// body (a chunked one decoded).
pub async fn get(
    addr: SocketAddr,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let end = head_end(&buf)
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&buf)));
    let head = std::str::from_utf8(&buf[..end]).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    (status, headers, String::from_utf8(body).unwrap())
}

/// A chunked body, decoded (extensions and trailers ignored).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk-size line");
        let line = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).unwrap();
        if size == 0 {
            return body;
        }
        let start = line_end + 2;
        body.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}
