//! Validated Nix store paths: `<store_dir>/<hash part>-<name>`.
//!
//! ```text
//! /nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin
//! └store_dir┘ └──────── hash part ─────────┘ └─── name ───┘
//!            └────────────────── basename ────────────────┘
//! ```
//!
//! The hash part is 32 nix32 characters (160 bits); it is what `<hash>.narinfo` routes are
//! keyed by. The name follows Nix's rules: `[A-Za-z0-9+-._?=]+`, at most 211 bytes, not
//! starting with `.`. A [`StorePath`] can only be built through these checks, so code that
//! holds one never re-validates it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::nix32;

/// Length of a store path's hash part in characters (20 bytes in nix32).
pub const HASH_PART_LEN: usize = 32;

/// Longest store-path name Nix accepts, in bytes.
pub const MAX_NAME_LEN: usize = 211;

/// Why a string is not a store path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorePathError {
    /// The store directory itself is unusable (relative, trailing `/`, `.`/`..` components).
    #[error("store directory {store_dir:?} is not an absolute path in canonical form")]
    InvalidStoreDir {
        /// The store directory as given.
        store_dir: String,
    },
    /// The path does not lie directly inside the store directory.
    #[error("{path:?} is not directly inside the store directory {store_dir}")]
    OutsideStoreDir {
        /// The path as given.
        path: String,
        /// The store directory it was checked against.
        store_dir: String,
    },
    /// No `-` after the 32-character hash part.
    #[error("{basename:?} is not of the form <32-character hash>-<name>")]
    MissingSeparator {
        /// The basename as given.
        basename: String,
    },
    /// The hash part uses characters outside the nix32 alphabet.
    #[error("hash part {hash_part:?} is not 32 characters of the nix32 alphabet")]
    InvalidHashPart {
        /// The hash part as given.
        hash_part: String,
    },
    /// The name is empty.
    #[error("store path name is empty")]
    EmptyName,
    /// The name is longer than Nix allows.
    #[error("store path name is {len} bytes long, more than the {MAX_NAME_LEN} Nix allows")]
    NameTooLong {
        /// Length of the name in bytes.
        len: usize,
    },
    /// The name starts with `.`, which Nix forbids (it would make hidden or `..` paths).
    #[error("store path name {name:?} starts with '.'")]
    NameStartsWithDot {
        /// The name as given.
        name: String,
    },
    /// The name contains a character outside `[A-Za-z0-9+-._?=]`.
    #[error("store path name {name:?} contains {character:?}, outside [A-Za-z0-9+-._?=]")]
    InvalidNameCharacter {
        /// The name as given.
        name: String,
        /// The first offending character.
        character: char,
    },
}

/// Whether `s` is a well-formed hash part: exactly 32 characters of the nix32 alphabet.
pub fn is_valid_hash_part(s: &str) -> bool {
    s.len() == HASH_PART_LEN && s.chars().all(nix32::is_nix32_char)
}

/// A store path's hash part: exactly 32 nix32 characters. It keys `<hash>.narinfo` routes,
/// decisions and the hot caches; its one string form is those 32 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashPart(String);

impl HashPart {
    /// The 32 characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HashPart {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if is_valid_hash_part(s) {
            Ok(HashPart(s.to_owned()))
        } else {
            Err(StorePathError::InvalidHashPart {
                hash_part: s.to_owned(),
            })
        }
    }
}

impl fmt::Display for HashPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HashPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashPart({})", self.0)
    }
}

impl AsRef<str> for HashPart {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for HashPart {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HashPart {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Joins a store directory and a basename the way Nix prints a full path.
pub fn full_path(store_dir: &str, basename: &str) -> String {
    if store_dir == "/" {
        format!("/{basename}")
    } else {
        format!("{store_dir}/{basename}")
    }
}

/// A validated full store path. Ordered and compared by its full path string, which for paths
/// in one store directory is Nix's own order (by basename).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    /// `<store_dir>/<hash>-<name>`, kept whole so `full()` is free and cheap to clone.
    full: String,
    /// Byte offset of the basename in `full`; the hash part and name follow from it.
    basename_start: usize,
}

impl StorePath {
    /// Parses a full path such as `/nix/store/<hash>-<name>` inside `store_dir`.
    pub fn parse(store_dir: &str, full: &str) -> Result<StorePath, StorePathError> {
        check_store_dir(store_dir)?;
        let prefix_len = if store_dir == "/" {
            1
        } else {
            store_dir.len() + 1
        };
        let basename = full
            .strip_prefix(store_dir)
            .and_then(|rest| {
                if store_dir == "/" {
                    Some(rest)
                } else {
                    rest.strip_prefix('/')
                }
            })
            .ok_or_else(|| StorePathError::OutsideStoreDir {
                path: full.to_owned(),
                store_dir: store_dir.to_owned(),
            })?;
        check_basename(basename)?;
        Ok(StorePath {
            full: full.to_owned(),
            basename_start: prefix_len,
        })
    }

    /// Builds the path for basename `<hash>-<name>` inside `store_dir`.
    pub fn from_basename(store_dir: &str, base: &str) -> Result<StorePath, StorePathError> {
        check_store_dir(store_dir)?;
        check_basename(base)?;
        let full = full_path(store_dir, base);
        Ok(StorePath {
            basename_start: full.len() - base.len(),
            full,
        })
    }

    /// The 32-character nix32 hash part.
    pub fn hash_part(&self) -> &str {
        &self.basename()[..HASH_PART_LEN]
    }

    /// Whether this is the path `<hash>.narinfo` asked for.
    pub fn has_hash_part(&self, hash_part: &HashPart) -> bool {
        self.hash_part() == hash_part.as_str()
    }

    /// The name after `<hash>-`.
    pub fn name(&self) -> &str {
        &self.basename()[HASH_PART_LEN + 1..]
    }

    /// Whether this is a derivation file (`<hash>-<name>.drv`), as build logs are keyed.
    pub fn is_derivation(&self) -> bool {
        self.name().ends_with(".drv")
    }

    /// `<hash>-<name>`, as narinfo `References:` and `Deriver:` list it.
    pub fn basename(&self) -> &str {
        &self.full[self.basename_start..]
    }

    /// The whole path, e.g. `/nix/store/<hash>-<name>`.
    pub fn full(&self) -> &str {
        &self.full
    }

    /// The store directory, e.g. `/nix/store`.
    pub fn store_dir(&self) -> &str {
        match self.basename_start {
            1 => "/",
            start => &self.full[..start - 1],
        }
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

fn check_store_dir(store_dir: &str) -> Result<(), StorePathError> {
    nix_derivation::StoreDir::new(store_dir)
        .map(drop)
        .map_err(|_| StorePathError::InvalidStoreDir {
            store_dir: store_dir.to_owned(),
        })
}

fn check_basename(basename: &str) -> Result<(), StorePathError> {
    // `get` rather than slicing: a multi-byte character could straddle offset 32.
    let (hash_part, name) = match (basename.get(..HASH_PART_LEN), basename.get(HASH_PART_LEN..)) {
        (Some(hash_part), Some(rest)) if rest.starts_with('-') => (hash_part, &rest[1..]),
        _ => {
            return Err(StorePathError::MissingSeparator {
                basename: basename.to_owned(),
            })
        }
    };
    if !is_valid_hash_part(hash_part) {
        return Err(StorePathError::InvalidHashPart {
            hash_part: hash_part.to_owned(),
        });
    }
    check_name(name)
}

fn check_name(name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong { len: name.len() });
    }
    if name.starts_with('.') {
        return Err(StorePathError::NameStartsWithDot {
            name: name.to_owned(),
        });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "+-._?=".contains(c);
    if let Some(character) = name.chars().find(|&c| !allowed(c)) {
        return Err(StorePathError::InvalidNameCharacter {
            name: name.to_owned(),
            character,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURL: &str = "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin";

    #[test]
    fn a_full_path_splits_into_its_parts() {
        let path = StorePath::parse("/nix/store", CURL).expect("valid path");
        assert_eq!(path.store_dir(), "/nix/store");
        assert_eq!(path.hash_part(), "syd87l2rxw8cbsxmxl853h0r6pdwhwjr");
        assert_eq!(path.name(), "curl-7.82.0-bin");
        assert_eq!(
            path.basename(),
            "syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin"
        );
        assert_eq!(path.full(), CURL);
        assert_eq!(path.to_string(), CURL);
    }

    #[test]
    fn derivations_are_the_paths_whose_name_ends_in_drv() {
        let path = |name: &str| {
            StorePath::from_basename(
                "/nix/store",
                &format!("syd87l2rxw8cbsxmxl853h0r6pdwhwjr-{name}"),
            )
            .expect("valid path")
        };
        assert!(path("hello-2.12.drv").is_derivation());
        assert!(path("a?b=c.drv").is_derivation());
        assert!(!path("hello-2.12").is_derivation());
        assert!(!path("drv").is_derivation());
        assert!(!path("hello.drv.chroot").is_derivation());
    }

    #[test]
    fn from_basename_builds_the_same_path_as_parse() {
        let base = "syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin";
        assert_eq!(
            StorePath::from_basename("/nix/store", base),
            StorePath::parse("/nix/store", CURL)
        );
    }

    #[test]
    fn guix_and_root_store_directories_work() {
        let guix = StorePath::parse(
            "/gnu/store",
            "/gnu/store/0vpqfxbkx0ffrnhbws6g9qwhmliksz7f-hello-2.12.2",
        )
        .expect("valid guix path");
        assert_eq!(guix.store_dir(), "/gnu/store");
        assert_eq!(guix.name(), "hello-2.12.2");

        let root = StorePath::from_basename("/", "0vpqfxbkx0ffrnhbws6g9qwhmliksz7f-x")
            .expect("valid path in /");
        assert_eq!(root.full(), "/0vpqfxbkx0ffrnhbws6g9qwhmliksz7f-x");
        assert_eq!(root.store_dir(), "/");
        assert_eq!(root.basename(), "0vpqfxbkx0ffrnhbws6g9qwhmliksz7f-x");
    }

    #[test]
    fn paths_outside_the_store_directory_are_rejected() {
        for path in [
            "/gnu/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl",
            "/nix/storesyd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl",
            "/nix/store-syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl",
            "nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl",
            "syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl",
            "",
        ] {
            assert!(
                matches!(
                    StorePath::parse("/nix/store", path),
                    Err(StorePathError::OutsideStoreDir { .. })
                ),
                "{path:?}"
            );
        }
    }

    #[test]
    fn subpaths_of_a_store_path_are_not_store_paths() {
        assert!(matches!(
            StorePath::parse("/nix/store", &format!("{CURL}/bin/curl")),
            Err(StorePathError::InvalidNameCharacter { character: '/', .. })
        ));
    }

    #[test]
    fn names_follow_nix_rules() {
        let hash = "syd87l2rxw8cbsxmxl853h0r6pdwhwjr";
        let ok = |name: &str| StorePath::from_basename("/nix/store", &format!("{hash}-{name}"));
        assert!(ok("a+b-c.d_e?f=g-AZ09").is_ok());
        assert!(ok(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert_eq!(
            ok(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(StorePathError::NameTooLong { len: 212 })
        );
        assert_eq!(ok(""), Err(StorePathError::EmptyName));
        assert!(matches!(
            ok(".hidden"),
            Err(StorePathError::NameStartsWithDot { .. })
        ));
        assert!(matches!(
            ok(".."),
            Err(StorePathError::NameStartsWithDot { .. })
        ));
        for bad in ["a b", "a/b", "a:b", "é", "a\nb", "a*"] {
            assert!(
                matches!(ok(bad), Err(StorePathError::InvalidNameCharacter { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn hash_parts_must_be_32_nix32_characters() {
        assert!(is_valid_hash_part("syd87l2rxw8cbsxmxl853h0r6pdwhwjr"));
        assert!(!is_valid_hash_part("syd87l2rxw8cbsxmxl853h0r6pdwhwj"));
        assert!(!is_valid_hash_part("syd87l2rxw8cbsxmxl853h0r6pdwhwjrr"));
        assert!(!is_valid_hash_part("eyd87l2rxw8cbsxmxl853h0r6pdwhwjr"));
        assert!(!is_valid_hash_part("SYD87L2RXW8CBSXMXL853H0R6PDWHWJR"));
        assert!(!is_valid_hash_part(""));
        assert!(matches!(
            StorePath::from_basename("/nix/store", "eyd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl"),
            Err(StorePathError::InvalidHashPart { .. })
        ));
    }

    #[test]
    fn a_basename_without_dash_after_the_hash_is_rejected() {
        for base in [
            "syd87l2rxw8cbsxmxl853h0r6pdwhwjr",
            "syd87l2rxw8cbsxmxl853h0r6pdwhwjr_curl",
            "short-curl",
            "syd87l2rxw8cbsxmxl853h0r6pdwhwéjr-curl",
            "",
        ] {
            assert!(
                matches!(
                    StorePath::from_basename("/nix/store", base),
                    Err(StorePathError::MissingSeparator { .. })
                ),
                "{base:?}"
            );
        }
    }

    #[test]
    fn malformed_store_directories_are_rejected() {
        for dir in ["nix/store", "/nix/store/", "/nix/../store", ""] {
            assert!(
                matches!(
                    StorePath::from_basename(dir, "syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl"),
                    Err(StorePathError::InvalidStoreDir { .. })
                ),
                "{dir:?}"
            );
        }
    }

    #[test]
    fn multibyte_characters_anywhere_never_panic() {
        for s in ["é", "ééééééééééééééééééééééééééééééééé", "/nix/store/é-é"]
        {
            assert!(StorePath::parse("/nix/store", s).is_err());
            assert!(StorePath::from_basename("/nix/store", s).is_err());
        }
    }
}
