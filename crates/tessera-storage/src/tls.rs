//! TLS to the stores: what the errors of a failed handshake may say, and the
//! files a `rediss://` Redis connection trusts and presents.
//!
//! Both drivers speak rustls with the aws-lc-rs provider. sqlx passes that
//! provider explicitly; redis-rs builds its client configuration from the
//! process-wide default, which the binary (and the tests) install once at
//! start (`tessera::install_crypto_provider`), so a second provider compiled
//! in by some dependency can never make rustls panic choosing one.
//!
//! A handshake error names the setting and carries rustls's own description
//! (e.g. `invalid peer certificate: UnknownIssuer`): never a URL, which may
//! hold a password, and never key material.

use std::error::Error;
use std::path::{Path, PathBuf};
use tessera_domain::error::{DomainError, Result};

/// rustls's description of the first TLS failure in `e`'s cause chain, if
/// any. rustls errors travel inside `std::io::Error`s, whose `source()`
/// skips the wrapped error itself, so each I/O error is opened too; redis-rs
/// keeps its cause as an `Arc<dyn Error>`, which hides the concrete type
/// from a downcast until it is opened as well.
pub(crate) fn failure<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    type Shared = std::sync::Arc<dyn Error + Send + Sync>;
    let mut cur = Some(e);
    while let Some(mut err) = cur {
        if let Some(inner) = err.downcast_ref::<Shared>() {
            err = &**inner;
        }
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(t) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// "TLS handshake failed: …" for `setting`, with a hint at the setting that
/// decides which certificates are trusted when the peer's was refused.
pub(crate) fn handshake_failed(setting: &str, e: &rustls::Error, trust: &str) -> String {
    let hint = match e {
        rustls::Error::InvalidCertificate(_) => format!(" (check {trust})"),
        _ => String::new(),
    };
    format!("{setting}: TLS handshake failed: {e}{hint}")
}

/// The TLS files of a `rediss://` connection. With none, the server's
/// certificate is checked against the webpki (Mozilla) roots.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// PEM file of the CA certificates that may sign the server's
    /// certificate; when set, only these are trusted.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for Redis with `tls-auth-clients yes`.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
}

impl RedisTls {
    /// The setting name of the first file that is set, if any (for errors
    /// about files that a plain or absent Redis URL would leave unused).
    pub fn first_set(&self) -> Option<&'static str> {
        [
            (self.ca_file.is_some(), "redis_ca_file"),
            (self.client_cert_file.is_some(), "redis_client_cert"),
            (self.client_key_file.is_some(), "redis_client_key"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }

    /// The files read and checked, each error naming its setting (and the
    /// path, never the contents).
    pub(crate) fn certificates(&self) -> Result<deadpool_redis::redis::TlsCertificates> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let root_cert = match &self.ca_file {
            Some(p) => {
                let pem = read("redis_ca_file", p)?;
                let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>();
                if !matches!(certs, Ok(ref c) if !c.is_empty()) {
                    return Err(DomainError::field(
                        "redis_ca_file",
                        format!("{}: no PEM certificate in it", p.display()),
                    ));
                }
                Some(pem)
            }
            None => None,
        };
        let client_tls = match (&self.client_cert_file, &self.client_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let client_cert = read("redis_client_cert", cert)?;
                if !matches!(
                    CertificateDer::pem_slice_iter(&client_cert).next(),
                    Some(Ok(_))
                ) {
                    return Err(DomainError::field(
                        "redis_client_cert",
                        format!("{}: no PEM certificate in it", cert.display()),
                    ));
                }
                let client_key = read("redis_client_key", key)?;
                if PrivateKeyDer::from_pem_slice(&client_key).is_err() {
                    return Err(DomainError::field(
                        "redis_client_key",
                        format!("{}: no PEM private key in it", key.display()),
                    ));
                }
                Some(deadpool_redis::redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                })
            }
            (Some(_), None) => {
                return Err(DomainError::field(
                    "redis_client_key",
                    "required with redis_client_cert",
                ));
            }
            (None, Some(_)) => {
                return Err(DomainError::field(
                    "redis_client_cert",
                    "required with redis_client_key",
                ));
            }
        };
        Ok(deadpool_redis::redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| DomainError::field(setting, format!("{}: {e}", path.display())))
}
