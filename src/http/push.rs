//! `POST /api/v1/caches/{cache}/attestations`: signed narinfos pushed by a builder that
//! hosts no cache (DESIGN §13; the work is [`crate::pushed`]'s).
//!
//! The body is one or more narinfos of the cache's flavor separated by blank lines, with
//! `Content-Type: text/x-nix-narinfo` (`application/x-nix-narinfo` is taken too). Answers:
//!
//! | status | when                                                        | body |
//! |--------|-------------------------------------------------------------|------|
//! | 200    | the body was read; each narinfo accepted or rejected       | JSON, one status per narinfo |
//! | 400    | wrong content type, not UTF-8, no narinfo, one unreadable  | the reason; nothing recorded |
//! | 404    | no such cache                                               | |
//! | 408    | the body took longer than [`PUSH_BODY_DEADLINE`] to arrive  | |
//! | 413    | over [`MAX_PUSH_BODY_BYTES`] or too many narinfos at once   | nothing recorded |
//! | 429    | over the client's or a key's rate (`Retry-After` seconds)   | nothing recorded |
//! | 503    | the database could not record them                          | nothing recorded; retry |
//!
//! ```json
//! {"cache": "nixos", "accepted": 1, "rejected": 1, "narinfos": [
//!   {"store_path": "/nix/store/…-hello-1", "status": "accepted", "builders": ["rebuilder"]},
//!   {"store_path": "/nix/store/…-app-1", "status": "rejected", "error": "unknown_key",
//!    "reason": "signed only by keys no builder of this cache holds: stranger-1"}]}
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use super::error::{text, HttpError};
use crate::app::App;
use crate::limits::{MAX_PUSH_BODY_BYTES, PUSH_BODY_DEADLINE};
use crate::pushed::{self, PushError};

/// The media types a pushed body may have (parameters such as `charset` aside).
const NARINFO_TYPES: [&str; 2] = ["text/x-nix-narinfo", "application/x-nix-narinfo"];

/// `POST /api/v1/caches/{cache}/attestations`.
pub async fn attestations(
    State(app): State<Arc<App>>,
    Path(cache): Path<String>,
    request: Request,
) -> Response {
    let Some(served) = app.caches.iter().find(|c| c.name() == cache) else {
        return HttpError::not_found("no such cache").into_response();
    };
    // serve.rs puts the peer's address on every request; a router driven some other way
    // counts all its clients as one.
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let media_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if !media_type.is_some_and(|t| NARINFO_TYPES.contains(&t.as_str())) {
        return bad_request("Content-Type must be text/x-nix-narinfo");
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PUSH_BODY_BYTES as u64) {
        return refused(PushError::BodyTooLarge);
    }
    let reading = Limited::new(request.into_body(), MAX_PUSH_BODY_BYTES).collect();
    let bytes = match tokio::time::timeout(PUSH_BODY_DEADLINE, reading).await {
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time\n",
                None,
            )
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return refused(PushError::BodyTooLarge)
        }
        Ok(Err(e)) => return bad_request(&format!("reading the body: {e}")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let Ok(body) = String::from_utf8(bytes.to_vec()) else {
        return bad_request("the body is not UTF-8 text");
    };
    match pushed::receive(&app, served, client, body).await {
        Ok(statuses) => {
            let accepted = statuses.iter().filter(|s| s.status == "accepted").count();
            Json(json!({
                "cache": served.name(),
                "accepted": accepted,
                "rejected": statuses.len() - accepted,
                "narinfos": statuses,
            }))
            .into_response()
        }
        Err(e) => refused(e),
    }
}

fn bad_request(reason: &str) -> Response {
    HttpError::BadRequest(reason.to_owned()).into_response()
}

/// The answer to a push refused as a whole.
fn refused(e: PushError) -> Response {
    match e {
        PushError::Malformed(reason) => bad_request(&reason),
        PushError::BodyTooLarge | PushError::TooMany { .. } => {
            text(StatusCode::PAYLOAD_TOO_LARGE, &format!("{e}\n"), None)
        }
        PushError::RateLimited { retry_after, .. } => {
            let mut resp = text(StatusCode::TOO_MANY_REQUESTS, &format!("{e}\n"), None);
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        PushError::Database(_) | PushError::Interrupted(_) => HttpError::Unavailable {
            public: "could not record the attestations, try again",
            cause: format!("pushed attestations: {e}"),
        }
        .into_response(),
    }
}
