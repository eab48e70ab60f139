//! `RevocationService.Revoke`: durable first, then the local view, then the
//! fan-out. A retry after any failure is safe: every step is idempotent.
//! `WatchRevocations` is dispatched from here to `watch`, which streams the
//! store's revocation log.

use crate::Verifier;
use tessera_api::requests::token_field;
use tessera_api::{from_domain, invalid, timestamp};
use tessera_domain::callers::{Caller, RevokeRight};
use tessera_domain::clock::UnixTime;
use tessera_domain::issue::check_text;
use tessera_domain::revocation::RevocationEvent;
use tessera_domain::verify::verify_signature;
use tessera_proto::v1::revocation_service_server::RevocationService;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{RevokeRequest, RevokeResponse, WatchRevocationsRequest};
use tessera_telemetry::audit;
use tessera_telemetry::metrics::{FamilyCause, RevokedKind};
use tonic::{Request, Response, Status};

/// The furthest in the future a jti revocation may be asked to last.
const MAX_JTI_LIFETIME: i64 = 400 * 24 * 3600;

/// `RevocationService`.
#[derive(Debug, Clone)]
pub struct RevocationApi {
    v: Verifier,
}

impl RevocationApi {
    /// The service.
    pub fn new(v: Verifier) -> Self {
        Self { v }
    }

    /// Durable first, then the local view, then the fan-out. The revocation
    /// is durable when this runs, so the caller is answered now: the
    /// publish runs on its own (a slow or frozen Redis costs the caller
    /// nothing), and a failed one is logged and counted, never reported as
    /// a failed revocation. Every other instance's reconcile pulls it from
    /// the store within one interval, and the bus rewrites the deny-list
    /// keys it missed once Redis answers again.
    async fn apply(&self, event: &RevocationEvent, now: UnixTime) -> Result<(), Status> {
        self.v.apply(event);
        let (bus, metrics, event) = (self.v.bus.clone(), self.v.metrics.clone(), event.clone());
        tokio::spawn(async move {
            if let Err(e) = bus.publish(&event, now).await {
                metrics.fanout_failed();
                tracing::warn!(error = %e, "revocation fan-out failed; other instances catch up from the store");
            }
        });
        Ok(())
    }

    async fn revoke_jti(
        &self,
        jti: String,
        exp: UnixTime,
        now: UnixTime,
        caller: &str,
    ) -> Result<RevokeResponse, Status> {
        // Kept until the token would have been rejected anyway.
        let until = exp.saturating_add(self.v.policy.clock_skew);
        let newly = self
            .v
            .store
            .revoke_jti(&jti, until, now)
            .await
            .map_err(from_domain)?;
        self.apply(
            &RevocationEvent::Jti {
                jti: jti.clone(),
                until,
            },
            now,
        )
        .await?;
        audit::token_revoked(caller, &jti, newly);
        if newly {
            self.v.metrics.revoked(RevokedKind::Token);
        }
        Ok(RevokeResponse {
            revoked: u64::from(newly),
            jti,
            revoked_until: Some(timestamp(until)),
        })
    }

    /// Logout of one session. An unknown family is not an error (RFC 7009
    /// section 2.2): it answers `revoked = 0`.
    async fn revoke_family(
        &self,
        family_id: String,
        now: UnixTime,
        caller: &str,
    ) -> Result<RevokeResponse, Status> {
        let found = self
            .v
            .store
            .revoke_family(&family_id, now)
            .await
            .map_err(from_domain)?;
        let until = now + self.v.policy.family_margin();
        let Some((newly, _end)) = found else {
            return Ok(RevokeResponse::default());
        };
        audit::family_revoked(caller, &family_id, newly);
        // Applied even when not new: a retry after a failed fan-out (or the
        // issuer reporting a reuse it already recorded) still reaches every
        // instance.
        self.apply(&RevocationEvent::Family { family_id, until }, now)
            .await?;
        if newly {
            self.v.metrics.revoked(RevokedKind::Family);
            self.v.metrics.families_revoked(FamilyCause::Family, 1);
        }
        Ok(RevokeResponse {
            revoked: u64::from(newly),
            jti: String::new(),
            revoked_until: Some(timestamp(until)),
        })
    }

    /// Every token signed by a key. Only the issuer's key manager changes
    /// key state: this service asks it to kill the key (in process, or over
    /// gRPC), then fans the kill out to every instance's view.
    async fn revoke_key(
        &self,
        kid: String,
        reason: &str,
        now: UnixTime,
        caller: &str,
        fan_out: bool,
    ) -> Result<RevokeResponse, Status> {
        let Some(newly) = self.v.key_killer.kill(&kid, reason, caller).await? else {
            return Ok(RevokeResponse::default());
        };
        // Fanned out here, new or not (a retry after a failed fan-out still
        // reaches every instance): the issuer leaves the fan-out of a kill
        // a revocation service asked for to that service. Recorded once:
        // when this call killed the key, or when the issuer fans out the
        // kill it just made (its `CompromiseKey`, which alone fans out
        // what it newly killed); a key killed already (a retry, a second
        // operator) answers `revoked = 0` and writes no second
        // `key_revoked`, as `CompromiseKey` writes no second
        // `key_compromised`.
        let newly = newly || fan_out;
        if newly {
            audit::key_revoked(caller, &kid);
        } else {
            tracing::debug!(kid, "Revoke of a key already compromised: fanned out again");
        }
        self.apply(&RevocationEvent::Key { kid }, now).await?;
        if newly {
            self.v.metrics.revoked(RevokedKind::Key);
        }
        Ok(RevokeResponse {
            revoked: u64::from(newly),
            jti: String::new(),
            revoked_until: None,
        })
    }

    /// Every token of a subject: bumps its version and revokes its families.
    async fn revoke_subject(
        &self,
        subject: String,
        now: UnixTime,
        caller: &str,
    ) -> Result<RevokeResponse, Status> {
        let (version, families) = self
            .v
            .store
            .revoke_subject(&subject, true, now)
            .await
            .map_err(from_domain)?;
        audit::subject_revoked(caller, &subject, version, families);
        self.apply(
            &RevocationEvent::Subject {
                subject,
                min_version: version,
            },
            now,
        )
        .await?;
        self.v.metrics.revoked(RevokedKind::Subject);
        self.v
            .metrics
            .families_revoked(FamilyCause::Subject, families);
        Ok(RevokeResponse {
            revoked: families,
            jti: String::new(),
            revoked_until: None,
        })
    }

    /// `Revoke`, asked for by `caller` (named in the audit trail): the
    /// handler's, or [`audit::SERVER`] when the issuer in this process
    /// reports a reuse or a password reset.
    /// `reach`: the authenticated caller, whose audiences bound what a
    /// `token` target may name (`None`: the server itself, or no callers
    /// file). `fan_out`: the issuer fanning out a kill it just made
    /// ([`tessera_api::caller::KILL_FAN_OUT`]), recorded though the key was
    /// already compromised when this service asked.
    async fn revoke_as(
        &self,
        r: RevokeRequest,
        caller: &str,
        reach: Option<&Caller>,
        fan_out: bool,
    ) -> Result<RevokeResponse, Status> {
        if r.reason.len() > 1024 {
            return Err(invalid("reason", "at most 1024 bytes"));
        }
        let now = self.v.clock.now();
        match r.target {
            None => Err(invalid("target", "one target is required")),
            Some(Target::Token(t)) => {
                let (jti, exp) = self.token_target(&t, reach)?;
                self.revoke_jti(jti, exp, now, caller).await
            }
            Some(Target::Jti(t)) => {
                let (jti, exp) = jti_target(t, now)?;
                self.revoke_jti(jti, exp, now, caller).await
            }
            Some(Target::FamilyId(f)) => {
                check_text("family_id", &f, 128).map_err(from_domain)?;
                self.family_in_reach(&f, reach).await?;
                self.revoke_family(f, now, caller).await
            }
            Some(Target::Subject(s)) => {
                check_text("subject", &s, 255).map_err(from_domain)?;
                self.revoke_subject(s, now, caller).await
            }
            Some(Target::Kid(kid)) => {
                check_text("kid", &kid, 64).map_err(from_domain)?;
                self.revoke_key(kid, &r.reason, now, caller, fan_out).await
            }
        }
    }

    /// The jti and `exp` of a token target. The token must be ours (signature
    /// and issuer); it may be expired or otherwise unusable, since revoking
    /// such a token is harmless (RFC 7009 section 2.2: invalid tokens do not
    /// cause an error).
    ///
    /// A caller reaches a token only through one of its audiences: a token
    /// given whole names its audience, and one caller must not end another
    /// audience's tokens (a `jti` target is a named right that reaches
    /// every audience).
    fn token_target(
        &self,
        token: &str,
        reach: Option<&Caller>,
    ) -> Result<(String, UnixTime), Status> {
        let token = token_field("token", token)?;
        let signed = verify_signature(token, &self.v.keys.ring().current(), &self.v.policy)
            .ok()
            .filter(|s| s.claims.iss == self.v.policy.issuer)
            .ok_or_else(|| invalid("token", "is not a token issued by this service"))?;
        // A `jti` right reaches every token by its id: the audience bounds
        // only the `token` right.
        if let Some(caller) = reach.filter(|c| !c.may_revoke(RevokeRight::Jti)) {
            let audiences = signed.claims.aud.to_vec();
            if !audiences.iter().any(|a| caller.may_issue_for(a)) {
                let what = format!("revoke tokens for audience {:?}", audiences.join(" "));
                return Err(tessera_api::caller::not_allowed(caller, "Revoke", &what));
            }
        }
        Ok((signed.claims.jti, signed.claims.exp))
    }
}

impl RevocationApi {
    /// A caller ends a session only through one of its audiences: the
    /// family's audience (as stored) must be one of the caller's, or `*`.
    /// An unknown family is left to [`Self::revoke_family`], which answers
    /// `revoked = 0` (RFC 7009 section 2.2).
    async fn family_in_reach(&self, family_id: &str, reach: Option<&Caller>) -> Result<(), Status> {
        let Some(caller) = reach else {
            return Ok(());
        };
        let audience = self
            .v
            .store
            .family_audience(family_id)
            .await
            .map_err(from_domain)?;
        match audience {
            Some(a) if !caller.may_issue_for(&a) => {
                let what = format!("revoke sessions for audience {a:?}");
                Err(tessera_api::caller::not_allowed(caller, "Revoke", &what))
            }
            _ => Ok(()),
        }
    }
}

fn jti_target(
    t: tessera_proto::v1::JtiTarget,
    now: UnixTime,
) -> Result<(String, UnixTime), Status> {
    check_text("jti.jti", &t.jti, 128).map_err(from_domain)?;
    let exp = t
        .expires_at
        .ok_or_else(|| invalid("jti.expires_at", "is required"))?
        .seconds;
    if exp <= now {
        return Err(invalid("jti.expires_at", "must be in the future"));
    }
    if exp > now + MAX_JTI_LIFETIME {
        return Err(invalid("jti.expires_at", "must be at most 400 days ahead"));
    }
    Ok((t.jti, exp))
}

/// The caller's right to revoke this kind of target. A token given whole
/// needs the `token` right (then only of the caller's audiences) or the
/// `jti` right, which reaches every token by its id anyway.
fn may_revoke(caller: &Caller, r: &RevokeRequest) -> Result<(), Status> {
    let (right, name) = match r.target {
        None => return Ok(()),
        Some(Target::Token(_)) if caller.may_revoke(RevokeRight::Jti) => return Ok(()),
        Some(Target::Token(_)) => (RevokeRight::Token, "tokens given whole"),
        Some(Target::Jti(_)) => (RevokeRight::Jti, "tokens by jti"),
        Some(Target::FamilyId(_)) => (RevokeRight::Family, "families"),
        Some(Target::Subject(_)) => (RevokeRight::Subject, "subjects"),
        Some(Target::Kid(_)) => (RevokeRight::Kid, "signing keys"),
    };
    if caller.may_revoke(right) {
        Ok(())
    } else {
        Err(tessera_api::caller::not_allowed(
            caller,
            "Revoke",
            &format!("revoke {name}"),
        ))
    }
}

#[tonic::async_trait]
impl RevocationService for RevocationApi {
    #[tracing::instrument(skip_all, fields(target))]
    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevokeResponse>, Status> {
        let reach = tessera_api::caller::caller(&request).cloned();
        if let Some(caller) = &reach {
            may_revoke(caller, request.get_ref())?;
        }
        let caller = tessera_api::caller::caller_of(&request);
        let fan_out = request
            .metadata()
            .contains_key(tessera_api::caller::KILL_FAN_OUT)
            && reach.as_ref().is_none_or(|c| c.may_relay());
        self.revoke_as(request.into_inner(), &caller, reach.as_deref(), fan_out)
            .await
            .map(Response::new)
    }

    type WatchRevocationsStream = crate::watch::WatchStream;

    #[tracing::instrument(skip_all)]
    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        crate::watch::watch(&self.v, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// In process (the embedded mode), the issuer reaches this service
/// directly: no TCP call to itself.
#[tonic::async_trait]
impl tessera_api::ports::Revoker for RevocationApi {
    async fn revoke(&self, request: RevokeRequest, caller: &str) -> Result<RevokeResponse, Status> {
        self.revoke_as(request, caller, None, false).await
    }

    async fn key_killed(&self, kid: &str, _reason: &str) -> Result<(), Status> {
        let now = self.v.clock.now();
        // The in-process fan-out of `CompromiseKey` (one process serving
        // both): the revocation service's record of the kill, as a
        // `Revoke{kid}` from the issuer would write it.
        audit::key_revoked(audit::SERVER, kid);
        self.apply(
            &RevocationEvent::Key {
                kid: kid.to_owned(),
            },
            now,
        )
        .await?;
        self.v.metrics.revoked(RevokedKind::Key);
        Ok(())
    }
}
