//! Upstreams, builders and keys seen: who quorate has dealt with, and since when.
//!
//! Kept even after the config drops them, because recorded attestations still name them.

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;

use super::columns::Columns;
use super::{Db, DbError};

/// A builder's public key as configured for a cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderKey {
    /// The builder's configured name.
    pub builder: String,
    /// The public key as configured (Nix `name:base64`, or the Guix key s-expression).
    pub key: String,
    /// First time it was recorded, Unix milliseconds.
    pub first_seen: i64,
    /// Latest time it was recorded, Unix milliseconds.
    pub last_seen: i64,
}

impl Db {
    /// Notes an upstream base URL (insert, or move its `last_seen`).
    pub async fn record_upstream(&self, url: &str) -> Result<(), DbError> {
        let now = now_ms();
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO upstreams (url, first_seen, last_seen) VALUES ($1, $2, $2) \
                 ON CONFLICT (url) DO UPDATE SET last_seen = excluded.last_seen",
            )
            .bind(url)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Every upstream base URL ever recorded, in URL order.
    pub async fn upstreams(&self) -> Result<Vec<String>, DbError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT url FROM upstreams ORDER BY url")
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| row.text("url"))
                .collect()
        })
    }

    /// Notes a builder key configured for a cache (insert, or move its `last_seen`).
    pub async fn record_builder_key(
        &self,
        cache: &str,
        builder: &str,
        key: &str,
    ) -> Result<(), DbError> {
        let now = now_ms();
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO builder_keys (cache, builder, public_key, first_seen, last_seen) \
                 VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (cache, builder, public_key) \
                 DO UPDATE SET last_seen = excluded.last_seen",
            )
            .bind(cache)
            .bind(builder)
            .bind(key)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Every builder key ever recorded for a cache, by builder then key.
    pub async fn builder_keys(&self, cache: &str) -> Result<Vec<BuilderKey>, DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "SELECT builder, public_key, first_seen, last_seen FROM builder_keys \
                 WHERE cache = $1 ORDER BY builder, public_key",
            )
            .bind(cache)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok(BuilderKey {
                    builder: row.text("builder")?,
                    key: row.text("public_key")?,
                    first_seen: row.int("first_seen")?,
                    last_seen: row.int("last_seen")?,
                })
            })
            .collect()
        })
    }
}
