//! Schema migrations, embedded in the binary and applied by [`Db::connect`](super::Db::connect).
//!
//! Each migration has a SQLite and a PostgreSQL text (`migrations/<backend>/NNNN_name.sql`).
//! Applied ones are recorded in `schema_migrations` with the SHA-256 of their SQL; one whose
//! SQL changed since is refused rather than silently skipped. Each migration runs in its own
//! transaction, re-checking inside it whether another process applied it meanwhile.
//!
//! Replicas may start together: on PostgreSQL the whole run holds an advisory lock (scoped to
//! the current schema, so separate schemas in one database migrate independently); on SQLite
//! each migration's transaction holds the write lock from its start (`BEGIN IMMEDIATE`).
//! A database migrated by a newer build (versions this one does not know) is left alone.

use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Executor};

use super::columns::{hex, Columns};
use super::{DbError, Pool};

/// One schema change, in both dialects.
struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// Every migration, in order. Append; never edit or renumber a released one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sqlite: include_str!("../../migrations/sqlite/0001_initial.sql"),
        postgres: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "leases",
        sqlite: include_str!("../../migrations/sqlite/0002_leases.sql"),
        postgres: include_str!("../../migrations/postgres/0002_leases.sql"),
    },
    Migration {
        version: 3,
        name: "tlog",
        sqlite: include_str!("../../migrations/sqlite/0003_tlog.sql"),
        postgres: include_str!("../../migrations/postgres/0003_tlog.sql"),
    },
];

const CREATE_SCHEMA_MIGRATIONS_SQLITE: &str = "\
CREATE TABLE IF NOT EXISTS schema_migrations (\
    version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, \
    applied_at INTEGER NOT NULL) STRICT";

const CREATE_SCHEMA_MIGRATIONS_POSTGRES: &str = "\
CREATE TABLE IF NOT EXISTS schema_migrations (\
    version BIGINT NOT NULL PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, \
    applied_at BIGINT NOT NULL)";

/// First key of quorate's PostgreSQL advisory locks (`b"quor"`); the second is the schema's.
const ADVISORY_LOCK_CLASS: i32 = 0x71756f72;
const LOCK_SQL: &str = "SELECT pg_advisory_lock($1, hashtext(coalesce(current_schema(), '')))";
const UNLOCK_SQL: &str = "SELECT pg_advisory_unlock($1, hashtext(coalesce(current_schema(), '')))";

/// The number of migrations this build knows.
#[cfg(test)]
pub(crate) fn known_migrations() -> usize {
    MIGRATIONS.len()
}

/// SHA-256 of a migration's SQL, ignoring carriage returns (a Windows checkout of the same
/// file must not look changed).
fn checksum(sql: &str) -> String {
    let mut hasher = Sha256::new();
    for chunk in sql.split('\r') {
        hasher.update(chunk.as_bytes());
    }
    hex(&hasher.finalize())
}

/// Applies one migration's SQL in `$tx` unless it is already recorded there.
/// Written once as a macro because the two backends' transactions are different types.
macro_rules! apply_one {
    ($tx:expr, $migration:expr, $sql:expr) => {{
        let m: &Migration = $migration;
        let sql: &str = $sql;
        let embedded = checksum(sql);
        let applied = sqlx::query("SELECT checksum FROM schema_migrations WHERE version = $1")
            .bind(m.version)
            .fetch_optional(&mut *$tx)
            .await?;
        match applied {
            Some(row) => {
                let applied = row.text("checksum")?;
                if applied != embedded {
                    return Err(DbError::MigrationChanged {
                        version: m.version,
                        name: m.name,
                        applied,
                        embedded,
                    });
                }
            }
            None => {
                // A bare &str runs as a simple query: several statements in one go.
                (&mut *$tx)
                    .execute(sql)
                    .await
                    .map_err(|source| DbError::Migration {
                        version: m.version,
                        name: m.name,
                        source,
                    })?;
                sqlx::query(
                    "INSERT INTO schema_migrations (version, name, checksum, applied_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(m.version)
                .bind(m.name)
                .bind(&embedded)
                .bind(crate::clock::now_ms())
                .execute(&mut *$tx)
                .await?;
            }
        }
    }};
}

/// Brings the schema up to date.
pub(crate) async fn run(pool: &Pool) -> Result<(), DbError> {
    match pool {
        Pool::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            migrate_sqlite(&mut conn).await
        }
        Pool::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            sqlx::query(LOCK_SQL)
                .bind(ADVISORY_LOCK_CLASS)
                .execute(&mut *conn)
                .await?;
            let result = migrate_postgres(&mut conn).await;
            let unlocked = sqlx::query(UNLOCK_SQL)
                .bind(ADVISORY_LOCK_CLASS)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // The lock lives as long as the session: make sure this one ends.
                conn.close_on_drop();
            }
            result?;
            unlocked?;
            Ok(())
        }
    }
}

async fn migrate_sqlite(conn: &mut SqliteConnection) -> Result<(), DbError> {
    sqlx::query(CREATE_SCHEMA_MIGRATIONS_SQLITE)
        .execute(&mut *conn)
        .await?;
    for m in MIGRATIONS {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        apply_one!(tx, m, m.sqlite);
        tx.commit().await?;
    }
    Ok(())
}

/// Runs with quorate's advisory lock held by `conn`.
async fn migrate_postgres(conn: &mut PgConnection) -> Result<(), DbError> {
    sqlx::query(CREATE_SCHEMA_MIGRATIONS_POSTGRES)
        .execute(&mut *conn)
        .await?;
    for m in MIGRATIONS {
        let mut tx = conn.begin().await?;
        apply_one!(tx, m, m.postgres);
        tx.commit().await?;
    }
    Ok(())
}
