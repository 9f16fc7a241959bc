//! How Rust values map onto columns: sizes, reference lists, name lists, identity keys, and
//! reading a row of either backend.

use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::DbError;

/// A `u64` size as the `BIGINT` that stores it; refuses what would wrap negative.
pub(crate) fn size_to_column(what: &'static str, value: u64) -> Result<i64, DbError> {
    i64::try_from(value).map_err(|_| DbError::SizeOutOfRange { what, value })
}

/// A stored `BIGINT` size back as `u64` (the schema forbids negatives; this double-checks).
pub(crate) fn size_from_column(column: &'static str, value: i64) -> Result<u64, DbError> {
    u64::try_from(value).map_err(|_| DbError::CorruptRow {
        column,
        value: value.to_string(),
    })
}

/// References as one space-joined column, in the order given (Guix compares the list).
///
/// Store path basenames never contain whitespace; one that does (or an empty one) could not
/// be split back into the same list, so it is refused rather than silently changed.
pub(crate) fn join_references(references: &[String]) -> Result<String, DbError> {
    if let Some(bad) = references
        .iter()
        .find(|r| r.is_empty() || r.chars().any(char::is_whitespace))
    {
        return Err(DbError::InvalidReference(bad.clone()));
    }
    Ok(references.join(" "))
}

/// Inverse of [`join_references`]: the empty string is the empty list.
pub(crate) fn split_references(joined: &str) -> Vec<String> {
    if joined.is_empty() {
        Vec::new()
    } else {
        joined.split(' ').map(str::to_owned).collect()
    }
}

/// Builder names as a JSON array (names come from the config and may hold any character).
pub(crate) fn names_to_column(names: &[String]) -> String {
    serde_json::Value::from(names).to_string()
}

/// Inverse of [`names_to_column`].
pub(crate) fn names_from_column(column: &'static str, json: &str) -> Result<Vec<String>, DbError> {
    serde_json::from_str(json).map_err(|_| DbError::CorruptRow {
        column,
        value: json.to_owned(),
    })
}

/// A SHA-256 identity over a fixed sequence of fields, hex-encoded.
///
/// Each field is length-prefixed, so no two different field sequences hash alike by
/// shifting bytes across a boundary; the domain string keeps keys of different tables apart.
pub(crate) struct IdentityKey(Sha256);

impl IdentityKey {
    /// Starts a key for `domain` (e.g. `"quorate attestation v1"`).
    pub(crate) fn new(domain: &str) -> Self {
        let mut key = IdentityKey(Sha256::new());
        key.field(domain.as_bytes());
        key
    }

    /// Adds one field.
    pub(crate) fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
        self
    }

    /// The key as 64 lowercase hex digits.
    pub(crate) fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Typed column access shared by both backends' rows, so one function maps a row of either.
pub(crate) trait Columns {
    /// A `NOT NULL` text column.
    fn text(&self, column: &str) -> Result<String, DbError>;
    /// A nullable text column.
    fn opt_text(&self, column: &str) -> Result<Option<String>, DbError>;
    /// A `NOT NULL` integer column.
    fn int(&self, column: &str) -> Result<i64, DbError>;
    /// A nullable integer column.
    fn opt_int(&self, column: &str) -> Result<Option<i64>, DbError>;
    /// A `NOT NULL` binary column (`BLOB` / `BYTEA`).
    fn blob(&self, column: &str) -> Result<Vec<u8>, DbError>;

    /// A `NOT NULL` text column holding a value's canonical string form (a NarHash, a hash
    /// part, ...); one this build cannot read is a corrupt row, named by `table_column`.
    fn parsed<T: std::str::FromStr>(
        &self,
        column: &str,
        table_column: &'static str,
    ) -> Result<T, DbError> {
        parse_column(table_column, self.text(column)?)
    }

    /// The nullable form of [`Columns::parsed`].
    fn opt_parsed<T: std::str::FromStr>(
        &self,
        column: &str,
        table_column: &'static str,
    ) -> Result<Option<T>, DbError> {
        self.opt_text(column)?
            .map(|text| parse_column(table_column, text))
            .transpose()
    }
}

fn parse_column<T: std::str::FromStr>(column: &'static str, text: String) -> Result<T, DbError> {
    text.parse().map_err(|_| DbError::CorruptRow {
        column,
        value: text,
    })
}

macro_rules! impl_columns {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, column: &str) -> Result<String, DbError> {
                Ok(self.try_get(column)?)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>, DbError> {
                Ok(self.try_get(column)?)
            }
            fn int(&self, column: &str) -> Result<i64, DbError> {
                Ok(self.try_get(column)?)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>, DbError> {
                Ok(self.try_get(column)?)
            }
            fn blob(&self, column: &str) -> Result<Vec<u8>, DbError> {
                Ok(self.try_get(column)?)
            }
        }
    };
}

impl_columns!(SqliteRow);
impl_columns!(PgRow);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_in_the_given_order() {
        let refs: Vec<String> = ["zzz-last", "aaa-first", "mmm-middle"]
            .map(String::from)
            .to_vec();
        let joined = join_references(&refs).unwrap();
        assert_eq!(split_references(&joined), refs);
        assert_eq!(
            split_references(&join_references(&[]).unwrap()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn references_that_would_not_split_back_are_refused() {
        for bad in ["", "a b", "tab\there", "new\nline"] {
            let refs = vec!["ok".to_owned(), bad.to_owned()];
            assert!(matches!(
                join_references(&refs),
                Err(DbError::InvalidReference(r)) if r == bad
            ));
        }
    }

    #[test]
    fn sizes_above_i64_max_are_refused_not_wrapped() {
        assert_eq!(
            size_to_column("nar_size", i64::MAX as u64).unwrap(),
            i64::MAX
        );
        assert!(matches!(
            size_to_column("nar_size", i64::MAX as u64 + 1),
            Err(DbError::SizeOutOfRange { value, .. }) if value == i64::MAX as u64 + 1
        ));
        assert!(size_from_column("t.nar_size", -1).is_err());
    }

    #[test]
    fn identity_key_fields_cannot_shift_across_boundaries() {
        let key = |fields: &[&str]| {
            let mut k = IdentityKey::new("test");
            for f in fields {
                k.field(f.as_bytes());
            }
            k.finish()
        };
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_eq!(key(&["ab", "c"]), key(&["ab", "c"]));
        assert_eq!(key(&[]).len(), 64);
    }
}
