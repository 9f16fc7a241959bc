//! One served cache (a `[[cache]]` of the config): its policy, its flavor's front end with
//! quorate's signing key, and the hot in-memory answers in front of the database.
//!
//! Memory caches are caches: the database is the truth. A positive answer lives an hour, a
//! negative one a minute ([`crate::limits`]); both are dropped early when a late dissent
//! withdraws a decision.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use quorate_core::attestation::{Agreed, Content, NarSource};
use quorate_core::flavor::{front_end, FrontEnd, Signer};
use quorate_core::protocol::nar_hash::NarKey;
use quorate_core::protocol::store_path::HashPart;
use quorate_core::quorum::{Elector, Policy};

use crate::config::CacheConfig;
use crate::limits::{
    BAD_SOURCES_CAPACITY, BAD_SOURCE_TTL, DECISIONS_BYTES, DECISIONS_CAPACITY, LOG_INDEX_RETRY,
    NAR_ENTRIES_BYTES, NEGATIVE_TTL, POSITIVE_TTL,
};
use crate::tlog::CacheLog;

/// The answer for one (cache, hash part), as kept in memory and served.
#[derive(Debug)]
pub enum Resolution {
    /// Served: the rendered narinfo body and what it rests on.
    Served {
        /// The narinfo quorate answers with, signed by quorate: the NAR uncompressed.
        body: bytes::Bytes,
        /// The same narinfo advertising the NAR's stored zstd copy (`nar_compression =
        /// "zstd"`), rendered by the narinfo route once that copy exists; from then on it is
        /// the answer. Kept inside the answer rather than replacing it in `decisions`, so a
        /// withdrawal's invalidation can never be overwritten by an upgrade racing it.
        compressed_body: std::sync::OnceLock<bytes::Bytes>,
        /// The agreement behind it (boxed: it is large and most answers are negative).
        agreed: Box<Agreed>,
    },
    /// Not served (404): no positive decision.
    NotServed {
        /// Why, for logs and the client's 404 body.
        reason: String,
    },
}

/// Facts about a served NAR: enough to fetch and verify it.
#[derive(Clone, Debug)]
pub struct NarEntry {
    /// The agreed content (NarHash, NarSize, the store path for logs).
    pub content: Content,
    /// Upstreams advertising it.
    pub sources: Vec<NarSource>,
}

/// Per-cache state.
pub struct ServedCache {
    /// The cache's configuration.
    pub config: CacheConfig,
    /// The quorum policy derived from it.
    pub policy: Policy,
    /// Everything flavor-specific, with quorate's key for this cache.
    pub front: Box<dyn FrontEnd>,
    /// Hot answers per hash part; positive ones live long, negative ones briefly. Also the
    /// single-flight point of resolution (`try_get_with`).
    pub decisions: Cache<HashPart, Arc<Resolution>>,
    /// NAR key → what is needed to fetch and verify it, for accepted contents.
    pub nars: Cache<NarKey, Arc<NarEntry>>,
    /// (NAR, upstream) pairs that delivered wrong bytes: tried last next time.
    pub bad_sources: Cache<(NarKey, String), ()>,
    /// The cache's transparency log identity (its key and origin).
    pub log: CacheLog,
    /// Log index of the decision in force per served path (the narinfo's
    /// `Quorate-Log-Index`); `None`, briefly, while it is not logged yet; dropped with the
    /// path's answer.
    pub log_indexes: Cache<HashPart, Option<u64>>,
    /// Per witness URL, the checkpoint size it cosigned last (what this process knows).
    /// std Mutex: held for a map operation only.
    witnessed: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// A memory cache entry's weight: its approximate size in bytes.
fn weight(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// What a memory cache entry costs besides its value's own bytes: moka's entry, its key,
/// the `Arc`, the expiry bookkeeping (calibrated against RSS: bench/RESULTS.md, "Growth").
const ENTRY_OVERHEAD: usize = 512;

/// Approximate heap and inline bytes of a store path's content (allocator overhead included
/// roughly: 32 bytes per allocation).
fn content_bytes(c: &Content) -> usize {
    96 + c.store_path.len() + 32 + c.references.iter().map(|r| r.len() + 56).sum::<usize>()
}

fn sources_bytes(sources: &[NarSource]) -> usize {
    sources
        .iter()
        .map(|s| 160 + s.upstream.len() + s.url.len() + s.compression.len())
        .sum()
}

impl Resolution {
    /// Approximately how many bytes this answer holds in memory (what the memory cache of
    /// answers is bounded by).
    pub fn approx_bytes(&self) -> usize {
        match self {
            Resolution::Served {
                body,
                compressed_body,
                agreed,
            } => {
                let a = &**agreed;
                ENTRY_OVERHEAD
                    + 256
                    + body.len()
                    + compressed_body.get().map_or(0, bytes::Bytes::len)
                    + content_bytes(&a.content)
                    + a.agreeing.iter().map(|b| b.len() + 56).sum::<usize>()
                    + a.deriver.as_ref().map_or(0, |d| d.len() + 32)
                    + a.ca.as_ref().map_or(0, |c| c.len() + 32)
                    + a.signatures.iter().map(|g| g.len() + 56).sum::<usize>()
                    + sources_bytes(&a.sources)
            }
            Resolution::NotServed { reason } => ENTRY_OVERHEAD + 128 + reason.len(),
        }
    }
}

impl NarEntry {
    /// Approximately how many bytes this entry holds in memory.
    pub fn approx_bytes(&self) -> usize {
        ENTRY_OVERHEAD + 64 + content_bytes(&self.content) + sources_bytes(&self.sources)
    }
}

/// Positive answers live long, negative ones briefly.
struct ResolutionExpiry;

impl moka::Expiry<HashPart, Arc<Resolution>> for ResolutionExpiry {
    fn expire_after_create(
        &self,
        _key: &HashPart,
        value: &Arc<Resolution>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(match **value {
            Resolution::Served { .. } => POSITIVE_TTL,
            Resolution::NotServed { .. } => NEGATIVE_TTL,
        })
    }
}

/// A known log index lives long, "not logged yet" a second.
struct LogIndexExpiry;

impl moka::Expiry<HashPart, Option<u64>> for LogIndexExpiry {
    fn expire_after_create(
        &self,
        _key: &HashPart,
        value: &Option<u64>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() {
            POSITIVE_TTL
        } else {
            LOG_INDEX_RETRY
        })
    }
}

impl ServedCache {
    /// The state of cache `config`, signing with `signer`.
    pub fn new(config: CacheConfig, signer: Signer, log: CacheLog) -> ServedCache {
        let policy = Policy {
            quorum: config.quorum,
            required_builders: config.required_builders.clone(),
            on_dissent: config.on_dissent,
            builders: config
                .builders
                .iter()
                .map(|b| Elector {
                    name: b.name.clone(),
                    weight: b.weight,
                })
                .collect(),
            blocked: config.blocked.clone(),
        };
        let front = front_end(&config.name, &config.store_dir, &config.builders, signer);
        ServedCache {
            config,
            policy,
            front,
            decisions: Cache::builder()
                .max_capacity(DECISIONS_BYTES)
                .weigher(|_, answer: &Arc<Resolution>| weight(answer.approx_bytes()))
                .expire_after(ResolutionExpiry)
                .build(),
            nars: Cache::builder()
                .max_capacity(NAR_ENTRIES_BYTES)
                .weigher(|_, entry: &Arc<NarEntry>| weight(entry.approx_bytes()))
                .time_to_idle(POSITIVE_TTL)
                .build(),
            bad_sources: Cache::builder()
                .max_capacity(BAD_SOURCES_CAPACITY)
                .time_to_live(BAD_SOURCE_TTL)
                .build(),
            log,
            log_indexes: Cache::builder()
                .max_capacity(DECISIONS_CAPACITY)
                .expire_after(LogIndexExpiry)
                .build(),
            witnessed: Default::default(),
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The policy in force, as recorded with every decision (JSON).
    pub fn policy_summary(&self) -> String {
        serde_json::to_string(&self.policy).unwrap_or_default()
    }

    /// Remember where the NAR of an agreed content can be fetched from, so the NAR route
    /// finds it without the database.
    pub async fn remember_nar(&self, agreed: &Agreed) {
        let entry = Arc::new(NarEntry {
            content: agreed.content.clone(),
            sources: agreed.sources.clone(),
        });
        self.nars.insert(agreed.content.nar_hash.key(), entry).await;
    }

    /// Adds `sources` (of the same NAR) to the NAR entry of `key`, if one is in memory:
    /// upstreams that answered after the decision. Sources already known are kept as they
    /// are.
    pub async fn add_nar_sources(&self, key: NarKey, sources: impl IntoIterator<Item = NarSource>) {
        let Some(entry) = self.nars.get(&key).await else {
            return;
        };
        let mut merged = entry.sources.clone();
        for s in sources {
            if !merged
                .iter()
                .any(|m| m.upstream == s.upstream && m.url == s.url)
            {
                merged.push(s);
            }
        }
        if merged.len() == entry.sources.len() {
            return;
        }
        let updated = Arc::new(NarEntry {
            content: entry.content.clone(),
            sources: merged,
        });
        self.nars.insert(key, updated).await;
    }

    /// The checkpoint size witness `url` cosigned last, if known here.
    pub fn witnessed(&self, url: &str) -> Option<u64> {
        let map = self.witnessed.lock().unwrap_or_else(|p| p.into_inner());
        map.get(url).copied()
    }

    /// Remembers that witness `url` cosigned the checkpoint of `size`.
    pub fn set_witnessed(&self, url: &str, size: u64) {
        let mut map = self.witnessed.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(url.to_owned(), size);
    }

    /// Forget a withdrawn decision's answer and NAR entry: the next request decides afresh.
    pub async fn forget(&self, hash_part: &HashPart, content: Option<&Content>) {
        if let Some(c) = content {
            self.nars.invalidate(&c.nar_hash.key()).await;
        }
        self.decisions.invalidate(hash_part).await;
        self.log_indexes.invalidate(hash_part).await;
    }
}
