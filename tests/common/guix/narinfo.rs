//! Narinfos read the way Guix's `read-narinfo` reads them: `Key: value` lines in order, URL
//! groups paired as `narinfo-maker` pairs them. Flavor-neutral enough to read a Nix narinfo's
//! fields too.

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
