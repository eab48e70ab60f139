//! Envoy's external authorization, over gRPC:
//! `envoy.service.auth.v3.Authorization/Check`, with the same routes and
//! answers as the HTTP forward-auth endpoint. Envoy names the gateway with
//! its own `authorization` metadata (`grpc_service.initial_metadata`); the
//! client's token travels inside the message, in
//! `attributes.request.http.headers`.
//!
//! Envoy's semantics, per field: `CheckResponse.status` OK lets the request
//! through with `OkHttpResponse.headers` applied to it (here every identity
//! header, `OVERWRITE_IF_EXISTS_OR_ADD` and kept even when empty, so a
//! value a client sent is always replaced) and `headers_to_remove` taken
//! off (any other header under the identity prefix a client sent). Any
//! other status denies, answering the client with
//! `DeniedHttpResponse.status` and its headers (`WWW-Authenticate`).

use super::{Answer, Asked, Gateway};
use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckRequestExt, CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use tonic::{Code, Request, Response, Status};

/// `envoy.service.auth.v3.Authorization`.
#[derive(Debug, Clone)]
pub struct ExtAuthz(pub Gateway);

/// The gRPC code Envoy sees for an HTTP refusal (its access logs and
/// `failure_mode_allow` read it).
fn code_of(status: u16) -> Code {
    match status {
        401 => Code::Unauthenticated,
        503 => Code::Unavailable,
        _ => Code::PermissionDenied,
    }
}

fn allow(identity: Vec<(String, String)>, prefix: &str, sent: Vec<&String>) -> CheckResponse {
    let mut ok = OkHttpResponseBuilder::new();
    // `_` read as `-`: servers that map headers to CGI-style names
    // (`HTTP_X_TESSERA_SUBJECT`) merge `X_Tessera_Subject` with ours, and
    // Envoy passes underscores by default.
    let fold = |n: &str| n.to_ascii_lowercase().replace('_', "-");
    let prefix = fold(prefix);
    for (name, value) in &identity {
        let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
        ok.add_header(name.to_ascii_lowercase(), value, overwrite, true);
    }
    for name in sent {
        let ours = identity.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if fold(name).starts_with(&prefix) && !ours {
            ok.remove_header(name.clone());
        }
    }
    let mut response = CheckResponse::with_status(Status::ok(""));
    response.set_http_response(ok.build());
    response
}

fn deny(status: u16, challenge: Option<String>) -> CheckResponse {
    let mut denied = DeniedHttpResponseBuilder::new();
    let code = HttpStatusCode::try_from(i32::from(status)).unwrap_or(HttpStatusCode::Forbidden);
    denied.set_http_status(code);
    if let Some(c) = challenge {
        denied.add_header("www-authenticate", c, None, false);
    }
    let mut response = CheckResponse::with_status(Status::new(code_of(status), ""));
    response.set_http_response(denied.build());
    response
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let gateway = tessera_api::caller::caller(&request).map(|c| c.id.clone());
        let r = request.into_inner();
        let http = r
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|q| q.http.as_ref())
            .ok_or_else(|| {
                tessera_api::invalid(
                    "attributes.request.http",
                    "Envoy's HTTP request attributes are required",
                )
            })?;
        let headers = r.get_client_headers();
        let asked = Asked {
            host: &http.host,
            target: &http.path,
            authorization: headers
                .and_then(|h| h.get("authorization"))
                .map(String::as_str),
            gateway: gateway.as_deref(),
        };
        let response = match self.0.answer(&asked) {
            Answer::Allow(identity) => allow(
                identity,
                &self.0.header_prefix(),
                headers.map(|h| h.keys().collect()).unwrap_or_default(),
            ),
            Answer::Deny {
                status,
                www_authenticate,
            } => deny(status, www_authenticate),
        };
        Ok(Response::new(response))
    }
}
