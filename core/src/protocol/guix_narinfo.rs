//! Guix narinfos: parsing, signature verification, and signed rendering.
//!
//! A narinfo as bordeaux.guix.gnu.org serves it (`tests/vectors/guix/`, signature shortened):
//!
//! ```text
//! StorePath: /gnu/store/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2
//! NarHash: sha256:0qhasy0w9w9mfv0vacgzymxl4nww8cslyza5x2ci42v7i2b13lyl
//! NarSize: 282616
//! References: cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2 m2vhzr0dy352cn59sgcklcaykprrr4j6-gcc-14.3.0-lib yj053cys0724p7vs9kir808x7fivz17m-glibc-2.41
//! System: x86_64-linux
//! Deriver: rxw8g87bf61bwbagfq38sp5xwy28jb5d-hello-2.12.2.drv
//! Signature: 1;bayfront;KHNpZ25hdHVyZSAKIChkYXRhIAogIChmbGFncyByZmM2OTc5KQog...
//! URL: nar/lzip/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2
//! Compression: lzip
//! FileSize: 68076
//! URL: nar/zstd/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2
//! Compression: zstd
//! FileSize: 73413
//! ```
//!
//! - The **signed part** is the text before the first `Signature:` (its final `\n` included);
//!   the signature is over its SHA-256. `URL`/`Compression`/`FileSize` groups may come before
//!   the signature (older `guix publish`, signed) or after it (unsigned: they only say where
//!   to download, and the NAR is hashed anyway), but one group never straddles it.
//! - The `Signature` value is `1;<host>;<base64>`; the base64 decodes to the advanced
//!   s-expression of a [`GuixSignature`]. The host is informational and not signed.
//! - References are basenames, space-separated, in the order Guix compares them; with none the
//!   line is `References: ` (trailing space).
//!
//! What quorate believes ([`GuixNarInfo::content`]) comes from the signed part only: the
//! fields that define content are refused after the signature, and none may appear twice, so a
//! proxy cannot make quorate read something other than what was signed.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::limits::{MAX_NARINFO_BYTES, MAX_NAR_SIZE};
use crate::protocol::content::Content;
use crate::protocol::guix_key::{GuixKeyError, GuixPublicKey, GuixSecretKey, GuixSignature};
use crate::protocol::nar_hash::NarHash;
use crate::protocol::sexp::{Sexp, SexpError};
use crate::protocol::signature::{InvalidReason, SigCheck};
use crate::protocol::store_path::{StorePath, HASH_PART_LEN};

/// Why a narinfo, or its `Signature` field, cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GuixNarInfoError {
    /// Larger than [`MAX_NARINFO_BYTES`].
    #[error("narinfo too large: {len} bytes (limit {max})")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A line that is not `Key: value`.
    #[error("narinfo line {line}: expected `Key: value`")]
    BadLine {
        /// 1-based line number.
        line: usize,
    },
    /// A single-valued field given twice.
    #[error("narinfo line {line}: {field} given more than once")]
    Duplicate {
        /// 1-based line number of the second occurrence.
        line: usize,
        /// The field.
        field: &'static str,
    },
    /// A content field after the signature, where it would not be covered by it.
    #[error("narinfo line {line}: {field} after the Signature is not covered by it")]
    OutsideSignedPart {
        /// 1-based line number.
        line: usize,
        /// The field.
        field: &'static str,
    },
    /// `Signature:` somewhere other than at the start of a line; Guix would then hash a
    /// different prefix than the fields suggest.
    #[error("narinfo has `Signature:` in the middle of a line")]
    MisplacedSignature,
    /// `Compression` or `FileSize` before any `URL`.
    #[error("narinfo line {line}: {field} before any URL")]
    OrphanField {
        /// 1-based line number.
        line: usize,
        /// The field.
        field: &'static str,
    },
    /// A required field is absent.
    #[error("narinfo lacks {0}")]
    Missing(&'static str),
    /// A field whose value does not parse.
    #[error("narinfo {field} is invalid: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The `Signature` value is not `1;<host>;<base64>`.
    #[error("Signature is not `1;<host>;<base64>`: {0}")]
    SignatureField(&'static str),
    /// The signature payload is not an s-expression.
    #[error("Signature payload: {0}")]
    SignatureSexp(#[from] SexpError),
    /// The signature s-expression is not a usable Guix signature.
    #[error("Signature payload: {0}")]
    SignatureContent(#[from] GuixKeyError),
    /// A host name that cannot go into `1;<host>;...`.
    #[error("host name {0:?} cannot appear in a Signature field")]
    BadHost(String),
}

/// Where and how the NAR can be downloaded: one `URL`/`Compression`/`FileSize` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarUrl {
    /// Relative to the cache's base URL (`nar/lzip/<basename>`) or absolute.
    pub url: String,
    /// `lzip`, `zstd`, `gzip`, `none`...; `None` when the group has no `Compression` line.
    pub compression: Option<String>,
    /// Size of the (compressed) download, when given.
    pub file_size: Option<u64>,
}

/// A parsed `Signature` value: `1;<host>;<base64 of the advanced signature s-expression>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureField {
    /// The signing host's name (`gethostname` of `guix publish`); informational, not signed.
    pub host: String,
    /// The signature itself.
    pub signature: GuixSignature,
}

impl SignatureField {
    /// Signs `signed_part` (the exact bytes before `Signature:`) with `key` for `host`.
    pub fn sign(
        signed_part: &str,
        host: &str,
        key: &GuixSecretKey,
    ) -> Result<Self, GuixNarInfoError> {
        check_host(host)?;
        Ok(SignatureField {
            host: host.to_owned(),
            signature: GuixSignature::sign(key, &Sha256::digest(signed_part).into()),
        })
    }

    /// Reads a `Signature` value as Guix does: version `1`, three `;`-separated parts, base64
    /// of UTF-8 text whose characters are the s-expression's bytes.
    pub fn parse(value: &str) -> Result<Self, GuixNarInfoError> {
        let mut parts = value.split(';');
        let (Some(version), Some(host), Some(payload), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(GuixNarInfoError::SignatureField(
                "expected three `;`-separated parts",
            ));
        };
        if version != "1" {
            return Err(GuixNarInfoError::SignatureField("unsupported version"));
        }
        let payload = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|_| GuixNarInfoError::SignatureField("payload is not base64"))?;
        let text = String::from_utf8(payload)
            .map_err(|_| GuixNarInfoError::SignatureField("payload is not UTF-8"))?;
        let signature = GuixSignature::from_sexp(&Sexp::parse_text(&text)?)?;
        Ok(SignatureField {
            host: host.to_owned(),
            signature,
        })
    }
}

impl std::fmt::Display for SignatureField {
    /// `1;<host>;<base64>`, the payload being exactly what `guix publish` would encode.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.signature.to_sexp().to_advanced_text();
        let payload = base64::engine::general_purpose::STANDARD.encode(text);
        write!(f, "1;{};{}", self.host, payload)
    }
}

/// A Guix narinfo.
///
/// Fields are private so they cannot drift from the signed text they were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuixNarInfo {
    /// `StorePath`: full path, e.g. `/gnu/store/<hash>-<name>`.
    store_path: String,
    /// `NarHash` (SHA-256 of the uncompressed NAR).
    nar_hash: NarHash,
    /// `NarSize`: bytes in the uncompressed NAR.
    nar_size: u64,
    /// `References`: basenames in the listed order (Guix compares the list).
    references: Vec<String>,
    /// `Deriver`: basename of the `.drv`, informational.
    deriver: Option<String>,
    /// `System`: e.g. `x86_64-linux`, informational (written by nar-herder, not `guix publish`).
    system: Option<String>,
    /// Download locations, in the order given.
    urls: Vec<NarUrl>,
    /// How many of `urls` lie inside `signed_part` (older layouts), so rendering does not
    /// repeat them after the signature.
    signed_urls: usize,
    /// Exactly the bytes the signature covers: the text before `Signature:`. For a narinfo that
    /// was never signed, the whole content part.
    signed_part: String,
    /// The `Signature` value as it appeared (`1;<host>;<base64>`).
    signature: Option<String>,
}

impl GuixNarInfo {
    /// Parses a narinfo. Unknown fields are ignored; a malformed `Signature` value is not an
    /// error here (it is evidence: see [`GuixNarInfo::verify_signature`]).
    pub fn parse(text: &str) -> Result<Self, GuixNarInfoError> {
        if text.len() > MAX_NARINFO_BYTES {
            return Err(GuixNarInfoError::TooLarge {
                len: text.len(),
                max: MAX_NARINFO_BYTES,
            });
        }
        // Guix hashes everything before the first occurrence of "Signature:", wherever it is;
        // insist that this is where the Signature field starts.
        let signed_len = match text.find("Signature:") {
            Some(at) if at > 0 && text.as_bytes()[at - 1] != b'\n' => {
                return Err(GuixNarInfoError::MisplacedSignature)
            }
            Some(at) => at,
            None => text.len(),
        };

        let mut fields = Fields::default();
        let mut offset = 0;
        for (index, raw_line) in text.split_inclusive('\n').enumerate() {
            let line = index + 1;
            let signed = offset < signed_len;
            offset += raw_line.len();
            let content = raw_line.trim_end_matches(['\n', '\r']);
            if content.trim().is_empty() {
                continue;
            }
            let (key, value) = content
                .split_once(':')
                .filter(|(key, _)| !key.is_empty() && !key.contains(char::is_whitespace))
                .ok_or(GuixNarInfoError::BadLine { line })?;
            fields.take(line, signed, key, value.trim())?;
        }
        fields.finish(&text[..signed_len])
    }

    /// A narinfo for agreed `content`, to be [signed](GuixNarInfo::signed) and served.
    pub fn new(
        content: &Content,
        deriver: Option<String>,
        system: Option<String>,
        urls: Vec<NarUrl>,
    ) -> Result<Self, GuixNarInfoError> {
        let fields = Fields {
            store_path: Some(content.store_path.clone()),
            nar_hash: Some(content.nar_hash.to_string()),
            nar_size: Some(content.nar_size.to_string()),
            references: Some(content.references.join(" ")),
            deriver,
            system,
            ..Fields::default()
        };
        let mut narinfo = fields.finish("")?;
        for url in &urls {
            check_url(url)?;
        }
        narinfo.urls = urls;
        narinfo.signed_part = narinfo.publish_layout();
        Ok(narinfo)
    }

    /// This narinfo re-rendered in `guix publish`'s layout and signed by `key` as `host`; all
    /// URL groups go after the signature.
    pub fn signed(mut self, host: &str, key: &GuixSecretKey) -> Result<Self, GuixNarInfoError> {
        self.signed_part = self.publish_layout();
        self.signed_urls = 0;
        let field = SignatureField::sign(&self.signed_part, host, key)?;
        self.signature = Some(field.to_string());
        Ok(self)
    }

    /// The signed part in `guix publish`'s layout (plus `System`, before `Deriver`, as
    /// nar-herder writes it).
    fn publish_layout(&self) -> String {
        let mut out = format!(
            "StorePath: {}\nNarHash: {}\nNarSize: {}\nReferences: {}\n",
            self.store_path,
            self.nar_hash,
            self.nar_size,
            self.references.join(" ")
        );
        if let Some(system) = &self.system {
            out.push_str(&format!("System: {system}\n"));
        }
        if let Some(deriver) = &self.deriver {
            out.push_str(&format!("Deriver: {deriver}\n"));
        }
        out
    }

    /// Checks the signature as Guix does, and more strictly: the embedded key must be one of
    /// `keys`, the digest in `(data ...)` must be the SHA-256 of the signed part, and the
    /// ECDSA value must verify. `None` when the narinfo is unsigned (nobody attested
    /// anything). Keys are identified by the hex of their `q`.
    pub fn verify_signature(&self, keys: &[GuixPublicKey]) -> Option<SigCheck> {
        let value = self.signature.as_ref()?;
        let field = match SignatureField::parse(value) {
            Ok(field) => field,
            Err(e) => {
                return Some(SigCheck::Malformed {
                    reason: e.to_string(),
                })
            }
        };
        let claimed = field.signature.key();
        let key_name = claimed.q_hex();
        if !keys.contains(claimed) {
            return Some(SigCheck::UnknownKey { key_name });
        }
        let digest: [u8; 32] = Sha256::digest(&self.signed_part).into();
        let reason = if field.signature.digest() != &digest {
            InvalidReason::HashMismatch
        } else if !field.signature.verify() {
            InvalidReason::BadSignature
        } else {
            return Some(SigCheck::Valid { key_name });
        };
        Some(SigCheck::Invalid { key_name, reason })
    }

    /// What this narinfo claims: the fields quorum compares.
    pub fn content(&self) -> Content {
        Content {
            store_path: self.store_path.clone(),
            nar_hash: self.nar_hash,
            nar_size: self.nar_size,
            references: self.references.clone(),
        }
    }

    /// `StorePath`.
    pub fn store_path(&self) -> &str {
        &self.store_path
    }

    /// The 32-character nix32 hash part of the store path (the narinfo's URL name).
    pub fn hash_part(&self) -> &str {
        let basename = self.store_path.rsplit('/').next().unwrap_or_default();
        basename.get(..HASH_PART_LEN).unwrap_or_default()
    }

    /// `NarHash`, however the narinfo spelled it.
    pub fn nar_hash(&self) -> NarHash {
        self.nar_hash
    }

    /// `NarSize`.
    pub fn nar_size(&self) -> u64 {
        self.nar_size
    }

    /// `References` basenames, in the listed order.
    pub fn references(&self) -> &[String] {
        &self.references
    }

    /// `Deriver` basename.
    pub fn deriver(&self) -> Option<&str> {
        self.deriver.as_deref()
    }

    /// `System`.
    pub fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// Download locations.
    pub fn urls(&self) -> &[NarUrl] {
        &self.urls
    }

    /// The exact text the signature covers.
    pub fn signed_part(&self) -> &str {
        &self.signed_part
    }

    /// The `Signature` value as given (`1;<host>;<base64>`).
    pub fn signature(&self) -> Option<&str> {
        self.signature.as_deref()
    }
}

impl std::fmt::Display for GuixNarInfo {
    /// The signed part, the `Signature` line, then the unsigned URL groups. A narinfo from
    /// [`GuixNarInfo::signed`] comes out in `guix publish`'s layout; a parsed one comes out as
    /// read, minus unknown fields after the signature.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.signed_part)?;
        if let Some(signature) = &self.signature {
            writeln!(f, "Signature: {signature}")?;
        }
        for url in &self.urls[self.signed_urls.min(self.urls.len())..] {
            writeln!(f, "URL: {}", url.url)?;
            if let Some(compression) = &url.compression {
                writeln!(f, "Compression: {compression}")?;
            }
            if let Some(size) = url.file_size {
                writeln!(f, "FileSize: {size}")?;
            }
        }
        Ok(())
    }
}

/// Raw field values collected while reading, validated by [`Fields::finish`].
#[derive(Default)]
struct Fields {
    store_path: Option<String>,
    nar_hash: Option<String>,
    nar_size: Option<String>,
    references: Option<String>,
    deriver: Option<String>,
    system: Option<String>,
    signature: Option<String>,
    urls: Vec<NarUrl>,
    signed_urls: usize,
}

impl Fields {
    fn take(
        &mut self,
        line: usize,
        signed: bool,
        key: &str,
        value: &str,
    ) -> Result<(), GuixNarInfoError> {
        let (slot, field) = match key {
            "StorePath" => (&mut self.store_path, "StorePath"),
            "NarHash" => (&mut self.nar_hash, "NarHash"),
            "NarSize" => (&mut self.nar_size, "NarSize"),
            "References" => (&mut self.references, "References"),
            "Deriver" => (&mut self.deriver, "Deriver"),
            "System" => (&mut self.system, "System"),
            "Signature" => {
                if self.signature.replace(value.to_owned()).is_some() {
                    return Err(GuixNarInfoError::Duplicate {
                        line,
                        field: "Signature",
                    });
                }
                return Ok(());
            }
            "URL" => {
                self.urls.push(NarUrl {
                    url: value.to_owned(),
                    compression: None,
                    file_size: None,
                });
                if signed {
                    self.signed_urls = self.urls.len();
                }
                return Ok(());
            }
            "Compression" | "FileSize" => return self.take_url_detail(line, signed, key, value),
            _ => return Ok(()), // unknown fields are ignored, as Guix does
        };
        if !signed {
            return Err(GuixNarInfoError::OutsideSignedPart { line, field });
        }
        if slot.replace(value.to_owned()).is_some() {
            return Err(GuixNarInfoError::Duplicate { line, field });
        }
        Ok(())
    }

    fn take_url_detail(
        &mut self,
        line: usize,
        signed: bool,
        key: &str,
        value: &str,
    ) -> Result<(), GuixNarInfoError> {
        let field = if key == "Compression" {
            "Compression"
        } else {
            "FileSize"
        };
        // A group is signed or not as a whole: an unsigned line cannot amend a signed URL.
        if !signed && !self.urls.is_empty() && self.urls.len() == self.signed_urls {
            return Err(GuixNarInfoError::OutsideSignedPart { line, field });
        }
        let group = self
            .urls
            .last_mut()
            .ok_or(GuixNarInfoError::OrphanField { line, field })?;
        let duplicate = if key == "Compression" {
            group.compression.replace(value.to_owned()).is_some()
        } else {
            let size = parse_size(value, "FileSize")?;
            group.file_size.replace(size).is_some()
        };
        if duplicate {
            return Err(GuixNarInfoError::Duplicate { line, field });
        }
        Ok(())
    }

    fn finish(self, signed_part: &str) -> Result<GuixNarInfo, GuixNarInfoError> {
        let store_path = self
            .store_path
            .ok_or(GuixNarInfoError::Missing("StorePath"))?;
        check_store_path(&store_path)?;
        let nar_hash = NarHash::parse(&self.nar_hash.ok_or(GuixNarInfoError::Missing("NarHash"))?)
            .map_err(|e| invalid("NarHash", e.to_string()))?;
        let nar_size = parse_size(
            &self.nar_size.ok_or(GuixNarInfoError::Missing("NarSize"))?,
            "NarSize",
        )?;
        let references: Vec<String> = self
            .references
            .ok_or(GuixNarInfoError::Missing("References"))?
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect();
        for reference in &references {
            check_basename(&store_path, reference, "References")?;
        }
        if let Some(deriver) = &self.deriver {
            check_basename(&store_path, deriver, "Deriver")?;
        }
        if self
            .system
            .as_deref()
            .is_some_and(|v| v.is_empty() || v.contains(char::is_whitespace))
        {
            return Err(invalid("System", "empty or contains whitespace"));
        }
        for url in &self.urls {
            check_url(url)?;
        }
        Ok(GuixNarInfo {
            store_path,
            nar_hash,
            nar_size,
            references,
            deriver: self.deriver,
            system: self.system,
            urls: self.urls,
            signed_urls: self.signed_urls,
            signed_part: signed_part.to_owned(),
            signature: self.signature,
        })
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> GuixNarInfoError {
    GuixNarInfoError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Decimal digits only (`u64::from_str` would also take a leading `+`).
/// A size in bytes: decimal, at most [`MAX_NAR_SIZE`].
fn parse_size(value: &str, field: &'static str) -> Result<u64, GuixNarInfoError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(field, format!("{value:?} is not a decimal number")));
    }
    value
        .parse()
        .ok()
        .filter(|size| *size <= MAX_NAR_SIZE)
        .ok_or_else(|| invalid(field, format!("{value:?} is out of range")))
}

/// The store directory of an absolute store path (`/gnu/store` for `/gnu/store/<hash>-<name>`).
fn store_dir(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) => "/",
        Some((dir, _)) => dir,
        None => "",
    }
}

/// A full store path, by the daemon's rules (shared by Nix and Guix).
fn check_store_path(path: &str) -> Result<(), GuixNarInfoError> {
    StorePath::parse(store_dir(path), path)
        .map(drop)
        .map_err(|e| invalid("StorePath", e.to_string()))
}

/// A store item basename `<hash>-<name>` (references, deriver), by the daemon's rules.
fn check_basename(
    store_path: &str,
    name: &str,
    field: &'static str,
) -> Result<(), GuixNarInfoError> {
    StorePath::from_basename(store_dir(store_path), name)
        .map(drop)
        .map_err(|e| invalid(field, e.to_string()))
}

fn check_url(url: &NarUrl) -> Result<(), GuixNarInfoError> {
    let single_line = |s: &str| !s.is_empty() && !s.contains(['\n', '\r']);
    if !single_line(&url.url) {
        return Err(invalid("URL", "empty or spans lines"));
    }
    if url.compression.as_deref().is_some_and(|c| !single_line(c)) {
        return Err(invalid("Compression", "empty or spans lines"));
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), GuixNarInfoError> {
    if host.is_empty() || host.contains(|c: char| c == ';' || c.is_whitespace() || c.is_control()) {
        return Err(GuixNarInfoError::BadHost(host.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::signature::SigStatus;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/guix");

    fn vector(name: &str) -> String {
        std::fs::read_to_string(format!("{VECTORS}/{name}")).expect("test vector is readable")
    }

    fn key(name: &str) -> GuixPublicKey {
        GuixPublicKey::parse(&vector(name)).expect("vector key")
    }

    fn secret() -> GuixSecretKey {
        GuixSecretKey::parse(&vector("signing-key.sec")).expect("vector secret key")
    }

    const SIGNED_VECTORS: [(&str, &str); 3] = [
        ("bordeaux-hello-2.12.2.narinfo", "bordeaux.guix.gnu.org.pub"),
        ("generated.narinfo", "signing-key.pub"),
        ("generated-short-r.narinfo", "signing-key.pub"),
    ];

    fn check(text: &str, keys: &[GuixPublicKey]) -> Option<SigCheck> {
        GuixNarInfo::parse(text)
            .ok()
            .and_then(|n| n.verify_signature(keys))
    }

    #[test]
    fn every_vector_verifies_under_its_publishers_key() {
        for (narinfo, pub_file) in SIGNED_VECTORS {
            let parsed = GuixNarInfo::parse(&vector(narinfo)).expect("parses");
            let trusted = key(pub_file);
            let others = [key("berlin.guix.gnu.org.pub"), trusted];
            assert_eq!(
                parsed.verify_signature(&others),
                Some(SigCheck::Valid {
                    key_name: trusted.q_hex(),
                }),
                "{narinfo}"
            );
            assert_eq!(
                parsed.verify_signature(&others).map(|c| c.status()),
                Some(SigStatus::Valid)
            );
        }
    }

    #[test]
    fn a_signature_by_an_unconfigured_key_is_unknown_not_valid() {
        let parsed = GuixNarInfo::parse(&vector("generated.narinfo")).expect("parses");
        let check = parsed.verify_signature(&[key("bordeaux.guix.gnu.org.pub")]);
        assert_eq!(
            check,
            Some(SigCheck::UnknownKey {
                key_name: key("signing-key.pub").q_hex(),
            })
        );
        assert_eq!(
            check.as_ref().map(SigCheck::status),
            Some(SigStatus::UnknownKey)
        );
        assert!(matches!(
            parsed.verify_signature(&[]),
            Some(SigCheck::UnknownKey { .. })
        ));
    }

    #[test]
    fn any_flipped_bit_in_the_signed_part_fails() {
        for (narinfo, pub_file) in SIGNED_VECTORS {
            let text = vector(narinfo);
            let keys = [key(pub_file)];
            let signed_len = text.find("Signature:").expect("signed");
            let mut bytes = text.clone().into_bytes();
            for bit in 0..signed_len * 8 {
                bytes[bit / 8] ^= 1 << (bit % 8);
                if let Ok(flipped) = std::str::from_utf8(&bytes) {
                    let outcome = check(flipped, &keys);
                    assert!(
                        !matches!(outcome, Some(SigCheck::Valid { .. })),
                        "{narinfo}: bit {bit} flipped still verifies"
                    );
                }
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
        }
    }

    #[test]
    fn any_flipped_bit_in_the_signature_payload_fails_unless_it_only_respells_it() {
        let text = vector("generated.narinfo");
        let keys = [key("signing-key.pub")];
        let parsed = GuixNarInfo::parse(&text).expect("parses");
        let value = parsed.signature().expect("signed").to_owned();
        let payload_start = text.find(&value).expect("present") + "1;testhost;".len();
        let payload_end = text.find(&value).expect("present") + value.len();
        let original = SignatureField::parse(&value)
            .expect("parses")
            .signature
            .to_sexp();
        let mut bytes = text.into_bytes();
        let (mut rejected, mut respelled) = (0, 0);
        for bit in payload_start * 8..payload_end * 8 {
            if bit % 8 == 7 {
                continue; // not ASCII any more: the narinfo is not even UTF-8
            }
            bytes[bit / 8] ^= 1 << (bit % 8);
            let flipped = std::str::from_utf8(&bytes).expect("ASCII stays UTF-8");
            match check(flipped, &keys) {
                Some(SigCheck::Valid { .. }) => {
                    // Only a change of spelling, not of meaning (e.g. `\n` → `\v` whitespace or
                    // hex digit case in the s-expression), may still verify.
                    let now = GuixNarInfo::parse(flipped).expect("parses");
                    let field = SignatureField::parse(now.signature().expect("signed"));
                    assert_eq!(
                        field.expect("parses").signature.to_sexp(),
                        original,
                        "bit {bit}"
                    );
                    respelled += 1;
                }
                _ => rejected += 1,
            }
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        eprintln!("{rejected} flips rejected, {respelled} only respelled the s-expression");
        assert!(
            rejected > 9 * respelled,
            "{rejected} rejected, {respelled} respelled"
        );
    }

    #[test]
    fn a_valid_signature_moved_onto_another_configured_key_is_invalid() {
        let text = vector("generated.narinfo");
        let parsed = GuixNarInfo::parse(&text).expect("parses");
        let field = SignatureField::parse(parsed.signature().expect("signed")).expect("parses");
        let bordeaux = key("bordeaux.guix.gnu.org.pub");
        let forged = SignatureField {
            host: "testhost".into(),
            signature: GuixSignature::from_sexp(&Sexp::list(vec![
                Sexp::atom("signature"),
                field
                    .signature
                    .to_sexp()
                    .find_token("data")
                    .expect("data")
                    .clone(),
                field.signature.value().to_sexp(),
                bordeaux.to_sexp(),
            ]))
            .expect("well-formed"),
        };
        let forged_text = text.replace(parsed.signature().expect("signed"), &forged.to_string());
        assert_eq!(
            check(&forged_text, &[bordeaux]),
            Some(SigCheck::Invalid {
                key_name: bordeaux.q_hex(),
                reason: InvalidReason::BadSignature
            })
        );
    }

    #[test]
    fn a_signature_over_other_text_is_a_hash_mismatch() {
        let original = vector("generated.narinfo");
        let parsed = GuixNarInfo::parse(&original).expect("parses");
        let other = original.replace("NarSize: 282616", "NarSize: 282617");
        let check = GuixNarInfo::parse(&other)
            .expect("parses")
            .verify_signature(&[key("signing-key.pub")]);
        assert_eq!(
            check,
            Some(SigCheck::Invalid {
                key_name: key("signing-key.pub").q_hex(),
                reason: InvalidReason::HashMismatch
            })
        );
        assert_eq!(
            check.as_ref().map(SigCheck::status),
            Some(SigStatus::Invalid)
        );
        assert_eq!(parsed.nar_size(), 282616);
    }

    #[test]
    fn resigning_with_the_libgcrypt_key_reproduces_the_narinfo_byte_for_byte() {
        let key = secret();
        for narinfo in ["generated.narinfo", "generated-short-r.narinfo"] {
            let text = vector(narinfo);
            let resigned = GuixNarInfo::parse(&text)
                .expect("parses")
                .signed("testhost", &key)
                .expect("signs");
            assert_eq!(resigned.to_string(), text, "{narinfo}");
        }
    }

    #[test]
    fn rerendering_the_bordeaux_narinfo_reproduces_its_signed_part() {
        let text = vector("bordeaux-hello-2.12.2.narinfo");
        let parsed = GuixNarInfo::parse(&text).expect("parses");
        assert_eq!(parsed.publish_layout(), parsed.signed_part());
        assert_eq!(parsed.to_string(), text);
        let resigned = parsed.clone().signed("quorate", &secret()).expect("signs");
        assert_eq!(resigned.signed_part(), parsed.signed_part());
        assert_eq!(
            resigned.verify_signature(&[key("signing-key.pub")]),
            Some(SigCheck::Valid {
                key_name: key("signing-key.pub").q_hex(),
            })
        );
    }

    #[test]
    fn content_normalises_the_hash_and_keeps_reference_order() {
        let parsed = GuixNarInfo::parse(&vector("bordeaux-hello-2.12.2.narinfo")).expect("parses");
        let content = parsed.content();
        assert_eq!(
            content.store_path,
            "/gnu/store/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2"
        );
        assert_eq!(
            content.nar_hash.to_string(),
            "sha256:0qhasy0w9w9mfv0vacgzymxl4nww8cslyza5x2ci42v7i2b13lyl"
        );
        assert_eq!(content.nar_size, 282616);
        assert_eq!(
            content.references,
            [
                "cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2",
                "m2vhzr0dy352cn59sgcklcaykprrr4j6-gcc-14.3.0-lib",
                "yj053cys0724p7vs9kir808x7fivz17m-glibc-2.41"
            ]
        );
        assert_eq!(parsed.hash_part(), "cs56i9digj9qg1bd383cmxc6xrfpdn9n");
        assert_eq!(parsed.system(), Some("x86_64-linux"));
        assert_eq!(
            parsed.deriver(),
            Some("rxw8g87bf61bwbagfq38sp5xwy28jb5d-hello-2.12.2.drv")
        );
        assert_eq!(
            parsed.urls(),
            [
                NarUrl {
                    url: "nar/lzip/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2".into(),
                    compression: Some("lzip".into()),
                    file_size: Some(68076),
                },
                NarUrl {
                    url: "nar/zstd/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2".into(),
                    compression: Some("zstd".into()),
                    file_size: Some(73413),
                },
            ]
        );
        let short = GuixNarInfo::parse(&vector("generated-short-r.narinfo")).expect("parses");
        assert!(short.content().references.is_empty());

        let hex = vector("generated.narinfo").replace(
            "sha256:0qhasy0w9w9mfv0vacgzymxl4nww8cslyza5x2ci42v7i2b13lyl",
            &format!(
                "sha256:{}",
                crate::protocol::sexp::hex_upper(parsed.nar_hash().digest()).to_lowercase()
            ),
        );
        let hex = GuixNarInfo::parse(&hex).expect("hex NarHash parses");
        assert_eq!(hex.content().nar_hash, content.nar_hash);
    }

    #[test]
    fn a_narinfo_built_from_content_signs_and_verifies() {
        let parsed = GuixNarInfo::parse(&vector("bordeaux-hello-2.12.2.narinfo")).expect("parses");
        let urls = vec![NarUrl {
            url: "nar/zstd/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2".into(),
            compression: Some("zstd".into()),
            file_size: None,
        }];
        let key = GuixSecretKey::generate().expect("randomness");
        let built = GuixNarInfo::new(
            &parsed.content(),
            parsed.deriver().map(str::to_owned),
            None,
            urls.clone(),
        )
        .expect("valid content");
        assert_eq!(built.verify_signature(&[*key.public()]), None, "unsigned");
        let text = built
            .signed("quorate.example", &key)
            .expect("signs")
            .to_string();
        assert!(
            text.contains("\nSignature: 1;quorate.example;KHNpZ25hdHVyZSAK"),
            "{text}"
        );
        assert!(text.ends_with(
            "\nURL: nar/zstd/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2\nCompression: zstd\n"
        ));
        let reread = GuixNarInfo::parse(&text).expect("parses");
        assert_eq!(
            reread.verify_signature(&[*key.public()]),
            Some(SigCheck::Valid {
                key_name: key.public().q_hex(),
            })
        );
        assert_eq!(reread.content(), parsed.content());
        assert_eq!(reread.urls(), urls);
        assert!(!reread.signed_part().contains("System"));
    }

    #[test]
    fn url_groups_inside_the_signed_part_are_read_and_kept_in_place() {
        // Older `guix publish` put the URL groups before the signature, inside the signed part.
        let text = vector("generated.narinfo");
        let at = text.find("Signature:").expect("signed");
        let tail_at = text.find("URL:").expect("has URLs");
        let signed_part = format!("{}{}", &text[..at], &text[tail_at..]);
        let field = SignatureField::sign(&signed_part, "old", &secret()).expect("signs");
        let legacy = format!("{signed_part}Signature: {field}\n");
        let parsed = GuixNarInfo::parse(&legacy).expect("parses");
        assert_eq!(parsed.urls().len(), 2);
        assert_eq!(parsed.signed_part(), signed_part);
        assert_eq!(parsed.to_string(), legacy, "URL groups are not repeated");
        assert_eq!(
            parsed.verify_signature(&[key("signing-key.pub")]),
            Some(SigCheck::Valid {
                key_name: key("signing-key.pub").q_hex(),
            })
        );
        let modern = parsed.signed("new", &secret()).expect("signs").to_string();
        assert!(
            modern.starts_with(&text[..at]),
            "re-signing moves URLs after the signature"
        );
        assert!(modern.ends_with(&text[tail_at..]));
    }

    #[test]
    fn content_fields_after_the_signature_are_refused() {
        let text = vector("generated.narinfo");
        for extra in [
            "NarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\n",
            "References: \n",
            "StorePath: /gnu/store/cs56i9digj9qg1bd383cmxc6xrfpdn9n-evil\n",
        ] {
            let err = GuixNarInfo::parse(&format!("{text}{extra}")).expect_err(extra);
            assert!(
                matches!(err, GuixNarInfoError::OutsideSignedPart { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn a_url_group_cannot_straddle_the_signature() {
        // Found by fuzz/fuzz_targets/guix_narinfo.rs: `Compression`/`FileSize` after the
        // signature amended the signed URL group before it, and printing the narinfo lost them.
        let text = vector("generated.narinfo");
        let at = text.find("Signature:").expect("signed");
        let (signed, signature) = text[..].split_at(at);
        let signature_line = signature.lines().next().expect("Signature line");
        for (extra, field) in [
            ("Compression: zstd\n", "Compression"),
            ("FileSize: 73413\n", "FileSize"),
        ] {
            let straddling = format!("{signed}URL: nar/x\n{signature_line}\n{extra}");
            assert_eq!(
                GuixNarInfo::parse(&straddling),
                Err(GuixNarInfoError::OutsideSignedPart { line: 8, field }),
                "{straddling}"
            );
            // A group wholly on either side is fine.
            let signed_group = format!("{signed}URL: nar/x\n{extra}{signature_line}\n");
            let parsed = GuixNarInfo::parse(&signed_group).expect("a signed group");
            assert_eq!(GuixNarInfo::parse(&parsed.to_string()), Ok(parsed));
            let unsigned_group = format!("{signed}{signature_line}\nURL: nar/x\n{extra}");
            let parsed = GuixNarInfo::parse(&unsigned_group).expect("an unsigned group");
            assert_eq!(GuixNarInfo::parse(&parsed.to_string()), Ok(parsed));
        }
    }

    #[test]
    fn malformed_narinfos_are_refused_with_a_reason() {
        let text = vector("generated.narinfo");
        let cases: Vec<(String, &str)> = vec![
            (
                text.replace("NarSize: 282616\n", ""),
                "narinfo lacks NarSize",
            ),
            (
                text.replace("StorePath: ", "StorePath: gnu/"),
                "narinfo StorePath is invalid",
            ),
            (
                text.replace("NarSize: 282616", "NarSize: +282616"),
                "narinfo NarSize is invalid",
            ),
            (
                text.replace("NarSize: 282616", "NarSize: 99999999999999999999"),
                "narinfo NarSize is invalid",
            ),
            // 2^63: a u64, but larger than any file (or database integer) can be.
            (
                text.replace("NarSize: 282616", "NarSize: 9223372036854775808"),
                "narinfo NarSize is invalid",
            ),
            (
                text.replace("sha256:0q", "sha256:eq"),
                "narinfo NarHash is invalid",
            ),
            (
                text.replace("sha256:0q", "md5:0q"),
                "narinfo NarHash is invalid",
            ),
            (
                text.replace("-glibc-2.41", ""),
                "narinfo References is invalid",
            ),
            (
                text.replace("NarSize: 282616\n", "NarSize: 282616\nNarSize: 282616\n"),
                "narinfo line 4: NarSize given more than once",
            ),
            (
                text.replace("Deriver", "Deriver is here"),
                "narinfo line 5: expected `Key: value`",
            ),
            (
                text.replace("Deriver: ", "Deriver: Signature: "),
                "narinfo has `Signature:` in the middle of a line",
            ),
            (
                text.replace("URL: nar/lzip", "Foo: nar/lzip"),
                "narinfo line 8: Compression before any URL",
            ),
            (
                text.replace("FileSize: 68076", "FileSize: 68076\nFileSize: 1"),
                "narinfo line 10: FileSize given more than once",
            ),
            (
                text.replace("FileSize: 68076", "FileSize: 9223372036854775808"),
                "narinfo FileSize is invalid",
            ),
            (format!("{text}Signature: 1;x;y\n"), "given more than once"),
            (
                "x".repeat(MAX_NARINFO_BYTES + 1),
                "narinfo too large: 65537 bytes (limit 65536)",
            ),
        ];
        for (input, message) in cases {
            let err = GuixNarInfo::parse(&input).expect_err(message);
            assert!(err.to_string().contains(message), "{err} / {message}");
        }
    }

    #[test]
    fn unreadable_signature_fields_are_malformed_not_errors() {
        let text = vector("generated.narinfo");
        let value = GuixNarInfo::parse(&text)
            .expect("parses")
            .signature()
            .expect("signed")
            .to_owned();
        let keys = [key("signing-key.pub")];
        for bad in [
            value.replacen("1;", "2;", 1),
            value.replacen("1;testhost;", "1;", 1),
            format!("{value};extra"),
            value.replacen("KHNp", "!!!!", 1),
            format!(
                "1;h;{}",
                base64::engine::general_purpose::STANDARD.encode("(signature")
            ),
            format!(
                "1;h;{}",
                base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe])
            ),
            format!(
                "1;h;{}",
                base64::engine::general_purpose::STANDARD.encode("(signature (data))")
            ),
        ] {
            let narinfo = GuixNarInfo::parse(&text.replace(&value, &bad)).expect("still parses");
            let outcome = narinfo.verify_signature(&keys).expect("signed");
            assert!(
                matches!(outcome, SigCheck::Malformed { .. }),
                "{bad}: {outcome:?}"
            );
            assert_eq!(outcome.status(), SigStatus::Invalid);
            assert_eq!(outcome.key_name(), "", "a malformed signature names no key");
        }
    }

    #[test]
    fn the_host_is_informational_and_not_signed() {
        let text = vector("generated.narinfo");
        let renamed = text.replace("1;testhost;", "1;elsewhere;");
        assert_eq!(
            check(&renamed, &[key("signing-key.pub")]),
            Some(SigCheck::Valid {
                key_name: key("signing-key.pub").q_hex(),
            })
        );
        let parsed = GuixNarInfo::parse(&text).expect("parses");
        for host in ["", "a;b", "a b", "a\nb"] {
            assert_eq!(
                parsed.clone().signed(host, &secret()).err(),
                Some(GuixNarInfoError::BadHost(host.into()))
            );
        }
    }

    #[test]
    fn truncations_and_garbage_never_panic() {
        let text = vector("bordeaux-hello-2.12.2.narinfo");
        let keys = [key("bordeaux.guix.gnu.org.pub")];
        for cut in 0..text.len() {
            if let Some(prefix) = text.get(..cut) {
                let _ = check(prefix, &keys);
            }
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let mut bytes = text.clone().into_bytes();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state as usize) % bytes.len();
                bytes[at] = (state >> 32) as u8;
            }
            if let Ok(mutated) = std::str::from_utf8(&bytes) {
                let _ = check(mutated, &keys);
            }
        }
    }
}
