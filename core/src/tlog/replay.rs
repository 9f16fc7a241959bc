//! Replaying log entries offline (DESIGN §12): an attestation entry's signature checked
//! again under the keys of a policy entry, and a decision entry decided again under its
//! policy from the attestation entries it cites. What `quorate audit check` runs, and what a
//! follower of another quorate's log runs before counting anything it imports.
//!
//! Contents are compared by [`ContentKey`]: path, NarHash, NarSize and the SHA-256 of the
//! space-joined references, so an entry that had to give its references by hash still
//! compares equal to one that lists them.

use crate::attestation::Content;
use crate::builder::{builder_of, Builder, BuilderKey, Revocation};
use crate::protocol::guix_key::GuixPublicKey;
use crate::protocol::guix_narinfo::GuixNarInfo;
use crate::protocol::nar_hash::NarHash;
use crate::protocol::nix_key::{check_sig, NixPublicKey};
use crate::protocol::signature::{SigCheck, SigStatus};
use crate::quorum::{decide, Decision, Policy, Vote};

use super::entry::{parse_policy, sha256_hex, signed_text_of, Parsed, SCHEME_GUIX, SCHEME_NIX};

/// Why an entry cannot be replayed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// A line the kind requires is missing or malformed.
    #[error("{kind} entry: {problem}")]
    Malformed {
        /// The entry's kind.
        kind: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The signed text is kept beside the log and was not handed in (or is not it).
    #[error("the signed text {0} kept beside the log is missing or does not match its hash")]
    MissingBeside(String),
}

fn malformed(kind: &'static str, problem: impl Into<String>) -> ReplayError {
    ReplayError::Malformed {
        kind,
        problem: problem.into(),
    }
}

/// What two claims must share to agree, as entries give it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentKey {
    /// The store path.
    pub store_path: String,
    /// `sha256:<nix32>`.
    pub nar_hash: String,
    /// NarSize.
    pub nar_size: u64,
    /// SHA-256 (hex) of the space-joined references.
    pub references_sha256: String,
}

impl ContentKey {
    /// The key of a content.
    pub fn of(c: &Content) -> ContentKey {
        ContentKey {
            store_path: c.store_path.clone(),
            nar_hash: c.nar_hash.to_string(),
            nar_size: c.nar_size,
            references_sha256: sha256_hex(c.references.join(" ").as_bytes()),
        }
    }

    /// The content lines of an entry (attestation or decision), `None` if it has none.
    pub fn from_entry(p: &Parsed) -> Option<ContentKey> {
        let references_sha256 = match (p.get("references"), p.get("references-sha256")) {
            (Some(list), _) => sha256_hex(list.as_bytes()),
            (None, Some(hex)) => hex.to_owned(),
            (None, None) => return None,
        };
        Some(ContentKey {
            store_path: p.get("path")?.to_owned(),
            nar_hash: NarHash::parse(p.get("nar-hash")?).ok()?.to_string(),
            nar_size: p.get("nar-size")?.parse().ok()?,
            references_sha256,
        })
    }

    /// A [`Content`] standing for this key in a quorum count (references by their hash).
    fn as_vote_content(&self) -> Option<Content> {
        Some(Content {
            store_path: self.store_path.clone(),
            nar_hash: NarHash::parse(&self.nar_hash).ok()?,
            nar_size: self.nar_size,
            references: vec![self.references_sha256.clone()],
        })
    }
}

/// A `quorate/policy/v1` entry read back: the rule and the builders with their keys.
#[derive(Clone, Debug)]
pub struct LoggedPolicy {
    /// The quorum rule.
    pub policy: Policy,
    /// Every builder and its keys, in the entry's order.
    pub builders: Vec<Builder>,
}

impl LoggedPolicy {
    /// Reads a policy entry: its rule ([`super::entry::parse_policy`]) and its builders with
    /// their keys, weights and revoked keys.
    pub fn from_entry(p: &Parsed) -> Result<LoggedPolicy, ReplayError> {
        const KIND: &str = "policy";
        let entry = parse_policy(p).map_err(|e| malformed(KIND, e.to_string()))?;
        let mut builders: Vec<Builder> = Vec::new();
        for (name, key) in &entry.keys {
            let key = parse_key(key)
                .ok_or_else(|| malformed(KIND, format!("builder {name}'s key {key:?}")))?;
            match builders.iter_mut().find(|b| b.name == *name) {
                Some(b) => b.keys.push(key),
                None => builders.push(Builder::new(name.clone(), vec![key])),
            }
        }
        for b in &mut builders {
            if let Some(e) = entry.policy.builders.iter().find(|e| e.name == b.name) {
                b.weight = e.weight;
            }
        }
        for (name, since, key) in &entry.revoked {
            let key = parse_key(key)
                .ok_or_else(|| malformed(KIND, format!("builder {name}'s revoked key {key:?}")))?;
            let builder = builders
                .iter_mut()
                .find(|b| b.name == *name)
                .ok_or_else(|| malformed(KIND, format!("a revoked key of no builder: {name}")))?;
            builder.revoked.push(Revocation { key, since: *since });
        }
        Ok(LoggedPolicy {
            policy: entry.policy,
            builders,
        })
    }

    /// The builder holding the key named `key_name`, if any.
    pub fn builder_of(&self, key_name: &str) -> Option<&str> {
        builder_of(&self.builders, key_name).map(|b| b.name.as_str())
    }
}

/// A key in the text form policy entries use: Nix `name:base64`, or a Guix sexp.
fn parse_key(text: &str) -> Option<BuilderKey> {
    if text.starts_with('(') {
        GuixPublicKey::parse(text).ok().map(BuilderKey::Guix)
    } else {
        text.parse::<NixPublicKey>().ok().map(BuilderKey::Nix)
    }
}

/// How an attestation's signed bytes are found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signed {
    /// Nix: the fingerprint, rebuilt from the entry's content lines.
    Fingerprint,
    /// The signed text, in the entry.
    Text(String),
    /// The signed text's SHA-256 (hex): the text is kept beside the log.
    Beside(String),
}

/// A `quorate/attestation/v1` entry read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedAttestation {
    /// The cache it was recorded for.
    pub cache: String,
    /// What it claims.
    pub content: ContentKey,
    /// `nix-fingerprint` or `guix-narinfo`.
    pub scheme: String,
    /// The key name (Nix) or hex `q` (Guix) the signature claims.
    pub key_name: String,
    /// The builder the logging quorate attributed it to.
    pub builder: Option<String>,
    /// The upstream (or other origin) it came through.
    pub upstream: String,
    /// The signature as it appeared.
    pub signature: String,
    /// Where the signed bytes are.
    pub signed: Signed,
    /// The verdict logged.
    pub status: SigStatus,
    /// When the logging quorate first recorded it (Unix ms): what a revocation is compared
    /// with.
    pub first_seen: i64,
}

impl LoggedAttestation {
    /// Reads an attestation entry.
    pub fn from_entry(p: &Parsed) -> Result<LoggedAttestation, ReplayError> {
        const KIND: &str = "attestation";
        if p.kind != "quorate/attestation/v1" {
            return Err(malformed(KIND, format!("kind {:?}", p.kind)));
        }
        let need = |key: &str| {
            p.get(key)
                .map(str::to_owned)
                .ok_or_else(|| malformed(KIND, format!("no {key}")))
        };
        let scheme = need("scheme")?;
        let signed = match (p.get("signed"), p.get("signed-sha256"), scheme.as_str()) {
            (Some(text), None, SCHEME_GUIX) => Signed::Text(text.to_owned()),
            (None, Some(hex), SCHEME_GUIX | SCHEME_NIX) => Signed::Beside(hex.to_owned()),
            (None, None, SCHEME_NIX) => Signed::Fingerprint,
            _ => {
                return Err(malformed(
                    KIND,
                    format!("scheme {scheme:?} with its signed lines"),
                ))
            }
        };
        let status = p
            .get("status")
            .and_then(SigStatus::parse)
            .ok_or_else(|| malformed(KIND, "no status"))?;
        Ok(LoggedAttestation {
            cache: need("cache")?,
            content: ContentKey::from_entry(p).ok_or_else(|| malformed(KIND, "no content"))?,
            scheme,
            key_name: need("key")?,
            builder: p.get("builder").map(str::to_owned),
            upstream: need("upstream")?,
            signature: need("signature")?,
            signed,
            status,
            first_seen: p
                .get("first-seen")
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| malformed(KIND, "no first-seen"))?,
        })
    }

    /// The SHA-256 of a signed text kept beside the log, when this entry names one.
    pub fn beside(&self) -> Option<&str> {
        match &self.signed {
            Signed::Beside(hex) => Some(hex),
            Signed::Fingerprint | Signed::Text(_) => None,
        }
    }

    /// Checks the signature again under `builders`' keys. `entry` is the parsed entry (for a
    /// fingerprint rebuilt from its lines); `beside` the text kept beside the log when the
    /// entry names one by hash. A signed text must also claim the entry's content: a valid
    /// signature over something else is [`SigStatus::Invalid`].
    pub fn check(
        &self,
        entry: &Parsed,
        builders: &[Builder],
        beside: Option<&str>,
    ) -> Result<SigCheck, ReplayError> {
        let text = match &self.signed {
            Signed::Fingerprint => signed_text_of(entry)
                .ok_or_else(|| malformed("attestation", "no fingerprint to rebuild"))?,
            Signed::Text(text) => text.clone(),
            Signed::Beside(hex) => match beside {
                Some(text) if sha256_hex(text.as_bytes()) == *hex => text.to_owned(),
                _ => return Err(ReplayError::MissingBeside(hex.clone())),
            },
        };
        Ok(match self.scheme.as_str() {
            SCHEME_NIX => self.check_nix(&text, builders),
            _ => self.check_guix(&text, builders),
        })
    }

    /// The narinfo this attestation stands for, as an upstream could have served it (its
    /// signature included, its NAR URL of no use): what a follower of the log observes like
    /// any upstream answer, verifying the signature with its own keys. `None` when the entry
    /// cannot rebuild it (references given by hash, the text beside the log not handed in).
    pub fn narinfo(&self, entry: &Parsed, beside: Option<&str>) -> Option<String> {
        let beside = match (&self.signed, beside) {
            (Signed::Beside(hex), Some(text)) if sha256_hex(text.as_bytes()) == *hex => Some(text),
            (Signed::Beside(_), _) => return None,
            _ => None,
        };
        if self.scheme == SCHEME_GUIX {
            let signed = match &self.signed {
                Signed::Text(text) => text.as_str(),
                _ => beside?,
            };
            return Some(format!("{signed}Signature: {}\n", self.signature));
        }
        // Nix: the content lines (references listed, or from the fingerprint kept beside).
        let references = match (entry.get("references"), beside) {
            (Some(list), _) => list.to_owned(),
            (None, Some(fingerprint)) => fingerprint
                .splitn(5, ';')
                .nth(4)?
                .split(',')
                .filter(|r| !r.is_empty())
                .map(|r| r.rsplit('/').next().unwrap_or(r))
                .collect::<Vec<_>>()
                .join(" "),
            (None, None) => return None,
        };
        let c = &self.content;
        let key = NarHash::parse(&c.nar_hash).ok()?.key();
        let mut text = format!(
            "StorePath: {}\nURL: nar/{key}.nar\nCompression: none\nNarHash: {}\nNarSize: {}\n\
             References: {references}\n",
            c.store_path, c.nar_hash, c.nar_size
        );
        if let Some(deriver) = entry.get("deriver") {
            text.push_str(&format!("Deriver: {deriver}\n"));
        }
        if let Some(ca) = entry.get("ca") {
            text.push_str(&format!("CA: {ca}\n"));
        }
        text.push_str(&format!("Sig: {}\n", self.signature));
        Some(text)
    }

    fn check_nix(&self, fingerprint: &str, builders: &[Builder]) -> SigCheck {
        let keys: Vec<NixPublicKey> = builders
            .iter()
            .flat_map(|b| b.keys.iter().filter_map(BuilderKey::as_nix).cloned())
            .collect();
        let check = check_sig(&self.signature, fingerprint, &keys);
        if check.is_valid() && !nix_fingerprint_claims(fingerprint, &self.content) {
            return SigCheck::Invalid {
                key_name: self.key_name.clone(),
                reason: crate::protocol::signature::InvalidReason::BadSignature,
            };
        }
        check
    }

    fn check_guix(&self, signed: &str, builders: &[Builder]) -> SigCheck {
        let keys: Vec<GuixPublicKey> = builders
            .iter()
            .flat_map(|b| b.keys.iter().filter_map(BuilderKey::as_guix).cloned())
            .collect();
        let narinfo = format!("{signed}Signature: {}\n", self.signature);
        let parsed = match GuixNarInfo::parse(&narinfo) {
            Ok(ni) => ni,
            Err(e) => {
                return SigCheck::Malformed {
                    reason: e.to_string(),
                }
            }
        };
        let check = parsed
            .verify_signature(&keys)
            .unwrap_or(SigCheck::Malformed {
                reason: "unsigned".into(),
            });
        if check.is_valid() && ContentKey::of(&parsed.content()) != self.content {
            return SigCheck::Invalid {
                key_name: self.key_name.clone(),
                reason: crate::protocol::signature::InvalidReason::BadSignature,
            };
        }
        check
    }
}

/// Whether a Nix fingerprint (`1;path;hash;size;refs`) claims `content`. References in a
/// fingerprint are sorted full paths; the entry's are basenames in narinfo order (sorted: a
/// Nix narinfo with unsorted references is refused when observed).
fn nix_fingerprint_claims(fingerprint: &str, content: &ContentKey) -> bool {
    let mut parts = fingerprint.splitn(5, ';');
    let (Some("1"), Some(path), Some(hash), Some(size), Some(refs)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let basenames: Vec<&str> = refs
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| r.rsplit('/').next().unwrap_or(r))
        .collect();
    path == content.store_path
        && hash == content.nar_hash
        && size == content.nar_size.to_string()
        && sha256_hex(basenames.join(" ").as_bytes()) == content.references_sha256
}

/// What an attestation counts for in a replay: its builder (under the policy) and content,
/// when its signature verified again and it was first recorded before any revocation of
/// its key.
pub fn vote_of(
    a: &LoggedAttestation,
    check: &SigCheck,
    policy: &LoggedPolicy,
) -> Option<(String, ContentKey)> {
    if check.status() != SigStatus::Valid {
        return None;
    }
    let builder = builder_of(&policy.builders, check.key_name())?;
    if builder.revoked_at(check.key_name(), a.first_seen) {
        return None; // first recorded after its key was revoked
    }
    Some((builder.name.clone(), a.content.clone()))
}

/// The decision `policy` reaches from `votes` (builder, content), every upstream answered.
pub fn redecide(policy: &LoggedPolicy, votes: &[(String, ContentKey)]) -> Decision {
    let votes: Vec<Vote> = votes
        .iter()
        .filter_map(|(builder, key)| {
            Some(Vote {
                builder: builder.clone(),
                content: key.as_vote_content()?,
            })
        })
        .collect();
    decide(&policy.policy, &votes, false)
}

/// The content a replayed decision accepted, as a key.
pub fn accepted_key(d: &Decision) -> Option<ContentKey> {
    let c = d.accepted_content()?;
    Some(ContentKey {
        store_path: c.store_path.clone(),
        nar_hash: c.nar_hash.to_string(),
        nar_size: c.nar_size,
        references_sha256: c.references.first()?.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flavor::{front_end, Signer};
    use crate::protocol::guix_key::GuixSecretKey;
    use crate::protocol::guix_narinfo::NarUrl;
    use crate::protocol::narinfo::fingerprint_of;
    use crate::protocol::nix_key::NixSecretKey;
    use crate::quorum::{Elector, OnDissent};
    use crate::tlog::entry::{self, parse};

    const HASH: &str = "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw";

    fn content(store: &str, size: u64) -> Content {
        Content {
            store_path: format!("{store}/wa25gr1jwvlca76cr58b77168s56r7fz-hello-1"),
            nar_hash: NarHash::parse(HASH).unwrap(),
            nar_size: size,
            references: vec!["wa25gr1jwvlca76cr58b77168s56r7fz-hello-1".into()],
        }
    }

    fn policy_of(builders: &[Builder], quorum: usize, on_dissent: OnDissent) -> LoggedPolicy {
        let p = Policy {
            quorum,
            required_builders: vec![],
            on_dissent,
            builders: builders
                .iter()
                .map(|b| Elector {
                    name: b.name.clone(),
                    weight: b.weight,
                })
                .collect(),
            blocked: vec![],
        };
        let text = entry::policy("c", &p, builders);
        LoggedPolicy::from_entry(&parse(&text).unwrap()).expect("a policy entry reads back")
    }

    /// The attestation entries quorate logs for a narinfo signed as given, read back.
    fn logged(
        builders: &[Builder],
        store: &str,
        narinfo: &str,
    ) -> Vec<(Parsed, LoggedAttestation)> {
        let signer = if store == "/gnu/store" {
            Signer::Guix(GuixSecretKey::generate().unwrap())
        } else {
            Signer::Nix(NixSecretKey::generate("q").unwrap())
        };
        let fe = front_end("c", store, builders, signer);
        let hash_part = "wa25gr1jwvlca76cr58b77168s56r7fz".parse().unwrap();
        let seen = fe
            .observe("http://up", &hash_part, narinfo, 1)
            .expect("observed");
        seen.attestations
            .iter()
            .map(|a| {
                let p = parse(&entry::attestation(a).entry).unwrap();
                let l = LoggedAttestation::from_entry(&p).expect("reads back");
                (p, l)
            })
            .collect()
    }

    fn nix_narinfo(c: &Content, sig: &str) -> String {
        format!(
            "StorePath: {}\nURL: nar/x.nar\nCompression: none\nNarHash: {}\nNarSize: {}\n\
             References: {}\nSig: {sig}\n",
            c.store_path,
            c.nar_hash,
            c.nar_size,
            c.references.join(" ")
        )
    }

    /// Builder a (a Nix key), a narinfo of hello signed by it, and its logged attestation.
    fn signed_by_a() -> (Vec<Builder>, String, Parsed, LoggedAttestation) {
        let key = NixSecretKey::generate("builder-a-1").unwrap();
        let builders = vec![Builder::new("a", vec![BuilderKey::Nix(key.public())])];
        let c = content("/nix/store", 120);
        let text = nix_narinfo(&c, &key.sign(&fingerprint_of("/nix/store", &c)));
        let mut logged = logged(&builders, "/nix/store", &text);
        assert_eq!(logged.len(), 1, "one attestation");
        let (p, a) = logged.remove(0);
        (builders, text, p, a)
    }

    #[test]
    fn a_logged_nix_signature_verifies_again_and_a_tampered_entry_does_not() {
        let (builders, text, p, a) = &signed_by_a();
        assert_eq!(a.signed, Signed::Fingerprint);
        assert!(a.check(p, builders, None).unwrap().is_valid());
        let policy = policy_of(builders, 1, OnDissent::Refuse);
        let check = a.check(p, &policy.builders, None).unwrap();
        assert_eq!(
            vote_of(a, &check, &policy),
            Some(("a".into(), a.content.clone()))
        );

        let tampered = String::from_utf8(
            entry::attestation(&{
                let mut fe_att = quorate_attestation(builders, text);
                fe_att.content.nar_size = 121;
                fe_att
            })
            .entry,
        )
        .unwrap();
        let p2 = parse(tampered.as_bytes()).unwrap();
        let a2 = LoggedAttestation::from_entry(&p2).unwrap();
        assert!(!a2.check(&p2, builders, None).unwrap().is_valid());
    }

    fn quorate_attestation(builders: &[Builder], text: &str) -> crate::attestation::Attestation {
        let fe = front_end(
            "c",
            "/nix/store",
            builders,
            Signer::Nix(NixSecretKey::generate("q").unwrap()),
        );
        let hash_part = "wa25gr1jwvlca76cr58b77168s56r7fz".parse().unwrap();
        fe.observe("http://up", &hash_part, text, 1)
            .unwrap()
            .attestations
            .remove(0)
    }

    #[test]
    fn a_logged_guix_signature_verifies_again_from_its_signed_text() {
        let key = GuixSecretKey::generate().unwrap();
        let builders = [Builder::new("g", vec![BuilderKey::Guix(*key.public())])];
        let c = content("/gnu/store", 120);
        let url = NarUrl {
            url: "nar/zstd/x".into(),
            compression: Some("zstd".into()),
            file_size: Some(99),
        };
        let text = GuixNarInfo::new(&c, None, None, vec![url])
            .unwrap()
            .signed("host", &key)
            .unwrap()
            .to_string();
        let [(p, a)] = &logged(&builders, "/gnu/store", &text)[..] else {
            panic!("one attestation")
        };
        assert!(matches!(a.signed, Signed::Text(_)));
        assert!(a.check(p, &builders, None).unwrap().is_valid());
        // Under a policy without that key, it is an unknown key.
        let other = [Builder::new(
            "g",
            vec![BuilderKey::Guix(
                *GuixSecretKey::generate().unwrap().public(),
            )],
        )];
        assert_eq!(
            a.check(p, &other, None).unwrap().status(),
            SigStatus::UnknownKey
        );
        // A signed text claiming another content does not vouch for the entry's.
        let mut lying = a.clone();
        lying.content.nar_size = 121;
        assert!(!lying.check(p, &builders, None).unwrap().is_valid());
        // One byte of the signed text changed: the signature no longer covers it.
        let Signed::Text(t) = &a.signed else {
            unreachable!()
        };
        let mut changed = a.clone();
        changed.signed = Signed::Text(t.replace("NarSize: 120", "NarSize: 121"));
        assert!(!changed.check(p, &builders, None).unwrap().is_valid());
    }

    #[test]
    fn the_narinfo_an_entry_stands_for_is_observed_again_with_the_same_verdict() {
        let (builders, _, p, a) = &signed_by_a();
        let again = a.narinfo(p, None).expect("rebuilt");
        let [(_, b)] = &logged(builders, "/nix/store", &again)[..] else {
            panic!("one attestation")
        };
        assert_eq!(b.status, SigStatus::Valid);
        assert_eq!(b.content, a.content);

        let g = GuixSecretKey::generate().unwrap();
        let gb = [Builder::new("g", vec![BuilderKey::Guix(*g.public())])];
        let gc = content("/gnu/store", 7);
        let gtext = GuixNarInfo::new(&gc, None, None, vec![])
            .unwrap()
            .signed("host", &g)
            .unwrap()
            .to_string();
        let [(gp, ga)] = &logged(&gb, "/gnu/store", &gtext)[..] else {
            panic!("one attestation")
        };
        let gagain = ga.narinfo(gp, None).expect("rebuilt");
        let [(_, gb2)] = &logged(&gb, "/gnu/store", &gagain)[..] else {
            panic!("one attestation")
        };
        assert_eq!(gb2.status, SigStatus::Valid);
    }

    #[test]
    fn a_text_kept_beside_the_log_must_be_handed_in_and_match_its_hash() {
        let mut a = LoggedAttestation {
            cache: "c".into(),
            content: ContentKey::of(&content("/gnu/store", 1)),
            scheme: SCHEME_GUIX.into(),
            key_name: "k".into(),
            builder: None,
            upstream: "u".into(),
            signature: "1;h;x".into(),
            signed: Signed::Beside(sha256_hex(b"text")),
            status: SigStatus::Valid,
            first_seen: 0,
        };
        let p = parse(b"quorate/attestation/v1\n").unwrap();
        assert!(matches!(
            a.check(&p, &[], None),
            Err(ReplayError::MissingBeside(_))
        ));
        assert!(matches!(
            a.check(&p, &[], Some("other")),
            Err(ReplayError::MissingBeside(_))
        ));
        assert!(a.check(&p, &[], Some("text")).is_ok());
        a.signed = Signed::Fingerprint;
        assert!(
            a.check(&p, &[], None).is_err(),
            "no lines to rebuild it from"
        );
    }

    #[test]
    fn an_attestation_first_recorded_after_its_keys_revocation_does_not_vote() {
        let (builders, _, p, a) = &signed_by_a();
        let mut revoking = builders.clone();
        let key = revoking[0].keys[0].clone();
        revoking[0].revoked.push(Revocation { key, since: 100 });
        let policy = policy_of(&revoking, 1, OnDissent::Refuse);
        assert_eq!(
            policy.builders[0].revoked.len(),
            1,
            "read back from the entry"
        );
        let check = a.check(p, &policy.builders, None).unwrap();
        assert!(check.is_valid(), "the signature itself still verifies");
        let at = |first_seen| LoggedAttestation {
            first_seen,
            ..a.clone()
        };
        assert!(
            vote_of(&at(99), &check, &policy).is_some(),
            "before: counts"
        );
        assert_eq!(
            vote_of(&at(100), &check, &policy),
            None,
            "from since on: not"
        );
    }

    #[test]
    fn a_decision_replays_under_its_policy() {
        let builders: Vec<Builder> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                Builder::new(
                    *n,
                    vec![BuilderKey::Nix(
                        NixSecretKey::generate(&format!("{n}-1")).unwrap().public(),
                    )],
                )
            })
            .collect();
        let x = ContentKey::of(&content("/nix/store", 120));
        let y = ContentKey::of(&content("/nix/store", 121));
        let refuse = policy_of(&builders, 2, OnDissent::Refuse);
        let majority = policy_of(&builders, 2, OnDissent::Majority);
        let v = |b: &str, c: &ContentKey| (b.to_owned(), c.clone());
        assert_eq!(
            accepted_key(&redecide(&refuse, &[v("a", &x), v("b", &x)])),
            Some(x.clone())
        );
        assert_eq!(accepted_key(&redecide(&refuse, &[v("a", &x)])), None);
        let split = [v("a", &x), v("b", &x), v("c", &y)];
        assert_eq!(accepted_key(&redecide(&refuse, &split)), None);
        assert_eq!(accepted_key(&redecide(&majority, &split)), Some(x));
    }

    #[test]
    fn a_policy_entry_reads_back_with_guix_and_nix_keys() {
        let g = GuixSecretKey::generate().unwrap();
        let builders = [
            Builder::new("g", vec![BuilderKey::Guix(*g.public())]),
            Builder::new(
                "n",
                vec![
                    BuilderKey::Nix(NixSecretKey::generate("n-1").unwrap().public()),
                    BuilderKey::Nix(NixSecretKey::generate("n-2").unwrap().public()),
                ],
            ),
        ];
        let p = policy_of(&builders, 1, OnDissent::Majority);
        let names: Vec<&str> = p.policy.builders.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["g", "n"]);
        assert_eq!(p.builders[1].keys.len(), 2);
        assert_eq!(p.builder_of(&g.public().q_hex()), Some("g"));
        assert_eq!(p.builder_of("n-2"), Some("n"));
        for bad in [
            "quorate/policy/v1\ncache c\n",
            "quorate/policy/v1\nquorum 1\non-dissent refuse\nbuilder x nokey\n",
        ] {
            assert!(
                LoggedPolicy::from_entry(&parse(bad.as_bytes()).unwrap()).is_err(),
                "{bad}"
            );
        }
    }
}
