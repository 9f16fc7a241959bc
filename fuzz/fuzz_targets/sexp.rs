//! libgcrypt s-expressions, the container of every Guix key and signature: `Sexp::parse`
//! (advanced and canonical forms, auto-detected) and `Sexp::parse_text` (Guix's ISO-8859-1
//! view of the same bytes).
//!
//! Properties, for any bytes:
//! - nothing panics, however deep or long (the parser bounds both);
//! - the canonical form round-trips: `parse(to_canonical(x)) == x`, for every parsed `x`;
//! - the advanced form round-trips too, except for the one spelling libgcrypt prints that it
//!   cannot read back: a token holding a NUL byte (`e\0` prints raw, see
//!   `a_token_with_a_nul_prints_raw_as_libgcrypt_does`); printing is then still a fixed point;
//! - the text forms agree with the byte forms.
#![no_main]

use libfuzzer_sys::fuzz_target;

use quorate_core::protocol::sexp::Sexp;

/// Whether libgcrypt's printer (and so `to_advanced`) writes some atom of `sexp` as a raw
/// token containing NUL: the same rule as `atom_spelling`, restricted to that case.
fn has_raw_nul_token(sexp: &Sexp) -> bool {
    match sexp {
        Sexp::List(items) => items.iter().any(has_raw_nul_token),
        Sexp::Atom(bytes) => {
            let token_or_nul = |b: &u8| b.is_ascii_alphanumeric() || b"-./_:*+=\0".contains(b);
            match bytes.first() {
                Some(&first) => {
                    first != 0
                        && !first.is_ascii_digit()
                        && bytes.contains(&0)
                        && bytes.iter().all(token_or_nul)
                }
                None => false,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(sexp) = Sexp::parse(data) {
        let canonical = sexp.to_canonical();
        assert_eq!(
            Sexp::parse(&canonical).as_ref(),
            Ok(&sexp),
            "canonical round trip"
        );

        let advanced = sexp.to_advanced();
        let again = Sexp::parse(&advanced);
        if has_raw_nul_token(&sexp) {
            if let Ok(again) = again {
                assert_eq!(
                    again.to_advanced(),
                    advanced,
                    "advanced printing is a fixed point"
                );
            }
        } else {
            assert_eq!(again.as_ref(), Ok(&sexp), "advanced round trip");
            let text = sexp.to_advanced_text();
            assert_eq!(text.chars().count(), advanced.len());
            assert_eq!(
                Sexp::parse_text(&text).as_ref(),
                Ok(&sexp),
                "text round trip"
            );
        }
        // What Guix looks up in keys and signatures.
        for token in [
            "public-key",
            "private-key",
            "signature",
            "data",
            "sig-val",
            "ecc",
        ] {
            if let Some(found) = sexp.find_token(token) {
                assert_eq!(found.head(), Some(token.as_bytes()));
            }
        }
        let _ = format!("{sexp:?}");
    }
    // Text holding only Latin-1 characters reads as the bytes they stand for.
    if let Ok(text) = std::str::from_utf8(data) {
        let parsed = Sexp::parse_text(text);
        if text.chars().all(|c| u32::from(c) < 0x100) {
            let bytes: Vec<u8> = text.chars().map(|c| u32::from(c) as u8).collect();
            assert_eq!(parsed, Sexp::parse(&bytes));
        } else {
            assert!(parsed.is_err());
        }
    }
});
