//! Moving the sealed keys and service secrets from one KEK to another.

use tessera_domain::error::Result;
use tessera_domain::seal::Kek;
use tessera_domain::store::{KeyStore, StoredKey};
use tessera_telemetry::audit;

/// The service secrets kept beside the keys.
pub const SECRET_NAMES: &[&str] = &[REFRESH_SECRET];

/// The HMAC key that derives refresh-token successors.
pub const REFRESH_SECRET: &str = "refresh-successor";

/// Re-seals every private key (and service secret) sealed under `old` with `new`, under the key
/// lock, in one transaction. Returns how many keys moved. Running instances
/// keep working if they were started with `new` as their KEK and `old` as the
/// previous one; keys already under `new` are left alone, so a rerun is a
/// no-op. `actor` is named in the audit trail.
pub async fn rewrap(store: &dyn KeyStore, old: &Kek, new: &Kek, actor: &str) -> Result<usize> {
    let moved = store
        .change_keys(&|keys: &[StoredKey]| {
            let mut out = Vec::new();
            for k in keys.iter().filter(|k| k.kek_id == old.id()) {
                let plain = old.open(&k.kid, &k.sealed_private)?;
                let mut k = k.clone();
                k.sealed_private = new.seal(&k.kid, &plain)?;
                k.kek_id = new.id().to_owned();
                out.push(k);
            }
            Ok(out)
        })
        .await?;
    let mut total = moved.len();
    for name in SECRET_NAMES {
        if let Some((sealed, kek_id)) = store.load_secret(name).await?
            && kek_id == old.id()
        {
            let plain = old.open(name, &sealed)?;
            store
                .store_secret(name, &new.seal(name, &plain)?, new.id(), true)
                .await?;
            total += 1;
        }
    }
    audit::keys_rewrapped(actor, total, old.id(), new.id());
    Ok(total)
}
