//! `IssuePurposeToken` and `RedeemPurposeToken`: single-use tokens for email
//! verification and password reset.

use crate::refresh::Who;
use crate::state::Inner;
use std::sync::Arc;
use tessera_api::{
    duration_secs, from_domain, invalid, required_enum, status, timestamp, token_kind,
};
use tessera_domain::clock::UnixTime;
use tessera_domain::kind::TokenKind;
use tessera_domain::purpose::{
    PurposeCommand, PurposeRecord, RedeemOutcome, binding_hash, decide_redeem_as, mint_purpose,
    purpose_audience,
};
use tessera_domain::verify::{Expectation, Signed, verify_strong};
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{
    ErrorReason, IssuePurposeTokenRequest, IssuePurposeTokenResponse, RedeemPurposeTokenRequest,
    RedeemPurposeTokenResponse, RevokeRequest,
};
use tonic::{Code, Status};

/// The `kind` field of a purpose request: a purpose, never ACCESS.
fn purpose_kind(value: i32) -> Result<TokenKind, Status> {
    let kind = required_enum::<tessera_proto::v1::TokenKind>("kind", value)?;
    token_kind(kind)
        .filter(|k| purpose_audience(*k).is_some())
        .ok_or_else(|| {
            invalid(
                "kind",
                "must be TOKEN_KIND_EMAIL_VERIFICATION or TOKEN_KIND_PASSWORD_RESET",
            )
        })
}

fn invalid_token() -> Status {
    status(
        Code::Unauthenticated,
        ErrorReason::PurposeTokenInvalid,
        "the purpose token is not valid",
    )
}

/// `IssuePurposeToken` for `owner` (the caller's id; only it may redeem
/// the token).
pub(crate) async fn issue(
    me: &Inner,
    r: IssuePurposeTokenRequest,
    owner: Option<&str>,
) -> Result<IssuePurposeTokenResponse, Status> {
    let cmd = PurposeCommand {
        kind: purpose_kind(r.kind)?,
        ttl: duration_secs("ttl", r.ttl)?,
        subject: r.subject,
        binding: r.binding,
    };
    let version = me
        .store
        .subject_version(&cmd.subject)
        .await
        .map_err(from_domain)?;
    let key = me.keys.signing_key().map_err(from_domain)?;
    let minted = mint_purpose(&cmd, &me.cfg.policy, &key, version, me.cfg.clock.now())
        .map_err(from_domain)?;
    me.store
        .record_purpose(
            &minted.claims.jti,
            &minted.claims.sub,
            cmd.kind.typ(),
            minted.binding_hash,
            minted.claims.exp,
            owner,
        )
        .await
        .map_err(from_domain)?;
    me.cfg.metrics.purpose_issued(cmd.kind);
    Ok(IssuePurposeTokenResponse {
        token: minted.token,
        expires_at: Some(timestamp(minted.claims.exp)),
    })
}

/// Steps 1–5 of Verify for a purpose token of `kind`, step 5 against the
/// store: a revoked token, a token of a revoked subject (a password reset
/// ends the others) or of a killed key does not redeem.
async fn verified(
    me: &Inner,
    token: &str,
    kind: TokenKind,
    now: UnixTime,
) -> Result<Arc<Signed>, Status> {
    // The purpose's audience and `typ`: an access token (or the other
    // purpose) fails steps 1–4.
    let expect = Expectation {
        audience: purpose_audience(kind).unwrap_or_default(),
        kind,
    };
    verify_strong(
        token,
        me.keys.ring(),
        &me.cfg.policy,
        &expect,
        &*me.store,
        now,
    )
    .await
    .map_err(from_domain)?
    .map_err(|f| {
        tracing::info!(failure = f.as_str(), "purpose token rejected");
        invalid_token()
    })
}

/// Redeems the stored token `jti` (of `kind`) once, or the caller's error.
async fn consume(
    me: &Inner,
    (jti, kind): (&str, TokenKind),
    binding: &str,
    now: UnixTime,
    who: &Who,
) -> Result<(), Status> {
    let presented = binding_hash(binding);
    // The owner as the store held it under the lock, for the audit record
    // of a refusal (both callers are named).
    let owner = std::sync::Mutex::new(None);
    // The domain decides on the stored token as the store loads it under its
    // lock; the store only applies the decision.
    let outcome = me
        .store
        .redeem_purpose(jti, &|stored: &PurposeRecord| {
            owner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone_from(&stored.owner);
            decide_redeem_as(stored, presented, now, who.caller.as_deref(), kind)
        })
        .await
        .map_err(from_domain)?;
    match outcome {
        RedeemOutcome::Redeemed => Ok(()),
        RedeemOutcome::AlreadyUsed => Err(status(
            Code::FailedPrecondition,
            ErrorReason::PurposeTokenAlreadyUsed,
            "the purpose token was already redeemed",
        )),
        RedeemOutcome::BindingMismatch | RedeemOutcome::Unknown => Err(invalid_token()),
        RedeemOutcome::OtherCaller => {
            me.cfg.metrics.owner_mismatch();
            let owner = owner.into_inner().unwrap_or_else(|p| p.into_inner());
            tessera_telemetry::audit::token_owner_mismatch(
                &who.audit,
                owner
                    .as_deref()
                    .unwrap_or(tessera_telemetry::audit::UNKNOWN),
                "purpose",
                jti,
            );
            Err(status(
                Code::PermissionDenied,
                ErrorReason::TokenOwnerMismatch,
                "the purpose token was issued to another caller (see redeem_from in the callers file)",
            ))
        }
    }
}

/// The kind of a Redeem request, its fields checked.
fn redeem_kind(r: &RedeemPurposeTokenRequest) -> Result<TokenKind, Status> {
    if r.token.is_empty() {
        return Err(invalid("token", "is required"));
    }
    if r.token.len() > tessera_domain::policy::MAX_TOKEN_BYTES {
        return Err(invalid("token", "is larger than 8192 bytes"));
    }
    if r.binding.len() > 1024 {
        return Err(invalid("binding", "at most 1024 bytes"));
    }
    purpose_kind(r.kind)
}

/// A password reset ends every session of `subject`: the revocation
/// service bumps its version and revokes its families, everywhere, as
/// `caller`'s act. Returns how many families it revoked.
async fn end_sessions_of(me: &Inner, subject: &str, caller: &str) -> Result<u64, Status> {
    let request = RevokeRequest {
        target: Some(Target::Subject(subject.to_owned())),
        reason: "password reset".into(),
    };
    Ok(me.cfg.revocations.revoke(request, caller).await?.revoked)
}

/// `RedeemPurposeToken` by `who`: only the caller the token was issued to
/// may redeem it, and a password reset that ends the subject's sessions
/// needs the `subject` revocation right (both refused before anything is
/// consumed).
pub(crate) async fn redeem(
    me: &Inner,
    r: RedeemPurposeTokenRequest,
    who: &Who,
) -> Result<RedeemPurposeTokenResponse, Status> {
    let caller = who.audit.as_str();
    let lacking = who
        .caller
        .as_ref()
        .filter(|c| !c.may_revoke(tessera_domain::callers::RevokeRight::Subject));
    let kind = redeem_kind(&r)?;
    if r.revoke_subject_sessions
        && kind == TokenKind::PasswordReset
        && let Some(c) = lacking
    {
        let what = "end a subject's sessions (the `subject` revocation right)";
        return Err(tessera_api::caller::not_allowed(
            c,
            "RedeemPurposeToken",
            what,
        ));
    }
    let now = me.cfg.clock.now();
    let signed = verified(me, &r.token, kind, now).await?;
    consume(me, (&signed.claims.jti, kind), &r.binding, now, who).await?;
    me.cfg.metrics.purpose_redeemed();
    let end_sessions = r.revoke_subject_sessions && kind == TokenKind::PasswordReset;
    // Written once redeemed (durable), before the sessions end: that is
    // audited on its own (`subject_revoked`).
    tessera_telemetry::audit::purpose_token_redeemed(
        caller,
        kind.typ(),
        &signed.claims.sub,
        &signed.claims.jti,
        end_sessions,
    );
    let revoked_families = if end_sessions {
        end_sessions_of(me, &signed.claims.sub, caller).await?
    } else {
        0
    };
    Ok(RedeemPurposeTokenResponse {
        subject: signed.claims.sub.clone(),
        revoked_families,
    })
}
