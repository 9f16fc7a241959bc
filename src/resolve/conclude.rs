//! Step 3 of a resolution: record the decision and turn it into the answer.

use quorate_core::attestation::{Agreed, Attestation, Content};
use quorate_core::protocol::store_path::HashPart;
use quorate_core::quorum::{Decision, Outcome};

use super::fan_out::Gathered;
use super::ResolveError;
use crate::app::App;
use crate::clock::now_ms;
use crate::db::DecisionRecord;
use crate::record;
use crate::served_cache::{Resolution, ServedCache};

/// Records `decision` (with a conflict event where builders disagree) and answers with it.
/// `valid` are the attestations that count (recorded and new), `gathered` what this round
/// of upstream answers showed.
pub(super) async fn conclude(
    app: &App,
    cache: &ServedCache,
    hash_part: &HashPart,
    decision: &Decision,
    valid: &[Attestation],
    gathered: Gathered,
) -> Result<Resolution, ResolveError> {
    let decided = Decided { cache, hash_part };
    match decision {
        Decision::Accepted {
            content,
            agreeing,
            dissenters,
        } => {
            let mut sources = gathered.sources;
            sources.extend(app.db.nar_sources(cache.name(), &content.nar_hash).await?);
            let agreed = Agreed::new(content.clone(), agreeing.clone(), valid, sources);
            decided.accepted(app, &agreed, dissenters).await?;
            served(cache, agreed).await
        }
        Decision::Refused { claims } => decided.refused(app, claims).await,
        Decision::Blocked {
            content,
            agreeing,
            reason,
        } => decided.blocked(app, content, agreeing, reason).await,
        Decision::Insufficient { best } => {
            decided
                .insufficient(app, best.as_ref(), !gathered.seen.is_empty())
                .await
        }
        Decision::Pending => decided.insufficient(app, None, false).await,
    }
}

/// The answer for an agreed content: quorate's narinfo, with its NAR entry remembered
/// before the narinfo goes out (a client asks for the NAR right after).
pub(super) async fn served(
    cache: &ServedCache,
    agreed: Agreed,
) -> Result<Resolution, ResolveError> {
    let body = cache.front.render(&agreed, None)?;
    cache.remember_nar(&agreed).await;
    Ok(Resolution::Served {
        body: body.into(),
        compressed_body: Default::default(),
        agreed: Box::new(agreed),
    })
}

/// Takes back the recorded acceptance of `content`, which the attestations that count today
/// no longer carry (a key revoked or removed, the policy changed), before `decision`, what
/// the path's evidence amounts to now, is recorded.
pub(super) async fn withdrawn(
    app: &App,
    cache: &ServedCache,
    hash_part: &HashPart,
    content: Content,
    decision: &Decision,
) -> Result<(), ResolveError> {
    let decided = Decided { cache, hash_part };
    tracing::warn!(cache = %cache.name(), %hash_part, nar_hash = %content.nar_hash,
        "withdrawn: its attestations no longer meet today's policy");
    cache.nars.invalidate(&content.nar_hash.key()).await;
    let record = decided.record(
        Outcome::Withdrawn,
        Some(content),
        vec![],
        decision.dissenters(),
    );
    app.db.record_decision(&record).await?;
    app.metrics.decided(cache.name(), Outcome::Withdrawn);
    Ok(())
}

/// A decision about one path, being recorded.
struct Decided<'a> {
    cache: &'a ServedCache,
    hash_part: &'a HashPart,
}

impl Decided<'_> {
    fn record(
        &self,
        outcome: Outcome,
        content: Option<Content>,
        agreeing: Vec<String>,
        dissenters: Vec<String>,
    ) -> DecisionRecord {
        DecisionRecord {
            cache: self.cache.name().to_owned(),
            hash_part: self.hash_part.clone(),
            store_path: content.as_ref().map(|c| c.store_path.clone()),
            outcome,
            content,
            deriver: None,
            ca: None,
            agreeing,
            dissenters,
            policy: self.cache.policy_summary(),
            decided_at: now_ms(),
        }
    }

    async fn accepted(
        &self,
        app: &App,
        agreed: &Agreed,
        dissenters: &[String],
    ) -> Result<(), ResolveError> {
        let record = DecisionRecord {
            deriver: agreed.deriver.clone(),
            ca: agreed.ca.clone(),
            ..self.record(
                Outcome::Accepted,
                Some(agreed.content.clone()),
                agreed.agreeing.clone(),
                dissenters.to_vec(),
            )
        };
        app.db.record_decision(&record).await?;
        if !dissenters.is_empty() {
            let detail = format!(
                "accepted by majority {:?}; dissenting builders {dissenters:?}",
                agreed.agreeing
            );
            let path = Some(agreed.content.store_path.clone());
            record::conflict(app, self.cache, path, detail)
                .write(&app.db)
                .await?;
        }
        app.metrics.decided(self.cache.name(), Outcome::Accepted);
        Ok(())
    }

    async fn refused(
        &self,
        app: &App,
        claims: &[(Content, Vec<String>)],
    ) -> Result<Resolution, ResolveError> {
        let detail = claims
            .iter()
            .map(|(c, b)| format!("{} by {}", c.nar_hash, b.join("+")))
            .collect::<Vec<_>>()
            .join("; ");
        let dissenters = claims.iter().flat_map(|(_, b)| b.clone()).collect();
        let record = self.record(Outcome::Refused, None, vec![], dissenters);
        app.db.record_decision(&record).await?;
        if let Some((c, _)) = claims.first() {
            let path = Some(c.store_path.clone());
            let conflict = format!("builders disagree: {detail}");
            record::conflict(app, self.cache, path, conflict)
                .write(&app.db)
                .await?;
        }
        app.metrics.decided(self.cache.name(), Outcome::Refused);
        tracing::warn!(cache = %self.cache.name(), hash_part = %self.hash_part,
            "refused: builders disagree: {detail}");
        Ok(Resolution::NotServed {
            reason: format!("refused: builders disagree ({detail})"),
        })
    }

    /// Builders agreed, but the block list refuses the content: recorded as a refusal of that
    /// content, with a `blocked` event giving the reason.
    async fn blocked(
        &self,
        app: &App,
        content: &Content,
        agreeing: &[String],
        reason: &str,
    ) -> Result<Resolution, ResolveError> {
        let record = self.record(
            Outcome::Refused,
            Some(content.clone()),
            agreeing.to_vec(),
            vec![],
        );
        app.db.record_decision(&record).await?;
        let detail = format!(
            "blocked by the operator ({reason}); {} agreed on {}",
            agreeing.join("+"),
            content.nar_hash
        );
        record::blocked(self.cache, content.store_path.clone(), detail)
            .write(&app.db)
            .await?;
        app.metrics.decided(self.cache.name(), Outcome::Refused);
        tracing::warn!(cache = %self.cache.name(), hash_part = %self.hash_part,
            "refused: blocked by the operator: {reason}");
        Ok(Resolution::NotServed {
            reason: format!("blocked by the operator: {reason}"),
        })
    }

    /// Not enough agreement. Recorded only when there was something to decide about
    /// (`anything_seen`, or a best content): a plain "nobody has it" is the common case of
    /// a mass query and stays in memory.
    async fn insufficient(
        &self,
        app: &App,
        best: Option<&(Content, Vec<String>)>,
        anything_seen: bool,
    ) -> Result<Resolution, ResolveError> {
        if anything_seen || best.is_some() {
            let (content, agreeing) = match best {
                Some((c, b)) => (Some(c.clone()), b.clone()),
                None => (None, vec![]),
            };
            let record = self.record(Outcome::Insufficient, content, agreeing, vec![]);
            app.db.record_decision(&record).await?;
        }
        app.metrics
            .decided(self.cache.name(), Outcome::Insufficient);
        let policy = &self.cache.policy;
        let reason = match best {
            Some((_, b)) => format!(
                "not enough agreeing builders: weight {} of quorum {}",
                b.iter().filter_map(|n| policy.weight_of(n)).sum::<u64>(),
                policy.quorum
            ),
            None => "no trusted attestation".into(),
        };
        Ok(Resolution::NotServed { reason })
    }
}
