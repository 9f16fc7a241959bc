//! Attestations pushed by builders that host no cache (DESIGN §13): how a pushed body splits
//! into narinfos, and which pushed narinfos are accepted.
//!
//! A rebuilder that keeps no binary cache sends `POST /api/v1/caches/<cache>/attestations`
//! with one or more signed narinfos separated by blank lines, in its cache's flavor:
//!
//! ```text
//! StorePath: /nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10
//! URL: nar/1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i.nar
//! Compression: none
//! NarHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i
//! NarSize: 205968
//! References: w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10
//! Sig: rebuilder-1:Ty3K…Dg==
//!
//! StorePath: /nix/store/…
//! ```
//!
//! Each narinfo's text is exactly its lines, each with its line end ([`split_narinfos`]), so a
//! Guix signature, which covers bytes, verifies as it was made. Reading a narinfo is the
//! flavor front end's ([`crate::flavor::FrontEnd::read_pushed`]); accepting it is [`judge`]'s:
//!
//! - accepted when at least one signature verifies under a key of the cache's builders, and
//!   no signature claiming such a key fails; signatures by keys no builder holds are ignored,
//!   as Nix ignores them, and nothing of them is kept;
//! - rejected whole when a signature by a builder's key does not verify, or cannot be read:
//!   the narinfo was tampered with or corrupted, and a pusher must not be able to make quorate
//!   record what no builder signed;
//! - rejected when nothing in it is signed by a builder of the cache.
//!
//! Only the valid attestations of accepted narinfos are recorded; a rejected narinfo leaves
//! nothing behind but the answer that says why.

use thiserror::Error;

use crate::attestation::{Attestation, Pushed, SigStatus};

/// The narinfos of a pushed body, in order: runs of lines separated by blank (empty or
/// whitespace-only) lines, each slice exactly its lines with their line ends.
pub fn split_narinfos(body: &str) -> Vec<&str> {
    let mut narinfos = Vec::new();
    let mut start = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let blank = line.trim().is_empty();
        match (blank, start) {
            (false, None) => start = Some(offset),
            (true, Some(from)) => {
                narinfos.push(&body[from..offset]);
                start = None;
            }
            _ => {}
        }
        offset += line.len();
    }
    if let Some(from) = start {
        narinfos.push(&body[from..]);
    }
    narinfos
}

/// What becomes of one pushed narinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded: its valid attestations, each by a builder of the cache.
    Accepted {
        /// The attestations to record (valid, by configured builders).
        attestations: Vec<Attestation>,
        /// Names of keys no builder holds that also signed it (ignored).
        ignored_keys: Vec<String>,
    },
    /// Not recorded, for this reason.
    Rejected(Rejection),
}

/// Why a pushed narinfo is not recorded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    /// No signature at all.
    #[error("the narinfo carries no signature")]
    Unsigned,
    /// Signed, but only by keys no builder of the cache holds.
    #[error("signed only by keys no builder of this cache holds: {}", keys.join(", "))]
    UnknownKeys {
        /// The keys' names (Nix) or the hex of their `q` (Guix).
        keys: Vec<String>,
    },
    /// A signature claims a builder's key and does not verify.
    #[error("the signature by key {key} (builder {builder}) does not verify")]
    BadSignature {
        /// The key it claims.
        key: String,
        /// The builder holding that key.
        builder: String,
    },
    /// A signature that cannot be read, so no key can be named.
    #[error("a signature cannot be read")]
    UnreadableSignature,
}

impl Rejection {
    /// A short machine-readable name of the reason, as the API reports it.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::UnknownKeys { .. } => "unknown_key",
            Rejection::BadSignature { .. } => "bad_signature",
            Rejection::UnreadableSignature => "unreadable_signature",
        }
    }
}

/// Whether a pushed narinfo is accepted, and what of it is recorded (see the module doc).
pub fn judge(pushed: Pushed) -> Verdict {
    let mut valid = Vec::new();
    let mut ignored_keys = Vec::new();
    for a in pushed.attestations {
        match (a.status, &a.builder) {
            (SigStatus::Valid, Some(_)) => valid.push(a),
            (SigStatus::Invalid, Some(builder)) => {
                return Verdict::Rejected(Rejection::BadSignature {
                    key: a.key_name.clone(),
                    builder: builder.clone(),
                })
            }
            (SigStatus::Invalid, None) if a.key_name.is_empty() => {
                return Verdict::Rejected(Rejection::UnreadableSignature)
            }
            // Unknown keys, and any verdict not attributed to a builder, count for nothing.
            _ => {
                if !ignored_keys.contains(&a.key_name) {
                    ignored_keys.push(a.key_name);
                }
            }
        }
    }
    match (valid.is_empty(), ignored_keys.is_empty()) {
        (false, _) => Verdict::Accepted {
            attestations: valid,
            ignored_keys,
        },
        (true, true) => Verdict::Rejected(Rejection::Unsigned),
        (true, false) => Verdict::Rejected(Rejection::UnknownKeys { keys: ignored_keys }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attestation::Content;
    use crate::builder::{Builder, BuilderKey};
    use crate::flavor::{front_end, FrontEnd, FrontEndError, Signer};
    use crate::protocol::guix_key::GuixSecretKey;
    use crate::protocol::guix_narinfo::{GuixNarInfo, NarUrl};
    use crate::protocol::nar_hash::NarHash;
    use crate::protocol::narinfo::fingerprint_of;
    use crate::protocol::nix_key::NixSecretKey;

    const PATH: &str = "/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10";
    const HASH: &str = "sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i";

    fn content() -> Content {
        Content {
            store_path: PATH.into(),
            nar_hash: NarHash::parse(HASH).expect("hash"),
            nar_size: 205968,
            references: vec![],
        }
    }

    /// A Nix narinfo of [`content`] with these `Sig:` lines.
    fn narinfo(sigs: &[String]) -> String {
        let mut text = format!(
            "StorePath: {PATH}\nURL: nar/x.nar\nCompression: none\nNarHash: {HASH}\nNarSize: 205968\nReferences: \n"
        );
        for s in sigs {
            text.push_str(&format!("Sig: {s}\n"));
        }
        text
    }

    fn signed_by(key: &NixSecretKey) -> String {
        key.sign(&fingerprint_of("/nix/store", &content()))
    }

    fn nix_cache(builder_keys: &[(&str, &NixSecretKey)]) -> Box<dyn FrontEnd> {
        let builders: Vec<Builder> = builder_keys
            .iter()
            .map(|(name, k)| Builder::new(*name, vec![BuilderKey::Nix(k.public())]))
            .collect();
        let signer = Signer::Nix(NixSecretKey::generate("quorate-1").expect("key"));
        front_end("c", "/nix/store", &builders, signer)
    }

    fn key(name: &str) -> NixSecretKey {
        NixSecretKey::generate(name).expect("key")
    }

    fn verdict(front: &dyn FrontEnd, text: &str) -> Verdict {
        judge(
            front
                .read_pushed("push:192.0.2.7", text, 7)
                .expect("readable"),
        )
    }

    #[test]
    fn a_body_splits_into_narinfos_at_blank_lines_keeping_each_ones_exact_text() {
        let body = "\nA: 1\nB: 2\n\n\n  \nC: 3\r\n\r\nD: 4";
        assert_eq!(split_narinfos(body), ["A: 1\nB: 2\n", "C: 3\r\n", "D: 4"]);
        assert!(split_narinfos("\n \n").is_empty());
        assert_eq!(split_narinfos("A: 1\n"), ["A: 1\n"]);
    }

    #[test]
    fn a_narinfo_signed_by_a_builder_is_accepted_as_pushed_and_unknown_keys_are_ignored() {
        let rebuilder = key("rebuilder-1");
        let stranger = key("stranger-1");
        let front = nix_cache(&[("rebuilder", &rebuilder)]);
        let text = narinfo(&[signed_by(&stranger), signed_by(&rebuilder)]);
        let Verdict::Accepted {
            attestations,
            ignored_keys,
        } = verdict(front.as_ref(), &text)
        else {
            panic!("not accepted");
        };
        assert_eq!(ignored_keys, ["stranger-1"]);
        assert_eq!(attestations.len(), 1);
        let a = &attestations[0];
        assert_eq!(a.builder.as_deref(), Some("rebuilder"));
        assert_eq!(a.status, SigStatus::Valid);
        assert_eq!(a.upstream, "push:192.0.2.7");
        assert_eq!(a.hash_part.as_str(), "w9yy7v61ipb5rx6i35zq1mvc2iqfmps1");
        assert_eq!(a.content, content());
    }

    #[test]
    fn a_narinfo_signed_only_by_unknown_keys_or_not_at_all_is_rejected() {
        let front = nix_cache(&[("rebuilder", &key("rebuilder-1"))]);
        assert_eq!(
            verdict(front.as_ref(), &narinfo(&[signed_by(&key("stranger-1"))])),
            Verdict::Rejected(Rejection::UnknownKeys {
                keys: vec!["stranger-1".into()]
            })
        );
        assert_eq!(
            verdict(front.as_ref(), &narinfo(&[])),
            Verdict::Rejected(Rejection::Unsigned)
        );
    }

    #[test]
    fn a_bad_signature_by_a_builders_key_rejects_the_whole_narinfo() {
        let a = key("a-1");
        let b = key("b-1");
        let front = nix_cache(&[("a", &a), ("b", &b)]);
        // b's key name over a signature b never made (a's bytes).
        let forged = format!("b-1:{}", signed_by(&a).split_once(':').expect("sig").1);
        let rejected = verdict(front.as_ref(), &narinfo(&[signed_by(&a), forged]));
        assert_eq!(
            rejected,
            Verdict::Rejected(Rejection::BadSignature {
                key: "b-1".into(),
                builder: "b".into()
            })
        );
        // A signature over other content (another NarSize) does not verify either.
        let other = Content {
            nar_size: 1,
            ..content()
        };
        let stale = a.sign(&fingerprint_of("/nix/store", &other));
        assert!(matches!(
            verdict(front.as_ref(), &narinfo(&[stale])),
            Verdict::Rejected(Rejection::BadSignature { .. })
        ));
    }

    #[test]
    fn a_pushed_narinfo_outside_the_caches_store_is_unreadable() {
        let front = nix_cache(&[("rebuilder", &key("rebuilder-1"))]);
        let text = narinfo(&[]).replace("/nix/store/", "/gnu/store/");
        assert!(front.read_pushed("push:x", &text, 0).is_err());
        assert!(matches!(
            front.read_pushed("push:x", "not a narinfo", 0),
            Err(FrontEndError::NixNarInfo(_))
        ));
    }

    #[test]
    fn a_guix_narinfo_signed_by_a_builder_is_accepted_when_pushed() {
        let builder_key = GuixSecretKey::generate().expect("randomness");
        let builders = [Builder::new(
            "g",
            vec![BuilderKey::Guix(*builder_key.public())],
        )];
        let signer = Signer::Guix(GuixSecretKey::generate().expect("randomness"));
        let front = front_end("guix", "/gnu/store", &builders, signer);
        let c = Content {
            store_path: "/gnu/store/0vpqfxbkx0ffrnhbws6g9qwhmliksz7f-hello-2.12".into(),
            ..content()
        };
        let url = NarUrl {
            url: "nar/lzip/0vpqfxbkx0ffrnhbws6g9qwhmliksz7f-hello-2.12".into(),
            compression: Some("lzip".into()),
            file_size: Some(10),
        };
        let text = GuixNarInfo::new(&c, None, None, vec![url])
            .and_then(|n| n.signed("rebuilder", &builder_key))
            .expect("signed")
            .to_string();
        match verdict(front.as_ref(), &text) {
            Verdict::Accepted { attestations, .. } => {
                assert_eq!(attestations.len(), 1);
                assert_eq!(attestations[0].builder.as_deref(), Some("g"));
                assert_eq!(attestations[0].content, c);
            }
            other => panic!("{other:?}"),
        }
        // One byte changed in the signed part: the builder's signature no longer holds.
        let tampered = text.replace("NarSize: 205968", "NarSize: 205969");
        assert!(matches!(
            verdict(front.as_ref(), &tampered),
            Verdict::Rejected(Rejection::BadSignature { .. })
        ));
    }
}
