//! Malformed requests are INVALID_ARGUMENT naming the field; malformed
//! tokens are ordinary answers.

use crate::harness::{AUDIENCE, Backend, on_both_backends, spawn_app};
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{
    Consistency, IssueRequest, JtiTarget, RevokeRequest, TokenKind, VerifyFailure, VerifyRequest,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

on_both_backends!(bad_requests_name_their_field, malformed_tokens_are_answers);

#[track_caller]
fn assert_field(s: &Status, field: &str) {
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let d = s.get_error_details();
    let br = d.bad_request().expect("a BadRequest detail");
    assert_eq!(br.field_violations[0].field, field, "{s:?}");
    assert_eq!(
        d.error_info().expect("an ErrorInfo detail").reason,
        "ERROR_REASON_FIELD_INVALID"
    );
}

fn verify_req(token: &str) -> VerifyRequest {
    VerifyRequest {
        token: token.into(),
        expected_audience: AUDIENCE.into(),
        expected_kind: TokenKind::Access.into(),
        consistency: Consistency::Default.into(),
    }
}

async fn bad_requests_name_their_field(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let v = &mut app.introspection;
    let cases: Vec<(VerifyRequest, &str)> = vec![
        (verify_req(""), "token"),
        (verify_req(&"a".repeat(8 * 1024 + 1)), "token"),
        (
            VerifyRequest {
                expected_audience: String::new(),
                ..verify_req("a.b.c")
            },
            "expected_audience",
        ),
        (
            VerifyRequest {
                expected_kind: 0,
                ..verify_req("a.b.c")
            },
            "expected_kind",
        ),
        (
            VerifyRequest {
                expected_kind: 99,
                ..verify_req("a.b.c")
            },
            "expected_kind",
        ),
        (
            VerifyRequest {
                consistency: 0,
                ..verify_req("a.b.c")
            },
            "consistency",
        ),
        (
            VerifyRequest {
                consistency: -1,
                ..verify_req("a.b.c")
            },
            "consistency",
        ),
    ];
    for (req, field) in cases {
        assert_field(&v.verify(req).await.unwrap_err(), field);
    }

    let issue = |subject: &str, audience: &str| IssueRequest {
        subject: subject.into(),
        audience: audience.into(),
        ..Default::default()
    };
    let i = &mut app.issuer;
    assert_field(&i.issue(issue("", AUDIENCE)).await.unwrap_err(), "subject");
    assert_field(&i.issue(issue("u", "")).await.unwrap_err(), "audience");
    assert_field(
        &i.issue(issue(&"u".repeat(256), AUDIENCE))
            .await
            .unwrap_err(),
        "subject",
    );
    assert_field(
        &i.issue(issue("u\n", AUDIENCE)).await.unwrap_err(),
        "subject",
    );
    let mut r = issue("u", AUDIENCE);
    r.scopes = vec!["has space".into()];
    assert_field(&i.issue(r).await.unwrap_err(), "scopes");
    let mut r = issue("u", AUDIENCE);
    r.access_token_ttl = Some(prost_types::Duration {
        seconds: 24 * 3600,
        nanos: 0,
    });
    assert_field(&i.issue(r).await.unwrap_err(), "access_token_ttl");
    let mut r = issue("u", AUDIENCE);
    r.extra_claims = Some(prost_types::Struct {
        fields: [(
            "sub".to_owned(),
            prost_types::Value::from("admin".to_owned()),
        )]
        .into(),
    });
    assert_field(&i.issue(r).await.unwrap_err(), "extra_claims");
    let mut r = issue("u", AUDIENCE);
    r.extra_claims = Some(prost_types::Struct {
        fields: [(
            "email".to_owned(),
            prost_types::Value::from("a@b".to_owned()),
        )]
        .into(),
    });
    assert_field(&i.issue(r).await.unwrap_err(), "extra_claims");
    // An allowlisted extra claim goes through and comes back from Verify.
    let mut r = issue("u", AUDIENCE);
    r.extra_claims = Some(prost_types::Struct {
        fields: [(
            "tenant".to_owned(),
            prost_types::Value::from("acme".to_owned()),
        )]
        .into(),
    });
    let t = i.issue(r).await.unwrap().into_inner().access_token;
    let c = app
        .verify_with(&t, Consistency::Default)
        .await
        .claims
        .unwrap();
    let all = c.all_claims.unwrap();
    assert_eq!(
        all.fields["tenant"],
        prost_types::Value::from("acme".to_owned())
    );

    let rv = &mut app.revocation;
    let revoke = |target| RevokeRequest {
        target,
        reason: String::new(),
    };
    assert_field(&rv.revoke(revoke(None)).await.unwrap_err(), "target");
    assert_field(
        &rv.revoke(revoke(Some(Target::Token(String::new()))))
            .await
            .unwrap_err(),
        "token",
    );
    assert_field(
        &rv.revoke(revoke(Some(Target::Token("not.a.token".into()))))
            .await
            .unwrap_err(),
        "token",
    );
    assert_field(
        &rv.revoke(revoke(Some(Target::Jti(JtiTarget {
            jti: "j".into(),
            expires_at: None,
        }))))
        .await
        .unwrap_err(),
        "jti.expires_at",
    );
    assert_field(
        &rv.revoke(revoke(Some(Target::Jti(JtiTarget {
            jti: String::new(),
            expires_at: None,
        }))))
        .await
        .unwrap_err(),
        "jti.jti",
    );
    app.stop().await;
    d.cleanup().await;
}

async fn malformed_tokens_are_answers(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    for t in [
        "x",
        "a.b",
        "a.b.c.d",
        "....",
        "e30.e30.e30",
        "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.AAAA",
        "\u{1F600}.\u{1F600}.\u{1F600}",
    ] {
        let r = app.verify(t).await;
        assert!(
            matches!(
                r,
                Err(VerifyFailure::Malformed | VerifyFailure::AlgorithmNotAllowed)
            ),
            "{t}: {r:?}"
        );
    }
    assert_eq!(app.verify("x").await, Err(VerifyFailure::Malformed));
    // Exactly 8 KiB is a request the server accepts (and a malformed token).
    assert_eq!(
        app.verify(&"a".repeat(8 * 1024)).await,
        Err(VerifyFailure::Malformed)
    );
    app.stop().await;
    d.cleanup().await;
}

/// Bytes that are no request of the RPC (a string field holding invalid
/// UTF-8, a field of the wrong wire type, garbage) are bad input like any
/// other: INVALID_ARGUMENT naming `request`, with its ErrorInfo, never a
/// bare INTERNAL from the codec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_invalid_arguments() {
    let (d, app) = spawn_app(Backend::Embedded).await;
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    for payload in [
        &[0x0a, 0x02, 0xff, 0xfe][..],       // subject: invalid UTF-8
        &[0x0d, 0x01, 0x02, 0x03, 0x04][..], // field 1 as a fixed32
        &[0xff, 0xff, 0xff][..],             // garbage
    ] {
        let mut client = client.clone().ready().await.unwrap();
        let request = http::Request::post(format!(
            "http://{}/tessera.v1.IssuerService/Issue",
            app.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(payload);
        body.send_data(frame.into(), true).unwrap();
        let response = response.await.unwrap();
        let (parts, mut stream) = response.into_parts();
        let headers = match stream.trailers().await.unwrap() {
            Some(trailers) => trailers,
            None => parts.headers,
        };
        let status = Status::from_header_map(&headers).expect("a status");
        assert_field(&status, "request");
    }
    app.stop().await;
    d.cleanup().await;
}
