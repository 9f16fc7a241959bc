//! Attestations: one observed, signed claim about a store path's content.
//!
//! These types are shared by the quorum rule (pure), the database and the HTTP layer. They are
//! flavor-neutral: the Nix and Guix front ends normalise their narinfos into [`Content`].

use serde::{Deserialize, Serialize};

/// The content a builder vouches for: what must be equal for two claims to agree.
///
/// Equality of this struct is the agreement rule of DESIGN §3 (StorePath, NarHash, NarSize,
/// References).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Content {
    /// Full store path, e.g. `/nix/store/<hash>-<name>`.
    pub store_path: String,
    /// NAR hash, always normalised to `sha256:<nix32>` so hex/SRI spellings compare equal.
    pub nar_hash: String,
    /// Size of the uncompressed NAR in bytes.
    pub nar_size: u64,
    /// Reference basenames (`<hash>-<name>`). Nix: sorted and deduplicated (set semantics);
    /// Guix: in the order the narinfo lists them (Guix compares the list).
    pub references: Vec<String>,
}

/// Whether an observed signature verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigStatus {
    /// Verified under a configured builder key.
    Valid,
    /// Names a configured key but does not verify (tampering or corruption: evidence).
    Invalid,
    /// Signed by a key no configured builder holds; kept as evidence, never counted.
    UnknownKey,
}

impl SigStatus {
    /// The spelling stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            SigStatus::Valid => "valid",
            SigStatus::Invalid => "invalid",
            SigStatus::UnknownKey => "unknown_key",
        }
    }

    /// Inverse of [`SigStatus::as_str`].
    pub fn parse(s: &str) -> Option<SigStatus> {
        match s {
            "valid" => Some(SigStatus::Valid),
            "invalid" => Some(SigStatus::Invalid),
            "unknown_key" => Some(SigStatus::UnknownKey),
            _ => None,
        }
    }
}

/// One observed claim: key K signed that store path P has content X, seen through upstream U.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The served cache (config `[[cache]] name`) this observation belongs to.
    pub cache: String,
    /// The store path's hash part (the 32 nix32 characters), the lookup key of narinfo routes.
    pub hash_part: String,
    /// What was claimed.
    pub content: Content,
    /// `Deriver:` as given (basename), informational.
    pub deriver: Option<String>,
    /// `CA:` as given, informational (Nix content-addressed paths).
    pub ca: Option<String>,
    /// Nix: the key name before `:`. Guix: the hex of the public key's `q`.
    pub key_name: String,
    /// The configured builder holding that key; `None` for unknown keys.
    pub builder: Option<String>,
    /// Base URL of the upstream the claim came through.
    pub upstream: String,
    /// The signature exactly as it appeared (Nix `name:base64`, Guix the whole field value).
    pub signature: String,
    /// Whether it verified.
    pub status: SigStatus,
    /// When it was observed, Unix milliseconds.
    pub seen_at: i64,
}

/// Where an upstream says the NAR for some content can be downloaded. Any upstream may serve
/// the bytes (they are verified), so sources are kept whether or not its signatures counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NarSource {
    /// Base URL of the upstream.
    pub upstream: String,
    /// `sha256:<nix32>` of the uncompressed NAR this source claims to deliver.
    pub nar_hash: String,
    /// URL of the (possibly compressed) NAR, relative to the upstream base or absolute.
    pub url: String,
    /// Compression as named in the narinfo (`xz`, `zstd`, `none`, ...).
    pub compression: String,
    /// Compressed size, when the upstream said.
    pub file_size: Option<u64>,
}
