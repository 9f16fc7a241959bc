//! Single-flight, verified NAR fetches into the store, streamed to clients as they happen.
//!
//! One fetch is one detached tokio task plus two threads:
//! - the task opens the caller's (lazy) source and pumps its compressed chunks into a
//!   bounded channel, so a fast upstream cannot run ahead of decompression;
//! - a blocking thread decodes, hashes and counts at most NarSize + 1 bytes;
//! - a writer thread appends them to a temp file and publishes how much is written
//!   through a `watch` channel (hashing and page-cache writes cost about the same, so
//!   overlapping them nearly doubles cold throughput);
//! - every client body tails that temp file with positional reads on one shared file
//!   descriptor, which stays valid when the file is renamed into the store (or deleted).
//!
//! A body holds back the NAR's last byte until the fetch has verified hash and size; on
//! any failure it ends in an error instead. That is what lets quorate stream before it
//! knows the bytes are right and still never hand a client a complete wrong NAR.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::{Buf, Bytes};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use futures_util::FutureExt;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use quorate_core::protocol::nar_hash::{NarHash, NarKey};
use tokio_util::task::TaskTracker;

use super::compression::{Compression, Decode};
use super::{NarError, NarStore};

#[cfg(test)]
mod tests;

/// Size of the decode buffer and of the chunks bodies read: big enough that per-chunk
/// overhead (a thread hop, a watch update) is noise next to hashing it.
const CHUNK: usize = 256 * 1024;

/// Compressed chunks buffered between the upstream and the decoder. Bounded by count; an
/// HTTP client yields chunks of at most a few hundred KiB, so this stays a few MiB.
const CHANNEL_CHUNKS: usize = 16;

/// Upstream chunks the pump hands over at once, when the upstream has them ready: one
/// channel operation (and at most one decoder wake-up) per batch rather than per chunk.
/// The channel holds `CHANNEL_CHUNKS / BATCH_CHUNKS` batches, so at most `CHANNEL_CHUNKS`
/// chunks wait in it, as before.
const BATCH_CHUNKS: usize = 4;

/// The writer tells the bodies about new bytes at least this often (and whenever it has
/// caught up with the decoder), rather than after every buffer: fewer wake-ups.
const PUBLISH_EVERY: u64 = 1 << 20;

/// Decoded chunks that may wait for the temp file writer: 1 MiB, and enough slack that
/// hashing rarely waits for the disk.
const WRITE_BUFFERS: usize = 4;

/// What the agreed narinfo promises about the NAR: the bytes are checked against this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// SHA-256 of the uncompressed NAR (`NarHash`).
    pub nar_hash: NarHash,
    /// Length of the uncompressed NAR (`NarSize`).
    pub nar_size: u64,
}

/// Fetches currently running, by (store key, NarSize). The size is part of the key so that
/// a caller holding a narinfo with a different NarSize does not join a fetch verified
/// against another one. std Mutex: held only for a map operation, never across `.await`.
type Registry = Arc<Mutex<HashMap<(NarKey, u64), Arc<Inflight>>>>;

fn lock(registry: &Registry) -> MutexGuard<'_, HashMap<(NarKey, u64), Arc<Inflight>>> {
    // Map operations cannot leave the map half-updated, so a poisoned lock is still usable.
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts verified fetches into a [`NarStore`], one per NAR however many clients ask.
pub struct NarFetcher {
    /// Where verified NARs go, and where a fetch looks first.
    store: Arc<NarStore>,
    /// Fetches in progress, so that concurrent callers share one.
    inflight: Registry,
    /// Where fetch tasks run: the service drains it on shutdown, so a fetch in flight
    /// finishes (commits or cleans up) before the process exits.
    tasks: TaskTracker,
}

/// A fetch as a caller sees it: the shared [`Inflight`], and whether this call started it
/// (exactly one caller per fetch did, and records its outcome).
pub struct Fetch {
    /// The running (or finished) fetch.
    pub inflight: Arc<Inflight>,
    /// This call started it, rather than joining one already running.
    pub started: bool,
}

impl NarFetcher {
    /// A fetcher that commits into `store` and runs its fetches on `tasks`.
    pub fn new(store: Arc<NarStore>, tasks: TaskTracker) -> Self {
        NarFetcher {
            store,
            inflight: Registry::default(),
            tasks,
        }
    }

    /// The store this fetcher commits into.
    pub fn store(&self) -> &Arc<NarStore> {
        &self.store
    }

    /// Joins the running fetch of this NAR, or starts one from `source`.
    ///
    /// `source` is lazy: it is polled only when this call starts the fetch, and not even
    /// then if the store already holds the NAR; a joining caller's source is dropped
    /// unpolled. It resolves to the upstream's compressed byte stream; its errors (opening
    /// or mid-stream) end the fetch with [`NarError::Source`]. Timeouts are the source's
    /// business.
    ///
    /// The fetch runs detached: it finishes (and commits) even if every client goes away.
    /// Once it has finished, the next call starts afresh (typically with another upstream
    /// after a failure). Must be called within a tokio runtime.
    pub fn fetch_or_join<S, E>(
        &self,
        expected: Expected,
        compression: Compression,
        source: S,
    ) -> Fetch
    where
        S: Future<Output = Result<BoxStream<'static, Result<Bytes, E>>, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let key = expected.nar_hash.key();
        let inflight = {
            let mut running = lock(&self.inflight);
            let slot = (key, expected.nar_size);
            if let Some(existing) = running.get(&slot) {
                return Fetch {
                    inflight: Arc::clone(existing),
                    started: false,
                };
            }
            let (progress, _) = watch::channel(Progress::default());
            let inflight = Arc::new(Inflight {
                key,
                expected,
                progress,
            });
            running.insert(slot, Arc::clone(&inflight));
            inflight
        };
        let finish = Finish {
            registry: Arc::clone(&self.inflight),
            inflight: Arc::clone(&inflight),
            done: false,
        };
        let store = Arc::clone(&self.store);
        self.tasks.spawn(async move {
            let outcome = fetch(store, Arc::clone(&finish.inflight), compression, source).await;
            finish.finish(outcome);
        });
        Fetch {
            inflight,
            started: true,
        }
    }
}

/// One fetch of one NAR, running or finished, shared by every client that asked for it.
pub struct Inflight {
    /// Store key (nix32 NarHash).
    key: NarKey,
    /// What the bytes are verified against.
    expected: Expected,
    /// Temp file, bytes written so far and, at the end, the verdict. A `watch` because
    /// every body only needs the latest state, however many updates it slept through.
    progress: watch::Sender<Progress>,
}

/// The state a fetch publishes to its bodies.
#[derive(Clone, Default)]
struct Progress {
    /// The file the NAR is being written to; `None` until it exists.
    file: Option<Arc<File>>,
    /// Bytes of NAR in `file` so far (never more than NarSize).
    written: u64,
    /// All NarSize bytes are in `file` and hash to NarHash. Set before the fsync and
    /// rename, which can take a while for a big NAR and do not change what clients get.
    verified: bool,
    /// `Some` once the fetch has finished; `Ok` means verified and committed.
    outcome: Option<Result<(), NarError>>,
}

impl Inflight {
    /// The store key (nix32 NarHash) of the NAR being fetched.
    pub fn key(&self) -> NarKey {
        self.key
    }

    /// What the NAR is being verified against.
    pub fn expected(&self) -> Expected {
        self.expected
    }

    /// Decompressed bytes written so far, for progress reporting.
    pub fn written(&self) -> u64 {
        self.progress.borrow().written
    }

    /// Resolves when the fetch has finished: `Ok` once the NAR is verified and committed
    /// to the store, or why it failed (so the caller can record it against the upstream
    /// and pick another next time).
    pub fn outcome(&self) -> impl Future<Output = Result<(), NarError>> + Send + 'static {
        let mut progress = self.progress.subscribe();
        async move {
            let finished = progress.wait_for(|p| p.outcome.is_some()).await;
            match finished {
                Ok(state) => state.outcome.clone().unwrap_or(Err(NarError::Interrupted)),
                Err(_) => Err(NarError::Interrupted),
            }
        }
    }

    /// The NAR's bytes from the start, as they arrive, in chunks of at most 256 KiB.
    ///
    /// The last byte is yielded only after the fetch verified hash and size (it does not
    /// wait for the fsync); if the fetch fails first, the stream ends with an `io::Error`
    /// instead, so an HTTP response built on it aborts and the client never sees a
    /// complete wrong NAR. Memory use is one chunk.
    pub fn body(self: Arc<Self>) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let tail = Tail {
            progress: self.progress.subscribe(),
            nar_size: self.expected.nar_size,
            offset: 0,
            finished: false,
        };
        stream::unfold(tail, |mut tail| async move {
            let item = tail.next_chunk().await?;
            Some((item, tail))
        })
    }
}

/// A body's position in the file it tails.
struct Tail {
    progress: watch::Receiver<Progress>,
    nar_size: u64,
    /// Bytes already yielded.
    offset: u64,
    /// Set after the last item (end of NAR or the error).
    finished: bool,
}

impl Tail {
    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if self.finished {
            return None;
        }
        loop {
            let (file, readable) = {
                let state = self.progress.borrow_and_update();
                let verified = state.verified || matches!(state.outcome, Some(Ok(())));
                let readable = if verified {
                    // Even if committing it fails afterwards: these bytes are the NAR.
                    state.written
                } else if let Some(Err(err)) = &state.outcome {
                    self.finished = true;
                    return Some(Err(io::Error::other(err.clone())));
                } else {
                    // Hold back the last byte: only a verified NAR may be complete.
                    state.written.min(self.nar_size.saturating_sub(1))
                };
                if verified && self.offset >= readable {
                    self.finished = true;
                    return None;
                }
                (state.file.clone(), readable)
            };
            if let (Some(file), true) = (file, self.offset < readable) {
                let len = (readable - self.offset).min(CHUNK as u64) as usize;
                let offset = self.offset;
                let read = tokio::task::spawn_blocking(move || read_chunk(&file, offset, len))
                    .await
                    .map_err(io::Error::other)
                    .and_then(|chunk| chunk);
                match &read {
                    Ok(chunk) => self.offset += chunk.len() as u64,
                    Err(_) => self.finished = true,
                }
                return Some(read);
            }
            if self.progress.changed().await.is_err() {
                // Unreachable while the Inflight (which owns the sender) is alive, and we
                // hold a receiver of it; say so rather than hang or end as if complete.
                self.finished = true;
                return Some(Err(io::Error::other(NarError::Interrupted)));
            }
        }
    }
}

/// Reads `len` already-written bytes at `offset` (positional: no shared cursor).
fn read_chunk(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut chunk = vec![0; len];
    file.read_exact_at(&mut chunk, offset)?;
    Ok(Bytes::from(chunk))
}

/// Ends a fetch: forgets it in the registry, then publishes the verdict. In that order, so
/// that a caller arriving after the verdict starts a fresh fetch rather than joining a
/// failed one. Also runs if the task is dropped (runtime shutdown), then as `Interrupted`.
struct Finish {
    registry: Registry,
    inflight: Arc<Inflight>,
    done: bool,
}

impl Finish {
    fn finish(mut self, outcome: Result<(), NarError>) {
        self.done = true;
        self.complete(outcome);
    }

    fn complete(&self, outcome: Result<(), NarError>) {
        let inflight = &self.inflight;
        {
            let mut running = lock(&self.registry);
            let slot = (inflight.key, inflight.expected.nar_size);
            if running.get(&slot).is_some_and(|i| Arc::ptr_eq(i, inflight)) {
                running.remove(&slot);
            }
        }
        match &outcome {
            Ok(()) => tracing::debug!(key = %inflight.key, "NAR verified and stored"),
            Err(err) => tracing::warn!(key = %inflight.key, %err, "NAR fetch failed"),
        }
        inflight
            .progress
            .send_modify(|state| state.outcome = Some(outcome));
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.done {
            self.complete(Err(NarError::Interrupted));
        }
    }
}

/// Runs one fetch to its verdict.
async fn fetch<S, E>(
    store: Arc<NarStore>,
    inflight: Arc<Inflight>,
    compression: Compression,
    source: S,
) -> Result<(), NarError>
where
    S: Future<Output = Result<BoxStream<'static, Result<Bytes, E>>, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    // The NAR may have been committed between the caller's store lookup and this fetch.
    let warm = {
        let (store, key) = (Arc::clone(&store), inflight.key);
        tokio::task::spawn_blocking(move || store.open_nar_blocking(&key)).await
    };
    match warm {
        Ok(Ok(Some((file, size)))) if size == inflight.expected.nar_size => {
            inflight.progress.send_modify(|state| {
                state.file = Some(Arc::new(file));
                state.written = size;
                state.verified = true;
            });
            return Ok(());
        }
        Ok(Err(err)) => tracing::warn!(key = %inflight.key, %err, "cannot open stored NAR"),
        _ => {}
    }

    let (chunks, upstream) = mpsc::channel(CHANNEL_CHUNKS / BATCH_CHUNKS);
    let mut decode = {
        let inflight = Arc::clone(&inflight);
        tokio::task::spawn_blocking(move || {
            decode_into_store(&store, &inflight, compression, upstream)
        })
    };
    let pump = pump(source, chunks);
    tokio::pin!(pump);
    let decoded = tokio::select! {
        decoded = &mut decode => decoded,
        // Source exhausted (or failed): the decoder sees the end of the channel.
        () = &mut pump => decode.await,
    };
    // Leaving drops the pump and with it the upstream stream: once the decoder has stopped
    // (done, or refused more bytes), the download stops too.
    decoded.unwrap_or(Err(NarError::Interrupted))
}

/// Compressed chunks on their way to the decoder, in upstream order, or the upstream's
/// error (after which nothing follows).
type Batch = Result<Vec<Bytes>, String>;

/// Forwards the upstream's chunks into the decoder's channel until the source ends, fails,
/// or the decoder hangs up: in batches of up to [`BATCH_CHUNKS`] chunks, taking only what
/// the upstream has ready (never waiting to fill a batch).
async fn pump<S, E>(source: S, chunks: mpsc::Sender<Batch>)
where
    S: Future<Output = Result<BoxStream<'static, Result<Bytes, E>>, E>>,
    E: std::fmt::Display,
{
    let mut upstream = match source.await {
        Ok(upstream) => upstream,
        Err(err) => {
            let _ = chunks.send(Err(err.to_string())).await;
            return;
        }
    };
    loop {
        let mut batch = Vec::with_capacity(BATCH_CHUNKS);
        let mut item = upstream.next().await;
        // What stops the pump after this batch: `Some(Ok)` the end, `Some(Err)` a failure.
        let stop = loop {
            match item {
                Some(Ok(chunk)) => batch.push(chunk),
                Some(Err(err)) => break Some(Err(err.to_string())),
                None => break Some(Ok(())),
            }
            if batch.len() == BATCH_CHUNKS {
                break None;
            }
            match upstream.next().now_or_never() {
                Some(next) => item = next,
                // Nothing ready: hand over what there is rather than wait.
                None => break None,
            }
        };
        if !batch.is_empty() && chunks.send(Ok(batch)).await.is_err() {
            return;
        }
        match stop {
            None => {}
            Some(Ok(())) => return,
            Some(Err(message)) => {
                let _ = chunks.send(Err(message)).await;
                return;
            }
        }
    }
}

/// The blocking half: decompress, count, hash and write; then commit or clean up.
///
/// Decoding and hashing run on this thread, appending to the temp file on a second one
/// (write-behind through a few recycled buffers): page-cache writes cost about as much as
/// SHA-256, and DESIGN §10 wants a cold NAR bound by decompression and hashing alone.
fn decode_into_store(
    store: &NarStore,
    inflight: &Inflight,
    compression: Compression,
    upstream: mpsc::Receiver<Batch>,
) -> Result<(), NarError> {
    let expected = inflight.expected;
    let (path, file) = store.create_temp(&inflight.key)?;
    let mut temp = TempFile {
        path,
        committed: false,
    };
    let file = Arc::new(file);
    inflight
        .progress
        .send_modify(|state| state.file = Some(Arc::clone(&file)));

    let source_error = Arc::new(OnceLock::new());
    let reader = ChannelReader {
        upstream,
        pending: Vec::new().into_iter(),
        chunk: Bytes::new(),
        source_error: Arc::clone(&source_error),
        ended: false,
    };
    let classify = |err: io::Error| match source_error.get() {
        Some(message) => NarError::Source(String::clone(message)),
        None => NarError::Decompress(err.to_string()),
    };
    let mut decoder = compression.decoder(reader).map_err(classify)?;

    let (count, digest) = std::thread::scope(|scope| {
        let (full, to_write) = std::sync::mpsc::sync_channel(WRITE_BUFFERS);
        let (recycle, free) = std::sync::mpsc::channel();
        for _ in 0..WRITE_BUFFERS {
            // Cannot fail: `free` is alive right here.
            let _ = recycle.send(vec![0; CHUNK]);
        }
        let writer = std::thread::Builder::new()
            .name("nar-writer".into())
            .spawn_scoped(scope, || write_behind(&file, inflight, to_write, recycle))?;
        let decoded = decode_and_hash(
            &mut *decoder,
            expected.nar_size,
            &classify,
            // No buffer coming back means the writer failed; its error is reported below.
            || free.recv().map_err(|_| NarError::Interrupted),
            move |filled| full.send(filled).map_err(|_| NarError::Interrupted),
        );
        // `full` is gone with `decode_and_hash`, so the writer drains what is left and ends.
        let written = writer.join().map_err(|_| NarError::Interrupted)?;
        // A write failure also stops the decoder (its buffers stop coming back), so it is
        // the cause to report.
        written?;
        decoded
    })?;

    verdict(expected, count, digest)?;
    inflight.progress.send_modify(|state| state.verified = true);
    file.sync_all()?;
    store.commit_blocking(&inflight.key, &temp.path, count)?;
    temp.committed = true;
    Ok(())
}

/// Whether `count` decoded bytes hashing to `digest` are the NAR `expected` promises.
fn verdict(expected: Expected, count: u64, digest: [u8; 32]) -> Result<(), NarError> {
    if count != expected.nar_size {
        return Err(NarError::SizeMismatch {
            expected: expected.nar_size,
            actual: count,
        });
    }
    let actual = NarHash::from_digest(digest);
    if actual != expected.nar_hash {
        return Err(NarError::HashMismatch {
            expected: expected.nar_hash,
            actual,
        });
    }
    Ok(())
}

/// The decode-count-hash-verify step of a fetch on its own, synchronously: reads `decoder`
/// exactly as a fetch does (through [`decode_and_hash`], so never more than NarSize + 1
/// bytes), drops the bytes where a fetch writes them to its temp file, and returns the
/// fetch's verdict: the byte count when hash and size match `expected`.
///
/// For the NAR stream fuzz target (`fuzz/fuzz_targets/nar_stream.rs`), which drives it with
/// decoders from [`Decode`] over hostile compressed bytes; not part of the service's API.
#[doc(hidden)]
pub fn check_decoded(decoder: &mut dyn Read, expected: Expected) -> Result<u64, NarError> {
    let classify = |err: io::Error| NarError::Decompress(err.to_string());
    // One buffer, handed straight back: no writer thread, no temp file.
    let spare = std::cell::Cell::new(vec![0; CHUNK]);
    let (count, digest) = decode_and_hash(
        decoder,
        expected.nar_size,
        &classify,
        || Ok(spare.take()),
        |(buffer, _)| {
            spare.set(buffer);
            Ok(())
        },
    )?;
    verdict(expected, count, digest)?;
    Ok(count)
}

/// Decoded bytes on their way to the writer: a recycled buffer and how much of it is NAR.
type Filled = (Vec<u8>, usize);

/// Reads the decoder into free buffers, hashing and counting, and hands them on in order.
/// Returns the byte count and SHA-256, or why it stopped.
///
/// `next_buffer` gives a buffer of [`CHUNK`] bytes to decode into and `hand_on` takes it back
/// filled: through the writer's channels in a fetch, straight back in [`check_decoded`].
fn decode_and_hash(
    decoder: &mut dyn Read,
    nar_size: u64,
    classify: &dyn Fn(io::Error) -> NarError,
    mut next_buffer: impl FnMut() -> Result<Vec<u8>, NarError>,
    mut hand_on: impl FnMut(Filled) -> Result<(), NarError>,
) -> Result<(u64, [u8; 32]), NarError> {
    let mut hasher = Sha256::new();
    let mut count: u64 = 0;
    loop {
        let mut buffer = next_buffer()?;
        // Ask for at most one byte past NarSize: enough to know it lies, and where a
        // decompression bomb stops.
        let room = nar_size.saturating_add(1) - count;
        let want = room.min(CHUNK as u64) as usize;
        let n = loop {
            match decoder.read(&mut buffer[..want]) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                read => break read.map_err(classify)?,
            }
        };
        if n == 0 {
            return Ok((count, hasher.finalize().into()));
        }
        count += n as u64;
        if count > nar_size {
            return Err(NarError::TooLarge { expected: nar_size });
        }
        hasher.update(&buffer[..n]);
        hand_on((buffer, n))?;
    }
}

/// Appends decoded buffers to the temp file in order, publishing progress to the bodies
/// every [`PUBLISH_EVERY`] bytes and whenever it has written all it was given, and returns
/// each buffer for reuse. Ends when the decoder hangs up.
fn write_behind(
    file: &File,
    inflight: &Inflight,
    to_write: std::sync::mpsc::Receiver<Filled>,
    recycle: std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<(), NarError> {
    let mut out = file;
    let mut written: u64 = 0;
    let mut published: u64 = 0;
    let publish = |written: u64| {
        inflight
            .progress
            .send_modify(|state| state.written = written);
    };
    loop {
        let (buffer, len) = match to_write.try_recv() {
            Ok(filled) => filled,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                // Caught up: let the bodies have everything before waiting for more.
                if written > published {
                    publish(written);
                    published = written;
                }
                match to_write.recv() {
                    Ok(filled) => filled,
                    Err(_) => break,
                }
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
        };
        out.write_all(&buffer[..len])?;
        written += len as u64;
        if written - published >= PUBLISH_EVERY {
            publish(written);
            published = written;
        }
        // The decoder may already be done with buffers; that is fine.
        let _ = recycle.send(buffer);
    }
    if written > published {
        publish(written);
    }
    Ok(())
}

/// Deletes the temp file unless the fetch committed it (also on panic). Bodies still
/// reading it keep their descriptor, and then see the failed verdict.
struct TempFile {
    path: PathBuf,
    /// Renamed into the store: nothing left to delete.
    committed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %err, "cannot delete NAR temp file");
        }
    }
}

/// The compressed stream as a blocking `BufRead`, so decoders read straight from the
/// upstream's chunks without another copy.
struct ChannelReader {
    upstream: mpsc::Receiver<Batch>,
    /// The rest of the current batch, after `chunk`.
    pending: std::vec::IntoIter<Bytes>,
    /// Rest of the current chunk.
    chunk: Bytes,
    /// The upstream's error, kept aside so that a decoder wrapping it in its own error
    /// still gets it reported as a source failure, not as corrupt data.
    source_error: Arc<OnceLock<String>>,
    /// End of stream seen.
    ended: bool,
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.chunk.is_empty() && !self.ended {
            if let Some(chunk) = self.pending.next() {
                self.chunk = chunk;
                continue;
            }
            if let Some(message) = self.source_error.get() {
                // Sticky: a decoder retrying must not mistake the failure for an end.
                return Err(io::Error::other(String::clone(message)));
            }
            match self.upstream.blocking_recv() {
                Some(Ok(batch)) => self.pending = batch.into_iter(),
                Some(Err(message)) => {
                    let _ = self.source_error.set(message);
                }
                None => self.ended = true,
            }
        }
        Ok(&self.chunk)
    }

    fn consume(&mut self, amount: usize) {
        self.chunk.advance(amount.min(self.chunk.len()));
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}
