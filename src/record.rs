//! Recording: what quorate saw and decided goes into the database, the truth behind every
//! memory cache.
//!
//! Two kinds of write:
//! - writes an answer rests on (a resolution's attestations and decision, attestations a
//!   builder pushed) return their error:
//!   the request then fails with 503 rather than serve what was not recorded;
//! - writes nothing waits for (late answers, withdrawals, NAR objects, evictions, mismatch
//!   and store events) go through [`best_effort`]: written at once if the database takes
//!   them, queued in the [outbox](crate::outbox) while it cannot (down, disk full) and
//!   written when it can again; a write that can never succeed is logged and counted in
//!   `quorate_record_failures_total`. None is dropped silently.

use std::sync::Arc;
use std::time::Duration;

use quorate_core::attestation::{Attestation, NarSource};

use crate::app::App;
use crate::clock::now_ms;
use crate::db::{DbError, Event, EventKind};
use crate::outbox::PendingWrite;
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

/// What a round of upstream answers showed, as one write: the attestations, the NAR
/// sources, and an event per failed upstream (logged and counted here, once).
pub fn observations(
    app: &App,
    cache: &ServedCache,
    seen: &[Attestation],
    sources: &[NarSource],
    failures: &[UpstreamFailure],
) -> PendingWrite {
    for a in seen {
        app.metrics
            .attestation(cache.name(), a.builder.as_deref(), a.status);
    }
    let events = failures
        .iter()
        .map(|f| {
            tracing::warn!(cache = %cache.name(), upstream = %f.upstream, "{}", f.why);
            Event {
                upstream: Some(f.upstream.clone()),
                ..event(cache, EventKind::UpstreamFailure, f.why.clone())
            }
        })
        .collect();
    PendingWrite::Observations {
        cache: cache.name().to_owned(),
        seen: seen.to_vec(),
        sources: sources.to_vec(),
        events,
    }
}

/// Attestations a builder pushed (valid, by the cache's builders), written now: the pusher's
/// answer rests on it ("accepted" means recorded), so its error is returned, never queued.
/// Counted like observed ones.
pub async fn pushed(
    app: &App,
    cache: &ServedCache,
    accepted: &[Attestation],
) -> Result<(), DbError> {
    app.db.record_attestations(accepted).await?;
    for a in accepted {
        app.metrics
            .attestation(cache.name(), a.builder.as_deref(), a.status);
    }
    Ok(())
}

/// A conflict between trusted builders about `store_path`, as one write (counted here).
pub fn conflict(
    app: &App,
    cache: &ServedCache,
    store_path: Option<String>,
    detail: String,
) -> PendingWrite {
    app.metrics.conflict(cache.name());
    PendingWrite::Event(Event {
        store_path,
        ..event(cache, EventKind::Conflict, detail)
    })
}

/// The block list refusing `store_path` although builders agreed on it, as one write.
pub fn blocked(cache: &ServedCache, store_path: String, detail: String) -> PendingWrite {
    PendingWrite::Event(Event {
        store_path: Some(store_path),
        ..event(cache, EventKind::Blocked, detail)
    })
}

/// Writes `write` now, or queues it in the outbox if the database cannot take it right now;
/// a write that can never succeed is logged and counted.
pub async fn best_effort(app: &App, write: PendingWrite) {
    match write.write(&app.db).await {
        Ok(()) => {}
        Err(e) if e.is_transient() => {
            tracing::warn!("database unavailable ({e}); queued {}", write.describe());
            if let Some(dropped) = app.outbox.push(write) {
                failed(app, &dropped, "the outbox is full");
            }
        }
        Err(e) => failed(app, &write, &e.to_string()),
    }
}

fn failed(app: &App, write: &PendingWrite, why: &str) {
    app.metrics.record_failure();
    tracing::error!("could not record {}: {why}", write.describe());
}

/// Forgets, in the database, the NAR objects the store evicted since last time.
pub async fn evictions(app: &App) {
    for gone in app.fetcher.storage().spool().take_evicted() {
        best_effort(app, PendingWrite::Evicted(gone)).await;
    }
}

/// Keeps the database's NAR objects following the store's evictions until shutdown; the
/// last evictions are recorded by whoever drains the background work.
pub async fn follow_evictions(app: Arc<App>) {
    let shutdown = app.background.shutdown_signal();
    loop {
        tokio::select! {
            () = app.fetcher.storage().spool().evicted() => evictions(&app).await,
            () = shutdown.cancelled() => return,
        }
    }
}

/// How long the outbox waits before trying the database again, at first and at most.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Writes the outbox's queued records, oldest first, as soon as the database takes them
/// again; runs until shutdown, then tries once more to empty the outbox.
pub async fn flush_outbox(app: Arc<App>) {
    let shutdown = app.background.shutdown_signal();
    let mut wait = RETRY_FIRST;
    loop {
        if app.outbox.is_empty() {
            wait = RETRY_FIRST;
            tokio::select! {
                () = app.outbox.queued() => continue,
                () = shutdown.cancelled() => return,
            }
        }
        match flush_once(&app).await {
            Ok(()) => wait = RETRY_FIRST,
            Err(e) => {
                tracing::debug!("outbox: database still unavailable ({e}); retrying in {wait:?}");
                tokio::select! {
                    () = tokio::time::sleep(wait) => wait = (wait * 2).min(RETRY_MAX),
                    () = shutdown.cancelled() => {
                        let _ = flush_once(&app).await;
                        return;
                    }
                }
            }
        }
    }
}

/// Writes queued records until the outbox is empty or the database fails transiently.
async fn flush_once(app: &App) -> Result<(), DbError> {
    while let Some(write) = app.outbox.front() {
        match write.write(&app.db).await {
            Ok(()) => {
                tracing::info!("recorded {} (queued during an outage)", write.describe());
                app.outbox.pop();
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                failed(app, &write, &e.to_string());
                app.outbox.pop();
            }
        }
    }
    Ok(())
}
