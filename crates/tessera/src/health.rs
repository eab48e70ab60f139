//! Health for every kind of balancer, from one computation: every 2 s the
//! watcher runs the readiness checks of every part ([`crate::readiness`]:
//! the store, the revocation view's age, the key set) and publishes the
//! result to gRPC health (per service and `""`, the whole server) and to
//! the HTTP probes on the same port:
//!
//! - `GET /livez`: 200 while the process serves HTTP at all (a liveness
//!   probe restarts a wedged process, never one whose database is down).
//! - `GET /readyz`: 200 when the whole server is SERVING, else 503 with the
//!   reason; `?service=tessera.v1.IntrospectionService` asks about one
//!   service, as gRPC health does.
//!
//! And the fallback of the router: an unknown HTTP path is 404, while an
//! unknown gRPC method stays `UNIMPLEMENTED` (tonic's own fallback answers
//! both with HTTP 200 and `grpc-status: 12`, which a plain HTTP health check
//! reads as healthy).

use crate::readiness::{Findings, ReadinessCheck};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::time::Duration;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// What the last check found: the inputs and each service's status.
#[derive(Debug, Clone, Default)]
pub(crate) struct Readiness {
    /// False until the first check ran, and again once shutdown began.
    pub checked: bool,
    /// Shutdown began: balancers should stop sending calls.
    pub stopping: bool,
    /// The store answered a ping within 2 s.
    pub store_ok: bool,
    /// The revocation view is within its staleness bound.
    pub view_ok: bool,
    /// Keys are loaded: a published set, and a signing key on an issuer.
    pub keys_ok: bool,
    /// Each gRPC service of this instance and whether it is SERVING.
    pub services: Vec<(&'static str, bool)>,
}

impl Readiness {
    /// SERVING for `service` ("" is the whole server); `None` when this
    /// instance does not run it.
    fn serving(&self, service: &str) -> Option<bool> {
        let known = service.is_empty() || self.services.iter().any(|(s, _)| *s == service);
        if !known {
            return None;
        }
        if !self.checked || self.stopping {
            return Some(false);
        }
        if service.is_empty() {
            return Some(self.services.iter().all(|(_, ok)| *ok));
        }
        self.services
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, ok)| *ok)
    }

    /// Why the instance (or `service`) is not ready, in a few words.
    fn reasons(&self) -> Vec<&'static str> {
        if self.stopping {
            return vec!["shutting down"];
        }
        if !self.checked {
            return vec!["starting: the first check has not run yet"];
        }
        let mut out = Vec::new();
        if !self.store_ok {
            out.push("the store does not answer");
        }
        if !self.view_ok {
            out.push("the revocation view is older than --max-view-staleness");
        }
        if !self.keys_ok {
            out.push("no keys are loaded");
        }
        out
    }
}

/// What each service needs to answer correctly: the issuer needs the store
/// and a signing key; the key service and `Revoke` the store; `Verify` a
/// fresh revocation view and keys (it answers from memory, so a verifier
/// stays SERVING through a database blip, and leaves once its view is older
/// than the staleness bound).
pub(crate) fn service_status(service: &str, r: &Readiness) -> bool {
    match service {
        "tessera.v1.IntrospectionService" => r.view_ok && r.keys_ok,
        "tessera.v1.IssuerService" => r.store_ok && r.keys_ok,
        _ => r.store_ok,
    }
}

/// Sets every service's gRPC health status.
pub(crate) async fn set_all(
    health: &HealthReporter,
    services: &[&'static str],
    status: ServingStatus,
) {
    for s in services {
        health.set_service_status(*s, status).await;
    }
}

/// Health per service, every 2 s, into gRPC health, `ready` (read by
/// `/readyz`) and the `tessera_store_up` and `tessera_service_serving`
/// gauges. `services` includes "" (the whole server).
pub(crate) async fn watch_health(
    checks: Vec<Box<dyn ReadinessCheck>>,
    health: HealthReporter,
    services: Vec<&'static str>,
    (ready, metrics): (
        watch::Sender<Readiness>,
        std::sync::Arc<tessera_telemetry::metrics::Metrics>,
    ),
    mut stop: watch::Receiver<bool>,
) {
    let mut last: Vec<Option<bool>> = vec![None; services.len()];
    loop {
        let Findings {
            store_ok,
            view_ok,
            keys_ok,
        } = crate::readiness::run(&checks).await;
        if *stop.borrow() {
            return;
        }
        let mut now = Readiness {
            checked: true,
            stopping: false,
            store_ok,
            view_ok,
            keys_ok,
            services: Vec::new(),
        };
        now.services = services
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| (*s, service_status(s, &now)))
            .collect();
        let whole = now.services.iter().all(|(_, ok)| *ok);
        for (i, s) in services.iter().enumerate() {
            let ok = if s.is_empty() {
                whole
            } else {
                service_status(s, &now)
            };
            if last[i] != Some(ok) {
                if !ok {
                    tracing::warn!(service = %s, store_ok, view_ok, keys_ok, "NOT_SERVING");
                }
                let status = [ServingStatus::NotServing, ServingStatus::Serving][usize::from(ok)];
                health.set_service_status(*s, status).await;
                last[i] = Some(ok);
            }
        }
        metrics.health(store_ok, &now.services);
        ready.send_replace(now);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// `/livez` and `/readyz`, answered from `ready`.
pub(crate) fn routes(ready: watch::Receiver<Readiness>) -> axum::Router {
    let livez = || async { plain(StatusCode::OK, "ok\n".to_owned()) };
    let readyz = move |req: Request<axum::body::Body>| {
        let snapshot = ready.borrow().clone();
        async move { readyz(&snapshot, req.uri().query()) }
    };
    axum::Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
}

fn readyz(r: &Readiness, query: Option<&str>) -> Response {
    let service = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("service="))
        .unwrap_or("");
    let Some(ok) = r.serving(service) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("this instance does not serve {service:?}\n"),
        );
    };
    let services: serde_json::Map<String, serde_json::Value> = r
        .services
        .iter()
        .map(|(s, ok)| {
            let ok = *ok && r.checked && !r.stopping;
            ((*s).to_owned(), status_name(ok).into())
        })
        .collect();
    let body = serde_json::json!({
        "status": status_name(ok),
        "service": service,
        "reasons": if ok { Vec::new() } else { r.reasons() },
        "services": services,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (code, format!("{body}\n")).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn status_name(ok: bool) -> &'static str {
    if ok { "SERVING" } else { "NOT_SERVING" }
}

fn plain(code: StatusCode, text: String) -> Response {
    let mut response = (code, text).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "not found\n".to_owned())
}

/// The router's fallback: a gRPC request for a method nobody serves is
/// `UNIMPLEMENTED`, as gRPC clients expect (with an ErrorInfo, and, for a
/// Tessera service this instance's role does not run, which role does);
/// anything else is HTTP 404. `served`: the services of this instance.
pub(crate) async fn fallback(
    served: std::sync::Arc<[&'static str]>,
    req: Request<axum::body::Body>,
) -> Response {
    if tessera_edge::refusal::is_grpc(&req) {
        return unimplemented(req.uri().path(), &served)
            .into_http::<axum::body::Body>()
            .into_response();
    }
    not_found()
}

/// UNIMPLEMENTED for `path`: names the role that serves a Tessera service
/// this instance does not run, so `tessera revoke` pointed at an issuer
/// says to point it at a verifier instead of answering an empty message.
fn unimplemented(path: &str, served: &[&'static str]) -> tonic::Status {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let role = match service {
        "tessera.v1.IssuerService" | "tessera.v1.KeyService" => Some("issuer"),
        "tessera.v1.IntrospectionService" | "tessera.v1.RevocationService" => Some("introspection"),
        _ => None,
    };
    let message = match role {
        Some(role) if !served.contains(&service) => format!(
            "{service} is not served by this instance: the {role} role serves it (point --endpoint at a `--role {role}` or `--role all` instance)"
        ),
        _ => "no such method on this server".to_owned(),
    };
    tessera_api::status(
        tonic::Code::Unimplemented,
        tessera_proto::v1::ErrorReason::NotImplemented,
        message,
    )
}

/// In front of the gRPC services: a plain HTTP request for a gRPC path
/// (`GET /grpc.health.v1.Health/Check`) is 404 too, never a 200 carrying a
/// grpc-status that an HTTP check would read as healthy.
pub(crate) async fn grpc_only(
    req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    if tessera_edge::refusal::is_grpc(&req) {
        next.run(req).await
    } else {
        not_found()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(store_ok: bool, view_ok: bool) -> Readiness {
        let mut r = Readiness {
            checked: true,
            store_ok,
            view_ok,
            keys_ok: true,
            ..Readiness::default()
        };
        r.services = [
            "tessera.v1.IntrospectionService",
            "tessera.v1.RevocationService",
        ]
        .into_iter()
        .map(|s| (s, service_status(s, &r)))
        .collect();
        r
    }

    #[test]
    fn a_verifier_with_a_fresh_view_serves_verify_through_a_store_outage() {
        let r = ready(false, true);
        assert_eq!(r.serving("tessera.v1.IntrospectionService"), Some(true));
        assert_eq!(r.serving("tessera.v1.RevocationService"), Some(false));
        assert_eq!(r.serving(""), Some(false));
        assert_eq!(r.reasons(), vec!["the store does not answer"]);
        assert_eq!(r.serving("tessera.v1.IssuerService"), None);
    }

    #[test]
    fn nothing_is_ready_before_the_first_check_or_after_shutdown() {
        let mut r = ready(true, true);
        assert_eq!(r.serving(""), Some(true));
        r.stopping = true;
        assert_eq!(r.serving(""), Some(false));
        assert_eq!(r.serving("tessera.v1.IntrospectionService"), Some(false));
        assert_eq!(r.reasons(), vec!["shutting down"]);
        assert_eq!(Readiness::default().serving(""), Some(false));
    }
}
