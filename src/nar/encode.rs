//! On-the-fly compression of a NAR stream for clients (Guix asks for zstd).
//!
//! Compression wraps a stream that is already safe to serve (the local store, or a fetch whose
//! final byte is withheld until verified): the compressed frame can only be completed after
//! the last verified byte, so a client still never holds a complete wrong NAR. An error in the
//! input ends the output with that error, aborting the HTTP response.

use std::io::{self, Write};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};

/// zstd level for on-the-fly compression: fast, and already far smaller than a NAR.
const ZSTD_LEVEL: i32 = 3;

/// Compress `input` as one zstd frame, chunk by chunk; memory stays one chunk plus the
/// encoder's window.
pub fn zstd_encode(
    input: BoxStream<'static, io::Result<Bytes>>,
) -> BoxStream<'static, io::Result<Bytes>> {
    enum State {
        Running(
            Box<zstd::stream::write::Encoder<'static, Vec<u8>>>,
            BoxStream<'static, io::Result<Bytes>>,
        ),
        Done,
    }
    let encoder = match zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL) {
        Ok(e) => e,
        Err(e) => return stream::once(async move { Err(e) }).boxed(),
    };
    stream::unfold(
        State::Running(Box::new(encoder), input),
        |state| async move {
            let State::Running(mut encoder, mut input) = state else {
                return None;
            };
            loop {
                match input.next().await {
                    Some(Ok(chunk)) => {
                        if let Err(e) = encoder.write_all(&chunk) {
                            return Some((Err(e), State::Done));
                        }
                        let out = std::mem::take(encoder.get_mut());
                        if !out.is_empty() {
                            return Some((Ok(Bytes::from(out)), State::Running(encoder, input)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), State::Done)),
                    None => {
                        return match encoder.finish() {
                            Ok(rest) => Some((Ok(Bytes::from(rest)), State::Done)),
                            Err(e) => Some((Err(e), State::Done)),
                        }
                    }
                }
            }
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn zstd_output_decodes_to_the_input() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let chunks: Vec<io::Result<Bytes>> = data
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let out: Vec<Bytes> = zstd_encode(stream::iter(chunks).boxed())
            .map(|r| r.unwrap())
            .collect()
            .await;
        let compressed: Vec<u8> = out.concat();
        assert!(compressed.len() < data.len());
        assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), data);
    }

    #[tokio::test]
    async fn an_input_error_ends_the_output_with_an_error_and_no_complete_frame() {
        let chunks: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from(vec![1u8; 500_000])),
            Err(io::Error::other("hash mismatch")),
        ];
        let out: Vec<io::Result<Bytes>> = zstd_encode(stream::iter(chunks).boxed()).collect().await;
        assert!(out.last().unwrap().is_err());
        let partial: Vec<u8> = out
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .flat_map(|b| b.to_vec())
            .collect();
        assert!(zstd::decode_all(&partial[..]).is_err());
    }
}
