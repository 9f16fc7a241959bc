//! The Guix front end: guix-publish narinfos with one `Signature:` (ECDSA over
//! edwards25519, the key embedded), NARs at `nar/<basename>` (uncompressed) and
//! `nar/zstd/<basename>` (compressed on the fly).

use crate::attestation::{Agreed, Attestation, NarSource, Observation, Pushed};
use crate::builder::BuilderKey;
use crate::protocol::compression::Compression;
use crate::protocol::guix_key::{GuixPublicKey, GuixSecretKey};
use crate::protocol::guix_narinfo::{GuixNarInfo, NarUrl};
use crate::protocol::store_path::{HashPart, StorePath, HASH_PART_LEN};

use super::{
    CompressedNar, FrontEnd, FrontEndError, NarEncoding, NarRequest, NarRouteError, Scope, Seen,
};

/// The host named in quorate's Guix `Signature:` fields (informational, unsigned).
pub const SIGNATURE_HOST: &str = "quorate";

/// A Guix cache's front end.
pub(super) struct GuixFrontEnd {
    scope: Scope,
    /// Every builder key, for signature checks (a signature embeds its key).
    keys: Vec<GuixPublicKey>,
    /// quorate's key for this cache.
    signer: GuixSecretKey,
}

impl GuixFrontEnd {
    pub(super) fn new(scope: Scope, signer: GuixSecretKey) -> Self {
        let keys = scope
            .builders
            .iter()
            .flat_map(|b| &b.keys)
            .filter_map(BuilderKey::as_guix)
            .copied()
            .collect();
        GuixFrontEnd {
            scope,
            keys,
            signer,
        }
    }
}

impl GuixFrontEnd {
    /// The attestation of `ni`'s signature (none when it is unsigned: an unsigned narinfo
    /// attests nothing), once its store path is known to be in this cache's store.
    fn attestations(
        &self,
        ni: &GuixNarInfo,
        hash_part: &HashPart,
        upstream: &str,
        seen_at: i64,
    ) -> Result<Vec<Attestation>, FrontEndError> {
        StorePath::parse(&self.scope.store_dir, ni.store_path())?;
        let content = ni.content();
        let seen = Seen {
            hash_part,
            content: &content,
            deriver: ni.deriver().map(str::to_owned),
            ca: None,
            upstream,
            seen_at,
            signed_body: Some(ni.signed_part()),
        };
        Ok(match (ni.verify_signature(&self.keys), ni.signature()) {
            (Some(check), Some(signature)) => {
                vec![self.scope.attestation(&seen, &check, signature)]
            }
            _ => vec![],
        })
    }
}

impl FrontEnd for GuixFrontEnd {
    fn observe(
        &self,
        upstream: &str,
        hash_part: &HashPart,
        text: &str,
        seen_at: i64,
    ) -> Result<Observation, FrontEndError> {
        let ni = GuixNarInfo::parse(text)?;
        if ni.hash_part() != hash_part.as_str() {
            return Err(FrontEndError::WrongPath {
                asked: hash_part.clone(),
                got: ni.store_path().to_owned(),
            });
        }
        let attestations = self.attestations(&ni, hash_part, upstream, seen_at)?;
        let nar_hash = ni.nar_hash();
        // Prefer a compression quorate can decode, in the order the upstream lists them.
        let source = ni
            .urls()
            .iter()
            .find(|u| {
                u.compression
                    .as_deref()
                    .unwrap_or("none")
                    .parse::<Compression>()
                    .is_ok()
            })
            .map(|u| NarSource {
                upstream: upstream.to_owned(),
                nar_hash,
                url: u.url.clone(),
                compression: u.compression.clone().unwrap_or_else(|| "none".into()),
                file_size: u.file_size,
            });
        Ok(Observation {
            attestations,
            source,
        })
    }

    fn read_pushed(&self, pusher: &str, text: &str, seen_at: i64) -> Result<Pushed, FrontEndError> {
        let ni = GuixNarInfo::parse(text)?;
        let hash_part = StorePath::parse(&self.scope.store_dir, ni.store_path())?
            .hash_part()
            .parse()?;
        Ok(Pushed {
            store_path: ni.store_path().to_owned(),
            attestations: self.attestations(&ni, &hash_part, pusher, seen_at)?,
            hash_part,
        })
    }

    /// Guix keys are identified by their bytes, and a recorded signature was verified over
    /// its narinfo when seen: the key still belonging to the same builder is enough.
    fn still_trusted(&self, a: &Attestation) -> bool {
        self.scope.same_builder_still(a)
    }

    fn revoked(&self, a: &Attestation) -> bool {
        self.scope.revoked(a)
    }

    fn render(
        &self,
        agreed: &Agreed,
        zstd: Option<&CompressedNar>,
    ) -> Result<String, FrontEndError> {
        let c = &agreed.content;
        // The basename as one URL path segment: of the store-path name characters only `?`
        // is not a path character (it would start a query), so it alone is escaped, as
        // guix-publish's `uri-encode` would; the NAR route gets it back decoded.
        let basename = c.basename().replace('?', "%3F");
        // FileSize only with a stored compressed copy: while compressing on the fly the
        // compressed size is unknown, and Guix requires FileSize on every group or on none.
        // (lzip is not offered.)
        let urls = vec![
            NarUrl {
                url: format!("nar/zstd/{basename}"),
                compression: Some("zstd".into()),
                file_size: zstd.map(|z| z.file_size),
            },
            NarUrl {
                url: format!("nar/{basename}"),
                compression: Some("none".into()),
                file_size: zstd.map(|_| c.nar_size),
            },
        ];
        let ni = GuixNarInfo::new(c, agreed.deriver.clone(), None, urls)?
            .signed(SIGNATURE_HOST, &self.signer)?;
        Ok(ni.to_string())
    }

    fn public_key_text(&self) -> String {
        self.signer.public().to_advanced()
    }

    fn nar_request(
        &self,
        compression: Option<&str>,
        basename: &str,
    ) -> Result<NarRequest, NarRouteError> {
        let encoding = match compression {
            None | Some("none") => NarEncoding::Identity,
            Some("zstd") => NarEncoding::Zstd,
            Some(_) => return Err(NarRouteError::NotFound("compression not offered")),
        };
        let malformed = NarRouteError::Malformed("malformed store path name");
        let hash_part = basename.get(..HASH_PART_LEN).ok_or(malformed)?;
        if basename.as_bytes().get(HASH_PART_LEN) != Some(&b'-') {
            return Err(malformed);
        }
        Ok(NarRequest::ByStorePath {
            hash_part: hash_part.parse().map_err(|_| malformed)?,
            basename: basename.to_owned(),
            encoding,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attestation::Content;
    use crate::builder::Builder;
    use crate::flavor::{front_end, Signer};
    use crate::protocol::nar_hash::NarHash;

    #[test]
    fn a_question_mark_in_a_store_path_name_is_escaped_in_nar_urls_and_routed_back() {
        let key = GuixSecretKey::generate().expect("randomness");
        let builders = [Builder::new("b", vec![BuilderKey::Guix(*key.public())])];
        let front = front_end("g", "/gnu/store", &builders, Signer::Guix(key));
        let basename = "0vpqfxbkx0ffrnhbws6g9qwhmliksz7f-odd?name=1";
        let content = Content {
            store_path: format!("/gnu/store/{basename}"),
            nar_hash: NarHash::from_digest([3; 32]),
            nar_size: 1234,
            references: vec![],
        };
        let agreed = Agreed::new(content, vec!["b".into()], &[], []);
        let text = front.render(&agreed, None).expect("rendered");
        let ni = GuixNarInfo::parse(&text).expect("Guix reads it");
        let urls: Vec<&str> = ni.urls().iter().map(|u| u.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "nar/zstd/0vpqfxbkx0ffrnhbws6g9qwhmliksz7f-odd%3Fname=1",
                "nar/0vpqfxbkx0ffrnhbws6g9qwhmliksz7f-odd%3Fname=1"
            ]
        );
        // The route sees the decoded segment, and finds the same store path.
        match front.nar_request(Some("zstd"), basename) {
            Ok(NarRequest::ByStorePath { basename: b, .. }) => assert_eq!(b, basename),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stored_zstd_copy_gives_every_url_group_its_file_size() {
        let key = GuixSecretKey::generate().expect("randomness");
        let builders = [Builder::new("b", vec![BuilderKey::Guix(*key.public())])];
        let front = front_end("g", "/gnu/store", &builders, Signer::Guix(key));
        let content = Content {
            store_path: "/gnu/store/0vpqfxbkx0ffrnhbws6g9qwhmliksz7f-hello".into(),
            nar_hash: NarHash::from_digest([3; 32]),
            nar_size: 1234,
            references: vec![],
        };
        let agreed = Agreed::new(content, vec!["b".into()], &[], []);
        let sizes = |zstd: Option<&CompressedNar>| {
            let text = front.render(&agreed, zstd).expect("rendered");
            let ni = GuixNarInfo::parse(&text).expect("Guix reads it");
            ni.urls()
                .iter()
                .map(|u| (u.compression.clone(), u.file_size))
                .collect::<Vec<_>>()
        };
        let zstd = CompressedNar {
            file_hash: NarHash::from_digest([9; 32]),
            file_size: 321,
        };
        assert_eq!(
            sizes(Some(&zstd)),
            [
                (Some("zstd".to_owned()), Some(321)),
                (Some("none".to_owned()), Some(1234))
            ]
        );
        assert_eq!(
            sizes(None),
            [
                (Some("zstd".to_owned()), None),
                (Some("none".to_owned()), None)
            ]
        );
    }
}
