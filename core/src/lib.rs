//! quorate's pure layers: everything that can be decided from bytes alone.
//!
//! Bottom to top:
//! - [`limits`]: the caps on what is read from upstreams.
//! - [`protocol`]: wire formats of both flavors (nix32, store paths, NAR hashes, Nix and Guix
//!   narinfos, keys and signatures, canonical s-expressions).
//! - [`builder`]: the independent parties whose keys count.
//! - [`attestation`]: the domain types every layer above shares (what a builder vouched
//!   for, what a decision rests on).
//! - [`quorum`]: the rule that turns attestations into a decision (DESIGN §3).
//! - [`push`]: narinfos pushed by builders that host no cache: how a body splits, which are
//!   accepted (DESIGN §13).
//! - [`flavor`]: the Nix and Guix front ends (narinfo → attestations, agreement → quorate's
//!   signed narinfo), behind one trait.
//! - [`tlog`]: the transparency log's Merkle trees, tiles, signed notes and checkpoints
//!   (DESIGN §12).
//!
//! Architecture invariant: this crate does no I/O. It has no async runtime, database or HTTP
//! client in its dependency tree (`cargo tree -p quorate-core` shows it), reads no clock and
//! no file; randomness is used only to generate fresh keys. The service crate (`quorate`)
//! builds on it; nothing here knows the service exists.

pub mod attestation;
pub mod builder;
pub mod flavor;
pub mod limits;
pub mod protocol;
pub mod push;
pub mod quorum;
pub mod tlog;
