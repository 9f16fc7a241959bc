//! The typed names quorate reads from upstreams and clients: `NarHash` (narinfo `NarHash:`),
//! `NarKey` (`nar/<key>.nar` URLs, store file names), `HashPart` (`<hash>.narinfo`),
//! `StorePath`, nix32 and `Compression`.
//!
//! Properties, for any string:
//! - nothing panics;
//! - each type has one canonical string form: the strict ones (`NarKey`, `HashPart`, nix32,
//!   `StorePath`, `Compression`) print exactly what they accepted, so two different strings
//!   never name one file or one path; `NarHash` accepts Nix's spellings and prints the one
//!   that parses back to it;
//! - serde goes through that same form;
//! - `NarHash` and `NarKey` convert into each other without loss.
#![no_main]

use libfuzzer_sys::fuzz_target;

use quorate_core::protocol::compression::Compression;
use quorate_core::protocol::nar_hash::{NarHash, NarKey};
use quorate_core::protocol::nix32;
use quorate_core::protocol::store_path::{HashPart, StorePath};

fn serde_round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).expect("serialises");
    assert_eq!(
        &serde_json::from_str::<T>(&json).expect("deserialises"),
        value
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(hash) = NarHash::parse(s) {
        let printed = hash.to_string();
        assert_eq!(printed.parse::<NarHash>(), Ok(hash));
        assert_eq!(printed, format!("sha256:{}", hash.key()));
        assert_eq!(hash.key().hash(), hash);
        assert_eq!(hash.key().to_string().parse::<NarKey>(), Ok(hash.key()));
        serde_round_trip(&hash);
    }

    if let Ok(key) = s.parse::<NarKey>() {
        assert_eq!(key.to_string(), s, "a NAR key has one spelling");
        assert_eq!(NarKey::from(key.hash()), key);
        serde_round_trip(&key);
    }

    if let Ok(hash_part) = s.parse::<HashPart>() {
        assert_eq!(hash_part.to_string(), s, "a hash part has one spelling");
        serde_round_trip(&hash_part);
    }

    if let Ok(bytes) = nix32::decode(s) {
        assert_eq!(nix32::encode(&bytes), s, "nix32 has one spelling");
    }

    if let Ok(compression) = s.parse::<Compression>() {
        assert_eq!(compression.to_string(), s);
    }

    for store_dir in ["/nix/store", "/gnu/store", "/"] {
        if let Ok(path) = StorePath::parse(store_dir, s) {
            assert_eq!(path.full(), s);
            assert_eq!(path.store_dir(), store_dir);
            let rebuilt =
                StorePath::from_basename(store_dir, path.basename()).expect("basename is valid");
            assert_eq!(rebuilt, path);
            let hash_part: HashPart = path.hash_part().parse().expect("valid hash part");
            assert!(path.has_hash_part(&hash_part));
            assert_eq!(
                format!("{}-{}", path.hash_part(), path.name()),
                path.basename()
            );
        }
        if let Ok(path) = StorePath::from_basename(store_dir, s) {
            assert_eq!(path.basename(), s);
            assert_eq!(StorePath::parse(store_dir, path.full()), Ok(path));
        }
    }
});
