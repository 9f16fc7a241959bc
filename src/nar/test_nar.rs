//! Test data for the NAR tests: real NAR serialisations of generated files, compressed
//! with the real encoders, and fed back as chunked byte streams the way an HTTP body is.

use std::io::Write;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use sha2::{Digest, Sha256};

use super::{Compression, Expected};

/// Deterministic xorshift64*: fast enough to generate 100 MiB in a debug build, and the
/// same seed always gives the same NAR.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `out` with incompressible bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// NAR string: little-endian u64 length, bytes, zero padding to 8.
fn nar_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.resize(out.len() + (8 - s.len() % 8) % 8, 0);
}

/// The NAR of a single regular file holding `contents`.
pub fn nar_of_file(contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 128);
    for token in ["nix-archive-1", "(", "type", "regular", "contents"] {
        nar_str(&mut out, token.as_bytes());
    }
    nar_str(&mut out, contents);
    nar_str(&mut out, b")");
    out
}

/// A NAR of a file of roughly `len` bytes that compresses like real store contents:
/// words from a small vocabulary mixed with runs of random bytes.
pub fn generated_nar(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "/nix/store/",
        "lib",
        "bin/",
        "share/man/",
        "ELF",
        "\0\0\0\0",
        "glibc-2.39 ",
        "x86_64",
        "#!/bin/sh\n",
        "export PATH=",
        ".so.6",
        "\n",
    ];
    let mut rng = Prng::new(seed);
    let mut contents = Vec::with_capacity(len + 64);
    while contents.len() < len {
        let pick = rng.next_u64();
        if pick % 5 == 0 {
            let mut noise = [0u8; 24];
            rng.fill(&mut noise);
            contents.extend_from_slice(&noise);
        } else {
            contents.extend_from_slice(WORDS[(pick >> 8) as usize % WORDS.len()].as_bytes());
        }
    }
    contents.truncate(len);
    nar_of_file(&contents)
}

/// `data` compressed by the real encoder for `compression`.
pub fn compress(compression: Compression, data: &[u8]) -> Vec<u8> {
    fn write_all<W: Write>(mut w: W, data: &[u8]) -> W {
        w.write_all(data).expect("compressing into memory");
        w
    }
    match compression {
        Compression::None => data.to_vec(),
        Compression::Xz => {
            let w = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(6))
                .expect("xz encoder");
            write_all(w, data).finish().expect("xz finish")
        }
        Compression::Lzip => {
            let w =
                lzma_rust2::LzipWriter::new(Vec::new(), lzma_rust2::LzipOptions::with_preset(6));
            write_all(w, data).finish().expect("lzip finish")
        }
        Compression::Zstd => zstd::encode_all(data, 3).expect("zstd"),
        Compression::Bzip2 => {
            let w = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            write_all(w, data).finish().expect("bzip2 finish")
        }
        Compression::Brotli => {
            let w = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
            write_all(w, data).into_inner()
        }
        Compression::Gzip => {
            let w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            write_all(w, data).finish().expect("gzip finish")
        }
    }
}

/// What a narinfo would advertise for `nar`.
pub fn expected_for(nar: &[u8]) -> Expected {
    Expected {
        nar_hash: quorate_core::protocol::nar_hash::NarHash::from_digest(
            Sha256::digest(nar).into(),
        ),
        nar_size: nar.len() as u64,
    }
}

/// `data` as an HTTP-body-like stream of `chunk`-sized pieces (cheap slices of one buffer).
pub fn chunked(data: impl Into<Bytes>, chunk: usize) -> BoxStream<'static, Result<Bytes, String>> {
    let data: Bytes = data.into();
    let pieces: Vec<Result<Bytes, String>> = (0..data.len())
        .step_by(chunk)
        .map(|at| Ok(data.slice(at..(at + chunk).min(data.len()))))
        .collect();
    stream::iter(pieces).boxed()
}
