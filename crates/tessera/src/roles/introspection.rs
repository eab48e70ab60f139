//! The verifier's part: `IntrospectionService` and `RevocationService`, and
//! the revocation view Verify answers from — loaded from the store, fed by
//! every revocation this instance learns of (its own, the bus's, the
//! reconcile's), and with Postgres kept within `--max-view-staleness` of the
//! store. Keys come from the issuer through an [`IssuerPort`].

use super::issuer::reload_on_kill;
use super::{AUDIT_WINDOW, Apply, Base, Part, TOKEN_RPC_MAX_MESSAGE};
use crate::config::AppError;
use crate::readiness::{PublishedKeys, ViewFresh};
use crate::tasks::{Reconcile, reload};
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;
use tessera_api::ports::KeyKiller;
use tessera_domain::clock::UnixTime;
use tessera_domain::reconcile::LogCursor;
use tessera_domain::reconnect::Reconnect;
use tessera_domain::revocation::RevocationEvent;
use tessera_introspection::{
    ExtAuthz, Gateway, IntrospectionApi, KeyFollower, KeySource, RevocationApi, Verifier, ViewAge,
};
use tessera_issuer::KeyManager;
use tessera_proto::v1::introspection_service_server::IntrospectionServiceServer;
use tessera_proto::v1::revocation_service_server::RevocationServiceServer;
use tessera_storage::Backend;
use tokio::sync::broadcast;

/// How the verifier reaches the issuer: for the keys Verify trusts, to kill
/// a key, and to stop signing with a key killed elsewhere.
pub(crate) enum IssuerPort {
    /// All-in-one: the key manager in this process (its ring is Verify's).
    InProcess(Arc<KeyManager>),
    /// The introspection role: the issuer over gRPC, its keys learnt by
    /// `follower` (`GetJwks`, then `WatchKeys`), kills asked of `killer`
    /// (its `KeyService`).
    Remote {
        killer: Arc<dyn KeyKiller>,
        follower: Arc<KeyFollower>,
    },
}

impl IssuerPort {
    /// What a key kill learnt from the bus or the store does to the issuer.
    fn on_kill(&self) -> Apply {
        match self {
            Self::InProcess(keys) => reload_on_kill(keys.clone()),
            // The issuer's own instances follow the bus themselves.
            Self::Remote { .. } => Arc::new(|_: &RevocationEvent| {}),
        }
    }

    /// Verify's key source and key killer; over gRPC, once the issuer has
    /// answered with its key set.
    async fn keys(
        self,
        base: &Base,
        part: &mut Part,
    ) -> Result<(Arc<dyn KeySource>, Arc<dyn KeyKiller>), AppError> {
        match self {
            Self::InProcess(keys) => Ok((base.ring.clone(), keys)),
            Self::Remote { killer, follower } => {
                fetch_keys(&follower).await?;
                part.tasks.push(follower.clone().follow(base.stopping()));
                Ok((Arc::new(follower), killer))
            }
        }
    }
}

/// The verifier's part, and its revocation service (the issuer's
/// [`tessera_api::ports::Revoker`] in the all-in-one topology).
pub(crate) struct Verifying {
    pub part: Part,
    pub revocations: Arc<RevocationApi>,
}

/// The introspection and revocation services; ready once keys are
/// published and, with Postgres, while the view is fresh.
pub(crate) async fn part(base: &Base, issuer: IssuerPort) -> Result<Verifying, AppError> {
    let mut part = Part::default();
    let (now, margin) = (base.cfg.clock.now(), base.cfg.policy.family_margin());
    base.metrics.watch_view(base.view.clone());
    let view = base.view.clone();
    let cursor = reload(&base.store, &|e| view.apply(e), now, margin).await?;
    let (feed, _) = broadcast::channel(1024);
    // Every revocation this instance learns of, by any path: into the
    // view, to the WatchRevocations watchers, and a key kill to an issuer
    // in this process (which reloads its keys).
    let apply: Apply = {
        let (view, feed, on_kill) = (base.view.clone(), feed.clone(), issuer.on_kill());
        Arc::new(move |e: &RevocationEvent| {
            view.apply(e);
            let _ = feed.send(e.clone());
            on_kill(e);
        })
    };
    let bus = base.bus(apply.clone(), &mut part.tasks).await?;
    let age = (base.store.backend() == Backend::Postgres)
        .then(|| reconcile(base, apply, cursor, now, &mut part));
    let (keys, key_killer) = issuer.keys(base, &mut part).await?;
    let failures = Arc::new(tessera_telemetry::audit::VerifyFailures::default());
    let summaries = failures.clone().summarise(AUDIT_WINDOW, base.stopping());
    part.tasks.push(summaries);
    let verifier = Verifier {
        failures,
        keys,
        key_killer,
        view: base.view.clone(),
        store: base.store.clone(),
        bus,
        policy: Arc::new(base.cfg.policy.clone()),
        clock: base.cfg.clock.clone(),
        metrics: base.metrics.clone(),
        feed,
        shutdown: base.stopping(),
    };
    let revocations = Arc::new(RevocationApi::new(verifier.clone()));
    part.readiness
        .push(Box::new(PublishedKeys(base.ring.clone())));
    let part = gateways(base, &verifier, age, part)?
        .serve(
            IntrospectionServiceServer::new(IntrospectionApi::new(verifier))
                .max_decoding_message_size(TOKEN_RPC_MAX_MESSAGE),
        )
        .serve(
            RevocationServiceServer::from_arc(revocations.clone())
                .max_decoding_message_size(TOKEN_RPC_MAX_MESSAGE),
        );
    Ok(Verifying { part, revocations })
}

/// With a routes file: the HTTP forward-auth endpoint, Envoy's gRPC
/// `ext_authz`, and the routes' reloads.
fn gateways(
    base: &Base,
    verifier: &Verifier,
    age: Option<ViewAge>,
    mut part: Part,
) -> Result<Part, AppError> {
    let Some(path) = &base.cfg.gateway_routes_file else {
        return Ok(part);
    };
    let routes = crate::gateway::load_routes(path)?;
    let gateway = Gateway::new(verifier.clone(), routes, age);
    part.http = part.http.merge(crate::gateway::routes(gateway.clone()));
    let reloads = crate::gateway::watch(path.clone(), gateway.clone(), base.stopping());
    part.tasks.push(reloads);
    Ok(part.serve(
        AuthorizationServer::new(ExtAuthz(gateway))
            .max_decoding_message_size(EXT_AUTHZ_MAX_MESSAGE),
    ))
}

/// Largest `CheckRequest` decoded: Envoy sends the client's headers, and
/// gateways bound those well below this (nginx 8 KiB per line, Envoy 60 KiB
/// in all by default).
const EXT_AUTHZ_MAX_MESSAGE: usize = 96 * 1024;

/// With a shared store (Postgres): the reconcile task, caught up as of the
/// load at `now`, and the readiness check on the view's age (which gateways
/// are also refused past).
fn reconcile(
    base: &Base,
    apply: Apply,
    cursor: LogCursor,
    now: UnixTime,
    part: &mut Part,
) -> ViewAge {
    let cfg = &base.cfg;
    let caught_up = Arc::new(AtomicI64::new(now));
    let gateway_caught_up = caught_up.clone();
    base.metrics.view_reconciled(now);
    part.readiness.push(Box::new(ViewFresh {
        caught_up: caught_up.clone(),
        clock: cfg.clock.clone(),
        max_age: cfg.max_view_staleness,
    }));
    let task = Reconcile {
        store: base.store.clone(),
        apply,
        metrics: base.metrics.clone(),
        clock: cfg.clock.clone(),
        family_margin: cfg.policy.family_margin(),
        every: cfg.reconcile_interval,
        caught_up,
    };
    part.tasks.push(task.spawn(cursor, base.stopping()));
    ViewAge {
        caught_up: gateway_caught_up,
        max_age: cfg.max_view_staleness,
    }
}

/// Learns the key set from the issuer (`GetJwks`).
async fn fetch_keys(follower: &KeyFollower) -> Result<(), AppError> {
    // Without keys nothing verifies: the issuer must answer within
    // about 10 s (a liveness bound, retried with the shared backoff).
    let mut backoff = Reconnect::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut fetched = follower.fetch().await;
    while fetched.is_err() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(backoff.next_delay()).await;
        fetched = follower.fetch().await;
    }
    fetched.map_err(|e| {
        AppError::Config(format!(
            "issuer_endpoint: the issuer did not answer GetJwks ({:?})",
            e.code()
        ))
    })
}
