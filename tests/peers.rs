//! Peers (DESIGN §13, issue 11): a quorate follows another quorate's transparency log,
//! imports the builder signatures in it (verified with its own keys, never trusting the
//! peer), and stops following a peer that forks its log.

mod common;

use std::time::Duration;

use common::http::get_json;
use common::records;
use common::{
    fixtures, for_each_backend, nar_hash_of, serve_builders, with_builders, Backend, CacheSpec,
    Quorate,
};

const CACHE: &str = "main";

/// `q`'s `/api/v1/peers` entry for its only peer.
fn peer_status(q: &Quorate) -> serde_json::Value {
    let report = common::block_on(get_json(&format!("{}/api/v1/peers", q.url())));
    report["peers"][0].clone()
}

/// X sees builders A and B; Y trusts A and B with quorum 2 but reaches only A's cache, so
/// alone it cannot serve app. Y follows X's log: it imports B's signature on app (verifying
/// it with its own key for B, attributing it to its own builder b) and serves app, NAR bytes
/// from A's cache. Then X loses its database and starts a new history under the same log
/// key: Y finds the two histories, flags X as forked (an event with both checkpoints) and
/// imports nothing more from it.
#[test]
fn a_follower_imports_a_peers_attestations_and_stops_at_a_fork() {
    let fx = fixtures();
    let (app, hello, big) = (&fx.paths.app, &fx.paths.hello, &fx.paths.big);
    for_each_backend(|backend| {
        let ups = serve_builders(&["A", "B"]);
        let x_spec = with_builders(CacheSpec::nix(CACHE), &["A", "B"]).upstreams(&ups);
        let mut x = Quorate::start(Backend::Sqlite, vec![x_spec]);
        assert_eq!(x.narinfo(app).status, 200, "X serves app (quorum 1)");

        let y_spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B"])
            .upstreams(&ups[..1])
            .peer(&format!("{}/tlog/{CACHE}", x.url()));
        let y = Quorate::start(backend, vec![y_spec]);
        assert_eq!(
            y.narinfo(hello).status,
            404,
            "hello, which X never saw: A alone is short of Y's quorum"
        );
        records::wait_until(&y, "B's signature on app imported from X", || {
            records::attestations(&y, CACHE, app.hash_part())
                .iter()
                .any(|a| a.builder.as_deref() == Some("b") && a.upstream.starts_with("peer:"))
        });
        let answer = y.narinfo(app);
        assert_eq!(answer.status, 200, "{}", answer.summary());
        let url = answer
            .text()
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .expect("a URL line")
            .to_owned();
        let nar = common::http_get(&format!("{}/{url}", y.substituter())).expect("app's NAR");
        assert_eq!(nar.status, 200);
        assert_eq!(nar_hash_of(nar.bytes()), app.nar_hash);
        let status = peer_status(&y);
        assert_eq!(status["status"], "following", "{status}");

        // X loses its database; under the same log key it writes another history.
        x.terminate();
        for name in ["quorate.db", "quorate.db-wal", "quorate.db-shm"] {
            let _ = std::fs::remove_file(x.state_dir().join(name));
        }
        x.restart();
        for path in [hello, big, app] {
            let _ = x.narinfo(path);
        }
        records::wait_until(&y, "X's fork noticed", || {
            peer_status(&y)["status"] == "forked"
        });
        let status = peer_status(&y);
        let detail = status["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("--- seen before") && detail.contains("--- served now"),
            "{status}"
        );
        let fork = records::wait_for_event(&y, CACHE, "peer_fork", "");
        assert!(fork.detail.contains("--- served now"), "{fork:?}");
        // Nothing more comes from X: big, which X saw only in its new history.
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            records::attestations(&y, CACHE, big.hash_part())
                .iter()
                .all(|a| !a.upstream.starts_with("peer:")),
            "an attestation was imported from a forked peer"
        );
    });
}
