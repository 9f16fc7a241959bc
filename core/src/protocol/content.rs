//! [`Content`]: what a narinfo claims about a store path, and what a builder's signature
//! vouches for. Two claims agree exactly when their `Content`s are equal (DESIGN §3).

use serde::{Deserialize, Serialize};

use super::nar_hash::NarHash;

/// The content a builder vouches for: what must be equal for two claims to agree.
///
/// Equality of this struct is the agreement rule of DESIGN §3 (StorePath, NarHash, NarSize,
/// References). Both flavors normalise their narinfos into it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Content {
    /// Full store path, e.g. `/nix/store/<hash>-<name>`.
    pub store_path: String,
    /// NAR hash; hex/base64/SRI spellings in a narinfo all become the same value.
    pub nar_hash: NarHash,
    /// Size of the uncompressed NAR in bytes.
    pub nar_size: u64,
    /// Reference basenames (`<hash>-<name>`). Nix: sorted and deduplicated (set semantics);
    /// Guix: in the order the narinfo lists them (Guix compares the list).
    pub references: Vec<String>,
}

impl Content {
    /// The store path's basename, `<hash>-<name>` (Guix NAR URLs are named by it).
    pub fn basename(&self) -> &str {
        self.store_path.rsplit('/').next().unwrap_or_default()
    }
}
