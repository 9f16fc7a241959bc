//! Recording: what quorate saw and decided goes into the database, the truth behind every
//! memory cache.
//!
//! Two kinds of write:
//! - writes an answer rests on (a resolution's attestations and decision) return their error:
//!   the request then fails with 503 rather than serve what was not recorded;
//! - writes nothing waits for (late answers, NAR objects, evictions, mismatch events) are
//!   best effort: a failure is logged and counted in `quorate_record_failures_total`, never
//!   dropped silently ([`logged`]).

use std::sync::Arc;

use quorate_core::attestation::{Attestation, NarSource};
use quorate_core::protocol::nar_hash::NarKey;

use crate::app::App;
use crate::clock::now_ms;
use crate::db::{DbError, DecisionRecord, Event, EventKind};
use crate::served_cache::ServedCache;

/// An upstream that could not answer, and why.
#[derive(Debug, Clone)]
pub struct UpstreamFailure {
    /// The upstream's base URL.
    pub upstream: String,
    /// What went wrong, for the log and the event.
    pub why: String,
}

/// An event about `cache`, happening now.
pub fn event(cache: &ServedCache, kind: EventKind, detail: String) -> Event {
    Event {
        cache: Some(cache.name().to_owned()),
        kind,
        store_path: None,
        upstream: None,
        detail,
        at: now_ms(),
    }
}

/// Records what a round of upstream answers showed: the attestations, the NAR sources, and
/// an event per failed upstream.
pub async fn observations(
    app: &App,
    cache: &ServedCache,
    seen: &[Attestation],
    sources: &[NarSource],
    failures: &[UpstreamFailure],
) -> Result<(), DbError> {
    if !seen.is_empty() {
        app.db.record_attestations(seen).await?;
    }
    if !sources.is_empty() {
        app.db.record_nar_sources(cache.name(), sources).await?;
    }
    for f in failures {
        app.metrics.upstream_failures.inc();
        tracing::warn!(cache = %cache.name(), upstream = %f.upstream, "{}", f.why);
        app.db
            .record_event(&Event {
                upstream: Some(f.upstream.clone()),
                ..event(cache, EventKind::UpstreamFailure, f.why.clone())
            })
            .await?;
    }
    Ok(())
}

/// Appends a decision.
pub async fn decision(app: &App, record: &DecisionRecord) -> Result<(), DbError> {
    app.db.record_decision(record).await.map(drop)
}

/// Records (and counts) a conflict between trusted builders about `store_path`.
pub async fn conflict(
    app: &App,
    cache: &ServedCache,
    store_path: Option<String>,
    detail: String,
) -> Result<(), DbError> {
    app.metrics.conflicts.inc();
    app.db
        .record_event(&Event {
            store_path,
            ..event(cache, EventKind::Conflict, detail)
        })
        .await
}

/// A best-effort write's result: `Some` on success; on failure the error is logged with
/// `what` and counted, and `None` returned.
pub fn logged<T>(app: &App, what: &str, result: Result<T, DbError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            app.metrics.record_failures.inc();
            tracing::error!("could not record {what}: {e}");
            None
        }
    }
}

/// Records a NAR just verified and committed to the local store (best effort).
pub async fn nar_object(app: &App, key: NarKey, size: u64) {
    let location = format!("nar/{}/{key}.nar", &key.to_string()[..2]);
    let result = app.db.record_nar_object(&key.hash(), size, &location).await;
    logged(app, &format!("NAR object {key}"), result);
}

/// Forgets, in the database, the NAR objects the store evicted since last time (best
/// effort: attestations and decisions stay).
pub async fn evictions(app: &App) {
    for gone in app.fetcher.store().take_evicted() {
        let result = app.db.remove_nar_object(&gone.hash()).await;
        logged(app, &format!("eviction of NAR object {gone}"), result);
    }
}

/// Keeps the database's NAR objects following the store's evictions until shutdown; the
/// last evictions are recorded by whoever drains the background work.
pub async fn follow_evictions(app: Arc<App>) {
    let shutdown = app.background.shutdown_signal();
    loop {
        tokio::select! {
            () = app.fetcher.store().evicted() => evictions(&app).await,
            () = shutdown.cancelled() => return,
        }
    }
}
