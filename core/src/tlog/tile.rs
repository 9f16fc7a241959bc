//! C2SP tiled logs (<https://c2sp.org/tlog-tiles>): the Merkle tree and the entries served as
//! static, cacheable files that any mirror can copy and any auditor can check offline.
//!
//! ```text
//! tile/0/x001/x234/067        full level-0 tile 1234067: leaf hashes 1234067*256 .. +255,
//!                             256 * 32 = 8192 bytes of concatenated hashes
//! tile/1/000.p/17             partial level-1 tile 0, 17 hashes wide: each hash the root of
//!                             one full level-0 tile
//! tile/entries/000.p/112      the entry bundle beside tile/0/000.p/112: 112 entries, each
//!                             a big-endian u16 length then the entry's bytes
//! ```
//!
//! Tiles are 8 levels high: a hash in a level-L tile is the root of 256^L leaves (the stored
//! hash at Merkle level 8L). A tree of size 70,000 has 273 full level-0 tiles, the partial
//! `tile/0/273.p/112`, the full `tile/1/000`, the partial `tile/1/001.p/17` and
//! `tile/2/000.p/1`. The index N is written in zero-padded groups of three digits, all but
//! the last prefixed with `x`, so a directory never holds more than 1000 names.
//!
//! The log writes tiles from its stored hashes ([`read_tile`], [`new_tiles`]); an auditor
//! loads what it mirrored into a [`TileSet`], checks it against a checkpoint's root
//! ([`TileSet::verify`]), then proves anything from it (it is a [`HashReader`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use super::merkle::{
    leaf_hash, root, split_stored_hash_index, stored_hash_index, tree_hash, Hash, HashReader,
    ProveError, HASH_SIZE,
};

/// Merkle levels per tile.
pub const TILE_HEIGHT: u32 = 8;

/// Hashes in a full tile (2^8).
pub const TILE_WIDTH: u64 = 256;

/// The highest tile level a path may name (the spec's 63).
pub const MAX_TILE_LEVEL: u8 = 63;

/// The largest entry a bundle can hold (its length is a u16).
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;

/// Why a tile, path or bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TileError {
    /// Level over 63 or width not 1..=256.
    #[error("tile level {level} / width {width} out of range (level 0..=63, width 1..=256)")]
    OutOfRange {
        /// The level asked for.
        level: u8,
        /// The width asked for.
        width: u16,
    },
    /// Not `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]` in canonical form.
    #[error("{0:?} is not a tile path (tile/<L>/<N>[.p/<W>], N in x-prefixed 3-digit groups)")]
    InvalidPath(String),
    /// Tile bytes of the wrong length.
    #[error("tile {tile} has {got} bytes, expected {expected}")]
    WrongSize {
        /// The tile's path.
        tile: String,
        /// Bytes its width needs.
        expected: usize,
        /// Bytes found.
        got: usize,
    },
    /// A tile the tree of this size does not have (or with another width).
    #[error("tile {tile} is not part of a tree of size {size}")]
    NotInTree {
        /// The tile's path.
        tile: String,
        /// The tree's size.
        size: u64,
    },
    /// A tile the tree needs was not given.
    #[error("tile {0} is missing")]
    Missing(String),
    /// A hash in a tile is not the root of the tile below it.
    #[error("tile {tile} hash {position} does not match the tile below it")]
    Inconsistent {
        /// The upper tile's path.
        tile: String,
        /// Which of its hashes.
        position: u64,
    },
    /// The tiles give another root than the checkpoint's.
    #[error("the tiles give root {got}, the checkpoint says {expected}")]
    RootMismatch {
        /// The checkpoint's root.
        expected: Hash,
        /// The root computed from the tiles.
        got: Hash,
    },
    /// A stored hash the tiles cannot give.
    #[error("stored hash {0} is not in these tiles")]
    HashNotInTiles(u64),
    /// An entry too large for a bundle.
    #[error("entry {index} is {len} bytes, more than a bundle's {MAX_ENTRY_BYTES}")]
    EntryTooLarge {
        /// The entry's position in the bundle.
        index: usize,
        /// Its size.
        len: usize,
    },
    /// A bundle that ends inside an entry, or has another number of entries than its width.
    #[error("entry bundle {tile} is malformed: {reason}")]
    MalformedBundle {
        /// The bundle's path.
        tile: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A bundle whose entries do not hash to its level-0 tile.
    #[error("entry {index} of bundle {tile} does not hash to its level-0 tile")]
    BundleMismatch {
        /// The bundle's path.
        tile: String,
        /// The entry's index in the log.
        index: u64,
    },
}

/// A tile: level L, index N within the level, width W (256 when full).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    level: u8,
    index: u64,
    width: u16,
}

impl Tile {
    /// The tile at `level`, `index`, `width` (1..=256).
    pub fn new(level: u8, index: u64, width: u16) -> Result<Tile, TileError> {
        if level > MAX_TILE_LEVEL || width == 0 || u64::from(width) > TILE_WIDTH {
            return Err(TileError::OutOfRange { level, width });
        }
        Ok(Tile {
            level,
            index,
            width,
        })
    }

    /// Which level (0: leaf hashes).
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Which tile of its level.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// How many hashes it holds.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Whether it holds all 256 hashes.
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// Its hash path, `tile/<L>/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        TilePath::Hashes(*self).to_string()
    }

    /// The path of the entry bundle beside a level-0 tile, `tile/entries/<N>[.p/<W>]`.
    pub fn bundle_path(&self) -> String {
        TilePath::Entries(*self).to_string()
    }

    /// The tile's size in bytes.
    pub fn byte_len(&self) -> usize {
        usize::from(self.width) * HASH_SIZE
    }

    /// The position of its first hash within its level.
    fn first(&self) -> Option<u64> {
        self.index.checked_mul(TILE_WIDTH)
    }
}

/// A parsed tile URL path: hashes or an entry bundle. One canonical form (`Display`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TilePath {
    /// `tile/<L>/<N>[.p/<W>]`.
    Hashes(Tile),
    /// `tile/entries/<N>[.p/<W>]`; the tile is the level-0 one it stands beside.
    Entries(Tile),
}

impl fmt::Display for TilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tile = match self {
            TilePath::Hashes(tile) => {
                write!(f, "tile/{}/", tile.level)?;
                tile
            }
            TilePath::Entries(tile) => {
                f.write_str("tile/entries/")?;
                tile
            }
        };
        write_index(f, tile.index)?;
        if !tile.is_full() {
            write!(f, ".p/{}", tile.width)?;
        }
        Ok(())
    }
}

/// N in 3-digit groups, most significant first, all but the last prefixed with `x`.
fn write_index(f: &mut fmt::Formatter<'_>, index: u64) -> fmt::Result {
    let mut groups = Vec::new();
    let mut rest = index;
    loop {
        groups.push(rest % 1000);
        rest /= 1000;
        if rest == 0 {
            break;
        }
    }
    let last = groups.len() - 1;
    for (i, group) in groups.iter().rev().enumerate() {
        if i < last {
            write!(f, "x{group:03}/")?;
        } else {
            write!(f, "{group:03}")?;
        }
    }
    Ok(())
}

impl FromStr for TilePath {
    type Err = TileError;

    /// Parses a path in its canonical form only (no leading `x000/` group, no leading zeros).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || TileError::InvalidPath(s.chars().take(200).collect());
        let path = parse_path(s).ok_or_else(invalid)?;
        // Reject every other spelling of the same tile.
        if path.to_string() != s {
            return Err(invalid());
        }
        Ok(path)
    }
}

fn parse_path(s: &str) -> Option<TilePath> {
    let rest = s.strip_prefix("tile/")?;
    let (kind, rest) = rest.split_once('/')?;
    let (index, width) = match rest.split_once(".p/") {
        Some((index, width)) => (index, parse_decimal(width)?),
        None => (rest, TILE_WIDTH),
    };
    let width = u16::try_from(width).ok()?;
    let index = parse_index(index)?;
    if kind == "entries" {
        return Tile::new(0, index, width).ok().map(TilePath::Entries);
    }
    let level = u8::try_from(parse_decimal(kind)?).ok()?;
    Tile::new(level, index, width).ok().map(TilePath::Hashes)
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_index(s: &str) -> Option<u64> {
    let mut groups = s.split('/').peekable();
    let mut index: u64 = 0;
    while let Some(group) = groups.next() {
        let digits = if groups.peek().is_some() {
            group.strip_prefix('x')?
        } else {
            group
        };
        if digits.len() != 3 {
            return None;
        }
        index = index
            .checked_mul(1000)?
            .checked_add(parse_decimal(digits)?)?;
    }
    Some(index)
}

/// How many hashes level `level` of a tree of `size` has (complete subtrees of 256^level).
fn level_count(size: u64, level: u8) -> u64 {
    size.checked_shr(u32::from(level) * TILE_HEIGHT)
        .unwrap_or(0)
}

/// Every tile a tree of `size` leaves has: the full ones and each level's partial one.
pub fn tiles_for_size(size: u64) -> Vec<Tile> {
    new_tiles(0, size)
}

/// The tiles that appear or grow when the tree goes from `old` to `new` leaves: what the
/// log writes after appending.
pub fn new_tiles(old: u64, new: u64) -> Vec<Tile> {
    let mut tiles = Vec::new();
    for level in 0..=MAX_TILE_LEVEL {
        let (old_count, new_count) = (level_count(old, level), level_count(new, level));
        if new_count == 0 {
            break;
        }
        for index in old_count / TILE_WIDTH..=(new_count - 1) / TILE_WIDTH {
            let start = index * TILE_WIDTH;
            let width = (new_count - start).min(TILE_WIDTH);
            if start + width > old_count {
                // Width is 1..=256 here, level at most 7.
                tiles.extend(Tile::new(level, index, width as u16));
            }
        }
    }
    tiles
}

/// The stored indexes of a tile's hashes, in order.
fn tile_indexes(tile: &Tile) -> Option<Vec<u64>> {
    let first = tile.first()?;
    let level = u32::from(tile.level) * TILE_HEIGHT;
    (0..u64::from(tile.width))
        .map(|i| stored_hash_index(level, first.checked_add(i)?))
        .collect()
}

/// A tile's bytes, from the log's stored hashes.
pub fn read_tile<R: HashReader + ?Sized>(
    tile: &Tile,
    reader: &R,
) -> Result<Vec<u8>, ProveError<R::Error>> {
    let indexes = tile_indexes(tile).ok_or(ProveError::TooLarge { size: tile.index })?;
    let hashes = reader.read_hashes(&indexes).map_err(ProveError::Read)?;
    if hashes.len() != indexes.len() {
        return Err(ProveError::ShortRead {
            asked: indexes.len(),
            got: hashes.len(),
        });
    }
    Ok(hashes.iter().flat_map(|h| *h.as_bytes()).collect())
}

/// The hashes in a tile's bytes.
pub fn tile_hashes(tile: &Tile, data: &[u8]) -> Result<Vec<Hash>, TileError> {
    if data.len() != tile.byte_len() {
        return Err(TileError::WrongSize {
            tile: tile.path(),
            expected: tile.byte_len(),
            got: data.len(),
        });
    }
    Ok(data
        .chunks_exact(HASH_SIZE)
        .filter_map(|chunk| chunk.try_into().ok().map(Hash::from_bytes))
        .collect())
}

/// An entry bundle: each entry as a big-endian u16 length and its bytes.
pub fn encode_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, TileError> {
    let mut bundle = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let entry = entry.as_ref();
        let len = u16::try_from(entry.len()).map_err(|_| TileError::EntryTooLarge {
            index,
            len: entry.len(),
        })?;
        bundle.extend_from_slice(&len.to_be_bytes());
        bundle.extend_from_slice(entry);
    }
    Ok(bundle)
}

/// The entries of the bundle beside level-0 tile `tile`: exactly its width of them.
pub fn decode_bundle<'a>(tile: &Tile, data: &'a [u8]) -> Result<Vec<&'a [u8]>, TileError> {
    let malformed = |reason| TileError::MalformedBundle {
        tile: tile.bundle_path(),
        reason,
    };
    let mut entries = Vec::new();
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(malformed("it ends inside an entry"));
        }
        let (entry, tail) = tail.split_at(len);
        entries.push(entry);
        rest = tail;
        if entries.len() > usize::from(tile.width) {
            return Err(malformed("it has more entries than its width"));
        }
    }
    if !rest.is_empty() {
        return Err(malformed("it ends inside a length"));
    }
    if entries.len() != usize::from(tile.width) {
        return Err(malformed("it has fewer entries than its width"));
    }
    Ok(entries)
}

/// Checks that a bundle's entries hash to the leaf hashes of the level-0 tile it stands
/// beside; returns the entries.
pub fn check_bundle<'a>(
    tile: &Tile,
    bundle: &'a [u8],
    leaf_hashes: &[Hash],
) -> Result<Vec<&'a [u8]>, TileError> {
    let entries = decode_bundle(tile, bundle)?;
    let first = tile.first().unwrap_or(u64::MAX);
    for (i, entry) in entries.iter().enumerate() {
        if leaf_hashes.get(i) != Some(&leaf_hash(entry)) {
            return Err(TileError::BundleMismatch {
                tile: tile.bundle_path(),
                index: first.saturating_add(i as u64),
            });
        }
    }
    Ok(entries)
}

/// The tiles of a tree of one size, as an auditor mirrored them: checked against a root,
/// then read as stored hashes to prove anything the tree contains.
#[derive(Clone, Debug)]
pub struct TileSet {
    size: u64,
    tiles: BTreeMap<(u8, u64), Vec<Hash>>,
}

impl TileSet {
    /// An empty set for a tree of `size` leaves.
    pub fn new(size: u64) -> Self {
        TileSet {
            size,
            tiles: BTreeMap::new(),
        }
    }

    /// The tree size the set describes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds a tile's bytes; the tile must be one the tree of this size has, at its width.
    pub fn insert(&mut self, tile: Tile, data: &[u8]) -> Result<(), TileError> {
        if self.expected_width(tile.level, tile.index) != Some(tile.width) {
            return Err(TileError::NotInTree {
                tile: tile.path(),
                size: self.size,
            });
        }
        let hashes = tile_hashes(&tile, data)?;
        self.tiles.insert((tile.level, tile.index), hashes);
        Ok(())
    }

    /// The hashes of a tile in the set (its leaf hashes, at level 0).
    pub fn hashes(&self, level: u8, index: u64) -> Option<&[Hash]> {
        self.tiles.get(&(level, index)).map(Vec::as_slice)
    }

    /// The width the tile at (level, index) has in this tree, if it has it.
    fn expected_width(&self, level: u8, index: u64) -> Option<u16> {
        let count = level_count(self.size, level);
        let start = index.checked_mul(TILE_WIDTH)?;
        let width = count.checked_sub(start)?.min(TILE_WIDTH);
        u16::try_from(width).ok().filter(|&w| w > 0)
    }

    /// Checks the whole set against a checkpoint's root: every tile present, every hash of
    /// an upper tile the root of the full tile below it, and the root they give equal to
    /// `expected`. After this, every hash read from the set is authenticated by the root.
    pub fn verify(&self, expected: Hash) -> Result<(), TileError> {
        for tile in tiles_for_size(self.size) {
            let hashes = self
                .hashes(tile.level, tile.index)
                .ok_or_else(|| TileError::Missing(tile.path()))?;
            if tile.level > 0 {
                self.check_against_below(&tile, hashes)?;
            }
        }
        let got = tree_hash(self.size, self).map_err(|_| TileError::Missing("(root)".into()))?;
        if got != expected {
            return Err(TileError::RootMismatch { expected, got });
        }
        Ok(())
    }

    fn check_against_below(&self, tile: &Tile, hashes: &[Hash]) -> Result<(), TileError> {
        let first = tile.first().unwrap_or(u64::MAX);
        for (position, hash) in (0u64..).zip(hashes) {
            let below_index = first.saturating_add(position);
            let below = self.hashes(tile.level - 1, below_index);
            if below.map(root) != Some(*hash) {
                return Err(TileError::Inconsistent {
                    tile: tile.path(),
                    position,
                });
            }
        }
        Ok(())
    }

    /// The stored hash at `index`, from the tile that holds it or the hashes below it.
    fn stored_hash(&self, index: u64) -> Option<Hash> {
        let (level, n) = split_stored_hash_index(index);
        let tile_level = u8::try_from(level / TILE_HEIGHT).ok()?;
        let within = level % TILE_HEIGHT;
        // The hash is the root of 2^within consecutive hashes of its tile's level.
        let first = n.checked_mul(1 << within)?;
        let hashes = self.hashes(tile_level, first / TILE_WIDTH)?;
        let offset = usize::try_from(first % TILE_WIDTH).ok()?;
        hashes.get(offset..offset + (1 << within)).map(root)
    }
}

impl HashReader for TileSet {
    type Error = TileError;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TileError> {
        indexes
            .iter()
            .map(|&index| {
                self.stored_hash(index)
                    .ok_or(TileError::HashNotInTiles(index))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::merkle::{prove_consistency, prove_inclusion, verify_inclusion};
    use crate::tlog::test_support::{stored_log, Rng};

    fn tile(level: u8, index: u64, width: u16) -> Tile {
        Tile::new(level, index, width).expect("in range")
    }

    fn entry(i: u64) -> Vec<u8> {
        format!("quorate/test/v1 entry {i}\n").into_bytes()
    }

    #[test]
    fn paths_are_written_and_read_as_the_spec_spells_them() {
        // The spec's example index, and Go's tlog_test.go paths without the height element.
        let cases = [
            (
                "tile/0/x001/x234/067",
                TilePath::Hashes(tile(0, 1234067, 256)),
            ),
            ("tile/0/001", TilePath::Hashes(tile(0, 1, 256))),
            ("tile/0/001.p/5", TilePath::Hashes(tile(0, 1, 5))),
            (
                "tile/5/x123/x456/078",
                TilePath::Hashes(tile(5, 123456078, 256)),
            ),
            (
                "tile/5/x123/x456/078.p/2",
                TilePath::Hashes(tile(5, 123456078, 2)),
            ),
            (
                "tile/entries/x003/x057/500",
                TilePath::Entries(tile(0, 3057500, 256)),
            ),
            ("tile/entries/000.p/112", TilePath::Entries(tile(0, 0, 112))),
            ("tile/63/000.p/1", TilePath::Hashes(tile(63, 0, 1))),
            (
                "tile/0/x018/x446/x744/x073/x709/x551/615",
                TilePath::Hashes(tile(0, u64::MAX, 256)),
            ),
        ];
        for (text, path) in cases {
            assert_eq!(path.to_string(), text);
            assert_eq!(text.parse(), Ok(path), "{text}");
        }
        assert_eq!(tile(1, 0, 17).path(), "tile/1/000.p/17");
        assert_eq!(tile(0, 273, 112).bundle_path(), "tile/entries/273.p/112");
    }

    #[test]
    fn non_canonical_or_malformed_paths_are_refused() {
        for bad in [
            "tile/5/123/456/078",
            "tile/-1/123",
            "tile/64/000",
            "tile/00/000",
            "tile/0/x000/001",
            "tile/0/1",
            "tile/0/0001",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/05",
            "tile/0/000.p/",
            "tile/0/000/",
            "tile/0/",
            "tile/entries/",
            "tile/data/000",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
            "tile/ 0/000",
            "tiles/0/000",
            "",
        ] {
            assert!(bad.parse::<TilePath>().is_err(), "{bad:?}");
        }
        assert!(Tile::new(0, 0, 0).is_err());
        assert!(Tile::new(0, 0, 257).is_err());
        assert!(Tile::new(64, 0, 1).is_err());
    }

    #[test]
    fn the_tiles_of_a_tree_are_those_the_spec_lists() {
        // The spec's example: 70,000 leaves.
        let tiles = tiles_for_size(70_000);
        assert_eq!(
            tiles.iter().filter(|t| t.level == 0 && t.is_full()).count(),
            273
        );
        let partial: Vec<String> = tiles
            .iter()
            .filter(|t| !t.is_full())
            .map(Tile::path)
            .collect();
        assert_eq!(
            partial,
            ["tile/0/273.p/112", "tile/1/001.p/17", "tile/2/000.p/1"]
        );
        assert!(tiles.contains(&tile(1, 0, 256)));
        assert_eq!(tiles.len(), 273 + 1 + 1 + 1 + 1);
        // "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
        // tile of width 1".
        assert_eq!(tiles_for_size(256), [tile(0, 0, 256), tile(1, 0, 1)]);
        assert_eq!(tiles_for_size(0), []);
        assert_eq!(tiles_for_size(1), [tile(0, 0, 1)]);
        // Growing a tree rewrites only the rightmost tiles.
        assert_eq!(new_tiles(100, 101), [tile(0, 0, 101)]);
        assert_eq!(
            new_tiles(255, 257),
            [tile(0, 0, 256), tile(0, 1, 1), tile(1, 0, 1)]
        );
        assert_eq!(new_tiles(300, 300), []);
        // The last tiles of the largest possible tree.
        let last = new_tiles(u64::MAX - 1, u64::MAX);
        assert_eq!(
            last.first().map(Tile::path).as_deref(),
            Some("tile/0/x072/x057/x594/x037/x927/935.p/255")
        );
        assert_eq!(last.len(), 1);
    }

    #[test]
    fn tiles_written_from_stored_hashes_give_back_the_tree() {
        let mut rng = Rng::new(6962);
        // Past 256 * 256 so level-1 tiles fill and level 2 appears.
        let total = 65_536 + 300;
        let stored = stored_log((0..total).map(entry));
        let mut sizes: Vec<u64> = (1..=300).collect();
        sizes.extend([511, 512, 513, 65_535, 65_536, 65_537, total]);
        for size in sizes {
            let set = mirror(&stored, size);
            let root = tree_hash(size, &stored).expect("stored");
            assert_eq!(set.verify(root), Ok(()), "size {size}");
            for _ in 0..3 {
                let index = rng.below(size);
                let proof = prove_inclusion(size, index, &set).expect("from tiles");
                assert_eq!(
                    proof,
                    prove_inclusion(size, index, &stored).expect("stored")
                );
                let leaf = leaf_hash(&entry(index));
                assert_eq!(verify_inclusion(&proof, size, index, leaf, root), Ok(()));
                let old = rng.below(size + 1);
                assert_eq!(
                    prove_consistency(old, size, &set).ok(),
                    prove_consistency(old, size, &stored).ok()
                );
                assert_eq!(tree_hash(old, &set).ok(), tree_hash(old, &stored).ok());
            }
        }
    }

    /// What an auditor would have after copying every tile of `size` from the log.
    fn mirror(stored: &[Hash], size: u64) -> TileSet {
        let mut set = TileSet::new(size);
        for tile in tiles_for_size(size) {
            let data = read_tile(&tile, stored).expect("stored");
            set.insert(tile, &data).expect("belongs");
        }
        set
    }

    #[test]
    fn a_tampered_missing_or_foreign_tile_is_caught() {
        let stored = stored_log((0..600).map(entry));
        let size = 600;
        let root = tree_hash(size, &stored).expect("stored");
        for target in tiles_for_size(size) {
            let mut set = mirror(&stored, size);
            let mut data = read_tile(&target, stored.as_slice()).expect("stored");
            data[usize::from(target.width()) * 32 - 1] ^= 1;
            set.insert(target, &data).expect("same shape");
            assert!(set.verify(root).is_err(), "{}", target.path());
        }
        let mut incomplete = TileSet::new(size);
        let first = tile(0, 0, 256);
        incomplete
            .insert(
                first,
                &read_tile(&first, stored.as_slice()).expect("stored"),
            )
            .expect("belongs");
        assert!(matches!(
            incomplete.verify(root),
            Err(TileError::Missing(_))
        ));
        let set = mirror(&stored, size);
        assert!(matches!(
            set.verify(tree_hash(599, &stored).expect("stored")),
            Err(TileError::RootMismatch { .. })
        ));
        let mut set = TileSet::new(size);
        assert!(matches!(
            set.insert(tile(0, 2, 256), &[0; 8192]),
            Err(TileError::NotInTree { .. })
        ));
        assert!(matches!(
            set.insert(tile(0, 2, 88), &[0; 100]),
            Err(TileError::WrongSize { .. })
        ));
        assert_eq!(set.read_hashes(&[0]), Err(TileError::HashNotInTiles(0)));
    }

    #[test]
    fn entry_bundles_round_trip_and_match_their_level_0_tile() {
        let entries: Vec<Vec<u8>> = (0..300).map(entry).collect();
        let stored = stored_log(entries.iter().cloned());
        let set = mirror(&stored, 300);
        for tile in tiles_for_size(300).into_iter().filter(|t| t.level() == 0) {
            let first = tile.index() as usize * 256;
            let mine = &entries[first..first + usize::from(tile.width())];
            let bundle = encode_bundle(mine).expect("small entries");
            let leaves = set.hashes(0, tile.index()).expect("mirrored");
            let decoded = check_bundle(&tile, &bundle, leaves).expect("matches");
            assert_eq!(decoded, mine.iter().map(Vec::as_slice).collect::<Vec<_>>());
            let mut wrong = mine.to_vec();
            wrong[1].push(b'!');
            let bundle = encode_bundle(&wrong).expect("small entries");
            assert!(matches!(
                check_bundle(&tile, &bundle, leaves),
                Err(TileError::BundleMismatch { index, .. }) if index == first as u64 + 1
            ));
        }
    }

    #[test]
    fn malformed_bundles_are_refused_without_panicking() {
        assert_eq!(
            encode_bundle(&[vec![0u8; MAX_ENTRY_BYTES + 1]]),
            Err(TileError::EntryTooLarge {
                index: 0,
                len: 65536
            })
        );
        assert_eq!(
            encode_bundle(&[vec![7u8; MAX_ENTRY_BYTES]]).map(|b| b.len()),
            Ok(65537)
        );
        let entries = [b"a".to_vec(), b"".to_vec(), b"ccc".to_vec()];
        let bundle = encode_bundle(&entries).expect("small");
        assert_eq!(bundle, b"\x00\x01a\x00\x00\x00\x03ccc");
        let three = tile(0, 0, 3);
        assert_eq!(decode_bundle(&three, &bundle).map(|e| e.len()), Ok(3));
        for end in 0..bundle.len() {
            assert!(decode_bundle(&three, &bundle[..end]).is_err(), "{end}");
        }
        assert!(decode_bundle(&tile(0, 0, 2), &bundle).is_err());
        assert!(decode_bundle(&tile(0, 0, 4), &bundle).is_err());
        let mut longer = bundle.clone();
        longer.push(0);
        assert!(decode_bundle(&three, &longer).is_err());
    }
}
