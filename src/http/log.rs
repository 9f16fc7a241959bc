//! `GET <mount>/log/<drv>`: a build log, passed through from the first upstream that has it
//! (informational: logs are not attested).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use super::error::text;
use crate::app::App;
use crate::limits::NEGATIVE_TTL;

/// `GET <mount>/log/<drv>`.
pub async fn log(State(app): State<Arc<App>>, idx: usize, Path(drv): Path<String>) -> Response {
    let cache = app.caches[idx].clone();
    if drv.is_empty() || drv.contains('/') || drv.starts_with('.') {
        return text(StatusCode::BAD_REQUEST, "malformed derivation name\n", None);
    }
    for up in &cache.config.upstreams {
        match app
            .upstream
            .open_log(&up.url, up.bearer_token.as_deref(), &drv)
            .await
        {
            Ok(Some(resp)) => {
                let mut out = Response::new(Body::from_stream(resp.bytes_stream()));
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
