//! Where the key-encryption key comes from: `TESSERA_KEK` (base64 of 32
//! bytes, url-safe or standard), a file named by `--kek-file`, or — the embedded default — a file
//! `kek` in the data directory, created on first start with mode 0600 and a
//! warning that production supplies its own.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tessera_domain::seal::Kek;
use tessera_domain::{Secret, b64_standard_decode, b64url_decode, b64url_encode};

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

/// Parses the text form of a KEK: 32 bytes as base64url without padding
/// (what Tessera writes) or as standard base64 with padding (what
/// `openssl rand -base64 32` prints). The two alphabets cannot be confused:
/// a text is tried as one, then the other, and must decode to exactly 32
/// bytes either way.
pub fn parse_kek(text: &str) -> Result<Secret, String> {
    let text = text.trim();
    b64url_decode(text)
        .or_else(|| b64_standard_decode(text))
        .filter(|b| b.len() == tessera_domain::seal::KEK_LEN)
        .map(Secret::new)
        .ok_or_else(|| {
            "a KEK is 32 random bytes as base64 (`openssl rand -base64 32`) or base64url without padding"
                .to_owned()
        })
}

fn read_file(path: &Path) -> Result<Secret, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("kek file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o007 != 0 {
        tracing::warn!(path = %path.display(), "the KEK file is readable by others; chmod 600 it");
    } else if mode & 0o070 != 0 {
        // With a POSIX ACL the group bits show the ACL's mask: a file that
        // grants only the service user (`setfacl -m u:10001:r`, as
        // scripts/compose-setup.sh does) looks group-readable here.
        tracing::warn!(path = %path.display(), "the KEK file's group bits are set: its group, or the users an ACL names, can read it (getfacl shows which); chmod 600 it unless an ACL grants only the service's user");
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

/// Replaces the KEK file `path` with the KEK in `from`, checked first:
/// written to a temporary file (0600) beside it, synced, then renamed over
/// it, so a crash leaves the old file or the new one, never half of one.
pub fn replace_file(path: &Path, from: &Path) -> Result<(), String> {
    let bytes = read_file(from)?;
    let tmp = path.with_extension("new.tmp");
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(b64url_encode(bytes.expose()).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| format!("replacing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::parse_kek;

    /// 32 bytes whose standard base64 uses `+` and `/` and ends in `=`, so
    /// the url-safe decoder alone would refuse it.
    const BYTES: [u8; 32] = [
        0xfb, 0xff, 0xbf, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
        0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a,
        0x1b, 0xfe,
    ];

    #[test]
    fn accepts_openssl_rand_base64_32_and_base64url() {
        use base64::Engine as _;
        let standard = base64::engine::general_purpose::STANDARD.encode(BYTES);
        assert!(standard.contains('+') && standard.contains('/') && standard.ends_with('='));
        // As `openssl rand -base64 32` prints it: with a trailing newline.
        let parsed = parse_kek(&format!("{standard}\n")).unwrap();
        assert_eq!(parsed.expose(), &BYTES[..]);
        let url = tessera_domain::b64url_encode(BYTES);
        assert_eq!(parse_kek(&url).unwrap().expose(), &BYTES[..]);
    }

    #[test]
    fn refuses_other_lengths_and_text() {
        use base64::Engine as _;
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 31]);
        let long = base64::engine::general_purpose::STANDARD.encode([7u8; 33]);
        for bad in [short.as_str(), long.as_str(), "", "not base64 at all!"] {
            let err = parse_kek(bad).unwrap_err();
            assert!(err.contains("openssl rand -base64 32"), "{err}");
        }
    }
}
