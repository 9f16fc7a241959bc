//! Leases: which replica does fleet-wide work (DESIGN §11). A lease is a row naming its owner
//! and when it expires; it is taken with one `INSERT ... ON CONFLICT` that only overwrites an
//! expired row, renewed by its holder while the work runs, and released at the end. A replica
//! that dies simply stops renewing; once the row expires another replica takes over.
//!
//! Every taking carries a fresh token, so an owner that was presumed dead (its lease expired
//! and was taken) cannot renew or release what is now someone else's.

use serde::{Deserialize, Serialize};

use super::columns::Columns;
use super::{Db, DbError};

/// Who holds a lease, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease's name, e.g. `nar:<key>`.
    pub name: String,
    /// The holder (its `advertise_url`).
    pub owner: String,
    /// The holder's token for this taking.
    pub token: String,
    /// When it expires unless renewed, Unix milliseconds.
    pub expires_at: i64,
}

impl Db {
    /// Takes lease `name` for `owner` until `expires_at` if nobody holds it or its holder's
    /// lease expired before `now`. `true` if this call took it.
    pub async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        token: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, DbError> {
        let taken = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO leases (name, owner, token, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
                     token = excluded.token, expires_at = excluded.expires_at \
                 WHERE leases.expires_at < $5 \
                 RETURNING token",
            )
            .bind(name)
            .bind(owner)
            .bind(token)
            .bind(expires_at)
            .bind(now)
            .fetch_optional(pool)
            .await?
            .map(|row| row.text("token"))
            .transpose()?
        });
        Ok(taken.as_deref() == Some(token))
    }

    /// Moves the expiry of a lease this `token` still holds; `false` if it lost it.
    pub async fn renew_lease(
        &self,
        name: &str,
        token: &str,
        expires_at: i64,
    ) -> Result<bool, DbError> {
        let rows = on_pool!(self, pool => {
            sqlx::query("UPDATE leases SET expires_at = $3 WHERE name = $1 AND token = $2")
                .bind(name)
                .bind(token)
                .bind(expires_at)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(rows == 1)
    }

    /// Gives up a lease this `token` holds (no-op if it lost it meanwhile).
    pub async fn release_lease(&self, name: &str, token: &str) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM leases WHERE name = $1 AND token = $2")
                .bind(name)
                .bind(token)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The lease `name`, if anybody holds one (expired or not).
    pub async fn lease(&self, name: &str) -> Result<Option<Lease>, DbError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT name, owner, token, expires_at FROM leases WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
                .map(|row| {
                    Ok(Lease {
                        name: row.text("name")?,
                        owner: row.text("owner")?,
                        token: row.text("token")?,
                        expires_at: row.int("expires_at")?,
                    })
                })
                .transpose()
        })
    }
}
