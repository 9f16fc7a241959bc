//! Peers' logs this quorate follows (DESIGN §13): per (cache, log URL), the verifier key, the
//! latest checkpoint proved consistent, how far its entries were imported, and whether it was
//! found forked.

use super::columns::Columns;
use super::{Db, DbError};

/// What is known of one followed log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerState {
    /// The log's verifier key (configured, or kept from first contact).
    pub vkey: String,
    /// The latest checkpoint proved consistent with those before (signed note text).
    pub checkpoint: Option<String>,
    /// Its size.
    pub size: u64,
    /// Entries `[0, imported)` were read (those that count imported).
    pub imported: u64,
    /// When it was found forked (Unix ms): no longer followed.
    pub forked_at: Option<i64>,
    /// Why, with both checkpoints.
    pub detail: Option<String>,
}

fn count(v: i64) -> u64 {
    v.max(0) as u64
}

impl Db {
    /// The state of `cache`'s peer `url`, if it was ever contacted.
    pub async fn peer_state(&self, cache: &str, url: &str) -> Result<Option<PeerState>, DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "SELECT vkey, checkpoint, size, imported, forked_at, detail FROM tlog_peers \
                 WHERE cache = $1 AND url = $2",
            )
            .bind(cache)
            .bind(url)
            .fetch_optional(pool)
            .await?
            .map(|row| {
                Ok(PeerState {
                    vkey: row.text("vkey")?,
                    checkpoint: row.opt_text("checkpoint")?,
                    size: count(row.int("size")?),
                    imported: count(row.int("imported")?),
                    forked_at: row.opt_int("forked_at")?,
                    detail: row.opt_text("detail")?,
                })
            })
            .transpose()
        })
    }

    /// Writes the state of `cache`'s peer `url`.
    pub async fn save_peer_state(
        &self,
        cache: &str,
        url: &str,
        state: &PeerState,
        now: i64,
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO tlog_peers (cache, url, vkey, checkpoint, size, imported, forked_at, \
                     detail, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (cache, url) DO UPDATE SET vkey = excluded.vkey, \
                     checkpoint = excluded.checkpoint, size = excluded.size, \
                     imported = excluded.imported, forked_at = excluded.forked_at, \
                     detail = excluded.detail, updated_at = excluded.updated_at",
            )
            .bind(cache)
            .bind(url)
            .bind(&state.vkey)
            .bind(&state.checkpoint)
            .bind(state.size as i64)
            .bind(state.imported as i64)
            .bind(state.forked_at)
            .bind(&state.detail)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
