//! Step 1 of a resolution: what the database already knows, checked against today's policy
//! (keys, revocations, weights, quorum, block list).

use quorate_core::attestation::{Agreed, Attestation, Content};
use quorate_core::protocol::store_path::HashPart;
use quorate_core::quorum::{decide, votes, Decision, Outcome};

use super::ResolveError;
use crate::app::App;
use crate::served_cache::ServedCache;

/// The valid attestations recorded for the path that still count: their key still belongs
/// to the same builder, was not revoked before they were first recorded, and (Nix) still
/// verifies them. A key removed from the config, replaced under the same name, or revoked,
/// stops counting at once.
pub(super) async fn still_trusted(
    app: &App,
    cache: &ServedCache,
    hash_part: &HashPart,
) -> Result<Vec<Attestation>, ResolveError> {
    let mut recorded = app.db.valid_attestations(cache.name(), hash_part).await?;
    recorded.retain(|a| cache.front.still_trusted(a));
    Ok(recorded)
}

/// The path's decision in force, checked against today's policy.
pub(super) enum InForce {
    /// An accepted content that the attestations counting today still accept: served
    /// without asking upstreams.
    Backed(Agreed),
    /// An accepted content that they no longer accept (a key revoked or removed, weights or
    /// the quorum changed, the content blocked): withdrawn unless the upstreams' answers
    /// carry it again.
    Unbacked(Content),
    /// No accepted decision in force.
    NotAccepted,
}

/// What the path's decision in force amounts to today, given the `recorded` attestations
/// that still count.
pub(super) async fn in_force(
    app: &App,
    cache: &ServedCache,
    hash_part: &HashPart,
    recorded: &[Attestation],
) -> Result<InForce, ResolveError> {
    let Some(latest) = app.db.latest_decision(cache.name(), hash_part).await? else {
        return Ok(InForce::NotAccepted);
    };
    let (Outcome::Accepted, Some(accepted)) = (latest.outcome, latest.content) else {
        return Ok(InForce::NotAccepted);
    };
    let Decision::Accepted {
        content, agreeing, ..
    } = decide(&cache.policy, &votes(recorded), false)
    else {
        return Ok(InForce::Unbacked(accepted));
    };
    if content != accepted {
        return Ok(InForce::Unbacked(accepted));
    }
    let sources = app.db.nar_sources(cache.name(), &content.nar_hash).await?;
    Ok(InForce::Backed(Agreed::new(
        content, agreeing, recorded, sources,
    )))
}
