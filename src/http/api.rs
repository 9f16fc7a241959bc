//! The read-only JSON API under `/api/v1`: caches and their policy, what was decided about
//! a path and on which attestations, recorded events, builders and how often they agree,
//! and the paths they disagree about.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use quorate_core::protocol::store_path::HashPart;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::HttpError;
use crate::app::App;
use crate::db::{DbError, EventKind};

/// `GET /api/v1/caches`: the served caches, their policy (builders with weights), block list
/// and quorate's public key.
pub async fn caches(State(app): State<Arc<App>>) -> Response {
    let list: Vec<_> = app
        .caches
        .iter()
        .map(|c| {
            json!({
                "name": c.config.name,
                "flavor": c.config.flavor.as_str(),
                "mount": if c.config.mount.is_empty() { "/".to_string() } else { c.config.mount.clone() },
                "policy": c.policy,
                "blocked": c.policy.blocked,
                "public_key": c.front.public_key_text(),
                "upstreams": c.config.upstreams.iter().map(|u| u.url.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "caches": list })).into_response()
}

/// `GET /api/v1/caches/{cache}/paths/{hash_part}`: latest decision and every attestation.
pub async fn path(
    State(app): State<Arc<App>>,
    Path((cache, hash_part)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let hash_part: HashPart = hash_part
        .parse()
        .map_err(|_| HttpError::BadRequest("malformed hash part".into()))?;
    let decision = app.db.latest_decision(&cache, &hash_part).await?;
    let attestations = app.db.attestations(&cache, &hash_part).await?;
    Ok(Json(json!({
        "cache": cache,
        "hash_part": hash_part,
        "decision": decision,
        "attestations": attestations,
    }))
    .into_response())
}

/// Filters for `/api/v1/events`.
#[derive(Deserialize)]
pub struct EventFilter {
    cache: Option<String>,
    kind: Option<String>,
}

/// `GET /api/v1/events?cache=&kind=`: recorded events (mismatch, conflict, upstream_failure).
pub async fn events(
    State(app): State<Arc<App>>,
    Query(f): Query<EventFilter>,
) -> Result<Response, HttpError> {
    let kind = f
        .kind
        .as_deref()
        .map(str::parse::<EventKind>)
        .transpose()
        .map_err(|e| HttpError::BadRequest(e.to_string()))?;
    let events = app.db.events(f.cache.as_deref(), kind).await?;
    Ok(Json(json!({ "events": events })).into_response())
}

/// Filters for `/api/v1/builders`.
#[derive(Deserialize)]
pub struct BuilderFilter {
    cache: Option<String>,
}

/// `GET /api/v1/builders?cache=`: per cache and builder, its keys, its attestations and its
/// agreement with each other builder (over the paths both attested).
pub async fn builders(
    State(app): State<Arc<App>>,
    Query(f): Query<BuilderFilter>,
) -> Result<Response, HttpError> {
    let mut caches = Vec::new();
    for c in app
        .caches
        .iter()
        .filter(|c| f.cache.as_deref().is_none_or(|n| n == c.name()))
    {
        let records = app.db.builder_records(c.name()).await?;
        let agreements = app.db.agreements(c.name()).await?;
        let builders: Vec<_> = c
            .config
            .builders
            .iter()
            .map(|b| {
                let record = records.iter().find(|r| r.builder == b.name);
                let with: serde_json::Map<String, serde_json::Value> = agreements
                    .iter()
                    .filter(|g| g.builder == b.name)
                    .map(|g| {
                        let rate = (g.shared > 0).then(|| g.agreed as f64 / g.shared as f64);
                        let v = json!({ "shared": g.shared, "agreed": g.agreed, "rate": rate });
                        (g.other.clone(), v)
                    })
                    .collect();
                json!({
                    "name": b.name,
                    "keys": b.keys.iter().map(|k| k.to_text()).collect::<Vec<_>>(),
                    "weight": b.weight,
                    "revoked": b.revoked.iter().map(|r| json!({
                        "key": r.key.to_text(),
                        "since": r.since,
                    })).collect::<Vec<_>>(),
                    "attestations": {
                        "valid": record.map_or(0, |r| r.valid),
                        "invalid": record.map_or(0, |r| r.invalid),
                    },
                    "paths": record.map_or(0, |r| r.paths),
                    "agreement": with,
                })
            })
            .collect();
        caches.push(json!({ "cache": c.name(), "builders": builders }));
    }
    if caches.is_empty() {
        return Err(HttpError::not_found("no such cache"));
    }
    Ok(Json(json!({ "caches": caches })).into_response())
}

/// Paging and filters for `/api/v1/conflicts`.
#[derive(Deserialize)]
pub struct ConflictPage {
    cache: Option<String>,
    limit: Option<u32>,
    offset: Option<u64>,
}

/// Largest page of `/api/v1/conflicts`.
const MAX_CONFLICT_PAGE: u32 = 500;

/// `GET /api/v1/conflicts?cache=&limit=&offset=`: store paths trusted builders disagree
/// about, most recent first, each with who attested what, through which upstream, and when;
/// and the decision in force.
pub async fn conflicts(
    State(app): State<Arc<App>>,
    Query(page): Query<ConflictPage>,
) -> Result<Response, HttpError> {
    let limit = page.limit.unwrap_or(50).clamp(1, MAX_CONFLICT_PAGE);
    let offset = page.offset.unwrap_or(0);
    let Some(cache) = (match page.cache.as_deref() {
        Some(name) => app.caches.iter().find(|c| c.name() == name),
        None => app.caches.first(),
    }) else {
        return Err(HttpError::not_found("no such cache"));
    };
    let mut list = Vec::new();
    let found = app.db.conflicts(cache.name(), limit, offset).await?;
    for conflict in &found {
        let mut attestations = app
            .db
            .valid_attestations(cache.name(), &conflict.hash_part)
            .await?;
        attestations.retain(|a| a.builder.is_some());
        let claims: Vec<_> = attestations
            .iter()
            .map(|a| {
                json!({
                    "builder": a.builder,
                    "store_path": a.content.store_path,
                    "nar_hash": a.content.nar_hash,
                    "nar_size": a.content.nar_size,
                    "key": a.key_name,
                    "upstream": a.upstream,
                    "seen_at": a.seen_at,
                })
            })
            .collect();
        let decision = app
            .db
            .latest_decision(cache.name(), &conflict.hash_part)
            .await?;
        list.push(json!({
            "hash_part": conflict.hash_part,
            "contents": conflict.contents,
            "last_seen": conflict.last_seen,
            "claims": claims,
            "decision": decision.map(|d| d.outcome),
        }));
    }
    let next = (found.len() as u32 == limit).then(|| offset + u64::from(limit));
    Ok(Json(json!({
        "cache": cache.name(),
        "conflicts": list,
        "next_offset": next,
    }))
    .into_response())
}

/// A followed peer as `/api/v1/peers` shows it.
#[derive(Debug, Serialize)]
struct PeerReport {
    /// The cache following it.
    cache: String,
    /// The log's URL.
    url: String,
    /// Its verifier key, when contacted.
    vkey: Option<String>,
    /// The size of the latest checkpoint proved consistent.
    size: u64,
    /// Entries read.
    imported: u64,
    /// `following`, `not contacted yet` or `forked`.
    status: &'static str,
    /// For a forked peer: when, and both checkpoints.
    forked_at: Option<i64>,
    /// Why.
    detail: Option<String>,
}

/// Every configured peer of every cache, with what is known of it.
async fn peer_reports(app: &App) -> Result<Vec<PeerReport>, DbError> {
    let mut out = Vec::new();
    for cache in &app.caches {
        for peer in &cache.config.peers {
            let url = peer.url.as_str().trim_end_matches('/').to_owned();
            let state = app.db.peer_state(cache.name(), &url).await?;
            let status = match &state {
                None => "not contacted yet",
                Some(s) if s.forked_at.is_some() => "forked",
                Some(_) => "following",
            };
            out.push(PeerReport {
                cache: cache.name().to_owned(),
                url,
                vkey: state.as_ref().map(|s| s.vkey.clone()),
                size: state.as_ref().map_or(0, |s| s.size),
                imported: state.as_ref().map_or(0, |s| s.imported),
                status,
                forked_at: state.as_ref().and_then(|s| s.forked_at),
                detail: state.and_then(|s| s.detail),
            });
        }
    }
    Ok(out)
}

/// `GET /api/v1/peers`: every `[[cache.peer]]`, how far its log was read, and whether it was
/// found forked (no longer followed).
pub async fn peers(State(app): State<Arc<App>>) -> Result<Response, HttpError> {
    let peers = peer_reports(&app).await.map_err(HttpError::from)?;
    Ok(Json(json!({ "peers": peers })).into_response())
}
