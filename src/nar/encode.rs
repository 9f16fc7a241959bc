//! Compression of NARs for clients: on the fly (a stream, for Guix's `nar/zstd/...` while no
//! stored copy exists), and the stored zstd copy made once beside a verified NAR
//! (`nar_compression = "zstd"`, [`compress_stored_blocking`]).
//!
//! Compression wraps a stream that is already safe to serve (the local store, or a fetch whose
//! final byte is withheld until verified): the compressed frame can only be completed after
//! the last verified byte, so a client still never holds a complete wrong NAR. An error in the
//! input ends the output with that error, aborting the HTTP response.

use std::io::{self, Write};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use quorate_core::flavor::CompressedNar;
use quorate_core::protocol::nar_hash::NarHash;
use sha2::{Digest, Sha256};

use super::store::CompressionClaim;

/// zstd level for on-the-fly compression: fast, and already far smaller than a NAR.
const ZSTD_LEVEL: i32 = 3;

/// zstd level of the stored copy: made once and served many times, so it may cost more
/// than on the fly; decompression speed hardly depends on it.
const STORED_ZSTD_LEVEL: i32 = 9;

/// Makes the zstd copy of the stored, verified NAR that `claim` names, beside it: compressed
/// from the store's file into a temp file while hashing the output, fsynced, then renamed
/// into place (the store's one way in). `Ok(None)` when the NAR left the store meanwhile.
/// Blocking: run it on the blocking pool.
pub fn compress_stored_blocking(claim: CompressionClaim) -> io::Result<Option<CompressedNar>> {
    let (store, key) = (&*claim.store, &claim.key);
    let Some((mut nar, _)) = store.open_nar_blocking(key)? else {
        return Ok(None);
    };
    let (temp, file) = store.create_temp(key)?;
    let written = (|| {
        let mut out = HashingWriter {
            inner: io::BufWriter::new(file),
            hasher: Sha256::new(),
            len: 0,
        };
        let mut encoder = zstd::stream::write::Encoder::new(&mut out, STORED_ZSTD_LEVEL)?;
        io::copy(&mut nar, &mut encoder)?;
        encoder.finish()?;
        let file = out.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let copy = CompressedNar {
            file_hash: NarHash::from_digest(out.hasher.finalize().into()),
            file_size: out.len,
        };
        Ok::<_, io::Error>(copy)
    })();
    let committed = written.and_then(|copy| {
        let kept = store.commit_compressed_blocking(key, &temp, copy)?;
        Ok(kept.then_some(copy))
    });
    if committed.is_err() {
        // Best effort: a leftover temp file is cleared at the next start anyway.
        let _ = std::fs::remove_file(&temp);
    }
    committed
}

/// Passes bytes on to `inner`, hashing and counting them: the compressed file's FileHash and
/// FileSize come from the bytes as written, not from reading the file back.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

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
    use crate::nar::NarStore;
    use quorate_core::protocol::nar_hash::NarKey;
    use std::sync::Arc;

    /// Claims and makes NAR `key`'s copy, as the service does.
    fn compress(store: &Arc<NarStore>, key: &NarKey) -> Option<CompressedNar> {
        let claim = store.claim_compression(key)?;
        // A second claim while the first is held gets nothing: one making per NAR.
        assert!(store.claim_compression(key).is_none());
        compress_stored_blocking(claim).expect("io")
    }

    #[test]
    fn the_stored_copy_decodes_to_the_nar_and_its_name_and_size_say_what_it_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(NarStore::open(dir.path().to_owned(), None).expect("open"));
        let nar: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let key = NarHash::from_digest(Sha256::digest(&nar).into()).key();
        let (temp, mut file) = store.create_temp(&key).expect("temp");
        file.write_all(&nar).expect("write");
        store
            .commit_blocking(&key, &temp, nar.len() as u64)
            .expect("commit");

        let copy = compress(&store, &key).expect("made");
        assert_eq!(store.compressed(&key), Some(copy));
        let path = dir.path().join(NarStore::compressed_location(&key, &copy));
        let bytes = std::fs::read(&path).expect("copy");
        assert_eq!(bytes.len() as u64, copy.file_size);
        assert_eq!(
            NarHash::from_digest(Sha256::digest(&bytes).into()),
            copy.file_hash
        );
        assert_eq!(zstd::decode_all(&bytes[..]).expect("zstd"), nar);
        assert_eq!(store.total_size(), nar.len() as u64 + copy.file_size);
        // Once made, never again; and not for a NAR the store does not hold.
        assert!(store.claim_compression(&key).is_none());
        let absent = NarHash::from_digest([1; 32]).key();
        assert!(store.claim_compression(&absent).is_none());

        // The same NAR committed again (two fetches racing) keeps its copy: same bytes.
        let (temp, mut file) = store.create_temp(&key).expect("temp");
        file.write_all(&nar).expect("write");
        store
            .commit_blocking(&key, &temp, nar.len() as u64)
            .expect("recommit");
        assert_eq!(store.compressed(&key), Some(copy));
        assert_eq!(store.total_size(), nar.len() as u64 + copy.file_size);

        // A restart finds the copy by its name alone.
        drop(store);
        let store = NarStore::open(dir.path().to_owned(), None).expect("reopen");
        assert_eq!(store.compressed(&key), Some(copy));
    }

    #[test]
    fn a_copy_goes_with_its_nar_on_eviction_and_without_it_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(NarStore::open(dir.path().to_owned(), Some(3_500_000)).expect("open"));
        let put = |fill: u8| {
            let nar = vec![fill; 1_000_000];
            let key = NarHash::from_digest(Sha256::digest(&nar).into()).key();
            let (temp, mut file) = store.create_temp(&key).expect("temp");
            file.write_all(&nar).expect("write");
            store
                .commit_blocking(&key, &temp, 1_000_000)
                .expect("commit");
            key
        };
        let a = put(1);
        let copy = compress(&store, &a).expect("made");
        let copy_path = dir.path().join(NarStore::compressed_location(&a, &copy));
        assert!(copy_path.exists());
        put(2);
        put(3);
        assert!(store.compressed(&a).is_some());
        put(4); // over the bound: a, the least recently used, goes with its copy
        assert!(store.compressed(&a).is_none());
        assert!(!copy_path.exists());

        // A copy whose NAR vanished while the process was down is deleted at open.
        let b = put(5);
        let copy = compress(&store, &b).expect("made");
        let copy_path = dir.path().join(NarStore::compressed_location(&b, &copy));
        drop(store);
        let nar_path = dir.path().join(NarStore::location(&b));
        std::fs::remove_file(nar_path).expect("rm");
        let store = NarStore::open(dir.path().to_owned(), None).expect("reopen");
        assert!(store.compressed(&b).is_none());
        assert!(!copy_path.exists());
    }

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
