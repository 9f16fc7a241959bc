//! NAR compressions as narinfos name them, and a streaming decoder for each.
//!
//! The canonical string form is the narinfo's `Compression:` value (`Compression: zstd`);
//! [`FromStr`] and [`Display`](fmt::Display) both go through [`Compression::as_str`].
//! A narinfo without the field means bzip2; that default belongs to the narinfo parser.

use std::fmt;
use std::io::{BufRead, Read};
use std::str::FromStr;

use super::NarError;

/// Upper bound for an xz block's dictionary and decoder state, in KiB. xz headers are
/// upstream-controlled; without a bound a crafted header could ask for gigabytes. `xz -9`
/// (the largest preset, used by Hydra) needs 64 MiB, so 256 MiB leaves room for custom
/// settings.
const XZ_MEM_LIMIT_KIB: u32 = 256 * 1024;
/// The same bound for lzip: its header may ask for a 512 MiB dictionary, which an upstream
/// must not be able to make us allocate (`lzip -9` uses 32 MiB).
const LZIP_MEM_LIMIT_KIB: u32 = 256 * 1024;

/// Buffer brotli reads its input into (it takes a plain `Read`, not a `BufRead`).
const BROTLI_BUFFER: usize = 64 * 1024;

/// How an upstream compressed a NAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// `none`: the NAR bytes themselves.
    None,
    /// `xz` (Hydra's default).
    Xz,
    /// `zstd`.
    Zstd,
    /// `bzip2` (what a narinfo without `Compression:` means).
    Bzip2,
    /// `br` (brotli).
    Brotli,
    /// `gzip` (guix publish).
    Gzip,
    /// `lzip` (guix publish).
    Lzip,
}

impl Compression {
    /// Every compression, in narinfo-name order; handy for tests and listings.
    pub const ALL: [Compression; 7] = [
        Compression::None,
        Compression::Xz,
        Compression::Zstd,
        Compression::Bzip2,
        Compression::Brotli,
        Compression::Gzip,
        Compression::Lzip,
    ];

    /// The narinfo name: `none`, `xz`, `zstd`, `bzip2`, `br`, `gzip`, `lzip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Brotli => "br",
            Compression::Gzip => "gzip",
            Compression::Lzip => "lzip",
        }
    }

    /// A streaming decoder that yields the NAR bytes compressed in `source`.
    ///
    /// `source` is a `BufRead` so that the decoders that can (zstd, bzip2, gzip) read
    /// straight out of its buffer instead of copying into a second one. Multi-stream
    /// inputs (concatenated xz streams, zstd frames, bzip2 streams, gzip and lzip members)
    /// decode as one NAR, as the command-line tools do.
    pub fn decoder<'a, R>(self, source: R) -> std::io::Result<Box<dyn Read + Send + 'a>>
    where
        R: BufRead + Send + 'a,
    {
        Ok(match self {
            Compression::None => Box::new(source),
            Compression::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(
                source,
                true,
                XZ_MEM_LIMIT_KIB,
            )),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(source)?),
            Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(source)),
            Compression::Brotli => Box::new(brotli::Decompressor::new(source, BROTLI_BUFFER)),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(source)),
            Compression::Lzip => Box::new(LimitedLzipReader {
                source,
                stream: lzma_rust2::LzipStream::new_mem_limit(true, LZIP_MEM_LIMIT_KIB),
                done: false,
            }),
        })
    }
}

/// lzip decoding with a memory limit: lzma-rust2's `LzipReader` has none, so drive its
/// push-style `LzipStream` (which checks each member header against the limit) from a
/// `BufRead`.
struct LimitedLzipReader<R> {
    source: R,
    stream: lzma_rust2::LzipStream,
    done: bool,
}

impl<R: BufRead> Read for LimitedLzipReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while !self.done {
            let input = self.source.fill_buf()?;
            let action = if input.is_empty() {
                lzma_rust2::Action::Finish
            } else {
                lzma_rust2::Action::Run
            };
            let at_eof = input.is_empty();
            let res = self.stream.process(input, buf, action)?;
            self.source.consume(res.bytes_consumed);
            if res.status == lzma_rust2::Status::StreamEnd {
                self.done = true;
            }
            if res.bytes_produced > 0 {
                return Ok(res.bytes_produced);
            }
            if at_eof && !self.done {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "lzip stream ends early",
                ));
            }
        }
        Ok(0)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = NarError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| NarError::UnknownCompression(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nar::test_nar::{compress, generated_nar};

    #[test]
    fn narinfo_names_round_trip_through_from_str_and_display() {
        for compression in Compression::ALL {
            let name = compression.to_string();
            assert_eq!(name.parse::<Compression>().ok(), Some(compression));
        }
        assert_eq!("br".parse::<Compression>().ok(), Some(Compression::Brotli));
    }

    #[test]
    fn unknown_compression_is_an_error_naming_it() {
        let err = "lz4".parse::<Compression>().err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("unknown NAR compression \"lz4\""));
        assert!(
            "XZ".parse::<Compression>().is_err(),
            "names are case-sensitive"
        );
    }

    #[test]
    fn every_decoder_restores_the_nar_its_encoder_compressed() {
        let nar = generated_nar(300_000, 7);
        for compression in Compression::ALL {
            let compressed = compress(compression, &nar);
            let mut decoder = compression
                .decoder(std::io::Cursor::new(compressed))
                .unwrap_or_else(|e| panic!("{compression} decoder: {e}"));
            let mut out = Vec::new();
            decoder
                .read_to_end(&mut out)
                .unwrap_or_else(|e| panic!("{compression}: {e}"));
            assert!(out == nar, "{compression} did not round-trip");
        }
    }

    #[test]
    fn concatenated_streams_decode_as_one_nar() {
        let nar = generated_nar(100_000, 3);
        let (head, tail) = nar.split_at(40_000);
        for compression in [
            Compression::Xz,
            Compression::Zstd,
            Compression::Bzip2,
            Compression::Gzip,
            Compression::Lzip,
        ] {
            let mut joined = compress(compression, head);
            joined.extend(compress(compression, tail));
            let mut out = Vec::new();
            compression
                .decoder(std::io::Cursor::new(joined))
                .and_then(|mut d| d.read_to_end(&mut out))
                .unwrap_or_else(|e| panic!("{compression}: {e}"));
            assert!(out == nar, "{compression} stopped after the first stream");
        }
    }

    #[test]
    fn an_lzip_header_asking_for_a_huge_dictionary_is_refused_before_allocating() {
        // A real member, then its dictionary-size byte rewritten to 2^29 = 512 MiB.
        let mut member = compress(Compression::Lzip, &generated_nar(10_000, 1));
        member[5] = 0x1d;
        let mut out = Vec::new();
        let err = Compression::Lzip
            .decoder(std::io::Cursor::new(member))
            .and_then(|mut d| d.read_to_end(&mut out))
            .expect_err("a 512 MiB dictionary must be refused");
        assert!(out.is_empty(), "{err}");
    }

    #[test]
    fn a_truncated_lzip_stream_is_an_error() {
        let member = compress(Compression::Lzip, &generated_nar(50_000, 2));
        let mut out = Vec::new();
        let res = Compression::Lzip
            .decoder(std::io::Cursor::new(&member[..member.len() / 2]))
            .and_then(|mut d| d.read_to_end(&mut out));
        assert!(res.is_err());
    }
}
