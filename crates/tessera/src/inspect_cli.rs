//! `tessera token inspect`: a token explained field by field, read WITHOUT
//! trusting it (Verify's own parsers, no key: see
//! `tessera_domain::verify::inspect`), what Verify would refuse judging
//! locally, and with `--endpoint` the server's real answer.

use crate::remote::RemoteArgs;
use crate::revoke_cli::{NO_TOKEN, token_arg};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use tessera_api::requests::verify_failure;
use tessera_domain::clock::{Clock, SystemClock, UnixTime};
use tessera_domain::issue::is_disguising;
use tessera_domain::kind::TokenKind;
use tessera_domain::policy::Policy;
use tessera_domain::verify::inspect::{Expect, Inspection, inspect};
use tessera_proto::v1::introspection_service_client::IntrospectionServiceClient;
use tessera_proto::v1::{Consistency, VerifyRequest};
use tessera_telemetry::rfc3339;

/// `tessera token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Explain a token's header and claims in plain words, and what Verify
    /// would refuse. Decodes WITHOUT trusting it: the signature is checked
    /// only by the server (--endpoint). Exit 0 when nothing was refused.
    Inspect(InspectArgs),
}

/// `tessera token inspect` options.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The token; `-` or nothing reads it from stdin (keeps it out of the
    /// shell history and `ps`).
    #[arg(value_name = "TOKEN", allow_hyphen_values = true)]
    pub token: Option<String>,
    /// The audience a caller would expect (checked locally, and sent to
    /// Verify; default for Verify: the token's first audience).
    #[arg(long)]
    pub audience: Option<String>,
    /// The server's issuer, to check `iss` locally.
    #[arg(long)]
    pub issuer: Option<String>,
    /// The kind a caller would expect (default: the kind its `typ` names).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Clock skew the server tolerates, seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub clock_skew: i64,
    /// Also ask this server's Verify (e.g. http://127.0.0.1:50051): the
    /// signature, the key and revocations are known only there.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// With --endpoint: ask with consistency STRONG (revocations read from
    /// the store, not the server's in-memory view).
    #[arg(long, requires = "endpoint")]
    pub strong: bool,
    /// With an https:// endpoint: the CA (PEM) that signs its certificate.
    #[arg(long, env = "TESSERA_PEER_CA_FILE", value_name = "PATH")]
    pub peer_ca_file: Option<PathBuf>,
    /// File holding the service key to present (Verify needs a known caller
    /// unless the callers file opens it); or set TESSERA_SERVICE_KEY.
    #[arg(long, env = "TESSERA_SERVICE_KEY_FILE", value_name = "PATH")]
    pub service_key_file: Option<PathBuf>,
}

/// `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    /// An access token (`typ: at+jwt`).
    Access,
    /// An email verification token.
    EmailVerification,
    /// A password reset token.
    PasswordReset,
}

impl From<KindArg> for TokenKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Access => Self::Access,
            KindArg::EmailVerification => Self::EmailVerification,
            KindArg::PasswordReset => Self::PasswordReset,
        }
    }
}

/// Runs `tessera token inspect`: `Ok(true)` when nothing was refused.
pub async fn run(cmd: TokenCommand) -> Result<bool, String> {
    let TokenCommand::Inspect(args) = cmd;
    let token = read_token(args.token.as_deref())?;
    let now = SystemClock.now();
    let policy = Policy {
        clock_skew: args.clock_skew,
        ..Policy::default()
    };
    let expect = Expect {
        issuer: args.issuer.as_deref(),
        audience: args.audience.as_deref(),
        kind: args.kind.map(TokenKind::from),
    };
    let seen = inspect(&token, &policy, &expect, now);
    println!("Decoded WITHOUT verification: nothing here proves the token is genuine.\n");
    explain_header(&seen);
    explain_claims(&seen, now, args.clock_skew);
    let mut ok = verdict(&seen);
    if let Some(endpoint) = args.endpoint.clone() {
        ok &= ask_server(&args, endpoint, &token, &seen).await?;
    }
    Ok(ok)
}

/// The token from the argument or stdin; none at all is a usage error
/// (exit 2, like every other one clap reports).
fn read_token(arg: Option<&str>) -> Result<String, String> {
    use std::io::IsTerminal;
    let usage = |msg: &str| -> ! {
        clap::Command::new("tessera token inspect")
            .error(clap::error::ErrorKind::MissingRequiredArgument, msg)
            .exit()
    };
    if arg.is_none() && std::io::stdin().is_terminal() {
        usage("give the token as an argument, or pipe it in (`-` reads stdin)");
    }
    match token_arg(arg.unwrap_or("-")) {
        Err(e) if e == NO_TOKEN => usage(NO_TOKEN),
        other => other,
    }
}

/// A value as shown on a terminal: strings plain unless they hold control,
/// separator or invisible format characters (a hostile token could hide a
/// terminal escape or a bidi override in a claim), then escaped.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) if !s.chars().any(is_disguising) => s.clone(),
        Value::String(s) => format!("{s:?} (escaped: holds control or invisible characters)"),
        other => other
            .to_string()
            .chars()
            .flat_map(char::escape_debug)
            .collect(),
    }
}

fn line(name: &str, value: &str, meaning: &str) {
    let name = name
        .chars()
        .flat_map(char::escape_debug)
        .collect::<String>();
    println!("  {name:<10} {value}\n  {:<10} {meaning}", "");
}

fn explain_header(seen: &Inspection) {
    println!("Header");
    for (name, v) in &seen.header {
        let meaning = match name.as_str() {
            "alg" => match v.as_str() {
                Some("ES256") => "signature algorithm: ECDSA on P-256 with SHA-256".to_owned(),
                Some("EdDSA") => "signature algorithm: Ed25519".to_owned(),
                Some("RS256") => "signature algorithm: RSA PKCS#1 v1.5 with SHA-256".to_owned(),
                Some("PS256") => "signature algorithm: RSA-PSS with SHA-256".to_owned(),
                _ => "signature algorithm: not one Verify accepts".to_owned(),
            },
            "kid" => "id of the signing key (`tessera keys list` shows its state)".to_owned(),
            "typ" => format!("kind: {}", kind_name(seen.kind)),
            _ => "a header parameter Tessera never mints: Verify refuses the token".to_owned(),
        };
        line(name, &shown(v), &meaning);
    }
    if seen.header.is_empty() {
        println!("  (unreadable)");
    }
    match seen.signature_bytes {
        Some(n) => println!("Signature: {n} bytes (checked only by the server)\n"),
        None => println!("Signature: none or not base64url\n"),
    }
}

fn kind_name(kind: Option<TokenKind>) -> &'static str {
    match kind {
        Some(TokenKind::Access) => "access token (RFC 9068 `at+jwt`)",
        Some(TokenKind::EmailVerification) => "email verification token (single use)",
        Some(TokenKind::PasswordReset) => "password reset token (single use)",
        None => "not a kind Tessera mints",
    }
}

/// "in 14 min" / "3 h ago".
fn relative(t: UnixTime, now: UnixTime) -> String {
    let d = (t - now).unsigned_abs();
    if d == 0 {
        return "now".to_owned();
    }
    let amount = match d {
        0..90 => format!("{d} s"),
        90..5400 => format!("{} min", d / 60),
        5400..172_800 => format!("{} h", d / 3600),
        _ => format!("{} days", d / 86_400),
    };
    if t >= now {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

fn explain_claims(seen: &Inspection, now: UnixTime, skew: i64) {
    println!("Claims");
    for (name, v) in &seen.payload {
        let value = match (name.as_str(), v.as_i64()) {
            ("exp" | "nbf" | "iat", Some(t)) => {
                format!("{t} = {} ({})", rfc3339(t), relative(t, now))
            }
            _ => shown(v),
        };
        let meaning = match name.as_str() {
            "iss" => "issuer: who minted it; Verify accepts only its own".to_owned(),
            "sub" => {
                "subject: who the token speaks for (`tessera revoke --subject` ends all its tokens)"
                    .to_owned()
            }
            "aud" => {
                "audience: the service(s) it is meant for; Verify checks the caller's".to_owned()
            }
            "exp" => format!("expires: refused from this time on (plus {skew} s skew)"),
            "nbf" => format!("not before: refused until this time (minus {skew} s skew)"),
            "iat" => "issued at".to_owned(),
            "jti" => "token id, unique per token (`tessera revoke --jti … --expires-at <exp>`)"
                .to_owned(),
            "sid" => {
                "session (refresh-token family) id (`tessera revoke --family` ends it)".to_owned()
            }
            "ver" => {
                "subject version at minting: revoking the subject raises it, older tokens fail"
                    .to_owned()
            }
            "scope" => "scopes granted, space-separated".to_owned(),
            "client_id" => "the client it was issued to".to_owned(),
            _ => "extra claim (a name allowed by the server's --extra-claims)".to_owned(),
        };
        line(name, &value, &meaning);
    }
    if seen.payload.is_empty() {
        println!("  (unreadable)");
    }
    println!();
}

/// Prints what Verify would refuse locally; true when nothing.
fn verdict(seen: &Inspection) -> bool {
    println!("What Verify would refuse, judged here (no key, no revocations):");
    if seen.findings.is_empty() {
        println!("  nothing; the signature, the key and revocation are the server's to check\n");
        return true;
    }
    for f in &seen.findings {
        println!(
            "  {}: {}",
            verify_failure(f.failure).as_str_name(),
            f.detail
        );
    }
    println!();
    false
}

/// Asks the server's Verify; true when it answers valid.
async fn ask_server(
    args: &InspectArgs,
    endpoint: String,
    token: &str,
    seen: &Inspection,
) -> Result<bool, String> {
    let remote = RemoteArgs {
        endpoint,
        peer_ca_file: args.peer_ca_file.clone(),
        service_key_file: args.service_key_file.clone(),
    };
    let audience = args
        .audience
        .clone()
        .or_else(|| {
            seen.claims
                .as_ref()
                .and_then(|c| c.aud.to_vec().into_iter().next())
        })
        .ok_or("--audience: the token names none; say which to check")?;
    let kind = args
        .kind
        .map(TokenKind::from)
        .or(seen.kind)
        .unwrap_or(TokenKind::Access);
    let (consistency, name) = if args.strong {
        (Consistency::Strong, "STRONG")
    } else {
        (Consistency::Default, "DEFAULT")
    };
    let r = IntrospectionServiceClient::new(remote.channel()?)
        .verify(VerifyRequest {
            token: token.to_owned(),
            expected_audience: audience.clone(),
            expected_kind: kind_arg(kind).into(),
            consistency: consistency.into(),
        })
        .await
        .map_err(|e| remote.failed(&e))?
        .into_inner();
    let from_token = if args.audience.is_none() {
        " (the token's own: pass --audience to check the one a caller expects)"
    } else {
        ""
    };
    println!(
        "The server's Verify ({}; audience {audience:?}{from_token}, kind {}, consistency {name}):",
        remote.endpoint,
        kind.typ()
    );
    if r.valid {
        println!("  VALID");
    } else {
        println!("  {}", r.failure().as_str_name());
    }
    Ok(r.valid)
}

fn kind_arg(kind: TokenKind) -> tessera_proto::v1::TokenKind {
    match kind {
        TokenKind::Access => tessera_proto::v1::TokenKind::Access,
        TokenKind::EmailVerification => tessera_proto::v1::TokenKind::EmailVerification,
        TokenKind::PasswordReset => tessera_proto::v1::TokenKind::PasswordReset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_strings_are_escaped_and_times_read_relative() {
        assert_eq!(shown(&Value::from("orders-api")), "orders-api");
        let hidden = shown(&Value::from("admin\u{202E}nimda\u{1b}[2J"));
        assert!(
            hidden.contains("\\u{202e}") && hidden.contains("\\u{1b}"),
            "{hidden}"
        );
        assert!(!hidden.contains('\u{1b}'));
        assert_eq!(relative(1060, 1000), "in 60 s");
        assert_eq!(relative(1000, 1000), "now");
        assert_eq!(relative(1000 - 7200, 1000), "2 h ago");
        assert_eq!(relative(1000 + 900, 1000), "in 15 min");
        assert_eq!(relative(1000 + 3 * 86_400, 1000), "in 3 days");
    }
}
