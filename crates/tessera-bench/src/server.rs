//! The servers under test: the release `tessera` binary (or the peer), each
//! its own process so its CPU time can be read from `/proc`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A server process and its gRPC address.
pub struct Server {
    /// The process, held so that it is killed when the server is dropped.
    _child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its pid, for CPU accounting.
    pub pid: Option<u32>,
    dir: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// CPU time (user + system, all threads, living and exited) of process
/// `pid`, from `/proc/PID/stat`. Linux reports it in clock ticks of 1/100 s
/// (USER_HZ is 100 on every Linux ABI this runs on).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Resident set size of process `pid`, bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// 32 random bytes, base64url: a KEK for a bench deployment (never kept).
pub fn random_kek() -> std::io::Result<String> {
    use base64::Engine;
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// Starts `program args…` and waits for its `… listening on ADDR` line.
pub async fn spawn(
    program: &Path,
    args: &[String],
    envs: &[(&str, String)],
    dir: Option<PathBuf>,
) -> Result<Server, String> {
    let mut child = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some((_, a)) = line.split_once("listening on ") {
                return Some(a.trim().to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| format!("{} did not start listening", program.display()))?;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let pid = child.id();
    Ok(Server {
        _child: child,
        url: format!("http://{addr}"),
        pid,
        dir,
    })
}

/// Where the durable state of the bench deployment lives.
pub struct Store {
    /// `postgres://…` of an existing, empty database; `None`: embedded.
    pub database_url: Option<String>,
    /// Redis for the deny-list and fan-out (with a database URL).
    pub redis_url: Option<String>,
}

/// Starts `tessera serve` on a free loopback port with a fresh data dir,
/// and `extra` arguments.
pub async fn tessera(
    bin: &Path,
    store: &Store,
    issuer: &str,
    extra: &[String],
) -> Result<Server, String> {
    let dir = std::env::temp_dir().join(format!("tessera-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--issuer",
        issuer,
        "--data-dir",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(dir.display().to_string());
    if let Some(db) = &store.database_url {
        args.extend(["--database-url".into(), db.clone(), "--migrate".into()]);
    }
    if let Some(r) = &store.redis_url {
        let prefix = format!("tessera-bench-{}:", std::process::id());
        args.extend(["--redis-url".into(), r.clone()]);
        args.extend(["--redis-prefix".into(), prefix]);
    }
    args.extend(extra.iter().cloned());
    let kek = random_kek().map_err(|e| format!("KEK: {e}"))?;
    let envs = [("TESSERA_KEK", kek), ("TESSERA_LOG", "warn".to_owned())];
    spawn(bin, &args, &envs, Some(dir)).await
}

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Waits until the server's health `Check` says SERVING.
pub async fn wait_serving(url: &str) -> Result<(), String> {
    use tonic_health::pb::health_client::HealthClient;
    for _ in 0..200 {
        if let Ok(ch) = crate::client::endpoint(url)?.connect().await {
            let r = HealthClient::new(ch)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await;
            if r.is_ok_and(|r| r.into_inner().status == 1) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{url} never reported SERVING"))
}
