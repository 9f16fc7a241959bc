//! Sending this quorate's checkpoints to its logs' witnesses (C2SP `tlog-witness`, DESIGN
//! §12): each round, every `[[cache.witness]]` that has not cosigned the latest checkpoint
//! gets it with a consistency proof from the size it cosigned last, and the cosignature it
//! answers is checked and kept, to be served with the checkpoint. A witness that does not
//! know where it stands answers 409 with its size; the request is made again from there.

use std::collections::HashMap;
use std::time::Duration;

use quorate_core::tlog::checkpoint::Checkpoint;
use quorate_core::tlog::merkle::prove_consistency;
use quorate_core::tlog::note::{NoteSignature, NoteVerifier, SignedNote};

use crate::app::App;
use crate::config::CacheWitness;
use crate::served_cache::ServedCache;
use crate::tlog::with_hashes;

/// How long a witness may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `cache`'s latest checkpoint to each witness that has not cosigned it yet.
pub async fn round(app: &App, cache: &ServedCache, client: &reqwest::Client) {
    if cache.config.witnesses.is_empty() {
        return;
    }
    let Ok(Some(note)) = app.db.latest_checkpoint(cache.name()).await else {
        return;
    };
    let Ok(signed) = SignedNote::parse(note.as_bytes()) else {
        return;
    };
    let Ok(checkpoint) = signed.text().parse::<Checkpoint>() else {
        return;
    };
    for w in &cache.config.witnesses {
        let acknowledged = cache.witnessed(&w.url);
        if acknowledged == Some(checkpoint.size()) {
            continue;
        }
        match send(
            app,
            cache,
            client,
            w,
            acknowledged.unwrap_or(0),
            &checkpoint,
            &note,
        )
        .await
        {
            Ok(()) => cache.set_witnessed(&w.url, checkpoint.size()),
            Err(e) => tracing::warn!(cache = %cache.name(), witness = %w.url, "witness: {e}"),
        }
    }
}

/// One `add-checkpoint`, made again once from the size a 409 names.
async fn send(
    app: &App,
    cache: &ServedCache,
    client: &reqwest::Client,
    w: &CacheWitness,
    mut old: u64,
    checkpoint: &Checkpoint,
    note: &str,
) -> Result<(), String> {
    for _ in 0..2 {
        if old > checkpoint.size() {
            return Err(format!(
                "the witness has size {old}, beyond this log's {}",
                checkpoint.size()
            ));
        }
        let mut body = format!("old {old}\n");
        if old > 0 && old < checkpoint.size() {
            let mut known = HashMap::new();
            let new = checkpoint.size();
            let proof = with_hashes(&app.db, cache.name(), &mut known, |r| {
                prove_consistency(old, new, r)
            })
            .await
            .map_err(|e| e.to_string())?;
            for h in proof {
                body.push_str(&format!("{h}\n"));
            }
        }
        body.push('\n');
        body.push_str(note);
        let url = format!("{}/add-checkpoint", w.url);
        let r = client
            .post(&url)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = r.status();
        let text = r.text().await.map_err(|e| format!("POST {url}: {e}"))?;
        match status.as_u16() {
            200 => return keep(app, cache, w, checkpoint, text.trim()).await,
            409 => {
                old = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("409 without a size: {text:?}"))?
            }
            _ => return Err(format!("POST {url}: HTTP {status}: {}", text.trim())),
        }
    }
    Err("the witness's size kept changing".into())
}

/// Checks the witness's cosignature line over `checkpoint` and keeps it.
async fn keep(
    app: &App,
    cache: &ServedCache,
    w: &CacheWitness,
    checkpoint: &Checkpoint,
    line: &str,
) -> Result<(), String> {
    let signature: NoteSignature = line.parse().map_err(|e| format!("cosignature: {e}"))?;
    let text = checkpoint.to_string();
    let valid = signature.name == w.vkey.name()
        && signature.key_id == w.vkey.key_id()
        && w.vkey.verify(text.as_bytes(), &signature.signature);
    if !valid {
        return Err(format!("a cosignature that does not verify: {line}"));
    }
    app.db
        .record_cosignature(cache.name(), checkpoint.size(), w.vkey.name(), line)
        .await
        .map_err(|e| e.to_string())
}
