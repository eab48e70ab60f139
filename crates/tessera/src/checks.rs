//! What must hold before an instance starts: a configuration that can
//! work (named settings in every refusal), a KEK that opens the stored
//! keys, a store that is migrated (or may be), and a callers file that
//! parses. Each refusal names the setting and the fix.

use crate::config::{AppError, Config};
use crate::topology::Topology;
use tessera_domain::callers::Callers;
use tessera_domain::kind::TokenKind;
use tessera_domain::purpose::purpose_ttl;
use tessera_storage::{Backend, SqlStore};

/// Refuses to start with a KEK that cannot open the stored keys, naming the
/// KEK id the store expects (an id, not key material).
pub(crate) async fn check_kek(
    store: &SqlStore,
    kek: &tessera_domain::seal::Kek,
    previous: Option<&tessera_domain::seal::Kek>,
) -> Result<(), AppError> {
    use tessera_domain::store::KeyStore;
    let ours = [Some(kek.id()), previous.map(tessera_domain::seal::Kek::id)];
    let keys = store.load_keys().await?;
    match keys
        .iter()
        .find(|k| !ours.contains(&Some(k.kek_id.as_str())))
    {
        Some(k) => Err(AppError::Config(format!(
            "kek: the stored keys are sealed under KEK id {}, and this instance holds KEK id {}: start it with the deployment's KEK (TESSERA_KEK or --kek-file)",
            k.kek_id,
            kek.id()
        ))),
        None => Ok(()),
    }
}

/// Refuses a configuration that cannot work, naming the setting; else
/// returns the topology it asks for.
pub(crate) fn validate(cfg: &Config) -> Result<Topology, AppError> {
    // Off loopback, anyone on the network can reach the port: it must
    // encrypt and know its callers, unless insecure mode is named.
    let edge = &cfg.edge;
    let guarded = edge.tls.is_some() && edge.callers_file.is_some();
    if !(cfg.listen.ip().is_loopback() || guarded || cfg.allow_insecure_listen) {
        let missing: Vec<&str> = [
            (edge.tls.is_none(), "TLS (--tls-cert, --tls-key)"),
            (
                edge.callers_file.is_none(),
                "a callers file (--callers-file)",
            ),
            (
                !cfg.issuer_set && cfg.listen.ip().is_unspecified(),
                "an issuer (--issuer)",
            ),
        ]
        .into_iter()
        .filter_map(|(m, what)| m.then_some(what))
        .collect();
        return Err(AppError::Config(format!(
            "listen: a non-loopback address needs TLS (--tls-cert, --tls-key) and a callers file (--callers-file), and a wildcard one an issuer (--issuer); missing: {}; or name insecure mode with --allow-insecure-listen",
            missing.join(", ")
        )));
    }
    crate::issuer_file::check_wildcard(cfg)?;
    let topology = Topology::choose(cfg)?;
    if cfg.role == crate::config::Role::Issuer && cfg.gateway_routes_file.is_some() {
        return Err(AppError::Config(
            "gateway_routes_file: gateways ask the introspection role (or all-in-one), which holds the revocation view; not the issuer".into(),
        ));
    }
    if let (None, Some(setting)) = (&cfg.redis_url, cfg.redis_tls.first_set()) {
        return Err(AppError::Config(format!(
            "{setting}: set without redis_url (it applies to a rediss:// Redis)"
        )));
    }
    let config = |e: tessera_domain::error::DomainError| AppError::Config(e.to_string());
    cfg.policy.validate().map_err(config)?;
    cfg.families.validate().map_err(config)?;
    check_grace(cfg)?;
    check_store_timeouts(cfg)?;
    cfg.keys
        .validate(longest_token(cfg), cfg.policy.clock_skew)
        .map_err(config)?;
    Ok(topology)
}

/// The longest any token lives, seconds. Keys sign access tokens and
/// purpose tokens: the longest of them bounds how long a key stays
/// published after it stops signing, and how long a subject or key entry
/// of the Redis deny-list must last.
pub(crate) fn longest_token(cfg: &Config) -> i64 {
    cfg.policy
        .access_ttl_max
        .max(purpose_ttl(TokenKind::EmailVerification).unwrap_or(0))
        .max(purpose_ttl(TokenKind::PasswordReset).unwrap_or(0))
}

/// How long a client may take to retry a Refresh after its deadline, on top
/// of the request timeout, seconds.
const RETRY_SLACK: i64 = 5;

/// A Refresh cut off by its deadline may still commit (the server finishes
/// it): the client's retry then presents the predecessor, and only the
/// grace window makes that a replay (the same successor) instead of reuse
/// (the session revoked). So the window must outlast the request timeout
/// plus a retry; 0 is the named choice of no replay at all.
fn check_grace(cfg: &Config) -> Result<(), AppError> {
    let grace = cfg.families.grace;
    let timeout =
        i64::try_from(cfg.edge.request_timeout.as_millis().div_ceil(1000)).unwrap_or(i64::MAX);
    let needed = timeout.saturating_add(RETRY_SLACK);
    if grace != 0 && grace < needed {
        use tessera_domain::refresh::MAX_GRACE;
        let fix = if needed <= MAX_GRACE {
            format!(
                "set --refresh-grace to at least {needed} (or 0 for no replay), or lower --request-timeout-ms"
            )
        } else {
            format!(
                "the grace is at most {MAX_GRACE} s, so lower --request-timeout-ms to at most {} (or set --refresh-grace 0 for no replay)",
                (MAX_GRACE - RETRY_SLACK) * 1000
            )
        };
        return Err(AppError::Config(format!(
            "refresh_grace: {grace} s is shorter than the request timeout ({timeout} s) plus {RETRY_SLACK} s for a retry: a Refresh retried after its deadline would be judged reuse and end the session; {fix}"
        )));
    }
    Ok(())
}

/// Postgres counts lock waits in `statement_timeout`: a lock timeout at or
/// above it could never fire, and a hot family would hold connections for
/// the whole statement bound instead.
fn check_store_timeouts(cfg: &Config) -> Result<(), AppError> {
    let t = &cfg.store_timeouts;
    if t.lock >= t.statement {
        return Err(AppError::Config(format!(
            "pg_lock_timeout_ms: {} ms is not below --pg-statement-timeout-ms ({} ms), which already bounds lock waits, so it would never apply; lower it",
            t.lock.as_millis(),
            t.statement.as_millis()
        )));
    }
    Ok(())
}

/// The durable store: SQLite in the data directory unless a database URL is
/// set. The embedded store migrates on start; a shared database only when
/// asked (`tessera migrate` or --migrate), so an old binary never migrates a
/// database that newer instances are using.
pub(crate) async fn open_store(cfg: &Config) -> Result<SqlStore, AppError> {
    // A shared store needs no data directory (its KEK is given, never
    // generated): none is made in the working directory.
    if cfg.database_url.is_none() {
        create_data_dir(&cfg.data_dir)?;
    }
    let store = match &cfg.database_url {
        Some(url) => {
            let label = format!("database_url {}", tessera_storage::redact_url(url));
            SqlStore::connect_as(url, label, cfg.store_timeouts).await?
        }
        None => {
            let file = cfg.data_dir.join("tessera.db");
            let label = format!("data_dir {}", cfg.data_dir.display());
            SqlStore::connect_as(
                &format!("sqlite://{}", file.display()),
                label,
                cfg.store_timeouts,
            )
            .await?
        }
    };
    if store.backend() == Backend::Sqlite || cfg.migrate {
        store.migrate().await?;
    } else if !store.is_migrated().await? {
        return Err(AppError::Config(format!(
            "database_url {}: the database has no Tessera schema, or an older one; run `tessera migrate --database-url …` (or serve with --migrate)",
            tessera_storage::redact_url(cfg.database_url.as_deref().unwrap_or_default())
        )));
    }
    Ok(store)
}

/// One process per embedded data directory: two servers on one SQLite
/// file would each hold their own revocation view, and a token revoked on
/// one would stay valid on the other until its `exp`. The lock
/// (`<data-dir>/tessera.lock`, `flock`) is held as long as the returned
/// file is open and released by the kernel when the process ends, however
/// it ends; the file holds the holder's PID for the refusal's message.
/// (With a shared database the data directory holds no store: servers
/// may share it.)
/// The directory of the embedded (SQLite) store, which one process at a
/// time may use: the data directory, or the directory of a `sqlite:` URL's
/// file. `None` for Postgres (many instances share it by design).
pub(crate) fn sqlite_dir(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
) -> Option<std::path::PathBuf> {
    let Some(url) = database_url else {
        return Some(data_dir.to_owned());
    };
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.starts_with(':') {
        return None; // in memory: nobody else can open it
    }
    let parent = std::path::Path::new(path).parent()?;
    Some(if parent.as_os_str().is_empty() {
        std::path::PathBuf::from(".")
    } else {
        parent.to_owned()
    })
}

pub(crate) fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, AppError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("tessera.lock");
    let fail = |e: std::io::Error| {
        AppError::Config(format!(
            "data_dir {}: cannot lock {}: {e}",
            dir.display(),
            path.display()
        ))
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(fail)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(fail)?;
            file.rewind().map_err(fail)?;
            writeln!(file, "{}", std::process::id()).map_err(fail)?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                pid if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) => {
                    format!("process {pid}")
                }
                _ => "another process".to_owned(),
            };
            Err(AppError::Config(format!(
                "data_dir {}: in use by {holder} (another `tessera serve` on this embedded store); one process per data directory: stop it, or give this server its own --data-dir",
                dir.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(fail(e)),
    }
}

/// Creates the data directory (0700) if missing; the error names the
/// setting, the path and what is in the way.
pub(crate) fn create_data_dir(dir: &std::path::Path) -> Result<(), AppError> {
    use std::io::ErrorKind;
    use std::os::unix::fs::DirBuilderExt;
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    let Err(e) = made else {
        return Ok(());
    };
    let cause = if dir.exists() && !dir.is_dir() {
        "it exists and is not a directory (move the file away, or point --data-dir elsewhere)"
            .to_owned()
    } else {
        match e.kind() {
            // A component of the path is a file, so nothing can be made under it.
            ErrorKind::NotADirectory | ErrorKind::AlreadyExists => {
                "a part of the path is a file, not a directory".to_owned()
            }
            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => format!(
                "cannot create it: {e} (the parent must be writable by this user, or create the directory for it)"
            ),
            _ => format!("cannot create it: {e}"),
        }
    };
    Err(AppError::Config(format!(
        "data_dir {}: {cause}",
        dir.display()
    )))
}

/// Why the listener could not be bound, naming the setting and address.
/// `listened` says whether a connection to the address was answered: a
/// port in use that nobody listens on is held by an outgoing connection
/// (or its TIME-WAIT, which blocks a bind for a minute after it closes)
/// the kernel gave it to as its ephemeral port (a fixed port inside
/// `ip_local_port_range`, 32768-60999 by default, which 50051 is in).
pub(crate) fn bind_err(addr: std::net::SocketAddr, e: &std::io::Error, listened: bool) -> AppError {
    use std::io::ErrorKind;
    let cause = match e.kind() {
        ErrorKind::AddrInUse if listened => {
            "address already in use: another process listens there (stop it, or choose another --listen)".to_owned()
        }
        ErrorKind::AddrInUse => format!(
            "address already in use, though nothing listens there: an outgoing connection (open, or closed less than a minute ago and in TIME-WAIT; `ss -tan sport = :{p}` lists them) was given port {p} as its ephemeral local port; reserve the port for this service (sysctl -w net.ipv4.ip_local_reserved_ports={p}), or choose another --listen",
            p = addr.port()
        ),
        ErrorKind::AddrNotAvailable => {
            "address not available: no interface of this host has that IP".to_owned()
        }
        ErrorKind::PermissionDenied => {
            "permission denied: ports below 1024 need privileges (CAP_NET_BIND_SERVICE), or choose a higher port".to_owned()
        }
        _ => format!("cannot listen: {e}"),
    };
    AppError::Config(format!("listen {addr}: {cause}"))
}

/// Reads and parses the callers file; the error names the file and line.
pub(crate) fn load_callers(path: &std::path::Path) -> Result<Callers, AppError> {
    let text = crate::edge::read_config_file(path)
        .map_err(|e| AppError::Config(format!("callers_file {}: {e}", path.display())))?;
    Callers::parse(&text)
        .map_err(|e| AppError::Config(format!("callers_file {}: {e}", path.display())))
}
