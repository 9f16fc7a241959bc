//! Routes of one served cache: `nix-cache-info`, `<hash>.narinfo`, `nar/<key>.nar`,
//! `log/<drv>`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::io;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};

use crate::clock::now_ms;
use crate::config::{Flavor, UpstreamConfig};
use crate::db::Event;
use crate::http::text;
use crate::nar::{zstd_encode, Compression, Expected, NarError};
use crate::resolve::{resolve, Resolution};
use crate::server::{App, CacheState, NarEntry, NEGATIVE_TTL};
use crate::upstream::{UpstreamClient, UpstreamError};
use quorate_core::attestation::NarSource;
use quorate_core::protocol::narinfo::NarHash;
use quorate_core::protocol::store_path::{is_valid_hash_part, HASH_PART_LEN};

/// `Cache-Control` of a served narinfo: clients may keep it a day (Guix honours it).
const POSITIVE_MAX_AGE: &str = "max-age=86400";

/// `GET|HEAD <mount>/<file>`: `nix-cache-info` or `<hash>.narinfo`.
pub async fn file(State(app): State<Arc<App>>, idx: usize, Path(file): Path<String>) -> Response {
    let cache = app.caches[idx].clone();
    if file == "nix-cache-info" {
        let body = format!(
            "StoreDir: {}\nWantMassQuery: 1\nPriority: {}\n",
            cache.config.store_dir, cache.config.priority
        );
        return text(StatusCode::OK, &body, Some(3600));
    }
    let Some(hash_part) = file.strip_suffix(".narinfo") else {
        return text(
            StatusCode::NOT_FOUND,
            "not found\n",
            Some(NEGATIVE_TTL.as_secs()),
        );
    };
    if !is_valid_hash_part(hash_part) {
        return text(
            StatusCode::BAD_REQUEST,
            "malformed store path hash part: expected 32 nix32 characters\n",
            None,
        );
    }
    app.metrics.narinfo_requests.inc();
    match resolve(&app, &cache, hash_part).await {
        Ok(res) => match &*res {
            Resolution::Served { body, .. } => {
                let mut resp = Response::new(Body::from(body.clone()));
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/x-nix-narinfo"),
                );
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(POSITIVE_MAX_AGE),
                );
                resp
            }
            Resolution::NotServed { reason } => text(
                StatusCode::NOT_FOUND,
                &format!("{reason}\n"),
                Some(NEGATIVE_TTL.as_secs()),
            ),
        },
        Err(e) => {
            tracing::error!(cache = %cache.config.name, %hash_part, "{e}");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily unable to decide, try again\n",
                None,
            )
        }
    }
}

/// `GET <mount>/nar/<file>`. Nix: `<nix32 NarHash>.nar`; Guix: `<store path basename>`
/// (uncompressed). Only verified bytes are served.
pub async fn nar(State(app): State<Arc<App>>, idx: usize, Path(file): Path<String>) -> Response {
    let cache = app.caches[idx].clone();
    match cache.config.flavor {
        Flavor::Nix => nix_nar(&app, &cache, &file).await,
        Flavor::Guix => guix_nar(&app, &cache, "none", &file).await,
    }
}

/// `GET <mount>/nar/<compression>/<basename>` (Guix layout): `zstd` or `none`.
pub async fn nar_compressed(
    State(app): State<Arc<App>>,
    idx: usize,
    Path((compression, file)): Path<(String, String)>,
) -> Response {
    let cache = app.caches[idx].clone();
    match cache.config.flavor {
        Flavor::Guix => guix_nar(&app, &cache, &compression, &file).await,
        Flavor::Nix => text(StatusCode::NOT_FOUND, "not found\n", None),
    }
}

async fn nix_nar(app: &Arc<App>, cache: &Arc<CacheState>, file: &str) -> Response {
    let Some(key) = file.strip_suffix(".nar") else {
        return text(StatusCode::NOT_FOUND, "not found\n", None);
    };
    if crate::nar::validate_key(key).is_err() {
        return text(StatusCode::BAD_REQUEST, "malformed NAR name\n", None);
    }
    match verified_nar(app, cache, key, None).await {
        Ok((body, size)) => nar_response(Body::from_stream(body), Some(size)),
        Err(resp) => resp,
    }
}

async fn guix_nar(
    app: &Arc<App>,
    cache: &Arc<CacheState>,
    compression: &str,
    basename: &str,
) -> Response {
    if !matches!(compression, "zstd" | "none") {
        return text(StatusCode::NOT_FOUND, "compression not offered\n", None);
    }
    let hash_part = basename.get(..HASH_PART_LEN).unwrap_or_default();
    if !is_valid_hash_part(hash_part) || basename.as_bytes().get(HASH_PART_LEN) != Some(&b'-') {
        return text(StatusCode::BAD_REQUEST, "malformed store path name\n", None);
    }
    let res = match resolve(app, cache, hash_part).await {
        Ok(res) => res,
        Err(e) => {
            tracing::error!(cache = %cache.config.name, %hash_part, "{e}");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily unavailable\n",
                None,
            );
        }
    };
    let Resolution::Served { agreed, .. } = &*res else {
        return text(
            StatusCode::NOT_FOUND,
            "not served\n",
            Some(NEGATIVE_TTL.as_secs()),
        );
    };
    if agreed.content.store_path.rsplit('/').next() != Some(basename) {
        return text(
            StatusCode::NOT_FOUND,
            "not served\n",
            Some(NEGATIVE_TTL.as_secs()),
        );
    }
    let Ok(nar_hash) = NarHash::parse(&agreed.content.nar_hash) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad recorded hash\n",
            None,
        );
    };
    let entry = Arc::new(NarEntry {
        content: agreed.content.clone(),
        sources: agreed.sources.clone(),
    });
    match verified_nar(app, cache, &nar_hash.to_nix32(), Some(entry)).await {
        Ok((body, _)) if compression == "zstd" => {
            nar_response(Body::from_stream(zstd_encode(body)), None)
        }
        Ok((body, size)) => nar_response(Body::from_stream(body), Some(size)),
        Err(resp) => resp,
    }
}

/// The NAR `key` as a stream that only ever completes with verified bytes: from the local
/// store, or from a (shared) verified upstream fetch. `Err` is the HTTP answer to give.
async fn verified_nar(
    app: &Arc<App>,
    cache: &Arc<CacheState>,
    key: &str,
    known: Option<Arc<NarEntry>>,
) -> Result<(BoxStream<'static, io::Result<Bytes>>, u64), Response> {
    let store = app.fetcher.store().clone();
    // Warm: the local store holds only verified bytes.
    match store.open_nar(key).await {
        Ok(Some((file, size))) => {
            app.metrics.nar_local.inc();
            return Ok((
                tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).boxed(),
                size,
            ));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("reading local NAR {key}: {e}"),
    }
    let entry = match known {
        Some(e) => e,
        None => match nar_entry(app, cache, key).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Err(text(
                    StatusCode::NOT_FOUND,
                    "no accepted store path has this NAR\n",
                    Some(60),
                ))
            }
            Err(e) => {
                tracing::error!("{e}");
                return Err(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily unavailable\n",
                    None,
                ));
            }
        },
    };
    let Ok(nar_hash) = NarHash::parse(&entry.content.nar_hash) else {
        return Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad recorded hash\n",
            None,
        ));
    };
    let Some((source, compression, up)) = pick_source(app, cache, key, &entry.sources) else {
        return Err(text(
            StatusCode::NOT_FOUND,
            "no upstream offers this NAR\n",
            Some(60),
        ));
    };
    let url = match UpstreamClient::nar_url(&up.url, &source.url) {
        Ok(u) => u,
        Err(e) => return Err(text(StatusCode::BAD_GATEWAY, &format!("{e}\n"), None)),
    };
    app.metrics.nar_upstream.inc();
    let expected = Expected {
        nar_hash: *nar_hash.digest(),
        nar_size: entry.content.nar_size,
    };
    // The source future runs only if no fetch of this NAR is already in flight; it marks us
    // as the leader so exactly one watcher records the outcome.
    let leader = Arc::new(AtomicBool::new(false));
    let source_future = {
        let (client, leader) = (app.upstream.clone(), leader.clone());
        let base = up.url.clone();
        let bearer = up.bearer_token.clone();
        async move {
            leader.store(true, Ordering::SeqCst);
            client.open_nar(&base, bearer.as_deref(), &url).await
        }
        .boxed()
    };
    let inflight = app
        .fetcher
        .fetch_or_join(expected, compression, source_future);
    {
        let (app, cache, key, upstream) =
            (app.clone(), cache.clone(), key.to_string(), up.url.clone());
        let outcome = inflight.outcome();
        let store_path = entry.content.store_path.clone();
        let size = entry.content.nar_size;
        tokio::spawn(async move {
            let result = outcome.await;
            if !leader.load(Ordering::SeqCst) {
                return;
            }
            record_fetch(&app, &cache, &key, &upstream, &store_path, size, result).await;
        });
    }
    Ok((inflight.body().boxed(), entry.content.nar_size))
}

async fn record_fetch(
    app: &Arc<App>,
    cache: &Arc<CacheState>,
    key: &str,
    upstream: &str,
    store_path: &str,
    size: u64,
    result: Result<(), NarError>,
) {
    match result {
        Ok(()) => {
            app.metrics.nar_bytes_fetched.add(size);
            let location = format!("nar/{}/{key}.nar", &key[..2]);
            if let Err(e) = app
                .db
                .record_nar_object(&format!("sha256:{key}"), size, &location)
                .await
            {
                tracing::warn!("recording NAR object {key}: {e}");
            }
            // Eviction happens in the store; the database's NAR objects follow it here.
            for gone in app.fetcher.store().take_evicted() {
                if let Err(e) = app.db.remove_nar_object(&format!("sha256:{gone}")).await {
                    tracing::warn!("forgetting evicted NAR object {gone}: {e}");
                }
            }
        }
        Err(e) => {
            let kind = if matches!(e, NarError::Source(_)) {
                "upstream_failure"
            } else {
                app.metrics.nar_mismatches.inc();
                "mismatch"
            };
            tracing::warn!(cache = %cache.config.name, %upstream, %store_path, "NAR from upstream rejected: {e}");
            cache
                .bad_sources
                .insert((key.to_string(), upstream.to_string()), ())
                .await;
            let _ = app
                .db
                .record_event(&Event {
                    cache: Some(cache.config.name.clone()),
                    kind: kind.into(),
                    store_path: Some(store_path.to_string()),
                    upstream: Some(upstream.to_string()),
                    detail: e.to_string(),
                    at: now_ms(),
                })
                .await;
        }
    }
}

fn nar_response(body: Body, size: Option<u64>) -> Response {
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

/// What is known about the NAR `key`: memory first, then the database.
async fn nar_entry(
    app: &Arc<App>,
    cache: &Arc<CacheState>,
    key: &str,
) -> Result<Option<Arc<NarEntry>>, String> {
    if let Some(e) = cache.nars.get(key).await {
        return Ok(Some(e));
    }
    let nar_hash = format!("sha256:{key}");
    let Some(decision) = app
        .db
        .accepted_decision_for_nar(&cache.config.name, &nar_hash)
        .await
        .map_err(|e| format!("database: {e}"))?
    else {
        return Ok(None);
    };
    let Some(content) = decision.content else {
        return Ok(None);
    };
    let sources = app
        .db
        .nar_sources(&cache.config.name, &nar_hash)
        .await
        .map_err(|e| format!("database: {e}"))?;
    let entry = Arc::new(NarEntry { content, sources });
    cache.nars.insert(key.to_string(), entry.clone()).await;
    Ok(Some(entry))
}

/// Prefer sources that have not delivered bad bytes for this NAR, then configured upstream
/// priority, then health (failures, latency). Sources of removed upstreams, and in
/// compressions quorate cannot decode, are skipped.
fn pick_source(
    app: &Arc<App>,
    cache: &Arc<CacheState>,
    key: &str,
    sources: &[NarSource],
) -> Option<(NarSource, Compression, UpstreamConfig)> {
    sources
        .iter()
        .filter_map(|s| {
            let up = cache
                .config
                .upstreams
                .iter()
                .find(|u| u.url == s.upstream)?;
            let compression = s.compression.parse::<Compression>().ok()?;
            let bad = cache
                .bad_sources
                .contains_key(&(key.to_string(), s.upstream.clone()));
            let h = app.upstream.health(&s.upstream);
            let rank = (
                bad,
                h.consecutive_failures.min(3),
                up.priority,
                h.latency_ms as u64,
            );
            Some((rank, (s.clone(), compression, up.clone())))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, picked)| picked)
}

/// `GET <mount>/log/<drv>`: passed through from the first upstream that has it.
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
            Err(UpstreamError::Timeout { .. }) | Err(_) => {}
        }
    }
    text(
        StatusCode::NOT_FOUND,
        "no upstream has this log\n",
        Some(60),
    )
    .into_response()
}
