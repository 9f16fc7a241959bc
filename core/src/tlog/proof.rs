//! C2SP tlog proofs (<https://c2sp.org/tlog-proof>): one self-contained text that proves an
//! entry is in a log, checkable offline with only the log's key.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6      optional, opaque, not authenticated
//! index 73894                                        the entry's index
//! gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=       the inclusion proof, leaf's sibling
//! B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=       first, one hash per line
//!
//! example.com/fancylog                               the signed checkpoint, verbatim,
//! 109482                                             witness cosignatures included
//! sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=
//!
//! — example.com/fancylog hI2DJw[...]1roloI=
//! ```
//!
//! [`TlogProof::verify`] checks the checkpoint's signature by the log's key and origin, then
//! the inclusion of the caller's leaf hash at the index. Which entry the leaf is, and which
//! witnesses must have cosigned, are the caller's policy.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use thiserror::Error;

use super::checkpoint::{parse_size, Checkpoint, CheckpointError};
use super::merkle::{prove_inclusion, verify_inclusion, Hash, HashReader, ProveError, VerifyError};
use super::note::{NoteError, SignedNote, VerifierKey, MAX_NOTE_BYTES};

/// The first line of every proof.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// An inclusion proof in a tree of at most 2^64 leaves has at most 64 hashes.
const MAX_PROOF_HASHES: usize = 64;

/// Why a tlog proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TlogProofError {
    /// Larger than any real proof.
    #[error("tlog proof is {0} bytes, more than accepted")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("tlog proof is not valid UTF-8")]
    NotUtf8,
    /// The first line is not `c2sp.org/tlog-proof@v1`.
    #[error("tlog proof does not start with {HEADER:?}")]
    MissingHeader,
    /// The `extra` line's data is not base64.
    #[error("tlog proof extra data is not base64")]
    InvalidExtra,
    /// No `index <n>` line, or not a canonical decimal.
    #[error("tlog proof has no valid 'index <n>' line")]
    InvalidIndex,
    /// A proof line is not a base64 hash.
    #[error("tlog proof line {0:?} is not a base64 SHA-256 hash")]
    InvalidHash(String),
    /// More hashes than any tree needs.
    #[error("tlog proof has more than {MAX_PROOF_HASHES} hashes")]
    TooManyHashes,
    /// No blank line and checkpoint after the hashes.
    #[error("tlog proof has no checkpoint after a blank line")]
    NoCheckpoint,
    /// The checkpoint is malformed or not signed by the log.
    #[error("tlog proof checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The inclusion proof does not hold against the checkpoint.
    #[error("tlog proof does not prove inclusion: {0}")]
    Inclusion(#[from] VerifyError),
}

impl From<NoteError> for TlogProofError {
    fn from(error: NoteError) -> Self {
        TlogProofError::Checkpoint(CheckpointError::Note(error))
    }
}

/// A proof that the entry at `index` is in the log, under a signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    extra: Option<Vec<u8>>,
    index: u64,
    proof: Vec<Hash>,
    checkpoint: SignedNote,
}

impl TlogProof {
    /// A proof from its parts (not checked: see [`TlogProof::verify`]).
    pub fn new(index: u64, proof: Vec<Hash>, checkpoint: SignedNote) -> Self {
        TlogProof {
            extra: None,
            index,
            proof,
            checkpoint,
        }
    }

    /// The log's proof for entry `index` under `checkpoint` (a note the log signed), from its
    /// stored hashes.
    pub fn prove<R: HashReader + ?Sized>(
        index: u64,
        checkpoint: SignedNote,
        reader: &R,
    ) -> Result<Self, ProveError<R::Error>> {
        // A note the log signed holds a valid checkpoint; size 0 then refuses any index.
        let size = checkpoint
            .text()
            .parse::<Checkpoint>()
            .map_or(0, |c| c.size());
        let proof = prove_inclusion(size, index, reader)?;
        Ok(TlogProof::new(index, proof, checkpoint))
    }

    /// Adds opaque extra data (the spec's `extra` line).
    pub fn with_extra(mut self, extra: Vec<u8>) -> Self {
        self.extra = Some(extra);
        self
    }

    /// The entry's index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The extra data, if any: unauthenticated.
    pub fn extra(&self) -> Option<&[u8]> {
        self.extra.as_deref()
    }

    /// The inclusion proof's hashes.
    pub fn hashes(&self) -> &[Hash] {
        &self.proof
    }

    /// The signed checkpoint, with every signature it carries (witnesses' too).
    pub fn checkpoint(&self) -> &SignedNote {
        &self.checkpoint
    }

    /// Checks that `leaf` is entry `index` of the log `origin` whose key is `log_key`;
    /// returns the checkpoint it was proved under.
    pub fn verify(
        &self,
        leaf: Hash,
        origin: &str,
        log_key: &VerifierKey,
    ) -> Result<Checkpoint, TlogProofError> {
        let (checkpoint, _) =
            Checkpoint::open(self.checkpoint.to_string().as_bytes(), origin, log_key)?;
        verify_inclusion(
            &self.proof,
            checkpoint.size(),
            self.index,
            leaf,
            checkpoint.root(),
        )?;
        Ok(checkpoint)
    }

    /// Parses a proof's bytes (syntax only).
    pub fn parse(bytes: &[u8]) -> Result<Self, TlogProofError> {
        // The header and 64 hashes take under 4 KiB; the checkpoint is a note.
        if bytes.len() > MAX_NOTE_BYTES + 4096 {
            return Err(TlogProofError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| TlogProofError::NotUtf8)?;
        let (head, checkpoint) = text
            .split_once("\n\n")
            .ok_or(TlogProofError::NoCheckpoint)?;
        let mut lines = head.split('\n').peekable();
        if lines.next() != Some(HEADER) {
            return Err(TlogProofError::MissingHeader);
        }
        let extra = match lines.peek().and_then(|line| line.strip_prefix("extra ")) {
            Some(encoded) => {
                let extra = BASE64
                    .decode(encoded)
                    .map_err(|_| TlogProofError::InvalidExtra)?;
                lines.next();
                Some(extra)
            }
            None => None,
        };
        let index = lines
            .next()
            .and_then(|line| line.strip_prefix("index "))
            .and_then(|n| parse_size(n).ok())
            .ok_or(TlogProofError::InvalidIndex)?;
        let proof = parse_hashes(lines)?;
        Ok(TlogProof {
            extra,
            index,
            proof,
            checkpoint: SignedNote::parse(checkpoint.as_bytes())?,
        })
    }
}

fn parse_hashes<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Vec<Hash>, TlogProofError> {
    let mut proof = Vec::new();
    for line in lines {
        if proof.len() == MAX_PROOF_HASHES {
            return Err(TlogProofError::TooManyHashes);
        }
        let hash = line
            .parse()
            .map_err(|_| TlogProofError::InvalidHash(line.chars().take(100).collect()))?;
        proof.push(hash);
    }
    Ok(proof)
}

impl fmt::Display for TlogProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{HEADER}")?;
        if let Some(extra) = &self.extra {
            writeln!(f, "extra {}", BASE64.encode(extra))?;
        }
        writeln!(f, "index {}", self.index)?;
        for hash in &self.proof {
            writeln!(f, "{hash}")?;
        }
        write!(f, "\n{}", self.checkpoint)
    }
}

impl FromStr for TlogProof {
    type Err = TlogProofError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TlogProof::parse(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::checkpoint::CosignerKey;
    use crate::tlog::merkle::{leaf_hash, tree_hash};
    use crate::tlog::note::{self, SignerKey};
    use crate::tlog::test_support::{stored_log, Rng};

    const ORIGIN: &str = "cache.example.com/log";

    fn entry(i: u64) -> Vec<u8> {
        format!("quorate/decision/v1 {i}\n").into_bytes()
    }

    fn log(size: u64) -> (SignerKey, Vec<Hash>, SignedNote) {
        let key = SignerKey::from_seed(ORIGIN, &[9; 32]).expect("valid name");
        let stored = stored_log((0..size).map(entry));
        let root = tree_hash(size, &stored).expect("stored");
        let checkpoint = Checkpoint::new(ORIGIN, size, root).expect("valid");
        let signed = checkpoint.sign(&key).expect("small");
        (key, stored, signed)
    }

    #[test]
    fn proofs_of_every_entry_verify_and_round_trip_through_their_text() {
        let mut rng = Rng::new(1);
        for size in [1, 2, 3, 7, 8, 100, 257] {
            let (key, stored, signed) = log(size);
            for _ in 0..5 {
                let index = rng.below(size);
                let proof = TlogProof::prove(index, signed.clone(), &stored).expect("in tree");
                let text = proof.to_string();
                assert!(text.starts_with(&format!("{HEADER}\nindex {index}\n")));
                assert!(text.ends_with(&signed.to_string()));
                let parsed: TlogProof = text.parse().expect("own output");
                assert_eq!(parsed, proof);
                let leaf = leaf_hash(&entry(index));
                let checkpoint = parsed.verify(leaf, ORIGIN, &key.verifier()).expect("valid");
                assert_eq!(checkpoint.size(), size);
                let wrong = leaf_hash(&entry(index + 1));
                assert!(matches!(
                    parsed.verify(wrong, ORIGIN, &key.verifier()),
                    Err(TlogProofError::Inclusion(_))
                ));
            }
        }
    }

    #[test]
    fn extra_data_and_cosignatures_survive_the_text_form() {
        let (key, stored, signed) = log(10);
        let witness = CosignerKey::from_seed("witness.example", &[5; 32]).expect("valid");
        let checkpoint: Checkpoint = signed.text().parse().expect("valid");
        let mut cosigned = signed.clone();
        cosigned.add_signature(
            witness
                .cosign(&checkpoint, 1_700_000_000)
                .expect("in range"),
        );
        let proof = TlogProof::prove(4, cosigned, &stored)
            .expect("in tree")
            .with_extra(b"age-v1.2.1-darwin-arm64.tar.gz".to_vec());
        let text = proof.to_string();
        assert!(text.contains("\nextra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6\nindex 4\n"));
        let parsed: TlogProof = text.parse().expect("own output");
        assert_eq!(parsed.extra(), Some(&b"age-v1.2.1-darwin-arm64.tar.gz"[..]));
        assert!(parsed
            .verify(leaf_hash(&entry(4)), ORIGIN, &key.verifier())
            .is_ok());
        let witnessed = note::open(
            parsed.checkpoint().to_string().as_bytes(),
            &[&witness.verifier()],
        );
        assert_eq!(witnessed.map(|o| o.verified.len()), Ok(1));
    }

    #[test]
    fn a_proof_under_another_key_origin_or_index_fails() {
        let (key, stored, signed) = log(20);
        let proof = TlogProof::prove(3, signed, &stored).expect("in tree");
        let leaf = leaf_hash(&entry(3));
        let stranger = SignerKey::from_seed(ORIGIN, &[8; 32]).expect("valid");
        assert!(matches!(
            proof.verify(leaf, ORIGIN, &stranger.verifier()),
            Err(TlogProofError::Checkpoint(_))
        ));
        assert!(matches!(
            proof.verify(leaf, "other.example/log", &key.verifier()),
            Err(TlogProofError::Checkpoint(
                CheckpointError::WrongOrigin { .. }
            ))
        ));
        let moved = proof.to_string().replace("index 3\n", "index 2\n");
        let moved: TlogProof = moved.parse().expect("well-formed");
        assert!(moved.verify(leaf, ORIGIN, &key.verifier()).is_err());
        let beyond = proof.to_string().replace("index 3\n", "index 20\n");
        assert!(matches!(
            beyond
                .parse::<TlogProof>()
                .map(|p| p.verify(leaf, ORIGIN, &key.verifier())),
            Ok(Err(TlogProofError::Inclusion(
                VerifyError::IndexOutOfRange { .. }
            )))
        ));
    }

    #[test]
    fn malformed_proofs_are_refused_and_no_truncation_panics() {
        let (key, stored, signed) = log(20);
        let text = TlogProof::prove(3, signed, &stored)
            .expect("in tree")
            .with_extra(vec![1, 2, 3])
            .to_string();
        let lines: Vec<&str> = text.split('\n').collect();
        let hash_line = lines[3];
        type Expectation = fn(&TlogProofError) -> bool;
        let cases: [(String, Expectation); 8] = [
            (text.replacen(HEADER, "c2sp.org/tlog-proof@v2", 1), |e| {
                *e == TlogProofError::MissingHeader
            }),
            (text.replacen("extra AQID", "extra !!", 1), |e| {
                *e == TlogProofError::InvalidExtra
            }),
            (text.replacen("index 3", "index 03", 1), |e| {
                *e == TlogProofError::InvalidIndex
            }),
            (text.replacen("index 3\n", "", 1), |e| {
                *e == TlogProofError::InvalidIndex
            }),
            (text.replacen(hash_line, "AAAA", 1), |e| {
                matches!(e, TlogProofError::InvalidHash(_))
            }),
            (
                text.replacen(hash_line, &format!("{hash_line}\n").repeat(65), 1),
                |e| *e == TlogProofError::TooManyHashes,
            ),
            // Without the blank line, the checkpoint's origin is read as a hash.
            (text.replacen("\n\n", "\n", 1), |e| {
                matches!(e, TlogProofError::InvalidHash(_))
            }),
            (format!("{HEADER}\nindex 0\n"), |e| {
                *e == TlogProofError::NoCheckpoint
            }),
        ];
        for (bad, expected) in cases {
            let error = bad.parse::<TlogProof>().expect_err(&bad);
            assert!(expected(&error), "{error:?}");
        }
        let leaf = leaf_hash(&entry(3));
        for end in 0..text.len() {
            let verified = TlogProof::parse(&text.as_bytes()[..end])
                .and_then(|p| p.verify(leaf, ORIGIN, &key.verifier()));
            assert!(verified.is_err(), "{end}");
            let _ = TlogProof::parse(&text.as_bytes()[end..]);
        }
        assert_eq!(
            TlogProof::parse(&[0xff, b'\n', b'\n']),
            Err(TlogProofError::NotUtf8)
        );
    }

    #[test]
    fn random_byte_changes_never_panic_and_never_move_the_proof() {
        let (key, stored, signed) = log(50);
        let text = TlogProof::prove(17, signed, &stored)
            .expect("in tree")
            .to_string()
            .into_bytes();
        let mut rng = Rng::new(2);
        for _ in 0..3000 {
            let mut bytes = text.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.next() as u8;
            }
            let Ok(proof) = TlogProof::parse(&bytes) else {
                continue;
            };
            let note = note::open(
                proof.checkpoint().to_string().as_bytes(),
                &[&key.verifier()],
            );
            let _ = note.map(|o| o.note.text().parse::<Checkpoint>());
            // Whatever still verifies proves entry 17 of this very log.
            if proof
                .verify(leaf_hash(&entry(17)), ORIGIN, &key.verifier())
                .is_ok()
            {
                assert_eq!(proof.index(), 17);
            }
        }
    }
}
