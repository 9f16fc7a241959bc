//! The log's entries (DESIGN §12): canonical text, one format per kind, each enough to
//! re-verify a builder signature offline or to replay a decision under its policy.
//!
//! ```text
//! quorate/attestation/v1                      quorate/decision/v1
//! cache nixos                                 cache nixos
//! path /nix/store/wa25…-hello-1               hash-part wa25gr1jwvlca76cr58b77168s56r7fz
//! nar-hash sha256:04zw…dqw                    verdict accepted
//! nar-size 120                                path /nix/store/wa25…-hello-1
//! references                                  nar-hash sha256:04zw…dqw
//! deriver p2is…-hello-1.drv                   nar-size 120
//! upstream http://127.0.0.1:41234             references
//! key upstream-A-1                            policy 0
//! builder a                                   support 1 2
//! scheme nix-fingerprint                      dissent
//! signature upstream-A-1:UhVR…Ag==            decided-at 1764431000000
//! status valid
//!
//! quorate/policy/v1
//! cache nixos
//! quorum 2
//! on-dissent refuse
//! required
//! builder a upstream-A-1:3Xk…=
//! builder b upstream-B-1:Qp0…=
//! builder b upstream-B-2:Zx9…=
//! weight 2 a
//! revoked 1793491200000 b upstream-B-1:Qp0…=
//! blocked-path /nix/store/wa25…-hello-1 CVE-2026-0001
//! blocked-nar-hash sha256:04zw…dqw
//! ```
//!
//! A policy entry lists, after its builders' keys (config order): a `weight <n> <builder>`
//! line for each builder whose weight is not 1, a `revoked <since, Unix ms> <builder> <key>`
//! line per revoked key, and a `blocked-path <path> [<reason>]` or `blocked-nar-hash
//! <nar-hash> [<reason>]` line per block list entry, each in config order. An entry without
//! them (every entry before weights existed) means weight 1 for all, nothing revoked, nothing
//! blocked; a policy without them renders exactly as it did, so upgrading logs no new one.
//!
//! One `key value` per line, in this order, `\n`-terminated; a line whose value is absent is
//! left out (`deriver`, `ca`, `builder`, a decision's content), a list is space-separated
//! and may be empty (`references` alone). Values come from upstreams: a `\` or a newline in
//! one is escaped (`\\`, `\n`), so an entry always has exactly the lines it says. A Nix
//! signature is over the fingerprint `1;<path>;<nar-hash>;<nar-size>;<references as store
//! paths>` rebuilt from these lines (`scheme nix-fingerprint`). A Guix signature covers its
//! narinfo up to the `Signature` line, which no content rebuilds (its URLs are signed too):
//! `scheme guix-narinfo` entries carry that text as `signed <text>` after the signature.
//! An entry is at most [`MAX_ENTRY`] bytes: an attestation whose references would not fit
//! gives them as `references-sha256 <hex of SHA-256 of the space-joined list>` instead, and
//! if it still does not fit, its signed text as `signed-sha256 <hex>`, the text itself then
//! kept beside the log ([`AttestationEntry::beside`]).

use sha2::{Digest, Sha256};

use crate::attestation::Attestation;
use crate::builder::Builder;
use crate::protocol::content::Content;
use crate::protocol::nar_hash::NarHash;
use crate::protocol::narinfo::fingerprint_of;
use crate::quorum::{Block, BlockTarget, Elector, OnDissent, Policy};

/// The largest entry a tile's entry bundle can hold (a 16-bit length).
pub const MAX_ENTRY: usize = 65_535;

/// Writes `key value\n` lines.
struct Lines(String);

impl Lines {
    fn new(kind: &str) -> Lines {
        Lines(format!("{kind}\n"))
    }

    fn line(&mut self, key: &str, value: &str) -> &mut Self {
        self.0.push_str(key);
        if !value.is_empty() {
            self.0.push(' ');
            for c in value.chars() {
                match c {
                    '\\' => self.0.push_str("\\\\"),
                    '\n' => self.0.push_str("\\n"),
                    c => self.0.push(c),
                }
            }
        }
        self.0.push('\n');
        self
    }

    fn opt(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.line(key, v);
        }
        self
    }

    fn content(&mut self, c: &Content, refs_by_hash: bool) -> &mut Self {
        self.line("path", &c.store_path)
            .line("nar-hash", &c.nar_hash.to_string())
            .line("nar-size", &c.nar_size.to_string());
        let refs = c.references.join(" ");
        if refs_by_hash {
            self.line("references-sha256", &sha256_hex(refs.as_bytes()))
        } else {
            self.line("references", &refs)
        }
    }

    fn done(self) -> Vec<u8> {
        self.0.into_bytes()
    }
}

/// `render(false)`, or `render(true)` (references by hash) when that is over [`MAX_ENTRY`].
fn within_limit(render: impl Fn(bool) -> Vec<u8>) -> Vec<u8> {
    let full = render(false);
    if full.len() <= MAX_ENTRY {
        full
    } else {
        render(true)
    }
}

/// Lowercase hex of SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a signature's signed bytes are found again.
pub const SCHEME_NIX: &str = "nix-fingerprint";
/// Guix: the narinfo text before its `Signature` line.
pub const SCHEME_GUIX: &str = "guix-narinfo";

/// An attestation's entry, and the signed text kept beside the log when it did not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationEntry {
    /// The entry's bytes.
    pub entry: Vec<u8>,
    /// `(SHA-256 hex, text)` of a signed text the entry names by hash only.
    pub beside: Option<(String, String)>,
}

/// A `quorate/attestation/v1` entry for `a`.
pub fn attestation(a: &Attestation) -> AttestationEntry {
    let render = |refs_by_hash: bool, signed_by_hash: bool| {
        let mut l = Lines::new("quorate/attestation/v1");
        l.line("cache", &a.cache)
            .content(&a.content, refs_by_hash)
            .opt("deriver", a.deriver.as_deref())
            .opt("ca", a.ca.as_deref())
            .line("upstream", &a.upstream)
            .line("key", &a.key_name)
            .opt("builder", a.builder.as_deref());
        let scheme = if a.signed_body.is_some() {
            SCHEME_GUIX
        } else {
            SCHEME_NIX
        };
        l.line("scheme", scheme).line("signature", &a.signature);
        match (&a.signed_body, signed_by_hash) {
            (_, true) => l.line("signed-sha256", &sha256_hex(signed_text(a).as_bytes())),
            (Some(body), false) => l.line("signed", body),
            (None, false) => &mut l, // the fingerprint is rebuilt from the lines above
        };
        l.line("status", a.status.as_str())
            .line("first-seen", &a.first_seen.to_string());
        l.done()
    };
    let entry = render(false, false);
    if entry.len() <= MAX_ENTRY {
        return AttestationEntry {
            entry,
            beside: None,
        };
    }
    // References by hash; a Nix fingerprint (which lists them) can then no longer be rebuilt
    // from the entry and goes beside the log like a large Guix text.
    let entry = render(true, false);
    if entry.len() <= MAX_ENTRY && a.signed_body.is_some() {
        return AttestationEntry {
            entry,
            beside: None,
        };
    }
    let text = signed_text(a);
    AttestationEntry {
        entry: render(true, true),
        beside: Some((sha256_hex(text.as_bytes()), text)),
    }
}

/// The exact text `a`'s signature covers: Guix's signed narinfo part, or the Nix fingerprint.
pub fn signed_text(a: &Attestation) -> String {
    match &a.signed_body {
        Some(body) => body.clone(),
        None => {
            let path = &a.content.store_path;
            let store_dir = path.rfind('/').map_or("", |i| &path[..i]);
            fingerprint_of(store_dir, &a.content)
        }
    }
}

/// The Nix fingerprint an attestation entry's lines rebuild (`None` without its content
/// lines, or with references given by hash).
pub fn signed_text_of(p: &Parsed) -> Option<String> {
    let path = p.get("path")?;
    let store_dir = &path[..path.rfind('/')?];
    let content = Content {
        store_path: path.to_owned(),
        nar_hash: crate::protocol::nar_hash::NarHash::parse(p.get("nar-hash")?).ok()?,
        nar_size: p.get("nar-size")?.parse().ok()?,
        references: p
            .get("references")?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    };
    Some(fingerprint_of(store_dir, &content))
}

/// What a decision entry records.
pub struct DecisionEntry<'a> {
    /// The cache.
    pub cache: &'a str,
    /// The store path's hash part.
    pub hash_part: &'a str,
    /// `accepted`, `refused`, `insufficient` or `withdrawn`.
    pub verdict: &'a str,
    /// The content accepted (or withdrawn), if any.
    pub content: Option<&'a Content>,
    /// The log index of the policy entry in force.
    pub policy: u64,
    /// Log indexes of the attestations backing the content.
    pub support: &'a [u64],
    /// Log indexes of valid attestations of trusted builders for other contents.
    pub dissent: &'a [u64],
    /// When it was decided, Unix milliseconds.
    pub decided_at: i64,
}

/// A `quorate/decision/v1` entry.
pub fn decision(d: &DecisionEntry<'_>) -> Vec<u8> {
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    let render = |refs_by_hash: bool| {
        let mut l = Lines::new("quorate/decision/v1");
        l.line("cache", d.cache)
            .line("hash-part", d.hash_part)
            .line("verdict", d.verdict);
        if let Some(c) = d.content {
            l.content(c, refs_by_hash);
        }
        l.line("policy", &d.policy.to_string())
            .line("support", &list(d.support))
            .line("dissent", &list(d.dissent))
            .line("decided-at", &d.decided_at.to_string());
        l.done()
    };
    within_limit(render)
}

/// A `quorate/policy/v1` entry: the policy (with its weights and block list) and every
/// builder's keys and revoked keys, in config order.
pub fn policy(cache: &str, p: &Policy, builders: &[Builder]) -> Vec<u8> {
    let mut l = Lines::new("quorate/policy/v1");
    let on_dissent = match p.on_dissent {
        OnDissent::Refuse => "refuse",
        OnDissent::Majority => "majority",
    };
    l.line("cache", cache)
        .line("quorum", &p.quorum.to_string())
        .line("on-dissent", on_dissent)
        .line("required", &p.required_builders.join(" "));
    for b in builders {
        for key in &b.keys {
            l.line("builder", &format!("{} {}", b.name, key.to_text()));
        }
    }
    for e in p.builders.iter().filter(|e| e.weight != 1) {
        l.line("weight", &format!("{} {}", e.weight, e.name));
    }
    for b in builders {
        for r in &b.revoked {
            let key = r.key.to_text();
            l.line("revoked", &format!("{} {} {key}", r.since, b.name));
        }
    }
    for block in &p.blocked {
        let (key, target) = match &block.target {
            BlockTarget::Path(path) => ("blocked-path", path.clone()),
            BlockTarget::NarHash(h) => ("blocked-nar-hash", h.to_string()),
        };
        let value = if block.reason.is_empty() {
            target
        } else {
            format!("{target} {}", block.reason)
        };
        l.line(key, &value);
    }
    l.done()
}

/// A policy entry read back: enough to replay its decisions offline
/// ([`crate::quorum::decide`] with [`PolicyEntry::policy`]).
#[derive(Clone, Debug)]
pub struct PolicyEntry {
    /// The cache.
    pub cache: String,
    /// The quorum policy: quorum, required builders, dissent rule, builders with their
    /// weights, block list.
    pub policy: Policy,
    /// `(builder, key text)` per `builder` line.
    pub keys: Vec<(String, String)>,
    /// Revoked keys: `(builder, since in Unix ms, key text)`.
    pub revoked: Vec<(String, i64, String)>,
}

impl PolicyEntry {
    /// Whether an attestation by key `key_text` of `builder`, first recorded at
    /// `first_seen`, came after that key was revoked.
    pub fn revoked_at(&self, builder: &str, key_text: &str, first_seen: i64) -> bool {
        self.revoked
            .iter()
            .any(|(b, since, k)| b == builder && k == key_text && first_seen >= *since)
    }
}

/// Reads a `quorate/policy/v1` entry's meaning.
pub fn parse_policy(p: &Parsed) -> Result<PolicyEntry, EntryError> {
    if p.kind != "quorate/policy/v1" {
        return Err(EntryError::Malformed("not a policy entry"));
    }
    let cache = p.get("cache").ok_or(EntryError::Malformed("no cache"))?;
    let quorum = p
        .get("quorum")
        .and_then(|q| q.parse().ok())
        .ok_or(EntryError::Malformed("no quorum"))?;
    let on_dissent = match p.get("on-dissent") {
        Some("refuse") => OnDissent::Refuse,
        Some("majority") => OnDissent::Majority,
        _ => return Err(EntryError::Malformed("no on-dissent rule")),
    };
    let required_builders = p
        .get("required")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut keys = Vec::new();
    let mut builders: Vec<Elector> = Vec::new();
    for line in p.all("builder") {
        let (name, key) = line
            .split_once(' ')
            .ok_or(EntryError::Malformed("a builder line without a key"))?;
        if !builders.iter().any(|e| e.name == name) {
            builders.push(Elector::new(name));
        }
        keys.push((name.to_owned(), key.to_owned()));
    }
    for line in p.all("weight") {
        let (weight, name) = line
            .split_once(' ')
            .and_then(|(w, n)| Some((w.parse::<u32>().ok().filter(|w| *w >= 1)?, n)))
            .ok_or(EntryError::Malformed(
                "a weight line is not `weight <n> <builder>`",
            ))?;
        let elector = builders
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or(EntryError::Malformed("a weight for no builder"))?;
        elector.weight = weight;
    }
    let mut revoked = Vec::new();
    for line in p.all("revoked") {
        let mut parts = line.splitn(3, ' ');
        let (Some(since), Some(builder), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(EntryError::Malformed(
                "a revoked line is not `revoked <since> <builder> <key>`",
            ));
        };
        let since = since
            .parse()
            .map_err(|_| EntryError::Malformed("a revoked line's since is not a number"))?;
        revoked.push((builder.to_owned(), since, key.to_owned()));
    }
    let mut blocked = Vec::new();
    for (k, v) in &p.fields {
        let (target, reason) = v.split_once(' ').unwrap_or((v, ""));
        let target = match k.as_str() {
            "blocked-path" => BlockTarget::Path(target.to_owned()),
            "blocked-nar-hash" => BlockTarget::NarHash(
                NarHash::parse(target)
                    .map_err(|_| EntryError::Malformed("a blocked NarHash does not parse"))?,
            ),
            _ => continue,
        };
        blocked.push(Block {
            target,
            reason: reason.to_owned(),
        });
    }
    Ok(PolicyEntry {
        cache: cache.to_owned(),
        policy: Policy {
            quorum,
            required_builders,
            on_dissent,
            builders,
            blocked,
        },
        keys,
        revoked,
    })
}

/// An entry read back: its kind line and its `key value` lines, values unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The first line, e.g. `quorate/attestation/v1`.
    pub kind: String,
    /// Every line after it, in order.
    pub fields: Vec<(String, String)>,
}

/// Why bytes are not an entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not UTF-8, empty, not `\n`-terminated, or a malformed escape.
    #[error("malformed log entry: {0}")]
    Malformed(&'static str),
}

impl Parsed {
    /// The value of the first `key` line.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The values of every `key` line.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A space-separated list of log indexes (`support`, `dissent`).
    pub fn indexes(&self, key: &str) -> Option<Vec<u64>> {
        let v = self.get(key)?;
        v.split(' ')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok())
            .collect()
    }
}

/// Reads an entry's lines (any kind: the caller checks the kind and its keys).
pub fn parse(bytes: &[u8]) -> Result<Parsed, EntryError> {
    let text = std::str::from_utf8(bytes).map_err(|_| EntryError::Malformed("not UTF-8"))?;
    let body = text
        .strip_suffix('\n')
        .ok_or(EntryError::Malformed("not newline-terminated"))?;
    let mut lines = body.split('\n');
    let kind = lines
        .next()
        .filter(|k| !k.is_empty())
        .ok_or(EntryError::Malformed("no kind line"))?;
    let mut fields = Vec::new();
    for line in lines {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        fields.push((key.to_owned(), unescape(value)?));
    }
    Ok(Parsed {
        kind: kind.to_owned(),
        fields,
    })
}

fn unescape(v: &str) -> Result<String, EntryError> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            _ => return Err(EntryError::Malformed("bad escape")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::nar_hash::NarHash;
    use crate::protocol::signature::SigStatus;

    fn content(refs: Vec<String>) -> Content {
        Content {
            store_path: "/nix/store/wa25gr1jwvlca76cr58b77168s56r7fz-hello-1".into(),
            nar_hash: NarHash::parse("sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw")
                .unwrap(),
            nar_size: 120,
            references: refs,
        }
    }

    fn attested(refs: Vec<String>, signature: &str) -> Attestation {
        Attestation {
            cache: "nixos".into(),
            hash_part: "wa25gr1jwvlca76cr58b77168s56r7fz".parse().unwrap(),
            content: content(refs),
            deriver: Some("p2is4vfrfhngnrfzsdiyad85n1hqshbk-hello-1.drv".into()),
            ca: None,
            key_name: "upstream-A-1".into(),
            builder: Some("a".into()),
            upstream: "http://127.0.0.1:41234".into(),
            signature: signature.into(),
            status: SigStatus::Valid,
            seen_at: 1,
            signed_body: None,
            first_seen: 1,
        }
    }

    #[test]
    fn an_attestation_entry_is_its_lines_in_order() {
        let e = attestation(&attested(vec![], "upstream-A-1:sig==")).entry;
        assert_eq!(
            String::from_utf8(e).unwrap(),
            "quorate/attestation/v1\ncache nixos\n\
             path /nix/store/wa25gr1jwvlca76cr58b77168s56r7fz-hello-1\n\
             nar-hash sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw\n\
             nar-size 120\nreferences\nderiver p2is4vfrfhngnrfzsdiyad85n1hqshbk-hello-1.drv\n\
             upstream http://127.0.0.1:41234\nkey upstream-A-1\nbuilder a\n\
             scheme nix-fingerprint\nsignature upstream-A-1:sig==\nstatus valid\nfirst-seen 1\n"
        );
    }

    #[test]
    fn a_newline_in_a_value_cannot_forge_a_line() {
        let e =
            String::from_utf8(attestation(&attested(vec![], "x\nstatus valid\\")).entry).unwrap();
        assert!(e.contains("signature x\\nstatus valid\\\\\n"), "{e}");
        assert_eq!(e.matches("\nstatus ").count(), 1);
        let parsed = parse(e.as_bytes()).unwrap();
        assert_eq!(parsed.get("signature"), Some("x\nstatus valid\\"));
        assert_eq!(parsed.all("status").collect::<Vec<_>>(), ["valid"]);
    }

    #[test]
    fn entries_parse_back_and_malformed_ones_are_refused() {
        let e = attestation(&attested(vec!["a-x".into(), "b-y".into()], "k:s")).entry;
        let p = parse(&e).unwrap();
        assert_eq!(p.kind, "quorate/attestation/v1");
        assert_eq!(p.get("references"), Some("a-x b-y"));
        assert_eq!(p.get("nar-size"), Some("120"));
        for bad in [&b""[..], b"\n", b"kind", b"k\nx a\\q\n", b"\xff\n"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn huge_references_are_logged_by_their_hash_within_the_entry_limit() {
        let refs: Vec<String> = (0..3000).map(|i| format!("{i:032}-dep-{i}")).collect();
        let e = attestation(&attested(refs.clone(), "s")).entry;
        assert!(e.len() <= MAX_ENTRY);
        let text = String::from_utf8(e).unwrap();
        let hex = sha256_hex(refs.join(" ").as_bytes());
        assert!(text.contains(&format!("references-sha256 {hex}\n")));
        let p = parse(text.as_bytes()).unwrap();
        let (fp_hex, fingerprint) = attestation(&attested(refs.clone(), "s")).beside.unwrap();
        assert_eq!(p.get("signed-sha256"), Some(fp_hex.as_str()));
        assert!(
            fingerprint.starts_with("1;/nix/store/wa25"),
            "{fingerprint}"
        );
        assert!(fingerprint.ends_with("/nix/store/00000000000000000000000000002999-dep-2999"));
    }

    #[test]
    fn a_guix_attestation_carries_the_text_its_signature_covers() {
        let mut a = attested(vec![], "1;host;c2ln");
        let body = "StorePath: /gnu/store/x-hello\nNarHash: sha256:00\n";
        a.signed_body = Some(body.into());
        let e = attestation(&a);
        assert_eq!(e.beside, None);
        let p = parse(&e.entry).unwrap();
        assert_eq!(p.get("scheme"), Some(SCHEME_GUIX));
        assert_eq!(p.get("signed"), Some(body));
        assert_eq!(p.get("signed-sha256"), None);
    }

    #[test]
    fn a_guix_signed_text_too_large_for_an_entry_is_named_by_hash_and_kept_beside() {
        let refs: Vec<String> = (0..1500).map(|i| format!("{i:032}-dep-{i}")).collect();
        let mut a = attested(refs.clone(), "1;host;c2ln");
        let body = format!("StorePath: /gnu/store/x\nReferences: {}\n", refs.join(" "));
        a.signed_body = Some(body.clone() + &"x".repeat(40_000));
        let e = attestation(&a);
        assert!(e.entry.len() <= MAX_ENTRY);
        let (hex, kept) = e.beside.expect("kept beside the log");
        assert_eq!(kept, a.signed_body.clone().unwrap());
        assert_eq!(hex, sha256_hex(kept.as_bytes()));
        let p = parse(&e.entry).unwrap();
        assert_eq!(p.get("signed-sha256"), Some(hex.as_str()));
        assert_eq!(p.get("signed"), None);
        assert!(p.get("references-sha256").is_some());
    }

    #[test]
    fn a_decision_entry_names_its_policy_support_and_dissent() {
        let c = content(vec!["aaa-dep".into()]);
        let e = decision(&DecisionEntry {
            cache: "nixos",
            hash_part: "wa25gr1jwvlca76cr58b77168s56r7fz",
            verdict: "accepted",
            content: Some(&c),
            policy: 0,
            support: &[1, 2],
            dissent: &[],
            decided_at: 7,
        });
        let text = String::from_utf8(e).unwrap();
        assert!(text.starts_with("quorate/decision/v1\ncache nixos\nhash-part wa25"));
        assert!(
            text.ends_with("references aaa-dep\npolicy 0\nsupport 1 2\ndissent\ndecided-at 7\n")
        );
    }

    #[test]
    fn a_policy_entry_lists_every_builder_key() {
        let p = Policy {
            quorum: 2,
            required_builders: vec!["a".into()],
            on_dissent: OnDissent::Majority,
            builders: vec![Elector::new("a"), Elector::new("b")],
            blocked: vec![],
        };
        let builders = [
            Builder::new("a", vec![nix_key("ka")]),
            Builder::new("b", vec![nix_key("kb")]),
        ];
        let (ka, kb) = (builders[0].keys[0].to_text(), builders[1].keys[0].to_text());
        // Weight 1, nothing revoked, nothing blocked: the lines of a policy before weights.
        assert_eq!(
            String::from_utf8(policy("nixos", &p, &builders)).unwrap(),
            format!(
                "quorate/policy/v1\ncache nixos\nquorum 2\non-dissent majority\nrequired a\n\
                 builder a {ka}\nbuilder b {kb}\n"
            )
        );
    }

    fn nix_key(name: &str) -> crate::builder::BuilderKey {
        let secret = crate::protocol::nix_key::NixSecretKey::generate(name).unwrap();
        crate::builder::BuilderKey::Nix(secret.public())
    }

    #[test]
    fn a_policy_entry_carries_weights_revocations_and_blocks_and_parses_back() {
        let hash = content(vec![]).nar_hash;
        let p = Policy {
            quorum: 3,
            required_builders: vec![],
            on_dissent: OnDissent::Refuse,
            builders: vec![
                Elector {
                    name: "a".into(),
                    weight: 2,
                },
                Elector::new("b"),
            ],
            blocked: vec![
                Block {
                    target: BlockTarget::Path(content(vec![]).store_path),
                    reason: "CVE-2026-0001, see\nthe advisory".into(),
                },
                Block {
                    target: BlockTarget::NarHash(hash),
                    reason: String::new(),
                },
            ],
        };
        let mut b = Builder::new("b", vec![nix_key("kb-1"), nix_key("kb-2")]);
        b.revoked = vec![crate::builder::Revocation {
            key: b.keys[0].clone(),
            since: 1_793_491_200_000,
        }];
        let builders = [Builder::new("a", vec![nix_key("ka")]), b];
        let kb1 = builders[1].keys[0].to_text();
        let text = String::from_utf8(policy("nixos", &p, &builders)).unwrap();
        assert!(
            text.ends_with(&format!(
                "weight 2 a\nrevoked 1793491200000 b {kb1}\n\
                 blocked-path {} CVE-2026-0001, see\\nthe advisory\n\
                 blocked-nar-hash {hash}\n",
                content(vec![]).store_path
            )),
            "{text}"
        );
        let back = parse_policy(&parse(text.as_bytes()).unwrap()).unwrap();
        assert_eq!(back.cache, "nixos");
        assert_eq!(back.policy.quorum, 3);
        assert_eq!(back.policy.builders, p.builders);
        assert_eq!(back.policy.blocked, p.blocked);
        assert_eq!(back.keys.len(), 3);
        assert!(back.revoked_at("b", &kb1, 1_793_491_200_000));
        assert!(!back.revoked_at("b", &kb1, 1_793_491_199_999));
        // An entry of before weights: everyone weighs 1, nothing revoked or blocked.
        let old = "quorate/policy/v1\ncache c\nquorum 1\non-dissent refuse\nrequired\n\
                   builder a ka:x=\n";
        let back = parse_policy(&parse(old.as_bytes()).unwrap()).unwrap();
        assert_eq!(back.policy.builders, vec![Elector::new("a")]);
        assert!(back.policy.blocked.is_empty() && back.revoked.is_empty());
        // A weight for nobody, or of 0, is malformed.
        for bad in ["weight 2 z\n", "weight 0 a\n", "revoked x a ka:x=\n"] {
            let e = format!("{old}{bad}");
            assert!(
                parse_policy(&parse(e.as_bytes()).unwrap()).is_err(),
                "{bad}"
            );
        }
    }
}
