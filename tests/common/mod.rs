//! Support for quorate's end-to-end tests, Nix and Guix alike: real HTTP upstreams, a real
//! `quorate` process, real clients (or their checks), and the database quorate wrote.
//!
//! - [`quorate`]: a `quorate serve` process with a generated config (Nix and Guix caches), on
//!   SQLite or on a fresh PostgreSQL database; [`for_each_backend`] runs a story on both.
//! - [`upstream`]: in-process HTTP servers serving a cache directory or a set of files, with
//!   knobs for delay, hanging, and per-path request counters.
//! - [`http`]: plain GETs (keeping an aborted body as an error) and quorate's JSON API.
//! - [`fixtures`]: the signed binary caches `tests/fixtures/make-nix-caches.sh` builds with
//!   Nix (builders A, B, C, M), built once per test binary.
//! - [`adversary`]: Nix caches turned hostile with quorate's own narinfo and signing code.
//! - [`hostile`]: a raw HTTP server that misbehaves on purpose (resets, drips, stalls, lying
//!   lengths, redirects), honest for every path it is not told to attack.
//! - [`nix_client`]: the Nix client substituting from one URL into a fresh chroot store.
//! - [`records`]: quorate's database read back (attestations, decisions, events).
//! - [`procfs`]: a process under `/proc`: memory, file descriptors by kind, open-file limit.
//! - [`guix`]: the Guix side: the libgcrypt oracle (Guile scripts), a world of builders and
//!   guix-publish-style upstreams, narinfos read the way Guix reads them.
//! - [`garage`]: a real single-node Garage (S3) with one bucket, stopped and started at will;
//!   [`s3`]: the signed S3 requests that look into it (objects, incomplete uploads).
//! - [`fleet`]: a replica set: N quorates sharing one PostgreSQL database, one signing key,
//!   and (issue 9) one `[nar_store]` bucket and a `[replica]` secret.
//! - [`lb`]: nginx round-robin in front of a replica set, skipping a dead replica.
//!
//! The Nix stories are plain `#[test]` functions: the Nix client is a blocking subprocess, so
//! the HTTP servers and database checks run on one shared background runtime, never on the
//! test thread. The Guix stories are async tests; the upstream servers run on that same
//! shared runtime, and [`Quorate::start_async`] starts quorate from async code.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod adversary;
pub mod fixtures;
pub mod fleet;
pub mod garage;
pub mod guix;
pub mod hostile;
pub mod http;
pub mod lb;
pub mod nix_client;
pub mod procfs;
pub mod quorate;
pub mod records;
pub mod s3;
pub mod upstream;

use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;

use quorate_core::protocol::nix32;
use sha2::Digest as _;

// Re-exported for the stories; not every test binary uses each.
#[allow(unused_imports)]
pub use fixtures::{fixtures, Fixtures};
#[allow(unused_imports)]
pub use http::{http_get, http_get_async, HttpAnswer};
#[allow(unused_imports)]
pub use nix_client::NixClient;
#[allow(unused_imports)]
pub use quorate::{
    backends, for_each_backend, Backend, CacheSpec, Placement, Quorate, UpstreamSpec,
};
#[allow(unused_imports)]
pub use upstream::{Behavior, UpstreamServer};
#[allow(unused_imports)]
pub use {fleet::ReplicaSet, garage::Garage, lb::Balancer};

/// The runtime the in-process upstreams and the database checks run on. Multi-threaded, so a
/// server keeps answering while a test thread blocks on a Nix subprocess or on `block_on`.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-support")
            .enable_all()
            .build()
            .expect("building the test support runtime")
    })
}

/// Runs `fut` to completion on the support runtime, from a synchronous test.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    runtime().block_on(fut)
}

/// Whether the developer asked to skip the tests needing a part (`var=1`, e.g.
/// `QUORATE_TEST_SKIP_POSTGRES`). Under `CI=true` nothing may be skipped: asking panics, so a
/// missing part fails the run instead of passing it quietly.
pub fn skip_requested(var: &str) -> bool {
    if std::env::var(var).as_deref() != Ok("1") {
        return false;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{var}=1 under CI=true: CI must run every test; unset {var}"
    );
    true
}

/// A fresh directory for one test's files, under cargo's target/tmp: the same file system as
/// the fixtures, so caches can be copied as hard links. Deleted on drop unless
/// `QUORATE_TEST_KEEP=1`.
pub fn scratch_dir(label: &str) -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).expect("creating cargo's target tmp dir");
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("{label}."))
        .tempdir_in(base)
        .expect("creating a scratch dir");
    if std::env::var("QUORATE_TEST_KEEP").as_deref() == Ok("1") {
        dir.disable_cleanup(true);
    }
    dir
}

/// Every regular file below `dir`, recursively (none if it does not exist).
#[allow(dead_code)]
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Polls `check` every 200 ms until it holds; panics naming `what` after `within`. A hang
/// guard, not a timing assertion.
#[allow(dead_code)]
pub fn eventually(what: &str, within: std::time::Duration, mut check: impl FnMut() -> bool) {
    eventually_some(what, within, || check().then_some(()))
}

/// [`eventually`] for a check that finds something: the first value it gives.
#[allow(dead_code)]
pub fn eventually_some<T>(
    what: &str,
    within: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The `URL:` of a narinfo quorate served (relative to the cache's base).
#[allow(dead_code)]
pub fn nar_url_in(narinfo: &str) -> String {
    narinfo
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("a URL line")
        .to_owned()
}

/// Prints a measurement or a note that a reader of the test run should see even when the test
/// passes (e.g. the time the 100 MiB path took): written to stderr directly, past libtest's
/// capture of `eprintln!`. Informational only; no test asserts on it.
pub fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "  note: {line}");
}

/// `sha256:<nix32>` of `bytes`, as narinfos write NarHash (by the nix-derivation crate's
/// nix32, not quorate's own).
pub fn nar_hash_of(bytes: &[u8]) -> String {
    format!("sha256:{}", nix32::encode(&sha2::Sha256::digest(bytes)))
}

/// Builder `X` of the fixtures as a `[[cache.builder]]` named `x`.
#[allow(dead_code)]
pub fn with_builders(mut spec: CacheSpec, names: &[&str]) -> CacheSpec {
    for n in names {
        spec = spec.builder(&n.to_lowercase(), &[&fixtures().builder(n).public_key]);
    }
    spec
}

/// Builder `name`'s honest cache, served as an upstream.
#[allow(dead_code)]
pub fn serve_builder(name: &str) -> UpstreamServer {
    UpstreamServer::serve(&fixtures().builder(name).cache_dir)
}

/// An upstream for each of the fixtures' builders `names`, in order.
#[allow(dead_code)]
pub fn serve_builders(names: &[&str]) -> Vec<UpstreamServer> {
    names.iter().map(|n| serve_builder(n)).collect()
}
