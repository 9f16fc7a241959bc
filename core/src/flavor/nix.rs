//! The Nix front end: narinfos with `Sig:` lines (Ed25519 over the fingerprint), NARs at
//! `nar/<nix32 NarHash>.nar`, served uncompressed.

use crate::attestation::{Agreed, Attestation, NarSource, Observation, Pushed};
use crate::builder::BuilderKey;
use crate::protocol::narinfo::{fingerprint_of, NixNarInfo};
use crate::protocol::nix_key::{check_sig, NixPublicKey, NixSecretKey};
use crate::protocol::store_path::{HashPart, StorePath};

use super::{
    CompressedNar, FrontEnd, FrontEndError, NarEncoding, NarRequest, NarRouteError, Scope, Seen,
};

/// A Nix cache's front end.
pub(super) struct NixFrontEnd {
    scope: Scope,
    /// Every builder key, for signature checks (a Sig names its key).
    keys: Vec<NixPublicKey>,
    /// quorate's key for this cache.
    signer: NixSecretKey,
}

impl NixFrontEnd {
    pub(super) fn new(scope: Scope, signer: NixSecretKey) -> Self {
        let keys = scope
            .builders
            .iter()
            .flat_map(|b| &b.keys)
            .filter_map(BuilderKey::as_nix)
            .cloned()
            .collect();
        NixFrontEnd {
            scope,
            keys,
            signer,
        }
    }
}

impl NixFrontEnd {
    /// One attestation per `Sig:` of `ni`, checked against the builders' keys.
    fn attestations(
        &self,
        ni: &NixNarInfo,
        hash_part: &HashPart,
        upstream: &str,
        seen_at: i64,
    ) -> Vec<Attestation> {
        let fingerprint = ni.fingerprint();
        let content = ni.content();
        let seen = Seen {
            hash_part,
            content: &content,
            deriver: ni.deriver.clone(),
            ca: ni.ca.clone(),
            upstream,
            seen_at,
            signed_body: None,
        };
        ni.sigs
            .iter()
            .map(|sig| {
                let check = check_sig(sig, &fingerprint, &self.keys);
                self.scope.attestation(&seen, &check, sig)
            })
            .collect()
    }
}

impl FrontEnd for NixFrontEnd {
    fn observe(
        &self,
        upstream: &str,
        hash_part: &HashPart,
        text: &str,
        seen_at: i64,
    ) -> Result<Observation, FrontEndError> {
        let ni = NixNarInfo::parse(&self.scope.store_dir, text)?;
        if !ni.store_path.has_hash_part(hash_part) {
            return Err(FrontEndError::WrongPath {
                asked: hash_part.clone(),
                got: ni.store_path.to_string(),
            });
        }
        Ok(Observation {
            attestations: self.attestations(&ni, hash_part, upstream, seen_at),
            source: Some(NarSource {
                upstream: upstream.to_owned(),
                nar_hash: ni.nar_hash,
                url: ni.url,
                compression: ni.compression,
                file_size: ni.file_size,
            }),
        })
    }

    fn read_pushed(&self, pusher: &str, text: &str, seen_at: i64) -> Result<Pushed, FrontEndError> {
        let ni = NixNarInfo::parse(&self.scope.store_dir, text)?;
        let hash_part = ni.store_path.hash_part().parse()?;
        Ok(Pushed {
            store_path: ni.store_path.full().to_owned(),
            attestations: self.attestations(&ni, &hash_part, pusher, seen_at),
            hash_part,
        })
    }

    /// Nix keys are named, so a key replaced under the same name (the usual answer to a
    /// stolen key) must not keep its old signatures alive: they are verified again.
    fn still_trusted(&self, a: &Attestation) -> bool {
        self.scope.same_builder_still(a)
            && check_sig(
                &a.signature,
                &fingerprint_of(&self.scope.store_dir, &a.content),
                &self.keys,
            )
            .is_valid()
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
        let key = c.nar_hash.key();
        // The fingerprint covers neither URL nor compression: the signatures stay the same.
        let (url, compression, file_hash, file_size) = match zstd {
            Some(z) => (
                format!("nar/{key}.nar.zst"),
                "zstd",
                z.file_hash,
                z.file_size,
            ),
            None => (format!("nar/{key}.nar"), "none", c.nar_hash, c.nar_size),
        };
        let mut ni = NixNarInfo {
            store_path: StorePath::parse(&self.scope.store_dir, &c.store_path)?,
            url,
            compression: compression.into(),
            file_hash: Some(file_hash.to_string()),
            file_size: Some(file_size),
            nar_hash: c.nar_hash,
            nar_size: c.nar_size,
            references: c.references.clone(),
            deriver: agreed.deriver.clone(),
            system: None,
            ca: agreed.ca.clone(),
            sigs: agreed.signatures.clone(),
        };
        let own = self.signer.sign(&ni.fingerprint());
        ni.sigs.retain(|s| s != &own);
        ni.sigs.push(own);
        Ok(ni.render())
    }

    fn public_key_text(&self) -> String {
        self.signer.public().to_string()
    }

    fn nar_request(
        &self,
        compression: Option<&str>,
        file: &str,
    ) -> Result<NarRequest, NarRouteError> {
        let (key, encoding) = match (compression, file.strip_suffix(".nar.zst")) {
            (None, Some(key)) => (key, NarEncoding::Zstd),
            (None, None) => match file.strip_suffix(".nar") {
                Some(key) => (key, NarEncoding::Identity),
                None => return Err(NarRouteError::NotFound("not found")),
            },
            (Some(_), _) => return Err(NarRouteError::NotFound("not found")),
        };
        let key = key
            .parse()
            .map_err(|_| NarRouteError::Malformed("malformed NAR name"))?;
        Ok(NarRequest::ByKey { key, encoding })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attestation::{Content, SigStatus};
    use crate::builder::Builder;
    use crate::flavor::{front_end, Signer};
    use crate::protocol::nar_hash::NarHash;

    fn cache_trusting(builder: &str, key: &NixPublicKey) -> Box<dyn FrontEnd> {
        let builders = [Builder::new(builder, vec![BuilderKey::Nix(key.clone())])];
        let signer = Signer::Nix(NixSecretKey::generate("quorate-1").expect("key"));
        front_end("c", "/nix/store", &builders, signer)
    }

    fn attestation_by(key: &NixSecretKey, builder: &str) -> Attestation {
        let content = Content {
            store_path: "/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10".into(),
            nar_hash: NarHash::parse("sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i")
                .expect("hash"),
            nar_size: 205968,
            references: vec!["w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10".into()],
        };
        Attestation {
            cache: "c".into(),
            hash_part: "w9yy7v61ipb5rx6i35zq1mvc2iqfmps1"
                .parse()
                .expect("hash part"),
            signature: key.sign(&fingerprint_of("/nix/store", &content)),
            content,
            deriver: None,
            ca: None,
            key_name: key.name().into(),
            builder: Some(builder.into()),
            upstream: "http://up.example".into(),
            status: SigStatus::Valid,
            seen_at: 0,
            signed_body: None,
            first_seen: 0,
        }
    }

    #[test]
    fn a_recorded_attestation_counts_only_while_its_key_still_verifies_it() {
        let old = NixSecretKey::generate("rebuilder-1").expect("key");
        let att = attestation_by(&old, "rebuilder");
        assert!(cache_trusting("rebuilder", &old.public()).still_trusted(&att));
        // The operator replaced a compromised key, keeping its name.
        let new = NixSecretKey::generate("rebuilder-1").expect("key");
        assert!(!cache_trusting("rebuilder", &new.public()).still_trusted(&att));
        // The key now belongs to another builder.
        assert!(!cache_trusting("someone-else", &old.public()).still_trusted(&att));
        // Only valid observations ever count.
        let invalid = Attestation {
            status: SigStatus::Invalid,
            ..att
        };
        assert!(!cache_trusting("rebuilder", &old.public()).still_trusted(&invalid));
    }

    #[test]
    fn a_revoked_key_counts_only_for_what_was_recorded_before_its_revocation() {
        let stolen = NixSecretKey::generate("rebuilder-1").expect("key");
        let mut builder = Builder::new("rebuilder", vec![BuilderKey::Nix(stolen.public())]);
        builder.revoked = vec![crate::builder::Revocation {
            key: BuilderKey::Nix(stolen.public()),
            since: 1_000,
        }];
        let signer = Signer::Nix(NixSecretKey::generate("quorate-1").expect("key"));
        let front = front_end("c", "/nix/store", &[builder], signer);
        let before = Attestation {
            first_seen: 999,
            seen_at: 5_000, // seen again later: the first sighting is what counts
            ..attestation_by(&stolen, "rebuilder")
        };
        assert!(!front.revoked(&before));
        assert!(front.still_trusted(&before));
        let after = Attestation {
            first_seen: 1_000,
            seen_at: 1_000,
            ..before
        };
        assert!(front.revoked(&after));
        assert!(!front.still_trusted(&after));
    }

    #[test]
    fn a_narinfo_for_another_path_than_asked_is_refused() {
        let key = NixSecretKey::generate("b-1").expect("key");
        let att = attestation_by(&key, "b");
        let mut ni_text = String::new();
        ni_text.push_str(&format!(
            "StorePath: {}\nURL: nar/x.nar\nCompression: none\nNarHash: {}\nNarSize: {}\nReferences: \nSig: {}\n",
            att.content.store_path, att.content.nar_hash, att.content.nar_size, att.signature
        ));
        let front = cache_trusting("b", &key.public());
        let other: HashPart = "00000000000000000000000000000000"
            .parse()
            .expect("hash part");
        let err = front
            .observe("http://up", &other, &ni_text, 0)
            .expect_err("wrong path");
        assert!(matches!(err, FrontEndError::WrongPath { .. }), "{err}");
    }

    #[test]
    fn nix_nars_are_named_by_their_key() {
        let front = cache_trusting("b", &NixSecretKey::generate("b-1").expect("k").public());
        let key = "1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i";
        assert_eq!(
            front.nar_request(None, &format!("{key}.nar")),
            Ok(NarRequest::ByKey {
                key: key.parse().expect("key"),
                encoding: NarEncoding::Identity
            })
        );
        assert_eq!(
            front.nar_request(None, "x.nar"),
            Err(NarRouteError::Malformed("malformed NAR name"))
        );
        assert_eq!(
            front.nar_request(None, key),
            Err(NarRouteError::NotFound("not found"))
        );
        assert_eq!(
            front.nar_request(Some("zstd"), &format!("{key}.nar")),
            Err(NarRouteError::NotFound("not found"))
        );
    }

    #[test]
    fn a_stored_zstd_copy_is_advertised_with_its_file_hash_and_size_and_routed_back() {
        let key = NixSecretKey::generate("b-1").expect("key");
        let att = attestation_by(&key, "b");
        let front = cache_trusting("b", &key.public());
        let agreed = Agreed::new(
            att.content.clone(),
            vec!["b".into()],
            std::slice::from_ref(&att),
            [],
        );
        let nar_key = att.content.nar_hash.key();
        let plain = NixNarInfo::parse("/nix/store", &front.render(&agreed, None).expect("plain"))
            .expect("plain parses");
        assert_eq!(plain.url, format!("nar/{nar_key}.nar"));
        assert_eq!(plain.compression, "none");
        let zstd = CompressedNar {
            file_hash: NarHash::from_digest([7; 32]),
            file_size: 4321,
        };
        let text = front.render(&agreed, Some(&zstd)).expect("zstd");
        let ni = NixNarInfo::parse("/nix/store", &text).expect("zstd parses");
        assert_eq!(ni.url, format!("nar/{nar_key}.nar.zst"));
        assert_eq!(ni.compression, "zstd");
        assert_eq!(ni.file_hash, Some(zstd.file_hash.to_string()));
        assert_eq!(ni.file_size, Some(4321));
        assert_eq!((ni.nar_hash, ni.nar_size), (plain.nar_hash, plain.nar_size));
        // Same fingerprint, same signatures: only where and how the bytes come differs.
        assert_eq!(ni.sigs, plain.sigs);
        assert_eq!(
            front.nar_request(None, &format!("{nar_key}.nar.zst")),
            Ok(NarRequest::ByKey {
                key: nar_key,
                encoding: NarEncoding::Zstd
            })
        );
        assert_eq!(
            front.nar_request(None, "short.nar.zst"),
            Err(NarRouteError::Malformed("malformed NAR name"))
        );
    }
}
