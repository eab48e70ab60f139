//! Gateways: the HTTP forward-auth endpoint (nginx `auth_request`, Caddy
//! `forward_auth`, Traefik `ForwardAuth`, Envoy's HTTP `ext_authz`), the
//! routes file and its reloads. The answers are
//! [`tessera_introspection::Gateway`]'s; Envoy's gRPC `ext_authz` is
//! [`tessera_introspection::ExtAuthz`].
//!
//! The original request is read from `X-Forwarded-Host` (else `Host`) and
//! `X-Forwarded-Uri` (else the path below the endpoint, as Envoy's HTTP
//! `ext_authz` sends it), and only those: a gateway sets them itself,
//! replacing whatever its client sent, while a header it does not know of
//! (`X-Original-URI`, say) would pass from the client untouched and could
//! name a route the request does not take. A header given twice is refused.

use crate::config::AppError;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use std::path::{Path, PathBuf};
use tessera_api::caller::CallerId;
use tessera_domain::gateway::Routes;
use tessera_edge::gate::FORWARD_AUTH_PATH;
use tessera_introspection::{Answer, Asked, Gateway};
use tokio::sync::watch;

/// Reads the routes file at start (audited); the error names the file and
/// the line at fault.
pub(crate) fn load_routes(path: &Path) -> Result<Routes, AppError> {
    read_routes(path, "start").map_err(AppError::Config)
}

/// Reads the routes file and audits the outcome (`trigger`: why it was
/// read); the error names the file and the line at fault.
fn read_routes(path: &Path, trigger: &str) -> Result<Routes, String> {
    let name = path.display();
    let outcome = crate::edge::read_config_file(path)
        .map_err(|e| (format!("gateway_routes_file {name}: {e}"), None))
        .and_then(|text| {
            Routes::parse(&text)
                .map_err(|e| (format!("gateway_routes_file {name}: {e}"), Some(e.line)))
        });
    tessera_telemetry::audit::gateway_routes_reloaded(
        trigger,
        outcome.as_ref().map(Routes::len).map_err(|(_, line)| *line),
    );
    outcome.map_err(|(message, _)| message)
}

/// The forward-auth routes, to merge into the port's HTTP routes.
pub(crate) fn routes(gateway: Gateway) -> axum::Router {
    let handler = move |uri: Uri, headers: HeaderMap, caller: Option<axum::Extension<CallerId>>| {
        let gateway = gateway.clone();
        async move {
            let caller = caller.map(|c| c.0.0.id.clone());
            forward_auth(&gateway, &uri, &headers, caller.as_deref())
        }
    };
    axum::Router::new()
        .route(FORWARD_AUTH_PATH, any(handler.clone()))
        .route(&format!("{FORWARD_AUTH_PATH}/{{*rest}}"), any(handler))
}

/// The one value of `name`, `Err` when it is given more than once.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ()> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| ()),
        (Some(_), Some(_)) => Err(()),
    }
}

fn forward_auth(
    gateway: &Gateway,
    uri: &Uri,
    headers: &HeaderMap,
    caller: Option<&str>,
) -> Response {
    let below = uri
        .path_and_query()
        .map_or("", |p| p.as_str())
        .strip_prefix(FORWARD_AUTH_PATH)
        .unwrap_or_default();
    let read = || -> Result<(String, String, Option<&str>), ()> {
        let host = match single(headers, "x-forwarded-host")? {
            Some(h) => h,
            None => single(headers, header::HOST.as_str())?.unwrap_or_default(),
        };
        let target = match single(headers, "x-forwarded-uri")? {
            // Described twice (the path below and the header): refused.
            Some(_) if below.starts_with('/') => return Err(()),
            Some(t) => t.to_owned(),
            None if below.starts_with('/') => below.to_owned(),
            None => String::new(),
        };
        let authorization = single(headers, header::AUTHORIZATION.as_str())?;
        Ok((host.to_owned(), target, authorization))
    };
    let Ok((host, target, authorization)) = read() else {
        return deny(StatusCode::FORBIDDEN, None);
    };
    let asked = Asked {
        host: &host,
        target: &target,
        authorization,
        gateway: caller,
    };
    match gateway.answer(&asked) {
        Answer::Allow(identity) => allow(&identity),
        Answer::Deny {
            status,
            www_authenticate,
        } => deny(
            StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
            www_authenticate.as_deref(),
        ),
    }
}

fn allow(identity: &[(String, String)]) -> Response {
    let mut headers = HeaderMap::new();
    for (name, value) in identity {
        // Claims are checked text (no control characters), so this holds;
        // if it did not, the request is refused rather than passed on
        // without a header the gateway would then leave as the client sent.
        let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) else {
            return deny(StatusCode::FORBIDDEN, None);
        };
        headers.insert(n, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::OK, headers).into_response()
}

fn deny(status: StatusCode, challenge: Option<&str>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(header::WWW_AUTHENTICATE, c);
    }
    (status, headers).into_response()
}

/// Reloads the routes file when a change has settled
/// ([`crate::edge::Settled`]) and on SIGHUP. A file that fails to load is
/// logged, naming the line, and the routes in force stay.
pub(crate) fn watch(
    path: PathBuf,
    gateway: Gateway,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut settled = crate::edge::Settled::new(Some(&path));
        loop {
            let forced = tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(crate::edge::POLL) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            if !settled.due(crate::edge::modified(&path), forced) {
                continue;
            }
            match read_routes(&path, if forced { "sighup" } else { "modified" }) {
                Ok(routes) => {
                    tracing::info!(routes = routes.len(), "gateway routes reloaded");
                    gateway.replace_routes(routes);
                }
                Err(e) => {
                    tracing::error!(error = %e, "gateway routes refused; the previous ones stay in force");
                }
            }
        }
    })
}
