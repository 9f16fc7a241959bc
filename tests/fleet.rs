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

use std::time::Duration;

use bytes::Bytes;
use common::adversary::{equivocating_cache, mismatch_cache};
use common::fixtures::FixturePath;
use common::s3::S3Object;
use common::{
    block_on, eventually, files_under, fixtures, http_get, nar_hash_of, nar_url_in, records,
    scratch_dir, serve_builders, with_builders, Balancer, Behavior, CacheSpec, Garage, NixClient,
    ReplicaSet, UpstreamServer,
};
use futures_util::StreamExt;
use quorate_core::protocol::nar_hash::NarHash;
use sha2::Digest;

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

// ------------------------------------------------------------ the set's guarantees (issue 9)

const CACHE: &str = "main";

/// The object key quorate stores NAR `path` under, below `prefix`.
fn object_key(prefix: &str, path: &FixturePath) -> String {
    let hash = NarHash::parse(&path.nar_hash).expect("a fixture NarHash");
    format!("{prefix}/nar/{}", hash.key())
}

/// No replica keeps a NAR on its own disk: nothing in its local NAR directory, nothing left
/// in its spool.
fn assert_no_local_nars(set: &ReplicaSet) {
    for r in set.replicas() {
        for dir in ["nars", "spool"] {
            let files = files_under(&r.state_dir().join(dir));
            assert!(
                files.is_empty(),
                "replica {} keeps files in {dir}: {files:?}",
                r.url()
            );
        }
    }
}

/// A GET whose body is hashed as it streams (a 100 MiB NAR times 50 clients is not kept):
/// (status, NarHash of the body, its length), or why the body broke off.
async fn get_hashed(url: &str) -> Result<(u16, String, u64), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("GET {url}: body: {e}"))?;
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let digest: [u8; 32] = hasher.finalize().into();
    Ok((status, NarHash::from_digest(digest).to_string(), len))
}

/// The real Nix client substitutes a closure (app and the hello it references) through the
/// load balancer in front of two replicas: every NAR lands in the bucket, verified, and
/// nowhere else (no replica keeps a file of it, no upload is left open), and both replicas
/// took part.
#[test]
fn the_nix_client_substitutes_a_closure_through_the_balancer_and_the_nars_live_only_in_the_bucket()
{
    let fx = fixtures();
    let garage = Garage::start();
    let ups = serve_builders(&["A", "B", "C"]);
    let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B", "C"]).upstreams(&ups);
    let set = ReplicaSet::start(2, vec![spec], &garage, "closure");
    let lb = Balancer::in_front_of(&set);

    let app = &fx.paths.app;
    let got = NixClient::new(&lb.url(), &[set.public_key()]).substitute(&[&app.store_path]);
    got.assert_ok("app and hello through the balancer");
    assert_eq!(got.read(&fx.paths.hello.store_path, ""), b"hello\n");

    for path in [app, &fx.paths.hello] {
        let key = object_key("closure", path);
        eventually(
            &format!("{key} in the bucket"),
            Duration::from_secs(30),
            || garage.objects("closure/").iter().any(|o| o.key == key),
        );
        let object = block_on(garage.s3().get(&key))
            .expect("a GET")
            .expect("the object");
        assert_eq!(object.len() as u64, path.nar_size);
        assert_eq!(
            nar_hash_of(&object),
            path.nar_hash,
            "the bucket holds the verified NAR"
        );
    }
    assert!(garage.incomplete_uploads("").is_empty());
    assert_no_local_nars(&set);
    let mut answered_by: Vec<String> = lb.requests().into_iter().flat_map(|r| r.replicas).collect();
    answered_by.sort();
    answered_by.dedup();
    assert_eq!(
        answered_by.len(),
        2,
        "both replicas answered the client: {answered_by:?}"
    );
}

/// 50 clients ask, at once and through the balancer, for one cold 100 MiB NAR: the set
/// downloads it once (the replica holding the lease fetches, the other relays its bytes),
/// every client receives the verified NAR, and the bucket holds it once.
#[test]
fn fifty_concurrent_cold_requests_across_the_replicas_cost_one_upstream_download() {
    let fx = fixtures();
    let big = &fx.paths.big;
    let garage = Garage::start();
    let delay = Behavior::Delay(Duration::from_millis(300));
    let a = UpstreamServer::serve_with(&fx.builder("A").cache_dir, delay);
    let c = UpstreamServer::serve_with(&fx.builder("C").cache_dir, delay);
    let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "C"])
        .upstream(a.url())
        .upstream(c.url());
    let set = ReplicaSet::start(2, vec![spec], &garage, "fifty");
    let lb = Balancer::in_front_of(&set);

    let narinfo = http_get(&format!("{}{}", lb.url(), big.narinfo_path())).expect("narinfo");
    assert_eq!(narinfo.status, 200, "{}", narinfo.summary());
    let nar_url = format!("{}/{}", lb.url(), nar_url_in(&narinfo.text()));
    let answers = block_on(futures_util::future::join_all(
        (0..50).map(|_| get_hashed(&nar_url)),
    ));
    for answer in answers {
        let (status, hash, len) = answer.expect("every client gets the whole NAR");
        assert_eq!((status, len), (200, big.nar_size));
        assert_eq!(hash, big.nar_hash, "every client gets the verified bytes");
    }
    assert_eq!(
        a.nar_requests() + c.nar_requests(),
        1,
        "50 concurrent requests across 2 replicas cost one upstream download"
    );
    let mut served_by: Vec<String> = lb
        .requests()
        .into_iter()
        .filter(|r| r.uri.contains("/nar/"))
        .flat_map(|r| r.replicas)
        .collect();
    served_by.sort();
    served_by.dedup();
    assert_eq!(served_by.len(), 2, "the NAR requests reached both replicas");
    let claims = |role: &str| -> f64 {
        let series = format!("quorate_fleet_claims_total{{role=\"{role}\"}}");
        set.replicas().iter().map(|r| r.metric(&series)).sum()
    };
    assert_eq!(claims("owner"), 1.0, "one replica downloaded it");
    assert!(
        claims("relay") >= 1.0,
        "the other relayed the owner's bytes"
    );
    let key = object_key("fifty", big);
    eventually("the NAR in the bucket", Duration::from_secs(60), || {
        garage.objects("fifty/")
            == [S3Object {
                key: key.clone(),
                size: big.nar_size,
            }]
    });
    assert!(garage.incomplete_uploads("").is_empty());
    assert_no_local_nars(&set);
}

/// The replica that owns an in-flight download is killed with SIGKILL: the client's transfer
/// breaks off, its retry through the balancer is served by the other replica once the dead
/// owner's lease has expired, and the bucket holds the whole verified NAR and no partial
/// object or upload.
#[test]
fn when_the_replica_owning_a_download_is_killed_another_takes_over() {
    let fx = fixtures();
    let big = &fx.paths.big;
    let garage = Garage::start();
    let up = UpstreamServer::serve(&fx.builder("C").cache_dir);
    let spec = with_builders(CacheSpec::nix(CACHE).quorum(1), &["C"]).upstream(up.url());
    let mut set = ReplicaSet::start(2, vec![spec], &garage, "kill");
    let lb = Balancer::in_front_of(&set);
    let narinfo = http_get(&format!("{}{}", lb.url(), big.narinfo_path())).expect("narinfo");
    assert_eq!(narinfo.status, 200, "{}", narinfo.summary());
    let nar_path = nar_url_in(&narinfo.text());

    // The upstream now answers NARs after 4 s: the owner's download stays in flight.
    up.set_behavior(Behavior::Delay(Duration::from_secs(4)));
    let owner = set.replica(0).url().to_owned();
    let first = common::runtime().spawn({
        let url = format!("{owner}/{nar_path}");
        async move { get_hashed(&url).await }
    });
    let lease = format!("nar:{}", NarHash::parse(&big.nar_hash).unwrap().key());
    eventually(
        "replica 0 holds the NAR's lease",
        Duration::from_secs(30),
        || {
            records::with_db(set.replica(1), async |db| db.lease(&lease).await.unwrap())
                .is_some_and(|l| l.owner == owner)
        },
    );
    set.replica_mut(0).kill();
    let first = block_on(first).expect("the first client's task");
    assert!(
        !matches!(&first, Ok((200, hash, _)) if *hash == big.nar_hash),
        "the owner was killed before it could deliver: {first:?}"
    );

    let retry = block_on(get_hashed(&format!("{}/{nar_path}", lb.url())));
    let (status, hash, len) = retry.expect("the retry through the balancer");
    assert_eq!((status, len), (200, big.nar_size));
    assert_eq!(hash, big.nar_hash);
    let key = object_key("kill", big);
    eventually(
        "the whole NAR in the bucket",
        Duration::from_secs(60),
        || {
            garage.objects("kill/")
                == [S3Object {
                    key: key.clone(),
                    size: big.nar_size,
                }]
        },
    );
    assert!(
        garage.incomplete_uploads("").is_empty(),
        "no upload left open: {:?}",
        garage.incomplete_uploads("")
    );
}

/// An upstream serves validly signed narinfos but swaps hello's NAR bytes: the client gets
/// no hello, the bucket never holds anything under hello's NarHash, no replica keeps the
/// bytes, and the mismatch is recorded against the upstream.
#[test]
fn a_tampered_upstream_nar_never_reaches_the_bucket_and_is_recorded() {
    let fx = fixtures();
    let dir = scratch_dir("fleet-tamper");
    let bad = UpstreamServer::serve(mismatch_cache(fx, &dir.path().join("X")));
    let garage = Garage::start();
    let spec = with_builders(CacheSpec::nix(CACHE).quorum(1), &["C"]).upstream(bad.url());
    let set = ReplicaSet::start(2, vec![spec], &garage, "tamper");
    let lb = Balancer::in_front_of(&set);
    let hello = &fx.paths.hello;
    NixClient::new(&lb.url(), &[set.public_key()])
        .substitute(&[&hello.store_path])
        .assert_failed("hello whose NAR does not match its NarHash");
    let event = records::wait_for_event(set.replica(0), CACHE, "mismatch", hello.hash_part());
    assert_eq!(event.upstream.as_deref(), Some(bad.url()));
    assert!(
        garage.objects("tamper/").is_empty(),
        "{:?}",
        garage.objects("tamper/")
    );
    assert!(garage.incomplete_uploads("").is_empty());
    assert_no_local_nars(&set);
}

/// Garage stops: `/readyz` fails on every replica, narinfos of decided paths still answer
/// (memory and the database), NAR requests fail cleanly with 503 (stored and cold alike);
/// Garage comes back: ready again and serving NARs, without a restart.
#[test]
fn while_the_bucket_is_down_narinfos_answer_and_nars_fail_cleanly_until_it_is_back() {
    let fx = fixtures();
    let mut garage = Garage::start();
    let ups = serve_builders(&["A", "C"]);
    let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "C"]).upstreams(&ups);
    let set = ReplicaSet::start(2, vec![spec], &garage, "outage");
    let lb = Balancer::in_front_of(&set);
    let (hello, app) = (&fx.paths.hello, &fx.paths.app);
    let narinfo = |path: &FixturePath, base: &str| {
        http_get(&format!("{base}{}", path.narinfo_path())).expect("narinfo")
    };
    let hello_nar = nar_url_in(&narinfo(hello, &lb.url()).text());
    let app_nar = nar_url_in(&narinfo(app, &lb.url()).text());
    let stored = http_get(&format!("{}/{hello_nar}", lb.url())).expect("hello's NAR");
    assert_eq!(stored.status, 200);
    let key = object_key("outage", hello);
    eventually("hello in the bucket", Duration::from_secs(30), || {
        garage.objects("outage/").iter().any(|o| o.key == key)
    });

    garage.stop();
    for r in set.replicas() {
        let ready = http_get(&format!("{}/readyz", r.url())).expect("readyz");
        assert_eq!(ready.status, 503, "{}", ready.summary());
        for path in [hello, app] {
            let answer = narinfo(path, r.url());
            assert_eq!(
                answer.status,
                200,
                "a decided path still answers: {}",
                answer.summary()
            );
        }
        for nar in [&hello_nar, &app_nar] {
            let answer = http_get(&format!("{}/{nar}", r.url()));
            let answer = answer.expect("a whole answer, not a broken transfer");
            assert_eq!(answer.status, 503, "{nar}: {}", answer.summary());
        }
    }

    garage.start_again();
    for r in set.replicas() {
        eventually("ready again", Duration::from_secs(30), || {
            http_get(&format!("{}/readyz", r.url())).is_ok_and(|a| a.status == 200)
        });
        for (nar, path) in [(&hello_nar, hello), (&app_nar, app)] {
            let answer = http_get(&format!("{}/{nar}", r.url())).expect("the NAR");
            assert_eq!(answer.status, 200, "{}", answer.summary());
            assert_eq!(nar_hash_of(answer.bytes()), path.nar_hash);
        }
    }
}

/// Replica 1 decides hello (A and B agree under `majority`) while a slow upstream is still
/// out; replica 0 serves the recorded decision and keeps it in memory. The slow upstream's
/// late answer (the evil hello, signed by M and by A's stolen key) is a conflict on replica
/// 1, which withdraws the decision: replica 0 stops serving hello promptly, told through the
/// database (its memory answer would otherwise live an hour).
#[test]
fn a_conflict_recorded_on_one_replica_withdraws_the_decision_on_the_other() {
    let fx = fixtures();
    let dir = scratch_dir("fleet-withdraw");
    let garage = Garage::start();
    let mut ups = serve_builders(&["A", "B"]);
    ups.push(UpstreamServer::serve_with(
        equivocating_cache(fx, &dir.path().join("E"), "A"),
        Behavior::Delay(Duration::from_secs(3)),
    ));
    let spec = with_builders(
        CacheSpec::nix(CACHE).quorum(2).on_dissent("majority"),
        &["A", "B", "M"],
    )
    .upstreams(&ups);
    let set = ReplicaSet::start(2, vec![spec], &garage, "withdraw");
    let hello = &fx.paths.hello;
    let url = |i: usize| format!("{}{}", set.replica(i).url(), hello.narinfo_path());

    let decided = http_get(&url(1)).expect("narinfo on replica 1");
    assert_eq!(decided.status, 200, "{}", decided.summary());
    let shared = http_get(&url(0)).expect("narinfo on replica 0");
    assert_eq!(shared.status, 200, "replica 0 serves replica 1's decision");
    let lines = |a: &common::HttpAnswer| {
        let mut l: Vec<String> = a.text().lines().map(str::to_owned).collect();
        l.sort(); // the builders' Sig lines may come in another order
        l
    };
    assert_eq!(lines(&shared), lines(&decided), "the same narinfo");
    assert_eq!(
        ups[2].stats(&hello.narinfo_path()).answered,
        0,
        "the slow answer is still out"
    );

    records::wait_for_event(set.replica(1), CACHE, "conflict", hello.hash_part());
    eventually(
        "replica 0 stops serving hello",
        Duration::from_secs(20),
        || http_get(&url(0)).is_ok_and(|a| a.status == 404),
    );
    let latest = records::latest_decision(set.replica(0), CACHE, hello.hash_part());
    let outcome = latest.expect("a decision").outcome;
    assert_ne!(
        outcome.as_str(),
        "accepted",
        "the decision in force is no longer accepted"
    );
}

/// `GET` with a `Range` header: (status, Content-Range, body).
async fn get_range(url: &str, range: &str) -> (u16, Option<String>, Bytes) {
    let response = reqwest::Client::new()
        .get(url)
        .header("Range", range)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let content_range = response
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.bytes().await.expect("the body");
    (status, content_range, body)
}

/// A stored NAR answers a single `Range` with 206 and exactly those bytes, from the bucket
/// (streamed from the object store) and from the local directory alike; a range past the
/// end is 416 with the size. A NAR not stored yet is sent whole (200) whatever the range.
#[test]
fn a_stored_nar_answers_ranges_from_the_bucket_and_from_the_local_directory() {
    let fx = fixtures();
    let hello = &fx.paths.hello;
    let garage = Garage::start();
    let up = UpstreamServer::serve(&fx.builder("C").cache_dir);
    let spec = || with_builders(CacheSpec::nix(CACHE).quorum(1), &["C"]).upstream(up.url());
    let set = ReplicaSet::start(1, vec![spec()], &garage, "range");
    let local = common::Quorate::start(common::Backend::Sqlite, vec![spec()]);
    for base in [set.replica(0).url(), local.url()] {
        let narinfo = http_get(&format!("{base}{}", hello.narinfo_path())).expect("narinfo");
        let nar_url = format!("{base}/{}", nar_url_in(&narinfo.text()));
        let (status, _, whole) = block_on(get_range(&nar_url, "bytes=10-19"));
        assert_eq!(status, 200, "{base}: a cold NAR is sent whole");
        assert_eq!(nar_hash_of(&whole), hello.nar_hash);
        let size = whole.len();
        eventually("the NAR stored", Duration::from_secs(30), || {
            block_on(get_range(&nar_url, "bytes=0-0")).0 == 206
        });
        for (range, want) in [
            ("bytes=10-19", 10..20),
            ("bytes=100-", 100..size),
            ("bytes=-5", size - 5..size),
            ("bytes=0-99999", 0..size),
        ] {
            let (status, content_range, body) = block_on(get_range(&nar_url, range));
            assert_eq!(status, 206, "{base} {range}");
            let expected = format!("bytes {}-{}/{size}", want.start, want.end - 1);
            assert_eq!(
                content_range.as_deref(),
                Some(expected.as_str()),
                "{base} {range}"
            );
            assert_eq!(body, whole.slice(want), "{base} {range}");
        }
        let (status, content_range, _) = block_on(get_range(&nar_url, &format!("bytes={size}-")));
        assert_eq!(status, 416, "{base}");
        assert_eq!(content_range, Some(format!("bytes */{size}")));
        let (status, _, body) = block_on(get_range(&nar_url, "bytes=0-1,5-6"));
        assert_eq!(
            (status, body.len()),
            (200, size),
            "{base}: several ranges: the whole NAR"
        );
    }
}

/// The internal relay route is for the set only: without the set's secret, or with another
/// one, it answers 401 and relays nothing; with it, a NAR not in flight on that replica is
/// 404 (the asking replica then looks in the bucket). A lone quorate has no such route.
#[test]
fn the_internal_relay_route_wants_the_sets_secret() {
    let garage = Garage::start();
    let set = ReplicaSet::start(1, vec![idle_cache()], &garage, "secret");
    let url = format!(
        "{}/_quorate/replica/nar/{SOME_NAR_KEY}",
        set.replica(0).url()
    );
    let secret = std::fs::read_to_string(set.secret_file()).expect("the set's secret");
    let ask = |authorization: Option<String>| {
        block_on(async {
            let mut request = reqwest::Client::new().get(&url);
            if let Some(a) = authorization {
                request = request.header("Authorization", a);
            }
            request.send().await.expect("an answer").status().as_u16()
        })
    };
    assert_eq!(ask(None), 401);
    assert_eq!(ask(Some("Bearer not-the-secret-at-all".into())), 401);
    assert_eq!(ask(Some(format!("Bearer {}x", secret.trim()))), 401);
    assert_eq!(ask(Some(format!("Bearer {}", secret.trim()))), 404);

    let lone = common::Quorate::start(common::Backend::Sqlite, vec![idle_cache()]);
    let answer = http_get(&format!(
        "{}/_quorate/replica/nar/{SOME_NAR_KEY}",
        lone.url()
    ));
    assert_eq!(answer.expect("an answer").status, 404);
}

/// With `max_cache_size` the bucket is bounded: once hello and app together exceed it, the
/// least recently served (hello) is deleted from the bucket and from the database, the other
/// stays; asked again, hello is fetched again and served.
#[test]
fn the_bucket_is_bounded_and_the_least_recently_served_nar_goes_first() {
    let fx = fixtures();
    let (hello, app) = (&fx.paths.hello, &fx.paths.app);
    assert!(hello.nar_size + app.nar_size > 700 && app.nar_size <= 700);
    let garage = Garage::start();
    let up = UpstreamServer::serve(&fx.builder("C").cache_dir);
    let spec = with_builders(CacheSpec::nix(CACHE).quorum(1), &["C"]).upstream(up.url());
    let options = common::fleet::ReplicaOptions {
        settings: vec![("max_cache_size".into(), "700B".into())],
        ..common::fleet::ReplicaOptions::in_garage(&garage, "evict")
    };
    let set = ReplicaSet::start_with(2, vec![spec], options);
    let base = set.replica(0).url().to_owned();
    let nar = |path: &FixturePath| {
        let narinfo = http_get(&format!("{base}{}", path.narinfo_path())).expect("narinfo");
        let answer = http_get(&format!("{base}/{}", nar_url_in(&narinfo.text()))).expect("NAR");
        assert_eq!(answer.status, 200, "{}", answer.summary());
        assert_eq!(nar_hash_of(answer.bytes()), path.nar_hash);
    };
    let in_bucket = || -> Vec<String> {
        let mut keys: Vec<String> = garage
            .objects("evict/")
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        keys
    };
    nar(hello);
    eventually("hello in the bucket", Duration::from_secs(30), || {
        in_bucket() == [object_key("evict", hello)]
    });
    nar(app);
    eventually("hello evicted, app kept", Duration::from_secs(60), || {
        in_bucket() == [object_key("evict", app)]
    });
    let recorded = records::with_db(set.replica(0), async |db| {
        db.nar_object_hashes().await.unwrap()
    });
    let app_hash = NarHash::parse(&app.nar_hash).unwrap();
    assert_eq!(recorded, [app_hash], "the database forgot the evicted NAR");
    nar(hello);
}
