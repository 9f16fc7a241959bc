//! Attestation-only builders (DESIGN §13, issue 11 items 1 and 2), end to end: a rebuilder
//! that builds in its own Nix store but runs no cache vouches for its outputs with
//! `quorate push` (its Nix `post-build-hook` only queues them), quorate counts those votes
//! like any other, and the real Nix client substitutes the path with NAR bytes from the one
//! upstream that has them. Pushes that no builder signed, or signed wrongly, leave nothing in
//! the database or the transparency log; limits answer 413 and 429.
//!
//! Every story runs on SQLite and PostgreSQL.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::fixtures::FixturePath;
use common::quorate::free_port;
use common::records::{self, with_db};
use common::{
    block_on, eventually, fixtures, for_each_backend, http_get, scratch_dir, serve_builder,
    with_builders, CacheSpec, NixClient, Placement, Quorate,
};
use quorate_core::attestation::Content;
use quorate_core::protocol::nar_hash::NarHash;
use quorate_core::protocol::narinfo::fingerprint_of;
use quorate_core::protocol::nix_key::NixSecretKey;

const CACHE: &str = "main";

/// A Nix command (or one that runs Nix's) with the fixtures' isolated configuration.
fn nix(program: &str, scratch: &Path) -> Command {
    common::nix_client::nix_command(program, scratch)
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `quorate push ARGS` (with the fixtures' Nix configuration, for the `nix-store` it runs).
fn quorate_push(args: &[&str], scratch: &Path) -> Output {
    let mut cmd = nix(env!("CARGO_BIN_EXE_quorate"), scratch);
    cmd.arg("push").args(args);
    cmd.output().expect("running quorate push")
}

/// A rebuilder: its own key (made by Nix) and a fresh chroot store in which it builds hello
/// and app with `contrib/post-build-hook.sh` as Nix's post-build hook, queueing into `queue`.
struct Rebuilder {
    secret_key_file: PathBuf,
    public_key: String,
    store: PathBuf,
}

impl Rebuilder {
    fn build_with_hook(dir: &Path, queue: &Path) -> Rebuilder {
        let secret_key_file = dir.join("rebuilder.sec");
        let public_key_file = dir.join("rebuilder.pub");
        let keygen = nix("nix-store", dir)
            .args(["--generate-binary-cache-key", "rebuilder-1"])
            .args([&secret_key_file, &public_key_file])
            .output()
            .expect("nix-store --generate-binary-cache-key");
        assert!(keygen.status.success(), "{}", output_text(&keygen));
        let store = dir.join("store");
        let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/post-build-hook.sh");
        let paths_nix = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/paths.nix");
        let built = nix("nix-build", dir)
            .arg("--store")
            .arg(&store)
            .args([
                "--option",
                "sandbox-paths",
                "/bin=/usr/bin /usr /lib=/usr/lib /lib64=/usr/lib64",
            ])
            .arg("--option")
            .arg("post-build-hook")
            .arg(&hook)
            .arg(&paths_nix)
            .args(["-A", "hello", "-A", "app", "--no-out-link"])
            .env("QUORATE_PUSH_QUEUE", queue)
            .output()
            .expect("nix-build");
        assert!(built.status.success(), "{}", output_text(&built));
        let public_key = std::fs::read_to_string(&public_key_file)
            .expect("the rebuilder's public key")
            .trim()
            .to_owned();
        Rebuilder {
            secret_key_file,
            public_key,
            store,
        }
    }
}

/// The queue's items (not the hidden files, not `rejected/`).
fn queued(queue: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(queue)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The narinfo text of a fixture path signed with `sigs` (what a builder would push).
fn narinfo_of(path: &FixturePath, sigs: &[String]) -> String {
    let refs: Vec<&str> = path
        .references
        .iter()
        .map(|r| r.rsplit('/').next().unwrap_or(r))
        .collect();
    let mut text = format!(
        "StorePath: {}\nURL: nar/x.nar\nCompression: none\nNarHash: {}\nNarSize: {}\nReferences: {}\n",
        path.store_path,
        path.nar_hash,
        path.nar_size,
        refs.join(" ")
    );
    for s in sigs {
        text.push_str(&format!("Sig: {s}\n"));
    }
    text
}

/// `key`'s signature over a fixture path's fingerprint.
fn signature(key: &NixSecretKey, path: &FixturePath) -> String {
    let content = Content {
        store_path: path.store_path.clone(),
        nar_hash: NarHash::parse(&path.nar_hash).expect("fixture hash"),
        nar_size: path.nar_size,
        // Content holds reference basenames; the fingerprint makes them full paths.
        references: path
            .references
            .iter()
            .map(|r| r.rsplit('/').next().unwrap_or(r).to_owned())
            .collect(),
    };
    key.sign(&fingerprint_of(&fixtures().store_dir, &content))
}

/// Fixture builder `name`'s secret key.
fn builder_key(name: &str) -> NixSecretKey {
    let text = std::fs::read_to_string(&fixtures().builder(name).secret_key_file)
        .expect("fixture secret key");
    text.trim().parse().expect("a Nix secret key")
}

/// What a push answered.
struct Pushed {
    status: u16,
    retry_after: Option<String>,
    text: String,
}

impl Pushed {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// `POST /api/v1/caches/<cache>/attestations` with `body` as `content_type`.
fn post(q: &Quorate, cache: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Pushed {
    let url = format!("{}/api/v1/caches/{cache}/attestations", q.url());
    let body = body.into();
    let content_type = content_type.to_owned();
    block_on(async move {
        let resp = reqwest::Client::new()
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let text = resp.text().await.unwrap_or_default();
        Pushed {
            status,
            retry_after,
            text,
        }
    })
}

fn push_narinfos(q: &Quorate, body: &str) -> Pushed {
    post(q, CACHE, "text/x-nix-narinfo", body)
}

/// A push whose head declares a body over the 8 MiB limit, on a raw connection: quorate
/// answers 413 from the head alone, before a byte of the body (none is sent).
fn declaring_too_large_a_body(q: &Quorate) -> Pushed {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(q.addr()).expect("connecting");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let head = format!(
        "POST /api/v1/caches/{CACHE}/attestations HTTP/1.1\r\nHost: q\r\n\
         Content-Type: text/x-nix-narinfo\r\nContent-Length: {}\r\n\r\n",
        8 * 1024 * 1024 + 1
    );
    conn.write_all(head.as_bytes()).expect("sending the head");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Up to the end of the answer's body (quorate closes a connection whose body it did
    // not read) or the read timeout.
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Pushed {
        status,
        retry_after: None,
        text: body,
    }
}

/// The size of `cache`'s log, from its served checkpoint (0 before the first one).
fn log_size(q: &Quorate) -> u64 {
    let answer = http_get(&format!("{}/tlog/{CACHE}/checkpoint", q.url())).expect("checkpoint");
    if answer.status != 200 {
        return 0;
    }
    answer
        .text()
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .expect("a checkpoint's second line is its size")
}

fn attestation_count(q: &Quorate) -> i64 {
    with_db(q, async |db| db.count_attestations(Some(CACHE)).await).expect("counting")
}

// ---------------------------------------------------------------------------------------

/// The rebuilder builds hello and app in its own store; its post-build hook only queues them;
/// `quorate push --queue` signs and sends them. quorate trusts builder A (whose cache is the
/// only upstream) and the rebuilder, quorum 2: app was refused before the push and is served
/// after it (the hot negative answer is forgotten), its narinfo carries the rebuilder's
/// signature, the Nix client substitutes it with NAR bytes from A, and the pushed
/// attestation is in the database and the transparency log marked `push:<address>`.
#[test]
fn a_rebuilder_without_a_cache_pushes_its_votes_and_the_nix_client_substitutes_through_quorum() {
    let fx = fixtures();
    let (hello, app) = (&fx.paths.hello, &fx.paths.app);
    for_each_backend(|backend| {
        let dir = scratch_dir("rebuilder");
        let queue = dir.path().join("queue");
        let rebuilder = Rebuilder::build_with_hook(dir.path(), &queue);
        let items = queued(&queue);
        assert_eq!(
            items.len(),
            2,
            "the hook queued one item per build: {items:?}"
        );

        let a = serve_builder("A");
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A"])
            .builder("rebuilder", &[&rebuilder.public_key])
            .upstream(a.url());
        let q = Quorate::start(backend, vec![spec]);
        assert_eq!(q.narinfo(app).status, 404, "A alone is not a quorum");

        let out = quorate_push(
            &[
                "--queue",
                &queue.display().to_string(),
                "--url",
                q.url(),
                "--key-file",
                &rebuilder.secret_key_file.display().to_string(),
                "--store",
                &rebuilder.store.display().to_string(),
            ],
            dir.path(),
        );
        assert!(out.status.success(), "{}", output_text(&out));
        assert!(queued(&queue).is_empty(), "the queue is drained");

        let served = q.narinfo(app);
        assert_eq!(served.status, 200, "{}", served.summary());
        assert!(
            served.text().contains("Sig: rebuilder-1:"),
            "the rebuilder's signature is served: {}",
            served.text()
        );
        let got =
            NixClient::new(&q.substituter(), &[q.public_key()]).substitute(&[&app.store_path]);
        got.assert_ok("app through quorate: A's NAR, A's and the rebuilder's votes");
        assert_eq!(got.read(&hello.store_path, ""), b"hello\n");
        assert_eq!(a.nar_requests(), 2, "the NAR bytes came from A");

        let pushed: Vec<_> = records::attestations(&q, CACHE, app.hash_part())
            .into_iter()
            .filter(|a| a.builder.as_deref() == Some("rebuilder"))
            .collect();
        assert_eq!(pushed.len(), 1, "{pushed:?}");
        assert_eq!(pushed[0].upstream, "push:127.0.0.1");
        let record = block_on(q.path_record(CACHE, app.hash_part()));
        assert!(
            record.to_string().contains("push:127.0.0.1"),
            "the API shows the pushed attestation: {record}"
        );
        eventually(
            "the pushed attestation is logged",
            Duration::from_secs(30),
            || {
                with_db(&q, async |db| {
                    db.logged_attestations(CACHE, app.hash_part()).await
                })
                .expect("reading the log rows")
                .iter()
                .any(|(_, a)| a.upstream == "push:127.0.0.1")
            },
        );
    });
}

/// Builder B keeps its store (the fixtures') but no cache: `quorate push PATHS` with the URL
/// of the cache's mount signs and sends app and hello, and quorate, which has only A's cache
/// as an upstream, now serves them.
#[test]
fn quorate_push_finds_the_cache_by_its_mount_and_the_pushed_votes_complete_the_quorum() {
    let fx = fixtures();
    let b = fx.builder("B");
    let (hello, app) = (&fx.paths.hello, &fx.paths.app);
    for_each_backend(|backend| {
        let dir = scratch_dir("push-b");
        let a = serve_builder("A");
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2).mount("/nix"), &["A", "B"])
            .upstream(a.url());
        let q = Quorate::start(backend, vec![spec]);
        let push_as_b = |paths: &[&str]| {
            let (url, key) = (q.cache_url(CACHE), b.secret_key_file.display().to_string());
            let store = b.store.display().to_string();
            let mut args = vec!["--url", &url, "--key-file", &key, "--store", &store];
            args.extend(paths);
            quorate_push(&args, dir.path())
        };
        let out = push_as_b(&[&app.store_path, &hello.store_path]);
        assert!(out.status.success(), "{}", output_text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("accepted {} (as builder b)", app.store_path)),
            "{stdout}"
        );
        for path in [app, hello] {
            let served = q.narinfo(path);
            assert_eq!(served.status, 200, "{}", served.summary());
        }
        // A path the store does not hold: one sentence, exit 1, no panic.
        let missing = format!("{}/00000000000000000000000000000000-gone", fx.store_dir);
        let out = push_as_b(&[&missing]);
        assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("quorate: 1 of 1 path(s) rejected"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    });
}

/// Pushes signed by a key no builder holds, with a forged signature, malformed, of the wrong
/// type, not UTF-8, too large or too many: each refused with a clear answer, and none leaves
/// anything in the database or the log. A body mixing an accepted narinfo and a rejected one
/// records the accepted one only; one unreadable narinfo refuses its whole body.
#[test]
fn pushes_no_builder_signed_leave_nothing_in_the_database_or_the_log() {
    let fx = fixtures();
    let (hello, app) = (&fx.paths.hello, &fx.paths.app);
    let stranger = NixSecretKey::generate("stranger-1").expect("key");
    let (key_a, key_b) = (builder_key("A"), builder_key("B"));
    for_each_backend(|backend| {
        let a = serve_builder("A");
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B"]).upstream(a.url());
        let q = Quorate::start(backend, vec![spec]);
        eventually("the policy is logged", Duration::from_secs(30), || {
            log_size(&q) == 1
        });

        let unknown = push_narinfos(&q, &narinfo_of(hello, &[signature(&stranger, hello)]));
        assert_eq!(unknown.status, 200, "{}", unknown.text);
        let verdict = &unknown.json()["narinfos"][0];
        assert_eq!(verdict["status"], "rejected", "{verdict}");
        assert_eq!(verdict["error"], "unknown_key", "{verdict}");
        assert!(
            verdict["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("stranger-1"),
            "{verdict}"
        );

        // B's key name over A's signature bytes.
        let a_sig = signature(&key_a, hello);
        let forged = format!("upstream-B-1:{}", a_sig.split_once(':').expect("sig").1);
        let bad = push_narinfos(&q, &narinfo_of(hello, &[forged]));
        assert_eq!(bad.status, 200, "{}", bad.text);
        assert_eq!(bad.json()["narinfos"][0]["error"], "bad_signature");
        // A's real signature over another NarSize.
        let lying = narinfo_of(hello, &[a_sig]).replace(
            &format!("NarSize: {}", hello.nar_size),
            &format!("NarSize: {}", hello.nar_size + 1),
        );
        assert_eq!(
            push_narinfos(&q, &lying).json()["narinfos"][0]["error"],
            "bad_signature"
        );

        let good = narinfo_of(hello, &[signature(&key_b, hello)]);
        for (what, answer, status) in [
            ("not a narinfo", push_narinfos(&q, "hello world\n"), 400),
            ("empty", push_narinfos(&q, "\n\n"), 400),
            (
                "one unreadable narinfo beside a good one",
                push_narinfos(&q, &format!("{good}\nStorePath: /nix/store/nonsense\n")),
                400,
            ),
            (
                "wrong content type",
                post(&q, CACHE, "application/json", good.clone()),
                400,
            ),
            (
                "not UTF-8",
                post(&q, CACHE, "text/x-nix-narinfo", vec![0xff, 0xfe, b'\n']),
                400,
            ),
            ("over the body limit", declaring_too_large_a_body(&q), 413),
            (
                "over a thousand narinfos",
                push_narinfos(&q, &vec![good.as_str(); 1001].join("\n")),
                413,
            ),
            (
                "no such cache",
                post(&q, "other", "text/x-nix-narinfo", good.clone()),
                404,
            ),
        ] {
            assert_eq!(answer.status, status, "{what}: {}", answer.text);
            assert!(
                !answer.text.trim().is_empty(),
                "{what}: the answer says why"
            );
        }
        assert_eq!(attestation_count(&q), 0, "nothing refused was recorded");

        // Mixed: B's hello is accepted, the stranger's app rejected.
        let mixed = format!("{good}\n{}", narinfo_of(app, &[signature(&stranger, app)]));
        let answer = push_narinfos(&q, &mixed);
        assert_eq!(answer.status, 200, "{}", answer.text);
        let json = answer.json();
        assert_eq!(
            (json["accepted"].as_u64(), json["rejected"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(json["narinfos"][0]["builders"][0], "b", "{json}");
        assert_eq!(records::attestations(&q, CACHE, hello.hash_part()).len(), 1);
        assert!(records::attestations(&q, CACHE, app.hash_part()).is_empty());
        assert_eq!(attestation_count(&q), 1);
        // The appender logs every unlogged row in order: once the accepted one is in, any
        // refused one recorded before it would be too. Only the policy and it are.
        eventually(
            "the accepted attestation is logged",
            Duration::from_secs(30),
            || log_size(&q) >= 2,
        );
        assert_eq!(
            log_size(&q),
            2,
            "the log holds the policy and the one accepted push"
        );
    });
}

/// `[push]` rates: one narinfo a minute per key, two pushes a minute per client. The key's
/// second narinfo is refused with 429 and a `Retry-After`, and so is the client's third
/// push; neither is recorded.
#[test]
fn pushing_faster_than_the_rates_is_refused_with_429_and_retry_after() {
    let fx = fixtures();
    let (hello, app) = (&fx.paths.hello, &fx.paths.app);
    let key_b = builder_key("B");
    for_each_backend(|backend| {
        let a = serve_builder("A");
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B"]).upstream(a.url());
        let mut push = toml::Table::new();
        push.insert("per_key_per_minute".into(), 1.into());
        push.insert("per_client_per_minute".into(), 2.into());
        let placement = Placement {
            sections: vec![("push".into(), push)],
            ..Placement::default()
        };
        let q = Quorate::start_placed(backend, vec![spec], placement);

        let first = push_narinfos(&q, &narinfo_of(hello, &[signature(&key_b, hello)]));
        assert_eq!(first.status, 200, "{}", first.text);
        assert_eq!(first.json()["accepted"], 1);

        let second = push_narinfos(&q, &narinfo_of(app, &[signature(&key_b, app)]));
        assert_eq!(second.status, 429, "{}", second.text);
        assert!(
            second.text.contains("upstream-B-1"),
            "names the key: {}",
            second.text
        );
        let wait: u64 = second
            .retry_after
            .as_deref()
            .and_then(|v| v.parse().ok())
            .expect("a Retry-After in seconds");
        assert!(wait >= 1, "{wait}");

        let third = push_narinfos(&q, &narinfo_of(app, &[signature(&key_b, app)]));
        assert_eq!(third.status, 429, "{}", third.text);
        assert!(
            third.text.contains("client"),
            "names the client: {}",
            third.text
        );
        assert!(third.retry_after.is_some());

        assert_eq!(attestation_count(&q), 1, "only the first push was recorded");
    });
}

/// `quorate push --queue` while quorate is down keeps the item and exits 1; once quorate is
/// up, the next drain sends it and removes it. An item naming a path the store does not
/// hold is set aside in `rejected/` (with why) instead of blocking the queue.
#[test]
fn the_queue_keeps_what_could_not_be_sent_and_sends_it_on_a_later_drain() {
    let fx = fixtures();
    let b = fx.builder("B");
    let hello = &fx.paths.hello;
    for_each_backend(|backend| {
        let dir = scratch_dir("push-queue");
        let queue = dir.path().join("queue");
        std::fs::create_dir_all(&queue).expect("queue dir");
        std::fs::write(queue.join("100-hello"), format!("{}\n", hello.store_path))
            .expect("queueing");
        let drain = |url: &str| {
            quorate_push(
                &[
                    "--queue",
                    &queue.display().to_string(),
                    "--url",
                    url,
                    "--key-file",
                    &b.secret_key_file.display().to_string(),
                    "--store",
                    &b.store.display().to_string(),
                    "--attempts",
                    "1",
                ],
                dir.path(),
            )
        };

        let nobody = format!("http://127.0.0.1:{}", free_port());
        let out = drain(&nobody);
        assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("stay queued"), "{stderr}");
        assert_eq!(queued(&queue), ["100-hello"], "the item is kept");

        let a = serve_builder("A");
        let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B"]).upstream(a.url());
        let q = Quorate::start(backend, vec![spec]);
        let missing = format!("{}/00000000000000000000000000000000-gone", fx.store_dir);
        std::fs::write(queue.join("200-gone"), format!("{missing}\n")).expect("queueing");
        let out = drain(q.url());
        assert_eq!(
            out.status.code(),
            Some(1),
            "a rejected item: {}",
            output_text(&out)
        );
        assert!(queued(&queue).is_empty(), "{:?}", queued(&queue));
        let set_aside = std::fs::read_to_string(queue.join("rejected/200-gone"))
            .expect("the rejected item is kept aside");
        assert!(
            set_aside.contains(&format!("# rejected {missing}")),
            "{set_aside}"
        );
        assert_eq!(q.narinfo(hello).status, 200, "the queued vote arrived");
        let pushed = records::attestations(&q, CACHE, hello.hash_part());
        assert!(
            pushed
                .iter()
                .any(|a| a.upstream == "push:127.0.0.1" && a.builder.as_deref() == Some("b")),
            "{pushed:?}"
        );
    });
}

/// Two replicas sharing one PostgreSQL database: replica 1 has refused hello (A alone) and
/// keeps that answer in memory for a minute; B's vote pushed to replica 0 reaches replica 1
/// through the database's notice, which then serves hello well before its memory answer
/// would have expired. (Replica sets are PostgreSQL-only.)
#[test]
fn a_push_to_one_replica_lifts_the_refusal_another_replica_holds_in_memory() {
    if !common::backends().contains(&common::Backend::Postgres) {
        return;
    }
    let fx = fixtures();
    let hello = &fx.paths.hello;
    let a = serve_builder("A");
    let spec = with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B"]).upstream(a.url());
    let set = common::ReplicaSet::start_plain(2, vec![spec]);
    let url = |i: usize| format!("{}{}", set.replica(i).url(), hello.narinfo_path());
    let refused = http_get(&url(1)).expect("narinfo on replica 1");
    assert_eq!(refused.status, 404, "A alone is not a quorum");

    let pushed = push_narinfos(
        set.replica(0),
        &narinfo_of(hello, &[signature(&builder_key("B"), hello)]),
    );
    assert_eq!(pushed.status, 200, "{}", pushed.text);
    assert_eq!(pushed.json()["accepted"], 1, "{}", pushed.text);
    eventually("replica 1 serves hello", Duration::from_secs(20), || {
        http_get(&url(1)).is_ok_and(|a| a.status == 200)
    });
}

/// The Guix flavor: builder b2 pushes the narinfo it signed with libgcrypt (as `guix publish`
/// signs) to a Guix cache whose only upstream is b1's; with b1's vote that is quorum 2, and
/// quorate serves hello with the NAR from b1. A narinfo of hello tampered after signing is
/// rejected.
#[test]
fn a_guix_builder_pushes_its_signed_narinfo_and_completes_the_quorum() {
    let Some(world) = common::guix::oracle::Oracle::get().map(common::guix::world::World::build)
    else {
        return;
    };
    let hello = world.item("hello");
    for_each_backend(|backend| {
        let b1 = common::UpstreamServer::serve_files(world.upstream("b1").files.clone());
        let key = |b: &str| world.key(b).public.display().to_string();
        let spec = CacheSpec::guix("guix")
            .mount("/guix")
            .quorum(2)
            .builder("b1", &[key("b1")])
            .builder("b2", &[key("b2")])
            .upstream(b1.url());
        let q = Quorate::start(backend, vec![spec]);
        let narinfo_url = format!("{}{}", q.cache_url("guix"), hello.narinfo_path());
        let before = http_get(&narinfo_url).expect("narinfo");
        assert_eq!(before.status, 404, "b1 alone is not a quorum");

        let signed = world.narinfo("b2", "hello");
        let tampered = signed.replacen("NarSize: ", "NarSize: 1", 1);
        let body = format!("{tampered}\n{signed}");
        let answer = post(&q, "guix", "text/x-nix-narinfo", body);
        assert_eq!(answer.status, 200, "{}", answer.text);
        let json = answer.json();
        assert_eq!(json["narinfos"][0]["error"], "bad_signature", "{json}");
        assert_eq!(json["narinfos"][1]["status"], "accepted", "{json}");
        assert_eq!(json["narinfos"][1]["builders"][0], "b2", "{json}");

        let served = http_get(&narinfo_url).expect("narinfo");
        assert_eq!(served.status, 200, "{}", served.summary());
        let nar = http_get(&format!("{}/nar/{}", q.cache_url("guix"), hello.basename()))
            .expect("the NAR");
        assert_eq!(nar.status, 200, "{}", nar.summary());
        assert_eq!(common::nar_hash_of(nar.bytes()), hello.nar_hash());
    });
}
