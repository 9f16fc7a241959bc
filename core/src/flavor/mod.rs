//! Flavor front ends: everything that differs between a Nix and a Guix cache, behind one
//! trait, one file per flavor ([`nix`], [`guix`]).
//!
//! A front end knows its cache's builders and quorate's own signing key for it, and does
//! five pure things:
//! - [`FrontEnd::observe`]: an upstream narinfo → attestations (one per signature, valid or
//!   not) and where the NAR is;
//! - [`FrontEnd::read_pushed`]: a narinfo a builder pushed (DESIGN §13) → its attestations;
//! - [`FrontEnd::still_trusted`]: whether an attestation recorded earlier still counts under
//!   today's keys and revocations;
//! - [`FrontEnd::revoked`]: whether an attestation's key was revoked before it was first
//!   recorded (it is kept as evidence but does not vote);
//! - [`FrontEnd::render`]: an agreed content → quorate's own signed narinfo;
//! - [`FrontEnd::nar_request`]: which NAR a client's `nar/...` URL names.
//!
//! The service holds one `Box<dyn FrontEnd>` per cache and never matches on the flavor.

pub mod guix;
pub mod nix;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::attestation::{Agreed, Attestation, Content, Observation, Pushed, SigStatus};
use crate::builder::{builder_of, Builder};
use crate::protocol::guix_key::{GuixKeyError, GuixSecretKey};
use crate::protocol::guix_narinfo::GuixNarInfoError;
use crate::protocol::nar_hash::{NarHash, NarKey};
use crate::protocol::narinfo::NarInfoError;
use crate::protocol::nix_key::{NixKeyError, NixSecretKey};
use crate::protocol::signature::SigCheck;
use crate::protocol::store_path::{HashPart, StorePathError};

/// Which client protocol a cache speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// Nix binary cache protocol (narinfo with `Sig:` lines, ed25519).
    Nix,
    /// Guix substitute protocol (guix-publish narinfo, ECDSA over edwards25519).
    Guix,
}

impl Flavor {
    /// The default store directory for this flavor.
    pub fn default_store_dir(self) -> &'static str {
        match self {
            Flavor::Nix => "/nix/store",
            Flavor::Guix => "/gnu/store",
        }
    }

    /// `nix` or `guix`.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Nix => "nix",
            Flavor::Guix => "guix",
        }
    }
}

/// Why a front end could not read a narinfo or render one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrontEndError {
    /// A Nix narinfo that does not parse.
    #[error(transparent)]
    NixNarInfo(#[from] NarInfoError),
    /// A Guix narinfo that does not parse or cannot be built.
    #[error(transparent)]
    GuixNarInfo(#[from] GuixNarInfoError),
    /// A store path outside the cache's store directory, or malformed.
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    /// The upstream answered `<hash>.narinfo` with another path's narinfo.
    #[error("asked for {asked}, got a narinfo for {got}")]
    WrongPath {
        /// The hash part requested.
        asked: HashPart,
        /// The store path the narinfo describes.
        got: String,
    },
}

/// Why a client's `nar/...` URL names no NAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NarRouteError {
    /// Not a URL this flavor serves (404).
    #[error("{0}")]
    NotFound(&'static str),
    /// The right shape, but a malformed name (400).
    #[error("{0}")]
    Malformed(&'static str),
}

/// How quorate sends a NAR's bytes to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NarEncoding {
    /// The NAR bytes as they are (`Compression: none`).
    Identity,
    /// zstd: the stored compressed copy when there is one, else compressed on the fly
    /// (Nix's `nar/<key>.nar.zst`, Guix's `nar/zstd/<basename>`).
    Zstd,
}

/// The zstd copy of a verified NAR that quorate stored beside it (`nar_compression =
/// "zstd"`): what a narinfo advertising it must say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressedNar {
    /// SHA-256 of the compressed bytes (`FileHash:`), in the same `sha256:<nix32>` form as a
    /// NarHash.
    pub file_hash: NarHash,
    /// Length of the compressed file in bytes (`FileSize:`).
    pub file_size: u64,
}

/// The NAR a client's URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarRequest {
    /// Named by its hash (Nix: `nar/<key>.nar`, `nar/<key>.nar.zst`).
    ByKey {
        /// The NAR's key.
        key: NarKey,
        /// How to send it.
        encoding: NarEncoding,
    },
    /// Named by its store path (Guix: `nar/<basename>`, `nar/zstd/<basename>`): served only
    /// while the path's decision is positive and names exactly this basename.
    ByStorePath {
        /// The store path's hash part, to look its decision up by.
        hash_part: HashPart,
        /// `<hash>-<name>` as requested.
        basename: String,
        /// How to send it.
        encoding: NarEncoding,
    },
}

/// What differs between flavors, for one cache. Pure: no I/O, no clock.
pub trait FrontEnd: Send + Sync {
    /// Turns one upstream narinfo, the answer to `<hash_part>.narinfo`, into attestations (one
    /// per signature seen, valid or not) and the upstream's NAR source.
    fn observe(
        &self,
        upstream: &str,
        hash_part: &HashPart,
        text: &str,
        seen_at: i64,
    ) -> Result<Observation, FrontEndError>;

    /// Reads one narinfo a builder pushed (`POST /api/v1/caches/<cache>/attestations`): the
    /// path it names and its attestations (one per signature, valid or not), each recorded as
    /// seen through `pusher` (e.g. `push:192.0.2.7`). Its `URL`/`Compression` fields are
    /// ignored: a pusher hosts no NAR. Whether it is accepted is `push::judge`'s.
    fn read_pushed(&self, pusher: &str, text: &str, seen_at: i64) -> Result<Pushed, FrontEndError>;

    /// Whether a recorded attestation still counts: it was valid, its key belongs to the
    /// same builder now and was not revoked before the attestation was first recorded, and
    /// (where keys are named) its signature verifies under the key configured under that
    /// name today.
    fn still_trusted(&self, attestation: &Attestation) -> bool;

    /// Whether `attestation`'s key was revoked (`revoked = [{ key, since }]` of its builder)
    /// at or before the time it was first recorded: it does not vote.
    fn revoked(&self, attestation: &Attestation) -> bool;

    /// quorate's own narinfo for an agreed content, signed with quorate's key; `zstd`, when
    /// the stored compressed copy exists, is advertised (with its FileHash/FileSize).
    fn render(
        &self,
        agreed: &Agreed,
        zstd: Option<&CompressedNar>,
    ) -> Result<String, FrontEndError>;

    /// The public key clients trust, in the flavor's text form.
    fn public_key_text(&self) -> String;

    /// Which NAR `nar/[<compression>/]<file>` names.
    fn nar_request(
        &self,
        compression: Option<&str>,
        file: &str,
    ) -> Result<NarRequest, NarRouteError>;
}

/// The front end of a cache named `cache`, whose store is `store_dir`, counting `builders`
/// and signing with `signer` (whose flavor decides the front end's).
pub fn front_end(
    cache: &str,
    store_dir: &str,
    builders: &[Builder],
    signer: Signer,
) -> Box<dyn FrontEnd> {
    let scope = Scope {
        cache: cache.to_owned(),
        store_dir: store_dir.to_owned(),
        builders: builders.to_vec(),
    };
    match signer {
        Signer::Nix(key) => Box::new(nix::NixFrontEnd::new(scope, key)),
        Signer::Guix(key) => Box::new(guix::GuixFrontEnd::new(scope, key)),
    }
}

/// quorate's own signing key for one cache.
pub enum Signer {
    /// Nix ed25519 key.
    Nix(NixSecretKey),
    /// Guix ECDSA-over-edwards25519 key.
    Guix(GuixSecretKey),
}

/// A signing key that could not be parsed or made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignerError {
    /// Not a Nix secret key, or no randomness for a new one.
    #[error("not a Nix secret key: {0}")]
    Nix(#[from] NixKeyError),
    /// Not a Guix secret key, or no randomness for a new one.
    #[error("not a Guix secret key: {0}")]
    Guix(#[from] GuixKeyError),
}

impl Signer {
    /// A fresh key. `name` is the Nix key name; Guix keys carry none.
    pub fn generate(flavor: Flavor, name: &str) -> Result<Signer, SignerError> {
        Ok(match flavor {
            Flavor::Nix => Signer::Nix(NixSecretKey::generate(name)?),
            Flavor::Guix => Signer::Guix(GuixSecretKey::generate()?),
        })
    }

    /// A key file's text, in the format `nix-store --generate-binary-cache-key` or
    /// `guix archive --generate-key` writes.
    pub fn parse(flavor: Flavor, text: &str) -> Result<Signer, SignerError> {
        Ok(match flavor {
            Flavor::Nix => Signer::Nix(text.trim().parse()?),
            Flavor::Guix => Signer::Guix(GuixSecretKey::parse(text)?),
        })
    }

    /// The secret key file's text.
    pub fn secret_text(&self) -> String {
        match self {
            Signer::Nix(k) => k.to_string(),
            Signer::Guix(k) => k.to_advanced(),
        }
    }

    /// The public key file's text (what clients trust).
    pub fn public_text(&self) -> String {
        match self {
            Signer::Nix(k) => k.public().to_string(),
            Signer::Guix(k) => k.public().to_advanced(),
        }
    }
}

/// What every front end knows about its cache.
struct Scope {
    /// The cache's name, recorded with every attestation.
    cache: String,
    /// Where its store paths live, e.g. `/nix/store`.
    store_dir: String,
    /// Whose signatures count.
    builders: Vec<Builder>,
}

/// One signature's observation, shared by both flavors.
struct Seen<'a> {
    hash_part: &'a HashPart,
    content: &'a Content,
    deriver: Option<String>,
    ca: Option<String>,
    upstream: &'a str,
    seen_at: i64,
    /// The text a signature covers when the content does not determine it (Guix).
    signed_body: Option<&'a str>,
}

impl Scope {
    /// The attestation a signature makes, attributed to the builder holding its key (unknown
    /// keys belong to nobody).
    fn attestation(&self, seen: &Seen<'_>, check: &SigCheck, signature: &str) -> Attestation {
        let status = check.status();
        let builder = match status {
            SigStatus::UnknownKey => None,
            SigStatus::Valid | SigStatus::Invalid => {
                builder_of(&self.builders, check.key_name()).map(|b| b.name.clone())
            }
        };
        Attestation {
            cache: self.cache.clone(),
            hash_part: seen.hash_part.clone(),
            content: seen.content.clone(),
            deriver: seen.deriver.clone(),
            ca: seen.ca.clone(),
            key_name: check.key_name().to_owned(),
            builder,
            upstream: seen.upstream.to_owned(),
            signature: signature.to_owned(),
            status,
            seen_at: seen.seen_at,
            signed_body: seen.signed_body.map(str::to_owned),
            first_seen: seen.seen_at,
        }
    }

    /// The flavor-independent part of [`FrontEnd::still_trusted`]: a valid observation whose
    /// key belongs to the same builder today and was not revoked when it was first recorded.
    fn same_builder_still(&self, a: &Attestation) -> bool {
        a.status == SigStatus::Valid
            && builder_of(&self.builders, &a.key_name)
                .is_some_and(|b| Some(&b.name) == a.builder.as_ref())
            && !self.revoked(a)
    }

    /// [`FrontEnd::revoked`], for both flavors.
    fn revoked(&self, a: &Attestation) -> bool {
        builder_of(&self.builders, &a.key_name)
            .is_some_and(|b| b.revoked_at(&a.key_name, a.first_seen))
    }
}
