//! The local NAR store: a content-addressed directory, bounded in size, least recently
//! used out first (DESIGN §6).
//!
//! Layout under `root` (keys are the NAR's SHA-256 in nix32, as in `NarHash: sha256:<key>`):
//!
//! ```text
//! root/nar/0q/0qhasy0w9w9mfv0vacgzymxl4nww8cslyza5x2ci42v7i2b13lyl.nar   verified NARs
//! root/tmp/0qhasy0w9w9mfv0vacgzymxl4nww8cslyza5x2ci42v7i2b13lyl.3.tmp   fetches in progress
//! ```
//!
//! A file under `nar/` is only ever created by renaming a fully verified, fsynced temp file
//! (see `fetch`), so its name is the truth about its content. The recency order lives in
//! memory and is mirrored into file mtimes on every use, so that it survives a restart:
//! opening the store rebuilds it from a directory scan sorted by mtime.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::NarError;

/// nix32 digits, in value order; note there is no `e`, `o`, `t` or `u`.
const NIX32_ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of a SHA-256 in nix32: ceil(256 / 5).
const KEY_LEN: usize = 52;

/// The store key of a NAR: its SHA-256 in nix32, the form `NarHash: sha256:…` uses.
pub fn key_for_hash(hash: &[u8; 32]) -> String {
    quorate_core::protocol::nix32::encode(hash)
}

/// Checks that `key` is the nix32 form of some SHA-256: exactly 52 nix32 digits, the first
/// being `0` or `1` (the top group holds a single bit). Keys become file names, so this is
/// also what keeps `/`, `..` and friends out of the store.
pub fn validate_key(key: &str) -> Result<(), NarError> {
    let bytes = key.as_bytes();
    let well_formed = bytes.len() == KEY_LEN
        && matches!(bytes[0], b'0' | b'1')
        && bytes.iter().all(|b| NIX32_ALPHABET.contains(b));
    if well_formed {
        Ok(())
    } else {
        Err(NarError::InvalidKey(key.to_owned()))
    }
}

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
    evicted: Mutex<Vec<String>>,
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

        let mut found = scan_nars(&nar_dir)?;
        found.sort_by_key(|nar| nar.modified);
        let mut index = LruIndex::default();
        for nar in found {
            index.insert(nar.key, nar.size);
        }
        let store = NarStore {
            root,
            max_size,
            index: Mutex::new(index),
            next_temp: AtomicU64::new(0),
            evicted: Mutex::new(Vec::new()),
        };
        store.evict_blocking(None);
        Ok(store)
    }

    /// Keys of the NARs evicted since the last call (the caller forgets them elsewhere).
    pub fn take_evicted(&self) -> Vec<String> {
        self.evicted
            .lock()
            .map(|mut log| std::mem::take(&mut *log))
            .unwrap_or_default()
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Total bytes of the NARs currently in the store.
    pub fn total_size(&self) -> u64 {
        self.index().total
    }

    /// Where the NAR `key` lives and its size, if the store holds it. Does not count as a
    /// use: serving it does (see [`NarStore::open_nar`]).
    pub async fn lookup(&self, key: &str) -> Option<(PathBuf, u64)> {
        validate_key(key).ok()?;
        let size = self.index().entries.get(key)?.size;
        Some((self.nar_path(key), size))
    }

    /// Opens the NAR `key` for reading and marks it most recently used. `Ok(None)` when the
    /// store does not hold it; an `InvalidInput` error for a malformed key.
    pub async fn open_nar(&self, key: &str) -> io::Result<Option<(tokio::fs::File, u64)>> {
        validate_key(key).map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        if !self.index().touch(key) {
            return Ok(None);
        }
        let path = self.nar_path(key);
        let opened = tokio::task::spawn_blocking(move || open_and_touch(&path))
            .await
            .map_err(io::Error::other)??;
        Ok(match opened {
            Some((file, size)) => Some((tokio::fs::File::from_std(file), size)),
            None => {
                self.index().remove(key);
                None
            }
        })
    }

    /// [`NarStore::open_nar`] for a blocking thread: the fetch that finds its NAR already
    /// committed uses it.
    pub(crate) fn open_nar_blocking(&self, key: &str) -> io::Result<Option<(fs::File, u64)>> {
        if validate_key(key).is_err() || !self.index().touch(key) {
            return Ok(None);
        }
        let opened = open_and_touch(&self.nar_path(key))?;
        if opened.is_none() {
            self.index().remove(key);
        }
        Ok(opened)
    }

    /// Creates a fresh temp file for a fetch of `key`, readable and writable.
    pub(crate) fn create_temp(&self, key: &str) -> io::Result<(PathBuf, fs::File)> {
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
    pub(crate) fn commit_blocking(&self, key: &str, temp: &Path, size: u64) -> io::Result<()> {
        validate_key(key).map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let target = self.nar_path(key);
        let dir = target.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)?;
        fs::rename(temp, &target)?;
        // The rename is only durable once its directory entry is.
        fs::File::open(dir)?.sync_all()?;
        self.index().insert(key.to_owned(), size);
        self.evict_blocking(Some(key));
        Ok(())
    }

    /// Deletes least recently used NARs until the total fits `max_size`, sparing `keep`.
    fn evict_blocking(&self, keep: Option<&str>) {
        let Some(max_size) = self.max_size else {
            return;
        };
        let evicted = self.index().evict_until(max_size, keep);
        if let Ok(mut log) = self.evicted.lock() {
            log.extend(evicted.iter().cloned());
        }
        for key in evicted {
            // A client still streaming the file keeps its open descriptor; unlink is safe.
            match fs::remove_file(self.nar_path(&key)) {
                Ok(()) => tracing::debug!(key, "evicted NAR"),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => tracing::warn!(key, %err, "cannot delete evicted NAR"),
            }
        }
    }

    /// `root/nar/<first two key characters>/<key>.nar`; `key` must be valid.
    fn nar_path(&self, key: &str) -> PathBuf {
        let (fanout, _) = key.split_at(2);
        self.root
            .join("nar")
            .join(fanout)
            .join(format!("{key}.nar"))
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

/// One NAR found while scanning the store at open.
struct ScannedNar {
    key: String,
    size: u64,
    modified: SystemTime,
}

/// Finds `nar/<xx>/<key>.nar` files; anything else is left alone and not counted.
fn scan_nars(nar_dir: &Path) -> io::Result<Vec<ScannedNar>> {
    let mut found = Vec::new();
    for fanout in fs::read_dir(nar_dir)? {
        let fanout = fanout?;
        if !fanout.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(fanout.path())? {
            let entry = entry?;
            let name = entry.file_name();
            let key = name.to_str().and_then(|n| n.strip_suffix(".nar"));
            let Some(key) = key.filter(|k| validate_key(k).is_ok()) else {
                tracing::warn!(path = %entry.path().display(), "ignoring stray file in NAR store");
                continue;
            };
            let metadata = entry.metadata()?;
            if !metadata.is_file() || fanout.file_name().to_str() != key.get(..2) {
                tracing::warn!(path = %entry.path().display(), "ignoring misplaced NAR");
                continue;
            }
            found.push(ScannedNar {
                key: key.to_owned(),
                size: metadata.len(),
                modified: metadata.modified()?,
            });
        }
    }
    Ok(found)
}

/// Recency index: O(log n) touch, insert and pop-oldest without an extra crate.
#[derive(Default)]
struct LruIndex {
    /// Key → size and the tick of its last use.
    entries: HashMap<String, LruEntry>,
    /// Tick of last use → key; the first entry is the least recently used NAR.
    by_use: BTreeMap<u64, String>,
    /// Logical clock; every use takes the next tick, so ticks are unique.
    clock: u64,
    /// Sum of `entries` sizes.
    total: u64,
}

struct LruEntry {
    size: u64,
    last_use: u64,
}

impl LruIndex {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Records (or replaces) `key` as the most recently used NAR.
    fn insert(&mut self, key: String, size: u64) {
        self.remove(&key);
        let last_use = self.tick();
        self.by_use.insert(last_use, key.clone());
        self.entries.insert(key, LruEntry { size, last_use });
        self.total += size;
    }

    /// Marks `key` most recently used; false if it is not here.
    fn touch(&mut self, key: &str) -> bool {
        let now = self.tick();
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        let key = self
            .by_use
            .remove(&entry.last_use)
            .unwrap_or_else(|| key.to_owned());
        entry.last_use = now;
        self.by_use.insert(now, key);
        true
    }

    fn remove(&mut self, key: &str) -> Option<u64> {
        let entry = self.entries.remove(key)?;
        self.by_use.remove(&entry.last_use);
        self.total -= entry.size;
        Some(entry.size)
    }

    /// Drops least recently used entries (sparing `keep`) until `total <= max_size`, and
    /// returns their keys so the caller can delete the files outside the lock.
    fn evict_until(&mut self, max_size: u64, keep: Option<&str>) -> Vec<String> {
        let mut evicted = Vec::new();
        let mut spared = None;
        while self.total > max_size {
            let Some((_, key)) = self.by_use.pop_first() else {
                break;
            };
            if Some(key.as_str()) == keep {
                spared = Some(key);
                continue;
            }
            if let Some(entry) = self.entries.remove(&key) {
                self.total -= entry.size;
            }
            evicted.push(key);
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

    fn key_of(data: &[u8]) -> String {
        key_for_hash(&Sha256::digest(data).into())
    }

    /// Puts `data` into the store through the same commit a fetch uses.
    fn commit(store: &NarStore, data: &[u8]) -> String {
        let key = key_of(data);
        let (path, mut file) = store.create_temp(&key).expect("temp file");
        std::io::Write::write_all(&mut file, data).expect("write temp");
        store
            .commit_blocking(&key, &path, data.len() as u64)
            .expect("commit");
        key
    }

    fn nar_files(root: &Path) -> usize {
        scan_nars(&root.join("nar")).expect("scan").len()
    }

    #[test]
    fn keys_render_sha256_as_nix_does() {
        // Vectors from tests/vectors/README.md.
        assert_eq!(
            key_of(b"abc"),
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        );
        let perl_hex = "60adfd293a4d81ad7cd7e47263cbb3fc846309ef91b154a08ba672b558f94ff3";
        let mut perl = [0u8; 32];
        for (i, byte) in perl.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&perl_hex[2 * i..2 * i + 2], 16).expect("hex");
        }
        assert_eq!(
            key_for_hash(&perl),
            "1wsgz5cbawm6ifh59ccixw4n717wng5n6wp4sxyav0ad78lzvbb0"
        );
        let zero = [0u8; 32];
        assert_eq!(key_for_hash(&zero), "0".repeat(52));
        let ones = [0xffu8; 32];
        assert_eq!(key_for_hash(&ones), format!("1{}", "z".repeat(51)));
    }

    #[test]
    fn keys_with_bad_characters_or_lengths_are_rejected() {
        let good = key_of(b"abc");
        assert!(validate_key(&good).is_ok());
        let bad = [
            String::new(),
            "../../../../etc/passwd".to_owned(),
            format!("{}/", &good[..51]),
            format!("{}e", &good[..51]), // e is not a nix32 digit
            format!("{}E", &good[..51]),
            good.to_uppercase(),
            format!("{good}0"),
            good[..51].to_owned(),
            format!("2{}", &good[1..]), // would need 257 bits
            format!("{}.", &good[..51]),
        ];
        for key in &bad {
            assert!(
                matches!(validate_key(key), Err(NarError::InvalidKey(_))),
                "{key:?}"
            );
        }
    }

    #[tokio::test]
    async fn malformed_keys_are_never_looked_up_or_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NarStore::open(dir.path().to_owned(), None).expect("open");
        for key in ["../tmp/x", "0/../../../etc/passwd", "", "é"] {
            assert!(store.lookup(key).await.is_none());
            let err = store.open_nar(key).await.err().map(|e| e.kind());
            assert_eq!(err, Some(io::ErrorKind::InvalidInput), "{key:?}");
        }
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
                .join(&key[..2])
                .join(format!("{key}.nar"))
        );
        let (mut file, size) = store.open_nar(&key).await.expect("io").expect("stored");
        let mut contents = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut contents)
            .await
            .expect("read");
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
            .join(&b[..2])
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
        assert_eq!(store.take_evicted(), vec![b.clone(), c.clone(), a.clone()]);
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
