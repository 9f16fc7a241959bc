//! HTTP routes (axum): per cache under its mount, `nix-cache-info`, `<hash>.narinfo`,
//! `nar/<...>` and `log/<drv>`; globally `/healthz`, `/readyz`, `/metrics` and `/api/v1/...`
//! (read-only, but for the narinfos builders push to `POST
//! /api/v1/caches/<cache>/attestations`);
//! `/tlog/<cache>/...` (the transparency log); in a replica set, the internal
//! `/_quorate/replica/...` (the set's secret required).
//!
//! Routes only translate: a request into a call of the layer below (resolution, delivery,
//! the database), its answer or [`HttpError`] into a response. Every answer carries
//! `Content-Length` (Guix reads pipelined answers by it) and negative answers a short
//! `Cache-Control: max-age`.

mod api;
mod error;
mod health;
mod log;
mod metrics;
mod nar;
mod narinfo;
mod push;
mod replica;
mod tlog;
mod ui;
mod witness;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;

pub use error::HttpError;

use crate::app::App;
use crate::limits::NEGATIVE_TTL;

/// The whole router: global routes plus one sub-router per cache at its mount.
pub fn router(app: Arc<App>) -> Router {
    let mut r = Router::new()
        .route("/", get(ui::status))
        .route("/ui/", get(ui::status))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/caches", get(api::caches))
        .route("/api/v1/caches/{cache}/paths/{hash_part}", get(api::path))
        .route(
            "/api/v1/caches/{cache}/attestations",
            axum::routing::post(push::attestations),
        )
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/builders", get(api::builders))
        .route("/api/v1/conflicts", get(api::conflicts))
        .route("/api/v1/peers", get(api::peers))
        .route("/tlog/{cache}/checkpoint", get(tlog::checkpoint))
        .route("/tlog/{cache}/vkey", get(tlog::vkey))
        .route("/tlog/{cache}/tile/{*path}", get(tlog::tile))
        .route("/tlog/{cache}/proof/{index}", get(tlog::proof))
        .route("/tlog/{cache}/signed/{sha256}", get(tlog::signed))
        .route(
            "/witness/add-checkpoint",
            axum::routing::post(witness::add_checkpoint),
        );
    if app.fleet.is_some() {
        r = r.route(
            &format!("{}{{key}}", crate::fleet::RELAY_ROUTE),
            get(replica::relay),
        );
    }
    for (idx, cache) in app.caches.iter().enumerate() {
        let sub = Router::new()
            .route(
                "/{file}",
                get(move |s: State<Arc<App>>, p: Path<String>| narinfo::file(s, idx, p)),
            )
            .route(
                "/nar/{file}",
                get(move |s: State<Arc<App>>, p: Path<String>, h: HeaderMap| {
                    nar::nar(s, idx, p, h)
                })
                .head(move |s: State<Arc<App>>, p: Path<String>| nar::nar_head(s, idx, p)),
            )
            .route(
                "/nar/{compression}/{file}",
                get(
                    move |s: State<Arc<App>>, p: Path<(String, String)>, h: HeaderMap| {
                        nar::nar_compressed(s, idx, p, h)
                    },
                )
                .head(move |s: State<Arc<App>>, p: Path<(String, String)>| {
                    nar::nar_compressed_head(s, idx, p)
                }),
            )
            .route(
                "/log/{drv}",
                get(move |s: State<Arc<App>>, p: Path<String>| log::log(s, idx, p)),
            );
        r = if cache.config.mount.is_empty() {
            r.merge(sub)
        } else {
            r.nest(&cache.config.mount, sub)
        };
    }
    r.fallback(|| async { error::text(StatusCode::NOT_FOUND, "not found\n", Some(NEGATIVE_TTL)) })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            metrics::count,
        ))
        .with_state(app)
}
