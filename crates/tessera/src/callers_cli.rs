//! `tessera callers add`: a new service key, shown once, and the lines that
//! grant it in the callers file (only the key's SHA-256 is ever stored).

use clap::Subcommand;
use tessera_domain::callers::{Callers, RPCS, new_service_key};

/// `tessera callers …`.
#[derive(Debug, Subcommand)]
pub enum CallersCommand {
    /// Make a new service key for caller NAME: prints the key (once; only
    /// its hash is ever stored) and the lines to add to the callers file.
    Add {
        /// The caller's id.
        name: String,
        /// RPCs to grant, comma-separated (e.g. Issue,Refresh,Revoke).
        #[arg(long, value_delimiter = ',')]
        rpcs: Vec<String>,
        /// Audiences it may issue for, comma-separated.
        #[arg(long, value_delimiter = ',')]
        audiences: Vec<String>,
        /// What it may revoke, comma-separated: token, family, jti, subject,
        /// kid.
        #[arg(long, value_delimiter = ',')]
        revoke: Vec<String>,
        /// May Verify with STRONG consistency (a store read per call).
        #[arg(long)]
        verify_strong: bool,
        /// Key administration: ListKeys, RotateKeys, RetireKey,
        /// CompromiseKey.
        #[arg(long)]
        keys_admin: bool,
        /// Write the key to this new file (mode 0600) instead of stdout,
        /// so stdout is only the callers-file entry (`>> callers.toml`).
        #[arg(long, value_name = "PATH")]
        key_file: Option<std::path::PathBuf>,
    },
}

/// Prints a new key for `name` and its callers-file entry. The entry is
/// parsed before it is printed, so what it prints always loads.
pub fn add(
    name: &str,
    rpcs: &[String],
    audiences: &[String],
    revoke: &[String],
    (verify_strong, keys_admin): (bool, bool),
    key_file: Option<&std::path::Path>,
) -> Result<(), String> {
    if let Some(bad) = rpcs.iter().find(|r| !RPCS.contains(&r.as_str())) {
        return Err(format!(
            "--rpcs: unknown rpc {bad:?}; known: {}",
            RPCS.join(", ")
        ));
    }
    let (key, hash) = new_service_key();
    let list = |items: &[String]| {
        let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut entry = format!(
        "[[caller]]\nid = {name:?}\nkey_sha256 = [\"{hash}\"]\nrpcs = {}\naudiences = {}\nrevoke = {}\n",
        list(rpcs),
        list(audiences),
        list(revoke)
    );
    for (set, line) in [
        (verify_strong, "verify_strong = true\n"),
        (keys_admin, "keys_admin = true\n"),
    ] {
        if set {
            entry.push_str(line);
        }
    }
    Callers::parse(&entry).map_err(|e| format!("the entry would not load: {e}"))?;
    hand_over(name, &String::from_utf8_lossy(key.expose()), key_file)?;
    // Once the key exists somewhere: a refused --key-file made none.
    tessera_telemetry::audit::caller_key_made(name, &hash);
    println!("# Add to the callers file (it is reloaded on change and on SIGHUP):");
    let reaching: Vec<&str> = revoke
        .iter()
        .map(String::as_str)
        .filter(|r| ["jti", "subject", "kid"].contains(r))
        .collect();
    if !reaching.is_empty() {
        // Named rights: they reach every audience's tokens, not only
        // this caller's `audiences`.
        println!(
            "# Note: revoke = {} reach every audience (not only those above).",
            reaching.join(", ")
        );
    }
    if rpcs.iter().any(|r| r == "WatchRevocations") {
        // Every revocation, of every audience: a watcher mirrors the whole
        // deny-list (subject and key kills concern every audience alike).
        println!("# Note: WatchRevocations streams every audience's revocations.");
    }
    print!("{entry}");
    Ok(())
}

/// Gives the key out: into `key_file` (0600), or printed this once.
fn hand_over(name: &str, key: &str, key_file: Option<&std::path::Path>) -> Result<(), String> {
    match key_file {
        Some(path) => {
            write_key(path, key)?;
            println!(
                "# The service key of {name} is in {} (0600): give it to the caller",
                path.display()
            );
            println!(
                "# (TESSERA_SERVICE_KEY_FILE, or `authorization: Bearer <key>` on each call)."
            );
        }
        None => {
            println!("# The service key of {name}. It is shown this once: give it to the caller");
            println!("# (TESSERA_SERVICE_KEY, or `authorization: Bearer <key>` on each call).");
            println!("{key}");
            println!();
        }
    }
    Ok(())
}

/// Writes `key` to a new file readable by its owner only; an existing file
/// is never overwritten (it may hold another caller's key).
fn write_key(path: &std::path::Path, key: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| {
            f.write_all(format!("{key}\n").as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| format!("--key-file {}: {e}", path.display()))
}
