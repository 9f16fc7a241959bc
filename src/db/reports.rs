//! Reports: what an operator asks of the records (DESIGN §14) — how often builders agree,
//! where they disagree, what was decided lately. Read-only, computed by the database.

use serde::{Deserialize, Serialize};

use quorate_core::attestation::{Attestation, SigStatus};
use quorate_core::protocol::store_path::HashPart;

use super::columns::Columns;
use super::decisions::{decision_from_row, DecisionRecord, DECISION_COLUMNS};
use super::{Db, DbError};

/// One builder's record in a cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderRecord {
    /// The builder's name.
    pub builder: String,
    /// Valid attestations recorded (distinct observations).
    pub valid: u64,
    /// Invalid ones (a configured key's signature that did not verify).
    pub invalid: u64,
    /// Distinct store paths it attested validly.
    pub paths: u64,
}

/// How two builders compare over the paths both attested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// One builder.
    pub builder: String,
    /// The other.
    pub other: String,
    /// Store paths both attested validly.
    pub shared: u64,
    /// Of those, the paths where they attested the same content.
    pub agreed: u64,
}

/// A store path trusted builders disagree about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// The path's hash part.
    pub hash_part: HashPart,
    /// How many distinct contents were attested.
    pub contents: u64,
    /// When the latest of its attestations was seen, Unix milliseconds.
    pub last_seen: i64,
}

const VALID_BY_BUILDER: &str = "\
SELECT DISTINCT hash_part, builder, store_path, nar_hash, nar_size, refs FROM attestations \
WHERE cache = $1 AND status = 'valid' AND builder IS NOT NULL";

impl Db {
    /// Every builder with attestations in `cache`: counts by verdict and paths attested.
    pub async fn builder_records(&self, cache: &str) -> Result<Vec<BuilderRecord>, DbError> {
        let rows = on_pool!(self, pool => {
            sqlx::query(
                "SELECT builder, status, COUNT(*) AS n, COUNT(DISTINCT hash_part) AS paths \
                 FROM attestations WHERE cache = $1 AND builder IS NOT NULL \
                 GROUP BY builder, status ORDER BY builder",
            )
            .bind(cache)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.text("builder")?,
                    row.text("status")?,
                    count(row, "n")?,
                    count(row, "paths")?,
                ))
            })
            .collect::<Result<Vec<_>, DbError>>()?
        });
        let mut records: Vec<BuilderRecord> = Vec::new();
        for (builder, status, n, paths) in rows {
            if records.last().is_none_or(|r| r.builder != builder) {
                records.push(BuilderRecord {
                    builder,
                    valid: 0,
                    invalid: 0,
                    paths: 0,
                });
            }
            let Some(r) = records.last_mut() else {
                continue;
            };
            match SigStatus::parse(&status) {
                Some(SigStatus::Valid) => {
                    r.valid = n;
                    r.paths = paths;
                }
                Some(SigStatus::Invalid) => r.invalid = n,
                _ => {}
            }
        }
        Ok(records)
    }

    /// For every ordered pair of builders in `cache`, the paths both attested validly and how
    /// many of those they attested the same content for (store path, NarHash, NarSize,
    /// References).
    pub async fn agreements(&self, cache: &str) -> Result<Vec<Agreement>, DbError> {
        let sql = format!(
            "WITH v AS ({VALID_BY_BUILDER}), \
             pairs AS (SELECT a.builder AS builder, b.builder AS other, a.hash_part, \
                 MAX(CASE WHEN a.store_path = b.store_path AND a.nar_hash = b.nar_hash \
                     AND a.nar_size = b.nar_size AND a.refs = b.refs THEN 1 ELSE 0 END) AS same \
               FROM v a JOIN v b ON a.hash_part = b.hash_part AND a.builder <> b.builder \
               GROUP BY a.builder, b.builder, a.hash_part) \
             SELECT builder, other, COUNT(*) AS shared, SUM(same) AS agreed FROM pairs \
             GROUP BY builder, other ORDER BY builder, other"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(cache)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| {
                    Ok(Agreement {
                        builder: row.text("builder")?,
                        other: row.text("other")?,
                        shared: count(row, "shared")?,
                        agreed: count(row, "agreed")?,
                    })
                })
                .collect()
        })
    }

    /// Paths in `cache` for which trusted builders attested more than one content, the most
    /// recently seen first; `limit` of them after skipping `offset`.
    pub async fn conflicts(
        &self,
        cache: &str,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<ConflictRecord>, DbError> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        on_pool!(self, pool => {
            sqlx::query(
                "WITH v AS (SELECT hash_part, store_path, nar_hash, nar_size, refs, \
                     MAX(last_seen) AS seen FROM attestations \
                     WHERE cache = $1 AND status = 'valid' AND builder IS NOT NULL \
                     GROUP BY hash_part, store_path, nar_hash, nar_size, refs) \
                 SELECT hash_part, COUNT(*) AS contents, MAX(seen) AS last_seen FROM v \
                 GROUP BY hash_part HAVING COUNT(*) > 1 \
                 ORDER BY last_seen DESC, hash_part LIMIT $2 OFFSET $3",
            )
            .bind(cache)
            .bind(i64::from(limit))
            .bind(offset)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok(ConflictRecord {
                    hash_part: row.parsed("hash_part", "attestations.hash_part")?,
                    contents: count(row, "contents")?,
                    last_seen: row.int("last_seen")?,
                })
            })
            .collect()
        })
    }

    /// The latest decisions in `cache`, newest first.
    pub async fn recent_decisions(
        &self,
        cache: &str,
        limit: u32,
    ) -> Result<Vec<DecisionRecord>, DbError> {
        let sql = format!(
            "SELECT {DECISION_COLUMNS} FROM decisions d WHERE d.cache = $1 \
             ORDER BY d.id DESC LIMIT $2"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(cache)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
                .iter()
                .map(decision_from_row)
                .collect()
        })
    }

    /// Every valid attestation by a trusted builder for the path, in every cache: what
    /// `quorate challenge` reports.
    pub async fn trusted_attestations_anywhere(
        &self,
        hash_part: &HashPart,
    ) -> Result<Vec<Attestation>, DbError> {
        let mut all = Vec::new();
        for cache in self.caches_with(hash_part).await? {
            let mut these = self.valid_attestations(&cache, hash_part).await?;
            these.retain(|a| a.builder.is_some());
            all.extend(these);
        }
        Ok(all)
    }

    async fn caches_with(&self, hash_part: &HashPart) -> Result<Vec<String>, DbError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT DISTINCT cache FROM attestations WHERE hash_part = $1 ORDER BY cache")
                .bind(hash_part.as_str())
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| row.text("cache"))
                .collect()
        })
    }
}

/// A `COUNT`/`SUM` column as `u64` (never negative; PostgreSQL's SUM of nothing is NULL).
fn count(row: &impl Columns, column: &str) -> Result<u64, DbError> {
    let n = row.opt_int(column)?.unwrap_or(0);
    u64::try_from(n).map_err(|_| DbError::CorruptRow {
        column: "report count",
        value: n.to_string(),
    })
}

/// Signatures by keys no configured builder holds, as seen through one upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownKey {
    /// The key name the signatures claim (upstream-controlled text).
    pub key_name: String,
    /// The upstream they came through.
    pub upstream: String,
    /// How many distinct observations.
    pub count: u64,
}

impl Db {
    /// Keys seen in `cache` that no builder holds, most frequent first.
    pub async fn unknown_keys(&self, cache: &str, limit: u32) -> Result<Vec<UnknownKey>, DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "SELECT key_name, upstream, COUNT(*) AS n FROM attestations \
                 WHERE cache = $1 AND status = 'unknown_key' \
                 GROUP BY key_name, upstream ORDER BY n DESC, key_name LIMIT $2",
            )
            .bind(cache)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok(UnknownKey {
                    key_name: row.text("key_name")?,
                    upstream: row.text("upstream")?,
                    count: count(row, "n")?,
                })
            })
            .collect()
        })
    }
}
