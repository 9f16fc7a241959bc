//! Single-flight, verified NAR fetches into the store, streamed to clients as they happen,
//! from the first of a ranked list of sources that delivers the right bytes.
//!
//! One fetch is one detached tokio task plus, per attempt, two threads:
//! - the task opens the current source's (lazy) byte stream and pumps its compressed chunks
//!   into a bounded channel, so a fast upstream cannot run ahead of decompression;
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
//!
//! ## Fail-over
//!
//! The caller hands over every source that offers the NAR, best first ([`FetchSource`]).
//! Every failed attempt is listed in the fetch's [`FetchReport`], with its source (the
//! caller records it and ranks that source last for the NAR). An attempt that failed
//! because of its source — the download failed or stalled (sources bound their own reads in
//! time), bytes that do not decode, a wrong size or hash — is followed by one from the next
//! source, with a fresh temp file. A local failure (the store) ends the fetch: another
//! source would fail the same way.
//!
//! While another source is waiting, a source is also abandoned when it is too slow
//! ([`Switching`]: no first byte within 5 s, no byte for 5 s, or under 1 MiB/s over 10 s of
//! waiting for it); the last source is held only to the upstream client's own deadlines.
//!
//! Clients see attempts through the attempt number the fetch publishes:
//! - a body that has not yielded a byte yet simply follows the current attempt, so a client
//!   that arrived while a source was stalling is served, transparently, by the next one;
//! - when a source broke off (stalled, too slow, reset: a source error after bytes that
//!   decoded), the next source **resumes** the same attempt: its bytes are decoded and hashed
//!   from the start into a fresh file, those below the broken-off count compared with what
//!   the bodies may already have; if all are equal, the new file takes over once it holds
//!   more, and streaming bodies carry on without noticing (the hash still covers exactly the
//!   bytes served: the new file's). If they differ, the resumed attempt becomes a new one;
//! - a body that has yielded bytes is bound to the attempt they came from: if that attempt
//!   fails (wrong bytes, or a resumed source that disagrees with them), the body ends in an
//!   error. Its bytes were unverified, and other bytes are never spliced after them: the
//!   client sees a failed transfer, and its retry is served by the attempt in progress (or
//!   the store).

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use futures_util::FutureExt;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use quorate_core::protocol::nar_hash::{NarHash, NarKey};
use tokio_util::task::TaskTracker;

use super::compression::{Compression, Decode};
use super::storage::NarStorage;
use super::{NarError, NarStore};
use crate::limits::{SWITCH_FIRST_BYTE, SWITCH_MIN_RATE, SWITCH_STALL, SWITCH_WINDOW};

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

/// One place to fetch a NAR from; a fetch tries its sources in turn.
pub struct FetchSource<E> {
    /// Who this source is (the upstream's URL): named in logs and in the [`FetchReport`].
    pub label: String,
    /// How its bytes are compressed.
    pub compression: Compression,
    /// Opens its compressed byte stream. Lazy: polled only when this source's turn comes
    /// (never, if an earlier source delivers). Its errors, opening or mid-stream, fail the
    /// attempt with [`NarError::Source`]. Bounding its reads in time is its business: a read
    /// that never returns stalls the attempt.
    pub open: BoxFuture<'static, Result<BoxStream<'static, Result<Bytes, E>>, E>>,
}

/// An attempt that failed: its source, and why.
#[derive(Clone, Debug)]
pub struct FailedAttempt {
    /// The source's label.
    pub source: String,
    /// Why its attempt failed.
    pub error: NarError,
}

/// How a finished fetch went.
#[derive(Clone, Debug)]
pub struct FetchReport {
    /// `Ok` once the NAR is verified and committed; otherwise the last attempt's failure.
    pub verdict: Result<(), NarError>,
    /// Every attempt that failed, in the order they were tried (the last one may have failed
    /// for a reason that is not its source's: see [`NarError::blames_source`]).
    pub failed: Vec<FailedAttempt>,
    /// The source whose bytes were verified and committed; `None` if the NAR was already in
    /// the store, or the fetch failed.
    pub delivered_by: Option<String>,
}

/// Fetches currently running, by (store key, NarSize). The size is part of the key so that
/// a caller holding a narinfo with a different NarSize does not join a fetch verified
/// against another one. std Mutex: held only for a map operation, never across `.await`.
type Registry = Arc<Mutex<HashMap<(NarKey, u64), Arc<Inflight>>>>;

fn lock(registry: &Registry) -> MutexGuard<'_, HashMap<(NarKey, u64), Arc<Inflight>>> {
    // Map operations cannot leave the map half-updated, so a poisoned lock is still usable.
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

/// When a fetch gives up on a source that still has bytes to send because it is too slow,
/// for the next one (only while there is a next one: the last source is held to the
/// upstream client's own, longer deadlines). Time the pump spends waiting for the decoder
/// (back-pressure) is not held against the source.
#[derive(Clone, Copy, Debug)]
pub struct Switching {
    /// The first byte must come this soon after the source is asked (head included).
    pub first_byte: Duration,
    /// No byte for this long is a stall.
    pub stall: Duration,
    /// Over each `window` of waiting for the source, it must deliver `min_rate` bytes/s.
    pub window: Duration,
    /// See `window`.
    pub min_rate: u64,
}

impl Default for Switching {
    fn default() -> Self {
        Switching {
            first_byte: SWITCH_FIRST_BYTE,
            stall: SWITCH_STALL,
            window: SWITCH_WINDOW,
            min_rate: SWITCH_MIN_RATE,
        }
    }
}

/// Starts verified fetches into a [`NarStore`], one per NAR however many clients ask.
pub struct NarFetcher {
    /// Where verified NARs go (and where a fetch looks first, when that is local).
    storage: NarStorage,
    /// Fetches in progress, so that concurrent callers share one.
    inflight: Registry,
    /// Where fetch tasks run: the service drains it on shutdown, so a fetch in flight
    /// finishes (commits or cleans up) before the process exits.
    tasks: TaskTracker,
    /// When a source is abandoned for the next one.
    switching: Switching,
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
    pub fn new(storage: NarStorage, tasks: TaskTracker) -> Self {
        NarFetcher {
            storage,
            inflight: Registry::default(),
            tasks,
            switching: Switching::default(),
        }
    }

    /// The same fetcher, abandoning slow sources by `switching` instead of the defaults.
    pub fn with_switching(mut self, switching: Switching) -> Self {
        self.switching = switching;
        self
    }

    /// Where this fetcher commits verified NARs.
    pub fn storage(&self) -> &NarStorage {
        &self.storage
    }

    /// Joins the running fetch of this NAR, or starts one trying `sources` in turn.
    ///
    /// Sources are lazy: none is opened when this call joins a running fetch (they are
    /// dropped unpolled), or when the store already holds the NAR; each is opened only when
    /// the ones before it have failed. See the module docs for what clients see when an
    /// attempt fails.
    ///
    /// The fetch runs detached: it finishes (and commits) even if every client goes away.
    /// Once it has finished, the next call starts afresh (with the sources the caller then
    /// ranks best). Must be called within a tokio runtime.
    pub fn fetch_or_join<E>(&self, expected: Expected, sources: Vec<FetchSource<E>>) -> Fetch
    where
        E: std::fmt::Display + Send + 'static,
    {
        self.start(expected, sources, Commit::Store)
    }

    /// Like [`NarFetcher::fetch_or_join`] for bytes relayed from the replica that fetches
    /// the NAR for the whole set (`crate::fleet`): verified the same way, streamed to this
    /// replica's clients, but not stored (the owner stores it).
    pub fn relay_or_join<E>(&self, expected: Expected, relay: FetchSource<E>) -> Fetch
    where
        E: std::fmt::Display + Send + 'static,
    {
        self.start(expected, vec![relay], Commit::No)
    }

    /// The fetch of NAR `key` running here, if any (whatever its NarSize).
    pub fn running(&self, key: &NarKey) -> Option<Arc<Inflight>> {
        lock(&self.inflight)
            .iter()
            .find(|((k, _), _)| k == key)
            .map(|(_, inflight)| Arc::clone(inflight))
    }

    fn start<E>(&self, expected: Expected, sources: Vec<FetchSource<E>>, commit: Commit) -> Fetch
    where
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
                relayed: commit == Commit::No,
            });
            running.insert(slot, Arc::clone(&inflight));
            inflight
        };
        let finish = Finish {
            registry: Arc::clone(&self.inflight),
            inflight: Arc::clone(&inflight),
            done: false,
        };
        let storage = self.storage.clone();
        let switching = self.switching;
        self.tasks.spawn(async move {
            let inflight = Arc::clone(&finish.inflight);
            let outcome = fetch(storage, inflight, sources, commit, switching).await;
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
    /// Relayed from another replica (verified, not stored here).
    relayed: bool,
}

/// Whether a fetch stores the verified NAR.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// Into the storage: a fetch from upstreams.
    Store,
    /// Not at all: a relay from the replica that stores it.
    No,
}

/// The state a fetch publishes to its bodies.
#[derive(Clone, Default)]
struct Progress {
    /// Which attempt `file` and `written` belong to (0 for the first source). A body bound
    /// to an earlier attempt must fail rather than read on.
    attempt: u32,
    /// Every attempt that failed so far.
    failed: Vec<FailedAttempt>,
    /// The source that delivered the verified NAR.
    delivered_by: Option<String>,
    /// The file the current attempt writes the NAR to; `None` until it exists.
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

    /// Whether its bytes are relayed from another replica (which stores them).
    pub fn is_relay(&self) -> bool {
        self.relayed
    }

    /// Decompressed bytes written so far, for progress reporting.
    pub fn written(&self) -> u64 {
        self.progress.borrow().written
    }

    /// Resolves when the fetch has finished: `Ok` once the NAR is verified and committed
    /// to the store, or why its last attempt failed.
    pub fn outcome(&self) -> impl Future<Output = Result<(), NarError>> + Send + 'static {
        let report = self.report();
        async move { report.await.verdict }
    }

    /// Resolves when the fetch has finished, with its verdict and every attempt that failed
    /// (so the caller can record them and rank their sources last next time).
    pub fn report(&self) -> impl Future<Output = FetchReport> + Send + 'static {
        let mut progress = self.progress.subscribe();
        async move {
            let finished = progress.wait_for(|p| p.outcome.is_some()).await;
            match finished {
                Ok(state) => FetchReport {
                    verdict: state.outcome.clone().unwrap_or(Err(NarError::Interrupted)),
                    failed: state.failed.clone(),
                    delivered_by: state.delivered_by.clone(),
                },
                Err(_) => FetchReport {
                    verdict: Err(NarError::Interrupted),
                    failed: Vec::new(),
                    delivered_by: None,
                },
            }
        }
    }

    /// The NAR's bytes from the start, as they arrive, in chunks of at most 1 MiB (read
    /// within the clients' memory budget, `nar::read`).
    ///
    /// The last byte is yielded only after the fetch verified hash and size (it does not
    /// wait for the fsync); if the fetch fails first, the stream ends with an `io::Error`
    /// instead, so an HTTP response built on it aborts and the client never sees a
    /// complete wrong NAR. Once it has yielded bytes, it also ends in an error if the attempt
    /// they came from fails (a body carries on past a source switch only when the next
    /// source's bytes were compared equal to those it has); before that, it follows the fetch
    /// to its next source. Memory use is one chunk, out of the budget all clients share.
    pub fn body(self: Arc<Self>) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let tail = Tail {
            progress: self.progress.subscribe(),
            nar_size: self.expected.nar_size,
            offset: 0,
            attempt: None,
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
    /// The attempt those bytes came from; `None` until the first byte.
    attempt: Option<u32>,
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
                if self.attempt.is_some_and(|bound| bound != state.attempt) {
                    // The source of the bytes already yielded failed: they were unverified,
                    // and the next source's must not be spliced after them.
                    self.finished = true;
                    let failed = state.failed.last().map(|f| f.error.clone());
                    let err = failed.unwrap_or(NarError::Interrupted);
                    return Some(Err(io::Error::other(err)));
                }
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
                if state.file.is_some() && self.offset < readable {
                    self.attempt.get_or_insert(state.attempt);
                }
                (state.file.clone(), readable)
            };
            if let (Some(file), true) = (file, self.offset < readable) {
                let len = usize::try_from(readable - self.offset).unwrap_or(usize::MAX);
                let offset = self.offset;
                let read = super::read::CLIENTS.read_at(file, offset, len).await;
                match &read {
                    Ok(chunk) if chunk.is_empty() => {
                        // Published as written, yet not there: never loop on it.
                        self.finished = true;
                        let err = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("NAR temp file ends at byte {offset}"),
                        );
                        return Some(Err(err));
                    }
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

/// Runs one fetch to its verdict: the store, if it already holds the NAR; otherwise each
/// source in turn until one delivers the verified NAR or fails for a reason that is not its
/// own.
async fn fetch<E>(
    storage: NarStorage,
    inflight: Arc<Inflight>,
    sources: Vec<FetchSource<E>>,
    commit: Commit,
    switching: Switching,
) -> Result<(), NarError>
where
    E: std::fmt::Display + Send + 'static,
{
    // The NAR may have been committed between the caller's store lookup and this fetch
    // (local directory only: bodies tail a file, and a bucket's object is not one).
    if let Some(store) = storage.local() {
        let warm = {
            let (store, key) = (Arc::clone(store), inflight.key);
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
    }

    let mut last = NarError::Source("no upstream offers this NAR".into());
    let count = sources.len();
    let mut resume = None;
    for (n, source) in sources.into_iter().enumerate() {
        let label = source.label;
        let has_next = n + 1 < count;
        let switch = has_next.then_some(switching);
        let err = match attempt(
            &storage,
            &inflight,
            source.compression,
            source.open,
            commit,
            (switch, resume.take()),
        )
        .await
        {
            Ok(()) => {
                inflight
                    .progress
                    .send_modify(|state| state.delivered_by = Some(label));
                return Ok(());
            }
            Err(err) => err,
        };
        tracing::warn!(key = %inflight.key, source = %label, %err, "NAR attempt failed");
        // The store failing, or the fetch being interrupted, is no source's fault: another
        // source would not help.
        let next = err.blames_source() && has_next;
        inflight.progress.send_modify(|state| {
            state.failed.push(FailedAttempt {
                source: label,
                error: err.clone(),
            });
            if !next {
                return;
            }
            // A source that broke off (stalled, too slow, reset) delivered bytes that decoded
            // fine: the next source resumes after them, its own bytes compared with them.
            // Anything else (bytes that did not decode, a wrong size or hash) starts over.
            let resumable = matches!(err, NarError::Source(_)) && state.written > 0;
            match (&state.file, resumable) {
                (Some(file), true) => {
                    resume = Some(Resume {
                        file: Arc::clone(file),
                        written: state.written,
                    });
                }
                _ => {
                    // A new attempt: bodies bound to this one fail, the others follow.
                    state.attempt += 1;
                    state.file = None;
                    state.written = 0;
                }
            }
        });
        if !next {
            return Err(err);
        }
        last = err;
    }
    Err(last)
}

/// The bytes an attempt that broke off left: bodies may have read them, so the next attempt
/// continues the same attempt only if its own bytes are the same.
struct Resume {
    /// The broken-off attempt's file (already unlinked; its descriptor lives on).
    file: Arc<File>,
    /// NAR bytes in it.
    written: u64,
}

/// One attempt: `source`'s bytes, decoded, hashed and written to a fresh temp file in the
/// spool, then committed to the storage if right.
async fn attempt<E>(
    storage: &NarStorage,
    inflight: &Arc<Inflight>,
    compression: Compression,
    source: BoxFuture<'static, Result<BoxStream<'static, Result<Bytes, E>>, E>>,
    commit: Commit,
    (switch, resume): (Option<Switching>, Option<Resume>),
) -> Result<(), NarError>
where
    E: std::fmt::Display + Send + 'static,
{
    let (chunks, upstream) = mpsc::channel(CHANNEL_CHUNKS / BATCH_CHUNKS);
    let mut decode = {
        let (spool, inflight) = (Arc::clone(storage.spool()), Arc::clone(inflight));
        tokio::task::spawn_blocking(move || {
            decode_into_spool(&spool, &inflight, compression, upstream, resume)
        })
    };
    let pump = pump(source, chunks, switch);
    tokio::pin!(pump);
    let decoded = tokio::select! {
        decoded = &mut decode => decoded,
        // Source exhausted (or failed): the decoder sees the end of the channel.
        () = &mut pump => decode.await,
    };
    // Leaving drops the pump and with it the upstream stream: once the decoder has stopped
    // (done, or refused more bytes), the download stops too.
    let mut temp = decoded.unwrap_or(Err(NarError::Interrupted))?;
    if commit == Commit::No {
        return Ok(());
    }
    // Verified and fsynced: the bodies have every byte already; now make it visible.
    temp.committed = storage
        .commit(&inflight.key, &temp.path, inflight.expected.nar_size)
        .await?;
    Ok(())
}

/// Compressed chunks on their way to the decoder, in upstream order, or the upstream's
/// error (after which nothing follows).
type Batch = Result<Vec<Bytes>, String>;

/// Forwards the upstream's chunks into the decoder's channel until the source ends, fails,
/// or the decoder hangs up: in batches of up to [`BATCH_CHUNKS`] chunks, taking only what
/// the upstream has ready (never waiting to fill a batch). With `switch` (another source is
/// waiting), a source too slow by it fails the attempt, as a source error.
async fn pump<S, E>(source: S, chunks: mpsc::Sender<Batch>, switch: Option<Switching>)
where
    S: Future<Output = Result<BoxStream<'static, Result<Bytes, E>>, E>>,
    E: std::fmt::Display,
{
    let mut pace = Pace::new(switch);
    let opened = pace.wait(source).await;
    let mut upstream = match opened {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(err)) => {
            let _ = chunks.send(Err(err.to_string())).await;
            return;
        }
        Err(slow) => {
            let _ = chunks.send(Err(slow)).await;
            return;
        }
    };
    loop {
        let mut batch = Vec::with_capacity(BATCH_CHUNKS);
        let mut item = match pace.wait(upstream.next()).await {
            Ok(item) => item,
            Err(slow) => {
                let _ = chunks.send(Err(slow)).await;
                return;
            }
        };
        // What stops the pump after this batch: `Some(Ok)` the end, `Some(Err)` a failure.
        let stop = loop {
            match item {
                Some(Ok(chunk)) => {
                    pace.got(chunk.len());
                    batch.push(chunk);
                }
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
        if let Err(slow) = pace.check() {
            let _ = chunks.send(Err(slow)).await;
            return;
        }
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

/// A source's pace as the pump sees it, held to [`Switching`] when there is one: only the
/// time spent waiting for the source counts.
struct Pace {
    switch: Option<Switching>,
    /// When the source was asked.
    asked: tokio::time::Instant,
    /// Whether a byte has come yet.
    started: bool,
    /// Waiting for the source in the current window, and the bytes it gave meanwhile.
    waited: Duration,
    window_bytes: u64,
}

impl Pace {
    fn new(switch: Option<Switching>) -> Self {
        Pace {
            switch,
            asked: tokio::time::Instant::now(),
            started: false,
            waited: Duration::ZERO,
            window_bytes: 0,
        }
    }

    /// Awaits `step` of the source within what the pace allows, or says why it is too slow.
    async fn wait<F: Future>(&mut self, step: F) -> Result<F::Output, String> {
        let Some(switch) = self.switch else {
            return Ok(step.await);
        };
        let began = tokio::time::Instant::now();
        let limit = if self.started {
            switch.stall
        } else {
            (self.asked + switch.first_byte).saturating_duration_since(began)
        };
        let out = tokio::time::timeout(limit, step).await.map_err(|_| {
            if self.started {
                format!(
                    "no byte for {:?} (stalled); trying the next source",
                    switch.stall
                )
            } else {
                format!(
                    "no first byte within {:?}; trying the next source",
                    switch.first_byte
                )
            }
        });
        self.waited += began.elapsed();
        out
    }

    /// Counts `bytes` the source gave.
    fn got(&mut self, bytes: usize) {
        self.started = true;
        self.window_bytes += bytes as u64;
    }

    /// At the end of each window of waiting: too few bytes in it is too slow.
    fn check(&mut self) -> Result<(), String> {
        let Some(switch) = self.switch else {
            return Ok(());
        };
        if self.waited < switch.window {
            return Ok(());
        }
        let floor = (switch.min_rate as f64 * self.waited.as_secs_f64()) as u64;
        if self.window_bytes < floor {
            return Err(format!(
                "{} bytes in {:.1} s of waiting, under {} bytes/s; trying the next source",
                self.window_bytes,
                self.waited.as_secs_f64(),
                switch.min_rate
            ));
        }
        self.waited = Duration::ZERO;
        self.window_bytes = 0;
        Ok(())
    }
}

/// The blocking half: decompress, count, hash and write into a spool file; the verified,
/// fsynced file is handed back for the caller to commit (dropped, it is deleted).
///
/// Decoding and hashing run on this thread, appending to the temp file on a second one
/// (write-behind through a few recycled buffers): page-cache writes cost about as much as
/// SHA-256, and DESIGN §10 wants a cold NAR bound by decompression and hashing alone.
fn decode_into_spool(
    spool: &NarStore,
    inflight: &Inflight,
    compression: Compression,
    upstream: mpsc::Receiver<Batch>,
    resume: Option<Resume>,
) -> Result<TempFile, NarError> {
    let expected = inflight.expected;
    let (path, file) = spool.create_temp(&inflight.key)?;
    let temp = TempFile {
        path,
        committed: false,
    };
    let file = Arc::new(file);
    let handoff = Handoff {
        file: Arc::clone(&file),
        hold: resume.as_ref().map_or(0, |r| r.written),
        live: AtomicBool::new(resume.is_none()),
    };
    if resume.is_none() {
        inflight
            .progress
            .send_modify(|state| state.file = Some(Arc::clone(&file)));
    }
    let mut compare = resume.map(|r| Compare {
        file: r.file,
        until: r.written,
        scratch: vec![0; CHUNK],
    });

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
        let (handoff, file) = (&handoff, &file);
        let writer = std::thread::Builder::new()
            .name("nar-writer".into())
            .spawn_scoped(scope, move || {
                write_behind(file, inflight, to_write, recycle, handoff)
            })?;
        let decoded = decode_and_hash(
            &mut *decoder,
            expected.nar_size,
            &classify,
            // No buffer coming back means the writer failed; its error is reported below.
            || free.recv().map_err(|_| NarError::Interrupted),
            |offset, bytes| {
                let Some(earlier) = compare.as_mut() else {
                    return Ok(());
                };
                if offset + bytes.len() as u64 >= earlier.until {
                    // Past the earlier attempt's bytes after this buffer: nothing more to
                    // compare (this buffer's part below it is, now).
                    let same = earlier.same(offset, bytes)?;
                    compare = None;
                    if !same {
                        handoff.restart(inflight);
                    }
                } else if !earlier.same(offset, bytes)? {
                    compare = None;
                    handoff.restart(inflight);
                }
                Ok(())
            },
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
    Ok(temp)
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
        |_, _| Ok(()),
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
/// `check` sees each buffer's bytes and their offset first (a resumed attempt compares them
/// with the earlier attempt's).
fn decode_and_hash(
    decoder: &mut dyn Read,
    nar_size: u64,
    classify: &dyn Fn(io::Error) -> NarError,
    mut next_buffer: impl FnMut() -> Result<Vec<u8>, NarError>,
    mut check: impl FnMut(u64, &[u8]) -> Result<(), NarError>,
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
        if count + n as u64 > nar_size {
            return Err(NarError::TooLarge { expected: nar_size });
        }
        check(count, &buffer[..n])?;
        count += n as u64;
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
    handoff: &Handoff,
) -> Result<(), NarError> {
    let mut out = file;
    let mut written: u64 = 0;
    let mut published: u64 = 0;
    let publish = |written: u64| handoff.publish(inflight, written);
    loop {
        let (buffer, len) = match to_write.try_recv() {
            Ok(filled) => filled,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                // Caught up: let the bodies have everything before waiting for more.
                if written > published && publish(written) {
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
        if written - published >= PUBLISH_EVERY && publish(written) {
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

/// How an attempt's file reaches the bodies. A fresh attempt's is theirs from the start. A
/// resumed one's is not, while the bodies read the broken-off attempt's bytes: it takes over
/// once it holds more than those (each compared equal before it was written), or at once as
/// a new attempt if its bytes differ ([`Handoff::restart`]).
struct Handoff {
    /// This attempt's file.
    file: Arc<File>,
    /// The broken-off attempt's byte count (0 for a fresh attempt).
    hold: u64,
    /// Whether the bodies read `file` (set once, never cleared).
    live: AtomicBool,
}

impl Handoff {
    /// Tells the bodies `written` bytes are in this attempt's file, unless they are still
    /// reading the earlier attempt's bytes (then `false`: nothing published).
    fn publish(&self, inflight: &Inflight, written: u64) -> bool {
        if self.live.load(Ordering::Acquire) {
            inflight
                .progress
                .send_modify(|state| state.written = written);
            return true;
        }
        if written <= self.hold {
            return false;
        }
        // Every byte below `hold` was compared equal to the earlier attempt's before it
        // was written: bodies switching files mid-way read the same bytes.
        inflight.progress.send_modify(|state| {
            state.file = Some(Arc::clone(&self.file));
            state.written = written;
        });
        self.live.store(true, Ordering::Release);
        true
    }

    /// This attempt's bytes differ from the broken-off attempt's: it becomes a new attempt
    /// (bodies that read the old bytes fail; the others read this file).
    fn restart(&self, inflight: &Inflight) {
        tracing::warn!(
            key = %inflight.key,
            "the next source's NAR bytes differ from those the stalled one sent; starting over"
        );
        inflight.progress.send_modify(|state| {
            state.attempt += 1;
            state.file = Some(Arc::clone(&self.file));
            state.written = 0;
        });
        self.live.store(true, Ordering::Release);
    }
}

/// The broken-off attempt's bytes, for a resumed attempt to compare its own with.
struct Compare {
    file: Arc<File>,
    /// Its byte count: only bytes below this are compared.
    until: u64,
    scratch: Vec<u8>,
}

impl Compare {
    /// Whether `bytes` at `offset` are what the earlier attempt has there (the part below
    /// `until`; the rest is new).
    fn same(&mut self, offset: u64, bytes: &[u8]) -> Result<bool, NarError> {
        if offset >= self.until {
            return Ok(true);
        }
        let n = ((self.until - offset) as usize).min(bytes.len());
        self.file.read_exact_at(&mut self.scratch[..n], offset)?;
        Ok(self.scratch[..n] == bytes[..n])
    }
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
