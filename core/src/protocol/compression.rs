//! NAR compressions as narinfos name them (`Compression: zstd`).
//!
//! The canonical string form is the narinfo's value; [`FromStr`] and
//! [`Display`](fmt::Display) both go through [`Compression::as_str`]. A Nix narinfo without the
//! field means bzip2; that default belongs to the narinfo parser. Decoding the bytes is the
//! service's business (it needs I/O); this is only the vocabulary.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A `Compression:` value quorate does not know (and so cannot decode).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown NAR compression {0:?}")]
pub struct UnknownCompression(pub String);

/// How an upstream compressed a NAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// `none`: the NAR bytes themselves.
    None,
    /// `xz` (Hydra's default).
    Xz,
    /// `zstd`.
    Zstd,
    /// `bzip2` (what a Nix narinfo without `Compression:` means).
    Bzip2,
    /// `br` (brotli).
    Brotli,
    /// `gzip` (guix publish).
    Gzip,
    /// `lzip` (guix publish).
    Lzip,
}

impl Compression {
    /// Every compression, in narinfo-name order; handy for tests and listings.
    pub const ALL: [Compression; 7] = [
        Compression::None,
        Compression::Xz,
        Compression::Zstd,
        Compression::Bzip2,
        Compression::Brotli,
        Compression::Gzip,
        Compression::Lzip,
    ];

    /// The narinfo name: `none`, `xz`, `zstd`, `bzip2`, `br`, `gzip`, `lzip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Brotli => "br",
            Compression::Gzip => "gzip",
            Compression::Lzip => "lzip",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| UnknownCompression(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for c in Compression::ALL {
            assert_eq!(c.as_str().parse::<Compression>(), Ok(c));
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!(
            "lz4".parse::<Compression>().map_err(|e| e.to_string()),
            Err("unknown NAR compression \"lz4\"".to_string())
        );
        assert!(
            "XZ".parse::<Compression>().is_err(),
            "names are case-sensitive"
        );
    }
}
