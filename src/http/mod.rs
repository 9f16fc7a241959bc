//! HTTP routes (axum): per cache under its mount, `nix-cache-info`, `<hash>.narinfo`,
//! `nar/<...>` and `log/<drv>`; globally `/healthz`, `/readyz`, `/metrics` and `/api/v1/...`.
//!
//! Every answer carries `Content-Length` (Guix reads pipelined answers by it) and negative
//! answers a short `Cache-Control: max-age`.

mod api;
mod cache;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::server::App;

/// The whole router: global routes plus one sub-router per cache at its mount.
pub fn router(app: Arc<App>) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/caches", get(api::caches))
        .route("/api/v1/caches/{cache}/paths/{hash_part}", get(api::path))
        .route("/api/v1/events", get(api::events));
    for (idx, cache) in app.caches.iter().enumerate() {
        let sub = Router::new()
            .route(
                "/{file}",
                get(move |s: State<Arc<App>>, p: Path<String>| cache::file(s, idx, p)),
            )
            .route(
                "/nar/{file}",
                get(move |s: State<Arc<App>>, p: Path<String>| cache::nar(s, idx, p)),
            )
            .route(
                "/nar/{compression}/{file}",
                get(move |s: State<Arc<App>>, p: Path<(String, String)>| {
                    cache::nar_compressed(s, idx, p)
                }),
            )
            .route(
                "/log/{drv}",
                get(move |s: State<Arc<App>>, p: Path<String>| cache::log(s, idx, p)),
            );
        r = if cache.config.mount.is_empty() {
            r.merge(sub)
        } else {
            r.nest(&cache.config.mount, sub)
        };
    }
    r.fallback(|| async { text(StatusCode::NOT_FOUND, "not found\n", Some(60)) })
        .with_state(app)
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.db.ping().await {
        Ok(()) => text(StatusCode::OK, "ready\n", None),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("database not ready: {e}\n"),
            None,
        ),
    }
}

/// A small text answer with an explicit length and optional `Cache-Control: max-age`.
pub(crate) fn text(status: StatusCode, body: &str, max_age: Option<u64>) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(age) = max_age {
        if let Ok(v) = HeaderValue::from_str(&format!("max-age={age}")) {
            h.insert(header::CACHE_CONTROL, v);
        }
    }
    resp
}
