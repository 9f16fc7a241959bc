//! Key files: quorate's own signing key per cache, read from `signing_key_file` or generated
//! there on first start, and key pairs written by `quorate keygen`.
//!
//! The formats are the flavors' own (`nix-store --generate-binary-cache-key`,
//! `guix archive --generate-key`; see `quorate_core::flavor::Signer`), so keys move freely
//! between quorate and the Nix and Guix tools. Secret files are created with mode 0600 and
//! never overwritten.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use quorate_core::flavor::{Flavor, Signer, SignerError};

use crate::config::CacheConfig;

/// Why a signing key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file exists but cannot be read.
    #[error("signing key {}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Every user on the machine can read the secret key.
    #[error(
        "signing key {} is readable by every user (mode {mode:03o}); \
         restrict it with `chmod 600 {}` (or `chmod o-r`)",
        path.display(),
        path.display()
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a key of the cache's flavor.
    #[error("signing key {}: {source}", path.display())]
    Parse {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        source: SignerError,
    },
    /// A new key could not be made (no randomness).
    #[error("signing key {}: {source}", path.display())]
    Generate {
        /// Where it was to go.
        path: PathBuf,
        /// Why.
        source: SignerError,
    },
    /// A transparency log key file is unusable.
    #[error("transparency log key {}: {reason}", path.display())]
    LogKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A new key could not be written.
    #[error("signing key {}: cannot write generated key: {source}", path.display())]
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
        return read_existing(path, cache.flavor);
    }
    let key = Signer::generate(cache.flavor, &cache.signing_key_name).map_err(|source| {
        KeyFileError::Generate {
            path: path.clone(),
            source,
        }
    })?;
    match write_key_pair(path, &key.secret_text(), &key.public_text()) {
        Ok(()) => {}
        // Another process (a replica sharing the directory) generated it just now.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return read_existing(path, cache.flavor)
        }
        Err(source) => {
            return Err(KeyFileError::Write {
                path: path.clone(),
                source,
            })
        }
    }
    tracing::info!(cache = %cache.name, "generated signing key {}", path.display());
    Ok(key)
}

/// The secret key in `path`: refused if every user can read it, or if it is not a key of
/// `flavor`.
pub fn read_existing(path: &Path, flavor: Flavor) -> Result<Signer, KeyFileError> {
    let path_buf = || path.to_path_buf();
    refuse_exposed(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path_buf(),
        source,
    })?;
    Signer::parse(flavor, &text).map_err(|source| KeyFileError::Parse {
        path: path_buf(),
        source,
    })
}

/// Refuses a secret key file every user on the machine can read.
pub fn refuse_exposed(path: &Path) -> Result<(), KeyFileError> {
    let meta = std::fs::metadata(path).map_err(|source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o004 != 0 {
        return Err(KeyFileError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Write `PREFIX.sec` (mode 0600, refusing to overwrite) and the public key next to it
/// (`.pub` replacing `.sec`). The secret appears whole or not at all (written to a temp file,
/// then hard-linked into place), so a process that starts at the same moment and finds the
/// file (`AlreadyExists` here) reads a complete key.
pub fn write_key_pair(sec_path: &Path, secret: &str, public: &str) -> std::io::Result<()> {
    let dir = sec_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = sec_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("key");
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        f.write_all(secret.as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&temp, sec_path)
    })();
    let _ = std::fs::remove_file(&temp);
    written?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, mode: u32, text: &str) -> PathBuf {
        let path = dir.join(format!("k{mode:o}.sec"));
        std::fs::write(&path, text).expect("write key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn a_secret_key_every_user_can_read_is_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = Signer::generate(Flavor::Nix, "quorate-1").expect("key");
        let exposed = key_file(dir.path(), 0o644, &key.secret_text());
        let err = read_existing(&exposed, Flavor::Nix).err().expect("refused");
        let message = err.to_string();
        assert!(message.contains("readable by every user"), "{message}");
        assert!(
            message.contains(&format!("chmod 600 {}", exposed.display())),
            "{message}"
        );
        for mode in [0o600, 0o640, 0o400] {
            let fine = key_file(dir.path(), mode, &key.secret_text());
            assert!(read_existing(&fine, Flavor::Nix).is_ok(), "mode {mode:o}");
        }
    }

    #[test]
    fn a_key_file_of_the_wrong_flavor_or_garbage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nix = Signer::generate(Flavor::Nix, "quorate-1").expect("key");
        let path = key_file(dir.path(), 0o600, &nix.secret_text());
        assert!(matches!(
            read_existing(&path, Flavor::Guix),
            Err(KeyFileError::Parse { .. })
        ));
        let garbage = key_file(dir.path(), 0o640, "not a key\n");
        assert!(matches!(
            read_existing(&garbage, Flavor::Nix),
            Err(KeyFileError::Parse { .. })
        ));
    }
}
