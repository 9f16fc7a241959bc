//! `GET /healthz` (the process answers) and `GET /readyz` (it can decide: the database
//! answers).

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
    match app.db.ping().await {
        Ok(()) => text(StatusCode::OK, "ready\n", None),
        Err(e) => HttpError::Unavailable {
            public: "database not ready",
            cause: format!("readiness check: database: {e}"),
        }
        .into_response(),
    }
}
