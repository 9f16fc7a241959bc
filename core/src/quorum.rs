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

use serde::Serialize;

use crate::attestation::Content;

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
}

/// Apply `policy` to `votes`. `outstanding` says whether some upstream may still answer;
/// when false the outcome is always final.
pub fn decide(policy: &Policy, votes: &[Vote], outstanding: bool) -> Decision {
    let electorate: BTreeSet<&str> = policy.builders.iter().map(String::as_str).collect();
    let mut groups: BTreeMap<&Content, BTreeSet<&str>> = BTreeMap::new();
    let mut heard: BTreeSet<&str> = BTreeSet::new();
    for v in votes {
        // Only configured builders vote; the caller should not pass others, but the rule must
        // not depend on that.
        if electorate.contains(v.builder.as_str()) {
            groups
                .entry(&v.content)
                .or_default()
                .insert(v.builder.as_str());
            heard.insert(v.builder.as_str());
        }
    }
    // Builders that might still vote for anything.
    let unheard: BTreeSet<&str> = if outstanding {
        electorate.difference(&heard).copied().collect()
    } else {
        BTreeSet::new()
    };
    let u = unheard.len();
    let meets = |backers: &BTreeSet<&str>| {
        backers.len() >= policy.quorum
            && policy
                .required_builders
                .iter()
                .all(|r| backers.contains(r.as_str()))
    };
    // Could `backers` still meet the policy if every unheard builder joined it?
    let could_meet = |backers: &BTreeSet<&str>| {
        backers.len() + u >= policy.quorum
            && policy
                .required_builders
                .iter()
                .all(|r| backers.contains(r.as_str()) || unheard.contains(r.as_str()))
    };
    let names = |s: &BTreeSet<&str>| s.iter().map(|b| b.to_string()).collect::<Vec<_>>();
    let claims = || {
        groups
            .iter()
            .map(|(c, b)| ((*c).clone(), names(b)))
            .collect::<Vec<_>>()
    };
    let best = || {
        groups
            .iter()
            .max_by_key(|(_, b)| b.len())
            .map(|(c, b)| ((*c).clone(), names(b)))
    };
    // A content nobody has signed yet could still gather every unheard builder.
    let fresh_could_meet = could_meet(&BTreeSet::new());

    match policy.on_dissent {
        OnDissent::Refuse => {
            if groups.len() > 1 {
                // More votes never remove a dissent: final.
                return Decision::Refused { claims: claims() };
            }
            match groups.iter().next() {
                Some((content, backers)) => {
                    if outstanding {
                        // A silent builder could still dissent (or complete the quorum); so
                        // could a heard one, through another upstream (a stolen key signing
                        // two contents): refuse waits for every upstream.
                        if could_meet(backers) || meets(backers) {
                            return Decision::Pending;
                        }
                        // Cannot reach the quorum; a dissent could only turn this into a
                        // refusal, which serves nothing either.
                        return Decision::Insufficient { best: best() };
                    }
                    if meets(backers) {
                        Decision::Accepted {
                            content: (*content).clone(),
                            agreeing: names(backers),
                            dissenters: vec![],
                        }
                    } else {
                        Decision::Insufficient { best: best() }
                    }
                }
                None if outstanding && fresh_could_meet => Decision::Pending,
                None => Decision::Insufficient { best: None },
            }
        }
        OnDissent::Majority => {
            for (content, backers) in &groups {
                let strongest_other = groups
                    .iter()
                    .filter(|(c, _)| *c != content)
                    .map(|(_, b)| b.len())
                    .max()
                    .unwrap_or(0);
                // Final once no combination of unheard builders can match or beat it.
                if meets(backers) && backers.len() > strongest_other + u {
                    let dissenters: BTreeSet<&str> = groups
                        .iter()
                        .filter(|(c, _)| *c != content)
                        .flat_map(|(_, b)| b.iter().copied())
                        .filter(|b| !backers.contains(b))
                        .collect();
                    return Decision::Accepted {
                        content: (*content).clone(),
                        agreeing: names(backers),
                        dissenters: names(&dissenters),
                    };
                }
            }
            if outstanding && u > 0 && (fresh_could_meet || groups.values().any(could_meet)) {
                return Decision::Pending;
            }
            if groups.len() > 1 {
                Decision::Refused { claims: claims() }
            } else {
                Decision::Insufficient { best: best() }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(tag: &str) -> Content {
        Content {
            store_path: "/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10".into(),
            nar_hash: format!("sha256:{tag}"),
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
                &content.nar_hash[7..],
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
