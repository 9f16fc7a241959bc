//! The local NAR store: a content-addressed directory, bounded in size, least recently
//! used out first (DESIGN §6).
//!
//! Layout under `root` (keys are the NAR's SHA-256 in nix32, as in `NarHash: sha256:<key>`):
//!
//! ```text
//! root/nar/0q/0qhasy0w9w9mfv0vacgzymxl4nww8cslyza5x2ci42v7i2b13lyl.nar   verified NARs
//! root/nar/0q/0qhasy0w9w9mfv0vacgzymxl4nww8cslyza5x2ci42v7i2b13lyl.<filehash>.nar.zst
//!                                         its zstd copy (`nar_compression = "zstd"`)
//! root/tmp/0qhasy0w9w9mfv0vacgzymxl4nww8cslyza5x2ci42v7i2b13lyl.3.tmp   fetches in progress
//! ```
//!
//! A file under `nar/` is only ever created by renaming a fully verified, fsynced temp file
//! (see `fetch`, and `encode` for the zstd copy, made from the stored NAR), so its name is the
//! truth about its content: a `.nar.zst` names its NAR and the SHA-256 of its own bytes (the
//! narinfo's FileHash), so a restart knows FileHash and FileSize without reading it. A zstd
//! copy lives and dies with its NAR: it counts towards the bound with it, is evicted with
//! it, and one found without its NAR at open is deleted. The recency order lives in
//! memory and is mirrored into file mtimes on every use, so that it survives a restart:
//! opening the store rebuilds it from a directory scan sorted by mtime.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use quorate_core::flavor::CompressedNar;
use quorate_core::protocol::nar_hash::NarKey;
use tokio::sync::Notify;

/// The size-bounded, content-addressed directory of verified NARs.
pub struct NarStore {
    /// The store's directory (`<state_dir>/nars` or wherever the caller keeps it).
    root: PathBuf,
    /// `max_cache_size`; `None` keeps everything.
    max_size: Option<u64>,
    /// Which NARs are here, how big, and in which order they were last used.
    /// std Mutex, not tokio's: it is never held across an `.await` or a file operation.
    index: Mutex<LruIndex>,
    /// Makes temp file names unique when two fetches of one key overlap (e.g. one with a
    /// lying NarSize next to an honest one).
    next_temp: AtomicU64,
    /// Keys evicted since the owner last asked ([`NarStore::take_evicted`]), so the database's
    /// NAR objects can follow the directory. Bounded by the number of NARs the store held.
    evicted: Mutex<Vec<NarKey>>,
    /// Woken after every eviction, so the owner's recorder task need not poll.
    evictions: Notify,
    /// NARs whose zstd copy is being made, so that one NAR is compressed once at a time.
    /// std Mutex: held for a set operation only.
    compressing: Mutex<std::collections::HashSet<NarKey>>,
}

impl NarStore {
    /// Opens (creating if needed) the store under `root`: clears leftover temp files from
    /// an earlier run, indexes the NARs already present, oldest mtime first, and evicts
    /// down to `max_size` if that shrank since. Blocking; call it at start-up.
    pub fn open(root: PathBuf, max_size: Option<u64>) -> io::Result<NarStore> {
        let tmp = root.join("tmp");
        // Temp files are fetches that died with the previous process: never valid NARs.
        match fs::remove_dir_all(&tmp) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        fs::create_dir_all(&tmp)?;
        let nar_dir = root.join("nar");
        fs::create_dir_all(&nar_dir)?;

        let (mut found, copies) = scan_nars(&nar_dir)?;
        found.sort_by_key(|nar| nar.modified);
        let mut index = LruIndex::default();
        for nar in found {
            index.insert(nar.key, nar.size);
        }
        for (key, copy, path) in copies {
            if !index.attach(&key, copy) {
                // Its NAR is gone (evicted while the process died): the copy goes too.
                tracing::info!(path = %path.display(), "deleting zstd copy without its NAR");
                fs::remove_file(&path)?;
            }
        }
        let store = NarStore {
            root,
            max_size,
            index: Mutex::new(index),
            next_temp: AtomicU64::new(0),
            evicted: Mutex::new(Vec::new()),
            evictions: Notify::new(),
            compressing: Mutex::new(Default::default()),
        };
        store.evict_blocking(None);
        Ok(store)
    }

    /// Resolves once NARs were evicted since the last [`NarStore::take_evicted`] (at once if
    /// that happened before this call: the wake-up is kept until someone waits).
    pub async fn evicted(&self) {
        self.evictions.notified().await
    }

    /// Keys of the NARs evicted since the last call (the caller forgets them elsewhere).
    pub fn take_evicted(&self) -> Vec<NarKey> {
        self.evicted
            .lock()
            .map(|mut log| std::mem::take(&mut *log))
            .unwrap_or_default()
    }

    /// Where NAR `key` lives relative to the store's root, as the database records it.
    pub fn location(key: &NarKey) -> String {
        let key = key.to_string();
        format!("nar/{}/{key}.nar", &key[..2])
    }

    /// Every NAR the store holds, with its size.
    pub fn entries(&self) -> Vec<(NarKey, u64)> {
        self.index()
            .entries
            .iter()
            .map(|(key, entry)| (*key, entry.size))
            .collect()
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Total bytes of the NARs currently in the store.
    pub fn total_size(&self) -> u64 {
        self.index().total
    }

    /// Where the zstd copy of NAR `key` lives relative to the store's root.
    pub fn compressed_location(key: &NarKey, copy: &CompressedNar) -> String {
        let key = key.to_string();
        format!("nar/{}/{key}.{}.nar.zst", &key[..2], copy.file_hash.key())
    }

    /// The zstd copy of NAR `key`, if the store holds both.
    pub fn compressed(&self, key: &NarKey) -> Option<CompressedNar> {
        self.index().entries.get(key)?.compressed
    }

    /// Whether the store holds NAR `key` but no zstd copy of it.
    pub fn lacks_compressed(&self, key: &NarKey) -> bool {
        self.index()
            .entries
            .get(key)
            .is_some_and(|e| e.compressed.is_none())
    }

    /// Opens the zstd copy of NAR `key` and marks the NAR most recently used. `Ok(None)`
    /// when the store holds no copy.
    pub async fn open_compressed(
        &self,
        key: &NarKey,
    ) -> io::Result<Option<(fs::File, CompressedNar)>> {
        let Some(copy) = self.compressed(key) else {
            return Ok(None);
        };
        self.index().touch(key);
        let path = self.root.join(NarStore::compressed_location(key, &copy));
        let opened = tokio::task::spawn_blocking(move || open_and_touch(&path))
            .await
            .map_err(io::Error::other)??;
        Ok(match opened {
            Some((file, _)) => Some((file, copy)),
            None => {
                self.index().detach(key);
                None
            }
        })
    }

    /// Claims the making of NAR `key`'s zstd copy: `None` when the store does not hold the
    /// NAR, already holds a copy, or someone is making it (so a hot narinfo does not start a
    /// thread per request). The claim ends when the returned guard is dropped.
    pub fn claim_compression(self: &Arc<Self>, key: &NarKey) -> Option<CompressionClaim> {
        if !self.lacks_compressed(key) {
            return None;
        }
        let mut compressing = self
            .compressing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        compressing.insert(*key).then(|| CompressionClaim {
            store: Arc::clone(self),
            key: *key,
        })
    }

    /// Moves the fsynced temp file of NAR `key`'s zstd copy into place beside the NAR and
    /// counts it, then evicts as [`NarStore::commit_blocking`] does. `false` (the temp file
    /// deleted) when the NAR was evicted meanwhile.
    pub(crate) fn commit_compressed_blocking(
        &self,
        key: &NarKey,
        temp: &Path,
        copy: CompressedNar,
    ) -> io::Result<bool> {
        let target = self.root.join(NarStore::compressed_location(key, &copy));
        let dir = target.parent().unwrap_or(&self.root);
        fs::rename(temp, &target)?;
        fs::File::open(dir)?.sync_all()?;
        if !self.index().attach(key, copy) {
            fs::remove_file(&target)?;
            return Ok(false);
        }
        self.evict_blocking(Some(key));
        Ok(true)
    }

    /// Where the NAR `key` lives and its size, if the store holds it. Does not count as a
    /// use: serving it does (see [`NarStore::open_nar`]).
    pub async fn lookup(&self, key: &NarKey) -> Option<(PathBuf, u64)> {
        let size = self.index().entries.get(key)?.size;
        Some((self.nar_path(key), size))
    }

    /// Opens the NAR `key` for reading and marks it most recently used. `Ok(None)` when the
    /// store does not hold it.
    pub async fn open_nar(&self, key: &NarKey) -> io::Result<Option<(fs::File, u64)>> {
        if !self.index().touch(key) {
            return Ok(None);
        }
        let path = self.nar_path(key);
        let opened = tokio::task::spawn_blocking(move || open_and_touch(&path))
            .await
            .map_err(io::Error::other)??;
        Ok(match opened {
            Some(found) => Some(found),
            None => {
                self.index().remove(key);
                None
            }
        })
    }

    /// [`NarStore::open_nar`] for a blocking thread: the fetch that finds its NAR already
    /// committed uses it.
    pub(crate) fn open_nar_blocking(&self, key: &NarKey) -> io::Result<Option<(fs::File, u64)>> {
        if !self.index().touch(key) {
            return Ok(None);
        }
        let opened = open_and_touch(&self.nar_path(key))?;
        if opened.is_none() {
            self.index().remove(key);
        }
        Ok(opened)
    }

    /// Creates a fresh temp file for a fetch of `key`, readable and writable.
    pub(crate) fn create_temp(&self, key: &NarKey) -> io::Result<(PathBuf, fs::File)> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let path = self.root.join("tmp").join(format!("{key}.{n}.tmp"));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
    }

    /// Moves the verified, fsynced temp file into place as NAR `key`, records it as most
    /// recently used, and evicts least recently used NARs until the store fits its bound
    /// again (never `key` itself, even when it alone exceeds the bound).
    pub(crate) fn commit_blocking(&self, key: &NarKey, temp: &Path, size: u64) -> io::Result<()> {
        let target = self.nar_path(key);
        let dir = target.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)?;
        fs::rename(temp, &target)?;
        // The rename is only durable once its directory entry is.
        fs::File::open(dir)?.sync_all()?;
        self.index().insert(*key, size);
        self.evict_blocking(Some(key));
        Ok(())
    }

    /// Deletes least recently used NARs until the total fits `max_size`, sparing `keep`.
    fn evict_blocking(&self, keep: Option<&NarKey>) {
        let Some(max_size) = self.max_size else {
            return;
        };
        let evicted = self.index().evict_until(max_size, keep);
        if evicted.is_empty() {
            return;
        }
        if let Ok(mut log) = self.evicted.lock() {
            log.extend(evicted.iter().map(|(key, _)| *key));
        }
        self.evictions.notify_one();
        for (key, copy) in evicted {
            // A client still streaming the file keeps its open descriptor; unlink is safe.
            let copy = copy.map(|c| self.root.join(NarStore::compressed_location(&key, &c)));
            for path in std::iter::once(self.nar_path(&key)).chain(copy) {
                match fs::remove_file(&path) {
                    Ok(()) => tracing::debug!(%key, "evicted NAR"),
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => tracing::warn!(%key, %err, "cannot delete evicted NAR"),
                }
            }
        }
    }

    /// `root/nar/<first two key characters>/<key>.nar`.
    fn nar_path(&self, key: &NarKey) -> PathBuf {
        self.root.join(NarStore::location(key))
    }

    fn index(&self) -> MutexGuard<'_, LruIndex> {
        // Every update leaves the index consistent before it can panic, so a poisoned
        // lock still guards a usable index.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Opens a committed NAR and stamps its mtime, the on-disk copy of its recency.
/// `Ok(None)` if it was deleted behind the index's back, so that it gets fetched again.
fn open_and_touch(path: &Path) -> io::Result<Option<(fs::File, u64)>> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let size = file.metadata()?.len();
    // Best effort: a stale mtime only makes the LRU order after a restart less exact.
    if let Err(err) = file.set_modified(SystemTime::now()) {
        tracing::debug!(path = %path.display(), %err, "cannot refresh NAR mtime");
    }
    Ok(Some((file, size)))
}

/// The claim on making one NAR's zstd copy ([`NarStore::claim_compression`]).
pub struct CompressionClaim {
    /// The store the copy goes into.
    pub(crate) store: Arc<NarStore>,
    /// The NAR to compress.
    pub(crate) key: NarKey,
}

impl Drop for CompressionClaim {
    fn drop(&mut self) {
        let mut compressing = self
            .store
            .compressing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        compressing.remove(&self.key);
    }
}

/// One NAR found while scanning the store at open.
struct ScannedNar {
    key: NarKey,
    size: u64,
    modified: SystemTime,
}

/// A zstd copy found while scanning: its NAR, what its name says, where it is.
type ScannedCopy = (NarKey, CompressedNar, PathBuf);

/// Reads `<key>.<filehash>.nar.zst` (both nix32 SHA-256s).
fn compressed_name(name: &str) -> Option<(NarKey, NarKey)> {
    let (key, file_hash) = name.strip_suffix(".nar.zst")?.split_once('.')?;
    Some((key.parse().ok()?, file_hash.parse().ok()?))
}

/// Finds `nar/<xx>/<key>.nar` files and their `<key>.<filehash>.nar.zst` copies; anything
/// else is left alone and not counted.
fn scan_nars(nar_dir: &Path) -> io::Result<(Vec<ScannedNar>, Vec<ScannedCopy>)> {
    let mut found = Vec::new();
    let mut copies = Vec::new();
    for fanout in fs::read_dir(nar_dir)? {
        let fanout = fanout?;
        if !fanout.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(fanout.path())? {
            let entry = entry?;
            let name = entry.file_name();
            if let Some((key, file_hash)) = name.to_str().and_then(compressed_name) {
                let metadata = entry.metadata()?;
                let key_text = key.to_string();
                if metadata.is_file() && fanout.file_name().to_str() == key_text.get(..2) {
                    let copy = CompressedNar {
                        file_hash: file_hash.hash(),
                        file_size: metadata.len(),
                    };
                    copies.push((key, copy, entry.path()));
                    continue;
                }
            }
            let name = name.to_str().and_then(|n| n.strip_suffix(".nar"));
            let Some((name, key)) = name.and_then(|n| Some((n, n.parse::<NarKey>().ok()?))) else {
                tracing::warn!(path = %entry.path().display(), "ignoring stray file in NAR store");
                continue;
            };
            let metadata = entry.metadata()?;
            if !metadata.is_file() || fanout.file_name().to_str() != name.get(..2) {
                tracing::warn!(path = %entry.path().display(), "ignoring misplaced NAR");
                continue;
            }
            found.push(ScannedNar {
                key,
                size: metadata.len(),
                modified: metadata.modified()?,
            });
        }
    }
    Ok((found, copies))
}

/// Recency index: O(log n) touch, insert and pop-oldest without an extra crate.
#[derive(Default)]
struct LruIndex {
    /// Key → size and the tick of its last use.
    entries: HashMap<NarKey, LruEntry>,
    /// Tick of last use → key; the first entry is the least recently used NAR.
    by_use: BTreeMap<u64, NarKey>,
    /// Logical clock; every use takes the next tick, so ticks are unique.
    clock: u64,
    /// Sum of `entries` sizes.
    total: u64,
}

struct LruEntry {
    size: u64,
    last_use: u64,
    /// The NAR's zstd copy, when made; its size counts in `total` too.
    compressed: Option<CompressedNar>,
}

impl LruIndex {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Records (or replaces) `key` as the most recently used NAR. A zstd copy already
    /// recorded stays: the NAR's bytes are the same, its name says so.
    fn insert(&mut self, key: NarKey, size: u64) {
        let compressed = self.entries.get(&key).and_then(|e| e.compressed);
        self.remove(&key);
        let last_use = self.tick();
        self.by_use.insert(last_use, key);
        let entry = LruEntry {
            size,
            last_use,
            compressed,
        };
        self.entries.insert(key, entry);
        self.total += size + compressed.map_or(0, |c| c.file_size);
    }

    /// Records `copy` as NAR `key`'s zstd copy; false if the NAR is not here.
    fn attach(&mut self, key: &NarKey, copy: CompressedNar) -> bool {
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        let old = entry.compressed.replace(copy).map_or(0, |c| c.file_size);
        self.total = self.total - old + copy.file_size;
        true
    }

    /// Forgets NAR `key`'s zstd copy (its file vanished).
    fn detach(&mut self, key: &NarKey) {
        if let Some(copy) = self.entries.get_mut(key).and_then(|e| e.compressed.take()) {
            self.total -= copy.file_size;
        }
    }

    /// Marks `key` most recently used; false if it is not here.
    fn touch(&mut self, key: &NarKey) -> bool {
        let now = self.tick();
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        self.by_use.remove(&entry.last_use);
        entry.last_use = now;
        self.by_use.insert(now, *key);
        true
    }

    fn remove(&mut self, key: &NarKey) -> Option<u64> {
        let entry = self.entries.remove(key)?;
        self.by_use.remove(&entry.last_use);
        self.total -= entry.size + entry.compressed.map_or(0, |c| c.file_size);
        Some(entry.size)
    }

    /// Drops least recently used entries (sparing `keep`) until `total <= max_size`, and
    /// returns their keys (and zstd copies) so the caller can delete the files outside the
    /// lock.
    fn evict_until(
        &mut self,
        max_size: u64,
        keep: Option<&NarKey>,
    ) -> Vec<(NarKey, Option<CompressedNar>)> {
        let mut evicted = Vec::new();
        let mut spared = None;
        while self.total > max_size {
            let Some((_, key)) = self.by_use.pop_first() else {
                break;
            };
            if Some(&key) == keep {
                spared = Some(key);
                continue;
            }
            let copy = self.entries.remove(&key).and_then(|entry| {
                self.total -= entry.size + entry.compressed.map_or(0, |c| c.file_size);
                entry.compressed
            });
            evicted.push((key, copy));
        }
        if let Some(key) = spared {
            if let Some(entry) = self.entries.get(&key) {
                self.by_use.insert(entry.last_use, key);
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::time::Duration;

    fn key_of(data: &[u8]) -> NarKey {
        quorate_core::protocol::nar_hash::NarHash::from_digest(Sha256::digest(data).into()).key()
    }

    /// Puts `data` into the store through the same commit a fetch uses.
    fn commit(store: &NarStore, data: &[u8]) -> NarKey {
        let key = key_of(data);
        let (path, mut file) = store.create_temp(&key).expect("temp file");
        std::io::Write::write_all(&mut file, data).expect("write temp");
        store
            .commit_blocking(&key, &path, data.len() as u64)
            .expect("commit");
        key
    }

    fn nar_files(root: &Path) -> usize {
        scan_nars(&root.join("nar")).expect("scan").0.len()
    }

    #[tokio::test]
    async fn committed_nars_are_found_and_opened_by_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NarStore::open(dir.path().to_owned(), None).expect("open");
        let key = commit(&store, b"nix-archive-1 pretend");
        let (path, size) = store.lookup(&key).await.expect("stored");
        assert_eq!(size, 21);
        assert_eq!(
            path,
            dir.path()
                .join("nar")
                .join(&key.to_string()[..2])
                .join(format!("{key}.nar"))
        );
        let (mut file, size) = store.open_nar(&key).await.expect("io").expect("stored");
        let mut contents = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut contents).expect("read");
        assert_eq!(
            (contents.as_slice(), size),
            (&b"nix-archive-1 pretend"[..], 21)
        );
        assert!(store
            .open_nar(&key_of(b"absent"))
            .await
            .expect("io")
            .is_none());
    }

    #[tokio::test]
    async fn eviction_keeps_the_total_under_the_bound_and_drops_the_least_recently_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NarStore::open(dir.path().to_owned(), Some(3000)).expect("open");
        let a = commit(&store, &[b'a'; 1000]);
        let b = commit(&store, &[b'b'; 1000]);
        let c = commit(&store, &[b'c'; 1000]);
        assert_eq!(store.total_size(), 3000);
        // Serving a makes b the least recently used.
        assert!(store.open_nar(&a).await.expect("io").is_some());
        let d = commit(&store, &[b'd'; 1000]);
        assert_eq!(store.total_size(), 3000);
        assert!(store.lookup(&b).await.is_none());
        assert!(!dir
            .path()
            .join("nar")
            .join(&b.to_string()[..2])
            .join(format!("{b}.nar"))
            .exists());
        for kept in [&a, &c, &d] {
            assert!(store.lookup(kept).await.is_some());
        }
        // A bigger NAR pushes out as many as needed, oldest first: c, then a.
        let e = commit(&store, &[b'e'; 1500]);
        assert!(store.total_size() <= 3000);
        assert!(store.lookup(&c).await.is_none());
        assert!(store.lookup(&a).await.is_none());
        assert!(store.lookup(&d).await.is_some() && store.lookup(&e).await.is_some());
        assert_eq!(nar_files(dir.path()), 2);
        // The owner learns which NARs went, once, to forget them in the database.
        assert_eq!(store.take_evicted(), vec![b, c, a]);
        assert!(store.take_evicted().is_empty());
    }

    #[tokio::test]
    async fn a_nar_larger_than_the_bound_evicts_the_rest_but_stays_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NarStore::open(dir.path().to_owned(), Some(1000)).expect("open");
        let small = commit(&store, &[1; 600]);
        let huge = commit(&store, &[2; 5000]);
        assert!(store.lookup(&small).await.is_none());
        assert_eq!(store.lookup(&huge).await.map(|(_, size)| size), Some(5000));
        assert_eq!(store.total_size(), 5000);
        // The next commit may evict it like any other.
        let next = commit(&store, &[3; 10]);
        assert!(store.lookup(&huge).await.is_none());
        assert_eq!(store.total_size(), 10);
        assert!(store.lookup(&next).await.is_some());
    }

    #[tokio::test]
    async fn reopening_indexes_stored_nars_by_mtime_and_clears_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (old, new) = {
            let store = NarStore::open(dir.path().to_owned(), None).expect("open");
            let old = commit(&store, &[b'o'; 100]);
            let new = commit(&store, &[b'n'; 100]);
            // Fake an LRU history older than "now": the restart must follow the mtimes.
            let now = SystemTime::now();
            for (key, age) in [(&new, 100), (&old, 50)] {
                let path = store.nar_path(key);
                let file = fs::File::options().write(true).open(path).expect("nar");
                file.set_modified(now - Duration::from_secs(age))
                    .expect("mtime");
            }
            let (leftover, _) = store.create_temp(&old).expect("temp");
            assert!(leftover.exists());
            fs::write(dir.path().join("nar").join("stray.txt"), b"x").expect("stray");
            (old, new)
        };
        let store = NarStore::open(dir.path().to_owned(), None).expect("reopen");
        assert_eq!(store.total_size(), 200);
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
        // Shrinking the bound at open evicts the NAR with the oldest mtime.
        drop(store);
        let store = NarStore::open(dir.path().to_owned(), Some(150)).expect("reopen");
        assert!(store.lookup(&new).await.is_none());
        assert!(store.lookup(&old).await.is_some());
        assert_eq!(store.total_size(), 100);
    }

    #[tokio::test]
    async fn a_nar_deleted_behind_the_store_is_forgotten_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NarStore::open(dir.path().to_owned(), None).expect("open");
        let key = commit(&store, b"gone soon");
        fs::remove_file(store.nar_path(&key)).expect("rm");
        assert!(store.open_nar(&key).await.expect("io").is_none());
        assert!(store.lookup(&key).await.is_none());
        assert_eq!(store.total_size(), 0);
    }
}
