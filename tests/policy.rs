//! Trust policy beyond one vote per builder (DESIGN §13, issue 11): builder weights, a stolen
//! key revoked from a time on, and the operator's block list — each end to end on real signed
//! upstreams, on SQLite and PostgreSQL, with what changed shown in the transparency log and
//! replayed by `quorate audit`.

mod common;

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use common::adversary::equivocating_cache;
use common::records::{attestations, events, latest_decision, with_db};
use common::{
    fixtures, for_each_backend, http_get, nar_url_in, scratch_dir, serve_builders, with_builders,
    CacheSpec, Quorate, UpstreamServer,
};
use quorate_core::quorum::Outcome;

const CACHE: &str = "main";

/// Every entry of `q`'s log, as text.
fn log_entries(q: &Quorate) -> Vec<String> {
    with_db(q, async |db| {
        let size = db.log_size(CACHE).await.expect("log size");
        db.log_entries(CACHE, 0, size).await.expect("log entries")
    })
    .into_iter()
    .map(|e| String::from_utf8(e).expect("entries are text"))
    .collect()
}

/// Waits until some entry of `q`'s log satisfies `wanted`; returns it.
fn wait_for_entry(q: &Quorate, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    common::eventually_some(what, Duration::from_secs(30), || {
        log_entries(q).into_iter().find(|e| wanted(e))
    })
}

/// `quorate audit mirror` then `check --json` of `q`'s log: the report.
fn audit(q: &Quorate, dir: &Path) -> serde_json::Value {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
            .arg("audit")
            .args(args)
            .output()
            .expect("running quorate audit");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "quorate audit {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let _ = std::fs::remove_dir_all(dir);
    let mirror = dir.to_str().expect("a UTF-8 path");
    run(&["mirror", q.url(), CACHE, mirror]);
    serde_json::from_str(&run(&["check", "--json", mirror])).expect("the audit's JSON report")
}

/// `path`'s narinfo from `q` once its decision is in the log.
fn wait_logged(q: &Quorate, path: &common::fixtures::FixturePath) {
    common::eventually(
        &format!("{} logged", path.store_path),
        Duration::from_secs(30),
        || q.narinfo(path).header("quorate-log-index").is_some(),
    );
}

/// `ms` (Unix milliseconds) as RFC 3339 in UTC, as an operator writes `since`.
fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).expect("after 1970"));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Builder `b`'s public key, as configured.
fn key_of(builder: &str) -> String {
    fixtures().builder(builder).public_key.clone()
}

#[test]
fn one_builder_of_weight_two_meets_quorum_two_alone_and_two_of_weight_one_do_too() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    let dir = scratch_dir("policy-weights");
    for_each_backend(|backend| {
        let weighted = || with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B", "C"]);

        // a (weight 2) alone through its own upstream.
        let ups = serve_builders(&["A"]);
        let q = Quorate::start(backend, vec![weighted().weight("a", 2).upstreams(&ups)]);
        let answer = q.narinfo(hello);
        assert_eq!(answer.status, 200, "{}", answer.summary());
        wait_logged(&q, hello);
        let policy = wait_for_entry(&q, "the policy entry", |e| {
            e.starts_with("quorate/policy/v1\n")
        });
        assert!(policy.contains("\nweight 2 a\n"), "{policy}");
        // The offline audit replays the decision with the weights of its policy entry.
        let report = audit(&q, &dir.path().join(format!("{backend:?}-a")));
        assert_eq!(report["violations"], serde_json::json!([]), "{report}");
        drop(q);

        // b and c (weight 1 each) together.
        let ups = serve_builders(&["B", "C"]);
        let q = Quorate::start(backend, vec![weighted().weight("a", 2).upstreams(&ups)]);
        let answer = q.narinfo(hello);
        assert_eq!(answer.status, 200, "{}", answer.summary());
        drop(q);

        // a alone at weight 1 does not.
        let ups = serve_builders(&["A"]);
        let q = Quorate::start(backend, vec![weighted().upstreams(&ups)]);
        assert_eq!(q.narinfo(hello).status, 404);
    });
}

#[test]
fn majority_compares_the_summed_weight_behind_each_content() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    let dir = scratch_dir("policy-majority");
    // Evil hello signed by M and by B's stolen key: b and m (weight 1 each) back it, a backs
    // the honest one.
    let evil = equivocating_cache(fx, &dir.path().join("E"), "B");
    for_each_backend(|backend| {
        let mut ups = serve_builders(&["A"]);
        ups.push(UpstreamServer::serve(&evil));
        let spec = |a_weight: u32| {
            with_builders(
                CacheSpec::nix(CACHE).quorum(2).on_dissent("majority"),
                &["A", "B", "M"],
            )
            .weight("a", a_weight)
            .upstreams(&ups)
        };

        // 2 against 1 + 1: not strictly more, refused.
        let q = Quorate::start(backend, vec![spec(2)]);
        let answer = q.narinfo(hello);
        assert_eq!(answer.status, 404, "{}", answer.summary());
        let refused = latest_decision(&q, CACHE, hello.hash_part()).expect("a decision");
        assert_eq!(refused.outcome, Outcome::Refused);
        drop(q);

        // 3 against 1 + 1: the honest content is served (final as soon as a is heard: b and
        // m together could not outweigh it).
        let q = Quorate::start(backend, vec![spec(3)]);
        let answer = q.narinfo(hello);
        assert_eq!(answer.status, 200, "{}", answer.summary());
        assert!(answer.text().contains(&hello.nar_hash), "{}", answer.text());
        let accepted = latest_decision(&q, CACHE, hello.hash_part()).expect("a decision");
        assert_eq!(accepted.outcome, Outcome::Accepted);
        assert_eq!(accepted.agreeing, ["a"]);
    });
}

#[test]
fn a_key_revoked_at_t_withdraws_what_it_carried_after_t_and_keeps_what_came_before() {
    let fx = fixtures();
    let (hello, app) = (&fx.paths.hello, &fx.paths.app);
    for_each_backend(|backend| {
        let ups = serve_builders(&["A", "B"]);
        let spec = || with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B"]).upstreams(&ups);
        let mut q = Quorate::start(backend, vec![spec()]);
        assert_eq!(q.narinfo(hello).status, 200);
        // When b's attestation of hello was first recorded.
        let recorded = attestations(&q, CACHE, hello.hash_part())
            .into_iter()
            .filter(|a| a.builder.as_deref() == Some("b"))
            .map(|a| a.first_seen)
            .min()
            .expect("b's attestation of hello is recorded");

        // Revoked from just after it: hello's quorum stands on an earlier attestation.
        let after = rfc3339(recorded + 1);
        q.restart_with(vec![spec().revoke("b", &key_of("B"), &after)]);
        let answer = q.narinfo(hello);
        assert_eq!(answer.status, 200, "{}", answer.summary());
        let revoked_line = format!("\nrevoked {} b {}\n", recorded + 1, key_of("B"));
        wait_for_entry(&q, "the policy entry with the revocation", |e| {
            e.starts_with("quorate/policy/v1\n") && e.contains(&revoked_line)
        });
        // A path first seen now: b's attestation of it is after the revocation, so a alone
        // is not a quorum.
        assert_eq!(q.narinfo(app).status, 404);

        // Revoked from the moment it was recorded: hello is withdrawn.
        q.restart_with(vec![spec().revoke("b", &key_of("B"), &rfc3339(recorded))]);
        let answer = q.narinfo(hello);
        assert_eq!(answer.status, 404, "{}", answer.summary());
        let now = latest_decision(&q, CACHE, hello.hash_part()).expect("a decision");
        assert_eq!(now.outcome, Outcome::Insufficient);
        let withdrawn = wait_for_entry(&q, "hello's withdrawal in the log", |e| {
            e.starts_with("quorate/decision/v1\n")
                && e.contains(hello.hash_part())
                && e.contains("\nverdict withdrawn\n")
        });
        assert!(withdrawn.contains(&hello.nar_hash), "{withdrawn}");
        // The upstream still offers b's signature; it is recorded, but does not count.
        assert!(attestations(&q, CACHE, app.hash_part())
            .iter()
            .any(|a| a.builder.as_deref() == Some("b")));
    });
}

#[test]
fn the_block_list_refuses_a_path_with_a_quorum_by_path_and_by_nar_hash_and_logs_it() {
    let fx = fixtures();
    let (hello, app) = (&fx.paths.hello, &fx.paths.app);
    let dir = scratch_dir("policy-block");
    for_each_backend(|backend| {
        let ups = serve_builders(&["A", "B"]);
        let spec = || with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B"]).upstreams(&ups);
        let mut q = Quorate::start(backend, vec![spec()]);
        assert_eq!(q.narinfo(hello).status, 200);
        let served = q.narinfo(app);
        assert_eq!(served.status, 200);
        let nar_url = format!("{}/{}", q.url(), nar_url_in(&served.text()));
        assert_eq!(http_get(&nar_url).expect("app's NAR").status, 200);

        q.restart_with(vec![spec()
            .block_path(&hello.store_path, "CVE-2026-0001")
            .block_nar_hash(&app.nar_hash, "a tampered build")]);
        let answer = q.narinfo(hello);
        assert_eq!(answer.status, 404);
        assert!(answer.text().contains("CVE-2026-0001"), "{}", answer.text());
        assert_eq!(q.narinfo(app).status, 404);
        // The NAR is stored, yet not served.
        assert_eq!(http_get(&nar_url).expect("app's NAR").status, 404);

        let blocked = events(&q, CACHE, "blocked");
        for (path, reason) in [(hello, "CVE-2026-0001"), (app, "a tampered build")] {
            assert!(
                blocked.iter().any(|e| {
                    e.store_path.as_deref() == Some(path.store_path.as_str())
                        && e.detail.contains(reason)
                }),
                "{blocked:?}"
            );
        }
        let policy = wait_for_entry(&q, "the policy entry with the block list", |e| {
            e.starts_with("quorate/policy/v1\n") && e.contains("\nblocked-")
        });
        assert!(
            policy.contains(&format!(
                "\nblocked-path {} CVE-2026-0001\n",
                hello.store_path
            )),
            "{policy}"
        );
        assert!(
            policy.contains(&format!(
                "\nblocked-nar-hash {} a tampered build\n",
                app.nar_hash
            )),
            "{policy}"
        );
        wait_for_entry(&q, "hello's refusal in the log", |e| {
            e.starts_with("quorate/decision/v1\n")
                && e.contains(hello.hash_part())
                && e.contains("\nverdict refused\n")
        });
        let report = audit(&q, &dir.path().join(format!("{backend:?}")));
        assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    });
}
