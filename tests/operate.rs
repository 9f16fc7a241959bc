//! Operating quorate: what an operator sees and asks once it has decided real paths, one of
//! them against a dissenting builder — the JSON API, the status page in a real browser
//! (headless Chromium), and `quorate challenge`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::adversary::{copy_cache, malicious_cache, narinfo_file, replace_file};
use common::http::http_get;
use common::{
    fixtures, for_each_backend, report, scratch_dir, serve_builder, with_builders, Backend,
    CacheSpec, Quorate, UpstreamServer,
};
use serde_json::Value;

/// The cache every story configures (mounted at `/`).
const CACHE: &str = "main";

/// A key name an upstream made up to attack the status page.
const SCRIPT_KEY: &str = "<script>document.title='pwned'</script>";

/// Builder C's honest cache, whose app narinfo also carries a signature by a key named with
/// markup: evidence quorate records (unknown key) and shows.
fn cache_with_a_script_key(dst: &Path) -> PathBuf {
    let fx = fixtures();
    copy_cache(&fx.builder("C").cache_dir, dst);
    let file = narinfo_file(dst, &fx.paths.app);
    let text = std::fs::read_to_string(&file).expect("app's narinfo");
    let forged = format!("{text}Sig: {SCRIPT_KEY}:AAAA\n");
    replace_file(&file, forged.as_bytes());
    dst.to_path_buf()
}

/// Honest A, B and C (C's upstream also carrying a signature by a markup-named key) and
/// malicious M, quorum 2 with majority: hello is accepted over M's dissent, app plainly.
fn decided_world(backend: Backend, dir: &Path) -> (Vec<UpstreamServer>, Quorate) {
    let fx = fixtures();
    let ups = vec![
        UpstreamServer::serve(&fx.builder("A").cache_dir),
        UpstreamServer::serve(&fx.builder("B").cache_dir),
        UpstreamServer::serve(cache_with_a_script_key(&dir.join("C"))),
        UpstreamServer::serve(malicious_cache(fx, &dir.join("M"))),
    ];
    let spec = with_builders(
        CacheSpec::nix(CACHE).quorum(2).on_dissent("majority"),
        &["A", "B", "C", "M"],
    )
    .upstreams(&ups);
    let q = Quorate::start(backend, vec![spec]);
    for path in [&fx.paths.hello, &fx.paths.app] {
        let answer = q.narinfo(path);
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    // Majority answers before every upstream did; the rest is recorded in the background.
    common::records::wait_until(&q, "every upstream's answer recorded", || {
        let hello = common::records::attestations(&q, CACHE, fx.paths.hello.hash_part());
        let app = common::records::attestations(&q, CACHE, fx.paths.app.hash_part());
        // hello: A, B, C and M; app: the same and the markup-named key.
        hello.len() >= 4 && app.len() >= 5
    });
    (ups, q)
}

fn json(q: &Quorate, path: &str) -> Value {
    let answer = http_get(&format!("{}{path}", q.url())).expect("API answered");
    assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    serde_json::from_slice(answer.bytes()).expect("JSON")
}

#[test]
fn the_api_reports_builder_agreement_and_the_disputed_path() {
    let fx = fixtures();
    for_each_backend(|backend| {
        let dir = scratch_dir("operate-api");
        let (_ups, q) = decided_world(backend, dir.path());
        let builders = json(&q, "/api/v1/builders");
        let list = &builders["caches"][0]["builders"];
        let find = |name: &str| {
            list.as_array()
                .and_then(|l| l.iter().find(|b| b["name"] == name))
                .cloned()
                .unwrap_or_else(|| panic!("builder {name} in {builders}"))
        };
        let a = find("a");
        assert_eq!(a["agreement"]["b"]["shared"], 2, "{a}");
        assert_eq!(a["agreement"]["b"]["rate"], 1.0, "{a}");
        assert_eq!(a["agreement"]["m"]["shared"], 2, "{a}");
        assert_eq!(
            a["agreement"]["m"]["agreed"], 1,
            "M lied about hello only: {a}"
        );
        assert_eq!(find("m")["attestations"]["valid"], 2);

        let conflicts = json(&q, "/api/v1/conflicts?limit=10");
        let items = conflicts["conflicts"].as_array().expect("a list");
        assert_eq!(items.len(), 1, "{conflicts}");
        assert_eq!(items[0]["hash_part"], fx.paths.hello.hash_part());
        assert_eq!(items[0]["decision"], "accepted");
        let by_m = items[0]["claims"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["builder"] == "m"))
            .expect("M's claim is listed");
        assert_ne!(by_m["nar_hash"], fx.paths.hello.nar_hash.as_str());
        assert_eq!(conflicts["next_offset"], Value::Null);
        let bad = http_get(&format!("{}/api/v1/conflicts?cache=nope", q.url())).expect("answer");
        assert_eq!(bad.status, 404);
    });
}

fn challenge(q: &Quorate, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .arg("challenge")
        .arg("--config")
        .arg(q.config_path())
        .args(args)
        .output()
        .expect("running quorate challenge");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn challenge_reports_the_disagreement_and_exits_non_zero() {
    let fx = fixtures();
    for_each_backend(|backend| {
        let dir = scratch_dir("operate-challenge");
        let (_ups, q) = decided_world(backend, dir.path());
        let hello = &fx.paths.hello;

        let (code, text) = challenge(&q, &[&hello.store_path]);
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains("DISAGREEMENT: 2 contents"), "{text}");
        assert!(text.contains(&hello.nar_hash), "{text}");
        assert!(text.contains("a, b, c") && text.contains(" m\n"), "{text}");

        let (code, text) = challenge(&q, &[fx.paths.app.hash_part()]);
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains("4 builder(s) agree"), "{text}");

        // Without paths: every recorded disagreement; live: the upstreams asked again.
        let (code, text) = challenge(&q, &[]);
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains(&hello.store_path), "{text}");
        let (code, text) = challenge(&q, &["--live", &hello.store_path]);
        assert_eq!(code, Some(2), "{text}");
        report(&format!("[{backend:?}] quorate challenge:\n{text}"));
    });
}

/// Headless Chromium, started the way this machine allows (no sandbox as root, no
/// background networking).
fn chromium(args: &[&str]) -> std::process::Output {
    let bin = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
        .unwrap_or_else(|| {
            panic!("the status page test needs Chromium: apt-get install chromium (scripts/test.sh does)")
        });
    let profile = scratch_dir("chromium-profile");
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("running chromium")
}

#[test]
fn the_status_page_shows_builders_the_matrix_and_the_conflict_in_a_browser() {
    let fx = fixtures();
    let dir = scratch_dir("operate-ui");
    let (_ups, q) = decided_world(Backend::Sqlite, dir.path());
    let url = format!("{}/", q.url());
    // Fetch hello's NAR twice (once from upstream, once from the store) for the figures.
    let narinfo = q.narinfo(&fx.paths.hello).text();
    let nar = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("a NAR URL");
    for _ in 0..2 {
        let got = http_get(&format!("{}/{nar}", q.url())).expect("hello's NAR");
        assert_eq!(got.status, 200);
    }

    let out = chromium(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && dom.contains("</html>"), "{out:?}");
    for b in ["a", "b", "c", "m"] {
        assert!(
            dom.contains(&format!(r#"data-builder="{b}""#)),
            "builder {b}"
        );
    }
    assert!(
        dom.contains(&format!(
            r#"class="conflict" data-hash-part="{}""#,
            fx.paths.hello.hash_part()
        )),
        "the conflict about hello is listed"
    );
    let cells = dom.matches(r#"class="cell""#).count();
    assert_eq!(cells, 16, "a 4 x 4 agreement matrix");
    assert!(dom.contains(r#"data-row="a" data-col="m""#));
    assert!(
        dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"),
        "the upstream's markup is shown as text"
    );
    assert!(
        !dom.contains(SCRIPT_KEY),
        "no script element from upstream text"
    );
    assert!(
        dom.contains("<title>quorate status</title>"),
        "the title was not rewritten"
    );

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    let out = chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,1800",
        &url,
    ]);
    assert!(out.status.success(), "{out:?}");
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    report(&format!("status page screenshot: {}", shot.display()));
}

/// After a scripted sequence — two paths decided, one nobody has, hello's NAR fetched through
/// a preferred upstream that serves tampered bytes and then from the store — the labelled
/// counters at `/metrics` hold exactly what happened.
#[test]
fn metrics_count_requests_decisions_attestations_and_nar_bytes_by_label() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    let dir = scratch_dir("operate-metrics");
    let a = serve_builder("A");
    let b = serve_builder("B");
    let bad = UpstreamServer::serve(common::adversary::mismatch_cache(
        fx,
        &dir.path().join("bad"),
    ));
    let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B", "C"])
        .upstream_with_priority(bad.url(), 1)
        .upstream_with_priority(a.url(), 5)
        .upstream_with_priority(b.url(), 6);
    let q = Quorate::start(Backend::Sqlite, vec![spec]);
    assert_eq!(q.narinfo(hello).status, 200);
    assert_eq!(q.narinfo(&fx.paths.app).status, 200);
    let nobody = "00000000000000000000000000000000";
    let missing = http_get(&format!("{}/{nobody}.narinfo", q.url())).expect("answered");
    assert_eq!(missing.status, 404);

    let nar = q
        .narinfo(hello)
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("URL: ").map(str::to_owned))
        .expect("a NAR URL");
    let nar_url = format!("{}/{nar}", q.url());
    // The tampered attempt fails whoever got its bytes; a client retries, as Nix does.
    let first = http_get(&nar_url);
    if !first.as_ref().is_ok_and(|f| f.status == 200) {
        let again = http_get(&nar_url).expect("the retry");
        assert_eq!(again.status, 200);
    }
    // The client has its last byte once the bytes are verified; the rename into the store
    // follows.
    common::records::wait_until(&q, "hello's NAR in the store", || {
        q.metric("quorate_nar_store_bytes") == hello.nar_size as f64
    });
    assert_eq!(http_get(&nar_url).expect("from the store").status, 200);

    let m = |series: &str| q.metric(series);
    let (ua, ub, ubad) = (a.url(), b.url(), bad.url());
    assert_eq!(
        m(r#"quorate_http_requests_total{route="narinfo",status="200"}"#),
        3.0
    );
    assert_eq!(
        m(r#"quorate_http_requests_total{route="narinfo",status="404"}"#),
        1.0
    );
    assert_eq!(m(r#"quorate_narinfo_requests_total{cache="main"}"#), 4.0);
    assert_eq!(
        m(r#"quorate_decisions_total{cache="main",outcome="accepted"}"#),
        2.0
    );
    assert_eq!(
        m(r#"quorate_decisions_total{cache="main",outcome="insufficient"}"#),
        1.0
    );
    // Refuse waits for every upstream: each path's signatures, counted once per sighting;
    // C's signature arrives through its own copy (the tampering host) only.
    for builder in ["a", "b", "c"] {
        let series = format!(
            r#"quorate_attestations_total{{cache="main",builder="{builder}",status="valid"}}"#
        );
        assert_eq!(m(&series), 2.0, "{builder}");
    }
    let narinfo_answers = format!(
        r#"quorate_upstream_request_duration_seconds_count{{upstream="{ua}",kind="narinfo"}}"#
    );
    assert_eq!(m(&narinfo_answers), 3.0);
    assert_eq!(
        m(&format!(
            r#"quorate_nar_mismatches_total{{upstream="{ubad}"}}"#
        )),
        1.0
    );
    let fetched = m(&format!(
        r#"quorate_nar_fetched_bytes_total{{upstream="{ua}"}}"#
    )) + m(&format!(
        r#"quorate_nar_fetched_bytes_total{{upstream="{ub}"}}"#
    ));
    assert_eq!(
        fetched, hello.nar_size as f64,
        "the good bytes, from a good upstream"
    );
    assert_eq!(
        m(r#"quorate_nar_requests_total{cache="main",source="store"}"#),
        1.0
    );
    assert!(m(r#"quorate_nar_requests_total{cache="main",source="upstream"}"#) >= 1.0);
    assert!(m(r#"quorate_nar_served_bytes_total{cache="main"}"#) >= 2.0 * hello.nar_size as f64);
    assert_eq!(m("quorate_record_failures_total"), 0.0);
    assert_eq!(m("quorate_nar_store_bytes"), hello.nar_size as f64);
}
