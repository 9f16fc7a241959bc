//! The running service: application state (database, upstream client, NAR store, per-cache
//! state with its signing key and hot caches), start-up (keys, migrations) and the HTTP
//! listener.
//!
//! Flavor-specific work (turning an upstream narinfo into attestations, rendering quorate's
//! own narinfo) is dispatched here on [`Signer`]; the protocol details live in
//! [`quorate_core::protocol`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::clock::now_ms;
use crate::config::{BuilderKey, CacheConfig, Config, Flavor};
use crate::db::{Db, Event};
use crate::nar::{NarFetcher, NarStore};
use crate::resolve::{Agreed, Observation, Resolution, ResolveError};
use crate::upstream::UpstreamClient;
use quorate_core::attestation::{Attestation, Content, NarSource, SigStatus};
use quorate_core::protocol::guix_key::{GuixPublicKey, GuixSecretKey};
use quorate_core::protocol::guix_narinfo::{self, GuixNarInfo, NarUrl};
use quorate_core::protocol::narinfo::{fingerprint_of, NarHash, NixNarInfo};
use quorate_core::protocol::nix_key::{check_sig, NixPublicKey, NixSecretKey, SigCheck};
use quorate_core::protocol::store_path::StorePath;
use quorate_core::quorum::Policy;

/// Start-up failure, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The signing key file exists but is unusable, or cannot be written.
    #[error("signing key {path}: {message}")]
    Key {
        /// The key file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Db(#[from] crate::db::DbError),
    /// Filesystem problem (state directory, NAR store).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Upstream client could not be built.
    #[error("{0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
}

/// A monotonically increasing counter for `/metrics`.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// narinfo requests received.
    pub narinfo_requests: Counter,
    /// Resolutions that accepted a content.
    pub narinfo_accepted: Counter,
    /// Resolutions refused for a conflict.
    pub narinfo_refused: Counter,
    /// Resolutions without enough agreeing builders.
    pub narinfo_insufficient: Counter,
    /// NAR requests served from the local store.
    pub nar_local: Counter,
    /// NAR requests that needed an upstream fetch (started or joined).
    pub nar_upstream: Counter,
    /// NAR bytes verified and committed from upstreams.
    pub nar_bytes_fetched: Counter,
    /// NAR downloads whose bytes did not match the agreed hash/size.
    pub nar_mismatches: Counter,
    /// Failed upstream requests.
    pub upstream_failures: Counter,
    /// Conflicts recorded.
    pub conflicts: Counter,
}

/// quorate's own signing key for one cache.
pub enum Signer {
    /// Nix ed25519 key.
    Nix(NixSecretKey),
    /// Guix ECDSA-over-edwards25519 key.
    Guix(GuixSecretKey),
}

/// Facts about a served NAR: enough to fetch and verify it.
#[derive(Clone, Debug)]
pub struct NarEntry {
    /// The agreed content (NarHash, NarSize).
    pub content: Content,
    /// Upstreams advertising it.
    pub sources: Vec<NarSource>,
}

/// Per-cache state.
pub struct CacheState {
    /// The cache's configuration.
    pub config: CacheConfig,
    /// The quorum policy derived from it.
    pub policy: Policy,
    /// quorate's key for this cache.
    pub signer: Signer,
    /// Every builder key (Nix flavor), for signature checks.
    nix_keys: Vec<NixPublicKey>,
    /// Every builder key (Guix flavor), for signature checks.
    guix_keys: Vec<GuixPublicKey>,
    /// Hot answers per hash part; positive ones live long, negative ones briefly.
    pub decisions: Cache<String, Arc<Resolution>>,
    /// NAR key (nix32 of the NarHash) → what is needed to fetch and verify it.
    pub nars: Cache<String, Arc<NarEntry>>,
    /// (NAR key, upstream) pairs that delivered wrong bytes: tried last next time.
    pub bad_sources: Cache<(String, String), ()>,
}

/// The host named in quorate's Guix `Signature:` fields (informational, unsigned).
pub const GUIX_SIGNATURE_HOST: &str = "quorate";

/// How long a negative answer (404) is remembered in memory and announced to clients.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// How long a positive decision stays hot in memory (the database keeps it for good).
pub const POSITIVE_TTL: Duration = Duration::from_secs(3600);

struct ResolutionExpiry;

impl moka::Expiry<String, Arc<Resolution>> for ResolutionExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Resolution>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(match **value {
            Resolution::Served { .. } => POSITIVE_TTL,
            Resolution::NotServed { .. } => NEGATIVE_TTL,
        })
    }
}

impl CacheState {
    fn new(config: CacheConfig, signer: Signer) -> CacheState {
        let policy = Policy {
            quorum: config.quorum,
            required_builders: config.required_builders.clone(),
            on_dissent: config.on_dissent,
            builders: config.builders.iter().map(|b| b.name.clone()).collect(),
        };
        let nix_keys = config
            .builders
            .iter()
            .flat_map(|b| b.keys.iter())
            .filter_map(|k| match k {
                BuilderKey::Nix(k) => Some(k.clone()),
                BuilderKey::Guix(_) => None,
            })
            .collect();
        let guix_keys = config
            .builders
            .iter()
            .flat_map(|b| b.keys.iter())
            .filter_map(|k| match k {
                BuilderKey::Guix(k) => Some(*k),
                BuilderKey::Nix(_) => None,
            })
            .collect();
        CacheState {
            config,
            policy,
            signer,
            nix_keys,
            guix_keys,
            decisions: Cache::builder()
                .max_capacity(200_000)
                .expire_after(ResolutionExpiry)
                .build(),
            nars: Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(POSITIVE_TTL)
                .build(),
            bad_sources: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        }
    }

    /// One-line description of the policy, recorded with decisions.
    pub fn policy_summary(&self) -> String {
        serde_json::to_string(&self.policy).unwrap_or_default()
    }

    /// Turn one upstream narinfo into attestations (one per signature) and a NAR source.
    pub fn observe(
        &self,
        upstream: &str,
        hash_part: &str,
        text: &str,
    ) -> Result<Observation, String> {
        match self.config.flavor {
            Flavor::Nix => self.observe_nix(upstream, hash_part, text),
            Flavor::Guix => self.observe_guix(upstream, hash_part, text),
        }
    }

    fn observe_guix(
        &self,
        upstream: &str,
        hash_part: &str,
        text: &str,
    ) -> Result<Observation, String> {
        let ni = GuixNarInfo::parse(text).map_err(|e| e.to_string())?;
        if ni.hash_part() != hash_part {
            return Err(format!(
                "asked for {hash_part}, got a narinfo for {}",
                ni.store_path()
            ));
        }
        StorePath::parse(&self.config.store_dir, ni.store_path()).map_err(|e| e.to_string())?;
        let content = ni.content();
        let check = ni.verify_signature(&self.guix_keys);
        let attestations = match (check.status(), ni.signature()) {
            (Some(status), Some(signature)) => {
                // A malformed signature names no readable key: record it under "".
                let key_name = check.key().map(|k| k.q_hex()).unwrap_or_default();
                let builder = match status {
                    SigStatus::UnknownKey => None,
                    _ => self.config.builder_of(&key_name).map(|b| b.name.clone()),
                };
                vec![Attestation {
                    cache: self.config.name.clone(),
                    hash_part: hash_part.to_string(),
                    content: content.clone(),
                    deriver: ni.deriver().map(str::to_string),
                    ca: None,
                    key_name,
                    builder,
                    upstream: upstream.to_string(),
                    signature: signature.to_string(),
                    status,
                    seen_at: now_ms(),
                }]
            }
            _ => vec![],
        };
        // Prefer a compression quorate can decode, in the order the upstream lists them.
        let source = ni
            .urls()
            .iter()
            .find(|u| {
                u.compression
                    .as_deref()
                    .unwrap_or("none")
                    .parse::<crate::nar::Compression>()
                    .is_ok()
            })
            .map(|u| NarSource {
                upstream: upstream.to_string(),
                nar_hash: content.nar_hash.clone(),
                url: u.url.clone(),
                compression: u.compression.clone().unwrap_or_else(|| "none".into()),
                file_size: u.file_size,
            });
        Ok(Observation {
            attestations,
            source,
        })
    }

    fn observe_nix(
        &self,
        upstream: &str,
        hash_part: &str,
        text: &str,
    ) -> Result<Observation, String> {
        let ni = NixNarInfo::parse(&self.config.store_dir, text).map_err(|e| e.to_string())?;
        if ni.store_path.hash_part() != hash_part {
            return Err(format!(
                "asked for {hash_part}, got a narinfo for {}",
                ni.store_path
            ));
        }
        let fingerprint = ni.fingerprint();
        let content = ni.content();
        let seen_at = now_ms();
        let attestations = ni
            .sigs
            .iter()
            .map(|sig| {
                let check = check_sig(sig, &fingerprint, &self.nix_keys);
                let (key_name, status) = match &check {
                    SigCheck::Valid { key_name } => (key_name.clone(), SigStatus::Valid),
                    SigCheck::Invalid { key_name } => (key_name.clone(), SigStatus::Invalid),
                    SigCheck::UnknownKey { key_name } => (key_name.clone(), SigStatus::UnknownKey),
                    SigCheck::Malformed { .. } => (
                        sig.split_once(':')
                            .map(|(n, _)| n)
                            .unwrap_or("")
                            .to_string(),
                        SigStatus::Invalid,
                    ),
                };
                let builder = match status {
                    SigStatus::UnknownKey => None,
                    _ => self.config.builder_of(&key_name).map(|b| b.name.clone()),
                };
                Attestation {
                    cache: self.config.name.clone(),
                    hash_part: hash_part.to_string(),
                    content: content.clone(),
                    deriver: ni.deriver.clone(),
                    ca: ni.ca.clone(),
                    key_name,
                    builder,
                    upstream: upstream.to_string(),
                    signature: sig.clone(),
                    status,
                    seen_at,
                }
            })
            .collect();
        Ok(Observation {
            attestations,
            source: Some(NarSource {
                upstream: upstream.to_string(),
                nar_hash: content.nar_hash.clone(),
                url: ni.url.clone(),
                compression: ni.compression.clone(),
                file_size: ni.file_size,
            }),
        })
    }

    /// Whether a recorded attestation still counts: it was valid, its key belongs to the same
    /// builder now, and (Nix, where keys are named) its signature verifies under the key
    /// configured under that name today, so a key replaced under the same name does not
    /// keep its old signatures alive. Guix keys are identified by their bytes.
    pub fn still_trusted(&self, a: &Attestation) -> bool {
        if a.status != SigStatus::Valid {
            return false;
        }
        let same_builder = self
            .config
            .builder_of(&a.key_name)
            .is_some_and(|b| Some(&b.name) == a.builder.as_ref());
        same_builder
            && match self.config.flavor {
                Flavor::Nix => check_sig(
                    &a.signature,
                    &fingerprint_of(&self.config.store_dir, &a.content),
                    &self.nix_keys,
                )
                .is_valid(),
                Flavor::Guix => true,
            }
    }

    /// quorate's narinfo for an agreed content, signed with quorate's key.
    pub fn render(&self, agreed: &Agreed) -> Result<String, String> {
        match &self.signer {
            Signer::Nix(key) => {
                let c = &agreed.content;
                let store_path = StorePath::parse(&self.config.store_dir, &c.store_path)
                    .map_err(|e| e.to_string())?;
                let nar_hash = NarHash::parse(&c.nar_hash).map_err(|e| e.to_string())?;
                let mut ni = NixNarInfo {
                    store_path,
                    url: format!("nar/{}.nar", nar_hash.to_nix32()),
                    compression: "none".into(),
                    file_hash: Some(c.nar_hash.clone()),
                    file_size: Some(c.nar_size),
                    nar_hash,
                    nar_size: c.nar_size,
                    references: c.references.clone(),
                    deriver: agreed.deriver.clone(),
                    system: None,
                    ca: agreed.ca.clone(),
                    sigs: agreed.signatures.clone(),
                };
                let own = key.sign(&ni.fingerprint());
                ni.sigs.retain(|s| s != &own);
                ni.sigs.push(own);
                Ok(ni.render())
            }
            Signer::Guix(key) => {
                let c = &agreed.content;
                let basename = c
                    .store_path
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                // No FileSize: compressed sizes are unknown while compressing on the fly, and
                // Guix requires FileSize on every group or on none.
                let urls = vec![
                    NarUrl {
                        url: format!("nar/zstd/{basename}"),
                        compression: Some("zstd".into()),
                        file_size: None,
                    },
                    NarUrl {
                        url: format!("nar/{basename}"),
                        compression: Some("none".into()),
                        file_size: None,
                    },
                ];
                let ni = GuixNarInfo::new(c, agreed.deriver.clone(), None, urls)
                    .and_then(|ni| ni.signed(GUIX_SIGNATURE_HOST, key))
                    .map_err(|e: guix_narinfo::GuixNarInfoError| e.to_string())?;
                Ok(ni.to_string())
            }
        }
    }

    /// Remember where the NAR of an agreed content can be fetched from.
    pub async fn remember_nar(&self, agreed: &Agreed) {
        if let Ok(h) = NarHash::parse(&agreed.content.nar_hash) {
            let entry = Arc::new(NarEntry {
                content: agreed.content.clone(),
                sources: agreed.sources.clone(),
            });
            self.nars.insert(h.to_nix32(), entry).await;
        }
    }

    /// The public key clients should trust, in the flavor's text form.
    pub fn public_key_text(&self) -> String {
        match &self.signer {
            Signer::Nix(k) => k.public().to_string(),
            Signer::Guix(k) => k.public().to_advanced(),
        }
    }
}

/// Everything the routes need.
pub struct App {
    /// The configuration in force.
    pub config: Config,
    /// The database (the truth).
    pub db: Db,
    /// HTTP client for upstreams.
    pub upstream: UpstreamClient,
    /// Single-flight verified NAR fetches into the local store.
    pub fetcher: NarFetcher,
    /// Per-cache state, in config order.
    pub caches: Vec<Arc<CacheState>>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
}

impl App {
    /// Open the state directory, database and keys; generate missing signing keys.
    pub async fn start(config: Config) -> Result<Arc<App>, StartError> {
        let io = |what: String| move |source| StartError::Io { what, source };
        std::fs::create_dir_all(&config.state_dir).map_err(io(format!(
            "creating state_dir {}",
            config.state_dir.display()
        )))?;
        let db = Db::connect(&config.database_url).await?;
        let store = NarStore::open(config.state_dir.join("nars"), config.max_cache_size)
            .map_err(io("opening the NAR store".into()))?;
        let fetcher = NarFetcher::new(Arc::new(store));
        let upstream = UpstreamClient::new(config.upstream_timeout)?;
        let mut caches = Vec::new();
        for c in &config.caches {
            let signer = load_or_generate_key(c)?;
            for u in &c.upstreams {
                db.record_upstream(&u.url).await?;
            }
            for b in &c.builders {
                for k in &b.keys {
                    db.record_builder_key(&c.name, &b.name, &k.to_text())
                        .await?;
                }
            }
            caches.push(Arc::new(CacheState::new(c.clone(), signer)));
        }
        Ok(Arc::new(App {
            config,
            db,
            upstream,
            fetcher,
            caches,
            metrics: Metrics::default(),
        }))
    }

    /// Record a conflict event for `content`.
    pub async fn conflict(
        &self,
        cache: &CacheState,
        content: &Content,
        detail: &str,
    ) -> Result<(), ResolveError> {
        self.metrics.conflicts.inc();
        self.db
            .record_event(&Event {
                cache: Some(cache.config.name.clone()),
                kind: "conflict".into(),
                store_path: Some(content.store_path.clone()),
                upstream: None,
                detail: detail.to_string(),
                at: now_ms(),
            })
            .await
            .map_err(|e| ResolveError(format!("database: {e}")))
    }
}

fn load_or_generate_key(c: &CacheConfig) -> Result<Signer, StartError> {
    let path = &c.signing_key_file;
    let key_err = |message: String| StartError::Key {
        path: path.display().to_string(),
        message,
    };
    match c.flavor {
        Flavor::Nix => {
            if path.exists() {
                let text = std::fs::read_to_string(path).map_err(|e| key_err(e.to_string()))?;
                let key: NixSecretKey = text
                    .trim()
                    .parse()
                    .map_err(|e| key_err(format!("not a Nix secret key: {e}")))?;
                Ok(Signer::Nix(key))
            } else {
                let key = NixSecretKey::generate(&c.signing_key_name)
                    .map_err(|e| key_err(e.to_string()))?;
                write_key_pair(path, &key.to_string(), &key.public().to_string())
                    .map_err(|e| key_err(format!("cannot write generated key: {e}")))?;
                tracing::info!(cache = %c.name, "generated signing key {}", path.display());
                Ok(Signer::Nix(key))
            }
        }
        Flavor::Guix => {
            if path.exists() {
                let text = std::fs::read_to_string(path).map_err(|e| key_err(e.to_string()))?;
                let key = GuixSecretKey::parse(&text)
                    .map_err(|e| key_err(format!("not a Guix secret key: {e}")))?;
                Ok(Signer::Guix(key))
            } else {
                let key = GuixSecretKey::generate().map_err(|e| key_err(e.to_string()))?;
                write_key_pair(path, &key.to_advanced(), &key.public().to_advanced())
                    .map_err(|e| key_err(format!("cannot write generated key: {e}")))?;
                tracing::info!(cache = %c.name, "generated signing key {}", path.display());
                Ok(Signer::Guix(key))
            }
        }
    }
}

/// Write `PREFIX.sec` (mode 0600) and the public key next to it (`.pub` replacing `.sec`).
pub fn write_key_pair(sec_path: &Path, secret: &str, public: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = sec_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(sec_path)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    std::fs::write(pub_path_for(sec_path), public)?;
    Ok(())
}

/// `x.sec` → `x.pub`; any other name gets `.pub` appended.
pub fn pub_path_for(sec_path: &Path) -> std::path::PathBuf {
    let s = sec_path.to_string_lossy();
    match s.strip_suffix(".sec") {
        Some(stem) => format!("{stem}.pub").into(),
        None => format!("{s}.pub").into(),
    }
}

/// Bind and serve until SIGINT/SIGTERM.
pub async fn serve(app: Arc<App>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let router = crate::http::router(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_trusting(builder: &str, key: &NixPublicKey) -> CacheState {
        let text = format!(
            "[[cache]]\nname = \"c\"\nflavor = \"nix\"\n\
             [[cache.builder]]\nname = \"{builder}\"\nkeys = [\"{key}\"]\n\
             [[cache.upstream]]\nurl = \"http://up.example\"\n"
        );
        let config = Config::from_toml(&text, "test", Path::new("/")).expect("config");
        let signer = Signer::Nix(NixSecretKey::generate("quorate-1").expect("key"));
        CacheState::new(config.caches[0].clone(), signer)
    }

    fn attestation_by(key: &NixSecretKey, builder: &str) -> Attestation {
        let content = Content {
            store_path: "/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10".into(),
            nar_hash: "sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i".into(),
            nar_size: 205968,
            references: vec!["w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10".into()],
        };
        Attestation {
            cache: "c".into(),
            hash_part: "w9yy7v61ipb5rx6i35zq1mvc2iqfmps1".into(),
            signature: key.sign(&fingerprint_of("/nix/store", &content)),
            content,
            deriver: None,
            ca: None,
            key_name: key.name().into(),
            builder: Some(builder.into()),
            upstream: "http://up.example".into(),
            status: SigStatus::Valid,
            seen_at: 0,
        }
    }

    #[test]
    fn a_recorded_attestation_counts_only_while_its_key_still_verifies_it() {
        let old = NixSecretKey::generate("rebuilder-1").expect("key");
        let att = attestation_by(&old, "rebuilder");
        assert!(cache_trusting("rebuilder", &old.public()).still_trusted(&att));
        // The operator replaced a compromised key, keeping its name.
        let new = NixSecretKey::generate("rebuilder-1").expect("key");
        assert!(!cache_trusting("rebuilder", &new.public()).still_trusted(&att));
        // The key now belongs to another builder.
        assert!(!cache_trusting("someone-else", &old.public()).still_trusted(&att));
        // Only valid observations ever count.
        let invalid = Attestation {
            status: SigStatus::Invalid,
            ..att
        };
        assert!(!cache_trusting("rebuilder", &old.public()).still_trusted(&invalid));
    }
}
