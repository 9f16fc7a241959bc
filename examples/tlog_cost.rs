//! What the transparency log costs (bench, not a test): records N synthetic store paths with
//! three builders' attestations and an accepted decision each, then lets the appender log
//! them all, and reports the entries appended per second and the database bytes per entry.
//!
//! ```sh
//! cargo run --release --example tlog_cost -- 20000                       # SQLite
//! cargo run --release --example tlog_cost -- 20000 postgres://…/db        # PostgreSQL
//! ```
//!
//! The attestations' signatures are not real (the log records, it does not verify); the
//! entries have the size of real Nix ones. Bytes are the database's growth while logging
//! (SQLite: pages in use after a WAL checkpoint; PostgreSQL: `pg_database_size`).

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Instant;

use quorate::app::App;
use quorate::config::Config;
use quorate::db::{DecisionRecord, Outcome};
use quorate_core::attestation::{Attestation, Content, SigStatus};
use quorate_core::flavor::{Flavor, Signer};
use quorate_core::protocol::nar_hash::NarHash;
use quorate_core::protocol::nix32;
use sha2::{Digest, Sha256};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let paths: usize = args.get(1).map_or(Ok(20_000), |n| n.parse())?;
    let database = args.get(2).cloned();
    let dir = tempfile::tempdir()?;
    let keys: Vec<String> = (1..=3)
        .map(|i| Signer::generate(Flavor::Nix, &format!("builder-{i}")).map(|s| s.public_text()))
        .collect::<Result<_, _>>()?;
    let mut toml = format!("state_dir = {:?}\n", dir.path().display().to_string());
    if let Some(url) = &database {
        toml.push_str(&format!("database_url = {url:?}\n"));
    }
    toml.push_str("[[cache]]\nname = \"bench\"\nflavor = \"nix\"\nquorum = 2\n");
    for (i, k) in keys.iter().enumerate() {
        toml.push_str(&format!(
            "[[cache.builder]]\nname = \"b{i}\"\nkeys = [{:?}]\n",
            k.trim()
        ));
    }
    toml.push_str("[[cache.upstream]]\nurl = \"http://127.0.0.1:9\"\n");
    let config_file = dir.path().join("quorate.toml");
    std::fs::write(&config_file, toml)?;
    let app = App::start(Config::load(&config_file)?).await?;
    let cache = app.caches[0].clone();

    let started = Instant::now();
    record(&app, paths).await?;
    eprintln!(
        "recorded {paths} paths in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let before = support::db_bytes(&app).await?;
    let started = Instant::now();
    let entries = support::catch_up_log(&app, &cache).await?;
    let seconds = started.elapsed().as_secs_f64();
    let after = support::db_bytes(&app).await?;
    let backend = if database.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("| backend | paths | entries | append s | entries/s | bytes per entry |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {backend} | {paths} | {entries} | {seconds:.1} | {:.0} | {:.0} |",
        entries as f64 / seconds,
        (after.saturating_sub(before)) as f64 / entries.max(1) as f64
    );
    Ok(())
}

/// `paths` synthetic paths: three valid-looking attestations and an accepted decision each.
async fn record(
    app: &Arc<App>,
    paths: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let now = 1_764_000_000_000;
    for chunk in (0..paths).collect::<Vec<_>>().chunks(1000) {
        let mut atts = Vec::new();
        for &i in chunk {
            let digest: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
            let hash_part = nix32::encode(&digest[..20]);
            let content = Content {
                store_path: format!("/nix/store/{hash_part}-package-{i}"),
                nar_hash: NarHash::from_digest(digest),
                nar_size: 100_000 + i as u64,
                references: vec![format!("{hash_part}-package-{i}")],
            };
            for b in 0..3 {
                atts.push(Attestation {
                    cache: "bench".into(),
                    hash_part: hash_part.parse()?,
                    content: content.clone(),
                    deriver: Some(format!("{hash_part}-package-{i}.drv")),
                    ca: None,
                    key_name: format!("builder-{}", b + 1),
                    builder: Some(format!("b{b}")),
                    upstream: format!("https://upstream-{b}.example.org"),
                    signature: format!("builder-{}:{}", b + 1, "A".repeat(86) + "=="),
                    status: SigStatus::Valid,
                    seen_at: now,
                    signed_body: None,
                    first_seen: now,
                });
            }
            let decision = DecisionRecord {
                cache: "bench".into(),
                hash_part: hash_part.parse()?,
                store_path: Some(content.store_path.clone()),
                outcome: Outcome::Accepted,
                content: Some(content),
                deriver: None,
                ca: None,
                agreeing: vec!["b0".into(), "b1".into(), "b2".into()],
                dissenters: vec![],
                policy: app.caches[0].policy_summary(),
                decided_at: now,
            };
            app.db.record_decision(&decision).await?;
        }
        app.db.record_attestations(&atts).await?;
    }
    Ok(())
}
