//! `quorate challenge`: a terminal report, like `guix challenge`, of which builder attested
//! which content for a store path — from the database, and with `--live` from the upstreams
//! now — and whether they agree.
//!
//! ```text
//! /nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10 (cache nixos)
//!   sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i  205968 bytes  hydra, rebuilder
//!   sha256:0000000000000000000000000000000000000000000000000000  205968 bytes  mallory
//!   DISAGREEMENT: 2 contents
//! ```
//!
//! Nothing is recorded and nothing is signed; live answers only count through valid
//! signatures by the cache's configured builders, as in a resolution.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quorate_core::attestation::{Attestation, Content, SigStatus};
use quorate_core::flavor::{front_end, Signer};
use quorate_core::protocol::store_path::{HashPart, HASH_PART_LEN};

use crate::clock::now_ms;
use crate::config::{CacheConfig, Config};
use crate::db::{Db, DbError};
use crate::upstream::UpstreamClient;

/// How many recorded conflicts a challenge without paths looks at, per cache.
const MAX_RECORDED: u32 = 1000;

/// Why a challenge could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// An argument is neither a store path nor a hash part.
    #[error("{0:?} is neither a store path nor a 32-character hash part")]
    NotAPath(String),
    /// The database could not be read.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The upstream client could not be built.
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
}

/// The outcome: the report to print, and whether any path's builders disagree.
#[derive(Debug)]
pub struct Challenge {
    /// One block per (path, cache), as shown above.
    pub report: String,
    /// Some path has builders attesting different contents.
    pub disagreement: bool,
    /// Paths with no attestation at all (nothing to compare).
    pub unknown: usize,
}

/// Challenges `paths` (store paths or hash parts; none: every recorded conflict).
pub async fn challenge(
    config: &Config,
    db: &Db,
    live: bool,
    paths: &[String],
) -> Result<Challenge, ChallengeError> {
    let mut wanted = paths
        .iter()
        .map(|p| hash_part_of(p).ok_or_else(|| ChallengeError::NotAPath(p.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    if wanted.is_empty() {
        for cache in &config.caches {
            for c in db.conflicts(&cache.name, MAX_RECORDED, 0).await? {
                if !wanted.contains(&c.hash_part) {
                    wanted.push(c.hash_part);
                }
            }
        }
    }
    let client = if live {
        Some(UpstreamClient::new(
            config.upstream_timeout,
            config.upstream_idle_timeout,
        )?)
    } else {
        None
    };
    let mut out = Challenge {
        report: String::new(),
        disagreement: false,
        unknown: 0,
    };
    for hash_part in &wanted {
        let mut any = false;
        for cache in &config.caches {
            let mut claims = db.valid_attestations(&cache.name, hash_part).await?;
            if let Some(client) = &client {
                claims.extend(observe_now(client, cache, hash_part).await);
            }
            claims.retain(|a| a.status == SigStatus::Valid && a.builder.is_some());
            if claims.is_empty() {
                continue;
            }
            any = true;
            out.disagreement |= report(&mut out.report, &cache.name, &claims);
        }
        if !any {
            out.unknown += 1;
            let _ = writeln!(out.report, "{hash_part}: no builder attested it\n");
        }
    }
    Ok(out)
}

/// Appends the block for one path in one cache; true if its builders disagree.
fn report(out: &mut String, cache: &str, claims: &[Attestation]) -> bool {
    let mut by_content: BTreeMap<&Content, Vec<&str>> = BTreeMap::new();
    for a in claims {
        let builders = by_content.entry(&a.content).or_default();
        if let Some(b) = a.builder.as_deref() {
            if !builders.contains(&b) {
                builders.push(b);
            }
        }
    }
    let path = &claims[0].content.store_path;
    let _ = writeln!(out, "{path} (cache {cache})");
    for (content, builders) in &mut by_content {
        builders.sort_unstable();
        let _ = writeln!(
            out,
            "  {}  {} bytes  {}",
            content.nar_hash,
            content.nar_size,
            builders.join(", ")
        );
    }
    let disagree = by_content.len() > 1;
    if disagree {
        let _ = writeln!(out, "  DISAGREEMENT: {} contents\n", by_content.len());
    } else {
        let n = by_content.values().next().map_or(0, Vec::len);
        let _ = writeln!(out, "  {n} builder(s) agree\n");
    }
    disagree
}

/// What `cache`'s upstreams say about the path right now (failures are skipped: the report
/// is about what was attested).
async fn observe_now(
    client: &UpstreamClient,
    cache: &CacheConfig,
    hash_part: &HashPart,
) -> Vec<Attestation> {
    // Observing needs no signing key; a throwaway one satisfies the front end.
    let Ok(signer) = Signer::generate(cache.flavor, "challenge") else {
        return vec![];
    };
    let front = front_end(&cache.name, &cache.store_dir, &cache.builders, signer);
    let mut seen = Vec::new();
    for up in &cache.upstreams {
        let answer = client.fetch_narinfo(up, hash_part).await;
        if let Ok(Some(text)) = answer {
            if let Ok(obs) = front.observe(&up.url, hash_part, &text, now_ms()) {
                seen.extend(obs.attestations);
            }
        }
    }
    seen
}

/// The hash part of `/any/store/<hash>-<name>` or of a bare `<hash>`.
fn hash_part_of(arg: &str) -> Option<HashPart> {
    let base = arg.rsplit('/').next().unwrap_or(arg);
    base.get(..HASH_PART_LEN)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_paths_and_hash_parts_name_a_path() {
        let h = "w9yy7v61ipb5rx6i35zq1mvc2iqfmps1";
        for arg in [
            h.to_string(),
            format!("/nix/store/{h}-hello-2.10"),
            format!("/gnu/store/{h}-hello"),
            format!("{h}-hello"),
        ] {
            assert_eq!(
                hash_part_of(&arg).map(|p| p.to_string()),
                Some(h.into()),
                "{arg}"
            );
        }
        assert!(hash_part_of("hello").is_none());
        assert!(hash_part_of("/nix/store/not-a-hash").is_none());
    }
}
