//! Where verified NARs live: one interface, two backends (DESIGN §6, §11).
//!
//! - [`NarStorage::Local`]: the content-addressed directory ([`NarStore`]), today's default;
//!   a fetch renames its verified temp file into it.
//! - [`NarStorage::Objects`]: an S3-compatible bucket ([`ObjectNars`]); fetches still write
//!   and verify in a local spool (so clients can tail the bytes as they arrive), and the
//!   verified file is uploaded, then deleted.
//!
//! Either way a NAR becomes visible only after its hash and size were verified.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use quorate_core::protocol::nar_hash::NarKey;

use super::objects::ObjectNars;
use super::NarStore;

/// The verified bytes of a stored NAR, as they stream.
pub struct NarRead {
    /// The bytes of `range`.
    pub stream: BoxStream<'static, std::io::Result<Bytes>>,
    /// The whole NAR's size.
    pub size: u64,
    /// Which bytes `stream` holds: all (`0..size`) unless a range was asked for.
    pub range: Range<u64>,
}

/// A `Range: bytes=...` request for one range (RFC 9110 §14.1.2), before the size is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last` (inclusive), or `first-` when `last` is `None`.
    From {
        /// The first byte's offset.
        first: u64,
        /// The last byte's offset, inclusive.
        last: Option<u64>,
    },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses one `Range` header value; `None` for anything but a single byte range
    /// (several ranges, other units, malformed), which a server may ignore (and serve all).
    pub fn parse(header: &str) -> Option<ByteRange> {
        let spec = header.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (first, last) = spec.split_once('-')?;
        let number = |s: &str| -> Option<u64> {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        if first.trim().is_empty() {
            return number(last).map(ByteRange::Suffix);
        }
        let first = number(first)?;
        let last = if last.trim().is_empty() {
            None
        } else {
            Some(number(last)?)
        };
        if last.is_some_and(|l| l < first) {
            return None;
        }
        Some(ByteRange::From { first, last })
    }

    /// The bytes this range selects of a `size`-byte file, or `None` if it selects none
    /// (416).
    pub fn within(self, size: u64) -> Option<Range<u64>> {
        match self {
            ByteRange::From { first, .. } if first >= size => None,
            ByteRange::From { first, last } => {
                Some(first..last.map_or(size, |l| l.saturating_add(1).min(size)))
            }
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => Some(size.saturating_sub(n)..size),
        }
    }
}

/// What opening a stored NAR found.
pub enum Opened {
    /// Not stored.
    Missing,
    /// Stored, but the range asked for selects none of its `size` bytes.
    Unsatisfiable {
        /// The NAR's size.
        size: u64,
    },
    /// Its bytes.
    Read(NarRead),
}

/// Where verified NARs live.
#[derive(Clone)]
pub enum NarStorage {
    /// A local content-addressed directory, which is also the spool of fetches.
    Local(Arc<NarStore>),
    /// A bucket; `spool` holds the fetches in progress.
    Objects {
        /// Temp files of fetches in progress (its `nar/` stays empty).
        spool: Arc<NarStore>,
        /// The bucket.
        objects: Arc<ObjectNars>,
    },
}

impl NarStorage {
    /// Where fetches write and verify their bytes.
    pub fn spool(&self) -> &Arc<NarStore> {
        match self {
            NarStorage::Local(store) => store,
            NarStorage::Objects { spool, .. } => spool,
        }
    }

    /// The bucket, if NARs live in one.
    pub fn objects(&self) -> Option<&Arc<ObjectNars>> {
        match self {
            NarStorage::Local(_) => None,
            NarStorage::Objects { objects, .. } => Some(objects),
        }
    }

    /// NAR `key`'s verified bytes (all, or `range`), if stored.
    pub async fn open(&self, key: &NarKey, range: Option<ByteRange>) -> std::io::Result<Opened> {
        match self {
            NarStorage::Local(store) => {
                let Some((file, size)) = store.open_nar(key).await? else {
                    return Ok(Opened::Missing);
                };
                let range = match range.map(|r| r.within(size)) {
                    None => 0..size,
                    Some(Some(r)) => r,
                    Some(None) => return Ok(Opened::Unsatisfiable { size }),
                };
                // Positional reads of large, budgeted chunks (`nar::read`).
                let stream = super::read::CLIENTS.file_stream(file, range.clone());
                Ok(Opened::Read(NarRead {
                    stream,
                    size,
                    range,
                }))
            }
            NarStorage::Objects { objects, .. } => {
                let io = std::io::Error::other;
                let bounded = match range {
                    None => None,
                    // A range needs the size first: one HEAD.
                    Some(r) => match objects.size(key).await.map_err(io)? {
                        None => return Ok(Opened::Missing),
                        Some(size) => match r.within(size) {
                            Some(r) => Some(r),
                            None => return Ok(Opened::Unsatisfiable { size }),
                        },
                    },
                };
                match objects.open(key, bounded.clone()).await.map_err(io)? {
                    None => Ok(Opened::Missing),
                    Some((stream, size)) => Ok(Opened::Read(NarRead {
                        stream,
                        size,
                        range: bounded.unwrap_or(0..size),
                    })),
                }
            }
        }
    }

    /// NAR `key`'s size, if stored.
    pub async fn size_of(&self, key: &NarKey) -> std::io::Result<Option<u64>> {
        match self {
            NarStorage::Local(store) => Ok(store.lookup(key).await.map(|(_, size)| size)),
            NarStorage::Objects { objects, .. } => {
                objects.size(key).await.map_err(std::io::Error::other)
            }
        }
    }

    /// Makes the verified, fsynced NAR in `temp` visible as `key`. `true` if `temp` was
    /// moved (renamed into the directory); `false` if it was copied (uploaded) and is the
    /// caller's to delete.
    pub async fn commit(&self, key: &NarKey, temp: &Path, size: u64) -> std::io::Result<bool> {
        match self {
            NarStorage::Local(store) => {
                let (store, key, temp) = (Arc::clone(store), *key, temp.to_owned());
                tokio::task::spawn_blocking(move || store.commit_blocking(&key, &temp, size))
                    .await
                    .map_err(std::io::Error::other)??;
                Ok(true)
            }
            NarStorage::Objects { objects, .. } => {
                objects
                    .upload(key, temp, size)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok(false)
            }
        }
    }

    /// Whether verified NARs may already be in the local directory when a fetch starts
    /// (checked again there, closing the race with the caller's lookup).
    pub fn local(&self) -> Option<&Arc<NarStore>> {
        match self {
            NarStorage::Local(store) => Some(store),
            NarStorage::Objects { .. } => None,
        }
    }

    /// Where NAR `key` is stored, as the database records it: its path in the local
    /// directory, or its object's URL.
    pub fn location(&self, key: &NarKey) -> String {
        match self {
            NarStorage::Local(_) => NarStore::location(key),
            NarStorage::Objects { objects, .. } => objects.location(key),
        }
    }

    /// Bytes of NARs in the local directory (the bucket's size is the database's to say).
    pub fn local_size(&self) -> u64 {
        self.local().map_or(0, |s| s.total_size())
    }
}

#[cfg(test)]
mod tests {
    use super::ByteRange;

    #[test]
    fn byte_ranges_parse_one_range_and_select_within_the_size() {
        let r = |s| ByteRange::parse(s);
        assert_eq!(r("bytes=0-99").unwrap().within(1000), Some(0..100));
        assert_eq!(r("bytes=900-").unwrap().within(1000), Some(900..1000));
        assert_eq!(r("bytes=900-5000").unwrap().within(1000), Some(900..1000));
        assert_eq!(r("bytes=-100").unwrap().within(1000), Some(900..1000));
        assert_eq!(r("bytes=-5000").unwrap().within(1000), Some(0..1000));
        assert_eq!(r("bytes=1000-").unwrap().within(1000), None);
        assert_eq!(r("bytes=-0").unwrap().within(1000), None);
        for ignored in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "0-1",
        ] {
            assert_eq!(r(ignored), None, "{ignored}");
        }
    }
}
