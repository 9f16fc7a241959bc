//! `GET /metrics`: Prometheus' (OpenMetrics) text exposition of [`crate::metrics`], and the
//! middleware that counts every answer by route and status.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app
        .metrics
        .encode(app.fetcher.storage().local_size(), app.outbox.len());
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// Counts every answer in `quorate_http_requests_total{route, status}`.
pub async fn count(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = route_of(request.uri().path());
    let response = next.run(request).await;
    app.metrics.http_request(route, response.status().as_u16());
    response
}

/// A request path's route, from a fixed set (so clients cannot make up label values).
fn route_of(path: &str) -> &'static str {
    if path.ends_with(".narinfo") {
        "narinfo"
    } else if path.contains("/nar/") {
        "nar"
    } else if path.ends_with("/nix-cache-info") {
        "cache_info"
    } else if path.contains("/log/") {
        "log"
    } else if path.starts_with("/api/") && path.ends_with("/attestations") {
        "push"
    } else if path.starts_with("/api/") {
        "api"
    } else if path == "/metrics" {
        "metrics"
    } else if path == "/healthz" || path == "/readyz" {
        "health"
    } else if path == "/" || path.starts_with("/ui/") {
        "ui"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_come_from_a_fixed_set() {
        for (path, route) in [
            ("/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo", "narinfo"),
            (
                "/guix/nar/zstd/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello",
                "nar",
            ),
            ("/nix-cache-info", "cache_info"),
            ("/api/v1/builders", "api"),
            ("/api/v1/caches/nixos/attestations", "push"),
            ("/", "ui"),
            ("/whatever-a-client-sends", "other"),
        ] {
            assert_eq!(route_of(path), route, "{path}");
        }
    }
}
