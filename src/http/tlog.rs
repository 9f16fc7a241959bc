//! `/tlog/<cache>/...`: the cache's transparency log as static C2SP files (DESIGN §12) —
//! `checkpoint` (the latest signed tree head), `vkey` (the log's verifier key),
//! `tile/<L>/<N>[.p/<W>]` (hash tiles), `tile/entries/<N>[.p/<W>]` (entry bundles) — and
//! `proof/<index>` (a C2SP tlog-proof of one entry under the latest checkpoint) and
//! `signed/<sha256>` (a signed text too large for its attestation entry, named by hash).
//!
//! Tiles are immutable once they exist (a partial tile of width W never changes), so they
//! are served with a year's `Cache-Control`; the checkpoint is not cached. A tile beyond the
//! latest checkpoint's size is 404, as on a static host.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use quorate_core::tlog::checkpoint::Checkpoint;
use quorate_core::tlog::note::SignedNote;
use quorate_core::tlog::proof::TlogProof;
use quorate_core::tlog::tile::{encode_bundle, read_tile, Tile, TilePath, TILE_WIDTH};

use super::error::HttpError;
use crate::app::App;
use crate::served_cache::ServedCache;
use crate::tlog::{with_hashes, LogError};

/// `GET /tlog/{cache}/checkpoint`.
pub async fn checkpoint(State(app): State<Arc<App>>, Path(cache): Path<String>) -> Response {
    let Some(cache) = find(&app, &cache) else {
        return HttpError::not_found("no such cache").into_response();
    };
    match app.db.latest_checkpoint(cache.name()).await {
        Ok(Some(note)) => plain(
            with_cosignatures(&app, &cache, note).await.into_bytes(),
            "no-cache",
        ),
        Ok(None) => HttpError::not_found("the log is empty so far").into_response(),
        Err(e) => unavailable(LogError::from(e)),
    }
}

/// `GET /tlog/{cache}/vkey`.
pub async fn vkey(State(app): State<Arc<App>>, Path(cache): Path<String>) -> Response {
    match find(&app, &cache) {
        Some(cache) => plain(
            format!("{}\n", cache.log.verifier).into_bytes(),
            "public, max-age=3600",
        ),
        None => HttpError::not_found("no such cache").into_response(),
    }
}

/// `GET /tlog/{cache}/tile/{*path}`.
pub async fn tile(
    State(app): State<Arc<App>>,
    Path((cache, path)): Path<(String, String)>,
) -> Response {
    let Some(cache) = find(&app, &cache) else {
        return HttpError::not_found("no such cache").into_response();
    };
    let Ok(parsed) = format!("tile/{path}").parse::<TilePath>() else {
        return HttpError::not_found("not a tile").into_response();
    };
    let size = match size(&app, &cache).await {
        Ok(size) => size,
        Err(e) => return unavailable(e),
    };
    let bytes = match parsed {
        TilePath::Hashes(tile) if covered(&tile, size) => hash_tile(&app, &cache, tile).await,
        TilePath::Entries(tile) if tile.level() == 0 && covered(&tile, size) => {
            entry_bundle(&app, &cache, tile).await
        }
        _ => return HttpError::not_found("no such tile (yet)").into_response(),
    };
    match bytes {
        Ok(bytes) => {
            let mut resp = Response::new(Body::from(bytes));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            resp
        }
        Err(e) => unavailable(e),
    }
}

/// `GET /tlog/{cache}/signed/{sha256}`: a signed text an attestation entry names by hash
/// (too large to sit in the entry). Content-addressed, so immutable.
pub async fn signed(
    State(app): State<Arc<App>>,
    Path((cache, sha256)): Path<(String, String)>,
) -> Response {
    let Some(cache) = find(&app, &cache) else {
        return HttpError::not_found("no such cache").into_response();
    };
    let is_hex = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !is_hex {
        return HttpError::BadRequest(
            "a signed text is named by its SHA-256 in lowercase hex".into(),
        )
        .into_response();
    }
    match app.db.signed_beside(cache.name(), &sha256).await {
        Ok(Some(body)) => plain(body, "public, max-age=31536000, immutable"),
        Ok(None) => HttpError::not_found("no such signed text").into_response(),
        Err(e) => unavailable(e.into()),
    }
}

/// `GET /tlog/{cache}/proof/{index}`.
pub async fn proof(
    State(app): State<Arc<App>>,
    Path((cache, index)): Path<(String, String)>,
) -> Response {
    let Some(cache) = find(&app, &cache) else {
        return HttpError::not_found("no such cache").into_response();
    };
    let Ok(index) = index.parse::<u64>() else {
        return HttpError::BadRequest("the index is a decimal number".into()).into_response();
    };
    let note = match app.db.latest_checkpoint(cache.name()).await {
        Ok(Some(note)) => note,
        Ok(None) => return HttpError::not_found("the log is empty so far").into_response(),
        Err(e) => return unavailable(e.into()),
    };
    let Ok(signed) = SignedNote::parse(note.as_bytes()) else {
        return unavailable(LogError::Inconsistent(
            "stored checkpoint unreadable".into(),
        ));
    };
    let size = signed.text().parse::<Checkpoint>().map_or(0, |c| c.size());
    if index >= size {
        return HttpError::not_found("no such entry (yet)").into_response();
    }
    let mut known = HashMap::new();
    let proved = with_hashes(&app.db, cache.name(), &mut known, |r| {
        TlogProof::prove(index, signed.clone(), r)
    })
    .await;
    match proved {
        Ok(proof) => plain(proof.to_string().into_bytes(), "no-cache"),
        Err(e) => unavailable(e),
    }
}

/// The checkpoint with the witnesses' cosignature lines for its size appended.
async fn with_cosignatures(app: &App, cache: &ServedCache, mut note: String) -> String {
    let size = SignedNote::parse(note.as_bytes())
        .ok()
        .and_then(|n| n.text().parse::<Checkpoint>().ok())
        .map(|c| c.size());
    if let Some(size) = size {
        for line in app
            .db
            .cosignatures(cache.name(), size)
            .await
            .unwrap_or_default()
        {
            note.push_str(&line);
            note.push('\n');
        }
    }
    note
}

fn find(app: &App, name: &str) -> Option<Arc<ServedCache>> {
    app.caches.iter().find(|c| c.name() == name).cloned()
}

/// The size of the latest checkpoint (0 before the first).
async fn size(app: &App, cache: &ServedCache) -> Result<u64, LogError> {
    Ok(app.db.log_size(cache.name()).await?)
}

/// Whether every hash (or entry) of `tile` is in a tree of `size` leaves: its last hash,
/// at level 8L, covers leaves up to `(N·256 + W)·256^L`.
fn covered(tile: &Tile, size: u64) -> bool {
    let shift = 8 * u32::from(tile.level());
    let end = tile
        .index()
        .checked_mul(TILE_WIDTH)
        .and_then(|n| n.checked_add(u64::from(tile.width())));
    match end {
        Some(end) if shift < 64 => end.checked_mul(1 << shift).is_some_and(|n| n <= size),
        _ => false,
    }
}

async fn hash_tile(app: &App, cache: &ServedCache, tile: Tile) -> Result<Vec<u8>, LogError> {
    let mut known = HashMap::new();
    with_hashes(&app.db, cache.name(), &mut known, |r| read_tile(&tile, r)).await
}

async fn entry_bundle(app: &App, cache: &ServedCache, tile: Tile) -> Result<Vec<u8>, LogError> {
    let first = tile.index() * TILE_WIDTH;
    let to = first + u64::from(tile.width());
    let entries = app.db.log_entries(cache.name(), first, to).await?;
    if entries.len() as u64 != to - first {
        return Err(LogError::Inconsistent(format!(
            "entries {first}..{to}: {} in the database",
            entries.len()
        )));
    }
    encode_bundle(&entries).map_err(|e| LogError::Inconsistent(e.to_string()))
}

fn plain(body: Vec<u8>, cache_control: &'static str) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    resp
}

fn unavailable(e: LogError) -> Response {
    HttpError::Unavailable {
        public: "transparency log temporarily unavailable, try again",
        cause: format!("transparency log: {e}"),
    }
    .into_response()
}
