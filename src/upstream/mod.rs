//! Upstream HTTP: fetching narinfos (bounded in size and time), opening NAR downloads and
//! build logs, with a little health bookkeeping so NAR sources can be ordered by how well
//! they behave.
//!
//! Upstreams are untrusted: this module only moves bytes. A narinfo counts through its
//! signatures (checked by the flavor front ends) and a NAR through its hash (checked in
//! [`crate::nar`]). What it does guarantee:
//! - every URL is built from typed parts, and an upstream can send quorate only to its own
//!   origin or its `nar_hosts`; its bearer token goes only to its own origin, redirects
//!   included ([`urls`]);
//! - every network read has a deadline: connecting and the response head `timeout`; a
//!   narinfo as a whole `timeout`; a NAR or log body `idle_timeout` between chunks, and a
//!   total: for a NAR one that grows with its size ([`crate::limits::nar_deadline`]), for a
//!   log [`LOG_DEADLINE`].
//!
//! Redirects are followed here, not by reqwest: each hop is checked against the upstream's
//! allowed origins and given the token only on the upstream's own origin.

mod deadline;
pub mod urls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::LOCATION;
use reqwest::{StatusCode, Url};

use quorate_core::protocol::store_path::{HashPart, StorePath};

use crate::config::UpstreamConfig;
use crate::limits::{
    nar_deadline, LOG_DEADLINE, MAX_NARINFO_BYTES, MAX_UPSTREAM_REDIRECTS, UPSTREAM_POOL_IDLE,
};
pub use urls::UrlError;

/// A body of upstream bytes, each chunk read within its deadlines.
pub type UpstreamBody = BoxStream<'static, Result<Bytes, UpstreamError>>;

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
    /// No answer (or no whole body) within the time allowed.
    #[error("upstream {url} timed out after {after:?}")]
    Timeout {
        /// Requested URL.
        url: String,
        /// The time allowed.
        after: Duration,
    },
    /// The body stopped: no byte for the idle timeout.
    #[error("upstream {url} sent nothing for {after:?}")]
    Stalled {
        /// Requested URL.
        url: String,
        /// The idle timeout in force.
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
    #[error("upstream {upstream} advertised a NAR URL that {reason}: `{nar_url}`")]
    BadNarUrl {
        /// Upstream base URL.
        upstream: String,
        /// The URL as advertised.
        nar_url: String,
        /// Why it is refused.
        reason: UrlError,
    },
    /// No URL can be built on the upstream's base (config validation prevents this).
    #[error("upstream {upstream}: a request URL {reason}")]
    Unaddressable {
        /// Upstream base URL.
        upstream: String,
        /// Why.
        reason: UrlError,
    },
    /// A redirect quorate will not follow: to another host, or one too many.
    #[error("upstream {url} redirected to `{location}`, which {reason}")]
    Redirect {
        /// The URL that answered with the redirect.
        url: String,
        /// Its `Location`.
        location: String,
        /// Why it is not followed.
        reason: String,
    },
}

/// Per-upstream health: consecutive failures, a smoothed latency and NAR throughput.
#[derive(Clone, Copy, Debug, Default)]
pub struct Health {
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Exponentially smoothed narinfo latency in milliseconds (0 = unknown).
    pub latency_ms: f64,
    /// Exponentially smoothed rate of its NAR downloads, in bytes (as sent, compressed) per
    /// second from the response head to the body's end (0 = unknown): what the link and the
    /// decoding behind it sustained. Only downloads of at least [`THROUGHPUT_SAMPLE_MIN`]
    /// count, so that a few small NARs do not pass their latency off as a slow link.
    pub nar_bytes_per_sec: f64,
}

/// The smallest NAR download whose rate is taken as the upstream's throughput.
pub const THROUGHPUT_SAMPLE_MIN: u64 = 1 << 20;

/// HTTP client shared by all caches, with health bookkeeping per upstream base URL.
#[derive(Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    /// Connecting, and waiting for a response head; a whole narinfo.
    timeout: Duration,
    /// The longest wait for the next chunk of a body.
    idle_timeout: Duration,
    /// std Mutex, not tokio's: never held across an await.
    health: Arc<Mutex<HashMap<String, Health>>>,
}

impl UpstreamClient {
    /// A client whose requests give up after `timeout` without a response head (a narinfo:
    /// without its whole body), and whose bodies give up after `idle_timeout` without a byte.
    pub fn new(timeout: Duration, idle_timeout: Duration) -> Result<UpstreamClient, UpstreamError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("quorate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            .pool_idle_timeout(UPSTREAM_POOL_IDLE)
            // Redirects are followed by `send`, which checks every hop against the
            // upstream's allowed origins and decides where its token goes.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamError::Transport {
                url: String::new(),
                message: e.to_string(),
            })?;
        Ok(UpstreamClient {
            http,
            timeout,
            idle_timeout,
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

    /// Folds one finished NAR download of `bytes` in `elapsed` into the upstream's throughput.
    fn note_throughput(&self, upstream: &str, bytes: u64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if bytes < THROUGHPUT_SAMPLE_MIN || secs <= 0.0 {
            return;
        }
        let rate = bytes as f64 / secs;
        if let Ok(mut map) = self.health.lock() {
            let h = map.entry(upstream.to_string()).or_default();
            h.nar_bytes_per_sec = if h.nar_bytes_per_sec == 0.0 {
                rate
            } else {
                0.7 * h.nar_bytes_per_sec + 0.3 * rate
            };
        }
    }

    /// GET `url` from upstream `up`, following redirects the upstream may make (its own
    /// origin, its `nar_hosts`), with its token only on its own origin. Not bounded in time:
    /// callers bound it.
    async fn send(
        &self,
        up: &UpstreamConfig,
        url: Url,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut url = url;
        let mut redirects = 0;
        loop {
            let mut request = self.http.get(url.clone());
            if let Some(token) = urls::credentials_for(up, &url) {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|e| UpstreamError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            })?;
            let Some(location) = redirect_location(&response) else {
                return Ok(response);
            };
            let refused = |reason: String| UpstreamError::Redirect {
                url: url.to_string(),
                location: location.clone(),
                reason,
            };
            if redirects == MAX_UPSTREAM_REDIRECTS {
                return Err(refused(format!(
                    "is one more than the {MAX_UPSTREAM_REDIRECTS} redirects followed"
                )));
            }
            let next = url
                .join(&location)
                .map_err(|e| refused(format!("is not a URL: {e}")))?;
            urls::may_redirect(up, &next).map_err(|e| refused(e.to_string()))?;
            redirects += 1;
            url = next;
        }
    }

    /// GET `<base>/<hash_part>.narinfo`. `Ok(None)` when the upstream does not have it
    /// (404, 403, 401, as Nix treats them).
    pub async fn fetch_narinfo(
        &self,
        up: &UpstreamConfig,
        hash_part: &HashPart,
    ) -> Result<Option<String>, UpstreamError> {
        let url = urls::narinfo_url(&up.base, hash_part).map_err(|reason| {
            UpstreamError::Unaddressable {
                upstream: up.url.clone(),
                reason,
            }
        })?;
        let shown = url.to_string();
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.fetch_text(up, url)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout {
                url: shown,
                after: self.timeout,
            }),
        };
        self.note(&up.url, result.is_ok(), started.elapsed());
        result
    }

    async fn fetch_text(
        &self,
        up: &UpstreamConfig,
        url: Url,
    ) -> Result<Option<String>, UpstreamError> {
        let shown = url.to_string();
        let resp = self.send(up, url).await?;
        let status = resp.status().as_u16();
        if matches!(status, 404 | 403 | 401 | 410) {
            return Ok(None);
        }
        if status != 200 {
            return Err(UpstreamError::Status { url: shown, status });
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_NARINFO_BYTES as u64)
        {
            return Err(UpstreamError::TooLarge { url: shown });
        }
        // Read chunk by chunk so a lying or absent Content-Length cannot make us buffer more
        // than the limit.
        let mut body = Vec::new();
        let mut stream = self.body(resp, self.timeout, &shown);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if body.len() + chunk.len() > MAX_NARINFO_BYTES {
                return Err(UpstreamError::TooLarge { url: shown });
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body)
            .map(Some)
            .map_err(|_| UpstreamError::NotText { url: shown })
    }

    /// Resolves a narinfo's `URL:` against its upstream (see [`urls::nar_url`]): under the
    /// upstream's base, or on one of its `nar_hosts`.
    pub fn nar_url(up: &UpstreamConfig, advertised: &str) -> Result<Url, UpstreamError> {
        urls::nar_url(up, advertised).map_err(|reason| UpstreamError::BadNarUrl {
            upstream: up.url.clone(),
            nar_url: advertised.to_string(),
            reason,
        })
    }

    /// Opens the download of a NAR of `nar_size` (uncompressed) bytes at `url` (from
    /// [`UpstreamClient::nar_url`]): the response body as a stream of chunks. The response
    /// head must come within the timeout, each chunk within the idle timeout, and the whole
    /// body within [`nar_deadline`] (the timeout plus `nar_size` at a minimum throughput);
    /// the caller's reader bounds its size.
    pub async fn open_nar(
        &self,
        up: &UpstreamConfig,
        url: Url,
        nar_size: u64,
    ) -> Result<UpstreamBody, UpstreamError> {
        let started = Instant::now();
        let shown = url.to_string();
        let result = match tokio::time::timeout(self.timeout, self.send(up, url)).await {
            Ok(Ok(resp)) if resp.status() == StatusCode::OK => {
                let body = self.body(resp, nar_deadline(self.timeout, nar_size), &shown);
                Ok(self.measured(body, &up.url))
            }
            Ok(Ok(resp)) => Err(UpstreamError::Status {
                url: shown,
                status: resp.status().as_u16(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(UpstreamError::Timeout {
                url: shown,
                after: self.timeout,
            }),
        };
        if result.is_err() {
            self.note(&up.url, false, started.elapsed());
        }
        result
    }

    /// Opens the build log of derivation `drv` (informational, passed through): `Ok(None)`
    /// when the upstream has none. Bounded like a NAR, with [`LOG_DEADLINE`] in all.
    pub async fn open_log(
        &self,
        up: &UpstreamConfig,
        drv: &StorePath,
    ) -> Result<Option<UpstreamBody>, UpstreamError> {
        let url = urls::log_url(&up.base, drv).map_err(|reason| UpstreamError::Unaddressable {
            upstream: up.url.clone(),
            reason,
        })?;
        let shown = url.to_string();
        let resp = tokio::time::timeout(self.timeout, self.send(up, url))
            .await
            .map_err(|_| UpstreamError::Timeout {
                url: shown.clone(),
                after: self.timeout,
            })??;
        Ok((resp.status() == StatusCode::OK).then(|| self.body(resp, LOG_DEADLINE, &shown)))
    }

    /// `body`, noting its rate as the upstream's throughput when it ends complete (a
    /// download cut short, by an error or by a reader that stopped, is not a sample).
    fn measured(&self, body: UpstreamBody, upstream: &str) -> UpstreamBody {
        struct Meter {
            body: UpstreamBody,
            client: UpstreamClient,
            upstream: String,
            started: Instant,
            bytes: u64,
        }
        let meter = Meter {
            body,
            client: self.clone(),
            upstream: upstream.to_string(),
            started: Instant::now(),
            bytes: 0,
        };
        futures_util::stream::unfold(Some(meter), |meter| async move {
            let mut meter = meter?;
            match meter.body.next().await {
                Some(Ok(chunk)) => {
                    meter.bytes += chunk.len() as u64;
                    Some((Ok(chunk), Some(meter)))
                }
                Some(Err(err)) => Some((Err(err), None)),
                None => {
                    let elapsed = meter.started.elapsed();
                    meter
                        .client
                        .note_throughput(&meter.upstream, meter.bytes, elapsed);
                    None
                }
            }
        })
        .boxed()
    }

    /// A response's body with the idle timeout between chunks and `total` in all.
    fn body(&self, resp: reqwest::Response, total: Duration, url: &str) -> UpstreamBody {
        let owned = url.to_string();
        let body = resp
            .bytes_stream()
            .map_err(move |e| UpstreamError::Transport {
                url: owned.clone(),
                message: e.to_string(),
            })
            .boxed();
        deadline::bounded(body, self.idle_timeout, total, url.to_string())
    }
}

/// The `Location` of a redirect worth following (301, 302, 303, 307, 308), as text.
fn redirect_location(response: &reqwest::Response) -> Option<String> {
    let redirect = matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308);
    let location = response.headers().get(LOCATION)?;
    redirect.then(|| String::from_utf8_lossy(location.as_bytes()).into_owned())
}
