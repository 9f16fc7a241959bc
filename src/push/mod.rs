//! `quorate push`: a rebuilder that hosts no cache vouches for what it built (DESIGN §8,
//! §13). For each store path it reads NarHash, NarSize, references and deriver from the local
//! Nix store ([`local`]), signs the Nix fingerprint with the builder's secret key (the
//! format of `nix-store --generate-binary-cache-key`) and sends the narinfos to
//! `POST <quorate>/api/v1/caches/<cache>/attestations`, a hundred at a time.
//!
//! Which cache: `--cache NAME`, or the one the URL names by its mount
//! (`http://host:8080/nix`), or the only one, or the one mounted at `/`. The API is found
//! at the URL or above it (a quorate behind a reverse proxy's path prefix works too).
//!
//! What an answer means for the paths sent:
//! - 200: each narinfo accepted or rejected for good (a signature does not start verifying
//!   later);
//! - 413: too many at once: the batch is halved and sent again;
//! - 429: wait as long as `Retry-After` says, then try again;
//! - 5xx, no answer: a passing failure, tried again with exponential backoff;
//! - 400 and any other: the server cannot take them, for good.
//!
//! The [`queue`] makes this safe to call from a Nix `post-build-hook`: the hook only queues.
//! Guix: quorate's server takes Guix narinfos, but this command signs Nix ones only.

pub mod local;
pub mod queue;

use std::time::Duration;

use quorate_core::protocol::nix_key::NixSecretKey;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use local::{LocalStore, PathFacts};

/// Narinfos per request (the server takes up to a thousand, fewer under a low `[push]` rate).
pub const BATCH: usize = 100;
/// The first wait after a passing failure; each next one doubles, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Why pushing could not even start, or could not finish.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The key file is missing or not a Nix secret key.
    #[error("{0}")]
    Key(String),
    /// The quorate or its cache could not be found or used (for good).
    #[error("{0}")]
    Server(String),
    /// The quorate did not answer usefully, for now (down, 5xx, rate limited after every try).
    #[error("{0}")]
    Unavailable(String),
}

/// What became of the paths of one push.
#[derive(Debug, Default)]
pub struct Report {
    /// Store paths accepted, with the builders recorded for them.
    pub accepted: Vec<(String, Vec<String>)>,
    /// Paths rejected for good, with why (by the server, or the local store).
    pub rejected: Vec<(String, String)>,
}

/// A builder pushing to one cache of one quorate.
pub struct Pusher {
    http: reqwest::Client,
    /// `--url`.
    url: Url,
    /// `--cache`.
    cache: Option<String>,
    /// `<base>/api/v1/caches/<cache>/attestations`, found on first use (so a quorate that is
    /// down is a failure that may pass, like any other).
    endpoint: tokio::sync::OnceCell<Url>,
    key: NixSecretKey,
    store: LocalStore,
    /// Tries per batch before a passing failure is given up on.
    attempts: u32,
}

/// One narinfo's status in the server's answer.
#[derive(Deserialize)]
struct Status {
    store_path: String,
    status: String,
    #[serde(default)]
    builders: Vec<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    narinfos: Vec<Status>,
}

/// How the server dealt with a batch, for good.
enum Sent {
    /// Each narinfo's status.
    Judged(Vec<Status>),
    /// 413: send fewer at a time.
    TooLarge,
    /// Any other refusal.
    Refused(String),
}

/// A failure that may pass: try the batch again, after `wait` if the server said.
struct Passing {
    wait: Option<Duration>,
    why: String,
}

/// Reads a Nix secret key file (`name:base64`, as `nix-store --generate-binary-cache-key`
/// writes it).
pub fn read_key(path: &std::path::Path) -> Result<NixSecretKey, PushError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PushError::Key(format!("cannot read key file {}: {e}", path.display())))?;
    text.trim().parse().map_err(|e| {
        PushError::Key(format!(
            "{} is not a Nix secret key (the format nix-store --generate-binary-cache-key \
             writes): {e}",
            path.display()
        ))
    })
}

impl Pusher {
    /// A pusher for the cache at `url` (a quorate's base URL or a cache's own, with its
    /// mount), `cache` naming it if need be; each batch tried up to `attempts` times.
    pub fn new(
        url: &str,
        cache: Option<&str>,
        key: NixSecretKey,
        store: LocalStore,
        attempts: u32,
    ) -> Result<Pusher, PushError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("quorate-push/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PushError::Server(format!("building the HTTP client: {e}")))?;
        let url = Url::parse(url)
            .map_err(|e| PushError::Server(format!("--url {url} is not a URL: {e}")))?;
        if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
            return Err(PushError::Server(format!(
                "--url {url} is not an http(s) URL"
            )));
        }
        Ok(Pusher {
            http,
            url,
            cache: cache.map(str::to_owned),
            endpoint: tokio::sync::OnceCell::new(),
            key,
            store,
            attempts: attempts.max(1),
        })
    }

    /// Where narinfos go: asks the quorate for its caches the first time.
    pub async fn endpoint(&self) -> Result<&Url, PushError> {
        self.endpoint
            .get_or_try_init(|| async {
                let (base, rest, caches) = find_api(&self.http, &self.url).await?;
                let chosen = choose_cache(&caches, self.cache.as_deref(), &rest)?;
                if chosen.flavor != "nix" {
                    return Err(PushError::Server(format!(
                        "cache {} is a {} cache; quorate push signs Nix narinfos only",
                        chosen.name, chosen.flavor
                    )));
                }
                let mut endpoint = base;
                endpoint
                    .path_segments_mut()
                    .map_err(|()| PushError::Server(format!("{} cannot be a base URL", self.url)))?
                    .pop_if_empty()
                    .extend(["api", "v1", "caches", &chosen.name, "attestations"]);
                Ok(endpoint)
            })
            .await
    }

    /// Pushes `paths`: each path's narinfo, a batch at a time, each batch tried up to
    /// `attempts` times. A passing failure that outlasts them is an error (nothing of that
    /// batch or the later ones counts as done); everything else is in the report.
    pub async fn push(&self, paths: &[String]) -> Result<Report, PushError> {
        let endpoint = self.endpoint().await?;
        let mut report = Report::default();
        let mut narinfos = Vec::new();
        for arg in paths {
            match self.store.facts(arg) {
                Ok(facts) => narinfos.push(self.narinfo(&facts)),
                Err(e) => report.rejected.push((arg.clone(), e.to_string())),
            }
        }
        // Batches still to send; a batch the server finds too large comes back halved.
        let mut pending: Vec<Vec<(String, String)>> =
            narinfos.chunks(BATCH).rev().map(<[_]>::to_vec).collect();
        while let Some(batch) = pending.pop() {
            match self.send_with_retries(endpoint, &batch).await? {
                Sent::Judged(statuses) => {
                    for s in statuses {
                        if s.status == "accepted" {
                            report.accepted.push((s.store_path, s.builders));
                        } else {
                            let why = s.reason.unwrap_or_else(|| s.status.clone());
                            report.rejected.push((s.store_path, why));
                        }
                    }
                }
                Sent::TooLarge if batch.len() > 1 => {
                    let (first, second) = batch.split_at(batch.len() / 2);
                    pending.push(second.to_vec());
                    pending.push(first.to_vec());
                }
                Sent::TooLarge => report.rejected.push((
                    batch[0].0.clone(),
                    "the server finds this narinfo too large".into(),
                )),
                Sent::Refused(why) => {
                    for (path, _) in batch {
                        report.rejected.push((path, why.clone()));
                    }
                }
            }
        }
        Ok(report)
    }

    /// (store path, signed narinfo).
    fn narinfo(&self, facts: &PathFacts) -> (String, String) {
        (
            facts.store_path.full().to_owned(),
            facts.signed_narinfo(&self.key),
        )
    }

    /// Sends `batch` until it is judged or refused, waiting between passing failures; after
    /// the last attempt a passing failure is an error.
    async fn send_with_retries(
        &self,
        endpoint: &Url,
        batch: &[(String, String)],
    ) -> Result<Sent, PushError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let Passing { wait, why } = match self.send(endpoint, batch).await {
                Ok(done) => return Ok(done),
                Err(passing) => passing,
            };
            let wait = match wait {
                Some(asked) => asked.min(MAX_BACKOFF),
                None => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            if attempt >= self.attempts {
                return Err(PushError::Unavailable(format!(
                    "could not push after {attempt} attempt(s): {why}"
                )));
            }
            eprintln!(
                "quorate push: {why}; trying again in {} s",
                wait.as_secs().max(1)
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One request for `batch`.
    async fn send(&self, endpoint: &Url, batch: &[(String, String)]) -> Result<Sent, Passing> {
        let body = batch
            .iter()
            .map(|(_, text)| text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let sent = self
            .http
            .post(endpoint.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/x-nix-narinfo")
            .body(body)
            .send()
            .await;
        let resp = sent.map_err(|e| Passing {
            wait: None,
            why: format!("no answer from {}: {e}", endpoint),
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let said = text.trim();
        match status {
            StatusCode::OK => match serde_json::from_str::<Answer>(&text) {
                Ok(answer) if answer.narinfos.len() == batch.len() => {
                    Ok(Sent::Judged(answer.narinfos))
                }
                _ => Ok(Sent::Refused(format!(
                    "{} answered 200 with something other than one status per narinfo",
                    endpoint
                ))),
            },
            StatusCode::PAYLOAD_TOO_LARGE => Ok(Sent::TooLarge),
            StatusCode::TOO_MANY_REQUESTS => Err(Passing {
                wait: Some(retry_after.unwrap_or(FIRST_BACKOFF)),
                why: format!("{} asks to slow down: {said}", endpoint),
            }),
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => Err(Passing {
                wait: None,
                why: format!("{} answered {s}: {said}", endpoint),
            }),
            s => Ok(Sent::Refused(format!(
                "{} refused the push ({s}): {said}",
                endpoint
            ))),
        }
    }
}

/// One cache as `/api/v1/caches` lists it.
#[derive(Deserialize)]
struct CacheEntry {
    name: String,
    flavor: String,
    mount: String,
}

#[derive(Deserialize)]
struct CacheList {
    caches: Vec<CacheEntry>,
}

/// The quorate's base URL (where `/api/v1/caches` answers: `url` or a parent of it), the
/// rest of `url`'s path below it (a mount, or `/`), and its caches.
async fn find_api(
    http: &reqwest::Client,
    url: &Url,
) -> Result<(Url, String, Vec<CacheEntry>), PushError> {
    let segments: Vec<String> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let mut last_error = String::new();
    for keep in (0..=segments.len()).rev() {
        let mut base = url.clone();
        base.set_query(None);
        base.set_fragment(None);
        let mut caches_url = base.clone();
        if let Ok(mut path) = caches_url.path_segments_mut() {
            path.clear()
                .extend(&segments[..keep])
                .extend(["api", "v1", "caches"]);
        }
        if let Ok(mut path) = base.path_segments_mut() {
            path.clear().extend(&segments[..keep]);
            if keep > 0 {
                path.push(""); // a trailing `/`: the base is a directory
            }
        }
        match http.get(caches_url.clone()).send().await {
            Ok(r) if r.status().is_success() => {
                let text = r.text().await.unwrap_or_default();
                if let Ok(list) = serde_json::from_str::<CacheList>(&text) {
                    let rest = format!("/{}", segments[keep..].join("/"));
                    return Ok((base, rest, list.caches));
                }
                last_error = format!("{caches_url} is not quorate's cache list");
            }
            Ok(r) => last_error = format!("{caches_url} answered {}", r.status()),
            Err(e) => {
                // Nothing answers at all: no point trying the parents.
                return Err(PushError::Unavailable(format!(
                    "no answer from {caches_url}: {e}"
                )));
            }
        }
    }
    Err(PushError::Server(format!(
        "no quorate API at or above {url} ({last_error})"
    )))
}

/// The cache to push to: `wanted`, else the one mounted at `mount` (the URL's path below the
/// API), else the only one, else the one at `/`.
fn choose_cache<'a>(
    caches: &'a [CacheEntry],
    wanted: Option<&str>,
    mount: &str,
) -> Result<&'a CacheEntry, PushError> {
    let names = || {
        caches
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let at = |m: &str| {
        caches
            .iter()
            .find(|c| c.mount.trim_end_matches('/') == m.trim_end_matches('/'))
    };
    let chosen = match wanted {
        Some(name) => caches.iter().find(|c| c.name == name),
        None if mount != "/" => at(mount),
        None if caches.len() == 1 => caches.first(),
        None => at("/"),
    };
    chosen.ok_or_else(|| {
        PushError::Server(match wanted {
            Some(name) => format!(
                "the quorate serves no cache {name} (it serves: {})",
                names()
            ),
            None if mount != "/" => {
                format!("no cache is mounted at {mount} (caches: {})", names())
            }
            None => format!(
                "the quorate serves several caches: name one with --cache ({})",
                names()
            ),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, mount: &str) -> CacheEntry {
        CacheEntry {
            name: name.into(),
            flavor: "nix".into(),
            mount: mount.into(),
        }
    }

    #[test]
    fn the_cache_is_the_named_one_or_the_one_the_url_mounts_or_the_only_one() {
        let two = [entry("nix", "/nix"), entry("root", "/")];
        let pick = |wanted, mount| choose_cache(&two, wanted, mount).map(|c| c.name.clone());
        assert_eq!(pick(Some("nix"), "/").ok().as_deref(), Some("nix"));
        assert_eq!(pick(None, "/nix").ok().as_deref(), Some("nix"));
        assert_eq!(pick(None, "/").ok().as_deref(), Some("root"));
        let err = pick(Some("guix"), "/").expect_err("unknown");
        assert!(err.to_string().contains("nix, root"), "{err}");
        assert!(pick(None, "/elsewhere").is_err());
        let one = [entry("only", "/nix")];
        assert_eq!(
            choose_cache(&one, None, "/").map(|c| c.name.as_str()).ok(),
            Some("only")
        );
        let none_at_root = [entry("a", "/a"), entry("b", "/b")];
        let err = choose_cache(&none_at_root, None, "/")
            .err()
            .expect("ambiguous");
        assert!(err.to_string().contains("--cache"), "{err}");
    }
}
