//! Eviction from the object store (DESIGN §11): with NARs in a bucket and `max_cache_size`
//! set, the least recently served NARs go once the recorded total passes the bound (checked
//! every 30 s and after each upload). The
//! database holds the sizes and access times (every replica touches a NAR it serves); one
//! replica at a time evicts, holding the `evict` lease. (A local directory evicts itself as
//! it commits: `crate::nar::NarStore`.)

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::clock::now_ms;
use crate::db::random_hex;

/// How often a replica checks whether the bucket is over its bound (and after each of its
/// own uploads, once the upload's record had time to land).
const EVERY: Duration = Duration::from_secs(30);
/// How long after an upload the check runs: the NAR's row is written just after it.
const AFTER_UPLOAD: Duration = Duration::from_secs(1);
/// How long the eviction lease lasts: longer than one round takes.
const LEASE_TTL: Duration = Duration::from_secs(120);
/// NARs looked at per database round trip.
const BATCH: u32 = 100;

/// Evicts from the bucket every [`EVERY`] and after uploads until shutdown; returns at once when NARs are
/// local or unbounded.
pub async fn evict_objects(app: Arc<App>) {
    let (Some(objects), Some(max)) = (app.fetcher.storage().objects(), app.config.max_cache_size)
    else {
        return;
    };
    let shutdown = app.background.shutdown_signal();
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = async {
                objects.uploaded().await;
                tokio::time::sleep(AFTER_UPLOAD).await;
            } => {}
            () = shutdown.cancelled() => return,
        }
        match round(&app, max).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("evicted {n} NAR object(s) from the bucket"),
            Err(e) => tracing::warn!("evicting from the bucket: {e}"),
        }
    }
}

/// One round: while over `max`, deletes the least recently served NARs (object first,
/// then its row: a row without an object is only a miss later). Returns how many went.
pub async fn round(app: &App, max: u64) -> Result<usize, String> {
    let Some(objects) = app.fetcher.storage().objects() else {
        return Ok(0);
    };
    let db = &app.db;
    let mut total = db
        .nar_objects_total_size()
        .await
        .map_err(|e| e.to_string())?;
    if total <= max {
        return Ok(0);
    }
    let (owner, token) = (format!("evict:{}", std::process::id()), random_hex(16));
    let now = now_ms();
    let expires = now + LEASE_TTL.as_millis() as i64;
    let taken = db.take_lease("evict", &owner, &token, now, expires).await;
    if !taken.map_err(|e| e.to_string())? {
        return Ok(0); // another replica is at it
    }
    let mut evicted = 0;
    let result = async {
        while total > max {
            let batch = db
                .least_recently_used_nar_objects(BATCH)
                .await
                .map_err(|e| e.to_string())?;
            if batch.is_empty() {
                break;
            }
            for object in batch {
                if total <= max {
                    break;
                }
                let key = object.nar_hash.key();
                objects.delete(&key).await.map_err(|e| e.to_string())?;
                db.remove_nar_object(&object.nar_hash)
                    .await
                    .map_err(|e| e.to_string())?;
                total = total.saturating_sub(object.nar_size);
                evicted += 1;
            }
        }
        Ok(evicted)
    }
    .await;
    if let Err(e) = db.release_lease("evict", &token).await {
        tracing::debug!("releasing the evict lease: {e}");
    }
    result
}
