//! The real Nix client (`nix-store -r`) substituting store paths from ONE substituter URL into
//! a fresh chroot store, trusting only the keys a test names: exactly what a user pointing
//! `substituters` at quorate does. A success is checked the way Nix itself would: every path
//! of the closure re-hashes to what the client recorded (`nix-store --verify-path`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{fixtures, scratch_dir};

/// A client configuration: one substituter, the keys it trusts.
#[derive(Clone, Debug)]
pub struct NixClient {
    /// The only substituter.
    pub substituter: String,
    /// `trusted-public-keys` (`name:base64`); empty trusts nothing.
    pub trusted_keys: Vec<String>,
}

/// One path as the client recorded it (`nix path-info --json`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathInfo {
    /// Full store path.
    pub path: String,
    /// `sha256-<base64>` (SRI) in Nix 2.8.
    pub nar_hash: String,
    /// NAR size.
    pub nar_size: u64,
    /// Full store paths.
    #[serde(default)]
    pub references: Vec<String>,
    /// The `Sig:` lines the client accepted with the path.
    #[serde(default)]
    pub signatures: Vec<String>,
}

/// What one substitution did.
pub struct Substitution {
    /// True when `nix-store -r` succeeded and the closure verified.
    pub ok: bool,
    /// Everything the client printed (the substitution, then the checks).
    pub output: String,
    /// Wall time of `nix-store -r` alone.
    pub elapsed: Duration,
    /// On success: every path of the closure.
    pub paths: Vec<PathInfo>,
    /// The chroot store root (its files are under `<root>/nix/store`).
    pub root: PathBuf,
    /// Owns the store; deleted with this value.
    _dir: tempfile::TempDir,
}

impl NixClient {
    /// A client substituting from `url` and trusting `keys`.
    pub fn new<S: AsRef<str>>(url: &str, keys: &[S]) -> NixClient {
        NixClient {
            substituter: url.to_owned(),
            trusted_keys: keys.iter().map(|k| k.as_ref().to_owned()).collect(),
        }
    }

    /// Substitutes `paths` (and their closures) into a fresh store. Never panics on a Nix
    /// failure: the test decides what it expected.
    pub fn substitute(&self, paths: &[&str]) -> Substitution {
        let dir = scratch_dir("nix-client");
        let root = dir.path().join("store");
        let mut output = String::new();
        let mut cmd = self.nix(dir.path(), "nix-store");
        cmd.arg("--store")
            .arg(&root)
            .arg("-r")
            .args(paths)
            .args(["--option", "substituters", &self.substituter])
            .args([
                "--option",
                "trusted-public-keys",
                &self.trusted_keys.join(" "),
            ])
            .args(["--option", "require-sigs", "true"])
            // A failed download fails at once instead of ~4 s of retries: a test that expects
            // a second attempt to succeed runs the client again, and says so.
            .args(["--option", "download-attempts", "1"]);
        output.push_str(&format!(
            "+ nix-store -r {} --option substituters {} --option trusted-public-keys '{}'\n",
            paths.join(" "),
            self.substituter,
            self.trusted_keys.join(" ")
        ));
        let started = Instant::now();
        let run = run(&mut cmd);
        let elapsed = started.elapsed();
        output.push_str(&run.text);
        let mut sub = Substitution {
            ok: false,
            output,
            elapsed,
            paths: Vec::new(),
            root,
            _dir: dir,
        };
        if !run.success {
            return sub;
        }
        match self.verify(&sub.root, sub._dir.path(), paths) {
            Ok((infos, text)) => {
                sub.output.push_str(&text);
                sub.paths = infos;
                sub.ok = true;
            }
            Err(text) => sub.output.push_str(&text),
        }
        sub
    }

    /// `nix-store --verify-path` over the closure, then `nix path-info --json -r`.
    fn verify(
        &self,
        root: &Path,
        scratch: &Path,
        paths: &[&str],
    ) -> Result<(Vec<PathInfo>, String), String> {
        let mut q = self.nix(scratch, "nix-store");
        q.arg("--store").arg(root).arg("-qR").args(paths);
        let closure = run(&mut q);
        if !closure.success {
            return Err(format!("closure query failed:\n{}", closure.text));
        }
        let closure: Vec<&str> = closure.stdout.lines().filter(|l| !l.is_empty()).collect();
        let mut v = self.nix(scratch, "nix-store");
        v.arg("--store")
            .arg(root)
            .arg("--verify-path")
            .args(&closure);
        let verified = run(&mut v);
        if !verified.success {
            return Err(format!(
                "nix-store --verify-path failed:\n{}",
                verified.text
            ));
        }
        let mut info = self.nix(scratch, "nix");
        info.args(["path-info", "--json", "-r", "--store"])
            .arg(root)
            .args(paths);
        let info = run(&mut info);
        if !info.success {
            return Err(format!("nix path-info failed:\n{}", info.text));
        }
        let infos: Vec<PathInfo> = serde_json::from_str(&info.stdout)
            .map_err(|e| format!("parsing nix path-info --json: {e}\n{}", info.stdout))?;
        let text = format!(
            "verified {} path(s): {}\n",
            closure.len(),
            closure.join(" ")
        );
        Ok((infos, text))
    }

    /// A Nix command with the isolated configuration and a fresh narinfo disk cache.
    fn nix(&self, scratch: &Path, program: &str) -> Command {
        nix_command(program, scratch)
    }
}

/// `program` (a Nix command, or one that runs them) with the fixtures' isolated
/// configuration and a narinfo disk cache in `scratch` (Nix remembers narinfos per URL for
/// 30 days in `$XDG_CACHE_HOME/nix`).
pub fn nix_command(program: &str, scratch: &Path) -> Command {
    let fx = fixtures();
    let mut cmd = Command::new(program);
    cmd.env("NIX_CONF_DIR", &fx.nix_conf_dir)
        .env("NIX_USER_CONF_FILES", fx.nix_conf())
        .env("XDG_CACHE_HOME", scratch.join("xdg-cache"))
        .env("NIX_PATH", "")
        .env_remove("NIX_REMOTE");
    cmd
}

impl Substitution {
    /// Panics with the client's output unless the substitution succeeded.
    #[track_caller]
    pub fn assert_ok(&self, what: &str) -> &Substitution {
        assert!(self.ok, "{what}: the Nix client failed:\n{}", self.output);
        self
    }

    /// Panics with the client's output if the substitution succeeded.
    #[track_caller]
    pub fn assert_failed(&self, what: &str) -> &Substitution {
        assert!(
            !self.ok,
            "{what}: the Nix client succeeded but should not have:\n{}",
            self.output
        );
        self
    }

    /// The client's record of `store_path` (panics if it has none).
    #[track_caller]
    pub fn info(&self, store_path: &str) -> &PathInfo {
        self.paths
            .iter()
            .find(|p| p.path == store_path)
            .unwrap_or_else(|| panic!("{store_path} is not in the client store:\n{}", self.output))
    }

    /// The bytes of `file` inside the client's copy of a store path (`""` for the path itself).
    pub fn read(&self, store_path: &str, file: &str) -> Vec<u8> {
        let mut p = self.root.join(store_path.trim_start_matches('/'));
        if !file.is_empty() {
            p = p.join(file);
        }
        std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }
}

struct Run {
    success: bool,
    stdout: String,
    /// stdout then stderr, for messages.
    text: String,
}

fn run(cmd: &mut Command) -> Run {
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e} (is nix-bin installed?)"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = stdout
        .lines()
        .chain(stderr.lines())
        .map(|l| format!("  nix| {l}\n"))
        .collect();
    Run {
        success: out.status.success(),
        stdout,
        text,
    }
}
