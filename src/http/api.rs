//! `/metrics` (Prometheus text format) and the read-only JSON API under `/api/v1`.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::http::text;
use crate::server::App;
use quorate_core::protocol::store_path::is_valid_hash_part;

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let m = &app.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP quorate_{name} {help}");
        let _ = writeln!(out, "# TYPE quorate_{name} counter");
        let _ = writeln!(out, "quorate_{name} {value}");
    };
    counter(
        "narinfo_requests_total",
        "narinfo requests received",
        m.narinfo_requests.get(),
    );
    counter(
        "decisions_accepted_total",
        "resolutions that accepted a content",
        m.narinfo_accepted.get(),
    );
    counter(
        "decisions_refused_total",
        "resolutions refused for a conflict",
        m.narinfo_refused.get(),
    );
    counter(
        "decisions_insufficient_total",
        "resolutions without enough agreeing builders",
        m.narinfo_insufficient.get(),
    );
    counter(
        "nar_local_total",
        "NAR requests served from the local store",
        m.nar_local.get(),
    );
    counter(
        "nar_upstream_total",
        "NAR requests that started or joined an upstream fetch",
        m.nar_upstream.get(),
    );
    counter(
        "nar_fetched_bytes_total",
        "NAR bytes verified and committed from upstreams",
        m.nar_bytes_fetched.get(),
    );
    counter(
        "nar_mismatches_total",
        "upstream NARs rejected for wrong hash or size",
        m.nar_mismatches.get(),
    );
    counter(
        "upstream_failures_total",
        "failed upstream requests",
        m.upstream_failures.get(),
    );
    counter(
        "conflicts_total",
        "conflicts between trusted builders",
        m.conflicts.get(),
    );
    let _ = writeln!(
        out,
        "# HELP quorate_nar_store_bytes bytes in the local NAR store"
    );
    let _ = writeln!(out, "# TYPE quorate_nar_store_bytes gauge");
    let _ = writeln!(
        out,
        "quorate_nar_store_bytes {}",
        app.fetcher.store().total_size()
    );
    text(StatusCode::OK, &out, None)
}

/// `GET /api/v1/caches`: the served caches, their policy and quorate's public key.
pub async fn caches(State(app): State<Arc<App>>) -> Response {
    let list: Vec<_> = app
        .caches
        .iter()
        .map(|c| {
            json!({
                "name": c.config.name,
                "flavor": format!("{:?}", c.config.flavor).to_lowercase(),
                "mount": if c.config.mount.is_empty() { "/".to_string() } else { c.config.mount.clone() },
                "policy": c.policy,
                "public_key": c.public_key_text(),
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
) -> Response {
    if !is_valid_hash_part(&hash_part) {
        return text(StatusCode::BAD_REQUEST, "malformed hash part\n", None);
    }
    let decision = app.db.latest_decision(&cache, &hash_part).await;
    let attestations = app.db.attestations(&cache, &hash_part).await;
    match (decision, attestations) {
        (Ok(d), Ok(a)) => Json(json!({
            "cache": cache,
            "hash_part": hash_part,
            "decision": d,
            "attestations": a,
        }))
        .into_response(),
        (Err(e), _) | (_, Err(e)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("database: {e}\n"),
            None,
        ),
    }
}

/// Filters for `/api/v1/events`.
#[derive(Deserialize)]
pub struct EventFilter {
    cache: Option<String>,
    kind: Option<String>,
}

/// `GET /api/v1/events?cache=&kind=`: recorded events (mismatch, conflict, upstream_failure).
pub async fn events(State(app): State<Arc<App>>, Query(f): Query<EventFilter>) -> Response {
    match app.db.events(f.cache.as_deref(), f.kind.as_deref()).await {
        Ok(ev) => Json(json!({ "events": ev })).into_response(),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("database: {e}\n"),
            None,
        ),
    }
}
