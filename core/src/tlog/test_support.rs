//! Helpers shared by the tlog tests: a deterministic PRNG and in-memory logs.

use super::merkle::{hashes_to_store, leaf_hash, Hash};

/// SplitMix64: small, deterministic, good enough to pick sizes and indexes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in 0..bound (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The stored hashes of a log holding `entries`, appended one by one as the service would.
pub fn stored_log(entries: impl IntoIterator<Item = Vec<u8>>) -> Vec<Hash> {
    let mut stored = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let new = hashes_to_store(index as u64, leaf_hash(&entry), &stored).expect("stored");
        stored.extend(new);
    }
    stored
}
