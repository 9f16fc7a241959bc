//! The Nix-made fixture caches (see `tests/fixtures/make-nix-caches.sh`): built once per test
//! binary under `target/nix-fixtures` (the script skips the work when its stamp matches, and
//! holds a lock so test binaries running side by side build it once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;

/// Everything `manifest.json` says about the fixtures.
#[derive(Debug, Deserialize)]
pub struct Fixtures {
    /// The directory holding the isolated `nix.conf` every Nix command here must use.
    pub nix_conf_dir: PathBuf,
    /// The store directory the paths live in (`/nix/store`).
    pub store_dir: String,
    /// Size of `big`, in MiB.
    pub big_mb: u64,
    /// `nix-store --dump` of a file saying "evil": a NAR of the same type as hello's.
    pub evil_hello_nar: PathBuf,
    /// The three store paths every honest builder built.
    pub paths: FixturePaths,
    /// Builders `A`, `B`, `C` (honest caches: xz, zstd, none) and `M` (honest cache, none;
    /// made malicious by [`crate::common::adversary`]).
    pub builders: BTreeMap<String, FixtureBuilder>,
}

/// The store paths of `tests/fixtures/paths.nix`.
#[derive(Debug, Deserialize)]
pub struct FixturePaths {
    /// A small regular file with no references.
    pub hello: FixturePath,
    /// A directory referencing hello.
    pub app: FixturePath,
    /// `big_mb` MiB of incompressible bytes.
    pub big: FixturePath,
}

/// One store path as the builders agree it is.
#[derive(Debug, Deserialize)]
pub struct FixturePath {
    /// Full store path.
    pub store_path: String,
    /// `sha256:<nix32>`, as narinfos carry it.
    pub nar_hash: String,
    /// `sha256-<base64>`, as `nix path-info --json` prints it.
    pub nar_hash_sri: String,
    /// Size of the NAR.
    pub nar_size: u64,
    /// Full store paths of the references, sorted.
    pub references: Vec<String>,
}

impl FixturePath {
    /// The 32-character hash part: the narinfo's lookup key.
    pub fn hash_part(&self) -> &str {
        let base = self.store_path.rsplit('/').next().unwrap_or_default();
        base.split('-').next().unwrap_or_default()
    }

    /// The narinfo's URL path, e.g. `/<hash>.narinfo`.
    pub fn narinfo_path(&self) -> String {
        format!("/{}.narinfo", self.hash_part())
    }
}

/// One builder: its key pair, chroot store and binary cache.
#[derive(Debug, Deserialize)]
pub struct FixtureBuilder {
    /// `upstream-X-1`.
    pub key_name: String,
    /// `upstream-X-1:<base64>`, as `trusted-public-keys` and quorate's config take it.
    pub public_key: String,
    /// The `.pub` file.
    pub public_key_file: PathBuf,
    /// The `.sec` file (Nix's `name:base64(64)` format).
    pub secret_key_file: PathBuf,
    /// The chroot store it built in.
    pub store: PathBuf,
    /// Its `file://` binary cache: serve this directory.
    pub cache_dir: PathBuf,
    /// The cache's NAR compression.
    pub compression: String,
}

impl Fixtures {
    /// Builder `name` (`A`, `B`, `C` or `M`).
    pub fn builder(&self, name: &str) -> &FixtureBuilder {
        self.builders
            .get(name)
            .unwrap_or_else(|| panic!("no fixture builder {name}"))
    }

    /// The isolated `nix.conf`.
    pub fn nix_conf(&self) -> PathBuf {
        self.nix_conf_dir.join("nix.conf")
    }

    /// The evil NAR's bytes.
    pub fn evil_hello_nar(&self) -> Vec<u8> {
        std::fs::read(&self.evil_hello_nar).expect("reading the evil NAR fixture")
    }
}

/// The fixtures, built on first use. Every test calling this gets the same answer: a failed
/// build fails every test that needs it, with the script's message.
pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Result<Fixtures, String>> = OnceLock::new();
    match FIXTURES.get_or_init(build) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    }
}

/// `target/nix-fixtures` (beside cargo's `target/tmp`, so a custom target dir is honoured).
pub fn fixtures_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("nix-fixtures")
}

fn build() -> Result<Fixtures, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-nix-caches.sh");
    let out = fixtures_dir();
    // stderr is inherited: cargo shows the script's progress only if a test fails.
    let status = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .status()
        .map_err(|e| format!("could not run {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!(
            "{} {} failed ({status}); it needs Debian's nix-bin and openssl: run scripts/test.sh, \
             which installs them",
            script.display(),
            out.display()
        ));
    }
    let manifest = out.join("manifest.json");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", manifest.display()))
}
