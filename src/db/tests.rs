//! The database's behaviour, proven on both backends by the same test bodies.
//!
//! SQLite runs in a temporary directory. PostgreSQL needs a server: start a throwaway one with
//! `scripts/test-postgres.sh start DIR` and export the URL it prints as
//! `QUORATE_TEST_POSTGRES_URL`. Each test gets its own schema there, so tests run in parallel
//! and repeatedly. Without that variable the PostgreSQL tests fail, unless
//! `QUORATE_TEST_SKIP_POSTGRES=1` says to skip them.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::Connection;

use super::columns::Columns;
use super::migrate::known_migrations;
use super::*;
use quorate_core::attestation::{Attestation, Content, NarSource, SigStatus};
use quorate_core::protocol::nar_hash::NarHash;
use quorate_core::protocol::store_path::HashPart;

/// A fresh, empty place for a database, and how to reach it.
struct Fixture {
    /// What `Db::connect` is given.
    url: String,
    /// `"sqlite"` or `"postgres"`.
    backend: &'static str,
    /// Keeps the SQLite directory alive until the test ends.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the server URL and the schema to drop when the test passed.
    pg_schema: Option<(String, String)>,
}

impl Fixture {
    fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        // A missing subdirectory, to prove connect creates it.
        let url = format!("sqlite://{}/state/quorate.db", dir.path().display());
        Fixture {
            url,
            backend: "sqlite",
            _dir: Some(dir),
            pg_schema: None,
        }
    }

    async fn postgres() -> Option<Fixture> {
        let server = match std::env::var("QUORATE_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var("QUORATE_TEST_SKIP_POSTGRES").as_deref() == Ok("1") => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "QUORATE_TEST_SKIP_POSTGRES=1 under CI=true: CI runs every test; unset it"
                );
                eprintln!("QUORATE_TEST_SKIP_POSTGRES=1: skipping a PostgreSQL test");
                return None;
            }
            _ => panic!(
                "the PostgreSQL tests need a server: run `scripts/test-postgres.sh start DIR` \
                 and `export QUORATE_TEST_POSTGRES_URL=<the URL it prints>` \
                 (or set QUORATE_TEST_SKIP_POSTGRES=1 to skip them)"
            ),
        };
        let mut random = [0u8; 8];
        getrandom::getrandom(&mut random).unwrap();
        let schema = format!("quorate_test_{}", columns::hex(&random));
        let mut conn = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to QUORATE_TEST_POSTGRES_URL: {e}"));
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let separator = if server.contains('?') { '&' } else { '?' };
        Some(Fixture {
            url: format!("{server}{separator}options=-c%20search_path%3D{schema}"),
            backend: "postgres",
            _dir: None,
            pg_schema: Some((server, schema)),
        })
    }

    async fn connect(&self) -> Db {
        Db::connect(&self.url).await.unwrap()
    }

    /// Drops the PostgreSQL schema (left behind for inspection when a test fails).
    async fn finish(self) {
        if let Some((server, schema)) = &self.pg_schema {
            let mut conn = sqlx::PgConnection::connect(server).await.unwrap();
            sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// Runs each named test body once on SQLite and once on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fixture = super::Fixture::sqlite();
                    super::$name(&fixture).await;
                    fixture.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(fixture) = super::Fixture::postgres().await else { return };
                    super::$name(&fixture).await;
                    fixture.finish().await;
                }
            )*
        }
    };
}

on_both_backends!(
    connecting_twice_applies_migrations_once,
    replicas_starting_together_migrate_once,
    attestation_seen_again_only_moves_last_seen,
    every_signature_status_round_trips,
    references_keep_their_order,
    decisions_keep_history_and_the_latest_is_in_force,
    withdrawn_path_no_longer_vouches_for_its_nar,
    nar_objects_upsert_touch_and_remove,
    nar_objects_recorded_and_removed_in_batches,
    events_filter_by_cache_and_kind,
    sizes_above_i64_max_are_refused,
    concurrent_recording_from_many_tasks_loses_nothing,
    nar_sources_upsert_per_upstream_and_url,
    upstreams_and_builder_keys_are_recorded_once,
    reports_count_agreement_and_list_conflicts,
    a_lease_has_one_holder_until_it_expires,
);

const HASH_PART: &str = "p4pclmv1gyja5kzc26npqpia1qqxrf0l";
const NAR_HASH: &str = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";

fn hash_part(s: &str) -> HashPart {
    s.parse().expect("a test hash part")
}

fn nar_hash(s: &str) -> NarHash {
    s.parse().expect("a test NarHash")
}

fn content() -> Content {
    Content {
        store_path: format!("/nix/store/{HASH_PART}-hello-2.12.1"),
        nar_hash: nar_hash(NAR_HASH),
        nar_size: 226_560,
        references: vec![
            "3n58xw4373jp0ljirf06d8077j15pc4j-glibc-2.37-8".to_owned(),
            format!("{HASH_PART}-hello-2.12.1"),
        ],
    }
}

fn attestation(builder: &str, upstream: &str, seen_at: i64) -> Attestation {
    Attestation {
        cache: "nixos".to_owned(),
        hash_part: hash_part(HASH_PART),
        content: content(),
        deriver: Some("qf3v3bdj1ynbzrc6n0pa5wl4fwsl2n5v-hello-2.12.1.drv".to_owned()),
        ca: None,
        key_name: format!("{builder}-1"),
        builder: Some(builder.to_owned()),
        upstream: upstream.to_owned(),
        signature: format!("{builder}-1:c2lnbmF0dXJl{builder}=="),
        status: SigStatus::Valid,
        seen_at,
        signed_body: None,
        first_seen: seen_at,
    }
}

fn decision(hash_part_text: &str, outcome: Outcome, decided_at: i64) -> DecisionRecord {
    let mut content = content();
    content.store_path = format!("/nix/store/{hash_part_text}-hello-2.12.1");
    DecisionRecord {
        cache: "nixos".to_owned(),
        hash_part: hash_part(hash_part_text),
        store_path: Some(content.store_path.clone()),
        outcome,
        content: Some(content),
        deriver: Some("qf3v3bdj1ynbzrc6n0pa5wl4fwsl2n5v-hello-2.12.1.drv".to_owned()),
        ca: Some("fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s".to_owned()),
        agreeing: vec!["hydra".to_owned(), "home rebuilder".to_owned()],
        dissenters: vec![],
        policy: r#"{"quorum":2,"on_dissent":"refuse"}"#.to_owned(),
        decided_at,
    }
}

fn event(cache: Option<&str>, kind: &str, at: i64) -> Event {
    Event {
        cache: cache.map(str::to_owned),
        kind: kind.parse().expect("a known event kind"),
        store_path: Some(format!("/nix/store/{HASH_PART}-hello-2.12.1")),
        upstream: Some("https://cache.example".to_owned()),
        detail: format!("{kind} at {at}"),
        at,
    }
}

async fn applied_migrations(db: &Db) -> i64 {
    on_pool!(db, pool => {
        sqlx::query("SELECT COUNT(*) AS n FROM schema_migrations")
            .fetch_one(pool)
            .await
            .unwrap()
            .int("n")
            .unwrap()
    })
}

async fn connecting_twice_applies_migrations_once(fx: &Fixture) {
    let db = fx.connect().await;
    assert_eq!(db.backend(), fx.backend);
    db.ping().await.unwrap();
    db.record_event(&event(Some("nixos"), "conflict", 1))
        .await
        .unwrap();
    db.close().await;

    let again = fx.connect().await;
    again.ping().await.unwrap();
    if let Pool::Sqlite(pool) = &again.pool {
        let mode = sqlx::query("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap()
            .text("journal_mode")
            .unwrap();
        assert_eq!(mode, "wal", "readers must not block the writer");
    }
    assert_eq!(applied_migrations(&again).await, known_migrations() as i64);
    assert_eq!(again.events(None, None).await.unwrap().len(), 1);
}

async fn replicas_starting_together_migrate_once(fx: &Fixture) {
    let replicas: Vec<_> = (0..4)
        .map(|_| {
            let url = fx.url.clone();
            tokio::spawn(async move { Db::connect(&url).await })
        })
        .collect();
    let mut dbs = Vec::new();
    for replica in replicas {
        dbs.push(replica.await.unwrap().unwrap());
    }
    assert_eq!(applied_migrations(&dbs[0]).await, known_migrations() as i64);
    dbs[1]
        .record_attestations(&[attestation("hydra", "https://cache.nixos.org", 1)])
        .await
        .unwrap();
    assert_eq!(dbs[3].count_attestations(None).await.unwrap(), 1);
}

async fn attestation_seen_again_only_moves_last_seen(fx: &Fixture) {
    let db = fx.connect().await;
    let first = attestation("hydra", "https://cache.nixos.org", 1_000);
    db.record_attestations(std::slice::from_ref(&first))
        .await
        .unwrap();

    let mut again = first.clone();
    again.seen_at = 2_000;
    again.deriver = None; // informational fields are not part of the identity
    db.record_attestations(&[again]).await.unwrap();
    let mut late = first.clone();
    late.seen_at = 500; // a late background answer must not move last_seen backwards
    db.record_attestations(&[late]).await.unwrap();

    let stored = db
        .attestations("nixos", &hash_part(HASH_PART))
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0],
        Attestation {
            seen_at: 2_000,
            first_seen: 500, // the late answer was observed first
            ..first.clone()
        }
    );

    // The same claim through another upstream, or with another signature, is new evidence.
    let via_mirror = attestation("hydra", "https://mirror.example", 3_000);
    let mut resigned = first.clone();
    resigned.signature = "hydra-1:b3RoZXI=".to_owned();
    db.record_attestations(&[via_mirror, resigned])
        .await
        .unwrap();
    assert_eq!(db.count_attestations(Some("nixos")).await.unwrap(), 3);

    // A key added to the config later turns an unknown key's claim valid when seen again.
    let mut unknown = attestation("newcomer", "https://cache.nixos.org", 4_000);
    unknown.status = SigStatus::UnknownKey;
    unknown.builder = None;
    db.record_attestations(std::slice::from_ref(&unknown))
        .await
        .unwrap();
    let mut now_known = attestation("newcomer", "https://cache.nixos.org", 5_000);
    now_known.status = SigStatus::Valid;
    db.record_attestations(std::slice::from_ref(&now_known))
        .await
        .unwrap();
    let valid = db
        .valid_attestations("nixos", &hash_part(HASH_PART))
        .await
        .unwrap();
    assert_eq!(valid.len(), 4);
    // Its first sighting, under the unknown key, stays its first.
    assert_eq!(
        valid[3],
        Attestation {
            first_seen: 4_000,
            ..now_known
        }
    );
    assert_eq!(db.count_attestations(None).await.unwrap(), 4);
}

async fn every_signature_status_round_trips(fx: &Fixture) {
    let db = fx.connect().await;
    let valid = attestation("hydra", "https://cache.nixos.org", 1);
    let mut invalid = attestation("home", "https://cache.nixos.org", 2);
    invalid.status = SigStatus::Invalid;
    let mut unknown = attestation("stranger", "https://cache.nixos.org", 3);
    unknown.status = SigStatus::UnknownKey;
    unknown.builder = None;
    unknown.deriver = None;
    unknown.ca = Some("fixed:r:sha256:abc".to_owned());
    let mut elsewhere = attestation("hydra", "https://cache.nixos.org", 4);
    elsewhere.cache = "guix".to_owned();

    let all = [valid.clone(), invalid.clone(), unknown.clone()];
    db.record_attestations(&all).await.unwrap();
    db.record_attestations(std::slice::from_ref(&elsewhere))
        .await
        .unwrap();

    // Returned in recording order (the batch is stored in key order, so compare as sets).
    let mut stored = db
        .attestations("nixos", &hash_part(HASH_PART))
        .await
        .unwrap();
    stored.sort_by_key(|a| a.seen_at);
    assert_eq!(stored, all);
    assert_eq!(
        db.valid_attestations("nixos", &hash_part(HASH_PART))
            .await
            .unwrap(),
        vec![valid]
    );
    assert_eq!(
        db.attestations("guix", &hash_part(HASH_PART))
            .await
            .unwrap(),
        vec![elsewhere]
    );
    assert!(db
        .attestations("nixos", &hash_part("00000000000000000000000000000000"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(db.count_attestations(Some("nixos")).await.unwrap(), 3);
    assert_eq!(db.count_attestations(Some("guix")).await.unwrap(), 1);
    assert_eq!(db.count_attestations(Some("none")).await.unwrap(), 0);
    assert_eq!(db.count_attestations(None).await.unwrap(), 4);
}

async fn references_keep_their_order(fx: &Fixture) {
    let db = fx.connect().await;
    // Guix compares the References list as given: not sorted, order significant.
    let guix_order = vec![
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-last-but-listed-first".to_owned(),
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-first".to_owned(),
        "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm-middle".to_owned(),
    ];
    let mut guix = attestation("guix-ci", "https://ci.guix.gnu.org", 1);
    guix.content.references = guix_order.clone();
    let mut reversed = guix.clone();
    reversed.content.references.reverse();
    let mut leaf = attestation("hydra", "https://cache.nixos.org", 3);
    leaf.content.references = vec![];
    db.record_attestations(&[guix, reversed, leaf])
        .await
        .unwrap();

    let mut stored = db
        .attestations("nixos", &hash_part(HASH_PART))
        .await
        .unwrap();
    stored.sort_by_key(|a| (a.seen_at, a.content.references.first().cloned()));
    assert_eq!(stored.len(), 3, "a reordered list is a different claim");
    assert_eq!(stored[0].content.references[2], guix_order[0]);
    assert_eq!(stored[1].content.references, guix_order);
    assert_eq!(stored[2].content.references, Vec::<String>::new());

    let mut bad = attestation("hydra", "https://cache.nixos.org", 4);
    bad.content.references = vec!["two words".to_owned()];
    let ok = attestation("other", "https://cache.nixos.org", 4);
    assert!(matches!(
        db.record_attestations(&[ok, bad]).await,
        Err(DbError::InvalidReference(_))
    ));
    assert_eq!(
        db.count_attestations(None).await.unwrap(),
        3,
        "a refused batch stores nothing"
    );
}

async fn decisions_keep_history_and_the_latest_is_in_force(fx: &Fixture) {
    let db = fx.connect().await;
    assert_eq!(
        db.latest_decision("nixos", &hash_part(HASH_PART))
            .await
            .unwrap(),
        None
    );

    let accepted = decision(HASH_PART, Outcome::Accepted, 1_000);
    let first_id = db.record_decision(&accepted).await.unwrap();
    assert_eq!(
        db.latest_decision("nixos", &hash_part(HASH_PART))
            .await
            .unwrap(),
        Some(accepted.clone())
    );

    let refused = DecisionRecord {
        outcome: Outcome::Refused,
        content: None,
        deriver: None,
        ca: None,
        agreeing: vec!["hydra".to_owned()],
        dissenters: vec!["home \"rebuilder\"".to_owned(), "ci".to_owned()],
        decided_at: 2_000,
        ..accepted.clone()
    };
    let second_id = db.record_decision(&refused).await.unwrap();
    assert!(second_id > first_id);
    assert_eq!(
        db.latest_decision("nixos", &hash_part(HASH_PART))
            .await
            .unwrap(),
        Some(refused.clone())
    );

    // Not decided yet: no content, no store path.
    let insufficient = DecisionRecord {
        hash_part: hash_part("00000000000000000000000000000000"),
        store_path: None,
        outcome: Outcome::Insufficient,
        content: None,
        agreeing: vec![],
        ..accepted.clone()
    };
    db.record_decision(&insufficient).await.unwrap();
    assert_eq!(
        db.latest_decision("nixos", &hash_part("00000000000000000000000000000000"))
            .await
            .unwrap(),
        Some(insufficient)
    );
    // Other caches keep their own history.
    assert_eq!(
        db.latest_decision("guix", &hash_part(HASH_PART))
            .await
            .unwrap(),
        None
    );

    for outcome in [
        Outcome::Accepted,
        Outcome::Refused,
        Outcome::Insufficient,
        Outcome::Withdrawn,
    ] {
        assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
    }
}

async fn withdrawn_path_no_longer_vouches_for_its_nar(fx: &Fixture) {
    let db = fx.connect().await;
    let other_path = "1ll7mmjmmqcd4s2dmr4fhqlwvcd5k3pk";
    assert_eq!(
        db.accepted_decision_for_nar("nixos", &nar_hash(NAR_HASH))
            .await
            .unwrap(),
        None
    );

    let accepted = decision(HASH_PART, Outcome::Accepted, 1_000);
    db.record_decision(&accepted).await.unwrap();
    assert_eq!(
        db.accepted_decision_for_nar("nixos", &nar_hash(NAR_HASH))
            .await
            .unwrap(),
        Some(accepted.clone())
    );
    assert_eq!(
        db.accepted_decision_for_nar("guix", &nar_hash(NAR_HASH))
            .await
            .unwrap(),
        None
    );

    // A late dissent withdraws it: its NAR is no longer vouched for, even though the
    // withdrawal keeps the content it withdraws.
    let withdrawn = DecisionRecord {
        outcome: Outcome::Withdrawn,
        dissenters: vec!["home".to_owned()],
        decided_at: 2_000,
        ..accepted.clone()
    };
    db.record_decision(&withdrawn).await.unwrap();
    assert_eq!(
        db.accepted_decision_for_nar("nixos", &nar_hash(NAR_HASH))
            .await
            .unwrap(),
        None
    );

    // Another path accepted with the same NAR bytes still vouches for them.
    let twin = decision(other_path, Outcome::Accepted, 3_000);
    db.record_decision(&twin).await.unwrap();
    assert_eq!(
        db.accepted_decision_for_nar("nixos", &nar_hash(NAR_HASH))
            .await
            .unwrap(),
        Some(twin)
    );

    // Accepted again later: the withdrawn path's own latest decision is back in force.
    let reaccepted = DecisionRecord {
        decided_at: 4_000,
        ..accepted
    };
    db.record_decision(&reaccepted).await.unwrap();
    assert_eq!(
        db.accepted_decision_for_nar("nixos", &nar_hash(NAR_HASH))
            .await
            .unwrap(),
        Some(reaccepted)
    );
}

async fn nar_objects_recorded_and_removed_in_batches(fx: &Fixture) {
    let db = fx.connect().await;
    // More than one batch, and one object already recorded (an upsert, not a conflict).
    let objects: Vec<_> = (0..2500u32)
        .map(|i| {
            let digest: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
            let hash = NarHash::from_digest(digest);
            (hash, u64::from(i), format!("nar/{i}.nar"))
        })
        .collect();
    db.record_nar_object(&objects[7].0, 1, "nar/old.nar")
        .await
        .unwrap();
    db.record_nar_objects(&objects).await.unwrap();
    let mut recorded = db.nar_object_hashes().await.unwrap();
    recorded.sort();
    let mut expected: Vec<_> = objects.iter().map(|o| o.0).collect();
    expected.sort();
    assert_eq!(recorded, expected);
    let seventh = db.nar_object(&objects[7].0).await.unwrap().unwrap();
    assert_eq!(
        (seventh.nar_size, seventh.location.as_str()),
        (7, "nar/7.nar")
    );
    assert_eq!(
        db.nar_objects_total_size().await.unwrap(),
        (0..2500u64).sum::<u64>()
    );

    let gone: Vec<_> = objects[..1500].iter().map(|o| o.0).collect();
    db.remove_nar_objects(&gone).await.unwrap();
    let mut left = db.nar_object_hashes().await.unwrap();
    left.sort();
    let mut expected: Vec<_> = objects[1500..].iter().map(|o| o.0).collect();
    expected.sort();
    assert_eq!(left, expected);
    db.record_nar_objects(&[]).await.unwrap();
    db.remove_nar_objects(&[]).await.unwrap();
}

async fn nar_objects_upsert_touch_and_remove(fx: &Fixture) {
    let db = fx.connect().await;
    assert_eq!(db.nar_object(&nar_hash(NAR_HASH)).await.unwrap(), None);

    let before = crate::clock::now_ms();
    db.record_nar_object(&nar_hash(NAR_HASH), 226_560, "nar/1b8m.nar")
        .await
        .unwrap();
    let stored = db.nar_object(&nar_hash(NAR_HASH)).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.nar_hash.to_string().as_str(),
            stored.nar_size,
            stored.location.as_str()
        ),
        (NAR_HASH, 226_560, "nar/1b8m.nar")
    );
    assert!(stored.verified_at >= before);
    assert_eq!(stored.last_access, stored.verified_at);

    tokio::time::sleep(Duration::from_millis(5)).await;
    db.touch_nar_object(&nar_hash(NAR_HASH)).await.unwrap();
    let touched = db.nar_object(&nar_hash(NAR_HASH)).await.unwrap().unwrap();
    assert!(touched.last_access > stored.last_access);
    assert_eq!(touched.verified_at, stored.verified_at);

    // Re-verified into a new location: one row, updated.
    tokio::time::sleep(Duration::from_millis(5)).await;
    db.record_nar_object(&nar_hash(NAR_HASH), 226_560, "nar/moved.nar")
        .await
        .unwrap();
    let moved = db.nar_object(&nar_hash(NAR_HASH)).await.unwrap().unwrap();
    assert_eq!(moved.location, "nar/moved.nar");
    assert!(moved.verified_at > stored.verified_at);

    // Least recently used first; sizes add up.
    let other = "sha256:0000000000000000000000000000000000000000000000000000";
    tokio::time::sleep(Duration::from_millis(5)).await;
    db.record_nar_object(&nar_hash(other), 10, "nar/other.nar")
        .await
        .unwrap();
    let lru = db.least_recently_used_nar_objects(10).await.unwrap();
    let order: Vec<_> = lru.iter().map(|o| o.nar_hash.to_string()).collect();
    assert_eq!(order, [NAR_HASH, other]);
    assert_eq!(
        db.least_recently_used_nar_objects(1).await.unwrap().len(),
        1
    );
    assert_eq!(db.nar_objects_total_size().await.unwrap(), 226_570);

    // Eviction removes the object, not the evidence.
    db.record_attestations(&[attestation("hydra", "https://cache.nixos.org", 1)])
        .await
        .unwrap();
    db.remove_nar_object(&nar_hash(NAR_HASH)).await.unwrap();
    db.remove_nar_object(&nar_hash(NAR_HASH)).await.unwrap();
    db.touch_nar_object(&nar_hash(NAR_HASH)).await.unwrap();
    assert_eq!(db.nar_object(&nar_hash(NAR_HASH)).await.unwrap(), None);
    assert_eq!(db.nar_objects_total_size().await.unwrap(), 10);
    assert_eq!(db.count_attestations(None).await.unwrap(), 1);
}

async fn events_filter_by_cache_and_kind(fx: &Fixture) {
    let db = fx.connect().await;
    let recorded = [
        event(Some("nixos"), "mismatch", 1),
        event(Some("nixos"), "conflict", 2),
        event(Some("guix"), "mismatch", 3),
        event(None, "upstream_failure", 4),
    ];
    for e in &recorded {
        db.record_event(e).await.unwrap();
    }
    let ats = |events: Vec<Event>| events.iter().map(|e| e.at).collect::<Vec<_>>();

    assert_eq!(db.events(None, None).await.unwrap(), recorded);
    assert_eq!(ats(db.events(Some("nixos"), None).await.unwrap()), [1, 2]);
    assert_eq!(
        ats(db.events(None, Some(EventKind::Mismatch)).await.unwrap()),
        [1, 3]
    );
    assert_eq!(
        ats(db
            .events(Some("guix"), Some(EventKind::Mismatch))
            .await
            .unwrap()),
        [3]
    );
    assert_eq!(
        ats(db
            .events(None, Some(EventKind::UpstreamFailure))
            .await
            .unwrap()),
        [4]
    );
    assert!(db
        .events(Some("guix"), Some(EventKind::Conflict))
        .await
        .unwrap()
        .is_empty());
}

async fn sizes_above_i64_max_are_refused(fx: &Fixture) {
    let db = fx.connect().await;
    let too_big = i64::MAX as u64 + 1;
    let refused = |r: Result<_, DbError>| matches!(r, Err(DbError::SizeOutOfRange { value, .. }) if value == too_big);

    let mut att = attestation("hydra", "https://cache.nixos.org", 1);
    att.content.nar_size = too_big;
    assert!(refused(db.record_attestations(&[att]).await));
    assert!(refused(
        db.record_nar_object(&nar_hash(NAR_HASH), too_big, "x")
            .await
    ));
    let mut d = decision(HASH_PART, Outcome::Accepted, 1);
    if let Some(c) = d.content.as_mut() {
        c.nar_size = too_big;
    }
    assert!(refused(db.record_decision(&d).await.map(|_| ())));
    let source = NarSource {
        upstream: "https://cache.nixos.org".to_owned(),
        nar_hash: nar_hash(NAR_HASH),
        url: "nar/x.nar.xz".to_owned(),
        compression: "xz".to_owned(),
        file_size: Some(too_big),
    };
    assert!(refused(
        db.record_nar_sources("nixos", std::slice::from_ref(&source))
            .await
    ));
    assert_eq!(db.count_attestations(None).await.unwrap(), 0);
    assert_eq!(
        db.latest_decision("nixos", &hash_part(HASH_PART))
            .await
            .unwrap(),
        None
    );
    assert_eq!(db.nar_object(&nar_hash(NAR_HASH)).await.unwrap(), None);

    // The largest storable size goes in and comes back exactly.
    let max = i64::MAX as u64;
    let mut att = attestation("hydra", "https://cache.nixos.org", 1);
    att.content.nar_size = max;
    db.record_attestations(std::slice::from_ref(&att))
        .await
        .unwrap();
    assert_eq!(
        db.attestations("nixos", &hash_part(HASH_PART))
            .await
            .unwrap(),
        vec![att]
    );
    db.record_nar_object(&nar_hash(NAR_HASH), max, "x")
        .await
        .unwrap();
    assert_eq!(
        db.nar_object(&nar_hash(NAR_HASH))
            .await
            .unwrap()
            .unwrap()
            .nar_size,
        max
    );
    let source = NarSource {
        file_size: Some(max),
        ..source
    };
    db.record_nar_sources("nixos", std::slice::from_ref(&source))
        .await
        .unwrap();
    assert_eq!(
        db.nar_sources("nixos", &nar_hash(NAR_HASH)).await.unwrap(),
        vec![source]
    );
}

async fn concurrent_recording_from_many_tasks_loses_nothing(fx: &Fixture) {
    let db = fx.connect().await;
    const TASKS: i64 = 16;
    const SHARED: usize = 10;
    // Every task records the same ten observations (in its own order) plus one of its own.
    let shared: Vec<Attestation> = (0..SHARED)
        .map(|i| attestation(&format!("builder{i}"), "https://cache.nixos.org", 0))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let db = db.clone();
        let mut batch = shared.clone();
        batch.rotate_left(t as usize % SHARED);
        for a in &mut batch {
            a.seen_at = 1_000 + t;
        }
        batch.push(attestation(
            &format!("solo{t}"),
            "https://mirror.example",
            1_000 + t,
        ));
        tasks.spawn(async move {
            for _ in 0..3 {
                db.record_attestations(&batch).await?;
            }
            Ok::<_, DbError>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }

    assert_eq!(
        db.count_attestations(Some("nixos")).await.unwrap(),
        SHARED as i64 + TASKS
    );
    let stored = db
        .attestations("nixos", &hash_part(HASH_PART))
        .await
        .unwrap();
    for a in stored
        .iter()
        .filter(|a| a.upstream == "https://cache.nixos.org")
    {
        assert_eq!(
            a.seen_at,
            1_000 + TASKS - 1,
            "last_seen is the latest sighting"
        );
    }
}

async fn nar_sources_upsert_per_upstream_and_url(fx: &Fixture) {
    let db = fx.connect().await;
    let xz = NarSource {
        upstream: "https://cache.nixos.org".to_owned(),
        nar_hash: nar_hash(NAR_HASH),
        url: "nar/1b8m.nar.xz".to_owned(),
        compression: "xz".to_owned(),
        file_size: Some(50_000),
    };
    let zstd = NarSource {
        url: "nar/1b8m.nar.zst".to_owned(),
        compression: "zstd".to_owned(),
        file_size: None,
        ..xz.clone()
    };
    let mirror = NarSource {
        upstream: "https://mirror.example".to_owned(),
        ..xz.clone()
    };
    db.record_nar_sources("nixos", &[xz.clone(), zstd.clone(), mirror.clone()])
        .await
        .unwrap();
    db.record_nar_sources("guix", std::slice::from_ref(&xz))
        .await
        .unwrap();
    db.record_nar_sources("nixos", &[]).await.unwrap();

    // Seen again with a new size: updated in place.
    let resized = NarSource {
        file_size: Some(49_999),
        ..xz.clone()
    };
    db.record_nar_sources("nixos", std::slice::from_ref(&resized))
        .await
        .unwrap();

    let mut stored = db.nar_sources("nixos", &nar_hash(NAR_HASH)).await.unwrap();
    stored.sort_by(|a, b| (&a.upstream, &a.url).cmp(&(&b.upstream, &b.url)));
    assert_eq!(stored, vec![resized, zstd, mirror]);
    assert_eq!(
        db.nar_sources("guix", &nar_hash(NAR_HASH)).await.unwrap(),
        vec![xz]
    );
    assert!(db
        .nar_sources("nixos", &nar_hash(&format!("sha256:{}", "1".repeat(52))))
        .await
        .unwrap()
        .is_empty());
}

async fn upstreams_and_builder_keys_are_recorded_once(fx: &Fixture) {
    let db = fx.connect().await;
    db.record_upstream("https://cache.nixos.org").await.unwrap();
    db.record_upstream("https://mirror.example").await.unwrap();
    db.record_upstream("https://cache.nixos.org").await.unwrap();
    assert_eq!(
        db.upstreams().await.unwrap(),
        ["https://cache.nixos.org", "https://mirror.example"]
    );

    let hydra_key = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
    let guix_key = "(public-key (ecc (curve Ed25519) (q #8D156F295D24B0D9A86FA5741A840FF2D24F60F7B6C4134814AD55625971B394#)))";
    db.record_builder_key("nixos", "hydra", hydra_key)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    db.record_builder_key("nixos", "hydra", hydra_key)
        .await
        .unwrap();
    db.record_builder_key("guix", "berlin", guix_key)
        .await
        .unwrap();

    let keys = db.builder_keys("nixos").await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].builder.as_str(), keys[0].key.as_str()),
        ("hydra", hydra_key)
    );
    assert!(keys[0].last_seen > keys[0].first_seen);
    assert_eq!(db.builder_keys("guix").await.unwrap()[0].key, guix_key);
}

#[tokio::test]
async fn unsupported_url_is_refused_without_echoing_secrets() {
    let err = Db::connect("mysql://quorate:hunter2@db.example/quorate")
        .await
        .unwrap_err();
    assert!(matches!(&err, DbError::UnsupportedUrl { scheme } if scheme == "mysql"));
    assert!(!err.to_string().contains("hunter2"));
}

#[tokio::test]
async fn in_memory_sqlite_keeps_its_data_for_the_life_of_the_pool() {
    let db = Db::connect("sqlite::memory:").await.unwrap();
    db.record_event(&event(None, "conflict", 1)).await.unwrap();
    // More calls than one connection could serve at once: they queue, and see one database.
    let reads = (0..4).map(|_| db.events(None, None));
    for events in futures_util::future::join_all(reads).await {
        assert_eq!(events.unwrap().len(), 1);
    }
}

/// Three builders over three paths: a and b agree everywhere, c dissents on one path and has
/// an invalid signature on another.
async fn reports_count_agreement_and_list_conflicts(fx: &Fixture) {
    let db = fx.connect().await;
    let path = |p: &str, builder: &str, hash: &str, status: SigStatus, at: i64| {
        let mut a = attestation(builder, &format!("https://{builder}.example"), at);
        a.hash_part = hash_part(p);
        a.content.store_path = format!("/nix/store/{p}-x");
        a.content.references = vec![];
        a.content.nar_hash = nar_hash(hash);
        a.status = status;
        a
    };
    let (p1, p2, p3) = (
        "11111111111111111111111111111111",
        "22222222222222222222222222222222",
        "33333333333333333333333333333333",
    );
    let other = "sha256:0000000000000000000000000000000000000000000000000000";
    let v = SigStatus::Valid;
    db.record_attestations(&[
        path(p1, "a", NAR_HASH, v, 1),
        path(p1, "b", NAR_HASH, v, 2),
        path(p1, "c", NAR_HASH, v, 3),
        path(p2, "a", NAR_HASH, v, 4),
        path(p2, "b", NAR_HASH, v, 5),
        path(p2, "c", other, v, 6),
        path(p3, "a", NAR_HASH, v, 7),
        path(p3, "c", other, SigStatus::Invalid, 8),
    ])
    .await
    .unwrap();

    let builders = db.builder_records("nixos").await.unwrap();
    let c = builders.iter().find(|b| b.builder == "c").expect("c");
    assert_eq!((c.valid, c.invalid, c.paths), (2, 1, 2));
    let a = builders.iter().find(|b| b.builder == "a").expect("a");
    assert_eq!((a.valid, a.invalid, a.paths), (3, 0, 3));

    let agreement = db.agreements("nixos").await.unwrap();
    let pair = |x: &str, y: &str| {
        agreement
            .iter()
            .find(|g| g.builder == x && g.other == y)
            .map(|g| (g.shared, g.agreed))
    };
    assert_eq!(pair("a", "b"), Some((2, 2)));
    assert_eq!(
        pair("a", "c"),
        Some((2, 1)),
        "the invalid one does not count"
    );
    assert_eq!(pair("c", "a"), Some((2, 1)));
    assert_eq!(db.agreements("guix").await.unwrap(), vec![]);

    let conflicts = db.conflicts("nixos", 10, 0).await.unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].hash_part, hash_part(p2));
    assert_eq!(conflicts[0].contents, 2);
    assert_eq!(conflicts[0].last_seen, 6);
    assert!(
        db.conflicts("nixos", 10, 1).await.unwrap().is_empty(),
        "paging"
    );

    db.record_decision(&decision(p1, Outcome::Accepted, 10))
        .await
        .unwrap();
    db.record_decision(&decision(p2, Outcome::Refused, 11))
        .await
        .unwrap();
    let recent = db.recent_decisions("nixos", 1).await.unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].outcome, Outcome::Refused);

    let anywhere = db
        .trusted_attestations_anywhere(&hash_part(p2))
        .await
        .unwrap();
    assert_eq!(anywhere.len(), 3);
}

async fn a_lease_has_one_holder_until_it_expires(fx: &Fixture) {
    let db = fx.connect().await;
    let name = "nar:0000000000000000000000000000000000000000000000000000";
    assert!(db
        .take_lease(name, "http://a", "ta", 1_000, 2_000)
        .await
        .unwrap());
    assert!(
        !db.take_lease(name, "http://b", "tb", 1_500, 2_500)
            .await
            .unwrap(),
        "held until it expires"
    );
    assert_eq!(
        db.lease(name).await.unwrap().map(|l| l.owner),
        Some("http://a".into())
    );
    assert!(db.renew_lease(name, "ta", 3_000).await.unwrap());
    assert!(
        !db.take_lease(name, "http://b", "tb", 2_500, 3_500)
            .await
            .unwrap(),
        "renewed"
    );
    // The holder died: once expired, another replica takes over, and the old holder's
    // token renews and releases nothing.
    assert!(db
        .take_lease(name, "http://b", "tb", 3_001, 4_000)
        .await
        .unwrap());
    assert!(!db.renew_lease(name, "ta", 9_000).await.unwrap());
    db.release_lease(name, "ta").await.unwrap();
    assert_eq!(
        db.lease(name).await.unwrap().map(|l| l.owner),
        Some("http://b".into())
    );
    db.release_lease(name, "tb").await.unwrap();
    assert_eq!(db.lease(name).await.unwrap(), None);
    assert!(
        db.take_lease(name, "http://c", "tc", 0, 1).await.unwrap(),
        "free again"
    );
    // Two replicas racing for a free lease: exactly one wins.
    let other = "evict";
    let (x, y) = tokio::join!(
        db.take_lease(other, "http://x", "tx", 0, 10_000),
        db.take_lease(other, "http://y", "ty", 0, 10_000)
    );
    assert!(
        x.unwrap() ^ y.unwrap(),
        "exactly one of two racers takes it"
    );
}
