//! NAR path: streaming decompression, hashing, verification and the content-addressed store
//! (DESIGN §5). Independent of HTTP and of the database: callers pick the upstream, open
//! its byte stream, record events, and serve the body this module hands back.
//!
//! How one cold NAR flows:
//!
//! ```text
//! upstream ─bounded channel─▶ decoder ─▶ SHA-256, count ─▶ writer ─▶ root/tmp/<key>.<n>.tmp
//! (tokio task)                (blocking thread: ≤ NarSize + 1 bytes)  (thread)    │
//!                                                                     tailed by every client
//! hash and size match ─▶ fsync, rename to root/nar/<key[..2]>/<key>.nar          body (pread)
//! otherwise           ─▶ delete the temp file; every body ends in an error
//! ```
//!
//! The invariant that makes streaming before verification safe: a body never yields the
//! NAR's last byte until its hash has been verified, so a client either receives the
//! verified NAR or a transfer that fails; never a complete wrong file.
//!
//! - [`Compression`]: the narinfo `Compression` names and a streaming decoder for each.
//! - [`NarStore`]: the size-bounded, least-recently-used, content-addressed directory.
//! - [`NarFetcher`]: single-flight verified fetches into the store, trying the sources the
//!   caller ranked in turn ([`FetchSource`]); [`Inflight`] is one running (or finished)
//!   fetch, shared by every client asking for the same NAR.

mod compression;
mod encode;
mod fetch;
mod objects;
pub mod read;
mod storage;
mod store;

#[cfg(test)]
mod test_nar;

use std::sync::Arc;

use quorate_core::protocol::nar_hash::NarHash;

pub use compression::{decode_bytes_per_sec, Compression, Decode};
pub use encode::{compress_stored_blocking, zstd_encode};
#[doc(hidden)]
pub use fetch::check_decoded;
pub use fetch::{Expected, FailedAttempt, Fetch, FetchReport, FetchSource, Inflight, NarFetcher};
pub use objects::{ObjectError, ObjectNars};
pub use storage::{ByteRange, NarRead, NarStorage, Opened};
pub use store::{CompressionClaim, NarStore};

/// Why a NAR could not be fetched, verified or stored. Clone, so that every client of one
/// shared fetch gets the same answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NarError {
    /// The decompressed bytes hash to something other than the agreed NarHash.
    #[error("NAR hash mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The agreed NarHash.
        expected: NarHash,
        /// The hash of the bytes the upstream sent.
        actual: NarHash,
    },
    /// The NAR ended before its advertised NarSize.
    #[error("NAR is {actual} bytes, but its NarSize is {expected}")]
    SizeMismatch {
        /// The agreed NarSize.
        expected: u64,
        /// How many bytes the decompressed stream held.
        actual: u64,
    },
    /// The decompressed stream went on past its NarSize (a lying size or a decompression
    /// bomb); reading stopped at the first excess byte.
    #[error("NAR is larger than its NarSize of {expected} bytes")]
    TooLarge {
        /// The agreed NarSize.
        expected: u64,
    },
    /// The compressed bytes are not valid for their announced compression.
    #[error("cannot decompress NAR: {0}")]
    Decompress(String),
    /// The upstream failed to open or to finish the download.
    #[error("NAR download failed: {0}")]
    Source(String),
    /// Reading or writing the local NAR store failed.
    #[error("NAR store I/O failed: {0}")]
    Store(#[source] Arc<std::io::Error>),
    /// The fetch task ended without a verdict (runtime shutdown or a bug).
    #[error("NAR fetch was interrupted")]
    Interrupted,
}

impl NarError {
    /// Whether the failure is the source's: its download failed or stalled, or its bytes
    /// were wrong. Then another source may do better; a store failure or an interrupted
    /// fetch would fail the same way with any source.
    pub fn blames_source(&self) -> bool {
        match self {
            NarError::HashMismatch { .. }
            | NarError::SizeMismatch { .. }
            | NarError::TooLarge { .. }
            | NarError::Decompress(_)
            | NarError::Source(_) => true,
            NarError::Store(_) | NarError::Interrupted => false,
        }
    }
}

impl From<std::io::Error> for NarError {
    fn from(err: std::io::Error) -> Self {
        NarError::Store(Arc::new(err))
    }
}
