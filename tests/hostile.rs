//! The hostile upstream suite: upstreams that misbehave on purpose — resetting mid-NAR,
//! dripping bytes, stalling, lying in `Content-Length`, serving garbage, binary and huge
//! narinfos, 100 000 references, duplicate fields, NAR URLs to other hosts and outside the
//! cache, redirects, a small xz that inflates past NarSize, NarSize 0 and 2^63 — against a
//! real `quorate serve` process, on SQLite and PostgreSQL where the database matters.
//!
//! For each, quorate must answer cleanly (404, 502 or 503; a NAR transfer it has begun fails
//! rather than completes wrong), serve and cache nothing wrong, keep answering for other
//! paths, and keep its memory bounded (the process's peak RSS, `VmHWM`, stays under a
//! generous bound: a resource bound, not a timing one). Every wait is bounded by a hang
//! guard; nothing asserts on time.
//!
//! quorate runs with short upstream timeouts here (2 s to connect or answer, 2 s without a
//! byte), so stalls are detected quickly.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::fixtures::FixturePath;
use common::hostile::{HostileUpstream, Script};
use common::{
    fixtures, for_each_backend, nar_hash_of, records, Backend, CacheSpec, Quorate, UpstreamSpec,
};
use quorate_core::protocol::nar_hash::NarHash;
use quorate_core::protocol::narinfo::NixNarInfo;
use quorate_core::protocol::nix32;
use quorate_core::protocol::store_path::StorePath;
use quorate_core::quorum::Outcome;
use sha2::{Digest, Sha256};

/// The cache every story configures (mounted at `/`).
const CACHE: &str = "main";

/// The peak resident memory quorate may reach in any story here: it idles under 20 MiB, and
/// DESIGN §10 gives NAR streaming 64 MiB above idle. Buffering a 100 MiB NAR or an inflated
/// bomb would cross it.
const MEMORY_BOUND_KIB: u64 = 96 * 1024;

/// The longest a client waits for one answer (a hang guard).
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Short upstream timeouts, so that stalls end quickly.
const TUNED: &[(&str, &str)] = &[("upstream_timeout", "2s"), ("upstream_idle_timeout", "2s")];

/// quorate trusting builder C alone (quorum 1), with these upstreams.
fn start(backend: Backend, upstreams: Vec<UpstreamSpec>) -> Quorate {
    let c = fixtures().builder("C");
    let spec = upstreams.into_iter().fold(
        CacheSpec::nix(CACHE).builder("c", &[&c.public_key]),
        CacheSpec::upstream_spec,
    );
    Quorate::start_tuned(backend, vec![spec], TUNED)
}

/// Builder C's honest cache (uncompressed NARs).
fn c_cache() -> &'static std::path::Path {
    &fixtures().builder("C").cache_dir
}

/// `path`'s narinfo in builder C's cache.
fn c_narinfo(path: &FixturePath) -> NixNarInfo {
    common::adversary::read_narinfo(fixtures(), c_cache(), path)
}

/// The uncompressed NAR of `path` in builder C's cache.
fn c_nar(path: &FixturePath) -> Bytes {
    let file = c_cache().join(c_narinfo(path).url);
    Bytes::from(std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())))
}

/// `/nar/...`: the URL path of `path`'s NAR in builder C's cache.
fn c_nar_path(path: &FixturePath) -> String {
    format!("/{}", c_narinfo(path).url)
}

/// `info` signed by builder C alone (its other signatures dropped).
fn signed_by_c(mut info: NixNarInfo) -> String {
    let key = common::adversary::secret_key(&fixtures().builder("C").secret_key_file);
    info.sigs = vec![key.sign(&info.fingerprint())];
    info.render()
}

/// A fresh store path named `name` (its hash part derived from the name), for narinfos made
/// up on the spot.
fn made_up_path(name: &str) -> StorePath {
    let digest = Sha256::digest(name.as_bytes());
    let hash = nix32::encode(&digest[..20]);
    StorePath::from_basename("/nix/store", &format!("{hash}-{name}")).expect("a store path")
}

/// A validly signed (by C) narinfo for a made-up path of `nar`.
fn made_up_narinfo(name: &str, nar: &[u8]) -> NixNarInfo {
    let mut info = c_narinfo(&fixtures().paths.hello);
    info.store_path = made_up_path(name);
    info.nar_hash = NarHash::from_digest(Sha256::digest(nar).into());
    info.nar_size = nar.len() as u64;
    info.references = Vec::new();
    info.deriver = None;
    info
}

/// `GET <quorate>/<path>` within the hang guard: status and body (`Err` if it broke off).
/// A connection closed before the response head arrived is status 0 with an `Err` body:
/// when a streamed NAR fails on its first read, hyper may not have flushed the head yet,
/// and the client sees the same broken transfer either way.
///
/// Each request on a fresh connection: these stories break transfers on purpose, and a
/// pooled connection would carry one story's broken transfer into the next request's error.
fn get(q: &Quorate, path: &str) -> (u16, Result<Bytes, String>) {
    let url = format!("{}{path}", q.url());
    let hung = |e: &reqwest::Error| -> String {
        format!("GET {url} hung for {HANG_GUARD:?}: {e}\n{}", q.log())
    };
    common::block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(HANG_GUARD)
            .build()
            .expect("an HTTP client");
        let resp = match client.get(&url).send().await {
            Ok(resp) => resp,
            Err(e) if e.is_timeout() => panic!("{}", hung(&e)),
            Err(e) if e.is_connect() => panic!("GET {url}: {e:?}\n{}", q.log()),
            Err(e) => return (0, Err(format!("closed before the response head: {e:?}"))),
        };
        let status = resp.status().as_u16();
        match resp.bytes().await {
            Ok(body) => (status, Ok(body)),
            Err(e) if e.is_timeout() => panic!("{}", hung(&e)),
            Err(e) => (status, Err(format!("{e:?}"))),
        }
    })
}

/// The NAR URL path quorate's narinfo for `hash_part` names (the narinfo must be 200).
fn quorate_nar_path(q: &Quorate, hash_part: &str) -> String {
    let (status, body) = get(q, &format!("/{hash_part}.narinfo"));
    let text = String::from_utf8_lossy(&body.expect("a whole narinfo")).into_owned();
    assert_eq!(status, 200, "narinfo of {hash_part}: {text}");
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("a URL line");
    format!("/{url}")
}

/// A NAR request that must not give the client a NAR: either a clean error status, or a
/// transfer that breaks off. Never a complete body.
#[track_caller]
fn assert_no_nar(q: &Quorate, nar_path: &str, what: &str) {
    let (status, body) = get(q, nar_path);
    match (status, &body) {
        (502 | 503 | 404, _) => {}
        (200 | 0, Err(_)) => {}
        _ => panic!(
            "{what}: expected a failed transfer or 404/502/503, got {status} with {}",
            match &body {
                Ok(b) => format!("a complete body of {} bytes", b.len()),
                Err(e) => e.clone(),
            }
        ),
    }
}

/// Neither the store nor the database holds the NAR with `nar_hash`.
#[track_caller]
fn assert_not_cached(q: &Quorate, nar_hash: &str) {
    let hash = NarHash::parse(nar_hash).expect("a NarHash");
    let key = hash.key().to_string();
    let stored = walk(&q.state_dir().join("nars"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&key))
        .collect::<Vec<_>>();
    assert!(stored.is_empty(), "NAR files left: {stored:?}");
    let row = records::with_db(q, async |db| db.nar_object(&hash).await)
        .unwrap_or_else(|e| panic!("reading nar_objects: {e}"));
    assert!(row.is_none(), "a nar_objects row was recorded: {row:?}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// quorate still serves another path, app, narinfo and verified NAR.
#[track_caller]
fn assert_other_paths_answer(q: &Quorate) {
    let app = &fixtures().paths.app;
    let nar_path = quorate_nar_path(q, app.hash_part());
    let (status, body) = get(q, &nar_path);
    assert_eq!(status, 200);
    assert_eq!(nar_hash_of(&body.expect("app's NAR whole")), app.nar_hash);
}

#[track_caller]
fn assert_memory_bounded(q: &Quorate, story: &str) {
    let peak = q.peak_memory_kib();
    common::report(&format!(
        "[{:?}] {story}: quorate peak RSS {} MiB",
        q.backend(),
        peak / 1024
    ));
    assert!(
        peak < MEMORY_BOUND_KIB,
        "{story}: quorate's peak RSS {peak} KiB is over {MEMORY_BOUND_KIB} KiB"
    );
}

// ---------------------------------------------------------------------------------------
// NAR downloads that misbehave.
// ---------------------------------------------------------------------------------------

/// The ways an upstream can break a NAR download, for a NAR of `nar`.
fn broken_downloads(nar: &Bytes) -> Vec<(&'static str, Script)> {
    let half = nar.len() / 2;
    let mut longer = nar.to_vec();
    longer.extend_from_slice(b"trailing garbage");
    vec![
        (
            "resets mid-NAR",
            Script::ResetAfter {
                body: nar.clone(),
                after: half,
            },
        ),
        (
            "stalls after the head",
            Script::StallAfter {
                body: nar.clone(),
                after: 0,
            },
        ),
        (
            "stalls mid-NAR",
            Script::StallAfter {
                body: nar.clone(),
                after: half,
            },
        ),
        ("never answers", Script::StallBeforeHead),
        (
            "drips one byte every 500 ms",
            Script::Drip {
                body: nar.clone(),
                chunk: 1,
                every: Duration::from_millis(500),
            },
        ),
        (
            "announces more than it sends",
            Script::LyingLength {
                body: nar.clone(),
                claimed: nar.len() as u64 + 1000,
            },
        ),
        (
            "announces less than the NAR",
            Script::LyingLength {
                body: nar.clone(),
                claimed: half as u64,
            },
        ),
        (
            "sends more than the NAR",
            Script::Serve(Bytes::from(longer)),
        ),
        ("answers 500", Script::Status(500)),
        (
            "redirects to another host",
            Script::Redirect {
                status: 302,
                location: "http://127.0.0.1:9/nar/elsewhere.nar".into(),
            },
        ),
    ]
}

/// An upstream that breaks hello's NAR download in every way in turn, alone: each time the
/// client's download fails (a clean error or a broken-off transfer, never a complete
/// body, never a hang), nothing is stored or recorded as a NAR, the failure is recorded
/// against the upstream, and other paths keep answering.
#[test]
fn a_nar_download_that_breaks_in_any_way_fails_cleanly_and_caches_nothing() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    let nar = c_nar(hello);
    for_each_backend(|backend| {
        let hostile = HostileUpstream::serve(c_cache());
        let q = start(backend, vec![UpstreamSpec::new(hostile.url())]);
        let nar_path = quorate_nar_path(&q, hello.hash_part());
        for (n, (how, script)) in broken_downloads(&nar).into_iter().enumerate() {
            hostile.script(&c_nar_path(hello), script);
            assert_no_nar(&q, &nar_path, how);
            assert_not_cached(&q, &hello.nar_hash);
            records::wait_until(&q, &format!("{} failure events", n + 1), || {
                let failures = records::events(&q, CACHE, "upstream_failure").len()
                    + records::events(&q, CACHE, "mismatch").len();
                failures > n
            });
        }
        assert_other_paths_answer(&q);
        assert_memory_bounded(&q, "broken NAR downloads");
    });
}

/// A 100 MiB NAR reset a third of the way: the transfer fails, no byte of it stays, memory
/// stays flat.
#[test]
fn a_big_nar_reset_mid_download_leaves_nothing_and_memory_flat() {
    let fx = fixtures();
    let big = &fx.paths.big;
    let nar = c_nar(big);
    for_each_backend(|backend| {
        let hostile = HostileUpstream::serve(c_cache());
        hostile.script(
            &c_nar_path(big),
            Script::ResetAfter {
                after: nar.len() / 3,
                body: nar.clone(),
            },
        );
        let q = start(backend, vec![UpstreamSpec::new(hostile.url())]);
        let nar_path = quorate_nar_path(&q, big.hash_part());
        assert_no_nar(&q, &nar_path, "big reset mid-NAR");
        records::wait_for_event(&q, CACHE, "upstream_failure", big.hash_part());
        assert_not_cached(&q, &big.nar_hash);
        assert_eq!(
            walk(&q.state_dir().join("nars/tmp")),
            Vec::<std::path::PathBuf>::new(),
            "temp files left"
        );
        assert_other_paths_answer(&q);
        assert_memory_bounded(&q, "100 MiB NAR reset mid-download");
    });
}

/// A stalled upstream no longer holds its clients: when the preferred upstream stalls before
/// sending a byte of the NAR (or never answers), the client's one request is served whole
/// and verified from the next upstream with the same NarHash, the stalled source is recorded,
/// and the NAR is stored once.
#[test]
fn a_nar_stalled_before_its_first_byte_is_served_from_the_next_upstream_in_one_request() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    let nar = c_nar(hello);
    for script in [
        Script::StallAfter {
            body: nar.clone(),
            after: 0,
        },
        Script::StallBeforeHead,
    ] {
        for_each_backend(|backend| {
            let stalling = HostileUpstream::serve(c_cache());
            stalling.script(&c_nar_path(hello), script.clone());
            let honest = HostileUpstream::serve(c_cache());
            let q = start(
                backend,
                vec![
                    UpstreamSpec::new(stalling.url()).priority(1),
                    UpstreamSpec::new(honest.url()).priority(2),
                ],
            );
            let nar_path = quorate_nar_path(&q, hello.hash_part());
            let (status, body) = get(&q, &nar_path);
            assert_eq!(status, 200, "{script:?}");
            let body = body.unwrap_or_else(|e| panic!("{script:?}: the transfer failed: {e}"));
            assert_eq!(nar_hash_of(&body), hello.nar_hash, "{script:?}");
            assert_eq!(
                stalling.requests_for(&c_nar_path(hello)).len(),
                1,
                "the stalled upstream was tried first"
            );
            assert_eq!(honest.requests_for(&c_nar_path(hello)).len(), 1);
            let event = records::wait_for_event(&q, CACHE, "upstream_failure", hello.hash_part());
            assert_eq!(event.upstream.as_deref(), Some(stalling.url()), "{event:?}");
            records::wait_until(&q, "the NAR object recorded", || {
                let hash = NarHash::parse(&hello.nar_hash).expect("NarHash");
                records::with_db(&q, async |db| db.nar_object(&hash).await)
                    .ok()
                    .flatten()
                    .is_some()
            });
            assert_memory_bounded(&q, "stalled NAR, fail-over");
        });
    }
}

/// An upstream that fails after sending part of the NAR (a stall, a reset): the next
/// upstream resumes after the bytes already sent, its own compared with them, so a client
/// streaming the NAR gets it whole and verified without noticing. When the failed
/// upstream's bytes were wrong (the next one's differ), a client that already received them
/// sees its transfer fail — never the rest spliced in — and its retry gets the verified NAR.
#[test]
fn a_client_streaming_from_an_upstream_that_fails_mid_transfer_gets_the_verified_nar_or_a_failure()
{
    let fx = fixtures();
    let big = &fx.paths.big;
    let nar = c_nar(big);
    let third = nar.len() / 3;
    let mut tampered = nar.to_vec();
    tampered[1000] ^= 1;
    let tampered = Bytes::from(tampered);
    let scripts = [
        (
            "stall",
            Script::StallAfter {
                body: nar.clone(),
                after: third,
            },
            true,
        ),
        (
            "reset",
            Script::ResetAfter {
                body: nar.clone(),
                after: third,
            },
            true,
        ),
        (
            "wrong bytes, then a stall",
            Script::StallAfter {
                body: tampered,
                after: third,
            },
            false,
        ),
    ];
    for (how, script, honest_prefix) in scripts {
        for_each_backend(|backend| {
            let hostile = HostileUpstream::serve(c_cache());
            hostile.script(&c_nar_path(big), script.clone());
            let honest = HostileUpstream::serve(c_cache());
            let q = start(
                backend,
                vec![
                    UpstreamSpec::new(hostile.url()).priority(1),
                    UpstreamSpec::new(honest.url()).priority(2),
                ],
            );
            let nar_path = quorate_nar_path(&q, big.hash_part());
            let (status, first) = get(&q, &nar_path);
            match first {
                Ok(whole) => {
                    assert_eq!(status, 200, "{how}");
                    assert_eq!(
                        nar_hash_of(&whole),
                        big.nar_hash,
                        "{how}: a complete wrong NAR"
                    );
                    if !honest_prefix {
                        common::report(&format!(
                            "{how}: the first client had received nothing yet"
                        ));
                    }
                }
                Err(e) => assert!(
                    !honest_prefix,
                    "{how}: the streaming client saw the switch of upstream: {e}"
                ),
            }
            let (status, again) = get(&q, &nar_path);
            assert_eq!(status, 200);
            let again = again.unwrap_or_else(|e| panic!("{how}: the retry failed: {e}"));
            assert_eq!(nar_hash_of(&again), big.nar_hash);
            assert_eq!(honest.requests_for(&c_nar_path(big)).len(), 1);
            assert_memory_bounded(&q, "failed download, served by the next upstream");
        });
    }
}

/// With the default (equal) priorities, the NAR comes from the source expected to deliver
/// soonest: builder C's uncompressed NAR rather than builder A's xz one, though A is listed
/// first (on a fast link decoding xz is the slow part). An explicit `priority` still decides.
#[test]
fn at_equal_priority_an_uncompressed_nar_is_fetched_before_an_xz_one_listed_first() {
    let fx = fixtures();
    let big = &fx.paths.big;
    let a_cache = &fx.builder("A").cache_dir;
    let a_nar = format!("/{}", common::adversary::read_narinfo(fx, a_cache, big).url);
    assert!(a_nar.ends_with(".xz"), "{a_nar}");
    for (priorities, expect_a) in [((None, None), false), ((Some(1), Some(2)), true)] {
        for_each_backend(|backend| {
            let a = HostileUpstream::serve(a_cache);
            let c = HostileUpstream::serve(c_cache());
            let spec = |url: &str, priority: Option<u32>| match priority {
                Some(p) => UpstreamSpec::new(url).priority(p),
                None => UpstreamSpec::new(url),
            };
            let q = start(
                backend,
                vec![spec(a.url(), priorities.0), spec(c.url(), priorities.1)],
            );
            // `refuse` waits for every upstream: both are sources when the NAR is asked for.
            let nar_path = quorate_nar_path(&q, big.hash_part());
            let (status, body) = get(&q, &nar_path);
            assert_eq!(status, 200);
            assert_eq!(nar_hash_of(&body.expect("the NAR")), big.nar_hash);
            let (from_a, from_c) = (
                a.requests_for(&a_nar).len(),
                c.requests_for(&c_nar_path(big)).len(),
            );
            if expect_a {
                assert_eq!((from_a, from_c), (1, 0), "priority 1 goes first");
            } else {
                assert_eq!(
                    (from_a, from_c),
                    (0, 1),
                    "the uncompressed NAR is the fastest"
                );
            }
        });
    }
}

/// An upstream dripping the NAR far below the switching pace (1 MiB/s over 10 s of waiting)
/// while another offers it: quorate abandons it for the next one, which resumes after the
/// bytes already streamed, and the client gets the whole verified NAR in one transfer.
#[test]
fn a_dripping_upstream_is_abandoned_for_the_next_while_the_client_streams_on() {
    let fx = fixtures();
    let big = &fx.paths.big;
    let nar = c_nar(big);
    for_each_backend(|backend| {
        let dripping = HostileUpstream::serve(c_cache());
        dripping.script(
            &c_nar_path(big),
            Script::Drip {
                body: nar.clone(),
                chunk: 32 << 10,
                every: Duration::from_millis(100),
            },
        );
        let honest = HostileUpstream::serve(c_cache());
        let q = start(
            backend,
            vec![
                UpstreamSpec::new(dripping.url()).priority(1),
                UpstreamSpec::new(honest.url()).priority(2),
            ],
        );
        let nar_path = quorate_nar_path(&q, big.hash_part());
        let (status, body) = get(&q, &nar_path);
        assert_eq!(status, 200);
        let body = body.unwrap_or_else(|e| panic!("the streaming client saw the switch: {e}"));
        assert_eq!(nar_hash_of(&body), big.nar_hash);
        assert_eq!(honest.requests_for(&c_nar_path(big)).len(), 1);
        let event = records::wait_for_event(&q, CACHE, "upstream_failure", big.hash_part());
        assert_eq!(event.upstream.as_deref(), Some(dripping.url()), "{event:?}");
        assert!(event.detail.contains("bytes/s"), "{event:?}");
        assert_memory_bounded(&q, "a dripping upstream abandoned");
    });
}

/// A small xz that inflates far past NarSize (64 MiB of zeros for a NAR of a few hundred
/// bytes): quorate stops reading one byte past NarSize, serves nothing, stores nothing,
/// records a mismatch, and its memory stays bounded.
#[test]
fn a_small_xz_that_inflates_past_nar_size_is_stopped_at_nar_size() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    let bomb = xz_of_zeros(64 << 20);
    assert!(
        bomb.len() < 64 << 10,
        "the bomb is small: {} bytes",
        bomb.len()
    );
    let mut info = c_narinfo(hello);
    info.url = "nar/bomb.nar.xz".into();
    info.compression = "xz".into();
    info.file_hash = None;
    info.file_size = Some(bomb.len() as u64);
    // URL and Compression are not signed: C's signature still holds.
    let narinfo = info.render();
    for_each_backend(|backend| {
        let hostile = HostileUpstream::serve(c_cache());
        hostile.script(&hello.narinfo_path(), Script::Serve(narinfo.clone().into()));
        hostile.script("/nar/bomb.nar.xz", Script::Serve(bomb.clone()));
        let q = start(backend, vec![UpstreamSpec::new(hostile.url())]);
        let nar_path = quorate_nar_path(&q, hello.hash_part());
        assert_no_nar(&q, &nar_path, "xz bomb");
        let event = records::wait_for_event(&q, CACHE, "mismatch", hello.hash_part());
        assert!(
            event.detail.contains("larger than its NarSize"),
            "{event:?}"
        );
        assert_not_cached(&q, &hello.nar_hash);
        assert_other_paths_answer(&q);
        assert_memory_bounded(&q, "xz bomb");
    });
}

fn xz_of_zeros(len: usize) -> Bytes {
    use std::io::Write;
    let mut xz = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(6))
        .expect("an xz encoder");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..len / zeros.len() {
        xz.write_all(&zeros).expect("compressing");
    }
    Bytes::from(xz.finish().expect("finishing the xz stream"))
}

// ---------------------------------------------------------------------------------------
// Narinfos that misbehave.
// ---------------------------------------------------------------------------------------

/// The ways an upstream can answer `<hash>.narinfo` badly, for made-up paths (a fresh path
/// per case: quorate remembers a 404 for a minute). The last case is an honest control.
fn hostile_narinfos() -> Vec<(&'static str, StorePath, Script)> {
    let nar = b"a NAR nobody will ask for".as_slice();
    let narinfo = |name: &str| made_up_narinfo(name, nar);
    let text = |name: &str| signed_by_c(narinfo(name));
    let path = |name: &str| made_up_path(name);

    let mut many_refs = narinfo("many-references");
    many_refs.references = (0..100_000)
        .map(|i| made_up_path(&format!("ref-{i}")).basename().to_owned())
        .collect();
    let many_refs = signed_by_c(many_refs);

    let duplicate_store_path = {
        let t = text("duplicate-store-path");
        let other = made_up_path("the-other-path");
        t.replacen("StorePath:", &format!("StorePath: {other}\nStorePath:"), 1)
    };
    let duplicate_nar_hash = {
        let t = text("duplicate-nar-hash");
        let evil = NarHash::from_digest([7; 32]);
        format!("{t}NarHash: {evil}\n")
    };
    let mut size_zero = made_up_narinfo("nar-size-zero", b"");
    size_zero.nar_size = 0;
    let mut size_huge = narinfo("nar-size-2-63");
    size_huge.nar_size = 1 << 63;

    let binary: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let real = text("lying-length");
    vec![
        (
            "garbage text",
            path("garbage"),
            Script::Serve(Bytes::from_static(b"this is not a narinfo\n\n:::\n")),
        ),
        ("binary bytes", path("binary"), Script::Serve(binary.into())),
        (
            "a 10 MiB narinfo",
            path("ten-mib"),
            Script::Serve(Bytes::from(format!(
                "{}{}",
                text("ten-mib"),
                "X-Padding: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
                    .repeat(150_000)
            ))),
        ),
        (
            "100 000 references",
            path("many-references"),
            Script::Serve(many_refs.into()),
        ),
        (
            "a duplicate StorePath",
            path("duplicate-store-path"),
            Script::Serve(duplicate_store_path.into()),
        ),
        (
            "a duplicate NarHash",
            path("duplicate-nar-hash"),
            Script::Serve(duplicate_nar_hash.into()),
        ),
        (
            "NarSize 0",
            path("nar-size-zero"),
            Script::Serve(signed_by_c(size_zero).into()),
        ),
        (
            "NarSize 2^63",
            path("nar-size-2-63"),
            Script::Serve(signed_by_c(size_huge).into()),
        ),
        (
            "a Content-Length of 10 MiB",
            path("lying-length"),
            Script::LyingLength {
                claimed: 10 << 20,
                body: real.clone().into(),
            },
        ),
        (
            "a Content-Length longer than the narinfo",
            path("short-body"),
            Script::LyingLength {
                claimed: 2000,
                body: text("short-body").into(),
            },
        ),
        (
            "a stall mid-narinfo",
            path("stalled"),
            Script::StallAfter {
                body: text("stalled").into(),
                after: 40,
            },
        ),
        (
            "a reset mid-narinfo",
            path("reset"),
            Script::ResetAfter {
                body: text("reset").into(),
                after: 40,
            },
        ),
        (
            "a redirect to another host",
            path("redirected"),
            Script::Redirect {
                status: 301,
                location: "http://127.0.0.1:9/elsewhere.narinfo".into(),
            },
        ),
    ]
}

/// An upstream answering narinfos with garbage, binary, 10 MiB, 100 000 references,
/// duplicate fields, NarSize 0 or 2^63, lying lengths, stalls, resets and redirects: every
/// such path is a clean 404 (nothing accepted, the failure recorded), while a well-formed
/// narinfo from the same upstream is served and other paths keep answering; memory stays
/// bounded.
#[test]
fn hostile_narinfos_are_clean_404s_and_nothing_is_accepted() {
    let cases = hostile_narinfos();
    let control_nar = b"an honest made-up NAR";
    let control = made_up_narinfo("honest-control", control_nar);
    let control_path = control.store_path.clone();
    let control_text = signed_by_c(control);
    for_each_backend(|backend| {
        let hostile = HostileUpstream::serve(c_cache());
        for (_, path, script) in &cases {
            hostile.script(&format!("/{}.narinfo", path.hash_part()), script.clone());
        }
        hostile.script(
            &format!("/{}.narinfo", control_path.hash_part()),
            Script::Serve(control_text.clone().into()),
        );
        let q = start(backend, vec![UpstreamSpec::new(hostile.url())]);
        for (what, path, _) in &cases {
            let (status, body) = get(&q, &format!("/{}.narinfo", path.hash_part()));
            assert_eq!(
                status,
                404,
                "{what}: {:?}",
                body.map(|b| String::from_utf8_lossy(&b).into_owned())
            );
            let decision = records::latest_decision(&q, CACHE, path.hash_part());
            assert!(
                decision
                    .as_ref()
                    .is_none_or(|d| d.outcome != Outcome::Accepted),
                "{what}: {decision:?}"
            );
        }
        records::wait_until(
            &q,
            "an upstream failure recorded per hostile narinfo",
            || records::events(&q, CACHE, "upstream_failure").len() >= cases.len(),
        );
        let (status, _) = get(&q, &format!("/{}.narinfo", control_path.hash_part()));
        assert_eq!(status, 200, "the well-formed control narinfo is served");
        assert_other_paths_answer(&q);
        assert_memory_bounded(&q, "hostile narinfos");
    });
}

/// One upstream answering with a narinfo quorate cannot even record (NarSize 2^63, beyond
/// what the database stores) must not take the path down for the honest upstreams beside it.
#[test]
fn an_unrecordable_narinfo_from_one_upstream_does_not_block_the_honest_answer() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    let mut huge = c_narinfo(hello);
    huge.nar_size = 1 << 63;
    // Not even a valid signature is needed to be recorded as evidence.
    huge.sigs = vec![format!(
        "{}:{}",
        fx.builder("C").key_name,
        "A".repeat(86) + "=="
    )];
    let huge = huge.render();
    for_each_backend(|backend| {
        let hostile = HostileUpstream::serve(c_cache());
        hostile.script(&hello.narinfo_path(), Script::Serve(huge.clone().into()));
        let honest = HostileUpstream::serve(c_cache());
        let q = start(
            backend,
            vec![
                UpstreamSpec::new(hostile.url()),
                UpstreamSpec::new(honest.url()),
            ],
        );
        let (status, body) = get(&q, &hello.narinfo_path());
        assert_eq!(
            status,
            200,
            "{:?}",
            body.map(|b| String::from_utf8_lossy(&b).into_owned())
        );
    });
}

// ---------------------------------------------------------------------------------------
// Where an upstream may send quorate, and where its token goes.
// ---------------------------------------------------------------------------------------

const TOKEN: &str = "private-cache-token";

/// A made-up path `name` whose NAR (its own bytes) the narinfo places at `url`: the narinfo
/// is validly signed by C, served by `private` under `/cache`, and the NAR's bytes are served
/// at each of `elsewhere` (server, raw path), so that fetching them would "work".
fn narinfo_pointing_at(
    private: &HostileUpstream,
    name: &str,
    url: &str,
    elsewhere: &[(&HostileUpstream, &str)],
) -> (StorePath, Bytes) {
    let nar = Bytes::from(format!("the NAR of {name}"));
    let mut info = made_up_narinfo(name, &nar);
    info.url = url.to_owned();
    info.compression = "none".into();
    let path = info.store_path.clone();
    private.script(
        &format!("/cache/{}.narinfo", path.hash_part()),
        Script::Serve(signed_by_c(info).into()),
    );
    for (server, at) in elsewhere {
        server.script(at, Script::Serve(nar.clone()));
    }
    (path, nar)
}

/// quorate's NAR URL path for a made-up path whose narinfo it serves.
fn served_nar_path(q: &Quorate, path: &StorePath) -> String {
    quorate_nar_path(q, path.hash_part())
}

/// A private cache at `<host>/cache` (with a bearer token) whose narinfos name NAR URLs on
/// another host (directly, or by redirecting there), or outside the cache (climbing with
/// `..`, `%2F`, `\`, an absolute path, an absolute URL on its own host, credentials in the
/// URL): the narinfo is served, but its NAR is refused (502, or a failed transfer for the
/// redirect), and neither the other host nor any path outside the cache ever sees a request.
/// Every request quorate made carried the token and stayed inside the cache.
#[test]
fn nar_urls_leaving_the_cache_or_its_host_are_never_requested() {
    for_each_backend(|backend| {
        let other = HostileUpstream::scripted();
        let private = HostileUpstream::serve_under(c_cache(), "/cache");
        let upstream = format!("{}/cache", private.url());
        let q = start(
            backend,
            vec![UpstreamSpec::new(&upstream).bearer_token(TOKEN)],
        );
        let cases = [
            ("other-host", format!("{}/nar/x.nar", other.url())),
            ("dot-dot", "../secret/x.nar".to_owned()),
            ("encoded-slash", "nar/..%2F..%2Fsecret/x.nar".to_owned()),
            ("backslash", "nar\\..\\..\\secret\\x.nar".to_owned()),
            ("absolute-path", "/secret/x.nar".to_owned()),
            (
                "same-host-outside",
                format!("{}/secret/x.nar", private.url()),
            ),
            (
                "credentials",
                format!("http://user:pw@{}/cache/nar/x.nar", private.host_port()),
            ),
        ];
        for (name, url) in &cases {
            let (path, _) = narinfo_pointing_at(
                &private,
                name,
                url,
                &[(&other, "/nar/x.nar"), (&private, "/secret/x.nar")],
            );
            let nar_path = served_nar_path(&q, &path);
            let (status, _) = get(&q, &nar_path);
            assert_eq!(status, 502, "{name}: NAR at {url}");
        }
        // The upstream's own NAR URL redirects to the other host.
        let (path, _) = narinfo_pointing_at(&private, "redirected", "nar/redirected.nar", &[]);
        private.script(
            "/cache/nar/redirected.nar",
            Script::Redirect {
                status: 302,
                location: format!("{}/nar/x.nar", other.url()),
            },
        );
        assert_no_nar(
            &q,
            &served_nar_path(&q, &path),
            "redirected to another host",
        );

        assert!(
            other.requests().is_empty(),
            "the other host was asked: {:?}",
            other.requests()
        );
        for r in private.requests() {
            assert!(
                r.path.starts_with("/cache/"),
                "a path outside the cache was asked: {r:?}"
            );
            let bearer = format!("Bearer {TOKEN}");
            assert_eq!(r.authorization.as_deref(), Some(bearer.as_str()), "{r:?}");
        }
        assert_other_paths_answer(&q);
    });
}

/// A host listed in the upstream's `nar_hosts` serves its NARs, whether the narinfo names it
/// or the upstream redirects there; the upstream's bearer token reaches only the upstream,
/// never the other host.
#[test]
fn a_listed_nar_host_serves_nars_but_never_sees_the_upstreams_token() {
    for_each_backend(|backend| {
        let cdn = HostileUpstream::scripted();
        let private = HostileUpstream::serve_under(c_cache(), "/cache");
        let upstream = format!("{}/cache", private.url());
        let q = start(
            backend,
            vec![UpstreamSpec::new(&upstream)
                .bearer_token(TOKEN)
                .nar_host(cdn.host_port())],
        );
        let direct_url = format!("{}/nar/direct.nar", cdn.url());
        let (direct, direct_nar) = narinfo_pointing_at(
            &private,
            "direct",
            &direct_url,
            &[(&cdn, "/nar/direct.nar")],
        );
        let (redirected, redirected_nar) = narinfo_pointing_at(
            &private,
            "via-redirect",
            "nar/via-redirect.nar",
            &[(&cdn, "/nar/via-redirect.nar")],
        );
        private.script(
            "/cache/nar/via-redirect.nar",
            Script::Redirect {
                status: 307,
                location: format!("{}/nar/via-redirect.nar", cdn.url()),
            },
        );
        for (path, nar) in [(&direct, &direct_nar), (&redirected, &redirected_nar)] {
            let (status, body) = get(&q, &served_nar_path(&q, path));
            assert_eq!(status, 200, "{path}");
            assert_eq!(body.expect("the NAR whole"), *nar, "{path}");
        }
        let asked = cdn.requests();
        assert_eq!(asked.len(), 2, "{asked:?}");
        for r in &asked {
            assert_eq!(
                r.authorization, None,
                "the token went to the other host: {r:?}"
            );
        }
        let bearer = format!("Bearer {TOKEN}");
        assert!(private
            .requests()
            .iter()
            .all(|r| r.authorization.as_deref() == Some(bearer.as_str())));
    });
}

// ---------------------------------------------------------------------------------------
// The log route.
// ---------------------------------------------------------------------------------------

/// `/log/<drv>` takes only a derivation file name, and asks each upstream for exactly that
/// one file under its base: `%5C..%5C` cannot climb out of a private cache, `%2F` cannot add
/// a directory, and a `?` in the name (legal in store paths) is part of the name, never a
/// query. No request leaves the cache, and the token goes only where it belongs.
#[test]
fn log_requests_name_one_derivation_file_inside_the_cache() {
    let private = HostileUpstream::serve_under(c_cache(), "/cache");
    private.script(
        "/secret",
        Script::Serve(Bytes::from_static(b"the operator's secret\n")),
    );
    let drv = made_up_path("strange?name=x.drv");
    let raw = format!("/cache/log/{}", drv.basename().replace('?', "%3F"));
    private.script(&raw, Script::Serve(Bytes::from_static(b"build log\n")));
    let upstream = format!("{}/cache", private.url());
    let q = start(
        Backend::Sqlite,
        vec![UpstreamSpec::new(&upstream).bearer_token(TOKEN)],
    );

    let hash = made_up_path("x").hash_part().to_owned();
    for bad in [
        "%5C..%5C..%5C..%5Csecret".to_owned(),
        "%5C..%5Csecret".to_owned(),
        "..%2F..%2Fsecret".to_owned(),
        format!("{hash}-x.drv%2F..%2F..%2F..%2Fsecret"),
        format!("{hash}-x.drv%3Fa=b"),
        format!("{hash}-not-a-derivation"),
        "secret.drv".to_owned(),
        format!("{hash}-.drv"),
    ] {
        let (status, _) = get(&q, &format!("/log/{bad}"));
        assert_eq!(status, 400, "/log/{bad}");
    }
    assert!(
        private.requests().is_empty(),
        "malformed names reached the upstream: {:?}",
        private.requests()
    );

    let encoded = drv.basename().replace('?', "%3F");
    let (status, body) = get(&q, &format!("/log/{encoded}"));
    assert_eq!(status, 200, "the log of {drv}");
    assert_eq!(body.expect("the whole log").as_ref(), b"build log\n");
    let asked = private.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].path, raw);
    assert_eq!(asked[0].query, None, "the name became a query: {asked:?}");
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(asked[0].authorization.as_deref(), Some(bearer.as_str()));
}
