//! TLS for the port Tessera serves and for the calls it makes to its own
//! services, through rustls with the aws-lc-rs provider (the crypto library
//! the tokens already use).
//!
//! The server's certificate, key and client CA are files, reloaded without a
//! restart when they change (see [`ServerTls::reload_if_changed`]): a new
//! configuration is built first and swapped in whole, so a half-written or
//! wrong file is refused, logged, and the one in force stays. Connections
//! already open keep the server certificate they were made with; one whose
//! client certificate the new client CA no longer verifies is closed
//! (`crate::net`).

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates are asked for.
    None,
    /// A certificate is verified if presented (callers may use a service
    /// key instead).
    Optional,
    /// Every connection must present a certificate signed by the client CA.
    Required,
}

/// The files of the server's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required.
    pub client_auth: ClientAuth,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }
}

/// The server's TLS configuration, reloadable.
pub struct ServerTls {
    files: TlsFiles,
    config: ArcSwap<Loaded>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
    /// Bumped on every configuration put in force: open connections
    /// check their client certificate again.
    changes: watch::Sender<u64>,
}

/// A configuration in force, and the client verifier it was built with.
struct Loaded {
    config: Arc<ServerConfig>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let stamps = stamps(&files);
        let config = build(&files)?;
        Ok(Self {
            files,
            config: ArcSwap::from_pointee(config),
            stamps: Mutex::new(stamps),
            changes: watch::channel(0).0,
        })
    }

    /// Reloads the files if any changed since the last load. `Ok(true)`:
    /// a new configuration is in force; `Err`: the new files were refused
    /// and the old configuration stays.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = stamps(&self.files);
        {
            let mut seen = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return Ok(false);
            }
            // Remember the attempt even if it fails: a broken file is
            // reported once, not every poll, and retried when it changes.
            *seen = now;
        }
        let config = build(&self.files)?;
        self.config.store(Arc::new(config));
        self.changes.send_modify(|n| *n += 1);
        Ok(true)
    }

    /// An acceptor with the configuration in force.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load().config.clone())
    }

    /// Wakes on every configuration put in force.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// True when the configuration in force still verifies the client
    /// certificate `chain` (leaf first) a connection was opened with: a
    /// replaced client CA ends the connections it no longer trusts.
    pub fn still_trusts(&self, chain: &[CertificateDer<'static>]) -> bool {
        let loaded = self.config.load();
        let (Some(verifier), Some((leaf, intermediates))) = (&loaded.clients, chain.split_first())
        else {
            return false;
        };
        verifier
            .verify_client_cert(leaf, intermediates, rustls_pki_types::UnixTime::now())
            .is_ok()
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    files
        .paths()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// The provider every TLS configuration here is built with.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// PEM certificates from `path`; `setting` names the flag in errors.
pub fn read_certs(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{setting} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{setting} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<Loaded, String> {
    let certs = read_certs(&files.cert, "tls_cert")?;
    // The error names the file, never the key's bytes.
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("tls_key {}: {e}", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let mut clients: Option<Arc<dyn ClientCertVerifier>> = None;
    let builder = match (&files.client_ca, files.client_auth) {
        (None, ClientAuth::None) => builder.with_no_client_auth(),
        (None, _) => return Err("tls_client_ca: required for client certificates".into()),
        (Some(ca), auth) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca, "tls_client_ca")? {
                roots
                    .add(c)
                    .map_err(|e| format!("tls_client_ca {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if auth == ClientAuth::Required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("tls_client_ca: {e}"))?;
            clients = Some(verifier.clone());
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_cert/tls_key: {e}"))?;
    // gRPC needs h2; the JWKS is also served to HTTP/1.1 clients.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        clients,
    })
}

/// The identities of a verified client certificate, each with its type:
/// `dns:`, `uri:` and `email:` for its SANs, `cn:` for its subject common
/// names. Callers are matched on these, type and all, so an e-mail SAN can
/// never pass for a DNS name, nor a CN for a SAN.
pub fn cert_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => names.push(format!("dns:{n}")),
                GeneralName::URI(n) => names.push(format!("uri:{n}")),
                GeneralName::RFC822Name(n) => names.push(format!("email:{n}")),
                _ => {}
            }
        }
    }
    names.extend(
        cert.subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(|cn| format!("cn:{cn}"))),
    );
    names
}

/// TLS for the calls Tessera makes to its own services: the CA their
/// certificates are verified against, and optionally this instance's client
/// certificate (mTLS).
#[derive(Clone)]
pub struct ClientTls {
    ca: tonic::transport::Certificate,
    identity: Option<tonic::transport::Identity>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the CA and, if given, the client certificate and key.
    pub fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, String> {
        read_certs(ca, "peer_ca")?;
        let read = |p: &Path, setting: &str| {
            std::fs::read(p).map_err(|e| format!("{setting} {}: {e}", p.display()))
        };
        let ca = tonic::transport::Certificate::from_pem(read(ca, "peer_ca")?);
        let identity = match identity {
            Some((cert, key)) => Some(tonic::transport::Identity::from_pem(
                read(cert, "tls_cert")?,
                read(key, "tls_key")?,
            )),
            None => None,
        };
        Ok(Self { ca, identity })
    }

    /// The tonic client configuration.
    pub fn config(&self) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new().ca_certificate(self.ca.clone());
        match &self.identity {
            Some(id) => config.identity(id.clone()),
            None => config,
        }
    }
}
