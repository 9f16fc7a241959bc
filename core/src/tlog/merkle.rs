//! RFC 9162 Merkle trees: hashes, roots, inclusion and consistency proofs.
//!
//! ```text
//! leaf hash   SHA-256(0x00 || entry)         leaf_hash(b"hello world")
//!                                            = TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=
//! node hash   SHA-256(0x01 || left || right)
//! empty tree  SHA-256("")                    = 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=
//! ```
//!
//! A [`struct@Hash`] is written in standard padded base64, as checkpoints, tiles' neighbours and
//! tlog proofs write it.
//!
//! The log does not keep its tree in memory. It keeps every *stored hash*: each leaf hash and
//! each complete subtree's hash, numbered in the order they come into existence as leaves are
//! appended (Go's `golang.org/x/mod/sumdb/tlog` numbering, so a database laid out like sumdb's
//! works unchanged):
//!
//! ```text
//! leaves appended   0   1       2   3           4 ...
//! stored index      0   1 2     3   4 5 6       7 ...
//! what              L0  L1 N01  L2  L3 N23 N0-3 L4
//! ```
//!
//! Appending leaf `i` stores [`hashes_to_store`] at [`stored_hash_count`]`(i)`; roots and
//! proofs for any size are then computed from a [`HashReader`] with one read each
//! ([`tree_hash`], [`prove_inclusion`], [`prove_consistency`]). Verification
//! ([`verify_inclusion`], [`verify_consistency`]) needs only the proof, as in RFC 9162
//! §2.1.3.2 and §2.1.4.2.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Bytes in a [`struct@Hash`].
pub const HASH_SIZE: usize = 32;

/// A SHA-256 in a Merkle tree: a leaf hash, a node hash or a root. Canonical form: base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash([u8; HASH_SIZE]);

/// Why a string is not a [`struct@Hash`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HashError {
    /// Not standard padded base64.
    #[error("hash {0:?} is not standard padded base64")]
    InvalidBase64(String),
    /// Decodes to something other than 32 bytes.
    #[error("hash {value:?} is {got} bytes, expected 32")]
    WrongLength {
        /// The hash as given.
        value: String,
        /// Bytes decoded.
        got: usize,
    },
}

impl Hash {
    /// Wraps 32 digest bytes.
    pub const fn from_bytes(bytes: [u8; HASH_SIZE]) -> Self {
        Hash(bytes)
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_SIZE] {
        &self.0
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl FromStr for Hash {
    type Err = HashError;

    /// Exactly the base64 of 32 bytes (44 characters with one `=`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = BASE64
            .decode(s)
            .map_err(|_| HashError::InvalidBase64(s.to_owned()))?;
        let got = bytes.len();
        bytes
            .try_into()
            .map(Hash)
            .map_err(|_| HashError::WrongLength {
                value: s.to_owned(),
                got,
            })
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The hash of a log entry: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    Hash(
        Sha256::new()
            .chain_update([0])
            .chain_update(entry)
            .finalize()
            .into(),
    )
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash(
        Sha256::new()
            .chain_update([1])
            .chain_update(left.0)
            .chain_update(right.0)
            .finalize()
            .into(),
    )
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// The root (RFC 9162 MTH) of a tree whose leaf hashes are all in memory.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let (left, right) = leaves.split_at(split_point(leaves.len() as u64) as usize);
            node_hash(&root(left), &root(right))
        }
    }
}

/// The largest power of two strictly below `n` (n >= 2): where RFC 9162 splits a tree.
fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The largest power of two at most `n` (n >= 1).
fn largest_power_at_most(n: u64) -> u64 {
    1 << (63 - n.leading_zeros())
}

// ---------------------------------------------------------------------------------------------
// Stored hashes

/// The stored index of the hash at `level` (0 = leaves) and position `n` in that level, or
/// `None` if it does not fit in a u64 (no real log gets near).
pub fn stored_hash_index(level: u32, n: u64) -> Option<u64> {
    if level > 63 {
        return None;
    }
    // That hash is stored right after the last leaf it covers, `level` places after it.
    let last_leaf = ((u128::from(n) + 1) << level) - 1;
    u64::try_from(leaf_stored_index(last_leaf) + u128::from(level)).ok()
}

/// Where leaf `n` is stored: after n leaves and the n - popcount(n) nodes they completed.
fn leaf_stored_index(n: u128) -> u128 {
    2 * n - u128::from(n.count_ones())
}

/// The inverse of [`stored_hash_index`]: the (level, n) a stored index holds.
pub fn split_stored_hash_index(index: u64) -> (u32, u64) {
    let index = u128::from(index);
    // Leaf m is stored at 2m - popcount(m), within 64 below 2m: the last leaf stored at or
    // before `index` is at most index/2 + 32. Start there and step down.
    let mut leaf = index / 2 + 33;
    while leaf_stored_index(leaf) > index {
        leaf -= 1;
    }
    // At most 64, since u64 indexes have at most 64 trailing ones below them.
    let level = (index - leaf_stored_index(leaf)) as u32;
    let n = ((leaf + 1) >> level) - 1;
    (level, n as u64)
}

/// How many hashes a tree of `size` leaves has stored, or `None` past u64.
pub fn stored_hash_count(size: u64) -> Option<u64> {
    u64::try_from(leaf_stored_index(u128::from(size))).ok()
}

/// A source of stored hashes: the log's database, or a set of verified tiles.
pub trait HashReader {
    /// Why a read failed.
    type Error;

    /// The hashes at these stored indexes, in the order asked. The indexes are those of
    /// hashes the tree at the size being proved has already stored.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Self::Error>;
}

/// A stored index beyond what an in-memory list of stored hashes holds.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("stored hash {index} is not in a list of {len} stored hashes")]
pub struct MissingHash {
    /// The index asked for.
    pub index: u64,
    /// How many hashes the list has.
    pub len: usize,
}

impl HashReader for [Hash] {
    type Error = MissingHash;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        indexes
            .iter()
            .map(|&index| {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| self.get(i))
                    .copied()
                    .ok_or(MissingHash {
                        index,
                        len: self.len(),
                    })
            })
            .collect()
    }
}

impl HashReader for Vec<Hash> {
    type Error = MissingHash;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        self.as_slice().read_hashes(indexes)
    }
}

/// Why a root or proof could not be computed from stored hashes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProveError<E> {
    /// The leaf is not in the tree.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf asked for.
        index: u64,
        /// The tree's size.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("tree size {old} is larger than tree size {new}")]
    SizesOutOfOrder {
        /// The size proved from.
        old: u64,
        /// The size proved to.
        new: u64,
    },
    /// A size whose stored hashes cannot be numbered in a u64.
    #[error("tree size {size} is too large to number its stored hashes")]
    TooLarge {
        /// The size asked for.
        size: u64,
    },
    /// The hash reader failed.
    #[error("reading stored hashes failed: {0}")]
    Read(E),
    /// The hash reader answered with the wrong number of hashes.
    #[error("the hash reader returned {got} hashes for {asked} indexes")]
    ShortRead {
        /// Indexes asked for.
        asked: usize,
        /// Hashes returned.
        got: usize,
    },
}

/// The hashes to store when appending the leaf at `index` (the tree grows from `index` to
/// `index + 1` leaves): the leaf hash, then the hash of every subtree it completes, in
/// stored order. They go at stored indexes from [`stored_hash_count`]`(index)` on.
pub fn hashes_to_store<R: HashReader + ?Sized>(
    index: u64,
    leaf: Hash,
    reader: &R,
) -> Result<Vec<Hash>, ProveError<R::Error>> {
    // Each trailing 1 bit of `index` is a left sibling waiting at that level.
    let completed = index.trailing_ones();
    let siblings = (0..completed)
        .rev()
        .map(|level| stored_hash_index(level, (index >> level) - 1))
        .collect::<Option<Vec<u64>>>()
        .ok_or(ProveError::TooLarge { size: index })?;
    let siblings = read_exactly(reader, &siblings)?;
    let mut hashes = vec![leaf];
    let mut hash = leaf;
    // Read deepest-last (increasing stored order); combine from the leaf up.
    for sibling in siblings.iter().rev() {
        hash = node_hash(sibling, &hash);
        hashes.push(hash);
    }
    Ok(hashes)
}

/// The root of the tree of `size` leaves, from its stored hashes.
pub fn tree_hash<R: HashReader + ?Sized>(
    size: u64,
    reader: &R,
) -> Result<Hash, ProveError<R::Error>> {
    if size == 0 {
        return Ok(empty_root());
    }
    let whole = 0..size;
    let mut roots = range_hashes(std::slice::from_ref(&whole), reader)?;
    roots
        .pop()
        .ok_or(ProveError::ShortRead { asked: 1, got: 0 })
}

/// The inclusion proof (RFC 9162 §2.1.3.1) of leaf `index` in the tree of `size` leaves.
pub fn prove_inclusion<R: HashReader + ?Sized>(
    size: u64,
    index: u64,
    reader: &R,
) -> Result<Vec<Hash>, ProveError<R::Error>> {
    if index >= size {
        return Err(ProveError::IndexOutOfRange { index, size });
    }
    range_hashes(&inclusion_ranges(index, size), reader)
}

/// The consistency proof (RFC 9162 §2.1.4.1) that the tree of `old` leaves is a prefix of
/// the tree of `new` leaves. Empty when `old` is 0 or equals `new`.
pub fn prove_consistency<R: HashReader + ?Sized>(
    old: u64,
    new: u64,
    reader: &R,
) -> Result<Vec<Hash>, ProveError<R::Error>> {
    if old > new {
        return Err(ProveError::SizesOutOfOrder { old, new });
    }
    range_hashes(&consistency_ranges(old, new), reader)
}

/// The leaf ranges whose subtree hashes form leaf `index`'s inclusion proof in a tree of
/// `size` leaves, leaf's sibling first (RFC 9162 PATH, unrolled).
fn inclusion_ranges(index: u64, size: u64) -> Vec<Range<u64>> {
    let (mut lo, mut hi) = (0, size);
    let mut ranges = Vec::new();
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if index < mid {
            ranges.push(mid..hi);
            hi = mid;
        } else {
            ranges.push(lo..mid);
            lo = mid;
        }
    }
    ranges.reverse();
    ranges
}

/// The leaf ranges whose subtree hashes form the consistency proof from `old` to `new`
/// leaves, deepest first (RFC 9162 SUBPROOF, unrolled).
fn consistency_ranges(old: u64, new: u64) -> Vec<Range<u64>> {
    let mut ranges = Vec::new();
    if old == 0 || old >= new {
        return ranges;
    }
    let (mut lo, mut hi) = (0, new);
    // Whether the subtree [lo, hi) is still a left edge whose hash the verifier knows.
    let mut known = true;
    while old != hi {
        let mid = lo + split_point(hi - lo);
        if old <= mid {
            ranges.push(mid..hi);
            hi = mid;
        } else {
            ranges.push(lo..mid);
            lo = mid;
            known = false;
        }
    }
    if !known {
        ranges.push(lo..hi);
    }
    ranges.reverse();
    ranges
}

/// The stored indexes of the complete subtrees that make up `range`, left to right. The
/// range starts at a multiple of a power of two at least its length, as every range of a
/// proof does, so the subtrees shrink left to right.
fn subtree_indexes(range: &Range<u64>, out: &mut Vec<u64>) -> Option<()> {
    let mut lo = range.start;
    while lo < range.end {
        let width = largest_power_at_most(range.end - lo);
        let level = width.trailing_zeros();
        out.push(stored_hash_index(level, lo >> level)?);
        lo += width;
    }
    Some(())
}

/// The hash of each range, from one read of all the subtree hashes they need.
fn range_hashes<R: HashReader + ?Sized>(
    ranges: &[Range<u64>],
    reader: &R,
) -> Result<Vec<Hash>, ProveError<R::Error>> {
    let mut indexes = Vec::new();
    let mut counts = Vec::with_capacity(ranges.len());
    for range in ranges {
        let before = indexes.len();
        subtree_indexes(range, &mut indexes).ok_or(ProveError::TooLarge { size: range.end })?;
        counts.push(indexes.len() - before);
    }
    let hashes = read_exactly(reader, &indexes)?;
    let mut rest = hashes.as_slice();
    let mut out = Vec::with_capacity(ranges.len());
    for count in counts {
        let (subtrees, tail) = rest.split_at(count.min(rest.len()));
        out.push(fold_subtrees(subtrees));
        rest = tail;
    }
    Ok(out)
}

/// MTH of a range from its complete subtrees, largest first: each is the left child of the
/// rest.
fn fold_subtrees(subtrees: &[Hash]) -> Hash {
    let mut iter = subtrees.iter().rev();
    let Some(last) = iter.next() else {
        return empty_root();
    };
    iter.fold(*last, |right, left| node_hash(left, &right))
}

fn read_exactly<R: HashReader + ?Sized>(
    reader: &R,
    indexes: &[u64],
) -> Result<Vec<Hash>, ProveError<R::Error>> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = reader.read_hashes(indexes).map_err(ProveError::Read)?;
    if hashes.len() != indexes.len() {
        return Err(ProveError::ShortRead {
            asked: indexes.len(),
            got: hashes.len(),
        });
    }
    Ok(hashes)
}

// ---------------------------------------------------------------------------------------------
// Verification

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// The leaf index is not in the tree.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf's claimed index.
        index: u64,
        /// The tree's size.
        size: u64,
    },
    /// The old tree is larger than the new one.
    #[error("tree size {old} is larger than tree size {new}")]
    SizesOutOfOrder {
        /// The size proved from.
        old: u64,
        /// The size proved to.
        new: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("the proof has {got} hashes, a proof for these sizes has {expected}")]
    WrongLength {
        /// Hashes a proof for these sizes has.
        expected: usize,
        /// Hashes this one has.
        got: usize,
    },
    /// The proof leads to another old root: the old tree is not what was claimed.
    #[error("the proof does not reproduce the old root")]
    OldRootMismatch,
    /// The proof leads to another root: the entry is not in this tree, or the trees differ.
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
}

/// Checks that `leaf` is the leaf at `index` in the tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    proof: &[Hash],
    size: u64,
    index: u64,
    leaf: Hash,
    root: Hash,
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    check_length(inclusion_ranges(index, size).len(), proof)?;
    let (mut f, mut s) = (index, size - 1);
    let mut hash = leaf;
    for sibling in proof {
        if f & 1 == 1 || f == s {
            hash = node_hash(sibling, &hash);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 || hash != root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `old` leaves with `old_root` is a prefix of the tree of `new`
/// leaves with `new_root` (RFC 9162 §2.1.4.2). The empty tree is a prefix of every tree.
pub fn verify_consistency(
    proof: &[Hash],
    old: u64,
    old_root: Hash,
    new: u64,
    new_root: Hash,
) -> Result<(), VerifyError> {
    if old > new {
        return Err(VerifyError::SizesOutOfOrder { old, new });
    }
    check_length(consistency_ranges(old, new).len(), proof)?;
    if old == 0 {
        return (old_root == empty_root())
            .then_some(())
            .ok_or(VerifyError::OldRootMismatch);
    }
    if old == new {
        return (old_root == new_root)
            .then_some(())
            .ok_or(VerifyError::RootMismatch);
    }
    let (old_hash, new_hash) = consistency_roots(proof, old, old_root, new)?;
    if old_hash != old_root {
        return Err(VerifyError::OldRootMismatch);
    }
    if new_hash != new_root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// The (old, new) roots a consistency proof for 0 < old < new leads to.
fn consistency_roots(
    proof: &[Hash],
    old: u64,
    old_root: Hash,
    new: u64,
) -> Result<(Hash, Hash), VerifyError> {
    // When the old tree is a complete subtree the proof omits its root, which we know.
    let first = if old.is_power_of_two() {
        Some(&old_root)
    } else {
        None
    };
    let mut path = first.into_iter().chain(proof);
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let start = *path.next().ok_or(VerifyError::WrongLength {
        expected: 1,
        got: 0,
    })?;
    let (mut old_hash, mut new_hash) = (start, start);
    for sibling in path {
        if s == 0 {
            return Err(VerifyError::RootMismatch);
        }
        if f & 1 == 1 || f == s {
            old_hash = node_hash(sibling, &old_hash);
            new_hash = node_hash(sibling, &new_hash);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            new_hash = node_hash(&new_hash, sibling);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(VerifyError::RootMismatch);
    }
    Ok((old_hash, new_hash))
}

fn check_length(expected: usize, proof: &[Hash]) -> Result<(), VerifyError> {
    if proof.len() != expected {
        return Err(VerifyError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::test_support::{stored_log, Rng};

    fn hex(s: &str) -> Hash {
        let bytes: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect();
        Hash(bytes.try_into().expect("32 bytes"))
    }

    /// RFC 6962's test leaves, as in transparency-dev/merkle `testonly/constants.go`.
    const RFC6962_LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];

    /// Roots of the first 0..=8 of those leaves (transparency-dev/merkle `RootHashes()`).
    const RFC6962_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn rfc6962_log() -> Vec<Hash> {
        stored_log(RFC6962_LEAVES.iter().map(|leaf| leaf.to_vec()))
    }

    #[test]
    fn the_leaf_hash_of_hello_world_is_gos() {
        // golang.org/x/mod sumdb/tlog/note_test.go: RecordHash([]byte("hello world")).
        assert_eq!(
            leaf_hash(b"hello world").to_string(),
            "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0="
        );
        assert_eq!(
            empty_root().to_string(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn roots_of_the_rfc6962_test_leaves_match_the_published_ones() {
        let leaves: Vec<Hash> = RFC6962_LEAVES.iter().map(|e| leaf_hash(e)).collect();
        let stored = rfc6962_log();
        for (size, expected) in RFC6962_ROOTS.iter().enumerate() {
            assert_eq!(root(&leaves[..size]), hex(expected), "size {size}");
            assert_eq!(tree_hash(size as u64, &stored), Ok(hex(expected)));
        }
    }

    #[test]
    fn proofs_for_the_rfc6962_test_leaves_match_the_published_ones() {
        // transparency-dev/merkle cmd/proofgen/main.go (leaf numbers there start at 1).
        let inclusion: [(u64, u64, &[&str]); 5] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        let stored = rfc6962_log();
        for (index, size, expected) in inclusion {
            let expected: Vec<Hash> = expected.iter().map(|h| hex(h)).collect();
            assert_eq!(prove_inclusion(size, index, &stored), Ok(expected.clone()));
            let leaf = leaf_hash(RFC6962_LEAVES[index as usize]);
            let root = hex(RFC6962_ROOTS[size as usize]);
            assert_eq!(verify_inclusion(&expected, size, index, leaf, root), Ok(()));
        }
        let consistency: [(u64, u64, &[&str]); 5] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                7,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (old, new, expected) in consistency {
            let expected: Vec<Hash> = expected.iter().map(|h| hex(h)).collect();
            assert_eq!(prove_consistency(old, new, &stored), Ok(expected.clone()));
            let (old_root, new_root) = (RFC6962_ROOTS[old as usize], RFC6962_ROOTS[new as usize]);
            assert_eq!(
                verify_consistency(&expected, old, hex(old_root), new, hex(new_root)),
                Ok(())
            );
        }
    }

    #[test]
    fn stored_hash_indexes_follow_gos_numbering_and_split_back() {
        // The layout in the module doc, and Go's TestSplitStoredHashIndex round trip.
        let expected = [
            (0, 0, 0),
            (0, 1, 1),
            (1, 0, 2),
            (0, 2, 3),
            (0, 3, 4),
            (1, 1, 5),
        ];
        for (level, n, index) in expected {
            assert_eq!(stored_hash_index(level, n), Some(index));
        }
        assert_eq!(stored_hash_index(2, 0), Some(6));
        for level in 0..10 {
            for n in 0..100 {
                let index = stored_hash_index(level, n).expect("small");
                assert_eq!(split_stored_hash_index(index), (level, n));
            }
        }
        for size in [0, 1, 2, 3, 4, 5, 8, 1000] {
            let count = stored_hash_count(size).expect("small");
            assert_eq!(
                count as usize,
                stored_log((0..size).map(|i| i.to_be_bytes().to_vec())).len()
            );
        }
        assert_eq!(stored_hash_index(64, 0), None);
        assert_eq!(stored_hash_index(1, u64::MAX), None);
        assert!(split_stored_hash_index(u64::MAX).0 <= 64);
    }

    #[test]
    fn generated_proofs_verify_and_altered_ones_fail_for_every_size_up_to_300() {
        let mut rng = Rng::new(9162);
        let stored = stored_log((0..300u64).map(|i| format!("entry {i}").into_bytes()));
        let roots: Vec<Hash> = (0..=300)
            .map(|n| tree_hash(n, &stored).expect("stored"))
            .collect();
        let mut leaves = Vec::new();
        for i in 0..300u64 {
            leaves.push(leaf_hash(format!("entry {i}").as_bytes()));
        }
        for size in 1..=300u64 {
            assert_eq!(roots[size as usize], root(&leaves[..size as usize]));
            for _ in 0..4 {
                let index = rng.below(size);
                check_inclusion(&stored, &roots, size, index, leaves[index as usize]);
                let old = rng.below(size + 1);
                check_consistency(&stored, &roots, old, size);
            }
        }
    }

    fn check_inclusion(stored: &[Hash], roots: &[Hash], size: u64, index: u64, leaf: Hash) {
        let root = roots[size as usize];
        let mut proof = prove_inclusion(size, index, stored).expect("in tree");
        assert_eq!(verify_inclusion(&proof, size, index, leaf, root), Ok(()));
        for k in 0..proof.len() {
            proof[k].0[k % 32] ^= 1;
            assert!(verify_inclusion(&proof, size, index, leaf, root).is_err());
            proof[k].0[k % 32] ^= 1;
        }
        let wrong_leaf = node_hash(&leaf, &leaf);
        assert!(verify_inclusion(&proof, size, index, wrong_leaf, root).is_err());
        // A wrong index or size, each with the real root of that size, fails.
        for (other_index, other_size) in [(index ^ 1, size), (index, size + 1), (index, size * 2)] {
            let Some(&other_root) = roots.get(other_size as usize) else {
                continue;
            };
            if other_index < other_size && (other_index, other_size) != (index, size) {
                assert!(
                    verify_inclusion(&proof, other_size, other_index, leaf, other_root).is_err(),
                    "index {index}->{other_index}, size {size}->{other_size}"
                );
            }
        }
    }

    fn check_consistency(stored: &[Hash], roots: &[Hash], old: u64, new: u64) {
        let (old_root, new_root) = (roots[old as usize], roots[new as usize]);
        let mut proof = prove_consistency(old, new, stored).expect("ordered");
        assert_eq!(
            verify_consistency(&proof, old, old_root, new, new_root),
            Ok(())
        );
        for k in 0..proof.len() {
            proof[k].0[31 - k % 32] ^= 0x80;
            assert!(verify_consistency(&proof, old, old_root, new, new_root).is_err());
            proof[k].0[31 - k % 32] ^= 0x80;
        }
        if old > 0 && old < new {
            let other_old = roots[old as usize - 1];
            assert!(verify_consistency(&proof, old - 1, other_old, new, new_root).is_err());
            assert!(verify_consistency(&proof, old, old_root, new, roots[0]).is_err());
            let mut longer = proof.clone();
            longer.push(old_root);
            assert!(verify_consistency(&longer, old, old_root, new, new_root).is_err());
        }
        if let Some(&bigger_root) = roots.get(new as usize + 1) {
            if 0 < old && old < new {
                assert!(
                    verify_consistency(&proof, old, old_root, new + 1, bigger_root).is_err(),
                    "{old} -> {new} + 1"
                );
            }
        }
    }

    #[test]
    fn proofs_outside_the_tree_are_refused_not_panics() {
        let stored = rfc6962_log();
        assert_eq!(
            prove_inclusion(8, 8, &stored),
            Err(ProveError::IndexOutOfRange { index: 8, size: 8 })
        );
        assert_eq!(
            prove_consistency(5, 4, &stored),
            Err(ProveError::SizesOutOfOrder { old: 5, new: 4 })
        );
        assert!(matches!(
            prove_inclusion(10, 0, &stored),
            Err(ProveError::Read(MissingHash { .. }))
        ));
        assert!(matches!(
            tree_hash(u64::MAX, &stored),
            Err(ProveError::TooLarge { .. })
        ));
        let root = hex(RFC6962_ROOTS[8]);
        let leaf = leaf_hash(b"");
        for (size, index) in [(0, 0), (8, 8), (u64::MAX, u64::MAX - 1), (u64::MAX, 0)] {
            assert!(verify_inclusion(&[], size, index, leaf, root).is_err());
        }
        assert!(verify_consistency(&[root; 70], u64::MAX - 1, root, u64::MAX, root).is_err());
        assert_eq!(
            verify_consistency(&[], 3, root, 2, root),
            Err(VerifyError::SizesOutOfOrder { old: 3, new: 2 })
        );
        // The empty tree is a prefix of everything, but only with its real root.
        assert_eq!(verify_consistency(&[], 0, empty_root(), 8, root), Ok(()));
        assert_eq!(
            verify_consistency(&[], 0, root, 8, root),
            Err(VerifyError::OldRootMismatch)
        );
    }

    #[test]
    fn hashes_parse_only_from_their_base64_form() {
        let hash = leaf_hash(b"hello world");
        assert_eq!(hash.to_string().parse::<Hash>(), Ok(hash));
        assert!(matches!(
            "AAAA".parse::<Hash>(),
            Err(HashError::WrongLength { got: 3, .. })
        ));
        assert!(matches!(
            "!!".parse::<Hash>(),
            Err(HashError::InvalidBase64(_))
        ));
        let json = serde_json::to_string(&hash).expect("serializes");
        assert_eq!(serde_json::from_str::<Hash>(&json).expect("parses"), hash);
    }
}
