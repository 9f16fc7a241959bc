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
/// The Guix cache of the Guix story.
const GUIX: &str = "guix";

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
/// A decision that changes nothing is not logged again: hello, refused, asked again after a
/// restart (memory cold, so decided and recorded anew) stays one refusal in the log, while
/// the new decision row still points at that entry (nothing is left unlogged).
#[test]
fn an_unchanged_decision_is_logged_once() {
    let fx = fixtures();
    let dir = scratch_dir("tlog-unchanged");
    let m_cache = malicious_cache(fx, &dir.path().join("M"));
    let hello = &fx.paths.hello;
    for_each_backend(|backend| {
        let mut ups = serve_builders(&["A", "B", "C"]);
        ups.push(UpstreamServer::serve(&m_cache));
        let spec =
            with_builders(CacheSpec::nix(CACHE).quorum(2), &["A", "B", "C", "M"]).upstreams(&ups);
        let mut q = Quorate::start(backend, vec![spec]);
        let refusals = |q: &Quorate| -> usize {
            let report = verify_independently(q, 0);
            report["entries"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e.as_str())
                .filter(|e| e.starts_with("quorate/decision/v1\n") && e.contains(hello.hash_part()))
                .count()
        };
        let all_logged = |q: &Quorate| {
            common::records::wait_until(q, "every row logged", || {
                !common::records::with_db(q, async |db| db.has_unlogged(CACHE).await.unwrap())
            })
        };
        assert_eq!(q.narinfo(hello).status, 404);
        all_logged(&q);
        assert_eq!(refusals(&q), 1);
        let decisions_before = common::records::with_db(&q, async |db| {
            db.count_decisions(Some(CACHE)).await.unwrap()
        });
        q.terminate();
        q.restart();
        assert_eq!(q.narinfo(hello).status, 404);
        common::records::wait_until(&q, "the second refusal recorded", || {
            common::records::with_db(&q, async |db| {
                db.count_decisions(Some(CACHE)).await.unwrap()
            }) > decisions_before
        });
        all_logged(&q);
        assert_eq!(refusals(&q), 1, "the unchanged refusal was logged again");
    });
}

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
    let what = format!("{} logged", path.store_path);
    common::eventually(&what, Duration::from_secs(30), || {
        q.narinfo(path).header("quorate-log-index").is_some()
    });
}

/// A cache whose signing key and log key live in `dir/keys`.
fn spec_keyed_in(dir: &std::path::Path, builders: &[&str], ups: &[UpstreamServer]) -> CacheSpec {
    let prefix = dir.join("keys").join(CACHE);
    if !prefix.with_extension("sec").exists() {
        common::quorate::keygen(&prefix);
    }
    with_builders(CacheSpec::nix(CACHE).quorum(2), builders)
        .signing_key(&prefix.with_extension("sec"))
        .log_key(&dir.join("keys").join(format!("{CACHE}.log.sec")))
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
        vec![spec_keyed_in(
            &dir.path().join("q1"),
            &["A", "B", "C"],
            &ups,
        )],
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
    assert!(
        out.contains("--- seen before") && out.contains("--- served now"),
        "{out}"
    );
}

/// `quorate audit ARGS...`: (exit code, stdout and stderr).
fn quorate_audit(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .arg("audit")
        .args(args)
        .output()
        .expect("running quorate audit");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("reading the mirror") {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The entries of a mirrored log, in order.
fn mirrored_entries(dir: &std::path::Path, size: u64) -> Vec<Vec<u8>> {
    use quorate_core::tlog::tile::{decode_bundle, tiles_for_size, TilePath};
    let mut out = Vec::new();
    for tile in tiles_for_size(size).into_iter().filter(|t| t.level() == 0) {
        let bytes = std::fs::read(dir.join(TilePath::Entries(tile).to_string())).unwrap();
        out.extend(
            decode_bundle(&tile, &bytes)
                .unwrap()
                .into_iter()
                .map(<[u8]>::to_vec),
        );
    }
    out
}

/// Writes a whole log of `entries` into `dir` (tiles, bundles, a checkpoint signed by `key`):
/// what an operator holding the log key could publish as a rewritten history.
fn write_log(
    dir: &std::path::Path,
    entries: &[Vec<u8>],
    key: &quorate_core::tlog::note::SignerKey,
) {
    use quorate_core::tlog::checkpoint::Checkpoint;
    use quorate_core::tlog::merkle::{hashes_to_store, leaf_hash, tree_hash, Hash};
    use quorate_core::tlog::tile::{encode_bundle, read_tile, tiles_for_size, TilePath};
    let mut stored: Vec<Hash> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let new = hashes_to_store(i as u64, leaf_hash(e), &stored).unwrap();
        stored.extend(new);
    }
    let size = entries.len() as u64;
    let _ = std::fs::remove_dir_all(dir.join("tile"));
    for tile in tiles_for_size(size) {
        let path = dir.join(TilePath::Hashes(tile).to_string());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, read_tile(&tile, &stored).unwrap()).unwrap();
        if tile.level() == 0 {
            let first = (tile.index() * 256) as usize;
            let bundle = encode_bundle(&entries[first..first + usize::from(tile.width())]).unwrap();
            let path = dir.join(TilePath::Entries(tile).to_string());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bundle).unwrap();
        }
    }
    let root = tree_hash(size, &stored).unwrap();
    let note = Checkpoint::new(key.name(), size, root)
        .unwrap()
        .sign(key)
        .unwrap();
    std::fs::write(dir.join("checkpoint"), note.to_string()).unwrap();
}

/// After agreement (app) and a conflict (hello), `quorate audit mirror` copies the log and
/// `quorate audit check` replays it: tiles, every Nix signature again, every decision under
/// its policy — no violation. Then each tampering is caught: one byte of a tile, an entry
/// removed, and a history rewritten and re-signed with the log key in which app's decision
/// rests on one builder under a quorum of 2.
#[test]
fn quorate_audit_replays_a_mirrored_log_and_catches_each_tampering() {
    let fx = fixtures();
    let dir = scratch_dir("tlog-audit");
    let m_cache = malicious_cache(fx, &dir.path().join("M"));
    let mut ups = serve_builders(&["A", "B", "C"]);
    ups.push(UpstreamServer::serve(&m_cache));
    let keys = dir.path().join("q");
    let q = Quorate::start(
        common::Backend::Sqlite,
        vec![spec_keyed_in(&keys, &["A", "B", "C", "M"], &ups)],
    );
    assert_eq!(q.narinfo(&fx.paths.hello).status, 404);
    wait_logged(&q, &fx.paths.app);

    let mirror = dir.path().join("mirror");
    let (code, out) = quorate_audit(&["mirror", q.url(), CACHE, mirror.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = quorate_audit(&["check", "--json", mirror.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("the JSON report");
    assert_eq!(
        report["violations"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    assert!(report["decisions"].as_u64().unwrap() >= 2, "{report}");
    assert!(
        report["signatures_verified"].as_u64().unwrap() >= 8,
        "every builder signature of hello and app is verified again: {report}"
    );
    let size = report["size"].as_u64().unwrap();

    let tampered = |name: &str, change: &dyn Fn(&std::path::Path)| -> String {
        let copy = dir.path().join(name);
        std::fs::create_dir_all(&copy).unwrap();
        copy_dir(&mirror, &copy);
        change(&copy);
        let (code, out) = quorate_audit(&["check", copy.to_str().unwrap()]);
        assert_eq!(code, 1, "{name} went unnoticed: {out}");
        out
    };
    let tile0 = format!("tile/0/000.p/{size}");
    let out = tampered("byte", &|d| {
        let path = d.join(&tile0);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(path, bytes).unwrap();
    });
    assert!(out.contains("VIOLATION"), "{out}");
    let out = tampered("removed", &|d| {
        let entries = mirrored_entries(d, size);
        let bundle =
            quorate_core::tlog::tile::encode_bundle(&entries[..entries.len() - 1]).unwrap();
        std::fs::write(d.join(format!("tile/entries/000.p/{size}")), bundle).unwrap();
    });
    assert!(out.contains("VIOLATION"), "{out}");

    // Re-signed with the log key: tiles and checkpoint agree; only the replay can tell.
    let key_text =
        std::fs::read_to_string(keys.join("keys").join(format!("{CACHE}.log.sec"))).unwrap();
    let key: quorate_core::tlog::note::SignerKey = key_text.trim().parse().unwrap();
    let app_decision = format!("\npath {}\n", fx.paths.app.store_path);
    let out = tampered("rewritten", &|d| {
        let mut entries = mirrored_entries(d, size);
        let i = entries
            .iter()
            .position(|e| {
                let t = String::from_utf8_lossy(e);
                t.starts_with("quorate/decision/v1\n") && t.contains(&app_decision)
            })
            .expect("app's decision");
        let text = String::from_utf8(entries[i].clone()).unwrap();
        let support = text
            .lines()
            .find(|l| l.starts_with("support "))
            .unwrap()
            .to_owned();
        let one = support.split(' ').take(2).collect::<Vec<_>>().join(" ");
        entries[i] = text.replace(&support, &one).into_bytes();
        write_log(d, &entries, &key);
    });
    assert!(
        out.contains("gives insufficient, not this acceptance"),
        "{out}"
    );

    // An attestation's signature changed and the history re-signed: replaying the signature
    // under its policy's key catches it.
    let out = tampered("forged", &|d| {
        let mut entries = mirrored_entries(d, size);
        let i = entries
            .iter()
            .position(|e| {
                let t = String::from_utf8_lossy(e);
                t.starts_with("quorate/attestation/v1\n") && t.contains("\nstatus valid\n")
            })
            .expect("a valid attestation");
        let text = String::from_utf8(entries[i].clone()).unwrap();
        let sig = text.lines().find(|l| l.starts_with("signature ")).unwrap();
        let (name, b64) = sig["signature ".len()..].split_once(':').unwrap();
        let flipped = if b64.starts_with('A') { "B" } else { "A" };
        let forged = format!("signature {name}:{flipped}{}", &b64[1..]);
        entries[i] = text.replace(sig, &forged).into_bytes();
        write_log(d, &entries, &key);
    });
    assert!(
        out.contains("logged as valid but the signature is invalid"),
        "{out}"
    );
}

/// Guix signs its narinfo text (URLs included), which no content rebuilds: the log carries
/// each attestation's signed text, so `quorate audit check` verifies every Guix signature
/// again (ECDSA over edwards25519, keys made by libgcrypt) and replays the decisions. A
/// signed text rewritten in the log (NarSize changed) and the history re-signed with the log
/// key is caught.
#[test]
fn quorate_audit_verifies_guix_signatures_from_their_logged_signed_text() {
    use common::guix::oracle::Oracle;
    use common::guix::world::{World, HONEST, MALICIOUS};
    let Some(world) = Oracle::get().map(World::build) else {
        return; // QUORATE_TEST_SKIP_GUIX_ORACLE=1 (never under CI=true)
    };
    let dir = scratch_dir("tlog-guix-audit");
    let names: Vec<&str> = HONEST.iter().copied().chain([MALICIOUS]).collect();
    let ups: Vec<UpstreamServer> = names
        .iter()
        .map(|n| UpstreamServer::serve_files(world.upstream(n).files.clone()))
        .collect();
    let log_key = dir.path().join(format!("{GUIX}.log.sec"));
    let mut spec = CacheSpec::guix(GUIX).quorum(2).log_key(&log_key);
    for b in &names {
        spec = spec.builder(b, &[world.key(b).public.display().to_string()]);
    }
    let q = Quorate::start(common::Backend::Sqlite, vec![spec.upstreams(&ups)]);
    let hello = world.item("hello");
    let disputed = world.item("disputed");
    common::block_on(async {
        assert_eq!(q.get(GUIX, &hello.narinfo_path()).await.status, 200);
        assert_eq!(q.get(GUIX, &disputed.narinfo_path()).await.status, 404);
    });
    common::eventually("hello's decision logged", Duration::from_secs(30), || {
        common::block_on(q.get(GUIX, &hello.narinfo_path()))
            .header("quorate-log-index")
            .is_some()
    });

    let mirror = dir.path().join("mirror");
    let (code, out) = quorate_audit(&["mirror", q.url(), GUIX, mirror.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = quorate_audit(&["check", "--json", mirror.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("the JSON report");
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    let attestations = report["attestations"].as_u64().unwrap();
    assert!(
        attestations >= 5,
        "hello by b1, b2; disputed by b1, b2, b3, m: {report}"
    );
    assert_eq!(
        report["signatures_verified"].as_u64(),
        Some(attestations),
        "every Guix signature is verified again: {report}"
    );
    let size = report["size"].as_u64().unwrap();

    let key_text = std::fs::read_to_string(&log_key).unwrap();
    let key: quorate_core::tlog::note::SignerKey = key_text.trim().parse().unwrap();
    let copy = dir.path().join("rewritten");
    std::fs::create_dir_all(&copy).unwrap();
    copy_dir(&mirror, &copy);
    let mut entries = mirrored_entries(&copy, size);
    let i = entries
        .iter()
        .position(|e| {
            let t = String::from_utf8_lossy(e);
            t.contains("\nscheme guix-narinfo\n") && t.contains("\nstatus valid\n")
        })
        .expect("a valid Guix attestation");
    let text = String::from_utf8(entries[i].clone()).unwrap();
    let signed = text.lines().find(|l| l.starts_with("signed ")).unwrap();
    let size_field = signed
        .split("\\n")
        .find(|f| f.starts_with("NarSize: "))
        .expect("NarSize in the signed text");
    let n: u64 = size_field["NarSize: ".len()..].parse().unwrap();
    let rewritten = signed.replace(size_field, &format!("NarSize: {}", n + 1));
    entries[i] = text.replace(signed, &rewritten).into_bytes();
    write_log(&copy, &entries, &key);
    let (code, out) = quorate_audit(&["check", copy.to_str().unwrap()]);
    assert_eq!(
        code, 1,
        "a rewritten Guix signed text went unnoticed: {out}"
    );
    assert!(
        out.contains("logged as valid but the signature is invalid"),
        "{out}"
    );
}

/// Writes `text` to `path` with mode 0600 (a secret key file).
fn write_secret(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A quorate configured as a witness (`[witness]`, `[[witness.log]]`) cosigns the log of
/// another quorate (`[[cache.witness]]`), whose checkpoint is then served with the
/// cosignature, and keeps cosigning as the log grows (each time after a consistency proof).
/// A second quorate holding a copy of the log key but another history is refused: no
/// cosignature, and the witness still stands where the honest log is.
#[test]
fn a_witness_cosigns_a_growing_log_and_refuses_a_rewritten_one() {
    use quorate_core::tlog::checkpoint::{Checkpoint, CosignerKey};
    use quorate_core::tlog::note::{open, SignerKey};
    let fx = fixtures();
    let dir = scratch_dir("tlog-witness");
    let log_key = SignerKey::generate("quorate.test/tlog/main").unwrap();
    let witness_key = CosignerKey::generate("witness.test/w").unwrap();
    let witness_file = dir.path().join("w/witness.sec");
    write_secret(&witness_file, &format!("{witness_key}\n"));
    let mut witness_table = toml::Table::new();
    witness_table.insert("key_file".into(), witness_file.display().to_string().into());
    let mut log = toml::Table::new();
    log.insert("vkey".into(), log_key.verifier().to_string().into());
    witness_table.insert("log".into(), toml::Value::Array(vec![log.into()]));
    let w = Quorate::start_placed(
        common::Backend::Sqlite,
        vec![with_builders(CacheSpec::nix("idle"), &["A"]).upstream("http://127.0.0.1:9")],
        common::Placement {
            sections: vec![("witness".into(), witness_table)],
            ..common::Placement::default()
        },
    );
    let witness_url = format!("{}/witness", w.url());
    let witness_vkey = witness_key.verifier().to_string();

    let ups = serve_builders(&["A", "B", "C"]);
    let keyed = |name: &str, builders: &[&str], ups: &[UpstreamServer]| {
        let keys = dir.path().join(name);
        write_secret(&keys.join("keys/main.log.sec"), &format!("{log_key}\n"));
        spec_keyed_in(&keys, builders, ups).witness(&witness_url, &witness_vkey)
    };
    let q = Quorate::start(
        common::Backend::Sqlite,
        vec![keyed("q", &["A", "B", "C"], &ups)],
    );
    let cosigned = |q: &Quorate| -> Option<u64> {
        let note = http_get(&format!("{}/tlog/{CACHE}/checkpoint", q.url())).ok()?;
        let opened = open(note.bytes(), &[&witness_key.verifier()]).ok()?;
        let c: Checkpoint = opened.note.text().parse().ok()?;
        Some(c.size())
    };
    wait_logged(&q, &fx.paths.app);
    let first = common::eventually_some("the witness cosigns", Duration::from_secs(30), || {
        cosigned(&q)
    });
    wait_logged(&q, &fx.paths.hello);
    let grown = common::eventually_some(
        "the witness cosigns the grown log",
        Duration::from_secs(30),
        || cosigned(&q).filter(|&s| s > first),
    );
    assert!(grown > first);

    // Another history under the same log key: never cosigned.
    let q2 = Quorate::start(
        common::Backend::Sqlite,
        vec![keyed("q2", &["A", "B"], &ups[..2])],
    );
    wait_logged(&q2, &fx.paths.app);
    wait_logged(&q2, &fx.paths.hello);
    std::thread::sleep(Duration::from_secs(3)); // several append rounds, each one refused
    assert_eq!(
        cosigned(&q2),
        None,
        "the witness cosigned a rewritten history"
    );
    assert!(
        q2.log().contains("witness"),
        "the refusal is logged: {}",
        q2.log()
    );
    assert_eq!(
        cosigned(&q),
        Some(grown),
        "the witness still stands by the honest log"
    );
}

/// A quorate whose log key is not the one its log in the database was signed with (a replica
/// given its own key, a machine restored without the key) refuses to start, saying which file
/// to copy: appending under another key would fork the log.
#[test]
fn a_log_key_that_did_not_sign_the_log_is_refused_at_start() {
    use quorate_core::tlog::note::SignerKey;
    let fx = fixtures();
    let dir = scratch_dir("tlog-key");
    let ups = serve_builders(&["A", "B"]);
    let keys = dir.path().join("q");
    let mut q = Quorate::start(
        common::Backend::Sqlite,
        vec![spec_keyed_in(&keys, &["A", "B"], &ups)],
    );
    wait_logged(&q, &fx.paths.app);
    q.kill();
    let key_file = keys.join("keys").join(format!("{CACHE}.log.sec"));
    std::fs::remove_file(&key_file).unwrap();
    let other = SignerKey::generate("another.host/tlog/main").unwrap();
    write_secret(&key_file, &format!("{other}\n"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["serve", "--config"])
        .arg(q.config_path())
        .output()
        .expect("running quorate serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains("was not signed by this log key") && stderr.contains("main.log.sec"),
        "{stderr}"
    );
}
