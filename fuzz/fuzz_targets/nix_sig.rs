//! Nix keys and `Sig:` values: `NixPublicKey` and `NixSecretKey` parsing (config and key
//! files) and `check_sig` (every upstream signature).
//!
//! Input: four parts separated by newlines: a public key, a secret key, a `Sig:` value, and
//! the fingerprint (the rest).
//!
//! Properties:
//! - nothing panics;
//! - keys print in their one canonical form, which parses back to the same key;
//! - a parsed secret key's signature verifies under its public key, and no other fingerprint;
//! - under the vector keys, a signature is valid only over a fingerprint one of them signed;
//! - `check_sig` attributes a verdict to the name before the first `:`, and a name no key has
//!   is never valid.
#![no_main]

use libfuzzer_sys::fuzz_target;

use quorate_core::protocol::nix_key::{check_sig, NixPublicKey, NixSecretKey};
use quorate_core::protocol::signature::SigCheck;
use quorate_fuzz::{nix_keys, nix_signed_fingerprints};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, '\n');
    let public = parts.next().unwrap_or_default();
    let secret = parts.next().unwrap_or_default();
    let sig = parts.next().unwrap_or_default();
    let fingerprint = parts.next().unwrap_or_default();

    if let Ok(key) = public.parse::<NixPublicKey>() {
        let printed = key.to_string();
        assert_eq!(printed.parse::<NixPublicKey>().as_ref(), Ok(&key));
        assert_eq!(printed, public.trim(), "one canonical form");
        let json = serde_json::to_string(&key).expect("serialises");
        assert_eq!(
            serde_json::from_str::<NixPublicKey>(&json).ok().as_ref(),
            Some(&key)
        );
    }

    if let Ok(key) = secret.parse::<NixSecretKey>() {
        let printed = key.to_string();
        let again: NixSecretKey = printed.parse().expect("a printed secret key parses");
        assert_eq!(again.public(), key.public());
        let signed = key.sign(fingerprint);
        let keys = [key.public()];
        assert!(check_sig(&signed, fingerprint, &keys).is_valid());
        let other = format!("{fingerprint}x");
        assert!(!check_sig(&signed, &other, &keys).is_valid());
    }

    // Upstream signatures against the vector keys.
    let check = check_sig(sig, fingerprint, nix_keys());
    if check.is_valid() {
        assert!(
            nix_signed_fingerprints().iter().any(|f| f == fingerprint),
            "a vector key's signature is valid over {fingerprint:?}"
        );
    }
    match (&check, sig.split_once(':')) {
        (SigCheck::Malformed { .. }, split) => {
            assert!(split.is_none_or(|(name, _)| name.is_empty()));
        }
        (_, Some((name, _))) => {
            assert_eq!(check.key_name(), name);
            let known = nix_keys().iter().any(|key| key.name == name);
            assert_eq!(matches!(check, SigCheck::UnknownKey { .. }), !known);
        }
        (_, None) => panic!("a signature without ':' is malformed, not {check:?}"),
    }
});
