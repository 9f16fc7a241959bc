//! `GET|HEAD <mount>/nix-cache-info` and `<mount>/<hash>.narinfo`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use quorate_core::attestation::Agreed;
use quorate_core::protocol::store_path::HashPart;

use super::error::{text, HttpError};
use crate::app::App;
use crate::delivery;
use crate::limits::{CACHE_INFO_MAX_AGE, NARINFO_MAX_AGE, UNCOMPRESSED_NARINFO_MAX_AGE};
use crate::resolve::resolve;
use crate::served_cache::{Resolution, ServedCache};

/// `GET|HEAD <mount>/<file>`: `nix-cache-info` or `<hash>.narinfo`.
pub async fn file(State(app): State<Arc<App>>, idx: usize, Path(file): Path<String>) -> Response {
    let cache = app.caches[idx].clone();
    if file == "nix-cache-info" {
        return cache_info(&cache);
    }
    match narinfo(&app, &cache, &file).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

fn cache_info(cache: &ServedCache) -> Response {
    let body = format!(
        "StoreDir: {}\nWantMassQuery: 1\nPriority: {}\n",
        cache.config.store_dir, cache.config.priority
    );
    text(StatusCode::OK, &body, Some(CACHE_INFO_MAX_AGE))
}

async fn narinfo(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    file: &str,
) -> Result<Response, HttpError> {
    let hash_part: HashPart = file
        .strip_suffix(".narinfo")
        .ok_or_else(|| HttpError::not_found("not found"))?
        .parse()
        .map_err(|_| {
            HttpError::BadRequest(
                "malformed store path hash part: expected 32 nix32 characters".into(),
            )
        })?;
    app.metrics.narinfo_request(cache.name());
    match &*resolve(app, cache, &hash_part).await? {
        Resolution::Served {
            body,
            compressed_body,
            agreed,
        } => {
            let log_index = log_index(app, cache, &hash_part).await;
            let (body, max_age) = match compressed(app, cache, agreed, compressed_body) {
                Some(body) => (body, NARINFO_MAX_AGE),
                None if delivery::keeps_copies(app, cache) => {
                    (body.clone(), UNCOMPRESSED_NARINFO_MAX_AGE)
                }
                None => (body.clone(), NARINFO_MAX_AGE),
            };
            Ok(served(body, log_index, max_age))
        }
        Resolution::NotServed { reason } => Err(HttpError::not_found(reason.clone())),
    }
}

/// The log index of the path's decision, once the log holds it: memory, else the database
/// (a decision is logged within about a second; "not yet" is remembered for
/// [`crate::limits::LOG_INDEX_RETRY`], so the database is not asked on every request).
async fn log_index(app: &App, cache: &ServedCache, hash_part: &HashPart) -> Option<u64> {
    if let Some(known) = cache.log_indexes.get(hash_part).await {
        return known;
    }
    let found = app
        .db
        .decision_log_index(cache.name(), hash_part.as_str())
        .await
        .ok()?;
    cache.log_indexes.insert(hash_part.clone(), found).await;
    found
}

/// The narinfo advertising the NAR's stored zstd copy, once the copy exists (rendered once,
/// then kept with the answer). Before that `None`, and the copy is set to be made if the
/// NAR is stored: no client waits for compression, it gets the uncompressed form meanwhile.
fn compressed(
    app: &App,
    cache: &ServedCache,
    agreed: &Agreed,
    compressed_body: &OnceLock<Bytes>,
) -> Option<Bytes> {
    if let Some(body) = compressed_body.get() {
        return Some(body.clone());
    }
    let key = agreed.content.nar_hash.key();
    let Some(copy) = delivery::stored_copy(app, cache, key) else {
        delivery::compress_later(app, cache, key);
        return None;
    };
    match cache.front.render(agreed, Some(&copy)) {
        Ok(text) => Some(compressed_body.get_or_init(|| text.into()).clone()),
        Err(e) => {
            tracing::warn!(cache = %cache.name(), %key, "cannot render the zstd narinfo: {e}");
            None
        }
    }
}

fn served(body: Bytes, log_index: Option<u64>, max_age: Duration) -> Response {
    let len = body.len();
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/x-nix-narinfo"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(i) = log_index {
        h.insert("quorate-log-index", HeaderValue::from(i));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("max-age={}", max_age.as_secs())) {
        h.insert(header::CACHE_CONTROL, v);
    }
    resp
}
