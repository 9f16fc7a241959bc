//! The libgcrypt side of the Guix tests: Guile scripts in `tests/oracle/` calling libgcrypt
//! through guile-gcrypt, the library Guix itself signs and verifies with.
//!
//! - `keygen.scm`: key pairs as `guix archive --generate-key` makes them;
//! - `publish.scm`: narinfos as `guix publish` writes and signs them, NarHash computed by
//!   libgcrypt from the NAR file;
//! - `sign.scm`: a given signed part signed as `guix publish` signs it (driven by
//!   `tests/guix_oracle.rs` through [`Oracle::run`]);
//! - `verify.scm`: the signature check `guix substitute` makes before using a narinfo;
//! - `sexp-print.scm`: libgcrypt's s-expression reader and printer;
//! - `authorize.scm`: what `guix archive --authorize` and libgcrypt make of a key pair.
//!
//! Needs the Debian packages `guile-3.0` and `guile-gcrypt`; without them the tests fail
//! saying so, unless `QUORATE_TEST_SKIP_GUIX_ORACLE=1`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs the oracle scripts.
pub struct Oracle {
    /// `tests/oracle`.
    scripts: PathBuf,
}

/// A Guix key pair on disk, in the advanced s-expression form Guix writes.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// `….pub`: `(public-key (ecc (curve Ed25519) (q #…#)))`.
    pub public: PathBuf,
    /// `….sec`.
    pub secret: PathBuf,
}

impl KeyPair {
    /// The public key's text, as a builder's `keys` entry may carry it inline.
    pub fn public_text(&self) -> String {
        std::fs::read_to_string(&self.public)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.public.display()))
    }
}

/// One narinfo for `publish.scm` to write and sign.
#[derive(Clone, Debug)]
pub struct PublishJob {
    /// The signing key.
    pub key: KeyPair,
    /// The host named in `Signature: 1;<host>;…` (guix publish: `gethostname`).
    pub host: String,
    /// Where the URL groups go.
    pub layout: Layout,
    /// Full store path.
    pub store_path: String,
    /// The NAR, uncompressed: NarHash and NarSize come from it.
    pub nar_file: PathBuf,
    /// Reference basenames, in narinfo order.
    pub references: Vec<String>,
    /// `Deriver:` basename.
    pub deriver: Option<String>,
    /// `System:` (bordeaux's narinfos carry it; plain guix publish does not).
    pub system: Option<String>,
    /// URL groups after the signature: compression and the compressed file (`None` for
    /// `none`: the NAR itself).
    pub groups: Vec<(String, Option<PathBuf>)>,
    /// Where the narinfo goes.
    pub output: PathBuf,
}

/// Where a narinfo's URL groups go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Right after `StorePath`, inside the signed part: `guix publish` (ci.guix.gnu.org).
    Publish,
    /// After the `Signature` line, unsigned: bordeaux.guix.gnu.org (nar-herder).
    Herder,
}

impl Layout {
    fn as_str(self) -> &'static str {
        match self {
            Layout::Publish => "publish",
            Layout::Herder => "herder",
        }
    }
}

/// The libgcrypt key and ACL checks of one key pair (see `authorize.scm`).
#[derive(Debug)]
pub struct Authorization {
    /// `authorized <type> <curve> <nbits>` or `rejected <why>`.
    pub public_key: String,
    /// `consistent` or `rejected <why>`.
    pub secret_key: String,
}

impl Oracle {
    /// The oracle, or `None` when `QUORATE_TEST_SKIP_GUIX_ORACLE=1`. Missing Guile or
    /// guile-gcrypt is a failure, not a skip: a green run must mean libgcrypt agreed.
    pub fn get() -> Option<Oracle> {
        if crate::common::skip_requested("QUORATE_TEST_SKIP_GUIX_ORACLE") {
            eprintln!("QUORATE_TEST_SKIP_GUIX_ORACLE=1: skipping a test that needs libgcrypt");
            return None;
        }
        let probe = Command::new("guile")
            .args([
                "--no-auto-compile",
                "-c",
                "(use-modules (gcrypt pk-crypto) (gcrypt hash))",
            ])
            .env("GUILE_AUTO_COMPILE", "0")
            .output();
        let problem = match probe {
            Err(e) => format!("cannot run `guile` ({e})"),
            Ok(out) if !out.status.success() => format!(
                "`guile` cannot load guile-gcrypt: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Ok(_) => {
                return Some(Oracle {
                    scripts: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle"),
                })
            }
        };
        panic!(
            "the libgcrypt oracle is unavailable: {problem}. Install the Debian packages \
             guile-3.0 and guile-gcrypt (apt-get install guile-3.0 guile-gcrypt; \
             scripts/test.sh does), or set QUORATE_TEST_SKIP_GUIX_ORACLE=1 to skip these tests."
        );
    }

    /// Runs `script` with `args`, feeding it `input`; returns its standard output.
    pub fn run(&self, script: &str, args: &[&OsStr], input: &[u8]) -> String {
        let mut child = Command::new("guile")
            .arg("--no-auto-compile")
            .arg(self.scripts.join(script))
            .args(args)
            .env("GUILE_AUTO_COMPILE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running guile {script}: {e}"));
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        // A writer thread: the script may fill its stdout before reading all its input.
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("running guile {script}: {e}"));
        writer
            .join()
            .expect("the stdin writer")
            .unwrap_or_else(|e| panic!("feeding {script}: {e}"));
        assert!(
            out.status.success(),
            "{script} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("oracle output is UTF-8")
    }

    /// `count` key pairs generated by libgcrypt into `dir` (`libgcrypt-<i>.{pub,sec}`).
    pub fn keygen(&self, dir: &Path, count: usize) -> Vec<KeyPair> {
        std::fs::create_dir_all(dir).expect("creating the key directory");
        self.run(
            "keygen.scm",
            &[dir.as_os_str(), OsStr::new(&count.to_string())],
            b"",
        );
        (0..count)
            .map(|i| {
                let base = dir.join(format!("libgcrypt-{i}"));
                KeyPair {
                    public: base.with_extension("pub"),
                    secret: base.with_extension("sec"),
                }
            })
            .collect()
    }

    /// Writes and signs every job's narinfo (one Guile run); returns their texts, in order.
    pub fn publish(&self, job_file: &Path, jobs: &[PublishJob]) -> Vec<String> {
        let mut lines = String::new();
        for job in jobs {
            let mut fields = vec![
                job.key.secret.display().to_string(),
                job.key.public.display().to_string(),
                job.host.clone(),
                job.layout.as_str().to_owned(),
                job.store_path.clone(),
                job.nar_file.display().to_string(),
                job.references.join(" "),
                job.deriver.clone().unwrap_or_default(),
                job.system.clone().unwrap_or_default(),
                job.output.display().to_string(),
            ];
            for (compression, file) in &job.groups {
                let file = file.as_ref().map(|f| f.display().to_string());
                fields.push(format!("{compression}={}", file.unwrap_or_default()));
            }
            assert!(
                fields.iter().all(|f| !f.contains(['\t', '\n'])),
                "publish job fields must not hold tabs or newlines: {fields:?}"
            );
            lines.push_str(&fields.join("\t"));
            lines.push('\n');
        }
        std::fs::write(job_file, lines).expect("writing the publish jobs");
        self.run("publish.scm", &[job_file.as_os_str()], b"");
        jobs.iter()
            .map(|job| {
                std::fs::read_to_string(&job.output)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", job.output.display()))
            })
            .collect()
    }

    /// Guix's verdict on each (narinfo text, authorized public key file): `valid-signature`,
    /// `invalid-signature`, `hash-mismatch`, `unauthorized-key`, `corrupt-signature` or
    /// `unsigned`. The texts are written under `dir`.
    pub fn verify<T: AsRef<str>, K: AsRef<Path>>(
        &self,
        dir: &Path,
        jobs: &[(T, K)],
    ) -> Vec<String> {
        std::fs::create_dir_all(dir).expect("creating the verify directory");
        let files: Vec<(PathBuf, &Path)> = jobs
            .iter()
            .enumerate()
            .map(|(i, (text, key))| {
                let file = dir.join(format!("verify-{i}.narinfo"));
                std::fs::write(&file, text.as_ref()).expect("writing a narinfo to verify");
                (file, key.as_ref())
            })
            .collect();
        self.verify_files(dir, &files)
    }

    /// [`Oracle::verify`] of narinfo files already written (the job list goes to `dir`).
    pub fn verify_files<N: AsRef<Path>, K: AsRef<Path>>(
        &self,
        dir: &Path,
        jobs: &[(N, K)],
    ) -> Vec<String> {
        let lines: String = jobs
            .iter()
            .map(|(narinfo, key)| {
                let (narinfo, key) = (narinfo.as_ref().display(), key.as_ref().display());
                format!("{narinfo}\t{key}\n")
            })
            .collect();
        let job_file = dir.join("verify-jobs");
        std::fs::write(&job_file, lines).expect("writing the verify jobs");
        let out = self.run("verify.scm", &[job_file.as_os_str()], b"");
        let verdicts: HashMap<&str, &str> =
            out.lines().filter_map(|l| l.rsplit_once(' ')).collect();
        jobs.iter()
            .map(|(narinfo, _)| {
                let name = narinfo.as_ref().display().to_string();
                match verdicts.get(name.as_str()) {
                    Some(v) => v.to_string(),
                    None => panic!("verify.scm gave no verdict for {name}:\n{out}"),
                }
            })
            .collect()
    }

    /// libgcrypt's reading of each input (`sexp-print.scm`): `None` if it rejects it, else
    /// (its canonical form, its advanced form).
    pub fn print_sexps(&self, inputs: &[Vec<u8>]) -> Vec<Option<(Vec<u8>, Vec<u8>)>> {
        let stdin: String = inputs.iter().map(|i| format!("{}\n", hex(i))).collect();
        let out = self.run("sexp-print.scm", &[], stdin.as_bytes());
        let answers: Vec<_> = out
            .lines()
            .map(|line| {
                let (canonical, advanced) = line.split_once(' ')?;
                Some((unhex(canonical), unhex(advanced)))
            })
            .collect();
        assert_eq!(answers.len(), inputs.len(), "one answer per input");
        answers
    }

    /// libgcrypt's reading of `text`: `None` if it rejects it, else its printing in advanced
    /// form (what Guix writes to key files).
    pub fn print_advanced(&self, text: &str) -> Option<String> {
        let (_canonical, advanced) = self.print_sexps(&[text.as_bytes().to_vec()]).pop()??;
        Some(String::from_utf8(advanced).expect("an advanced s-expression of a key is text"))
    }

    /// What `guix archive --authorize` and libgcrypt make of `key` (the ACL goes to `acl`).
    pub fn authorize(&self, key: &KeyPair, acl: &Path) -> Authorization {
        let out = self.run(
            "authorize.scm",
            &[
                key.public.as_os_str(),
                key.secret.as_os_str(),
                acl.as_os_str(),
            ],
            b"",
        );
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("authorize.scm printed no {name}:\n{out}"))
        };
        Authorization {
            public_key: field("public-key "),
            secret_key: field("secret-key "),
        }
    }
}

/// `bytes` in lowercase hex, as the oracle scripts read and write them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("the oracle writes hex"))
        .collect()
}
