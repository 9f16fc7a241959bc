//! The NAR stream checker: a hostile upstream's compressed bytes through quorate's decoder for
//! the announced compression and the fetch's decode-count-hash-verify step
//! (`quorate::nar::check_decoded`, the code a fetch runs minus its temp file).
//!
//! Input: `[compression, mode, chunk, compressed stream...]`:
//! - `compression` picks one of the seven decoders (`Compression::ALL`, modulo);
//! - `mode` picks what the narinfo claims: the true NarSize and NarHash of the stream (when it
//!   decodes, to at most `CAP` bytes), one byte more or less, a flipped hash bit, or a
//!   size of its own with a hash nobody computed;
//! - `chunk` is how many bytes the network hands over at a time (0: everything at once).
//!
//! Properties:
//! - nothing panics;
//! - never more than NarSize + 1 decoded bytes are read, whatever the stream inflates to;
//! - a stream is accepted only if decoding all of it, in one piece, gives exactly NarSize
//!   bytes hashing to NarHash (chunking must not change what a stream decodes to);
//! - a stream that decodes to the claimed NAR is accepted;
//! - memory stays bounded: libFuzzer's `-malloc_limit_mb`/`-rss_limit_mb` (scripts/fuzz.sh)
//!   fail any input that makes a decoder allocate past its documented limit.
#![no_main]

use std::io::{self, BufRead, Read};

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

use quorate::nar::{check_decoded, Compression, Decode, Expected, NarError};
use quorate_core::protocol::nar_hash::NarHash;

/// The most decoded bytes the reference decode keeps; beyond it, the true NAR is not known
/// and the claim is made up.
const CAP: u64 = 256 << 10;

/// A compressed stream as the network delivers it: at most `chunk` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl BufRead for Chunked<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let n = self.data.len().min(self.chunk);
        Ok(&self.data[..n])
    }

    fn consume(&mut self, amount: usize) {
        self.data = &self.data[amount.min(self.data.len())..];
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Counts the decoded bytes handed to the checker.
struct Counted<R> {
    inner: R,
    total: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.total += n as u64;
        Ok(n)
    }
}

/// The whole stream decoded in one piece: `Ok(Some(nar))`, `Ok(None)` past `CAP`, or the
/// decoder's error.
fn decode_whole(compression: Compression, data: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let decoder = compression.decoder(io::Cursor::new(data))?;
    let mut nar = Vec::new();
    decoder.take(CAP + 1).read_to_end(&mut nar)?;
    Ok((nar.len() as u64 <= CAP).then_some(nar))
}

fn hash_of(bytes: &[u8]) -> NarHash {
    NarHash::from_digest(Sha256::digest(bytes).into())
}

fuzz_target!(|input: &[u8]| {
    let [selector, mode, chunk, data @ ..] = input else {
        return;
    };
    let compression = Compression::ALL[usize::from(*selector) % Compression::ALL.len()];
    let chunk = match *chunk {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let whole = decode_whole(compression, data);
    let truth = match &whole {
        Ok(Some(nar)) => Some(Expected {
            nar_hash: hash_of(nar),
            nar_size: nar.len() as u64,
        }),
        _ => None,
    };
    let made_up = Expected {
        nar_hash: hash_of(&[*mode]),
        nar_size: u64::from(*mode) * 61,
    };
    let expected = match (mode % 5, truth) {
        (0, Some(truth)) => truth,
        (1, Some(truth)) => Expected {
            nar_size: truth.nar_size + 1,
            ..truth
        },
        (2, Some(truth)) if truth.nar_size > 0 => Expected {
            nar_size: truth.nar_size - 1,
            ..truth
        },
        (3, Some(truth)) => {
            let mut digest = *truth.nar_hash.digest();
            digest[usize::from(*mode) % 32] ^= 1 << (mode % 8);
            Expected {
                nar_hash: NarHash::from_digest(digest),
                ..truth
            }
        }
        _ => made_up,
    };

    let source = Chunked { data, chunk };
    let decoder = match compression.decoder(source) {
        Ok(decoder) => decoder,
        Err(_) => {
            assert!(whole.is_err(), "the decoder refuses only what fails whole");
            return;
        }
    };
    let mut counted = Counted {
        inner: decoder,
        total: 0,
    };
    let verdict = check_decoded(&mut counted, expected);

    assert!(
        counted.total <= expected.nar_size.saturating_add(1),
        "read {} decoded bytes for a NarSize of {}",
        counted.total,
        expected.nar_size
    );
    match &verdict {
        Ok(count) => {
            assert_eq!(*count, expected.nar_size);
            let nar = match &whole {
                Ok(Some(nar)) => nar,
                other => panic!("accepted a stream that decodes whole to {other:?}"),
            };
            assert_eq!(nar.len() as u64, expected.nar_size);
            assert_eq!(hash_of(nar), expected.nar_hash);
        }
        Err(NarError::TooLarge { .. }) => {
            assert_eq!(counted.total, expected.nar_size + 1);
        }
        Err(NarError::SizeMismatch { actual, .. }) => {
            assert_ne!(*actual, expected.nar_size);
            assert_eq!(*actual, counted.total);
        }
        Err(_) => {}
    }
    if Some(expected) == truth {
        assert!(
            verdict.is_ok(),
            "{compression} stream in {chunk}-byte chunks refused: {verdict:?}"
        );
    }
});
