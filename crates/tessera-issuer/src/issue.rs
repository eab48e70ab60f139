//! `Issue`: a login mints an access token and opens a refresh family.

use crate::state::Inner;
use std::sync::Arc;
use tessera_api::caller::not_allowed;
use tessera_api::requests::issue_command;
use tessera_api::{from_domain, timestamp};
use tessera_domain::callers::Caller;
use tessera_domain::issue::{IssueCommand, mint_login};
use tessera_proto::v1::{IssueRequest, IssueResponse};
use tonic::Status;

/// The caller's rights over what it asks for: the audience, every extra
/// claim name, every scope and the `client_id` (checked after validation,
/// so a malformed request is INVALID_ARGUMENT whoever sends it).
fn may_issue(caller: &Caller, cmd: &IssueCommand) -> Result<(), Status> {
    if !caller.may_issue_for(&cmd.audience) {
        let aud = &cmd.audience;
        return Err(not_allowed(
            caller,
            "Issue",
            &format!("issue tokens for audience {aud:?}"),
        ));
    }
    if let Some(name) = cmd.extra_claims.keys().find(|n| !caller.may_add_claim(n)) {
        return Err(not_allowed(
            caller,
            "Issue",
            &format!("add the claim {name:?}"),
        ));
    }
    if let Some(scope) = cmd.scopes.iter().find(|s| !caller.may_grant_scope(s)) {
        return Err(not_allowed(
            caller,
            "Issue",
            &format!("grant the scope {scope:?}"),
        ));
    }
    // The token's client is the caller, or a client it is granted: a
    // caller must not mint tokens in another client's name.
    if let Some(client) = cmd
        .client_id
        .as_deref()
        .filter(|c| !caller.may_name_client(c))
    {
        return Err(not_allowed(
            caller,
            "Issue",
            &format!("issue tokens as client_id {client:?}"),
        ));
    }
    Ok(())
}

pub(crate) async fn issue(
    me: &Inner,
    request: IssueRequest,
    caller: Option<Arc<Caller>>,
) -> Result<IssueResponse, Status> {
    // Parse, don't validate: the request becomes a checked command.
    let cmd = issue_command(request, &me.cfg.policy)?;
    if let Some(caller) = &caller {
        may_issue(caller, &cmd)?;
    }
    let owner = caller.map(|c| c.id.clone());
    let version = me
        .store
        .subject_version(&cmd.subject)
        .await
        .map_err(from_domain)?;
    let key = me.keys.signing_key().map_err(from_domain)?;
    let now = me.cfg.clock.now();
    let mut minted = mint_login(&cmd, &me.cfg.policy, &me.cfg.families, &key, version, now)
        .map_err(from_domain)?;
    // The session belongs to the caller that obtained it: only it may
    // refresh it (RFC 6749 §6, RFC 9700 §4.14).
    minted.family.owner = owner;
    // Durable before the tokens leave: a refresh token the store does not
    // know would be useless.
    me.store
        .open_family(&minted.family)
        .await
        .map_err(from_domain)?;
    tracing::Span::current().record("family_id", minted.family.family_id.as_str());
    me.cfg.metrics.issued();
    Ok(IssueResponse {
        access_token: minted.access_token,
        access_token_expires_at: Some(timestamp(minted.claims.exp)),
        refresh_token_expires_at: Some(timestamp(minted.family.idle_expires_at)),
        refresh_token: minted.refresh_token.reveal(),
        family_id: minted.family.family_id,
        access_token_id: minted.claims.jti,
    })
}
