//! Narinfo resolution: the walk from a request to a decision.
//!
//! ```text
//! memory (hot answers) ─► database (recorded.rs): an accepted decision still backed by
//!                         attestations that count under today's policy is served as is
//!                         (one that no longer is is withdrawn, unless upstreams carry it)
//!                       ─► fan-out (fan_out.rs): every upstream at once; each answer becomes
//!                          attestations through the flavor front end; quorum::decide after
//!                          each one, stopping as soon as the outcome is final
//!                       ─► record what was seen, then the decision (conclude.rs)
//!                       ─► respond; answers still outstanding are followed in the
//!                          background (late.rs): recorded, and a late dissent withdraws
//! ```
//!
//! Concurrent requests for the same path share one resolution (moka's `try_get_with` on the
//! cache's hot answers). The resolution itself runs as a background task that the requests
//! await: a client hanging up never cuts it half-way (upstream answers dropped, attestations
//! without a decision, the waiting requests fanning out again).

mod conclude;
mod fan_out;
mod late;
mod recorded;

use std::sync::Arc;

use quorate_core::flavor::FrontEndError;
use quorate_core::protocol::store_path::HashPart;
use quorate_core::quorum::votes;

use crate::app::App;
use crate::db::DbError;
use crate::record;
use crate::served_cache::{Resolution, ServedCache};

/// Resolution failed for a reason that is not an answer: the client gets 503 and may retry.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The database could not be read or written.
    #[error("database: {0}")]
    Database(#[from] DbError),
    /// quorate's own narinfo could not be rendered (an agreed content it cannot express).
    #[error("rendering quorate's narinfo: {0}")]
    Render(#[from] FrontEndError),
    /// The resolution task ended without an answer (the process is stopping, or a bug).
    #[error("resolution interrupted: {0}")]
    Interrupted(String),
}

/// Resolves `hash_part` for `cache`: memory, then database, then upstreams.
pub async fn resolve(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    hash_part: &HashPart,
) -> Result<Arc<Resolution>, Arc<ResolveError>> {
    let (app, owned_cache, key) = (app.clone(), cache.clone(), hash_part.clone());
    cache
        .decisions
        .try_get_with(hash_part.clone(), async move {
            let task = {
                let app = app.clone();
                async move { resolve_uncached(&app, &owned_cache, &key).await }
            };
            match app.background.spawn(task).await {
                Ok(resolution) => resolution.map(Arc::new),
                Err(e) => Err(ResolveError::Interrupted(e.to_string())),
            }
        })
        .await
}

async fn resolve_uncached(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    hash_part: &HashPart,
) -> Result<Resolution, ResolveError> {
    // 1. The database: an accepted decision whose attestations still meet the policy.
    let recorded = recorded::still_trusted(app, cache, hash_part).await?;
    let unbacked = match recorded::in_force(app, cache, hash_part, &recorded).await? {
        recorded::InForce::Backed(agreed) => return conclude::served(cache, agreed).await,
        recorded::InForce::Unbacked(content) => Some(content),
        recorded::InForce::NotAccepted => None,
    };

    // 2. Fan out to every upstream at once; decide after each answer.
    let mut fan_out = fan_out::FanOut::start(app, cache, hash_part);
    let mut votes = votes(&recorded);
    let (gathered, decision) = fan_out.until_final(cache, &mut votes).await;

    // 3. Record what we saw, then the decision (after withdrawing an acceptance that no
    // longer holds).
    let seen = &gathered;
    record::observations(app, cache, &seen.seen, &seen.sources, &seen.failures)
        .write(&app.db)
        .await?;
    if let Some(content) = unbacked.filter(|c| decision.accepted_content() != Some(c)) {
        conclude::withdrawn(app, cache, hash_part, content, &decision).await?;
    }
    let mut valid = recorded;
    valid.extend(gathered.counted(cache).cloned());
    let resolution = conclude::conclude(app, cache, hash_part, &decision, &valid, gathered).await?;

    // 4. Answers still outstanding: recorded in the background; a late dissent withdraws.
    if fan_out.outstanding() {
        late::follow(app, cache, hash_part, decision, votes, fan_out);
    }
    Ok(resolution)
}
