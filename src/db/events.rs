//! Events: what an operator should know about (NAR mismatches, conflicting attestations,
//! upstream failures, paths the block list refused), appended as they happen.

use serde::{Deserialize, Serialize};

use super::columns::Columns;
use super::{Db, DbError};

/// What kind of thing happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An upstream delivered NAR bytes that do not match the agreed NarHash or NarSize.
    Mismatch,
    /// Trusted builders disagree about a store path.
    Conflict,
    /// An upstream request failed (unreachable, timed out, bad answer).
    UpstreamFailure,
    /// Something failed here, not upstream: the NAR store could not take a NAR (disk full,
    /// permissions).
    StoreFailure,
    /// A followed peer's log showed two histories under one key: it is no longer followed.
    PeerFork,
    /// The cache's block list refused a path that builders agreed on (the detail says why).
    Blocked,
}

impl EventKind {
    /// Every kind, for listings and for parsing.
    pub const ALL: [EventKind; 6] = [
        EventKind::Mismatch,
        EventKind::Conflict,
        EventKind::UpstreamFailure,
        EventKind::StoreFailure,
        EventKind::PeerFork,
        EventKind::Blocked,
    ];

    /// The spelling stored in the database and used by the API's `kind=` filter.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Mismatch => "mismatch",
            EventKind::Conflict => "conflict",
            EventKind::UpstreamFailure => "upstream_failure",
            EventKind::StoreFailure => "store_failure",
            EventKind::PeerFork => "peer_fork",
            EventKind::Blocked => "blocked",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}

/// An event kind this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind {0:?}: expected mismatch, conflict, upstream_failure or store_failure")]
pub struct UnknownEventKind(pub String);

/// One noteworthy happening.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The cache it concerns; `None` for process-wide events.
    pub cache: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// The store path concerned, if any.
    pub store_path: Option<String>,
    /// The upstream concerned, if any (e.g. the one that served wrong bytes).
    pub upstream: Option<String>,
    /// Human-readable details.
    pub detail: String,
    /// When it happened, Unix milliseconds.
    pub at: i64,
}

impl Db {
    /// Appends an event.
    pub async fn record_event(&self, e: &Event) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO events (cache, kind, store_path, upstream, detail, at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&e.cache)
            .bind(e.kind.as_str())
            .bind(&e.store_path)
            .bind(&e.upstream)
            .bind(&e.detail)
            .bind(e.at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Recorded events, oldest first, optionally only those of one cache and/or one kind.
    pub async fn events(
        &self,
        cache: Option<&str>,
        kind: Option<EventKind>,
    ) -> Result<Vec<Event>, DbError> {
        const SELECT: &str = "SELECT cache, kind, store_path, upstream, detail, at FROM events";
        // One statement per filter combination, so each can use its index.
        let (sql, binds): (String, Vec<&str>) = match (cache, kind.map(EventKind::as_str)) {
            (None, None) => (format!("{SELECT} ORDER BY id"), vec![]),
            (Some(c), None) => (format!("{SELECT} WHERE cache = $1 ORDER BY id"), vec![c]),
            (None, Some(k)) => (format!("{SELECT} WHERE kind = $1 ORDER BY id"), vec![k]),
            (Some(c), Some(k)) => (
                format!("{SELECT} WHERE cache = $1 AND kind = $2 ORDER BY id"),
                vec![c, k],
            ),
        };
        on_pool!(self, pool => {
            let mut query = sqlx::query(&sql);
            for value in &binds {
                query = query.bind(*value);
            }
            query
                .fetch_all(pool)
                .await?
                .iter()
                .map(event_from_row)
                .collect()
        })
    }
}

fn event_from_row(row: &impl Columns) -> Result<Event, DbError> {
    Ok(Event {
        cache: row.opt_text("cache")?,
        kind: row.parsed("kind", "events.kind")?,
        store_path: row.opt_text("store_path")?,
        upstream: row.opt_text("upstream")?,
        detail: row.text("detail")?,
        at: row.int("at")?,
    })
}
