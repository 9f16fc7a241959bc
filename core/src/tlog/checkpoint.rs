//! C2SP checkpoints (<https://c2sp.org/tlog-checkpoint>): a log's signed tree head, and
//! witnesses' cosignatures of it (<https://c2sp.org/tlog-cosignature>, Ed25519 `cosignature/v1`).
//!
//! A checkpoint is a signed note whose text is the origin (the log's name), the tree size in
//! decimal, the root hash in base64, then optional extension lines. A real one, from
//! sum.golang.org:
//!
//! ```text
//! go.sum database tree
//! 19238995
//! rYNqIZewerbOSOnMYPyCJKxl86UaEBZ1mrEpfiAQhcs=
//!
//! — sum.golang.org Az3grut2xBvodM8V9oOPG46SgC7w8BqMN9z5tsbaN9nTEEIPNjhvYZJ4aQOzCy8qW2LEaJBANgKjGlfW42nf3DmtVwc=
//! ```
//!
//! quorate's log key is named after its origin, so [`Checkpoint::open`] requires a valid
//! signature by the log's key *and* the origin the caller expects.
//!
//! A witness adds a signature line of its own to the same note. Its key ID uses type byte
//! 0x04, and what it signs is not the note text alone but
//!
//! ```text
//! cosignature/v1
//! time <unix seconds>
//! <the checkpoint text>
//! ```
//!
//! with the signature bytes being the 8-byte big-endian timestamp followed by the 64-byte
//! Ed25519 signature. [`CosignerKey`] makes them, [`CosignatureVerifier`] checks them (it is a
//! [`NoteVerifier`], so [`note::open`] handles cosigned notes).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use thiserror::Error;

use super::merkle::{Hash, HashError};
use super::note::{
    self, format_private_key, format_vkey, key_id, parse_private_key, parse_vkey, random_seed,
    KeyError, NoteError, NoteSignature, NoteVerifier, OpenedNote, SignedNote, SignerKey,
    VerifierKey,
};

/// Signature type byte of Ed25519 `cosignature/v1` signatures.
pub const COSIGNATURE_TYPE: u8 = 0x04;

/// Cosignature timestamps above this are invalid (the spec's 2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    /// Fewer than the three lines every checkpoint has, or not ending in a newline.
    #[error("checkpoint text is not origin, size and root hash lines ending in a newline")]
    Truncated,
    /// The origin line is empty.
    #[error("checkpoint origin line is empty")]
    EmptyOrigin,
    /// The size is not a canonical decimal u64.
    #[error("checkpoint tree size {0:?} is not a decimal number without leading zeros")]
    InvalidSize(String),
    /// The root hash is not base64 of 32 bytes.
    #[error("checkpoint root hash is invalid: {0}")]
    InvalidRoot(#[from] HashError),
    /// An extension line is empty.
    #[error("checkpoint has an empty extension line")]
    EmptyExtension,
    /// A line has a character a note cannot carry.
    #[error("checkpoint line {0:?} contains a newline or control character")]
    InvalidLine(String),
    /// The note around it is malformed or not signed by the log.
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
    /// Signed by the right key, but for another log.
    #[error("checkpoint is for origin {got:?}, expected {expected:?}")]
    WrongOrigin {
        /// The origin asked for.
        expected: String,
        /// The origin in the checkpoint.
        got: String,
    },
    /// A cosignature timestamp over 2^63 - 1.
    #[error("cosignature timestamp {0} is over 2^63 - 1")]
    TimestampTooLarge(u64),
}

/// A log's tree head: which log, how many entries, and the root over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        if origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        check_line(origin)?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// Adds an extension line (opaque, non-empty; the spec advises against them).
    pub fn with_extension(mut self, line: &str) -> Result<Self, CheckpointError> {
        if line.is_empty() {
            return Err(CheckpointError::EmptyExtension);
        }
        check_line(line)?;
        self.extensions.push(line.to_owned());
        Ok(self)
    }

    /// The log's identity (its first line).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The number of entries in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree's root hash.
    pub fn root(&self) -> Hash {
        self.root
    }

    /// The extension lines, if any.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The signed note of this checkpoint, signed by the log's key. Fails only for a
    /// checkpoint too large to be a note.
    pub fn sign(&self, log_key: &SignerKey) -> Result<SignedNote, CheckpointError> {
        Ok(SignedNote::new(&self.to_string())?.signed_by(log_key))
    }

    /// Opens a signed checkpoint: a valid signature by `log_key` and the `origin` expected.
    /// Other signatures (witnesses) are kept in the returned note, not checked.
    pub fn open(
        signed: &[u8],
        origin: &str,
        log_key: &VerifierKey,
    ) -> Result<(Checkpoint, OpenedNote), CheckpointError> {
        let opened = note::open(signed, &[log_key])?;
        let checkpoint: Checkpoint = opened.note.text().parse()?;
        if checkpoint.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                expected: origin.to_owned(),
                got: checkpoint.origin,
            });
        }
        Ok((checkpoint, opened))
    }
}

fn check_line(line: &str) -> Result<(), CheckpointError> {
    if line.chars().any(|c| c.is_control()) {
        return Err(CheckpointError::InvalidLine(
            line.chars().take(100).collect(),
        ));
    }
    Ok(())
}

impl fmt::Display for Checkpoint {
    /// The note text: origin, size, root, extensions, each ending in a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}\n{}\n{}", self.origin, self.size, self.root)?;
        for line in &self.extensions {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

impl FromStr for Checkpoint {
    type Err = CheckpointError;

    /// Parses a checkpoint's note text (not the signed note: see [`Checkpoint::open`]).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let body = text.strip_suffix('\n').ok_or(CheckpointError::Truncated)?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::Truncated);
        };
        let mut checkpoint = Checkpoint::new(origin, parse_size(size)?, root.parse()?)?;
        for line in lines {
            checkpoint = checkpoint.with_extension(line)?;
        }
        Ok(checkpoint)
    }
}

/// A decimal u64 with no sign and no leading zero (except `0` itself).
pub(crate) fn parse_size(s: &str) -> Result<u64, CheckpointError> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical
        .then(|| s.parse().ok())
        .flatten()
        .ok_or_else(|| CheckpointError::InvalidSize(s.chars().take(30).collect()))
}

/// The message a `cosignature/v1` signs.
fn cosigned_message(timestamp: u64, checkpoint_text: &[u8]) -> Vec<u8> {
    let mut message = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    message.extend_from_slice(checkpoint_text);
    message
}

/// A witness's Ed25519 cosigning key. Its text form is the note signer form with type byte
/// 0x04: `PRIVATE+KEY+<name>+<hex id>+base64(0x04 || seed)`.
#[derive(Clone)]
pub struct CosignerKey {
    name: String,
    key: SigningKey,
}

impl CosignerKey {
    /// Makes a new key from the operating system's randomness.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        Self::from_seed(name, &random_seed()?)
    }

    /// The key with this name and 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        if !note::is_valid_key_name(name) {
            return Err(KeyError::InvalidName(name.to_owned()));
        }
        Ok(CosignerKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(seed),
        })
    }

    /// The matching verifier.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier::new(&self.name, self.key.verifying_key())
    }

    /// The signature line cosigning `checkpoint` at `timestamp` (Unix seconds).
    pub fn cosign(
        &self,
        checkpoint: &Checkpoint,
        timestamp: u64,
    ) -> Result<NoteSignature, CheckpointError> {
        if timestamp > MAX_TIMESTAMP {
            return Err(CheckpointError::TimestampTooLarge(timestamp));
        }
        let message = cosigned_message(timestamp, checkpoint.to_string().as_bytes());
        let mut signature = timestamp.to_be_bytes().to_vec();
        signature.extend_from_slice(&self.key.sign(&message).to_bytes());
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: key_id(
                &self.name,
                COSIGNATURE_TYPE,
                self.key.verifying_key().as_bytes(),
            ),
            signature,
        })
    }
}

impl FromStr for CosignerKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, written_id, seed) = parse_private_key(s.trim(), COSIGNATURE_TYPE)?;
        let key = CosignerKey::from_seed(&name, &seed)?;
        let expected = key.verifier().key_id;
        if written_id != format!("{expected:08x}") {
            return Err(KeyError::KeyIdMismatch {
                name,
                written: written_id,
                computed: format!("{expected:08x}"),
            });
        }
        Ok(key)
    }
}

impl fmt::Display for CosignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_private_key(&self.name, COSIGNATURE_TYPE, &self.key))
    }
}

impl fmt::Debug for CosignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CosignerKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A witness's public key: checks `cosignature/v1` lines. Text form: a vkey with type 0x04.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// The verifier for this witness name and Ed25519 public key.
    pub fn new(name: &str, key: VerifyingKey) -> Self {
        CosignatureVerifier {
            name: name.to_owned(),
            key_id: key_id(name, COSIGNATURE_TYPE, key.as_bytes()),
            key,
        }
    }
}

/// The timestamp a cosignature line claims, if it is shaped like one (8 + 64 bytes).
pub fn cosignature_timestamp(signature: &NoteSignature) -> Option<u64> {
    match signature.signature.as_slice() {
        [t0, t1, t2, t3, t4, t5, t6, t7, rest @ ..] if rest.len() == 64 => {
            Some(u64::from_be_bytes([*t0, *t1, *t2, *t3, *t4, *t5, *t6, *t7]))
        }
        _ => None,
    }
}

impl NoteVerifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        let Some((timestamp, signature)) = signature.split_first_chunk::<8>() else {
            return false;
        };
        let timestamp = u64::from_be_bytes(*timestamp);
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        timestamp <= MAX_TIMESTAMP
            && self
                .key
                .verify_strict(&cosigned_message(timestamp, text), &signature)
                .is_ok()
    }
}

impl FromStr for CosignatureVerifier {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, key_id, key) = parse_vkey(s, COSIGNATURE_TYPE)?;
        Ok(CosignatureVerifier { name, key_id, key })
    }
}

impl fmt::Display for CosignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_vkey(&self.name, COSIGNATURE_TYPE, &self.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::merkle::leaf_hash;

    /// sum.golang.org's verifier key, as built into the go command (`knownGOSUMDB` in
    /// cmd/go/internal/modfetch/sumdb.go).
    const SUMDB_VKEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
    /// A tree head sum.golang.org served (quoted in a public write-up of `/lookup`).
    const SUMDB_CHECKPOINT: &str = "go.sum database tree\n19238995\nrYNqIZewerbOSOnMYPyCJKxl86UaEBZ1mrEpfiAQhcs=\n\n— sum.golang.org Az3grut2xBvodM8V9oOPG46SgC7w8BqMN9z5tsbaN9nTEEIPNjhvYZJ4aQOzCy8qW2LEaJBANgKjGlfW42nf3DmtVwc=\n";

    fn sumdb_key() -> VerifierKey {
        SUMDB_VKEY.parse().expect("the go command's key")
    }

    fn test_log() -> (SignerKey, Checkpoint) {
        let key = SignerKey::from_seed("cache.example.com/log", &[1; 32]).expect("valid name");
        let checkpoint =
            Checkpoint::new("cache.example.com/log", 5, leaf_hash(b"five")).expect("valid");
        (key, checkpoint)
    }

    #[test]
    fn a_real_sum_golang_org_checkpoint_opens() {
        let (checkpoint, opened) = Checkpoint::open(
            SUMDB_CHECKPOINT.as_bytes(),
            "go.sum database tree",
            &sumdb_key(),
        )
        .expect("sum.golang.org signed it");
        assert_eq!(checkpoint.size(), 19238995);
        assert_eq!(
            checkpoint.root().to_string(),
            "rYNqIZewerbOSOnMYPyCJKxl86UaEBZ1mrEpfiAQhcs="
        );
        assert_eq!(opened.note.to_string(), SUMDB_CHECKPOINT);
        assert_eq!(
            Checkpoint::open(SUMDB_CHECKPOINT.as_bytes(), "sum.golang.org", &sumdb_key()),
            Err(CheckpointError::WrongOrigin {
                expected: "sum.golang.org".into(),
                got: "go.sum database tree".into()
            })
        );
        let forged = SUMDB_CHECKPOINT.replace("19238995", "19238996");
        assert!(matches!(
            Checkpoint::open(forged.as_bytes(), "go.sum database tree", &sumdb_key()),
            Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
        ));
    }

    #[test]
    fn checkpoints_round_trip_through_their_text() {
        let (_, checkpoint) = test_log();
        let text = checkpoint.to_string();
        assert_eq!(
            text,
            format!("cache.example.com/log\n5\n{}\n", leaf_hash(b"five"))
        );
        assert_eq!(text.parse(), Ok(checkpoint.clone()));
        let extended = checkpoint.with_extension("ext one").expect("valid");
        assert_eq!(extended.to_string().parse(), Ok(extended.clone()));
        assert_eq!(extended.extensions(), ["ext one".to_owned()]);
    }

    #[test]
    fn malformed_checkpoint_texts_are_refused() {
        let root = leaf_hash(b"five").to_string();
        type Expectation = fn(&CheckpointError) -> bool;
        let cases: [(String, Expectation); 10] = [
            (format!("o\n5\n{root}"), |e| {
                *e == CheckpointError::Truncated
            }),
            ("o\n5\n".into(), |e| *e == CheckpointError::Truncated),
            (format!("\n5\n{root}\n"), |e| {
                *e == CheckpointError::EmptyOrigin
            }),
            (format!("o\n05\n{root}\n"), |e| {
                matches!(e, CheckpointError::InvalidSize(_))
            }),
            (format!("o\n+5\n{root}\n"), |e| {
                matches!(e, CheckpointError::InvalidSize(_))
            }),
            (format!("o\n-1\n{root}\n"), |e| {
                matches!(e, CheckpointError::InvalidSize(_))
            }),
            (format!("o\n18446744073709551616\n{root}\n"), |e| {
                matches!(e, CheckpointError::InvalidSize(_))
            }),
            ("o\n5\nAAAA\n".into(), |e| {
                matches!(e, CheckpointError::InvalidRoot(_))
            }),
            (format!("o\n5\n{root}\n\n"), |e| {
                *e == CheckpointError::EmptyExtension
            }),
            (format!("o\n5\n{root}\nx\ty\n"), |e| {
                matches!(e, CheckpointError::InvalidLine(_))
            }),
        ];
        for (text, expected) in cases {
            let error = text.parse::<Checkpoint>().expect_err(&text);
            assert!(expected(&error), "{error:?} for {text:?}");
        }
        assert_eq!(
            format!("o\n0\n{root}\n")
                .parse::<Checkpoint>()
                .map(|c| c.size()),
            Ok(0)
        );
        assert_eq!(
            format!("o\n18446744073709551615\n{root}\n")
                .parse::<Checkpoint>()
                .map(|c| c.size()),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn a_signed_checkpoint_opens_only_with_its_key_and_origin() {
        let (key, checkpoint) = test_log();
        let signed = checkpoint.sign(&key).expect("small").to_string();
        let (opened, _) =
            Checkpoint::open(signed.as_bytes(), "cache.example.com/log", &key.verifier())
                .expect("verifies");
        assert_eq!(opened, checkpoint);
        let stranger = SignerKey::from_seed("cache.example.com/log", &[2; 32]).expect("valid");
        assert_eq!(
            Checkpoint::open(
                signed.as_bytes(),
                "cache.example.com/log",
                &stranger.verifier()
            )
            .map(|(c, _)| c),
            Err(CheckpointError::Note(NoteError::NoKnownSignature))
        );
        for end in 0..signed.len() {
            let result = Checkpoint::open(
                &signed.as_bytes()[..end],
                "cache.example.com/log",
                &key.verifier(),
            );
            assert!(result.is_err(), "{end}");
        }
    }

    #[test]
    fn a_cosignature_signs_the_spec_message_and_opens_beside_the_log_signature() {
        let (key, checkpoint) = test_log();
        let witness = CosignerKey::from_seed("witness.example.com/w1", &[3; 32]).expect("valid");
        let timestamp = 1_679_315_147;
        let cosignature = witness.cosign(&checkpoint, timestamp).expect("in range");
        assert_eq!(cosignature_timestamp(&cosignature), Some(timestamp));
        // The message, built here independently from the spec's wording.
        let message = format!("cosignature/v1\ntime 1679315147\n{checkpoint}");
        let signature = Signature::from_slice(&cosignature.signature[8..]).expect("64 bytes");
        let public = witness.verifier().key;
        assert!(public.verify_strict(message.as_bytes(), &signature).is_ok());
        assert_eq!(
            cosignature.key_id,
            key_id("witness.example.com/w1", 0x04, public.as_bytes())
        );

        let mut note = checkpoint.sign(&key).expect("small");
        note.add_signature(cosignature.clone());
        let text = note.to_string();
        let verifier = witness.verifier();
        let opened = note::open(text.as_bytes(), &[&key.verifier(), &verifier]).expect("both");
        assert_eq!(opened.verified.len(), 2);
        assert_eq!(opened.verified[1], cosignature);
        // The witness alone is enough for note::open; a tampered timestamp is not.
        assert!(note::open(text.as_bytes(), &[&verifier]).is_ok());
        let mut tampered = cosignature.clone();
        tampered.signature[7] ^= 1;
        let mut note = checkpoint.sign(&key).expect("small");
        note.add_signature(tampered);
        assert!(matches!(
            note::open(note.to_string().as_bytes(), &[&verifier]),
            Err(NoteError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn cosigner_keys_round_trip_and_are_not_note_keys() {
        let witness = CosignerKey::from_seed("w.example", &[4; 32]).expect("valid");
        let vkey = witness.verifier().to_string();
        assert_eq!(vkey.parse(), Ok(witness.verifier()));
        assert!(vkey.split('+').nth(2).is_some_and(|b| b.starts_with('B')));
        assert!(matches!(
            vkey.parse::<VerifierKey>(),
            Err(KeyError::WrongType { got: 0x04, .. })
        ));
        let secret: CosignerKey = witness.to_string().parse().expect("own output");
        assert_eq!(secret.verifier(), witness.verifier());
        assert!(witness.to_string().parse::<SignerKey>().is_err());
        let (_, checkpoint) = test_log();
        assert_eq!(
            witness.cosign(&checkpoint, 1 << 63).map(|s| s.key_id),
            Err(CheckpointError::TimestampTooLarge(1 << 63))
        );
        assert!(!format!("{witness:?}").contains("PRIVATE"));
        assert!(CosignerKey::generate("w.example").is_ok());
    }
}
