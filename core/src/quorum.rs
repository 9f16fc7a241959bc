//! The quorum rule (DESIGN §3): (attestations, policy) → decision. Pure, no I/O; the heart of
//! quorate, table-tested below.
//!
//! Votes are grouped by [`Content`] (store path, NarHash, NarSize, References) and counted by
//! distinct *builder*: several keys or upstreams of one builder count once. The rule also says
//! when an answer is *final*: every configured builder not heard from yet, while some upstream
//! is still outstanding, is counted as a possible vote for anything. So with `majority`, quorum
//! 2 and builders a, b, c, once a and b agree the answer is final (2 > 0 + 1) and a slow third
//! upstream is not waited for; with `refuse`, a silent builder could still dissent, so the
//! answer is final only when every upstream has answered or failed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::attestation::{Attestation, Content};

/// What a dissenting trusted builder does to the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDissent {
    /// Any trusted builder attesting another content refuses the path (the default).
    Refuse,
    /// Accept the content with quorum that strictly more builders back than any other.
    Majority,
}

/// A cache's quorum policy.
#[derive(Clone, Debug, Serialize)]
pub struct Policy {
    /// Minimum number of distinct agreeing builders.
    pub quorum: usize,
    /// Builders that must be among the agreeing ones.
    pub required_builders: Vec<String>,
    /// Dissent handling.
    pub on_dissent: OnDissent,
    /// Every configured builder (the electorate): unheard ones may still vote.
    pub builders: Vec<String>,
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
            Decision::Insufficient { .. } | Decision::Pending => vec![],
        }
    }
}

/// How a decision about a store path ended, as recorded (with history) and reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Enough builders agreed: the path is served.
    Accepted,
    /// Builders disagreed under `on_dissent = "refuse"` (or no majority): 404.
    Refused,
    /// Not enough attestations to reach the quorum: 404.
    Insufficient,
    /// An earlier acceptance taken back (a late dissent): no longer served.
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
    match policy.on_dissent {
        OnDissent::Refuse => tally.refuse_rule(),
        OnDissent::Majority => tally.majority_rule(),
    }
}

/// The votes grouped by content, and the builders who could still vote.
struct Tally<'a> {
    policy: &'a Policy,
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
        let electorate: BTreeSet<&str> = policy.builders.iter().map(String::as_str).collect();
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
            groups,
            unheard,
            outstanding,
        }
    }

    /// Do `backers` meet the policy now?
    fn meets(&self, backers: &BTreeSet<&str>) -> bool {
        backers.len() >= self.policy.quorum
            && self
                .policy
                .required_builders
                .iter()
                .all(|r| backers.contains(r.as_str()))
    }

    /// Could `backers` still meet the policy if every unheard builder joined them?
    fn could_meet(&self, backers: &BTreeSet<&str>) -> bool {
        backers.len() + self.unheard.len() >= self.policy.quorum
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
    /// builders than any other, final once no combination of unheard builders can match it.
    fn majority_rule(&self) -> Decision {
        for (content, backers) in &self.groups {
            let others = self.groups.iter().filter(|(c, _)| *c != content);
            let strongest_other = others.clone().map(|(_, b)| b.len()).max().unwrap_or(0);
            if self.meets(backers) && backers.len() > strongest_other + self.unheard.len() {
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
            .max_by_key(|(_, b)| b.len())
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
        Policy {
            quorum,
            required_builders: vec![],
            on_dissent,
            builders: builders.iter().map(|s| s.to_string()).collect(),
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
}
