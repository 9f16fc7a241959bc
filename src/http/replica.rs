//! `GET /_quorate/replica/nar/<nix32 NarHash>`: the internal route another replica of the
//! set relays a NAR from while this one fetches it for the whole set ([`crate::fleet`]).
//!
//! Only for the set: it answers `401` without `Authorization: Bearer <[replica] secret>`
//! (and `404` on a process that is not a replica). It streams only a fetch from upstreams
//! in flight here, as [`crate::nar::Inflight::body`] does for a client: the last byte
//! follows verification, a failure ends the body in an error. Anything else is `404`: the
//! asking replica then looks in the storage, or waits.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use quorate_core::protocol::nar_hash::NarKey;

use super::error::{text, HttpError};
use crate::app::App;

/// `GET /_quorate/replica/nar/{key}`.
pub async fn relay(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(fleet) = &app.fleet else {
        return HttpError::not_found("not a replica").into_response();
    };
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if !fleet.authorized(authorization) {
        tracing::warn!("refused an internal replica request without the set's secret");
        return text(StatusCode::UNAUTHORIZED, "unauthorized\n", None);
    }
    let Ok(key) = key.parse::<NarKey>() else {
        return HttpError::BadRequest("not a NAR key".into()).into_response();
    };
    let Some(inflight) = app.fetcher.running(&key).filter(|f| !f.is_relay()) else {
        return text(StatusCode::NOT_FOUND, "not in flight here\n", None);
    };
    let size = inflight.expected().nar_size;
    let mut resp = Response::new(Body::from_stream(inflight.body().boxed()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-nix-nar"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    resp
}
