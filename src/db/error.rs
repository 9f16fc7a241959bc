//! The database layer's error type.

use std::path::PathBuf;

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
