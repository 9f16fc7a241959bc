//! NAR objects: the index of verified NAR files in the local content-addressed store.
//!
//! A row exists while the bytes do; eviction removes it (attestations and decisions stay).
//! `last_access` orders least-recently-used eviction under `max_cache_size`.

use serde::{Deserialize, Serialize};

use quorate_core::protocol::nar_hash::NarHash;

use crate::clock::now_ms;

use super::columns::{size_from_column, size_to_column, Columns};
use super::{BeginWrite, Db, DbError};

/// One NAR held in the local store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NarObject {
    /// The uncompressed NAR's hash: the store's key.
    pub nar_hash: NarHash,
    /// Size of the uncompressed NAR in bytes.
    pub nar_size: u64,
    /// Where the bytes are (a path under `state_dir`, later an object-store key).
    pub location: String,
    /// When the bytes were last hashed and found to match, Unix milliseconds.
    pub verified_at: i64,
    /// When the bytes were last served, Unix milliseconds (LRU eviction order).
    pub last_access: i64,
}

const NAR_OBJECT_COLUMNS: &str = "nar_hash, nar_size, location, verified_at, last_access";

/// Upserts one NAR object: $1 hash, $2 size, $3 location, $4 now (verified and accessed).
const UPSERT_NAR_OBJECT: &str =
    "INSERT INTO nar_objects (nar_hash, nar_size, location, verified_at, last_access) \
     VALUES ($1, $2, $3, $4, $4) \
     ON CONFLICT (nar_hash) DO UPDATE SET nar_size = excluded.nar_size, \
         location = excluded.location, verified_at = excluded.verified_at, \
         last_access = excluded.last_access";

/// Rows per transaction when many NAR objects change at once (start-up reconciliation):
/// one commit per row made a start with 10^5 NARs unknown to the database take ~15 s.
const NAR_OBJECT_BATCH: usize = 1000;

impl Db {
    /// Records a NAR just verified and stored (or re-verified): `verified_at` and
    /// `last_access` become now.
    pub async fn record_nar_object(
        &self,
        nar_hash: &NarHash,
        nar_size: u64,
        location: &str,
    ) -> Result<(), DbError> {
        let nar_size = size_to_column("nar_size", nar_size)?;
        let now = now_ms();
        on_pool!(self, pool => {
            sqlx::query(UPSERT_NAR_OBJECT)
                .bind(nar_hash.to_string())
                .bind(nar_size)
                .bind(location)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// [`Db::record_nar_object`] for many NARs (hash, size, location), a transaction per
    /// [`NAR_OBJECT_BATCH`] of them.
    pub async fn record_nar_objects(
        &self,
        objects: &[(NarHash, u64, String)],
    ) -> Result<(), DbError> {
        let now = now_ms();
        for batch in objects.chunks(NAR_OBJECT_BATCH) {
            let rows = batch
                .iter()
                .map(|(hash, size, location)| {
                    Ok((
                        hash.to_string(),
                        size_to_column("nar_size", *size)?,
                        location.as_str(),
                    ))
                })
                .collect::<Result<Vec<_>, DbError>>()?;
            on_pool!(self, pool => {
                let mut tx = pool.begin_write().await?;
                for (hash, size, location) in &rows {
                    sqlx::query(UPSERT_NAR_OBJECT)
                        .bind(hash)
                        .bind(*size)
                        .bind(*location)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            });
        }
        Ok(())
    }

    /// Notes that a stored NAR was just served (no-op if it is not stored).
    pub async fn touch_nar_object(&self, nar_hash: &NarHash) -> Result<(), DbError> {
        let now = now_ms();
        on_pool!(self, pool => {
            sqlx::query("UPDATE nar_objects SET last_access = $2 WHERE nar_hash = $1")
                .bind(nar_hash.to_string())
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Forgets a stored NAR (eviction). Removing one that is not there is not an error.
    pub async fn remove_nar_object(&self, nar_hash: &NarHash) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM nar_objects WHERE nar_hash = $1")
                .bind(nar_hash.to_string())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// [`Db::remove_nar_object`] for many NARs, a transaction per [`NAR_OBJECT_BATCH`].
    pub async fn remove_nar_objects(&self, nar_hashes: &[NarHash]) -> Result<(), DbError> {
        for batch in nar_hashes.chunks(NAR_OBJECT_BATCH) {
            on_pool!(self, pool => {
                let mut tx = pool.begin_write().await?;
                for hash in batch {
                    sqlx::query("DELETE FROM nar_objects WHERE nar_hash = $1")
                        .bind(hash.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            });
        }
        Ok(())
    }

    /// The stored NAR with this hash, if any.
    pub async fn nar_object(&self, nar_hash: &NarHash) -> Result<Option<NarObject>, DbError> {
        let sql = format!("SELECT {NAR_OBJECT_COLUMNS} FROM nar_objects WHERE nar_hash = $1");
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(nar_hash.to_string())
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(nar_object_from_row)
                .transpose()
        })
    }

    /// Up to `limit` stored NARs, least recently served first: eviction candidates.
    pub async fn least_recently_used_nar_objects(
        &self,
        limit: u32,
    ) -> Result<Vec<NarObject>, DbError> {
        let sql = format!(
            "SELECT {NAR_OBJECT_COLUMNS} FROM nar_objects \
             ORDER BY last_access, nar_hash LIMIT $1"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
                .iter()
                .map(nar_object_from_row)
                .collect()
        })
    }

    /// The hashes of every recorded NAR object.
    pub async fn nar_object_hashes(&self) -> Result<Vec<NarHash>, DbError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT nar_hash FROM nar_objects")
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| row.parsed("nar_hash", "nar_objects.nar_hash"))
                .collect()
        })
    }

    /// Total uncompressed size of the stored NARs, in bytes.
    pub async fn nar_objects_total_size(&self) -> Result<u64, DbError> {
        // SUM(BIGINT) is NUMERIC in PostgreSQL: cast back to read it as i64 on both backends.
        let total = on_pool!(self, pool => {
            sqlx::query("SELECT CAST(COALESCE(SUM(nar_size), 0) AS BIGINT) AS total FROM nar_objects")
                .fetch_one(pool)
                .await?
                .int("total")?
        });
        size_from_column("sum(nar_objects.nar_size)", total)
    }
}

fn nar_object_from_row(row: &impl Columns) -> Result<NarObject, DbError> {
    Ok(NarObject {
        nar_hash: row.parsed("nar_hash", "nar_objects.nar_hash")?,
        nar_size: size_from_column("nar_objects.nar_size", row.int("nar_size")?)?,
        location: row.text("location")?,
        verified_at: row.int("verified_at")?,
        last_access: row.int("last_access")?,
    })
}
