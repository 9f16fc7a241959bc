//! Hostile binary caches, made from the honest Nix-made ones with quorate's own protocol code
//! (narinfo parsing/rendering, fingerprints, Ed25519 signing, nix32): what a compromised
//! builder or a tampering cache host would serve.
//!
//! Copies are hard links where a file is unchanged (the fixtures and the scratch dirs share
//! target/), and a changed file is always unlinked before it is written, so the fixtures are
//! never modified.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use quorate_core::protocol::nar_hash::NarHash;
use quorate_core::protocol::narinfo::NixNarInfo;
use quorate_core::protocol::nix32;
use quorate_core::protocol::nix_key::NixSecretKey;
use sha2::{Digest, Sha256};

use super::fixtures::{FixturePath, Fixtures};

/// Copies the cache directory `src` to `dst` (hard links where possible).
pub fn copy_cache(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("creating {}: {e}", dst.display()));
    let entries =
        std::fs::read_dir(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    for entry in entries {
        let entry = entry.expect("reading a cache directory entry");
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_cache(&from, &to);
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
        }
    }
}

/// Replaces `path` with `bytes` without touching a file it may be hard-linked to.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The parsed narinfo of `path` in `cache`.
pub fn read_narinfo(fx: &Fixtures, cache: &Path, path: &FixturePath) -> NixNarInfo {
    let file = narinfo_file(cache, path);
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    NixNarInfo::parse(&fx.store_dir, &text)
        .unwrap_or_else(|e| panic!("quorate cannot parse Nix's own {}: {e}", file.display()))
}

/// Where `path`'s narinfo lives in `cache`.
pub fn narinfo_file(cache: &Path, path: &FixturePath) -> PathBuf {
    cache.join(format!("{}.narinfo", path.hash_part()))
}

/// A malicious cache at `dst`: builder M's honest cache in which hello's NAR is replaced by
/// the evil NAR, with a narinfo whose NarHash and NarSize are the evil NAR's true ones,
/// validly signed by key M. Every other path stays honest (and signed by M).
///
/// A client trusting key M installs the evil hello from it: it is a real attack, which only a
/// quorum of other builders can stop.
pub fn malicious_cache(fx: &Fixtures, dst: &Path) -> PathBuf {
    let m = fx.builder("M");
    copy_cache(&m.cache_dir, dst);
    let hello = &fx.paths.hello;
    let mut info = read_narinfo(fx, dst, hello);
    // The honest NAR goes: nothing in this cache can deliver the real hello.
    let _ = std::fs::remove_file(dst.join(&info.url));
    let evil = fx.evil_hello_nar();
    let digest: [u8; 32] = Sha256::digest(&evil).into();
    let file_hash = nix32::encode(&digest);
    info.url = format!("nar/{file_hash}.nar");
    info.compression = "none".to_owned();
    info.file_hash = Some(format!("sha256:{file_hash}"));
    info.file_size = Some(evil.len() as u64);
    info.nar_hash = NarHash::from_digest(digest);
    info.nar_size = evil.len() as u64;
    let key = secret_key(&m.secret_key_file);
    info.sigs = vec![key.sign(&info.fingerprint())];
    replace_file(&dst.join(&info.url), &evil);
    replace_file(&narinfo_file(dst, hello), info.render().as_bytes());
    dst.to_path_buf()
}

/// A tampering cache host at `dst`: builder C's honest cache (uncompressed NARs), validly
/// signed narinfos untouched, but hello's NAR file swapped for the evil NAR's bytes. The
/// signature is fine; only hashing the bytes catches it.
pub fn mismatch_cache(fx: &Fixtures, dst: &Path) -> PathBuf {
    let c = fx.builder("C");
    assert_eq!(
        c.compression, "none",
        "mismatch_cache expects C's NARs uncompressed"
    );
    copy_cache(&c.cache_dir, dst);
    let info = read_narinfo(fx, dst, &fx.paths.hello);
    replace_file(&dst.join(&info.url), &fx.evil_hello_nar());
    dst.to_path_buf()
}

/// Reads a Nix secret key file with quorate's parser.
pub fn secret_key(file: &Path) -> NixSecretKey {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    NixSecretKey::from_str(text.trim())
        .unwrap_or_else(|e| panic!("quorate cannot parse Nix's key {}: {e}", file.display()))
}

/// The `Sig:` lines of every narinfo `server` answered 200 for, as (narinfo path, sig): what
/// an upstream put in front of quorate.
pub fn served_sigs(server: &super::UpstreamServer) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, stats) in server.all_stats() {
        if !path.ends_with(".narinfo") || stats.ok == 0 {
            continue;
        }
        let file = server.root().join(path.trim_start_matches('/'));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for line in text.lines() {
            if let Some(sig) = line.strip_prefix("Sig: ") {
                out.push((path.clone(), sig.trim().to_owned()));
            }
        }
    }
    out
}

/// An equivocating cache at `dst`: the malicious cache, with the evil hello's narinfo also
/// signed by builder `stolen`'s key (a stolen key signing a second content for one path).
/// Heard late under `majority`, it turns an accepted path into a conflict: the stolen key's
/// builder now backs both contents.
pub fn equivocating_cache(fx: &Fixtures, dst: &Path, stolen: &str) -> PathBuf {
    malicious_cache(fx, dst);
    let hello = &fx.paths.hello;
    let mut info = read_narinfo(fx, dst, hello);
    let key = secret_key(&fx.builder(stolen).secret_key_file);
    info.sigs.push(key.sign(&info.fingerprint()));
    replace_file(&narinfo_file(dst, hello), info.render().as_bytes());
    dst.to_path_buf()
}
