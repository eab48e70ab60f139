//! Asking the real server: Verify in both consistencies, or a raw HTTP
//! request for the discovery document.

use super::{Case, Probe, Verdict};
use crate::harness::{ISSUER, TestApp};
use tessera_proto::v1::{Consistency, TokenKind, VerifyFailure, VerifyRequest};

/// Every case, in both consistencies; a line per wrong answer (the case's
/// name, never its token).
pub(super) async fn run(app: &TestApp, cases: &[Case]) -> Vec<String> {
    let mut wrong = Vec::new();
    for c in cases {
        let answers = match &c.probe {
            Probe::Verify {
                token,
                audience,
                kind,
            } => {
                let mut answers = Vec::new();
                for consistency in [Consistency::Default, Consistency::Strong] {
                    answers.push(verify(app, token, audience, *kind, consistency).await);
                }
                answers
            }
            Probe::Http(request) => vec![discovery(app, request).await],
        };
        if answers.iter().any(|a| *a != Ok(c.verdict)) {
            wrong.push(format!(
                "  [{}] {}: want {:?}, got {:?}",
                c.group, c.name, c.verdict, answers
            ));
        }
    }
    wrong
}

async fn verify(
    app: &TestApp,
    token: &str,
    audience: &str,
    kind: TokenKind,
    consistency: Consistency,
) -> Result<Verdict, String> {
    let r = app
        .introspection
        .clone()
        .verify(VerifyRequest {
            token: token.into(),
            expected_audience: audience.into(),
            expected_kind: kind.into(),
            consistency: consistency.into(),
        })
        .await;
    match r {
        Ok(r) => {
            let r = r.into_inner();
            match (r.valid, r.failure(), r.claims.is_some()) {
                (true, VerifyFailure::Unspecified, true) => Ok(Verdict::Valid),
                (false, f, false) if f != VerifyFailure::Unspecified => Ok(Verdict::Fails(f)),
                _ => Err(format!("an incoherent answer: {r:?}")),
            }
        }
        Err(s) => {
            use tonic_types::StatusExt;
            let field = s
                .get_error_details()
                .bad_request()
                .and_then(|b| b.field_violations.first().map(|v| v.field.clone()));
            match (s.code(), field.as_deref()) {
                (tonic::Code::InvalidArgument, Some("token")) => Ok(Verdict::Refused),
                (tonic::Code::InvalidArgument, Some("request")) => Ok(Verdict::TooLarge),
                _ => Err(format!("status {:?} ({field:?})", s.code())),
            }
        }
    }
}

/// Sends a raw HTTP request; [`Verdict::IssuersJwks`] when the answer is a
/// discovery document pointing at the configured issuer's JWKS only.
async fn discovery(app: &TestApp, request: &str) -> Result<Verdict, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let want = format!("{ISSUER}/.well-known/jwks.json");
    let ok = head.split(' ').nth(1) == Some("200");
    if ok && doc["jwks_uri"] == want.as_str() && !text.contains("evil") {
        Ok(Verdict::IssuersJwks)
    } else {
        Err(format!("{head:.40} jwks_uri {}", doc["jwks_uri"]))
    }
}
