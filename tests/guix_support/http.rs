//! Talking to quorate as a Guix client would, over plain HTTP: GETs whose body may end in an
//! error (an aborted NAR download is the answer some stories expect), narinfo fields read the
//! way Guix's `read-narinfo` reads them, NAR hashes, and quorate's JSON API.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix_derivation::nixbase32;
use sha2::Digest as _;

/// `sha256:<nix32>` of `bytes`, as narinfos write NarHash.
pub fn nar_hash_of(bytes: &[u8]) -> String {
    format!("sha256:{}", nixbase32::encode(&sha2::Sha256::digest(bytes)))
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The whole body, or why it could not be read to its end (an aborted transfer).
    pub body: Result<Bytes, String>,
}

impl Answer {
    /// The first header `name` (lowercase).
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

    /// A short account of the body for failure messages: short text whole, else its length.
    pub fn summary(&self) -> String {
        match &self.body {
            Ok(b) if b.len() <= 1024 => format!("{:?}", String::from_utf8_lossy(b)),
            Ok(b) => format!("<{} bytes>", b.len()),
            Err(e) => format!("<body broke off: {e}>"),
        }
    }

    /// The body as text.
    #[track_caller]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    // No automatic decompression: quorate must never send Content-Encoding anyway.
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("building the HTTP client")
    })
}

/// `GET url`. A transport failure before the response head panics; a body that breaks off
/// is returned as `Err` in [`Answer::body`].
pub async fn get(url: &str) -> Answer {
    let resp = client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp.bytes().await.map_err(|e| format!("{e:?}"));
    Answer {
        status,
        headers,
        body,
    }
}

/// `GET url` as JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    let answer = get(url).await;
    assert_eq!(answer.status, 200, "GET {url}: {:?}", answer.body);
    serde_json::from_slice(answer.bytes())
        .unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {}", answer.text()))
}

/// A narinfo read as Guix's `read-narinfo` reads one: `Key: value` lines in order.
#[derive(Debug, Clone)]
pub struct Narinfo {
    /// Every field, in order (URL, Compression and FileSize repeat once per group).
    pub fields: Vec<(String, String)>,
}

/// One `URL`/`Compression`/`FileSize` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlGroup {
    /// `URL:`, relative to the cache.
    pub url: String,
    /// `Compression:`.
    pub compression: Option<String>,
    /// `FileSize:`.
    pub file_size: Option<u64>,
}

impl Narinfo {
    /// Parses `text`; every line must be `Key: value`.
    #[track_caller]
    pub fn parse(text: &str) -> Narinfo {
        assert!(
            text.ends_with('\n'),
            "a narinfo ends with a newline: {text:?}"
        );
        let fields = text
            .lines()
            .map(|line| {
                let (k, v) = line
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("not a `Key: value` line: {line:?} in\n{text}"));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        Narinfo { fields }
    }

    /// The single value of `key`; panics if absent or repeated.
    #[track_caller]
    pub fn one(&self, key: &str) -> &str {
        let values: Vec<&str> = self.all(key);
        assert_eq!(values.len(), 1, "{key} appears {} times", values.len());
        values[0]
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `References:` as a list of basenames.
    pub fn references(&self) -> Vec<String> {
        self.one("References")
            .split(' ')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The URL groups, as Guix's `narinfo-maker` pairs them: each `URL:` with the
    /// `Compression:` and `FileSize:` that follow it.
    pub fn url_groups(&self) -> Vec<UrlGroup> {
        let mut groups: Vec<UrlGroup> = Vec::new();
        for (k, v) in &self.fields {
            match k.as_str() {
                "URL" => groups.push(UrlGroup {
                    url: v.clone(),
                    compression: None,
                    file_size: None,
                }),
                "Compression" => {
                    if let Some(g) = groups.last_mut() {
                        g.compression = Some(v.clone());
                    }
                }
                "FileSize" => {
                    if let Some(g) = groups.last_mut() {
                        g.file_size = v.parse().ok();
                    }
                }
                _ => {}
            }
        }
        groups
    }

    /// Field names before `Signature:` (the signed part), in order.
    pub fn signed_keys(&self) -> Vec<&str> {
        self.fields
            .iter()
            .map(|(k, _)| k.as_str())
            .take_while(|k| *k != "Signature")
            .collect()
    }
}

/// Polls `check` until it returns `Some`; panics with `what` after a generous bound (a hang
/// guard, not a timing assertion).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
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
