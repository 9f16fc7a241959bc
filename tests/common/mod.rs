//! Support for quorate's end-to-end tests: real Nix-made caches, real HTTP upstreams, a real
//! `quorate` process, the real Nix client, and the database quorate wrote.
//!
//! - [`fixtures`]: the signed binary caches `tests/fixtures/make-nix-caches.sh` builds with
//!   Nix (builders A, B, C, M), built once per test binary.
//! - [`upstream`]: in-process HTTP servers that serve a cache directory, with knobs for delay,
//!   hanging, and per-path request counters.
//! - [`adversary`]: caches turned hostile with quorate's own narinfo and signing code.
//! - [`quorate`]: a `quorate serve` process with a generated config, on SQLite or PostgreSQL.
//! - [`nix_client`]: the Nix client substituting from one URL into a fresh chroot store.
//! - [`records`]: quorate's database read back (attestations, decisions, events).
//!
//! Tests are plain `#[test]` functions: the Nix client is a blocking subprocess, so the HTTP
//! servers and database checks run on one shared background runtime, never on the test thread.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod adversary;
pub mod fixtures;
pub mod nix_client;
pub mod quorate;
pub mod records;
pub mod upstream;

use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

// Re-exported for the stories; not every test binary uses each.
#[allow(unused_imports)]
pub use fixtures::{fixtures, Fixtures};
pub use nix_client::NixClient;
#[allow(unused_imports)]
pub use quorate::{for_each_backend, Backend, CacheSpec, Quorate};
pub use upstream::{Behavior, UpstreamServer};

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

/// A plain HTTP answer, for checks that talk to quorate without the Nix client.
#[derive(Debug)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Response headers (names lowercase).
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET url`, with a generous timeout (tests don't assert on time; this only stops a hang).
pub fn http_get(url: &str) -> Result<HttpAnswer, String> {
    block_on(http_get_async(url, Duration::from_secs(120)))
}

/// `GET url` on the support runtime's client.
pub async fn http_get_async(url: &str, timeout: Duration) -> Result<HttpAnswer, String> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(reqwest::Client::new);
    let resp = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), v)
        })
        .collect();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?
        .to_vec();
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
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

/// Prints a measurement or a note that a reader of the test run should see even when the test
/// passes (e.g. the time the 100 MiB path took): written to stderr directly, past libtest's
/// capture of `eprintln!`. Informational only; no test asserts on it.
pub fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "  note: {line}");
}
