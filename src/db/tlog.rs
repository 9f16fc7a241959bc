//! The transparency log's storage (DESIGN §12), per cache: entries, the stored hashes of the
//! Merkle tree (Go tlog's numbering: hash `i` of the sequence a tree of n leaves stores), and
//! signed checkpoints; plus which attestation and decision rows are logged (`tlog_index`,
//! NULL until then). The Merkle arithmetic and formats are `quorate_core::tlog`'s; this file
//! only keeps bytes.
//!
//! Appending is one transaction per batch ([`Db::append_to_log`]): the entries, their new
//! stored hashes, the rows' indexes and the checkpoint over the new size land together or not
//! at all, so the log in the database is always exactly what its latest checkpoint signs.

use quorate_core::attestation::Attestation;

use super::attestations::{attestation_from_row, ATTESTATION_COLUMNS};
use super::columns::Columns;
use super::decisions::{decision_from_row, DecisionRecord, DECISION_COLUMNS};
use super::{BeginWrite, Db, DbError};

/// The log's size: that of its latest checkpoint (every append writes one; an index lookup).
const LOG_SIZE: &str = "SELECT COALESCE(MAX(size), 0) AS n FROM tlog_checkpoints WHERE cache = $1";

/// What an entry logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// An attestation row (`quorate/attestation/v1`).
    Attestation,
    /// A decision row (`quorate/decision/v1`).
    Decision,
    /// A cache's policy (`quorate/policy/v1`).
    Policy,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            EntryKind::Attestation => "attestation",
            EntryKind::Decision => "decision",
            EntryKind::Policy => "policy",
        }
    }
}

/// One entry to append, and the row it logs.
#[derive(Clone, Debug)]
pub struct NewEntry {
    /// What it logs.
    pub kind: EntryKind,
    /// The row's id (`attestations.id` / `decisions.id`); for a policy, `None`.
    pub row: Option<i64>,
    /// For a policy: the SHA-256 (hex) of its entry, so an unchanged policy is not logged
    /// twice.
    pub policy_hash: Option<String>,
    /// The canonical entry bytes.
    pub body: Vec<u8>,
    /// `(SHA-256 hex, text)`: a signed text the entry names by hash, kept beside the log.
    pub beside: Option<(String, String)>,
}

/// A batch for [`Db::append_to_log`]: the log grows from `old_size` to `old_size +
/// entries.len()`.
#[derive(Clone, Debug)]
pub struct LogAppend {
    /// The cache whose log grows.
    pub cache: String,
    /// The log's size the batch was computed against (checked inside the transaction).
    pub old_size: u64,
    /// The new entries, in log order.
    pub entries: Vec<NewEntry>,
    /// The new stored hashes, numbered from the old tree's count of stored hashes.
    pub hashes: Vec<(u64, [u8; 32])>,
    /// The signed checkpoint over the new size.
    pub checkpoint: String,
    /// When it was signed, Unix milliseconds.
    pub signed_at: i64,
}

/// A row the appender still has to log.
pub struct Unlogged<T> {
    /// Its id.
    pub id: i64,
    /// The row.
    pub row: T,
}

impl Db {
    /// How many entries `cache`'s log holds (0 for a new log).
    pub async fn log_size(&self, cache: &str) -> Result<u64, DbError> {
        let n = on_pool!(self, pool => {
            sqlx::query(LOG_SIZE)
                .bind(cache)
                .fetch_one(pool)
                .await?
                .int("n")?
        });
        Ok(n.max(0) as u64)
    }

    /// The latest signed checkpoint of `cache`'s log, if it has one.
    pub async fn latest_checkpoint(&self, cache: &str) -> Result<Option<String>, DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "SELECT note FROM tlog_checkpoints WHERE cache = $1 ORDER BY size DESC LIMIT 1",
            )
            .bind(cache)
            .fetch_optional(pool)
            .await?
            .map(|row| row.text("note"))
            .transpose()
        })
    }

    /// Stored hashes `indexes` of `cache`'s log, in that order; an index not stored is an
    /// error (the log and its hashes disagree).
    pub async fn log_hashes(&self, cache: &str, indexes: &[u64]) -> Result<Vec<[u8; 32]>, DbError> {
        let mut out = Vec::with_capacity(indexes.len());
        for &i in indexes {
            let hash = on_pool!(self, pool => {
                sqlx::query(
                    "SELECT hash FROM tlog_hashes WHERE cache = $1 AND stored_index = $2",
                )
                .bind(cache)
                .bind(i as i64)
                .fetch_optional(pool)
                .await?
                .map(|row| row.blob("hash"))
                .transpose()?
            });
            let hash = hash.ok_or(DbError::CorruptRow {
                column: "tlog_hashes.stored_index",
                value: i.to_string(),
            })?;
            out.push(hash.try_into().map_err(|_| DbError::CorruptRow {
                column: "tlog_hashes.hash",
                value: i.to_string(),
            })?);
        }
        Ok(out)
    }

    /// Entries `[from, to)` of `cache`'s log, in order.
    pub async fn log_entries(
        &self,
        cache: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Vec<u8>>, DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "SELECT body FROM tlog_entries WHERE cache = $1 AND idx >= $2 AND idx < $3 \
                 ORDER BY idx",
            )
            .bind(cache)
            .bind(from as i64)
            .bind(to as i64)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| row.blob("body"))
            .collect()
        })
    }

    /// The signed text kept beside `cache`'s log under SHA-256 `sha256` (lowercase hex).
    pub async fn signed_beside(
        &self,
        cache: &str,
        sha256: &str,
    ) -> Result<Option<Vec<u8>>, DbError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT body FROM tlog_signed WHERE cache = $1 AND sha256 = $2")
                .bind(cache)
                .bind(sha256)
                .fetch_optional(pool)
                .await?
                .map(|row| row.blob("body"))
                .transpose()
        })
    }

    /// Whether `cache` has attestation or decision rows not logged yet (two index lookups).
    pub async fn has_unlogged(&self, cache: &str) -> Result<bool, DbError> {
        let found = on_pool!(self, pool => {
            sqlx::query(
                "SELECT 1 AS one WHERE EXISTS (SELECT 1 FROM attestations \
                     WHERE cache = $1 AND tlog_index IS NULL) \
                 OR EXISTS (SELECT 1 FROM decisions WHERE cache = $1 AND tlog_index IS NULL)",
            )
            .bind(cache)
            .fetch_optional(pool)
            .await?
            .is_some()
        });
        Ok(found)
    }

    /// Up to `limit` attestation rows of `cache` not logged yet, oldest first.
    pub async fn unlogged_attestations(
        &self,
        cache: &str,
        limit: u32,
    ) -> Result<Vec<Unlogged<Attestation>>, DbError> {
        let sql = format!(
            "SELECT id, {ATTESTATION_COLUMNS} FROM attestations \
             WHERE cache = $1 AND tlog_index IS NULL ORDER BY id LIMIT $2"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(cache)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| Ok(Unlogged { id: row.int("id")?, row: attestation_from_row(row)? }))
                .collect()
        })
    }

    /// Up to `limit` decision rows of `cache` not logged yet, oldest first.
    pub async fn unlogged_decisions(
        &self,
        cache: &str,
        limit: u32,
    ) -> Result<Vec<Unlogged<DecisionRecord>>, DbError> {
        let sql = format!(
            "SELECT d.id, {DECISION_COLUMNS} FROM decisions d \
             WHERE d.cache = $1 AND d.tlog_index IS NULL ORDER BY d.id LIMIT $2"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(cache)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| Ok(Unlogged { id: row.int("id")?, row: decision_from_row(row)? }))
                .collect()
        })
    }

    /// The latest logged decision of `cache` for `hash_part`, with its log index.
    pub async fn latest_logged_decision(
        &self,
        cache: &str,
        hash_part: &str,
    ) -> Result<Option<(u64, DecisionRecord)>, DbError> {
        let sql = format!(
            "SELECT d.tlog_index, {DECISION_COLUMNS} FROM decisions d \
             WHERE d.cache = $1 AND d.hash_part = $2 AND d.tlog_index IS NOT NULL \
             ORDER BY d.tlog_index DESC LIMIT 1"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(cache)
                .bind(hash_part)
                .fetch_optional(pool)
                .await?
                .map(|row| Ok((row.int("tlog_index")?.max(0) as u64, decision_from_row(&row)?)))
                .transpose()
        })
    }

    /// Marks decision rows as logged by entries already in the log (`(row id, index)`): a
    /// decision that changed nothing is not logged again.
    pub async fn alias_logged_decisions(&self, aliases: &[(i64, u64)]) -> Result<(), DbError> {
        if aliases.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for (row, index) in aliases {
                sqlx::query("UPDATE decisions SET tlog_index = $1 WHERE id = $2 AND tlog_index IS NULL")
                    .bind(*index as i64)
                    .bind(*row)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The log indexes of `cache`'s attestations for `hash_part` that are logged, with the
    /// attestation: what a decision entry names as its support and dissent.
    pub async fn logged_attestations(
        &self,
        cache: &str,
        hash_part: &str,
    ) -> Result<Vec<(u64, Attestation)>, DbError> {
        let sql = format!(
            "SELECT tlog_index, {ATTESTATION_COLUMNS} FROM attestations \
             WHERE cache = $1 AND hash_part = $2 AND tlog_index IS NOT NULL ORDER BY tlog_index"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(cache)
                .bind(hash_part)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| Ok((row.int("tlog_index")?.max(0) as u64, attestation_from_row(row)?)))
                .collect()
        })
    }

    /// The log index of the policy entry with this hash, if logged.
    pub async fn logged_policy(
        &self,
        cache: &str,
        entry_hash: &str,
    ) -> Result<Option<u64>, DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "SELECT tlog_index FROM tlog_policies WHERE cache = $1 AND entry_hash = $2",
            )
            .bind(cache)
            .bind(entry_hash)
            .fetch_optional(pool)
            .await?
            .map(|row| row.int("tlog_index").map(|i| i.max(0) as u64))
            .transpose()
        })
    }

    /// The log index of the decision in force for a path, once logged.
    pub async fn decision_log_index(
        &self,
        cache: &str,
        hash_part: &str,
    ) -> Result<Option<u64>, DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "SELECT tlog_index FROM decisions WHERE cache = $1 AND hash_part = $2 \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(cache)
            .bind(hash_part)
            .fetch_optional(pool)
            .await?
            .and_then(|row| row.opt_int("tlog_index").transpose())
            .transpose()
            .map(|i| i.map(|i| i.max(0) as u64))
        })
    }

    /// Appends a batch to `batch.cache`'s log in one transaction; `false` (nothing written)
    /// if the log no longer has `batch.old_size` entries (another appender got there first).
    pub async fn append_to_log(&self, batch: &LogAppend) -> Result<bool, DbError> {
        let cache = batch.cache.as_str();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let size = sqlx::query(LOG_SIZE)
                .bind(cache)
                .fetch_one(&mut *tx)
                .await?
                .int("n")?;
            if size.max(0) as u64 != batch.old_size {
                return Ok(false);
            }
            for (i, e) in batch.entries.iter().enumerate() {
                let idx = (batch.old_size + i as u64) as i64;
                sqlx::query("INSERT INTO tlog_entries (cache, idx, kind, body) VALUES ($1, $2, $3, $4)")
                    .bind(cache)
                    .bind(idx)
                    .bind(e.kind.as_str())
                    .bind(&e.body)
                    .execute(&mut *tx)
                    .await?;
                let table = match e.kind {
                    EntryKind::Attestation => Some("attestations"),
                    EntryKind::Decision => Some("decisions"),
                    EntryKind::Policy => None,
                };
                if let (Some(table), Some(row)) = (table, e.row) {
                    sqlx::query(&format!("UPDATE {table} SET tlog_index = $1 WHERE id = $2"))
                        .bind(idx)
                        .bind(row)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some((sha256, text)) = &e.beside {
                    sqlx::query(
                        "INSERT INTO tlog_signed (cache, sha256, body) VALUES ($1, $2, $3) \
                         ON CONFLICT (cache, sha256) DO NOTHING",
                    )
                    .bind(cache)
                    .bind(sha256)
                    .bind(text.as_bytes())
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(hash) = &e.policy_hash {
                    sqlx::query(
                        "INSERT INTO tlog_policies (cache, entry_hash, tlog_index) VALUES ($1, $2, $3) \
                         ON CONFLICT (cache, entry_hash) DO NOTHING",
                    )
                    .bind(cache)
                    .bind(hash)
                    .bind(idx)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            for (i, hash) in &batch.hashes {
                sqlx::query("INSERT INTO tlog_hashes (cache, stored_index, hash) VALUES ($1, $2, $3)")
                    .bind(cache)
                    .bind(*i as i64)
                    .bind(hash.as_slice())
                    .execute(&mut *tx)
                    .await?;
            }
            let new_size = batch.old_size + batch.entries.len() as u64;
            sqlx::query(
                "INSERT INTO tlog_checkpoints (cache, size, note, signed_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(cache)
            .bind(new_size as i64)
            .bind(&batch.checkpoint)
            .bind(batch.signed_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(true)
    }
}
