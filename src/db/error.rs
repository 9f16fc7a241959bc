//! The database layer's error type.

use std::path::PathBuf;

impl DbError {
    /// Whether the database could not be reached or could not take the write right now
    /// (down, restarting, out of connections, disk full), so the same write may succeed
    /// later; as opposed to a write that can never succeed (a value out of range).
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Unreachable { .. } => true,
            DbError::Sql(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::BeginFailed => true,
                sqlx::Error::Database(d) => transient_code(d.code().as_deref()),
                _ => false,
            },
            _ => false,
        }
    }
}

/// SQLite's busy, locked, I/O, full and can't-open results; PostgreSQL's connection
/// exceptions (08), insufficient resources (53), operator intervention (57: shutdown,
/// restart) and serialization/deadlock failures (40).
fn transient_code(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    if let Ok(sqlite) = code.parse::<i32>() {
        return matches!(sqlite & 0xff, 5 | 6 | 10 | 13 | 14);
    }
    ["08", "53", "57", "40"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// Everything that can go wrong storing or loading quorate's records.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database URL names a backend quorate does not speak.
    #[error("unsupported database URL scheme {scheme:?}: use sqlite://<path> or postgres://...")]
    UnsupportedUrl {
        /// The part before the first `:` (the rest may hold a password, so it is not kept).
        scheme: String,
    },

    /// The directory that should hold the SQLite file could not be created.
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// The database server did not answer a connection attempt in time.
    #[error("the database did not answer within {after:?}")]
    Unreachable {
        /// How long quorate waited.
        after: std::time::Duration,
    },

    /// The database or the driver reported an error.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),

    /// A migration's SQL failed; nothing of it was applied.
    #[error("database migration {version} ({name}) failed: {source}")]
    Migration {
        /// The migration's number.
        version: i64,
        /// The migration's name.
        name: &'static str,
        /// The database's error.
        source: sqlx::Error,
    },

    /// An applied migration differs from the one built into this binary.
    #[error(
        "database migration {version} ({name}) was applied with different SQL \
         (checksum {applied} in the database, {embedded} in this build)"
    )]
    MigrationChanged {
        /// The migration's number.
        version: i64,
        /// The migration's name.
        name: &'static str,
        /// SHA-256 recorded when it was applied.
        applied: String,
        /// SHA-256 of the SQL in this build.
        embedded: String,
    },

    /// A size does not fit the signed 64-bit column that stores it.
    #[error(
        "{what} {value} is larger than the database can store (at most {})",
        i64::MAX
    )]
    SizeOutOfRange {
        /// Which size (`nar_size`, `file_size`).
        what: &'static str,
        /// The refused value.
        value: u64,
    },

    /// A reference that the space-joined references column could not give back intact.
    #[error("reference {0:?} cannot be stored: it must be non-empty and contain no whitespace")]
    InvalidReference(String),

    /// A stored value that this build cannot read back (corruption or a newer writer).
    #[error("unreadable value in database column {column}: {value:?}")]
    CorruptRow {
        /// `table.column`.
        column: &'static str,
        /// The value as stored.
        value: String,
    },
}
