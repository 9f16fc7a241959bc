//! A replica set (DESIGN §11): N `quorate serve` processes sharing one fresh PostgreSQL
//! database, each with its own state directory and port, all signing with one key.
//!
//! Each replica is an ordinary [`Quorate`] started through the one launcher, with a
//! [`Placement`] that says what the set shares:
//! - `database_url`: one fresh database on the test server (a replica set needs PostgreSQL);
//! - the test key (and, for a cache whose key quorate would generate, one key made here): a
//!   client trusts one key whichever replica answers;
//! - with [`ReplicaOptions::nar_store`], the same `[nar_store]` table (a Garage bucket, see
//!   [`super::garage::Garage::nar_store`]);
//! - with [`ReplicaOptions::replica`], `[replica]`: `advertise_url` = the replica's own URL,
//!   `secret_file` = one secret file written here for the whole set.
//!
//! The replicas start side by side (a fleet starts at once: concurrent migrations included).
//! [`super::lb::Balancer::in_front_of`] puts a load balancer in front of them.

use std::path::{Path, PathBuf};

use super::garage::{write_private, Garage};
use super::quorate::{fresh_postgres_database, keygen, keygen_flavor, SigningKey};
use super::{block_on, scratch_dir, Backend, CacheSpec, Placement, Quorate};

/// What the replicas of a set are configured with besides their caches.
#[derive(Clone, Debug, Default)]
pub struct ReplicaOptions {
    /// The `[nar_store]` table every replica gets (`None`: the local directory, today's
    /// default).
    pub nar_store: Option<toml::Table>,
    /// Whether each replica gets `[replica]` (its own `advertise_url`, the set's secret).
    pub replica: bool,
    /// Other top-level config keys, as (key, TOML string value), for every replica.
    pub settings: Vec<(String, String)>,
    /// Environment variables for every replica (e.g. `AWS_*` credentials).
    pub env: Vec<(String, String)>,
}

impl ReplicaOptions {
    /// A full member of a replica set as issue 9 runs it: `[nar_store]` in `garage`'s bucket
    /// under `prefix`, credentials in the config, and `[replica]`.
    pub fn in_garage(garage: &Garage, prefix: &str) -> ReplicaOptions {
        ReplicaOptions {
            nar_store: Some(garage.nar_store(prefix)),
            replica: true,
            ..ReplicaOptions::default()
        }
    }
}

/// N running quorates sharing one database.
pub struct ReplicaSet {
    /// The replicas, in start order. (Dropped before `dir`: the processes go first.)
    replicas: Vec<Quorate>,
    database_url: String,
    /// The `[replica]` secret file (written whether or not the replicas use it).
    secret_file: PathBuf,
    /// The shared test key's prefix.
    test_key: PathBuf,
    /// Owns the shared key and secret; deleted on drop (unless QUORATE_TEST_KEEP=1).
    dir: tempfile::TempDir,
}

impl ReplicaSet {
    /// `n` full replicas (see [`ReplicaOptions::in_garage`]) serving `caches`, NARs under
    /// `prefix` in `garage`'s bucket. Needs the service side of issue 9 (`[nar_store]`,
    /// `[replica]`). From synchronous code only.
    pub fn start(n: usize, caches: Vec<CacheSpec>, garage: &Garage, prefix: &str) -> ReplicaSet {
        ReplicaSet::start_with(n, caches, ReplicaOptions::in_garage(garage, prefix))
    }

    /// `n` quorates sharing one PostgreSQL database and signing key, each with its local NAR
    /// store and no `[replica]`: what runs before issue 9's service side.
    pub fn start_plain(n: usize, caches: Vec<CacheSpec>) -> ReplicaSet {
        ReplicaSet::start_with(n, caches, ReplicaOptions::default())
    }

    /// `n` replicas configured as `options` says. From synchronous code only.
    pub fn start_with(n: usize, caches: Vec<CacheSpec>, options: ReplicaOptions) -> ReplicaSet {
        block_on(ReplicaSet::start_async(n, caches, options))
    }

    /// [`ReplicaSet::start_with`], from async code.
    pub async fn start_async(
        n: usize,
        caches: Vec<CacheSpec>,
        options: ReplicaOptions,
    ) -> ReplicaSet {
        assert!(n >= 1, "a replica set has at least one replica");
        let dir = scratch_dir("replica-set");
        let test_key = dir
            .path()
            .join("keys")
            .join(super::quorate::QUORATE_KEY_NAME);
        keygen(&test_key);
        // A key quorate would generate in each state_dir would differ per replica: make it
        // once here instead.
        let caches: Vec<CacheSpec> = caches
            .into_iter()
            .map(|mut c| {
                if c.signing_key == SigningKey::Generated {
                    let prefix = dir.path().join("keys").join(&c.name);
                    keygen_flavor(&prefix, &c.flavor, &format!("{}-1", c.name));
                    c.signing_key = SigningKey::File(prefix.with_extension("sec"));
                }
                // One log for the set: one log key (the first replica to start makes it).
                if c.log_key_file.is_none() {
                    let file = dir.path().join("keys").join(format!("{}.log.sec", c.name));
                    c.log_key_file = Some(file);
                }
                c
            })
            .collect();
        let secret_file = dir.path().join("replica.secret");
        write_private(&secret_file, &super::garage::random_hex(32));
        let database_url = fresh_postgres_database().await;

        let placement = Placement {
            database_url: Some(database_url.clone()),
            settings: options.settings.clone(),
            sections: options
                .nar_store
                .iter()
                .map(|t| ("nar_store".to_owned(), t.clone()))
                .collect(),
            replica_secret_file: options.replica.then(|| secret_file.clone()),
            test_key: Some(test_key.clone()),
            env: options.env.clone(),
            ..Placement::default()
        };
        let starts = (0..n).map(|_| {
            Quorate::start_placed_async(Backend::Postgres, caches.clone(), placement.clone(), &[])
        });
        let replicas = futures_util::future::join_all(starts).await;
        ReplicaSet {
            replicas,
            database_url,
            secret_file,
            test_key,
            dir,
        }
    }

    /// Replica `i` (from 0, in start order).
    pub fn replica(&self, i: usize) -> &Quorate {
        &self.replicas[i]
    }

    /// Replica `i`, to kill or restart it.
    pub fn replica_mut(&mut self, i: usize) -> &mut Quorate {
        &mut self.replicas[i]
    }

    /// Every replica.
    pub fn replicas(&self) -> &[Quorate] {
        &self.replicas
    }

    /// How many replicas the set has (running or not).
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Whether the set is empty (never: [`ReplicaSet::start_with`] wants one at least).
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// The base URLs of the replicas, `http://127.0.0.1:PORT`.
    pub fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.url().to_owned()).collect()
    }

    /// The database every replica records to.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The `[replica]` secret file of the set.
    pub fn secret_file(&self) -> &Path {
        &self.secret_file
    }

    /// The public half of the set's test key (what a Nix client trusts).
    pub fn public_key(&self) -> String {
        std::fs::read_to_string(self.test_key.with_extension("pub"))
            .expect("reading the set's public key")
            .trim()
            .to_owned()
    }

    /// The set's scratch directory (shared keys, secret).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
