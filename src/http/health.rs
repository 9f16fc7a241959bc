//! `GET /healthz` (the process answers) and `GET /readyz` (it can decide and deliver: the
//! database answers, and so does the object store when NARs live in one).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::{text, HttpError};
use crate::app::App;

/// `GET /healthz`.
pub async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n", None)
}

/// `GET /readyz`.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    if let Err(e) = app.db.ping().await {
        return HttpError::Unavailable {
            public: "database not ready",
            cause: format!("readiness check: database: {e}"),
        }
        .into_response();
    }
    if let Some(objects) = app.fetcher.storage().objects() {
        if let Err(e) = objects.ping().await {
            return HttpError::Unavailable {
                public: "NAR object store not ready",
                cause: format!("readiness check: {}: {e}", objects.url()),
            }
            .into_response();
        }
    }
    text(StatusCode::OK, "ready\n", None)
}
