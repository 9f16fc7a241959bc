//! Attestations (every signed claim observed) and NAR sources (where upstreams offer the NAR).
//!
//! Attestations are append-only and keyed by content: the identity of an observation is
//! (cache, hash_part, upstream, key_name, signature, store_path, nar_hash, nar_size,
//! references). Seeing it again only moves `last_seen` forward and refreshes the verdict
//! (`status`, `builder`) to the one reached at that newer sighting, e.g. after a builder's key
//! was added to or removed from the config. The claim itself is never changed or deleted, so
//! a transparency log (DESIGN §11) can later be built over these rows.

use quorate_core::attestation::{Attestation, Content, NarSource, SigStatus};
use quorate_core::protocol::nar_hash::NarHash;
use quorate_core::protocol::store_path::HashPart;

use super::columns::{
    join_references, size_from_column, size_to_column, split_references, Columns, IdentityKey,
};
use super::{BeginWrite, Db, DbError};

/// Insert-or-touch. The verdict follows the most recent sighting; an older sighting arriving
/// late (a background upstream answer) can only widen the first/last seen interval.
const UPSERT_ATTESTATION: &str = "\
INSERT INTO attestations (observation_key, cache, hash_part, store_path, nar_hash, nar_size, \
    refs, deriver, ca, key_name, builder, upstream, signature, status, first_seen, last_seen, \
    signed_body) \
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16) \
ON CONFLICT (observation_key) DO UPDATE SET \
    status = CASE WHEN excluded.last_seen >= attestations.last_seen \
        THEN excluded.status ELSE attestations.status END, \
    builder = CASE WHEN excluded.last_seen >= attestations.last_seen \
        THEN excluded.builder ELSE attestations.builder END, \
    first_seen = CASE WHEN excluded.first_seen < attestations.first_seen \
        THEN excluded.first_seen ELSE attestations.first_seen END, \
    last_seen = CASE WHEN excluded.last_seen > attestations.last_seen \
        THEN excluded.last_seen ELSE attestations.last_seen END";

pub(super) const ATTESTATION_COLUMNS: &str =
    "cache, hash_part, store_path, nar_hash, nar_size, refs, \
    deriver, ca, key_name, builder, upstream, signature, status, first_seen, last_seen, \
    signed_body";

const UPSERT_NAR_SOURCE: &str = "\
INSERT INTO nar_sources (source_key, cache, upstream, nar_hash, url, compression, file_size, \
    first_seen, last_seen) \
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
ON CONFLICT (source_key) DO UPDATE SET \
    compression = excluded.compression, file_size = excluded.file_size, \
    last_seen = excluded.last_seen";

/// An attestation checked and converted into column values, ready to bind.
struct AttestationRow<'a> {
    key: String,
    att: &'a Attestation,
    nar_size: i64,
    refs: String,
}

impl<'a> AttestationRow<'a> {
    fn new(att: &'a Attestation) -> Result<Self, DbError> {
        let refs = join_references(&att.content.references)?;
        let nar_size = size_to_column("nar_size", att.content.nar_size)?;
        let mut key = IdentityKey::new("quorate attestation v1");
        key.field(att.cache.as_bytes())
            .field(att.hash_part.as_str().as_bytes())
            .field(att.upstream.as_bytes())
            .field(att.key_name.as_bytes())
            .field(att.signature.as_bytes())
            .field(att.content.store_path.as_bytes())
            .field(att.content.nar_hash.to_string().as_bytes())
            .field(&att.content.nar_size.to_be_bytes())
            .field(refs.as_bytes());
        Ok(AttestationRow {
            key: key.finish(),
            att,
            nar_size,
            refs,
        })
    }
}

impl Db {
    /// Records observed attestations in one transaction: new observations are appended, ones
    /// seen before only have `last_seen` (and the verdict) moved forward.
    pub async fn record_attestations(&self, atts: &[Attestation]) -> Result<(), DbError> {
        let mut rows = atts
            .iter()
            .map(AttestationRow::new)
            .collect::<Result<Vec<_>, _>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        // Concurrent batches touching the same rows lock them in one global order, so two
        // PostgreSQL transactions can never wait on each other in a cycle (deadlock).
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for row in &rows {
                let a = row.att;
                sqlx::query(UPSERT_ATTESTATION)
                    .bind(&row.key)
                    .bind(&a.cache)
                    .bind(a.hash_part.as_str())
                    .bind(&a.content.store_path)
                    .bind(a.content.nar_hash.to_string())
                    .bind(row.nar_size)
                    .bind(&row.refs)
                    .bind(&a.deriver)
                    .bind(&a.ca)
                    .bind(&a.key_name)
                    .bind(&a.builder)
                    .bind(&a.upstream)
                    .bind(&a.signature)
                    .bind(a.status.as_str())
                    .bind(a.seen_at)
                    .bind(&a.signed_body)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every attestation recorded for a store path, whatever its status, oldest first.
    /// `seen_at` is the most recent sighting, `first_seen` the first (what a revocation is
    /// compared with).
    pub async fn attestations(
        &self,
        cache: &str,
        hash_part: &HashPart,
    ) -> Result<Vec<Attestation>, DbError> {
        let sql = format!(
            "SELECT {ATTESTATION_COLUMNS} FROM attestations \
             WHERE cache = $1 AND hash_part = $2 ORDER BY id"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(cache)
                .bind(hash_part.as_str())
                .fetch_all(pool)
                .await?
                .iter()
                .map(attestation_from_row)
                .collect()
        })
    }

    /// The attestations for a store path whose signature verified when last seen.
    ///
    /// The quorum layer must still check that their builder is trusted by the current config.
    pub async fn valid_attestations(
        &self,
        cache: &str,
        hash_part: &HashPart,
    ) -> Result<Vec<Attestation>, DbError> {
        let sql = format!(
            "SELECT {ATTESTATION_COLUMNS} FROM attestations \
             WHERE cache = $1 AND hash_part = $2 AND status = $3 ORDER BY id"
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(cache)
                .bind(hash_part.as_str())
                .bind(SigStatus::Valid.as_str())
                .fetch_all(pool)
                .await?
                .iter()
                .map(attestation_from_row)
                .collect()
        })
    }

    /// How many distinct observations are recorded, in one cache or in all.
    pub async fn count_attestations(&self, cache: Option<&str>) -> Result<i64, DbError> {
        let row = on_pool!(self, pool => {
            let query = match cache {
                Some(cache) => {
                    sqlx::query("SELECT COUNT(*) AS n FROM attestations WHERE cache = $1")
                        .bind(cache)
                }
                None => sqlx::query("SELECT COUNT(*) AS n FROM attestations"),
            };
            query.fetch_one(pool).await?.int("n")?
        });
        Ok(row)
    }

    /// Records where upstreams offer NARs; seen again, a source's compression and file size
    /// are updated to the latest answer.
    pub async fn record_nar_sources(
        &self,
        cache: &str,
        sources: &[NarSource],
    ) -> Result<(), DbError> {
        let mut rows = sources
            .iter()
            .map(|s| {
                let file_size = s
                    .file_size
                    .map(|size| size_to_column("file_size", size))
                    .transpose()?;
                let mut key = IdentityKey::new("quorate nar source v1");
                key.field(cache.as_bytes())
                    .field(s.upstream.as_bytes())
                    .field(s.nar_hash.to_string().as_bytes())
                    .field(s.url.as_bytes());
                Ok((key.finish(), s, file_size))
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0)); // one lock order, as for attestations
        let now = crate::clock::now_ms();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for (key, s, file_size) in &rows {
                sqlx::query(UPSERT_NAR_SOURCE)
                    .bind(key)
                    .bind(cache)
                    .bind(&s.upstream)
                    .bind(s.nar_hash.to_string())
                    .bind(&s.url)
                    .bind(&s.compression)
                    .bind(file_size)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The known sources of a NAR in a cache, oldest first.
    pub async fn nar_sources(
        &self,
        cache: &str,
        nar_hash: &NarHash,
    ) -> Result<Vec<NarSource>, DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "SELECT upstream, nar_hash, url, compression, file_size FROM nar_sources \
                 WHERE cache = $1 AND nar_hash = $2 ORDER BY id",
            )
            .bind(cache)
            .bind(nar_hash.to_string())
            .fetch_all(pool)
            .await?
            .iter()
            .map(nar_source_from_row)
            .collect()
        })
    }
}

pub(super) fn attestation_from_row(row: &impl Columns) -> Result<Attestation, DbError> {
    let status = row.text("status")?;
    Ok(Attestation {
        cache: row.text("cache")?,
        hash_part: row.parsed("hash_part", "attestations.hash_part")?,
        content: Content {
            store_path: row.text("store_path")?,
            nar_hash: row.parsed("nar_hash", "attestations.nar_hash")?,
            nar_size: size_from_column("attestations.nar_size", row.int("nar_size")?)?,
            references: split_references(&row.text("refs")?),
        },
        deriver: row.opt_text("deriver")?,
        ca: row.opt_text("ca")?,
        key_name: row.text("key_name")?,
        builder: row.opt_text("builder")?,
        upstream: row.text("upstream")?,
        signature: row.text("signature")?,
        status: SigStatus::parse(&status).ok_or(DbError::CorruptRow {
            column: "attestations.status",
            value: status,
        })?,
        seen_at: row.int("last_seen")?,
        signed_body: row.opt_text("signed_body")?,
        first_seen: row.int("first_seen")?,
    })
}

fn nar_source_from_row(row: &impl Columns) -> Result<NarSource, DbError> {
    Ok(NarSource {
        upstream: row.text("upstream")?,
        nar_hash: row.parsed("nar_hash", "nar_sources.nar_hash")?,
        url: row.text("url")?,
        compression: row.text("compression")?,
        file_size: row
            .opt_int("file_size")?
            .map(|size| size_from_column("nar_sources.file_size", size))
            .transpose()?,
    })
}
