//! Step 1 of a resolution: what the database already knows.

use quorate_core::attestation::{Agreed, Attestation};
use quorate_core::protocol::store_path::HashPart;
use quorate_core::quorum::{decide, votes, Decision, Outcome};

use super::ResolveError;
use crate::app::App;
use crate::served_cache::ServedCache;

/// The valid attestations recorded for the path that still count: their key still belongs
/// to the same builder and (Nix) still verifies them. A key removed from the config, or
/// replaced under the same name, stops counting at once.
pub(super) async fn still_trusted(
    app: &App,
    cache: &ServedCache,
    hash_part: &HashPart,
) -> Result<Vec<Attestation>, ResolveError> {
    let mut recorded = app.db.valid_attestations(cache.name(), hash_part).await?;
    recorded.retain(|a| cache.front.still_trusted(a));
    Ok(recorded)
}

/// The agreement to serve without asking upstreams: the path's decision in force accepted a
/// content, and the attestations that still count accept that same content under today's
/// policy.
pub(super) async fn still_accepted(
    app: &App,
    cache: &ServedCache,
    hash_part: &HashPart,
    recorded: &[Attestation],
) -> Result<Option<Agreed>, ResolveError> {
    let Some(latest) = app.db.latest_decision(cache.name(), hash_part).await? else {
        return Ok(None);
    };
    if latest.outcome != Outcome::Accepted {
        return Ok(None);
    }
    let Decision::Accepted {
        content, agreeing, ..
    } = decide(&cache.policy, &votes(recorded), false)
    else {
        return Ok(None);
    };
    if latest.content.as_ref() != Some(&content) {
        return Ok(None);
    }
    let sources = app.db.nar_sources(cache.name(), &content.nar_hash).await?;
    Ok(Some(Agreed::new(content, agreeing, recorded, sources)))
}
