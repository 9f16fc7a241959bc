//! Nix binary-cache keys and `Sig:` signatures (Ed25519, RFC 8032).
//!
//! The textual forms are the ones `nix-store --generate-binary-cache-key` writes and
//! `trusted-public-keys` / narinfo `Sig:` lines carry, so keys move freely between quorate
//! and the Nix CLI:
//!
//! ```text
//! public key   cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=
//!              <name>:base64(32-byte Ed25519 public key)
//! secret key   cache.example.com-1:cCta2MEsRNuYCgWYyeRXLyfoFpKhQJKn8gLMeXWAb7vIpRKKo/3JoxJ24OYa3DxT2JVV38KjK/1ywHWuMe2JEw==
//!              <name>:base64(32-byte seed || 32-byte public key), libsodium's layout
//! signature    cache.nixos.org-1:TsTTb3WGTZKphvYdBHXwo6weVILmTytUjLB+vcX89fOjjRicCHmKA4RCPMVLkj6TMJ4GMX3HPVWRdD1hkeKZBQ==
//!              <key name>:base64(64-byte Ed25519 signature over the narinfo fingerprint)
//! ```
//!
//! What is signed is the narinfo fingerprint (see `narinfo::NixNarInfo::fingerprint`).
//! A signature is matched to a key by name first: a name no configured key has is
//! [`SigCheck::UnknownKey`] (skipped, as Nix does), never confused with a forged signature.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::signature::{InvalidReason, SigCheck};

/// Why a key could not be parsed or made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NixKeyError {
    /// No `:` between the name and the key material.
    #[error("key has no ':' between its name and its base64 key material")]
    MissingSeparator,
    /// The part before `:` is empty.
    #[error("key name is empty")]
    EmptyName,
    /// The name would not survive a round trip through `name:base64` or a narinfo line.
    #[error("key name {name:?} contains ':', whitespace or a control character")]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// The key material is not standard padded base64.
    #[error("key material of {name:?} is not valid base64")]
    InvalidBase64 {
        /// The key's name.
        name: String,
    },
    /// The decoded key material has the wrong size.
    #[error("{kind} key {name:?} is {got} bytes, expected {expected}")]
    WrongLength {
        /// `public` or `secret`.
        kind: &'static str,
        /// The key's name.
        name: String,
        /// Bytes required.
        expected: usize,
        /// Bytes found.
        got: usize,
    },
    /// The 32 bytes are not an Ed25519 curve point.
    #[error("public key {name:?} is not a valid Ed25519 point")]
    InvalidPublicKey {
        /// The key's name.
        name: String,
    },
    /// The secret key's second half does not belong to its first: corrupt or spliced.
    #[error("secret key {name:?} is corrupt: its second half is not the public key of its seed")]
    MismatchedPublicHalf {
        /// The key's name.
        name: String,
    },
    /// The operating system's random source failed.
    #[error("could not get randomness from the operating system for a new key: {reason}")]
    Randomness {
        /// The OS error, as text.
        reason: String,
    },
}

/// A named Ed25519 public key, as in Nix's `trusted-public-keys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NixPublicKey {
    /// The name signatures refer to (`cache.nixos.org-1`).
    pub name: String,
    /// The verifying key; private so it can only be a valid curve point.
    key: VerifyingKey,
}

impl NixPublicKey {
    /// Verifies a raw 64-byte signature over `message` (strictly, as libsodium does in Nix).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }

    /// The 32 raw public key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

impl FromStr for NixPublicKey {
    type Err = NixKeyError;

    /// Parses `name:base64(32)`; surrounding whitespace (a file's newline) is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, bytes) = split_key(s)?;
        let bytes: [u8; 32] =
            bytes
                .try_into()
                .map_err(|bytes: Vec<u8>| NixKeyError::WrongLength {
                    kind: "public",
                    name: name.to_owned(),
                    expected: 32,
                    got: bytes.len(),
                })?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| NixKeyError::InvalidPublicKey {
            name: name.to_owned(),
        })?;
        Ok(NixPublicKey {
            name: name.to_owned(),
            key,
        })
    }
}

impl fmt::Display for NixPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl Serialize for NixPublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NixPublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A named Ed25519 signing key, in the format `nix-store --generate-binary-cache-key` writes.
///
/// `Debug` shows only the name; `Display` writes the secret (it is the key file's format).
#[derive(Clone)]
pub struct NixSecretKey {
    /// The name its signatures carry.
    name: String,
    /// The key itself (zeroized on drop by ed25519-dalek).
    key: SigningKey,
}

impl NixSecretKey {
    /// Makes a new key from the operating system's randomness.
    pub fn generate(name: &str) -> Result<Self, NixKeyError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|error| NixKeyError::Randomness {
            reason: error.to_string(),
        })?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(NixSecretKey {
            name: name.to_owned(),
            key,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key, under the same name.
    pub fn public(&self) -> NixPublicKey {
        NixPublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs a narinfo fingerprint; returns the `Sig:` value `name:base64(64)`.
    /// Ed25519 is deterministic: the same key and fingerprint always give the same Sig.
    pub fn sign(&self, fingerprint: &str) -> String {
        let signature = self.key.sign(fingerprint.as_bytes());
        format!("{}:{}", self.name, BASE64.encode(signature.to_bytes()))
    }
}

impl FromStr for NixSecretKey {
    type Err = NixKeyError;

    /// Parses `name:base64(seed || public)`; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, bytes) = split_key(s)?;
        let bytes: [u8; 64] =
            bytes
                .try_into()
                .map_err(|bytes: Vec<u8>| NixKeyError::WrongLength {
                    kind: "secret",
                    name: name.to_owned(),
                    expected: 64,
                    got: bytes.len(),
                })?;
        // Checks that the second half is the seed's public key: a spliced or bit-rotted file
        // would otherwise sign with a key nobody trusts, and only the clients would notice.
        let key = SigningKey::from_keypair_bytes(&bytes).map_err(|_| {
            NixKeyError::MismatchedPublicHalf {
                name: name.to_owned(),
            }
        })?;
        Ok(NixSecretKey {
            name: name.to_owned(),
            key,
        })
    }
}

impl fmt::Display for NixSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.name,
            BASE64.encode(self.key.to_keypair_bytes())
        )
    }
}

impl fmt::Debug for NixSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NixSecretKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Checks a `Sig:` value (`name:base64(64)`) over `fingerprint` against `keys`.
///
/// The name is matched first: an unknown name is [`SigCheck::UnknownKey`] whatever its
/// payload. Several keys may share a name (rotation); any one verifying makes it valid.
pub fn check_sig(sig: &str, fingerprint: &str, keys: &[NixPublicKey]) -> SigCheck {
    let Some((key_name, payload)) = sig.split_once(':') else {
        return SigCheck::Malformed {
            reason: format!("signature {sig:?} has no ':' between key name and signature"),
        };
    };
    if key_name.is_empty() {
        return SigCheck::Malformed {
            reason: "signature has an empty key name".to_owned(),
        };
    }
    let key_name = key_name.to_owned();
    let mut candidates = keys.iter().filter(|key| key.name == key_name).peekable();
    if candidates.peek().is_none() {
        return SigCheck::UnknownKey { key_name };
    }
    let signature: Option<[u8; 64]> = BASE64
        .decode(payload)
        .ok()
        .and_then(|bytes| bytes.try_into().ok());
    match signature {
        Some(signature) if candidates.any(|key| key.verify(fingerprint.as_bytes(), &signature)) => {
            SigCheck::Valid { key_name }
        }
        _ => SigCheck::Invalid {
            key_name,
            reason: InvalidReason::BadSignature,
        },
    }
}

/// Splits `name:base64` (trimmed) into a checked name and the decoded bytes.
fn split_key(s: &str) -> Result<(&str, Vec<u8>), NixKeyError> {
    let (name, encoded) = s
        .trim()
        .split_once(':')
        .ok_or(NixKeyError::MissingSeparator)?;
    check_name(name)?;
    let bytes = BASE64
        .decode(encoded)
        .map_err(|_| NixKeyError::InvalidBase64 {
            name: name.to_owned(),
        })?;
    Ok((name, bytes))
}

fn check_name(name: &str) -> Result<(), NixKeyError> {
    if name.is_empty() {
        return Err(NixKeyError::EmptyName);
    }
    if name
        .chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(NixKeyError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::signature::SigStatus;

    const KEYS: &str = include_str!("../../tests/vectors/nix/keys.txt");
    const TEST_SECRET: &str =
        include_str!("../../tests/vectors/nix/cache.example.com-1.secret.TESTONLY");
    const SIGNED: &str =
        include_str!("../../tests/vectors/nix/signed-with-cache.example.com-1.txt");

    fn keys() -> Vec<NixPublicKey> {
        KEYS.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| line.parse().expect("keys.txt holds valid keys"))
            .collect()
    }

    /// (fingerprint, Sig) from signed-with-cache.example.com-1.txt.
    fn signed_vector() -> (&'static str, &'static str) {
        let field = |name: &str| {
            SIGNED
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .expect("field present")
        };
        (field("fingerprint: "), field("Sig: "))
    }

    #[test]
    fn public_keys_round_trip_through_their_text_form() {
        for line in KEYS.lines().filter(|line| !line.is_empty()) {
            let key: NixPublicKey = line.parse().expect("valid key");
            assert_eq!(key.to_string(), line);
        }
        assert_eq!(keys()[0].name, "cache.nixos.org-1");
    }

    #[test]
    fn the_test_secret_key_parses_and_its_public_half_is_in_keys_txt() {
        let secret: NixSecretKey = TEST_SECRET.parse().expect("valid secret key");
        assert_eq!(secret.name(), "cache.example.com-1");
        assert_eq!(secret.to_string(), TEST_SECRET.trim());
        assert!(keys().contains(&secret.public()));
    }

    #[test]
    fn signing_curls_fingerprint_with_the_test_key_gives_the_published_sig() {
        let secret: NixSecretKey = TEST_SECRET.parse().expect("valid secret key");
        let (fingerprint, sig) = signed_vector();
        assert_eq!(secret.sign(fingerprint), sig);
        assert_eq!(
            check_sig(sig, fingerprint, &keys()),
            SigCheck::Valid {
                key_name: "cache.example.com-1".into()
            }
        );
    }

    #[test]
    fn generated_keys_sign_what_their_public_key_verifies() {
        let secret = NixSecretKey::generate("quorate-test-1").expect("randomness available");
        let reparsed: NixSecretKey = secret.to_string().parse().expect("own output parses");
        assert_eq!(reparsed.public(), secret.public());
        let public: NixPublicKey = secret.public().to_string().parse().expect("parses");
        let sig = secret.sign("1;/nix/store/x;sha256:y;1;");
        assert!(check_sig(
            &sig,
            "1;/nix/store/x;sha256:y;1;",
            std::slice::from_ref(&public)
        )
        .is_valid());
        assert_eq!(
            check_sig(&sig, "1;/nix/store/x;sha256:y;2;", &[public]),
            SigCheck::Invalid {
                key_name: "quorate-test-1".into(),
                reason: InvalidReason::BadSignature,
            }
        );
        assert_ne!(
            NixSecretKey::generate("a").map(|k| k.public()),
            NixSecretKey::generate("a").map(|k| k.public())
        );
    }

    #[test]
    fn a_secret_key_whose_halves_do_not_match_is_rejected() {
        let secret: NixSecretKey = TEST_SECRET.parse().expect("valid secret key");
        let mut bytes = BASE64
            .decode(TEST_SECRET.trim().split_once(':').expect("has name").1)
            .expect("base64");
        bytes[40] ^= 1;
        let spliced = format!("{}:{}", secret.name(), BASE64.encode(&bytes));
        assert_eq!(
            spliced.parse::<NixSecretKey>().map(|k| k.public()),
            Err(NixKeyError::MismatchedPublicHalf {
                name: "cache.example.com-1".into()
            })
        );
        let message = spliced
            .parse::<NixSecretKey>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("second half is not the public key"),
            "{message}"
        );
    }

    #[test]
    fn malformed_keys_are_rejected_with_a_reason() {
        let public = "6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
        let secret = TEST_SECRET.trim().split_once(':').expect("has name").1;
        type Expectation = fn(&NixKeyError) -> bool;
        let cases: [(&str, Expectation); 9] = [
            ("no-separator", |e| *e == NixKeyError::MissingSeparator),
            (":AAAA", |e| *e == NixKeyError::EmptyName),
            ("a b:AAAA", |e| matches!(e, NixKeyError::InvalidName { .. })),
            ("n:!!!!", |e| matches!(e, NixKeyError::InvalidBase64 { .. })),
            ("n:a:b", |e| matches!(e, NixKeyError::InvalidBase64 { .. })),
            ("n:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY", |e| {
                matches!(e, NixKeyError::InvalidBase64 { .. })
            }),
            ("n:AAAA", |e| {
                matches!(
                    e,
                    NixKeyError::WrongLength {
                        got: 3,
                        expected: 32,
                        ..
                    }
                )
            }),
            ("n:", |e| {
                matches!(e, NixKeyError::WrongLength { got: 0, .. })
            }),
            // y = 2 has no x on the curve.
            ("n:AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", |e| {
                matches!(e, NixKeyError::InvalidPublicKey { .. })
            }),
        ];
        for (input, expected) in cases {
            let error = input.parse::<NixPublicKey>().expect_err(input);
            assert!(expected(&error), "{input:?} gave {error:?}");
        }
        // A secret key where a public key is expected, and the other way round.
        assert!(matches!(
            format!("n:{secret}").parse::<NixPublicKey>(),
            Err(NixKeyError::WrongLength { got: 64, .. })
        ));
        assert!(matches!(
            format!("n:{public}").parse::<NixSecretKey>(),
            Err(NixKeyError::WrongLength {
                got: 32,
                expected: 64,
                ..
            })
        ));
        assert_eq!(
            format!(":{secret}")
                .parse::<NixSecretKey>()
                .map(|k| k.public()),
            Err(NixKeyError::EmptyName)
        );
        assert!(matches!(
            NixSecretKey::generate("a:b").map(|k| k.public()),
            Err(NixKeyError::InvalidName { .. })
        ));
        assert_eq!(
            NixSecretKey::generate("").map(|k| k.public()),
            Err(NixKeyError::EmptyName)
        );
    }

    #[test]
    fn key_files_with_a_trailing_newline_parse() {
        let secret: NixSecretKey = format!("{}\n", TEST_SECRET.trim()).parse().expect("parses");
        assert_eq!(secret.name(), "cache.example.com-1");
        let public: NixPublicKey = format!("{}\n", secret.public()).parse().expect("parses");
        assert_eq!(public, secret.public());
    }

    #[test]
    fn secret_key_debug_output_does_not_leak_the_key() {
        let secret: NixSecretKey = TEST_SECRET.parse().expect("valid secret key");
        let debug = format!("{secret:?}");
        assert!(debug.contains("cache.example.com-1"));
        assert!(!debug.contains("cCta2M"), "{debug}");
    }

    #[test]
    fn a_signature_by_an_unconfigured_name_is_unknown_not_invalid() {
        let (fingerprint, sig) = signed_vector();
        let only_nixos: Vec<NixPublicKey> = keys()
            .into_iter()
            .filter(|k| k.name == "cache.nixos.org-1")
            .collect();
        assert_eq!(
            check_sig(sig, fingerprint, &only_nixos),
            SigCheck::UnknownKey {
                key_name: "cache.example.com-1".into()
            }
        );
        assert_eq!(
            check_sig("stranger:garbage", fingerprint, &only_nixos).status(),
            SigStatus::UnknownKey
        );
    }

    #[test]
    fn a_configured_names_garbage_payload_is_invalid() {
        let (fingerprint, _) = signed_vector();
        for payload in ["", "!!!", "AAAA", "AAAA=="] {
            assert_eq!(
                check_sig(
                    &format!("cache.example.com-1:{payload}"),
                    fingerprint,
                    &keys()
                ),
                SigCheck::Invalid {
                    key_name: "cache.example.com-1".into(),
                    reason: InvalidReason::BadSignature,
                },
                "{payload:?}"
            );
        }
    }

    #[test]
    fn a_sig_without_a_name_is_malformed() {
        for sig in ["", "no-colon", ":AAAA"] {
            let check = check_sig(sig, "1;x", &keys());
            assert!(matches!(check, SigCheck::Malformed { .. }), "{sig:?}");
            // Recorded as invalid evidence, under no key.
            assert_eq!(check.status(), SigStatus::Invalid);
            assert_eq!(check.key_name(), "");
        }
    }

    #[test]
    fn another_key_under_the_same_name_does_not_hide_the_right_one() {
        let (fingerprint, sig) = signed_vector();
        let real: NixPublicKey = keys()
            .into_iter()
            .find(|k| k.name == "cache.example.com-1")
            .expect("in keys.txt");
        let mut impostor = NixSecretKey::generate("cache.example.com-1")
            .expect("randomness")
            .public();
        impostor.name = real.name.clone();
        assert!(check_sig(sig, fingerprint, &[impostor.clone(), real]).is_valid());
        assert!(!check_sig(sig, fingerprint, &[impostor]).is_valid());
    }

    #[test]
    fn public_keys_serialize_as_their_text_form() {
        let key = keys().remove(0);
        let json = serde_json::to_string(&key).expect("serializes");
        assert_eq!(json, format!("\"{key}\""));
        let back: NixPublicKey = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, key);
        assert!(serde_json::from_str::<NixPublicKey>("\"bad\"").is_err());
    }
}
