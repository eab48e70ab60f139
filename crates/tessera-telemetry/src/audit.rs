//! The audit trail: security events, one JSON object per line, on their own
//! tracing target ([`TARGET`]), so the binary can send them to their own
//! sink (stderr or `--audit-log`) whatever `TESSERA_LOG` filters.
//!
//! One function per event, called from the services, the key manager and
//! the edge's observing layer (for the gate's refusals), never from the
//! domain crate, which does no I/O. Every event carries `time` (RFC 3339,
//! UTC), `event` and `caller`: the
//! authenticated caller's id, `"unknown"` when the request carried none (no
//! callers file, or an open RPC), or [`SERVER`] for what the server does on
//! its own (the key schedule, a family revoked because of a reuse it
//! caught). Subjects, family ids and kids are named; a token id only by
//! [`fingerprint`]; a token, a refresh token, a service key or any key
//! material never. Free text from callers (a revocation's `reason`) is
//! never written either: it could carry anything.

use serde_json::{Map, Value, json};
use tessera_domain::clock::{Clock, SystemClock};
use tessera_domain::keys::KeyState;

mod denials;
mod summary;
pub use denials::{Denial, Denials};
pub use summary::VerifyFailures;

/// Runs `flush` every `window` until `stop` turns true, then once more, so
/// that nothing a summary counted is lost at shutdown.
fn flush_every(
    window: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    flush: impl Fn() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(window) => flush(),
                _ = stop.wait_for(|s| *s) => {
                    flush();
                    return;
                }
            }
        }
    })
}

/// The tracing target of every audit event.
pub const TARGET: &str = "tessera::audit";

/// The caller named by what the server does on its own.
pub const SERVER: &str = "tessera";

/// The caller named when a request carried no authenticated caller.
pub const UNKNOWN: &str = "unknown";

/// A short, stable fingerprint of a token id (or any identifier that must
/// not be written whole): the first 12 hex digits of its SHA-256.
pub fn fingerprint(text: &str) -> String {
    tessera_domain::sha256(text.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How much an event matters to whoever watches the trail.
#[derive(Clone, Copy)]
enum Weight {
    /// Routine: keys rotating, revocations asked for.
    Info,
    /// Someone may be attacking, or a key is lost: worth a page.
    Alarm,
}

fn emit(weight: Weight, event: &str, caller: &str, fields: Value) {
    let mut line = Map::new();
    line.insert("time".into(), crate::rfc3339(SystemClock.now()).into());
    line.insert("event".into(), event.into());
    line.insert("caller".into(), caller.into());
    if let Value::Object(fields) = fields {
        line.extend(fields);
    }
    let line = Value::Object(line);
    match weight {
        Weight::Info => tracing::info!(target: TARGET, "{line}"),
        Weight::Alarm => tracing::warn!(target: TARGET, "{line}"),
    }
}

/// A key changed state (`pending` → published, `active`, `retiring`,
/// `retired`, `compromised`): by the schedule ([`SERVER`]) or an RPC.
pub fn key_state(caller: &str, kid: &str, state: KeyState, activates_at: Option<i64>) {
    let (event, weight) = match state {
        KeyState::Pending => ("key_published", Weight::Info),
        KeyState::Active => ("key_activated", Weight::Info),
        KeyState::Retiring => ("key_retiring", Weight::Info),
        KeyState::Retired => ("key_retired", Weight::Info),
        KeyState::Compromised => ("key_compromised", Weight::Alarm),
    };
    let mut fields = json!({ "kid": kid });
    if let (KeyState::Pending, Some(at)) = (state, activates_at) {
        fields["activates_at"] = crate::rfc3339(at).into();
    }
    emit(weight, event, caller, fields);
}

/// Stored keys (and service secrets) re-sealed under another KEK. KEK ids
/// are fingerprints already, never key material.
pub fn keys_rewrapped(caller: &str, sealed_items: usize, from_kek: &str, to_kek: &str) {
    emit(
        Weight::Info,
        "keys_rewrapped",
        caller,
        json!({ "sealed_items": sealed_items, "from_kek_id": from_kek, "to_kek_id": to_kek }),
    );
}

/// A consumed refresh token was presented again: its family is revoked.
pub fn refresh_token_reused(caller: &str, subject: &str, family_id: &str) {
    emit(
        Weight::Alarm,
        "refresh_token_reused",
        caller,
        json!({ "subject": subject, "family_id": family_id }),
    );
}

/// One token revoked by its id (`newly`: not revoked before).
pub fn token_revoked(caller: &str, jti: &str, newly: bool) {
    emit(
        Weight::Info,
        "token_revoked",
        caller,
        json!({ "jti_sha256": fingerprint(jti), "newly": newly }),
    );
}

/// A session (refresh-token family) revoked.
pub fn family_revoked(caller: &str, family_id: &str, newly: bool) {
    emit(
        Weight::Info,
        "family_revoked",
        caller,
        json!({ "family_id": family_id, "newly": newly }),
    );
}

/// Every token of a subject revoked: its version raised to `min_version`.
pub fn subject_revoked(caller: &str, subject: &str, min_version: u64, families: u64) {
    emit(
        Weight::Info,
        "subject_revoked",
        caller,
        json!({ "subject": subject, "min_version": min_version, "families_revoked": families }),
    );
}

/// A signing key revoked through `Revoke{kid}`: its tokens fail everywhere.
pub fn key_revoked(caller: &str, kid: &str) {
    emit(Weight::Alarm, "key_revoked", caller, json!({ "kid": kid }));
}

/// A purpose token (email verification, password reset) redeemed.
/// `ends_sessions`: a password reset that revokes every session of the
/// subject (written next as `subject_revoked`).
pub fn purpose_token_redeemed(
    caller: &str,
    kind: &str,
    subject: &str,
    jti: &str,
    ends_sessions: bool,
) {
    emit(
        Weight::Info,
        "purpose_token_redeemed",
        caller,
        json!({
            "kind": kind,
            "subject": subject,
            "jti_sha256": fingerprint(jti),
            "ends_sessions": ends_sessions,
        }),
    );
}

/// A stream (`WatchKeys`, `WatchRevocations`) ended by the server: its
/// caller is no longer admitted or no longer has the right after a reload
/// of the callers file, or it reached its maximum lifetime (the client
/// reconnects; a routine event).
pub fn stream_ended(caller: &str, rpc: &str, cause: &str) {
    let weight = if cause == "lifetime" {
        Weight::Info
    } else {
        Weight::Alarm
    };
    emit(
        weight,
        "stream_ended",
        caller,
        json!({ "rpc": rpc, "cause": cause }),
    );
}

/// A caller presented a token another caller obtained (`what`: `refresh`
/// or `redeem`): refused, nothing consumed. `caller` is who presented it,
/// `owner` who obtained it.
pub fn token_owner_mismatch(caller: &str, owner: &str, what: &str, id: &str) {
    // A purpose token is named only by fingerprint, like every token id.
    let id = if what == "purpose" {
        fingerprint(id)
    } else {
        id.to_owned()
    };
    emit(
        Weight::Alarm,
        "token_owner_mismatch",
        caller,
        json!({ "owner": owner, "token": what, "family_id": id }),
    );
}

/// A connection closed by the server for who is at its other end: its
/// client certificate (`caller`: its first name) is no longer trusted
/// after the TLS files were reloaded.
pub fn connection_closed(caller: Option<&str>, peer: Option<&str>, cause: &str) {
    emit(
        Weight::Alarm,
        "connection_closed",
        caller.unwrap_or(UNKNOWN),
        json!({ "peer": peer, "cause": cause }),
    );
}

/// A call refused for who is calling: no known credential, or a known
/// caller without the right (`reason` is the `ErrorReason` name, `detail`
/// what was missing, never a credential).
pub fn caller_denied(caller: Option<&str>, rpc: &str, reason: &str, detail: &str) {
    emit(
        Weight::Alarm,
        "caller_denied",
        caller.unwrap_or(UNKNOWN),
        json!({ "rpc": rpc, "reason": reason, "detail": detail }),
    );
}

/// What reading the callers file again came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallersReload {
    /// The file's callers (`callers` of them) are in force now.
    Ok {
        /// Callers in the file.
        callers: usize,
    },
    /// The file reads as the one in force, which stays as it was.
    Unchanged {
        /// Callers in force.
        callers: usize,
    },
    /// The file cannot be used; the one in force stays.
    Rejected {
        /// The line at fault, when the file could be read.
        line: Option<usize>,
    },
}

/// The callers file read again, because its modification time changed
/// (`trigger` `"modified"`) or on SIGHUP (`"sighup"`). Never its contents:
/// a rejected file is named by the line at fault only.
pub fn callers_reloaded(trigger: &str, outcome: CallersReload) {
    let (weight, mut fields) = match outcome {
        CallersReload::Ok { callers } => {
            (Weight::Info, json!({ "result": "ok", "callers": callers }))
        }
        CallersReload::Unchanged { callers } => (
            Weight::Info,
            json!({ "result": "unchanged", "callers": callers }),
        ),
        CallersReload::Rejected { line } => {
            let mut f = json!({ "result": "rejected" });
            if let Some(line) = line {
                f["line"] = line.into();
            }
            (Weight::Alarm, f)
        }
    };
    fields["trigger"] = trigger.into();
    emit(weight, "callers_reloaded", SERVER, fields);
}

/// A service key made for caller `id` by `tessera callers add` (the
/// operator at that host, `cli`): the id and the key's SHA-256 as the
/// callers file holds it (a hash, never the key).
pub fn caller_key_made(id: &str, key_sha256: &str) {
    emit(
        Weight::Info,
        "caller_key_made",
        "cli",
        json!({ "id": id, "key_sha256": key_sha256 }),
    );
}

/// The gateway routes file (an authorization policy) read at start
/// (`trigger` `"start"`), because it changed (`"modified"`) or on SIGHUP:
/// `Ok(routes)` now in force, or `Err(line)` rejected, the routes in force
/// staying. Never its contents.
pub fn gateway_routes_reloaded(trigger: &str, outcome: Result<usize, Option<usize>>) {
    let (weight, mut fields) = match outcome {
        Ok(routes) => (Weight::Info, json!({ "result": "ok", "routes": routes })),
        Err(line) => {
            let mut f = json!({ "result": "rejected" });
            if let Some(line) = line {
                f["line"] = line.into();
            }
            (Weight::Alarm, f)
        }
    };
    fields["trigger"] = trigger.into();
    emit(weight, "gateway_routes_reloaded", SERVER, fields);
}

/// The server's TLS files (certificate, key, client CA) read again because
/// one changed: `ok` (new connections get the new configuration) or not
/// (`rejected`: the configuration in force stays). Never the files'
/// contents.
pub fn tls_reloaded(ok: bool) {
    let (weight, result) = if ok {
        (Weight::Info, "ok")
    } else {
        (Weight::Alarm, "rejected")
    };
    emit(weight, "tls_reloaded", SERVER, json!({ "result": result }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_12_hex_of_the_sha256() {
        // SHA-256("abc") = ba7816bf8f01cfea…
        assert_eq!(fingerprint("abc"), "ba7816bf8f01");
        assert_ne!(fingerprint("abd"), fingerprint("abc"));
    }
}
