//! Step 2 of a resolution: ask every upstream at once and decide after each answer.
//!
//! One background task per upstream fetches its narinfo and turns it into attestations
//! (the flavor front end does that); the answers come back over a channel in the order they
//! arrive. The request stops listening once the decision is final; whatever is still on its
//! way is read by the late-answer follower.

use std::sync::Arc;

use quorate_core::attestation::{Attestation, NarSource, Observation, SigStatus};
use quorate_core::protocol::store_path::HashPart;
use quorate_core::quorum::{decide, votes, Decision, Vote};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::app::App;
use crate::clock::now_ms;
use crate::metrics::UpstreamKind;
use crate::record::UpstreamFailure;
use crate::served_cache::ServedCache;

/// One upstream's answer to `<hash>.narinfo`.
enum Answer {
    /// A narinfo, read by the front end.
    Seen(Observation),
    /// 404 (or 401/403/410): the upstream does not have it.
    Missing,
    /// Unreachable, timed out, or a narinfo that does not parse: why.
    Failed(String),
}

/// What a set of upstream answers showed.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    /// Every attestation seen (valid, invalid, unknown key).
    pub seen: Vec<Attestation>,
    /// Where upstreams said the NAR is.
    pub sources: Vec<NarSource>,
    /// Upstreams that could not answer.
    pub failures: Vec<UpstreamFailure>,
}

impl Gathered {
    fn absorb(&mut self, upstream: &str, answer: Answer) {
        match answer {
            Answer::Seen(obs) => {
                self.seen.extend(obs.attestations);
                self.sources.extend(obs.source);
            }
            Answer::Missing => {}
            Answer::Failed(why) => self.failures.push(UpstreamFailure {
                upstream: upstream.to_owned(),
                why,
            }),
        }
    }

    /// The attestations that count in `cache`: signature verified, key not revoked.
    pub fn counted<'a>(&'a self, cache: &'a ServedCache) -> impl Iterator<Item = &'a Attestation> {
        counted(cache, &self.seen).filter(|a| a.status == SigStatus::Valid)
    }
}

/// Those of `seen` whose key was not revoked when they were observed (a revoked key's
/// signature is recorded as evidence but does not vote).
pub(super) fn counted<'a>(
    cache: &'a ServedCache,
    seen: &'a [Attestation],
) -> impl Iterator<Item = &'a Attestation> {
    seen.iter().filter(|a| !cache.front.revoked(a))
}

/// The answers of one fan-out, as they arrive.
pub(super) struct FanOut {
    /// (upstream index, answer), in arrival order.
    answers: mpsc::Receiver<(usize, Answer)>,
    /// The upstreams asked, by index.
    upstreams: Vec<String>,
    /// How many have not answered yet.
    pending: usize,
}

impl FanOut {
    /// Asks every upstream of `cache` for `hash_part`'s narinfo, concurrently.
    pub fn start(app: &Arc<App>, cache: &Arc<ServedCache>, hash_part: &HashPart) -> FanOut {
        let upstreams = &cache.config.upstreams;
        let (tx, answers) = mpsc::channel(upstreams.len().max(1));
        for (i, up) in upstreams.iter().enumerate() {
            let (tx, task_app, cache, hash_part) =
                (tx.clone(), app.clone(), cache.clone(), hash_part.clone());
            let up = up.clone();
            app.background.spawn(async move {
                let app = task_app;
                let started = Instant::now();
                let answer = match app.upstream.fetch_narinfo(&up, &hash_part).await {
                    Ok(Some(text)) => {
                        match cache.front.observe(&up.url, &hash_part, &text, now_ms()) {
                            Ok(obs) => Answer::Seen(obs),
                            Err(e) => Answer::Failed(format!("bad narinfo from {}: {e}", up.url)),
                        }
                    }
                    Ok(None) => Answer::Missing,
                    Err(e) => Answer::Failed(e.to_string()),
                };
                let ok = !matches!(answer, Answer::Failed(_));
                app.metrics
                    .upstream_answer(&up.url, UpstreamKind::Narinfo, started.elapsed(), ok);
                // The receiver may be gone (shutdown); the answer then goes unrecorded.
                let _ = tx.send((i, answer)).await;
            });
        }
        FanOut {
            answers,
            upstreams: upstreams.iter().map(|u| u.url.clone()).collect(),
            pending: upstreams.len(),
        }
    }

    /// Reads answers until `cache`'s policy reaches a final decision over `votes` plus what
    /// they add (or every upstream has answered), extending `votes` as it goes.
    pub async fn until_final(
        &mut self,
        cache: &ServedCache,
        votes_so_far: &mut Vec<Vote>,
    ) -> (Gathered, Decision) {
        let policy = &cache.policy;
        let mut gathered = Gathered::default();
        while let Some((i, answer)) = self.answers.recv().await {
            self.pending -= 1;
            let before = gathered.seen.len();
            gathered.absorb(&self.upstreams[i], answer);
            votes_so_far.extend(votes(counted(cache, &gathered.seen[before..])));
            let decision = decide(policy, votes_so_far, self.pending > 0);
            if decision.is_final() {
                return (gathered, decision);
            }
        }
        // Every task finished without a final answer (one died): decide on what we have.
        self.pending = 0;
        let decision = decide(policy, votes_so_far, false);
        (gathered, decision)
    }

    /// Whether some upstream has not answered yet.
    pub fn outstanding(&self) -> bool {
        self.pending > 0
    }

    /// Every answer still to come.
    pub async fn the_rest(mut self) -> Gathered {
        let mut gathered = Gathered::default();
        while let Some((i, answer)) = self.answers.recv().await {
            gathered.absorb(&self.upstreams[i], answer);
        }
        gathered
    }
}
