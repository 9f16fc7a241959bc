//! Configuration: the TOML contract of DESIGN §7, its defaults, and validation whose errors
//! name the offending key.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! state_dir = "./quorate-state"
//!
//! [[cache]]
//! name = "nixos"
//! flavor = "nix"
//! quorum = 2
//!
//!   [[cache.builder]]
//!   name = "hydra"
//!   keys = ["cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="]
//!
//!   [[cache.upstream]]
//!   url = "https://cache.nixos.org"
//! ```
//!
//! Parsing happens in two steps: serde reads the raw file with `deny_unknown_fields` (a typo
//! must never silently drop a security setting), then [`Config::from_raw`] checks the meaning
//! (quorum reachable by the builders' summed weight, required builders exist, keys parse, no
//! key shared by two builders, revoked keys are the builder's own, blocked paths and
//! NarHashes well-formed) and resolves relative paths against the config file's directory.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use quorate_core::tlog::checkpoint::CosignatureVerifier;
use quorate_core::tlog::note::VerifierKey;
use serde::Deserialize;

use quorate_core::builder::{Builder, BuilderKey, Revocation};
pub use quorate_core::flavor::Flavor;
use quorate_core::protocol::guix_key::GuixPublicKey;
use quorate_core::protocol::nar_hash::NarHash;
use quorate_core::protocol::nix_key::NixPublicKey;
use quorate_core::protocol::store_path::StorePath;
use quorate_core::quorum::{Block, BlockTarget, OnDissent};

use crate::limits::{
    DEFAULT_PUSH_PER_CLIENT_PER_MINUTE, DEFAULT_PUSH_PER_KEY_PER_MINUTE,
    DEFAULT_UPSTREAM_IDLE_TIMEOUT, DEFAULT_UPSTREAM_TIMEOUT, PEER_INTERVAL,
};

/// A configuration problem, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or schema error (unknown keys, wrong types); toml's message names the key
    /// and line.
    #[error("invalid config {path}: {message}")]
    Toml {
        /// The file.
        path: String,
        /// toml's description, with line and column.
        message: String,
    },
    /// A value is syntactically fine but not acceptable.
    #[error("invalid config: `{key}`: {message}")]
    Invalid {
        /// Dotted path of the key, e.g. `cache[0].quorum`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------- raw (serde) schema

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    state_dir: Option<PathBuf>,
    database_url: Option<String>,
    max_cache_size: Option<String>,
    upstream_timeout: Option<String>,
    upstream_idle_timeout: Option<String>,
    max_connections: Option<i64>,
    nar_store: Option<RawNarStore>,
    replica: Option<RawReplica>,
    witness: Option<RawWitness>,
    push: Option<RawPush>,
    #[serde(default)]
    cache: Vec<RawCache>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    per_key_per_minute: Option<i64>,
    per_client_per_minute: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWitness {
    key_file: Option<PathBuf>,
    #[serde(default)]
    log: Vec<RawWitnessedLog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWitnessedLog {
    vkey: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCacheWitness {
    url: String,
    vkey: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNarStore {
    url: String,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    access_key_id: Option<String>,
    secret_access_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplica {
    advertise_url: String,
    secret_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    name: String,
    flavor: Flavor,
    mount: Option<String>,
    store_dir: Option<String>,
    signing_key_file: Option<PathBuf>,
    log_key_file: Option<PathBuf>,
    signing_key_name: Option<String>,
    priority: Option<u32>,
    quorum: Option<i64>,
    on_dissent: Option<String>,
    nar_compression: Option<String>,
    #[serde(default)]
    required_builders: Vec<String>,
    #[serde(default)]
    builder: Vec<RawBuilder>,
    #[serde(default)]
    upstream: Vec<RawUpstream>,
    #[serde(default)]
    witness: Vec<RawCacheWitness>,
    #[serde(default)]
    peer: Vec<RawPeer>,
    #[serde(default)]
    blocked: Vec<RawBlock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    url: String,
    vkey: Option<String>,
    interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuilder {
    name: String,
    keys: Vec<String>,
    weight: Option<i64>,
    #[serde(default)]
    revoked: Vec<RawRevocation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevocation {
    key: String,
    since: RawTime,
}

/// A time as a quoted RFC 3339 string or a bare TOML datetime; both read the same.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawTime {
    Text(String),
    Toml(toml::value::Datetime),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    path: Option<String>,
    nar_hash: Option<String>,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: String,
    priority: Option<u32>,
    bearer_token: Option<String>,
    #[serde(default)]
    nar_hosts: Vec<String>,
}

// ---------------------------------------------------------------- validated config

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// NAR store, generated keys and the SQLite database live here.
    pub state_dir: PathBuf,
    /// `sqlite://...` (default, in `state_dir`) or `postgres://...`.
    pub database_url: String,
    /// Upper bound of the local NAR store in bytes; `None` = unbounded.
    pub max_cache_size: Option<u64>,
    /// How long one upstream request may take before it counts as failed: connecting, and
    /// the wait for the response head (and a whole narinfo).
    pub upstream_timeout: Duration,
    /// How long an upstream body (NAR, log) may go without a byte before it is abandoned.
    pub upstream_idle_timeout: Duration,
    /// Client connections open at once; `None`: [`DEFAULT_MAX_CONNECTIONS`]. Either way at
    /// most what the open-file limit allows (`serve`).
    ///
    /// [`DEFAULT_MAX_CONNECTIONS`]: crate::limits::DEFAULT_MAX_CONNECTIONS
    pub max_connections: Option<usize>,
    /// Where verified NARs are kept.
    pub nar_store: NarStoreConfig,
    /// This process's place in a replica set, if it is in one.
    pub replica: Option<ReplicaConfig>,
    /// Other logs this process witnesses (`[witness]`), if any.
    pub witness: Option<WitnessConfig>,
    /// Rate limits of pushed attestations (`[push]`).
    pub push: PushConfig,
    /// The served caches.
    pub caches: Vec<CacheConfig>,
}

/// `[witness]`: this quorate cosigns other logs' checkpoints after checking consistency
/// (C2SP tlog-witness).
#[derive(Clone, Debug)]
pub struct WitnessConfig {
    /// The witness's own cosigning key (generated on first start if missing).
    pub key_file: PathBuf,
    /// The logs it witnesses: their verifier keys (`[[witness.log]] vkey`); a vkey's name
    /// is the log's origin.
    pub logs: Vec<VerifierKey>,
}

/// `[push]`: how fast builders may push attestations (`POST
/// /api/v1/caches/<cache>/attestations`). Operators tune these: a large rebuilder pushing a
/// whole evaluation's outputs may need more than the defaults, a quorate open to the internet
/// less.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushConfig {
    /// Narinfos a minute one builder key may push into one cache (and at once).
    pub per_key_per_minute: u32,
    /// Narinfos a minute one client address (IPv6: its /64) may push, accepted or not.
    pub per_client_per_minute: u32,
}

/// `[[cache.witness]]`: a witness the cache's log sends its checkpoints to.
#[derive(Clone, Debug)]
pub struct CacheWitness {
    /// The witness's `add-checkpoint` prefix, e.g. `http://witness.lan:8080/witness`.
    pub url: String,
    /// Its cosignature verifier key.
    pub vkey: CosignatureVerifier,
}

/// `[[cache.peer]]`: another quorate's transparency log this cache follows (DESIGN §13).
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The log's base URL, `https://host/tlog/<cache>` (no trailing slash).
    pub url: reqwest::Url,
    /// The log's verifier key; `None`: the one it serves at first contact, kept from then on.
    pub vkey: Option<VerifierKey>,
    /// How often its checkpoint is read.
    pub interval: Duration,
}

/// Where verified NARs are kept (`[nar_store]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NarStoreConfig {
    /// A local directory (`file://...`; the default, `<state_dir>/nars`).
    Directory(PathBuf),
    /// An S3-compatible bucket (`s3://bucket/prefix`).
    S3(S3Config),
}

/// An S3-compatible object store for NARs.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The S3 endpoint for a self-hosted store; `None` for AWS.
    pub endpoint: Option<String>,
    /// The region (self-hosted stores accept anything agreed with their config).
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), what self-hosted stores expect.
    pub path_style: bool,
    /// The access key id; `None`: from `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// A file holding the secret access key; `None`: from `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

/// A member of a replica set (`[replica]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// How the other replicas reach this one (its base URL, without trailing `/`).
    pub advertise_url: String,
    /// The file holding the secret every replica shares (authenticates internal routes).
    pub secret_file: PathBuf,
}

/// One served substitute endpoint (DESIGN §2 "cache").
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Unique name; recorded with every attestation and decision.
    pub name: String,
    /// Protocol spoken to clients and upstreams.
    pub flavor: Flavor,
    /// URL prefix without trailing slash; `""` for the root.
    pub mount: String,
    /// Store directory, e.g. `/nix/store`.
    pub store_dir: String,
    /// quorate's own secret key for this cache (generated on first start if missing).
    pub signing_key_file: PathBuf,
    /// The transparency log's own key (default `<state_dir>/keys/<name>.log.sec`, generated
    /// on first start); every replica of a set must use the same one.
    pub log_key_file: PathBuf,
    /// Name for a generated Nix key (ignored for Guix and for existing files).
    pub signing_key_name: String,
    /// `Priority:` announced in `nix-cache-info`.
    pub priority: u32,
    /// Minimum summed weight of the distinct builders that must agree.
    pub quorum: usize,
    /// What a dissenting trusted builder does to the decision.
    pub on_dissent: OnDissent,
    /// Builders that must be among the agreeing ones.
    pub required_builders: Vec<String>,
    /// The independent parties whose signatures count, with their weights and revoked keys.
    pub builders: Vec<Builder>,
    /// Store paths and NarHashes refused whatever the builders say (`blocked`).
    pub blocked: Vec<Block>,
    /// Where narinfos and NARs are fetched from (untrusted).
    pub upstreams: Vec<UpstreamConfig>,
    /// Witnesses of the cache's transparency log.
    pub witnesses: Vec<CacheWitness>,
    /// Other quorates' logs whose attestations this cache imports (`[[cache.peer]]`).
    pub peers: Vec<PeerConfig>,
    /// How NARs are offered to clients once stored (`nar_compression`).
    pub nar_compression: NarCompression,
}

/// `nar_compression`: the form a cache offers its stored NARs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NarCompression {
    /// The NAR as it is (`Compression: none`): right on a LAN.
    None,
    /// A zstd copy made once beside each verified NAR in the local store, advertised once
    /// it exists: right for clients across a WAN.
    Zstd,
}

/// An upstream substitute server.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// Base URL without trailing slash, as configured: the upstream's name in records,
    /// health and logs. Never used to build a request URL (that is `base`).
    pub url: String,
    /// The same URL parsed once: every URL quorate requests from this upstream is built from
    /// it with the URL API (the `upstream` module), never by pasting strings.
    pub base: reqwest::Url,
    /// NAR source preference: lower first. Upstreams of equal priority (all, by default:
    /// [`DEFAULT_UPSTREAM_PRIORITY`]) are ordered by which is expected to deliver soonest.
    pub priority: u32,
    /// Sent as `Authorization: Bearer` for private caches, and only ever to `base`'s origin.
    pub bearer_token: Option<String>,
    /// Hosts other than the upstream's own from which it may have quorate fetch NARs (a
    /// CDN): without them a narinfo's `URL:` or a redirect leaving the origin is refused.
    pub nar_hosts: Vec<NarHost>,
}

/// Not derived: the bearer token must never reach a log line.
impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("url", &self.url)
            .field("priority", &self.priority)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("nar_hosts", &self.nar_hosts)
            .finish()
    }
}

/// One `nar_hosts` entry: a host name or IP address, and optionally a port. Without a port
/// it allows the scheme's default port only (443 for https, 80 for http).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarHost {
    /// Lowercase host name, or an IP address as the URL parser writes it (`[::1]`).
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
}

impl NarHost {
    /// Whether `url` (http or https) is on this host and port.
    pub fn allows(&self, url: &reqwest::Url) -> bool {
        let port_ok = match self.port {
            // No port given: the scheme's default only.
            None => url.port().is_none(),
            Some(port) => url.port_or_known_default() == Some(port),
        };
        port_ok && url.host_str() == Some(self.host.as_str())
    }
}

impl std::fmt::Display for NarHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// An upstream's `priority` when the config gives none: the same for all, so that
/// measured speed and decoding cost order them (see the delivery module).
pub const DEFAULT_UPSTREAM_PRIORITY: u32 = 10;

/// cache.nixos.org's public key, for the default configuration.
pub const NIXOS_KEY: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

impl Config {
    /// Read and validate a config file; relative paths resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        Config::from_toml(&text, &path.display().to_string(), &base)
    }

    /// Parse and validate TOML text; `origin` names it in errors, `base` resolves paths.
    pub fn from_toml(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: origin.to_string(),
            message: e.to_string().trim().to_string(),
        })?;
        Config::from_raw(raw, base)
    }

    /// The configuration `quorate serve` runs without `--config`: one Nix cache at `/` in
    /// front of cache.nixos.org, trusting hydra alone (quorum 1).
    pub fn default_config() -> Config {
        let text = format!(
            r#"
            [[cache]]
            name = "nixos"
            flavor = "nix"
            quorum = 1
              [[cache.builder]]
              name = "hydra"
              keys = ["{NIXOS_KEY}"]
              [[cache.upstream]]
              url = "https://cache.nixos.org"
            "#
        );
        // The embedded default is valid by construction; a failure here is a programming
        // error caught by the unit test `default_config_is_valid`.
        match Config::from_toml(&text, "<default>", Path::new(".")) {
            Ok(c) => c,
            Err(e) => unreachable!("built-in default config is invalid: {e}"),
        }
    }

    fn from_raw(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
        let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen = SocketAddr::from_str(listen)
            .map_err(|e| invalid("listen", format!("`{listen}` is not an address: {e}")))?;
        let state_dir = base.join(
            raw.state_dir
                .unwrap_or_else(|| PathBuf::from("quorate-state")),
        );
        let database_url = database_url(raw.database_url, &state_dir)?;
        let max_cache_size = raw
            .max_cache_size
            .as_deref()
            .map(|s| parse_size(s).map_err(|m| invalid("max_cache_size", m)))
            .transpose()?;
        let upstream_timeout = raw
            .upstream_timeout
            .as_deref()
            .map(|s| parse_duration(s).map_err(|m| invalid("upstream_timeout", m)))
            .transpose()?
            .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT);
        let upstream_idle_timeout = raw
            .upstream_idle_timeout
            .as_deref()
            .map(|s| parse_duration(s).map_err(|m| invalid("upstream_idle_timeout", m)))
            .transpose()?
            .unwrap_or(DEFAULT_UPSTREAM_IDLE_TIMEOUT);
        let max_connections = raw
            .max_connections
            .map(|n| {
                usize::try_from(n)
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| invalid("max_connections", "must be at least 1"))
            })
            .transpose()?;
        if raw.cache.is_empty() {
            return Err(invalid("cache", "at least one [[cache]] is required"));
        }
        let caches = raw
            .cache
            .into_iter()
            .enumerate()
            .map(|(i, rc)| CacheConfig::from_raw(rc, i, base, &state_dir))
            .collect::<Result<Vec<_>, _>>()?;
        check_names_and_mounts(&caches)?;
        let nar_store = match raw.nar_store {
            Some(raw) => nar_store_from_raw(raw, base)?,
            None => NarStoreConfig::Directory(state_dir.join("nars")),
        };
        let replica = raw
            .replica
            .map(|r| replica_from_raw(r, base, &database_url, &nar_store))
            .transpose()?;
        let witness = raw
            .witness
            .map(|w| witness_from_raw(w, base, &state_dir))
            .transpose()?;
        let push = push_from_raw(raw.push)?;
        Ok(Config {
            witness,
            push,
            listen,
            state_dir,
            database_url,
            max_cache_size,
            upstream_timeout,
            upstream_idle_timeout,
            max_connections,
            nar_store,
            replica,
            caches,
        })
    }
}

/// `[push]`: the rates, each at least 1 narinfo a minute.
fn push_from_raw(raw: Option<RawPush>) -> Result<PushConfig, ConfigError> {
    let rate = |value: Option<i64>, key: &str, default: u32| match value {
        None => Ok(default),
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| invalid(format!("push.{key}"), "must be a whole number from 1")),
    };
    let (key, client) = match raw {
        Some(r) => (r.per_key_per_minute, r.per_client_per_minute),
        None => (None, None),
    };
    Ok(PushConfig {
        per_key_per_minute: rate(key, "per_key_per_minute", DEFAULT_PUSH_PER_KEY_PER_MINUTE)?,
        per_client_per_minute: rate(
            client,
            "per_client_per_minute",
            DEFAULT_PUSH_PER_CLIENT_PER_MINUTE,
        )?,
    })
}

/// `[witness]`: the witness key (default `<state_dir>/keys/witness.sec`) and the logs it
/// witnesses, by their vkeys.
fn witness_from_raw(
    w: RawWitness,
    base: &Path,
    state_dir: &Path,
) -> Result<WitnessConfig, ConfigError> {
    let logs = w
        .log
        .into_iter()
        .enumerate()
        .map(|(j, l)| {
            l.vkey
                .trim()
                .parse::<VerifierKey>()
                .map_err(|e| invalid(format!("witness.log[{j}].vkey"), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let key_file = match w.key_file {
        Some(p) => base.join(p),
        None => state_dir.join("keys").join("witness.sec"),
    };
    Ok(WitnessConfig { key_file, logs })
}

/// `[[cache.witness]]`s of cache `i`: URLs and cosignature vkeys.
fn cache_witnesses_from_raw(
    raw: Vec<RawCacheWitness>,
    i: usize,
) -> Result<Vec<CacheWitness>, ConfigError> {
    raw.into_iter()
        .enumerate()
        .map(|(j, w)| {
            let vkey =
                w.vkey.trim().parse().map_err(|e| {
                    invalid(format!("cache[{i}].witness[{j}].vkey"), format!("{e}"))
                })?;
            Ok(CacheWitness {
                url: w.url.trim_end_matches('/').to_owned(),
                vkey,
            })
        })
        .collect()
}

/// `[[cache.peer]]`s of cache `i`: an http(s) URL of a log (its `/tlog/<cache>` prefix), an
/// optional vkey, an optional interval (default [`PEER_INTERVAL`]).
fn peers_from_raw(raw: Vec<RawPeer>, i: usize) -> Result<Vec<PeerConfig>, ConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    raw.into_iter()
        .enumerate()
        .map(|(j, p)| {
            let key = |k: &str| format!("cache[{i}].peer[{j}].{k}");
            let url = reqwest::Url::parse(p.url.trim().trim_end_matches('/'))
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .filter(|u| u.query().is_none() && u.fragment().is_none())
                .ok_or_else(|| {
                    invalid(
                        key("url"),
                        format!(
                            "`{}` is not an http(s) URL of a log, like \"https://host/tlog/nixos\"",
                            p.url
                        ),
                    )
                })?;
            if !seen.insert(url.to_string()) {
                return Err(invalid(key("url"), format!("`{url}` is followed twice")));
            }
            let vkey = p
                .vkey
                .map(|v| v.trim().parse::<VerifierKey>())
                .transpose()
                .map_err(|e| invalid(key("vkey"), e.to_string()))?;
            let interval = p
                .interval
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|m| invalid(key("interval"), m))?
                .unwrap_or(PEER_INTERVAL);
            Ok(PeerConfig {
                url,
                vkey,
                interval,
            })
        })
        .collect()
}

/// `[nar_store]`: `file://<path>` or `s3://<bucket>[/<prefix>]` with its S3 settings.
fn nar_store_from_raw(raw: RawNarStore, base: &Path) -> Result<NarStoreConfig, ConfigError> {
    let s3_only = [
        ("endpoint", raw.endpoint.is_some()),
        ("region", raw.region.is_some()),
        ("path_style", raw.path_style.is_some()),
        ("access_key_id", raw.access_key_id.is_some()),
        (
            "secret_access_key_file",
            raw.secret_access_key_file.is_some(),
        ),
    ];
    if let Some(path) = raw.url.strip_prefix("file://") {
        if let Some((key, _)) = s3_only.iter().find(|(_, set)| *set) {
            return Err(invalid(
                format!("nar_store.{key}"),
                "only means something for an s3:// store",
            ));
        }
        if path.is_empty() {
            return Err(invalid("nar_store.url", "file:// needs a directory"));
        }
        return Ok(NarStoreConfig::Directory(base.join(path)));
    }
    let Some(rest) = raw.url.strip_prefix("s3://") else {
        return Err(invalid(
            "nar_store.url",
            format!(
                "`{}` is neither file://<dir> nor s3://<bucket>[/<prefix>]",
                raw.url
            ),
        ));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    };
    if !name_ok(bucket) {
        return Err(invalid(
            "nar_store.url",
            format!("`{bucket}` is not a bucket name"),
        ));
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty()
        && !prefix
            .split('/')
            .all(|seg| name_ok(seg) && seg != "." && seg != "..")
    {
        return Err(invalid(
            "nar_store.url",
            format!("`{prefix}` is not a key prefix of letters, digits, '-', '.', '_' and '/'"),
        ));
    }
    let endpoint = raw
        .endpoint
        .map(|e| {
            let e = e.trim_end_matches('/').to_owned();
            if e.starts_with("http://") || e.starts_with("https://") {
                Ok(e)
            } else {
                Err(invalid(
                    "nar_store.endpoint",
                    format!("`{e}` is not an http(s) URL"),
                ))
            }
        })
        .transpose()?;
    Ok(NarStoreConfig::S3(S3Config {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        path_style: raw.path_style.unwrap_or(endpoint.is_some()),
        endpoint,
        region: raw.region,
        access_key_id: raw.access_key_id,
        secret_access_key_file: raw.secret_access_key_file.map(|f| base.join(f)),
    }))
}

/// `[replica]`: only on PostgreSQL and an object store, which the replicas share.
fn replica_from_raw(
    raw: RawReplica,
    base: &Path,
    database_url: &str,
    nar_store: &NarStoreConfig,
) -> Result<ReplicaConfig, ConfigError> {
    if database_url.starts_with("sqlite:") {
        return Err(invalid(
            "replica",
            "a replica set shares one PostgreSQL database: set database_url = \"postgres://...\" \
             (SQLite is for a single process)",
        ));
    }
    if !matches!(nar_store, NarStoreConfig::S3(_)) {
        return Err(invalid(
            "replica",
            "a replica set keeps its NARs in one object store: set [nar_store] url = \"s3://...\"",
        ));
    }
    let url = raw.advertise_url.trim_end_matches('/').to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 8 {
        return Err(invalid(
            "replica.advertise_url",
            format!("`{}` is not an http(s) URL", raw.advertise_url),
        ));
    }
    Ok(ReplicaConfig {
        advertise_url: url,
        secret_file: base.join(raw.secret_file),
    })
}

/// `database_url` as given (an SQLite or PostgreSQL URL), or SQLite in `state_dir`.
fn database_url(given: Option<String>, state_dir: &Path) -> Result<String, ConfigError> {
    match given {
        Some(url)
            if url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://") =>
        {
            Ok(url)
        }
        Some(_) => Err(invalid(
            "database_url",
            "must start with sqlite:, postgres:// or postgresql://",
        )),
        None => Ok(format!(
            "sqlite://{}",
            state_dir.join("quorate.db").display()
        )),
    }
}

/// Cache names and mounts are unique, and no mount lies inside another (routing stays
/// unambiguous; a cache at `/` shadows others only for its own file names).
fn check_names_and_mounts(caches: &[CacheConfig]) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    let mut mounts = BTreeSet::new();
    for (i, c) in caches.iter().enumerate() {
        if !names.insert(c.name.as_str()) {
            return Err(invalid(
                format!("cache[{i}].name"),
                format!("duplicate cache name `{}`", c.name),
            ));
        }
        if !mounts.insert(c.mount.as_str()) {
            return Err(invalid(
                format!("cache[{i}].mount"),
                format!("mount `{}/` is used by two caches", c.mount),
            ));
        }
    }
    for a in &mounts {
        for b in &mounts {
            if !a.is_empty() && a != b && b.starts_with(&format!("{a}/")) {
                return Err(invalid(
                    "cache.mount",
                    format!("mount `{b}` is inside `{a}`"),
                ));
            }
        }
    }
    Ok(())
}

impl CacheConfig {
    fn from_raw(
        rc: RawCache,
        i: usize,
        base: &Path,
        state_dir: &Path,
    ) -> Result<CacheConfig, ConfigError> {
        let key = |k: &str| format!("cache[{i}].{k}");
        check_cache_name(&rc.name).map_err(|m| invalid(key("name"), m))?;
        let mount = normalise_mount(rc.mount.as_deref().unwrap_or("/"))
            .map_err(|m| invalid(key("mount"), m))?;
        let store_dir = rc
            .store_dir
            .unwrap_or_else(|| rc.flavor.default_store_dir().to_string());
        if !store_dir.starts_with('/') || store_dir.len() < 2 || store_dir.ends_with('/') {
            return Err(invalid(
                key("store_dir"),
                "must be an absolute path without trailing slash",
            ));
        }
        let signing_key_file = match rc.signing_key_file {
            Some(p) => base.join(p),
            None => default_key_file(state_dir, &rc.name, rc.flavor),
        };
        let on_dissent = match rc.on_dissent.as_deref().unwrap_or("refuse") {
            "refuse" => OnDissent::Refuse,
            "majority" => OnDissent::Majority,
            other => {
                return Err(invalid(
                    key("on_dissent"),
                    format!("`{other}` is not one of \"refuse\", \"majority\""),
                ))
            }
        };
        let nar_compression = match rc.nar_compression.as_deref().unwrap_or("none") {
            "none" => NarCompression::None,
            "zstd" => NarCompression::Zstd,
            other => {
                return Err(invalid(
                    key("nar_compression"),
                    format!("`{other}` is not one of \"none\", \"zstd\""),
                ))
            }
        };
        let builders = builders_from_raw(rc.builder, rc.flavor, i, base)?;
        let quorum = check_quorum(rc.quorum.unwrap_or(1), &rc.required_builders, &builders)
            .map_err(|(k, m)| invalid(key(k), m))?;
        let witnesses = cache_witnesses_from_raw(rc.witness, i)?;
        let peers = peers_from_raw(rc.peer, i)?;
        let blocked = blocks_from_raw(rc.blocked, &store_dir, i)?;
        let log_key_file = match rc.log_key_file {
            Some(p) => base.join(p),
            None => state_dir.join("keys").join(format!("{}.log.sec", rc.name)),
        };
        Ok(CacheConfig {
            log_key_file,
            witnesses,
            peers,
            upstreams: upstreams_from_raw(rc.upstream, i)?,
            name: rc.name,
            flavor: rc.flavor,
            mount,
            store_dir,
            signing_key_file,
            signing_key_name: rc.signing_key_name.unwrap_or_else(|| "quorate-1".into()),
            priority: rc.priority.unwrap_or(40),
            quorum,
            on_dissent,
            nar_compression,
            required_builders: rc.required_builders,
            builders,
            blocked,
        })
    }
}

fn check_cache_name(name: &str) -> Result<(), &'static str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if name.is_empty() || !name.chars().all(allowed) {
        return Err("must be non-empty and use only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// Where a cache's generated signing key lives when `signing_key_file` is not set.
fn default_key_file(state_dir: &Path, cache: &str, flavor: Flavor) -> PathBuf {
    let suffix = match flavor {
        Flavor::Nix => "sec",
        Flavor::Guix => "guix.sec",
    };
    state_dir.join("keys").join(format!("{cache}.{suffix}"))
}

/// The builders of cache `i`: names unique and non-empty, every key parsed for the flavor,
/// and no key held by two builders (one key, one vote).
fn builders_from_raw(
    raw: Vec<RawBuilder>,
    flavor: Flavor,
    i: usize,
    base: &Path,
) -> Result<Vec<Builder>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid(
            format!("cache[{i}].builder"),
            "at least one [[cache.builder]] is required",
        ));
    }
    let mut builders: Vec<Builder> = Vec::new();
    // A key is identified by its name (what a Nix Sig names) and by its bytes (what signs):
    // either one shared by two entries would let one signer vote twice.
    let mut name_owner: HashMap<String, String> = HashMap::new();
    let mut bytes_owner: HashMap<[u8; 32], (String, String)> = HashMap::new();
    for (j, rb) in raw.into_iter().enumerate() {
        let bkey = |k: &str| format!("cache[{i}].builder[{j}].{k}");
        if rb.name.is_empty() {
            return Err(invalid(bkey("name"), "must not be empty"));
        }
        if builders.iter().any(|b| b.name == rb.name) {
            return Err(invalid(
                bkey("name"),
                format!("duplicate builder name `{}`", rb.name),
            ));
        }
        if rb.keys.is_empty() {
            return Err(invalid(bkey("keys"), "a builder needs at least one key"));
        }
        let mut keys = Vec::new();
        for (k, text) in rb.keys.iter().enumerate() {
            let at = || format!("cache[{i}].builder[{j}].keys[{k}]");
            let parsed = parse_builder_key(flavor, text, base).map_err(|m| invalid(at(), m))?;
            let id = parsed.key_name();
            if let Some(owner) = name_owner.insert(id.clone(), rb.name.clone()) {
                return Err(invalid(
                    at(),
                    format!(
                        "key `{id}` is already a key of builder `{owner}`: one key, one builder"
                    ),
                ));
            }
            let twin = bytes_owner.insert(parsed.key_bytes(), (id.clone(), rb.name.clone()));
            if let Some((other, owner)) = twin {
                return Err(invalid(
                    at(),
                    format!(
                        "key `{id}` has the same public key bytes as `{other}` of builder \
                         `{owner}`: keys are identified by their bytes, so one signer would \
                         vote twice"
                    ),
                ));
            }
            keys.push(parsed);
        }
        let weight = match rb.weight {
            None => 1,
            Some(w) => u32::try_from(w).ok().filter(|w| *w >= 1).ok_or_else(|| {
                invalid(
                    bkey("weight"),
                    format!("must be a whole number from 1 to {}, got {w}", u32::MAX),
                )
            })?,
        };
        let revoked = revocations_from_raw(rb.revoked, flavor, &keys, base, &bkey("revoked"))?;
        builders.push(Builder {
            name: rb.name,
            keys,
            weight,
            revoked,
        });
    }
    Ok(builders)
}

/// A builder's `revoked` list (its key `at`): each key one of the builder's own `keys` (a
/// revoked key stays among them so that what it signed before still verifies), each once,
/// with an RFC 3339 UTC `since`.
fn revocations_from_raw(
    raw: Vec<RawRevocation>,
    flavor: Flavor,
    keys: &[BuilderKey],
    base: &Path,
    at: &str,
) -> Result<Vec<Revocation>, ConfigError> {
    let mut revoked: Vec<Revocation> = Vec::new();
    for (k, r) in raw.into_iter().enumerate() {
        let key_at = format!("{at}[{k}].key");
        let parsed = parse_builder_key(flavor, &r.key, base).map_err(|m| invalid(&key_at, m))?;
        let Some(own) = keys
            .iter()
            .find(|k| k.key_bytes() == parsed.key_bytes() && k.key_name() == parsed.key_name())
        else {
            return Err(invalid(
                key_at,
                format!(
                    "`{}` is not one of this builder's keys: keep a revoked key in `keys` (what \
                     it signed before `since` still counts); to stop counting a key \
                     altogether, remove it from `keys`",
                    parsed.key_name()
                ),
            ));
        };
        if revoked.iter().any(|r| r.key.key_bytes() == own.key_bytes()) {
            return Err(invalid(
                key_at,
                format!("`{}` is revoked twice", own.key_name()),
            ));
        }
        let since = parse_utc_time(&r.since).map_err(|m| invalid(format!("{at}[{k}].since"), m))?;
        revoked.push(Revocation {
            key: own.clone(),
            since,
        });
    }
    Ok(revoked)
}

/// An RFC 3339 time in UTC (`2026-11-01T00:00:00Z`) as Unix milliseconds.
fn parse_utc_time(t: &RawTime) -> Result<i64, String> {
    let text = match t {
        RawTime::Text(s) => s.trim().to_owned(),
        RawTime::Toml(d) => d.to_string(),
    };
    let bad = |why: String| {
        format!("`{text}` is not an RFC 3339 time in UTC such as \"2026-11-01T00:00:00Z\": {why}")
    };
    let at = humantime::parse_rfc3339(&text).map_err(|e| bad(e.to_string()))?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| bad("before 1970".into()))?
        .as_millis();
    i64::try_from(ms).map_err(|_| bad("too far in the future".into()))
}

/// The block list of cache `i`: each entry exactly one of `path` (a store path under the
/// cache's `store_dir`) and `nar_hash` (any form Nix writes, kept as `sha256:<nix32>`).
fn blocks_from_raw(
    raw: Vec<RawBlock>,
    store_dir: &str,
    i: usize,
) -> Result<Vec<Block>, ConfigError> {
    let mut blocked: Vec<Block> = Vec::new();
    for (j, rb) in raw.into_iter().enumerate() {
        let at = |k: &str| format!("cache[{i}].blocked[{j}]{k}");
        let target = match (rb.path, rb.nar_hash) {
            (Some(path), None) => StorePath::parse(store_dir, path.trim())
                .map(|p| BlockTarget::Path(p.full().to_owned()))
                .map_err(|e| invalid(at(".path"), e.to_string()))?,
            (None, Some(h)) => NarHash::parse(h.trim())
                .map(BlockTarget::NarHash)
                .map_err(|e| invalid(at(".nar_hash"), e.to_string()))?,
            _ => return Err(invalid(at(""), "give exactly one of `path` and `nar_hash`")),
        };
        if blocked.iter().any(|b| b.target == target) {
            return Err(invalid(at(""), "blocks what an earlier entry blocks"));
        }
        blocked.push(Block {
            target,
            reason: rb.reason,
        });
    }
    Ok(blocked)
}

/// The quorum is reachable (at most the builders' summed weight) and every required builder
/// exists; on error, the offending key (relative to the cache) and why.
fn check_quorum(
    quorum: i64,
    required: &[String],
    builders: &[Builder],
) -> Result<usize, (&'static str, String)> {
    let total: u64 = builders.iter().map(|b| u64::from(b.weight)).sum();
    let quorum = usize::try_from(quorum)
        .ok()
        .filter(|q| *q >= 1 && (*q as u64) <= total)
        .ok_or_else(|| {
            let of = if builders.iter().all(|b| b.weight == 1) {
                format!("the number of builders ({total})")
            } else {
                format!("the builders' summed weight ({total})")
            };
            (
                "quorum",
                format!("must be between 1 and {of}, got {quorum}"),
            )
        })?;
    if let Some(unknown) = required
        .iter()
        .find(|r| !builders.iter().any(|b| &b.name == *r))
    {
        return Err((
            "required_builders",
            format!("`{unknown}` is not a configured builder of this cache"),
        ));
    }
    Ok(quorum)
}

/// The upstreams of cache `i`: http(s) URLs without trailing slash, each listed once.
fn upstreams_from_raw(raw: Vec<RawUpstream>, i: usize) -> Result<Vec<UpstreamConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid(
            format!("cache[{i}].upstream"),
            "at least one [[cache.upstream]] is required",
        ));
    }
    let mut upstreams: Vec<UpstreamConfig> = Vec::new();
    for (j, ru) in raw.into_iter().enumerate() {
        let at = |k: &str| format!("cache[{i}].upstream[{j}].{k}");
        let url = ru.url.trim_end_matches('/').to_string();
        let base = parse_upstream_url(&url).map_err(|m| invalid(at("url"), m))?;
        if upstreams.iter().any(|u| u.url == url) {
            return Err(invalid(
                at("url"),
                format!("upstream `{url}` is listed twice"),
            ));
        }
        let nar_hosts = ru
            .nar_hosts
            .iter()
            .enumerate()
            .map(|(k, h)| parse_nar_host(h).map_err(|m| invalid(at(&format!("nar_hosts[{k}]")), m)))
            .collect::<Result<Vec<_>, _>>()?;
        upstreams.push(UpstreamConfig {
            url,
            base,
            priority: ru.priority.unwrap_or(DEFAULT_UPSTREAM_PRIORITY),
            bearer_token: ru.bearer_token,
            nar_hosts,
        });
    }
    Ok(upstreams)
}

/// An upstream base URL: http or https, a host, and nothing that would change where a
/// request goes or what it carries (credentials, a query, a fragment).
fn parse_upstream_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("`{url}` is not an http:// or https:// URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("`{url}` is not an http:// or https:// URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "`{url}` carries credentials; use `bearer_token` (sent only to this upstream)"
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("`{url}` must not have a query or fragment"));
    }
    Ok(parsed)
}

/// A `nar_hosts` entry: `host` or `host:port`, nothing else (no scheme, path or wildcard).
fn parse_nar_host(entry: &str) -> Result<NarHost, String> {
    let bad =
        || format!("`{entry}` is not a host name or `host:port` (no scheme, path or wildcard)");
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-.:[]".contains(c);
    if entry.is_empty() || !entry.chars().all(allowed) {
        return Err(bad());
    }
    // A port follows the last ':', except inside an IPv6 literal (`[::1]`).
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port))
            if !port.contains(']') && (!host.contains(':') || host.ends_with(']')) =>
        {
            (host, Some(port.parse::<u16>().map_err(|_| bad())?))
        }
        _ => (entry, None),
    };
    // The URL parser normalises the host as it will appear in NAR URLs (case, IP forms).
    let parsed = reqwest::Url::parse(&format!("http://{host}/")).map_err(|_| bad())?;
    match parsed.host_str() {
        Some(h) if !h.is_empty() && parsed.port().is_none() && parsed.path() == "/" => {
            Ok(NarHost {
                host: h.to_string(),
                port,
            })
        }
        _ => Err(bad()),
    }
}

fn parse_builder_key(flavor: Flavor, text: &str, base: &Path) -> Result<BuilderKey, String> {
    match flavor {
        Flavor::Nix => NixPublicKey::from_str(text.trim())
            .map(BuilderKey::Nix)
            .map_err(|e| format!("not a Nix public key (name:base64): {e}")),
        Flavor::Guix => {
            let trimmed = text.trim();
            let sexp = if trimmed.starts_with('(') {
                trimmed.to_string()
            } else {
                let path = base.join(trimmed);
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?
            };
            GuixPublicKey::parse(&sexp)
                .map(BuilderKey::Guix)
                .map_err(|e| format!("not a Guix public key: {e}"))
        }
    }
}

fn normalise_mount(m: &str) -> Result<String, String> {
    if !m.starts_with('/') {
        return Err(format!("`{m}` must start with '/'"));
    }
    let trimmed = m.trim_end_matches('/');
    if trimmed.split('/').skip(1).any(|seg| {
        seg.is_empty()
            || seg == "."
            || seg == ".."
            || !seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    }) {
        return Err(format!(
            "`{m}` must be '/' or '/'-separated segments of letters, digits, '-', '_', '.'"
        ));
    }
    if ["/metrics", "/healthz", "/readyz", "/api"].contains(&trimmed) {
        return Err(format!("`{m}` is reserved for quorate's own routes"));
    }
    Ok(trimmed.to_string())
}

/// Parse a byte size such as `50GiB`, `500MB`, `1024`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like \"50GiB\""))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KiB" => 1024.0,
        "KB" => 1e3,
        "M" | "MiB" => 1024.0 * 1024.0,
        "MB" => 1e6,
        "G" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "GB" => 1e9,
        "T" | "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "TB" => 1e12,
        other => return Err(format!("unknown size unit `{other}` in `{s}`")),
    };
    let v = n * mult;
    if !(v.is_finite() && v >= 1.0 && v < u64::MAX as f64) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(v as u64)
}

/// Parse a duration such as `500ms`, `10s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like \"10s\""))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        other => return Err(format!("unknown duration unit `{other}` in `{s}`")),
    };
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml", Path::new("/etc/quorate"))
    }

    const MINIMAL: &str = r#"
        [[cache]]
        name = "nixos"
        flavor = "nix"
        quorum = 1
          [[cache.builder]]
          name = "hydra"
          keys = ["cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="]
          [[cache.upstream]]
          url = "https://cache.nixos.org/"
    "#;

    #[test]
    fn a_peer_is_a_log_url_with_an_optional_vkey_and_interval() {
        let peer = |body: &str| load(&format!("{MINIMAL}\n          [[cache.peer]]\n{body}"));
        let c = peer("url = \"https://x.example/tlog/nixos/\"").unwrap();
        let p = &c.caches[0].peers[0];
        assert_eq!(p.url.as_str(), "https://x.example/tlog/nixos");
        assert_eq!(p.vkey, None);
        assert_eq!(p.interval, PEER_INTERVAL);
        let c = peer(
            "url = \"http://x/tlog/a\"\ninterval = \"2s\"\n\
             vkey = \"x/tlog/a+20092973+AXDgJbWAwW2q7mLBsn48s4XRO6VLSsaI2vwBP4AZVDjb\"",
        )
        .unwrap();
        assert_eq!(c.caches[0].peers[0].interval, Duration::from_secs(2));
        assert!(c.caches[0].peers[0].vkey.is_some());
        for (body, key) in [
            ("url = \"ftp://x/tlog/a\"", "cache[0].peer[0].url"),
            ("url = \"not a url\"", "cache[0].peer[0].url"),
            (
                "url = \"http://x/t\"\nvkey = \"nope\"",
                "cache[0].peer[0].vkey",
            ),
            (
                "url = \"http://x/t\"\ninterval = \"0s\"",
                "cache[0].peer[0].interval",
            ),
            ("url = \"http://x/t\"\nwhat = 1", "what"),
        ] {
            let err = peer(body).unwrap_err().to_string();
            assert!(err.contains(key), "{body}: {err}");
        }
        let twice = format!(
            "{MINIMAL}\n[[cache.peer]]\nurl = \"http://x/t\"\n[[cache.peer]]\nurl = \"http://x/t/\"\n"
        );
        let err = load(&twice).unwrap_err().to_string();
        assert!(err.contains("cache[0].peer[1].url"), "{err}");
    }

    #[test]
    fn push_rates_default_and_must_be_positive() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(
            c.push.per_key_per_minute,
            crate::limits::DEFAULT_PUSH_PER_KEY_PER_MINUTE
        );
        let tuned = format!("[push]\nper_key_per_minute = 5\n{MINIMAL}");
        let c = load(&tuned).unwrap();
        assert_eq!(c.push.per_key_per_minute, 5);
        assert_eq!(
            c.push.per_client_per_minute,
            crate::limits::DEFAULT_PUSH_PER_CLIENT_PER_MINUTE
        );
        for bad in ["per_client_per_minute = 0", "per_key_per_minute = -1"] {
            let err = load(&format!("[push]\n{bad}\n{MINIMAL}"))
                .unwrap_err()
                .to_string();
            let key = bad.split(' ').next().unwrap();
            assert!(err.contains(&format!("push.{key}")), "{err}");
        }
        let typo = load(&format!("[push]\nper_key = 5\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(typo.contains("per_key"), "{typo}");
    }

    #[test]
    fn default_config_is_valid() {
        let c = Config::default_config();
        assert_eq!(c.caches.len(), 1);
        assert_eq!(c.caches[0].quorum, 1);
        assert_eq!(c.caches[0].mount, "");
        assert!(c.database_url.starts_with("sqlite://"));
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/etc/quorate/quorate-state"));
        assert_eq!(
            c.caches[0].signing_key_file,
            PathBuf::from("/etc/quorate/quorate-state/keys/nixos.sec")
        );
        assert_eq!(c.caches[0].upstreams[0].url, "https://cache.nixos.org");
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let text = MINIMAL.replace("quorum = 1", "quourm = 1");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("quourm"), "{err}");
    }

    #[test]
    fn max_connections_is_optional_and_at_least_one() {
        assert_eq!(load(MINIMAL).unwrap().max_connections, None);
        let c = load(&format!("max_connections = 500\n{MINIMAL}")).unwrap();
        assert_eq!(c.max_connections, Some(500));
        for bad in ["0", "-1"] {
            let err = load(&format!("max_connections = {bad}\n{MINIMAL}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("max_connections"), "{err}");
        }
    }

    #[test]
    fn quorum_larger_than_builders_is_refused() {
        let err = load(&MINIMAL.replace("quorum = 1", "quorum = 2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache[0].quorum"), "{err}");
    }

    #[test]
    fn invalid_builder_key_names_its_position() {
        let text = MINIMAL.replace("6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=", "nope");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("cache[0].builder[0].keys[0]"), "{err}");
    }

    #[test]
    fn unknown_required_builder_is_refused() {
        let text = MINIMAL.replace("quorum = 1", "quorum = 1\nrequired_builders = [\"hdyra\"]");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("hdyra"), "{err}");
    }

    #[test]
    fn one_key_in_two_builders_is_refused() {
        let text =
            format!("{MINIMAL}\n[[cache.builder]]\nname = \"other\"\nkeys = [\"{NIXOS_KEY}\"]\n");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("already a key of builder"), "{err}");
    }

    /// MINIMAL with `extra` lines in hydra's `[[cache.builder]]`.
    fn with_builder_lines(extra: &str) -> String {
        let keys = format!("keys = [\"{NIXOS_KEY}\"]");
        MINIMAL.replace(&keys, &format!("{keys}\n{extra}"))
    }

    /// MINIMAL with `extra` lines in the `[[cache]]` table.
    fn with_cache_lines(extra: &str) -> String {
        MINIMAL.replace("quorum = 1", &format!("quorum = 1\n{extra}"))
    }

    #[test]
    fn a_builder_weight_counts_toward_the_quorum_and_must_be_at_least_one() {
        let c = load(&with_builder_lines("weight = 2").replace("quorum = 1", "quorum = 2"))
            .expect("weight 2 reaches quorum 2");
        assert_eq!(c.caches[0].builders[0].weight, 2);
        assert_eq!(load(MINIMAL).unwrap().caches[0].builders[0].weight, 1);
        for bad in ["weight = 0", "weight = -1", "weight = 4294967296"] {
            let err = load(&with_builder_lines(bad)).unwrap_err().to_string();
            assert!(err.contains("`cache[0].builder[0].weight`"), "{bad}: {err}");
        }
        // The quorum is bounded by the summed weight.
        let err = load(&with_builder_lines("weight = 2").replace("quorum = 1", "quorum = 3"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache[0].quorum"), "{err}");
        assert!(err.contains("summed weight (2)"), "{err}");
    }

    #[test]
    fn a_revoked_key_is_one_of_the_builders_own_with_a_utc_time() {
        let revoked = |key: &str, since: &str| {
            with_builder_lines(&format!(
                "revoked = [{{ key = \"{key}\", since = {since} }}]"
            ))
        };
        let c = load(&revoked(NIXOS_KEY, "\"2026-11-01T00:00:00Z\"")).expect("valid");
        let r = &c.caches[0].builders[0].revoked[0];
        assert_eq!(r.since, 1_793_491_200_000);
        assert_eq!(r.key.key_name(), "cache.nixos.org-1");
        // A bare TOML datetime reads the same.
        let c = load(&revoked(NIXOS_KEY, "2026-11-01T00:00:00Z")).expect("valid");
        assert_eq!(c.caches[0].builders[0].revoked[0].since, 1_793_491_200_000);
        let other = "other-1:Qp0EY9+5bPDeCPWOJJ4EGzQkzgKxzOdvHh6rybfrZ6s=";
        for (key, since, at) in [
            (other, "\"2026-11-01T00:00:00Z\"", "revoked[0].key"),
            ("garbage", "\"2026-11-01T00:00:00Z\"", "revoked[0].key"),
            (NIXOS_KEY, "\"1 November 2026\"", "revoked[0].since"),
            (
                NIXOS_KEY,
                "\"2026-11-01T00:00:00+01:00\"",
                "revoked[0].since",
            ),
        ] {
            let err = load(&revoked(key, since)).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`cache[0].builder[0].{at}`")),
                "{key} {since}: {err}"
            );
        }
    }

    #[test]
    fn a_blocked_entry_is_a_path_in_the_store_or_a_nar_hash() {
        let path = "/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10";
        let hash = "sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i";
        let c = load(&with_cache_lines(&format!(
            "blocked = [{{ path = \"{path}\", reason = \"CVE\" }}, \
             {{ nar_hash = \"{hash}\", reason = \"bad\" }}]"
        )))
        .expect("valid");
        assert_eq!(
            c.caches[0].blocked[0].target,
            BlockTarget::Path(path.into())
        );
        assert_eq!(c.caches[0].blocked[1].reason, "bad");
        for (entry, at) in [
            (format!("{{ path = \"{path}\", nar_hash = \"{hash}\", reason = \"x\" }}"), "blocked[0]"),
            ("{ reason = \"x\" }".to_owned(), "blocked[0]"),
            ("{ path = \"/gnu/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10\", reason = \"x\" }".to_owned(), "blocked[0].path"),
            ("{ path = \"/nix/store/hello\", reason = \"x\" }".to_owned(), "blocked[0].path"),
            ("{ nar_hash = \"md5:00\", reason = \"x\" }".to_owned(), "blocked[0].nar_hash"),
        ] {
            let err = load(&with_cache_lines(&format!("blocked = [{entry}]")))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`cache[0].{at}`")), "{entry}: {err}");
        }
    }

    #[test]
    fn the_same_key_bytes_under_another_name_are_refused() {
        // cache.nixos.org's key relabelled: a Sig `relabelled-1:<hydra's signature>` would
        // verify under it and count as a second builder.
        let relabelled = NIXOS_KEY.replace("cache.nixos.org-1:", "relabelled-1:");
        let text =
            format!("{MINIMAL}\n[[cache.builder]]\nname = \"other\"\nkeys = [\"{relabelled}\"]\n");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("cache[0].builder[1].keys[0]"), "{err}");
        assert!(err.contains("same public key bytes"), "{err}");
        // Within one builder too: it would be a second vote for nobody, and a confusion.
        let text = MINIMAL.replace(
            &format!("keys = [\"{NIXOS_KEY}\"]"),
            &format!("keys = [\"{NIXOS_KEY}\", \"{relabelled}\"]"),
        );
        assert!(load(&text).is_err());
    }

    #[test]
    fn nar_stores_are_a_directory_by_default_or_a_bucket() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(
            c.nar_store,
            NarStoreConfig::Directory(PathBuf::from("/etc/quorate/quorate-state/nars"))
        );
        let s3 = format!(
            "[nar_store]\nurl = \"s3://nars/fleet/a\"\nendpoint = \"http://127.0.0.1:3900/\"\n\
             region = \"garage\"\naccess_key_id = \"GK1\"\nsecret_access_key_file = \"s3.secret\"\n{MINIMAL}"
        );
        let NarStoreConfig::S3(s) = load(&s3).unwrap().nar_store else {
            panic!("an s3 store");
        };
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("nars", "fleet/a"));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(s.path_style, "path-style by default with an endpoint");
        assert_eq!(
            s.secret_access_key_file,
            Some(PathBuf::from("/etc/quorate/s3.secret"))
        );
        assert!(!format!("{s:?}").contains("GK1"), "no credentials in Debug");
        for (bad, key) in [
            ("url = \"ftp://x\"", "nar_store.url"),
            ("url = \"s3://\"", "nar_store.url"),
            ("url = \"s3://b/../x\"", "nar_store.url"),
            (
                "url = \"file:///srv/nars\"\nendpoint = \"http://x\"",
                "nar_store.endpoint",
            ),
            (
                "url = \"s3://b\"\nendpoint = \"ftp://x\"",
                "nar_store.endpoint",
            ),
            ("url = \"s3://b\"\nbucket = \"typo\"", "bucket"),
        ] {
            let err = load(&format!("[nar_store]\n{bad}\n{MINIMAL}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn a_replica_set_needs_postgresql_and_an_object_store() {
        let replica = "[replica]\nadvertise_url = \"http://10.0.0.2:8080/\"\nsecret_file = \"replica.secret\"\n";
        let s3 = "[nar_store]\nurl = \"s3://nars\"\n";
        let err = load(&format!("{replica}{s3}{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PostgreSQL"), "{err}");
        let pg = "database_url = \"postgres://q@db/q\"\n";
        let err = load(&format!("{pg}{replica}{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("object store"), "{err}");
        let c = load(&format!("{pg}{replica}{s3}{MINIMAL}")).unwrap();
        let r = c.replica.expect("a replica");
        assert_eq!(r.advertise_url, "http://10.0.0.2:8080");
        assert_eq!(r.secret_file, PathBuf::from("/etc/quorate/replica.secret"));
    }

    #[test]
    fn nar_compression_is_none_by_default_and_must_be_known() {
        let config = load(MINIMAL).expect("minimal config");
        assert_eq!(config.caches[0].nar_compression, NarCompression::None);
        let zstd = MINIMAL.replace("quorum = 1", "quorum = 1\nnar_compression = \"zstd\"");
        let config = load(&zstd).expect("zstd config");
        assert_eq!(config.caches[0].nar_compression, NarCompression::Zstd);
        let text = MINIMAL.replace("quorum = 1", "quorum = 1\nnar_compression = \"xz\"");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("cache[0].nar_compression"), "{err}");
    }

    #[test]
    fn on_dissent_must_be_known() {
        let text = MINIMAL.replace("quorum = 1", "quorum = 1\non_dissent = \"maybe\"");
        assert!(load(&text).unwrap_err().to_string().contains("on_dissent"));
    }

    #[test]
    fn mounts_are_normalised_and_checked() {
        assert_eq!(normalise_mount("/").unwrap(), "");
        assert_eq!(normalise_mount("/guix/").unwrap(), "/guix");
        assert!(normalise_mount("guix").is_err());
        assert!(normalise_mount("/a/../b").is_err());
        assert!(normalise_mount("/metrics").is_err());
    }

    #[test]
    fn nar_hosts_are_host_names_with_an_optional_port() {
        let text = MINIMAL.replace(
            "url = \"https://cache.nixos.org/\"",
            "url = \"https://cache.nixos.org/\"\nnar_hosts = [\"CDN.example.org\", \"127.0.0.1:8081\", \"[::1]:80\"]",
        );
        let hosts = &load(&text).unwrap().caches[0].upstreams[0].nar_hosts;
        let shown: Vec<String> = hosts.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["cdn.example.org", "127.0.0.1:8081", "[::1]:80"]);
        for bad in [
            "https://cdn.example.org",
            "cdn.example.org/nar",
            "*.example.org",
            "cdn.example.org:http",
            "cdn.example.org:99999",
            "user@cdn.example.org",
            "",
        ] {
            let text = MINIMAL.replace(
                "url = \"https://cache.nixos.org/\"",
                &format!(
                    "url = \"https://cache.nixos.org/\"\nnar_hosts = [\"ok.example\", {bad:?}]"
                ),
            );
            let err = load(&text).unwrap_err().to_string();
            assert!(
                err.contains("cache[0].upstream[0].nar_hosts[1]"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn upstream_urls_with_credentials_or_a_query_are_refused() {
        for bad in [
            "https://user:pw@cache.example",
            "https://cache.example/?x=1",
            "https://cache.example/#x",
            "ftp://cache.example",
            "https://",
        ] {
            let text = MINIMAL.replace("https://cache.nixos.org/", bad);
            let err = load(&text).unwrap_err().to_string();
            assert!(err.contains("cache[0].upstream[0].url"), "{bad}: {err}");
        }
        let c = load(&MINIMAL.replace("https://cache.nixos.org/", "https://h.example/private/"))
            .unwrap();
        assert_eq!(c.caches[0].upstreams[0].url, "https://h.example/private");
        assert_eq!(c.caches[0].upstreams[0].base.path(), "/private");
    }

    #[test]
    fn the_upstream_idle_timeout_has_a_default_and_can_be_set() {
        assert_eq!(
            load(MINIMAL).unwrap().upstream_idle_timeout,
            DEFAULT_UPSTREAM_IDLE_TIMEOUT
        );
        let c = load(&format!("upstream_idle_timeout = \"2s\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.upstream_idle_timeout, Duration::from_secs(2));
        let err = load(&format!("upstream_idle_timeout = \"0s\"\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream_idle_timeout"), "{err}");
    }

    #[test]
    fn the_bearer_token_never_appears_in_debug_output() {
        let text = MINIMAL.replace(
            "url = \"https://cache.nixos.org/\"",
            "url = \"https://cache.nixos.org/\"\nbearer_token = \"s3cr3t\"",
        );
        let shown = format!("{:?}", load(&text).unwrap());
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("50GiB").unwrap(), 50 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1h").is_err());
    }
}
