//! Upstream HTTP: fetching narinfos (bounded in size and time) and opening NAR downloads, with
//! a little health bookkeeping so NAR sources can be ordered by how well they behave.
//!
//! Upstreams are untrusted: this module only moves bytes. A narinfo counts through its
//! signatures (checked by the flavor front ends) and a NAR through its hash (checked in
//! [`crate::nar`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};

use quorate_core::protocol::store_path::HashPart;

use crate::limits::{MAX_NARINFO_BYTES, UPSTREAM_POOL_IDLE};

/// Why an upstream request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Connection, TLS or protocol failure.
    #[error("upstream {url} unreachable: {message}")]
    Transport {
        /// Requested URL.
        url: String,
        /// The transport's description.
        message: String,
    },
    /// No answer within the configured timeout.
    #[error("upstream {url} timed out after {after:?}")]
    Timeout {
        /// Requested URL.
        url: String,
        /// The timeout in force.
        after: Duration,
    },
    /// An HTTP status other than 200 (or 404 for narinfos).
    #[error("upstream {url} answered HTTP {status}")]
    Status {
        /// Requested URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The narinfo exceeded [`MAX_NARINFO_BYTES`].
    #[error("upstream {url} sent a narinfo larger than {MAX_NARINFO_BYTES} bytes")]
    TooLarge {
        /// Requested URL.
        url: String,
    },
    /// The narinfo was not UTF-8 text.
    #[error("upstream {url} sent a narinfo that is not UTF-8 text")]
    NotText {
        /// Requested URL.
        url: String,
    },
    /// A NAR URL that would leave the upstream (or is otherwise unusable).
    #[error("upstream {upstream} advertised an unusable NAR URL `{nar_url}`")]
    BadNarUrl {
        /// Upstream base URL.
        upstream: String,
        /// The URL as advertised.
        nar_url: String,
    },
}

/// Per-upstream health: consecutive failures and a smoothed latency.
#[derive(Clone, Copy, Debug, Default)]
pub struct Health {
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Exponentially smoothed narinfo latency in milliseconds (0 = unknown).
    pub latency_ms: f64,
}

/// HTTP client shared by all caches, with health bookkeeping per upstream base URL.
#[derive(Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    timeout: Duration,
    /// std Mutex, not tokio's: never held across an await.
    health: Arc<Mutex<HashMap<String, Health>>>,
}

impl UpstreamClient {
    /// A client whose narinfo requests give up after `timeout`.
    pub fn new(timeout: Duration) -> Result<UpstreamClient, UpstreamError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("quorate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            .pool_idle_timeout(UPSTREAM_POOL_IDLE)
            // Upstream redirects (e.g. to a CDN) are followed; bytes are verified anyway.
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| UpstreamError::Transport {
                url: String::new(),
                message: e.to_string(),
            })?;
        Ok(UpstreamClient {
            http,
            timeout,
            health: Arc::default(),
        })
    }

    /// The timeout for one narinfo request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Health snapshot of an upstream.
    pub fn health(&self, upstream: &str) -> Health {
        self.health
            .lock()
            .map(|h| h.get(upstream).copied().unwrap_or_default())
            .unwrap_or_default()
    }

    fn note(&self, upstream: &str, ok: bool, elapsed: Duration) {
        if let Ok(mut map) = self.health.lock() {
            let h = map.entry(upstream.to_string()).or_default();
            if ok {
                h.consecutive_failures = 0;
                let ms = elapsed.as_secs_f64() * 1000.0;
                h.latency_ms = if h.latency_ms == 0.0 {
                    ms
                } else {
                    0.8 * h.latency_ms + 0.2 * ms
                };
            } else {
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
            }
        }
    }

    fn get(&self, url: &str, bearer: Option<&str>) -> reqwest::RequestBuilder {
        let req = self.http.get(url);
        match bearer {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// GET `<base>/<hash_part>.narinfo`. `Ok(None)` when the upstream does not have it
    /// (404, 403, 401, as Nix treats them).
    pub async fn fetch_narinfo(
        &self,
        base: &str,
        bearer: Option<&str>,
        hash_part: &HashPart,
    ) -> Result<Option<String>, UpstreamError> {
        let url = format!("{base}/{hash_part}.narinfo");
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.fetch_text(&url, bearer)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout {
                url: url.clone(),
                after: self.timeout,
            }),
        };
        self.note(base, result.is_ok(), started.elapsed());
        result
    }

    async fn fetch_text(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<Option<String>, UpstreamError> {
        let transport = |e: reqwest::Error| UpstreamError::Transport {
            url: url.to_string(),
            message: e.to_string(),
        };
        let resp = self.get(url, bearer).send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if matches!(status, 404 | 403 | 401 | 410) {
            return Ok(None);
        }
        if status != 200 {
            return Err(UpstreamError::Status {
                url: url.to_string(),
                status,
            });
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_NARINFO_BYTES as u64)
        {
            return Err(UpstreamError::TooLarge {
                url: url.to_string(),
            });
        }
        // Read chunk by chunk so a lying or absent Content-Length cannot make us buffer more
        // than the limit.
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport)?;
            if body.len() + chunk.len() > MAX_NARINFO_BYTES {
                return Err(UpstreamError::TooLarge {
                    url: url.to_string(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body)
            .map(Some)
            .map_err(|_| UpstreamError::NotText {
                url: url.to_string(),
            })
    }

    /// Resolve a narinfo `URL:` against its upstream. Relative URLs stay under the base;
    /// absolute http(s) URLs are allowed (caches put NARs on CDNs) since bytes are verified.
    pub fn nar_url(base: &str, nar_url: &str) -> Result<String, UpstreamError> {
        let bad = || UpstreamError::BadNarUrl {
            upstream: base.to_string(),
            nar_url: nar_url.to_string(),
        };
        if nar_url.starts_with("http://") || nar_url.starts_with("https://") {
            return Ok(nar_url.to_string());
        }
        if nar_url.is_empty()
            || nar_url.starts_with('/')
            || nar_url.contains("://")
            || nar_url.split('/').any(|s| s == "..")
            || nar_url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad());
        }
        Ok(format!("{base}/{nar_url}"))
    }

    /// Open a NAR download: the response body as a stream of chunks. The connect and
    /// first-byte wait are bounded by the timeout; the body itself may take as long as it
    /// takes (large NARs), the caller's reader bounds its size.
    pub async fn open_nar(
        &self,
        base: &str,
        bearer: Option<&str>,
        url: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, UpstreamError>>, UpstreamError> {
        let started = Instant::now();
        let owned_url = url.to_string();
        let transport = move |e: reqwest::Error| UpstreamError::Transport {
            url: owned_url.clone(),
            message: e.to_string(),
        };
        let resp = match tokio::time::timeout(self.timeout, self.get(url, bearer).send()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.note(base, false, started.elapsed());
                return Err(transport(e));
            }
            Err(_) => {
                self.note(base, false, started.elapsed());
                return Err(UpstreamError::Timeout {
                    url: url.to_string(),
                    after: self.timeout,
                });
            }
        };
        if resp.status().as_u16() != 200 {
            self.note(base, false, started.elapsed());
            return Err(UpstreamError::Status {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        Ok(resp.bytes_stream().map_err(transport).boxed())
    }

    /// Fetch a build log (informational, passed through): `Ok(None)` when absent.
    pub async fn open_log(
        &self,
        base: &str,
        bearer: Option<&str>,
        drv: &str,
    ) -> Result<Option<reqwest::Response>, UpstreamError> {
        let url = format!("{base}/log/{drv}");
        let resp = tokio::time::timeout(self.timeout, self.get(&url, bearer).send())
            .await
            .map_err(|_| UpstreamError::Timeout {
                url: url.clone(),
                after: self.timeout,
            })?
            .map_err(|e| UpstreamError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
        Ok((resp.status().as_u16() == 200).then_some(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nar_urls_stay_under_their_upstream() {
        let base = "http://up.example";
        assert_eq!(
            UpstreamClient::nar_url(base, "nar/abc.nar.xz").unwrap(),
            "http://up.example/nar/abc.nar.xz"
        );
        assert_eq!(
            UpstreamClient::nar_url(base, "https://cdn.example/x.nar").unwrap(),
            "https://cdn.example/x.nar"
        );
        for bad in [
            "",
            "/etc/passwd",
            "nar/../../x",
            "file:///etc/passwd",
            "nar/a b",
        ] {
            assert!(UpstreamClient::nar_url(base, bad).is_err(), "{bad}");
        }
    }
}
