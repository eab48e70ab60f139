//! `tessera revoke`: one target, through `RevocationService.Revoke` on a
//! running server. Durable before it answers, fanned out to every instance.

use crate::remote::RemoteArgs;
use clap::{ArgGroup, Args};
use tessera_proto::v1::revocation_service_client::RevocationServiceClient;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{JtiTarget, RevokeRequest};

/// `tessera revoke` options: exactly one target.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["token", "jti", "family", "subject", "kid"])
))]
pub struct RevokeArgs {
    /// A whole token (access or purpose), or `-` to read it from stdin
    /// (keeps it out of the shell history and `ps`): its jti is revoked
    /// until the token would have expired.
    #[arg(long, value_name = "TOKEN", allow_hyphen_values = true)]
    pub token: Option<String>,
    /// A token id (the `jti` claim, shown by `tessera token inspect`).
    /// Needs --expires-at.
    #[arg(
        long,
        value_name = "JTI",
        requires = "expires_at",
        allow_hyphen_values = true
    )]
    pub jti: Option<String>,
    /// With --jti: the token's `exp`, until which the revocation holds
    /// (Unix seconds or RFC 3339, e.g. 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = tessera_api::parse_time)]
    pub expires_at: Option<i64>,
    /// A session (refresh-token family; the `sid` claim): its refresh token
    /// and every access token it minted stop working.
    #[arg(long, value_name = "FAMILY_ID", allow_hyphen_values = true)]
    pub family: Option<String>,
    /// A subject (the `sub` claim): every token and session it holds now.
    #[arg(long, value_name = "SUBJECT", allow_hyphen_values = true)]
    pub subject: Option<String>,
    /// A signing key: unpublished at once, every token it signed rejected
    /// everywhere; if it was signing, another key signs from now on.
    #[arg(long, value_name = "KID", allow_hyphen_values = true)]
    pub kid: Option<String>,
    /// Why (at most 1024 bytes), passed to the server with the request.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub reason: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// What [`token_arg`] says when stdin is empty.
pub(crate) const NO_TOKEN: &str = "no token on stdin";

/// Reads a token argument: the value, or stdin for `-`.
pub(crate) fn token_arg(value: &str) -> Result<String, String> {
    if value != "-" {
        return Ok(value.trim().to_owned());
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| format!("reading the token from stdin: {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(NO_TOKEN.into());
    }
    Ok(token.to_owned())
}

/// Runs `tessera revoke`; prints one JSON line with the answer.
pub async fn run(args: RevokeArgs) -> Result<(), String> {
    let target = match (args.token, args.jti, args.family, args.subject, args.kid) {
        (Some(t), ..) => Target::Token(token_arg(&t)?),
        (_, Some(jti), ..) => Target::Jti(JtiTarget {
            jti,
            expires_at: args.expires_at.map(tessera_api::timestamp),
        }),
        (_, _, Some(f), ..) => Target::FamilyId(f),
        (_, _, _, Some(s), _) => Target::Subject(s),
        (.., Some(k)) => Target::Kid(k),
        _ => return Err("name one target: --token, --jti, --family, --subject or --kid".into()),
    };
    let what = match &target {
        Target::Token(_) | Target::Jti(_) => "jti",
        Target::FamilyId(_) => "family",
        Target::Subject(_) => "subject",
        Target::Kid(_) => "kid",
    };
    let r = RevocationServiceClient::new(args.remote.channel()?)
        .revoke(RevokeRequest {
            target: Some(target),
            reason: args.reason,
        })
        .await
        .map_err(|e| args.remote.failed(&e))?
        .into_inner();
    let until = r.revoked_until.map(|t| t.seconds);
    println!(
        "{}",
        serde_json::json!({
            "target": what,
            "revoked": r.revoked,
            "jti": (!r.jti.is_empty()).then_some(r.jti),
            "revoked_until": until.map(tessera_telemetry::rfc3339),
        })
    );
    Ok(())
}
