//! Fetch tests: real compressed NARs through the real pipeline, store and all.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use futures_util::FutureExt;
use sha2::{Digest, Sha256};
use std::future::Future;
use tokio::sync::Notify;

use super::{FetchSource, Inflight, NarFetcher, BATCH_CHUNKS, CHANNEL_CHUNKS};
use crate::nar::test_nar::{chunked, compress, expected_for, generated_nar, Prng};
use crate::nar::{Compression, Expected, NarError, NarStorage, NarStore};
use quorate_core::protocol::nar_hash::NarHash;

type Source = BoxStream<'static, Result<Bytes, String>>;

/// The only source of a fetch: `open`, compressed as `compression`.
fn one<F>(compression: Compression, open: F) -> Vec<FetchSource<String>>
where
    F: Future<Output = Result<Source, String>> + Send + 'static,
{
    vec![FetchSource {
        label: "upstream".into(),
        compression,
        open: open.boxed(),
    }]
}

fn setup(max_size: Option<u64>) -> (tempfile::TempDir, Arc<NarStore>, NarFetcher) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(NarStore::open(dir.path().to_owned(), max_size).expect("store"));
    let fetcher = NarFetcher::new(
        NarStorage::Local(Arc::clone(&store)),
        tokio_util::task::TaskTracker::new(),
    );
    (dir, store, fetcher)
}

/// A source whose upstream answers at once with `stream`.
async fn ready(stream: Source) -> Result<Source, String> {
    Ok(stream)
}

/// Everything a body yields: the bytes, and the error it ended with, if any.
async fn drain(inflight: Arc<Inflight>) -> (Vec<u8>, Option<io::Error>) {
    let mut body = Box::pin(inflight.body());
    let mut bytes = Vec::new();
    while let Some(item) = body.next().await {
        match item {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(err) => {
                assert!(body.next().await.is_none(), "nothing after the error");
                return (bytes, Some(err));
            }
        }
    }
    (bytes, None)
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("tmp")).expect("tmp dir").count()
}

/// `stream`, then a pause until `gate` opens, then the end: the fetch can decode every
/// byte but cannot verify (it needs the end of the stream) before the test says so.
fn gated(stream: Source, gate: Arc<Notify>) -> Source {
    let pause = stream::once(async move { gate.notified().await })
        .filter_map(|()| async { None::<Result<Bytes, String>> });
    stream.chain(pause).boxed()
}

fn flipped_hash(nar: &[u8]) -> Expected {
    let mut expected = expected_for(nar);
    let mut digest = *expected.nar_hash.digest();
    digest[0] ^= 1;
    expected.nar_hash = NarHash::from_digest(digest);
    expected
}

#[tokio::test]
async fn every_compression_streams_verifies_and_commits() {
    for (seed, compression) in Compression::ALL.into_iter().enumerate() {
        let (dir, store, fetcher) = setup(None);
        let nar = generated_nar(1 << 20, seed as u64);
        let compressed = compress(compression, &nar);
        let inflight = fetcher
            .fetch_or_join(
                expected_for(&nar),
                one(compression, ready(chunked(compressed, 7919))),
            )
            .inflight;
        let (body, err) = drain(Arc::clone(&inflight)).await;
        assert!(err.is_none(), "{compression}: {err:?}");
        assert!(body == nar, "{compression}: body differs");
        assert!(inflight.outcome().await.is_ok(), "{compression}");

        let (path, size) = store.lookup(&inflight.key()).await.expect("committed");
        assert_eq!(size, nar.len() as u64);
        assert!(std::fs::read(path).expect("stored NAR") == nar);
        assert_eq!(temp_files(dir.path()), 0, "{compression}");
        // A client arriving after the end still reads the whole NAR from the same fetch.
        let (late, err) = drain(inflight).await;
        assert!(err.is_none() && late == nar, "{compression}: late body");
    }
}

#[tokio::test]
async fn a_body_holds_back_the_last_byte_until_the_hash_is_verified() {
    let (_dir, _store, fetcher) = setup(None);
    let nar = generated_nar(600_000, 11);
    let gate = Arc::new(Notify::new());
    let source = gated(chunked(nar.clone(), 65536), Arc::clone(&gate));
    let inflight = fetcher
        .fetch_or_join(expected_for(&nar), one(Compression::None, ready(source)))
        .inflight;

    let mut body = Box::pin(Arc::clone(&inflight).body());
    let mut received = Vec::new();
    while received.len() < nar.len() - 1 {
        let chunk = body.next().await.expect("more").expect("bytes");
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received.len(), nar.len() - 1);
    let early = tokio::time::timeout(Duration::from_millis(200), body.next()).await;
    assert!(early.is_err(), "the last byte came before verification");

    gate.notify_one();
    let last = body.next().await.expect("last byte").expect("bytes");
    received.extend_from_slice(&last);
    assert!(body.next().await.is_none());
    assert!(received == nar);
    assert!(inflight.outcome().await.is_ok());
}

#[tokio::test]
async fn a_wrong_hash_fails_every_body_before_its_last_byte_and_commits_nothing() {
    let (dir, store, fetcher) = setup(None);
    let nar = generated_nar(600_000, 12);
    let gate = Arc::new(Notify::new());
    let source = gated(
        chunked(compress(Compression::Zstd, &nar), 4096),
        Arc::clone(&gate),
    );
    let expected = flipped_hash(&nar);
    let inflight = fetcher
        .fetch_or_join(expected, one(Compression::Zstd, ready(source)))
        .inflight;

    let mut body = Box::pin(Arc::clone(&inflight).body());
    let mut received = 0;
    while received < nar.len() - 1 {
        received += body.next().await.expect("more").expect("bytes").len();
    }
    gate.notify_one();
    let end = body.next().await.expect("an ending");
    assert!(end.is_err(), "a wrong NAR was completed");
    assert!(body.next().await.is_none());
    assert_eq!(received, nar.len() - 1);

    match inflight.outcome().await {
        Err(NarError::HashMismatch {
            expected: e,
            actual,
        }) => {
            assert_eq!(e, expected.nar_hash);
            assert_eq!(actual, NarHash::from_digest(Sha256::digest(&nar).into()));
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    assert!(store.lookup(&inflight.key()).await.is_none());
    assert_eq!(store.total_size(), 0);
    assert_eq!(temp_files(dir.path()), 0);
    // Late clients get the error, not the bytes.
    let (bytes, err) = drain(inflight).await;
    assert!(bytes.is_empty() && err.is_some());
}

#[tokio::test]
async fn more_bytes_than_nar_size_is_too_large() {
    let (dir, store, fetcher) = setup(None);
    let nar = generated_nar(300_000, 13);
    let claimed = Expected {
        nar_size: nar.len() as u64 - 100,
        ..expected_for(&nar[..nar.len() - 100])
    };
    let inflight = fetcher
        .fetch_or_join(claimed, one(Compression::None, ready(chunked(nar, 5000))))
        .inflight;
    let (bytes, err) = drain(Arc::clone(&inflight)).await;
    assert!(err.is_some());
    assert!((bytes.len() as u64) < claimed.nar_size);
    let outcome = inflight.outcome().await;
    assert!(
        matches!(outcome, Err(NarError::TooLarge { expected }) if expected == claimed.nar_size),
        "{outcome:?}"
    );
    assert!(store.lookup(&inflight.key()).await.is_none());
    assert_eq!(temp_files(dir.path()), 0);
}

/// 100 MiB of zeros through a streaming encoder: a few KiB (zstd) to 100 KiB (gzip).
fn bomb(compression: Compression) -> Vec<u8> {
    use std::io::Write;
    let zeros = vec![0u8; 1 << 20];
    let mut out = Vec::new();
    match compression {
        Compression::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(&mut out, 3).expect("zstd");
            (0..100).for_each(|_| encoder.write_all(&zeros).expect("zstd"));
            encoder.finish().expect("zstd");
        }
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(&mut out, flate2::Compression::best());
            (0..100).for_each(|_| encoder.write_all(&zeros).expect("gzip"));
            encoder.finish().expect("gzip");
        }
        other => unreachable!("no bomb for {other}"),
    }
    out
}

#[tokio::test]
async fn a_decompression_bomb_stops_one_byte_past_nar_size() {
    for (compression, piece) in [(Compression::Zstd, 16), (Compression::Gzip, 1024)] {
        let (dir, store, fetcher) = setup(None);
        let compressed = bomb(compression);
        let pieces = compressed.len().div_ceil(piece);
        let pulled = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&pulled);
        let source = chunked(compressed, piece)
            .inspect(move |_| {
                counted.fetch_add(1, Ordering::Relaxed);
            })
            .boxed();
        // The narinfo claims 1 MiB of zeros, which is indeed how the bomb starts.
        let claimed = expected_for(&vec![0u8; 1 << 20]);
        let inflight = fetcher
            .fetch_or_join(claimed, one(compression, ready(source)))
            .inflight;
        let outcome = inflight.outcome().await;
        assert!(
            matches!(outcome, Err(NarError::TooLarge { expected }) if expected == 1 << 20),
            "{compression}: {outcome:?}"
        );
        assert!(inflight.written() <= 1 << 20);
        let pulled = pulled.load(Ordering::Relaxed);
        // What decoding 1 MiB needs (a few pieces), what the channel buffers, the batch
        // the decoder works through and the one the pump holds: not the other ~99 MiB.
        assert!(
            pulled <= CHANNEL_CHUNKS + 2 * BATCH_CHUNKS + 8 && pieces >= 100,
            "{compression}: read {pulled} of {pieces} pieces of a bomb"
        );
        assert!(store.lookup(&inflight.key()).await.is_none());
        assert_eq!(temp_files(dir.path()), 0);
    }
}

#[tokio::test]
async fn fewer_bytes_than_nar_size_is_a_size_mismatch() {
    let (dir, _store, fetcher) = setup(None);
    let nar = generated_nar(300_000, 14);
    let short = nar[..nar.len() - 8].to_vec();
    let inflight = fetcher
        .fetch_or_join(
            expected_for(&nar),
            one(
                Compression::Bzip2,
                ready(chunked(compress(Compression::Bzip2, &short), 3000)),
            ),
        )
        .inflight;
    let (bytes, err) = drain(Arc::clone(&inflight)).await;
    assert!(err.is_some() && bytes.len() < nar.len());
    let outcome = inflight.outcome().await;
    assert!(
        matches!(
            outcome,
            Err(NarError::SizeMismatch { expected, actual })
                if expected == nar.len() as u64 && actual == short.len() as u64
        ),
        "{outcome:?}"
    );
    assert_eq!(temp_files(dir.path()), 0);
}

#[tokio::test]
async fn a_truncated_or_corrupt_compressed_stream_is_a_decompress_error() {
    let nar = generated_nar(300_000, 15);
    let xz = compress(Compression::Xz, &nar);
    let truncated = xz[..xz.len() / 2].to_vec();
    let mut corrupt = compress(Compression::Zstd, &nar);
    corrupt[0] ^= 0xff; // not a zstd frame any more
    for (compression, data) in [(Compression::Xz, truncated), (Compression::Zstd, corrupt)] {
        let (dir, _store, fetcher) = setup(None);
        let inflight = fetcher
            .fetch_or_join(
                expected_for(&nar),
                one(compression, ready(chunked(data, 999))),
            )
            .inflight;
        let (_, err) = drain(Arc::clone(&inflight)).await;
        assert!(err.is_some());
        let outcome = inflight.outcome().await;
        assert!(
            matches!(outcome, Err(NarError::Decompress(_))),
            "{compression}: {outcome:?}"
        );
        assert_eq!(temp_files(dir.path()), 0);
    }
}

#[tokio::test]
async fn a_source_failing_mid_stream_or_at_open_is_a_source_error() {
    let nar = generated_nar(300_000, 16);
    let compressed = Bytes::from(compress(Compression::Xz, &nar));
    let head = compressed.slice(..compressed.len() / 2);
    let broken: Source =
        stream::iter([Ok(head), Err("connection reset by upstream".to_owned())]).boxed();
    let (dir, store, fetcher) = setup(None);
    let inflight = fetcher
        .fetch_or_join(expected_for(&nar), one(Compression::Xz, ready(broken)))
        .inflight;
    let (_, err) = drain(Arc::clone(&inflight)).await;
    assert!(err.is_some());
    let outcome = inflight.outcome().await;
    assert!(
        matches!(&outcome, Err(NarError::Source(m)) if m == "connection reset by upstream"),
        "{outcome:?}"
    );
    assert_eq!(temp_files(dir.path()), 0);

    let refused = async { Err::<Source, _>("HTTP 503 from upstream".to_owned()) };
    let inflight = fetcher
        .fetch_or_join(expected_for(&nar), one(Compression::Xz, refused))
        .inflight;
    let outcome = inflight.outcome().await;
    assert_eq!(
        outcome.err().map(|e| e.to_string()).as_deref(),
        Some("NAR download failed: HTTP 503 from upstream")
    );
    assert!(store.lookup(&inflight.key()).await.is_none());
}

#[tokio::test]
async fn after_a_failed_fetch_the_next_call_starts_afresh_and_can_succeed() {
    let (_dir, store, fetcher) = setup(None);
    let nar = generated_nar(400_000, 17);
    let mut tampered = nar.clone();
    tampered[1000] ^= 0x20;
    let first = fetcher
        .fetch_or_join(
            expected_for(&nar),
            one(
                Compression::Gzip,
                ready(chunked(compress(Compression::Gzip, &tampered), 8192)),
            ),
        )
        .inflight;
    assert!(matches!(
        first.outcome().await,
        Err(NarError::HashMismatch { .. })
    ));
    assert!(
        super::lock(&fetcher.inflight).is_empty(),
        "finished fetch left behind"
    );

    let second = fetcher
        .fetch_or_join(
            expected_for(&nar),
            one(
                Compression::Gzip,
                ready(chunked(compress(Compression::Gzip, &nar), 8192)),
            ),
        )
        .inflight;
    assert!(!Arc::ptr_eq(&first, &second));
    let (body, err) = drain(Arc::clone(&second)).await;
    assert!(err.is_none() && body == nar);
    assert!(second.outcome().await.is_ok());
    assert!(store.lookup(&second.key()).await.is_some());
}

#[tokio::test]
async fn a_stored_nar_is_served_without_opening_the_source() {
    let (_dir, _store, fetcher) = setup(None);
    let nar = generated_nar(200_000, 18);
    let first = fetcher
        .fetch_or_join(
            expected_for(&nar),
            one(Compression::None, ready(chunked(nar.clone(), 10_000))),
        )
        .inflight;
    assert!(first.outcome().await.is_ok());

    let opened = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&opened);
    let source = async move {
        counter.fetch_add(1, Ordering::SeqCst);
        Err::<Source, _>("must not be asked".to_owned())
    };
    let again = fetcher
        .fetch_or_join(expected_for(&nar), one(Compression::None, source))
        .inflight;
    let (body, err) = drain(Arc::clone(&again)).await;
    assert!(err.is_none() && body == nar);
    assert!(again.outcome().await.is_ok());
    assert_eq!(opened.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_requests_open_the_source_once() {
    let (_dir, store, fetcher) = setup(None);
    let fetcher = Arc::new(fetcher);
    let nar = generated_nar(1 << 20, 19);
    let want = (nar.len(), Sha256::digest(&nar));
    let compressed = Bytes::from(compress(Compression::Zstd, &nar));
    let opened = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let (joined_tx, mut joined_rx) = tokio::sync::mpsc::unbounded_channel();

    let clients: Vec<_> = (0..500)
        .map(|_| {
            let (fetcher, compressed) = (Arc::clone(&fetcher), compressed.clone());
            let (opened, gate, joined) =
                (Arc::clone(&opened), Arc::clone(&gate), joined_tx.clone());
            let expected = expected_for(&nar);
            tokio::spawn(async move {
                // The upstream answers only once every client has asked.
                let source = async move {
                    opened.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok::<_, String>(chunked(compressed, 16 * 1024))
                };
                let inflight = fetcher
                    .fetch_or_join(expected, one(Compression::Zstd, source))
                    .inflight;
                joined.send(Arc::clone(&inflight)).expect("test alive");
                let mut body = Box::pin(inflight.body());
                let (mut len, mut hasher) = (0, Sha256::new());
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.expect("verified NAR");
                    len += chunk.len();
                    hasher.update(&chunk);
                }
                (len, hasher.finalize())
            })
        })
        .collect();

    let mut shared = Vec::new();
    while shared.len() < 500 {
        shared.push(joined_rx.recv().await.expect("client"));
    }
    assert!(shared.iter().all(|i| Arc::ptr_eq(i, &shared[0])));
    gate.notify_one();
    for client in clients {
        assert!(client.await.expect("client task") == want);
    }
    assert_eq!(opened.load(Ordering::SeqCst), 1);
    assert!(shared[0].outcome().await.is_ok());
    assert_eq!(store.total_size(), nar.len() as u64);
}

#[tokio::test]
async fn eviction_after_commits_keeps_the_store_bounded() {
    let nars: Vec<Vec<u8>> = (0..4)
        .map(|seed| generated_nar(100_000, 30 + seed))
        .collect();
    let bound = nars[..3].iter().map(|n| n.len() as u64).sum::<u64>();
    let (_dir, store, fetcher) = setup(Some(bound));
    let mut keys = Vec::new();
    for nar in &nars[..3] {
        let inflight = fetcher
            .fetch_or_join(
                expected_for(nar),
                one(Compression::None, ready(chunked(nar.clone(), 50_000))),
            )
            .inflight;
        assert!(inflight.outcome().await.is_ok());
        keys.push(inflight.key());
    }
    // Serve the oldest again: the second becomes the least recently used.
    assert!(store.open_nar(&keys[0]).await.expect("io").is_some());
    let last = fetcher
        .fetch_or_join(
            expected_for(&nars[3]),
            one(Compression::None, ready(chunked(nars[3].clone(), 50_000))),
        )
        .inflight;
    assert!(last.outcome().await.is_ok());
    assert!(store.total_size() <= bound);
    assert!(store.lookup(&keys[1]).await.is_none());
    for key in [&keys[0], &keys[2], &last.key()] {
        assert!(store.lookup(key).await.is_some());
    }
}

#[tokio::test]
async fn a_100_mib_incompressible_nar_streams_in_bounded_chunks() {
    const SIZE: usize = 100 << 20;
    const FRAME: usize = 1 << 20;
    /// The NAR, generated on the fly: no test buffer ever holds it whole.
    fn frames(seed: u64) -> impl Iterator<Item = Vec<u8>> {
        let mut rng = Prng::new(seed);
        (0..SIZE / FRAME).map(move |_| {
            let mut frame = vec![0u8; FRAME];
            rng.fill(&mut frame);
            frame
        })
    }
    let expected = Expected {
        nar_hash: NarHash::from_digest(
            frames(7)
                .fold(Sha256::new(), |h, f| h.chain_update(f))
                .finalize()
                .into(),
        ),
        nar_size: SIZE as u64,
    };
    // One zstd frame per MiB: a valid multi-frame stream, compressed as it is sent.
    let source: Source = stream::iter(frames(7))
        .map(|frame| {
            zstd::bulk::compress(&frame, 1)
                .map(Bytes::from)
                .map_err(|e| e.to_string())
        })
        .boxed();

    let (_dir, store, fetcher) = setup(None);
    let inflight = fetcher
        .fetch_or_join(expected, one(Compression::Zstd, ready(source)))
        .inflight;
    let mut body = Box::pin(Arc::clone(&inflight).body());
    let (mut len, mut largest, mut hasher) = (0, 0, Sha256::new());
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("verified NAR");
        len += chunk.len();
        largest = largest.max(chunk.len());
        hasher.update(&chunk);
    }
    assert_eq!(len, SIZE);
    assert!(
        largest <= crate::nar::read::LARGEST_READ,
        "a body chunk of {largest} bytes"
    );
    assert!(NarHash::from_digest(hasher.finalize().into()) == expected.nar_hash);
    assert!(inflight.outcome().await.is_ok());
    assert_eq!(store.total_size(), SIZE as u64);
}

/// A source that yields `head` at once, then fails with `error` when `gate` opens: an
/// upstream that stalls (and whose stall timeout fires when the test says) or resets.
fn failing_after(head: Vec<u8>, gate: Arc<Notify>, error: &str) -> Source {
    let error = error.to_owned();
    let fail = stream::once(async move {
        gate.notified().await;
        Err(error)
    });
    let head = (!head.is_empty()).then(|| Ok(Bytes::from(head)));
    stream::iter(head).chain(fail).boxed()
}

fn source(label: &str, compression: Compression, open: Source) -> FetchSource<String> {
    FetchSource {
        label: label.into(),
        compression,
        open: ready(open).boxed(),
    }
}

#[tokio::test]
async fn a_client_that_received_nothing_is_served_by_the_next_source_when_one_stalls() {
    let (dir, store, fetcher) = setup(None);
    let nar = generated_nar(500_000, 31);
    let gate = Arc::new(Notify::new());
    let sources = vec![
        source(
            "stalling",
            Compression::None,
            failing_after(Vec::new(), Arc::clone(&gate), "no byte for 30 s"),
        ),
        source("healthy", Compression::None, chunked(nar.clone(), 40_000)),
    ];
    let inflight = fetcher.fetch_or_join(expected_for(&nar), sources).inflight;
    let body = tokio::spawn(drain(Arc::clone(&inflight)));
    // The body is waiting on the stalled source; the stall timeout fires.
    tokio::task::yield_now().await;
    gate.notify_one();
    let (bytes, err) = body.await.expect("body task");
    assert!(err.is_none(), "{err:?}");
    assert!(
        bytes == nar,
        "the client got the NAR from the healthy source"
    );

    let report = inflight.report().await;
    assert!(report.verdict.is_ok(), "{:?}", report.verdict);
    let failed: Vec<_> = report.failed.iter().map(|f| f.source.as_str()).collect();
    assert_eq!(failed, ["stalling"]);
    assert!(matches!(&report.failed[0].error, NarError::Source(m) if m == "no byte for 30 s"));
    assert!(store.lookup(&inflight.key()).await.is_some());
    assert_eq!(temp_files(dir.path()), 0);
}

#[tokio::test]
async fn a_client_streaming_from_a_source_that_breaks_off_gets_the_rest_from_the_next_one() {
    let (dir, store, fetcher) = setup(None);
    let nar = generated_nar(500_000, 32);
    let gate = Arc::new(Notify::new());
    let sources = vec![
        source(
            "resetting",
            Compression::None,
            failing_after(
                nar[..200_000].to_vec(),
                Arc::clone(&gate),
                "connection reset",
            ),
        ),
        // Another compression: the same NAR, other bytes on the wire.
        source(
            "healthy",
            Compression::Zstd,
            chunked(compress(Compression::Zstd, &nar), 40_000),
        ),
    ];
    let inflight = fetcher.fetch_or_join(expected_for(&nar), sources).inflight;
    let mut early = Box::pin(Arc::clone(&inflight).body());
    let first = early.next().await.expect("bytes").expect("bytes");
    assert!(!first.is_empty() && nar.starts_with(&first));
    gate.notify_one();
    let mut received = first.to_vec();
    while let Some(chunk) = early.next().await {
        received.extend_from_slice(&chunk.expect("the transfer goes on, spliced"));
    }
    assert!(received == nar, "the early client got the whole NAR");

    let report = inflight.report().await;
    assert!(report.verdict.is_ok(), "{:?}", report.verdict);
    assert_eq!(report.delivered_by.as_deref(), Some("healthy"));
    let failed: Vec<_> = report.failed.iter().map(|f| f.source.as_str()).collect();
    assert_eq!(failed, ["resetting"]);
    let (path, _) = store.lookup(&inflight.key()).await.expect("committed");
    assert!(std::fs::read(path).expect("stored") == nar);
    assert_eq!(temp_files(dir.path()), 0);
}

#[tokio::test]
async fn a_client_that_received_bytes_the_next_source_disagrees_with_sees_its_transfer_fail() {
    let (dir, store, fetcher) = setup(None);
    let nar = generated_nar(500_000, 34);
    let mut tampered = nar.clone();
    tampered[1_000] ^= 1;
    let gate = Arc::new(Notify::new());
    let sources = vec![
        source(
            "tampering",
            Compression::None,
            failing_after(
                tampered[..200_000].to_vec(),
                Arc::clone(&gate),
                "connection reset",
            ),
        ),
        source("honest", Compression::None, chunked(nar.clone(), 40_000)),
    ];
    let inflight = fetcher.fetch_or_join(expected_for(&nar), sources).inflight;
    let mut early = Box::pin(Arc::clone(&inflight).body());
    let first = early.next().await.expect("bytes").expect("bytes");
    assert!(tampered.starts_with(&first));
    gate.notify_one();
    let mut received = first.len();
    let end = loop {
        match early.next().await {
            Some(Ok(chunk)) => received += chunk.len(),
            other => break other,
        }
    };
    assert!(
        matches!(&end, Some(Err(_))),
        "bytes the next source contradicts are never completed: {end:?}"
    );
    assert!(received <= 200_000, "nothing spliced after them");
    assert!(early.next().await.is_none());

    // The honest source's bytes became a new attempt: a client asking again gets the NAR.
    assert!(inflight.outcome().await.is_ok());
    let (again, err) = drain(Arc::clone(&inflight)).await;
    assert!(err.is_none() && again == nar);
    let (path, _) = store.lookup(&inflight.key()).await.expect("committed");
    assert!(std::fs::read(path).expect("stored") == nar);
    assert_eq!(temp_files(dir.path()), 0);
}

/// Deadlines short enough for a test: a first byte within 300 ms, no stall over 200 ms, and
/// 1 MiB/s over each 300 ms of waiting.
fn quick_switching() -> super::Switching {
    super::Switching {
        first_byte: Duration::from_millis(300),
        stall: Duration::from_millis(200),
        window: Duration::from_millis(300),
        min_rate: 1 << 20,
    }
}

/// `head` at once, then nothing, ever (the connection stays open).
fn hanging_after(head: Vec<u8>) -> Source {
    stream::iter([Ok(Bytes::from(head))])
        .chain(stream::pending())
        .boxed()
}

#[tokio::test]
async fn a_stalled_source_is_abandoned_for_the_next_without_the_streaming_client_noticing() {
    let (_dir, store, fetcher) = setup(None);
    let fetcher = fetcher.with_switching(quick_switching());
    let nar = generated_nar(500_000, 35);
    let sources = vec![
        source(
            "stalling",
            Compression::None,
            hanging_after(nar[..150_000].to_vec()),
        ),
        source("healthy", Compression::None, chunked(nar.clone(), 40_000)),
    ];
    let inflight = fetcher.fetch_or_join(expected_for(&nar), sources).inflight;
    let (bytes, err) = drain(Arc::clone(&inflight)).await;
    assert!(err.is_none(), "{err:?}");
    assert!(bytes == nar);
    let report = inflight.report().await;
    assert!(report.verdict.is_ok());
    assert!(
        matches!(&report.failed[0].error, NarError::Source(m) if m.contains("stalled")),
        "{:?}",
        report.failed
    );
    assert!(store.lookup(&inflight.key()).await.is_some());
}

#[tokio::test]
async fn a_source_without_a_first_byte_in_time_is_abandoned_for_the_next() {
    let (_dir, _store, fetcher) = setup(None);
    let fetcher = fetcher.with_switching(quick_switching());
    let nar = generated_nar(300_000, 36);
    let silent = FetchSource {
        label: "silent".into(),
        compression: Compression::None,
        // Connected, but the response head never comes.
        open: std::future::pending::<Result<Source, String>>().boxed(),
    };
    let sources = vec![
        silent,
        source("healthy", Compression::None, chunked(nar.clone(), 40_000)),
    ];
    let inflight = fetcher.fetch_or_join(expected_for(&nar), sources).inflight;
    let (bytes, err) = drain(Arc::clone(&inflight)).await;
    assert!(err.is_none() && bytes == nar, "{err:?}");
    let report = inflight.report().await;
    assert!(
        matches!(&report.failed[0].error, NarError::Source(m) if m.contains("first byte")),
        "{:?}",
        report.failed
    );
}

#[tokio::test]
async fn a_source_trickling_under_the_minimum_rate_is_abandoned_for_the_next() {
    let (_dir, _store, fetcher) = setup(None);
    let fetcher = fetcher.with_switching(quick_switching());
    let nar = generated_nar(400_000, 37);
    // 1 KiB every 20 ms: 50 KiB/s, never a stall, far under 1 MiB/s.
    let trickle = stream::iter(
        nar.clone()
            .chunks(1024)
            .map(<[u8]>::to_vec)
            .collect::<Vec<_>>(),
    )
    .then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, String>(Bytes::from(chunk))
    })
    .boxed();
    let sources = vec![
        source("trickling", Compression::None, trickle),
        source("healthy", Compression::None, chunked(nar.clone(), 40_000)),
    ];
    let inflight = fetcher.fetch_or_join(expected_for(&nar), sources).inflight;
    let (bytes, err) = drain(Arc::clone(&inflight)).await;
    assert!(err.is_none() && bytes == nar, "{err:?}");
    let report = inflight.report().await;
    assert_eq!(report.delivered_by.as_deref(), Some("healthy"));
    assert!(
        matches!(&report.failed[0].error, NarError::Source(m) if m.contains("bytes/s")),
        "{:?}",
        report.failed
    );
}

#[tokio::test]
async fn the_last_source_is_not_held_to_the_switching_pace() {
    let (_dir, _store, fetcher) = setup(None);
    let fetcher = fetcher.with_switching(quick_switching());
    let nar = generated_nar(300_000, 38);
    // A pause longer than the switching stall, from the only source: waited for.
    let slow = chunked(nar.clone(), 100_000)
        .then(|chunk| async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            chunk
        })
        .boxed();
    let inflight = fetcher
        .fetch_or_join(
            expected_for(&nar),
            vec![source("only", Compression::None, slow)],
        )
        .inflight;
    let (bytes, err) = drain(Arc::clone(&inflight)).await;
    assert!(err.is_none() && bytes == nar, "{err:?}");
    assert!(inflight.report().await.failed.is_empty());
}

#[tokio::test]
async fn wrong_bytes_from_the_first_source_fall_over_to_the_next_and_later_ones_stay_closed() {
    let (_dir, store, fetcher) = setup(None);
    let nar = generated_nar(300_000, 33);
    let mut tampered = nar.clone();
    tampered[12_345] ^= 1;
    let opened = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&opened);
    let never_needed = FetchSource {
        label: "third".into(),
        compression: Compression::None,
        open: async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<Source, String>(stream::empty().boxed())
        }
        .boxed(),
    };
    let sources = vec![
        source(
            "tampering",
            Compression::Zstd,
            chunked(compress(Compression::Zstd, &tampered), 9000),
        ),
        source(
            "honest",
            Compression::Xz,
            chunked(compress(Compression::Xz, &nar), 9000),
        ),
        never_needed,
    ];
    let inflight = fetcher.fetch_or_join(expected_for(&nar), sources).inflight;
    let report = inflight.report().await;
    assert!(report.verdict.is_ok(), "{:?}", report.verdict);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].source, "tampering");
    assert!(matches!(
        report.failed[0].error,
        NarError::HashMismatch { .. }
    ));
    assert_eq!(
        opened.load(Ordering::SeqCst),
        0,
        "the third source was never opened"
    );
    let (path, _) = store.lookup(&inflight.key()).await.expect("committed");
    assert!(std::fs::read(path).expect("stored") == nar);
}

#[tokio::test]
async fn when_every_source_fails_every_client_fails_and_each_failure_is_reported() {
    let (dir, store, fetcher) = setup(None);
    let nar = generated_nar(100_000, 34);
    let sources = vec![
        source(
            "short",
            Compression::None,
            chunked(nar[..50_000].to_vec(), 9000),
        ),
        source(
            "refusing",
            Compression::None,
            stream::iter([Err("HTTP 503".to_owned())]).boxed(),
        ),
    ];
    let inflight = fetcher.fetch_or_join(expected_for(&nar), sources).inflight;
    let (_, err) = drain(Arc::clone(&inflight)).await;
    assert!(err.is_some());
    let report = inflight.report().await;
    assert!(matches!(&report.verdict, Err(NarError::Source(m)) if m == "HTTP 503"));
    let failed: Vec<_> = report.failed.iter().map(|f| f.source.as_str()).collect();
    assert_eq!(failed, ["short", "refusing"]);
    assert!(matches!(
        report.failed[0].error,
        NarError::SizeMismatch { .. }
    ));
    assert!(store.lookup(&inflight.key()).await.is_none());
    assert_eq!(temp_files(dir.path()), 0);
}

#[test]
fn check_decoded_gives_the_fetch_verdicts_without_a_store() {
    use crate::nar::{check_decoded, Decode};
    let nar = generated_nar(300_000, 17);
    let decode = |compression: Compression, data: Vec<u8>, expected: Expected| {
        let mut decoder = compression.decoder(io::Cursor::new(data)).expect("decoder");
        check_decoded(&mut decoder, expected)
    };
    for compression in Compression::ALL {
        let compressed = compress(compression, &nar);
        assert_eq!(
            decode(compression, compressed.clone(), expected_for(&nar)).ok(),
            Some(nar.len() as u64),
            "{compression}"
        );
        let outcome = decode(compression, compressed, flipped_hash(&nar));
        assert!(
            matches!(outcome, Err(NarError::HashMismatch { .. })),
            "{compression}: {outcome:?}"
        );
    }
    let short = expected_for(&nar[..1000]);
    assert!(matches!(
        decode(Compression::None, nar.clone(), short),
        Err(NarError::TooLarge { expected: 1000 })
    ));
    let long = expected_for(&[nar.as_slice(), b"x"].concat());
    assert!(matches!(
        decode(Compression::None, nar.clone(), long),
        Err(NarError::SizeMismatch { actual, .. }) if actual == nar.len() as u64
    ));
    let corrupt = compress(Compression::Xz, &nar)[..1000].to_vec();
    assert!(matches!(
        decode(Compression::Xz, corrupt, expected_for(&nar)),
        Err(NarError::Decompress(_))
    ));
}
