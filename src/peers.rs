//! Following peers (DESIGN §13): each `[[cache.peer]]` is another quorate's transparency log.
//! Every `interval`, under the lease `peer:<cache>:<url>` (one replica of a set at a time),
//! its checkpoint is opened with the log's key (configured, or the one served at first
//! contact, kept), proved consistent with the checkpoint seen before, and its entries read
//! on from where the last round stopped, each proved included under the checkpoint.
//!
//! Nothing the peer says counts but builder signatures: each attestation entry is turned
//! back into the narinfo it stands for and observed by the cache's own front end, exactly
//! like an upstream answer, so its signature is verified with this cache's keys and
//! attributed to this cache's builders. Only valid signatures of configured builders are
//! imported (recorded with upstream `peer:<url>`, and logged in this quorate's own log);
//! the peer's decisions and policy are read past. A peer whose checkpoints no consistency
//! proof joins has forked its log: it is flagged (a `peer_fork` event with both
//! checkpoints; `/api/v1/peers` shows it) and no longer followed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorate_core::attestation::Attestation;
use quorate_core::protocol::store_path::HashPart;
use quorate_core::tlog::checkpoint::Checkpoint;
use quorate_core::tlog::entry;
use quorate_core::tlog::note::{NoteVerifier, VerifierKey};
use quorate_core::tlog::replay::LoggedAttestation;

use crate::app::App;
use crate::clock::now_ms;
use crate::config::PeerConfig;
use crate::db::{random_hex, DbError, EventKind, PeerState};
use crate::limits::{PEER_BATCH, PEER_MAX_BODY, PEER_REQUEST_TIMEOUT};
use crate::record;
use crate::remote_log::{RemoteLog, RemoteLogError};
use crate::served_cache::ServedCache;

/// How long a follower's lease lasts (a round takes far less).
const LEASE_TTL: Duration = Duration::from_secs(60);
/// How often a failing peer is warned about.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why a round failed (it is retried at the next interval).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The database.
    #[error("database: {0}")]
    Db(#[from] DbError),
    /// The peer's log could not be read or did not check out.
    #[error("{0}")]
    Log(#[from] RemoteLogError),
}

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Entries read.
    pub read: u64,
    /// Attestations imported (valid signatures of this cache's builders).
    pub imported: usize,
    /// The peer was found forked in this round.
    pub forked: bool,
}

/// Follows every cache's peers until shutdown.
pub async fn follow(app: Arc<App>) {
    let shutdown = app.background.shutdown_signal();
    let client = match reqwest::Client::builder()
        .timeout(PEER_REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("no HTTP client for following peers: {e}");
            return;
        }
    };
    let owner = app.fleet.as_ref().map_or_else(
        || format!("pid:{}", std::process::id()),
        |f| f.me().to_owned(),
    );
    let mut due: HashMap<(usize, usize), Instant> = HashMap::new();
    let mut warned: HashMap<(usize, usize), Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
        for (c, cache) in app.caches.iter().enumerate() {
            for (p, peer) in cache.config.peers.iter().enumerate() {
                if due.get(&(c, p)).is_some_and(|t| Instant::now() < *t) {
                    continue;
                }
                due.insert((c, p), Instant::now() + peer.interval);
                let log = RemoteLog::new(client.clone(), peer.url.as_str(), PEER_MAX_BODY);
                match leased(&app, cache, peer, &log, &owner).await {
                    Ok(round) => {
                        warned.remove(&(c, p));
                        if round.read > 0 {
                            tracing::debug!(cache = %cache.name(), peer = %peer.url, ?round, "followed a peer");
                        }
                        if round.read == PEER_BATCH {
                            due.remove(&(c, p)); // more to read: go on next second
                        }
                    }
                    Err(e) => {
                        if warned
                            .get(&(c, p))
                            .is_none_or(|t| t.elapsed() >= WARN_EVERY)
                        {
                            tracing::warn!(cache = %cache.name(), peer = %peer.url, "following a peer: {e}");
                            warned.insert((c, p), Instant::now());
                        }
                    }
                }
            }
        }
    }
}

/// One round for `peer`, if this process holds its lease.
async fn leased(
    app: &App,
    cache: &ServedCache,
    peer: &PeerConfig,
    log: &RemoteLog,
    owner: &str,
) -> Result<Round, PeerError> {
    let name = format!("peer:{}:{}", cache.name(), peer.url);
    let token = random_hex(16);
    let now = now_ms();
    let until = now + LEASE_TTL.as_millis() as i64;
    if !app.db.take_lease(&name, owner, &token, now, until).await? {
        return Ok(Round::default());
    }
    let result = round(app, cache, peer, log).await;
    if let Err(e) = app.db.release_lease(&name, &token).await {
        tracing::debug!("releasing {name}: {e}");
    }
    result
}

/// One round: the checkpoint, its consistency with the last one, the next entries.
pub async fn round(
    app: &App,
    cache: &ServedCache,
    peer: &PeerConfig,
    log: &RemoteLog,
) -> Result<Round, PeerError> {
    let url = log.url();
    let stored = app.db.peer_state(cache.name(), url).await?;
    if stored.as_ref().is_some_and(|s| s.forked_at.is_some()) {
        return Ok(Round::default());
    }
    // The key: configured (a new one starts the log afresh), else the one kept, else the
    // one served now (kept from this first contact on).
    let configured = peer.vkey.as_ref().map(ToString::to_string);
    let mut state = match stored {
        Some(s) if configured.as_ref().is_none_or(|k| *k == s.vkey) => s,
        _ => PeerState {
            vkey: match configured {
                Some(k) => k,
                None => log.vkey().await?.to_string(),
            },
            checkpoint: None,
            size: 0,
            imported: 0,
            forked_at: None,
            detail: None,
        },
    };
    let vkey: VerifierKey = state
        .vkey
        .parse()
        .map_err(|e| RemoteLogError::Invalid(format!("the kept vkey: {e}")))?;
    let (new, new_note) = log.checkpoint(&vkey).await?;
    let old = match &state.checkpoint {
        Some(note) => Some(
            Checkpoint::open(note.as_bytes(), vkey.name(), &vkey)
                .map_err(|e| RemoteLogError::Invalid(format!("the kept checkpoint: {e}")))?
                .0,
        ),
        None => None,
    };
    let head = match &old {
        None => Some((new.clone(), new_note)),
        Some(old) => match log.consistent(old, &new).await {
            Ok(()) if new.size() > old.size() => Some((new.clone(), new_note)),
            Ok(()) => None, // the same, or an older checkpoint: stay where we are
            Err(RemoteLogError::Fork(why)) => {
                let detail = format!(
                    "{url}: {why}\n--- seen before\n{}\n--- served now\n{new_note}",
                    state.checkpoint.as_deref().unwrap_or_default().trim_end()
                );
                forked(app, cache, url, &mut state, detail).await?;
                return Ok(Round {
                    forked: true,
                    ..Round::default()
                });
            }
            Err(e) => return Err(e.into()),
        },
    };
    if let Some((checkpoint, note)) = head {
        state.size = checkpoint.size();
        state.checkpoint = Some(note);
    }
    let head = match &state.checkpoint {
        Some(note) => {
            Checkpoint::open(note.as_bytes(), vkey.name(), &vkey)
                .map_err(|e| RemoteLogError::Invalid(e.to_string()))?
                .0
        }
        None => return Ok(Round::default()),
    };
    let from = state.imported;
    let to = head.size().min(from.saturating_add(PEER_BATCH));
    let entries = log.entries(from, to, &head).await?;
    let imported = import(app, cache, url, log, &entries).await?;
    state.imported = to;
    app.db
        .save_peer_state(cache.name(), url, &state, now_ms())
        .await?;
    Ok(Round {
        read: to - from,
        imported,
        forked: false,
    })
}

/// Flags `url` as forked: kept in its state (no longer followed), an event, a warning.
async fn forked(
    app: &App,
    cache: &ServedCache,
    url: &str,
    state: &mut PeerState,
    detail: String,
) -> Result<(), PeerError> {
    tracing::error!(cache = %cache.name(), peer = %url, "SECURITY: a followed peer forked its log; no longer following it\n{detail}");
    state.forked_at = Some(now_ms());
    state.detail = Some(detail.clone());
    app.db
        .save_peer_state(cache.name(), url, state, now_ms())
        .await?;
    let event = crate::db::Event {
        upstream: Some(url.to_owned()),
        ..record::event(cache, EventKind::PeerFork, detail)
    };
    record::best_effort(app, crate::outbox::PendingWrite::Event(event)).await;
    Ok(())
}

/// Imports the attestations among `entries` that this cache's front end finds valid and by
/// one of its builders; forgets the hot answers of their paths. Returns how many.
async fn import(
    app: &App,
    cache: &ServedCache,
    url: &str,
    log: &RemoteLog,
    entries: &[Vec<u8>],
) -> Result<usize, PeerError> {
    let marker = format!("peer:{url}");
    let now = now_ms();
    let mut valid: Vec<Attestation> = Vec::new();
    for bytes in entries {
        let Ok(parsed) = entry::parse(bytes) else {
            continue;
        };
        let Ok(logged) = LoggedAttestation::from_entry(&parsed) else {
            continue; // a decision, a policy, or not an attestation this build reads
        };
        let beside = match logged.beside() {
            Some(hex) => match log.get(&format!("signed/{hex}")).await {
                Ok(text) => String::from_utf8(text).ok(),
                Err(e) => {
                    tracing::debug!(peer = %url, "a signed text beside the log: {e}");
                    None
                }
            },
            None => None,
        };
        let Some(narinfo) = logged.narinfo(&parsed, beside.as_deref()) else {
            continue;
        };
        let Some(hash_part) = hash_part_of(&logged.content.store_path) else {
            continue;
        };
        // Observed like an upstream's answer: this cache's keys, this cache's builders.
        let Ok(seen) = cache.front.observe(&marker, &hash_part, &narinfo, now) else {
            continue;
        };
        valid.extend(
            seen.attestations
                .into_iter()
                .filter(|a| a.voter().is_some()),
        );
    }
    if valid.is_empty() {
        return Ok(0);
    }
    record::observations(app, cache, &valid, &[], &[])
        .write(&app.db)
        .await?;
    // What memory said about those paths is stale, here and on the other replicas of a set.
    let paths: BTreeSet<HashPart> = valid.iter().map(|a| a.hash_part.clone()).collect();
    for hash_part in &paths {
        cache.forget(hash_part, None).await;
        if let Err(e) = app.db.announce_path(cache.name(), hash_part).await {
            tracing::warn!(cache = %cache.name(), %hash_part,
                "announcing imported attestations to the other replicas: {e}");
        }
    }
    Ok(valid.len())
}

/// The hash part of a store path (`<store>/<hash>-<name>`), if it has one.
fn hash_part_of(store_path: &str) -> Option<HashPart> {
    let base = store_path.rsplit('/').next()?;
    base.get(..32)?.parse().ok()
}
