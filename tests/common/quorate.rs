//! A real `quorate serve` process for a test: a TOML config written from [`CacheSpec`]s (the
//! DESIGN §7 contract; Nix and Guix caches, side by side if need be), a fresh state directory,
//! and a database on SQLite (the default, in `state_dir`) or on the PostgreSQL server that
//! `scripts/test.sh` starts (a fresh database per test). Nix caches sign with a key made by
//! `quorate keygen` unless told otherwise; Guix caches with the key quorate generates on first
//! start. Killed on drop; if the test is panicking, the end of quorate's log is printed first.
//!
//! [`Quorate::start`] is for synchronous tests (it runs on the support runtime);
//! [`Quorate::start_async`] for async ones.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::fixtures::FixturePath;
use super::http::{eventually, get, get_json, http_get, http_get_async, HttpAnswer};
use super::upstream::UpstreamServer;
use super::{block_on, scratch_dir};

/// Where quorate keeps its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://<state_dir>/quorate.db`: no `database_url` in the config (the default).
    Sqlite,
    /// A fresh database on the server at `QUORATE_TEST_POSTGRES_URL`.
    Postgres,
}

/// The backends a story runs on: SQLite, then PostgreSQL. Without
/// `QUORATE_TEST_POSTGRES_URL` the PostgreSQL run fails with a hint (run `scripts/test.sh`),
/// unless `QUORATE_TEST_SKIP_POSTGRES=1` says to skip it.
pub fn backends() -> Vec<Backend> {
    if std::env::var_os("QUORATE_TEST_POSTGRES_URL").is_none()
        && super::skip_requested("QUORATE_TEST_SKIP_POSTGRES")
    {
        eprintln!("--- backend: postgres SKIPPED (QUORATE_TEST_SKIP_POSTGRES=1)");
        return vec![Backend::Sqlite];
    }
    vec![Backend::Sqlite, Backend::Postgres]
}

/// Runs `story` once on each of [`backends`].
pub fn for_each_backend(story: impl Fn(Backend)) {
    for backend in backends() {
        eprintln!("--- backend: {}", format!("{backend:?}").to_lowercase());
        story(backend);
    }
}

/// Which key a cache signs its narinfos with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigningKey {
    /// The Nix key `quorate keygen --flavor nix --name quorate-test-1` makes for this quorate
    /// (one per process, shared by its caches): [`Quorate::public_key`] is what clients trust.
    Test,
    /// No `signing_key_file`: quorate generates `state_dir/keys/<cache>.sec` (Nix key
    /// `quorate-1`) or `<cache>.guix.sec` on first start.
    Generated,
    /// `signing_key_file` (the public key is beside it, `.pub`).
    File(PathBuf),
}

/// One `[[cache]]` of the config.
#[derive(Clone, Debug)]
pub struct CacheSpec {
    /// `name`.
    pub name: String,
    /// `flavor`: `nix` or `guix`.
    pub flavor: String,
    /// `mount`.
    pub mount: String,
    /// `quorum`.
    pub quorum: u32,
    /// `on_dissent`: `refuse` or `majority`.
    pub on_dissent: String,
    /// `required_builders` (omitted when empty).
    pub required_builders: Vec<String>,
    /// `signing_key_file`.
    pub signing_key: SigningKey,
    /// `[[cache.builder]]`: name and keys (Nix: `name:base64`; Guix: `.pub` paths or the
    /// s-expressions themselves).
    pub builders: Vec<(String, Vec<String>)>,
    /// `[[cache.upstream]]`s.
    pub upstreams: Vec<UpstreamSpec>,
    /// `[[cache.witness]]`s: (url, vkey).
    pub witnesses: Vec<(String, String)>,
    /// `[[cache.peer]]`s: log URLs, read every second.
    pub peers: Vec<String>,
    /// `log_key_file`, if set (default: in the state directory).
    pub log_key_file: Option<PathBuf>,
    /// Per builder name, `weight` (omitted: 1).
    pub weights: Vec<(String, u32)>,
    /// Per builder name, its `revoked` entries: (key, since as RFC 3339).
    pub revoked: Vec<(String, String, String)>,
    /// `blocked` entries: (`path` or `nar_hash`, its value, reason).
    pub blocked: Vec<(String, String, String)>,
    /// `nar_compression`, if set (default `none`).
    pub nar_compression: Option<String>,
}

/// One `[[cache.upstream]]` of a cache.
#[derive(Clone, Debug, Default)]
pub struct UpstreamSpec {
    /// `url`.
    pub url: String,
    /// `priority` (NAR source preference, lower first), if set.
    pub priority: Option<u32>,
    /// `bearer_token`, if set.
    pub bearer_token: Option<String>,
    /// `nar_hosts` (omitted when empty).
    pub nar_hosts: Vec<String>,
}

impl UpstreamSpec {
    /// An upstream at `url` with nothing else set.
    pub fn new(url: &str) -> UpstreamSpec {
        UpstreamSpec {
            url: url.to_owned(),
            ..UpstreamSpec::default()
        }
    }

    /// Sets `priority`.
    pub fn priority(mut self, priority: u32) -> UpstreamSpec {
        self.priority = Some(priority);
        self
    }

    /// Sets `bearer_token`.
    pub fn bearer_token(mut self, token: &str) -> UpstreamSpec {
        self.bearer_token = Some(token.to_owned());
        self
    }

    /// Adds a `nar_hosts` entry.
    pub fn nar_host(mut self, host: &str) -> UpstreamSpec {
        self.nar_hosts.push(host.to_owned());
        self
    }
}

impl CacheSpec {
    /// A Nix cache mounted at `/`, quorum 1, refusing on dissent, signing with the test key,
    /// with no builders or upstreams yet.
    pub fn nix(name: &str) -> CacheSpec {
        CacheSpec {
            name: name.to_owned(),
            flavor: "nix".to_owned(),
            mount: "/".to_owned(),
            quorum: 1,
            on_dissent: "refuse".to_owned(),
            required_builders: Vec::new(),
            signing_key: SigningKey::Test,
            builders: Vec::new(),
            upstreams: Vec::new(),
            witnesses: Vec::new(),
            peers: Vec::new(),
            log_key_file: None,
            weights: Vec::new(),
            revoked: Vec::new(),
            blocked: Vec::new(),
            nar_compression: None,
        }
    }

    /// A Guix cache mounted at `/`, quorum 1, refusing on dissent, signing with the key quorate
    /// generates, with no builders or upstreams yet.
    pub fn guix(name: &str) -> CacheSpec {
        CacheSpec {
            flavor: "guix".to_owned(),
            signing_key: SigningKey::Generated,
            ..CacheSpec::nix(name)
        }
    }

    /// Sets `quorum`.
    pub fn quorum(mut self, quorum: u32) -> CacheSpec {
        self.quorum = quorum;
        self
    }

    /// Sets `nar_compression` (`none` or `zstd`).
    pub fn nar_compression(mut self, compression: &str) -> CacheSpec {
        self.nar_compression = Some(compression.to_owned());
        self
    }

    /// Sets `on_dissent`.
    pub fn on_dissent(mut self, policy: &str) -> CacheSpec {
        self.on_dissent = policy.to_owned();
        self
    }

    /// Sets `mount`.
    pub fn mount(mut self, mount: &str) -> CacheSpec {
        self.mount = mount.to_owned();
        self
    }

    /// Sets `signing_key_file`.
    pub fn signing_key(mut self, file: &Path) -> CacheSpec {
        self.signing_key = SigningKey::File(file.to_path_buf());
        self
    }

    /// Leaves `signing_key_file` out: quorate generates the cache's key.
    pub fn generated_signing_key(mut self) -> CacheSpec {
        self.signing_key = SigningKey::Generated;
        self
    }

    /// Adds a name to `required_builders`.
    pub fn require(mut self, builder: &str) -> CacheSpec {
        self.required_builders.push(builder.to_owned());
        self
    }

    /// Adds a `[[cache.builder]]`.
    pub fn builder<S: AsRef<str>>(mut self, name: &str, keys: &[S]) -> CacheSpec {
        let keys = keys.iter().map(|k| k.as_ref().to_owned()).collect();
        self.builders.push((name.to_owned(), keys));
        self
    }

    /// Sets builder `builder`'s `weight`.
    pub fn weight(mut self, builder: &str, weight: u32) -> CacheSpec {
        self.weights.push((builder.to_owned(), weight));
        self
    }

    /// Adds `{ key, since }` (RFC 3339) to builder `builder`'s `revoked`.
    pub fn revoke(mut self, builder: &str, key: &str, since: &str) -> CacheSpec {
        self.revoked
            .push((builder.to_owned(), key.to_owned(), since.to_owned()));
        self
    }

    /// Adds `{ path = ..., reason }` to `blocked`.
    pub fn block_path(mut self, path: &str, reason: &str) -> CacheSpec {
        self.blocked
            .push(("path".into(), path.to_owned(), reason.to_owned()));
        self
    }

    /// Adds `{ nar_hash = ..., reason }` to `blocked`.
    pub fn block_nar_hash(mut self, nar_hash: &str, reason: &str) -> CacheSpec {
        self.blocked
            .push(("nar_hash".into(), nar_hash.to_owned(), reason.to_owned()));
        self
    }

    /// Sets `log_key_file`.
    pub fn log_key(mut self, file: &Path) -> CacheSpec {
        self.log_key_file = Some(file.to_owned());
        self
    }

    /// Adds a `[[cache.peer]]`: another quorate's log (`<url>/tlog/<cache>`), read every
    /// second, its key taken at first contact.
    pub fn peer(mut self, url: &str) -> CacheSpec {
        self.peers.push(url.to_owned());
        self
    }

    /// Adds a `[[cache.witness]]`: the witness's `add-checkpoint` prefix and its vkey.
    pub fn witness(mut self, url: &str, vkey: &str) -> CacheSpec {
        self.witnesses.push((url.to_owned(), vkey.to_owned()));
        self
    }

    /// Adds a `[[cache.upstream]]` with no priority.
    pub fn upstream(mut self, url: &str) -> CacheSpec {
        self.upstreams.push(UpstreamSpec::new(url));
        self
    }

    /// Adds a `[[cache.upstream]]` as `spec` says.
    pub fn upstream_spec(mut self, spec: UpstreamSpec) -> CacheSpec {
        self.upstreams.push(spec);
        self
    }

    /// Adds a `[[cache.upstream]]` with no priority for each server, in order.
    pub fn upstreams(self, servers: &[UpstreamServer]) -> CacheSpec {
        servers.iter().fold(self, |spec, s| spec.upstream(s.url()))
    }

    /// Adds a `[[cache.upstream]]` with a `priority` (NAR source preference, lower first).
    pub fn upstream_with_priority(mut self, url: &str, priority: u32) -> CacheSpec {
        self.upstreams
            .push(UpstreamSpec::new(url).priority(priority));
        self
    }
}

/// A running quorate.
pub struct Quorate {
    child: Child,
    url: String,
    backend: Backend,
    database_url: String,
    /// The test key's file prefix (`….sec`, `….pub`) and public key, if a cache uses it.
    test_key: Option<(PathBuf, String)>,
    config_path: PathBuf,
    state_dir: PathBuf,
    log_path: PathBuf,
    caches: Vec<CacheSpec>,
    /// The command `quorate serve` runs through (empty: none), kept for restarts.
    wrapper: Vec<String>,
    /// Extra environment of `quorate serve`, kept for restarts.
    env: Vec<(String, String)>,
    /// The top-level settings and tables of the config, kept to rewrite it
    /// ([`Quorate::restart_with`]).
    settings: Vec<(String, String)>,
    sections: Vec<(String, toml::Table)>,
    /// Owns the config, keys, state and log; deleted on drop (unless QUORATE_TEST_KEEP=1).
    dir: tempfile::TempDir,
}

/// The name `quorate keygen` gives the test key.
pub const QUORATE_KEY_NAME: &str = "quorate-test-1";

/// Where a [`Quorate`] keeps its state, when a story needs to say.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// `state_dir` (default: a fresh directory beside the config).
    pub state_dir: Option<PathBuf>,
    /// `database_url` (default: by backend, SQLite in `state_dir` or a fresh PostgreSQL
    /// database on the test server).
    pub database_url: Option<String>,
    /// Other top-level config keys, as (key, TOML string value).
    pub settings: Vec<(String, String)>,
    /// Config tables written after the top-level keys, as (name, table): e.g. `nar_store`
    /// with [`super::garage::Garage::nar_store`] (DESIGN §11).
    pub sections: Vec<(String, toml::Table)>,
    /// `[replica]` with this `secret_file`, and `advertise_url` = this quorate's own URL
    /// (known once its port is picked). `None`: no `[replica]` section.
    pub replica_secret_file: Option<PathBuf>,
    /// The prefix (`….sec`, `….pub`) of an existing test key to sign with, so that several
    /// quorates (a replica set) sign alike. `None`: a fresh key from `quorate keygen`.
    pub test_key: Option<PathBuf>,
    /// Environment variables for `quorate serve` (e.g. `AWS_ACCESS_KEY_ID`), kept for
    /// restarts.
    pub env: Vec<(String, String)>,
}

impl Quorate {
    /// Starts quorate serving `caches`, its records on `backend`; returns once `GET /healthz`
    /// answers 200. From synchronous code only (see [`Quorate::start_async`]).
    pub fn start(backend: Backend, caches: Vec<CacheSpec>) -> Quorate {
        block_on(Quorate::start_async(backend, caches))
    }

    /// [`Quorate::start`] with its state where `placement` says.
    pub fn start_placed(backend: Backend, caches: Vec<CacheSpec>, placement: Placement) -> Quorate {
        block_on(Quorate::start_placed_async(backend, caches, placement, &[]))
    }

    /// [`Quorate::start`], from async code.
    pub async fn start_async(backend: Backend, caches: Vec<CacheSpec>) -> Quorate {
        Quorate::start_placed_async(backend, caches, Placement::default(), &[]).await
    }

    /// [`Quorate::start`], with `quorate serve` run through the command `wrapper` (e.g.
    /// `["prlimit", "--nofile=256:256", "--"]`), which must exec it: the process id stays
    /// quorate's.
    pub fn start_under(backend: Backend, caches: Vec<CacheSpec>, wrapper: &[&str]) -> Quorate {
        block_on(Quorate::start_placed_async(
            backend,
            caches,
            Placement::default(),
            wrapper,
        ))
    }

    /// [`Quorate::start`] with top-level config keys besides `listen`, `state_dir` and
    /// `database_url`, e.g. `("upstream_idle_timeout", "2s")` (values are TOML strings).
    pub fn start_tuned(
        backend: Backend,
        caches: Vec<CacheSpec>,
        settings: &[(&str, &str)],
    ) -> Quorate {
        let placement = Placement {
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Placement::default()
        };
        block_on(Quorate::start_placed_async(backend, caches, placement, &[]))
    }

    /// [`Quorate::start_placed`] with a `wrapper` command, from async code.
    pub async fn start_placed_async(
        backend: Backend,
        caches: Vec<CacheSpec>,
        placement: Placement,
        wrapper: &[&str],
    ) -> Quorate {
        // A port picked here may be taken by someone else before quorate binds it: retry.
        let mut attempt = 1;
        loop {
            match Quorate::try_start(backend, &caches, &placement, wrapper).await {
                Ok(q) => return q,
                Err(log) if attempt < 3 && log.contains("in use") => attempt += 1,
                Err(log) => panic!("quorate serve did not become healthy.\n{log}"),
            }
        }
    }

    /// Kills quorate with SIGKILL (no chance to clean up, as in a crash or an OOM kill) and
    /// starts it again on the same config, port, state and database.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    /// Kills quorate with SIGKILL and waits for it to be gone; [`Quorate::restart`] brings it
    /// back. (A replica that dies mid-download, as in a crash or an OOM kill.)
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process still runs (it was not killed and did not exit).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts quorate again on the same config, port, state, database and environment, after
    /// [`Quorate::kill`] or [`Quorate::terminate`]; returns once `/healthz` answers.
    pub fn restart(&mut self) {
        assert!(!self.is_running(), "quorate is still running");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .expect("reopening quorate.log");
        self.child = spawn_serve(&self.config_path, log, &self.wrapper, &self.env);
        block_on(self.wait_healthy())
            .unwrap_or_else(|log| panic!("quorate did not come back:\n{log}"));
    }

    /// Stops quorate (SIGTERM), rewrites its config with `caches` instead (same port, state,
    /// database and keys), and starts it again: how an operator changes the policy.
    pub fn restart_with(&mut self, caches: Vec<CacheSpec>) {
        let status = self.terminate();
        assert!(
            status.success(),
            "quorate exited with {status}\n{}",
            self.log()
        );
        let config = render_config(
            self.addr().port(),
            &self.state_dir,
            (self.backend == Backend::Postgres).then_some(self.database_url.as_str()),
            self.test_key
                .as_ref()
                .map(|(prefix, _)| prefix.with_extension("sec")),
            &caches,
            &self.settings,
            &self.sections,
        );
        std::fs::write(&self.config_path, config).expect("rewriting quorate.toml");
        self.caches = caches;
        self.restart();
    }

    async fn try_start(
        backend: Backend,
        caches: &[CacheSpec],
        placement: &Placement,
        wrapper: &[&str],
    ) -> Result<Quorate, String> {
        let dir = scratch_dir("quorate");
        let state_dir = placement
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("state"));
        let test_key = caches
            .iter()
            .any(|c| c.signing_key == SigningKey::Test)
            .then(|| {
                let prefix = match &placement.test_key {
                    Some(shared) => shared.clone(),
                    None => {
                        let prefix = dir.path().join("keys").join(QUORATE_KEY_NAME);
                        keygen(&prefix);
                        prefix
                    }
                };
                let public_key = read_trimmed(&prefix.with_extension("pub"));
                (prefix, public_key)
            });
        let database_url = match (&placement.database_url, backend) {
            (Some(url), _) => url.clone(),
            (None, Backend::Sqlite) => {
                format!("sqlite://{}", state_dir.join("quorate.db").display())
            }
            (None, Backend::Postgres) => fresh_postgres_database().await,
        };
        let log_path = dir.path().join("quorate.log");
        let config_path = dir.path().join("quorate.toml");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let mut sections = placement.sections.clone();
        if let Some(secret_file) = &placement.replica_secret_file {
            let mut replica = toml::Table::new();
            replica.insert("advertise_url".into(), url.clone().into());
            replica.insert(
                "secret_file".into(),
                secret_file.display().to_string().into(),
            );
            sections.push(("replica".into(), replica));
        }
        let config = render_config(
            port,
            &state_dir,
            (backend == Backend::Postgres).then_some(database_url.as_str()),
            test_key
                .as_ref()
                .map(|(prefix, _)| prefix.with_extension("sec")),
            caches,
            &placement.settings,
            &sections,
        );
        std::fs::write(&config_path, &config).expect("writing quorate.toml");
        let log = File::create(&log_path).expect("creating quorate.log");
        let wrapper: Vec<String> = wrapper.iter().map(|w| w.to_string()).collect();
        let env = placement.env.clone();
        let child = spawn_serve(&config_path, log, &wrapper, &env);
        let mut q = Quorate {
            child,
            url,
            backend,
            database_url,
            test_key,
            config_path,
            state_dir,
            log_path,
            caches: caches.to_vec(),
            wrapper,
            env,
            settings: placement.settings.clone(),
            sections,
            dir,
        };
        match q.wait_healthy().await {
            Ok(()) => Ok(q),
            // Dropping q kills the process (no log dump: nothing is panicking yet).
            Err(log) => Err(format!(
                "config {}:\n{config}\nlog:\n{log}",
                q.config_path.display()
            )),
        }
    }

    /// Polls `GET /healthz` until 200; on exit or timeout, returns the log.
    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let health = format!("{}/healthz", self.url);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("(quorate exited: {status})\n{}", self.log()));
            }
            let answer = http_get_async(&health, Duration::from_secs(2)).await;
            if matches!(answer, Ok(HttpAnswer { status: 200, .. })) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("(no 200 from {health} in 60 s)\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address quorate listens on, `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        let addr = self.url.trim_start_matches("http://");
        addr.parse()
            .unwrap_or_else(|e| panic!("quorate's address {addr}: {e}"))
    }

    fn spec(&self, name: &str) -> &CacheSpec {
        self.caches
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no cache {name} configured"))
    }

    /// The substituter URL of cache `name` (its mount under the base URL, no trailing slash).
    pub fn cache_url(&self, name: &str) -> String {
        let mount = &self.spec(name).mount;
        format!("{}{}", self.url, mount.trim_end_matches('/'))
    }

    /// The substituter URL of the first cache.
    pub fn substituter(&self) -> String {
        self.cache_url(&self.caches[0].name)
    }

    /// `GET <first cache>/<hash>.narinfo` for a fixture path (from synchronous code).
    pub fn narinfo(&self, path: &FixturePath) -> HttpAnswer {
        let url = format!("{}{}", self.substituter(), path.narinfo_path());
        http_get(&url).unwrap_or_else(|e| panic!("{e}\nquorate log:\n{}", self.log()))
    }

    /// `GET <cache>/<path>` (e.g. `/<hash>.narinfo`, `/nar/zstd/<basename>`), from async
    /// code; a body that breaks off is kept as an error.
    pub async fn get(&self, cache: &str, path: &str) -> HttpAnswer {
        get(&format!("{}{path}", self.cache_url(cache))).await
    }

    /// The test key's public half, `quorate-test-1:<base64>`: what a Nix client trusts.
    pub fn public_key(&self) -> &str {
        match &self.test_key {
            Some((_, public_key)) => public_key,
            None => panic!("no cache of this quorate signs with the test key"),
        }
    }

    /// The public key file of cache `name`: the test key's, the one beside its configured
    /// signing key, or the one quorate generated in `state_dir/keys`.
    pub fn public_key_file(&self, name: &str) -> PathBuf {
        let spec = self.spec(name);
        let secret = match &spec.signing_key {
            SigningKey::Test => match &self.test_key {
                Some((prefix, _)) => prefix.with_extension("sec"),
                None => unreachable!("a cache signs with the test key, so it was made"),
            },
            SigningKey::File(f) => f.clone(),
            SigningKey::Generated => {
                let ext = if spec.flavor == "guix" {
                    "guix.sec"
                } else {
                    "sec"
                };
                self.state_dir.join("keys").join(format!("{name}.{ext}"))
            }
        };
        let public = secret.with_extension("pub");
        assert!(
            public.is_file(),
            "no public key for cache {name} at {}",
            public.display()
        );
        public
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database URL quorate records to (for [`super::records`] checks).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// `state_dir` (NAR store, SQLite database, generated keys).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The config file written.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Where quorate's stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log_path
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

    /// Waits until the API lists an event of `kind` about `store_path` in `cache`; returns it.
    pub async fn event_about(
        &self,
        cache: &str,
        kind: &str,
        store_path: &str,
    ) -> serde_json::Value {
        let what = format!("a {kind} event about {store_path}");
        eventually(&what, || async move {
            self.events(cache, kind)
                .await
                .into_iter()
                .find(|e| e["store_path"] == store_path)
        })
        .await
    }

    /// The quorate process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The quorate process's peak resident memory so far (`VmHWM` in /proc), in KiB.
    pub fn peak_memory_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("reading quorate's /proc status: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in quorate's /proc status:\n{status}"))
    }

    /// Sends SIGTERM, as systemd or a container runtime does to stop a service, and waits for
    /// the process to exit (a minute at most: a hang guard, not a timing assertion).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for quorate") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "quorate did not exit within 60 s of SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of one series at `/metrics`, e.g.
    /// `quorate_nar_requests_total{cache="main",source="store"}`; 0 when it is not there yet
    /// (a labelled series appears with its first count).
    pub fn metric(&self, series: &str) -> f64 {
        let page = http_get(&format!("{}/metrics", self.url)).expect("/metrics answered");
        assert_eq!(page.status, 200, "{}", page.text());
        let text = page.text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// `GET /api/v1/caches/<cache>/paths/<hash part>`: the decision and attestations.
    pub async fn path_record(&self, cache: &str, hash_part: &str) -> serde_json::Value {
        let url = format!("{}/api/v1/caches/{cache}/paths/{hash_part}", self.url);
        get_json(&url).await
    }
}

impl Drop for Quorate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "===== quorate log ({}, {:?} backend, last {} lines) =====\n{}\n===== end of quorate log =====",
                self.log_path.display(),
                self.backend,
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

/// `quorate serve --config CONFIG`, through the command `wrapper` if any (which must exec it),
/// with `env` added to the environment, its output appended to `log`.
fn spawn_serve(
    config_path: &Path,
    log: File,
    wrapper: &[String],
    env: &[(String, String)],
) -> Child {
    let quorate = env!("CARGO_BIN_EXE_quorate");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(quorate);
            c
        }
        None => Command::new(quorate),
    };
    command
        .arg("serve")
        .arg("--config")
        .arg(config_path)
        .env(
            "QUORATE_LOG",
            std::env::var("QUORATE_LOG").unwrap_or_else(|_| "info,quorate=debug".into()),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cloning the log handle"))
        .stderr(log)
        .spawn()
        .expect("spawning quorate serve")
}

/// `quorate keygen --flavor nix --name quorate-test-1 --out PREFIX`.
pub fn keygen(prefix: &Path) {
    keygen_flavor(prefix, "nix", QUORATE_KEY_NAME);
}

/// `quorate keygen --flavor FLAVOR --name NAME --out PREFIX`.
pub fn keygen_flavor(prefix: &Path, flavor: &str, name: &str) {
    std::fs::create_dir_all(prefix.parent().expect("key prefix has a parent"))
        .expect("creating the key directory");
    let out = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["keygen", "--flavor", flavor, "--name", name, "--out"])
        .arg(prefix)
        .stdin(Stdio::null())
        .output()
        .expect("running quorate keygen");
    assert!(
        out.status.success(),
        "quorate keygen failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

/// A TOML basic string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// `database_url`: written when the backend is PostgreSQL (SQLite's is the default).
fn render_config(
    port: u16,
    state_dir: &Path,
    database_url: Option<&str>,
    test_key_file: Option<PathBuf>,
    caches: &[CacheSpec],
    settings: &[(String, String)],
    sections: &[(String, toml::Table)],
) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "# written by tests/common/quorate.rs");
    let _ = writeln!(t, "listen = {}", q(&format!("127.0.0.1:{port}")));
    for (key, value) in settings {
        let _ = writeln!(t, "{key} = {}", q(value));
    }
    let _ = writeln!(t, "state_dir = {}", q(&state_dir.display().to_string()));
    if let Some(url) = database_url {
        let _ = writeln!(t, "database_url = {}", q(url));
    }
    for (name, table) in sections {
        let mut wrapped = toml::Table::new();
        wrapped.insert(name.clone(), toml::Value::Table(table.clone()));
        let text = toml::to_string(&wrapped).expect("rendering a config section");
        let _ = write!(t, "\n{text}");
    }
    for c in caches {
        let _ = writeln!(t, "\n[[cache]]");
        let _ = writeln!(t, "name = {}", q(&c.name));
        let _ = writeln!(t, "flavor = {}", q(&c.flavor));
        let _ = writeln!(t, "mount = {}", q(&c.mount));
        let key_file = match &c.signing_key {
            SigningKey::Test => test_key_file.as_ref(),
            SigningKey::File(f) => Some(f),
            SigningKey::Generated => None,
        };
        if let Some(f) = key_file {
            let _ = writeln!(t, "signing_key_file = {}", q(&f.display().to_string()));
        }
        if let Some(f) = &c.log_key_file {
            let _ = writeln!(t, "log_key_file = {}", q(&f.display().to_string()));
        }
        let _ = writeln!(t, "quorum = {}", c.quorum);
        let _ = writeln!(t, "on_dissent = {}", q(&c.on_dissent));
        if let Some(compression) = &c.nar_compression {
            let _ = writeln!(t, "nar_compression = {}", q(compression));
        }
        if !c.required_builders.is_empty() {
            let names: Vec<String> = c.required_builders.iter().map(|b| q(b)).collect();
            let _ = writeln!(t, "required_builders = [{}]", names.join(", "));
        }
        if !c.blocked.is_empty() {
            let entries: Vec<String> = c
                .blocked
                .iter()
                .map(|(k, v, reason)| format!("{{ {k} = {}, reason = {} }}", q(v), q(reason)))
                .collect();
            let _ = writeln!(t, "blocked = [{}]", entries.join(", "));
        }
        for (name, keys) in &c.builders {
            let keys: Vec<String> = keys.iter().map(|k| q(k)).collect();
            let _ = writeln!(t, "\n  [[cache.builder]]");
            let _ = writeln!(t, "  name = {}", q(name));
            let _ = writeln!(t, "  keys = [{}]", keys.join(", "));
            if let Some((_, w)) = c.weights.iter().find(|(b, _)| b == name) {
                let _ = writeln!(t, "  weight = {w}");
            }
            let revoked: Vec<String> = c
                .revoked
                .iter()
                .filter(|(b, _, _)| b == name)
                .map(|(_, key, since)| format!("{{ key = {}, since = {} }}", q(key), q(since)))
                .collect();
            if !revoked.is_empty() {
                let _ = writeln!(t, "  revoked = [{}]", revoked.join(", "));
            }
        }
        for up in &c.upstreams {
            let _ = writeln!(t, "\n  [[cache.upstream]]");
            let _ = writeln!(t, "  url = {}", q(&up.url));
            if let Some(p) = up.priority {
                let _ = writeln!(t, "  priority = {p}");
            }
            if let Some(token) = &up.bearer_token {
                let _ = writeln!(t, "  bearer_token = {}", q(token));
            }
            if !up.nar_hosts.is_empty() {
                let hosts: Vec<String> = up.nar_hosts.iter().map(|h| q(h)).collect();
                let _ = writeln!(t, "  nar_hosts = [{}]", hosts.join(", "));
            }
        }
        for url in &c.peers {
            let _ = writeln!(t, "\n  [[cache.peer]]");
            let _ = writeln!(t, "  url = {}", q(url));
            let _ = writeln!(t, "  interval = \"1s\"");
        }
        for (url, vkey) in &c.witnesses {
            let _ = writeln!(t, "\n  [[cache.witness]]");
            let _ = writeln!(t, "  url = {}", q(url));
            let _ = writeln!(t, "  vkey = {}", q(vkey));
        }
    }
    t
}

/// Creates a fresh database on the test PostgreSQL server and returns its URL.
pub async fn fresh_postgres_database() -> String {
    let admin = std::env::var("QUORATE_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "QUORATE_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh (it starts \
             a throwaway PostgreSQL), or set QUORATE_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL \
             variants"
        )
    });
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "quorate_test_{}_{}_{}",
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

/// `postgres://user@host:port/olddb?params` → the same with `/name` as the database.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[authority_start..]
        .find('/')
        .map(|i| authority_start + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn with_database_replaces_only_the_path() {
        let f = super::with_database;
        assert_eq!(f("postgres://u@h:5/postgres", "x"), "postgres://u@h:5/x");
        assert_eq!(f("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(
            f("postgresql://u@/db?host=/run/pg&port=5", "x"),
            "postgresql://u@/x?host=/run/pg&port=5"
        );
    }
}
