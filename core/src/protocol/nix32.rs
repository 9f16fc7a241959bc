//! Nix's base32 ("nix32"): the encoding of store-path hash parts and of `sha256:` hashes in
//! narinfos.
//!
//! It is not RFC 4648 base32: the alphabet leaves out `e o u t` and the string is written from
//! the last 5-bit group down, so the first character carries the *highest* bits. SHA-256 of
//! `abc` encodes as:
//!
//! ```text
//! ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad   (hex)
//! 1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s               (nix32)
//! ```
//!
//! The bit-twiddling lives in `nix_derivation::nixbase32` (well tested, panic-free); this
//! module gives it quorate's error type, with messages that name the offending character.

use nix_derivation::nixbase32;
use thiserror::Error;

/// The 32 characters of the nix32 alphabet, in digit order.
pub const ALPHABET: &str = "0123456789abcdfghijklmnpqrsvwxyz";

/// Why a string is not nix32.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Nix32Error {
    /// The length does not correspond to a whole number of bytes.
    #[error("{len} nix32 characters do not encode a whole number of bytes")]
    InvalidLength {
        /// Length of the input in characters.
        len: usize,
    },
    /// A character outside the alphabet (nix32 is lowercase and has no `e`, `o`, `u`, `t`).
    #[error("{character:?} at offset {offset} is not a nix32 character")]
    InvalidCharacter {
        /// The offending character.
        character: char,
        /// Its byte offset in the input.
        offset: usize,
    },
    /// The unused high bits of the first character are set, so no byte string encodes to it.
    #[error("nix32 string has nonzero padding bits, so it is not the encoding of any bytes")]
    NonZeroPadding,
    /// Rejected by the decoder for a reason this version does not know by name.
    #[error("not valid nix32: {reason}")]
    Rejected {
        /// The decoder's own message.
        reason: String,
    },
}

/// Whether `c` belongs to the nix32 alphabet.
pub fn is_nix32_char(c: char) -> bool {
    ALPHABET.contains(c)
}

/// Encodes bytes as nix32 (last 5-bit group first, as Nix prints it).
pub fn encode(bytes: &[u8]) -> String {
    nixbase32::encode(bytes)
}

/// Decodes nix32. Rejects any input that is not the canonical encoding of some bytes; never
/// panics, whatever the input.
pub fn decode(s: &str) -> Result<Vec<u8>, Nix32Error> {
    // Checked here first so the error names a character, not a byte of a UTF-8 sequence.
    if let Some((offset, character)) = s.char_indices().find(|&(_, c)| !is_nix32_char(c)) {
        return Err(Nix32Error::InvalidCharacter { character, offset });
    }
    nixbase32::decode(s.as_bytes()).map_err(|error| match error {
        nixbase32::Error::InvalidLength(len) => Nix32Error::InvalidLength { len },
        nixbase32::Error::NonZeroPadding => Nix32Error::NonZeroPadding,
        other => Nix32Error::Rejected {
            reason: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn sha256_of_abc_encodes_as_nix_prints_it() {
        let digest = Sha256::digest(b"abc");
        assert_eq!(
            encode(&digest),
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        );
    }

    #[test]
    fn decode_inverts_encode_for_every_length_up_to_100() {
        for len in 0..100usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            assert_eq!(decode(&encode(&bytes)), Ok(bytes));
        }
    }

    #[test]
    fn a_store_path_hash_part_decodes_to_twenty_bytes() {
        let bytes = decode("syd87l2rxw8cbsxmxl853h0r6pdwhwjr").expect("valid hash part");
        assert_eq!(bytes.len(), 20);
        assert_eq!(encode(&bytes), "syd87l2rxw8cbsxmxl853h0r6pdwhwjr");
    }

    #[test]
    fn characters_outside_the_alphabet_are_named_in_the_error() {
        for (input, character, offset) in [
            ("e0", 'e', 0),
            ("0o", 'o', 1),
            ("0U", 'U', 1),
            ("0t", 't', 1),
            ("00é", 'é', 2),
            ("0-", '-', 1),
        ] {
            assert_eq!(
                decode(input),
                Err(Nix32Error::InvalidCharacter { character, offset }),
                "{input:?}"
            );
        }
    }

    #[test]
    fn lengths_that_cannot_hold_whole_bytes_are_rejected() {
        assert_eq!(decode("0"), Err(Nix32Error::InvalidLength { len: 1 }));
        assert_eq!(decode("000"), Err(Nix32Error::InvalidLength { len: 3 }));
    }

    #[test]
    fn nonzero_padding_bits_are_rejected() {
        // Two characters carry 10 bits for one byte; the top two must be zero.
        assert_eq!(decode("z0"), Err(Nix32Error::NonZeroPadding));
        assert_eq!(decode("80"), Err(Nix32Error::NonZeroPadding));
        assert_eq!(decode("70"), Ok(vec![0xe0]));
    }

    #[test]
    fn empty_input_decodes_to_no_bytes() {
        assert_eq!(decode(""), Ok(Vec::new()));
        assert_eq!(encode(&[]), "");
    }

    #[test]
    fn decode_never_panics_on_arbitrary_lengths_and_characters() {
        let pool: Vec<char> = ALPHABET
            .chars()
            .chain([
                'e', 'o', 'u', 't', 'A', 'Z', '-', ':', ' ', '\0', '\n', 'é', '€', '𝄞',
            ])
            .collect();
        // A small deterministic generator: no dependency, same inputs every run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000usize {
            let len = round % 120;
            let only_alphabet = round % 3 == 0;
            let input: String = (0..len)
                .map(|_| {
                    let n = next() as usize;
                    if only_alphabet {
                        pool[n % 32]
                    } else {
                        pool[n % pool.len()]
                    }
                })
                .collect();
            if let Ok(bytes) = decode(&input) {
                assert_eq!(
                    encode(&bytes),
                    input,
                    "decode accepted a non-canonical form"
                );
            }
        }
    }
}
