//! The identity of a NAR: its SHA-256, in the two spellings quorate uses.
//!
//! ```text
//! NarHash  sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0   narinfos, fingerprints,
//!                                                                         the database, JSON
//! NarKey   1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0          NAR URLs (nar/<key>.nar)
//!                                                                         and NAR store file names
//! ```
//!
//! Each type has exactly one canonical string form, used by `Display`, `FromStr` and serde
//! alike, so a hash never travels as a bare `String` that someone has to re-parse. They
//! convert into each other without loss ([`NarHash::key`], [`NarKey::hash`]).
//!
//! Reading is lenient where Nix is: a narinfo may spell its NarHash in nix32, hex, base64 or
//! SRI (`sha256-<base64>`); all of them parse to the same [`NarHash`], which always prints as
//! `sha256:<nix32>` (the form Nix signs). A [`NarKey`] is strict: exactly the 52 nix32
//! characters of some SHA-256, because it becomes a file name.

use std::fmt;
use std::str::FromStr;

use nix_derivation::NixHash;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::nix32;

/// Length of a SHA-256 in nix32: ceil(256 / 5).
pub const NAR_KEY_LEN: usize = 52;

/// Why a string is not a NarHash or a NAR key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NarHashError {
    /// Not a sha256 hash in one of Nix's spellings.
    #[error("NarHash {value:?} is not sha256:<nix32|hex|base64> or sha256-<base64>: {reason}")]
    InvalidNarHash {
        /// The hash as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Not the 52 nix32 characters of a SHA-256.
    #[error("invalid NAR key {0:?}: expected the 52 nix32 characters of a SHA-256")]
    InvalidNarKey(String),
}

/// SHA-256 of an uncompressed NAR: the content identity quorate compares and verifies.
/// Canonical form `sha256:<nix32>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NarHash([u8; 32]);

impl NarHash {
    /// Parses `sha256:<nix32>`, `sha256:<hex>`, `sha256:<base64>` or SRI `sha256-<base64>`.
    pub fn parse(s: &str) -> Result<NarHash, NarHashError> {
        let invalid = |reason: String| NarHashError::InvalidNarHash {
            value: s.to_owned(),
            reason,
        };
        match NixHash::parse(s) {
            Ok(NixHash::Sha256(digest)) => Ok(NarHash(digest)),
            Ok(other) => Err(invalid(format!(
                "it is {}, and NarHash must be sha256",
                other.algorithm()
            ))),
            Err(error) => Err(invalid(error.to_string())),
        }
    }

    /// Wraps a digest computed over NAR bytes.
    pub fn from_digest(digest: [u8; 32]) -> Self {
        NarHash(digest)
    }

    /// The 32 digest bytes.
    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    /// The same hash as a NAR key (nix32, no prefix).
    pub fn key(&self) -> NarKey {
        NarKey(*self)
    }
}

impl fmt::Display for NarHash {
    /// `sha256:<nix32>`, the form fingerprints, the database and the API use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", nix32::encode(&self.0))
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NarHash({self})")
    }
}

impl FromStr for NarHash {
    type Err = NarHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NarHash::parse(s)
    }
}

/// A NAR's SHA-256 as 52 nix32 characters: how NAR URLs and store files are named.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NarKey(NarHash);

impl NarKey {
    /// The NarHash this key names.
    pub fn hash(&self) -> NarHash {
        self.0
    }

    /// The 32 digest bytes.
    pub fn digest(&self) -> &[u8; 32] {
        self.0.digest()
    }
}

impl fmt::Display for NarKey {
    /// 52 nix32 characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&nix32::encode(self.0.digest()))
    }
}

impl fmt::Debug for NarKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NarKey({self})")
    }
}

impl FromStr for NarKey {
    type Err = NarHashError;

    /// Exactly 52 nix32 characters that decode to 32 bytes (so the first is `0` or `1`).
    /// Keys become file names: this is also what keeps `/` and `..` out of the store.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || NarHashError::InvalidNarKey(s.to_owned());
        if s.len() != NAR_KEY_LEN {
            return Err(invalid());
        }
        let digest: [u8; 32] = nix32::decode(s)
            .map_err(|_| invalid())?
            .try_into()
            .map_err(|_| invalid())?;
        Ok(NarKey(NarHash(digest)))
    }
}

impl From<NarHash> for NarKey {
    fn from(hash: NarHash) -> Self {
        hash.key()
    }
}

impl From<NarKey> for NarHash {
    fn from(key: NarKey) -> Self {
        key.hash()
    }
}

/// serde through the canonical string form, for both types.
macro_rules! serde_via_string {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_via_string!(NarHash);
serde_via_string!(NarKey);

#[cfg(test)]
mod tests {
    use super::*;

    const NIX32: &str = "1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0";

    #[test]
    fn every_spelling_of_one_hash_prints_as_sha256_nix32() {
        let canonical: NarHash = format!("sha256:{NIX32}").parse().unwrap();
        let hex = canonical
            .digest()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(canonical.digest());
        for spelling in [
            format!("sha256:{hex}"),
            format!("sha256:{b64}"),
            format!("sha256-{b64}"),
        ] {
            let parsed: NarHash = spelling.parse().unwrap();
            assert_eq!(parsed, canonical, "{spelling}");
            assert_eq!(parsed.to_string(), format!("sha256:{NIX32}"));
        }
    }

    #[test]
    fn a_hash_and_its_key_convert_without_loss() {
        let hash: NarHash = format!("sha256:{NIX32}").parse().unwrap();
        let key = hash.key();
        assert_eq!(key.to_string(), NIX32);
        assert_eq!(key.to_string().parse::<NarKey>().unwrap().hash(), hash);
        assert_eq!(NarHash::from(key), hash);
    }

    #[test]
    fn keys_render_sha256_as_nix_does() {
        use sha2::{Digest, Sha256};
        let key = |digest: [u8; 32]| NarHash::from_digest(digest).key().to_string();
        // Vectors from core/tests/vectors/README.md.
        assert_eq!(
            key(Sha256::digest(b"abc").into()),
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        );
        let perl_hex = "60adfd293a4d81ad7cd7e47263cbb3fc846309ef91b154a08ba672b558f94ff3";
        let mut perl = [0u8; 32];
        for (i, byte) in perl.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&perl_hex[2 * i..2 * i + 2], 16).expect("hex");
        }
        assert_eq!(
            key(perl),
            "1wsgz5cbawm6ifh59ccixw4n717wng5n6wp4sxyav0ad78lzvbb0"
        );
        assert_eq!(key([0; 32]), "0".repeat(52));
        assert_eq!(key([0xff; 32]), format!("1{}", "z".repeat(51)));
    }

    #[test]
    fn keys_are_exactly_52_nix32_characters_of_a_sha256() {
        assert!(NIX32.parse::<NarKey>().is_ok());
        for bad in [
            "",
            &NIX32[1..],
            &format!("{NIX32}0"),
            "../../../../../../../../../../../../../../etc/passwd",
            // 52 characters, but the top group holds more than one bit.
            "2b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
            "1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsyse",
            &format!("sha256:{}", &NIX32[7..]),
            &format!("{}/", &NIX32[..51]),
            &format!("{}E", &NIX32[..51]),
            &NIX32.to_uppercase(),
            &format!("{}.", &NIX32[..51]),
            "0/../../../etc/passwd",
            "é",
        ] {
            assert!(bad.parse::<NarKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_uses_the_canonical_forms() {
        let hash: NarHash = format!("sha256:{NIX32}").parse().unwrap();
        let json = serde_json::to_string(&(hash, hash.key())).unwrap();
        assert_eq!(json, format!("[\"sha256:{NIX32}\",\"{NIX32}\"]"));
        let back: (NarHash, NarKey) = serde_json::from_str(&json).unwrap();
        assert_eq!(back, (hash, hash.key()));
        assert!(serde_json::from_str::<NarHash>("\"md5:abc\"").is_err());
    }

    #[test]
    fn non_sha256_hashes_are_refused_with_the_algorithm_named() {
        let err = "sha1:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
            .parse::<NarHash>()
            .unwrap_err();
        assert!(err.to_string().contains("sha1"), "{err}");
    }
}
