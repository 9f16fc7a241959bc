//! The transparency log's pure layer (DESIGN §12): RFC 9162 Merkle trees and the C2SP
//! formats the transparency ecosystem shares (Go sumdb, Sigstore Rekor v2, CT static logs).
//!
//! - [`merkle`]: hashes, roots, inclusion and consistency proofs over stored hashes.
//! - [`note`]: C2SP signed notes and their Ed25519 keys (vkeys).
//! - [`tile`]: C2SP tiles and entry bundles: writing them, and checking a mirrored set.
//! - [`checkpoint`]: C2SP checkpoints (signed tree heads) and witness cosignatures.
//! - [`proof`]: C2SP tlog proofs: an entry's inclusion under a signed checkpoint, as text.
//! - [`entry`]: quorate's entries (`quorate/attestation/v1`, `decision/v1`, `policy/v1`).
//! - [`replay`]: entries read back: signatures checked again, decisions decided again.
//!
//! No I/O: the service keeps the stored hashes in its database and hands them in through
//! [`merkle::HashReader`]; an auditor hands in tiles it mirrored.

pub mod checkpoint;
pub mod entry;
pub mod merkle;
pub mod note;
pub mod proof;
pub mod replay;
pub mod tile;

#[cfg(test)]
mod test_support;
