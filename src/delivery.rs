//! NAR delivery: the bytes of an accepted NAR for a client, only ever verified ones.
//!
//! ```text
//! stored ─► stream the file or object (all, or a `Range`: storage holds only verified bytes)
//! miss ─► what the NAR must be (memory, else the database's accepted decision)
//!      ─► every upstream that offers it at a URL it may send quorate to, ranked (not known
//!         bad for it, priority, then the soonest expected end: throughput and decoding cost)
//!      ─► join or start the single-flight verified fetch (crate::nar), which tries them in
//!         turn; stream its body (in a replica set, the set first decides who downloads:
//!         crate::fleet)
//!      ─► the caller that started the fetch records its report in the background: the NAR
//!         object, and each source that failed (bad for this NAR, with an event)
//! ```
//!
//! A body never yields a NAR's last byte before its hash and size are verified (see
//! `nar::fetch`), so a client gets the verified NAR or a failed transfer.
//!
//! With `nar_compression = "zstd"` (local store only), a stored NAR also gets a zstd copy,
//! made once on the blocking pool after the NAR is stored ([`compress_later`]) and served as
//! it is ([`open_compressed`]): it exists only beside a verified NAR, made from its bytes.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use quorate_core::attestation::NarSource;
use quorate_core::protocol::nar_hash::NarKey;

use crate::app::App;
use crate::config::{NarCompression, UpstreamConfig};
use crate::db::{DbError, Event, EventKind};
use crate::fleet::{Claim, ClaimError};
use crate::metrics::UpstreamKind;
use crate::nar::{
    compress_stored_blocking, decode_bytes_per_sec, ByteRange, Compression, Expected, FetchReport,
    FetchSource, Inflight, NarError, NarStore, Opened,
};
use crate::outbox::PendingWrite;
use crate::record;
use crate::served_cache::{NarEntry, ServedCache};
use crate::upstream::{UpstreamClient, UpstreamError};
use quorate_core::flavor::CompressedNar;

/// A NAR on its way to a client.
pub struct NarBody {
    /// The NAR's bytes (those of `range`); ends in an error rather than complete a wrong NAR.
    pub stream: BoxStream<'static, io::Result<Bytes>>,
    /// NarSize: the whole NAR's length.
    pub size: u64,
    /// The part of the NAR `stream` holds, when a range was asked for and served (only
    /// stored NARs serve ranges; a NAR still being fetched is sent whole).
    pub range: Option<Range<u64>>,
}

/// Why no NAR can be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No decision in force accepted a content with this NAR (404).
    #[error("no accepted store path has this NAR")]
    NotAccepted,
    /// No configured upstream offers it in a compression quorate decodes (404).
    #[error("no upstream offers this NAR")]
    NoSource,
    /// The chosen upstream advertised a URL quorate will not fetch (502).
    #[error(transparent)]
    BadNarUrl(#[from] UpstreamError),
    /// The database could not say what the NAR must be (503).
    #[error("database: {0}")]
    Database(#[from] DbError),
    /// Another replica has been fetching it for too long (503).
    #[error("another replica is still fetching this NAR")]
    Busy,
    /// The NAR storage (the bucket) could not be read (503).
    #[error("NAR storage: {0}")]
    Storage(io::Error),
    /// The range asked for selects none of the stored NAR's `size` bytes (416).
    #[error("the range asked for is outside the NAR's {size} bytes")]
    RangeNotSatisfiable {
        /// The NAR's size.
        size: u64,
    },
}

/// The verified bytes of NAR `key` in `cache` (those of `range`, when stored). `known` is
/// its entry when the caller already has it (a route that resolved the store path);
/// otherwise it is looked up.
pub async fn open(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    key: NarKey,
    known: Option<Arc<NarEntry>>,
    range: Option<ByteRange>,
) -> Result<NarBody, DeliveryError> {
    refuse_blocked(cache, key)?;
    if let Some(body) = from_store(app, cache, key, range).await? {
        return Ok(body);
    }
    let entry = match known {
        Some(entry) => entry,
        None => entry(app, cache, key)
            .await?
            .ok_or(DeliveryError::NotAccepted)?,
    };
    from_upstream(app, cache, key, &entry).await
}

/// What a `HEAD` of NAR `key` is told, without fetching anything: its size (NarSize), when
/// the store holds it or an accepted decision names it and some upstream offers it — the
/// same conditions under which [`open`] would deliver it.
pub async fn probe(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    key: NarKey,
    known: Option<Arc<NarEntry>>,
) -> Result<u64, DeliveryError> {
    refuse_blocked(cache, key)?;
    if let Some(size) = app
        .fetcher
        .storage()
        .size_of(&key)
        .await
        .map_err(DeliveryError::Storage)?
    {
        return Ok(size);
    }
    let entry = match known {
        Some(entry) => entry,
        None => entry(app, cache, key)
            .await?
            .ok_or(DeliveryError::NotAccepted)?,
    };
    let mut unusable = None;
    for picked in rank_sources(app, cache, key, &entry.sources, entry.content.nar_size) {
        match UpstreamClient::nar_url(&picked.upstream, &picked.source.url) {
            Ok(_) => return Ok(entry.content.nar_size),
            Err(e) => unusable = Some(e),
        }
    }
    Err(unusable.map_or(DeliveryError::NoSource, DeliveryError::BadNarUrl))
}

/// The local store, when `cache` offers zstd copies (`nar_compression = "zstd"`; a bucket
/// keeps none, see the README).
fn compressing_store<'a>(app: &'a App, cache: &ServedCache) -> Option<&'a Arc<NarStore>> {
    match cache.config.nar_compression {
        NarCompression::None => None,
        NarCompression::Zstd => app.fetcher.storage().local(),
    }
}

/// Whether `cache` offers stored zstd copies: `nar_compression = "zstd"` with a local store.
pub fn keeps_copies(app: &App, cache: &ServedCache) -> bool {
    compressing_store(app, cache).is_some()
}

/// The stored zstd copy of NAR `key`, if `cache` offers copies and it has been made.
/// Never for a NAR the block list names.
pub fn stored_copy(app: &App, cache: &ServedCache, key: NarKey) -> Option<CompressedNar> {
    refuse_blocked(cache, key).ok()?;
    compressing_store(app, cache)?.compressed(&key)
}

/// Makes NAR `key`'s zstd copy in the background, on the blocking pool, if `cache` offers
/// copies and the store holds the NAR without one (at most one making per NAR).
pub fn compress_later(app: &App, cache: &ServedCache, key: NarKey) {
    let Some(claim) = compressing_store(app, cache).and_then(|s| s.claim_compression(&key)) else {
        return;
    };
    app.background.spawn(async move {
        let made = tokio::task::spawn_blocking(move || compress_stored_blocking(claim));
        match made.await {
            Ok(Ok(Some(copy))) => {
                tracing::debug!(%key, file_size = copy.file_size, "stored the NAR's zstd copy")
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(%key, "cannot store the NAR's zstd copy: {e}"),
            Err(e) => tracing::warn!(%key, "compressing the NAR failed: {e}"),
        }
    });
}

/// The stored zstd copy of NAR `key` as it streams, with its size; `None` when there is
/// none (not made yet, evicted, or `cache` offers none).
pub async fn open_compressed(
    app: &App,
    cache: &ServedCache,
    key: NarKey,
) -> Result<Option<(BoxStream<'static, io::Result<Bytes>>, u64)>, DeliveryError> {
    refuse_blocked(cache, key)?;
    let Some(store) = compressing_store(app, cache) else {
        return Ok(None);
    };
    let opened = store
        .open_compressed(&key)
        .await
        .map_err(DeliveryError::Storage)?;
    let Some((file, copy)) = opened else {
        return Ok(None);
    };
    app.metrics.nar_request(cache.name(), true);
    let stream = crate::nar::read::CLIENTS.file_stream(file, 0..copy.file_size);
    Ok(Some((stream, copy.file_size)))
}

/// A NAR whose NarHash the cache's block list names is not served, even from the store.
fn refuse_blocked(cache: &ServedCache, key: NarKey) -> Result<(), DeliveryError> {
    if cache.policy.blocks_nar(&key.hash()) {
        return Err(DeliveryError::NotAccepted);
    }
    Ok(())
}

/// Warm: the storage holds only verified bytes. A storage that cannot be read is an
/// error (503), not a reason to fetch: the fetch could not be stored either.
async fn from_store(
    app: &App,
    cache: &ServedCache,
    key: NarKey,
    range: Option<ByteRange>,
) -> Result<Option<NarBody>, DeliveryError> {
    let read = match app.fetcher.storage().open(&key, range).await {
        Ok(Opened::Read(read)) => read,
        Ok(Opened::Missing) => return Ok(None),
        Ok(Opened::Unsatisfiable { size }) => {
            return Err(DeliveryError::RangeNotSatisfiable { size })
        }
        Err(e) => return Err(DeliveryError::Storage(e)),
    };
    app.metrics.nar_request(cache.name(), true);
    if app.fetcher.storage().objects().is_some() {
        // The bucket keeps no access times: the database does, for eviction (the local
        // directory tracks its own).
        let db = app.db.clone();
        app.background.spawn(async move {
            if let Err(e) = db.touch_nar_object(&key.hash()).await {
                tracing::debug!(%key, "recording a NAR's last access: {e}");
            }
        });
    }
    Ok(Some(NarBody {
        stream: read.stream,
        size: read.size,
        range: range.map(|_| read.range),
    }))
}

/// What is known about NAR `key`: memory first, then the database's accepted decision.
async fn entry(
    app: &App,
    cache: &ServedCache,
    key: NarKey,
) -> Result<Option<Arc<NarEntry>>, DbError> {
    if let Some(e) = cache.nars.get(&key).await {
        return Ok(Some(e));
    }
    let nar_hash = key.hash();
    let decision = app
        .db
        .accepted_decision_for_nar(cache.name(), &nar_hash)
        .await?;
    let Some(content) = decision.and_then(|d| d.content) else {
        return Ok(None);
    };
    if cache.policy.block_of(&content).is_some() {
        return Ok(None); // accepted before the path was blocked
    }
    let sources = app.db.nar_sources(cache.name(), &nar_hash).await?;
    let entry = Arc::new(NarEntry { content, sources });
    cache.nars.insert(key, entry.clone()).await;
    Ok(Some(entry))
}

/// Cold. A lone process joins the fetch of this NAR in flight here, or starts one. A
/// replica of a set does the same when the fetch is in flight here; otherwise the set
/// decides who downloads it ([`crate::fleet`]): this replica (holding the lease while it
/// does), the owner relaying it, or the storage once it holds it.
async fn from_upstream(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    key: NarKey,
    entry: &NarEntry,
) -> Result<NarBody, DeliveryError> {
    let Some(fleet) = &app.fleet else {
        return fetch_here(app, cache, key, entry).map(|(body, _)| body);
    };
    if app.fetcher.running(&key).is_some() {
        return fetch_here(app, cache, key, entry).map(|(body, _)| body);
    }
    let _turn = fleet.serialize(key).await;
    if app.fetcher.running(&key).is_some() {
        return fetch_here(app, cache, key, entry).map(|(body, _)| body);
    }
    let size = entry.content.nar_size;
    let claim = fleet.claim(&app.db, app.fetcher.storage(), key, size).await;
    let claim = claim.map_err(|e| match e {
        ClaimError::Storage(e) => DeliveryError::Storage(e),
        ClaimError::Busy => DeliveryError::Busy,
    })?;
    app.metrics.fleet_claim(claim.role());
    match claim {
        Claim::Stored => match from_store(app, cache, key, None).await? {
            Some(body) => Ok(body),
            // Evicted between the two looks: fetch it again, here.
            None => fetch_here(app, cache, key, entry).map(|(body, _)| body),
        },
        Claim::Owner(lease) => {
            let (body, inflight) = fetch_here(app, cache, key, entry)?;
            app.background.spawn(lease.hold_until(inflight.report()));
            Ok(body)
        }
        Claim::Relay(source) => {
            let owner = source.label.clone();
            let expected = Expected {
                nar_hash: entry.content.nar_hash,
                nar_size: size,
            };
            app.metrics.nar_request(cache.name(), false);
            let fetch = app.fetcher.relay_or_join(expected, source);
            if fetch.started {
                let report = fetch.inflight.report();
                let store_path = entry.content.store_path.clone();
                app.background.spawn(async move {
                    if let Err(e) = report.await.verdict {
                        tracing::warn!(%store_path, %owner, "relay from the owning replica failed: {e}");
                    }
                });
            }
            Ok(NarBody {
                stream: fetch.inflight.body().boxed(),
                size,
                range: None,
            })
        }
        Claim::Alone => fetch_here(app, cache, key, entry).map(|(body, _)| body),
    }
}

/// Joins the fetch of this NAR in flight here, or starts one from the ranked sources.
fn fetch_here(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    key: NarKey,
    entry: &NarEntry,
) -> Result<(NarBody, Arc<Inflight>), DeliveryError> {
    let nar_size = entry.content.nar_size;
    let mut sources = Vec::new();
    let mut unusable = None;
    for picked in rank_sources(app, cache, key, &entry.sources, nar_size) {
        let url = match UpstreamClient::nar_url(&picked.upstream, &picked.source.url) {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(cache = %cache.name(), "NAR source skipped: {e}");
                unusable = Some(e);
                continue;
            }
        };
        // Lazy: polled only if the fetch gets to this source.
        let (client, app) = (app.upstream.clone(), app.clone());
        let up = picked.upstream;
        sources.push(FetchSource {
            label: up.url.clone(),
            compression: picked.compression,
            open: async move {
                let started = std::time::Instant::now();
                let opened = client.open_nar(&up, url, nar_size).await;
                let elapsed = started.elapsed();
                let ok = opened.is_ok();
                app.metrics
                    .upstream_answer(&up.url, UpstreamKind::Nar, elapsed, ok);
                opened
            }
            .boxed(),
        });
    }
    if sources.is_empty() {
        return Err(unusable.map_or(DeliveryError::NoSource, DeliveryError::BadNarUrl));
    }
    app.metrics.nar_request(cache.name(), false);
    let expected = Expected {
        nar_hash: entry.content.nar_hash,
        nar_size,
    };
    let fetch = app.fetcher.fetch_or_join(expected, sources);
    if fetch.started {
        let outcome = FetchOutcome {
            app: app.clone(),
            cache: cache.clone(),
            key,
            entry: entry.clone(),
        };
        app.background
            .spawn(outcome.record(fetch.inflight.report()));
    }
    let inflight = Arc::clone(&fetch.inflight);
    let body = NarBody {
        stream: fetch.inflight.body().boxed(),
        size: nar_size,
        range: None,
    };
    Ok((body, inflight))
}

/// A source a fetch may use.
struct Picked {
    source: NarSource,
    compression: Compression,
    upstream: UpstreamConfig,
}

/// Every usable source, best first: sources that have not failed for this NAR, then
/// upstreams without recent failures, then configured upstream `priority` (lower first),
/// then the fetch expected to end soonest ([`estimated_secs`]: measured throughput and the
/// decoding cost of the source's compression), then config order. Sources of upstreams no
/// longer configured, and in compressions quorate cannot decode, are left out.
fn rank_sources(
    app: &App,
    cache: &ServedCache,
    key: NarKey,
    sources: &[NarSource],
    nar_size: u64,
) -> Vec<Picked> {
    let mut ranked: Vec<_> = sources
        .iter()
        .filter_map(|s| {
            let (index, up) = cache
                .config
                .upstreams
                .iter()
                .enumerate()
                .find(|(_, u)| u.url == s.upstream)?;
            let compression = s.compression.parse::<Compression>().ok()?;
            let bad = cache.bad_sources.contains_key(&(key, s.upstream.clone()));
            let h = app.upstream.health(&s.upstream);
            let estimate = estimated_secs(&h, compression, s.file_size, nar_size);
            tracing::debug!(
                %key,
                upstream = %s.upstream,
                %compression,
                bad,
                failures = h.consecutive_failures,
                priority = up.priority,
                latency_ms = h.latency_ms,
                bytes_per_sec = h.nar_bytes_per_sec,
                estimate,
                "NAR source ranked"
            );
            let rank = (
                bad,
                h.consecutive_failures.min(3),
                up.priority,
                // Whole microseconds: an order, not a measurement.
                (estimate * 1e6) as u64,
                index,
            );
            let picked = Picked {
                source: s.clone(),
                compression,
                upstream: up.clone(),
            };
            Some((rank, picked))
        })
        .collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.into_iter().map(|(_, picked)| picked).collect()
}

/// The link rate assumed for an upstream whose NAR throughput is not measured yet: ~1 Gbit/s.
const ASSUMED_BYTES_PER_SEC: f64 = 100.0 * 1024.0 * 1024.0;

/// How long fetching a NAR from this source should take, in seconds: the upstream's narinfo
/// latency (its first byte), then the longer of moving `file_size` bytes at its measured
/// throughput (or [`ASSUMED_BYTES_PER_SEC`]) and decoding `nar_size` bytes from its
/// compression ([`decode_bytes_per_sec`]), since a fetch downloads and decodes at once, plus a
/// quarter of the shorter one (the overlap is not perfect, and decoding takes a core the
/// client's stream needs too). A measured throughput already includes any decoding that
/// held the download back.
fn estimated_secs(
    health: &crate::upstream::Health,
    compression: Compression,
    file_size: Option<u64>,
    nar_size: u64,
) -> f64 {
    let nar = nar_size as f64;
    // Unknown compressed size: an uncompressed file is the NAR; a compressed one, guessed
    // at half of it.
    let file = file_size.map_or_else(
        || {
            if compression == Compression::None {
                nar
            } else {
                nar / 2.0
            }
        },
        |f| f as f64,
    );
    let rate = if health.nar_bytes_per_sec > 0.0 {
        health.nar_bytes_per_sec
    } else {
        ASSUMED_BYTES_PER_SEC
    };
    let transfer = file / rate;
    let decode = nar / decode_bytes_per_sec(compression);
    health.latency_ms / 1000.0 + transfer.max(decode) + 0.25 * transfer.min(decode)
}

/// Whose fault a failed fetch was.
enum Fault {
    /// The upstream's: wrong bytes (`Mismatch`) or a broken download (`UpstreamFailure`).
    Upstream(EventKind),
    /// Ours: the local store could not take the bytes.
    Local,
    /// Nobody's: the process is stopping.
    Interrupted,
}

impl NarError {
    fn fault(&self) -> Fault {
        match self {
            NarError::HashMismatch { .. }
            | NarError::SizeMismatch { .. }
            | NarError::TooLarge { .. }
            | NarError::Decompress(_) => Fault::Upstream(EventKind::Mismatch),
            NarError::Source(_) => Fault::Upstream(EventKind::UpstreamFailure),
            NarError::Store(_) => Fault::Local,
            NarError::Interrupted => Fault::Interrupted,
        }
    }
}

/// What the caller that started a fetch records when it ends.
struct FetchOutcome {
    app: Arc<App>,
    cache: Arc<ServedCache>,
    key: NarKey,
    entry: NarEntry,
}

impl FetchOutcome {
    async fn record(self, report: impl std::future::Future<Output = FetchReport>) {
        let report = report.await;
        for failed in report.failed {
            self.rejected(&failed.source, failed.error).await;
        }
        if report.verdict.is_ok() {
            let size = self.entry.content.nar_size;
            if let Some(upstream) = &report.delivered_by {
                self.app.metrics.nar_fetched(upstream, size);
            }
            let stored = PendingWrite::NarObject {
                key: self.key,
                size,
                location: self.app.fetcher.storage().location(&self.key),
            };
            compress_later(&self.app, &self.cache, self.key);
            record::best_effort(&self.app, stored).await;
        }
    }

    /// An attempt failed. An upstream at fault (wrong bytes, a broken download) goes last for
    /// this NAR; a local fault (the disk full, the store unwritable) is recorded as such and
    /// blames no upstream.
    async fn rejected(&self, upstream: &str, e: NarError) {
        let store_path = &self.entry.content.store_path;
        let kind = match e.fault() {
            Fault::Upstream(kind) => {
                match kind {
                    EventKind::Mismatch => self.app.metrics.nar_mismatch(upstream),
                    _ => self.app.metrics.upstream_error(upstream, UpstreamKind::Nar),
                }
                tracing::warn!(cache = %self.cache.name(), %upstream, %store_path,
                    "NAR from upstream rejected: {e}");
                self.cache
                    .bad_sources
                    .insert((self.key, upstream.to_owned()), ())
                    .await;
                kind
            }
            Fault::Local => {
                tracing::error!(cache = %self.cache.name(), %store_path,
                    "storing a NAR failed here, not upstream: {e}");
                EventKind::StoreFailure
            }
            Fault::Interrupted => return,
        };
        let event = Event {
            store_path: Some(store_path.clone()),
            upstream: (kind != EventKind::StoreFailure).then(|| upstream.to_owned()),
            ..record::event(&self.cache, kind, e.to_string())
        };
        record::best_effort(&self.app, PendingWrite::Event(event)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Health;

    const MIB: u64 = 1024 * 1024;

    fn unmeasured() -> Health {
        Health::default()
    }

    fn measured(mib_per_sec: f64) -> Health {
        Health {
            nar_bytes_per_sec: mib_per_sec * MIB as f64,
            ..Health::default()
        }
    }

    #[test]
    fn on_an_unmeasured_link_an_uncompressed_nar_beats_zstd_beats_xz_of_the_same_file() {
        // An incompressible NAR: every compression leaves the file as large as the NAR.
        let nar = 100 * MIB;
        let none = estimated_secs(&unmeasured(), Compression::None, Some(nar), nar);
        let zstd = estimated_secs(&unmeasured(), Compression::Zstd, Some(nar), nar);
        let xz = estimated_secs(&unmeasured(), Compression::Xz, Some(nar), nar);
        assert!(none <= zstd && zstd < xz, "{none} {zstd} {xz}");
    }

    #[test]
    fn a_much_smaller_compressed_file_wins_on_a_slow_link_and_loses_on_a_fast_one() {
        let nar = 100 * MIB;
        let xz_file = Some(20 * MIB);
        // 10 MiB/s: 10 s uncompressed against 2 s of download, 0.8 s of decoding.
        let slow_none = estimated_secs(&measured(10.0), Compression::None, Some(nar), nar);
        let slow_xz = estimated_secs(&measured(10.0), Compression::Xz, xz_file, nar);
        assert!(slow_xz < slow_none, "{slow_xz} {slow_none}");
        // 2 GiB/s: the uncompressed file is there in 0.05 s; xz still decodes for 0.8 s.
        let fast_none = estimated_secs(&measured(2048.0), Compression::None, Some(nar), nar);
        let fast_xz = estimated_secs(&measured(2048.0), Compression::Xz, xz_file, nar);
        assert!(fast_none < fast_xz, "{fast_none} {fast_xz}");
    }

    #[test]
    fn a_measured_slow_upstream_ranks_behind_a_faster_one_with_the_same_file() {
        let nar = 100 * MIB;
        let slow = estimated_secs(&measured(5.0), Compression::Zstd, Some(nar), nar);
        let fast = estimated_secs(&measured(500.0), Compression::Zstd, Some(nar), nar);
        assert!(fast < slow, "{fast} {slow}");
    }

    #[test]
    fn an_unknown_file_size_is_estimated_from_the_nar_size() {
        let nar = 100 * MIB;
        let known = estimated_secs(&unmeasured(), Compression::None, Some(nar), nar);
        let unknown = estimated_secs(&unmeasured(), Compression::None, None, nar);
        assert_eq!(known, unknown);
        assert!(estimated_secs(&unmeasured(), Compression::Zstd, None, nar) > 0.0);
    }
}
