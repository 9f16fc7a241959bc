//! Nix narinfos from a hostile upstream: `NixNarInfo::parse` and the front end's
//! `observe` (parse, path check, one signature check per `Sig:`), then quorate's own narinfo
//! rendered from what was observed.
//!
//! Properties, for any text:
//! - nothing panics;
//! - `observe` accepts exactly what `parse` accepts (for the narinfo's own hash part), refuses
//!   any other hash part, and makes one attestation per `Sig:` with `check_sigs`'s verdict;
//! - a parsed narinfo renders into text that parses back to the same narinfo;
//! - a signature by a vector key is valid only over a vector's content (nobody can forge one);
//! - quorate's narinfo for observed valid content parses, carries that content, and every
//!   signature on it verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;

use quorate_core::attestation::{Agreed, SigStatus};
use quorate_core::limits::MAX_NARINFO_BYTES;
use quorate_core::protocol::narinfo::NixNarInfo;
use quorate_core::protocol::nix_key::check_sig;
use quorate_core::protocol::signature::SigCheck;
use quorate_core::protocol::store_path::HashPart;
use quorate_fuzz::{nix_front_end, nix_keys, nix_signed_contents, nix_signer};

fuzz_target!(|data: &[u8]| {
    // Upstream bodies reach the parser only as UTF-8 (anything else is refused before).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let front = nix_front_end();
    let other: HashPart = "00000000000000000000000000000000"
        .parse()
        .expect("a valid hash part");

    let info = match NixNarInfo::parse("/nix/store", text) {
        Ok(info) => info,
        Err(_) => {
            assert!(front.observe("up", &other, text, 0).is_err());
            return;
        }
    };

    // Rendering is canonical: what quorate writes, it reads back the same.
    let rendered = info.render();
    if rendered.len() <= MAX_NARINFO_BYTES {
        let reparsed = NixNarInfo::parse("/nix/store", &rendered)
            .unwrap_or_else(|e| panic!("rendered narinfo does not parse: {e}\n{rendered}"));
        assert_eq!(reparsed, info, "render/parse round trip\n{rendered}");
    }

    // Signatures: only vector contents can carry a valid one.
    let checks = info.check_sigs(nix_keys());
    assert_eq!(checks.len(), info.sigs.len());
    let content = info.content();
    if checks.iter().any(|check| check.is_valid()) {
        assert!(
            nix_signed_contents().contains(&content),
            "a vector key's signature is valid over unsigned content {content:?}"
        );
    }

    // The front end: the same verdicts, for the asked hash part only.
    let hash_part: HashPart = info
        .store_path
        .hash_part()
        .parse()
        .expect("a parsed store path has a valid hash part");
    if hash_part != other {
        assert!(front.observe("up", &other, text, 0).is_err());
    }
    let observation = front
        .observe("up", &hash_part, text, 0)
        .expect("observe accepts what parse accepts");
    assert_eq!(observation.attestations.len(), checks.len());
    for (attestation, check) in observation.attestations.iter().zip(&checks) {
        assert_eq!(attestation.status, check.status());
        assert_eq!(attestation.content, content);
        assert_eq!(attestation.key_name, check.key_name());
        // Every vector key belongs to a builder; unknown and unreadable signatures to none.
        assert_eq!(
            attestation.builder.is_some(),
            matches!(check, SigCheck::Valid { .. } | SigCheck::Invalid { .. })
        );
        if attestation.status == SigStatus::Valid {
            assert!(front.still_trusted(attestation));
        }
    }
    let source = observation.source.expect("a Nix narinfo names its NAR");
    assert_eq!(source.nar_hash, info.nar_hash);

    // quorate's own narinfo for valid content: it parses back to the agreed content, the
    // agreeing upstream signatures still verify on it, and so does quorate's.
    let agreeing: Vec<String> = observation
        .attestations
        .iter()
        .filter_map(|a| a.voter().map(str::to_owned))
        .collect();
    if agreeing.is_empty() {
        return;
    }
    let agreed = Agreed::new(
        content.clone(),
        agreeing,
        &observation.attestations,
        [source],
    );
    let served = front.render(&agreed, None).expect("agreed content renders");
    let served = NixNarInfo::parse("/nix/store", &served)
        .unwrap_or_else(|e| panic!("quorate's narinfo does not parse: {e}\n{served}"));
    assert_eq!(served.content(), content);
    let fingerprint = served.fingerprint();
    let mut keys = nix_keys().to_vec();
    keys.push(nix_signer().public());
    for sig in &served.sigs {
        assert!(
            check_sig(sig, &fingerprint, &keys).is_valid(),
            "quorate serves an invalid signature {sig}"
        );
    }
});
