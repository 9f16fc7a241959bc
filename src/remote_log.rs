//! Another quorate's transparency log, read over HTTP and trusted for nothing: its checkpoint
//! is opened with the log's verifier key, two checkpoints are joined by a consistency proof
//! from its tiles, and each entry read is proved included under a checkpoint from its tiles.
//! Used by `quorate verify` and by the peer follower (`peers.rs`).

use std::collections::BTreeSet;

use quorate_core::tlog::checkpoint::Checkpoint;
use quorate_core::tlog::merkle::{
    leaf_hash, prove_consistency, prove_inclusion, split_stored_hash_index, verify_consistency,
    verify_inclusion, Hash, HashReader,
};
use quorate_core::tlog::note::{NoteVerifier, VerifierKey};
use quorate_core::tlog::tile::{decode_bundle, Tile, TilePath, TileSet, TILE_HEIGHT, TILE_WIDTH};

/// Why reading the log failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteLogError {
    /// A request failed, or its answer was unusable (too large, not what was asked).
    #[error("{0}")]
    Fetch(String),
    /// What was served does not check out: a bad signature, tile or proof.
    #[error("{0}")]
    Invalid(String),
    /// Two checkpoints no consistency proof joins: two histories under one key.
    #[error("{0}")]
    Fork(String),
}

/// A log at `url` (`https://host/tlog/<cache>`).
pub struct RemoteLog {
    client: reqwest::Client,
    url: String,
    max_body: usize,
}

impl RemoteLog {
    /// The log at `url`, read with `client`; no answer longer than `max_body` bytes is read.
    pub fn new(client: reqwest::Client, url: &str, max_body: usize) -> RemoteLog {
        RemoteLog {
            client,
            url: url.trim_end_matches('/').to_owned(),
            max_body,
        }
    }

    /// The log's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET <url>/<path>`: the body, at most `max_body` bytes.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, RemoteLogError> {
        let url = format!("{}/{path}", self.url);
        let fail = |e: String| RemoteLogError::Fetch(format!("GET {url}: {e}"));
        let mut r = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !r.status().is_success() {
            return Err(fail(format!("HTTP {}", r.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| fail(e.to_string()))? {
            if body.len() + chunk.len() > self.max_body {
                return Err(fail(format!("longer than {} bytes", self.max_body)));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The log's verifier key as it serves it (`<url>/vkey`), checked against `origin` when
    /// given.
    pub async fn vkey(&self) -> Result<VerifierKey, RemoteLogError> {
        let text = self.get("vkey").await?;
        String::from_utf8_lossy(&text)
            .trim()
            .parse()
            .map_err(|e| RemoteLogError::Invalid(format!("{}/vkey: {e}", self.url)))
    }

    /// The latest checkpoint, opened with `vkey` (its name is the log's origin); with the
    /// note's text.
    pub async fn checkpoint(
        &self,
        vkey: &VerifierKey,
    ) -> Result<(Checkpoint, String), RemoteLogError> {
        let note = self.get("checkpoint").await?;
        let (checkpoint, _) = Checkpoint::open(&note, vkey.name(), vkey)
            .map_err(|e| RemoteLogError::Invalid(format!("{}/checkpoint: {e}", self.url)))?;
        Ok((checkpoint, String::from_utf8_lossy(&note).into_owned()))
    }

    /// Proves `old` and `new` checkpoints of one history: a consistency proof from the tiles
    /// (at the larger size) that verifies against both roots; [`RemoteLogError::Fork`] when
    /// none can.
    pub async fn consistent(
        &self,
        old: &Checkpoint,
        new: &Checkpoint,
    ) -> Result<(), RemoteLogError> {
        let (small, big) = if old.size() <= new.size() {
            (old, new)
        } else {
            (new, old)
        };
        if small.size() == big.size() {
            return if small.root() == big.root() {
                Ok(())
            } else {
                Err(RemoteLogError::Fork("two roots for one size".into()))
            };
        }
        // Which stored hashes the proof needs (the sizes alone decide), then their tiles.
        let wanted = Recording::default();
        let _ = prove_consistency(small.size(), big.size(), &wanted);
        let tiles = self.tiles(&wanted.indexes(), big.size()).await?;
        let proof = prove_consistency(small.size(), big.size(), &tiles)
            .map_err(|e| RemoteLogError::Invalid(e.to_string()))?;
        verify_consistency(&proof, small.size(), small.root(), big.size(), big.root())
            .map_err(|e| RemoteLogError::Fork(e.to_string()))
    }

    /// Entries `[from, to)` of the log whose checkpoint is `head` (`to <= head.size()`), each
    /// proved included under `head` from the log's tiles.
    pub async fn entries(
        &self,
        from: u64,
        to: u64,
        head: &Checkpoint,
    ) -> Result<Vec<Vec<u8>>, RemoteLogError> {
        let size = head.size();
        if from >= to || to > size {
            return Ok(Vec::new());
        }
        let wanted = Recording::default();
        for i in from..to {
            let _ = prove_inclusion(size, i, &wanted);
        }
        let tiles = self.tiles(&wanted.indexes(), size).await?;
        let mut out = Vec::with_capacity((to - from) as usize);
        let mut bundle_index = u64::MAX;
        let mut bundle = Vec::new();
        for i in from..to {
            let t = i / TILE_WIDTH;
            if t != bundle_index {
                let width = (size - t * TILE_WIDTH).min(TILE_WIDTH) as u16;
                let tile =
                    Tile::new(0, t, width).map_err(|e| RemoteLogError::Invalid(e.to_string()))?;
                let bytes = self.get(&TilePath::Entries(tile).to_string()).await?;
                bundle = decode_bundle(&tile, &bytes)
                    .map_err(|e| RemoteLogError::Invalid(e.to_string()))?
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect();
                bundle_index = t;
            }
            let entry = bundle
                .get((i % TILE_WIDTH) as usize)
                .cloned()
                .ok_or_else(|| {
                    RemoteLogError::Invalid(format!("entry {i} is not in its bundle"))
                })?;
            let proof = prove_inclusion(size, i, &tiles)
                .map_err(|e| RemoteLogError::Invalid(e.to_string()))?;
            verify_inclusion(&proof, size, i, leaf_hash(&entry), head.root()).map_err(|e| {
                RemoteLogError::Invalid(format!("entry {i} is not in the checkpoint's tree: {e}"))
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    /// The tiles (in a tree of `size`) holding stored hashes `indexes`, fetched.
    async fn tiles(&self, indexes: &[u64], size: u64) -> Result<TileSet, RemoteLogError> {
        let mut tiles = TileSet::new(size);
        for tile in tiles_holding(indexes, size) {
            let bytes = self.get(&TilePath::Hashes(tile).to_string()).await?;
            tiles
                .insert(tile, &bytes)
                .map_err(|e| RemoteLogError::Invalid(e.to_string()))?;
        }
        Ok(tiles)
    }
}

/// The tiles (at their width in a tree of `size`) holding stored hashes `indexes`.
fn tiles_holding(indexes: &[u64], size: u64) -> Vec<Tile> {
    let mut tiles = BTreeSet::new();
    for &i in indexes {
        let (level, n) = split_stored_hash_index(i);
        let tile_level = level / TILE_HEIGHT;
        let within = level % TILE_HEIGHT;
        let Some(first) = n.checked_mul(1 << within) else {
            continue;
        };
        let index = first / TILE_WIDTH;
        let count = size >> (tile_level * TILE_HEIGHT).min(63);
        let width = count.saturating_sub(index * TILE_WIDTH).min(TILE_WIDTH);
        if let (Ok(level), Ok(width)) = (u8::try_from(tile_level), u16::try_from(width)) {
            if let Ok(tile) = Tile::new(level, index, width) {
                tiles.insert(tile);
            }
        }
    }
    tiles.into_iter().collect()
}

/// A hash reader that only notes which stored hashes are asked for.
#[derive(Default)]
struct Recording(std::sync::Mutex<Vec<u64>>);

impl Recording {
    fn indexes(&self) -> Vec<u64> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl HashReader for Recording {
    type Error = std::convert::Infallible;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Self::Error> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(indexes);
        }
        Ok(vec![Hash::from_bytes([0; 32]); indexes.len()])
    }
}
