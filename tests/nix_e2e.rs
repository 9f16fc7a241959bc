//! End-to-end stories with the real Nix client (Debian's nix-bin), real Nix-made signed
//! binary caches served over HTTP, a real `quorate serve` process, and its database on SQLite
//! and on PostgreSQL. Each story is one a user or an operator would tell.
//!
//! Run with `scripts/test.sh nix_e2e` (it installs Nix and starts PostgreSQL). The fixture
//! caches are built once, by `tests/fixtures/make-nix-caches.sh`, under `target/nix-fixtures`.
//!
//! Nothing here asserts on time: where a story is about not waiting, it checks the order of
//! events instead (the answer came while the slow upstream still had not answered).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::adversary::{malicious_cache, mismatch_cache, served_sigs};
use common::fixtures::FixturePath;
use common::http::{http_get, http_head};
use common::records;
use common::{
    fixtures, for_each_backend, nar_hash_of, report, scratch_dir, serve_builder, serve_builders,
    with_builders, Backend, Behavior, CacheSpec, NixClient, Quorate, UpstreamServer,
};
use quorate_core::quorum::Outcome;

/// The cache every story configures (mounted at `/`).
const CACHE: &str = "main";

fn honest_keys(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| fixtures().builder(n).public_key.clone())
        .collect()
}

/// quorate trusting builders A, B, C and M with quorum 2 and `on_dissent`, each builder
/// publishing through its own upstream, M's being the malicious cache `m_cache`.
fn start_three_honest_and_m(
    backend: Backend,
    m_cache: &Path,
    on_dissent: &str,
) -> (Vec<UpstreamServer>, Quorate) {
    let mut ups = serve_builders(&["A", "B", "C"]);
    ups.push(UpstreamServer::serve(m_cache));
    let spec = with_builders(
        CacheSpec::nix(CACHE).quorum(2).on_dissent(on_dissent),
        &["A", "B", "C", "M"],
    )
    .upstreams(&ups);
    (ups, Quorate::start(backend, vec![spec]))
}

/// A client trusting quorate cannot get `path` (`what` says why it must fail), and quorate
/// recorded the conflict and its refusal.
fn assert_refused_as_disputed(q: &Quorate, path: &FixturePath, what: &str) {
    NixClient::new(&q.substituter(), &[q.public_key()])
        .substitute(&[&path.store_path])
        .assert_failed(what);
    records::wait_for_event(q, CACHE, "conflict", path.hash_part());
    let decision =
        records::latest_decision(q, CACHE, path.hash_part()).expect("the refusal is recorded");
    assert_eq!(decision.outcome, Outcome::Refused, "{decision:?}");
}

// ---------------------------------------------------------------------------------------
// The harness itself: the fixture caches are what they claim to be, talking to Nix directly.
// ---------------------------------------------------------------------------------------

/// Each honest cache works on its own for a client trusting its key, and for no other key:
/// the fixtures and the client driver are sound before quorate is put in between.
#[test]
fn harness_each_honest_cache_serves_its_builders_paths_to_the_nix_client() {
    let fx = fixtures();
    for name in ["A", "B", "C"] {
        let b = fx.builder(name);
        let up = UpstreamServer::serve(&b.cache_dir);
        let got =
            NixClient::new(up.url(), &[&b.public_key]).substitute(&[&fx.paths.app.store_path]);
        got.assert_ok(&format!("cache {name} ({})", b.compression));
        assert_eq!(got.read(&fx.paths.hello.store_path, ""), b"hello\n");
        assert_eq!(
            got.info(&fx.paths.hello.store_path).nar_hash,
            fx.paths.hello.nar_hash_sri
        );
        assert_eq!(
            got.info(&fx.paths.app.store_path).references,
            vec![fx.paths.hello.store_path.clone()]
        );
        let other = if name == "A" { "B" } else { "A" };
        NixClient::new(up.url(), &[&fx.builder(other).public_key])
            .substitute(&[&fx.paths.hello.store_path])
            .assert_failed(&format!("cache {name} with only key {other} trusted"));
    }
}

/// The malicious cache is a real attack: a client that trusts key M alone installs the evil
/// hello. This is what quorate exists to stop.
#[test]
fn harness_a_client_trusting_only_the_malicious_key_installs_the_evil_hello() {
    let fx = fixtures();
    let dir = scratch_dir("cache-m");
    let evil = UpstreamServer::serve(malicious_cache(fx, &dir.path().join("M")));
    let got = NixClient::new(evil.url(), &[&fx.builder("M").public_key])
        .substitute(&[&fx.paths.hello.store_path]);
    got.assert_ok("malicious cache, key M trusted");
    let content = got.read(&fx.paths.hello.store_path, "");
    assert!(content.starts_with(b"evil"), "got {content:?}");
    NixClient::new(evil.url(), &honest_keys(&["A", "B", "C"]))
        .substitute(&[&fx.paths.hello.store_path])
        .assert_failed("malicious cache, honest keys trusted");
}

/// The mismatch cache's hello narinfo is validly signed, but its NAR is other bytes: Nix
/// itself refuses it after hashing.
#[test]
fn harness_the_nix_client_rejects_a_nar_that_does_not_match_its_signed_hash() {
    let fx = fixtures();
    let dir = scratch_dir("cache-mismatch");
    let bad = UpstreamServer::serve(mismatch_cache(fx, &dir.path().join("X")));
    let got = NixClient::new(bad.url(), &[&fx.builder("C").public_key])
        .substitute(&[&fx.paths.hello.store_path]);
    got.assert_failed("NAR swapped under a valid signature");
    assert!(got.output.contains("hash mismatch"), "{}", got.output);
}

// ---------------------------------------------------------------------------------------
// quorate.
// ---------------------------------------------------------------------------------------

/// Three honest builders publish through three upstreams (xz, zstd, uncompressed). With
/// quorum 2, a client that trusts only quorate's key gets hello, app with its dependency, and
/// the 100 MiB big path, and every path re-hashes to what the builders built.
#[test]
fn three_honest_builders_give_a_client_trusting_only_quorate_every_path() {
    let fx = fixtures();
    for_each_backend(|backend| {
        let ups = serve_builders(&["A", "B", "C"]);
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B", "C"]).upstreams(&ups);
        let q = Quorate::start(backend, vec![spec]);
        let client = NixClient::new(&q.substituter(), &[q.public_key()]);

        let got = client.substitute(&[&fx.paths.app.store_path]);
        got.assert_ok("app and its dependency hello through quorate");
        assert_eq!(got.read(&fx.paths.hello.store_path, ""), b"hello\n");
        for p in [&fx.paths.hello, &fx.paths.app] {
            let info = got.info(&p.store_path);
            assert_eq!(info.nar_hash, p.nar_hash_sri, "{}", p.store_path);
            assert_eq!(info.nar_size, p.nar_size);
            assert!(
                info.signatures
                    .iter()
                    .any(|s| s.starts_with("quorate-test-1:")),
                "quorate's own signature is on {}: {:?}",
                p.store_path,
                info.signatures
            );
        }

        let decision = records::latest_decision(&q, CACHE, fx.paths.hello.hash_part())
            .expect("a decision about hello is recorded");
        assert_eq!(decision.outcome, Outcome::Accepted, "{decision:?}");
        assert!(decision.agreeing.len() >= 2, "{decision:?}");
        let agreed = decision.content.as_ref().expect("accepted content");
        assert_eq!(agreed.nar_hash.to_string(), fx.paths.hello.nar_hash);

        let big = client.substitute(&[&fx.paths.big.store_path]);
        big.assert_ok("big through quorate");
        assert_eq!(
            big.info(&fx.paths.big.store_path).nar_hash,
            fx.paths.big.nar_hash_sri
        );
        let direct = NixClient::new(ups[2].url(), &[&fx.builder("C").public_key])
            .substitute(&[&fx.paths.big.store_path]);
        direct.assert_ok("big directly from upstream C");
        report(&format!(
            "[{backend:?}] big ({} MiB): through quorate (cold, quorum 2 of 3) {:.2} s; \
             directly from upstream C (uncompressed) {:.2} s",
            fx.big_mb,
            big.elapsed.as_secs_f64(),
            direct.elapsed.as_secs_f64()
        ));
        let warm = client.substitute(&[&fx.paths.big.store_path]);
        warm.assert_ok("big through quorate, again");
        report(&format!(
            "[{backend:?}] big through quorate (warm) {:.2} s",
            warm.elapsed.as_secs_f64()
        ));
    });
}

/// One honest builder and one malicious builder sign different contents for hello, both
/// validly. With quorum 2 and `on_dissent = "refuse"`, hello never reaches the client and
/// the conflict is recorded.
#[test]
fn an_honest_and_a_malicious_builder_disagree_and_hello_is_refused() {
    let fx = fixtures();
    let dir = scratch_dir("cache-m");
    let m_cache = malicious_cache(fx, &dir.path().join("M"));
    for_each_backend(|backend| {
        let a = serve_builder("A");
        let m = UpstreamServer::serve(&m_cache);
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "M"])
            .upstream(a.url())
            .upstream(m.url());
        let q = Quorate::start(backend, vec![spec]);
        let hello = &fx.paths.hello;

        let answer = q.narinfo(hello);
        assert_eq!(
            answer.status,
            404,
            "narinfo for a disputed path: {}",
            answer.text()
        );
        assert_refused_as_disputed(&q, hello, "disputed hello through quorate");
    });
}

/// Three honest builders and a malicious one; quorum 2 with `refuse`: a single dissenting
/// trusted builder is enough to refuse the path (and record why).
#[test]
fn with_refuse_one_malicious_builder_among_four_blocks_hello() {
    let fx = fixtures();
    let dir = scratch_dir("cache-m");
    let m_cache = malicious_cache(fx, &dir.path().join("M"));
    for_each_backend(|backend| {
        let (_ups, q) = start_three_honest_and_m(backend, &m_cache, "refuse");
        let hello = &fx.paths.hello;
        assert_eq!(q.narinfo(hello).status, 404);
        assert_refused_as_disputed(&q, hello, "hello disputed by M, refuse policy");
    });
}

/// Three honest builders and a malicious one; quorum 2 with `majority`: the honest content
/// wins 3 to 1 and the client installs the real hello, never the evil one.
#[test]
fn with_majority_three_honest_builders_outvote_a_malicious_one() {
    let fx = fixtures();
    let dir = scratch_dir("cache-m");
    let m_cache = malicious_cache(fx, &dir.path().join("M"));
    for_each_backend(|backend| {
        let (_ups, q) = start_three_honest_and_m(backend, &m_cache, "majority");
        let hello = &fx.paths.hello;
        let got =
            NixClient::new(&q.substituter(), &[q.public_key()]).substitute(&[&hello.store_path]);
        got.assert_ok("hello by majority");
        assert_eq!(got.read(&hello.store_path, ""), b"hello\n");
        assert_eq!(got.info(&hello.store_path).nar_hash, hello.nar_hash_sri);
        let decision = records::latest_decision(&q, CACHE, hello.hash_part())
            .expect("the decision is recorded");
        assert_eq!(decision.outcome, Outcome::Accepted, "{decision:?}");
        assert!(!decision.agreeing.iter().any(|b| b == "m"), "{decision:?}");
        assert_eq!(
            decision.content.as_ref().map(|c| c.nar_hash.to_string()),
            Some(hello.nar_hash.clone())
        );
    });
}

/// An upstream serves a validly signed narinfo whose NAR bytes are something else. quorate
/// hashes the bytes: the client's substitution fails (it never gets a complete wrong file),
/// nothing is committed to the NAR store, and the mismatch is recorded against the upstream.
#[test]
fn a_nar_that_does_not_match_its_signed_hash_is_never_served_nor_stored() {
    let fx = fixtures();
    let dir = scratch_dir("cache-mismatch");
    let bad_cache = mismatch_cache(fx, &dir.path().join("X"));
    let evil = fx.evil_hello_nar();
    for_each_backend(|backend| {
        let bad = UpstreamServer::serve(&bad_cache);
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(1), &["C"]).upstream(bad.url());
        let q = Quorate::start(backend, vec![spec]);
        let hello = &fx.paths.hello;
        let got =
            NixClient::new(&q.substituter(), &[q.public_key()]).substitute(&[&hello.store_path]);
        got.assert_failed("hello whose NAR does not match its NarHash");
        assert!(
            bad.nar_requests() >= 1,
            "quorate fetched the NAR: {:?}",
            bad.all_stats()
        );
        records::wait_for_event(&q, CACHE, "mismatch", hello.hash_part());
        assert_nothing_stored(&q, &hello.nar_hash, &evil);
    });
}

/// The same tampering upstream (preferred by priority) beside a good upstream carrying the
/// same builder's signature: the client still gets hello. A first attempt may fail (quorate
/// aborts the stream it started from the bad upstream); the second attempt must succeed.
///
/// Builder A is configured but publishes through neither upstream: under `refuse` quorate then
/// waits for both upstreams before deciding (A might still dissent), so it knows both NAR
/// sources and the bad one, preferred by priority, is really tried. With C alone, the first
/// narinfo to arrive would settle the decision and the bad source might never be seen.
#[test]
fn a_nar_mismatch_on_one_upstream_falls_back_to_a_good_upstream() {
    let fx = fixtures();
    let dir = scratch_dir("cache-mismatch");
    let bad_cache = mismatch_cache(fx, &dir.path().join("X"));
    for_each_backend(|backend| {
        let bad = UpstreamServer::serve(&bad_cache);
        let good = serve_builder("C");
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(1), &["C", "A"])
            .upstream_with_priority(bad.url(), 1)
            .upstream_with_priority(good.url(), 2);
        let q = Quorate::start(backend, vec![spec]);
        let hello = &fx.paths.hello;
        let client = NixClient::new(&q.substituter(), &[q.public_key()]);
        let first = client.substitute(&[&hello.store_path]);
        let got = if first.ok {
            report(&format!(
                "[{backend:?}] mismatch fallback: hello arrived on the first attempt"
            ));
            first
        } else {
            eprintln!(
                "[{backend:?}] first attempt failed (expected when the bad upstream was tried \
                 first), trying again:\n{}",
                first.output
            );
            let second = client.substitute(&[&hello.store_path]);
            second.assert_ok("hello on the second attempt");
            report(&format!("[{backend:?}] mismatch fallback: hello arrived on the second attempt (the first failed as the bad upstream's stream was aborted)"));
            second
        };
        got.assert_ok("hello with a good upstream beside the bad one");
        assert_eq!(got.read(&hello.store_path, ""), b"hello\n");
        eprintln!(
            "[{backend:?}] NAR requests: bad upstream {}, good upstream {}",
            bad.nar_requests(),
            good.nar_requests()
        );
        assert!(
            bad.nar_requests() >= 1,
            "the upstream with priority 1 is tried first for the NAR"
        );
        records::wait_for_event(&q, CACHE, "mismatch", hello.hash_part());
    });
}

/// Builders are counted, not upstreams or keys: builder a's signatures served through two
/// upstreams, or one builder holding two keys, are one vote and cannot reach quorum 2 (the
/// other configured builder publishes nowhere here). The same two caches as two separate
/// builders do reach it (the control, so the 404s are the counting rule at work).
#[test]
fn one_builder_counts_once_however_many_upstreams_or_keys_carry_it() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    for_each_backend(|backend| {
        // Builder a's signatures through two upstreams; builder b silent.
        let a1 = serve_builder("A");
        let a2 = serve_builder("A");
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B"])
            .upstream(a1.url())
            .upstream(a2.url());
        let q = Quorate::start(backend, vec![spec]);
        let answer = q.narinfo(hello);
        assert_eq!(
            answer.status,
            404,
            "one builder via two upstreams: {}",
            answer.text()
        );
        NixClient::new(&q.substituter(), &[q.public_key()])
            .substitute(&[&hello.store_path])
            .assert_failed("one builder via two upstreams, quorum 2");
        assert!(
            a1.requests(&hello.narinfo_path()) >= 1 && a2.requests(&hello.narinfo_path()) >= 1,
            "both upstreams were asked"
        );
        drop(q);

        // One builder holding keys A and B, its signatures through two upstreams; c silent.
        let a = serve_builder("A");
        let b = serve_builder("B");
        let spec = CacheSpec::nix(CACHE)
            .quorum(2)
            .builder("ab", &honest_keys(&["A", "B"]))
            .builder("c", &honest_keys(&["C"]))
            .upstream(a.url())
            .upstream(b.url());
        let q = Quorate::start(backend, vec![spec]);
        let answer = q.narinfo(hello);
        assert_eq!(
            answer.status,
            404,
            "one builder with two keys: {}",
            answer.text()
        );
        drop(q);

        // Control: the same two caches as two builders reach quorum 2.
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B"])
            .upstream(a.url())
            .upstream(b.url());
        let q = Quorate::start(backend, vec![spec]);
        let answer = q.narinfo(hello);
        assert_eq!(answer.status, 200, "two builders agree: {}", answer.text());
    });
}

/// With `on_dissent = "majority"`, quorum 2 and three builders, a slow upstream (10 s) or a
/// dead one (accepts, never answers) does not hold up the answer the two others agree on:
/// quorate answers while the slow upstream's request is still pending, and the client gets
/// hello.
#[test]
fn a_slow_or_dead_upstream_does_not_block_a_majority_the_others_reach() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    for behavior in [Behavior::Delay(Duration::from_secs(10)), Behavior::Hang] {
        for_each_backend(|backend| {
            let a = serve_builder("A");
            let b = serve_builder("B");
            let slow = UpstreamServer::serve_with(&fx.builder("C").cache_dir, behavior);
            let spec = with_builders(
                CacheSpec::nix(CACHE).quorum(2).on_dissent("majority"),
                &["A", "B", "C"],
            )
            .upstream(a.url())
            .upstream(b.url())
            .upstream(slow.url());
            let q = Quorate::start(backend, vec![spec]);
            let started = Instant::now();
            let answer = q.narinfo(hello);
            let took = started.elapsed();
            let slow_stats = slow.stats(&hello.narinfo_path());
            assert_eq!(answer.status, 200, "{behavior:?}: {}", answer.text());
            assert_eq!(
                slow_stats.answered, 0,
                "{behavior:?}: quorate answered only after the slow upstream did"
            );
            report(&format!(
                "[{backend:?}] {behavior:?} upstream: narinfo answered in {:.3} s; slow upstream: \
                 {} request(s), {} pending",
                took.as_secs_f64(),
                slow_stats.requests,
                slow_stats.pending
            ));
            let got = NixClient::new(&q.substituter(), &[q.public_key()])
                .substitute(&[&hello.store_path]);
            got.assert_ok(&format!("hello with a {behavior:?} upstream"));
            assert_eq!(got.read(&hello.store_path, ""), b"hello\n");
        });
    }
}

/// SIGTERM (how systemd and container runtimes stop a service) lets background work finish:
/// an upstream answer still on its way when the signal arrives is recorded before quorate
/// exits, and the exit is clean.
#[test]
fn on_sigterm_quorate_records_late_answers_before_it_exits() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    for_each_backend(|backend| {
        let a = serve_builder("A");
        let b = serve_builder("B");
        let slow = UpstreamServer::serve_with(
            &fx.builder("C").cache_dir,
            Behavior::Delay(Duration::from_secs(3)),
        );
        let spec = with_builders(
            CacheSpec::nix(CACHE).quorum(2).on_dissent("majority"),
            &["A", "B", "C"],
        )
        .upstream(a.url())
        .upstream(b.url())
        .upstream(slow.url());
        let mut q = Quorate::start(backend, vec![spec]);
        let answer = q.narinfo(hello);
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(
            slow.stats(&hello.narinfo_path()).answered,
            0,
            "the answer came before the slow upstream's"
        );
        let status = q.terminate();
        assert!(
            status.success(),
            "quorate stops cleanly on SIGTERM: {status}"
        );
        let recorded = records::attestations(&q, CACHE, hello.hash_part());
        assert!(
            recorded.iter().any(|a| a.upstream == slow.url()),
            "the slow upstream's late answer was recorded before exit: {recorded:?}"
        );
    });
}

/// A client that hangs up while its narinfo is being decided does not cut the resolution
/// short: every upstream's answer and the decision are still recorded, and the next request
/// is answered from them.
#[test]
fn a_client_hanging_up_mid_resolution_does_not_cut_the_decision_short() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    for_each_backend(|backend| {
        let a = serve_builder("A");
        let b = serve_builder("B");
        // With refuse, the decision waits for every upstream, so it is still pending when
        // the client goes.
        let slow = UpstreamServer::serve_with(
            &fx.builder("C").cache_dir,
            Behavior::Delay(Duration::from_secs(2)),
        );
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B", "C"])
            .upstream(a.url())
            .upstream(b.url())
            .upstream(slow.url());
        let q = Quorate::start(backend, vec![spec]);
        hang_up_after_sending(q.url(), &hello.narinfo_path());
        records::wait_until(&q, "the decision about hello", || {
            records::latest_decision(&q, CACHE, hello.hash_part()).is_some()
        });
        let decision = records::latest_decision(&q, CACHE, hello.hash_part()).expect("waited");
        assert_eq!(decision.outcome, Outcome::Accepted, "{decision:?}");
        let recorded = records::attestations(&q, CACHE, hello.hash_part());
        for up in [&a, &b, &slow] {
            assert!(
                recorded.iter().any(|r| r.upstream == up.url()),
                "{}'s answer was recorded: {recorded:?}",
                up.url()
            );
        }
        assert_eq!(q.narinfo(hello).status, 200);
        assert_eq!(
            slow.stats(&hello.narinfo_path()).requests,
            1,
            "the next request was answered without fanning out again"
        );
    });
}

/// HEAD on a NAR not fetched yet (what existence checks send) is answered from the decision,
/// with the NAR's length, and downloads nothing; GET then fetches it, once.
#[test]
fn head_on_a_cold_nar_answers_from_the_decision_without_downloading() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    for_each_backend(|backend| {
        let ups = serve_builders(&["A", "B"]);
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B"]).upstreams(&ups);
        let q = Quorate::start(backend, vec![spec]);
        let narinfo = q.narinfo(hello);
        assert_eq!(narinfo.status, 200, "{}", narinfo.text());
        let text = narinfo.text();
        let nar_url = text
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .expect("the narinfo names its NAR");
        let url = format!("{}/{nar_url}", q.url());
        let downloads = || ups.iter().map(|u| u.nar_requests()).sum::<u64>();

        let head = http_head(&url).expect("HEAD answered");
        assert_eq!(head.status, 200, "{}", head.summary());
        assert_eq!(
            head.header("content-length"),
            Some(hello.nar_size.to_string().as_str())
        );
        assert_eq!(
            q.metric(r#"quorate_nar_requests_total{cache="main",source="upstream"}"#) as u64,
            0,
            "HEAD started no upstream fetch"
        );
        let unknown = url.replace(&nar_url[4..10], "000000");
        assert_eq!(http_head(&unknown).expect("HEAD answered").status, 404);

        let got = http_get(&url).expect("GET answered");
        assert_eq!(got.status, 200);
        assert_eq!(nar_hash_of(got.bytes()), hello.nar_hash);
        assert_eq!(downloads(), 1);
        assert_eq!(
            q.metric(r#"quorate_nar_requests_total{cache="main",source="upstream"}"#) as u64,
            1
        );
    });
}

/// Sends `GET path` to the server at `base` and closes the connection before any answer.
fn hang_up_after_sending(base: &str, path: &str) {
    use std::io::Write;
    let addr = base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).expect("connecting to quorate");
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("sending");
    // Long enough for quorate to read the request and start deciding.
    std::thread::sleep(Duration::from_millis(300));
    drop(conn);
}

/// Every signature the upstreams served is in the database as an attestation, valid ones and
/// unknown-key ones alike (builder C is not configured here: its signatures are evidence).
#[test]
fn every_signature_the_upstreams_served_is_recorded_as_an_attestation() {
    let fx = fixtures();
    for_each_backend(|backend| {
        let ups = serve_builders(&["A", "B", "C"]);
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B"]).upstreams(&ups);
        let q = Quorate::start(backend, vec![spec]);
        NixClient::new(&q.substituter(), &[q.public_key()])
            .substitute(&[&fx.paths.app.store_path])
            .assert_ok("app through quorate");

        let mut expected = Vec::new();
        for u in &ups {
            for (path, sig) in served_sigs(u) {
                expected.push((u.url().to_owned(), path, sig));
            }
        }
        assert!(
            expected.len() >= 6,
            "each of 3 upstreams served hello's and app's narinfo: {expected:?}"
        );
        records::wait_until(&q, "every served Sig recorded", || {
            expected.iter().all(|(url, path, sig)| {
                let hash = path.trim_start_matches('/').trim_end_matches(".narinfo");
                records::attestations(&q, CACHE, hash)
                    .iter()
                    .any(|a| &a.signature == sig && a.upstream.trim_end_matches('/') == url)
            })
        });
        for (_, path, sig) in &expected {
            let hash = path.trim_start_matches('/').trim_end_matches(".narinfo");
            let recorded = records::attestations(&q, CACHE, hash);
            let a = recorded
                .iter()
                .find(|a| &a.signature == sig)
                .expect("recorded");
            let key_c = sig.starts_with(&format!("{}:", fx.builder("C").key_name));
            let want = if key_c { "unknown_key" } else { "valid" };
            assert_eq!(a.status.as_str(), want, "{sig}");
            assert_eq!(a.hash_part.as_str(), hash);
        }
        eprintln!(
            "[{backend:?}] {} served Sig lines, all recorded",
            expected.len()
        );
    });
}

/// Checks that no file under quorate's state dir holds the bad bytes or is named after the
/// NarHash the bad bytes claimed.
fn assert_nothing_stored(q: &Quorate, claimed_nar_hash: &str, bad_bytes: &[u8]) {
    let claimed = claimed_nar_hash.trim_start_matches("sha256:").to_owned();
    let bad_hash = nar_hash_of(bad_bytes);
    let mut stack = vec![q.state_dir().to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains(&claimed),
                "a file named after the claimed NarHash was committed: {}",
                path.display()
            );
            if entry.metadata().map(|m| m.len()).ok() == Some(bad_bytes.len() as u64) {
                let bytes = std::fs::read(&path).unwrap_or_default();
                assert!(
                    bytes != bad_bytes,
                    "the mismatching NAR ({bad_hash}) was kept at {}",
                    path.display()
                );
            }
        }
    }
}

/// A CI fleet asking for one path at once costs each upstream one narinfo request and the
/// NAR one download: 500 concurrent narinfo requests for an uncached path share one
/// resolution, and 50 concurrent NAR requests share one verified fetch (the upstreams answer
/// after 300 ms, so every request arrives while the first is still in flight).
#[test]
fn concurrent_requests_for_one_uncached_path_share_one_upstream_fetch() {
    let fx = fixtures();
    let app = &fx.paths.app;
    for_each_backend(|backend| {
        let delay = Behavior::Delay(Duration::from_millis(300));
        let a = UpstreamServer::serve_with(&fx.builder("A").cache_dir, delay);
        let c = UpstreamServer::serve_with(&fx.builder("C").cache_dir, delay);
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "C"])
            .upstream(a.url())
            .upstream(c.url());
        let q = Quorate::start(backend, vec![spec]);
        let narinfo_url = format!("{}/{}.narinfo", q.url(), app.hash_part());
        let answers = common::block_on(futures_util::future::join_all(
            (0..500).map(|_| common::http_get_async(&narinfo_url, Duration::from_secs(60))),
        ));
        let bodies: std::collections::BTreeSet<Vec<u8>> = answers
            .into_iter()
            .map(|a| {
                let a = a.expect("narinfo request");
                assert_eq!(a.status, 200, "{}", a.text());
                a.bytes().to_vec()
            })
            .collect();
        assert_eq!(bodies.len(), 1, "every client got the same narinfo");
        for up in [&a, &c] {
            assert_eq!(
                up.requests(&app.narinfo_path()),
                1,
                "500 concurrent requests cost each upstream one narinfo request"
            );
        }

        let narinfo = String::from_utf8_lossy(bodies.iter().next().unwrap()).into_owned();
        let nar_url = narinfo
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .expect("URL line");
        let nar_url = format!("{}/{nar_url}", q.url());
        let nars = common::block_on(futures_util::future::join_all(
            (0..50).map(|_| common::http_get_async(&nar_url, Duration::from_secs(60))),
        ));
        for n in nars {
            let n = n.expect("NAR request");
            assert_eq!(n.status, 200);
            assert_eq!(nar_hash_of(n.bytes()), app.nar_hash);
        }
        assert_eq!(
            a.nar_requests() + c.nar_requests(),
            1,
            "50 concurrent NAR requests cost one upstream download"
        );
    });
}

/// With `majority`, two honest builders answer first and settle the path; the malicious
/// builder's upstream answers later. The answer did not wait for it, yet its dissent is not
/// lost: it is recorded as a conflict, and the decision stands (2 against 1).
#[test]
fn a_late_dissent_after_a_majority_answer_is_recorded_as_a_conflict() {
    let fx = fixtures();
    let dir = scratch_dir("cache-m-late");
    let m_cache = malicious_cache(fx, &dir.path().join("M"));
    let hello = &fx.paths.hello;
    for_each_backend(|backend| {
        let mut ups = serve_builders(&["A", "B"]);
        ups.push(UpstreamServer::serve_with(
            &m_cache,
            Behavior::Delay(Duration::from_millis(1500)),
        ));
        let spec = with_builders(
            CacheSpec::nix(CACHE).quorum(2).on_dissent("majority"),
            &["A", "B", "M"],
        )
        .upstreams(&ups);
        let q = Quorate::start(backend, vec![spec]);
        let answer = q.narinfo(hello);
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(
            ups[2].stats(&hello.narinfo_path()).answered,
            0,
            "the answer came before the malicious upstream's"
        );
        let conflict = records::wait_for_event(&q, CACHE, "conflict", hello.hash_part());
        assert!(conflict.detail.contains("late dissent"), "{conflict:?}");
        let decision = records::latest_decision(&q, CACHE, hello.hash_part())
            .expect("the decision is recorded");
        assert_eq!(decision.outcome, Outcome::Accepted, "{decision:?}");
        let got =
            NixClient::new(&q.substituter(), &[q.public_key()]).substitute(&[&hello.store_path]);
        got.assert_ok("hello after a late dissent");
        assert_eq!(got.read(&hello.store_path, ""), b"hello\n");
    });
}
