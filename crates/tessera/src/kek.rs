//! Where the key-encryption key comes from: `TESSERA_KEK` (base64url of 32
//! bytes), a file named by `--kek-file`, or — the embedded default — a file
//! `kek` in the data directory, created on first start with mode 0600 and a
//! warning that production supplies its own.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tessera_domain::seal::Kek;
use tessera_domain::{Secret, b64url_decode, b64url_encode};

/// Where to read the KEK.
#[derive(Clone)]
pub enum KekSource {
    /// The KEK itself (from `TESSERA_KEK`).
    Value(Secret),
    /// A file holding the KEK as base64url; must exist.
    File(PathBuf),
    /// `<data_dir>/kek`, created when missing.
    DataDir,
}

impl std::fmt::Debug for KekSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value([redacted])"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::DataDir => f.write_str("DataDir"),
        }
    }
}

/// Parses the text form of a KEK: base64url (no padding) of 32 bytes.
pub fn parse_kek(text: &str) -> Result<Secret, String> {
    b64url_decode(text.trim())
        .filter(|b| b.len() == tessera_domain::seal::KEK_LEN)
        .map(Secret::new)
        .ok_or_else(|| "a KEK is base64url (no padding) of 32 random bytes".to_owned())
}

fn read_file(path: &Path) -> Result<Secret, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("kek file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "the KEK file is readable by group or others; chmod 600 it");
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("kek file {}: {e}", path.display()))?;
    parse_kek(&text).map_err(|e| format!("kek file {}: {e}", path.display()))
}

/// Loads (or, for [`KekSource::DataDir`], creates) the KEK.
pub fn load(source: &KekSource, data_dir: &Path) -> Result<Kek, String> {
    let bytes = match source {
        KekSource::Value(s) => s.clone(),
        KekSource::File(p) => read_file(p)?,
        KekSource::DataDir => {
            let path = data_dir.join("kek");
            if path.exists() {
                read_file(&path)?
            } else {
                let bytes = Kek::generate_bytes();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| format!("creating {}: {e}", path.display()))?;
                f.write_all(b64url_encode(bytes.expose()).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                tracing::warn!(
                    path = %path.display(),
                    "generated a key-encryption key in the data directory; production must supply its own (TESSERA_KEK or --kek-file)"
                );
                bytes
            }
        }
    };
    Kek::from_bytes(&bytes).map_err(|e| e.to_string())
}
