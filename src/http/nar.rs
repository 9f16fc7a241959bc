//! `GET <mount>/nar/<file>` and `<mount>/nar/<compression>/<file>`: which NAR a URL names is
//! the flavor's business (Nix: `<nix32 NarHash>.nar`; Guix: `<basename>`, `zstd/<basename>`);
//! the bytes always come from [`crate::delivery`], verified.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use quorate_core::flavor::{NarEncoding, NarRequest};
use quorate_core::protocol::store_path::HashPart;

use super::error::HttpError;
use crate::app::App;
use crate::delivery::{self, NarBody};
use crate::nar::zstd_encode;
use crate::resolve::resolve;
use crate::served_cache::{NarEntry, Resolution, ServedCache};

/// `GET <mount>/nar/<file>`.
pub async fn nar(State(app): State<Arc<App>>, idx: usize, Path(file): Path<String>) -> Response {
    respond(&app, idx, None, &file).await
}

/// `GET <mount>/nar/<compression>/<file>`.
pub async fn nar_compressed(
    State(app): State<Arc<App>>,
    idx: usize,
    Path((compression, file)): Path<(String, String)>,
) -> Response {
    respond(&app, idx, Some(&compression), &file).await
}

async fn respond(app: &Arc<App>, idx: usize, compression: Option<&str>, file: &str) -> Response {
    let cache = app.caches[idx].clone();
    let result = match cache.front.nar_request(compression, file) {
        Ok(NarRequest::ByKey(key)) => delivery::open(app, &cache, key, None)
            .await
            .map(|body| nar_response(body, NarEncoding::Identity))
            .map_err(HttpError::from),
        Ok(NarRequest::ByStorePath {
            hash_part,
            basename,
            encoding,
        }) => by_store_path(app, &cache, &hash_part, &basename)
            .await
            .map(|body| nar_response(body, encoding)),
        Err(e) => Err(e.into()),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The NAR of a store path, while its decision is positive and names exactly `basename`.
async fn by_store_path(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    hash_part: &HashPart,
    basename: &str,
) -> Result<NarBody, HttpError> {
    let resolution = resolve(app, cache, hash_part).await?;
    let Resolution::Served { agreed, .. } = &*resolution else {
        return Err(HttpError::not_found("not served"));
    };
    if agreed.content.basename() != basename {
        return Err(HttpError::not_found("not served"));
    }
    let entry = Arc::new(NarEntry {
        content: agreed.content.clone(),
        sources: agreed.sources.clone(),
    });
    let key = agreed.content.nar_hash.key();
    Ok(delivery::open(app, cache, key, Some(entry)).await?)
}

fn nar_response(body: NarBody, encoding: NarEncoding) -> Response {
    let (body, size) = match encoding {
        NarEncoding::Identity => (Body::from_stream(body.stream), Some(body.size)),
        // The compressed length is unknown until compressed: no Content-Length.
        NarEncoding::Zstd => (Body::from_stream(zstd_encode(body.stream)), None),
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    // No Content-Encoding, ever: compression is announced only by the narinfo.
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-nix-nar"),
    );
    if let Some(size) = size {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    resp
}
