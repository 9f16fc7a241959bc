//! Witnessing (DESIGN §12): the cosignatures witnesses returned for this quorate's
//! checkpoints, and, as a witness of other logs, the latest checkpoint cosigned per log.

use super::columns::Columns;
use super::{Db, DbError};

impl Db {
    /// Keeps a witness's signature line for `cache`'s checkpoint of `size`.
    pub async fn record_cosignature(
        &self,
        cache: &str,
        size: u64,
        witness: &str,
        line: &str,
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO tlog_cosignatures (cache, size, witness, line) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (cache, size, witness) DO UPDATE SET line = excluded.line",
            )
            .bind(cache)
            .bind(size as i64)
            .bind(witness)
            .bind(line)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The witnesses' signature lines for `cache`'s checkpoint of `size`.
    pub async fn cosignatures(&self, cache: &str, size: u64) -> Result<Vec<String>, DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "SELECT line FROM tlog_cosignatures WHERE cache = $1 AND size = $2 ORDER BY witness",
            )
            .bind(cache)
            .bind(size as i64)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| row.text("line"))
            .collect()
        })
    }

    /// As a witness: the size and signed note of the latest checkpoint cosigned for `origin`.
    pub async fn witnessed(&self, origin: &str) -> Result<Option<(u64, String)>, DbError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT size, note FROM witness_checkpoints WHERE origin = $1")
                .bind(origin)
                .fetch_optional(pool)
                .await?
                .map(|row| Ok((row.int("size")?.max(0) as u64, row.text("note")?)))
                .transpose()
        })
    }

    /// As a witness: moves `origin`'s checkpoint from size `old` (0 and no row: the first) to
    /// `note` of `size`; `false` if it was no longer at `old` (a concurrent request won).
    pub async fn witness_advance(
        &self,
        origin: &str,
        old: u64,
        size: u64,
        note: &str,
        now: i64,
    ) -> Result<bool, DbError> {
        let changed = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO witness_checkpoints (origin, size, note, updated_at) \
                 VALUES ($1, $3, $4, $5) \
                 ON CONFLICT (origin) DO UPDATE SET size = excluded.size, note = excluded.note, \
                     updated_at = excluded.updated_at \
                 WHERE witness_checkpoints.size = $2",
            )
            .bind(origin)
            .bind(old as i64)
            .bind(size as i64)
            .bind(note)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if changed == 1 {
            return Ok(true);
        }
        Ok(false)
    }
}
