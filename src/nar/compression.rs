//! A streaming decoder for each NAR compression a narinfo may name (the names themselves are
//! `quorate_core::protocol::compression`).

use std::io::{BufRead, Read};

pub use quorate_core::protocol::compression::Compression;

use crate::limits::{LZIP_MEM_LIMIT_KIB, XZ_MEM_LIMIT_KIB};

/// Buffer brotli reads its input into (it takes a plain `Read`, not a `BufRead`).
const BROTLI_BUFFER: usize = 64 * 1024;

/// A streaming decoder for each narinfo compression.
pub trait Decode {
    /// A streaming decoder that yields the NAR bytes compressed in `source`.
    ///
    /// `source` is a `BufRead` so that the decoders that can (zstd, bzip2, gzip) read
    /// straight out of its buffer instead of copying into a second one. Multi-stream
    /// inputs (concatenated xz streams, zstd frames, bzip2 streams, gzip and lzip members)
    /// decode as one NAR, as the command-line tools do.
    fn decoder<'a, R>(self, source: R) -> std::io::Result<Box<dyn Read + Send + 'a>>
    where
        R: BufRead + Send + 'a;
}

impl Decode for Compression {
    fn decoder<'a, R>(self, source: R) -> std::io::Result<Box<dyn Read + Send + 'a>>
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
            Compression::Brotli => Box::new(brotli::Decompressor::new(
                StandardBrotliWindow {
                    source,
                    checked: false,
                },
                BROTLI_BUFFER,
            )),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(source)),
            Compression::Lzip => Box::new(LimitedLzipReader {
                source,
                stream: lzma_rust2::LzipStream::new_mem_limit(true, LZIP_MEM_LIMIT_KIB),
                done: false,
            }),
        })
    }
}

/// Roughly how many NAR bytes per second one core decodes from `compression` (measured
/// order of magnitude on x86_64: zstd and brotli are fast, gzip a few hundred MB/s, xz, lzip
/// and bzip2 far slower). What ranking NAR sources needs: `none` costs nothing to decode,
/// and a small xz file can still lose to a larger zstd or uncompressed one on a fast link.
pub fn decode_bytes_per_sec(compression: Compression) -> f64 {
    const MIB: f64 = 1024.0 * 1024.0;
    match compression {
        Compression::None => f64::INFINITY,
        Compression::Zstd => 1500.0 * MIB,
        Compression::Brotli => 500.0 * MIB,
        Compression::Gzip => 400.0 * MIB,
        Compression::Xz | Compression::Lzip => 120.0 * MIB,
        Compression::Bzip2 => 50.0 * MIB,
    }
}

/// Refuses "Large Window Brotli" streams, letting standard ones through unchanged.
///
/// brotli-decompressor's reader accepts the large-window extension (windows up to 1 GiB,
/// allocated up front), which libbrotli, and so Nix, only decodes when asked to: 17 bytes of
/// upstream NAR made quorate allocate 512 MiB (found by fuzz/fuzz_targets/nar_stream.rs).
/// A standard stream's window is at most 16 MiB. The extension is announced by the stream's
/// first byte (WBITS bits 1, 000, 001: `0x11` in its low seven bits), so checking that byte
/// is exactly libbrotli's default.
struct StandardBrotliWindow<R> {
    source: R,
    /// The first byte has been seen (and was not the large-window signature).
    checked: bool,
}

impl<R: BufRead> Read for StandardBrotliWindow<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.checked {
            let first = self.source.fill_buf()?.first().copied();
            match first {
                Some(byte) if byte & 0x7f == 0x11 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "large-window brotli stream (not standard brotli)",
                    ))
                }
                Some(_) => self.checked = true,
                // Nothing yet: the decoder reports the empty stream.
                None => {}
            }
        }
        // Fill the decoder's buffer whole (short only at the end of the stream):
        // brotli-decompressor can fail on a valid stream whose input arrives in small reads
        // (found by fuzz/fuzz_targets/nar_stream.rs: 1-byte reads, "Invalid Data" where the
        // same bytes in one piece decode), and the network's chunking must not change what a
        // stream decodes to. Given full reads, it sees the input as from a file.
        let mut filled = 0;
        while filled < buf.len() {
            match self.source.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if filled > 0 => {
                    // Hand over what came first; the error comes back on the next read.
                    let _ = e;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nar::test_nar::{compress, generated_nar};

    /// A source handing over one byte per read, as a network may at chunk boundaries.
    struct OneByte<'a>(&'a [u8]);

    impl std::io::BufRead for OneByte<'_> {
        fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
            Ok(&self.0[..self.0.len().min(1)])
        }

        fn consume(&mut self, n: usize) {
            self.0 = &self.0[n.min(self.0.len())..];
        }
    }

    impl Read for OneByte<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(out.len()).min(1);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_brotli_stream_decodes_the_same_in_one_byte_reads_as_in_one_piece() {
        // Found by the nar_stream fuzz target: brotli-decompressor refused this valid stream
        // ("Invalid Data" after 247 of its 258 bytes) when its input came a byte at a time.
        let input = include_bytes!("../../fuzz/corpus/nar_stream/regress-brotli-1-byte-reads");
        let data = &input[3..]; // the fuzz target's selector, mode and chunk bytes
        let decode = |source: Box<dyn BufRead + Send + '_>| {
            let mut out = Vec::new();
            Compression::Brotli
                .decoder(source)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map(|_| out)
        };
        let whole = decode(Box::new(std::io::Cursor::new(data))).expect("decodes in one piece");
        assert_eq!(whole.len(), 258);
        let bytewise = decode(Box::new(OneByte(data))).expect("decodes a byte at a time");
        assert!(bytewise == whole);
        for compression in Compression::ALL {
            let nar = generated_nar(100_000, 3);
            let compressed = compress(compression, &nar);
            let mut out = Vec::new();
            compression
                .decoder(OneByte(&compressed))
                .and_then(|mut d| d.read_to_end(&mut out))
                .unwrap_or_else(|e| panic!("{compression} in 1-byte reads: {e}"));
            assert!(out == nar, "{compression} in 1-byte reads");
        }
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
    fn a_large_window_brotli_stream_is_refused_before_allocating_its_window() {
        // Found by fuzz/fuzz_targets/nar_stream.rs: these 17 bytes announce a 512 MiB
        // large-window brotli stream, which brotli-decompressor allocated up front.
        let stream = [
            0x11, 0x1d, 0x3e, 0x04, 0xd4, 0x42, 0x05, 0xd0, 0xec, 0x61, 0x50, 0xed, 0x71, 0x2f,
            0xc4, 0x1b, 0x05,
        ];
        let mut out = Vec::new();
        let err = Compression::Brotli
            .decoder(std::io::Cursor::new(stream))
            .and_then(|mut d| d.read_to_end(&mut out))
            .expect_err("large-window brotli must be refused");
        assert!(err.to_string().contains("large-window"), "{err}");
        assert!(out.is_empty());
        // Every standard window size still decodes.
        let nar = generated_nar(20_000, 4);
        for window in 10..=24 {
            let mut compressed = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut compressed, 4096, 5, window);
                std::io::Write::write_all(&mut w, &nar).expect("brotli");
            }
            let mut out = Vec::new();
            Compression::Brotli
                .decoder(std::io::Cursor::new(compressed))
                .and_then(|mut d| d.read_to_end(&mut out))
                .unwrap_or_else(|e| panic!("window {window}: {e}"));
            assert!(out == nar, "window {window}");
        }
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
