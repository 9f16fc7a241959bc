//! `GET <mount>/nar/<file>` and `<mount>/nar/<compression>/<file>`: which NAR a URL names is
//! the flavor's business (Nix: `<nix32 NarHash>.nar`; Guix: `<basename>`, `zstd/<basename>`);
//! the bytes always come from [`crate::delivery`], verified. A zstd URL gets the stored zstd
//! copy when the cache keeps one (`nar_compression = "zstd"`), with its Content-Length; else
//! the verified NAR compressed on the fly.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use quorate_core::flavor::{NarEncoding, NarRequest};
use quorate_core::protocol::nar_hash::NarKey;

use super::error::HttpError;
use crate::app::App;
use crate::delivery;
use crate::nar::{zstd_encode, ByteRange};
use crate::resolve::resolve;
use crate::served_cache::{NarEntry, Resolution, ServedCache};

/// `GET <mount>/nar/<file>`; a stored NAR answers a single `Range` with 206.
pub async fn nar(
    State(app): State<Arc<App>>,
    idx: usize,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond(&app, idx, None, &file, Method::Get(range(&headers))).await
}

/// `GET <mount>/nar/<compression>/<file>`.
pub async fn nar_compressed(
    State(app): State<Arc<App>>,
    idx: usize,
    Path((compression, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    respond(
        &app,
        idx,
        Some(&compression),
        &file,
        Method::Get(range(&headers)),
    )
    .await
}

/// The single byte range a request asks for, if any (others are ignored: the whole NAR).
fn range(headers: &HeaderMap) -> Option<ByteRange> {
    ByteRange::parse(headers.get(header::RANGE)?.to_str().ok()?)
}

/// `HEAD <mount>/nar/<file>`: answered from what is known, never by downloading the NAR
/// (`nix copy --to` and existence checks send HEAD).
pub async fn nar_head(
    State(app): State<Arc<App>>,
    idx: usize,
    Path(file): Path<String>,
) -> Response {
    respond(&app, idx, None, &file, Method::Head).await
}

/// `HEAD <mount>/nar/<compression>/<file>`.
pub async fn nar_compressed_head(
    State(app): State<Arc<App>>,
    idx: usize,
    Path((compression, file)): Path<(String, String)>,
) -> Response {
    respond(&app, idx, Some(&compression), &file, Method::Head).await
}

/// A NAR's bytes as they stream.
type NarStream = futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// GET delivers the bytes (all, or a range); HEAD only says whether and how long.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get(Option<ByteRange>),
    Head,
}

async fn respond(
    app: &Arc<App>,
    idx: usize,
    compression: Option<&str>,
    file: &str,
    method: Method,
) -> Response {
    let cache = app.caches[idx].clone();
    let (key, known, encoding) = match named(app, &cache, compression, file).await {
        Ok(named) => named,
        Err(e) => return e.into_response(),
    };
    if encoding == NarEncoding::Zstd {
        match stored_copy(app, &cache, key, method).await {
            Ok(Some(resp)) => return resp,
            Ok(None) => {}
            Err(e) => return e.into_response(),
        }
    }
    let result = match method {
        Method::Get(range) => {
            // Ranges are of the NAR itself: a NAR sent compressed is sent whole.
            let range = range.filter(|_| encoding == NarEncoding::Identity);
            let body = match delivery::open(app, &cache, key, known, range).await {
                Ok(body) => body,
                Err(e) => return HttpError::from(e).into_response(),
            };
            let stream = match first_chunk_held(body.stream).await {
                Ok(stream) => stream,
                Err(e) => return e.into_response(),
            };
            let counted = counted(app.clone(), cache.name().to_owned(), stream);
            Ok(match body.range {
                Some(part) => partial_response(counted, part, body.size),
                None => nar_response(Some(counted), body.size, encoding),
            })
        }
        Method::Head => delivery::probe(app, &cache, key, known)
            .await
            .map(|size| nar_response(None, size, encoding)),
    };
    result.unwrap_or_else(|e| HttpError::from(e).into_response())
}

/// The NAR a URL names: its key, its entry when a resolution found it, and how to send it.
/// A NAR named by store path is served only while the path's decision is positive and
/// names exactly that basename.
async fn named(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    compression: Option<&str>,
    file: &str,
) -> Result<(NarKey, Option<Arc<NarEntry>>, NarEncoding), HttpError> {
    let (hash_part, basename, encoding) = match cache.front.nar_request(compression, file)? {
        // `<key>.nar.zst` exists only where stored copies are offered.
        NarRequest::ByKey { encoding, .. }
            if encoding == NarEncoding::Zstd && !delivery::keeps_copies(app, cache) =>
        {
            return Err(HttpError::not_found("not found"))
        }
        NarRequest::ByKey { key, encoding } => return Ok((key, None, encoding)),
        NarRequest::ByStorePath {
            hash_part,
            basename,
            encoding,
        } => (hash_part, basename, encoding),
    };
    let resolution = resolve(app, cache, &hash_part).await?;
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
    Ok((agreed.content.nar_hash.key(), Some(entry), encoding))
}

/// The stored zstd copy of NAR `key` (its bytes for GET, its length for HEAD), if the cache
/// keeps one; `None`: compress on the fly instead.
async fn stored_copy(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    key: NarKey,
    method: Method,
) -> Result<Option<Response>, HttpError> {
    if method == Method::Head {
        let copy = delivery::stored_copy(app, cache, key);
        return Ok(copy.map(|c| sized_response(None, c.file_size)));
    }
    let Some((stream, size)) = delivery::open_compressed(app, cache, key).await? else {
        return Ok(None);
    };
    let stream = first_chunk_held(stream).await?;
    let counted = counted(app.clone(), cache.name().to_owned(), stream);
    Ok(Some(sized_response(Some(counted), size)))
}

/// `bytes` once its first chunk has arrived: a NAR that fails before its first byte (the
/// upstream's answer rejected at once, the bucket unreadable) is a clean 502 rather than a
/// 200 whose connection closes, perhaps before its head was flushed. Later failures can
/// only break the transfer off. The head waits for no more than it would have anyway.
async fn first_chunk_held(mut bytes: NarStream) -> Result<NarStream, HttpError> {
    match bytes.next().await {
        None => Ok(futures_util::stream::empty().boxed()),
        Some(Ok(first)) => Ok(futures_util::stream::once(async { Ok(first) })
            .chain(bytes)
            .boxed()),
        Some(Err(e)) => Err(HttpError::BadGateway {
            public: "the NAR could not be delivered verified; try again later",
            cause: format!("NAR failed before its first byte: {e}"),
        }),
    }
}

/// `bytes`, each chunk counted in `quorate_nar_served_bytes_total{cache}` as it goes out.
fn counted(app: Arc<App>, cache: String, bytes: NarStream) -> NarStream {
    bytes
        .inspect_ok(move |chunk| app.metrics.nar_served(&cache, chunk.len() as u64))
        .boxed()
}

/// A 206 answer: bytes `part` of a `size`-byte NAR.
fn partial_response(bytes: NarStream, part: std::ops::Range<u64>, size: u64) -> Response {
    let mut resp = Response::new(Body::from_stream(bytes));
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-nix-nar"),
    );
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(part.end - part.start),
    );
    let content_range = format!("bytes {}-{}/{size}", part.start, part.end.saturating_sub(1));
    if let Ok(v) = HeaderValue::from_str(&content_range) {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// An answer of `size` bytes sent as they are (`None` for HEAD): a stored file.
fn sized_response(bytes: Option<NarStream>, size: u64) -> Response {
    nar_response(bytes, size, NarEncoding::Identity)
}

/// A NAR answer: the NAR's bytes (`None` for HEAD) of NarSize `size`, sent as `encoding`.
fn nar_response(bytes: Option<NarStream>, size: u64, encoding: NarEncoding) -> Response {
    let (body, size) = match (encoding, bytes) {
        (NarEncoding::Identity, Some(bytes)) => (Body::from_stream(bytes), Some(size)),
        (NarEncoding::Identity, None) => (Body::empty(), Some(size)),
        // The compressed length is unknown until compressed: no Content-Length.
        (NarEncoding::Zstd, Some(bytes)) => (Body::from_stream(zstd_encode(bytes)), None),
        (NarEncoding::Zstd, None) => (Body::empty(), None),
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
