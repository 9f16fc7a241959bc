//! Every URL quorate requests from an upstream, and where an upstream may send quorate.
//!
//! URLs are built from typed parts only: the upstream's base URL, parsed once by the config
//! ([`UpstreamConfig::base`]), and path segments added with the URL API. Text from a client (a
//! derivation name) or from an upstream (a narinfo's `URL:`) is validated first and never
//! pasted into a URL string, so it can neither climb above the base path (`..`, `\`, `%2F`),
//! nor add a query (`?`), nor name another host.
//!
//! ```text
//! base     https://cache.example.org/private               config `url`
//! narinfo  https://cache.example.org/private/<hash>.narinfo narinfo_url(base, &HashPart)
//! log      https://cache.example.org/private/log/<drv>      log_url(base, &StorePath): `?` → %3F
//! NAR      https://cache.example.org/private/nar/<file>     nar_url(upstream, "nar/<file>")
//!          https://cdn.example.org/nar/<file>               only with nar_hosts = ["cdn.example.org"]
//! ```
//!
//! Where an upstream may send quorate, and where its credentials go:
//! - its own origin (scheme, host and port of `base`): a narinfo's NAR URL must also stay
//!   under the base path ("inside the cache": the narinfo's `URL:` is not signed, and may
//!   come from whoever can write into the cache); a redirect, the server's own answer, may go
//!   anywhere on the origin;
//! - a host listed in its `nar_hosts`: any path, but never with its credentials;
//! - nowhere else, including loopback and private addresses a narinfo happens to name.
//!
//! The bearer token goes only to `base`'s origin ([`credentials_for`]), whichever URL or
//! redirect is being followed.

use percent_encoding::percent_decode_str;
use quorate_core::protocol::store_path::{HashPart, StorePath};
use reqwest::Url;

use crate::config::UpstreamConfig;

/// Why a URL is not one quorate will request from an upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a relative path inside the cache, nor an absolute http(s) URL.
    #[error("is neither a relative path inside the cache nor an http(s) URL")]
    Malformed,
    /// A relative path climbing out of the cache or hiding a separator (`..`, `%2F`, `\`).
    #[error("leaves the cache's base path")]
    OutsideCache,
    /// An http(s) URL carrying a user name or password (it would be sent as credentials).
    #[error("carries credentials")]
    Credentials,
    /// On another origin than the upstream's, and not on a host in its `nar_hosts`.
    #[error("is on a host this upstream may not send quorate to (see `nar_hosts`)")]
    OtherHost,
    /// The base URL cannot take path segments (not an http(s) URL; config validation
    /// prevents this).
    #[error("cannot be built on a base URL that takes no path")]
    NotABase,
}

/// `<base>/<hash part>.narinfo`.
pub fn narinfo_url(base: &Url, hash_part: &HashPart) -> Result<Url, UrlError> {
    with_segments(base, [format!("{hash_part}.narinfo").as_str()])
}

/// `<base>/log/<drv basename>`: the basename is one segment, percent-encoded as one (a `?` in
/// a store path name is `%3F`, never a query).
pub fn log_url(base: &Url, drv: &StorePath) -> Result<Url, UrlError> {
    with_segments(base, ["log", drv.basename()])
}

/// The URL to fetch a NAR from, given the `URL:` an upstream's narinfo advertises: a relative
/// path under the upstream's base, or an absolute URL under the base or on a `nar_hosts` host.
///
/// A relative path keeps the upstream's own percent-encoding (the request is exactly what a
/// Nix or Guix client would send), but every segment must decode to a plain name: not `.` or
/// `..`, no `/` or `\`, no control character; and only RFC 3986 path characters may appear
/// (no `?`, `#`, `\` or spaces).
pub fn nar_url(up: &UpstreamConfig, advertised: &str) -> Result<Url, UrlError> {
    if advertised.starts_with("http://") || advertised.starts_with("https://") {
        return absolute_nar_url(up, advertised);
    }
    check_relative_path(advertised)?;
    // The base as a directory (trailing '/'), so that joining appends rather than replaces
    // its last segment. Joining a checked relative path cannot leave it; checked anyway.
    let dir = with_segments(&up.base, [""])?;
    let url = dir.join(advertised).map_err(|_| UrlError::Malformed)?;
    if !same_origin(&url, &up.base) || !under_base(&url, &up.base) || url.query().is_some() {
        return Err(UrlError::OutsideCache);
    }
    Ok(url)
}

/// Whether `up` may redirect quorate to `to`: its own origin, or a `nar_hosts` host.
pub fn may_redirect(up: &UpstreamConfig, to: &Url) -> Result<(), UrlError> {
    if !matches!(to.scheme(), "http" | "https") {
        return Err(UrlError::Malformed);
    }
    if has_credentials(to) {
        return Err(UrlError::Credentials);
    }
    if same_origin(to, &up.base) || up.nar_hosts.iter().any(|h| h.allows(to)) {
        Ok(())
    } else {
        Err(UrlError::OtherHost)
    }
}

/// The bearer token to send with a request for `url`: the upstream's, if `url` is on its
/// origin; nothing anywhere else.
pub fn credentials_for<'a>(up: &'a UpstreamConfig, url: &Url) -> Option<&'a str> {
    if same_origin(url, &up.base) {
        up.bearer_token.as_deref()
    } else {
        None
    }
}

fn absolute_nar_url(up: &UpstreamConfig, advertised: &str) -> Result<Url, UrlError> {
    let url = Url::parse(advertised).map_err(|_| UrlError::Malformed)?;
    if has_credentials(&url) {
        return Err(UrlError::Credentials);
    }
    if same_origin(&url, &up.base) {
        // Parsing resolved `..` and `%2e%2e`; what is left must still be inside the cache,
        // with no segment hiding a separator (`%2F`, `%5C`) a server might decode and follow.
        let hides_separator = url
            .path_segments()
            .into_iter()
            .flatten()
            .any(|s| !s.is_empty() && check_segment(s).is_err());
        if !under_base(&url, &up.base) || hides_separator || url.query().is_some() {
            return Err(UrlError::OutsideCache);
        }
        return Ok(url);
    }
    if up.nar_hosts.iter().any(|h| h.allows(&url)) {
        return Ok(url);
    }
    Err(UrlError::OtherHost)
}

/// `base` with `segments` appended (each percent-encoded as a segment); `[""]` adds the
/// trailing slash of a directory.
fn with_segments<'a>(
    base: &Url,
    segments: impl IntoIterator<Item = &'a str>,
) -> Result<Url, UrlError> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| UrlError::NotABase)?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

fn check_relative_path(path: &str) -> Result<(), UrlError> {
    // RFC 3986 `pchar` and '/': a narinfo URL with anything else is not a plain path.
    let pchar = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%/".contains(c);
    if path.is_empty() || path.starts_with('/') || !path.chars().all(pchar) {
        return Err(UrlError::Malformed);
    }
    // A first segment with ':' would parse as a scheme (`file:...`).
    if path.split('/').next().is_some_and(|s| s.contains(':')) {
        return Err(UrlError::Malformed);
    }
    path.split('/').try_for_each(check_segment)
}

/// One path segment, decoded, must be a plain name.
fn check_segment(segment: &str) -> Result<(), UrlError> {
    let decoded = percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| UrlError::Malformed)?;
    if decoded.is_empty()
        || decoded == "."
        || decoded == ".."
        || decoded.contains(['/', '\\'])
        || decoded.chars().any(char::is_control)
    {
        return Err(UrlError::OutsideCache);
    }
    Ok(())
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

fn has_credentials(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// Whether `url`'s path lies under `base`'s path, segment by segment (`/cache` does not
/// contain `/cachefoo`).
fn under_base(url: &Url, base: &Url) -> bool {
    let segments = |u: &Url| -> Vec<String> {
        u.path_segments()
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (path, prefix) = (segments(url), segments(base));
    path.len() > prefix.len() && path.starts_with(&prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NarHost;

    fn upstream(base: &str, nar_hosts: &[(&str, Option<u16>)]) -> UpstreamConfig {
        UpstreamConfig {
            url: base.to_owned(),
            base: Url::parse(base).unwrap(),
            priority: 10,
            bearer_token: Some("secret".into()),
            nar_hosts: nar_hosts
                .iter()
                .map(|(h, p)| NarHost {
                    host: (*h).to_owned(),
                    port: *p,
                })
                .collect(),
        }
    }

    const HASH: &str = "syd87l2rxw8cbsxmxl853h0r6pdwhwjr";

    #[test]
    fn narinfo_and_log_urls_append_one_segment_under_the_base_path() {
        let base = Url::parse("http://up.example/private").unwrap();
        let hash: HashPart = HASH.parse().unwrap();
        assert_eq!(
            narinfo_url(&base, &hash).unwrap().as_str(),
            format!("http://up.example/private/{HASH}.narinfo")
        );
        let root = Url::parse("http://up.example").unwrap();
        assert_eq!(
            narinfo_url(&root, &hash).unwrap().as_str(),
            format!("http://up.example/{HASH}.narinfo")
        );
        // `?` and `=` are legal in store path names: one segment, never a query.
        let drv = StorePath::from_basename("/nix/store", &format!("{HASH}-a?b=c.drv")).unwrap();
        let log = log_url(&base, &drv).unwrap();
        assert_eq!(
            log.as_str(),
            format!("http://up.example/private/log/{HASH}-a%3Fb=c.drv")
        );
        assert_eq!(log.query(), None);
    }

    #[test]
    fn relative_nar_urls_stay_under_their_upstream_with_its_encoding() {
        let up = upstream("http://up.example/private", &[]);
        for (advertised, expected) in [
            ("nar/abc.nar.xz", "http://up.example/private/nar/abc.nar.xz"),
            (
                "nar/zstd/abc-gtk%2B-3.drv",
                "http://up.example/private/nar/zstd/abc-gtk%2B-3.drv",
            ),
            (
                "nar/abc+x=y.nar",
                "http://up.example/private/nar/abc+x=y.nar",
            ),
        ] {
            assert_eq!(nar_url(&up, advertised).unwrap().as_str(), expected);
        }
    }

    #[test]
    fn nar_urls_that_leave_the_cache_are_refused() {
        let up = upstream("http://up.example/private", &[]);
        for bad in [
            "",
            "/etc/passwd",
            "/private/nar/x",
            "nar/../../x",
            "nar/%2e%2e/%2E%2E/x",
            "..",
            "nar/..%2f..%2fx",
            "nar/..%5C..%5Cx",
            "nar\\..\\..\\x",
            "nar/x?y=1",
            "nar/x#y",
            "nar//x",
            "nar/a b",
            "nar/%00",
            "file:///etc/passwd",
            "file:x",
            "//other.example/x",
            "http://up.example/elsewhere/x",
            "http://up.example/privatefoo/x",
            "http://up.example/private/../x",
            "http://up.example/private/nar/x?y=1",
            "http://up.example:8080/private/nar/x",
            "https://up.example/private/nar/x",
            "http://user:pw@up.example/private/nar/x",
            "http://up.example/private/nar/..%2F..%2Fx",
            "http://127.0.0.1/private/nar/x",
            "http://cdn.example/nar/x",
        ] {
            assert!(nar_url(&up, bad).is_err(), "{bad:?} was accepted");
        }
        assert!(nar_url(&up, "http://up.example/private/nar/x").is_ok());
    }

    #[test]
    fn other_hosts_serve_nars_only_when_listed_with_their_port() {
        let up = upstream(
            "https://up.example",
            &[("cdn.example", None), ("127.0.0.1", Some(8081))],
        );
        for ok in [
            "https://cdn.example/nar/x.nar.xz",
            "https://CDN.example/anywhere/x?sig=1",
            "http://cdn.example/x",
            "http://127.0.0.1:8081/x",
        ] {
            assert!(nar_url(&up, ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://cdn.example:8443/x",
            "https://evil.cdn.example/x",
            "https://cdn.example.evil/x",
            "http://127.0.0.1/x",
            "http://127.0.0.1:8082/x",
            "https://u@cdn.example/x",
        ] {
            assert!(nar_url(&up, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_token_goes_only_to_the_upstreams_own_origin() {
        let up = upstream("http://up.example:8080/private", &[("cdn.example", None)]);
        let at = |u: &str| credentials_for(&up, &Url::parse(u).unwrap());
        assert_eq!(at("http://up.example:8080/private/x"), Some("secret"));
        assert_eq!(at("http://up.example:8080/elsewhere"), Some("secret"));
        assert_eq!(at("http://cdn.example/x"), None);
        assert_eq!(at("http://up.example/private/x"), None);
        assert_eq!(at("https://up.example:8080/private/x"), None);
    }

    #[test]
    fn redirects_go_only_to_the_origin_or_nar_hosts() {
        let up = upstream("http://up.example/private", &[("cdn.example", None)]);
        let may = |u: &str| may_redirect(&up, &Url::parse(u).unwrap());
        assert!(may("http://up.example/elsewhere/x").is_ok());
        assert!(may("https://cdn.example/x").is_ok());
        assert_eq!(may("http://127.0.0.1/x"), Err(UrlError::OtherHost));
        assert_eq!(may("http://evil.example/x"), Err(UrlError::OtherHost));
        assert_eq!(may("http://u:p@up.example/x"), Err(UrlError::Credentials));
        assert_eq!(may("file:///etc/passwd"), Err(UrlError::Malformed));
    }
}
