//! The standing load run (issue 7): a real `quorate serve` in front of three real upstreams
//! (the Nix-built fixture caches of builders A, B and C, plus a pool of store paths never
//! asked for before, signed by A and B), under a bounded mixed load on loopback: warm and cold
//! narinfos, unknown paths (404), warm and cold NARs, the 100 MiB NAR, clients that hang up
//! mid-response and clients that give up before the answer. It asserts only what must hold
//! whatever the machine: zero errors, memory back near where it started, and no descriptor
//! left behind — never a time or a rate.
//!
//! `QUORATE_LOAD_SECONDS` (default 10) and `QUORATE_LOAD_CONNECTIONS` (64) size the run;
//! `bench/load.sh` runs it for 60 s on a release build and prints the figures.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use common::adversary::{copy_cache, secret_key};
use common::procfs::{self, OpenFds};
use common::{fixtures, for_each_backend, report, scratch_dir, Backend, CacheSpec, Quorate};
use common::{Fixtures, UpstreamServer};
use quorate_core::protocol::nar_hash::NarHash;
use quorate_core::protocol::narinfo::NixNarInfo;
use quorate_core::protocol::nix32;
use quorate_core::protocol::store_path::StorePath;

const CACHE: &str = "main";

/// A hang guard on one request (and on the settling waits); never a timing assertion.
const REQUEST_GUARD: Duration = Duration::from_secs(120);

/// After the run, how long quorate may take to let go of what the run made it hold (client
/// sockets, NAR files): at once, normally.
const SETTLE_GUARD: Duration = Duration::from_secs(60);

/// Resident memory may grow by this much over the run and stay grown: generous beside the
/// hot caches' share of the paths asked for (a few MiB), small beside a leak over
/// hundreds of thousands of requests.
const RSS_GROWTH_BOUND_MIB: u64 = 96;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A bounded mixed load leaves no error, no open client socket, no leaked file and no
/// memory growth beyond a generous bound, on SQLite and on PostgreSQL.
#[test]
fn a_bounded_mixed_load_ends_with_no_errors_no_leaked_descriptors_and_flat_memory() {
    let seconds: u64 = env_or("QUORATE_LOAD_SECONDS", 10);
    let connections: usize = env_or("QUORATE_LOAD_CONNECTIONS", 64);
    for_each_backend(|backend| load_run(backend, Duration::from_secs(seconds), connections));
}

fn load_run(backend: Backend, duration: Duration, connections: usize) {
    let fx = fixtures();
    let dir = scratch_dir("load");
    // More cold paths than a run gets through on this machine; when they run out, the later
    // turns of "cold" requests are warm ones.
    let pool_size = (duration.as_secs() as usize * 200).clamp(500, 12_000);
    let (up_a, up_b) = (dir.path().join("A"), dir.path().join("B"));
    copy_cache(&fx.builder("A").cache_dir, &up_a);
    copy_cache(&fx.builder("B").cache_dir, &up_b);
    let cold = cold_paths(fx, &up_a, &up_b, pool_size);
    let ups = [
        UpstreamServer::serve(&up_a),
        UpstreamServer::serve(&up_b),
        UpstreamServer::serve(&fx.builder("C").cache_dir),
    ];
    let mut spec = CacheSpec::nix(CACHE).quorum(2);
    for (name, up) in ["A", "B", "C"].iter().zip(&ups) {
        spec = spec
            .builder(&name.to_lowercase(), &[&fx.builder(name).public_key])
            .upstream(up.url());
    }
    let q = Quorate::start(backend, vec![spec]);
    let watch = Watch::new(&q, &ups);

    // The load generator has a runtime of its own: the upstreams keep theirs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()
        .expect("building the load runtime");
    let target = Arc::new(rt.block_on(Target::warm(&q, fx, cold)));

    // Warm-up at full concurrency: the database pool reaches its working size, so the
    // baseline below is the steady state, not a cold start.
    let warm_up = rt.block_on(run_load(&target, Duration::from_secs(2), connections));
    assert_no_errors(&warm_up, &q);
    let baseline = watch.settle(None);
    let rss_start = procfs::rss_kib(watch.pid);

    let peak = Arc::new(AtomicU64::new(rss_start));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), watch.pid);
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(procfs::rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let started = Instant::now();
    let tally = rt.block_on(run_load(&target, duration, connections));
    let ran = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let right_after = watch.fds();
    let end = watch.settle(Some(&baseline));
    let rss_end = procfs::rss_kib(watch.pid);
    let rss_peak = peak.load(Ordering::Relaxed).max(rss_end);

    report(&format!(
        "load ({backend:?}, {connections} connections, {:.1} s): {} requests, {} errors; {}",
        ran.as_secs_f64(),
        tally.requests(),
        tally.errors.lock().map(|e| e.len()).unwrap_or(0),
        tally.breakdown()
    ));
    report(&format!(
        "load ({backend:?}): RSS start {} MiB, peak {} MiB, end {} MiB; fds start {}, right \
         after the run {}, end {}",
        rss_start / 1024,
        rss_peak / 1024,
        rss_end / 1024,
        baseline.summary(),
        right_after.summary(),
        end.summary(),
    ));
    assert_no_errors(&tally, &q);
    // Idle upstream connections stay pooled (for 60 s): at most one per upstream per request
    // that was in flight to it at once, however long the run.
    let pooled_bound = ups.len() * 2 * connections;
    assert!(
        end.upstreams <= pooled_bound,
        "{} upstream connections held after the run (bound {pooled_bound})",
        end.upstreams
    );
    assert!(
        rss_end <= rss_start + RSS_GROWTH_BOUND_MIB * 1024,
        "RSS grew from {rss_start} KiB to {rss_end} KiB (peak {rss_peak} KiB)"
    );
}

fn assert_no_errors(tally: &Tally, q: &Quorate) {
    let errors = tally.errors.lock().unwrap_or_else(|e| e.into_inner());
    let log = q.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        errors.is_empty(),
        "{} error(s) under load, first ones:\n{}\nquorate log tail:\n{}",
        errors.len(),
        errors
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        lines[lines.len().saturating_sub(60)..].join("\n")
    );
}

/// quorate's process, watched from `/proc`.
struct Watch {
    pid: u32,
    port: u16,
    upstream_ports: Vec<u16>,
    /// The test harness's own keep-alive connection (its health checks): not the load's.
    harness: Vec<u16>,
}

impl Watch {
    fn new(q: &Quorate, ups: &[UpstreamServer]) -> Watch {
        let (pid, port) = (q.pid(), q.addr().port());
        let upstream_ports = ups
            .iter()
            .map(|u| {
                u.url()
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("no port in {}", u.url()))
            })
            .collect();
        Watch {
            pid,
            port,
            upstream_ports,
            harness: procfs::client_ports(pid, port),
        }
    }

    fn fds(&self) -> OpenFds {
        procfs::open_fds(self.pid, self.port, &self.upstream_ports)
    }

    /// Waits until quorate holds no client connection but the harness's and, given a
    /// baseline, no more of its own descriptors (files, database and other sockets) than
    /// then; returns what it holds. Pooled idle upstream connections are counted apart: they
    /// close on their pool's idle timeout. A hang guard, not a timing assertion.
    fn settle(&self, baseline: Option<&OpenFds>) -> OpenFds {
        let deadline = Instant::now() + SETTLE_GUARD;
        loop {
            let fds = self.fds();
            let clients = procfs::client_ports(self.pid, self.port);
            let back = clients.iter().all(|p| self.harness.contains(p))
                && baseline.is_none_or(|b| fds.own() <= b.own());
            if back {
                return fds;
            }
            assert!(
                Instant::now() < deadline,
                "descriptors not back to the baseline {baseline:?}: {fds:?}, client ports \
                 {clients:?} (the harness's: {:?})",
                self.harness
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

trait FdSummary {
    /// Descriptors that are neither client nor upstream connections.
    fn own(&self) -> usize;
    fn summary(&self) -> String;
}

impl FdSummary for OpenFds {
    fn own(&self) -> usize {
        self.other_sockets + self.other
    }

    fn summary(&self) -> String {
        format!(
            "{} (clients {}, upstream {}, other sockets {}, files and the rest {})",
            self.total, self.clients, self.upstreams, self.other_sockets, self.other
        )
    }
}

// ---------------------------------------------------------------- what is asked for

/// A store path only the load asks for, never before: its first narinfo request is a cold
/// resolution (A and B agree, C has never heard of it), its first NAR request a cold fetch.
struct ColdPath {
    hash_part: String,
    store_path: String,
    nar_hash: String,
    nar_size: u64,
}

/// A store path quorate decided during the warm-up, and its NAR.
struct WarmPath {
    narinfo_url: String,
    store_path: String,
    nar_url: String,
    nar_hash: String,
    nar_size: u64,
}

/// Everything the load asks quorate for.
struct Target {
    base: String,
    /// hello and app: small NARs.
    small: Vec<WarmPath>,
    /// The 100 MiB path.
    big: WarmPath,
    cold: Vec<ColdPath>,
    next_cold: AtomicU64,
    next_unknown: AtomicU64,
}

impl Target {
    /// Decides hello, app and big and stores their NARs (one full download each).
    async fn warm(q: &Quorate, fx: &Fixtures, cold: Vec<ColdPath>) -> Target {
        let client = http_client();
        let base = q.substituter();
        let mut warm = Vec::new();
        for p in [&fx.paths.hello, &fx.paths.app, &fx.paths.big] {
            let narinfo_url = format!("{base}{}", p.narinfo_path());
            let body = get_text(&client, &narinfo_url, 200)
                .await
                .unwrap_or_else(|e| panic!("warm-up: {e}\n{}", q.log()));
            let path = WarmPath {
                nar_url: format!("{base}/{}", nar_url_of(&body).expect("a URL line")),
                narinfo_url,
                store_path: p.store_path.clone(),
                nar_hash: p.nar_hash.clone(),
                nar_size: p.nar_size,
            };
            get_nar(&client, &path.nar_url, &path.nar_hash, path.nar_size)
                .await
                .unwrap_or_else(|e| panic!("warm-up: {e}\n{}", q.log()));
            warm.push(path);
        }
        let big = warm.pop().expect("three warm paths");
        Target {
            base,
            small: warm,
            big,
            cold,
            next_cold: AtomicU64::new(0),
            next_unknown: AtomicU64::new(0),
        }
    }
}

/// One kind of request, with its share of the mix (per 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// GET a decided narinfo (hello, app or big).
    WarmNarinfo,
    /// HEAD of a decided narinfo.
    HeadNarinfo,
    /// GET the next never-asked path's narinfo, then its NAR (both cold the first time).
    Cold,
    /// GET a narinfo no upstream has: 404.
    Unknown,
    /// GET hello's or app's NAR, whole, hash checked.
    SmallNar,
    /// GET the 100 MiB NAR and hang up after a part of it.
    BigNarHangUp,
    /// GET the 100 MiB NAR whole, hash checked.
    BigNar,
    /// Ask for a never-asked narinfo and give up before the answer.
    GiveUp,
    /// GET nix-cache-info.
    CacheInfo,
}

/// The mix.
const MIX: [(Op, u32); 9] = [
    (Op::WarmNarinfo, 28),
    (Op::HeadNarinfo, 5),
    (Op::Cold, 16),
    (Op::Unknown, 10),
    (Op::SmallNar, 25),
    (Op::BigNarHangUp, 6),
    (Op::BigNar, 1),
    (Op::GiveUp, 4),
    (Op::CacheInfo, 5),
];

/// What a run did.
#[derive(Default)]
struct Tally {
    /// Completed operations per kind, in `MIX` order.
    done: [AtomicU64; MIX.len()],
    /// HTTP requests sent (a cold operation sends two).
    requests: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn breakdown(&self) -> String {
        MIX.iter()
            .zip(&self.done)
            .map(|((op, _), n)| format!("{op:?} {}", n.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An HTTP client of its own for a phase: dropping it closes its connections.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_GUARD)
        .build()
        .expect("building an HTTP client")
}

/// `connections` clients looping over the mix for `duration`, on one HTTP client (a pool of
/// connections), which is dropped at the end: its connections close.
async fn run_load(target: &Arc<Target>, duration: Duration, connections: usize) -> Tally {
    let client = http_client();
    let tally = Arc::new(Tally::default());
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..connections {
        let (target, tally, client) = (target.clone(), tally.clone(), client.clone());
        tasks.spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((worker as u64 + 1) * 0x2545_f491));
            while tokio::time::Instant::now() < deadline {
                let op = pick(&mut rng);
                let (sent, result) = one(&target, &client, op, &mut rng).await;
                tally.requests.fetch_add(sent, Ordering::Relaxed);
                match result {
                    Ok(()) => {
                        let i = MIX.iter().position(|(o, _)| *o == op).unwrap_or(0);
                        tally.done[i].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tally
                        .errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{op:?}: {e}")),
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            panic!("a load task failed: {e}");
        }
    }
    Arc::try_unwrap(tally).unwrap_or_else(|_| panic!("load tasks still hold the tally"))
}

fn pick(rng: &mut Rng) -> Op {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut roll = rng.below(total as u64) as u32;
    for (op, weight) in MIX {
        if roll < weight {
            return op;
        }
        roll -= weight;
    }
    Op::WarmNarinfo
}

/// Runs one operation: how many requests it sent, and whether every answer was right.
async fn one(t: &Target, c: &reqwest::Client, op: Op, rng: &mut Rng) -> (u64, Result<(), String>) {
    match op {
        Op::WarmNarinfo | Op::HeadNarinfo => {
            let all = [&t.small[0], &t.small[1], &t.big];
            let p = all[rng.below(3) as usize];
            if op == Op::HeadNarinfo {
                return (1, head(c, &p.narinfo_url).await);
            }
            let body = get_text(c, &p.narinfo_url, 200).await;
            (1, body.and_then(|b| has_store_path(&b, &p.store_path)))
        }
        Op::Cold => {
            let i = t.next_cold.fetch_add(1, Ordering::Relaxed) as usize % t.cold.len();
            let p = &t.cold[i];
            let url = format!("{}/{}.narinfo", t.base, p.hash_part);
            let body = match get_text(c, &url, 200).await {
                Ok(b) => b,
                Err(e) => return (1, Err(e)),
            };
            if let Err(e) = has_store_path(&body, &p.store_path) {
                return (1, Err(e));
            }
            let Some(nar) = nar_url_of(&body) else {
                return (1, Err(format!("{url}: no URL line in {body:?}")));
            };
            let nar_url = format!("{}/{nar}", t.base);
            (2, get_nar(c, &nar_url, &p.nar_hash, p.nar_size).await)
        }
        Op::Unknown => {
            let n = t.next_unknown.fetch_add(1, Ordering::Relaxed);
            let hash = nix32::encode(&Sha256::digest(format!("unknown-{n}-{}", rng.next()))[..20]);
            let url = format!("{}/{hash}.narinfo", t.base);
            (1, get_text(c, &url, 404).await.map(drop))
        }
        Op::SmallNar => {
            let p = &t.small[rng.below(2) as usize];
            (1, get_nar(c, &p.nar_url, &p.nar_hash, p.nar_size).await)
        }
        Op::BigNarHangUp => {
            let keep = 64 * 1024 + rng.below(8 << 20);
            (1, hang_up_after(c, &t.big.nar_url, keep).await)
        }
        Op::BigNar => (
            1,
            get_nar(c, &t.big.nar_url, &t.big.nar_hash, t.big.nar_size).await,
        ),
        Op::GiveUp => {
            // A path no one asked for: its resolution is slow enough to give up on.
            let i = t.next_cold.fetch_add(1, Ordering::Relaxed) as usize % t.cold.len();
            let url = format!("{}/{}.narinfo", t.base, t.cold[i].hash_part);
            let ask = c.get(&url).send();
            match tokio::time::timeout(Duration::from_millis(1), ask).await {
                Err(_) => (1, Ok(())), // gave up: the request future is dropped mid-way
                Ok(Ok(r)) if r.status() == 200 => (1, Ok(())),
                Ok(Ok(r)) => (1, Err(format!("{url}: status {}", r.status()))),
                Ok(Err(e)) => (1, Err(format!("{url}: {e}"))),
            }
        }
        Op::CacheInfo => {
            let url = format!("{}/nix-cache-info", t.base);
            let body = get_text(c, &url, 200).await;
            (
                1,
                body.and_then(|b| {
                    b.contains("StoreDir: /nix/store")
                        .then_some(())
                        .ok_or_else(|| format!("{url}: {b:?}"))
                }),
            )
        }
    }
}

async fn get_text(c: &reqwest::Client, url: &str, want: u16) -> Result<String, String> {
    let r = c.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = r.status().as_u16();
    let body = r.text().await.map_err(|e| format!("{url}: body: {e}"))?;
    if status != want {
        return Err(format!("{url}: status {status}, wanted {want}: {body:?}"));
    }
    Ok(body)
}

async fn head(c: &reqwest::Client, url: &str) -> Result<(), String> {
    let r = c
        .head(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    match r.status().as_u16() {
        200 => Ok(()),
        s => Err(format!("HEAD {url}: status {s}")),
    }
}

/// GETs a NAR whole and checks its size and SHA-256.
async fn get_nar(c: &reqwest::Client, url: &str, nar_hash: &str, size: u64) -> Result<(), String> {
    let mut r = c.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    if r.status() != 200 {
        return Err(format!("{url}: status {}", r.status()));
    }
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = r.chunk().await.map_err(|e| format!("{url}: body: {e}"))? {
        got += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let hash = format!("sha256:{}", nix32::encode(&hasher.finalize()));
    if got != size || hash != nar_hash {
        return Err(format!(
            "{url}: {got} bytes hashing {hash}, wanted {size} hashing {nar_hash}"
        ));
    }
    Ok(())
}

/// GETs `url`, reads about `keep` bytes of the body, and drops the connection.
async fn hang_up_after(c: &reqwest::Client, url: &str, keep: u64) -> Result<(), String> {
    let mut r = c.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    if r.status() != 200 {
        return Err(format!("{url}: status {}", r.status()));
    }
    let mut got = 0u64;
    while got < keep {
        match r.chunk().await.map_err(|e| format!("{url}: body: {e}"))? {
            Some(chunk) => got += chunk.len() as u64,
            None => break,
        }
    }
    drop(r); // mid-body: the client closes this connection
    Ok(())
}

fn has_store_path(narinfo: &str, store_path: &str) -> Result<(), String> {
    narinfo
        .lines()
        .any(|l| l == format!("StorePath: {store_path}"))
        .then_some(())
        .ok_or_else(|| format!("narinfo for {store_path} says {narinfo:?}"))
}

fn nar_url_of(narinfo: &str) -> Option<String> {
    narinfo
        .lines()
        .find_map(|l| l.strip_prefix("URL: ").map(str::to_owned))
}

// ---------------------------------------------------------------- the cold paths

/// Adds `n` store paths to the copies of caches A and B: a regular file of 0.5-16 KiB random
/// bytes each, as a NAR; A serves it uncompressed, B zstd-compressed; each narinfo is signed
/// by its builder's real key.
fn cold_paths(fx: &Fixtures, up_a: &Path, up_b: &Path, n: usize) -> Vec<ColdPath> {
    check_nar_encoding_against_nix();
    let key_a = secret_key(&fx.builder("A").secret_key_file);
    let key_b = secret_key(&fx.builder("B").secret_key_file);
    for up in [up_a, up_b] {
        std::fs::create_dir_all(up.join("nar")).expect("creating nar/");
    }
    let mut rng = Rng(42);
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let len = 512 + rng.below(16 * 1024) as usize;
        let contents: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let nar = nar_of_file(&contents);
        let digest: [u8; 32] = Sha256::digest(&nar).into();
        let hash_part = nix32::encode(&Sha256::digest(format!("quorate-load-{i}"))[..20]);
        let store_path = format!("{}/{hash_part}-load-{i}", fx.store_dir);
        let mut info = NixNarInfo {
            store_path: StorePath::parse(&fx.store_dir, &store_path).expect("a store path"),
            url: String::new(),
            compression: String::new(),
            file_hash: None,
            file_size: None,
            nar_hash: NarHash::from_digest(digest),
            nar_size: nar.len() as u64,
            references: Vec::new(),
            deriver: None,
            system: None,
            ca: None,
            sigs: Vec::new(),
        };
        for (up, key, compressed) in [(up_a, &key_a, false), (up_b, &key_b, true)] {
            let file = if compressed {
                zstd::encode_all(&nar[..], 3).expect("zstd")
            } else {
                nar.clone()
            };
            let file_hash = nix32::encode(&Sha256::digest(&file));
            let ext = if compressed { "nar.zst" } else { "nar" };
            info.url = format!("nar/{file_hash}.{ext}");
            info.compression = if compressed { "zstd" } else { "none" }.to_owned();
            info.file_hash = Some(format!("sha256:{file_hash}"));
            info.file_size = Some(file.len() as u64);
            info.sigs = vec![key.sign(&info.fingerprint())];
            std::fs::write(up.join(&info.url), &file).expect("writing a NAR file");
            std::fs::write(
                up.join(format!("{hash_part}.narinfo")),
                info.render().as_bytes(),
            )
            .expect("writing a narinfo");
        }
        paths.push(ColdPath {
            hash_part,
            store_path,
            nar_hash: format!("sha256:{}", nix32::encode(&digest)),
            nar_size: nar.len() as u64,
        });
    }
    paths
}

/// The NAR of a single regular file (not executable).
fn nar_of_file(contents: &[u8]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    let mut out = Vec::with_capacity(contents.len() + 128);
    for token in ["nix-archive-1", "(", "type", "regular", "contents"] {
        string(&mut out, token.as_bytes());
    }
    string(&mut out, contents);
    string(&mut out, b")");
    out
}

/// `nar_of_file` writes what `nix-store --dump` writes for the same file.
fn check_nar_encoding_against_nix() {
    let dir = scratch_dir("nar-check");
    let file = dir.path().join("f");
    let contents = b"quorate load test: a NAR made by hand must be Nix's NAR";
    std::fs::write(&file, contents).expect("writing a file");
    let out = std::process::Command::new("nix-store")
        .arg("--dump")
        .arg(&file)
        .output()
        .expect("running nix-store --dump (Debian's nix-bin; scripts/test.sh installs it)");
    assert!(out.status.success(), "nix-store --dump failed: {out:?}");
    assert_eq!(out.stdout, nar_of_file(contents), "NAR encodings differ");
}

/// xorshift64*: reproducible choices without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
