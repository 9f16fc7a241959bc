//! Verified NARs in an S3-compatible bucket (DESIGN §11), through the `object_store` crate.
//!
//! ```text
//! s3://bucket/prefix  →  <prefix>/nar/<nix32 NarHash>      one object per verified NAR
//! ```
//!
//! An object appears only once its bytes were verified: the fetch writes and checks them in
//! the local spool first, and only a verified, fsynced file is uploaded (a multipart upload
//! above [`PART_SIZE`], aborted if anything fails). Keys are content-addressed, so two
//! replicas uploading the same NAR write the same bytes under the same name: harmless.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, PutPayload, RetryConfig, WriteMultipart,
};
use quorate_core::protocol::nar_hash::NarKey;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::config::S3Config;

/// Multipart part size: the file is read and sent in parts of this size.
pub const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once (memory: this many parts).
const PARTS_IN_FLIGHT: usize = 2;
/// How long one request to the object store may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a readiness check waits for the object store.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting to the object store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the object store could not be used.
#[derive(Debug, thiserror::Error)]
#[error("object store: {0}")]
pub struct ObjectError(#[from] object_store::Error);

/// A bucket (and prefix) of verified NARs.
pub struct ObjectNars {
    /// The bucket.
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/nar` (or `nar`): where NAR objects go.
    dir: ObjectPath,
    /// `s3://bucket/prefix`, for logs.
    url: String,
    /// The bucket's name.
    bucket: String,
    /// Signalled after each upload: the bucket grew (the evictor looks).
    uploaded: tokio::sync::Notify,
}

impl std::fmt::Debug for ObjectNars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectNars")
            .field("url", &self.url)
            .finish()
    }
}

impl ObjectNars {
    /// The bucket `config` names, with `secret` as its secret access key when the config
    /// gave a file (otherwise credentials come from the `AWS_*` variables).
    pub fn new(config: &S3Config, secret: Option<String>) -> Result<ObjectNars, ObjectError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_allow_http(true),
            )
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(id) = &config.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = secret {
            builder = builder.with_secret_access_key(secret.trim());
        }
        let dir = if config.prefix.is_empty() {
            ObjectPath::from("nar")
        } else {
            ObjectPath::from(format!("{}/nar", config.prefix))
        };
        Ok(ObjectNars {
            store: Arc::new(builder.build()?),
            dir,
            url: format!("s3://{}/{}", config.bucket, config.prefix),
            bucket: config.bucket.clone(),
            uploaded: tokio::sync::Notify::new(),
        })
    }

    /// The object NAR `key` is stored as.
    pub fn path(&self, key: &NarKey) -> ObjectPath {
        self.dir.child(key.to_string())
    }

    /// NAR `key`'s object as a URL, `s3://bucket/<prefix>/nar/<key>` (what the database
    /// records as its location).
    pub fn location(&self, key: &NarKey) -> String {
        format!("s3://{}/{}", self.bucket, self.path(key))
    }

    /// The size of NAR `key`'s object, if the bucket holds it.
    pub async fn size(&self, key: &NarKey) -> Result<Option<u64>, ObjectError> {
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// NAR `key`'s bytes (all of them, or `range`, which the caller checked against the
    /// object's size), streamed, and the object's whole size; `None` if the bucket does not
    /// hold it.
    pub async fn open(
        &self,
        key: &NarKey,
        range: Option<Range<u64>>,
    ) -> Result<Option<(BoxStream<'static, std::io::Result<Bytes>>, u64)>, ObjectError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        match self.store.get_opts(&self.path(key), options).await {
            Ok(found) => {
                let size = found.meta.size;
                let stream = found.into_stream().map_err(std::io::Error::other).boxed();
                Ok(Some((stream, size)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Uploads the verified NAR in `file` (`size` bytes) as `key`: one PUT when it fits a
    /// part, else a multipart upload with a bounded number of parts in flight. The bytes
    /// are hashed again as they are read: the upload completes only if their SHA-256 is
    /// `key` and their count `size`, and is aborted on any failure or mismatch (no object,
    /// no parts are left behind).
    pub async fn upload(&self, key: &NarKey, file: &Path, size: u64) -> Result<(), ObjectError> {
        let path = self.path(key);
        let mut f = tokio::fs::File::open(file)
            .await
            .map_err(|e| io_error(&path, e))?;
        let check = |hasher: Sha256, count: u64| {
            let digest: [u8; 32] = hasher.finalize().into();
            if count == size && &digest == key.digest() {
                Ok(())
            } else {
                Err(ObjectError(object_store::Error::Generic {
                    store: "local spool",
                    source: format!(
                        "the spooled NAR for {path} changed after it was verified \
                         ({count} bytes read, {size} expected)"
                    )
                    .into(),
                }))
            }
        };
        if size <= PART_SIZE as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            f.read_to_end(&mut bytes)
                .await
                .map_err(|e| io_error(&path, e))?;
            check(Sha256::new_with_prefix(&bytes), bytes.len() as u64)?;
            self.store.put(&path, PutPayload::from(bytes)).await?;
            self.uploaded.notify_one();
            return Ok(());
        }
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let sent = async {
            let mut buf = vec![0u8; PART_SIZE];
            let (mut hasher, mut count) = (Sha256::new(), 0u64);
            loop {
                let n = f.read(&mut buf).await.map_err(|e| io_error(&path, e))?;
                if n == 0 {
                    return check(hasher, count);
                }
                hasher.update(&buf[..n]);
                count += n as u64;
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => {
                writer.finish().await?;
                self.uploaded.notify_one();
                Ok(())
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(object = %path, "aborting a failed multipart upload: {abort}");
                }
                Err(e)
            }
        }
    }

    /// Resolves after the next upload (or at once if one happened since the last call).
    pub async fn uploaded(&self) {
        self.uploaded.notified().await;
    }

    /// Deletes NAR `key`'s object (eviction).
    pub async fn delete(&self, key: &NarKey) -> Result<(), ObjectError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the bucket answers (`/readyz`) within [`PING_TIMEOUT`]: a HEAD of a key
    /// that need not exist.
    pub async fn ping(&self) -> Result<(), ObjectError> {
        let probe = self.dir.child(".ready");
        let head = self.store.head(&probe);
        match tokio::time::timeout(PING_TIMEOUT, head).await {
            Ok(Ok(_) | Err(object_store::Error::NotFound { .. })) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ObjectError(object_store::Error::Generic {
                store: "S3",
                source: format!("no answer within {PING_TIMEOUT:?}").into(),
            })),
        }
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

fn io_error(path: &ObjectPath, source: std::io::Error) -> ObjectError {
    ObjectError(object_store::Error::Generic {
        store: "local spool",
        source: format!("reading the verified NAR for {path}: {source}").into(),
    })
}
