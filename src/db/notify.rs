//! Change notices between replicas (DESIGN §11): every decision recorded in PostgreSQL is
//! announced with `NOTIFY quorate_decisions`, and every replica `LISTEN`s, so a decision
//! withdrawn (or newly taken) on one replica leaves the others' memory at once instead of
//! when its memory lifetime ends. Attestations a builder pushed are announced the same way
//! (a notice without a NAR): a path refused for want of that vote is decided afresh. SQLite serves one process: it neither sends nor listens.
//!
//! A notice is a hint, never the truth: the replica that receives one forgets its memory
//! answer and asks the database again. A listener that lost its connection cannot know what
//! it missed, so after it is listening again it reports [`Change::Missed`] and the replica
//! forgets everything it holds in memory.

use quorate_core::protocol::nar_hash::NarKey;
use quorate_core::protocol::store_path::HashPart;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool};

use super::{Db, DbError, Pool};

/// The channel decisions are announced on.
const CHANNEL: &str = "quorate_decisions";

/// What a notice says (JSON; PostgreSQL bounds a payload at 8000 bytes, this is ~150).
#[derive(Serialize, Deserialize)]
struct Notice {
    /// The sending process ([`Db`]'s instance id): a replica ignores its own notices.
    origin: String,
    cache: String,
    hash_part: String,
    /// The NAR of the decision's content, when it has one.
    nar: Option<String>,
}

/// A change another replica made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A decision was recorded for `hash_part` in `cache`; `nar` is its content's NAR.
    Decision {
        /// The cache's name.
        cache: String,
        /// The store path's hash part.
        hash_part: HashPart,
        /// Its content's NAR, if the decision has a content.
        nar: Option<NarKey>,
    },
    /// The listener was disconnected and is listening again: anything may have changed.
    Missed,
}

impl Db {
    /// Announces a recorded decision to the other replicas (PostgreSQL only).
    pub(super) async fn notify_decision(
        &self,
        cache: &str,
        hash_part: &HashPart,
        nar: Option<NarKey>,
    ) -> Result<(), DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        let notice = Notice {
            origin: self.instance.to_string(),
            cache: cache.to_owned(),
            hash_part: hash_part.to_string(),
            nar: nar.map(|k| k.to_string()),
        };
        let payload = serde_json::to_string(&notice).unwrap_or_default();
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Announces that what is known about a path changed without a decision being taken (a
    /// builder pushed attestations for it): the other replicas forget their memory answer and
    /// decide afresh at the next request (PostgreSQL only).
    pub async fn announce_path(&self, cache: &str, hash_part: &HashPart) -> Result<(), DbError> {
        self.notify_decision(cache, hash_part, None).await
    }

    /// Listens for the other replicas' changes; `None` on SQLite (one process, nothing to
    /// hear).
    pub async fn listen_changes(&self) -> Result<Option<ChangeListener>, DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        let listener = listen(pool).await?;
        Ok(Some(ChangeListener {
            pool: pool.clone(),
            listener: Some(listener),
            instance: self.instance.to_string(),
        }))
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, DbError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// The receiving end of [`Db::listen_changes`].
pub struct ChangeListener {
    pool: PgPool,
    /// `None` after a lost connection, until listening again.
    listener: Option<PgListener>,
    instance: String,
}

impl ChangeListener {
    /// The next change another replica made. A lost connection is re-established here (an
    /// error means it could not be yet: call again after a pause), and reported as
    /// [`Change::Missed`] once listening again.
    pub async fn next(&mut self) -> Result<Change, DbError> {
        loop {
            let Some(listener) = self.listener.as_mut() else {
                self.listener = Some(listen(&self.pool).await?);
                return Ok(Change::Missed);
            };
            let received = match listener.try_recv().await {
                Ok(Some(notification)) => notification,
                Ok(None) | Err(_) => {
                    // Closed or broken: start over with a fresh connection.
                    self.listener = None;
                    continue;
                }
            };
            let Ok(notice) = serde_json::from_str::<Notice>(received.payload()) else {
                tracing::warn!(
                    "ignoring a malformed notice on {CHANNEL}: {:?}",
                    received.payload()
                );
                continue;
            };
            if notice.origin == self.instance {
                continue;
            }
            let Ok(hash_part) = notice.hash_part.parse::<HashPart>() else {
                continue;
            };
            return Ok(Change::Decision {
                cache: notice.cache,
                hash_part,
                nar: notice.nar.and_then(|n| n.parse().ok()),
            });
        }
    }
}
