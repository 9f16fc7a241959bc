//! Counters exported at `/metrics`: what quorate decided, served and fetched, and what went
//! wrong. Lock-free: every field is an atomic bumped on the request path.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// narinfo requests received.
    pub narinfo_requests: Counter,
    /// Resolutions that accepted a content.
    pub narinfo_accepted: Counter,
    /// Resolutions refused for a conflict.
    pub narinfo_refused: Counter,
    /// Resolutions without enough agreeing builders.
    pub narinfo_insufficient: Counter,
    /// NAR requests served from the local store.
    pub nar_local: Counter,
    /// NAR requests that needed an upstream fetch (started or joined).
    pub nar_upstream: Counter,
    /// NAR bytes verified and committed from upstreams.
    pub nar_bytes_fetched: Counter,
    /// NAR downloads whose bytes did not match the agreed hash/size.
    pub nar_mismatches: Counter,
    /// Failed upstream requests.
    pub upstream_failures: Counter,
    /// Conflicts recorded.
    pub conflicts: Counter,
    /// Records (attestations, decisions, events, NAR objects) that could not be written to
    /// the database. Each is also logged; none is dropped silently.
    pub record_failures: Counter,
}
