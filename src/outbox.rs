//! Records that must reach the database but could not be written yet: the database was down
//! or restarting, or its disk was full. They wait here, in order, and a background task
//! writes them once the database answers again, so a late upstream answer, a withdrawal or a
//! NAR stored during an outage is not lost.
//!
//! In memory only, and bounded ([`OUTBOX_CAPACITY`]): what a crash loses here the next
//! start partly recovers (NAR objects are reconciled with the store at start); attestations
//! are seen again the next time the path is resolved.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use quorate_core::attestation::{Attestation, NarSource};
use quorate_core::protocol::nar_hash::NarKey;
use tokio::sync::Notify;

use crate::db::{Db, DbError, DecisionRecord, Event};
use crate::limits::OUTBOX_CAPACITY;

/// One write to the database that nothing waits for.
#[derive(Debug, Clone)]
pub enum PendingWrite {
    /// What a round of upstream answers showed: attestations, NAR sources, and an event per
    /// upstream that failed.
    Observations {
        /// The cache they belong to.
        cache: String,
        /// Every attestation seen.
        seen: Vec<Attestation>,
        /// Where upstreams said the NAR is.
        sources: Vec<NarSource>,
        /// The failures, as events.
        events: Vec<Event>,
    },
    /// A decision (a withdrawal, typically).
    Decision(Box<DecisionRecord>),
    /// An event (conflict, mismatch, store failure).
    Event(Event),
    /// A NAR verified and committed to the storage.
    NarObject {
        /// Its key.
        key: NarKey,
        /// NarSize.
        size: u64,
        /// Where it is: a path in the local directory, or `s3://bucket/key`.
        location: String,
    },
    /// A NAR evicted from the local store.
    Evicted(NarKey),
}

impl PendingWrite {
    /// Writes it.
    pub async fn write(&self, db: &Db) -> Result<(), DbError> {
        match self {
            PendingWrite::Observations {
                cache,
                seen,
                sources,
                events,
            } => {
                if !seen.is_empty() {
                    db.record_attestations(seen).await?;
                }
                if !sources.is_empty() {
                    db.record_nar_sources(cache, sources).await?;
                }
                for e in events {
                    db.record_event(e).await?;
                }
                Ok(())
            }
            PendingWrite::Decision(d) => db.record_decision(d).await.map(drop),
            PendingWrite::Event(e) => db.record_event(e).await,
            PendingWrite::NarObject {
                key,
                size,
                location,
            } => db.record_nar_object(&key.hash(), *size, location).await,
            PendingWrite::Evicted(key) => db.remove_nar_object(&key.hash()).await,
        }
    }

    /// What it is, for the log.
    pub fn describe(&self) -> String {
        match self {
            PendingWrite::Observations { seen, cache, .. } => {
                format!("{} attestation(s) in cache {cache}", seen.len())
            }
            PendingWrite::Decision(d) => format!("a {} decision about {}", d.outcome, d.hash_part),
            PendingWrite::Event(e) => format!("a {} event", e.kind),
            PendingWrite::NarObject { key, .. } => format!("NAR object {key}"),
            PendingWrite::Evicted(key) => format!("the eviction of NAR object {key}"),
        }
    }
}

/// The queue of writes waiting for the database.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Oldest first. std Mutex: held only to push or pop.
    queue: Mutex<VecDeque<PendingWrite>>,
    /// Woken when something is queued.
    queued: Notify,
}

impl Outbox {
    /// Queues `write`; returns the write dropped to make room, if the outbox was full.
    pub fn push(&self, write: PendingWrite) -> Option<PendingWrite> {
        let dropped = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let dropped = (queue.len() >= OUTBOX_CAPACITY)
                .then(|| queue.pop_front())
                .flatten();
            queue.push_back(write);
            dropped
        };
        self.queued.notify_one();
        dropped
    }

    /// The oldest waiting write, left in place.
    pub fn front(&self) -> Option<PendingWrite> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .front()
            .cloned()
    }

    /// Removes the oldest waiting write (it was written, or can never be).
    pub fn pop(&self) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
    }

    /// How many writes wait.
    pub fn len(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once something was queued since the last call (at once if it already was).
    pub async fn queued(&self) {
        self.queued.notified().await
    }
}
