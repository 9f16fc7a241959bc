//! What the fuzz targets share: the real test vectors of `core/tests/vectors/` (keys,
//! narinfos, what their signatures cover) and front ends built from them, made once per
//! process.
//!
//! The properties the targets check lean on one fact: nobody can forge a signature by the
//! vector keys, so a signature that verifies can only vouch for content one of the vectors
//! was signed over. Whatever the fuzzer does to a narinfo's text, a `Valid` verdict must come
//! with one of those contents, or quorate has been made to believe something unsigned.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use quorate_core::attestation::Content;
use quorate_core::builder::{Builder, BuilderKey};
use quorate_core::flavor::{front_end, FrontEnd, Signer};
use quorate_core::protocol::guix_key::{GuixPublicKey, GuixSecretKey};
use quorate_core::protocol::guix_narinfo::GuixNarInfo;
use quorate_core::protocol::narinfo::NixNarInfo;
use quorate_core::protocol::nix_key::{NixPublicKey, NixSecretKey};

macro_rules! vector {
    ($path:literal) => {
        include_str!(concat!("../../core/tests/vectors/", $path))
    };
}

/// The Nix vector narinfos, all from cache.nixos.org.
pub const NIX_NARINFOS: [&str; 6] = [
    vector!("nix/curl-7.82.0-bin.narinfo"),
    vector!("nix/hello-2.10-w9yy7v61.narinfo"),
    vector!("nix/liblouis-3.22.0.narinfo"),
    vector!("nix/perl-HTTP-Cookies-hex-narhash.narinfo"),
    vector!("nix/ripgrep-15.2.0-zstd.narinfo"),
    vector!("nix/texlive-hyphenex-CA-sha1.narinfo"),
];

/// The published test-only Nix secret key (`cache.example.com-1`).
pub const NIX_TEST_SECRET: &str = vector!("nix/cache.example.com-1.secret.TESTONLY");

/// `fingerprint: <fingerprint>` and `Sig: <its signature by [`NIX_TEST_SECRET`]>`.
pub const NIX_SIGNED_WITH_TEST_KEY: &str = vector!("nix/signed-with-cache.example.com-1.txt");

/// The Guix vector narinfos: bordeaux's, and two signed by libgcrypt with the test key.
pub const GUIX_NARINFOS: [&str; 3] = [
    vector!("guix/bordeaux-hello-2.12.2.narinfo"),
    vector!("guix/generated.narinfo"),
    vector!("guix/generated-short-r.narinfo"),
];

/// Guix public key files: bordeaux, berlin and the test key.
pub const GUIX_PUBLIC_KEYS: [&str; 3] = [
    vector!("guix/bordeaux.guix.gnu.org.pub"),
    vector!("guix/berlin.guix.gnu.org.pub"),
    vector!("guix/signing-key.pub"),
];

/// The throwaway Guix test secret key (`signing-key.sec`).
pub const GUIX_TEST_SECRET: &str = vector!("guix/signing-key.sec");

/// The Nix keys of `keys.txt`: cache.nixos.org-1, test1 and cache.example.com-1.
pub fn nix_keys() -> &'static [NixPublicKey] {
    static KEYS: OnceLock<Vec<NixPublicKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        vector!("nix/keys.txt")
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| line.parse().expect("keys.txt holds valid keys"))
            .collect()
    })
}

/// The Guix vector public keys.
pub fn guix_keys() -> &'static [GuixPublicKey] {
    static KEYS: OnceLock<Vec<GuixPublicKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        GUIX_PUBLIC_KEYS
            .iter()
            .map(|text| GuixPublicKey::parse(text).expect("vector key parses"))
            .collect()
    })
}

/// quorate's own Nix key in the fuzzed front end: fresh, so that no vector builder's key
/// signs anything the fuzzer makes.
pub fn nix_signer() -> &'static NixSecretKey {
    static KEY: OnceLock<NixSecretKey> = OnceLock::new();
    KEY.get_or_init(|| NixSecretKey::generate("quorate-fuzz-1").expect("system randomness"))
}

/// quorate's own Guix key in the fuzzed front end: fresh, like [`nix_signer`].
pub fn guix_signer() -> &'static GuixSecretKey {
    static KEY: OnceLock<GuixSecretKey> = OnceLock::new();
    KEY.get_or_init(|| GuixSecretKey::generate().expect("system randomness"))
}

/// A Nix cache at `/nix/store` trusting one builder per vector key.
pub fn nix_front_end() -> &'static dyn FrontEnd {
    static FRONT: OnceLock<Box<dyn FrontEnd>> = OnceLock::new();
    FRONT
        .get_or_init(|| {
            let builders: Vec<Builder> = nix_keys()
                .iter()
                .map(|key| {
                    Builder::new(
                        format!("builder-{}", key.name),
                        vec![BuilderKey::Nix(key.clone())],
                    )
                })
                .collect();
            let signer = Signer::Nix(nix_signer().to_string().parse().expect("key re-parses"));
            front_end("fuzz", "/nix/store", &builders, signer)
        })
        .as_ref()
}

/// A Guix cache at `/gnu/store` trusting one builder per vector key.
pub fn guix_front_end() -> &'static dyn FrontEnd {
    static FRONT: OnceLock<Box<dyn FrontEnd>> = OnceLock::new();
    FRONT
        .get_or_init(|| {
            let builders: Vec<Builder> = guix_keys()
                .iter()
                .enumerate()
                .map(|(i, key)| Builder::new(format!("builder-{i}"), vec![BuilderKey::Guix(*key)]))
                .collect();
            let signer = Signer::Guix(guix_signer().clone());
            front_end("fuzz", "/gnu/store", &builders, signer)
        })
        .as_ref()
}

/// The contents the Nix vectors' signatures vouch for: the only ones a signature by a vector
/// key can ever be valid over.
pub fn nix_signed_contents() -> &'static [Content] {
    static CONTENTS: OnceLock<Vec<Content>> = OnceLock::new();
    CONTENTS.get_or_init(|| {
        NIX_NARINFOS
            .iter()
            .map(|text| {
                NixNarInfo::parse("/nix/store", text)
                    .expect("vector parses")
                    .content()
            })
            .collect()
    })
}

/// The fingerprints signed by a vector key: the vectors' and the test key's signed line.
pub fn nix_signed_fingerprints() -> &'static [String] {
    static FINGERPRINTS: OnceLock<Vec<String>> = OnceLock::new();
    FINGERPRINTS.get_or_init(|| {
        let mut fingerprints: Vec<String> = NIX_NARINFOS
            .iter()
            .map(|text| {
                NixNarInfo::parse("/nix/store", text)
                    .expect("vector parses")
                    .fingerprint()
            })
            .collect();
        fingerprints.extend(
            NIX_SIGNED_WITH_TEST_KEY
                .lines()
                .find_map(|line| line.strip_prefix("fingerprint: "))
                .map(str::to_owned),
        );
        fingerprints
    })
}

/// The contents the Guix vectors' signatures vouch for.
pub fn guix_signed_contents() -> &'static [Content] {
    static CONTENTS: OnceLock<Vec<Content>> = OnceLock::new();
    CONTENTS.get_or_init(|| {
        GUIX_NARINFOS
            .iter()
            .map(|text| GuixNarInfo::parse(text).expect("vector parses").content())
            .collect()
    })
}

/// SHA-256 of the signed parts of the Guix vectors: the only digests a signature by a vector
/// key can be valid over.
pub fn guix_signed_digests() -> &'static [[u8; 32]] {
    static DIGESTS: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    DIGESTS.get_or_init(|| {
        GUIX_NARINFOS
            .iter()
            .map(|text| {
                let narinfo = GuixNarInfo::parse(text).expect("vector parses");
                Sha256::digest(narinfo.signed_part()).into()
            })
            .collect()
    })
}
