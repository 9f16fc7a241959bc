//! `quorate audit`: copy a cache's transparency log (`mirror`: plain files, the server's own
//! paths, and the signed texts kept beside the log under `signed/`) and replay it offline
//! (`check`), trusting nothing but the log's key (DESIGN §12).
//!
//! `check DIR` verifies, in order: the checkpoint's signature by `DIR/vkey` and its origin;
//! every hash tile against the tile below and the checkpoint's root; every entry bundle
//! against its level-0 tile; every entry's form; every builder signature (Nix fingerprints
//! rebuilt from the entry, Guix signed texts from the entry or beside it), again, under the
//! keys of the policy entry logged before it; and every accepted decision decided again
//! (`quorate_core::tlog::replay`): its policy entry's rule applied to the attestations it
//! cites, each signature checked again (an attestation first recorded after its key's
//! revocation does not count), must accept exactly its content, and the content must not be
//! on the policy's block list. A key that signed two contents for one path is reported as an
//! equivocation (evidence, not a log violation). Any violation makes the audit fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use quorate_core::protocol::signature::SigStatus;
use quorate_core::quorum::BlockTarget;
use quorate_core::tlog::checkpoint::Checkpoint;
use quorate_core::tlog::entry::{self, Parsed};
use quorate_core::tlog::note::{NoteVerifier, VerifierKey};
use quorate_core::tlog::replay::{
    accepted_key, redecide, vote_of, ContentKey, LoggedAttestation, LoggedPolicy,
};
use quorate_core::tlog::tile::{check_bundle, tiles_for_size, TilePath, TileSet};
use serde::Serialize;

/// Why an audit could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A request or a file failed.
    #[error("{0}")]
    Io(String),
}

/// What an audit found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The log's origin.
    pub origin: String,
    /// Entries checked.
    pub size: u64,
    /// Entries by kind.
    pub policies: u64,
    /// Attestation entries.
    pub attestations: u64,
    /// Decision entries.
    pub decisions: u64,
    /// Builder signatures (Nix and Guix) verified again.
    pub signatures_verified: u64,
    /// What is wrong with the log: any makes the audit fail.
    pub violations: Vec<String>,
    /// Keys that signed two contents for one store path.
    pub equivocations: Vec<String>,
    /// Attestations logged as invalid or of an unknown key whose signature verifies under
    /// the policy logged before them (a key configured after they were recorded).
    pub reclassified: Vec<String>,
}

/// Copies the log of cache `cache` at `base` into `dir`: `vkey`, `checkpoint`, and every
/// tile and entry bundle of the checkpoint's size.
pub async fn mirror(base: &str, cache: &str, dir: &Path) -> Result<u64, AuditError> {
    let client = reqwest::Client::new();
    let log = format!("{}/tlog/{cache}", base.trim_end_matches('/'));
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{log}/{path}");
        async move {
            let r = client
                .get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| AuditError::Io(format!("GET {url}: {e}")))?;
            r.bytes()
                .await
                .map_err(|e| AuditError::Io(format!("GET {url}: {e}")))
        }
    };
    let put = |path: &str, bytes: &[u8]| -> Result<(), AuditError> {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| AuditError::Io(e.to_string()))?;
        }
        std::fs::write(&file, bytes).map_err(|e| AuditError::Io(format!("{}: {e}", file.display())))
    };
    put("vkey", &get("vkey".into()).await?)?;
    let checkpoint = get("checkpoint".into()).await?;
    put("checkpoint", &checkpoint)?;
    let size =
        size_of(&checkpoint).ok_or_else(|| AuditError::Io("unreadable checkpoint".into()))?;
    for tile in tiles_for_size(size) {
        let path = TilePath::Hashes(tile).to_string();
        put(&path, &get(path.clone()).await?)?;
        if tile.level() == 0 {
            let path = TilePath::Entries(tile).to_string();
            let bundle = get(path.clone()).await?;
            put(&path, &bundle)?;
            for hex in named_beside(&bundle) {
                let path = format!("signed/{hex}");
                put(&path, &get(path.clone()).await?)?;
            }
        }
    }
    Ok(size)
}

/// The SHA-256s of signed texts an entry bundle's attestations name (`signed-sha256 <hex>`
/// lines), found by their text: `check` verifies what is mirrored, this only finds it.
fn named_beside(bundle: &[u8]) -> Vec<String> {
    const LINE: &[u8] = b"\nsigned-sha256 ";
    bundle
        .windows(LINE.len() + 64)
        .filter(|w| w.starts_with(LINE))
        .map(|w| &w[LINE.len()..])
        .filter(|hex| hex.iter().all(|b| b.is_ascii_hexdigit()))
        .map(|hex| String::from_utf8_lossy(hex).into_owned())
        .collect()
}

fn size_of(note: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(note).ok()?;
    text.lines().nth(1)?.parse().ok()
}

/// Replays the mirrored log in `dir`.
pub fn check(dir: &Path) -> Result<Report, AuditError> {
    let read = |path: &str| std::fs::read(dir.join(path));
    let vkey_text = read("vkey").map_err(|e| AuditError::Io(format!("vkey: {e}")))?;
    let vkey: VerifierKey = String::from_utf8_lossy(&vkey_text)
        .trim()
        .parse()
        .map_err(|e| AuditError::Io(format!("vkey: {e}")))?;
    let mut report = Report {
        origin: vkey.name().to_owned(),
        ..Report::default()
    };
    let note = read("checkpoint").map_err(|e| AuditError::Io(format!("checkpoint: {e}")))?;
    let checkpoint = match Checkpoint::open(&note, vkey.name(), &vkey) {
        Ok((c, _)) => c,
        Err(e) => {
            report.violations.push(format!("checkpoint: {e}"));
            return Ok(report);
        }
    };
    report.size = checkpoint.size();
    let mut tiles = TileSet::new(checkpoint.size());
    for tile in tiles_for_size(checkpoint.size()) {
        let path = TilePath::Hashes(tile).to_string();
        match read(&path) {
            Ok(bytes) => {
                if let Err(e) = tiles.insert(tile, &bytes) {
                    report.violations.push(format!("{path}: {e}"));
                }
            }
            Err(e) => report.violations.push(format!("{path}: {e}")),
        }
    }
    if let Err(e) = tiles.verify(checkpoint.root()) {
        report.violations.push(format!("tiles: {e}"));
        return Ok(report);
    }
    let mut entries = Vec::new();
    for tile in tiles_for_size(checkpoint.size())
        .into_iter()
        .filter(|t| t.level() == 0)
    {
        let path = TilePath::Entries(tile).to_string();
        let leaves = tiles.hashes(0, tile.index()).unwrap_or_default();
        let bundle = match read(&path) {
            Ok(b) => b,
            Err(e) => {
                report.violations.push(format!("{path}: {e}"));
                return Ok(report);
            }
        };
        match check_bundle(&tile, &bundle, leaves) {
            Ok(found) => entries.extend(found.into_iter().map(<[u8]>::to_vec)),
            Err(e) => {
                report.violations.push(format!("{path}: {e}"));
                return Ok(report);
            }
        }
    }
    let beside = |hex: &str| std::fs::read_to_string(dir.join("signed").join(hex)).ok();
    Replay {
        beside: &beside,
        logged: Vec::new(),
        policy: None,
        signed: BTreeMap::new(),
    }
    .run(&entries, &mut report);
    Ok(report)
}

/// One entry as the replay keeps it.
enum Logged {
    Policy(Box<LoggedPolicy>),
    Attestation(Box<(Parsed, LoggedAttestation)>),
    Decision,
    /// Unreadable, or of an unknown kind (already reported).
    Other,
}

/// The replay's memory: what each index holds.
struct Replay<'a> {
    /// Reads a signed text kept beside the log, by SHA-256 hex.
    beside: &'a dyn Fn(&str) -> Option<String>,
    logged: Vec<Logged>,
    /// The latest policy entry so far.
    policy: Option<usize>,
    /// Per (path, key): the NarHashes of its valid signatures.
    signed: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Replay<'_> {
    fn run(mut self, entries: &[Vec<u8>], report: &mut Report) {
        for (i, bytes) in entries.iter().enumerate() {
            let parsed = match entry::parse(bytes) {
                Ok(p) => p,
                Err(e) => {
                    report.violations.push(format!("entry {i}: {e}"));
                    self.logged.push(Logged::Other);
                    continue;
                }
            };
            let logged = match parsed.kind.as_str() {
                "quorate/policy/v1" => {
                    report.policies += 1;
                    match LoggedPolicy::from_entry(&parsed) {
                        Ok(p) => {
                            self.policy = Some(i);
                            Logged::Policy(Box::new(p))
                        }
                        Err(e) => {
                            report.violations.push(format!("entry {i}: {e}"));
                            Logged::Other
                        }
                    }
                }
                "quorate/attestation/v1" => {
                    report.attestations += 1;
                    self.attestation(i, parsed, report)
                }
                "quorate/decision/v1" => {
                    report.decisions += 1;
                    self.decision(i, &parsed, report);
                    Logged::Decision
                }
                other => {
                    report
                        .violations
                        .push(format!("entry {i}: unknown kind {other:?}"));
                    Logged::Other
                }
            };
            self.logged.push(logged);
        }
        for ((path, key), hashes) in &self.signed {
            if hashes.len() > 1 {
                report.equivocations.push(format!(
                    "{key} signed {} contents for {path}: {hashes:?}",
                    hashes.len()
                ));
            }
        }
    }

    fn policy_at(&self, i: usize) -> Option<&LoggedPolicy> {
        match self.logged.get(i)? {
            Logged::Policy(p) => Some(p),
            _ => None,
        }
    }

    /// Checks an attestation's signature again under the policy in force when it was logged:
    /// one logged `valid` must verify (and be by the builder named); one logged otherwise
    /// that verifies is reported (a key added since it was recorded can explain it).
    fn attestation(&mut self, i: usize, parsed: Parsed, report: &mut Report) -> Logged {
        let a = match LoggedAttestation::from_entry(&parsed) {
            Ok(a) => a,
            Err(e) => {
                report.violations.push(format!("entry {i}: {e}"));
                return Logged::Other;
            }
        };
        if a.status == SigStatus::Valid {
            self.signed
                .entry((a.content.store_path.clone(), a.key_name.clone()))
                .or_default()
                .insert(a.content.nar_hash.clone());
        }
        let Some(policy) = self.policy.and_then(|p| self.policy_at(p)) else {
            report
                .violations
                .push(format!("entry {i}: an attestation before any policy"));
            return Logged::Other;
        };
        let beside = a.beside().and_then(|hex| (self.beside)(hex));
        let check = match a.check(&parsed, &policy.builders, beside.as_deref()) {
            Ok(check) => check,
            Err(e) => {
                report.violations.push(format!("entry {i}: {e}"));
                return Logged::Attestation(Box::new((parsed, a)));
            }
        };
        report.signatures_verified += 1;
        let now = check.status();
        if a.status == SigStatus::Valid && now != SigStatus::Valid {
            report.violations.push(format!(
                "entry {i}: logged as valid but the signature is {} under its policy",
                now.as_str()
            ));
        } else if a.status == SigStatus::Valid
            && a.builder.as_deref() != policy.builder_of(&a.key_name)
        {
            report.violations.push(format!(
                "entry {i}: attributed to {:?}, but its policy gives key {} to {:?}",
                a.builder,
                a.key_name,
                policy.builder_of(&a.key_name)
            ));
        } else if a.status != now {
            report.reclassified.push(format!(
                "entry {i}: logged as {}, {} under its policy",
                a.status.as_str(),
                now.as_str()
            ));
        }
        Logged::Attestation(Box::new((parsed, a)))
    }

    /// Decides an accepted decision again: its policy entry applied to the attestations it
    /// cites (support and dissent), each signature checked again under that policy, must
    /// accept exactly the decision's content.
    fn decision(&self, i: usize, d: &Parsed, report: &mut Report) {
        if d.get("verdict") != Some("accepted") {
            return;
        }
        let mut fail = |why: String| {
            report
                .violations
                .push(format!("entry {i}: decision: {why}"))
        };
        let policy = d
            .get("policy")
            .and_then(|p| p.parse::<usize>().ok())
            .and_then(|p| self.policy_at(p));
        let Some(policy) = policy else {
            return fail("its policy index is not a policy entry".into());
        };
        let blocked = policy.policy.blocked.iter().find(|b| match &b.target {
            BlockTarget::Path(p) => d.get("path") == Some(p.as_str()),
            BlockTarget::NarHash(h) => d.get("nar-hash") == Some(h.to_string().as_str()),
        });
        if let Some(b) = blocked {
            return fail(format!(
                "accepted although its policy blocks it ({})",
                b.reason
            ));
        }
        let Some(content) = ContentKey::from_entry(d) else {
            return fail("accepted without a content".into());
        };
        let mut votes = Vec::new();
        let support = d.indexes("support").unwrap_or_default();
        let dissent = d.indexes("dissent").unwrap_or_default();
        for (s, supporting) in support
            .iter()
            .map(|s| (*s, true))
            .chain(dissent.iter().map(|s| (*s, false)))
        {
            let cited = usize::try_from(s).ok().and_then(|s| self.logged.get(s));
            let Some(Logged::Attestation(cited)) = cited else {
                return fail(format!("{s} is not an attestation entry"));
            };
            let (parsed, a) = &**cited;
            let beside = a.beside().and_then(|hex| (self.beside)(hex));
            let vote = a
                .check(parsed, &policy.builders, beside.as_deref())
                .ok()
                .and_then(|check| vote_of(a, &check, policy));
            match vote {
                Some(vote) if !supporting || vote.1 == content => votes.push(vote),
                _ if supporting => {
                    return fail(format!(
                        "support {s} is not a valid attestation of this content by a builder \
                         of its policy"
                    ))
                }
                _ => {}
            }
        }
        let replayed = redecide(policy, &votes);
        if accepted_key(&replayed).as_ref() != Some(&content) {
            let outcome = replayed.outcome().map_or("pending", |o| o.as_str());
            fail(format!(
                "its policy, applied to the attestations it cites, gives {outcome}, not this \
                 acceptance"
            ));
        }
    }
}
