//! What the bench shares with the end-to-end tests: a `redis-server` of its
//! own, on a free loopback port, that may be stopped and started again
//! without touching the shared Redis; plain TCP, or TLS only.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The files of a TLS-only `redis-server` (PEM).
#[derive(Debug, Clone)]
pub struct RedisTlsFiles {
    /// The server's certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that client certificates must chain to.
    pub ca: PathBuf,
    /// Require a client certificate (`tls-auth-clients yes`).
    pub auth_clients: bool,
}

/// A `redis-server` of one's own. Killed (and its directory removed) when
/// dropped.
pub struct OwnRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    tls: Option<RedisTlsFiles>,
}

impl OwnRedis {
    /// Starts one on a free loopback port and waits until it listens.
    pub fn start() -> Result<Self, String> {
        Self::start_with(None)
    }

    /// Starts one that speaks TLS only (`--port 0 --tls-port P`): a
    /// plain-TCP client gets nothing from it. Fails, naming the cause, if
    /// this `redis-server` was built without TLS.
    pub fn start_tls(files: RedisTlsFiles) -> Result<Self, String> {
        Self::start_with(Some(files))
    }

    fn start_with(tls: Option<RedisTlsFiles>) -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = std::env::temp_dir().join(format!("tessera-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut r = Self {
            port,
            dir,
            child: None,
            tls,
        };
        r.resume()?;
        Ok(r)
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://…` for the TLS variant.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and waits until it listens.
    pub fn resume(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let log = self.dir.join("redis.log");
        // Configuration errors go to stderr before the log file is open.
        let stderr = std::fs::File::create(self.dir.join("redis.stderr"))
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some(t) => cmd
                .args(["--port", "0", "--tls-port", &port, "--tls-cert-file"])
                .arg(&t.cert)
                .arg("--tls-key-file")
                .arg(&t.key)
                .arg("--tls-ca-cert-file")
                .arg(&t.ca)
                .args([
                    "--tls-auth-clients",
                    if t.auth_clients { "yes" } else { "no" },
                ]),
        };
        let child = cmd
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("redis-server (scripts/services.sh installs it): {e}"))?;
        self.child = Some(child);
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..250 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(exit_reason(status, &self.dir));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("redis-server did not listen on {addr}"))
    }

    /// Freezes it (SIGSTOP): connections stay open and nothing answers, as
    /// with a hung server; `thaw` resumes it.
    pub fn freeze(&self) -> Result<(), String> {
        self.signal("-STOP")
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) -> Result<(), String> {
        self.signal("-CONT")
    }

    fn signal(&self, which: &str) -> Result<(), String> {
        let pid = self.child.as_ref().ok_or("not running")?.id().to_string();
        let ok = Command::new("kill")
            .args([which, &pid])
            .status()
            .map_err(|e| format!("kill: {e}"))?
            .success();
        if ok {
            Ok(())
        } else {
            Err(format!("kill {which} {pid} failed"))
        }
    }

    /// Kills it (SIGKILL): connections drop, nothing is flushed.
    pub fn stop(&mut self) {
        let _ = self.thaw();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Why a `redis-server` exited at start, from its log: a server built
/// without TLS is named as such (Debian's package has TLS; a build needs
/// `BUILD_TLS=yes`).
fn exit_reason(status: std::process::ExitStatus, dir: &std::path::Path) -> String {
    let text = ["redis.stderr", "redis.log"]
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
        .join("\n");
    let last = text.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
    if text.contains("tls-port") && text.contains("Bad directive") {
        return format!(
            "this redis-server has no TLS support (install Debian's redis-server, or build it with BUILD_TLS=yes): {last}"
        );
    }
    format!("redis-server exited at start ({status}): {last}")
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
