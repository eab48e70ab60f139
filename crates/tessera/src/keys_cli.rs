//! `tessera keys …`: list, rotate and kill keys on a running server (over
//! gRPC, presenting the service key when one is given), and rewrap the
//! stored keys under a new KEK (on the database).

use crate::kek::{KekSource, load};
use crate::remote::RemoteArgs;
use clap::Subcommand;
use std::path::PathBuf;
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
    /// Re-seal every stored private key under a new KEK. Start the servers
    /// with the new KEK and TESSERA_KEK_PREVIOUS set to the old one first;
    /// they keep serving throughout.
    Rewrap {
        /// Database URL; default: the SQLite store in --data-dir.
        #[arg(long, env = "TESSERA_DATABASE_URL")]
        database_url: Option<String>,
        /// Data directory of the embedded store (and its generated KEK).
        #[arg(long, env = "TESSERA_DATA_DIR", default_value = "tessera-data")]
        data_dir: PathBuf,
        /// File with the KEK the keys are sealed under now.
        #[arg(long)]
        old_kek_file: PathBuf,
        /// File with the KEK to seal them under.
        #[arg(long)]
        new_kek_file: PathBuf,
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

/// Runs a `keys` subcommand.
pub async fn run(cmd: KeysCommand) -> Result<(), String> {
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
        }
        KeysCommand::Compromise {
            kid,
            reason,
            remote,
        } => compromise(&remote, kid, reason).await?,
        KeysCommand::Rewrap {
            database_url,
            data_dir,
            old_kek_file,
            new_kek_file,
        } => rewrap(database_url, &data_dir, old_kek_file, new_kek_file).await?,
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
async fn rewrap(
    database_url: Option<String>,
    data_dir: &std::path::Path,
    old_kek_file: std::path::PathBuf,
    new_kek_file: std::path::PathBuf,
) -> Result<(), String> {
    let old = load(&KekSource::File(old_kek_file), data_dir)?;
    let new = load(&KekSource::File(new_kek_file), data_dir)?;
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
