//! Several replicas (DESIGN §11, issue 9): the real parts a replica set runs on, and the set
//! itself behind a real load balancer.
//!
//! The harness stories prove the test support works with the real programs: a single-node
//! Garage (S3: objects, multipart uploads, stopped and started again), quorates sharing one
//! PostgreSQL database, and nginx balancing over them and skipping a dead one. The set stories
//! run quorate replicas configured with `[nar_store]` in the Garage bucket and `[replica]`.
//!
//! Needs: a PostgreSQL server (`QUORATE_TEST_POSTGRES_URL`), the Garage binary
//! (`QUORATE_TEST_GARAGE`) and nginx; `scripts/test.sh` provides all three. A missing one
//! fails the test with what to install; nothing skips quietly.

mod common;

use bytes::Bytes;
use common::s3::S3Object;
use common::{block_on, http_get, Balancer, CacheSpec, Garage, ReplicaSet};

const NIXOS_KEY: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/// A cache no request here resolves through (its upstream's port is closed): the harness
/// stories only ask quorate's own routes.
fn idle_cache() -> CacheSpec {
    CacheSpec::nix("main")
        .builder("hydra", &[NIXOS_KEY])
        .upstream("http://127.0.0.1:9")
}

/// A content key as quorate names NAR objects: 52 nix32 characters.
const SOME_NAR_KEY: &str = "0c6nszycxk8s1bmrzbq5aqwyxb9c2pwz2nfg3bwm9s5b1r4gq2xn";

#[test]
fn the_harness_runs_garage_postgres_and_a_balancer() {
    // Garage: the bucket takes an object and lists it with its size.
    let garage = Garage::start();
    let s3 = garage.s3();
    let key = format!("smoke/nar/{SOME_NAR_KEY}");
    let body = Bytes::from_static(b"not really a NAR\n");
    block_on(s3.put(&key, body.clone())).expect("putting an object");
    assert_eq!(
        garage.objects("smoke/"),
        [S3Object {
            key: key.clone(),
            size: body.len() as u64
        }]
    );
    assert_eq!(block_on(s3.get(&key)).expect("getting it back"), Some(body));
    assert_eq!(block_on(s3.get("smoke/nar/absent")).expect("a GET"), None);

    // An upload that is started and not completed is counted until it is aborted.
    assert!(garage.incomplete_uploads("").is_empty());
    let partial = format!("smoke/nar/{}", SOME_NAR_KEY.replace('0', "1"));
    let upload = block_on(s3.create_multipart_upload(&partial)).expect("starting an upload");
    block_on(s3.upload_part(&partial, &upload, 1, Bytes::from(vec![7u8; 1024])))
        .expect("uploading a part");
    let open = garage.incomplete_uploads("smoke/");
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(
        (open[0].key.as_str(), open[0].upload_id.as_str()),
        (partial.as_str(), upload.as_str())
    );
    assert_eq!(garage.objects("smoke/").len(), 1, "a part is not an object");
    block_on(s3.abort_multipart_upload(&partial, &upload)).expect("aborting it");
    assert!(garage.incomplete_uploads("").is_empty());

    // Two quorates on one PostgreSQL database, behind nginx: both answer through it.
    let set = ReplicaSet::start_plain(2, vec![idle_cache()]);
    assert_eq!(set.replica(0).database_url(), set.database_url());
    assert_eq!(set.replica(1).database_url(), set.database_url());
    assert_eq!(set.replica(0).public_key(), set.replica(1).public_key());
    let lb = Balancer::in_front_of(&set);
    for _ in 0..6 {
        let answer = http_get(&format!("{}/healthz", lb.url())).expect("healthz via the balancer");
        assert_eq!(answer.status, 200, "{}", answer.summary());
    }
    let ready = http_get(&format!("{}/readyz", lb.url())).expect("readyz via the balancer");
    assert_eq!(ready.status, 200, "{}", ready.summary());
    let mut answered_by: Vec<String> = lb
        .requests()
        .into_iter()
        .filter(|r| r.uri == "/healthz")
        .flat_map(|r| r.replicas)
        .collect();
    answered_by.sort();
    answered_by.dedup();
    let mut replicas: Vec<String> = set
        .replicas()
        .iter()
        .map(|r| r.addr().to_string())
        .collect();
    replicas.sort();
    assert_eq!(answered_by, replicas, "round-robin reaches every replica");
}

#[test]
fn the_balancer_skips_a_killed_replica_and_uses_it_again_once_it_is_back() {
    let mut set = ReplicaSet::start_plain(2, vec![idle_cache()]);
    let lb = Balancer::in_front_of(&set);
    let killed = set.replica(0).addr().to_string();
    set.replica_mut(0).kill();

    // Every client request succeeds: the refused connection is retried on the live replica.
    for _ in 0..8 {
        let answer = http_get(&format!("{}/nix-cache-info", lb.url())).expect("via the balancer");
        assert_eq!(answer.status, 200, "{}", answer.summary());
    }
    let served: Vec<_> = lb.requests();
    assert!(
        served.iter().all(|r| r.replicas.last() != Some(&killed)),
        "nothing was answered by the killed replica: {served:?}"
    );

    // Back on the same port, it gets requests again once nginx's fail_timeout has passed.
    set.replica_mut(0).restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let answer = http_get(&format!("{}/nix-cache-info", lb.url())).expect("via the balancer");
        assert_eq!(answer.status, 200, "{}", answer.summary());
        let last = lb.requests().pop().expect("a logged request");
        if last.replicas == [killed.clone()] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted replica never got a request again: {:?}",
            lb.requests()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn garage_stopped_refuses_requests_and_started_again_still_holds_the_bucket() {
    let mut garage = Garage::start();
    let s3 = garage.s3();
    let key = format!("outage/nar/{SOME_NAR_KEY}");
    block_on(s3.put(&key, Bytes::from_static(b"kept\n"))).expect("putting an object");

    garage.stop();
    assert!(!garage.is_running());
    let refused = block_on(s3.list("outage/"));
    assert!(refused.is_err(), "a stopped Garage answered: {refused:?}");

    garage.start_again();
    assert_eq!(garage.objects("outage/").len(), 1);
    assert_eq!(
        block_on(s3.get(&key)).expect("getting it back"),
        Some(Bytes::from_static(b"kept\n"))
    );
}

// ------------------------------------------------------------------ the replica set (issue 9)

#[test]
fn a_replica_set_on_garage_and_postgres_is_ready_behind_the_balancer() {
    let garage = Garage::start();
    let set = ReplicaSet::start(2, vec![idle_cache()], &garage, "fleet");
    let lb = Balancer::in_front_of(&set);
    for replica in set.replicas() {
        let ready = http_get(&format!("{}/readyz", replica.url())).expect("readyz");
        assert_eq!(ready.status, 200, "{}", ready.summary());
        let config = std::fs::read_to_string(replica.config_path()).expect("its config");
        assert!(
            config.contains(&format!("advertise_url = \"{}\"", replica.url())),
            "{config}"
        );
    }
    for _ in 0..4 {
        let ready = http_get(&format!("{}/readyz", lb.url())).expect("readyz via the balancer");
        assert_eq!(ready.status, 200, "{}", ready.summary());
    }
    // Nothing was asked for: the bucket holds nothing, and no upload is open.
    assert!(garage.objects("fleet/").is_empty());
    assert!(garage.incomplete_uploads("fleet/").is_empty());
}
