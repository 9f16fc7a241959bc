//! A real `quorate serve` process for a Guix story: a TOML config (the DESIGN §7 contract)
//! with Guix caches (and, for the side-by-side story, a Nix one), a fresh state directory, and
//! the database on SQLite (the default) or on a fresh database of the PostgreSQL server that
//! `scripts/test.sh` starts. Killed on drop; a panicking test prints the end of its log.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::http::{get, get_json};
use super::scratch_dir;

/// Where quorate keeps its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://<state_dir>/quorate.db`: no `database_url` in the config.
    Sqlite,
    /// A fresh database on the server at `QUORATE_TEST_POSTGRES_URL`.
    Postgres,
}

/// The backends a story runs on: SQLite, then PostgreSQL. Without `QUORATE_TEST_POSTGRES_URL`
/// the PostgreSQL run fails with a hint to use `scripts/test.sh`, unless
/// `QUORATE_TEST_SKIP_POSTGRES=1`.
pub fn backends() -> Vec<Backend> {
    if std::env::var_os("QUORATE_TEST_POSTGRES_URL").is_none()
        && std::env::var("QUORATE_TEST_SKIP_POSTGRES").as_deref() == Ok("1")
    {
        eprintln!("backend postgres SKIPPED (QUORATE_TEST_SKIP_POSTGRES=1)");
        return vec![Backend::Sqlite];
    }
    vec![Backend::Sqlite, Backend::Postgres]
}

/// One `[[cache]]`.
#[derive(Clone, Debug)]
pub struct CacheSpec {
    /// `name`.
    pub name: String,
    /// `flavor`: `guix` or `nix`.
    pub flavor: String,
    /// `mount`.
    pub mount: String,
    /// `quorum`.
    pub quorum: u32,
    /// `on_dissent`.
    pub on_dissent: String,
    /// `signing_key_file`; `None`: quorate generates one in `state_dir/keys`.
    pub signing_key_file: Option<PathBuf>,
    /// `[[cache.builder]]`: name and keys (Guix: `.pub` paths or the s-expressions).
    pub builders: Vec<(String, Vec<String>)>,
    /// `[[cache.upstream]]`: url and `priority`.
    pub upstreams: Vec<(String, Option<u32>)>,
}

impl CacheSpec {
    /// A Guix cache at `mount`, quorum 2, refusing on dissent.
    pub fn guix(name: &str, mount: &str) -> CacheSpec {
        CacheSpec {
            name: name.to_owned(),
            flavor: "guix".to_owned(),
            mount: mount.to_owned(),
            quorum: 2,
            on_dissent: "refuse".to_owned(),
            signing_key_file: None,
            builders: Vec::new(),
            upstreams: Vec::new(),
        }
    }

    /// A Nix cache at `mount`, quorum 2, refusing on dissent.
    pub fn nix(name: &str, mount: &str) -> CacheSpec {
        CacheSpec {
            flavor: "nix".to_owned(),
            ..CacheSpec::guix(name, mount)
        }
    }

    /// Sets `quorum`.
    pub fn quorum(mut self, quorum: u32) -> CacheSpec {
        self.quorum = quorum;
        self
    }

    /// Sets `on_dissent`.
    pub fn on_dissent(mut self, policy: &str) -> CacheSpec {
        self.on_dissent = policy.to_owned();
        self
    }

    /// Sets `signing_key_file`.
    pub fn signing_key(mut self, file: &Path) -> CacheSpec {
        self.signing_key_file = Some(file.to_path_buf());
        self
    }

    /// Adds a builder with one key.
    pub fn builder(mut self, name: &str, key: &str) -> CacheSpec {
        self.builders.push((name.to_owned(), vec![key.to_owned()]));
        self
    }

    /// Adds an upstream with a `priority` (NAR source preference, lower first).
    pub fn upstream(mut self, url: &str, priority: u32) -> CacheSpec {
        self.upstreams.push((url.to_owned(), Some(priority)));
        self
    }
}

/// A running `quorate serve`.
pub struct Quorate {
    child: Child,
    url: String,
    backend: Backend,
    state_dir: PathBuf,
    log_path: PathBuf,
    caches: Vec<CacheSpec>,
    /// Config, state and log; deleted on drop unless `QUORATE_TEST_KEEP=1`.
    dir: tempfile::TempDir,
}

impl Quorate {
    /// Starts quorate serving `caches` with its records on `backend`; returns once
    /// `GET /healthz` answers 200.
    pub async fn start(backend: Backend, caches: Vec<CacheSpec>) -> Quorate {
        // A port picked here may be taken before quorate binds it: retry then.
        let mut attempt = 1;
        loop {
            match Quorate::try_start(backend, &caches).await {
                Ok(q) => return q,
                Err(log) if attempt < 3 && log.contains("in use") => attempt += 1,
                Err(log) => panic!("quorate serve did not become healthy.\n{log}"),
            }
        }
    }

    async fn try_start(backend: Backend, caches: &[CacheSpec]) -> Result<Quorate, String> {
        let dir = scratch_dir("quorate");
        let state_dir = dir.path().join("state");
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_postgres_database().await),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("finding a free port");
        let config = render_config(port, &state_dir, database_url.as_deref(), caches);
        let config_path = dir.path().join("quorate.toml");
        std::fs::write(&config_path, &config).expect("writing quorate.toml");
        let log_path = dir.path().join("quorate.log");
        let log = File::create(&log_path).expect("creating quorate.log");
        let child = Command::new(env!("CARGO_BIN_EXE_quorate"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env(
                "QUORATE_LOG",
                std::env::var("QUORATE_LOG").unwrap_or_else(|_| "info,quorate=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawning quorate serve");
        let mut q = Quorate {
            child,
            url: format!("http://127.0.0.1:{port}"),
            backend,
            state_dir,
            log_path,
            caches: caches.to_vec(),
            dir,
        };
        match q.wait_healthy().await {
            Ok(()) => Ok(q),
            Err(why) => Err(format!("{why}\nconfig:\n{config}\nlog:\n{}", q.log())),
        }
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let health = format!("{}/healthz", self.url);
        let client = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("quorate exited: {status}"));
            }
            let answer = client
                .get(&health)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no 200 from {health} within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The base URL of cache `name` (its mount), without a trailing slash.
    pub fn cache_url(&self, name: &str) -> String {
        format!(
            "{}{}",
            self.url,
            self.spec(name).mount.trim_end_matches('/')
        )
    }

    fn spec(&self, name: &str) -> &CacheSpec {
        self.caches
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no cache {name} configured"))
    }

    /// The public key file of Guix cache `name`: next to the configured signing key, or the
    /// one quorate generated in `state_dir/keys`.
    pub fn guix_public_key_file(&self, name: &str) -> PathBuf {
        let secret = match &self.spec(name).signing_key_file {
            Some(f) => f.clone(),
            None => self.state_dir.join("keys").join(format!("{name}.guix.sec")),
        };
        let public = secret.with_extension("pub");
        assert!(
            public.is_file(),
            "no public key for cache {name} at {}",
            public.display()
        );
        public
    }

    /// `state_dir`.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// quorate's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `GET /api/v1/events?cache=…&kind=…`: the recorded events.
    pub async fn events(&self, cache: &str, kind: &str) -> Vec<serde_json::Value> {
        let url = format!("{}/api/v1/events?cache={cache}&kind={kind}", self.url);
        let json = get_json(&url).await;
        json["events"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {url}: no events list: {json}"))
            .clone()
    }

    /// `GET /api/v1/caches/<cache>/paths/<hash part>`: the decision and attestations.
    pub async fn path_record(&self, cache: &str, hash_part: &str) -> serde_json::Value {
        get_json(&format!(
            "{}/api/v1/caches/{cache}/paths/{hash_part}",
            self.url
        ))
        .await
    }

    /// `GET <cache>/<path>` (e.g. `/<hash>.narinfo`, `/nar/zstd/<basename>`).
    pub async fn get(&self, cache: &str, path: &str) -> super::http::Answer {
        get(&format!("{}{path}", self.cache_url(cache))).await
    }
}

impl Drop for Quorate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "===== quorate log ({:?} backend, {}, last {} lines) =====\n{}\n===== end =====",
                self.backend,
                self.log_path.display(),
                tail.len(),
                tail.join("\n")
            );
            if std::env::var("QUORATE_TEST_KEEP").as_deref() != Ok("1") {
                eprintln!(
                    "(set QUORATE_TEST_KEEP=1 to keep {})",
                    self.dir.path().display()
                );
            }
        }
    }
}

/// A TOML basic string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn render_config(
    port: u16,
    state_dir: &Path,
    database_url: Option<&str>,
    caches: &[CacheSpec],
) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "# written by tests/guix_support/quorate.rs");
    let _ = writeln!(t, "listen = {}", q(&format!("127.0.0.1:{port}")));
    let _ = writeln!(t, "state_dir = {}", q(&state_dir.display().to_string()));
    if let Some(url) = database_url {
        let _ = writeln!(t, "database_url = {}", q(url));
    }
    let _ = writeln!(t, "upstream_timeout = \"10s\"");
    for c in caches {
        let _ = writeln!(t, "\n[[cache]]");
        let _ = writeln!(t, "name = {}", q(&c.name));
        let _ = writeln!(t, "flavor = {}", q(&c.flavor));
        let _ = writeln!(t, "mount = {}", q(&c.mount));
        if let Some(key) = &c.signing_key_file {
            let _ = writeln!(t, "signing_key_file = {}", q(&key.display().to_string()));
        }
        let _ = writeln!(t, "quorum = {}", c.quorum);
        let _ = writeln!(t, "on_dissent = {}", q(&c.on_dissent));
        for (name, keys) in &c.builders {
            let keys: Vec<String> = keys.iter().map(|k| q(k)).collect();
            let _ = writeln!(t, "\n  [[cache.builder]]");
            let _ = writeln!(t, "  name = {}", q(name));
            let _ = writeln!(t, "  keys = [{}]", keys.join(", "));
        }
        for (url, priority) in &c.upstreams {
            let _ = writeln!(t, "\n  [[cache.upstream]]");
            let _ = writeln!(t, "  url = {}", q(url));
            if let Some(p) = priority {
                let _ = writeln!(t, "  priority = {p}");
            }
        }
    }
    t
}

/// Creates a fresh database on the test PostgreSQL server; returns its URL.
async fn fresh_postgres_database() -> String {
    let admin = std::env::var("QUORATE_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "QUORATE_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh (it starts \
             a throwaway PostgreSQL), or set QUORATE_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL \
             runs"
        )
    });
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "quorate_guix_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to {admin}: {e}"));
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin}: {e}"));
    let _ = conn.close().await;
    with_database(&admin, &name)
}

/// `postgres://user@host:port/olddb?params` → the same URL naming database `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path = base[authority..]
        .find('/')
        .map(|i| authority + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..path]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
