//! `tessera keys …`: list, rotate and kill keys on a running server (over
//! gRPC, presenting the service key when one is given), and rewrap the
//! stored keys under a new KEK (on the database).

use crate::kek::{KekSource, load};
use crate::remote::RemoteArgs;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use tessera_api::client::PeerChannel;
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::{CompromiseKeyRequest, ListKeysRequest, PublicKey, RotateKeysRequest};

/// `tessera keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List every key, newest first.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Rotate now: publish the next key (it signs once verifiers' caches can
    /// know it), or bring a published one forward.
    Rotate {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Kill a key at once: unpublished, its tokens rejected everywhere, and
    /// if it was signing another key signs from now on.
    Compromise {
        /// The key id. Kids are random base64url, so one may start with `-`:
        /// taken as the value, not as a flag.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Re-seal every stored private key under a new KEK. Shared store:
    /// start the servers with the new KEK and TESSERA_KEK_PREVIOUS set to
    /// the old one first; they keep serving throughout. Embedded store:
    /// stop the server first (the data directory's lock is taken); its
    /// `kek` file is replaced by the new KEK.
    Rewrap {
        /// Database URL; default: the SQLite store in --data-dir.
        #[arg(long, env = "TESSERA_DATABASE_URL")]
        database_url: Option<String>,
        /// Data directory of the embedded store (and its generated KEK).
        #[arg(long, env = "TESSERA_DATA_DIR", default_value = "tessera-data")]
        data_dir: PathBuf,
        /// File with the KEK the keys are sealed under now (the servers run
        /// with the new KEK and this one as previous: no stop). Without it,
        /// embedded store only: DATA_DIR/kek, with the server stopped; the
        /// file is then replaced by the new KEK, so the server starts with
        /// it as before.
        #[arg(long)]
        old_kek_file: Option<PathBuf>,
        /// File with the KEK to seal them under.
        #[arg(long)]
        new_kek_file: PathBuf,
        /// Append the `keys_rewrapped` audit event to this file (created
        /// 0600; give the servers' --audit-log) instead of stderr.
        #[arg(long, env = "TESSERA_AUDIT_LOG", value_name = "PATH")]
        audit_log: Option<PathBuf>,
    },
}

fn print_key(k: &PublicKey) {
    println!(
        "{}",
        serde_json::json!({
            "kid": k.kid,
            "state": k.state().as_str_name(),
            "algorithm": k.algorithm().as_str_name(),
            "created_at": k.created_at.map(|t| t.seconds),
            "activates_at": k.activates_at.map(|t| t.seconds),
            "retires_at": k.retires_at.map(|t| t.seconds),
        })
    );
}

fn client(remote: &RemoteArgs) -> Result<KeyServiceClient<PeerChannel>, String> {
    remote.channel().map(KeyServiceClient::new)
}

/// Runs a `keys` subcommand: bounded in time when it asks a server.
pub async fn run(cmd: KeysCommand) -> Result<(), String> {
    match cmd {
        KeysCommand::Rewrap {
            database_url,
            data_dir,
            old_kek_file,
            new_kek_file,
            audit_log: _,
        } => rewrap(database_url, &data_dir, old_kek_file, new_kek_file).await,
        remote => crate::remote::bounded(ask(remote)).await,
    }
}

/// The `keys` subcommands that ask a server.
async fn ask(cmd: KeysCommand) -> Result<(), String> {
    match cmd {
        KeysCommand::List { remote } => {
            let keys = client(&remote)?
                .list_keys(ListKeysRequest {})
                .await
                .map_err(|e| remote.failed(&e))?
                .into_inner()
                .keys;
            keys.iter().for_each(print_key);
        }
        KeysCommand::Rotate { remote } => {
            let changed = client(&remote)?
                .rotate_keys(RotateKeysRequest::default())
                .await
                .map_err(|e| remote.failed(&e))?
                .into_inner()
                .changed;
            changed.iter().for_each(print_key);
            // Stdout stays one JSON object per key; what happened goes to
            // stderr, so an empty answer is never silence.
            if changed.is_empty() {
                eprintln!(
                    "tessera: keys rotate: nothing was due: no key could be published or brought forward now (`tessera keys list` shows the schedule)"
                );
            } else {
                eprintln!("tessera: keys rotate: {} key(s) changed", changed.len());
            }
        }
        KeysCommand::Compromise {
            kid,
            reason,
            remote,
        } => compromise(&remote, kid, reason).await?,
        // Run by `run`, on the store: never sent to a server.
        KeysCommand::Rewrap { .. } => return Err("keys rewrap asks no server".into()),
    }
    Ok(())
}

/// `keys compromise`: kills `kid` on the server and says what it affected.
async fn compromise(remote: &RemoteArgs, kid: String, reason: String) -> Result<(), String> {
    let r = client(remote)?
        .compromise_key(CompromiseKeyRequest { kid, reason })
        .await
        .map_err(|e| remote.failed(&e))?
        .into_inner();
    println!(
        "{}",
        serde_json::json!({
            "compromised": r.key.as_ref().map(|k| k.kid.clone()),
            "new_active_key": r.new_active_key.as_ref().map(|k| k.kid.clone()),
            "affected_sessions": r.affected_tokens,
            "estimate": r.estimate,
        })
    );
    Ok(())
}

/// `keys rewrap`: re-seals the stored keys under a new KEK, at the store.
/// Without `--old-kek-file` on the embedded store, the old KEK is the
/// store's own `DATA_DIR/kek`, which is replaced by the new KEK once every
/// key is re-sealed, and the data directory's lock is held throughout: a
/// server running meanwhile would seal its next key under the old KEK,
/// which its restart could not open. A named `--old-kek-file` is the
/// no-downtime rotation (the servers already run with the new KEK and the
/// old one as previous): no lock, no file replaced.
async fn rewrap(
    database_url: Option<String>,
    data_dir: &Path,
    old_kek_file: Option<PathBuf>,
    new_kek_file: PathBuf,
) -> Result<(), String> {
    let embedded = database_url.is_none();
    let data_kek = data_dir.join("kek");
    let named_old = old_kek_file.is_some();
    let old_path = match (old_kek_file, embedded) {
        (Some(p), _) => p,
        (None, true) => data_kek.clone(),
        (None, false) => {
            return Err(
                "keys rewrap: --old-kek-file is required with --database-url (the KEK the stored keys are sealed under now)"
                    .into(),
            );
        }
    };
    let replaces = embedded && !named_old;
    // Any SQLite store (the data directory's, or a sqlite: URL's): its one
    // server must be stopped, whatever KEK it was started with.
    let _lock = match crate::checks::sqlite_dir(database_url.as_deref(), data_dir) {
        Some(dir) => Some(
            crate::checks::lock_data_dir(&dir)
                .map_err(|e| format!("keys rewrap: stop the server first: {e}"))?,
        ),
        None => None,
    };
    let old = load(&KekSource::File(old_path.clone()), data_dir)?;
    let new = load(&KekSource::File(new_kek_file.clone()), data_dir)?;
    if old.id() == new.id() {
        return Err(format!(
            "keys rewrap: {} holds the KEK in force (id {}): make a new one (`openssl rand -base64 32`)",
            new_kek_file.display(),
            new.id()
        ));
    }
    let url = database_url
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("tessera.db").display()));
    let store = tessera_storage::SqlStore::connect(&url)
        .await
        .map_err(|e| e.to_string())?;
    // The operator at this host, not a caller of the server.
    let moved = tessera_issuer::rewrap(&store, &old, &new, "cli")
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    if replaces {
        crate::kek::replace_file(&data_kek, &new_kek_file)?;
        eprintln!(
            "tessera: keys rewrap: {} now holds the new KEK; start the server as before, then destroy {}",
            data_kek.display(),
            new_kek_file.display()
        );
    }
    println!("{}", serde_json::json!({ "rewrapped": moved }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn a_kid_starting_with_a_hyphen_is_a_kid() {
        let cli = Cli::try_parse_from(["tessera", "keys", "compromise", "-2abc", "--reason", "x"])
            .unwrap();
        let Command::Keys(super::KeysCommand::Compromise { kid, reason, .. }) = cli.command else {
            panic!("not keys compromise");
        };
        assert_eq!((kid.as_str(), reason.as_str()), ("-2abc", "x"));
    }
}
