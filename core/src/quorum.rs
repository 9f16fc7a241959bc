//! The quorum rule (DESIGN §3, §13): (attestations, policy) → decision. Pure, no I/O; the
//! heart of quorate, table-tested below.
//!
//! Votes are grouped by [`Content`] (store path, NarHash, NarSize, References) and counted by
//! distinct *builder*: several keys or upstreams of one builder count once, with that
//! builder's weight (default 1). The quorum is met by the summed weight of the distinct
//! builders behind one content; `majority` compares summed weights. The rule also says when
//! an answer is *final*: every configured builder not heard from yet, while some upstream is
//! still outstanding, is counted as a possible vote (of its weight) for anything. So with
//! `majority`, quorum 2 and builders a, b, c of weight 1, once a and b agree the answer is
//! final (2 > 0 + 1) and a slow third upstream is not waited for; with `refuse`, a silent
//! builder could still dissent, so the answer is final only when every upstream has answered
//! or failed. Last, the operator's block list: an accepted content whose store path or
//! NarHash is blocked is [`Decision::Blocked`] instead, and not served.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::attestation::{Attestation, Content};
use crate::protocol::nar_hash::NarHash;

/// What a dissenting trusted builder does to the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDissent {
    /// Any trusted builder attesting another content refuses the path (the default).
    Refuse,
    /// Accept the content with quorum that strictly more weight backs than any other.
    Majority,
}

/// A cache's quorum policy.
#[derive(Clone, Debug, Serialize)]
pub struct Policy {
    /// Minimum summed weight of the distinct agreeing builders.
    pub quorum: usize,
    /// Builders that must be among the agreeing ones.
    pub required_builders: Vec<String>,
    /// Dissent handling.
    pub on_dissent: OnDissent,
    /// Every configured builder with its weight (the electorate): unheard ones may still
    /// vote.
    pub builders: Vec<Elector>,
    /// Store paths and NarHashes the operator refuses whatever the builders say. Not in the
    /// JSON summary recorded with each decision (it may be long); the log's policy entry and
    /// `/api/v1/caches` carry it.
    #[serde(skip)]
    pub blocked: Vec<Block>,
}

/// A builder of the electorate and what its vote weighs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Elector {
    /// The builder's name.
    pub name: String,
    /// Its weight toward the quorum, at least 1.
    pub weight: u32,
}

impl Elector {
    /// Builder `name` of weight 1.
    pub fn new(name: impl Into<String>) -> Elector {
        Elector {
            name: name.into(),
            weight: 1,
        }
    }
}

/// One entry of a cache's block list: refused even with a quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Block {
    /// What is refused.
    #[serde(flatten)]
    pub target: BlockTarget,
    /// Why, as the operator wrote it (recorded with each refusal).
    pub reason: String,
}

/// What a [`Block`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockTarget {
    /// One full store path, whatever content is claimed for it.
    Path(String),
    /// One NAR, under whatever store path.
    NarHash(NarHash),
}

impl Block {
    /// Whether this entry refuses `content`.
    pub fn refuses(&self, content: &Content) -> bool {
        match &self.target {
            BlockTarget::Path(p) => *p == content.store_path,
            BlockTarget::NarHash(h) => *h == content.nar_hash,
        }
    }
}

impl Policy {
    /// The weight of builder `name`, if it is one of the electorate.
    pub fn weight_of(&self, name: &str) -> Option<u64> {
        self.builders
            .iter()
            .find(|e| e.name == name)
            .map(|e| u64::from(e.weight))
    }

    /// The block list entry refusing `content`, if any.
    pub fn block_of(&self, content: &Content) -> Option<&Block> {
        self.blocked.iter().find(|b| b.refuses(content))
    }

    /// Whether the block list refuses NAR `nar_hash` itself.
    pub fn blocks_nar(&self, nar_hash: &NarHash) -> bool {
        self.blocked
            .iter()
            .any(|b| b.target == BlockTarget::NarHash(*nar_hash))
    }
}

/// One counted vote: a configured builder's valid signature over some content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    /// The builder (not the key, not the upstream).
    pub builder: String,
    /// What it signed.
    pub content: Content,
}

/// The outcome of applying a [`Policy`] to the votes seen so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Decision {
    /// Serve `content`: `agreeing` builders reached the quorum.
    Accepted {
        /// The agreed content.
        content: Content,
        /// Builders that signed it.
        agreeing: Vec<String>,
        /// Builders that signed something else (only possible under `majority`).
        dissenters: Vec<String>,
    },
    /// Trusted builders disagree and the policy does not resolve it: a conflict.
    Refused {
        /// Every content seen with its builders.
        claims: Vec<(Content, Vec<String>)>,
    },
    /// Not enough agreeing builders (none at all, or fewer than the quorum).
    Insufficient {
        /// The best-supported content, if any was seen.
        best: Option<(Content, Vec<String>)>,
    },
    /// The builders reached the quorum, but the operator's block list refuses the content.
    Blocked {
        /// The content refused.
        content: Content,
        /// Builders that signed it.
        agreeing: Vec<String>,
        /// The block list entry's reason.
        reason: String,
    },
    /// The outcome can still change: wait for outstanding upstreams.
    Pending,
}

impl Decision {
    /// True for a final outcome (anything but [`Decision::Pending`]).
    pub fn is_final(&self) -> bool {
        !matches!(self, Decision::Pending)
    }

    /// What is recorded for this decision; `None` while it is pending.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Decision::Accepted { .. } => Some(Outcome::Accepted),
            Decision::Refused { .. } => Some(Outcome::Refused),
            Decision::Insufficient { .. } => Some(Outcome::Insufficient),
            // Recorded as a refusal; the reason goes with it as a `blocked` event.
            Decision::Blocked { .. } => Some(Outcome::Refused),
            Decision::Pending => None,
        }
    }

    /// The accepted content, if this decision serves one.
    pub fn accepted_content(&self) -> Option<&Content> {
        match self {
            Decision::Accepted { content, .. } => Some(content),
            _ => None,
        }
    }

    /// Builders that signed something other than the decided content (every builder with a
    /// claim when refused).
    pub fn dissenters(&self) -> Vec<String> {
        match self {
            Decision::Accepted { dissenters, .. } => dissenters.clone(),
            Decision::Refused { claims } => claims.iter().flat_map(|(_, b)| b.clone()).collect(),
            Decision::Insufficient { .. } | Decision::Blocked { .. } | Decision::Pending => {
                vec![]
            }
        }
    }
}

/// How a decision about a store path ended, as recorded (with history) and reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Enough builders agreed: the path is served.
    Accepted,
    /// Builders disagreed under `on_dissent = "refuse"` (or no majority), or the block list
    /// refuses the content: 404.
    Refused,
    /// Not enough attestations to reach the quorum: 404.
    Insufficient,
    /// An earlier acceptance taken back (a late dissent, or its attestations no longer count:
    /// a key revoked or removed, a policy changed): no longer served.
    Withdrawn,
}

impl Outcome {
    /// The spelling stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Refused => "refused",
            Outcome::Insufficient => "insufficient",
            Outcome::Withdrawn => "withdrawn",
        }
    }

    /// Inverse of [`Outcome::as_str`].
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "accepted" => Some(Outcome::Accepted),
            "refused" => Some(Outcome::Refused),
            "insufficient" => Some(Outcome::Insufficient),
            "withdrawn" => Some(Outcome::Withdrawn),
            _ => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The votes among `attestations`: one per valid signature by a configured builder.
pub fn votes<'a>(attestations: impl IntoIterator<Item = &'a Attestation>) -> Vec<Vote> {
    attestations
        .into_iter()
        .filter_map(|a| {
            a.voter().map(|builder| Vote {
                builder: builder.to_owned(),
                content: a.content.clone(),
            })
        })
        .collect()
}

/// Apply `policy` to `votes`. `outstanding` says whether some upstream may still answer;
/// when false the outcome is always final.
pub fn decide(policy: &Policy, votes: &[Vote], outstanding: bool) -> Decision {
    let tally = Tally::count(policy, votes, outstanding);
    let decision = match policy.on_dissent {
        OnDissent::Refuse => tally.refuse_rule(),
        OnDissent::Majority => tally.majority_rule(),
    };
    match decision {
        Decision::Accepted {
            content, agreeing, ..
        } if policy.block_of(&content).is_some() => {
            let reason = policy
                .block_of(&content)
                .map(|b| b.reason.clone())
                .unwrap_or_default();
            Decision::Blocked {
                content,
                agreeing,
                reason,
            }
        }
        other => other,
    }
}

/// The votes grouped by content, and the builders who could still vote.
struct Tally<'a> {
    policy: &'a Policy,
    /// Each builder of the electorate's weight.
    weights: BTreeMap<&'a str, u64>,
    /// Each content seen, with the distinct builders backing it.
    groups: BTreeMap<&'a Content, BTreeSet<&'a str>>,
    /// Configured builders not heard from while some upstream is outstanding: each might
    /// still vote for anything. Empty once every upstream has answered.
    unheard: BTreeSet<&'a str>,
    /// Whether some upstream may still answer.
    outstanding: bool,
}

impl<'a> Tally<'a> {
    fn count(policy: &'a Policy, votes: &'a [Vote], outstanding: bool) -> Tally<'a> {
        let weights: BTreeMap<&str, u64> = policy
            .builders
            .iter()
            .map(|e| (e.name.as_str(), u64::from(e.weight)))
            .collect();
        let electorate: BTreeSet<&str> = weights.keys().copied().collect();
        let mut groups: BTreeMap<&Content, BTreeSet<&str>> = BTreeMap::new();
        let mut heard: BTreeSet<&str> = BTreeSet::new();
        // Only configured builders vote; the caller should not pass others, but the rule must
        // not depend on that.
        for v in votes
            .iter()
            .filter(|v| electorate.contains(v.builder.as_str()))
        {
            groups
                .entry(&v.content)
                .or_default()
                .insert(v.builder.as_str());
            heard.insert(v.builder.as_str());
        }
        let unheard = if outstanding {
            electorate.difference(&heard).copied().collect()
        } else {
            BTreeSet::new()
        };
        Tally {
            policy,
            weights,
            groups,
            unheard,
            outstanding,
        }
    }

    /// The summed weight of `builders` (each counted once: it is a set).
    fn weight(&self, builders: &BTreeSet<&str>) -> u64 {
        builders
            .iter()
            .map(|b| self.weights.get(b).copied().unwrap_or(0))
            .sum()
    }

    /// The quorum, as a weight.
    fn quorum(&self) -> u64 {
        u64::try_from(self.policy.quorum).unwrap_or(u64::MAX)
    }

    /// Do `backers` meet the policy now?
    fn meets(&self, backers: &BTreeSet<&str>) -> bool {
        self.weight(backers) >= self.quorum()
            && self
                .policy
                .required_builders
                .iter()
                .all(|r| backers.contains(r.as_str()))
    }

    /// Could `backers` still meet the policy if every unheard builder joined them?
    fn could_meet(&self, backers: &BTreeSet<&str>) -> bool {
        self.weight(backers) + self.weight(&self.unheard) >= self.quorum()
            && self
                .policy
                .required_builders
                .iter()
                .all(|r| backers.contains(r.as_str()) || self.unheard.contains(r.as_str()))
    }

    /// Could a content nobody has signed yet still gather enough unheard builders?
    fn fresh_could_meet(&self) -> bool {
        self.could_meet(&BTreeSet::new())
    }

    /// `on_dissent = "refuse"`: any two contents refuse; otherwise wait for every upstream,
    /// since a silent builder (or a heard one, through another upstream: a stolen key signing
    /// two contents) could still dissent.
    fn refuse_rule(&self) -> Decision {
        if self.groups.len() > 1 {
            // More votes never remove a dissent: final.
            return Decision::Refused {
                claims: self.claims(),
            };
        }
        let Some((content, backers)) = self.groups.iter().next() else {
            return if self.outstanding && self.fresh_could_meet() {
                Decision::Pending
            } else {
                Decision::Insufficient { best: None }
            };
        };
        if self.outstanding {
            // Cannot reach the quorum: a dissent could only turn this into a refusal, which
            // serves nothing either, so the answer is already final.
            return if self.could_meet(backers) || self.meets(backers) {
                Decision::Pending
            } else {
                self.insufficient()
            };
        }
        if self.meets(backers) {
            accepted(content, backers, BTreeSet::new())
        } else {
            self.insufficient()
        }
    }

    /// `on_dissent = "majority"`: accept the content that meets the policy with strictly more
    /// weight behind it than any other, final once no combination of unheard builders can
    /// match it.
    fn majority_rule(&self) -> Decision {
        let unheard = self.weight(&self.unheard);
        for (content, backers) in &self.groups {
            let others = self.groups.iter().filter(|(c, _)| *c != content);
            let strongest_other = others.clone().map(|(_, b)| self.weight(b)).max();
            if self.meets(backers) && self.weight(backers) > strongest_other.unwrap_or(0) + unheard
            {
                let dissenters = others
                    .flat_map(|(_, b)| b.iter().copied())
                    .filter(|b| !backers.contains(b))
                    .collect();
                return accepted(content, backers, dissenters);
            }
        }
        let someone_could_win =
            self.fresh_could_meet() || self.groups.values().any(|b| self.could_meet(b));
        if self.outstanding && !self.unheard.is_empty() && someone_could_win {
            Decision::Pending
        } else if self.groups.len() > 1 {
            Decision::Refused {
                claims: self.claims(),
            }
        } else {
            self.insufficient()
        }
    }

    /// Every content seen with its builders.
    fn claims(&self) -> Vec<(Content, Vec<String>)> {
        self.groups
            .iter()
            .map(|(c, b)| ((*c).clone(), names(b)))
            .collect()
    }

    /// Not enough agreement; names the best-supported content, if any.
    fn insufficient(&self) -> Decision {
        let best = self
            .groups
            .iter()
            .max_by_key(|(_, b)| self.weight(b))
            .map(|(c, b)| ((*c).clone(), names(b)));
        Decision::Insufficient { best }
    }
}

fn accepted(content: &Content, backers: &BTreeSet<&str>, dissenters: BTreeSet<&str>) -> Decision {
    Decision::Accepted {
        content: content.clone(),
        agreeing: names(backers),
        dissenters: names(&dissenters),
    }
}

fn names(builders: &BTreeSet<&str>) -> Vec<String> {
    builders.iter().map(|b| b.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::nar_hash::NarHash;

    /// A content told apart by a one-letter tag, carried in its NarHash's first byte.
    fn content(tag: &str) -> Content {
        Content {
            store_path: "/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10".into(),
            nar_hash: NarHash::from_digest([tag.as_bytes()[0]; 32]),
            nar_size: 1,
            references: vec![],
        }
    }

    fn policy(quorum: usize, on_dissent: OnDissent, builders: &[&str]) -> Policy {
        let weighted: Vec<(&str, u32)> = builders.iter().map(|b| (*b, 1)).collect();
        weighted_policy(quorum, on_dissent, &weighted)
    }

    fn weighted_policy(quorum: usize, on_dissent: OnDissent, builders: &[(&str, u32)]) -> Policy {
        Policy {
            quorum,
            required_builders: vec![],
            on_dissent,
            builders: builders
                .iter()
                .map(|(name, weight)| Elector {
                    name: name.to_string(),
                    weight: *weight,
                })
                .collect(),
            blocked: vec![],
        }
    }

    fn votes(v: &[(&str, &str)]) -> Vec<Vote> {
        v.iter()
            .map(|(b, c)| Vote {
                builder: b.to_string(),
                content: content(c),
            })
            .collect()
    }

    fn short(d: &Decision) -> String {
        match d {
            Decision::Accepted {
                content,
                agreeing,
                dissenters,
            } => format!(
                "accept {} by {} against {}",
                content.nar_hash.digest()[0] as char,
                agreeing.join("+"),
                dissenters.join("+")
            ),
            Decision::Refused { .. } => "refuse".into(),
            Decision::Insufficient { .. } => "insufficient".into(),
            Decision::Blocked {
                content, reason, ..
            } => format!(
                "blocked {} ({reason})",
                content.nar_hash.digest()[0] as char
            ),
            Decision::Pending => "pending".into(),
        }
    }

    use OnDissent::{Majority, Refuse};

    /// (quorum, policy, votes as (builder, content tag), outstanding, expected)
    type Case<'a> = (usize, OnDissent, &'a [(&'a str, &'a str)], bool, &'a str);

    #[test]
    fn decision_table() {
        let abc = ["a", "b", "c"];
        let cases: &[Case] = &[
            // Plain agreement.
            (
                2,
                Refuse,
                &[("a", "x"), ("b", "x"), ("c", "x")],
                false,
                "accept x by a+b+c against ",
            ),
            (
                2,
                Refuse,
                &[("a", "x"), ("b", "x")],
                false,
                "accept x by a+b against ",
            ),
            (2, Refuse, &[("a", "x")], false, "insufficient"),
            (1, Refuse, &[], false, "insufficient"),
            // The same builder twice (two keys or two upstreams) counts once.
            (2, Refuse, &[("a", "x"), ("a", "x")], false, "insufficient"),
            // Refuse: a dissent refuses, even with a quorum.
            (
                2,
                Refuse,
                &[("a", "x"), ("b", "x"), ("c", "y")],
                false,
                "refuse",
            ),
            (2, Refuse, &[("a", "x"), ("c", "y")], true, "refuse"),
            // Refuse waits for silent builders while upstreams are outstanding.
            (2, Refuse, &[("a", "x"), ("b", "x")], true, "pending"),
            (2, Refuse, &[], true, "pending"),
            // Majority: final once two agree, the slow third cannot change it (2 > 0 + 1).
            (
                2,
                Majority,
                &[("a", "x"), ("b", "x")],
                true,
                "accept x by a+b against ",
            ),
            (2, Majority, &[("a", "x")], true, "pending"),
            (2, Majority, &[("a", "x"), ("b", "y")], true, "pending"),
            (2, Majority, &[("a", "x"), ("b", "y")], false, "refuse"),
            (
                2,
                Majority,
                &[("a", "x"), ("b", "x"), ("c", "y")],
                false,
                "accept x by a+b against c",
            ),
            (1, Majority, &[("a", "x"), ("b", "y")], false, "refuse"),
            (1, Majority, &[("a", "x")], true, "pending"),
            (1, Majority, &[("a", "x")], false, "accept x by a against "),
            // Builders outside the electorate never count.
            (
                2,
                Refuse,
                &[("a", "x"), ("mallory", "x")],
                false,
                "insufficient",
            ),
        ];
        for (i, (q, od, v, outstanding, want)) in cases.iter().enumerate() {
            let got = decide(&policy(*q, *od, &abc), &votes(v), *outstanding);
            assert_eq!(
                short(&got),
                *want,
                "case {i}: {v:?} outstanding={outstanding}"
            );
        }
    }

    #[test]
    fn required_builder_must_be_among_the_agreeing() {
        let mut p = policy(2, Refuse, &["hydra", "b", "c"]);
        p.required_builders = vec!["hydra".into()];
        let d = decide(&p, &votes(&[("b", "x"), ("c", "x")]), false);
        assert_eq!(short(&d), "insufficient");
        let d = decide(&p, &votes(&[("b", "x"), ("hydra", "x")]), false);
        assert_eq!(short(&d), "accept x by b+hydra against ");
        // Majority: b and c agree, hydra unheard: not final, hydra may still come.
        p.on_dissent = Majority;
        let d = decide(&p, &votes(&[("b", "x"), ("c", "x")]), true);
        assert_eq!(short(&d), "pending");
    }

    #[test]
    fn refuse_waits_for_every_upstream_even_when_every_builder_was_heard() {
        let p = policy(2, Refuse, &["a", "b"]);
        assert_eq!(
            short(&decide(&p, &votes(&[("a", "x"), ("b", "x")]), true)),
            "pending"
        );
        assert_eq!(
            short(&decide(&p, &votes(&[("a", "x"), ("b", "x")]), false)),
            "accept x by a+b against "
        );
        // The same builder signing another content through a late upstream is a dissent.
        assert_eq!(
            short(&decide(
                &p,
                &votes(&[("a", "x"), ("b", "x"), ("a", "y")]),
                false
            )),
            "refuse"
        );
    }

    #[test]
    fn unreachable_quorum_is_final_early() {
        // Quorum 3 of 3 with refuse: one builder already dissents → refuse at once.
        let p = policy(3, Refuse, &["a", "b", "c"]);
        assert_eq!(
            short(&decide(&p, &votes(&[("a", "x"), ("b", "y")]), true)),
            "refuse"
        );
        // Majority, quorum 2 of 2, a and b disagree: nobody is left to break the tie.
        let p = policy(2, Majority, &["a", "b"]);
        assert_eq!(
            short(&decide(&p, &votes(&[("a", "x"), ("b", "y")]), true)),
            "refuse"
        );
    }

    #[test]
    fn majority_requires_a_strict_majority() {
        let p = policy(2, Majority, &["a", "b", "c", "d"]);
        let d = decide(
            &p,
            &votes(&[("a", "x"), ("b", "x"), ("c", "y"), ("d", "y")]),
            false,
        );
        assert_eq!(short(&d), "refuse");
    }

    /// (quorum, policy, builders with weights, votes, outstanding, expected)
    type WeightedCase<'a> = (
        usize,
        OnDissent,
        &'a [(&'a str, u32)],
        &'a [(&'a str, &'a str)],
        bool,
        &'a str,
    );

    #[test]
    fn weighted_decision_table() {
        let heavy_a = [("a", 2), ("b", 1), ("c", 1)];
        let heavier_a = [("a", 3), ("b", 1), ("c", 1)];
        let cases: &[WeightedCase] = &[
            // One builder of weight 2 meets quorum 2 alone; two of weight 1 also do.
            (
                2,
                Refuse,
                &heavy_a,
                &[("a", "x")],
                false,
                "accept x by a against ",
            ),
            (
                2,
                Refuse,
                &heavy_a,
                &[("b", "x"), ("c", "x")],
                false,
                "accept x by b+c against ",
            ),
            (3, Refuse, &heavy_a, &[("a", "x")], false, "insufficient"),
            (
                3,
                Refuse,
                &heavy_a,
                &[("a", "x"), ("c", "x")],
                false,
                "accept x by a+c against ",
            ),
            // A weight counts once per builder, however many keys or upstreams.
            (
                3,
                Refuse,
                &heavy_a,
                &[("a", "x"), ("a", "x")],
                false,
                "insufficient",
            ),
            // Majority by weight: 2 against 1 + 1 is not strictly more: refused.
            (
                2,
                Majority,
                &heavy_a,
                &[("a", "x"), ("b", "y"), ("c", "y")],
                false,
                "refuse",
            ),
            // 3 against 1 + 1 is.
            (
                2,
                Majority,
                &heavier_a,
                &[("a", "x"), ("b", "y"), ("c", "y")],
                false,
                "accept x by a against b+c",
            ),
            // The two light builders agreeing outweigh nobody when a weighs as much as both.
            (
                2,
                Majority,
                &heavy_a,
                &[("b", "y"), ("c", "y")],
                true,
                "pending",
            ),
            // Weight 1 of y vs weight 2 of x with quorum 2: x wins by weight, not by count.
            (
                2,
                Majority,
                &[("a", 2), ("b", 1)],
                &[("a", "x"), ("b", "y")],
                false,
                "accept x by a against b",
            ),
        ];
        for (i, (q, od, builders, v, outstanding, want)) in cases.iter().enumerate() {
            let got = decide(&weighted_policy(*q, *od, builders), &votes(v), *outstanding);
            assert_eq!(
                short(&got),
                *want,
                "case {i}: {v:?} outstanding={outstanding}"
            );
        }
    }

    #[test]
    fn finality_counts_the_weight_of_unheard_builders() {
        // Majority, quorum 2: a (weight 1) and b (weight 1) agree, c (weight 3) is unheard.
        // Equal weights would make this final (2 > 0 + 1); c's weight could still outvote
        // them (3 > 2), so the answer waits for c.
        let p = weighted_policy(2, Majority, &[("a", 1), ("b", 1), ("c", 3)]);
        let ab = votes(&[("a", "x"), ("b", "x")]);
        assert_eq!(short(&decide(&p, &ab, true)), "pending");
        assert_eq!(short(&decide(&p, &ab, false)), "accept x by a+b against ");
        // c (weight 3) alone for x: final at once, a and b together cannot match it.
        let c = votes(&[("c", "x")]);
        assert_eq!(short(&decide(&p, &c, true)), "accept x by c against ");
        // Refuse, quorum 4 of weights 1 + 1 + 1: unreachable, final at once.
        let p = weighted_policy(4, Refuse, &[("a", 1), ("b", 1), ("c", 1)]);
        assert_eq!(
            short(&decide(&p, &votes(&[("a", "x")]), true)),
            "insufficient"
        );
        // Refuse, quorum 4, the unheard c weighs 3: still reachable, so wait.
        let p = weighted_policy(4, Refuse, &[("a", 1), ("b", 1), ("c", 3)]);
        assert_eq!(short(&decide(&p, &votes(&[("a", "x")]), true)), "pending");
    }

    #[test]
    fn a_blocked_path_or_nar_hash_is_refused_even_with_a_quorum() {
        let mut p = policy(2, Refuse, &["a", "b"]);
        p.blocked = vec![Block {
            target: BlockTarget::NarHash(content("x").nar_hash),
            reason: "known bad".into(),
        }];
        let xx = votes(&[("a", "x"), ("b", "x")]);
        assert_eq!(short(&decide(&p, &xx, false)), "blocked x (known bad)");
        assert_eq!(decide(&p, &xx, false).outcome(), Some(Outcome::Refused));
        // Another content of the same path is not blocked by the NarHash.
        let yy = votes(&[("a", "y"), ("b", "y")]);
        assert_eq!(short(&decide(&p, &yy, false)), "accept y by a+b against ");
        // Still pending while pending: the block applies to what would be accepted.
        assert_eq!(short(&decide(&p, &xx, true)), "pending");
        p.blocked = vec![Block {
            target: BlockTarget::Path(content("y").store_path),
            reason: "withdrawn upstream".into(),
        }];
        assert_eq!(
            short(&decide(&p, &yy, false)),
            "blocked y (withdrawn upstream)"
        );
        assert!(!p.blocks_nar(&content("y").nar_hash));
    }
}
