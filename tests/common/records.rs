//! What quorate recorded: its database read back with the project's own `quorate::db::Db`,
//! on whichever backend the [`Quorate`] under test uses.
//!
//! Recording may finish a moment after the HTTP answer (late upstream answers are recorded in
//! the background), so checks poll with [`wait_until`] for a bounded while. That bound is a
//! hang guard, not a timing assertion.

use std::time::{Duration, Instant};

use quorate::db::{Db, DecisionRecord, Event};
use quorate_core::attestation::Attestation;

use super::{block_on, Quorate};

/// How long a check waits for a record to appear before failing.
const RECORD_WAIT: Duration = Duration::from_secs(30);

/// Runs `f` against quorate's database (a fresh connection, closed afterwards).
pub fn with_db<T>(q: &Quorate, f: impl AsyncFnOnce(&Db) -> T) -> T {
    block_on(async {
        let db = Db::connect(q.database_url())
            .await
            .unwrap_or_else(|e| panic!("opening quorate's database {}: {e}", q.database_url()));
        let out = f(&db).await;
        db.close().await;
        out
    })
}

/// Every attestation recorded for a store path in `cache`.
pub fn attestations(q: &Quorate, cache: &str, hash_part: &str) -> Vec<Attestation> {
    let hash_part = hash_part.parse().expect("a hash part");
    with_db(q, async |db| db.attestations(cache, &hash_part).await)
        .unwrap_or_else(|e| panic!("reading attestations: {e}"))
}

/// The decision in force for a store path.
pub fn latest_decision(q: &Quorate, cache: &str, hash_part: &str) -> Option<DecisionRecord> {
    let hash_part = hash_part.parse().expect("a hash part");
    with_db(q, async |db| db.latest_decision(cache, &hash_part).await)
        .unwrap_or_else(|e| panic!("reading decisions: {e}"))
}

/// Every event of `kind` (`conflict`, `mismatch`, ...) recorded in `cache`.
pub fn events(q: &Quorate, cache: &str, kind: &str) -> Vec<Event> {
    let kind = kind.parse().expect("an event kind");
    with_db(q, async |db| db.events(Some(cache), Some(kind)).await)
        .unwrap_or_else(|e| panic!("reading events: {e}"))
}

/// Waits until an event of `kind` about `hash_part` is recorded in `cache`; returns it.
#[track_caller]
pub fn wait_for_event(q: &Quorate, cache: &str, kind: &str, hash_part: &str) -> Event {
    let mut found = None;
    wait_until(q, &format!("a {kind:?} event about {hash_part}"), || {
        found = events(q, cache, kind)
            .into_iter()
            .find(|e| format!("{e:?}").contains(hash_part));
        found.is_some()
    });
    found.expect("found")
}

/// Polls `check` until it holds; panics (showing quorate's log) if it never does.
#[track_caller]
pub fn wait_until(q: &Quorate, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + RECORD_WAIT;
    while !check() {
        if Instant::now() > deadline {
            panic!(
                "never recorded: {what} (waited {} s; {:?} backend)",
                RECORD_WAIT.as_secs(),
                q.backend()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
