//! The read-only JSON API under `/api/v1`: caches and their policy, what was decided about
//! a path and on which attestations, and recorded events.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use quorate_core::protocol::store_path::HashPart;
use serde::Deserialize;
use serde_json::json;

use super::error::HttpError;
use crate::app::App;
use crate::db::EventKind;

/// `GET /api/v1/caches`: the served caches, their policy and quorate's public key.
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
