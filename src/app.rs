//! The application state every route and background task shares, and start-up: state
//! directory, database (migrated), NAR store, upstream client, and per cache its signing key
//! and hot caches.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::NarStoreConfig;
use crate::config::{Config, NarCompression};
use crate::db::{Db, DbError};
use crate::fleet::Fleet;
use crate::keys::{self, KeyFileError};
use crate::metrics::Metrics;
use crate::nar::{NarFetcher, NarStorage, NarStore, ObjectError, ObjectNars};
use crate::outbox::Outbox;
use crate::rate_limit::RateLimiter;
use crate::served_cache::ServedCache;
use crate::tasks::Background;
use crate::tlog;
use crate::upstream::{UpstreamClient, UpstreamError};

/// Start-up failure, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A signing key file exists but is unusable, or cannot be written.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Filesystem problem (state directory, NAR store).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The upstream client could not be built.
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    /// The object store for NARs could not be set up.
    #[error(transparent)]
    Objects(#[from] ObjectError),
    /// A cache's log key is not the one its log in the database is signed with.
    #[error("{0}")]
    LogKey(String),
    /// The replica set's secret file is missing, unreadable or empty.
    #[error("[replica] secret_file {path}: {reason}")]
    ReplicaSecret {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything the routes and background tasks need.
pub struct App {
    /// The configuration in force.
    pub config: Config,
    /// The database (the truth).
    pub db: Db,
    /// HTTP client for upstreams, with their health.
    pub upstream: UpstreamClient,
    /// Single-flight verified NAR fetches into the local store.
    pub fetcher: NarFetcher,
    /// Per-cache state, in config order (routes refer to caches by index).
    pub caches: Vec<Arc<ServedCache>>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Records waiting for the database (during an outage or a full disk).
    pub outbox: Outbox,
    /// Tracked background work and the shutdown signal.
    pub background: Background,
    /// This replica's place in its replica set (`[replica]`); `None` for a lone process.
    pub fleet: Option<Fleet>,
    /// This process as a witness of other logs (`[witness]`).
    pub witness: Option<tlog::Witness>,
    /// Pushed narinfos per builder key (party `<cache> <key name>`): `[push]
    /// per_key_per_minute`.
    pub push_per_key: RateLimiter,
    /// Pushed narinfos per client address: `[push] per_client_per_minute`.
    pub push_per_client: RateLimiter,
}

impl App {
    /// Opens the state directory, database and NAR store; reads or generates every cache's
    /// signing key; records the configured upstreams and builder keys as seen.
    pub async fn start(config: Config) -> Result<Arc<App>, StartError> {
        let io = |what: String| move |source| StartError::Io { what, source };
        std::fs::create_dir_all(&config.state_dir).map_err(io(format!(
            "creating state_dir {}",
            config.state_dir.display()
        )))?;
        let db = Db::connect(&config.database_url).await?;
        let storage = open_storage(&config).await?;
        if let Some(store) = storage.local() {
            reconcile(&db, store).await?;
        }
        let background = Background::new();
        let fetcher = NarFetcher::new(storage, background.tracker());
        let upstream = UpstreamClient::new(config.upstream_timeout, config.upstream_idle_timeout)?;
        let fleet = match &config.replica {
            Some(replica) => {
                let secret = read_secret(&replica.secret_file)?;
                let fleet = Fleet::new(replica, &secret, config.upstream_idle_timeout);
                Some(fleet.map_err(|e| StartError::ReplicaSecret {
                    path: replica.secret_file.display().to_string(),
                    reason: format!("building the client for the other replicas: {e}"),
                })?)
            }
            None => None,
        };
        let witness = config
            .witness
            .as_ref()
            .map(tlog::load_witness)
            .transpose()?;
        let mut caches = Vec::new();
        for c in &config.caches {
            let signer = keys::load_or_generate(c)?;
            for u in &c.upstreams {
                db.record_upstream(&u.url).await?;
            }
            for b in &c.builders {
                for k in &b.keys {
                    db.record_builder_key(&c.name, &b.name, &k.to_text())
                        .await?;
                }
            }
            let log = tlog::load_or_generate(c)?;
            tlog::check_log_key(&db, &c.name, &log, &c.log_key_file)
                .await
                .map_err(StartError::LogKey)?;
            caches.push(Arc::new(ServedCache::new(c.clone(), signer, log)));
        }
        Ok(Arc::new(App {
            push_per_key: RateLimiter::new(config.push.per_key_per_minute),
            push_per_client: RateLimiter::new(config.push.per_client_per_minute),
            config,
            db,
            upstream,
            fetcher,
            caches,
            metrics: Metrics::default(),
            outbox: Outbox::default(),
            background,
            fleet,
            witness,
        }))
    }
}

/// The replica set's shared secret: the first line of `path`, which must not be empty.
fn read_secret(path: &std::path::Path) -> Result<String, StartError> {
    let error = |reason: String| StartError::ReplicaSecret {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.len() < 16 {
        return Err(error(
            "the secret must be at least 16 characters (e.g. `openssl rand -hex 32`)".into(),
        ));
    }
    Ok(secret)
}

/// Where verified NARs live, as `[nar_store]` says: a local directory, or a bucket with a
/// local spool for the fetches in progress.
async fn open_storage(config: &Config) -> Result<NarStorage, StartError> {
    let io = |what: String| move |source| StartError::Io { what, source };
    match &config.nar_store {
        NarStoreConfig::Directory(dir) => {
            let store = open_directory(dir.clone(), config.max_cache_size)
                .await
                .map_err(io(format!("opening the NAR store {}", dir.display())))?;
            Ok(NarStorage::Local(Arc::new(store)))
        }
        NarStoreConfig::S3(s3) => {
            let secret = s3
                .secret_access_key_file
                .as_ref()
                .map(|f| {
                    std::fs::read_to_string(f)
                        .map_err(io(format!("reading the S3 secret key {}", f.display())))
                })
                .transpose()?;
            let objects = ObjectNars::new(s3, secret)?;
            for cache in &config.caches {
                if cache.nar_compression == NarCompression::Zstd {
                    // A bucket keeps no zstd copies (yet): say so rather than pretend.
                    tracing::warn!(cache = %cache.name,
                        "nar_compression = \"zstd\" is not supported with an S3 nar_store: \
                         NARs are offered uncompressed (as with \"none\")");
                }
            }
            // The spool only ever holds fetches in progress: no size bound.
            let spool = open_directory(config.state_dir.join("spool"), None)
                .await
                .map_err(io("opening the NAR spool".into()))?;
            Ok(NarStorage::Objects {
                spool: Arc::new(spool),
                objects: Arc::new(objects),
            })
        }
    }
}

/// Opens a local NAR directory on a blocking thread: it scans the directory, which for a
/// large store must not stall the async runtime.
async fn open_directory(root: PathBuf, max: Option<u64>) -> std::io::Result<NarStore> {
    tokio::task::spawn_blocking(move || NarStore::open(root, max))
        .await
        .map_err(std::io::Error::other)?
}

/// Makes the database's NAR objects match the store's files: a NAR stored while the
/// database was unreachable (or just before a crash) gets its row, a row whose file is gone
/// is removed. The files are the truth: only verified NARs are ever renamed into the store.
async fn reconcile(db: &Db, store: &NarStore) -> Result<(), DbError> {
    let held: std::collections::HashMap<_, _> = store
        .entries()
        .into_iter()
        .map(|(key, size)| (key.hash(), (key, size)))
        .collect();
    let recorded: std::collections::HashSet<_> =
        db.nar_object_hashes().await?.into_iter().collect();
    let added: Vec<_> = held
        .iter()
        .filter(|(hash, _)| !recorded.contains(hash))
        .map(|(hash, (key, size))| (*hash, *size, NarStore::location(key)))
        .collect();
    let removed: Vec<_> = recorded
        .iter()
        .filter(|h| !held.contains_key(h))
        .copied()
        .collect();
    // In batches: a row at a time, 10^5 NARs the database does not know took ~15 s.
    db.record_nar_objects(&added).await?;
    db.remove_nar_objects(&removed).await?;
    let (added, removed) = (added.len(), removed.len());
    if added + removed > 0 {
        tracing::info!("NAR store reconciled with the database: {added} object(s) recorded, {removed} forgotten");
    }
    Ok(())
}
