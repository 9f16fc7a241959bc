//! Pure wire formats, no I/O: nix32, store paths, NAR hashes, narinfos, keys and signatures
//! for both flavors. Everything here is deterministic and unit-tested against real vectors
//! (`core/tests/vectors/`).
//!
//! - Shared: [`nix32`], [`store_path`] (and `HashPart`), [`nar_hash`] (`NarHash`, `NarKey`),
//!   [`content`] (what a signature vouches for), [`signature`] (one verdict shape).
//! - Nix: [`narinfo`], [`nix_key`].
//! - Guix: [`sexp`], [`guix_key`], [`guix_narinfo`].

pub mod compression;
pub mod content;
pub mod nar_hash;
pub mod nix32;
pub mod signature;
pub mod store_path;

pub mod narinfo;
pub mod nix_key;

pub mod guix_key;
pub mod guix_narinfo;
pub mod sexp;
