//! Appending to each cache's transparency log (DESIGN §12): a background task that, about
//! once a second, takes the rows not logged yet — the cache's policy when it changed, then
//! attestations, then decisions when they change (which name their policy and attestations
//! by log index) —
//! turns them into entries (`quorate_core::tlog::entry`), computes the tree's new stored
//! hashes and root, signs a checkpoint with the log key and writes it all in one
//! transaction. In a replica set one replica appends at a time (the `tlog:<cache>` lease);
//! the log is derived from the database, so nothing is lost when a replica dies: the rows
//! simply wait for the next append.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quorate_core::attestation::Attestation;
use quorate_core::protocol::signature::SigStatus;
use quorate_core::tlog::checkpoint::Checkpoint;
use quorate_core::tlog::entry::{self, DecisionEntry};
use quorate_core::tlog::merkle::{hashes_to_store, leaf_hash, stored_hash_count, tree_hash, Hash};

use crate::app::App;
use crate::clock::now_ms;
use crate::db::{random_hex, DecisionRecord, EntryKind, LogAppend, NewEntry};
use crate::served_cache::ServedCache;
use crate::tlog::{with_hashes, LogError};

/// How often the logs grow (a checkpoint per append that had anything to add).
const EVERY: Duration = Duration::from_secs(1);
/// How often a failing append is warned about.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Rows of each kind per append.
const BATCH: u32 = 2000;
/// How long an appender's lease lasts (an append takes far less).
const LEASE_TTL: Duration = Duration::from_secs(30);

/// Appends to every cache's log every [`EVERY`] until shutdown.
pub async fn follow(app: Arc<App>) {
    let shutdown = app.background.shutdown_signal();
    let witnesses = reqwest::Client::builder()
        .timeout(crate::witnessing::TIMEOUT)
        .build()
        .unwrap_or_default();
    let owner = app.fleet.as_ref().map_or_else(
        || format!("pid:{}", std::process::id()),
        |f| f.me().to_owned(),
    );
    // A failing append (the database down) is retried every second but warned about once a
    // minute; the rows wait in the database meanwhile.
    let mut warned: HashMap<String, std::time::Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = shutdown.cancelled() => {
                // One last append: what was decided under this run's policy is logged under
                // it, not under the policy of the next start (a new block list, a revoked
                // key) that an auditor would then replay it against.
                for cache in &app.caches {
                    if let Err(e) = append_leased(&app, cache, &owner).await {
                        tracing::warn!(cache = %cache.name(), "last append to the transparency log: {e}");
                    }
                }
                return;
            }
        }
        for cache in &app.caches {
            match append_leased(&app, cache, &owner).await {
                Ok(_) => {
                    if warned.remove(cache.name()).is_some() {
                        tracing::info!(cache = %cache.name(), "appending to the transparency log again");
                    }
                }
                Err(e) => {
                    let last = warned.get(cache.name());
                    if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        tracing::warn!(cache = %cache.name(), "appending to the transparency log: {e}");
                        warned.insert(cache.name().to_owned(), std::time::Instant::now());
                    } else {
                        tracing::debug!(cache = %cache.name(), "appending to the transparency log: {e}");
                    }
                }
            }
            crate::witnessing::round(&app, cache, &witnesses).await;
        }
    }
}

/// One append to `cache`'s log, if there is anything to log and this process holds its
/// lease (an idle log costs two reads a second, no write).
pub async fn append_leased(app: &App, cache: &ServedCache, owner: &str) -> Result<u64, LogError> {
    let (_, policy_hash) = policy_entry(cache);
    let policy_logged = app
        .db
        .logged_policy(cache.name(), &policy_hash)
        .await?
        .is_some();
    if policy_logged && !app.db.has_unlogged(cache.name()).await? {
        return Ok(0);
    }
    let name = format!("tlog:{}", cache.name());
    let token = random_hex(16);
    let now = now_ms();
    let until = now + LEASE_TTL.as_millis() as i64;
    if !app.db.take_lease(&name, owner, &token, now, until).await? {
        return Ok(0);
    }
    let appended = append(app, cache).await;
    if let Err(e) = app.db.release_lease(&name, &token).await {
        tracing::debug!("releasing {name}: {e}");
    }
    appended
}

/// Appends what is waiting (at most [`BATCH`] rows of each kind); returns how many entries.
pub async fn append(app: &App, cache: &ServedCache) -> Result<u64, LogError> {
    let db = &app.db;
    let name = cache.name();
    // Never extend a log another key signed (a replica given its own key): that forks it.
    crate::tlog::check_log_key(db, name, &cache.log, &cache.config.log_key_file)
        .await
        .map_err(LogError::Inconsistent)?;
    let old_size = db.log_size(name).await?;
    let mut entries = Vec::new();

    let (policy_body, policy_hash) = policy_entry(cache);
    let policy = match db.logged_policy(name, &policy_hash).await? {
        Some(index) => index,
        None => {
            entries.push(NewEntry {
                kind: EntryKind::Policy,
                row: None,
                policy_hash: Some(policy_hash),
                body: policy_body,
                beside: None,
            });
            old_size
        }
    };

    let attestations = db.unlogged_attestations(name, BATCH).await?;
    let caught_up = attestations.len() < BATCH as usize;
    let mut fresh: HashMap<String, Vec<(u64, Attestation)>> = HashMap::new();
    for a in attestations {
        let index = old_size + entries.len() as u64;
        let rendered = entry::attestation(&a.row);
        entries.push(NewEntry {
            kind: EntryKind::Attestation,
            row: Some(a.id),
            policy_hash: None,
            body: rendered.entry,
            beside: rendered.beside,
        });
        fresh
            .entry(a.row.hash_part.to_string())
            .or_default()
            .push((index, a.row));
    }
    // A decision names its attestations by index: only once every earlier one is logged.
    // One that changes nothing (same verdict and content as the path's last logged decision,
    // under the same policy entry) is not logged again: its row points at that entry.
    let mut aliases = Vec::new();
    if caught_up {
        let mut last: HashMap<String, (u64, DecisionRecord)> = HashMap::new();
        for d in db.unlogged_decisions(name, BATCH).await? {
            let hash_part = d.row.hash_part.to_string();
            let previous = match last.get(&hash_part) {
                Some(p) => Some(p.clone()),
                None => db.latest_logged_decision(name, &hash_part).await?,
            };
            if let Some((index, before)) = previous.filter(|(i, p)| *i > policy && same(p, &d.row))
            {
                aliases.push((d.id, index));
                last.insert(hash_part, (index, before));
                continue;
            }
            let mut logged = db.logged_attestations(name, &hash_part).await?;
            logged.extend(fresh.get(&hash_part).into_iter().flatten().cloned());
            let index = old_size + entries.len() as u64;
            // A revoked key's attestations (first recorded after its revocation) neither
            // support nor dissent.
            logged.retain(|(_, a)| !cache.front.revoked(a));
            entries.push(NewEntry {
                kind: EntryKind::Decision,
                row: Some(d.id),
                policy_hash: None,
                body: decision_entry(&d.row, policy, &logged),
                beside: None,
            });
            last.insert(hash_part, (index, d.row));
        }
    }
    let grown = if entries.is_empty() {
        0
    } else {
        match grow(app, cache, old_size, entries).await? {
            0 => return Ok(0), // another appender moved on: aliases may name entries not written
            n => n,
        }
    };
    db.alias_logged_decisions(&aliases).await?;
    Ok(grown)
}

/// Whether decision `b` changes nothing after `a`: same verdict, same content.
fn same(a: &DecisionRecord, b: &DecisionRecord) -> bool {
    a.outcome == b.outcome && a.content == b.content
}

/// Computes the stored hashes and root for `entries` after `old_size`, signs the
/// checkpoint and writes the batch.
async fn grow(
    app: &App,
    cache: &ServedCache,
    old_size: u64,
    entries: Vec<NewEntry>,
) -> Result<u64, LogError> {
    let (db, name) = (&app.db, cache.name());
    let mut known: HashMap<u64, Hash> = HashMap::new();
    let mut hashes = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let index = old_size + i as u64;
        let leaf = leaf_hash(&e.body);
        let new = with_hashes(db, name, &mut known, |r| hashes_to_store(index, leaf, r)).await?;
        let first = stored_hash_count(index)
            .ok_or_else(|| LogError::Inconsistent(format!("log index {index} too large")))?;
        for (k, h) in new.into_iter().enumerate() {
            known.insert(first + k as u64, h);
            hashes.push((first + k as u64, *h.as_bytes()));
        }
    }
    let new_size = old_size + entries.len() as u64;
    let root = with_hashes(db, name, &mut known, |r| tree_hash(new_size, r)).await?;
    let signed = Checkpoint::new(cache.log.origin(), new_size, root)
        .and_then(|c| c.sign(&cache.log.signer))
        .map_err(|e| LogError::Inconsistent(e.to_string()))?;
    let batch = LogAppend {
        cache: name.to_owned(),
        old_size,
        entries,
        hashes,
        checkpoint: signed.to_string(),
        signed_at: now_ms(),
    };
    if !db.append_to_log(&batch).await? {
        return Ok(0); // another appender moved the log on: the rows wait for the next turn
    }
    tracing::debug!(cache = %name, size = new_size, "transparency log grew");
    Ok(new_size - old_size)
}

/// The policy entry of `cache` as configured now (weights, revoked keys and block list
/// included), and its SHA-256 (hex).
fn policy_entry(cache: &ServedCache) -> (Vec<u8>, String) {
    let body = entry::policy(cache.name(), &cache.policy, &cache.config.builders);
    let hash = entry::sha256_hex(&body);
    (body, hash)
}

/// A decision's entry: support = the logged valid attestations of its agreeing builders for
/// its content; dissent = those of its dissenters for anything else.
fn decision_entry(d: &DecisionRecord, policy: u64, logged: &[(u64, Attestation)]) -> Vec<u8> {
    let valid = |a: &Attestation| a.status == SigStatus::Valid;
    let by =
        |names: &[String], a: &Attestation| a.builder.as_ref().is_some_and(|b| names.contains(b));
    let content = d.content.as_ref();
    let mut support: Vec<u64> = logged
        .iter()
        .filter(|(_, a)| valid(a) && by(&d.agreeing, a) && Some(&a.content) == content)
        .map(|(i, _)| *i)
        .collect();
    let mut dissent: Vec<u64> = logged
        .iter()
        .filter(|(_, a)| valid(a) && by(&d.dissenters, a) && Some(&a.content) != content)
        .map(|(i, _)| *i)
        .collect();
    support.sort_unstable();
    dissent.sort_unstable();
    entry::decision(&DecisionEntry {
        cache: &d.cache,
        hash_part: d.hash_part.as_str(),
        verdict: d.outcome.as_str(),
        content,
        policy,
        support: &support,
        dissent: &dissent,
        decided_at: d.decided_at,
    })
}
