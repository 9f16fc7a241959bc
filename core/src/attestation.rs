//! Attestations: observed, signed claims about store paths, and what a decision rests on.
//!
//! These types are shared by the quorum rule, the database, the resolution and the HTTP
//! layer. They are flavor-neutral: the Nix and Guix front ends turn their
//! narinfos into [`Observation`]s, and render an [`Agreed`] content back into a narinfo.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use crate::protocol::content::Content;
use crate::protocol::nar_hash::NarHash;
pub use crate::protocol::signature::SigStatus;
use crate::protocol::store_path::HashPart;

/// One observed claim: key K signed that store path P has content X, seen through upstream U.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The served cache (config `[[cache]] name`) this observation belongs to.
    pub cache: String,
    /// The store path's hash part, the lookup key of narinfo routes.
    pub hash_part: HashPart,
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
    /// When it was observed, Unix milliseconds (read back from the database: the latest
    /// sighting).
    pub seen_at: i64,
    /// The exact text the signature covers when it is not rebuilt from the content: Guix
    /// signs its narinfo up to the `Signature` line (URLs included). `None` for Nix, whose
    /// fingerprint is a function of [`Attestation::content`].
    pub signed_body: Option<String>,
    /// When quorate first recorded this observation, Unix milliseconds (for one just
    /// observed, `seen_at`): what a key's revocation is compared with (DESIGN §13).
    pub first_seen: i64,
}

impl Attestation {
    /// The builder this attestation is a vote of: only valid signatures by configured
    /// builders vote.
    pub fn voter(&self) -> Option<&str> {
        match self.status {
            SigStatus::Valid => self.builder.as_deref(),
            _ => None,
        }
    }
}

/// Where an upstream says the NAR for some content can be downloaded. Any upstream may serve
/// the bytes (they are verified), so sources are kept whether or not its signatures counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NarSource {
    /// Base URL of the upstream.
    pub upstream: String,
    /// The uncompressed NAR this source claims to deliver.
    pub nar_hash: NarHash,
    /// URL of the (possibly compressed) NAR, relative to the upstream base or absolute.
    pub url: String,
    /// Compression as named in the narinfo (`xz`, `zstd`, `none`, ...).
    pub compression: String,
    /// Compressed size, when the upstream said.
    pub file_size: Option<u64>,
}

/// What a flavor front end extracts from one upstream narinfo.
#[derive(Debug, Default)]
pub struct Observation {
    /// One per signature seen (valid, invalid or unknown key).
    pub attestations: Vec<Attestation>,
    /// Where this upstream says the NAR is.
    pub source: Option<NarSource>,
}

/// What a flavor front end reads from one narinfo a builder pushed (DESIGN §13): the path it
/// names and one attestation per signature. A pusher hosts no NAR, so there is no source.
#[derive(Debug)]
pub struct Pushed {
    /// The full store path the narinfo describes.
    pub store_path: String,
    /// Its hash part, the key its attestations are recorded under.
    pub hash_part: HashPart,
    /// One per signature (valid, invalid or unknown key), seen through the pusher.
    pub attestations: Vec<Attestation>,
}

/// What a served store path rests on: enough to render its narinfo and find its NAR.
#[derive(Clone, Debug)]
pub struct Agreed {
    /// The agreed content.
    pub content: Content,
    /// Builders that agreed.
    pub agreeing: Vec<String>,
    /// `Deriver:` reported by an agreeing attestation.
    pub deriver: Option<String>,
    /// `CA:` reported by an agreeing attestation.
    pub ca: Option<String>,
    /// The valid agreeing upstream signatures (flavor-specific raw form), deduplicated.
    pub signatures: Vec<String>,
    /// Upstreams that advertise a NAR with the agreed hash, deduplicated.
    pub sources: Vec<NarSource>,
}

impl Agreed {
    /// The agreement on `content` by `agreeing` builders: its signatures and informational
    /// fields are taken from the valid attestations of exactly that content, and only the
    /// sources of its NarHash are kept.
    pub fn new(
        content: Content,
        agreeing: Vec<String>,
        attestations: &[Attestation],
        sources: impl IntoIterator<Item = NarSource>,
    ) -> Agreed {
        let backing: Vec<&Attestation> = attestations
            .iter()
            .filter(|a| a.status == SigStatus::Valid && a.content == content)
            .collect();
        let mut seen_sigs = BTreeSet::new();
        let signatures = backing
            .iter()
            .filter(|a| seen_sigs.insert(a.signature.as_str()))
            .map(|a| a.signature.clone())
            .collect();
        let mut kept: Vec<NarSource> = Vec::new();
        for s in sources {
            if s.nar_hash == content.nar_hash && !kept.contains(&s) {
                kept.push(s);
            }
        }
        Agreed {
            deriver: backing.iter().find_map(|a| a.deriver.clone()),
            ca: backing.iter().find_map(|a| a.ca.clone()),
            content,
            agreeing,
            signatures,
            sources: kept,
        }
    }
}
