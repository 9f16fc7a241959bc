//! `quorate verify`: a client's check that what a quorate serves is in its transparency log,
//! and that the log it is shown is the one it saw before (DESIGN §12).
//!
//! For each store path: the narinfo names its decision's log index (`Quorate-Log-Index`);
//! the entry at that index (from the log's entry bundle) must be an accepted decision for
//! that path with the narinfo's NarHash; its inclusion proof must lead to a checkpoint signed
//! by the log's key; and that checkpoint must be consistent with the last one seen for the
//! same log (origin and key), kept in a small state file, proved from the log's tiles. Two
//! checkpoints of one log that no consistency proof joins are a fork: reported as
//! `SECURITY ERROR` with both.
//!
//! Everything fetched is checked against signatures and hashes; the server is not trusted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quorate_core::protocol::nar_hash::NarHash;
use quorate_core::protocol::store_path::HashPart;
use quorate_core::tlog::checkpoint::Checkpoint;
use quorate_core::tlog::merkle::leaf_hash;
use quorate_core::tlog::note::{NoteVerifier, VerifierKey};
use quorate_core::tlog::proof::TlogProof;
use quorate_core::tlog::tile::{decode_bundle, Tile, TilePath, TILE_WIDTH};
use serde::{Deserialize, Serialize};

use crate::remote_log::RemoteLog;

/// Why a verification could not be completed (as opposed to a fork, which is a finding).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A request failed or was answered with something unusable.
    #[error("{0}")]
    Fetch(String),
    /// What was served does not check out (a bad signature, proof, entry).
    #[error("{0}")]
    Invalid(String),
    /// The state file could not be read or written.
    #[error("state file {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// What verifying found.
pub struct Verified {
    /// One line per path, and notes.
    pub report: String,
    /// Two checkpoints of one log that no consistency proof joins.
    pub fork: Option<String>,
}

/// The last checkpoint seen per log, by origin.
#[derive(Default, Serialize, Deserialize)]
struct State {
    logs: BTreeMap<String, SeenLog>,
}

#[derive(Clone, Serialize, Deserialize)]
struct SeenLog {
    vkey: String,
    checkpoint: String,
}

/// Checks `paths` (store paths or hash parts) against the quorate at `base` (its cache
/// `cache`, or the only one), with `state` holding the checkpoints seen before.
pub async fn verify(
    base: &str,
    cache: Option<&str>,
    state: &Path,
    paths: &[String],
) -> Result<Verified, VerifyError> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| VerifyError::Fetch(e.to_string()))?;
    let base = base.trim_end_matches('/');
    let web = Web { client, base };
    let (name, mount) = web.cache(cache).await?;
    let log = format!("/tlog/{name}");
    let vkey_text = web.text(&format!("{log}/vkey")).await?;
    let vkey: VerifierKey = vkey_text
        .trim()
        .parse()
        .map_err(|e| VerifyError::Invalid(format!("the log's vkey: {e}")))?;
    let origin = vkey.name().to_owned();
    let mut seen = load_state(state)?;
    let mut report = String::new();
    let mut newest: Option<(Checkpoint, String)> = None;
    for path in paths {
        let (line, checkpoint, note) = one_path(&web, &mount, &log, &vkey, path).await?;
        report.push_str(&line);
        report.push('\n');
        if newest
            .as_ref()
            .is_none_or(|(c, _)| checkpoint.size() > c.size())
        {
            newest = Some((checkpoint, note));
        }
    }
    let Some((current, note)) = newest else {
        return Ok(Verified { report, fork: None });
    };
    let mut fork = None;
    if let Some(before) = seen.logs.get(&origin).cloned() {
        if before.vkey.trim() != vkey_text.trim() {
            fork = Some(format!(
                "log {origin} is now signed by another key:\n  before: {}\n  now:    {}",
                before.vkey.trim(),
                vkey_text.trim()
            ));
        } else {
            let (old, _) = Checkpoint::open(before.checkpoint.as_bytes(), &origin, &vkey)
                .map_err(|e| VerifyError::Invalid(format!("the saved checkpoint: {e}")))?;
            match consistent(&web, &log, &old, &current).await {
                Ok(()) => report.push_str(&format!(
                    "log {origin}: size {} consistent with the size {} seen before\n",
                    current.size(),
                    old.size()
                )),
                Err(why) => {
                    fork = Some(format!(
                        "log {origin} forked ({why}):\n--- seen before\n{}--- served now\n{}",
                        before.checkpoint, note
                    ))
                }
            }
            if old.size() > current.size() {
                return Ok(Verified { report, fork });
            }
        }
    }
    if fork.is_none() {
        seen.logs.insert(
            origin,
            SeenLog {
                vkey: vkey_text,
                checkpoint: note,
            },
        );
        save_state(state, &seen)?;
    }
    Ok(Verified { report, fork })
}

/// One path: its narinfo's log index, the entry there, the proof, the checkpoint.
async fn one_path(
    web: &Web<'_>,
    mount: &str,
    log: &str,
    vkey: &VerifierKey,
    path: &str,
) -> Result<(String, Checkpoint, String), VerifyError> {
    let hash_part = hash_part_of(path)?;
    let (narinfo, index) = web.narinfo(&format!("{mount}/{hash_part}.narinfo")).await?;
    let nar_hash = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("NarHash: "))
        .and_then(|h| NarHash::parse(h.trim()).ok())
        .ok_or_else(|| VerifyError::Invalid(format!("{path}: the narinfo has no NarHash")))?;
    let proof_text = web.bytes(&format!("{log}/proof/{index}")).await?;
    let proof = TlogProof::parse(&proof_text)
        .map_err(|e| VerifyError::Invalid(format!("{path}: proof: {e}")))?;
    let size = proof
        .checkpoint()
        .text()
        .parse::<Checkpoint>()
        .map_err(|e| VerifyError::Invalid(format!("{path}: proof checkpoint: {e}")))?
        .size();
    let entry = web.entry(log, index, size).await?;
    let checkpoint = proof
        .verify(leaf_hash(&entry), vkey.name(), vkey)
        .map_err(|e| VerifyError::Invalid(format!("{path}: entry {index} not proved: {e}")))?;
    let text = String::from_utf8_lossy(&entry);
    let expected = [
        "quorate/decision/v1\n".to_owned(),
        format!("\nhash-part {hash_part}\n"),
        "\nverdict accepted\n".to_owned(),
        format!("\nnar-hash {nar_hash}\n"),
    ];
    if !text.starts_with(&expected[0]) || !expected[1..].iter().all(|l| text.contains(l)) {
        return Err(VerifyError::Invalid(format!(
            "{path}: log entry {index} is not an accepted decision for this narinfo:\n{text}"
        )));
    }
    let line = format!(
        "OK {path}: accepted with {nar_hash}, entry {index} of {} (size {})",
        vkey.name(),
        checkpoint.size()
    );
    Ok((line, checkpoint, proof.checkpoint().to_string()))
}

/// Whether `old` and `new` are checkpoints of one history: a consistency proof from the
/// log's tiles (at the larger size) that verifies against both roots.
async fn consistent(
    web: &Web<'_>,
    log: &str,
    old: &Checkpoint,
    new: &Checkpoint,
) -> Result<(), String> {
    RemoteLog::new(
        web.client.clone(),
        &format!("{}{log}", web.base),
        usize::MAX,
    )
    .consistent(old, new)
    .await
    .map_err(|e| e.to_string())
}

fn hash_part_of(path: &str) -> Result<HashPart, VerifyError> {
    let base = path.rsplit('/').next().unwrap_or(path);
    let hash = base.split('-').next().unwrap_or(base);
    hash.parse().map_err(|_| {
        VerifyError::Invalid(format!("{path:?} is neither a store path nor a hash part"))
    })
}

/// The quorate being verified.
struct Web<'a> {
    client: reqwest::Client,
    base: &'a str,
}

impl Web<'_> {
    async fn get(&self, path: &str) -> Result<reqwest::Response, VerifyError> {
        let url = format!("{}{path}", self.base);
        let r = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| VerifyError::Fetch(format!("GET {url}: {e}")))?;
        if !r.status().is_success() {
            return Err(VerifyError::Fetch(format!(
                "GET {url}: HTTP {}",
                r.status()
            )));
        }
        Ok(r)
    }

    async fn bytes(&self, path: &str) -> Result<Vec<u8>, VerifyError> {
        let r = self.get(path).await?;
        r.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| VerifyError::Fetch(format!("GET {path}: {e}")))
    }

    async fn text(&self, path: &str) -> Result<String, VerifyError> {
        String::from_utf8(self.bytes(path).await?)
            .map_err(|_| VerifyError::Invalid(format!("{path} is not text")))
    }

    /// The narinfo and its `Quorate-Log-Index`.
    async fn narinfo(&self, path: &str) -> Result<(String, u64), VerifyError> {
        let r = self.get(path).await?;
        let index = r
            .headers()
            .get("quorate-log-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                VerifyError::Invalid(format!(
                    "{path}: no Quorate-Log-Index (not logged yet? try again in a second)"
                ))
            })?;
        let text = r
            .text()
            .await
            .map_err(|e| VerifyError::Fetch(format!("GET {path}: {e}")))?;
        Ok((text, index))
    }

    /// Entry `index` of a log of `size` entries, from its entry bundle.
    async fn entry(&self, log: &str, index: u64, size: u64) -> Result<Vec<u8>, VerifyError> {
        let t = index / TILE_WIDTH;
        let width = (size - t * TILE_WIDTH).min(TILE_WIDTH) as u16;
        let tile = Tile::new(0, t, width).map_err(|e| VerifyError::Invalid(e.to_string()))?;
        let bytes = self
            .bytes(&format!("{log}/{}", TilePath::Entries(tile)))
            .await?;
        let entries =
            decode_bundle(&tile, &bytes).map_err(|e| VerifyError::Invalid(e.to_string()))?;
        entries
            .get((index % TILE_WIDTH) as usize)
            .map(|e| e.to_vec())
            .ok_or_else(|| VerifyError::Invalid(format!("entry {index} is not in its bundle")))
    }

    /// The cache to verify: its name and mount (`""` for `/`).
    async fn cache(&self, wanted: Option<&str>) -> Result<(String, String), VerifyError> {
        let list: serde_json::Value = serde_json::from_str(&self.text("/api/v1/caches").await?)
            .map_err(|e| VerifyError::Invalid(format!("/api/v1/caches: {e}")))?;
        let caches = list["caches"].as_array().cloned().unwrap_or_default();
        let chosen = match wanted {
            Some(name) => caches.iter().find(|c| c["name"] == name),
            None if caches.len() == 1 => caches.first(),
            None => {
                return Err(VerifyError::Invalid(
                    "this quorate serves several caches: name one with --cache".into(),
                ))
            }
        }
        .ok_or_else(|| VerifyError::Invalid("no such cache".into()))?;
        let name = chosen["name"].as_str().unwrap_or_default().to_owned();
        let mount = chosen["mount"]
            .as_str()
            .unwrap_or("/")
            .trim_end_matches('/')
            .to_owned();
        Ok((name, mount))
    }
}

fn load_state(path: &Path) -> Result<State, VerifyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| VerifyError::State {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(VerifyError::State {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

fn save_state(path: &Path, state: &State) -> Result<(), VerifyError> {
    let error = |e: std::io::Error| VerifyError::State {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    let text = serde_json::to_string_pretty(state).unwrap_or_default();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(error)?;
    std::fs::rename(&tmp, path).map_err(error)
}

/// Where the checkpoints seen are kept by default: `$XDG_STATE_HOME/quorate/verify.json`
/// (`~/.local/state/...`).
pub fn default_state_file() -> PathBuf {
    let dir = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    dir.join("quorate").join("verify.json")
}
