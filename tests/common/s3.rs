//! A small S3 client for the tests: the few requests a story needs to look into a bucket
//! (list objects with their sizes, list incomplete multipart uploads, put, get, delete, and
//! start or abort a multipart upload), signed with AWS Signature Version 4, path-style.
//!
//! Why not an S3 crate: the stories must count *incomplete multipart uploads* (issue 9: "the
//! bucket holds no partial object or upload"), which `object_store` does not expose, and
//! Garage's own counters (`garage bucket info`) are updated in the background, so a count of 0
//! there could be a count not yet made. `ListMultipartUploads` answers from the upload table
//! itself. The signer is checked by the server on every request: a wrong signature is a 403,
//! never a silent pass.
//!
//! Responses are S3's XML; the few fields read here (`Key`, `Size`, `UploadId`, the
//! continuation markers) are taken out by tag name. Object keys in these tests are
//! `<prefix>/nar/<nix32>`: no XML beyond the five predefined entities is expected.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The bound on one request: a hang guard, not a timing assertion.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Where a bucket is and who may use it.
#[derive(Clone, Debug)]
pub struct S3Client {
    /// `http://127.0.0.1:PORT`, no trailing slash; requests are path-style
    /// (`<endpoint>/<bucket>/<key>`).
    pub endpoint: String,
    /// The signing region (Garage: its `s3_region`).
    pub region: String,
    /// The bucket every request goes to.
    pub bucket: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Object {
    /// Its full key (`<prefix>/nar/<nix32>`).
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One multipart upload that was started and neither completed nor aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipartUpload {
    /// The key the upload would create.
    pub key: String,
    /// Its upload id.
    pub upload_id: String,
}

/// A signed request's answer.
struct S3Answer {
    status: u16,
    body: Bytes,
}

impl S3Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl S3Client {
    /// Every object whose key starts with `prefix` (all pages), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<S3Object>, String> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2".to_owned()), ("prefix", prefix.to_owned())];
            if let Some(t) = &token {
                query.push(("continuation-token", t.clone()));
            }
            let answer = self.send("GET", "", &query, Bytes::new()).await?;
            let text = expect_ok("ListObjectsV2", &answer)?;
            for entry in elements(&text, "Contents") {
                let key = element(entry, "Key").ok_or("a listed object without <Key>")?;
                let size = element(entry, "Size")
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("object {key}: no readable <Size>"))?;
                objects.push(S3Object { key, size });
            }
            if element(&text, "IsTruncated").as_deref() != Some("true") {
                break;
            }
            token = Some(
                element(&text, "NextContinuationToken")
                    .ok_or("a truncated listing without NextContinuationToken")?,
            );
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Every multipart upload under `prefix` that is neither completed nor aborted.
    pub async fn incomplete_uploads(&self, prefix: &str) -> Result<Vec<MultipartUpload>, String> {
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = vec![("uploads", String::new()), ("prefix", prefix.to_owned())];
            if let Some((key, id)) = &markers {
                query.push(("key-marker", key.clone()));
                query.push(("upload-id-marker", id.clone()));
            }
            let answer = self.send("GET", "", &query, Bytes::new()).await?;
            let text = expect_ok("ListMultipartUploads", &answer)?;
            for entry in elements(&text, "Upload") {
                uploads.push(MultipartUpload {
                    key: element(entry, "Key").ok_or("an upload without <Key>")?,
                    upload_id: element(entry, "UploadId").ok_or("an upload without <UploadId>")?,
                });
            }
            if element(&text, "IsTruncated").as_deref() != Some("true") {
                break;
            }
            markers = Some((
                element(&text, "NextKeyMarker")
                    .ok_or("a truncated listing without NextKeyMarker")?,
                element(&text, "NextUploadIdMarker")
                    .ok_or("a truncated listing without NextUploadIdMarker")?,
            ));
        }
        Ok(uploads)
    }

    /// `PUT <key>` with `body`.
    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), String> {
        let answer = self.send("PUT", key, &[], body).await?;
        expect_ok("PutObject", &answer).map(drop)
    }

    /// `GET <key>`: its bytes, or `None` when there is no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, String> {
        let answer = self.send("GET", key, &[], Bytes::new()).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        expect_ok("GetObject", &answer)?;
        Ok(Some(answer.body))
    }

    /// `DELETE <key>` (no error when it is not there, as S3 does).
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        let answer = self.send("DELETE", key, &[], Bytes::new()).await?;
        expect_ok("DeleteObject", &answer).map(drop)
    }

    /// Starts a multipart upload of `key`; returns its upload id.
    pub async fn create_multipart_upload(&self, key: &str) -> Result<String, String> {
        let query = [("uploads", String::new())];
        let answer = self.send("POST", key, &query, Bytes::new()).await?;
        let text = expect_ok("CreateMultipartUpload", &answer)?;
        element(&text, "UploadId").ok_or_else(|| format!("no <UploadId> in {text}"))
    }

    /// Uploads part `number` (from 1) of an upload.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> Result<(), String> {
        let query = [
            ("partNumber", number.to_string()),
            ("uploadId", upload_id.to_owned()),
        ];
        let answer = self.send("PUT", key, &query, body).await?;
        expect_ok("UploadPart", &answer).map(drop)
    }

    /// Aborts an upload: its parts are dropped and it is no longer listed.
    pub async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), String> {
        let query = [("uploadId", upload_id.to_owned())];
        let answer = self.send("DELETE", key, &query, Bytes::new()).await?;
        expect_ok("AbortMultipartUpload", &answer).map(drop)
    }

    /// Sends one request signed with SigV4 (headers `host`, `x-amz-content-sha256`,
    /// `x-amz-date`); `key` empty addresses the bucket itself. `Err` only when no answer
    /// came (connection refused, timeout).
    async fn send(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, String)],
        body: Bytes,
    ) -> Result<S3Answer, String> {
        let url: reqwest::Url = self
            .endpoint
            .parse()
            .map_err(|e| format!("endpoint {}: {e}", self.endpoint))?;
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let mut path = format!("/{}", uri_encode(&self.bucket, false));
        if !key.is_empty() {
            path.push('/');
            path.push_str(&uri_encode(key, false));
        }
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
            .collect();
        pairs.sort();
        let canonical_query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");

        let (date, stamp) = amz_dates(SystemTime::now());
        let payload_hash = hex(&Sha256::digest(&body));
        let signed_headers = "host;x-amz-content-sha256;x-amz-date";
        let canonical_request = format!(
            "{method}\n{path}\n{canonical_query}\nhost:{host}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{stamp}\n\n{signed_headers}\n{payload_hash}"
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let mut key_material = hmac(
            format!("AWS4{}", self.secret_access_key).as_bytes(),
            date.as_bytes(),
        );
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key_material = hmac(&key_material, part.as_bytes());
        }
        let signature = hex(&hmac(&key_material, string_to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key_id
        );

        let mut full_url = format!("{}{path}", self.endpoint.trim_end_matches('/'));
        if !canonical_query.is_empty() {
            full_url.push('?');
            full_url.push_str(&canonical_query);
        }
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let resp = client()
            .request(method.clone(), &full_url)
            .header("x-amz-date", &stamp)
            .header("x-amz-content-sha256", &payload_hash)
            .header("authorization", authorization)
            .body(body)
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("{method} {full_url}: {e:?}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("{method} {full_url}: reading the answer: {e:?}"))?;
        Ok(S3Answer { status, body })
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

/// The answer's text if it is a 2xx; else an error naming the request, status and S3 error.
fn expect_ok(what: &str, answer: &S3Answer) -> Result<String, String> {
    let text = answer.text();
    if (200..300).contains(&answer.status) {
        Ok(text)
    } else {
        Err(format!("{what}: HTTP {}: {text}", answer.status))
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SigV4's URI encoding: unreserved characters stay, every other byte is `%XX` (upper case);
/// `/` stays in a path (`slash_too` false) and is encoded in query names and values.
fn uri_encode(text: &str, slash_too: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !slash_too => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// (`YYYYMMDD`, `YYYYMMDDTHHMMSSZ`) of `now`, in UTC.
fn amz_dates(now: SystemTime) -> (String, String) {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let date = format!("{y:04}{m:02}{d:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    (date, stamp)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The text of every `<tag>…</tag>` element in `xml`, in order (not nested in one another).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

/// The unescaped text of the first `<tag>…</tag>` in `xml`.
fn element(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).first().map(|t| unescape(t))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(
            amz_dates(t),
            ("20240229".to_owned(), "20240229T123456Z".to_owned())
        );
    }

    /// AWS's published example (the "GET Object" example of the SigV4 documentation).
    #[test]
    fn signing_key_and_encoding_follow_sigv4() {
        let mut k = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", b"20130524");
        for part in ["us-east-1", "s3", "aws4_request"] {
            k = hmac(&k, part.as_bytes());
        }
        let string_to_sign = "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972";
        assert_eq!(
            hex(&hmac(&k, string_to_sign.as_bytes())),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert_eq!(uri_encode("a b/c~", false), "a%20b/c~");
        assert_eq!(uri_encode("a b/c~", true), "a%20b%2Fc~");
    }

    #[test]
    fn elements_are_read_by_tag() {
        let xml = "<R><Contents><Key>p/nar/a&amp;b</Key><Size>3</Size></Contents>\
                   <Contents><Key>p/nar/c</Key><Size>10</Size></Contents><IsTruncated>false</IsTruncated></R>";
        let entries = elements(xml, "Contents");
        assert_eq!(entries.len(), 2);
        assert_eq!(element(entries[0], "Key").as_deref(), Some("p/nar/a&b"));
        assert_eq!(element(entries[1], "Size").as_deref(), Some("10"));
        assert_eq!(element(xml, "IsTruncated").as_deref(), Some("false"));
    }
}
