//! `POST /witness/add-checkpoint`: this quorate as a witness of other logs (C2SP
//! `tlog-witness`, DESIGN §12). The body is `old <size>`, the consistency proof from that
//! size (one base64 hash per line), a blank line, and the log's signed checkpoint:
//!
//! ```text
//! old 12
//! 2B0xXPRSGhfz+wsIPwy0oQPdYbJ6cFQPjK3qlKzcN5E=
//!
//! cache.lan/tlog/nixos
//! 15
//! …root…
//!
//! — cache.lan/tlog/nixos Az3g…
//! ```
//!
//! The witness cosigns only a checkpoint signed by a log it is configured for (404 for an
//! unknown origin, 403 for a bad signature), whose `old` is the size it cosigned last (else
//! 409 with that size as `text/x.tlog.size`), and that a valid consistency proof joins to
//! what it cosigned before (else 422). It then remembers the new checkpoint and answers its
//! `cosignature/v1` line. It never cosigns two histories of one log.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quorate_core::tlog::checkpoint::Checkpoint;
use quorate_core::tlog::merkle::{verify_consistency, Hash};
use quorate_core::tlog::note::NoteVerifier;

use super::error::{text, HttpError};
use crate::app::App;
use crate::clock::now_ms;

/// The most a request body may hold (a checkpoint note and 64 proof hashes fit easily).
const MAX_BODY: usize = 64 * 1024;

/// `POST /witness/add-checkpoint`.
pub async fn add_checkpoint(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let Some(witness) = &app.witness else {
        return HttpError::not_found("not a witness").into_response();
    };
    if body.len() > MAX_BODY {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "too large\n", None);
    }
    let Some((old, proof, note)) = parse(&body) else {
        return HttpError::BadRequest("malformed add-checkpoint request".into()).into_response();
    };
    let origin = std::str::from_utf8(note)
        .ok()
        .and_then(|t| t.lines().next())
        .unwrap_or("");
    let Some(vkey) = witness.logs.iter().find(|k| k.name() == origin) else {
        return HttpError::not_found("not a log this witness follows").into_response();
    };
    let checkpoint = match Checkpoint::open(note, origin, vkey) {
        Ok((c, _)) => c,
        Err(e) => return text(StatusCode::FORBIDDEN, &format!("{e}\n"), None),
    };
    let before = match app.db.witnessed(origin).await {
        Ok(b) => b,
        Err(e) => return unavailable(e.to_string()),
    };
    let (known_size, known) = match &before {
        Some((size, note)) => (*size, Some(note)),
        None => (0, None),
    };
    if old != known_size {
        return size_conflict(known_size);
    }
    if let Some(known) = known {
        let Ok((previous, _)) = Checkpoint::open(known.as_bytes(), origin, vkey) else {
            return unavailable("the stored checkpoint no longer opens".into());
        };
        if checkpoint.size() < previous.size() {
            return HttpError::BadRequest("the checkpoint is older than the one cosigned".into())
                .into_response();
        }
        let consistent = verify_consistency(
            &proof,
            previous.size(),
            previous.root(),
            checkpoint.size(),
            checkpoint.root(),
        );
        if let Err(e) = consistent {
            tracing::warn!(%origin, "refusing to cosign an inconsistent checkpoint: {e}");
            return text(StatusCode::UNPROCESSABLE_ENTITY, &format!("{e}\n"), None);
        }
    } else if !proof.is_empty() {
        return HttpError::BadRequest("a first checkpoint comes with no proof".into())
            .into_response();
    }
    let note_text = String::from_utf8_lossy(note).into_owned();
    match app
        .db
        .witness_advance(origin, known_size, checkpoint.size(), &note_text, now_ms())
        .await
    {
        Ok(true) => {}
        Ok(false) => return size_conflict(known_size),
        Err(e) => return unavailable(e.to_string()),
    }
    let now = (now_ms().max(0) / 1000) as u64;
    match witness.key.cosign(&checkpoint, now) {
        Ok(line) => text(StatusCode::OK, &format!("{line}\n"), None),
        Err(e) => unavailable(e.to_string()),
    }
}

/// `old N`, the proof hashes, and the note after the blank line.
fn parse(body: &[u8]) -> Option<(u64, Vec<Hash>, &[u8])> {
    let split = body.windows(2).position(|w| w == b"\n\n")?;
    let (head, note) = (
        std::str::from_utf8(&body[..split]).ok()?,
        &body[split + 2..],
    );
    let mut lines = head.split('\n');
    let old = lines.next()?.strip_prefix("old ")?.parse().ok()?;
    let proof = lines
        .map(|l| l.parse().ok())
        .collect::<Option<Vec<Hash>>>()?;
    Some((old, proof, note))
}

fn size_conflict(size: u64) -> Response {
    let mut resp = text(StatusCode::CONFLICT, &format!("{size}\n"), None);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/x.tlog.size"),
    );
    resp
}

fn unavailable(cause: String) -> Response {
    HttpError::Unavailable {
        public: "witness temporarily unavailable, try again",
        cause: format!("witness: {cause}"),
    }
    .into_response()
}
