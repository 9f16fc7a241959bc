//! Database: attestations, decisions, NAR objects, events (sqlx; SQLite and PostgreSQL).
//!
//! [`Db`] is one handle for both backends: `sqlite://<path>` (embedded default, WAL mode) or
//! `postgres://...` (production, several replicas sharing one database). Both run the same SQL
//! text (`$1` placeholders work in both); only the migrations differ in dialect
//! (`migrations/sqlite/`, `migrations/postgres/`), and they are applied by [`Db::connect`].
//!
//! What is kept (DESIGN §6), one file per concept:
//! - `attestations`: every signed claim observed, append-only and keyed by content; plus where
//!   upstreams say the NAR for a hash can be downloaded ([`NarSource`]).
//! - `decisions`: quorum outcomes per (cache, store path), with history ([`DecisionRecord`]).
//! - `nar_objects`: the local NAR store's index ([`NarObject`]); rows go on eviction.
//! - `events`: mismatches, conflicts, upstream failures ([`Event`], [`EventKind`]).
//! - `seen`: upstreams, builders and keys seen.
//! - `leases`: which replica of a replica set does fleet-wide work ([`Lease`]).
//! - `notify`: PostgreSQL `LISTEN/NOTIFY` of recorded decisions, so that every replica drops
//!   a changed answer from memory ([`ChangeListener`]).
//! - `tlog`: each cache's transparency log (entries, stored Merkle hashes, checkpoints) and
//!   which rows it holds.
//! - `reports`: what an operator asks (builder agreement, conflicts, recent decisions).
//!
//! Timestamps are `BIGINT` Unix milliseconds. Sizes are `u64` in Rust and `BIGINT` in SQL;
//! a size above `i64::MAX` is refused with [`DbError::SizeOutOfRange`], never wrapped.
//!
//! [`NarSource`]: quorate_core::attestation::NarSource

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Postgres, Sqlite, Transaction};

/// Runs `$body` once per backend with `$pool` bound to that backend's pool.
///
/// The body is the same source text for both, compiled twice against concrete types: this
/// keeps one SQL string per query without sqlx's `Any` driver and its type conversions.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match &$db.pool {
            $crate::db::Pool::Sqlite($pool) => $body,
            $crate::db::Pool::Postgres($pool) => $body,
        }
    };
}

mod attestations;
mod columns;
mod decisions;
mod error;
mod events;
mod leases;
mod migrate;
mod nar_objects;
mod notify;
mod peers;
mod reports;
mod seen;
#[cfg(test)]
mod tests;
mod tlog;
mod witness;

pub use decisions::{DecisionRecord, Outcome};
pub use error::DbError;
pub use events::{Event, EventKind, UnknownEventKind};
pub use leases::Lease;
pub use nar_objects::NarObject;
pub use notify::{Change, ChangeListener};
pub use peers::PeerState;
pub use reports::{Agreement, BuilderRecord, ConflictRecord, UnknownKey};
pub use seen::BuilderKey;
pub use tlog::{EntryKind, LogAppend, NewEntry, Unlogged};

use crate::limits::{DB_ACQUIRE_TIMEOUT as ACQUIRE_TIMEOUT, SQLITE_BUSY_TIMEOUT};

/// Pool size per process; PostgreSQL replicas each open up to this many.
const MAX_CONNECTIONS: u32 = 10;

/// The database: a connection pool for one of the two backends, cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: Pool,
    /// This process's random id: the origin of the change notices it sends, so that it
    /// can ignore its own (see `notify`).
    instance: std::sync::Arc<str>,
}

/// The backend-specific pool behind a [`Db`].
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    /// Opens `sqlite://<path>` (creating the file and its directory if missing) or
    /// `postgres://...`, and applies any pending migrations.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        if url.starts_with("sqlite:") {
            // Several processes opening a new file at once race to switch it to WAL and to
            // migrate it; SQLite answers some of those steps with SQLITE_BUSY at once,
            // without waiting on busy_timeout. Start-up retries them for a while.
            let mut attempt = 0u32;
            loop {
                let result = async {
                    let pool = Pool::Sqlite(connect_sqlite(url).await?);
                    migrate::run(&pool).await?;
                    Ok(Db::with_pool(pool))
                }
                .await;
                match result {
                    Err(e) if is_sqlite_busy(&e) && attempt < SQLITE_START_RETRIES => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                    }
                    other => return other,
                }
            }
        }
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pool::Postgres(connect_postgres(url).await?)
        } else {
            // Only the scheme: the rest of a URL may hold a password.
            let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
            return Err(DbError::UnsupportedUrl {
                scheme: scheme.to_owned(),
            });
        };
        migrate::run(&pool).await?;
        Ok(Db::with_pool(pool))
    }

    fn with_pool(pool: Pool) -> Db {
        Db {
            pool,
            instance: random_hex(8).into(),
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes every pooled connection, waiting for checked-out ones to come back.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// How often start-up retries a SQLite database that another process holds locked.
const SQLITE_START_RETRIES: u32 = 40;

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6), with or without an extended code.
fn is_sqlite_busy(e: &DbError) -> bool {
    match e {
        DbError::Sql(sqlx::Error::Database(d)) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

async fn connect_sqlite(url: &str) -> Result<SqlitePool, DbError> {
    // sqlx gives `sqlite::memory:` a shared-cache database that lives as long as one of its
    // connections does; one connection kept forever avoids both table locks and data loss.
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let mut pool = SqlitePoolOptions::new()
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_release(|conn, _| Box::pin(async move { Ok(still_usable(conn)) }));
    if in_memory {
        pool = pool
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    } else {
        // WAL: readers never block the writer; NORMAL is durable across crashes in WAL mode
        // except for the last commits before a power loss, which the upstreams can re-supply.
        options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        create_parent_dir(options.get_filename()).await?;
        pool = pool.max_connections(MAX_CONNECTIONS);
    }
    Ok(pool.connect_with(options).await?)
}

async fn create_parent_dir(file: &Path) -> Result<(), DbError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| DbError::CreateDir {
                    path: dir.to_owned(),
                    source,
                })
        }
        _ => Ok(()),
    }
}

async fn connect_postgres(url: &str) -> Result<PgPool, DbError> {
    // One plain connection first: if the server is down or refuses us, its error says why,
    // where the pool would only say that it timed out.
    let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect(url))
        .await
        .map_err(|_| DbError::Unreachable {
            after: ACQUIRE_TIMEOUT,
        })??;
    let _ = probe.close().await;
    Ok(PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_release(|conn, _| Box::pin(async move { Ok(still_usable(conn)) }))
        .connect(url)
        .await?)
}

/// Whether a connection coming back to the pool may be handed out again. One still inside a
/// transaction is not: a COMMIT that failed (SQLITE_FULL when the disk is full) leaves sqlx's
/// transaction depth behind, and every later `BEGIN IMMEDIATE` on that connection would fail
/// until restart. The pool closes it and opens a fresh one instead.
fn still_usable<C: sqlx::Connection>(conn: &mut C) -> bool {
    let usable = !conn.is_in_transaction();
    if !usable {
        tracing::warn!("closing a database connection left inside a failed transaction");
    }
    usable
}

/// Starts a transaction meant to write, the right way for each backend.
pub(crate) trait BeginWrite {
    /// The sqlx database of this pool.
    type Database: sqlx::Database;

    /// `BEGIN` that already holds the write lock where the backend needs that.
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Database>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Database = Sqlite;

    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Sqlite>, sqlx::Error>> + Send {
        // A deferred transaction that reads before it writes cannot wait for the lock (SQLite
        // answers SQLITE_BUSY at once); IMMEDIATE takes it up front, under busy_timeout.
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Database = Postgres;

    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Postgres>, sqlx::Error>> + Send {
        self.begin()
    }
}

/// Compile-time proof that every query future is `Send`: the server records attestations
/// and events from spawned background tasks, and sqlx's executor lifetimes make it easy to
/// lose `Send` by accident (this fails to build if one does). Never called.
#[allow(dead_code)]
fn futures_are_send(
    db: &Db,
    decision: &DecisionRecord,
    event: &Event,
    hash_part: &quorate_core::protocol::store_path::HashPart,
    nar_hash: &quorate_core::protocol::nar_hash::NarHash,
) {
    fn send<T: Send>(_: T) {}
    send(Db::connect(""));
    send(db.ping());
    send(db.close());
    send(db.record_attestations(&[]));
    send(db.attestations("", hash_part));
    send(db.valid_attestations("", hash_part));
    send(db.count_attestations(None));
    send(db.record_nar_sources("", &[]));
    send(db.nar_sources("", nar_hash));
    send(db.record_decision(decision));
    send(db.latest_decision("", hash_part));
    send(db.accepted_decision_for_nar("", nar_hash));
    send(db.record_nar_object(nar_hash, 0, ""));
    send(db.touch_nar_object(nar_hash));
    send(db.remove_nar_object(nar_hash));
    send(db.nar_object(nar_hash));
    send(db.least_recently_used_nar_objects(0));
    send(db.nar_objects_total_size());
    send(db.record_event(event));
    send(db.events(None, None));
    send(db.record_upstream(""));
    send(db.upstreams());
    send(db.record_builder_key("", "", ""));
    send(db.builder_keys(""));
}

/// `n` random bytes as lowercase hex (lease tokens, instance ids); unique, not secret.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No OS randomness: the time and pid still make it unique enough for an id.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return format!("{:x}{:x}", now.as_nanos(), std::process::id());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
