//! `GET <mount>/log/<drv>`: a build log, passed through from the first upstream that has it
//! (informational: logs are not attested).
//!
//! `<drv>` must be a derivation file name, `<32 nix32>-<name>.drv` by the store-path rules,
//! checked before any upstream is asked: the name is then one URL segment under each
//! upstream's base (`upstream::urls`), never text spliced into a URL.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use quorate_core::protocol::store_path::StorePath;

use super::error::text;
use crate::app::App;
use crate::limits::NEGATIVE_TTL;

/// `GET <mount>/log/<drv>`.
pub async fn log(State(app): State<Arc<App>>, idx: usize, Path(drv): Path<String>) -> Response {
    let cache = app.caches[idx].clone();
    let drv = match StorePath::from_basename(&cache.config.store_dir, &drv) {
        Ok(path) if path.is_derivation() => path,
        _ => return text(StatusCode::BAD_REQUEST, "malformed derivation name\n", None),
    };
    for up in &cache.config.upstreams {
        match app.upstream.open_log(up, &drv).await {
            Ok(Some(body)) => {
                let mut out = Response::new(Body::from_stream(body));
                out.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                return out;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(upstream = %up.url, "log: {e}"),
        }
    }
    text(
        StatusCode::NOT_FOUND,
        "no upstream has this log\n",
        Some(NEGATIVE_TTL),
    )
}
