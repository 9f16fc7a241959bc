//! Key files: quorate's own signing key per cache, read from `signing_key_file` or generated
//! there on first start, and key pairs written by `quorate keygen`.
//!
//! The formats are the flavors' own (`nix-store --generate-binary-cache-key`,
//! `guix archive --generate-key`; see `quorate_core::flavor::Signer`), so keys move freely
//! between quorate and the Nix and Guix tools. Secret files are created with mode 0600 and
//! never overwritten.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use quorate_core::flavor::{Signer, SignerError};

use crate::config::CacheConfig;

/// Why a signing key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file exists but cannot be read.
    #[error("signing key {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file does not hold a key of the cache's flavor.
    #[error("signing key {path}: {source}")]
    Parse {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        source: SignerError,
    },
    /// A new key could not be made (no randomness).
    #[error("signing key {path}: {source}")]
    Generate {
        /// Where it was to go.
        path: PathBuf,
        /// Why.
        source: SignerError,
    },
    /// A new key could not be written.
    #[error("signing key {path}: cannot write generated key: {source}")]
    Write {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The cache's signing key: its `signing_key_file` if that exists, else a new key written
/// there (and its public half beside it).
pub fn load_or_generate(cache: &CacheConfig) -> Result<Signer, KeyFileError> {
    let path = &cache.signing_key_file;
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.clone(),
            source,
        })?;
        return Signer::parse(cache.flavor, &text).map_err(|source| KeyFileError::Parse {
            path: path.clone(),
            source,
        });
    }
    let key = Signer::generate(cache.flavor, &cache.signing_key_name).map_err(|source| {
        KeyFileError::Generate {
            path: path.clone(),
            source,
        }
    })?;
    write_key_pair(path, &key.secret_text(), &key.public_text()).map_err(|source| {
        KeyFileError::Write {
            path: path.clone(),
            source,
        }
    })?;
    tracing::info!(cache = %cache.name, "generated signing key {}", path.display());
    Ok(key)
}

/// Write `PREFIX.sec` (mode 0600, refusing to overwrite) and the public key next to it
/// (`.pub` replacing `.sec`).
pub fn write_key_pair(sec_path: &Path, secret: &str, public: &str) -> std::io::Result<()> {
    if let Some(dir) = sec_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(sec_path)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    std::fs::write(pub_path_for(sec_path), public)?;
    Ok(())
}

/// `x.sec` → `x.pub`; any other name gets `.pub` appended.
pub fn pub_path_for(sec_path: &Path) -> PathBuf {
    let s = sec_path.to_string_lossy();
    match s.strip_suffix(".sec") {
        Some(stem) => format!("{stem}.pub").into(),
        None => format!("{s}.pub").into(),
    }
}
