//! NAR delivery: the bytes of an accepted NAR for a client, only ever verified ones.
//!
//! ```text
//! local store hit ─► stream the file (it holds only verified bytes)
//! miss ─► what the NAR must be (memory, else the database's accepted decision)
//!      ─► the best upstream that offers it (not known bad for it, priority, health)
//!      ─► join or start the single-flight verified fetch (crate::nar), stream its body
//!      ─► the caller that started the fetch records its outcome in the background
//! ```
//!
//! A body never yields a NAR's last byte before its hash and size are verified (see
//! `nar::fetch`), so a client gets the verified NAR or a failed transfer.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use quorate_core::attestation::NarSource;
use quorate_core::protocol::nar_hash::NarKey;

use crate::app::App;
use crate::config::UpstreamConfig;
use crate::db::{DbError, Event, EventKind};
use crate::limits::NAR_READ_CHUNK;
use crate::nar::{Compression, Expected, NarError};
use crate::record;
use crate::served_cache::{NarEntry, ServedCache};
use crate::upstream::{UpstreamClient, UpstreamError};

/// A NAR on its way to a client.
pub struct NarBody {
    /// The NAR's bytes; ends in an error rather than complete a wrong NAR.
    pub stream: BoxStream<'static, io::Result<Bytes>>,
    /// NarSize: the body's length when complete.
    pub size: u64,
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
}

/// The verified bytes of NAR `key` in `cache`. `known` is its entry when the caller already
/// has it (a route that resolved the store path); otherwise it is looked up.
pub async fn open(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    key: NarKey,
    known: Option<Arc<NarEntry>>,
) -> Result<NarBody, DeliveryError> {
    if let Some(body) = from_store(app, key).await {
        return Ok(body);
    }
    let entry = match known {
        Some(entry) => entry,
        None => entry(app, cache, key)
            .await?
            .ok_or(DeliveryError::NotAccepted)?,
    };
    from_upstream(app, cache, key, &entry)
}

/// Warm: the local store holds only verified bytes.
async fn from_store(app: &App, key: NarKey) -> Option<NarBody> {
    match app.fetcher.store().open_nar(&key).await {
        Ok(Some((file, size))) => {
            app.metrics.nar_local.inc();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, NAR_READ_CHUNK);
            Some(NarBody {
                stream: stream.boxed(),
                size,
            })
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(%key, "reading local NAR: {e}");
            None
        }
    }
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
    let sources = app.db.nar_sources(cache.name(), &nar_hash).await?;
    let entry = Arc::new(NarEntry { content, sources });
    cache.nars.insert(key, entry.clone()).await;
    Ok(Some(entry))
}

/// Cold: join the fetch of this NAR in flight, or start one from the best source.
fn from_upstream(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    key: NarKey,
    entry: &NarEntry,
) -> Result<NarBody, DeliveryError> {
    let picked = pick_source(app, cache, key, &entry.sources).ok_or(DeliveryError::NoSource)?;
    let url = UpstreamClient::nar_url(&picked.upstream, &picked.source.url)?;
    app.metrics.nar_upstream.inc();
    let expected = Expected {
        nar_hash: entry.content.nar_hash,
        nar_size: entry.content.nar_size,
    };
    // Lazy: polled only if this call starts the fetch.
    let source = {
        let client = app.upstream.clone();
        let up = picked.upstream.clone();
        let nar_size = expected.nar_size;
        async move { client.open_nar(&up, url, nar_size).await }.boxed()
    };
    let fetch = app
        .fetcher
        .fetch_or_join(expected, picked.compression, source);
    if fetch.started {
        let outcome = FetchOutcome {
            app: app.clone(),
            cache: cache.clone(),
            key,
            upstream: picked.upstream.url,
            entry: entry.clone(),
        };
        app.background
            .spawn(outcome.record(fetch.inflight.outcome()));
    }
    Ok(NarBody {
        stream: fetch.inflight.body().boxed(),
        size: entry.content.nar_size,
    })
}

/// The source a fetch will use.
struct Picked {
    source: NarSource,
    compression: Compression,
    upstream: UpstreamConfig,
}

/// Prefers sources that have not delivered bad bytes for this NAR, then configured upstream
/// priority, then health (failures, latency). Sources of upstreams no longer configured, and
/// in compressions quorate cannot decode, are skipped.
fn pick_source(
    app: &App,
    cache: &ServedCache,
    key: NarKey,
    sources: &[NarSource],
) -> Option<Picked> {
    sources
        .iter()
        .filter_map(|s| {
            let up = cache
                .config
                .upstreams
                .iter()
                .find(|u| u.url == s.upstream)?;
            let compression = s.compression.parse::<Compression>().ok()?;
            let bad = cache.bad_sources.contains_key(&(key, s.upstream.clone()));
            let h = app.upstream.health(&s.upstream);
            let rank = (
                bad,
                h.consecutive_failures.min(3),
                up.priority,
                h.latency_ms as u64,
            );
            let picked = Picked {
                source: s.clone(),
                compression,
                upstream: up.clone(),
            };
            Some((rank, picked))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, picked)| picked)
}

/// What the caller that started a fetch records when it ends.
struct FetchOutcome {
    app: Arc<App>,
    cache: Arc<ServedCache>,
    key: NarKey,
    upstream: String,
    entry: NarEntry,
}

impl FetchOutcome {
    async fn record(self, outcome: impl std::future::Future<Output = Result<(), NarError>>) {
        match outcome.await {
            Ok(()) => {
                let size = self.entry.content.nar_size;
                self.app.metrics.nar_bytes_fetched.add(size);
                record::nar_object(&self.app, self.key, size).await;
            }
            Err(e) => self.rejected(e).await,
        }
    }

    /// The upstream's bytes were refused: it goes last for this NAR, and the event is kept.
    async fn rejected(&self, e: NarError) {
        let kind = if matches!(e, NarError::Source(_)) {
            EventKind::UpstreamFailure
        } else {
            self.app.metrics.nar_mismatches.inc();
            EventKind::Mismatch
        };
        let store_path = &self.entry.content.store_path;
        tracing::warn!(cache = %self.cache.name(), upstream = %self.upstream, %store_path,
            "NAR from upstream rejected: {e}");
        self.cache
            .bad_sources
            .insert((self.key, self.upstream.clone()), ())
            .await;
        let event = Event {
            store_path: Some(store_path.clone()),
            upstream: Some(self.upstream.clone()),
            ..record::event(&self.cache, kind, e.to_string())
        };
        let result = self.app.db.record_event(&event).await;
        record::logged(&self.app, &format!("a {kind} event"), result);
    }
}
