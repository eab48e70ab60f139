//! Reloads of the edge's files without a restart: the callers file and the
//! TLS certificate, key and client CA. Checked every 2 s and at once on
//! SIGHUP, which reads the callers file again even when its modification
//! time says nothing changed. A file that fails to load is logged (naming
//! the line for the callers file) and the configuration in force stays.
//! Every reload is written to the audit trail (`callers_reloaded`,
//! `tls_reloaded`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tessera_domain::callers::Callers;
use tessera_edge::gate::CallerRegistry;
use tessera_edge::tls::ServerTls;
use tessera_telemetry::audit::{self, CallersReload};
use tokio::sync::watch;

/// How often the files' modification times are compared.
const POLL: Duration = Duration::from_secs(2);

/// Watches the callers file (if any) and the TLS files (if any).
pub(crate) fn watch(
    callers_file: Option<PathBuf>,
    registry: Arc<CallerRegistry>,
    tls: Option<Arc<ServerTls>>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = callers_file.as_deref().and_then(modified);
        // The SHA-256 and caller count of the text this watcher put in
        // force (none yet: the first reload always replaces).
        let mut in_force = None;
        loop {
            let forced = tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(POLL) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            if let Some(path) = &callers_file {
                let now = modified(path);
                if forced || now != seen {
                    seen = now;
                    let outcome = reload_callers(path, &registry, &mut in_force);
                    audit::callers_reloaded(if forced { "sighup" } else { "modified" }, outcome);
                }
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
    let text = match std::fs::read_to_string(path) {
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

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
