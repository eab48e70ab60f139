//! `Refresh`: rotation with an idempotent grace window and reuse detection.

use crate::state::Inner;
use tessera_api::{from_domain, invalid, status, timestamp};
use tessera_domain::issue::access_claims;
use tessera_domain::kind::TokenKind;
use tessera_domain::refresh::{
    Decision, FamilyRecord, FamilySnapshot, RefreshToken, RefusedBecause, RotateOutcome,
    RotateRequest, decide,
};
use tessera_domain::verify::sign;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{ErrorReason, RefreshRequest, RefreshResponse, RevokeRequest};
use tessera_telemetry::audit;
use tonic::{Code, Status};

fn unauthenticated(reason: ErrorReason, message: &str) -> Status {
    status(Code::Unauthenticated, reason, message)
}

/// The family after a rotation, or the caller's error for every other
/// outcome (a reuse also tells the revocation service).
async fn rotated(me: &Inner, outcome: RotateOutcome, who: &Who) -> Result<FamilyRecord, Status> {
    let caller = who.audit.as_str();
    let (reason, message) = match outcome {
        RotateOutcome::Rotated { family, fresh } => {
            me.cfg.metrics.refreshed(!fresh);
            if !fresh {
                tracing::info!(family_id = %family.family_id, "refresh replayed inside the grace window");
            }
            return Ok(family);
        }
        RotateOutcome::Reused { family } => {
            reused(me, &family, caller).await;
            (
                ErrorReason::RefreshTokenReused,
                "the refresh token was already used; the session is revoked",
            )
        }
        RotateOutcome::Unknown | RotateOutcome::Revoked => (
            ErrorReason::RefreshTokenInvalid,
            "the refresh token is not valid",
        ),
        RotateOutcome::IdleExpired => (
            ErrorReason::FamilyIdleExpired,
            "the session expired after being idle",
        ),
        RotateOutcome::LifetimeExpired => (
            ErrorReason::FamilyLifetimeExpired,
            "the session reached its maximum lifetime",
        ),
        RotateOutcome::ScopeNotGranted => {
            return Err(invalid(
                "scopes",
                "every scope must be one the session was granted",
            ));
        }
        RotateOutcome::OtherCaller { family } => return Err(other_callers(me, &family, caller)),
        RotateOutcome::AudienceNotAllowed { family } => {
            let what = format!("refresh tokens for audience {:?}", family.audience);
            return Err(match &who.caller {
                Some(c) => tessera_api::caller::not_allowed(c, "Refresh", &what),
                None => unauthenticated(
                    ErrorReason::RefreshTokenInvalid,
                    "the refresh token is not valid",
                ),
            });
        }
    };
    Err(unauthenticated(reason, message))
}

/// Who presents a refresh token: the audit name, and the authenticated
/// caller (`None` without a callers file).
pub(crate) struct Who {
    pub audit: String,
    pub caller: Option<std::sync::Arc<tessera_domain::callers::Caller>>,
}

/// Another caller's refresh token: refused with a reason of its own,
/// nothing consumed, not reuse (the family goes on: a caller that holds
/// another's token is named in the audit trail with the owner, for the
/// operator to act on, and cannot end the owner's session by presenting
/// it), and counted.
fn other_callers(me: &Inner, family: &FamilyRecord, caller: &str) -> Status {
    me.cfg.metrics.owner_mismatch();
    let owner = family.owner.as_deref().unwrap_or(audit::UNKNOWN);
    audit::token_owner_mismatch(caller, owner, "refresh", &family.family_id);
    status(
        Code::PermissionDenied,
        ErrorReason::TokenOwnerMismatch,
        "the refresh token was obtained by another caller",
    )
}

/// A reused refresh token: the family is already revoked in the store (the
/// truth). Audit it, and tell the revocation service so every instance's
/// view drops the family's access tokens now; if that fails, views still
/// catch up from the store, and STRONG sees it.
async fn reused(me: &Inner, family: &FamilyRecord, caller: &str) {
    me.cfg.metrics.refresh_reused();
    tessera_telemetry::audit::refresh_token_reused(caller, &family.subject, &family.family_id);
    let request = RevokeRequest {
        target: Some(Target::FamilyId(family.family_id.clone())),
        reason: "refresh token reuse".into(),
    };
    if let Err(e) = me.cfg.revocations.revoke(request, audit::SERVER).await {
        me.cfg.metrics.fanout_failed();
        tracing::error!(code = ?e.code(), "could not notify the revocation service of a reuse");
    }
}

/// Rotates `presented` as `req` asks, or the caller's error: the domain
/// decides on what the store loads under the family's lock, and the store
/// only applies the decision.
async fn rotate(
    me: &Inner,
    presented: &RefreshToken,
    req: &RotateRequest,
    scopes: &[String],
    who: &Who,
) -> Result<FamilyRecord, Status> {
    let id = who.caller.as_ref().map(|c| c.id.as_str());
    // The audience right is checked again at every refresh: a caller whose
    // rights shrank since the login gets no new token for it.
    let plan = |s: &FamilySnapshot| match &who.caller {
        Some(c)
            if s.family.owner.as_ref().is_none_or(|o| *o == c.id)
                && !c.may_issue_for(&s.family.audience) =>
        {
            Decision::Refuse(RefusedBecause::AudienceNotAllowed)
        }
        _ => decide(s, req, scopes, id),
    };
    let outcome = me
        .store
        .rotate(&presented.hash(), &plan)
        .await
        .map_err(from_domain)?;
    rotated(me, outcome, who).await
}

pub(crate) async fn refresh(
    me: &Inner,
    r: RefreshRequest,
    who: &Who,
) -> Result<RefreshResponse, Status> {
    if r.refresh_token.is_empty() {
        return Err(invalid("refresh_token", "is required"));
    }
    if r.refresh_token.len() > tessera_domain::policy::MAX_TOKEN_BYTES {
        return Err(invalid("refresh_token", "is larger than 8192 bytes"));
    }
    // A token of the wrong shape cannot be one of ours: same answer as an
    // unknown one, so the error does not tell an attacker anything.
    let presented = RefreshToken::parse(&r.refresh_token).ok_or_else(|| {
        unauthenticated(
            ErrorReason::RefreshTokenInvalid,
            "the refresh token is not valid",
        )
    })?;
    let successor = presented.successor(&me.cfg.refresh_secret);
    let now = me.cfg.clock.now();
    let req = RotateRequest {
        successor: successor.hash(),
        policy: me.cfg.families,
        now,
    };
    let family = rotate(me, &presented, &req, &r.scopes, who).await?;
    tracing::Span::current().record("family_id", family.family_id.as_str());
    let version = family.subject_version;
    let key = me.keys.signing_key().map_err(from_domain)?;
    let scope = if r.scopes.is_empty() {
        family.scope.clone()
    } else {
        r.scopes.join(" ")
    };
    let claims = access_claims(
        &me.cfg.policy,
        &family.subject,
        &family.audience,
        &scope,
        &family.client_id,
        &family.family_id,
        version,
        me.cfg.policy.access_ttl_default,
        // The session's claims from Issue: every access token of the
        // family carries them, not only the first.
        family.carried_claims(&me.cfg.policy.extra_claims_allowlist),
        now,
    );
    let access_token = sign(&key, TokenKind::Access, &claims).map_err(from_domain)?;
    Ok(RefreshResponse {
        access_token,
        access_token_expires_at: Some(timestamp(claims.exp)),
        refresh_token: successor.reveal(),
        refresh_token_expires_at: Some(timestamp(family.idle_expires_at)),
        family_id: family.family_id,
        access_token_id: claims.jti,
    })
}
