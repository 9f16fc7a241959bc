//! Pure wire formats, no I/O: nix32, store paths, narinfos, keys and signatures for both
//! flavors. Everything here is deterministic and unit-tested against real vectors
//! (`tests/vectors/`).

pub mod narinfo;
pub mod nix32;
pub mod nix_key;
pub mod store_path;

pub mod guix_key;
pub mod guix_narinfo;
pub mod sexp;
