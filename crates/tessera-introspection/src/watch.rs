//! `RevocationService.WatchRevocations`: a stream per watcher that reads the
//! store's revocation log by cursor (docs/architecture.md, WatchRevocations).
//! Reading the log rather than a buffer is what lets a slow or reconnecting
//! watcher miss nothing: no watcher is ever dropped for being behind.

use crate::Verifier;
use tessera_api::{from_domain, invalid, timestamp};
use tessera_domain::reconcile::LogCursor;
use tessera_domain::revocation::RevocationEvent;
use tessera_proto::v1::{WatchRevocationsRequest, WatchRevocationsResponse};
use tonic::Status;

/// The stream `WatchRevocations` answers.
pub(crate) type WatchStream =
    tokio_stream::wrappers::ReceiverStream<Result<WatchRevocationsResponse, Status>>;

/// Every revocation logged in the store after `after_id` (from the log's
/// end when it is 0): this instance's and, through the shared store, every
/// other instance's. An event may come more than once, as the proto allows
/// (a watcher that reconnects from an earlier id reads it again); applying
/// one twice is harmless. A watcher that falls behind is never dropped: its
/// task waits on the stream's bounded channel, then reads on from its
/// cursor.
pub(crate) async fn watch(v: &Verifier, r: WatchRevocationsRequest) -> Result<WatchStream, Status> {
    let after =
        i64::try_from(r.after_id).map_err(|_| invalid("after_id", "is larger than any log id"))?;
    // From the log's end, or from `after_id`; either way the watermark
    // starts at the store's snapshot, so a commit in flight now is sent
    // whenever it lands.
    let mut start = v.store.revocation_cursor().await.map_err(from_domain)?;
    if after != 0 {
        start.high = after;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let cursor = LogCursor::new(start, v.clock.now());
    tokio::spawn(follow_log(v.clone(), cursor, tx));
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Streams the revocation log from `cursor` to `tx`: whatever is logged
/// after it, then each time this instance applies a revocation (the feed
/// only wakes it) or every second, until the watcher leaves or the server
/// stops. Reading the log, not a buffer, is what makes a slow or
/// reconnecting watcher miss nothing.
async fn follow_log(
    v: Verifier,
    mut cursor: LogCursor,
    tx: tokio::sync::mpsc::Sender<Result<WatchRevocationsResponse, Status>>,
) {
    let mut wake = v.feed.subscribe();
    let mut shutdown = v.shutdown.clone();
    let margin = v.policy.family_margin();
    loop {
        loop {
            let page = match v.store.revocations_after(&cursor.query(), margin).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(from_domain(e))).await;
                    return;
                }
            };
            let full = page.rows.len() >= 10_000 || page.swept.len() >= 10_000;
            for (id, e) in cursor.take(page, v.clock.now()).events {
                if tx.send(Ok(watch_message(id, e))).await.is_err() {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        tokio::select! {
            r = wake.recv() => {
                if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = tx.closed() => return,
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

fn watch_message(id: i64, e: RevocationEvent) -> WatchRevocationsResponse {
    let message = match e {
        RevocationEvent::Jti { jti, until } => WatchRevocationsResponse {
            jti,
            revoked_until: Some(timestamp(until)),
            ..Default::default()
        },
        RevocationEvent::Family { family_id, until } => WatchRevocationsResponse {
            family_id,
            revoked_until: Some(timestamp(until)),
            ..Default::default()
        },
        RevocationEvent::Subject {
            subject,
            min_version,
        } => WatchRevocationsResponse {
            subject,
            min_subject_version: min_version,
            ..Default::default()
        },
        RevocationEvent::Key { kid } => WatchRevocationsResponse {
            kid,
            ..Default::default()
        },
    };
    WatchRevocationsResponse {
        id: u64::try_from(id).unwrap_or(0),
        ..message
    }
}
