//! Which services this process serves, chosen once from the configuration
//! (`--role`): a [`Topology`] whose variants hold only what that role needs,
//! and [`Topology::wire`], which builds each role's part and, in one
//! process, joins them through in-process ports (the README's "Separate
//! issuer and introspection processes" shows the split deployment).

use crate::config::{AppError, Config, Role};
use crate::kek::KekSource;
use crate::roles::introspection::{self, IssuerPort};
use crate::roles::{Base, Part, issuer};
use std::sync::Arc;
use std::time::Duration;
use tessera_introspection::KeyFollower;
use tessera_issuer::KeyManager;
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::revocation_service_client::RevocationServiceClient;

/// The services of this process and how they reach each other.
#[derive(Debug)]
pub(crate) enum Topology {
    /// Every service on one port; the two roles call each other in process.
    AllInOne,
    /// `IssuerService`, `KeyService` and the HTTP JWKS.
    Issuer {
        /// The revocation service to report reuse, resets and key kills to.
        revocation_endpoint: String,
    },
    /// `IntrospectionService` and `RevocationService`.
    Introspection {
        /// The issuer to learn keys from.
        issuer_endpoint: String,
        /// The least time between two key-set refetches caused by unknown
        /// kids.
        unknown_kid_refetch: Duration,
    },
}

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

impl Topology {
    /// The one place `--role` is read. A shared deployment cannot start
    /// half-configured: every instance must expect the same `iss`, every
    /// issuer must hold the same KEK (one generated per data directory would
    /// seal keys no other issuer opens), and a split role must know its peer.
    pub fn choose(cfg: &Config) -> Result<Self, AppError> {
        if cfg.database_url.is_some() || cfg.role != Role::All {
            if !cfg.issuer_set {
                return Err(AppError::Config(
                    "issuer: required with a shared database or a split role (every instance must expect the same `iss`): pass --issuer https://… or set TESSERA_ISSUER".into(),
                ));
            }
            if cfg.role != Role::Introspection && matches!(cfg.kek, KekSource::DataDir) {
                return Err(AppError::Config(format!(
                    "kek: required with a shared database or a split role (every issuer must hold the same KEK; none is generated): set TESSERA_KEK or --kek-file to {KEK_HOWTO}"
                )));
            }
        }
        Ok(match cfg.role {
            Role::All => Self::AllInOne,
            Role::Issuer => Self::Issuer {
                revocation_endpoint: required(
                    &cfg.revocation_endpoint,
                    "revocation_endpoint",
                    "issuer",
                )?,
            },
            Role::Introspection => Self::Introspection {
                issuer_endpoint: required(
                    &cfg.issuer_endpoint,
                    "issuer_endpoint",
                    "introspection",
                )?,
                unknown_kid_refetch: cfg.unknown_kid_refetch,
            },
        })
    }

    /// Builds this topology's services on `base`.
    pub async fn wire(self, base: &Base) -> Result<Wired, AppError> {
        match self {
            Self::AllInOne => all_in_one(base).await,
            Self::Issuer {
                revocation_endpoint,
            } => issuer_role(base, &revocation_endpoint).await,
            Self::Introspection {
                issuer_endpoint,
                unknown_kid_refetch,
            } => introspection_role(base, &issuer_endpoint, unknown_kid_refetch).await,
        }
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

fn required(value: &Option<String>, setting: &str, role: &str) -> Result<String, AppError> {
    value
        .clone()
        .ok_or_else(|| AppError::Config(format!("{setting}: required with --role {role}")))
}

/// How to make a KEK, for the errors that ask for one.
const KEK_HOWTO: &str = "32 random bytes in base64url, e.g. `head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\\n'`";
