//! The transparency log's parsers, fed what a mirror or a peer could send: signed notes,
//! checkpoints, tile paths, entry bundles, tlog proofs and quorate's entries
//! (`quorate_core::tlog`).
//!
//! Properties, for any bytes:
//! - nothing panics;
//! - what parses prints back to text that parses to the same value (one canonical form);
//! - a note that opens under the fixed log key carries a signature by it, and nothing else
//!   opens under a key that signed nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;

use quorate_core::tlog::checkpoint::Checkpoint;
use quorate_core::tlog::note::{open, SignedNote, SignerKey};
use quorate_core::tlog::proof::TlogProof;
use quorate_core::tlog::tile::{decode_bundle, Tile, TilePath};

fuzz_target!(|data: &[u8]| {
    let key = SignerKey::from_seed("example.com/log", &[7; 32]).expect("a valid key name");
    let stranger = SignerKey::from_seed("example.com/log", &[8; 32]).expect("a valid key name");

    if let Ok(note) = SignedNote::parse(data) {
        let printed = note.to_string();
        let again = SignedNote::parse(printed.as_bytes()).expect("a printed note parses");
        assert_eq!(again.to_string(), printed);
        assert!(
            open(data, &[&stranger.verifier()]).is_err(),
            "opened under a key that signed nothing"
        );
        let _ = open(data, &[&key.verifier()]);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = text.parse::<Checkpoint>() {
            let printed = c.to_string();
            assert_eq!(
                printed.parse::<Checkpoint>().expect("reparses").to_string(),
                printed
            );
        }
        if let Ok(path) = text.parse::<TilePath>() {
            assert_eq!(path.to_string(), text, "only the canonical spelling parses");
        }
    }
    if let Ok(proof) = TlogProof::parse(data) {
        let printed = proof.to_string();
        let again = TlogProof::parse(printed.as_bytes()).expect("a printed proof parses");
        assert_eq!(again.to_string(), printed);
        let _ = proof.verify(
            quorate_core::tlog::merkle::leaf_hash(b"x"),
            "example.com/log",
            &key.verifier(),
        );
    }
    // quorate's own entries, as an auditor reads them from a mirror.
    if let Ok(entry) = quorate_core::tlog::entry::parse(data) {
        use quorate_core::tlog::replay::{redecide, LoggedAttestation, LoggedPolicy};
        let _ = entry.indexes("support");
        let policy = LoggedPolicy::from_entry(&entry);
        if let Ok(a) = LoggedAttestation::from_entry(&entry) {
            let builders = policy
                .as_ref()
                .map(|p| p.builders.clone())
                .unwrap_or_default();
            let _ = a.check(&entry, &builders, Some(""));
        }
        if let Ok(p) = policy {
            let _ = redecide(&p, &[]);
        }
    }
    // An entry bundle against tiles of every width its length allows.
    if let Some((&w, rest)) = data.split_first() {
        if let Ok(tile) = Tile::new(0, 0, u16::from(w).max(1)) {
            let _ = decode_bundle(&tile, rest);
        }
    }
});
