//! Reloads of the edge's files without a restart: the callers file and the
//! TLS certificate, key and client CA. Checked every 2 s and at once on
//! SIGHUP. A file that fails to load is logged (naming the line for the
//! callers file) and the configuration in force stays.

use crate::checks::load_callers;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tessera_edge::gate::CallerRegistry;
use tessera_edge::tls::ServerTls;
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
                    match load_callers(path) {
                        Ok(callers) => {
                            tracing::info!(callers = callers.len(), "callers file reloaded");
                            registry.replace(callers);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "callers file refused; the previous one stays in force")
                        }
                    }
                }
            }
            if let Some(tls) = &tls {
                match tls.reload_if_changed() {
                    Ok(true) => tracing::info!("TLS certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "TLS files refused; the previous certificate stays in force")
                    }
                }
            }
        }
    })
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
