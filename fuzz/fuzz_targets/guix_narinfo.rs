//! Guix narinfos from a hostile upstream: `GuixNarInfo::parse`, `verify_signature` (the
//! base64 s-expression signature inside, against the vector keys) and the front end's
//! `observe`, then quorate's own narinfo rendered from what was observed.
//!
//! Properties, for any text:
//! - nothing panics;
//! - `observe` accepts exactly what `parse` accepts for the narinfo's own hash part (in
//!   `/gnu/store`), refuses any other hash part, and attests exactly the signature verdict;
//! - a parsed narinfo prints into text that parses back to the same narinfo;
//! - a signature by a vector key is valid only over a vector's signed part, and so only for
//!   a vector's content: nothing outside the signed part can change what quorate believes;
//! - quorate's narinfo for observed valid content parses, carries that content, and its
//!   signature verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

use quorate_core::attestation::{Agreed, SigStatus};
use quorate_core::protocol::guix_narinfo::GuixNarInfo;
use quorate_core::protocol::store_path::{HashPart, StorePath};
use quorate_fuzz::{
    guix_front_end, guix_keys, guix_signed_contents, guix_signed_digests, guix_signer,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let front = guix_front_end();
    let other: HashPart = "00000000000000000000000000000000"
        .parse()
        .expect("a valid hash part");

    let narinfo = match GuixNarInfo::parse(text) {
        Ok(narinfo) => narinfo,
        Err(_) => {
            assert!(front.observe("up", &other, text, 0).is_err());
            return;
        }
    };

    // Printing a parsed narinfo gives it back: same signed part, signature and URL groups.
    let printed = narinfo.to_string();
    let reparsed = GuixNarInfo::parse(&printed)
        .unwrap_or_else(|e| panic!("printed narinfo does not parse: {e}\n{printed}"));
    assert_eq!(reparsed, narinfo, "print/parse round trip\n{printed}");

    // Signatures: only a vector's signed part can carry a valid one.
    let check = narinfo.verify_signature(guix_keys());
    assert_eq!(check.is_some(), narinfo.signature().is_some());
    let content = narinfo.content();
    if check.as_ref().is_some_and(|check| check.is_valid()) {
        let digest: [u8; 32] = Sha256::digest(narinfo.signed_part()).into();
        assert!(
            guix_signed_digests().contains(&digest),
            "valid over unsigned bytes"
        );
        assert!(
            guix_signed_contents().contains(&content),
            "a vector key's signature is valid over unsigned content {content:?}"
        );
    }

    // The front end: the verdict above, for the asked hash part of a /gnu/store path only.
    let Ok(hash_part) = narinfo.hash_part().parse::<HashPart>() else {
        panic!(
            "a parsed store path has a valid hash part: {}",
            narinfo.store_path()
        );
    };
    if hash_part != other {
        assert!(front.observe("up", &other, text, 0).is_err());
    }
    let observed = front.observe("up", &hash_part, text, 0);
    let in_store = StorePath::parse("/gnu/store", narinfo.store_path()).is_ok();
    assert_eq!(observed.is_ok(), in_store, "{observed:?}");
    let Ok(observation) = observed else {
        return;
    };
    let statuses: Vec<SigStatus> = observation.attestations.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        check.iter().map(|c| c.status()).collect::<Vec<_>>()
    );
    for attestation in &observation.attestations {
        assert_eq!(attestation.content, content);
        assert_eq!(Some(attestation.signature.as_str()), narinfo.signature());
    }
    if let Some(source) = &observation.source {
        assert_eq!(source.nar_hash, narinfo.nar_hash());
    }

    // quorate's own narinfo for valid content.
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
        observation.source,
    );
    let served = front.render(&agreed, None).expect("agreed content renders");
    let served = GuixNarInfo::parse(&served)
        .unwrap_or_else(|e| panic!("quorate's narinfo does not parse: {e}\n{served}"));
    assert_eq!(served.content(), content);
    let own = served
        .verify_signature(&[*guix_signer().public()])
        .expect("quorate signs what it serves");
    assert!(
        own.is_valid(),
        "quorate's signature does not verify: {own:?}"
    );
});
