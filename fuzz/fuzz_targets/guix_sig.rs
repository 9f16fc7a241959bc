//! Guix keys and signatures: public and secret key files, the signature s-expression a
//! narinfo carries, its `(sig-val ...)` part, and the narinfo's `Signature:` value
//! (`1;<host>;<base64>`). The same input is offered to each reader.
//!
//! Properties:
//! - nothing panics;
//! - every reader's output prints (`to_sexp`, `to_advanced`, `Display`) into something the
//!   same reader gives back unchanged;
//! - a parsed secret key signs digests that verify under its public key;
//! - a signature embedding a vector key verifies only over a digest that key really signed
//!   (the vectors' signed parts), up to the bits ECDSA drops from it.
#![no_main]

use curve25519_dalek::Scalar;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

use quorate_core::protocol::guix_key::{
    EcdsaSignature, GuixPublicKey, GuixSecretKey, GuixSignature,
};
use quorate_core::protocol::guix_narinfo::SignatureField;
use quorate_core::protocol::sexp::Sexp;
use quorate_fuzz::{guix_keys, guix_signed_digests};

/// What ECDSA on Ed25519's 253-bit group order signs of a digest: its leftmost 253 bits,
/// modulo the order (RFC 6979 bits2int, then mod n). Two digests with the same `e` share
/// every signature, in libgcrypt too (see `any_flipped_bit_of_digest_or_signature_fails_
/// verification`); a narinfo's signature is checked against the exact SHA-256 as well.
fn signed_integer(digest: &[u8; 32]) -> Scalar {
    let mut shifted = [0u8; 32];
    for i in 0..32 {
        let carry = if i == 0 { 0 } else { digest[i - 1] << 5 };
        shifted[i] = (digest[i] >> 3) | carry;
    }
    shifted.reverse();
    Scalar::from_bytes_mod_order(shifted)
}

fn check_signature(signature: &GuixSignature) {
    let again = GuixSignature::from_sexp(&signature.to_sexp()).expect("printed signature reads");
    assert_eq!(&again, signature);
    if signature.verify() && guix_keys().contains(signature.key()) {
        let e = signed_integer(signature.digest());
        assert!(
            guix_signed_digests()
                .iter()
                .any(|signed| signed_integer(signed) == e),
            "a vector key's signature verifies over a digest it never signed"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(key) = GuixPublicKey::parse(text) {
        assert_eq!(GuixPublicKey::parse(&key.to_advanced()), Ok(key));
        assert_eq!(GuixPublicKey::from_q(key.q()), Ok(key));
        assert_eq!(key.q_hex().len(), 64);
    }

    if let Ok(key) = GuixSecretKey::parse(text) {
        let again = GuixSecretKey::parse(&key.to_advanced()).expect("printed secret key reads");
        assert_eq!(again.public(), key.public());
        let digest: [u8; 32] = Sha256::digest(data).into();
        let value = key.sign(&digest);
        assert!(key.public().verify(&digest, &value), "own signature fails");
        let signature = GuixSignature::sign(&key, &digest);
        assert!(signature.verify());
        assert_eq!(
            GuixSignature::from_sexp(&signature.to_sexp()).as_ref(),
            Ok(&signature)
        );
    }

    if let Ok(sexp) = Sexp::parse_text(text) {
        if let Ok(signature) = GuixSignature::from_sexp(&sexp) {
            check_signature(&signature);
        }
        if let Ok(value) = EcdsaSignature::from_sexp(&sexp) {
            assert_eq!(EcdsaSignature::from_sexp(&value.to_sexp()), Ok(value));
            assert_eq!(
                EcdsaSignature::from_be_bytes(value.r(), value.s()),
                Ok(value)
            );
        }
    }

    if let Ok(field) = SignatureField::parse(text) {
        let printed = field.to_string();
        let again = SignatureField::parse(&printed).expect("printed Signature value reads");
        assert_eq!(again, field);
        check_signature(&field.signature);
    }
});
