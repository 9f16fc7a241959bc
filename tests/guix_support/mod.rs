//! Support for quorate's Guix end-to-end tests: Guix-style substitute servers whose narinfos
//! libgcrypt signed, a real `quorate serve` process, and plain HTTP to talk to it.
//!
//! - [`oracle`]: the libgcrypt side, through the Guile scripts in `tests/oracle/` (keys as
//!   `guix archive --generate-key` makes them, narinfos as `guix publish` signs them, checks as
//!   `guix substitute` and `guix archive --authorize` make them).
//! - [`world`]: builders, store items (real NARs by `nix-store --dump`), and what each
//!   guix-publish-style upstream serves, honest or not.
//! - [`upstream`]: in-process HTTP servers serving one upstream's files.
//! - [`quorate`]: a `quorate serve` process with a Guix (and optionally a Nix) cache, on
//!   SQLite or on a fresh PostgreSQL database.
//! - [`http`]: GETs that keep an aborted body as an error, narinfo fields, NAR hashes, the
//!   JSON API.
//!
//! Nothing here asserts on time; bounded waits only stop a hang.
#![allow(dead_code)] // not every story uses every helper

pub mod http;
pub mod oracle;
pub mod quorate;
pub mod upstream;
pub mod world;

use std::path::Path;

/// A fresh directory for one test's files under cargo's target/tmp. Deleted on drop unless
/// `QUORATE_TEST_KEEP=1`.
pub fn scratch_dir(label: &str) -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).expect("creating cargo's target tmp dir");
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("guix-{label}."))
        .tempdir_in(base)
        .expect("creating a scratch dir");
    if std::env::var("QUORATE_TEST_KEEP").as_deref() == Ok("1") {
        dir.disable_cleanup(true);
    }
    dir
}
