//! Each cache's transparency log, as the service holds it (DESIGN §12): the log's own
//! Ed25519 key and origin, and reading the log's stored hashes out of the database for
//! the Merkle code of `quorate_core::tlog`, which is synchronous and asks for every hash it
//! needs in one call.
//!
//! The log key is not the narinfo signing key: `log_key_file`, by default
//! `<state_dir>/keys/<cache>.log.sec`, in Go's note format (`PRIVATE+KEY+<origin>+<key id>+<base64>`), generated
//! on first start with its vkey beside it (`<cache>.log.pub`). Its name is the log's
//! origin line: `<host name>/tlog/<cache>` when quorate generates it; an operator who wants
//! another (their public URL) writes the key file first.

use std::collections::HashMap;
use std::sync::Mutex;

use quorate_core::tlog::checkpoint::CosignerKey;
use quorate_core::tlog::merkle::{Hash, HashReader, MissingHash, ProveError};
use quorate_core::tlog::note::{SignerKey, VerifierKey};

use crate::config::{CacheConfig, WitnessConfig};
use crate::db::{Db, DbError};
use crate::keys::{write_key_pair, KeyFileError};

/// A cache's log identity.
pub struct CacheLog {
    /// The log's key: signs checkpoints.
    pub signer: SignerKey,
    /// Its public half, served at `/tlog/<cache>/vkey`.
    pub verifier: VerifierKey,
}

impl CacheLog {
    /// The log's origin line (its key's name).
    pub fn origin(&self) -> &str {
        self.signer.name()
    }
}

/// Why the log could not be read or proved.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] DbError),
    /// The stored hashes do not add up (a bug or a damaged database).
    #[error("transparency log: {0}")]
    Inconsistent(String),
}

/// The log key of cache `c` (`log_key_file`): read, or generated on first start.
pub fn load_or_generate(c: &CacheConfig) -> Result<CacheLog, KeyFileError> {
    let path = c.log_key_file.clone();
    let bad = |reason: String| KeyFileError::LogKey {
        path: path.clone(),
        reason,
    };
    let read = || -> Result<SignerKey, KeyFileError> {
        crate::keys::refuse_exposed(&path)?;
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        text.trim()
            .parse::<SignerKey>()
            .map_err(|e| bad(e.to_string()))
    };
    let signer = if path.exists() {
        read()?
    } else {
        let origin = format!("{}/tlog/{}", host_name(), c.name);
        let key = SignerKey::generate(&origin).map_err(|e| bad(e.to_string()))?;
        let vkey = format!("{}\n", key.verifier());
        match write_key_pair(&path, &format!("{key}\n"), &vkey) {
            Ok(()) => {
                tracing::info!(cache = %c.name, "generated transparency log key {} ({})",
                    path.display(), key.verifier());
                key
            }
            // A replica sharing the directory generated it just now: use that one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read()?,
            Err(e) => return Err(bad(e.to_string())),
        }
    };
    let verifier = signer.verifier();
    Ok(CacheLog { signer, verifier })
}

/// Checks that `log`'s key signed the latest checkpoint of cache `name`'s log in `db`: a
/// replica (or a restored machine) with another log key would fork the log. `Err` names
/// what to do.
pub async fn check_log_key(
    db: &Db,
    name: &str,
    log: &CacheLog,
    key_file: &std::path::Path,
) -> Result<(), String> {
    let Some(note) = db
        .latest_checkpoint(name)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    match quorate_core::tlog::checkpoint::Checkpoint::open(
        note.as_bytes(),
        log.origin(),
        &log.verifier,
    ) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "cache `{name}`: the transparency log in the database was not signed by this log key \
             ({}: {e}); every replica must use the same `log_key_file`: copy {} from the \
             replica that made the log",
            log.verifier,
            key_file.display()
        )),
    }
}

/// This process as a witness of other logs (`[witness]`).
pub struct Witness {
    /// Its cosigning key.
    pub key: CosignerKey,
    /// The logs it witnesses, by their verifier keys (name = origin).
    pub logs: Vec<VerifierKey>,
}

/// The witness key in `config.key_file`: read, or generated on first start (its vkey beside
/// it, `.pub`).
pub fn load_witness(config: &WitnessConfig) -> Result<Witness, KeyFileError> {
    let path = &config.key_file;
    let bad = |reason: String| KeyFileError::LogKey {
        path: path.clone(),
        reason,
    };
    let key = if path.exists() {
        crate::keys::refuse_exposed(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        text.trim()
            .parse::<CosignerKey>()
            .map_err(|e| bad(e.to_string()))?
    } else {
        let key = CosignerKey::generate(&format!("{}/witness", host_name()))
            .map_err(|e| bad(e.to_string()))?;
        let vkey = format!("{}\n", key.verifier());
        write_key_pair(path, &format!("{key}\n"), &vkey).map_err(|e| bad(e.to_string()))?;
        tracing::info!(
            "generated witness key {} ({})",
            path.display(),
            key.verifier()
        );
        key
    };
    Ok(Witness {
        key,
        logs: config.logs.clone(),
    })
}

/// This machine's host name, for a generated origin (`quorate` when it has none).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic() && c != '+'))
        .unwrap_or_else(|| "quorate".into())
}

/// Runs `f` (core Merkle code over a [`HashReader`]) against `cache`'s stored hashes: those
/// in `known` (computed but not written yet, or read before), else the database's. A first
/// run records which hashes `f` asks for (their values do not steer which ones it asks for),
/// they are read in one go into `known`, and a second run computes the answer.
pub async fn with_hashes<T>(
    db: &Db,
    cache: &str,
    known: &mut HashMap<u64, Hash>,
    f: impl Fn(&MapReader<'_>) -> Result<T, ProveError<MissingHash>>,
) -> Result<T, LogError> {
    let wanted = {
        let probe = MapReader::recording(known);
        let _ = f(&probe);
        probe.missing()
    };
    if !wanted.is_empty() {
        let hashes = db.log_hashes(cache, &wanted).await?;
        known.extend(
            wanted
                .into_iter()
                .zip(hashes.into_iter().map(Hash::from_bytes)),
        );
    }
    f(&MapReader::strict(known)).map_err(|e| LogError::Inconsistent(e.to_string()))
}

/// Stored hashes by index; when recording, a missing one reads as zeros and is noted.
pub struct MapReader<'a> {
    known: &'a HashMap<u64, Hash>,
    /// `Some` while recording what is missing.
    missing: Option<Mutex<Vec<u64>>>,
}

impl<'a> MapReader<'a> {
    fn recording(known: &'a HashMap<u64, Hash>) -> MapReader<'a> {
        MapReader {
            known,
            missing: Some(Mutex::new(Vec::new())),
        }
    }

    fn strict(known: &'a HashMap<u64, Hash>) -> MapReader<'a> {
        MapReader {
            known,
            missing: None,
        }
    }

    fn missing(&self) -> Vec<u64> {
        let mut v = self
            .missing
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default();
        v.sort_unstable();
        v.dedup();
        v
    }
}

impl HashReader for MapReader<'_> {
    type Error = MissingHash;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        indexes
            .iter()
            .map(|&index| match (self.known.get(&index), &self.missing) {
                (Some(h), _) => Ok(*h),
                (None, Some(missing)) => {
                    missing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(index);
                    Ok(Hash::from_bytes([0; 32]))
                }
                (None, None) => Err(MissingHash {
                    index,
                    len: self.known.len(),
                }),
            })
            .collect()
    }
}
