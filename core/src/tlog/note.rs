//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys: what checkpoints
//! are written in.
//!
//! A signed note is a UTF-8 text ending in a newline, a blank line, then one signature line
//! per signer: em dash (U+2014), space, key name, space, base64(4-byte key ID || signature).
//! This one is from Go's `golang.org/x/mod/sumdb/note` tests:
//!
//! ```text
//! If you think cryptography is the answer to your problem,
//! then you don't know what your problem is.
//!
//! — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=
//! ```
//!
//! Keys are text too (Go's note format, which the tlog ecosystem shares):
//!
//! ```text
//! verifier key  PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW
//!               <name>+<hex key ID>+base64(0x01 || 32-byte Ed25519 public key)
//! signer key    PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz
//!               PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || 32-byte Ed25519 seed)
//! key ID        first 4 bytes (big-endian) of SHA-256(name || 0x0A || 0x01 || public key)
//! ```
//!
//! [`open`] accepts a note only if at least one signature is by a known verifier and every
//! signature by a known verifier holds; signatures by other keys are kept but ignored. A
//! verifier is any [`NoteVerifier`], so witness cosignatures (`checkpoint.rs`) go through the
//! same door.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Signature type byte of plain Ed25519 note signatures.
pub const ED25519_TYPE: u8 = 0x01;

/// At most this many signature lines (the spec asks verifiers to accept at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// At most this many bytes in a whole note: checkpoints are a few hundred.
pub const MAX_NOTE_BYTES: usize = 256 * 1024;

/// Why a key's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// Not `<name>+<hex id>+<base64>` (or the `PRIVATE+KEY+` form for a signer).
    #[error("key is not <name>+<8 hex digits>+<base64>{0}")]
    Malformed(&'static str),
    /// The name is empty or has a space or `+`.
    #[error("key name {0:?} is empty or contains a space, a control character or '+'")]
    InvalidName(String),
    /// The key material is not standard padded base64.
    #[error("key material of {0:?} is not valid base64")]
    InvalidBase64(String),
    /// The key is for another signature algorithm.
    #[error("key {name:?} has signature type {got:#04x}, expected {expected:#04x}")]
    WrongType {
        /// The key's name.
        name: String,
        /// The type byte required here.
        expected: u8,
        /// The type byte found.
        got: u8,
    },
    /// Not 32 bytes of key after the type byte.
    #[error("key {name:?} has {got} bytes of key material, expected 32")]
    WrongLength {
        /// The key's name.
        name: String,
        /// Bytes found.
        got: usize,
    },
    /// The public key is not an Ed25519 point.
    #[error("public key {0:?} is not a valid Ed25519 point")]
    InvalidPublicKey(String),
    /// The written key ID is not the one the name and key give.
    #[error("key {name:?} says key ID {written}, but its name and key give {computed}")]
    KeyIdMismatch {
        /// The key's name.
        name: String,
        /// The ID in the text.
        written: String,
        /// The ID computed from name and key.
        computed: String,
    },
    /// The operating system's random source failed.
    #[error("could not get randomness from the operating system for a new key: {0}")]
    Randomness(String),
}

/// Why a note was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoteError {
    /// Over [`MAX_NOTE_BYTES`].
    #[error("note is {0} bytes, more than the {MAX_NOTE_BYTES} accepted")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("note is not valid UTF-8")]
    NotUtf8,
    /// A control character other than newline.
    #[error("note contains a control character other than newline")]
    ControlCharacter,
    /// The text does not end in a newline.
    #[error("note text is empty or does not end in a newline")]
    TextNotTerminated,
    /// No blank line separates text and signatures.
    #[error("note has no blank line before its signatures")]
    NoSignatureBlock,
    /// A line after the blank line is not a signature line.
    #[error("note has a malformed signature line {0:?}")]
    MalformedSignature(String),
    /// More than [`MAX_SIGNATURES`].
    #[error("note has {0} signatures, more than the {MAX_SIGNATURES} accepted")]
    TooManySignatures(usize),
    /// A signature by a known key does not verify: the note was altered or forged.
    #[error("signature by known key {name}+{key_id:08x} does not verify")]
    InvalidSignature {
        /// The key's name.
        name: String,
        /// The key's ID.
        key_id: u32,
    },
    /// No signature is by a known key.
    #[error("note has no signature by a known key")]
    NoKnownSignature,
}

/// The key ID of a key: the first 4 bytes of SHA-256(name || 0x0A || type || public key).
pub fn key_id(name: &str, signature_type: u8, public_key: &[u8]) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', signature_type])
        .chain_update(public_key)
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Whether `name` may name a key: non-empty, no Unicode space, no control character, no `+`.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '+' || c.is_whitespace() || c.is_control())
}

/// A key that can check note signatures: an Ed25519 [`VerifierKey`], or a witness's
/// cosignature key.
pub trait NoteVerifier {
    /// The key name signatures carry.
    fn name(&self) -> &str;
    /// The key ID signatures carry.
    fn key_id(&self) -> u32;
    /// Whether `signature` (after its key ID) is this key's over the note `text`.
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool;
}

/// An Ed25519 note verifier key (a *vkey*).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl NoteVerifier for VerifierKey {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(text, &signature).is_ok()
    }
}

impl FromStr for VerifierKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, key_id, key) = parse_vkey(s, ED25519_TYPE)?;
        Ok(VerifierKey { name, key_id, key })
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_vkey(&self.name, ED25519_TYPE, &self.key))
    }
}

/// Parses `<name>+<hex id>+base64(type || 32-byte key)` for a key of `signature_type`.
/// Shared with the cosignature keys, which differ only in their type byte.
pub(crate) fn parse_vkey(
    s: &str,
    signature_type: u8,
) -> Result<(String, u32, VerifyingKey), KeyError> {
    let (name, rest) = s.split_once('+').ok_or(KeyError::Malformed(""))?;
    // The base64 may itself contain '+': split off the ID only.
    let (written_id, encoded) = rest.split_once('+').ok_or(KeyError::Malformed(""))?;
    let name = checked_name(name)?;
    let bytes = decode_typed_key(&name, encoded, signature_type)?;
    let key =
        VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPublicKey(name.clone()))?;
    let key_id = check_key_id(&name, written_id, signature_type, key.as_bytes())?;
    Ok((name, key_id, key))
}

/// The vkey text of a public key.
pub(crate) fn format_vkey(name: &str, signature_type: u8, key: &VerifyingKey) -> String {
    let id = key_id(name, signature_type, key.as_bytes());
    let mut material = vec![signature_type];
    material.extend_from_slice(key.as_bytes());
    format!("{name}+{id:08x}+{}", BASE64.encode(material))
}

fn checked_name(name: &str) -> Result<String, KeyError> {
    if !is_valid_key_name(name) {
        return Err(KeyError::InvalidName(name.to_owned()));
    }
    Ok(name.to_owned())
}

/// Decodes base64(type || 32 bytes), checking the type.
fn decode_typed_key(name: &str, encoded: &str, signature_type: u8) -> Result<[u8; 32], KeyError> {
    let bytes = BASE64
        .decode(encoded)
        .map_err(|_| KeyError::InvalidBase64(name.to_owned()))?;
    let (&got, material) = bytes.split_first().ok_or(KeyError::WrongLength {
        name: name.to_owned(),
        got: 0,
    })?;
    if got != signature_type {
        return Err(KeyError::WrongType {
            name: name.to_owned(),
            expected: signature_type,
            got,
        });
    }
    material.try_into().map_err(|_| KeyError::WrongLength {
        name: name.to_owned(),
        got: material.len(),
    })
}

/// Checks the written ID (exactly 8 lowercase hex digits) against the computed one.
fn check_key_id(
    name: &str,
    written: &str,
    signature_type: u8,
    public_key: &[u8],
) -> Result<u32, KeyError> {
    let computed = key_id(name, signature_type, public_key);
    if written != format!("{computed:08x}") {
        return Err(KeyError::KeyIdMismatch {
            name: name.to_owned(),
            written: written.to_owned(),
            computed: format!("{computed:08x}"),
        });
    }
    Ok(computed)
}

/// An Ed25519 note signer key. `Debug` shows only the name; `Display` writes the secret (it
/// is the key file's format).
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl SignerKey {
    /// Makes a new key from the operating system's randomness.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        Self::from_seed(name, &random_seed()?)
    }

    /// The key with this name and 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        let name = checked_name(name)?;
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&name, ED25519_TYPE, key.verifying_key().as_bytes());
        Ok(SignerKey { name, key_id, key })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// This key's signature over a note text (not checked: see [`SignedNote::new`]).
    pub fn sign(&self, text: &str) -> NoteSignature {
        NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.key.sign(text.as_bytes()).to_bytes().to_vec(),
        }
    }
}

/// 32 bytes from the operating system, for a new key.
pub(crate) fn random_seed() -> Result<[u8; 32], KeyError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|error| KeyError::Randomness(error.to_string()))?;
    Ok(seed)
}

impl FromStr for SignerKey {
    type Err = KeyError;

    /// Parses `PRIVATE+KEY+<name>+<hex id>+base64(0x01 || seed)`; surrounding whitespace (a
    /// file's newline) is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, written_id, seed) = parse_private_key(s.trim(), ED25519_TYPE)?;
        let signer = SignerKey::from_seed(&name, &seed)?;
        check_key_id(
            &name,
            &written_id,
            ED25519_TYPE,
            signer.key.verifying_key().as_bytes(),
        )?;
        Ok(signer)
    }
}

/// Splits `PRIVATE+KEY+<name>+<hex id>+base64(type || seed)` into name, written ID, seed.
pub(crate) fn parse_private_key(
    s: &str,
    signature_type: u8,
) -> Result<(String, String, [u8; 32]), KeyError> {
    let rest = s
        .strip_prefix("PRIVATE+KEY+")
        .ok_or(KeyError::Malformed(", after PRIVATE+KEY+"))?;
    let (name, rest) = rest.split_once('+').ok_or(KeyError::Malformed(""))?;
    let (written_id, encoded) = rest.split_once('+').ok_or(KeyError::Malformed(""))?;
    let name = checked_name(name)?;
    let seed = decode_typed_key(&name, encoded, signature_type)?;
    Ok((name, written_id.to_owned(), seed))
}

/// The private key text of a seed.
pub(crate) fn format_private_key(name: &str, signature_type: u8, key: &SigningKey) -> String {
    let id = key_id(name, signature_type, key.verifying_key().as_bytes());
    let mut material = vec![signature_type];
    material.extend_from_slice(key.as_bytes());
    format!("PRIVATE+KEY+{name}+{id:08x}+{}", BASE64.encode(material))
}

impl fmt::Display for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_private_key(&self.name, ED25519_TYPE, &self.key))
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerKey")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

/// One signature line: `— <name> base64(key ID || signature)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// The signing key's name.
    pub name: String,
    /// The signing key's ID.
    pub key_id: u32,
    /// The signature bytes after the key ID.
    pub signature: Vec<u8>,
}

impl fmt::Display for NoteSignature {
    /// The line without its newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = self.key_id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.signature);
        write!(f, "\u{2014} {} {}", self.name, BASE64.encode(bytes))
    }
}

impl FromStr for NoteSignature {
    type Err = NoteError;

    /// Parses one line, without its newline.
    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let malformed = || NoteError::MalformedSignature(line.chars().take(100).collect());
        let rest = line.strip_prefix("\u{2014} ").ok_or_else(malformed)?;
        let (name, encoded) = rest.split_once(' ').ok_or_else(malformed)?;
        if !is_valid_key_name(name) {
            return Err(malformed());
        }
        let bytes = BASE64.decode(encoded).map_err(|_| malformed())?;
        match bytes.as_slice() {
            [a, b, c, d, signature @ ..] if !signature.is_empty() => Ok(NoteSignature {
                name: name.to_owned(),
                key_id: u32::from_be_bytes([*a, *b, *c, *d]),
                signature: signature.to_vec(),
            }),
            _ => Err(malformed()),
        }
    }
}

/// A note text and its signatures, checked for syntax only: [`open`] checks signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNote {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// An unsigned note with this text: valid note text ending in a newline.
    pub fn new(text: &str) -> Result<Self, NoteError> {
        check_text(text)?;
        Ok(SignedNote {
            text: text.to_owned(),
            signatures: Vec::new(),
        })
    }

    /// Adds a signature, replacing one by the same key (name and ID).
    pub fn add_signature(&mut self, signature: NoteSignature) {
        self.signatures
            .retain(|s| (s.name.as_str(), s.key_id) != (signature.name.as_str(), signature.key_id));
        self.signatures.push(signature);
    }

    /// Signs with `key` (replacing an earlier signature by it); returns the note for chaining.
    pub fn signed_by(mut self, key: &SignerKey) -> Self {
        let signature = key.sign(&self.text);
        self.add_signature(signature);
        self
    }

    /// The signed text, ending in its newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every signature, known key or not, in note order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Parses a signed note's bytes (syntax only; no signature is checked).
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(bytes.len()));
        }
        let message = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        check_characters(message)?;
        // The text ends at the last blank line; it may contain blank lines itself.
        let split = message.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
        let (text, block) = message.split_at(split + 1);
        let block = block.strip_prefix('\n').unwrap_or(block);
        let lines = block
            .strip_suffix('\n')
            .ok_or_else(|| NoteError::MalformedSignature(block.chars().take(100).collect()))?;
        let count = lines.split('\n').count();
        if count > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures(count));
        }
        let signatures = lines
            .split('\n')
            .map(str::parse)
            .collect::<Result<Vec<NoteSignature>, NoteError>>()?;
        Ok(SignedNote {
            text: text.to_owned(),
            signatures,
        })
    }
}

impl fmt::Display for SignedNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for signature in &self.signatures {
            writeln!(f, "{signature}")?;
        }
        Ok(())
    }
}

impl FromStr for SignedNote {
    type Err = NoteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SignedNote::parse(s.as_bytes())
    }
}

fn check_characters(text: &str) -> Result<(), NoteError> {
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::ControlCharacter);
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge(text.len()));
    }
    check_characters(text)?;
    if !text.ends_with('\n') {
        return Err(NoteError::TextNotTerminated);
    }
    Ok(())
}

/// A note whose signatures have been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedNote {
    /// The note as parsed: text and every signature.
    pub note: SignedNote,
    /// The signatures by known keys, each verified (once per key).
    pub verified: Vec<NoteSignature>,
}

/// Parses a signed note and checks it against the known `verifiers`: every signature by a
/// known key (same name and ID) must verify, and at least one must exist. Signatures by
/// other keys are ignored.
pub fn open(bytes: &[u8], verifiers: &[&dyn NoteVerifier]) -> Result<OpenedNote, NoteError> {
    let note = SignedNote::parse(bytes)?;
    let mut verified: Vec<NoteSignature> = Vec::new();
    for signature in note.signatures() {
        let mut known = verifiers
            .iter()
            .filter(|v| v.name() == signature.name && v.key_id() == signature.key_id)
            .peekable();
        if known.peek().is_none() {
            continue;
        }
        if !known.any(|v| v.verify(note.text.as_bytes(), &signature.signature)) {
            return Err(NoteError::InvalidSignature {
                name: signature.name.clone(),
                key_id: signature.key_id,
            });
        }
        let seen = verified
            .iter()
            .any(|s| s.name == signature.name && s.key_id == signature.key_id);
        if !seen {
            verified.push(signature.clone());
        }
    }
    if verified.is_empty() {
        return Err(NoteError::NoKnownSignature);
    }
    Ok(OpenedNote { note, verified })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from golang.org/x/mod sumdb/note/note_test.go.
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    fn peter() -> VerifierKey {
        PETER_VKEY.parse().expect("Go's test key")
    }

    fn enoch() -> VerifierKey {
        ENOCH_VKEY.parse().expect("Go's test key")
    }

    #[test]
    fn signing_gos_text_with_gos_key_gives_gos_note_byte_for_byte() {
        let signer: SignerKey = PETER_SKEY.parse().expect("Go's test key");
        assert_eq!(signer.to_string(), PETER_SKEY);
        assert_eq!(signer.verifier().to_string(), PETER_VKEY);
        assert_eq!(signer.verifier(), peter());
        let note = SignedNote::new(TEXT)
            .expect("valid text")
            .signed_by(&signer);
        assert_eq!(note.to_string(), format!("{TEXT}\n{PETER_SIG}"));
        // Signing again replaces the signature rather than adding a second one.
        assert_eq!(note.clone().signed_by(&signer), note);
    }

    #[test]
    fn the_signed_note_specs_example_verifies() {
        // https://c2sp.org/signed-note, "Verifier keys / Example".
        let vkey: VerifierKey =
            "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
                .parse()
                .expect("the spec's key");
        let note = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
        let opened = open(note.as_bytes(), &[&vkey]).expect("verifies");
        assert_eq!(opened.note.text(), "This is an example message.\n");
        assert_eq!(opened.note.to_string(), note);
    }

    #[test]
    fn open_checks_known_signatures_and_ignores_unknown_ones() {
        let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        let opened = open(both.as_bytes(), &[&peter()]).expect("Peter's verifies");
        assert_eq!(opened.note.text(), TEXT);
        assert_eq!(opened.note.signatures().len(), 2);
        assert_eq!(opened.verified.len(), 1);
        assert_eq!(opened.verified[0].key_id, 0xc74f20a3);
        let opened = open(both.as_bytes(), &[&peter(), &enoch()]).expect("both verify");
        assert_eq!(opened.verified.len(), 2);
        assert_eq!(opened.verified[1].name, "EnochRoot");
        assert_eq!(open(both.as_bytes(), &[]), Err(NoteError::NoKnownSignature));
        // Duplicates of a verified signature are reported once.
        let twice = format!("{TEXT}\n{PETER_SIG}{PETER_SIG}");
        assert_eq!(
            open(twice.as_bytes(), &[&peter()]).map(|o| o.verified.len()),
            Ok(1)
        );
    }

    #[test]
    fn a_known_keys_bad_signature_rejects_the_note() {
        let forged = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        assert_eq!(
            open(forged.as_bytes(), &[&peter()]),
            Err(NoteError::InvalidSignature {
                name: "PeterNeumann".into(),
                key_id: 0xc74f20a3
            })
        );
        let altered = format!("{}\n{PETER_SIG}", TEXT.replace("problem,", "problem;"));
        assert!(matches!(
            open(altered.as_bytes(), &[&peter()]),
            Err(NoteError::InvalidSignature { .. })
        ));
        // Same name, another ID: not Peter's key, so ignored.
        let other_id = PETER_SIG.replace("x08g", "xxxx");
        assert_eq!(
            open(format!("{TEXT}\n{other_id}").as_bytes(), &[&peter()]),
            Err(NoteError::NoKnownSignature)
        );
    }

    #[test]
    fn malformed_notes_are_refused() {
        let bad_name = "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";
        type Expectation = fn(&NoteError) -> bool;
        let cases: Vec<(String, Expectation)> = vec![
            (TEXT.into(), |e| *e == NoteError::NoSignatureBlock),
            (format!("{TEXT}\n"), |e| {
                matches!(e, NoteError::MalformedSignature(_))
            }),
            (format!("{TEXT}\n{}", PETER_SIG.trim_end()), |e| {
                matches!(e, NoteError::MalformedSignature(_))
            }),
            (format!("\x01{TEXT}\n{PETER_SIG}"), |e| {
                *e == NoteError::ControlCharacter
            }),
            (format!("{TEXT}\r\n{PETER_SIG}"), |e| {
                *e == NoteError::ControlCharacter
            }),
            (format!("{TEXT}\n{bad_name}\n"), |e| {
                matches!(e, NoteError::MalformedSignature(_))
            }),
            (format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"), |e| {
                matches!(e, NoteError::MalformedSignature(_))
            }),
            (format!("{TEXT}\n— PeterNeumann AAAA\n"), |e| {
                matches!(e, NoteError::MalformedSignature(_))
            }),
            (format!("{TEXT}\n{}", PETER_SIG.repeat(101)), |e| {
                *e == NoteError::TooManySignatures(101)
            }),
            ("x\n".repeat(MAX_NOTE_BYTES), |e| {
                matches!(e, NoteError::TooLarge(_))
            }),
        ];
        for (note, expected) in cases {
            let error = open(note.as_bytes(), &[&peter()]).expect_err(&note[..note.len().min(80)]);
            assert!(
                expected(&error),
                "{error:?} for {:?}",
                &note[..note.len().min(80)]
            );
        }
        let mut not_utf8 = format!("{TEXT}\n{PETER_SIG}").into_bytes();
        not_utf8[0] = 0xff;
        assert_eq!(open(&not_utf8, &[&peter()]), Err(NoteError::NotUtf8));
        assert_eq!(
            SignedNote::new("abc").map(|_| ()),
            Err(NoteError::TextNotTerminated)
        );
        assert_eq!(
            SignedNote::new("a\tb\n").map(|_| ()),
            Err(NoteError::ControlCharacter)
        );
        // 100 signatures are fine.
        let hundred = format!("{TEXT}\n{}", PETER_SIG.repeat(100));
        assert!(open(hundred.as_bytes(), &[&peter()]).is_ok());
    }

    #[test]
    fn every_truncation_of_a_signed_note_is_refused_without_panicking() {
        let note = format!("{TEXT}\n{PETER_SIG}");
        let bytes = note.as_bytes();
        for end in 0..bytes.len() {
            assert!(open(&bytes[..end], &[&peter(), &enoch()]).is_err(), "{end}");
        }
        // Any tail of a two-signature note: garbage, never a panic.
        let two = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        for start in 1..two.len() {
            let _ = open(&two.as_bytes()[start..], &[&peter(), &enoch()]);
        }
    }

    #[test]
    fn every_mangling_of_gos_keys_is_refused() {
        // As Go's TestNewVerifier / TestNewSigner: every proper substring, every byte + 1.
        for key in [PETER_VKEY, PETER_SKEY] {
            let parses = |s: &str| {
                if key == PETER_VKEY {
                    s.parse::<VerifierKey>().is_ok()
                } else {
                    s.parse::<SignerKey>().is_ok()
                }
            };
            assert!(parses(key));
            for i in 0..key.len() {
                for j in i + 1..=key.len() {
                    if (i, j) != (0, key.len()) {
                        assert!(!parses(&key[i..j]), "{}", &key[i..j]);
                    }
                }
                let mut bytes = key.as_bytes().to_vec();
                bytes[i] += 1;
                let mangled = String::from_utf8(bytes).expect("ASCII");
                assert!(!parses(&mangled), "{mangled}");
            }
        }
        // Go's keys with a wrong length and an unknown algorithm, IDs adjusted to match.
        assert!(matches!(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
                .parse::<VerifierKey>(),
            Err(KeyError::WrongLength { .. } | KeyError::InvalidBase64(_))
        ));
        assert!(matches!(
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
                .parse::<VerifierKey>(),
            Err(KeyError::WrongType { got: 0x65, .. })
        ));
    }

    #[test]
    fn generated_keys_round_trip_and_sign_what_they_verify() {
        let signer = SignerKey::generate("example.com/log").expect("randomness");
        let reparsed: SignerKey = format!("{signer}\n").parse().expect("own output parses");
        assert_eq!(reparsed.verifier(), signer.verifier());
        let vkey: VerifierKey = signer.verifier().to_string().parse().expect("parses");
        let note = SignedNote::new("hello\n\nworld\n")
            .expect("valid")
            .signed_by(&signer);
        let opened = open(note.to_string().as_bytes(), &[&vkey]).expect("verifies");
        assert_eq!(opened.note.text(), "hello\n\nworld\n");
        assert!(!format!("{signer:?}").contains("PRIVATE"));
        for name in ["", "a b", "a+b", "a\u{2003}b"] {
            assert_eq!(
                SignerKey::from_seed(name, &[7; 32]).map(|k| k.verifier()),
                Err(KeyError::InvalidName(name.into()))
            );
        }
    }
}
