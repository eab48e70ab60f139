//! Which services this process serves, chosen once from the configuration
//! (`--role`): a [`Topology`] whose variants hold only what that role needs.
//! It is read from the configuration alone, below the roles: the start-up
//! checks refuse a topology that cannot work, and `roles::wire` builds each
//! role's part from it (the README's "Separate issuer and introspection
//! processes" shows the split deployment).

use crate::config::{AppError, Config, Role};
use crate::kek::KekSource;
use std::time::Duration;

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
}

fn required(value: &Option<String>, setting: &str, role: &str) -> Result<String, AppError> {
    value
        .clone()
        .ok_or_else(|| AppError::Config(format!("{setting}: required with --role {role}")))
}

/// How to make a KEK, for the errors that ask for one.
const KEK_HOWTO: &str = "32 random bytes in base64url, e.g. `head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\\n'`";
