//! Builders: the independent parties whose signatures count (DESIGN §2, §13). A builder has a
//! name, one or more public keys, a weight, and perhaps keys revoked from a time on; all keys
//! of one builder are one vote of that builder's weight.

use crate::protocol::guix_key::GuixPublicKey;
use crate::protocol::nix_key::NixPublicKey;

/// A builder and its public keys.
#[derive(Clone, Debug)]
pub struct Builder {
    /// The builder's name, as decisions and attestations record it.
    pub name: String,
    /// Its keys, in its cache's flavor.
    pub keys: Vec<BuilderKey>,
    /// What its vote weighs toward the quorum (at least 1; "one fully trusted builder or N
    /// partially trusted ones" is `weight = N` on the first).
    pub weight: u32,
    /// Keys of its own whose attestations stop counting from a time on (a stolen key).
    pub revoked: Vec<Revocation>,
}

/// One of a builder's keys, revoked from `since` on: attestations by it first recorded at or
/// after `since` do not count; earlier ones still do (the key stays among the builder's
/// keys, so they still verify).
#[derive(Clone, Debug)]
pub struct Revocation {
    /// The revoked key, one of the builder's `keys`.
    pub key: BuilderKey,
    /// From when, Unix milliseconds.
    pub since: i64,
}

impl Builder {
    /// A builder of weight 1 with no revoked key.
    pub fn new(name: impl Into<String>, keys: Vec<BuilderKey>) -> Builder {
        Builder {
            name: name.into(),
            keys,
            weight: 1,
            revoked: vec![],
        }
    }

    /// Whether an attestation by key `key_name`, first recorded at `first_seen` (Unix
    /// milliseconds), came after that key of this builder was revoked.
    pub fn revoked_at(&self, key_name: &str, first_seen: i64) -> bool {
        self.revoked
            .iter()
            .any(|r| first_seen >= r.since && r.key.key_name() == key_name)
    }
}

/// A builder public key in its flavor's format.
#[derive(Clone, Debug)]
pub enum BuilderKey {
    /// `name:base64(32)`.
    Nix(NixPublicKey),
    /// `(public-key (ecc (curve Ed25519) (q #..#)))`.
    Guix(GuixPublicKey),
}

impl BuilderKey {
    /// The identity recorded in attestations: Nix key name, or hex of Guix `q`.
    pub fn key_name(&self) -> String {
        match self {
            BuilderKey::Nix(k) => k.name.clone(),
            BuilderKey::Guix(k) => k.q_hex(),
        }
    }

    /// The Nix key, if it is one.
    pub fn as_nix(&self) -> Option<&NixPublicKey> {
        match self {
            BuilderKey::Nix(k) => Some(k),
            BuilderKey::Guix(_) => None,
        }
    }

    /// The Guix key, if it is one.
    pub fn as_guix(&self) -> Option<&GuixPublicKey> {
        match self {
            BuilderKey::Guix(k) => Some(k),
            BuilderKey::Nix(_) => None,
        }
    }

    /// The raw public key bytes (Ed25519 point; Guix: `q`). What identifies a key: the same
    /// bytes under two names are one signer.
    pub fn key_bytes(&self) -> [u8; 32] {
        match self {
            BuilderKey::Nix(k) => k.to_bytes(),
            BuilderKey::Guix(k) => *k.q(),
        }
    }

    /// The key in its usual text form (recorded as "keys seen").
    pub fn to_text(&self) -> String {
        match self {
            BuilderKey::Nix(k) => k.to_string(),
            BuilderKey::Guix(k) => k.to_advanced(),
        }
    }
}

/// The builder among `builders` holding the key identified by `key_name`, if any.
pub fn builder_of<'a>(builders: &'a [Builder], key_name: &str) -> Option<&'a Builder> {
    builders
        .iter()
        .find(|b| b.keys.iter().any(|k| k.key_name() == key_name))
}
