//! Attestations pushed by builders that host no cache (DESIGN §13): the service half of
//! `POST /api/v1/caches/<cache>/attestations` (`http/push.rs` only translates).
//!
//! For one body, in order:
//! 1. it is split into narinfos (`quorate_core::push::split_narinfos`); none, or more than
//!    one push may carry, refuses the body;
//! 2. the client's rate is charged one token per narinfo, before any signature is checked;
//! 3. every narinfo is read by the cache's flavor front end (on a blocking thread: Guix
//!    signatures are slow to check); one that cannot be read refuses the whole body, and
//!    nothing is recorded;
//! 4. each is judged on its own (`quorate_core::push::judge`): accepted when signed by a
//!    builder of the cache and no builder's signature on it fails;
//! 5. the keys' rates are charged one token per accepted narinfo, all or nothing;
//! 6. the accepted narinfos' valid attestations are recorded in one transaction, seen through
//!    the upstream `push:<client address>`: that marks them as pushed in the database, the
//!    API, the status page and the transparency log, where the appender logs them like any
//!    other attestation. Rejected narinfos leave nothing behind;
//! 7. every memory answer about those paths is forgotten, here and (`NOTIFY`) on the other
//!    replicas: a path refused a moment ago for want of that vote is decided afresh at its
//!    next request, with NAR bytes from any upstream offering the agreed NarHash.
//!
//! A body with some narinfos accepted and some rejected records the accepted ones: each
//! narinfo stands on its own signatures, and the answer says which went where. A rejection
//! is final (a signature does not start verifying later); a refused body (400, 413, 429,
//! 503) recorded nothing and may be sent again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorate_core::attestation::Attestation;
use quorate_core::protocol::store_path::HashPart;
use quorate_core::push::{judge, split_narinfos, Verdict};
use serde::Serialize;

use crate::app::App;
use crate::clock::now_ms;
use crate::db::DbError;
use crate::limits::{MAX_PUSHED_NARINFOS, MAX_PUSH_BODY_BYTES};
use crate::rate_limit::client_party;
use crate::record;
use crate::served_cache::ServedCache;

/// Why a whole push was refused (nothing of it recorded).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Not a body of narinfos of this cache's flavor (400).
    #[error("{0}")]
    Malformed(String),
    /// Larger than [`MAX_PUSH_BODY_BYTES`] (413).
    #[error("the body is larger than {MAX_PUSH_BODY_BYTES} bytes; push fewer narinfos at a time")]
    BodyTooLarge,
    /// More narinfos than one push may carry (413).
    #[error("{count} narinfos in one push, more than the {limit} accepted at once; push fewer at a time")]
    TooMany {
        /// Narinfos in the body.
        count: usize,
        /// The most one push may carry.
        limit: usize,
    },
    /// Over a rate limit (429): nothing was recorded; try again after `retry_after`.
    #[error("{who} pushed too much: try again in {} s", retry_after.as_secs().max(1))]
    RateLimited {
        /// Whose limit: "this client address", "key <name>".
        who: String,
        /// When the push would fit.
        retry_after: Duration,
    },
    /// The database could not record the accepted attestations (503).
    #[error("database: {0}")]
    Database(#[from] DbError),
    /// Checking the signatures was interrupted (the process is stopping).
    #[error("checking the narinfos was interrupted: {0}")]
    Interrupted(String),
}

impl PushError {
    /// The outcome label of `quorate_pushed_narinfos_total` for a refused push, if it counts.
    fn outcome(&self) -> Option<&'static str> {
        match self {
            PushError::Malformed(_) => Some("malformed"),
            PushError::BodyTooLarge | PushError::TooMany { .. } => Some("too_large"),
            PushError::RateLimited { .. } => Some("rate_limited"),
            PushError::Database(_) | PushError::Interrupted(_) => None,
        }
    }
}

/// What became of one pushed narinfo, as the API answers it.
#[derive(Debug, Clone, Serialize)]
pub struct NarinfoStatus {
    /// The store path it describes.
    pub store_path: String,
    /// `accepted` or `rejected`.
    pub status: &'static str,
    /// Accepted: the builders whose signatures were recorded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub builders: Vec<String>,
    /// Accepted: keys no builder holds that also signed it (ignored).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_keys: Vec<String>,
    /// Rejected: a short name of the reason (`unknown_key`, `bad_signature`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// Rejected: the reason, in a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The upstream name a push from `client` is recorded as seen through.
pub fn pusher(client: IpAddr) -> String {
    format!("push:{client}")
}

/// Receives a pushed body for `cache` from `client` (see the module doc); the status of each
/// narinfo, in order.
pub async fn receive(
    app: &App,
    cache: &Arc<ServedCache>,
    client: IpAddr,
    body: String,
) -> Result<Vec<NarinfoStatus>, PushError> {
    let received = receive_uncounted(app, cache, client, body).await;
    match &received {
        Ok(statuses) => {
            let accepted = statuses.iter().filter(|s| s.status == "accepted").count();
            app.metrics.pushed(cache.name(), "accepted", accepted);
            app.metrics
                .pushed(cache.name(), "rejected", statuses.len() - accepted);
        }
        Err(e) => {
            if let Some(outcome) = e.outcome() {
                app.metrics.pushed(cache.name(), outcome, 1);
            }
        }
    }
    received
}

async fn receive_uncounted(
    app: &App,
    cache: &Arc<ServedCache>,
    client: IpAddr,
    body: String,
) -> Result<Vec<NarinfoStatus>, PushError> {
    if body.len() > MAX_PUSH_BODY_BYTES {
        return Err(PushError::BodyTooLarge);
    }
    // 1. How many narinfos, and may this client send that many now?
    let count = split_narinfos(&body).len();
    if count == 0 {
        return Err(PushError::Malformed("the body holds no narinfo".into()));
    }
    let limit = MAX_PUSHED_NARINFOS
        .min(app.push_per_client.burst() as usize)
        .min(app.push_per_key.burst() as usize);
    if count > limit {
        return Err(PushError::TooMany { count, limit });
    }
    let spend = vec![(client_party(client), count as u32)];
    app.push_per_client
        .take(&spend, Instant::now())
        .map_err(|retry_after| PushError::RateLimited {
            who: "this client address".into(),
            retry_after,
        })?;

    // 2. Read and judge every narinfo, off the async runtime.
    let (front_cache, pusher) = (cache.clone(), pusher(client));
    let verdicts = tokio::task::spawn_blocking(move || {
        let seen_at = now_ms();
        split_narinfos(&body)
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                let pushed = front_cache
                    .front
                    .read_pushed(&pusher, text, seen_at)
                    .map_err(|e| {
                        PushError::Malformed(format!("narinfo {} of {count}: {e}", i + 1))
                    })?;
                Ok((pushed.store_path.clone(), judge(pushed)))
            })
            .collect::<Result<Vec<_>, PushError>>()
    })
    .await
    .map_err(|e| PushError::Interrupted(e.to_string()))??;

    // 3. The keys' rates, for what would be recorded.
    let mut per_key: Vec<(String, u32)> = Vec::new();
    for (_, verdict) in &verdicts {
        if let Verdict::Accepted { attestations, .. } = verdict {
            let mut keys: Vec<&str> = attestations.iter().map(|a| a.key_name.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                let party = format!("{} {key}", cache.name());
                match per_key.iter_mut().find(|(p, _)| *p == party) {
                    Some((_, n)) => *n += 1,
                    None => per_key.push((party, 1)),
                }
            }
        }
    }
    app.push_per_key
        .take(&per_key, Instant::now())
        .map_err(|retry_after| PushError::RateLimited {
            who: format!(
                "key {}",
                per_key
                    .iter()
                    .map(|(p, _)| p.split_once(' ').map_or(p.as_str(), |(_, k)| k))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            retry_after,
        })?;

    // 4. Record what was accepted, then forget what memory said about those paths.
    let accepted: Vec<Attestation> = verdicts
        .iter()
        .filter_map(|(_, v)| match v {
            Verdict::Accepted { attestations, .. } => Some(attestations.iter().cloned()),
            Verdict::Rejected(_) => None,
        })
        .flatten()
        .collect();
    record::pushed(app, cache, &accepted).await?;
    let mut paths: Vec<&HashPart> = accepted.iter().map(|a| &a.hash_part).collect();
    paths.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    paths.dedup();
    for hash_part in paths {
        cache.forget(hash_part, None).await;
        if let Err(e) = app.db.announce_path(cache.name(), hash_part).await {
            tracing::warn!(cache = %cache.name(), %hash_part,
                "announcing pushed attestations to the other replicas: {e}");
        }
    }
    Ok(verdicts
        .into_iter()
        .map(|(store_path, verdict)| status(store_path, verdict))
        .collect())
}

fn status(store_path: String, verdict: Verdict) -> NarinfoStatus {
    match verdict {
        Verdict::Accepted {
            attestations,
            ignored_keys,
        } => {
            let mut builders: Vec<String> =
                attestations.into_iter().filter_map(|a| a.builder).collect();
            builders.sort_unstable();
            builders.dedup();
            NarinfoStatus {
                store_path,
                status: "accepted",
                builders,
                ignored_keys,
                error: None,
                reason: None,
            }
        }
        Verdict::Rejected(why) => NarinfoStatus {
            store_path,
            status: "rejected",
            builders: vec![],
            ignored_keys: vec![],
            error: Some(why.code()),
            reason: Some(why.to_string()),
        },
    }
}
