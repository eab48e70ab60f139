//! Why a store could not be opened, in words an operator can act on: each
//! message names the setting and its value (the URL without its password),
//! the cause, and the fix when there is one.
//!
//! sqlx's pool retries a failed connection until its acquire timeout and
//! then reports only "pool timed out", losing the cause (a refused
//! connection, a database that does not exist). So [`first_connection`]
//! opens one connection directly before the pool exists: a start against a
//! closed port fails at once with "connection refused".
//!
//! These messages are for start-up only. The server's text is quoted for
//! the SQLSTATEs of a refused connection (it names a role, a database or a
//! host, never SQL or a password); runtime errors keep
//! [`super::error::store_err`], which says no more than a code.

use sqlx::ConnectOptions as _;
use sqlx::Connection as _;
use sqlx::any::AnyConnectOptions;
use std::time::Duration;
use tessera_domain::error::DomainError;

/// How long the first connection may take before the host counts as not
/// answering (a firewall that drops packets would otherwise hold the start
/// for the kernel's TCP timeout, minutes).
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `url` with its password removed (from the user info and from a
/// `password=` query parameter), for echoing in a message. Host, port,
/// database name and user stay: they are what an operator checks.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((info, host)) => match info.split_once(':') {
            Some(("", _password)) => host.to_owned(),
            Some((user, _password)) => format!("{user}@{host}"),
            None => format!("{info}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.to_ascii_lowercase().starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// What a store URL names, for the messages: the setting and its redacted
/// value, and the parts the hints use. Holds no password.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// The setting and its value, e.g. `database_url postgres://u@h/db`.
    label: String,
    /// The SQLite file, or `None` for Postgres.
    sqlite: Option<String>,
    /// Postgres `host:port`.
    addr: String,
    user: String,
    database: String,
}

impl Origin {
    pub(crate) fn of(options: &AnyConnectOptions, label: String) -> Self {
        let u = &options.database_url;
        let host = u.host_str().unwrap_or("localhost");
        Self {
            label,
            sqlite: (u.scheme() == "sqlite").then(|| sqlite_file(u.as_str())),
            addr: format!("{host}:{}", u.port().unwrap_or(5432)),
            user: match u.username() {
                "" => "postgres".to_owned(),
                user => user.to_owned(),
            },
            database: u.path().trim_start_matches('/').to_owned(),
        }
    }

    /// The cause of a database error, by engine and code.
    fn database_cause(&self, db: &dyn sqlx::error::DatabaseError) -> String {
        let code = db.code().unwrap_or_default();
        match &self.sqlite {
            Some(path) => sqlite_cause(&code, path),
            None => postgres_cause(&code, db.message(), self),
        }
    }
}

/// Opens and closes one connection, so that a store that cannot be reached
/// fails with its real cause before the pool hides it. `label` is the
/// setting and its (redacted) value, e.g. `database_url postgres://…`.
pub(crate) async fn first_connection(
    options: &AnyConnectOptions,
    origin: &Origin,
) -> Result<(), DomainError> {
    match tokio::time::timeout(FIRST_CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(connect_err(&e, origin)),
        Err(_) => Err(DomainError::StoreUnavailable(format!(
            "{}: could not connect: no answer from {} within {} s (wrong host, or a firewall dropping packets?)",
            origin.label,
            origin.addr,
            FIRST_CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Why the connection failed: the setting, the cause and the fix.
pub(crate) fn connect_err(e: &sqlx::Error, origin: &Origin) -> DomainError {
    let (label, t) = (&origin.label, origin);
    if let Some(t) = crate::tls::failure(e) {
        return DomainError::StoreUnavailable(crate::tls::handshake_failed(
            label,
            t,
            "sslrootcert in database_url",
        ));
    }
    let cause = match e {
        sqlx::Error::Tls(inner) => format!("TLS: {inner}"),
        sqlx::Error::Configuration(_) => "the URL's options were refused".to_owned(),
        sqlx::Error::Database(db) => origin.database_cause(db.as_ref()),
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => format!(
                "connection refused by {}: nothing listens there (is Postgres running, on this host and port?)",
                t.addr
            ),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => format!(
                "{} closed the connection before answering: is it a Postgres server (the right host and port)?",
                t.addr
            ),
            _ => format!("{}: {io}", t.addr),
        },
        sqlx::Error::Protocol(what) => format!(
            "{} does not speak the Postgres protocol ({what}): is it the right host and port?",
            t.addr
        ),
        _ => match super::error::store_err_ref(e) {
            DomainError::StoreUnavailable(what) => what,
            other => other.to_string(),
        },
    };
    DomainError::StoreUnavailable(format!("{label}: could not connect: {cause}"))
}

/// The cause of a refused Postgres connection or statement, by SQLSTATE.
fn postgres_cause(code: &str, server: &str, t: &Origin) -> String {
    let (addr, user, db) = (&t.addr, &t.user, &t.database);
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "5432"));
    match code {
        "3D000" => format!(
            "database \"{db}\" does not exist on {addr} (SQLSTATE 3D000): create it first (`createdb -h {host} -p {port} -U {user} {db}`), then `tessera migrate --database-url …` (or serve with --migrate)"
        ),
        // The server says which: an unknown role, or no pg_hba.conf entry
        // (with a TLS-only server, usually a URL without TLS).
        "28000" => format!(
            "the server refused the connection (SQLSTATE 28000: {server}): check the user in database_url and the server's authentication rules (pg_hba.conf); does it take TLS connections only? see sslmode in database_url"
        ),
        "28P01" => format!(
            "password authentication failed for user \"{user}\" (SQLSTATE 28P01): check the password in database_url"
        ),
        "42501" => format!(
            "permission denied for role \"{user}\" (SQLSTATE 42501: {server}): grant it the rights on database \"{db}\" (e.g. `GRANT CREATE ON SCHEMA public TO {user}`), or run `tessera migrate` as the database's owner"
        ),
        "53300" => format!("the server has no connection slot left (SQLSTATE 53300: {server})"),
        "57P03" => format!("the server is starting up or shutting down (SQLSTATE 57P03: {server})"),
        other => format!("database error (SQLSTATE {other})"),
    }
}

/// The file a `sqlite:` URL names, as SQLite will open it (a relative
/// path stays relative: `sqlite://./data/t.db` is `./data/t.db`).
fn sqlite_file(url: &str) -> String {
    use std::str::FromStr as _;
    sqlx::sqlite::SqliteConnectOptions::from_str(url).map_or_else(
        |_| url.to_owned(),
        |o| o.get_filename().display().to_string(),
    )
}

/// The SQLite file `url` would create, created first, readable by this
/// user only: it holds the sealed signing keys and the refresh-token
/// families (SQLite gives its WAL and shared-memory files the database's
/// mode). A file that exists is left as it is; a file that cannot be made
/// here is left for SQLite to refuse, with its own cause.
pub(crate) fn create_private(url: &str) {
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::str::FromStr as _;
    let Ok(options) = sqlx::sqlite::SqliteConnectOptions::from_str(url) else {
        return;
    };
    let path = options.get_filename();
    if !url.contains("mode=rwc") || path.as_os_str().is_empty() || path.starts_with("file:") {
        return; // not created by this call, or in memory
    }
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

/// The cause of a SQLite open failure, by result code, naming the file.
fn sqlite_cause(code: &str, path: &str) -> String {
    match code {
        // SQLITE_CANTOPEN.
        "14" => format!(
            "cannot open the SQLite file {path} (SQLite code 14): the file and its directory must be writable by this user, and the file must not be a directory"
        ),
        // SQLITE_READONLY.
        "8" => format!(
            "the SQLite file {path} is read-only (SQLite code 8): make it and its directory writable by this user"
        ),
        // SQLITE_NOTADB.
        "26" => format!("{path} is not a SQLite database (SQLite code 26)"),
        other => format!("SQLite error on {path} (code {other})"),
    }
}

/// Why the migrations failed: the SQLSTATE's meaning, never
/// the statement.
pub(crate) fn migrate_err(e: &sqlx::migrate::MigrateError, origin: &Origin) -> DomainError {
    use sqlx::migrate::MigrateError as M;
    let label = &origin.label;
    let cause = match e {
        M::Execute(sqlx::Error::Database(db))
        | M::ExecuteMigration(sqlx::Error::Database(db), _) => origin.database_cause(db.as_ref()),
        M::Execute(other) | M::ExecuteMigration(other, _) => {
            match super::error::store_err_ref(other) {
                DomainError::StoreUnavailable(what) => what,
                d => d.to_string(),
            }
        }
        // The others name a migration version only.
        other => other.to_string(),
    };
    DomainError::StoreUnavailable(format!("{label}: migration failed: {cause}"))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact_url("postgres://postgres:s3cret@127.0.0.1:5432/db?sslmode=require"),
            "postgres://postgres@127.0.0.1:5432/db?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?password=s3cret&sslmode=disable"),
            "postgres://u@h/db?sslmode=disable"
        );
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact_url("rediss://h:6380"), "rediss://h:6380");
        // An '@' inside the password: the host is after the last one.
        assert_eq!(redact_url("postgres://u:a@b@h/db"), "postgres://u@h/db");
    }
}
