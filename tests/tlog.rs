//! The transparency log (DESIGN §12, issue 10), end to end: what quorate saw and decided is
//! in its cache's log, and a verifier written from the specs alone
//! (`tests/oracle/tlog_verify.py`: RFC 9162, C2SP signed-note, checkpoint, tiles, proof; Ed25519
//! from Python's `cryptography`) accepts the log quorate serves.

mod common;

use std::time::{Duration, Instant};

use common::adversary::malicious_cache;
use common::{
    fixtures, for_each_backend, http_get, scratch_dir, serve_builders, with_builders, CacheSpec,
    Quorate, UpstreamServer,
};

const CACHE: &str = "main";

/// Runs the independent verifier against `q`'s log, proving entry `index`; its JSON report.
fn verify_independently(q: &Quorate, index: u64) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracle/tlog_verify.py");
    let out = std::process::Command::new("python3")
        .args([script, q.url(), CACHE, &index.to_string()])
        .output()
        .expect("running python3 (Debian: python3, python3-cryptography)");
    assert!(
        out.status.success(),
        "the independent verifier refused the log: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        q.log()
    );
    serde_json::from_slice(&out.stdout).expect("the verifier's JSON")
}

/// Builders A, B, C and M (whose cache serves an evil hello, validly signed by M) with quorum
/// 2: app is accepted, hello refused. The log then holds the policy first, every attestation
/// (the dissenting evil one too: equivocation is evidence) and both decisions; the served
/// narinfo names its decision's index; the independent verifier checks the checkpoint's
/// signature, every entry against its tile, the root, and that index's inclusion proof.
#[test]
fn the_log_holds_every_attestation_and_decision_and_an_independent_verifier_accepts_it() {
    let fx = fixtures();
    let dir = scratch_dir("tlog-e2e");
    let m_cache = malicious_cache(fx, &dir.path().join("M"));
    let (hello, app) = (&fx.paths.hello, &fx.paths.app);
    for_each_backend(|backend| {
        let mut ups = serve_builders(&["A", "B", "C"]);
        ups.push(UpstreamServer::serve(&m_cache));
        let spec =
            with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B", "C", "M"]).upstreams(&ups);
        let q = Quorate::start(backend, vec![spec]);
        assert_eq!(
            q.narinfo(hello).status,
            404,
            "hello is refused (M dissents)"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let index: u64 = loop {
            let answer = q.narinfo(app);
            assert_eq!(answer.status, 200, "{}", answer.summary());
            if let Some(i) = answer.header("quorate-log-index") {
                break i.parse().expect("a decimal log index");
            }
            assert!(Instant::now() < deadline, "app's decision was never logged");
            std::thread::sleep(Duration::from_millis(200));
        };

        let report = verify_independently(&q, index);
        let entries: Vec<String> = report["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e.as_str().unwrap().to_owned())
            .collect();
        assert!(entries[0].starts_with("quorate/policy/v1\ncache main\nquorum 2\n"));
        let decision = &entries[index as usize];
        assert!(decision.starts_with("quorate/decision/v1\n"), "{decision}");
        assert!(decision.contains("\nverdict accepted\n"), "{decision}");
        assert!(decision.contains(&format!("\npath {}\n", app.store_path)));
        // Its support: logged, valid attestations of app's content.
        let support = decision
            .lines()
            .find_map(|l| l.strip_prefix("support "))
            .expect("a support line");
        let support: Vec<usize> = support.split(' ').map(|i| i.parse().unwrap()).collect();
        assert!(support.len() >= 2, "{decision}");
        for i in support {
            let a = &entries[i];
            assert!(a.starts_with("quorate/attestation/v1\n"), "{a}");
            assert!(
                a.contains("\nstatus valid\n") && a.contains(&app.nar_hash),
                "{a}"
            );
        }
        // The refusal and the dissenting (evil) attestation are logged too.
        let hello_decisions: Vec<&String> = entries
            .iter()
            .filter(|e| e.starts_with("quorate/decision/v1\n") && e.contains(hello.hash_part()))
            .collect();
        assert!(
            hello_decisions
                .iter()
                .any(|e| e.contains("\nverdict refused\n")),
            "{hello_decisions:?}"
        );
        let evil_hash = common::nar_hash_of(&fx.evil_hello_nar());
        assert!(
            entries
                .iter()
                .any(|e| e.starts_with("quorate/attestation/v1\n") && e.contains(&evil_hash)),
            "the dissenting attestation is in the log"
        );
        let vkey = http_get(&format!("{}/tlog/{CACHE}/vkey", q.url())).expect("vkey");
        assert_eq!(vkey.status, 200);
        let key_file = q.state_dir().join("keys").join(format!("{CACHE}.log.pub"));
        if let Ok(on_disk) = std::fs::read_to_string(&key_file) {
            assert_eq!(
                vkey.text(),
                on_disk,
                "the served vkey is the generated key's"
            );
        }
    });
}

/// `quorate verify --url URL --state FILE PATH...`: (exit code, stdout).
fn quorate_verify(url: &str, state: &std::path::Path, paths: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["verify", "--url", url, "--state"])
        .arg(state)
        .args(paths)
        .output()
        .expect("running quorate verify");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// `path`'s narinfo from `q`, once its decision is logged (it carries `Quorate-Log-Index`).
fn wait_logged(q: &Quorate, path: &common::fixtures::FixturePath) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.narinfo(path).header("quorate-log-index").is_none() {
        assert!(Instant::now() < deadline, "{} was never logged", path.store_path);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A cache whose signing key (and so its log key, beside it) lives in `dir/keys`.
fn spec_keyed_in(dir: &std::path::Path, builders: &[&str], ups: &[UpstreamServer]) -> CacheSpec {
    let prefix = dir.join("keys").join(CACHE);
    if !prefix.with_extension("sec").exists() {
        common::quorate::keygen(&prefix);
    }
    with_builders(CacheSpec::nix(CACHE).quorum(2), builders)
        .signing_key(&prefix.with_extension("sec"))
        .upstreams(ups)
}

/// `quorate verify` proves a served path is an accepted decision in the log, remembers the
/// checkpoint, later proves the grown log consistent with it (from the log's tiles), and
/// reports "SECURITY ERROR" with both checkpoints when shown another history under the same
/// log key (a second quorate holding a copy of the key: a forked log).
#[test]
fn quorate_verify_proves_inclusion_and_consistency_and_reports_a_forked_log() {
    let fx = fixtures();
    let (hello, app) = (&fx.paths.hello, &fx.paths.app);
    let dir = scratch_dir("tlog-verify");
    let state = dir.path().join("verify.json");
    let ups = serve_builders(&["A", "B", "C"]);
    let q1 = Quorate::start(
        common::Backend::Sqlite,
        vec![spec_keyed_in(&dir.path().join("q1"), &["A", "B", "C"], &ups)],
    );
    wait_logged(&q1, app);
    let (code, out) = quorate_verify(q1.url(), &state, &[&app.store_path]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("OK {}", app.store_path)), "{out}");

    wait_logged(&q1, hello);
    let (code, out) = quorate_verify(q1.url(), &state, &[&hello.store_path]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("consistent with the size"), "{out}");

    // The same log key, another history (another policy from entry 0 on).
    let q2_dir = dir.path().join("q2");
    std::fs::create_dir_all(q2_dir.join("keys")).unwrap();
    let key = dir.path().join("q1/keys").join(format!("{CACHE}.log.sec"));
    let copy = q2_dir.join("keys").join(format!("{CACHE}.log.sec"));
    std::fs::copy(&key, &copy).expect("copying the log key");
    let q2 = Quorate::start(
        common::Backend::Sqlite,
        vec![spec_keyed_in(&q2_dir, &["A", "B"], &ups[..2])],
    );
    wait_logged(&q2, app);
    let (code, out) = quorate_verify(q2.url(), &state, &[&app.store_path]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("SECURITY ERROR"), "{out}");
    assert!(out.contains("--- seen before") && out.contains("--- served now"), "{out}");
}
