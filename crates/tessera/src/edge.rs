//! Reloads of the edge's files without a restart: the callers file and the
//! TLS certificate, key and client CA. Checked every 2 s and at once on
//! SIGHUP, which reads the callers file again even when its modification
//! time says nothing changed. A file that fails to load is logged (naming
//! the line for the callers file) and the configuration in force stays.
//! A file is read once its change has settled ([`Settled`]), never while
//! it may still be being written. Every reload is written to the audit trail (`callers_reloaded`,
//! `tls_reloaded`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tessera_domain::callers::Callers;
use tessera_edge::gate::CallerRegistry;
use tessera_edge::tls::ServerTls;
use tessera_telemetry::audit::{self, CallersReload};
use tokio::sync::watch;

/// How often the files' stamps ([`Stamp`]: modification time, inode, size,
/// change time) are compared.
pub(crate) const POLL: Duration = Duration::from_secs(2);

/// Watches the callers file (if any) and the TLS files (if any).
pub(crate) fn watch(
    callers_file: Option<PathBuf>,
    registry: Arc<CallerRegistry>,
    tls: Option<Arc<ServerTls>>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut settled = Settled::new(callers_file.as_deref());
        // The SHA-256 and caller count of the text this watcher put in
        // force (none yet: the first reload always replaces).
        let mut in_force = None;
        loop {
            let forced = tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(POLL) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            if let Some(path) = &callers_file
                && settled.due(modified(path), forced)
            {
                let outcome = reload_callers(path, &registry, &mut in_force);
                audit::callers_reloaded(if forced { "sighup" } else { "modified" }, outcome);
            }
            if let Some(tls) = &tls {
                match tls.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!("TLS certificate reloaded");
                        audit::tls_reloaded(true);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "TLS files refused; the previous certificate stays in force");
                        audit::tls_reloaded(false);
                    }
                }
            }
        }
    })
}

/// Reads the callers file and puts it in force, unless it reads exactly as
/// the text in force (then nothing is replaced: rates keep counting).
fn reload_callers(
    path: &Path,
    registry: &CallerRegistry,
    in_force: &mut Option<([u8; 32], usize)>,
) -> CallersReload {
    let text = match read_config_file(path) {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(error = %format!("callers_file {}: {e}", path.display()), "callers file refused; the previous one stays in force");
            return CallersReload::Rejected { line: None };
        }
    };
    let digest = tessera_domain::sha256(text.as_bytes());
    if let Some((d, callers)) = *in_force
        && d == digest
    {
        tracing::info!(callers, "callers file read again: unchanged");
        return CallersReload::Unchanged { callers };
    }
    match Callers::parse(&text) {
        Ok(callers) => {
            let n = callers.len();
            tracing::info!(callers = n, "callers file reloaded");
            registry.replace(callers);
            *in_force = Some((digest, n));
            CallersReload::Ok { callers: n }
        }
        Err(e) => {
            tracing::error!(error = %format!("callers_file {}: {e}", path.display()), "callers file refused; the previous one stays in force");
            CallersReload::Rejected { line: Some(e.line) }
        }
    }
}

/// When a watched file is to be read again: once a change has settled.
/// A changed stamp ([`Stamp`]) is acted on only when the next poll finds
/// it unchanged, so a file being written in place (truncated, then filled,
/// as editors and config tools do) is never loaded half-way: a valid prefix
/// of a callers or routes file would silently drop what follows it. SIGHUP
/// (the operator saying the file is ready) reads it at once. A change thus
/// takes effect within two polls.
pub(crate) struct Settled {
    /// The stamp of the text in force.
    in_force: Option<Stamp>,
    /// A new stamp seen once, waiting to be seen again.
    pending: Option<Option<Stamp>>,
}

impl Settled {
    /// Watching `path` (none: nothing is ever due but a SIGHUP).
    pub(crate) fn new(path: Option<&Path>) -> Self {
        Self {
            in_force: path.and_then(modified),
            pending: None,
        }
    }

    /// Whether to read the file now, given its stamp at this poll
    /// (`None`: gone) and whether a SIGHUP asked.
    pub(crate) fn due(&mut self, now: Option<Stamp>, forced: bool) -> bool {
        let settled = self.pending == Some(now);
        if forced || (now != self.in_force && settled) {
            self.in_force = now;
            self.pending = None;
            return true;
        }
        self.pending = (now != self.in_force).then_some(now);
        false
    }
}

/// The largest configuration file read (callers, routes): far above any
/// real one, so that a path naming `/dev/zero` cannot fill memory.
const MAX_CONFIG_FILE: u64 = 1 << 20;

/// Reads a configuration file that may be reloaded while serving: a
/// regular file (a FIFO would block the reader, a device never end) of at
/// most [`MAX_CONFIG_FILE`] bytes, UTF-8.
pub(crate) fn read_config_file(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    if !std::fs::metadata(path)?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_FILE {
        return Err(Error::new(ErrorKind::InvalidData, "larger than 1 MiB"));
    }
    Ok(text)
}

/// What says a file changed: its modification time, and also its inode,
/// size and change time, so that a file replaced by one carrying the old
/// modification time (`cp -p`, `rsync -a`, `tar`, `touch -r`) is read too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    modified: SystemTime,
    inode: u64,
    len: u64,
    changed: (i64, i64),
}

/// The stamp of `path`, `None` when it cannot be read.
pub(crate) fn modified(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok()?,
        inode: m.ino(),
        len: m.len(),
        changed: (m.ctime(), m.ctime_nsec()),
    })
}

#[cfg(test)]
mod tests {
    use super::{Settled, Stamp};
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_change_is_read_once_it_has_settled() {
        let t = |s| {
            Some(Stamp {
                modified: SystemTime::UNIX_EPOCH + Duration::from_secs(s),
                inode: 1,
                len: 1,
                changed: (0, 0),
            })
        };
        let mut w = Settled {
            in_force: t(1),
            pending: None,
        };
        assert!(!w.due(t(1), false), "unchanged");
        assert!(!w.due(t(2), false), "changed: wait a poll");
        assert!(!w.due(t(3), false), "still changing");
        assert!(w.due(t(3), false), "settled");
        assert!(!w.due(t(3), false), "read once");
        assert!(!w.due(None, false), "gone: wait a poll");
        assert!(w.due(None, false), "gone and settled: read (and refused)");
        assert!(!w.due(t(4), false), "back: wait a poll");
        assert!(!w.due(None, false), "gone again: that is no change");
        assert!(!w.due(t(5), false), "back, changed");
        assert!(w.due(t(5), true), "SIGHUP while pending reads at once");
        assert!(!w.due(t(5), false), "and nothing more is due");
        assert!(w.due(t(5), true), "SIGHUP reads even with no change");
        // Replaced by a file with the same modification time: another
        // inode, size or change time is a change.
        let same_time = |inode, len| t(5).map(|s| Stamp { inode, len, ..s });
        assert!(!w.due(same_time(2, 1), false));
        assert!(w.due(same_time(2, 1), false), "another inode");
        assert!(!w.due(same_time(2, 7), false));
        assert!(w.due(same_time(2, 7), false), "another size");
    }

    /// The tester's `/dev/zero` (memory filled) and FIFO (reader blocked
    /// for good) are refused at once, as are directories and huge files.
    #[test]
    fn only_regular_files_of_sane_size_are_read() {
        use super::read_config_file;
        let dir = std::env::temp_dir().join(format!("tessera-edge-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        let zero = dir.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; (1 << 20) + 1]).unwrap();
        let fine = dir.join("fine.toml");
        std::fs::write(&fine, "# ok\n").unwrap();
        for bad in [&fifo, &zero, &big, &dir] {
            assert!(read_config_file(bad).is_err(), "{}", bad.display());
        }
        assert_eq!(read_config_file(&fine).unwrap(), "# ok\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
