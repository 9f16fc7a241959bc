//! Builders: the independent parties whose signatures count (DESIGN §2). A builder has a name
//! and one or more public keys; all keys of one builder are one vote.

use crate::protocol::guix_key::GuixPublicKey;
use crate::protocol::nix_key::NixPublicKey;

/// A builder and its public keys.
#[derive(Clone, Debug)]
pub struct Builder {
    /// The builder's name, as decisions and attestations record it.
    pub name: String,
    /// Its keys, in its cache's flavor.
    pub keys: Vec<BuilderKey>,
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
