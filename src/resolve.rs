//! Narinfo resolution: the walk from a request to a decision.
//!
//! memory (moka, hot decisions and negative answers) → database (the truth: an accepted
//! decision still backed by trusted attestations is served without asking upstreams) →
//! upstream fan-out (all upstreams concurrently; every answer is turned into attestations
//! by the flavor front end) → [`quorate_core::quorum::decide`] after each answer, returning as soon as
//! the outcome is final → record (attestations, NAR sources, decision, events) → respond.
//!
//! Answers that arrive after the decision was final are still recorded by a background task;
//! if the full picture decides differently (a late dissent), the cached decision is withdrawn.
//! Concurrent requests for the same path share one resolution (moka's `try_get_with`).

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::db::{DecisionRecord, Event, Outcome};
use crate::server::{App, CacheState};
use quorate_core::attestation::{Attestation, Content, NarSource, SigStatus};
use quorate_core::quorum::{decide, Decision, Vote};

/// What a served store path needs to render its narinfo and find its NAR.
#[derive(Clone, Debug)]
pub struct Agreed {
    /// The agreed content.
    pub content: Content,
    /// Builders that agreed.
    pub agreeing: Vec<String>,
    /// `Deriver:` reported by an agreeing attestation.
    pub deriver: Option<String>,
    /// `CA:` reported by an agreeing attestation.
    pub ca: Option<String>,
    /// The valid agreeing upstream signatures (flavor-specific raw form), deduplicated.
    pub signatures: Vec<String>,
    /// Upstreams that advertise a NAR with the agreed hash.
    pub sources: Vec<NarSource>,
}

/// The answer for one (cache, hash part), as cached in memory.
#[derive(Debug)]
pub enum Resolution {
    /// Served: the rendered narinfo body and what it rests on.
    Served {
        /// The narinfo quorate answers with, signed by quorate.
        body: bytes::Bytes,
        /// The agreement behind it (boxed: it is large and most answers are negative).
        agreed: Box<Agreed>,
    },
    /// Not served (404): no positive decision.
    NotServed {
        /// Why, for logs and the API.
        reason: String,
    },
}

/// Resolution failed for a reason that is not an answer (database down): HTTP 503.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResolveError(pub String);

/// What a flavor front end extracts from one upstream narinfo.
#[derive(Debug, Default)]
pub struct Observation {
    /// One per signature seen (valid, invalid or unknown key).
    pub attestations: Vec<Attestation>,
    /// Where this upstream says the NAR is.
    pub source: Option<NarSource>,
}

enum Answer {
    Seen(Observation),
    Missing,
    Failed(String),
}

/// Resolve `hash_part` for `cache`: memory, then database, then upstreams.
pub async fn resolve(
    app: &Arc<App>,
    cache: &Arc<CacheState>,
    hash_part: &str,
) -> Result<Arc<Resolution>, Arc<ResolveError>> {
    let key = hash_part.to_string();
    let (app2, cache2) = (app.clone(), cache.clone());
    cache
        .decisions
        .try_get_with(key.clone(), async move {
            resolve_uncached(&app2, &cache2, &key).await.map(Arc::new)
        })
        .await
}

fn votes_of<'a>(atts: impl IntoIterator<Item = &'a Attestation>) -> Vec<Vote> {
    atts.into_iter()
        .filter(|a| a.status == SigStatus::Valid)
        .filter_map(|a| {
            a.builder.as_ref().map(|b| Vote {
                builder: b.clone(),
                content: a.content.clone(),
            })
        })
        .collect()
}

/// Attestations recorded earlier count only while they would still verify under the
/// configured keys: a key removed from the config, or replaced under the same name, stops
/// counting at once.
fn still_trusted(cache: &CacheState, mut atts: Vec<Attestation>) -> Vec<Attestation> {
    atts.retain(|a| cache.still_trusted(a));
    atts
}

async fn resolve_uncached(
    app: &Arc<App>,
    cache: &Arc<CacheState>,
    hash_part: &str,
) -> Result<Resolution, ResolveError> {
    let db_err = |e: crate::db::DbError| ResolveError(format!("database: {e}"));
    let cname = cache.config.name.as_str();

    // 1. The database: an accepted decision whose attestations still meet the policy.
    let recorded = still_trusted(
        cache,
        app.db
            .valid_attestations(cname, hash_part)
            .await
            .map_err(db_err)?,
    );
    if let Some(d) = app
        .db
        .latest_decision(cname, hash_part)
        .await
        .map_err(db_err)?
    {
        if d.outcome == Outcome::Accepted {
            if let Decision::Accepted {
                content, agreeing, ..
            } = decide(&cache.policy, &votes_of(&recorded), false)
            {
                if Some(&content) == d.content.as_ref() {
                    let sources = app
                        .db
                        .nar_sources(cname, &content.nar_hash)
                        .await
                        .map_err(db_err)?;
                    let agreed = agreed_from(content, agreeing, &recorded, sources);
                    return served(cache, agreed).await;
                }
            }
        }
    }

    // 2. Fan out to every upstream at once.
    let (tx, mut rx) = mpsc::channel::<(usize, Answer)>(cache.config.upstreams.len().max(1));
    for (i, up) in cache.config.upstreams.iter().enumerate() {
        let (tx, app, cache, hash_part) = (
            tx.clone(),
            app.clone(),
            cache.clone(),
            hash_part.to_string(),
        );
        let up = up.clone();
        tokio::spawn(async move {
            let answer = match app
                .upstream
                .fetch_narinfo(&up.url, up.bearer_token.as_deref(), &hash_part)
                .await
            {
                Ok(Some(text)) => match cache.observe(&up.url, &hash_part, &text) {
                    Ok(obs) => Answer::Seen(obs),
                    Err(e) => Answer::Failed(format!("bad narinfo from {}: {e}", up.url)),
                },
                Ok(None) => Answer::Missing,
                Err(e) => Answer::Failed(e.to_string()),
            };
            let _ = tx.send((i, answer)).await;
        });
    }
    drop(tx);

    let total = cache.config.upstreams.len();
    let mut answered = 0usize;
    let mut seen: Vec<Attestation> = Vec::new();
    let mut sources: Vec<NarSource> = Vec::new();
    let mut failures: Vec<(usize, String)> = Vec::new();
    let mut votes = votes_of(&recorded);
    let mut decision = Decision::Pending;
    while let Some((i, answer)) = rx.recv().await {
        answered += 1;
        let before = seen.len();
        absorb(answer, i, &mut seen, &mut sources, &mut failures);
        votes.extend(votes_of(&seen[before..]));
        decision = decide(&cache.policy, &votes, answered < total);
        if decision.is_final() {
            break;
        }
    }
    if !decision.is_final() {
        // Every sender finished without a final answer (a task died): decide on what we have.
        decision = decide(&cache.policy, &votes, false);
    }

    // 3. Record what we saw, then the decision.
    record_observations(app, cache, &seen, &sources, &failures).await?;
    let mut all_valid = recorded.clone();
    all_valid.extend(
        seen.iter()
            .filter(|a| a.status == SigStatus::Valid)
            .cloned(),
    );
    let resolution = finish(
        app,
        cache,
        hash_part,
        &decision,
        &all_valid,
        &seen,
        sources.clone(),
    )
    .await?;

    // 4. Late answers: keep recording in the background; re-decide on the full picture.
    if answered < total {
        let (app, cache, hash_part) = (app.clone(), cache.clone(), hash_part.to_string());
        let first = decision.clone();
        tokio::spawn(async move {
            let mut late: Vec<Attestation> = Vec::new();
            let mut late_sources = Vec::new();
            let mut late_failures = Vec::new();
            while let Some((i, answer)) = rx.recv().await {
                absorb(answer, i, &mut late, &mut late_sources, &mut late_failures);
            }
            if let Err(e) =
                record_observations(&app, &cache, &late, &late_sources, &late_failures).await
            {
                tracing::warn!(cache = %cache.config.name, %hash_part, "recording late answers: {e}");
                return;
            }
            let mut votes = votes;
            votes.extend(votes_of(&late));
            let full = decide(&cache.policy, &votes, false);
            let changed = kind(&full) != kind(&first) || content_of(&full) != content_of(&first);
            let new_dissent = dissenters_of(&full)
                .iter()
                .any(|d| !dissenters_of(&first).contains(d));
            if changed || new_dissent {
                tracing::warn!(cache = %cache.config.name, %hash_part,
                    "late answers: first {}, with all answers {}", kind(&first), kind(&full));
                if matches!(full, Decision::Refused { .. }) || new_dissent {
                    let detail = format!(
                        "late dissent: first {}, with all answers {} (dissenters {:?})",
                        kind(&first),
                        kind(&full),
                        dissenters_of(&full)
                    );
                    let store_path = content_of(&first)
                        .or(content_of(&full))
                        .map(|c| c.store_path.clone());
                    app.metrics.conflicts.inc();
                    let _ = app
                        .db
                        .record_event(&Event {
                            cache: Some(cache.config.name.clone()),
                            kind: "conflict".into(),
                            store_path,
                            upstream: None,
                            detail,
                            at: now_ms(),
                        })
                        .await;
                }
            }
            if changed {
                if let Some(c) = content_of(&first) {
                    let _ = app
                        .db
                        .record_decision(&DecisionRecord {
                            cache: cache.config.name.clone(),
                            hash_part: hash_part.clone(),
                            store_path: Some(c.store_path.clone()),
                            outcome: Outcome::Withdrawn,
                            content: Some(c.clone()),
                            deriver: None,
                            ca: None,
                            agreeing: vec![],
                            dissenters: dissenters_of(&full),
                            policy: cache.policy_summary(),
                            decided_at: now_ms(),
                        })
                        .await;
                    if let Ok(h) = quorate_core::protocol::narinfo::NarHash::parse(&c.nar_hash) {
                        cache.nars.invalidate(&h.to_nix32()).await;
                    }
                }
                // The next request decides afresh, from the database and the upstreams.
                cache.decisions.invalidate(&hash_part).await;
            }
        });
    }
    Ok(resolution)
}

fn kind(d: &Decision) -> &'static str {
    match d {
        Decision::Accepted { .. } => "accepted",
        Decision::Refused { .. } => "refused",
        Decision::Insufficient { .. } => "insufficient",
        Decision::Pending => "pending",
    }
}

/// Builders that signed something other than the decided content (all of them when refused).
fn dissenters_of(d: &Decision) -> Vec<String> {
    match d {
        Decision::Accepted { dissenters, .. } => dissenters.clone(),
        Decision::Refused { claims } => claims.iter().flat_map(|(_, b)| b.clone()).collect(),
        _ => vec![],
    }
}

fn content_of(d: &Decision) -> Option<&Content> {
    match d {
        Decision::Accepted { content, .. } => Some(content),
        _ => None,
    }
}

fn absorb(
    answer: Answer,
    i: usize,
    seen: &mut Vec<Attestation>,
    sources: &mut Vec<NarSource>,
    failures: &mut Vec<(usize, String)>,
) {
    match answer {
        Answer::Seen(obs) => {
            seen.extend(obs.attestations);
            sources.extend(obs.source);
        }
        Answer::Missing => {}
        Answer::Failed(why) => failures.push((i, why)),
    }
}

async fn record_observations(
    app: &Arc<App>,
    cache: &Arc<CacheState>,
    seen: &[Attestation],
    sources: &[NarSource],
    failures: &[(usize, String)],
) -> Result<(), ResolveError> {
    let db_err = |e: crate::db::DbError| ResolveError(format!("database: {e}"));
    if !seen.is_empty() {
        app.db.record_attestations(seen).await.map_err(db_err)?;
    }
    if !sources.is_empty() {
        app.db
            .record_nar_sources(&cache.config.name, sources)
            .await
            .map_err(db_err)?;
    }
    for (i, why) in failures {
        let up = &cache.config.upstreams[*i].url;
        app.metrics.upstream_failures.inc();
        tracing::warn!(cache = %cache.config.name, upstream = %up, "{why}");
        app.db
            .record_event(&Event {
                cache: Some(cache.config.name.clone()),
                kind: "upstream_failure".into(),
                store_path: None,
                upstream: Some(up.clone()),
                detail: why.clone(),
                at: now_ms(),
            })
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

fn agreed_from(
    content: Content,
    agreeing: Vec<String>,
    valid: &[Attestation],
    sources: Vec<NarSource>,
) -> Agreed {
    let backing: Vec<&Attestation> = valid
        .iter()
        .filter(|a| a.status == SigStatus::Valid && a.content == content)
        .collect();
    let mut signatures = Vec::new();
    let mut seen_sigs = BTreeSet::new();
    for a in &backing {
        if seen_sigs.insert(a.signature.clone()) {
            signatures.push(a.signature.clone());
        }
    }
    let deriver = backing.iter().find_map(|a| a.deriver.clone());
    let ca = backing.iter().find_map(|a| a.ca.clone());
    let mut srcs: Vec<NarSource> = Vec::new();
    for s in sources {
        if s.nar_hash == content.nar_hash && !srcs.contains(&s) {
            srcs.push(s);
        }
    }
    Agreed {
        content,
        agreeing,
        deriver,
        ca,
        signatures,
        sources: srcs,
    }
}

async fn served(cache: &Arc<CacheState>, agreed: Agreed) -> Result<Resolution, ResolveError> {
    let body = cache
        .render(&agreed)
        .map_err(|e| ResolveError(format!("rendering narinfo: {e}")))?;
    cache.remember_nar(&agreed).await;
    Ok(Resolution::Served {
        body: body.into(),
        agreed: Box::new(agreed),
    })
}

async fn finish(
    app: &Arc<App>,
    cache: &Arc<CacheState>,
    hash_part: &str,
    decision: &Decision,
    valid: &[Attestation],
    seen: &[Attestation],
    sources: Vec<NarSource>,
) -> Result<Resolution, ResolveError> {
    let db_err = |e: crate::db::DbError| ResolveError(format!("database: {e}"));
    let cname = cache.config.name.clone();
    let record = |outcome: Outcome,
                  content: Option<Content>,
                  agreeing: Vec<String>,
                  dissenters: Vec<String>| DecisionRecord {
        cache: cname.clone(),
        hash_part: hash_part.to_string(),
        store_path: content.as_ref().map(|c| c.store_path.clone()),
        outcome,
        content,
        deriver: None,
        ca: None,
        agreeing,
        dissenters,
        policy: cache.policy_summary(),
        decided_at: now_ms(),
    };
    match decision {
        Decision::Accepted {
            content,
            agreeing,
            dissenters,
        } => {
            let mut all_sources = sources;
            all_sources.extend(
                app.db
                    .nar_sources(&cname, &content.nar_hash)
                    .await
                    .map_err(db_err)?,
            );
            let agreed = agreed_from(content.clone(), agreeing.clone(), valid, all_sources);
            let mut rec = record(
                Outcome::Accepted,
                Some(content.clone()),
                agreeing.clone(),
                dissenters.clone(),
            );
            rec.deriver = agreed.deriver.clone();
            rec.ca = agreed.ca.clone();
            app.db.record_decision(&rec).await.map_err(db_err)?;
            if !dissenters.is_empty() {
                app.conflict(
                    cache,
                    content,
                    &format!(
                        "accepted by majority {agreeing:?}; dissenting builders {dissenters:?}"
                    ),
                )
                .await?;
            }
            app.metrics.narinfo_accepted.inc();
            served(cache, agreed).await
        }
        Decision::Refused { claims } => {
            let store_path = claims.first().map(|(c, _)| c.clone());
            let detail = claims
                .iter()
                .map(|(c, b)| format!("{} by {}", c.nar_hash, b.join("+")))
                .collect::<Vec<_>>()
                .join("; ");
            app.db
                .record_decision(&record(
                    Outcome::Refused,
                    None,
                    vec![],
                    claims.iter().flat_map(|(_, b)| b.clone()).collect(),
                ))
                .await
                .map_err(db_err)?;
            if let Some(c) = &store_path {
                app.conflict(cache, c, &format!("builders disagree: {detail}"))
                    .await?;
            }
            app.metrics.narinfo_refused.inc();
            tracing::warn!(cache = %cname, %hash_part, "refused: builders disagree: {detail}");
            Ok(Resolution::NotServed {
                reason: format!("refused: builders disagree ({detail})"),
            })
        }
        Decision::Insufficient { .. } | Decision::Pending => {
            let best = match decision {
                Decision::Insufficient { best } => best.as_ref(),
                _ => None,
            };
            // Only record a decision when there was something to decide about; a plain
            // "nobody has it" is the common case of a mass query and stays in memory.
            if !seen.is_empty() || best.is_some() {
                let (content, agreeing) = match best {
                    Some((c, b)) => (Some(c.clone()), b.clone()),
                    None => (None, vec![]),
                };
                app.db
                    .record_decision(&record(Outcome::Insufficient, content, agreeing, vec![]))
                    .await
                    .map_err(db_err)?;
            }
            app.metrics.narinfo_insufficient.inc();
            Ok(Resolution::NotServed {
                reason: match best {
                    Some((_, b)) => format!(
                        "not enough agreeing builders: {} of quorum {}",
                        b.len(),
                        cache.policy.quorum
                    ),
                    None => "no trusted attestation".into(),
                },
            })
        }
    }
}
