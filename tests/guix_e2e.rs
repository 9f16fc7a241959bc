//! End-to-end stories of quorate's Guix flavor: guix-publish-style upstreams over real HTTP,
//! each signed by its builder's own libgcrypt key (one builder malicious, one mirror
//! tampering with NAR bytes), real NARs from `nix-store --dump` compressed with lzip, zstd,
//! gzip or not at all, the real `quorate serve` process, and quorate's answers checked the
//! way Guix checks them: signatures by libgcrypt (`tests/oracle/verify.scm`), NAR bytes by
//! re-hashing. The main stories run on SQLite and on PostgreSQL.
//!
//! Run with `scripts/test.sh guix_e2e` (it installs Guile, guile-gcrypt and nix-bin and
//! starts PostgreSQL). Without Guile these tests fail unless
//! `QUORATE_TEST_SKIP_GUIX_ORACLE=1`; without PostgreSQL unless `QUORATE_TEST_SKIP_POSTGRES=1`.
//! The side-by-side story also serves the Nix fixture caches of `tests/common`.
//!
//! The world (who signs what, which upstream compresses how) is described in
//! `tests/common/guix/world.rs`. Nothing here asserts on time.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use common::guix::narinfo::{Narinfo, UrlGroup};
use common::guix::oracle::{KeyPair, Oracle};
use common::guix::world::{nar_url_path, StoreItem, World, AGREED, HONEST, MALICIOUS, MIRROR};
use common::http::{eventually, get_json, HttpAnswer};
use common::{backends, files_under, nar_hash_of, Backend, CacheSpec, Quorate, UpstreamServer};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

/// The Guix cache every story configures.
const GUIX: &str = "guix";

/// Upstream priorities (NAR source preference, lower first): the mirror first, then b1..b5,
/// then m.
fn priority(upstream: &str) -> u32 {
    match upstream {
        MIRROR => 0,
        MALICIOUS => 10,
        b => b[1..].parse().expect("honest upstreams are b<N>"),
    }
}

/// Where quorate must fetch each agreed item's NAR from, given the priorities: the
/// most-preferred upstream carrying it, in that upstream's first compression.
fn expected_source(label: &str) -> (&'static str, &'static str) {
    match label {
        "hello" => ("b1", "lzip"),
        "libfoo" => ("b2", "zstd"),
        "tools" => ("b3", "gzip"),
        "docs" => ("b4", "none"),
        "big" => ("b2", "zstd"),
        other => panic!("{other} is not an agreed item"),
    }
}

/// Starts an HTTP server for each named upstream of the world.
fn serve(world: &World, names: &[&str]) -> BTreeMap<String, UpstreamServer> {
    names
        .iter()
        .map(|&name| {
            let files = world.upstream(name).files.clone();
            (name.to_owned(), UpstreamServer::serve_files(files))
        })
        .collect()
}

/// The honest builders and the malicious one.
fn all_builders() -> Vec<&'static str> {
    HONEST.iter().copied().chain([MALICIOUS]).collect()
}

/// A Guix cache at `/guix` with quorum 2, trusting every builder of the world (b2's key given
/// inline as the s-expression, the others as `.pub` paths) and fetching from `ups`.
fn guix_cache(world: &World, ups: &BTreeMap<String, UpstreamServer>) -> CacheSpec {
    let mut spec = CacheSpec::guix(GUIX).mount("/guix").quorum(2);
    for b in all_builders() {
        let key = match b {
            "b2" => world.key(b).public_text(),
            _ => world.key(b).public.display().to_string(),
        };
        spec = spec.builder(b, &[key]);
    }
    for (name, up) in ups {
        spec = spec.upstream_with_priority(up.url(), priority(name));
    }
    spec
}

/// The oracle, or `None` (test skipped) under `QUORATE_TEST_SKIP_GUIX_ORACLE=1`.
fn world() -> Option<World> {
    Oracle::get().map(World::build)
}

/// `store_path`'s basename.
fn basename(store_path: &str) -> &str {
    store_path.rsplit('/').next().unwrap_or_default()
}

/// Asserts the headers every narinfo answer (200 or 404) needs for Guix's pipelined reads and
/// its narinfo cache: `Content-Length` matching the body, `Cache-Control: max-age=N`.
#[track_caller]
fn assert_guix_cacheable(answer: &HttpAnswer, what: &str) {
    let body = answer.bytes();
    assert_eq!(
        answer.header("content-length"),
        Some(body.len().to_string().as_str()),
        "{what}: Content-Length"
    );
    let cc = answer.header("cache-control").unwrap_or_default();
    assert!(
        cc.split(',').any(|d| d
            .trim()
            .strip_prefix("max-age=")
            .is_some_and(|n| n.parse::<u64>().is_ok())),
        "{what}: Cache-Control with max-age, got {cc:?}"
    );
}

/// `GET` `item`'s narinfo from the Guix cache, which must answer `status` (`what` names the
/// request in a failure).
async fn narinfo_answer(q: &Quorate, item: &StoreItem, status: u16, what: &str) -> HttpAnswer {
    let answer = q.get(GUIX, &item.narinfo_path()).await;
    assert_eq!(answer.status, status, "{what}: {}", answer.summary());
    answer
}

/// The narinfo quorate serves for an agreed item, checked field by field against what the
/// builders signed; returns its text.
async fn assert_served_narinfo(q: &Quorate, world: &World, label: &str, signer: &str) -> String {
    let item = world.item(label);
    let answer = narinfo_answer(q, item, 200, label).await;
    assert_guix_cacheable(&answer, label);
    let text = answer.text();
    let ni = Narinfo::parse(&text);
    // What a builder signed, as libgcrypt hashed the NAR (publish.scm).
    let upstream = Narinfo::parse(world.narinfo(signer, label));
    assert_eq!(
        upstream.one("NarHash"),
        item.nar_hash(),
        "harness: libgcrypt and sha2 agree on {label}'s NarHash"
    );
    assert_eq!(ni.one("StorePath"), item.store_path, "{label}");
    assert_eq!(ni.one("NarHash"), upstream.one("NarHash"), "{label}");
    assert_eq!(ni.one("NarSize"), item.nar.len().to_string(), "{label}");
    assert_eq!(ni.references(), item.references, "{label}: References");
    let mut signed = vec!["StorePath", "NarHash", "NarSize", "References"];
    if let Some(deriver) = &item.deriver {
        assert_eq!(ni.one("Deriver"), deriver, "{label}: Deriver");
        signed.push("Deriver");
    }
    assert_eq!(ni.signed_keys(), signed, "{label}: the signed part\n{text}");
    assert!(
        ni.one("Signature").starts_with("1;quorate;"),
        "{label}: {}",
        ni.one("Signature")
    );
    let base = item.basename();
    assert_eq!(
        ni.url_groups(),
        vec![
            UrlGroup {
                url: format!("nar/zstd/{base}"),
                compression: Some("zstd".into()),
                file_size: None,
            },
            UrlGroup {
                url: format!("nar/{base}"),
                compression: Some("none".into()),
                file_size: None,
            },
        ],
        "{label}: URL groups after the signature"
    );
    text
}

/// Both NAR routes of an agreed item: the bytes re-hash to the agreed NarHash and are the NAR
/// the honest builders built.
async fn assert_served_nars(q: &Quorate, label: &str, item: &StoreItem) {
    let (base, nar_hash) = (item.basename(), item.nar_hash());
    let plain = q.get(GUIX, &format!("/nar/{base}")).await;
    assert_eq!(
        plain.status,
        200,
        "{label}: nar/<basename>: {}",
        plain.summary()
    );
    assert_eq!(plain.header("content-encoding"), None, "{label}");
    assert_eq!(
        plain.header("content-length"),
        Some(item.nar.len().to_string().as_str()),
        "{label}: nar/<basename> Content-Length"
    );
    let bytes = plain.bytes();
    assert_eq!(
        nar_hash_of(bytes),
        nar_hash,
        "{label}: nar/<basename> re-hashed"
    );
    assert!(*bytes == item.nar, "{label}: nar/<basename> is the NAR");

    let zstd = q.get(GUIX, &format!("/nar/zstd/{base}")).await;
    assert_eq!(zstd.status, 200, "{label}: nar/zstd: {}", zstd.summary());
    assert_eq!(zstd.header("content-encoding"), None, "{label}");
    let decoded = zstd::decode_all(&zstd.bytes()[..])
        .unwrap_or_else(|e| panic!("{label}: nar/zstd/<basename> is not zstd: {e}"));
    assert_eq!(
        nar_hash_of(&decoded),
        nar_hash,
        "{label}: nar/zstd re-hashed"
    );
    assert!(
        decoded == item.nar,
        "{label}: nar/zstd/<basename> is the NAR"
    );
}

/// libgcrypt's verdicts on narinfo texts, each against one authorized public key.
fn verdicts(world: &World, name: &str, jobs: &[(&str, &Path)]) -> Vec<String> {
    world.oracle.verify(&world.scratch(name), jobs)
}

// ---------------------------------------------------------------------------------------
// Quorum: who gets served.
// ---------------------------------------------------------------------------------------

/// Two honest builders agree on each of hello, libfoo, tools, docs and big (a few MiB), each
/// publishing through its own upstream (lzip, zstd, gzip, uncompressed). With quorum 2 quorate
/// serves each narinfo in guix-publish layout, signed with its own Guix key: Guix's signature
/// check (libgcrypt) accepts it with quorate's key, and only with it. Both NAR routes Guix may
/// pick (`nar/zstd/…`, compressed on the fly, and `nar/…`) deliver exactly the NAR the
/// builders built, re-hashing to the agreed NarHash, fetched once from the most-preferred
/// upstream in its compression: every compression Guix publishes with is decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_two_honest_builders_agree_on_are_served_signed_by_quorate_with_their_exact_nars() {
    let Some(world) = world() else { return };
    for backend in backends() {
        let ups = serve(&world, &all_builders());
        let q = Quorate::start_async(backend, vec![guix_cache(&world, &ups)]).await;
        let quorate_key = q.public_key_file(GUIX);

        let mut texts = Vec::new();
        for label in AGREED {
            let (source, _) = expected_source(label);
            texts.push(assert_served_narinfo(&q, &world, label, source).await);
        }
        // Guix's check: quorate's key is the authorized one; a builder's key is not.
        let b1 = world.key("b1").public.clone();
        let mut jobs: Vec<(&str, &Path)> = Vec::new();
        for t in &texts {
            jobs.push((t, &quorate_key));
            jobs.push((t, &b1));
        }
        let tampered = texts[0].replacen("NarSize: ", "NarSize: 1", 1);
        jobs.push((&tampered, &quorate_key));
        let got = verdicts(&world, &format!("served-{backend:?}"), &jobs);
        for (i, label) in AGREED.iter().enumerate() {
            assert_eq!(got[2 * i], "valid-signature", "[{backend:?}] {label}");
            assert_eq!(got[2 * i + 1], "unauthorized-key", "[{backend:?}] {label}");
        }
        assert_eq!(
            got[2 * AGREED.len()],
            "hash-mismatch",
            "[{backend:?}] a tampered NarSize"
        );

        for label in AGREED {
            let item = world.item(label);
            assert_served_nars(&q, label, item).await;
            let (source, compression) = expected_source(label);
            let url = nar_url_path(compression, item.basename());
            assert_eq!(
                ups[source].requests(&url),
                1,
                "[{backend:?}] {label}: fetched once as {source}{url}, then served locally"
            );
            let elsewhere: u64 = ups
                .iter()
                .filter(|(name, _)| *name != source)
                .map(|(_, up)| {
                    ["lzip", "zstd", "gzip", "none"]
                        .iter()
                        .map(|c| up.requests(&nar_url_path(c, item.basename())))
                        .sum::<u64>()
                })
                .sum();
            assert_eq!(
                elsewhere, 0,
                "[{backend:?}] {label}: no other upstream asked"
            );
        }

        let record = q.path_record(GUIX, world.item("hello").hash_part()).await;
        assert_eq!(record["decision"]["outcome"], "accepted", "{record}");
        let mut agreeing: Vec<&str> = record["decision"]["agreeing"]
            .as_array()
            .map(|a| a.iter().filter_map(|b| b.as_str()).collect())
            .unwrap_or_default();
        agreeing.sort();
        assert_eq!(agreeing, ["b1", "b2"], "[{backend:?}] {record}");
    }
}

/// The malicious builder signs, with its own valid key, other bytes for `disputed`, which
/// three honest builders agree on. Under `refuse` quorate answers 404 (cacheable briefly, with
/// Content-Length, as Guix needs), serves neither NAR, records the dissent as a conflict, and
/// keeps every builder's attestation as evidence. A path only the malicious builder signs is
/// not served either: one builder is below quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_refuse_a_malicious_builder_dissenting_gets_the_path_refused_and_a_conflict_recorded()
{
    let Some(world) = world() else { return };
    for backend in backends() {
        let ups = serve(&world, &all_builders());
        let q = Quorate::start_async(backend, vec![guix_cache(&world, &ups)]).await;
        let disputed = world.item("disputed");
        let evil = world.item("disputed-evil");
        assert_eq!(disputed.store_path, evil.store_path, "harness: same path");
        assert_ne!(disputed.nar_hash(), evil.nar_hash(), "harness: other bytes");
        let evil_key = world.key(MALICIOUS).public.clone();
        let m_narinfo = world.narinfo(MALICIOUS, "disputed-evil");
        assert_eq!(
            verdicts(
                &world,
                &format!("evil-{backend:?}"),
                &[(m_narinfo, &evil_key)]
            ),
            ["valid-signature"],
            "harness: m's narinfo is validly signed by m's key"
        );

        let answer = narinfo_answer(&q, disputed, 404, &format!("[{backend:?}] disputed")).await;
        assert_guix_cacheable(&answer, "disputed (404)");
        for path in [
            format!("/nar/{}", disputed.basename()),
            format!("/nar/zstd/{}", disputed.basename()),
        ] {
            let nar = q.get(GUIX, &path).await;
            assert_eq!(nar.status, 404, "[{backend:?}] {path}");
        }
        let nar_fetches: u64 = ups.values().map(UpstreamServer::nar_requests).sum();
        assert_eq!(
            nar_fetches, 0,
            "[{backend:?}] no NAR fetched for a refused path"
        );

        let conflict = q.event_about(GUIX, "conflict", &disputed.store_path).await;
        assert_eq!(conflict["kind"], "conflict", "{conflict}");

        let record = q.path_record(GUIX, disputed.hash_part()).await;
        assert_eq!(record["decision"]["outcome"], "refused", "{record}");
        assert!(
            record["decision"]["dissenters"]
                .as_array()
                .is_some_and(|d| d.iter().any(|b| b == MALICIOUS)),
            "[{backend:?}] m is a dissenter: {record}"
        );
        let expected: BTreeMap<String, String> = [
            ("b1", disputed.nar_hash()),
            ("b2", disputed.nar_hash()),
            ("b3", disputed.nar_hash()),
            (MALICIOUS, evil.nar_hash()),
        ]
        .into_iter()
        .map(|(b, h)| (b.to_owned(), h))
        .collect();
        // A refusal is final as soon as a dissent is seen; the answers after it (here
        // possibly b2's) are recorded in the background, so the record is polled.
        let kept = format!("[{backend:?}] every attestation kept: {expected:?}");
        eventually(&kept, || async {
            let record = q.path_record(GUIX, disputed.hash_part()).await;
            let attested: BTreeMap<String, String> = record["attestations"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|a| a["status"] == "valid")
                        .filter_map(|a| {
                            Some((
                                a["builder"].as_str()?.to_owned(),
                                a["content"]["nar_hash"].as_str()?.to_owned(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (attested == expected).then_some(())
        })
        .await;

        let evil_only = world.item("evil-only");
        let answer = narinfo_answer(&q, evil_only, 404, &format!("[{backend:?}] evil-only")).await;
        assert_guix_cacheable(&answer, "evil-only (404)");
        let record = q.path_record(GUIX, evil_only.hash_part()).await;
        assert_eq!(record["decision"]["outcome"], "insufficient", "{record}");
        let nar = q.get(GUIX, &format!("/nar/{}", evil_only.basename())).await;
        assert_eq!(nar.status, 404, "[{backend:?}] evil-only's NAR");
    }
}

/// Under `majority`, the three honest builders outvote the malicious one on `disputed`:
/// quorate serves the honest content, its narinfo verifies in libgcrypt, and its NAR is the
/// honest NAR. The path only the malicious builder signs is still not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_majority_three_honest_builders_outvote_a_malicious_one() {
    let Some(world) = world() else { return };
    for backend in backends() {
        let ups = serve(&world, &all_builders());
        let spec = guix_cache(&world, &ups).on_dissent("majority");
        let q = Quorate::start_async(backend, vec![spec]).await;
        let disputed = world.item("disputed");
        let answer = narinfo_answer(&q, disputed, 200, &format!("[{backend:?}] disputed")).await;
        assert_guix_cacheable(&answer, "disputed");
        let text = answer.text();
        let ni = Narinfo::parse(&text);
        assert_eq!(ni.one("StorePath"), disputed.store_path);
        assert_eq!(ni.one("NarHash"), disputed.nar_hash(), "the honest content");
        assert_eq!(ni.references(), disputed.references);
        let key = q.public_key_file(GUIX);
        assert_eq!(
            verdicts(&world, &format!("majority-{backend:?}"), &[(&text, &key)]),
            ["valid-signature"]
        );
        assert_served_nars(&q, "disputed", disputed).await;

        let evil_only = world.item("evil-only");
        narinfo_answer(&q, evil_only, 404, &format!("[{backend:?}] evil-only")).await;
    }
}

// ---------------------------------------------------------------------------------------
// The NAR path: bytes are verified before a download completes.
// ---------------------------------------------------------------------------------------

/// A mirror carries b2's genuine signed narinfo for big (a few MiB) but serves bytes that
/// differ from the signed NarHash in one byte; it is the preferred NAR source. The client's
/// download of big fails (quorate aborts the response instead of completing it), on either
/// NAR route, the mirror's bytes are never committed to the NAR store, the mismatch is
/// recorded against the mirror, and the fetch fails over to a good upstream beside it: the
/// next request gets the right NAR, fetched from that upstream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nar_not_matching_its_signed_hash_aborts_the_download_stores_nothing_wrong_and_a_retry_succeeds(
) {
    let Some(world) = world() else { return };
    let big = world.item("big");
    assert_ne!(
        nar_hash_of(&world.tampered_big),
        big.nar_hash(),
        "harness: the mirror's bytes differ"
    );
    assert_eq!(
        world.tampered_big.len(),
        big.nar.len(),
        "harness: same size"
    );
    for backend in backends() {
        for route in ["zstd", "none"] {
            let ups = serve(&world, &[MIRROR, "b1", "b2", "b3", "b4", "b5", MALICIOUS]);
            let q = Quorate::start_async(backend, vec![guix_cache(&world, &ups)]).await;
            let what = format!("[{backend:?}, nar route {route}]");
            narinfo_answer(&q, big, 200, &format!("{what} big")).await;

            let first = q.get(GUIX, &nar_url_path(route, big.basename())).await;
            assert_download_failed(&first, route, big.nar.len(), &what);
            assert_eq!(
                ups[MIRROR].requests(&nar_url_path("none", big.basename())),
                1,
                "{what} the first download came from the preferred mirror"
            );
            let mismatch = q.event_about(GUIX, "mismatch", &big.store_path).await;
            assert_eq!(mismatch["upstream"], ups[MIRROR].url(), "{what} {mismatch}");
            let nars = q.state_dir().join("nars");
            // The fetch has failed over to the next source: whatever the store holds by now
            // is the honest NAR, never the mirror's.
            for stored in files_under(&nars.join("nar")) {
                assert!(
                    std::fs::read(&stored).is_ok_and(|b| b == big.nar),
                    "{what} {} is not the honest NAR",
                    stored.display()
                );
            }
            eventually("the temp file of the failed fetch is deleted", || async {
                files_under(&nars.join("tmp")).is_empty().then_some(())
            })
            .await;

            let second = q.get(GUIX, &format!("/nar/{}", big.basename())).await;
            assert_eq!(second.status, 200, "{what} retry: {}", second.summary());
            let bytes = second.bytes();
            assert_eq!(nar_hash_of(bytes), big.nar_hash(), "{what} retry re-hashed");
            assert!(*bytes == big.nar, "{what} the retry is the honest NAR");
            assert_eq!(
                ups["b2"].requests(&nar_url_path("zstd", big.basename())),
                1,
                "{what} the honest NAR came from the good upstream b2, once"
            );
            assert_eq!(
                ups[MIRROR].nar_requests(),
                1,
                "{what} the mirror is not asked again"
            );
            // Committed just after the client got its last (verified) byte: wait for it.
            let stored = eventually("the verified NAR is committed to the store", || async {
                let stored = files_under(&nars.join("nar"));
                (!stored.is_empty()).then_some(stored)
            })
            .await;
            assert_eq!(stored.len(), 1, "{what} one NAR stored: {stored:?}");
            assert!(
                std::fs::read(&stored[0]).is_ok_and(|b| b == big.nar),
                "{what} the stored NAR is the honest one"
            );
        }
    }
}

/// A NAR download that must not have completed: either no 200, or a 200 whose body broke off
/// (fewer bytes than Content-Length, a truncated chunked body, or an unfinished zstd frame).
#[track_caller]
fn assert_download_failed(answer: &HttpAnswer, route: &str, nar_size: usize, what: &str) {
    if answer.status != 200 {
        eprintln!("{what} the bad download was answered {}", answer.status);
        return;
    }
    match (&answer.body, route) {
        (Err(e), _) => eprintln!("{what} the bad download was aborted: {e}"),
        (Ok(body), "none") => panic!(
            "{what} the client received a complete body of {} bytes (NarSize {nar_size}, \
             Content-Length {:?}): quorate must abort a NAR that does not match its NarHash",
            body.len(),
            answer.header("content-length")
        ),
        (Ok(body), _) => {
            let decoded = zstd::decode_all(&body[..]);
            assert!(
                decoded.is_err(),
                "{what} the client received a complete zstd stream ({} bytes decoding to {:?} \
                 bytes, NarSize {nar_size}): quorate must abort a NAR that does not match its \
                 NarHash",
                body.len(),
                decoded.map(|d| d.len())
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 pipelining, as `guix substitute` queries narinfos.
// ---------------------------------------------------------------------------------------

/// What one pipelined request must be answered with.
#[derive(Clone, Debug)]
enum Expected {
    /// 200, a narinfo for this store path.
    Served(String),
    /// 404.
    NotFound,
    /// 400 (a malformed hash part).
    Malformed,
}

/// Reads the next line into `line` (cleared first); `Err(eof)` if the connection closed.
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut String,
    eof: &str,
) -> Result<(), String> {
    line.clear();
    match reader.read_line(line).await.map_err(|e| e.to_string())? {
        0 => Err(eof.to_owned()),
        _ => Ok(()),
    }
}

/// Reads one HTTP/1.1 response: status line, headers, then exactly Content-Length bytes (Guix
/// frames pipelined answers by Content-Length; a chunked one is an error here).
async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<HttpAnswer, String> {
    let mut line = String::new();
    next_line(reader, &mut line, "the connection closed").await?;
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP/1.1 status line: {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        next_line(
            reader,
            &mut line,
            "the connection closed inside the headers",
        )
        .await?;
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("malformed header {header:?}"))?;
        headers.push((name.trim().to_lowercase(), value.trim().to_owned()));
    }
    let mut response = HttpAnswer {
        status,
        headers,
        body: Ok(Default::default()),
    };
    if let Some(te) = response.header("transfer-encoding") {
        return Err(format!("Transfer-Encoding {te}: Guix needs Content-Length"));
    }
    let length: usize = response
        .header("content-length")
        .ok_or_else(|| format!("{status} without Content-Length"))?
        .parse()
        .map_err(|e| format!("Content-Length: {e}"))?;
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("reading a {length}-byte body: {e}"))?;
    response.body = Ok(body.into());
    Ok(response)
}

/// A Guix client checking 1000 store paths writes 1000 narinfo requests on one keep-alive
/// HTTP/1.1 connection before reading any answer. quorate answers every one, in order, each
/// framed by Content-Length: the agreed paths with their own narinfo, unknown, refused and
/// single-builder paths 404 (with Cache-Control max-age, as 200s have it too), the malformed
/// hash part 400; the connection stays usable to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pipelined_narinfo_requests_on_one_connection_are_answered_in_order() {
    let Some(world) = world() else { return };
    let ups = serve(&world, &all_builders());
    let q = Quorate::start_async(Backend::Sqlite, vec![guix_cache(&world, &ups)]).await;

    let unknown = world.unknown_hash_parts(40);
    let refused = ["disputed", "evil-only"];
    let requests: Vec<(String, Expected)> = (0..1000)
        .map(|i| match i {
            500 => ("e".repeat(32), Expected::Malformed), // `e` is not a nix32 digit
            _ if i % 4 < 2 => {
                let item = world.item(AGREED[i % AGREED.len()]);
                (
                    item.hash_part().to_owned(),
                    Expected::Served(item.store_path.clone()),
                )
            }
            _ if i % 4 == 2 => (unknown[i % unknown.len()].clone(), Expected::NotFound),
            _ => (
                world.item(refused[i % 2]).hash_part().to_owned(),
                Expected::NotFound,
            ),
        })
        .collect();

    let addr = q.url().trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connecting to quorate");
    let (read, mut write) = stream.into_split();
    let mut wire = Vec::new();
    for (hash, _) in &requests {
        write!(
            wire,
            "GET /guix/{hash}.narinfo HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: GNU Guile\r\n\r\n"
        )
        .expect("writing to memory");
    }
    // All requests go out at once; a writer task, so that a full socket buffer on either side
    // cannot stall the test while it reads. It hands the write half back: the connection stays
    // open until every answer is read.
    let writer = tokio::spawn(async move { write.write_all(&wire).await.map(|()| write) });

    let mut reader = tokio::io::BufReader::new(read);
    let mut counts = BTreeMap::<u16, usize>::new();
    for (i, (hash, expected)) in requests.iter().enumerate() {
        let response = tokio::time::timeout(Duration::from_secs(120), read_response(&mut reader))
            .await
            .unwrap_or_else(|_| panic!("no answer {i} (for {hash}) within 120 s"))
            .unwrap_or_else(|e| panic!("answer {i} (for {hash}): {e}"));
        *counts.entry(response.status).or_default() += 1;
        let text = response.text();
        match expected {
            Expected::Served(store_path) => {
                assert_eq!(response.status, 200, "answer {i} ({hash}): {text}");
                let ni = Narinfo::parse(&text);
                assert_eq!(ni.one("StorePath"), store_path, "answer {i} is for {hash}");
            }
            Expected::NotFound => assert_eq!(response.status, 404, "answer {i} ({hash}): {text}"),
            Expected::Malformed => assert_eq!(response.status, 400, "answer {i} ({hash}): {text}"),
        }
        if response.status != 400 {
            let cc = response.header("cache-control").unwrap_or_default();
            assert!(
                cc.contains("max-age="),
                "answer {i} ({}) has Cache-Control max-age: {cc:?}",
                response.status
            );
        }
    }
    writer
        .await
        .expect("the writer task")
        .expect("every request was written");
    assert_eq!(counts.values().sum::<usize>(), 1000);
    eprintln!("pipelined answers by status: {counts:?}");
}

// ---------------------------------------------------------------------------------------
// One process, two flavors.
// ---------------------------------------------------------------------------------------

/// One quorate serves a Nix cache at `/nix` (the Nix fixture caches of builders A and B) and
/// a Guix cache at `/guix` (this file's world). Each announces its own store, answers its own
/// store paths with its own flavor of narinfo and signature and their NARs, and knows nothing
/// of the other's paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nix_cache_and_a_guix_cache_side_by_side_each_answer_for_their_own_store() {
    let Some(world) = world() else { return };
    let fx = common::fixtures();
    let nix_ups: Vec<UpstreamServer> = ["A", "B"]
        .iter()
        .map(|n| UpstreamServer::serve(&fx.builder(n).cache_dir))
        .collect();
    let ups = serve(&world, &all_builders());
    // Signed with the key quorate generates for it (`quorate-1`), as the Guix cache is.
    let mut nix = CacheSpec::nix("nix")
        .mount("/nix")
        .quorum(2)
        .generated_signing_key();
    for (name, up) in ["A", "B"].iter().zip(&nix_ups) {
        nix = nix
            .builder(&name.to_lowercase(), &[&fx.builder(name).public_key])
            .upstream_with_priority(up.url(), 1);
    }
    let q = Quorate::start_async(Backend::Sqlite, vec![nix, guix_cache(&world, &ups)]).await;

    for (cache, store) in [("nix", "/nix/store"), ("guix", "/gnu/store")] {
        let info = q.get(cache, "/nix-cache-info").await;
        assert_eq!(info.status, 200, "{cache}/nix-cache-info");
        let text = info.text();
        assert!(
            text.lines().any(|l| l == format!("StoreDir: {store}")),
            "{cache}/nix-cache-info: {text}"
        );
    }

    let nix_hello = &fx.paths.hello;
    let nix_hash = basename(&nix_hello.store_path)[..32].to_owned();
    let answer = q.get("nix", &format!("/{nix_hash}.narinfo")).await;
    assert_eq!(answer.status, 200, "nix hello: {}", answer.summary());
    let ni = Narinfo::parse(&answer.text());
    assert_eq!(ni.one("StorePath"), nix_hello.store_path);
    assert_eq!(ni.one("NarHash"), nix_hello.nar_hash);
    assert!(
        ni.all("Sig").iter().any(|s| s.starts_with("quorate-1:")),
        "quorate's Nix signature: {:?}",
        ni.all("Sig")
    );
    assert!(
        ni.all("Signature").is_empty(),
        "no Guix signature on a Nix narinfo"
    );
    let nar = q.get("nix", &format!("/{}", ni.one("URL"))).await;
    assert_eq!(nar.status, 200, "nix hello's NAR");
    assert_eq!(nar_hash_of(nar.bytes()), nix_hello.nar_hash);

    let guix_text = assert_served_narinfo(&q, &world, "hello", "b1").await;
    assert!(
        Narinfo::parse(&guix_text).all("Sig").is_empty(),
        "no Nix Sig"
    );
    let key = q.public_key_file(GUIX);
    assert_eq!(
        verdicts(&world, "side-by-side", &[(&guix_text, &key)]),
        ["valid-signature"]
    );
    assert_served_nars(&q, "hello", world.item("hello")).await;

    let guix_hello = world.item("hello");
    let crossed = q.get("nix", &guix_hello.narinfo_path()).await;
    assert_eq!(crossed.status, 404, "a Guix path on the Nix cache");
    let crossed = q.get("guix", &format!("/{nix_hash}.narinfo")).await;
    assert_eq!(crossed.status, 404, "a Nix path on the Guix cache");

    let caches = get_json(&format!("{}/api/v1/caches", q.url())).await;
    let flavors: Vec<(&str, &str)> = caches["caches"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| Some((c["mount"].as_str()?, c["flavor"].as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(flavors, [("/nix", "nix"), ("/guix", "guix")], "{caches}");
}

// ---------------------------------------------------------------------------------------
// quorate's Guix key.
// ---------------------------------------------------------------------------------------

/// `quorate keygen --flavor guix` writes a key pair Guix can use: the public key is an
/// advanced-form `(public-key (ecc (curve Ed25519) (q #…#)))`, written exactly as libgcrypt
/// prints it; `guix archive --authorize` takes it into an ACL; libgcrypt reads it as a 255-bit
/// Ed25519-curve key and the secret key as consistent with it. A quorate serving with that key
/// signs narinfos libgcrypt verifies under it (and not under another key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorate_keygen_guix_keys_are_authorized_by_guix_and_verify_quorates_narinfos() {
    let Some(world) = world() else { return };
    let dir = world.scratch("keygen");
    let prefix = dir.join("quorate-guix");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args([
            "keygen",
            "--flavor",
            "guix",
            "--name",
            "quorate-guix-test",
            "--out",
        ])
        .arg(&prefix)
        .output()
        .expect("running quorate keygen");
    assert!(
        out.status.success(),
        "quorate keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = KeyPair {
        public: prefix.with_extension("pub"),
        secret: prefix.with_extension("sec"),
    };
    let public = key.public_text();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        public.trim(),
        "keygen prints the public key"
    );
    let mode = std::fs::metadata(&key.secret)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("the secret key exists");
    assert_eq!(mode, 0o600, "the secret key is private");

    let squeezed = public
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("( ", "(")
        .replace(" )", ")");
    let q_hex = squeezed
        .strip_prefix("(public-key (ecc (curve Ed25519) (q #")
        .and_then(|rest| rest.strip_suffix("#)))"))
        .unwrap_or_else(|| panic!("not an advanced-form Ed25519 public key: {public}"));
    assert!(
        q_hex.len() == 64 && q_hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "q is 32 bytes in hex: {q_hex}"
    );
    assert_eq!(
        world.oracle.print_advanced(&public).as_deref(),
        Some(public.as_str()),
        "written exactly as libgcrypt prints it (as `guix archive --generate-key` does)"
    );
    let verdict = world.oracle.authorize(&key, &dir.join("acl"));
    assert_eq!(verdict.public_key, "authorized ecc Ed25519 255");
    assert_eq!(verdict.secret_key, "consistent");

    let ups = serve(&world, &all_builders());
    let spec = guix_cache(&world, &ups).signing_key(&key.secret);
    let q = Quorate::start_async(Backend::Sqlite, vec![spec]).await;
    assert_eq!(q.public_key_file(GUIX), key.public);
    let text = assert_served_narinfo(&q, &world, "hello", "b1").await;
    let other = world.key("b1").public.clone();
    assert_eq!(
        verdicts(
            &world,
            "keygen-verify",
            &[(&text, &key.public), (&text, &other)]
        ),
        ["valid-signature", "unauthorized-key"]
    );
    let caches = get_json(&format!("{}/api/v1/caches", q.url())).await;
    assert_eq!(
        caches["caches"][0]["public_key"].as_str().map(str::trim),
        Some(public.trim()),
        "the API shows the key clients authorize"
    );
}
