//! The embedded mode's `iss`, remembered. Without `--issuer` the issuer is
//! derived from the listen address, so a restart on another port would turn
//! every token issued before into WRONG_ISSUER. The first start writes the
//! issuer it used to `<data-dir>/issuer` (mode 0600, once); later starts
//! without `--issuer` use it, and a given `--issuer` that disagrees wins
//! with a warning (tokens minted under the old one stop verifying). Shared
//! stores are not concerned: they require `--issuer` on every instance.

use crate::config::{AppError, Config};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The file's name in the data directory.
pub const FILE: &str = "issuer";

/// The issuer derived from the address the port is bound to (the real
/// port when asked for port 0), in the port's own scheme: https when it
/// serves TLS.
pub fn derived(tls: bool, addr: std::net::SocketAddr) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}")
}

/// The refusal of an issuer derived from a wildcard address.
fn wildcard_err(cfg: &Config) -> AppError {
    AppError::Config(format!(
        "issuer: listening on {} names no host, so no issuer can be derived from it: pass --issuer (or TESSERA_ISSUER) with the URL your clients know this service by, e.g. --issuer https://auth.example.com",
        cfg.listen
    ))
}

/// The wildcard refusal of [`settle`], checked before anything is made: a
/// start that will be refused must not first create the data directory
/// and its database. (An embedded store that remembers its issuer may
/// listen on a wildcard without `--issuer`.)
pub(crate) fn check_wildcard(cfg: &Config) -> Result<(), AppError> {
    let derived = cfg.database_url.is_none() && !cfg.issuer_set;
    if derived && cfg.listen.ip().is_unspecified() && !cfg.data_dir.join(FILE).exists() {
        return Err(wildcard_err(cfg));
    }
    Ok(())
}

/// Settles `cfg.policy.issuer` against the remembered one (embedded mode
/// only: no database URL). The data directory must exist.
pub(crate) fn settle(cfg: &mut Config) -> Result<(), AppError> {
    if cfg.database_url.is_some() {
        return Ok(());
    }
    let path = cfg.data_dir.join(FILE);
    let remembered = match read(&path)? {
        Some(r) => r,
        // `http://0.0.0.0:50051` names no host a client can reach or a
        // verifier can expect: an issuer is chosen, never derived from a
        // wildcard address (and remembered for good once written).
        None if !cfg.issuer_set && cfg.listen.ip().is_unspecified() => {
            return Err(wildcard_err(cfg));
        }
        None => match write_once(&path, &cfg.policy.issuer) {
            Ok(()) => {
                tracing::info!(issuer = %cfg.policy.issuer, path = %path.display(), "issuer remembered for the next starts");
                return Ok(());
            }
            // Another process started on this directory at the same moment
            // and wrote first: its issuer is the one to share.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                read(&path)?.ok_or_else(|| {
                    AppError::Config(format!("issuer file {}: vanished", path.display()))
                })?
            }
            Err(e) => {
                return Err(AppError::Config(format!(
                    "issuer file {}: {e}",
                    path.display()
                )));
            }
        },
    };
    if remembered == cfg.policy.issuer {
        return Ok(());
    }
    if cfg.issuer_set {
        tracing::warn!(
            issuer = %cfg.policy.issuer,
            remembered = %remembered,
            path = %path.display(),
            "--issuer differs from the issuer this data directory first used: tokens issued under the remembered one now fail WRONG_ISSUER (delete the file to stop this warning)"
        );
    } else {
        tracing::info!(issuer = %remembered, path = %path.display(), "issuer from the first start (not derived from --listen)");
        cfg.policy.issuer = remembered;
    }
    Ok(())
}

/// The remembered issuer, `None` when there is no file yet.
fn read(path: &Path) -> Result<Option<String>, AppError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Err(AppError::Config(format!(
            "issuer file {}: empty; delete it (the next start writes the issuer it uses) or write the issuer in it",
            path.display()
        ))),
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AppError::Config(format!(
            "issuer file {}: {e}",
            path.display()
        ))),
    }
}

fn write_once(path: &Path, issuer: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{issuer}\n").as_bytes())?;
    f.sync_all()
}
