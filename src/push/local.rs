//! What the local Nix store says about a path, as `nix path-info` would: NarHash, NarSize,
//! references and deriver, read with `nix-store --query`, whose output has not changed
//! across Nix versions (Debian's 2.8 and current Nix alike), and turned into the signed
//! narinfo a rebuilder pushes.
//!
//! The store is the one `nix-store` uses by default (the daemon's, or `NIX_REMOTE`), or the
//! one `--store` names (a chroot store such as `/var/lib/rebuilder`).

use std::path::Path;
use std::process::Command;

use quorate_core::protocol::nar_hash::NarHash;
use quorate_core::protocol::narinfo::NixNarInfo;
use quorate_core::protocol::nix_key::NixSecretKey;
use quorate_core::protocol::store_path::StorePath;

/// A path the local store cannot describe (not a store path, not valid there, `nix-store`
/// missing or failing).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LocalError(pub String);

/// The Nix store `quorate push` reads from.
#[derive(Clone, Debug, Default)]
pub struct LocalStore {
    /// `--store` for `nix-store`, when not the default store.
    pub store: Option<String>,
}

/// One path as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathFacts {
    /// The path.
    pub store_path: StorePath,
    /// SHA-256 of its NAR serialisation.
    pub nar_hash: NarHash,
    /// Its NAR's size.
    pub nar_size: u64,
    /// Basenames of the paths it refers to (itself included, if it does).
    pub references: Vec<String>,
    /// Basename of the derivation that built it, when known.
    pub deriver: Option<String>,
}

impl LocalStore {
    /// The facts of `arg`: a store path, or a symlink to one (`./result`) on this machine.
    pub fn facts(&self, arg: &str) -> Result<PathFacts, LocalError> {
        let path = store_path_of(arg)?;
        let query = |what: &str| self.query(what, path.full());
        let hash = query("--hash")?;
        let nar_hash = NarHash::parse(hash.trim()).map_err(|e| {
            LocalError(format!(
                "nix-store gave {path} a NarHash quorate cannot read: {e}"
            ))
        })?;
        let size = query("--size")?;
        let nar_size = size.trim().parse().map_err(|_| {
            LocalError(format!(
                "nix-store gave {path} a size quorate cannot read: {size:?}"
            ))
        })?;
        let references = query("--references")?
            .split_whitespace()
            .map(|r| basename_in(&path, r))
            .collect::<Result<Vec<_>, _>>()?;
        let deriver = match query("--deriver")?.trim() {
            "" | "unknown-deriver" => None,
            d => Some(basename_in(&path, d)?),
        };
        Ok(PathFacts {
            store_path: path,
            nar_hash,
            nar_size,
            references,
            deriver,
        })
    }

    /// `nix-store [--store S] --query WHAT PATH`'s standard output.
    fn query(&self, what: &str, path: &str) -> Result<String, LocalError> {
        let mut cmd = Command::new("nix-store");
        if let Some(store) = &self.store {
            cmd.arg("--store").arg(store);
        }
        cmd.args(["--query", what, path]);
        let out = cmd.output().map_err(|e| {
            LocalError(format!(
                "cannot run nix-store ({e}); quorate push reads the local Nix store with it"
            ))
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let said = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message")
                .trim();
            return Err(LocalError(format!(
                "nix-store --query {what} {path} failed: {said}"
            )));
        }
        String::from_utf8(out.stdout)
            .map_err(|_| LocalError(format!("nix-store --query {what} {path}: not UTF-8")))
    }
}

/// `arg` as a store path: as given when it is one, else where the symlink (`./result`)
/// leads, and the store path holding that.
fn store_path_of(arg: &str) -> Result<StorePath, LocalError> {
    let given = arg.trim_end_matches('/');
    if let Some(path) = parse_full(given) {
        return Ok(path);
    }
    let resolved = std::fs::canonicalize(arg)
        .map_err(|e| LocalError(format!("{arg} is not a store path ({e})")))?;
    // /nix/store/<hash>-<name>/bin/x → /nix/store/<hash>-<name>
    let mut candidate: Option<&Path> = Some(&resolved);
    while let Some(p) = candidate {
        if let Some(path) = p.to_str().and_then(parse_full) {
            return Ok(path);
        }
        candidate = p.parent();
    }
    Err(LocalError(format!(
        "{arg} is not a store path, nor a link to one ({} is not in a store)",
        resolved.display()
    )))
}

/// A full store path, its store directory being its parent.
fn parse_full(full: &str) -> Option<StorePath> {
    let dir = Path::new(full).parent()?.to_str()?;
    StorePath::parse(dir, full).ok()
}

/// The basename of `full`, a path `nix-store` named beside `path` (same store).
fn basename_in(path: &StorePath, full: &str) -> Result<String, LocalError> {
    StorePath::parse(path.store_dir(), full.trim())
        .map(|p| p.basename().to_owned())
        .map_err(|e| LocalError(format!("nix-store named {full:?} for {path}: {e}")))
}

impl PathFacts {
    /// The narinfo a cache would serve for this path, signed by `key` over the Nix
    /// fingerprint. Its `URL` and `Compression` are placeholders the format requires: a
    /// rebuilder hosts no NAR, and quorate ignores them in a push.
    pub fn signed_narinfo(&self, key: &NixSecretKey) -> String {
        let mut ni = NixNarInfo {
            store_path: self.store_path.clone(),
            url: format!("nar/{}.nar", self.nar_hash.key()),
            compression: "none".into(),
            file_hash: None,
            file_size: None,
            nar_hash: self.nar_hash,
            nar_size: self.nar_size,
            references: self.references.clone(),
            deriver: self.deriver.clone(),
            system: None,
            ca: None,
            sigs: vec![],
        };
        ni.sigs.push(key.sign(&ni.fingerprint()));
        ni.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_path_is_taken_as_given_and_anything_else_must_lead_into_a_store() {
        let p = store_path_of("/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10/")
            .expect("a store path");
        assert_eq!(
            p.full(),
            "/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10"
        );
        let err = store_path_of("/definitely/not/here").expect_err("no such file");
        assert!(err.0.contains("not a store path"), "{err}");
        let dir = tempfile::tempdir().expect("tmp");
        let err = store_path_of(&dir.path().display().to_string()).expect_err("not a store");
        assert!(err.0.contains("nor a link to one"), "{err}");
    }

    #[test]
    fn a_pushed_narinfo_verifies_under_the_builders_key_as_nix_computes_it() {
        let key = NixSecretKey::generate("rebuilder-1").expect("key");
        let dir = "/nix/store";
        let facts = PathFacts {
            store_path: StorePath::parse(dir, "/nix/store/5g6wl7kq5cbz6nq1r8j4m05p7pbp6w2v-app-1")
                .expect("path"),
            nar_hash: NarHash::from_digest([7; 32]),
            nar_size: 432,
            references: vec!["w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10".into()],
            deriver: Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-app-1.drv".into()),
        };
        let text = facts.signed_narinfo(&key);
        let ni = NixNarInfo::parse(dir, &text).expect("parses");
        assert!(ni.check_sigs(&[key.public()])[0].is_valid(), "{text}");
        assert_eq!(
            ni.fingerprint(),
            format!(
                "1;/nix/store/5g6wl7kq5cbz6nq1r8j4m05p7pbp6w2v-app-1;{};432;\
                 /nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10",
                NarHash::from_digest([7; 32])
            )
        );
        assert!(text.contains("Deriver: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-app-1.drv\n"));
    }
}
