//! The verdict on one signature, in one shape for both flavors.
//!
//! A Nix `Sig:` names its key (`cache.nixos.org-1:<base64>`); a Guix `Signature:` embeds the
//! public key itself. Either way quorate records *which key the signature claims* (the Nix key
//! name, or the hex of the Guix key's `q`) and whether it held, so a forgery is evidence
//! against a key rather than noise.

use serde::{Deserialize, Serialize};

/// Whether an observed signature verified: what an attestation records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigStatus {
    /// Verified under a configured builder key.
    Valid,
    /// Names a configured key but does not verify, or cannot be read at all (tampering or
    /// corruption: evidence).
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

/// Why a signature claiming a configured key is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    /// The signature covers other bytes (Guix: the digest in `(data ...)` is not the SHA-256
    /// of the signed part).
    HashMismatch,
    /// The signature value does not verify, or is not a signature at all.
    BadSignature,
}

/// The outcome of checking one signature against the configured keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigCheck {
    /// A configured key verifies it.
    Valid {
        /// The key's identity: Nix key name, or hex of the Guix key's `q`.
        key_name: String,
    },
    /// Claims a configured key but does not hold.
    Invalid {
        /// The claimed key's identity.
        key_name: String,
        /// Which check failed.
        reason: InvalidReason,
    },
    /// Claims a key no configured builder holds: skipped (as Nix does), kept as evidence.
    UnknownKey {
        /// The claimed key's identity.
        key_name: String,
    },
    /// Cannot be read, so it cannot be attributed to any key.
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
}

impl SigCheck {
    /// The claimed key's identity; empty for a malformed signature, which names none.
    pub fn key_name(&self) -> &str {
        match self {
            SigCheck::Valid { key_name }
            | SigCheck::Invalid { key_name, .. }
            | SigCheck::UnknownKey { key_name } => key_name,
            SigCheck::Malformed { .. } => "",
        }
    }

    /// How an attestation records this outcome. An unreadable signature counts as invalid:
    /// it is evidence of tampering or corruption.
    pub fn status(&self) -> SigStatus {
        match self {
            SigCheck::Valid { .. } => SigStatus::Valid,
            SigCheck::Invalid { .. } | SigCheck::Malformed { .. } => SigStatus::Invalid,
            SigCheck::UnknownKey { .. } => SigStatus::UnknownKey,
        }
    }

    /// Whether the signature verified.
    pub fn is_valid(&self) -> bool {
        matches!(self, SigCheck::Valid { .. })
    }
}
