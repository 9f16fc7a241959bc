//! `quorate audit`: copy a cache's transparency log (`mirror`: plain files, the server's own
//! paths) and replay it offline (`check`), trusting nothing but the log's key (DESIGN §12).
//!
//! `check DIR` verifies, in order: the checkpoint's signature by `DIR/vkey` and its origin;
//! every hash tile against the tile below and the checkpoint's root; every entry bundle
//! against its level-0 tile; every entry's form; every Nix attestation's signature, again,
//! under the key its policy entry gives the builder; every accepted decision's support (its
//! policy entry, valid attestations of that very content by distinct builders of the policy,
//! their summed weight meeting the quorum, required builders met, no dissent under `refuse`,
//! the content not on the policy's block list). A key that signed two
//! contents for one path is reported as an equivocation (evidence, not a log violation).
//! Any violation makes the audit fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use quorate_core::protocol::nix_key::NixPublicKey;
use quorate_core::quorum::{BlockTarget, OnDissent};
use quorate_core::tlog::checkpoint::Checkpoint;
use quorate_core::tlog::entry::{self, Parsed};
use quorate_core::tlog::note::{NoteVerifier, VerifierKey};
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
    /// Nix signatures verified again.
    pub signatures_verified: u64,
    /// What is wrong with the log: any makes the audit fail.
    pub violations: Vec<String>,
    /// Keys that signed two contents for one store path.
    pub equivocations: Vec<String>,
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
            put(&path, &get(path.clone()).await?)?;
        }
    }
    Ok(size)
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
    Replay::default().run(&entries, &mut report);
    Ok(report)
}

/// The replay's memory: what each index holds.
#[derive(Default)]
struct Replay {
    parsed: Vec<Option<Parsed>>,
    /// Per (path, key): the NarHashes of its valid signatures.
    signed: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Replay {
    fn run(mut self, entries: &[Vec<u8>], report: &mut Report) {
        for (i, bytes) in entries.iter().enumerate() {
            let parsed = match entry::parse(bytes) {
                Ok(p) => p,
                Err(e) => {
                    report.violations.push(format!("entry {i}: {e}"));
                    self.parsed.push(None);
                    continue;
                }
            };
            match parsed.kind.as_str() {
                "quorate/policy/v1" => report.policies += 1,
                "quorate/attestation/v1" => {
                    report.attestations += 1;
                    self.attestation(i, &parsed, report);
                }
                "quorate/decision/v1" => {
                    report.decisions += 1;
                    self.decision(i, &parsed, report);
                }
                other => report
                    .violations
                    .push(format!("entry {i}: unknown kind {other:?}")),
            }
            self.parsed.push(Some(parsed));
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

    /// The latest policy entry before `i`.
    fn policy_before(&self, i: usize) -> Option<&Parsed> {
        self.parsed[..i]
            .iter()
            .rev()
            .flatten()
            .find(|p| p.kind == "quorate/policy/v1")
    }

    fn attestation(&mut self, i: usize, a: &Parsed, report: &mut Report) {
        let (Some(path), Some(key), Some(sig), Some(status)) = (
            a.get("path"),
            a.get("key"),
            a.get("signature"),
            a.get("status"),
        ) else {
            report.violations.push(format!(
                "entry {i}: attestation without path, key, signature or status"
            ));
            return;
        };
        if status == "valid" {
            let nar = a.get("nar-hash").unwrap_or_default().to_owned();
            self.signed
                .entry((path.to_owned(), key.to_owned()))
                .or_default()
                .insert(nar);
        }
        // Nix: the policy's key for this key name verifies the fingerprint.
        let Some(policy) = self.policy_before(i) else {
            report
                .violations
                .push(format!("entry {i}: an attestation before any policy"));
            return;
        };
        let public = policy.all("builder").find_map(|b| {
            let (_, k) = b.split_once(' ')?;
            (k.split(':').next() == Some(key)).then_some(k)
        });
        let Some(public) = public.and_then(|k| k.parse::<NixPublicKey>().ok()) else {
            return; // an unknown key, or a Guix one (its signed body is not logged yet)
        };
        let verified = nix_fingerprint(a).is_some_and(|fp| {
            let raw = sig
                .split_once(':')
                .and_then(|(_, b)| base64::engine::general_purpose::STANDARD.decode(b).ok());
            raw.and_then(|r| <[u8; 64]>::try_from(r).ok())
                .is_some_and(|r| public.verify(fp.as_bytes(), &r))
        });
        report.signatures_verified += 1;
        if verified != (status == "valid") {
            report.violations.push(format!(
                "entry {i}: logged as {status} but the signature {}",
                if verified {
                    "verifies"
                } else {
                    "does not verify"
                }
            ));
        }
    }

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
            .and_then(|p| self.parsed.get(p).cloned().flatten())
            .filter(|p| p.kind == "quorate/policy/v1");
        let Some(policy) = policy else {
            return fail("its policy index is not a policy entry".into());
        };
        let policy = match entry::parse_policy(&policy) {
            Ok(p) => p.policy,
            Err(e) => return fail(format!("its policy entry: {e}")),
        };
        let quorum = u64::try_from(policy.quorum).unwrap_or(u64::MAX);
        let required = &policy.required_builders;
        let blocked = policy.blocked.iter().find(|b| match &b.target {
            BlockTarget::Path(p) => d.get("path") == Some(p.as_str()),
            BlockTarget::NarHash(h) => d.get("nar-hash") == Some(h.to_string().as_str()),
        });
        if let Some(b) = blocked {
            return fail(format!(
                "accepted although its policy blocks it ({})",
                b.reason
            ));
        }
        let content = |p: &Parsed| {
            ["path", "nar-hash", "nar-size", "references"].map(|k| p.get(k).map(str::to_owned))
        };
        let mut backers = BTreeSet::new();
        for s in d.indexes("support").unwrap_or_default() {
            let a = usize::try_from(s)
                .ok()
                .and_then(|s| self.parsed.get(s).cloned().flatten());
            let Some(a) = a.filter(|a| a.kind == "quorate/attestation/v1") else {
                return fail(format!("support {s} is not an attestation entry"));
            };
            if a.get("status") != Some("valid") || content(&a) != content(d) {
                return fail(format!(
                    "support {s} is not a valid attestation of this content"
                ));
            }
            match a.get("builder") {
                Some(b) if policy.weight_of(b).is_some() => {
                    backers.insert(b.to_owned());
                }
                _ => return fail(format!("support {s} is by no builder of the policy")),
            }
        }
        let weight: u64 = backers.iter().filter_map(|b| policy.weight_of(b)).sum();
        if weight < quorum {
            return fail(format!(
                "{} builder(s) of summed weight {weight} back it, the quorum is {quorum}",
                backers.len()
            ));
        }
        if let Some(r) = required.iter().find(|r| !backers.contains(*r)) {
            return fail(format!("required builder {r} is not among its backers"));
        }
        let dissent = d.indexes("dissent").unwrap_or_default();
        if policy.on_dissent == OnDissent::Refuse && !dissent.is_empty() {
            fail(format!("accepted under `refuse` with dissent {dissent:?}"));
        }
    }
}

/// The Nix fingerprint a Nix attestation entry's signature covers.
fn nix_fingerprint(a: &Parsed) -> Option<String> {
    let path = a.get("path")?;
    let store_dir = &path[..path.rfind('/')?];
    let refs: Vec<String> = a
        .get("references")?
        .split_whitespace()
        .map(|r| format!("{store_dir}/{r}"))
        .collect();
    Some(format!(
        "1;{path};{};{};{}",
        a.get("nar-hash")?,
        a.get("nar-size")?,
        refs.join(",")
    ))
}
