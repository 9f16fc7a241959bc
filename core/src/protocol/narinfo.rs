//! Nix narinfos: the `<hash>.narinfo` metadata a binary cache serves for a store path.
//!
//! One `Key: value` per line; unknown keys are ignored; a missing `Compression` means bzip2;
//! an empty `References` is written `References: ` with its trailing space. A real one
//! (cache.nixos.org, signature shortened):
//!
//! ```text
//! StorePath: /nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin
//! URL: nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz
//! Compression: xz
//! FileHash: sha256:05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56
//! FileSize: 68852
//! NarHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0
//! NarSize: 196040
//! References: 0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0 6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115 ...
//! Deriver: 5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv
//! Sig: cache.nixos.org-1:TsTTb3WGTZKphvYdBHXwo6weVILmTytUjLB+vcX89fOjjRicCHmKA4RC...==
//! ```
//!
//! Signatures cover only the *fingerprint*, never the text:
//!
//! ```text
//! 1;<StorePath>;sha256:<NarHash in nix32>;<NarSize>;<References as full paths, sorted, comma-joined>
//! ```
//!
//! so URL, Compression and FileHash are unauthenticated (the NAR bytes are checked against
//! NarHash instead), and a NarHash written in hex, base64 or SRI must be re-rendered as nix32
//! before a signature can verify.
//!
//! Parsing is done twice over, on purpose: `nix_narinfo` (checked against about a thousand
//! real narinfos) validates the record as Nix would, then a plain field scan keeps what it
//! normalises away — references and `Sig:` values exactly as listed, `CA`/`FileHash` as written,
//! `System` — and applies quorate's own store-path rules.

use std::collections::BTreeSet;

use thiserror::Error;

use super::content::Content;
use super::nar_hash::{NarHash, NarHashError};
use super::nix_key::{check_sig, NixPublicKey};
use super::signature::SigCheck;
use super::store_path::{full_path, StorePath, StorePathError};
use crate::limits::{MAX_NARINFO_BYTES, MAX_NAR_SIZE};

/// Why a narinfo or NarHash was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NarInfoError {
    /// The text is larger than [`MAX_NARINFO_BYTES`].
    #[error("narinfo is {size} bytes, more than the {limit} bytes accepted")]
    TooLarge {
        /// Size of the text.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The configured store directory is unusable.
    #[error("store directory {store_dir:?} is not an absolute path in canonical form")]
    InvalidStoreDir {
        /// The store directory as given.
        store_dir: String,
    },
    /// The text is not a narinfo: a line without `:`, a missing or duplicate field, a bad
    /// number or hash; the message names the field and line.
    #[error("malformed narinfo: {reason}")]
    Malformed {
        /// nix_narinfo's message, e.g. `invalid NarSize: at line 7: invalid digit found in string`.
        reason: String,
    },
    /// A required field is absent.
    #[error("narinfo has no {field} field")]
    MissingField {
        /// The field's name.
        field: &'static str,
    },
    /// A store path in `StorePath`, `References` or `Deriver` breaks the store-path rules.
    #[error("invalid {field} at line {line}: {problem}")]
    InvalidPath {
        /// The field's name.
        field: &'static str,
        /// One-based line number.
        line: usize,
        /// What is wrong with the path.
        problem: StorePathError,
    },
    /// A NarHash that is not a sha256 hash in one of Nix's spellings.
    #[error(transparent)]
    NarHash(#[from] NarHashError),
}

/// A parsed Nix narinfo. Fields are public: quorate builds its own served narinfo from the
/// agreed content and renders it with [`NixNarInfo::render`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NixNarInfo {
    /// The store path described; its hash part must match the requested `<hash>.narinfo`.
    pub store_path: StorePath,
    /// Where the (compressed) NAR is, relative to the cache or absolute. Not signed.
    pub url: String,
    /// Compression of the file at `url`; `bzip2` when the narinfo leaves it out. Not signed.
    pub compression: String,
    /// Hash of the file at `url`, as written. Not signed.
    pub file_hash: Option<String>,
    /// Size of the file at `url`. Not signed.
    pub file_size: Option<u64>,
    /// Hash of the uncompressed NAR. Signed.
    pub nar_hash: NarHash,
    /// Size of the uncompressed NAR. Signed.
    pub nar_size: u64,
    /// Reference basenames in the order listed (absolute ones reduced to basenames). Signed,
    /// as a sorted set.
    pub references: Vec<String>,
    /// Basename of the derivation that built it; `None` also for `unknown-deriver`.
    pub deriver: Option<String>,
    /// `System:` as written, informational.
    pub system: Option<String>,
    /// `CA:` content address as written, for content-addressed paths.
    pub ca: Option<String>,
    /// `Sig:` values (`name:base64`) as listed, unchecked; see [`NixNarInfo::check_sigs`].
    pub sigs: Vec<String>,
}

/// One `Key: value` line, as the field scan sees it.
struct Field<'a> {
    name: &'a str,
    value: &'a str,
    line: usize,
}

impl NixNarInfo {
    /// Parses a narinfo for a store in `store_dir`. Rejects texts over [`MAX_NARINFO_BYTES`]
    /// and malformed ones (with an error naming the field and line); ignores unknown fields.
    pub fn parse(store_dir: &str, text: &str) -> Result<NixNarInfo, NarInfoError> {
        if text.len() > MAX_NARINFO_BYTES {
            return Err(NarInfoError::TooLarge {
                size: text.len(),
                limit: MAX_NARINFO_BYTES,
            });
        }
        let dir = nix_derivation::StoreDir::new(store_dir).map_err(|_| {
            NarInfoError::InvalidStoreDir {
                store_dir: store_dir.to_owned(),
            }
        })?;
        let checked = nix_narinfo::NarInfo::parse_in(&dir, text.as_bytes()).map_err(|error| {
            NarInfoError::Malformed {
                reason: error.to_string(),
            }
        })?;

        // A carriage return ends a line only as part of CRLF. One anywhere else would stay in
        // a value (nix_narinfo keeps it) although some readers break lines there: what quorate
        // records and what it renders (which must turn it into a space) would differ.
        if let Some(index) = text.lines().position(|line| line.contains('\r')) {
            return Err(NarInfoError::Malformed {
                reason: format!("carriage return inside line {}", index + 1),
            });
        }

        // The same line rules as nix_narinfo, which has already rejected duplicates of every
        // known single-valued field, so `first` below is also the only one.
        let fields: Vec<Field<'_>> = text
            .lines()
            .enumerate()
            .filter_map(|(index, line)| {
                let (name, value) = line.split_once(':')?;
                Some(Field {
                    name,
                    value: value.trim_start(),
                    line: index + 1,
                })
            })
            .collect();
        let first = |name: &str| fields.iter().find(|field| field.name == name);
        let required =
            |name: &'static str| first(name).ok_or(NarInfoError::MissingField { field: name });
        for (name, size) in [
            ("NarSize", Some(checked.nar_size())),
            ("FileSize", checked.file_size()),
        ] {
            if let (Some(size), Some(field)) = (size, first(name)) {
                if size > MAX_NAR_SIZE {
                    return Err(NarInfoError::Malformed {
                        reason: format!(
                            "invalid {name}: at line {}: {size} is larger than any file can be",
                            field.line
                        ),
                    });
                }
            }
        }

        let store_path_field = required("StorePath")?;
        let store_path =
            StorePath::parse(store_dir, store_path_field.value).map_err(|problem| {
                NarInfoError::InvalidPath {
                    field: "StorePath",
                    line: store_path_field.line,
                    problem,
                }
            })?;
        let nar_hash = NarHash::parse(required("NarHash")?.value)?;

        let references = match first("References") {
            Some(field) => field
                .value
                .split_ascii_whitespace()
                .map(|reference| path_in_field(store_dir, reference, "References", field))
                .collect::<Result<Vec<_>, NarInfoError>>()?,
            None => Vec::new(),
        };
        let deriver = match first("Deriver") {
            Some(field) if field.value != "unknown-deriver" => {
                Some(path_in_field(store_dir, field.value, "Deriver", field)?)
            }
            _ => None,
        };
        let as_written = |name: &str| first(name).map(|field| field.value.to_owned());

        Ok(NixNarInfo {
            store_path,
            url: checked.url().to_owned(),
            compression: checked.compression().as_str().to_owned(),
            file_hash: as_written("FileHash"),
            file_size: checked.file_size(),
            nar_hash,
            nar_size: checked.nar_size(),
            references,
            deriver,
            // Nix keeps the last `System:`; it is the one field nix_narinfo lets repeat.
            system: fields
                .iter()
                .rev()
                .find(|field| field.name == "System")
                .map(|field| field.value.to_owned()),
            ca: as_written("CA"),
            sigs: fields
                .iter()
                .filter(|field| field.name == "Sig")
                .map(|field| field.value.to_owned())
                .collect(),
        })
    }

    /// Renders in Nix's field order: StorePath, URL, Compression, FileHash, FileSize, NarHash,
    /// NarSize, References, Deriver, System, Sig..., CA. NarHash is always written
    /// `sha256:<nix32>`; references in the order held.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        let mut line = |key: &str, value: &str| {
            out.push_str(key);
            out.push_str(": ");
            // A line break inside a value would forge extra fields (another Sig:, another
            // StorePath:); parsed values never hold one, and built ones must not either.
            out.extend(value.chars().map(|c| match c {
                '\n' | '\r' => ' ',
                c => c,
            }));
            out.push('\n');
        };
        line("StorePath", self.store_path.full());
        line("URL", &self.url);
        line("Compression", &self.compression);
        if let Some(file_hash) = &self.file_hash {
            line("FileHash", file_hash);
        }
        if let Some(file_size) = self.file_size {
            line("FileSize", &file_size.to_string());
        }
        line("NarHash", &self.nar_hash.to_string());
        line("NarSize", &self.nar_size.to_string());
        line("References", &self.references.join(" "));
        if let Some(deriver) = &self.deriver {
            line("Deriver", deriver);
        }
        if let Some(system) = &self.system {
            line("System", system);
        }
        for sig in &self.sigs {
            line("Sig", sig);
        }
        if let Some(ca) = &self.ca {
            line("CA", ca);
        }
        out
    }

    /// What Nix signs: `1;<path>;sha256:<nix32>;<size>;<sorted comma-joined full ref paths>`.
    /// References are a set here, as in Nix: sorted and deduplicated whatever the listing.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(self.store_path.store_dir(), &self.content())
    }

    /// The content this narinfo claims, normalised so equal claims compare equal.
    pub fn content(&self) -> Content {
        Content {
            store_path: self.store_path.full().to_owned(),
            nar_hash: self.nar_hash,
            nar_size: self.nar_size,
            references: self
                .references
                .iter()
                .cloned()
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect(),
        }
    }

    /// Checks every `Sig:` against `keys` over this narinfo's fingerprint, in listing order.
    pub fn check_sigs(&self, keys: &[NixPublicKey]) -> Vec<SigCheck> {
        let fingerprint = self.fingerprint();
        self.sigs
            .iter()
            .map(|sig| check_sig(sig, &fingerprint, keys))
            .collect()
    }
}

/// A `References`/`Deriver` entry (basename, or full path in the store) as a basename.
fn path_in_field(
    store_dir: &str,
    value: &str,
    name: &'static str,
    field: &Field<'_>,
) -> Result<String, NarInfoError> {
    let path = if value.starts_with('/') {
        StorePath::parse(store_dir, value)
    } else {
        StorePath::from_basename(store_dir, value)
    };
    path.map(|path| path.basename().to_owned())
        .map_err(|problem| NarInfoError::InvalidPath {
            field: name,
            line: field.line,
            problem,
        })
}

/// The Nix signing fingerprint of `content` in `store_dir`:
/// `1;<path>;sha256:<nix32>;<size>;<sorted comma-joined full reference paths>`. Lets a
/// recorded attestation be verified again without its narinfo.
pub fn fingerprint_of(store_dir: &str, content: &Content) -> String {
    let references = content
        .references
        .iter()
        .map(String::as_str)
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .map(|basename| full_path(store_dir, basename))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "1;{};{};{};{}",
        content.store_path, content.nar_hash, content.nar_size, references
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::nix_key::NixSecretKey;
    use crate::protocol::signature::InvalidReason;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;

    const CURL: &str = include_str!("../../tests/vectors/nix/curl-7.82.0-bin.narinfo");
    const HELLO: &str = include_str!("../../tests/vectors/nix/hello-2.10-w9yy7v61.narinfo");
    const LIBLOUIS: &str = include_str!("../../tests/vectors/nix/liblouis-3.22.0.narinfo");
    const PERL: &str =
        include_str!("../../tests/vectors/nix/perl-HTTP-Cookies-hex-narhash.narinfo");
    const RIPGREP: &str = include_str!("../../tests/vectors/nix/ripgrep-15.2.0-zstd.narinfo");
    const TEXLIVE: &str = include_str!("../../tests/vectors/nix/texlive-hyphenex-CA-sha1.narinfo");
    const KEYS: &str = include_str!("../../tests/vectors/nix/keys.txt");
    const TEST_SECRET: &str =
        include_str!("../../tests/vectors/nix/cache.example.com-1.secret.TESTONLY");
    const SIGNED: &str =
        include_str!("../../tests/vectors/nix/signed-with-cache.example.com-1.txt");

    const VECTORS: [(&str, &str); 6] = [
        ("curl", CURL),
        ("hello", HELLO),
        ("liblouis", LIBLOUIS),
        ("perl", PERL),
        ("ripgrep", RIPGREP),
        ("texlive", TEXLIVE),
    ];

    fn keys() -> Vec<NixPublicKey> {
        KEYS.lines()
            .filter(|line| !line.is_empty())
            .map(|line| line.parse().expect("keys.txt holds valid keys"))
            .collect()
    }

    fn parse(text: &str) -> NixNarInfo {
        NixNarInfo::parse("/nix/store", text).expect("vector parses")
    }

    fn valid(name: &str) -> SigCheck {
        SigCheck::Valid {
            key_name: name.into(),
        }
    }

    fn parse_err(text: &str) -> String {
        match NixNarInfo::parse("/nix/store", text) {
            Ok(info) => panic!("accepted {text:?} as {info:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn every_vector_signature_verifies_or_fails_as_the_readme_says() {
        let expected: [(&str, Vec<SigCheck>); 6] = [
            ("curl", vec![valid("cache.nixos.org-1"), valid("test1")]),
            ("hello", vec![valid("cache.nixos.org-1")]),
            (
                "liblouis",
                vec![
                    valid("cache.nixos.org-1"),
                    SigCheck::UnknownKey {
                        key_name: "fake-test-sig-1".into(),
                    },
                ],
            ),
            ("perl", vec![valid("cache.nixos.org-1")]),
            ("ripgrep", vec![valid("cache.nixos.org-1")]),
            ("texlive", vec![valid("cache.nixos.org-1")]),
        ];
        for ((name, text), (expected_name, checks)) in VECTORS.iter().zip(expected) {
            assert_eq!(*name, expected_name);
            assert_eq!(parse(text).check_sigs(&keys()), checks, "{name}");
        }
    }

    #[test]
    fn curl_parses_into_every_field() {
        let info = parse(CURL);
        assert_eq!(
            info.store_path.full(),
            "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin"
        );
        assert_eq!(
            info.url,
            "nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz"
        );
        assert_eq!(info.compression, "xz");
        assert_eq!(
            info.file_hash.as_deref(),
            Some("sha256:05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56")
        );
        assert_eq!(info.file_size, Some(68852));
        assert_eq!(
            info.nar_hash.to_string(),
            "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0"
        );
        assert_eq!(info.nar_size, 196040);
        assert_eq!(info.references.len(), 4);
        assert_eq!(
            info.references[0],
            "0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0"
        );
        assert_eq!(
            info.deriver.as_deref(),
            Some("5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv")
        );
        assert_eq!(info.system, None);
        assert_eq!(info.ca, None);
        assert_eq!(info.sigs.len(), 2);
        assert!(info.sigs[1].starts_with("test1:519iiVLx"));
    }

    #[test]
    fn curls_fingerprint_is_the_one_the_test_key_signed() {
        let fingerprint = SIGNED
            .lines()
            .find_map(|line| line.strip_prefix("fingerprint: "))
            .expect("vector has a fingerprint");
        assert_eq!(parse(CURL).fingerprint(), fingerprint);
    }

    #[test]
    fn signing_curl_with_the_test_key_gives_the_published_sig_which_then_verifies() {
        let secret: NixSecretKey = TEST_SECRET.parse().expect("test key parses");
        let expected = SIGNED
            .lines()
            .find_map(|line| line.strip_prefix("Sig: "))
            .expect("vector has a Sig");
        let mut info = parse(CURL);
        let sig = secret.sign(&info.fingerprint());
        assert_eq!(sig, expected);
        info.sigs.push(sig);
        let reparsed = parse(&info.render());
        assert_eq!(
            reparsed.check_sigs(&keys()).last(),
            Some(&valid("cache.example.com-1"))
        );
    }

    #[test]
    fn ripgrep_is_zstd_and_missing_compression_means_bzip2() {
        assert_eq!(parse(RIPGREP).compression, "zstd");
        let without: String = HELLO
            .lines()
            .filter(|line| !line.starts_with("Compression:"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(parse(&without).compression, "bzip2");
    }

    #[test]
    fn texlive_has_a_ca_no_references_and_a_fingerprint_ending_in_size_and_semicolon() {
        let info = parse(TEXLIVE);
        assert_eq!(
            info.ca.as_deref(),
            Some("fixed:r:sha1:1ak1ymbmsfx7z8kh09jzkr3a4dvkrfjw")
        );
        assert!(info.references.is_empty());
        assert!(
            info.fingerprint().ends_with(";22552;"),
            "{}",
            info.fingerprint()
        );
        assert!(info.render().contains("\nReferences: \n"));
        assert!(info.content().references.is_empty());
    }

    #[test]
    fn a_hex_nar_hash_is_re_rendered_as_nix32_and_then_verifies() {
        let info = parse(PERL);
        assert_eq!(
            info.nar_hash.key().to_string(),
            "1wsgz5cbawm6ifh59ccixw4n717wng5n6wp4sxyav0ad78lzvbb0"
        );
        assert!(info
            .fingerprint()
            .contains(";sha256:1wsgz5cbawm6ifh59ccixw4n717wng5n6wp4sxyav0ad78lzvbb0;"));
        assert!(info
            .render()
            .contains("\nNarHash: sha256:1wsgz5cbawm6ifh59ccixw4n717wng5n6wp4sxyav0ad78lzvbb0\n"));
        assert_eq!(info.check_sigs(&keys()), vec![valid("cache.nixos.org-1")]);
        // The fingerprint with the hash as written does not verify: re-rendering is required.
        let literal = info.fingerprint().replace(
            "sha256:1wsgz5cbawm6ifh59ccixw4n717wng5n6wp4sxyav0ad78lzvbb0",
            "sha256:60adfd293a4d81ad7cd7e47263cbb3fc846309ef91b154a08ba672b558f94ff3",
        );
        assert_eq!(
            check_sig(&info.sigs[0], &literal, &keys()),
            SigCheck::Invalid {
                key_name: "cache.nixos.org-1".into(),
                reason: InvalidReason::BadSignature,
            }
        );
    }

    #[test]
    fn a_signature_over_unsorted_references_does_not_verify() {
        let secret: NixSecretKey = TEST_SECRET.parse().expect("test key parses");
        let sorted = parse(CURL);
        // Reverse the listing and sign what a naive signer would: the references as listed.
        let mut reversed = sorted.references.clone();
        reversed.reverse();
        let unsorted_fingerprint = format!(
            "1;{};{};{};{}",
            sorted.store_path,
            sorted.nar_hash,
            sorted.nar_size,
            reversed
                .iter()
                .map(|r| format!("/nix/store/{r}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_ne!(unsorted_fingerprint, sorted.fingerprint());
        let text = CURL.replace(
            &format!("References: {}", sorted.references.join(" ")),
            &format!("References: {}", reversed.join(" ")),
        ) + &format!("Sig: {}\n", secret.sign(&unsorted_fingerprint));
        let info = parse(&text);
        assert_eq!(info.references, reversed, "listing order is kept");
        assert_eq!(
            info.fingerprint(),
            sorted.fingerprint(),
            "but signed sorted"
        );
        assert_eq!(
            info.check_sigs(&keys()),
            vec![
                valid("cache.nixos.org-1"),
                valid("test1"),
                SigCheck::Invalid {
                    key_name: "cache.example.com-1".into(),
                    reason: InvalidReason::BadSignature,
                }
            ]
        );
    }

    #[test]
    fn flipping_any_one_bit_of_any_valid_sig_makes_it_invalid() {
        let keys = keys();
        for (name, text) in VECTORS {
            let info = parse(text);
            let fingerprint = info.fingerprint();
            for sig in &info.sigs {
                let check = check_sig(sig, &fingerprint, &keys);
                if !check.is_valid() {
                    continue;
                }
                let (key_name, payload) = sig.split_once(':').expect("valid sig has a name");
                let bytes = BASE64.decode(payload).expect("valid sig is base64");
                for bit in 0..bytes.len() * 8 {
                    let mut flipped = bytes.clone();
                    flipped[bit / 8] ^= 1 << (bit % 8);
                    let forged = format!("{key_name}:{}", BASE64.encode(&flipped));
                    assert_eq!(
                        check_sig(&forged, &fingerprint, &keys),
                        SigCheck::Invalid {
                            key_name: key_name.into(),
                            reason: InvalidReason::BadSignature,
                        },
                        "{name}: bit {bit} of {key_name}"
                    );
                }
            }
        }
    }

    #[test]
    fn rendering_reproduces_the_vectors_byte_for_byte() {
        for (name, text) in VECTORS {
            let expected = if name == "perl" {
                text.replace(
                    "sha256:60adfd293a4d81ad7cd7e47263cbb3fc846309ef91b154a08ba672b558f94ff3",
                    "sha256:1wsgz5cbawm6ifh59ccixw4n717wng5n6wp4sxyav0ad78lzvbb0",
                )
            } else {
                text.to_owned()
            };
            assert_eq!(parse(text).render(), expected, "{name}");
        }
    }

    #[test]
    fn render_then_parse_gives_back_the_same_narinfo() {
        for (name, text) in VECTORS {
            let info = parse(text);
            assert_eq!(parse(&info.render()), info, "{name}");
        }
        let mut built = parse(HELLO);
        built.system = Some("x86_64-linux".into());
        built.ca =
            Some("fixed:r:sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0".into());
        built.file_hash = None;
        built.file_size = None;
        built.deriver = None;
        built.sigs.clear();
        assert_eq!(parse(&built.render()), built);
    }

    #[test]
    fn render_cannot_be_made_to_forge_extra_lines() {
        let mut info = parse(HELLO);
        info.url = "nar/x.nar\nSig: evil:AAAA".into();
        let rendered = info.render();
        assert_eq!(
            rendered.lines().filter(|l| l.starts_with("Sig:")).count(),
            1
        );
        assert_eq!(parse(&rendered).sigs, parse(HELLO).sigs);
    }

    #[test]
    fn unknown_fields_are_ignored_and_system_is_kept() {
        let text = format!("Foo: bar\n{HELLO}X-Whatever: 1\nSystem: x86_64-linux\n");
        let info = parse(&text);
        assert_eq!(info.system.as_deref(), Some("x86_64-linux"));
        let mut without_system = info.clone();
        without_system.system = None;
        assert_eq!(without_system, parse(HELLO));
        assert!(!info.render().contains("Foo"));
    }

    #[test]
    fn content_has_sorted_deduplicated_references_and_a_nix32_nar_hash() {
        let mut info = parse(PERL);
        info.references.reverse();
        info.references.push(info.references[0].clone());
        let content = info.content();
        assert_eq!(
            content.store_path,
            "/nix/store/0vpqfxbkx0ffrnhbws6g9qwhmliksz7f-perl-HTTP-Cookies-6.01"
        );
        assert_eq!(
            content.nar_hash.to_string(),
            "sha256:1wsgz5cbawm6ifh59ccixw4n717wng5n6wp4sxyav0ad78lzvbb0"
        );
        assert_eq!(content.nar_size, 45840);
        assert_eq!(content.references, parse(PERL).references);
        assert_eq!(content, parse(PERL).content());
        assert_eq!(info.fingerprint(), parse(PERL).fingerprint());
    }

    #[test]
    fn absolute_references_are_reduced_to_basenames() {
        let text = HELLO.replace("References: 9df65", "References: /nix/store/9df65");
        assert_eq!(parse(&text), parse(HELLO));
    }

    #[test]
    fn unknown_deriver_means_no_deriver() {
        let text = CURL.replace(
            "Deriver: 5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv",
            "Deriver: unknown-deriver",
        );
        assert_eq!(parse(&text).deriver, None);
    }

    #[test]
    fn crlf_line_endings_parse_like_lf() {
        assert_eq!(parse(&CURL.replace('\n', "\r\n")), parse(CURL));
    }

    #[test]
    fn a_narinfo_with_a_carriage_return_inside_a_line_is_an_error_not_a_rewritten_value() {
        // Found by fuzz/fuzz_targets/nix_narinfo.rs: a lone CR stayed in a `Sig:` value, and
        // the narinfo quorate rendered from it no longer parsed back to what it had recorded.
        let sig = parse(HELLO).sigs[0].clone();
        let (name, payload) = sig.split_once(':').expect("name:payload");
        let inside = HELLO.replace(
            &sig,
            &format!("{name}:{}\r{}", &payload[..20], &payload[20..]),
        );
        for text in [
            inside,
            HELLO.replace(".nar.xz\n", ".nar.xz\rSig: forged:AAAA\n"),
            format!("{HELLO}System: x86_64-linux\r"),
            format!("{HELLO}System: x86_64-linux\r\r\n"),
        ] {
            let message = parse_err(&text);
            assert!(message.contains("carriage return inside line"), "{message}");
        }
        assert_eq!(parse(&CURL.replace('\n', "\r\n")), parse(CURL));
    }

    #[test]
    fn a_guix_store_directory_is_honoured() {
        let text = HELLO.replace("/nix/store/", "/gnu/store/");
        let info = NixNarInfo::parse("/gnu/store", &text).expect("parses in /gnu/store");
        assert!(info.fingerprint().contains(",/gnu/store/w9yy7v61"));
        assert!(NixNarInfo::parse("/nix/store", &text).is_err());
    }

    #[test]
    fn missing_required_fields_are_named() {
        for field in ["StorePath", "NarHash", "NarSize", "URL"] {
            let text: String = CURL
                .lines()
                .filter(|line| !line.starts_with(&format!("{field}:")))
                .map(|line| format!("{line}\n"))
                .collect();
            let message = parse_err(&text);
            assert!(message.contains(field), "{field}: {message}");
        }
    }

    #[test]
    fn bad_numbers_are_rejected_naming_the_field() {
        for (from, to, field) in [
            ("NarSize: 196040", "NarSize: abc", "NarSize"),
            ("NarSize: 196040", "NarSize: -1", "NarSize"),
            ("NarSize: 196040", "NarSize: 0", "NarSize"),
            (
                "NarSize: 196040",
                "NarSize: 99999999999999999999999",
                "NarSize",
            ),
            ("NarSize: 196040", "NarSize: ", "NarSize"),
            ("FileSize: 68852", "FileSize: 6.8e4", "FileSize"),
            // 2^63: a u64, but larger than any file (or database integer) can be.
            ("NarSize: 196040", "NarSize: 9223372036854775808", "NarSize"),
            (
                "FileSize: 68852",
                "FileSize: 9223372036854775808",
                "FileSize",
            ),
        ] {
            let message = parse_err(&CURL.replace(from, to));
            assert!(message.contains(field), "{to}: {message}");
            assert!(message.contains("line"), "{to}: {message}");
        }
    }

    #[test]
    fn bad_nar_hashes_are_rejected() {
        let good = "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0";
        for bad in [
            "sha256:eb4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
            "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys",
            "sha256:",
            "sha1:1ak1ymbmsfx7z8kh09jzkr3a4dvkrfjw",
            "md5:00000000000000000000000000000000",
            "1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
            "sha256-!!",
            "",
        ] {
            let message = parse_err(&CURL.replace(good, bad));
            assert!(message.contains("NarHash"), "{bad:?}: {message}");
            assert!(NarHash::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nar_hash_accepts_nix32_hex_base64_and_sri_alike() {
        let digest = [
            0x60, 0xad, 0xfd, 0x29, 0x3a, 0x4d, 0x81, 0xad, 0x7c, 0xd7, 0xe4, 0x72, 0x63, 0xcb,
            0xb3, 0xfc, 0x84, 0x63, 0x09, 0xef, 0x91, 0xb1, 0x54, 0xa0, 0x8b, 0xa6, 0x72, 0xb5,
            0x58, 0xf9, 0x4f, 0xf3,
        ];
        let base64 = BASE64.encode(digest);
        let expected = NarHash::from_digest(digest);
        for spelling in [
            "sha256:1wsgz5cbawm6ifh59ccixw4n717wng5n6wp4sxyav0ad78lzvbb0".to_owned(),
            "sha256:60adfd293a4d81ad7cd7e47263cbb3fc846309ef91b154a08ba672b558f94ff3".to_owned(),
            "sha256:60ADFD293A4D81AD7CD7E47263CBB3FC846309EF91B154A08BA672B558F94FF3".to_owned(),
            format!("sha256:{base64}"),
            format!("sha256-{base64}"),
        ] {
            assert_eq!(spelling.parse::<NarHash>(), Ok(expected), "{spelling}");
        }
        assert_eq!(expected.digest(), &digest);
        assert_eq!(
            expected.to_string(),
            "sha256:1wsgz5cbawm6ifh59ccixw4n717wng5n6wp4sxyav0ad78lzvbb0"
        );
        assert_eq!(
            format!("{expected:?}"),
            "NarHash(sha256:1wsgz5cbawm6ifh59ccixw4n717wng5n6wp4sxyav0ad78lzvbb0)"
        );
    }

    #[test]
    fn bad_store_paths_are_rejected_naming_the_field() {
        let good = "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin";
        for bad in [
            "/gnu/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin",
            "/nix/store/eyd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin",
            "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl 7.82.0",
            "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-.curl",
            "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-",
            "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl/bin",
            "syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin",
            "",
        ] {
            let message = parse_err(&CURL.replacen(good, bad, 1));
            assert!(message.contains("StorePath"), "{bad:?}: {message}");
        }
    }

    #[test]
    fn bad_references_and_derivers_are_rejected_naming_the_field() {
        for (from, to, field) in [
            (
                "6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc",
                "6w8g7njm4mck5dmjxws0z1xnrxvl81xa-.glibc",
                "References",
            ),
            (
                "6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc",
                "6w8g7njm4mck5dmjxws0z1xnrxvl81xa_glibc",
                "References",
            ),
            (
                "6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc",
                "/gnu/store/6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc",
                "References",
            ),
            (
                "5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl",
                "5rwxzi7pal3qhpsyfc16gzkh939q1np6:curl",
                "Deriver",
            ),
        ] {
            let message = parse_err(&CURL.replace(from, to));
            assert!(message.contains(field), "{to}: {message}");
        }
    }

    #[test]
    fn narinfos_over_64_kib_are_rejected_and_64_kib_is_accepted() {
        let padding = |total: usize| {
            let filler = total - HELLO.len() - "X-Pad: \n".len();
            format!("{HELLO}X-Pad: {}\n", "a".repeat(filler))
        };
        let at_limit = padding(MAX_NARINFO_BYTES);
        assert_eq!(at_limit.len(), MAX_NARINFO_BYTES);
        assert!(NixNarInfo::parse("/nix/store", &at_limit).is_ok());
        let over = padding(MAX_NARINFO_BYTES + 1);
        assert_eq!(
            NixNarInfo::parse("/nix/store", &over),
            Err(NarInfoError::TooLarge {
                size: MAX_NARINFO_BYTES + 1,
                limit: MAX_NARINFO_BYTES
            })
        );
    }

    #[test]
    fn garbage_and_duplicates_are_rejected() {
        for text in [
            "",
            "\n\n",
            "hello world",
            "StorePath /nix/store/x\n",
            "<html><body>404 Not Found</body></html>",
            "\0\u{1}\u{fffd}",
        ] {
            parse_err(text);
        }
        let doubled = format!("{CURL}NarSize: 1\n");
        assert!(parse_err(&doubled).contains("NarSize"));
        assert!(matches!(
            NixNarInfo::parse("nix/store", CURL),
            Err(NarInfoError::InvalidStoreDir { .. })
        ));
    }

    #[test]
    fn truncated_or_mutated_narinfos_give_errors_not_panics() {
        for (_, text) in VECTORS {
            for cut in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
                let _ = NixNarInfo::parse("/nix/store", &text[..cut]);
            }
            let bytes = text.as_bytes();
            for i in 0..bytes.len() {
                for replacement in [b':', b'\n', b' ', b'/', b'-', b'e', b'0', b'\r'] {
                    let mut mutated = bytes.to_vec();
                    mutated[i] = replacement;
                    if let Ok(mutated) = String::from_utf8(mutated) {
                        if let Ok(info) = NixNarInfo::parse("/nix/store", &mutated) {
                            // Whatever is accepted renders and re-parses.
                            let _ = info.fingerprint();
                            assert!(NixNarInfo::parse("/nix/store", &info.render()).is_ok());
                        }
                    }
                }
            }
        }
    }
}
