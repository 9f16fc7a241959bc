//! Other replicas' decisions leave this replica's memory (DESIGN §11): a background task
//! follows the database's change notices ([`crate::db::ChangeListener`]) and forgets the
//! memory answer of every path another replica decided (withdrew, refused, accepted) or
//! received pushed attestations for, so the next request reads the decision in force from
//! the database (or decides afresh). After a lost connection it forgets every memory answer:
//! it cannot know what it missed.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::db::Change;

/// How long to wait before listening again after the database refused.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the other replicas' decisions until shutdown (PostgreSQL only; returns at once
/// on SQLite).
pub async fn follow_changes(app: Arc<App>) {
    let shutdown = app.background.shutdown_signal();
    let mut listener = loop {
        match app.db.listen_changes().await {
            Ok(Some(listener)) => break listener,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("cannot listen for other replicas' decisions yet: {e}");
                // Meanwhile nothing is heard: whatever was cached may be stale.
                forget_everything(&app);
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        }
    };
    loop {
        let change = tokio::select! {
            change = listener.next() => change,
            () = shutdown.cancelled() => return,
        };
        match change {
            Ok(change) => apply(&app, change).await,
            Err(e) => {
                tracing::warn!("listening for other replicas' decisions: {e}");
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

async fn apply(app: &App, change: Change) {
    match change {
        Change::Decision {
            cache,
            hash_part,
            nar,
        } => {
            let Some(served) = app.caches.iter().find(|c| c.name() == cache) else {
                return;
            };
            tracing::debug!(%cache, %hash_part, "another replica decided: forgetting the memory answer");
            if let Some(nar) = nar {
                served.nars.invalidate(&nar).await;
            }
            served.decisions.invalidate(&hash_part).await;
            served.log_indexes.invalidate(&hash_part).await;
        }
        Change::Missed => {
            tracing::info!(
                "listening for other replicas' decisions again: forgetting every memory answer"
            );
            forget_everything(app);
        }
    }
}

fn forget_everything(app: &App) {
    for served in &app.caches {
        served.decisions.invalidate_all();
        served.nars.invalidate_all();
        served.log_indexes.invalidate_all();
    }
}
