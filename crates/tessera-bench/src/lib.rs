//! What the bench shares with the end-to-end tests: a `redis-server` of its
//! own, on a free loopback port, that may be stopped and started again
//! without touching the shared Redis.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` of one's own. Killed (and its directory removed) when
/// dropped.
pub struct OwnRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one on a free loopback port and waits until it listens.
    pub fn start() -> Result<Self, String> {
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
        };
        r.resume()?;
        Ok(r)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and waits until it listens.
    pub fn resume(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server (scripts/services.sh installs it): {e}"))?;
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        for _ in 0..250 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Ok(());
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

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
