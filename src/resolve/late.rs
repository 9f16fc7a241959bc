//! Step 4 of a resolution: answers that arrive after the decision was final.
//!
//! They are recorded like any other (attestations are evidence), and the path is decided
//! again on the full picture. A new dissent records a conflict; a changed outcome withdraws
//! the decision and drops it from memory, so the next request decides afresh.

use std::sync::Arc;

use quorate_core::protocol::store_path::HashPart;
use quorate_core::quorum::{decide, votes, Decision, Outcome, Vote};

use super::fan_out::FanOut;
use crate::app::App;
use crate::clock::now_ms;
use crate::db::DecisionRecord;
use crate::outbox::PendingWrite;
use crate::record;
use crate::served_cache::ServedCache;

/// Follows the rest of `fan_out` in the background (tracked: shutdown waits for it).
/// `first` is the decision already answered with, `votes` what it rested on.
pub(super) fn follow(
    app: &Arc<App>,
    cache: &Arc<ServedCache>,
    hash_part: &HashPart,
    first: Decision,
    votes: Vec<Vote>,
    fan_out: FanOut,
) {
    let late = Late {
        app: app.clone(),
        cache: cache.clone(),
        hash_part: hash_part.clone(),
        first,
        votes,
    };
    app.background.spawn(late.run(fan_out));
}

struct Late {
    app: Arc<App>,
    cache: Arc<ServedCache>,
    hash_part: HashPart,
    first: Decision,
    votes: Vec<Vote>,
}

impl Late {
    async fn run(mut self, fan_out: FanOut) {
        let late = fan_out.the_rest().await;
        let observed = record::observations(
            &self.app,
            &self.cache,
            &late.seen,
            &late.sources,
            &late.failures,
        );
        record::best_effort(&self.app, observed).await;
        if let Some(content) = self.first.accepted_content() {
            // A late upstream offering the accepted NAR is a source like the others: the NAR
            // route may pick it (it may be the fastest; `delivery::rank_sources`).
            let offered = late
                .sources
                .iter()
                .filter(|s| s.nar_hash == content.nar_hash)
                .cloned();
            self.cache
                .add_nar_sources(content.nar_hash.key(), offered)
                .await;
        }
        self.votes
            .extend(votes(super::fan_out::counted(&self.cache, &late.seen)));
        let full = decide(&self.cache.policy, &self.votes, false);
        let first = &self.first;
        let changed = full.outcome() != first.outcome()
            || full.accepted_content() != first.accepted_content();
        let first_dissent = first.dissenters();
        let new_dissent = full.dissenters().iter().any(|d| !first_dissent.contains(d));
        if !changed && !new_dissent {
            return;
        }
        tracing::warn!(cache = %self.cache.name(), hash_part = %self.hash_part,
            "late answers: first {}, with all answers {}", outcome(first), outcome(&full));
        if new_dissent || matches!(full, Decision::Refused { .. }) {
            self.conflict(&full).await;
        }
        if changed {
            self.withdraw(&full).await;
        }
    }

    async fn conflict(&self, full: &Decision) {
        let detail = format!(
            "late dissent: first {}, with all answers {} (dissenters {:?})",
            outcome(&self.first),
            outcome(full),
            full.dissenters()
        );
        let path = self
            .first
            .accepted_content()
            .or(full.accepted_content())
            .map(|c| c.store_path.clone());
        let conflict = record::conflict(&self.app, &self.cache, path, detail);
        record::best_effort(&self.app, conflict).await;
    }

    /// Takes back the first decision (when it accepted something) and forgets it in memory.
    async fn withdraw(&self, full: &Decision) {
        let first_content = self.first.accepted_content();
        if let Some(c) = first_content {
            let record = DecisionRecord {
                cache: self.cache.name().to_owned(),
                hash_part: self.hash_part.clone(),
                store_path: Some(c.store_path.clone()),
                outcome: Outcome::Withdrawn,
                content: Some(c.clone()),
                deriver: None,
                ca: None,
                agreeing: vec![],
                dissenters: full.dissenters(),
                policy: self.cache.policy_summary(),
                decided_at: now_ms(),
            };
            self.app
                .metrics
                .decided(self.cache.name(), Outcome::Withdrawn);
            record::best_effort(&self.app, PendingWrite::Decision(Box::new(record))).await;
        }
        self.cache.forget(&self.hash_part, first_content).await;
    }
}

/// The outcome's name, `pending` while there is none.
fn outcome(d: &Decision) -> &'static str {
    d.outcome().map_or("pending", Outcome::as_str)
}
