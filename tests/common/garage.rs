//! A real single-node Garage (the Rust S3 server) for one test: the object store of a replica
//! set (DESIGN §11).
//!
//! [`Garage::start`] writes a config into a scratch directory (metadata and data there, free
//! RPC/S3/admin ports on 127.0.0.1, `replication_factor = 1`, a fresh `rpc_secret`), runs
//! `garage server` in the background, and sets it up as an operator would (README "Scale-out"):
//! `layout assign` + `layout apply`, `key import` (a key made here, so its secret is known
//! without reading CLI output), `bucket create` and `bucket allow --read --write --owner`.
//! It returns once a signed listing of the bucket answers. The process is killed on drop; if
//! the test is panicking, the end of Garage's log is printed first.
//!
//! The binary: `QUORATE_TEST_GARAGE`, else `~/.cache/quorate/bin/garage-2.5.0`, which
//! `scripts/test.sh` builds once (`cargo install garage`). Missing, it fails the test with the
//! command that builds it: never a quiet skip.
//!
//! What a story reads back: [`Garage::objects`] (names and sizes) and
//! [`Garage::incomplete_uploads`], through the S3 API ([`super::s3`]); [`Garage::stop`] and
//! [`Garage::start_again`] take the store away and bring it back on the same ports and data.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::s3::{MultipartUpload, S3Client, S3Object};
use super::{block_on, quorate::free_port, scratch_dir};

/// The Garage release the tests are written against (and `scripts/test.sh` builds).
pub const GARAGE_VERSION: &str = "2.5.0";

/// The S3 region Garage signs for (`s3_region`).
pub const REGION: &str = "garage";

/// The bucket [`Garage::start`] creates.
pub const BUCKET: &str = "quorate";

/// How long Garage may take to come up, or to come back: a hang guard, not a timing assertion.
const READY_WAIT: Duration = Duration::from_secs(60);

/// A running (or stopped, see [`Garage::stop`]) single-node Garage with one bucket.
pub struct Garage {
    binary: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    /// `None` while stopped.
    child: Option<Child>,
    s3_port: u16,
    key_id: String,
    secret: String,
    /// A file holding the secret key (for `secret_access_key_file`), 0600.
    secret_file: PathBuf,
    /// Config, metadata, data, log, secret; deleted on drop (unless QUORATE_TEST_KEEP=1).
    dir: tempfile::TempDir,
}

/// The Garage binary to run: `QUORATE_TEST_GARAGE`, else the cached build. Panics, naming the
/// command that builds it, when there is none.
pub fn garage_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("QUORATE_TEST_GARAGE") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "QUORATE_TEST_GARAGE={} is not a file",
            path.display()
        );
        return path;
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    let cached = Path::new(&home)
        .join(".cache/quorate/bin")
        .join(format!("garage-{GARAGE_VERSION}"));
    assert!(
        cached.is_file(),
        "no Garage binary: set QUORATE_TEST_GARAGE, or run the tests with scripts/test.sh, which \
         builds it once into {} (by hand: cargo install garage --version {GARAGE_VERSION} \
         --locked --root /tmp/garage && cp /tmp/garage/bin/garage {}; about 10 minutes on 2 cores)",
        cached.display(),
        cached.display()
    );
    cached
}

impl Garage {
    /// Starts a fresh Garage with bucket [`BUCKET`] and one key allowed to read, write and own
    /// it; returns once the bucket answers a signed listing. From synchronous code only.
    pub fn start() -> Garage {
        let mut attempt = 1;
        loop {
            match Garage::try_start() {
                Ok(garage) => return garage,
                // A port picked here may be taken before Garage binds it: pick again.
                Err(log) if attempt < 3 && log.contains("in use") => attempt += 1,
                Err(log) => panic!("Garage did not start.\n{log}"),
            }
        }
    }

    fn try_start() -> Result<Garage, String> {
        let binary = garage_binary();
        let dir = scratch_dir("garage");
        let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
        let config_path = dir.path().join("garage.toml");
        let config = format!(
            "# written by tests/common/garage.rs\n\
             metadata_dir = {meta}\n\
             data_dir = {data}\n\
             db_engine = \"sqlite\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_secret = \"{rpc_secret}\"\n\
             \n\
             [s3_api]\n\
             s3_region = \"{REGION}\"\n\
             api_bind_addr = \"127.0.0.1:{s3_port}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             \n\
             [admin]\n\
             api_bind_addr = \"127.0.0.1:{admin_port}\"\n\
             admin_token = \"{admin_token}\"\n",
            meta = toml_string(&dir.path().join("meta")),
            data = toml_string(&dir.path().join("data")),
            rpc_secret = random_hex(32),
            admin_token = random_hex(16),
        );
        write_private(&config_path, &config);
        // Garage's key format: `GK` + 12 bytes in hex, and a 32-byte secret in hex.
        let key_id = format!("GK{}", random_hex(12));
        let secret = random_hex(32);
        let secret_file = dir.path().join("s3.secret");
        write_private(&secret_file, &secret);

        let mut garage = Garage {
            binary,
            log_path: dir.path().join("garage.log"),
            config_path,
            child: None,
            s3_port,
            key_id,
            secret,
            secret_file,
            dir,
        };
        garage.spawn();
        garage.wait_for_rpc()?;
        let node_id = garage.cli_ok(&["node", "id", "-q"]);
        let node_id = node_id
            .trim()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_owned();
        garage.cli_ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &node_id]);
        garage.cli_ok(&["layout", "apply", "--version", "1"]);
        let (key_id, secret) = (garage.key_id.clone(), garage.secret.clone());
        garage.cli_ok(&[
            "key",
            "import",
            "--yes",
            "-n",
            "quorate-test",
            &key_id,
            &secret,
        ]);
        garage.cli_ok(&["bucket", "create", BUCKET]);
        garage.cli_ok(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BUCKET,
            "--key",
            "quorate-test",
        ]);
        garage.wait_for_bucket()?;
        Ok(garage)
    }

    /// `garage server` in the background, its output appended to the log.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("opening garage.log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config_path)
            .arg("server")
            .env("RUST_LOG", "garage=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// Polls `garage status` (the CLI reaching the daemon over RPC) until it answers.
    fn wait_for_rpc(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WAIT;
        loop {
            self.check_alive()?;
            if self.cli(&["status"]).status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer to `garage status` in 60 s\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls a signed listing of the bucket until it answers 200.
    fn wait_for_bucket(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WAIT;
        loop {
            self.check_alive()?;
            match block_on(self.s3().list("")) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("the bucket never answered: {e}\n{}", self.log()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Err(format!("(garage exited: {status})\n{}", self.log())),
            _ => Ok(()),
        }
    }

    /// Runs `garage -c <config> ARGS` (the operator's CLI) and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config_path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.binary.display()))
    }

    /// [`Garage::cli`], which must succeed; returns its stdout.
    #[track_caller]
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "garage {} failed ({}):\n{}{}\ngarage log:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT` (path-style addressing).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The region to sign for.
    pub fn region(&self) -> &str {
        REGION
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// The access key id allowed on the bucket.
    pub fn access_key_id(&self) -> &str {
        &self.key_id
    }

    /// Its secret.
    pub fn secret_access_key(&self) -> &str {
        &self.secret
    }

    /// A file holding the secret (0600), for `secret_access_key_file`.
    pub fn secret_access_key_file(&self) -> &Path {
        &self.secret_file
    }

    /// The `[nar_store]` table for NARs under `prefix` in the bucket: `url`, `endpoint`,
    /// `region`, `path_style`, `access_key_id`, `secret_access_key_file` (DESIGN §11).
    pub fn nar_store(&self, prefix: &str) -> toml::Table {
        let mut table = self.nar_store_without_credentials(prefix);
        table.insert("access_key_id".into(), self.key_id.clone().into());
        table.insert(
            "secret_access_key_file".into(),
            self.secret_file.display().to_string().into(),
        );
        table
    }

    /// The `[nar_store]` table with no credentials in it: quorate must take them from
    /// [`Garage::credentials_env`].
    pub fn nar_store_without_credentials(&self, prefix: &str) -> toml::Table {
        let mut table = toml::Table::new();
        let url = format!("s3://{BUCKET}/{}", prefix.trim_matches('/'));
        table.insert("url".into(), url.trim_end_matches('/').to_owned().into());
        table.insert("endpoint".into(), self.endpoint().into());
        table.insert("region".into(), REGION.into());
        table.insert("path_style".into(), true.into());
        table
    }

    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` for the bucket's key.
    pub fn credentials_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
        ]
    }

    /// An S3 client for the bucket, with the test key.
    pub fn s3(&self) -> S3Client {
        S3Client {
            endpoint: self.endpoint(),
            region: REGION.to_owned(),
            bucket: BUCKET.to_owned(),
            access_key_id: self.key_id.clone(),
            secret_access_key: self.secret.clone(),
        }
    }

    /// Every object under `prefix` (`""`: the whole bucket), sorted by key.
    #[track_caller]
    pub fn objects(&self, prefix: &str) -> Vec<S3Object> {
        block_on(self.s3().list(prefix))
            .unwrap_or_else(|e| panic!("listing s3://{BUCKET}/{prefix}: {e}"))
    }

    /// Every multipart upload under `prefix` that was neither completed nor aborted.
    #[track_caller]
    pub fn incomplete_uploads(&self, prefix: &str) -> Vec<MultipartUpload> {
        block_on(self.s3().incomplete_uploads(prefix))
            .unwrap_or_else(|e| panic!("listing uploads under s3://{BUCKET}/{prefix}: {e}"))
    }

    /// Whether the Garage process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops Garage (SIGTERM, as an operator or an outage does; SIGKILL after 30 s) and waits
    /// for it to exit. Its data stays; [`Garage::start_again`] brings it back.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    /// Starts the stopped Garage again on the same config, ports and data; returns once the
    /// bucket answers a signed listing.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "Garage is already running");
        self.spawn();
        self.wait_for_bucket()
            .unwrap_or_else(|log| panic!("Garage did not come back:\n{log}"));
    }

    /// Garage's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The scratch directory (config, metadata, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "===== garage log ({}, last {} lines) =====\n{}\n===== end of garage log =====",
                self.log_path.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// `n` random bytes in hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).expect("reading random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `text` to a new file only its owner can read (Garage refuses world-readable
/// secrets; quorate warns about them).
pub fn write_private(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file: File = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}
