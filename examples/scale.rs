//! Fills quorate's database for the growth bench (bench/scale.sh; a bench, not a test).
//!
//! ```sh
//! cargo run --release --example scale -- fill CONFIG KEYS_DIR N PATHS_FILE
//! cargo run --release --example scale -- nars STORE_DIR N
//! ```
//!
//! `fill` opens the App of `CONFIG` (its database: SQLite in the state dir or the configured
//! PostgreSQL) and records N synthetic store paths through the real recording code: three
//! builders' attestations (really signed, with the Nix secret keys `KEYS_DIR/b{0,1,2}.sec`,
//! so that a restarted `quorate serve` counts them), three NAR sources and an accepted
//! decision each. The hash parts go to `PATHS_FILE`, one a line. Prints how long it took
//! and `key=value` lines: attestations, decisions, the database's bytes (SQLite: pages in
//! use, WAL checkpointed first; PostgreSQL: `pg_database_size`) before and after, and the
//! growth per attestation (the decision and NAR sources of its path included), before and
//! after the transparency log caught up with them (the appender runs here, as a serving
//! quorate would have run it all along).
//!
//! `nars` writes N small files in the local store's content-addressed layout
//! (`STORE_DIR/nar/<xx>/<key>.nar`, see src/nar/store.rs): what start-up has to index.

#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::time::Instant;

use futures_util::future::try_join_all;
use quorate::app::App;
use quorate::config::Config;
use quorate::db::{DecisionRecord, Outcome};
use quorate_core::attestation::{Attestation, Content, NarSource, SigStatus};
use quorate_core::protocol::nar_hash::NarHash;
use quorate_core::protocol::narinfo::fingerprint_of;
use quorate_core::protocol::nix32;
use quorate_core::protocol::nix_key::NixSecretKey;
use sha2::{Digest, Sha256};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Paths per batch: one attestation transaction and one NAR-source transaction each.
const CHUNK: usize = 1000;
/// Decisions recorded at once (one statement each, as resolution records them).
const DECISIONS_IN_FLIGHT: usize = 8;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("fill") if args.len() == 6 => {
            fill(
                &args[2],
                std::path::Path::new(&args[3]),
                args[4].parse()?,
                &args[5],
            )
            .await
        }
        Some("nars") if args.len() == 4 => nars(std::path::Path::new(&args[2]), args[3].parse()?),
        _ => Err("usage: scale fill CONFIG KEYS_DIR N PATHS_FILE | scale nars STORE_DIR N".into()),
    }
}

async fn fill(config: &str, keys: &std::path::Path, paths: usize, out: &str) -> Result<(), Error> {
    let config = Config::load(std::path::Path::new(config))?;
    let signers: Vec<NixSecretKey> = (0..3)
        .map(|b| {
            let text = std::fs::read_to_string(keys.join(format!("b{b}.sec")))?;
            text.trim().parse::<NixSecretKey>().map_err(Error::from)
        })
        .collect::<Result<_, _>>()?;
    let app = App::start(config).await?;
    let cache = app.caches[0].clone();
    let policy = cache.policy_summary();
    let empty = support::db_bytes(&app).await?;
    let mut list = std::io::BufWriter::new(std::fs::File::create(out)?);
    let started = Instant::now();
    let now = 1_764_000_000_000;
    for (n, chunk) in (0..paths).collect::<Vec<_>>().chunks(CHUNK).enumerate() {
        let mut atts = Vec::with_capacity(chunk.len() * 3);
        let mut sources = Vec::with_capacity(chunk.len() * 3);
        let mut decisions = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let digest: [u8; 32] = Sha256::digest((i as u64).to_le_bytes()).into();
            let hash_part = nix32::encode(&digest[..20]);
            writeln!(list, "{hash_part}")?;
            let name = format!("{hash_part}-package-{i}");
            let content = Content {
                store_path: format!("/nix/store/{name}"),
                nar_hash: NarHash::from_digest(digest),
                nar_size: 100_000 + i as u64,
                references: vec![name.clone()],
            };
            let fingerprint = fingerprint_of("/nix/store", &content);
            for (b, signer) in signers.iter().enumerate() {
                let upstream = format!("https://upstream-{b}.example.org");
                sources.push(NarSource {
                    upstream: upstream.clone(),
                    nar_hash: content.nar_hash,
                    url: format!("nar/{}.nar.zst", nix32::encode(&digest)),
                    compression: "zstd".into(),
                    file_size: Some(50_000 + i as u64),
                });
                atts.push(Attestation {
                    cache: cache.name().to_owned(),
                    hash_part: hash_part.parse()?,
                    content: content.clone(),
                    deriver: Some(format!("{name}.drv")),
                    ca: None,
                    key_name: signer.name().to_owned(),
                    builder: Some(format!("b{b}")),
                    upstream,
                    signature: signer.sign(&fingerprint),
                    status: SigStatus::Valid,
                    seen_at: now,
                    signed_body: None,
                    first_seen: now,
                });
            }
            decisions.push(DecisionRecord {
                cache: cache.name().to_owned(),
                hash_part: hash_part.parse()?,
                store_path: Some(content.store_path.clone()),
                outcome: Outcome::Accepted,
                content: Some(content),
                deriver: Some(format!("{name}.drv")),
                ca: None,
                agreeing: vec!["b0".into(), "b1".into(), "b2".into()],
                dissenters: vec![],
                policy: policy.clone(),
                decided_at: now,
            });
        }
        // As resolution does: attestations and sources first, then the decision.
        app.db.record_attestations(&atts).await?;
        app.db.record_nar_sources(cache.name(), &sources).await?;
        for group in decisions.chunks(DECISIONS_IN_FLIGHT) {
            try_join_all(group.iter().map(|d| app.db.record_decision(d))).await?;
        }
        if (n + 1) % 50 == 0 {
            eprintln!(
                "  {} paths, {:.0} paths/s",
                (n + 1) * CHUNK,
                ((n + 1) * CHUNK) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    list.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    let attestations = app.db.count_attestations(None).await?;
    let decisions = app.db.count_decisions(None).await?;
    let unlogged = support::db_bytes(&app).await?;
    // A serving quorate logs every record (DESIGN §12): catch the log up here, so that the
    // restarted server is not busy appending while it is measured.
    let started_log = Instant::now();
    let entries = support::catch_up_log(&app, &cache).await?;
    let log_seconds = started_log.elapsed().as_secs_f64();
    let bytes = support::db_bytes(&app).await?;
    app.db.close().await;
    println!("log_entries={entries}");
    println!("log_seconds={log_seconds:.1}");
    println!("db_bytes_unlogged={unlogged}");
    println!(
        "bytes_per_attestation_unlogged={:.0}",
        unlogged.saturating_sub(empty) as f64 / attestations.max(1) as f64
    );
    println!("paths={paths}");
    println!("fill_seconds={seconds:.1}");
    println!("paths_per_second={:.0}", paths as f64 / seconds);
    println!("attestations={attestations}");
    println!("decisions={decisions}");
    println!("db_bytes_empty={empty}");
    println!("db_bytes={bytes}");
    println!(
        "bytes_per_attestation={:.0}",
        bytes.saturating_sub(empty) as f64 / attestations.max(1) as f64
    );
    Ok(())
}

/// N small NAR files in the store's layout, named by their (synthetic) keys.
fn nars(store: &std::path::Path, n: usize) -> Result<(), Error> {
    let started = Instant::now();
    for i in 0..n {
        let digest: [u8; 32] = Sha256::digest(format!("nar {i}")).into();
        let key = nix32::encode(&digest);
        let dir = store.join("nar").join(&key[..2]);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{key}.nar")), format!("nar {i}\n"))?;
    }
    eprintln!(
        "wrote {n} NAR files in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
