//! Plain HTTP to quorate, for checks that talk to it without a Nix or Guix client: one shared
//! client (no automatic decompression: quorate must never send Content-Encoding anyway),
//! answers kept whole with their headers, and quorate's JSON API.
//!
//! Two ways to ask: [`get`] keeps a body that breaks off as an `Err` in [`HttpAnswer::body`]
//! (an aborted NAR download is the answer some stories expect); [`http_get`] and
//! [`http_get_async`] want the whole answer and return `Err` when it does not arrive.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::block_on;

/// The bound on one request (tests don't assert on time; this only stops a hang).
const TIMEOUT: Duration = Duration::from_secs(120);

/// One HTTP answer.
#[derive(Debug)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Response headers (names lowercase).
    pub headers: Vec<(String, String)>,
    /// The whole body, or why it could not be read to its end (an aborted transfer).
    pub body: Result<Bytes, String>,
}

impl HttpAnswer {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body, which must have arrived whole.
    #[track_caller]
    pub fn bytes(&self) -> &Bytes {
        match &self.body {
            Ok(b) => b,
            Err(e) => panic!("the body did not arrive whole: {e}"),
        }
    }

    /// The body as text (lossy); it must have arrived whole.
    #[track_caller]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// A short account of the body for failure messages: short text whole, else its length.
    pub fn summary(&self) -> String {
        match &self.body {
            Ok(b) if b.len() <= 1024 => format!("{:?}", String::from_utf8_lossy(b)),
            Ok(b) => format!("<{} bytes>", b.len()),
            Err(e) => format!("<body broke off: {e}>"),
        }
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

/// `GET url` within `timeout`: `Err` if no response head arrives; a body that breaks off is
/// kept as `Err` in [`HttpAnswer::body`].
async fn send(url: &str, timeout: Duration) -> Result<HttpAnswer, String> {
    request(reqwest::Method::GET, url, timeout).await
}

/// `method url` within `timeout`, as [`send`] does for GET.
async fn request(
    method: reqwest::Method,
    url: &str,
    timeout: Duration,
) -> Result<HttpAnswer, String> {
    let resp = client()
        .request(method.clone(), url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("{method} {url}: {e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), v)
        })
        .collect();
    let body = resp.bytes().await.map_err(|e| format!("{e:?}"));
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
}

/// `GET url`. A transport failure before the response head panics; a body that breaks off
/// is returned as `Err` in [`HttpAnswer::body`].
pub async fn get(url: &str) -> HttpAnswer {
    send(url, TIMEOUT).await.unwrap_or_else(|e| panic!("{e}"))
}

/// `GET url` as JSON; the answer must be 200.
pub async fn get_json(url: &str) -> serde_json::Value {
    let answer = get(url).await;
    assert_eq!(answer.status, 200, "GET {url}: {:?}", answer.body);
    serde_json::from_slice(answer.bytes())
        .unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {}", answer.text()))
}

/// `GET url` from a synchronous test, on the support runtime: `Err` unless the whole answer
/// arrived.
pub fn http_get(url: &str) -> Result<HttpAnswer, String> {
    block_on(http_get_async(url, TIMEOUT))
}

/// `HEAD url` from a synchronous test: the status and headers (there is no body).
pub fn http_head(url: &str) -> Result<HttpAnswer, String> {
    block_on(request(reqwest::Method::HEAD, url, TIMEOUT))
}

/// `GET url` within `timeout`: `Err` unless the whole answer arrived.
pub async fn http_get_async(url: &str, timeout: Duration) -> Result<HttpAnswer, String> {
    let answer = send(url, timeout).await?;
    match &answer.body {
        Ok(_) => Ok(answer),
        Err(e) => Err(format!("GET {url}: reading the body: {e}")),
    }
}

/// Polls `check` until it returns `Some`; panics with `what` after a generous bound (a hang
/// guard, not a timing assertion).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
