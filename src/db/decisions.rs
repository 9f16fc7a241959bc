//! Decisions: the quorum's outcome per (cache, store path), with their history.
//!
//! Rows are only appended. The decision in force for a path is its latest row (highest id,
//! i.e. the last one recorded), so a later `withdrawn` or `refused` row overrides an earlier
//! acceptance without erasing it.

use serde::{Deserialize, Serialize};

use quorate_core::attestation::Content;
use quorate_core::protocol::nar_hash::NarHash;
use quorate_core::protocol::store_path::HashPart;
pub use quorate_core::quorum::Outcome;

use super::columns::{
    join_references, names_from_column, names_to_column, size_from_column, size_to_column,
    split_references, Columns,
};
use super::{Db, DbError};

/// One recorded decision about a store path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The served cache it belongs to.
    pub cache: String,
    /// The store path's hash part (the narinfo lookup key).
    pub hash_part: HashPart,
    /// The full store path, when known (a refusal may be decided before any narinfo arrived).
    pub store_path: Option<String>,
    /// What was decided.
    pub outcome: Outcome,
    /// The agreed content; `None` when nothing was agreed.
    pub content: Option<Content>,
    /// `Deriver:` of the agreed narinfo, informational.
    pub deriver: Option<String>,
    /// `CA:` of the agreed narinfo, informational.
    pub ca: Option<String>,
    /// Builders whose valid attestations back `content`.
    pub agreeing: Vec<String>,
    /// Builders that attested something else.
    pub dissenters: Vec<String>,
    /// The policy in force, summarised for humans (or as JSON).
    pub policy: String,
    /// When it was decided, Unix milliseconds.
    pub decided_at: i64,
}

const INSERT_DECISION: &str = "\
INSERT INTO decisions (cache, hash_part, store_path, outcome, content_store_path, nar_hash, \
    nar_size, refs, deriver, ca, agreeing, dissenters, policy, decided_at) \
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
RETURNING id";

pub(super) const DECISION_COLUMNS: &str = "d.cache, d.hash_part, d.store_path, d.outcome, \
    d.content_store_path, d.nar_hash, d.nar_size, d.refs, d.deriver, d.ca, d.agreeing, \
    d.dissenters, d.policy, d.decided_at";

impl Db {
    /// How many decisions are recorded (history included), in one cache or in all.
    pub async fn count_decisions(&self, cache: Option<&str>) -> Result<i64, DbError> {
        let n = on_pool!(self, pool => {
            let query = match cache {
                Some(cache) => {
                    sqlx::query("SELECT COUNT(*) AS n FROM decisions WHERE cache = $1").bind(cache)
                }
                None => sqlx::query("SELECT COUNT(*) AS n FROM decisions"),
            };
            query.fetch_one(pool).await?.int("n")?
        });
        Ok(n)
    }

    /// Appends a decision (earlier ones for the same path are kept); returns its id.
    pub async fn record_decision(&self, d: &DecisionRecord) -> Result<i64, DbError> {
        let (content_store_path, nar_hash, nar_size, refs) = match &d.content {
            Some(c) => (
                Some(c.store_path.as_str()),
                Some(c.nar_hash.to_string()),
                Some(size_to_column("nar_size", c.nar_size)?),
                Some(join_references(&c.references)?),
            ),
            None => (None, None, None, None),
        };
        let id = on_pool!(self, pool => {
            sqlx::query(INSERT_DECISION)
                .bind(&d.cache)
                .bind(d.hash_part.as_str())
                .bind(&d.store_path)
                .bind(d.outcome.as_str())
                .bind(content_store_path)
                .bind(nar_hash)
                .bind(nar_size)
                .bind(&refs)
                .bind(&d.deriver)
                .bind(&d.ca)
                .bind(names_to_column(&d.agreeing))
                .bind(names_to_column(&d.dissenters))
                .bind(&d.policy)
                .bind(d.decided_at)
                .fetch_one(pool)
                .await?
                .int("id")?
        });
        // The other replicas drop their memory answer; a lost notice only delays that until
        // the answer's memory lifetime ends (the database is the truth either way).
        let nar = d.content.as_ref().map(|c| c.nar_hash.key());
        if let Err(e) = self.notify_decision(&d.cache, &d.hash_part, nar).await {
            tracing::warn!(cache = %d.cache, hash_part = %d.hash_part,
                "announcing a decision to the other replicas: {e}");
        }
        Ok(id)
    }

    /// The decision in force for a store path: the last one recorded.
    pub async fn latest_decision(
        &self,
        cache: &str,
        hash_part: &HashPart,
    ) -> Result<Option<DecisionRecord>, DbError> {
        let sql = format!(
            "SELECT {DECISION_COLUMNS} FROM decisions d \
             WHERE d.cache = $1 AND d.hash_part = $2 ORDER BY d.id DESC LIMIT 1"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(cache)
                .bind(hash_part.as_str())
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(decision_from_row)
                .transpose()
        })
    }

    /// A decision in force that accepted content with this NAR hash: what entitles the NAR
    /// route to serve those bytes. A path whose latest decision is no longer `accepted`
    /// (withdrawn, refused) does not count. With several such paths, the latest decided one.
    pub async fn accepted_decision_for_nar(
        &self,
        cache: &str,
        nar_hash: &NarHash,
    ) -> Result<Option<DecisionRecord>, DbError> {
        let sql = format!(
            "SELECT {DECISION_COLUMNS} FROM decisions d \
             WHERE d.cache = $1 AND d.nar_hash = $2 AND d.outcome = $3 \
               AND NOT EXISTS (SELECT 1 FROM decisions later \
                   WHERE later.cache = d.cache AND later.hash_part = d.hash_part \
                     AND later.id > d.id) \
             ORDER BY d.id DESC LIMIT 1"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(cache)
                .bind(nar_hash.to_string())
                .bind(Outcome::Accepted.as_str())
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(decision_from_row)
                .transpose()
        })
    }
}

pub(super) fn decision_from_row(row: &impl Columns) -> Result<DecisionRecord, DbError> {
    let outcome = row.text("outcome")?;
    let content = match (
        row.opt_text("content_store_path")?,
        row.opt_parsed("nar_hash", "decisions.nar_hash")?,
        row.opt_int("nar_size")?,
        row.opt_text("refs")?,
    ) {
        (Some(store_path), Some(nar_hash), Some(nar_size), Some(refs)) => Some(Content {
            store_path,
            nar_hash,
            nar_size: size_from_column("decisions.nar_size", nar_size)?,
            references: split_references(&refs),
        }),
        // The schema's CHECK keeps the four together; anything else is all NULL.
        _ => None,
    };
    Ok(DecisionRecord {
        cache: row.text("cache")?,
        hash_part: row.parsed("hash_part", "decisions.hash_part")?,
        store_path: row.opt_text("store_path")?,
        outcome: Outcome::parse(&outcome).ok_or(DbError::CorruptRow {
            column: "decisions.outcome",
            value: outcome,
        })?,
        content,
        deriver: row.opt_text("deriver")?,
        ca: row.opt_text("ca")?,
        agreeing: names_from_column("decisions.agreeing", &row.text("agreeing")?)?,
        dissenters: names_from_column("decisions.dissenters", &row.text("dissenters")?)?,
        policy: row.text("policy")?,
        decided_at: row.int("decided_at")?,
    })
}
