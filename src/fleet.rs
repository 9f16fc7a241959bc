//! Fleet-wide single-flight (DESIGN §11): in a replica set, one upstream download per NAR
//! for the whole fleet.
//!
//! ```text
//! cold NAR, not in flight here ─► claim (serialised per NAR within this replica):
//!   stored meanwhile?                       ─► Stored: serve the object
//!   lease `nar:<key>` taken (PostgreSQL)    ─► Owner: fetch from upstreams as one process
//!                                               would; the lease is renewed until the fetch
//!                                               (and its upload) ends, then released
//!   held by another replica that has it     ─► Relay: fetch the owner's in-flight bytes
//!     in flight (internal route, shared         through the same verified fetch as an
//!     secret)                                   upstream's (hashed, counted, last byte held
//!                                               back), not stored again
//!   otherwise (owner dead, or not started)  ─► wait: poll until one of the above, or the
//!                                               dead owner's lease expires and is taken
//! ```
//!
//! A lease is a row, not a session-held lock: an owner that dies stops renewing, and after
//! [`LEASE_TTL`] another replica takes over. The relayed bytes are verified against the
//! decided NarHash and NarSize exactly like an upstream's, so neither a broken owner nor
//! the network can make a client receive a complete wrong NAR.
//!
//! If the database cannot be asked, the replica fetches on its own (single-flight within
//! the process only): serving beats the fleet-wide economy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use quorate_core::protocol::nar_hash::NarKey;

use crate::clock::now_ms;
use crate::config::ReplicaConfig;
use crate::db::{random_hex, Db, DbError};
use crate::nar::{Compression, FetchSource, NarStorage};

/// How long a lease lasts unless renewed: how long a dead owner's NAR waits for another.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often an owner renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How often a replica waiting for a NAR another one owns looks again.
const POLL: Duration = Duration::from_millis(250);
/// How long a request waits for a NAR another replica owns before giving up (503).
const PATIENCE: Duration = Duration::from_secs(30);
/// How long connecting to another replica may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The internal route a replica relays its in-flight NARs on: `<advertise_url>` + this +
/// `<nix32 NarHash>`.
pub const RELAY_ROUTE: &str = "/_quorate/replica/nar/";

/// Why a claim failed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The NAR storage could not be asked whether it holds the NAR.
    #[error("NAR storage: {0}")]
    Storage(std::io::Error),
    /// Another replica owns the NAR, and neither relayed it nor finished within
    /// [`PATIENCE`].
    #[error("another replica has been fetching this NAR for too long")]
    Busy,
}

/// What a replica does about a cold NAR.
pub enum Claim {
    /// The storage holds it now.
    Stored,
    /// This replica fetches it; hold the lease while it does.
    Owner(LeaseGuard),
    /// Another replica is fetching it: its in-flight bytes.
    Relay(FetchSource<String>),
    /// The database could not be asked: fetch here, without a lease.
    Alone,
}

impl Claim {
    /// Its name, for metrics: `stored`, `owner`, `relay`, `alone`.
    pub fn role(&self) -> &'static str {
        match self {
            Claim::Stored => "stored",
            Claim::Owner(_) => "owner",
            Claim::Relay(_) => "relay",
            Claim::Alone => "alone",
        }
    }
}

/// This replica's place in its set.
pub struct Fleet {
    /// How the others reach this one (`[replica] advertise_url`): the owner name in leases.
    me: String,
    /// `Authorization` value of internal requests: `Bearer <shared secret>`.
    authorization: String,
    /// For relays from other replicas.
    client: reqwest::Client,
    /// Per NAR, the lock that serialises claims within this replica (so its concurrent
    /// requests join one fetch rather than race for the lease); entries go when unused.
    claiming: Mutex<HashMap<NarKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Fleet {
    /// This replica, as `config` places it, with `secret` read from its `secret_file` and
    /// `idle` the longest a relay may go without a byte.
    pub fn new(config: &ReplicaConfig, secret: &str, idle: Duration) -> reqwest::Result<Fleet> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(idle)
            .no_proxy()
            .build()?;
        Ok(Fleet {
            me: config.advertise_url.trim_end_matches('/').to_owned(),
            authorization: format!("Bearer {}", secret.trim()),
            client,
            claiming: Mutex::new(HashMap::new()),
        })
    }

    /// This replica's `advertise_url`.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Whether an internal request carries the set's secret (compared in constant time).
    pub fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(given) = authorization else {
            return false;
        };
        let expected = self.authorization.as_bytes();
        given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Serialises claims of NAR `key` within this replica: held from the check for a fetch
    /// in flight until the fetch is registered.
    pub async fn serialize(&self, key: NarKey) -> ClaimTurn<'_> {
        let lock = {
            let mut map = self.claiming.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(key).or_default())
        };
        let guard = Arc::clone(&lock).lock_owned().await;
        ClaimTurn {
            fleet: self,
            key,
            _guard: Some(guard),
        }
    }

    /// Decides who fetches cold NAR `key` (NarSize `size`): see the module docs. Waits
    /// while another replica owns it and cannot relay it yet.
    pub async fn claim(
        &self,
        db: &Db,
        storage: &NarStorage,
        key: NarKey,
        size: u64,
    ) -> Result<Claim, ClaimError> {
        let name = format!("nar:{key}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if storage
                .size_of(&key)
                .await
                .map_err(ClaimError::Storage)?
                .is_some()
            {
                return Ok(Claim::Stored);
            }
            match self.try_lease(db, &name).await {
                Ok(Some(guard)) => return Ok(Claim::Owner(guard)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%key, "fleet lease unavailable, fetching here alone: {e}");
                    return Ok(Claim::Alone);
                }
            }
            match db.lease(&name).await {
                Ok(Some(lease)) if lease.owner != self.me => {
                    if let Some(source) = self.relay(&lease.owner, key, size).await {
                        return Ok(Claim::Relay(source));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%key, "fleet lease unavailable, fetching here alone: {e}");
                    return Ok(Claim::Alone);
                }
            }
            if Instant::now() >= deadline {
                return Err(ClaimError::Busy);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Takes lease `name` if it is free or expired.
    async fn try_lease(&self, db: &Db, name: &str) -> Result<Option<LeaseGuard>, DbError> {
        let token = random_hex(16);
        let now = now_ms();
        let taken = db
            .take_lease(
                name,
                &self.me,
                &token,
                now,
                now + LEASE_TTL.as_millis() as i64,
            )
            .await?;
        Ok(taken.then(|| LeaseGuard {
            db: db.clone(),
            name: name.to_owned(),
            token,
        }))
    }

    /// `owner`'s in-flight bytes of NAR `key`, if it answers with them.
    async fn relay(&self, owner: &str, key: NarKey, size: u64) -> Option<FetchSource<String>> {
        let url = format!("{}{RELAY_ROUTE}{key}", owner.trim_end_matches('/'));
        let response = match self
            .client
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .send()
            .await
        {
            Ok(r) if r.status() == reqwest::StatusCode::OK => r,
            Ok(r) => {
                tracing::debug!(%key, %owner, status = %r.status(), "owner does not relay it (yet)");
                return None;
            }
            Err(e) => {
                tracing::debug!(%key, %owner, "owner unreachable: {e}");
                return None;
            }
        };
        if response.content_length().is_some_and(|n| n != size) {
            tracing::warn!(%key, %owner, "owner relays a NAR of another size");
            return None;
        }
        let stream: BoxStream<'static, Result<Bytes, String>> = response
            .bytes_stream()
            .map_err(|e| format!("relay: {e}"))
            .boxed();
        Some(FetchSource {
            label: owner.to_owned(),
            compression: Compression::None,
            open: async move { Ok(stream) }.boxed(),
        })
    }
}

/// This request's turn to claim a NAR within the replica (see [`Fleet::serialize`]).
pub struct ClaimTurn<'a> {
    fleet: &'a Fleet,
    key: NarKey,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for ClaimTurn<'_> {
    fn drop(&mut self) {
        self._guard.take();
        let mut map = self
            .fleet
            .claiming
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Nobody else holds or waits for the lock: drop the entry.
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// A lease this replica holds.
pub struct LeaseGuard {
    db: Db,
    name: String,
    token: String,
}

impl LeaseGuard {
    /// Renews the lease until `done` resolves, then releases it. A renewal that finds the
    /// lease lost (this replica was presumed dead) stops renewing: the work goes on, and at
    /// worst the NAR is downloaded twice (its object is content-addressed: harmless).
    pub async fn hold_until<T>(self, done: impl std::future::Future<Output = T>) -> T {
        let renew = async {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let expires = now_ms() + LEASE_TTL.as_millis() as i64;
                match self.db.renew_lease(&self.name, &self.token, expires).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(lease = %self.name, "lease lost while fetching");
                        return;
                    }
                    Err(e) => tracing::warn!(lease = %self.name, "renewing the lease: {e}"),
                }
            }
        };
        tokio::pin!(done);
        let out = tokio::select! {
            out = &mut done => out,
            () = renew => done.await,
        };
        if let Err(e) = self.db.release_lease(&self.name, &self.token).await {
            // It expires on its own.
            tracing::warn!(lease = %self.name, "releasing the lease: {e}");
        }
        out
    }
}
