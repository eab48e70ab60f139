//! Builds a [`Topology`]: each role's part and, in one process, both roles
//! joined through in-process ports (no TCP call to itself). Above the roles
//! and the topology, below the application that serves the result.

use super::introspection::{self, IssuerPort};
use super::{Base, Part, issuer};
use crate::config::AppError;
use crate::topology::Topology;
use std::sync::Arc;
use std::time::Duration;
use tessera_introspection::KeyFollower;
use tessera_issuer::KeyManager;
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::revocation_service_client::RevocationServiceClient;

/// Where this instance's keys come from, for the application's accessors.
pub(crate) enum Keys {
    /// The issuer's key manager (all-in-one and issuer).
    Managed(Arc<KeyManager>),
    /// The follower of the issuer's key set (introspection).
    Followed(Arc<KeyFollower>),
}

/// A topology built: its joined part, and where its keys come from.
pub(crate) struct Wired {
    pub part: Part,
    pub keys: Keys,
}

/// Builds `topology`'s services on `base`.
pub(crate) async fn wire(topology: Topology, base: &Base) -> Result<Wired, AppError> {
    match topology {
        Topology::AllInOne => all_in_one(base).await,
        Topology::Issuer {
            revocation_endpoint,
        } => issuer_role(base, &revocation_endpoint).await,
        Topology::Introspection {
            issuer_endpoint,
            unknown_kid_refetch,
        } => introspection_role(base, &issuer_endpoint, unknown_kid_refetch).await,
    }
}

/// Both roles on one port: the issuer's `Revoker` is the revocation service
/// in process, Verify's `KeySource` and `KeyKiller` are the key manager's
/// ring and the key manager.
async fn all_in_one(base: &Base) -> Result<Wired, AppError> {
    let signer = issuer::key_manager(base).await?;
    let keys = signer.keys.clone();
    let verifier = introspection::part(base, IssuerPort::InProcess(keys.clone())).await?;
    let issuer = issuer::part(base, signer, verifier.revocations).await?;
    Ok(Wired {
        part: verifier.part.join(issuer),
        keys: Keys::Managed(keys),
    })
}

/// The issuer alone: it reports to the revocation service over gRPC.
async fn issuer_role(base: &Base, revocation_endpoint: &str) -> Result<Wired, AppError> {
    let signer = issuer::key_manager(base).await?;
    let keys = signer.keys.clone();
    let channel = base.channel(revocation_endpoint, "revocation_endpoint")?;
    let revoker = Arc::new(RevocationServiceClient::new(channel));
    let mut part = issuer::part(base, signer, revoker).await?;
    issuer::follow_kills(base, &keys, &mut part).await?;
    Ok(Wired {
        part,
        keys: Keys::Managed(keys),
    })
}

/// The verifier alone: it learns keys from the issuer and kills them
/// through it, over gRPC.
async fn introspection_role(
    base: &Base,
    issuer_endpoint: &str,
    unknown_kid_refetch: Duration,
) -> Result<Wired, AppError> {
    let client = KeyServiceClient::new(base.channel(issuer_endpoint, "issuer_endpoint")?);
    let follower = Arc::new(KeyFollower::new(
        client.clone(),
        base.ring.clone(),
        base.view.clone(),
        unknown_kid_refetch,
    ));
    let port = IssuerPort::Remote {
        killer: Arc::new(client),
        follower: follower.clone(),
    };
    let verifier = introspection::part(base, port).await?;
    Ok(Wired {
        part: verifier.part,
        keys: Keys::Followed(follower),
    })
}
