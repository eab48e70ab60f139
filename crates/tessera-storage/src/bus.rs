//! Revocation fan-out. In the distributed mode Redis carries every
//! revocation to every instance (pub/sub) and keeps a deny-list whose
//! entries expire when the covered token would have (`SET … PXAT`). Redis is
//! a carrier and a cache, never the truth: the durable store is, and an
//! instance that (re)subscribes reloads what is in force from it, so a lost
//! message or an evicted key cannot resurrect a revoked token.

use async_trait::async_trait;
use deadpool_redis::redis::{self, AsyncCommands};
use deadpool_redis::{Manager, Pool, Runtime};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tessera_domain::clock::{Clock, UnixTime};
use tessera_domain::error::{DomainError, Result};
use tessera_domain::reconnect::Reconnect;
use tessera_domain::revocation::RevocationEvent;
use tessera_domain::store::{RevocationBus, RevocationStore};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::tls::RedisTls;

/// The embedded mode's bus: the one process already applied the event to its
/// view, so there is nothing to carry.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalBus;

#[async_trait]
impl RevocationBus for LocalBus {
    async fn publish(&self, _event: &RevocationEvent, _now: UnixTime) -> Result<()> {
        Ok(())
    }
}

pub(crate) fn redis_err(e: &redis::RedisError) -> DomainError {
    // Kind only: a Redis error can echo a command's arguments.
    DomainError::StoreUnavailable(format!("redis error ({:?})", e.kind()))
}

/// How often the revocation subscription is pinged.
const PING_EVERY: Duration = Duration::from_secs(5);

/// The longest any Redis call may take before it counts as failed.
pub(crate) const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// The error for an unusable Redis URL; the URL (which may hold a password)
/// and the library's message are never repeated.
fn invalid_url<E>(_: E) -> DomainError {
    DomainError::field(
        "redis_url",
        "not a valid Redis URL (redis://… or, with TLS, rediss://…)",
    )
}

/// Why the first connection to Redis failed, naming the setting and the
/// URL without its password: a TLS failure with rustls's description, a
/// refusal or a timeout by name, anything else by kind (a Redis error can
/// echo a command's arguments, such as an AUTH password).
fn connect_err(e: &redis::RedisError, url: &str) -> DomainError {
    let label = format!("redis_url {}", crate::redact_url(url));
    DomainError::StoreUnavailable(match crate::tls::failure(e) {
        Some(t) => crate::tls::handshake_failed(&label, t, "redis_ca_file"),
        None if e.is_connection_refusal() => format!(
            "{label}: could not connect: connection refused (is Redis running, on this host and port?)"
        ),
        None if e.kind() == redis::ErrorKind::AuthenticationFailed => format!(
            "{label}: could not connect: authentication failed (check the password in redis_url)"
        ),
        None if e.is_timeout() => format!("{label}: could not connect: no answer in time"),
        None => format!("{label}: could not connect ({:?})", e.kind()),
    })
}

/// Redis connection settings from `url`, with the socket options every
/// Redis connection uses: `TCP_NODELAY` (redis-rs leaves it off, so a
/// pipelined or multi-write command could wait for a delayed ACK) and TCP
/// keepalive, so a subscription whose peer vanished is noticed.
fn connection_info(url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
    use redis::IntoConnectionInfo;
    let keepalive = redis::io::tcp::socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    Ok(url.into_connection_info()?.set_tcp_settings(
        redis::io::tcp::TcpSettings::default()
            .set_nodelay(true)
            .set_keepalive(keepalive),
    ))
}

/// Until [`RedisBus::with_token_life`] says otherwise: a day.
const DEFAULT_TOKEN_LIFE: i64 = 86_400;

/// Raises a subject's lowest valid version, never lowers it (two bumps'
/// publishes may arrive in either order), and keeps it a token life.
const RAISE_VERSION: &str = "local v = tonumber(ARGV[1]) \
local c = tonumber(redis.call('GET', KEYS[1]) or '0') or 0 \
if v > c then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end \
return 0";

/// The Redis bus and deny-list. Every key and the channel start with
/// `prefix`, so several deployments (or tests) can share one Redis.
#[derive(Clone)]
pub struct RedisBus {
    pub(crate) pool: Pool,
    client: redis::Client,
    prefix: String,
    /// A deny-list key may be missing: a publish failed (or this instance
    /// just started and cannot know). See `deny_list`.
    pub(crate) missed: Arc<AtomicBool>,
    /// The longest any token lives, clock skew included, seconds: how long
    /// a subject or key entry must outlive its revocation.
    token_life: i64,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Encodes an event for the channel (the serde form of
/// [`RevocationEvent`]).
fn encode(e: &RevocationEvent) -> Result<String> {
    serde_json::to_string(e)
        .map_err(|_| DomainError::Internal("a revocation event did not serialise".into()))
}

/// Decodes an event from the channel; `None` for anything else.
fn decode(s: &str) -> Option<RevocationEvent> {
    serde_json::from_str(s).ok()
}

impl RedisBus {
    /// Connects to `url` and checks that Redis answers. A `rediss://` URL
    /// speaks TLS (rustls), trusting `tls.ca_file` if set and presenting the
    /// client certificate if one is set; TLS files with a `redis://` URL are
    /// refused rather than silently unused.
    pub async fn connect(url: &str, prefix: &str, tls: &RedisTls) -> Result<Self> {
        let info = connection_info(url).map_err(invalid_url)?;
        let info = if url.starts_with("rediss://") {
            // The files go into the connection info, which both the pool and
            // the subscriber below are built from: every connection is TLS.
            let client = redis::Client::build_with_tls(info, tls.certificates()?)
                .map_err(|_| DomainError::field("redis_url", "TLS settings were refused"))?;
            client.get_connection_info().clone()
        } else if let Some(setting) = tls.first_set() {
            return Err(DomainError::field(
                setting,
                "is set, but redis_url is not a rediss:// (TLS) URL",
            ));
        } else {
            info
        };
        // Built from the manager, not `Config::from_url`: deadpool's config
        // would reset the TCP settings to the library's defaults.
        // Bounded waits: a stopped or frozen Redis fails a publish within
        // REDIS_TIMEOUT instead of holding the (already durable) revocation.
        let pool = Pool::builder(Manager::new(info.clone()).map_err(invalid_url)?)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(REDIS_TIMEOUT))
            .create_timeout(Some(REDIS_TIMEOUT))
            .recycle_timeout(Some(REDIS_TIMEOUT))
            .build()
            .map_err(invalid_url)?;
        let client = redis::Client::open(info).map_err(invalid_url)?;
        let bus = Self {
            pool,
            client,
            prefix: prefix.to_owned(),
            missed: Arc::new(AtomicBool::new(true)),
            token_life: DEFAULT_TOKEN_LIFE,
        };
        // The first connection says why it failed (a refused certificate, a
        // TLS/plain mismatch), so a misconfigured instance refuses to start
        // with the fix named rather than "pool unavailable".
        let mut c = bus.pool.get().await.map_err(|e| match e {
            deadpool_redis::PoolError::Backend(e) => connect_err(&e, url),
            _ => DomainError::StoreUnavailable(format!(
                "redis_url {}: could not connect: no connection within 1 s",
                crate::redact_url(url)
            )),
        })?;
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(|e| connect_err(&e, url))?;
        Ok(bus)
    }

    /// Ok when Redis answers PING.
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(|e| redis_err(&e))?;
        Ok(())
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection> {
        self.pool
            .get()
            .await
            .map_err(|_| DomainError::StoreUnavailable("redis pool unavailable".into()))
    }

    /// Sets the longest life of any token, clock skew included, seconds
    /// (subject and key entries expire that long after they are written).
    #[must_use]
    pub fn with_token_life(mut self, seconds: i64) -> Self {
        self.token_life = seconds.max(1);
        self
    }

    /// The deny-list write for `event` at `now` (the README's "Redis
    /// deny-list" documents the keys for readers):
    ///
    /// - `deny:jti:<jti>` = `1` until the token's `exp` (plus skew);
    /// - `deny:sid:<family id>` = `1` until the event's `until`: the last
    ///   moment an access token of the family can be valid (its refresh
    ///   tokens are judged by the store);
    /// - `deny:sub:<subject>` = the lowest subject version still valid (a
    ///   token whose `ver` is below it is revoked), never lowered, for the
    ///   longest token life;
    /// - `deny:kid:<kid>` = `1` for the longest token life.
    ///
    /// `None`: the entry no longer matters.
    pub(crate) fn deny_write(&self, event: &RevocationEvent, now: UnixTime) -> Option<redis::Cmd> {
        let set = |kind: &str, id: &str, ttl: i64| {
            let key = format!("{}deny:{kind}:{id}", self.prefix);
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(1).arg("PX").arg(ttl.max(1) * 1000);
            cmd
        };
        match event {
            RevocationEvent::Jti { until, .. } | RevocationEvent::Family { until, .. }
                if *until <= now =>
            {
                None
            }
            RevocationEvent::Jti { jti, until } => Some(set("jti", jti, until - now)),
            RevocationEvent::Family { family_id, until } => {
                Some(set("sid", family_id, until - now))
            }
            RevocationEvent::Key { kid } => Some(set("kid", kid, self.token_life)),
            RevocationEvent::Subject {
                subject,
                min_version,
            } => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RAISE_VERSION)
                    .arg(1)
                    .arg(format!("{}deny:sub:{subject}", self.prefix))
                    .arg(*min_version)
                    .arg(self.token_life);
                Some(cmd)
            }
        }
    }

    /// The pub/sub channel.
    pub fn channel(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    /// Keeps a view current until `shutdown` turns true: subscribes, reloads
    /// what is in force from the durable `store` (so nothing published while
    /// unsubscribed is missed), then hands each message to `apply`.
    /// Reconnects with the shared jittered backoff, reset once a
    /// subscription has worked (subscribed and caught up from the store).
    pub fn follow(
        &self,
        apply: Arc<dyn Fn(&RevocationEvent) + Send + Sync>,
        store: Arc<dyn RevocationStore>,
        clock: Arc<dyn Clock>,
        family_margin: i64,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        let channel = self.channel();
        tokio::spawn(async move {
            let mut backoff = Reconnect::default();
            loop {
                let mut subscribed = false;
                let round = async {
                    let mut pubsub = client.get_async_pubsub().await.map_err(|e| redis_err(&e))?;
                    pubsub
                        .subscribe(&channel)
                        .await
                        .map_err(|e| redis_err(&e))?;
                    store.in_force(clock.now(), family_margin, &*apply).await?;
                    subscribed = true;
                    tracing::debug!("following revocations");
                    relay(pubsub, &*apply).await
                };
                tokio::select! {
                    r = round => {
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "revocation stream lost; reconnecting");
                        }
                    }
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                if subscribed {
                    backoff.reset();
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        })
    }
}

#[async_trait]
impl RevocationBus for RedisBus {
    async fn publish(&self, event: &RevocationEvent, now: UnixTime) -> Result<()> {
        let done = tokio::time::timeout(REDIS_TIMEOUT, self.publish_now(event, now))
            .await
            .map_err(|_| DomainError::StoreUnavailable("redis timed out".into()))
            .and_then(|r| r);
        if done.is_err() {
            self.missed.store(true, Ordering::Relaxed);
        }
        done
    }
}

impl RedisBus {
    async fn publish_now(&self, event: &RevocationEvent, now: UnixTime) -> Result<()> {
        let mut c = self.conn().await?;
        if let Some(write) = self.deny_write(event, now) {
            let () = write.query_async(&mut c).await.map_err(|e| redis_err(&e))?;
        }
        let _: i64 = c
            .publish(self.channel(), encode(event)?)
            .await
            .map_err(|e| redis_err(&e))?;
        Ok(())
    }
}

/// Hands each message of `pubsub` to `apply` until the subscription ends
/// or dies. Supervised: a PING every [`PING_EVERY`] must be answered within
/// [`REDIS_TIMEOUT`], or the connection counts as dead (a frozen Redis, a
/// silently dropped connection) and is replaced. The reconcile from the
/// store bounds what a dead subscription can delay meanwhile.
async fn relay(
    pubsub: redis::aio::PubSub,
    apply: &(dyn Fn(&RevocationEvent) + Send + Sync),
) -> Result<(), DomainError> {
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let payload: String = msg.get_payload().unwrap_or_default();
                match decode(&payload) {
                    Some(e) => apply(&e),
                    None => tracing::warn!("ignored an unreadable revocation message"),
                }
            }
            _ = ping.tick() => {
                let pong = tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return Err(DomainError::StoreUnavailable("redis subscription did not answer PING".into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        for e in [
            RevocationEvent::Jti {
                jti: "j".into(),
                until: 5,
            },
            RevocationEvent::Family {
                family_id: "f".into(),
                until: 6,
            },
            RevocationEvent::Subject {
                subject: "s".into(),
                min_version: 7,
            },
            RevocationEvent::Key { kid: "k".into() },
        ] {
            assert_eq!(decode(&encode(&e).unwrap()), Some(e));
        }
        // The wire form other instances (and older versions) speak.
        assert_eq!(
            decode(r#"{"t":"jti","jti":"j","until":5}"#),
            Some(RevocationEvent::Jti {
                jti: "j".into(),
                until: 5
            })
        );
        assert_eq!(
            encode(&RevocationEvent::Key { kid: "k".into() }).unwrap(),
            r#"{"t":"key","kid":"k"}"#
        );
        assert_eq!(decode("{\"t\":\"other\"}"), None);
        assert_eq!(decode("not json"), None);
    }
}
