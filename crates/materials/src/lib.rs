//! The materials store: the applicants' uploads (the document photo, the signature, both sides of
//! the identity card), each named by the SHA-256 of its bytes, as the application contract names
//! them. Two backends behind [`MaterialStore`]: an S3-compatible object store ([`S3`]: MinIO,
//! Ceph RGW, Garage, cloud OSS; the production path) and a local directory ([`LocalDir`]: the
//! embedded default, so the demo needs nothing).
//!
//! Every read is verified: bytes that do not hash to their name are an
//! [`MaterialError::Integrity`] error, never served as the material. A store that cannot answer
//! for a while is [`MaterialError::Unavailable`] — transient, to be retried, never a reason to
//! reject an application.

use async_trait::async_trait;
use std::path::PathBuf;
use wangban_domain::materials::sha256_hex;

/// Why a material could not be read or written. Never carries the material's bytes.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// The store did not answer (down, timed out, refused): try again later.
    #[error("materials store unavailable: {0}")]
    Unavailable(String),
    /// The stored bytes do not hash to their name.
    #[error("material {name}: its bytes do not hash to its name (integrity)")]
    Integrity { name: String },
    /// Not a material's name: 64 hex digits.
    #[error("not a material name (64 hex digits): {0:?}")]
    InvalidName(String),
    /// The store refused for good (credentials, a missing bucket): an operator must act.
    #[error("materials store refused: {0}")]
    Refused(String),
}

impl MaterialError {
    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, MaterialError::Unavailable(_))
    }
}

/// A content-addressed store of materials.
#[async_trait]
pub trait MaterialStore: Send + Sync {
    /// The bytes named `sha256`, verified against it; `None` when the store has no such file.
    async fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>, MaterialError>;
    /// Stores `bytes` under their SHA-256 and returns it (storing the same bytes again changes
    /// nothing).
    async fn put(&self, bytes: &[u8]) -> Result<String, MaterialError>;
    /// Erases the material named `sha256` (retention); erasing one that is not there is done.
    async fn delete(&self, sha256: &str) -> Result<(), MaterialError>;
    /// Whether the store has a file named `sha256` (without reading it: the checker asks this
    /// of every case's materials).
    async fn exists(&self, sha256: &str) -> Result<bool, MaterialError>;
    /// Where the store is, for logs and errors (no credentials).
    fn describe(&self) -> String;
}

/// A material's name checked and lowercased: nothing else ever reaches a path or a key.
pub fn checked_name(sha256: &str) -> Result<String, MaterialError> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha256.to_ascii_lowercase())
    } else {
        Err(MaterialError::InvalidName(
            sha256.chars().take(80).collect(),
        ))
    }
}

/// `bytes` read under the material name `name`, if they hash to it (else an integrity error).
pub fn verified(name: String, bytes: Vec<u8>) -> Result<Option<Vec<u8>>, MaterialError> {
    if sha256_hex(&bytes) == name {
        Ok(Some(bytes))
    } else {
        Err(MaterialError::Integrity { name })
    }
}

/// Materials as files named by their SHA-256 in one directory (`wangban check --materials` reads
/// the same layout).
#[derive(Clone, Debug)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// The store in `root` (created when missing, on the first write).
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        LocalDir { root: root.into() }
    }
}

fn io(e: std::io::Error) -> MaterialError {
    MaterialError::Unavailable(e.to_string())
}

#[async_trait]
impl MaterialStore for LocalDir {
    async fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>, MaterialError> {
        let name = checked_name(sha256)?;
        match tokio::fs::read(self.root.join(&name)).await {
            Ok(bytes) => verified(name, bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn put(&self, bytes: &[u8]) -> Result<String, MaterialError> {
        let name = sha256_hex(bytes);
        tokio::fs::create_dir_all(&self.root).await.map_err(io)?;
        // Written whole, then renamed: a reader never sees half a file under the name.
        let tmp = self
            .root
            .join(format!(".{name}.{}.tmp", std::process::id()));
        tokio::fs::write(&tmp, bytes).await.map_err(io)?;
        tokio::fs::rename(&tmp, self.root.join(&name))
            .await
            .map_err(io)?;
        Ok(name)
    }

    async fn delete(&self, sha256: &str) -> Result<(), MaterialError> {
        let name = checked_name(sha256)?;
        match tokio::fs::remove_file(self.root.join(name)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    async fn exists(&self, sha256: &str) -> Result<bool, MaterialError> {
        let name = checked_name(sha256)?;
        tokio::fs::try_exists(self.root.join(name))
            .await
            .map_err(io)
    }

    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }
}

/// Where and how to reach an S3-compatible store.
#[derive(Clone)]
pub struct S3Config {
    /// `http(s)://host:port` of the S3 API; `None`: the cloud provider's default endpoint.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`), as self-hosted stores usually need.
    pub path_style: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive() // never the keys
    }
}

/// Materials as objects named by their SHA-256 in one bucket of an S3-compatible store.
#[derive(Debug)]
pub struct S3 {
    store: object_store::aws::AmazonS3,
    describe: String,
}

impl S3 {
    /// A client of the store `config` names (nothing is contacted yet).
    pub fn new(config: &S3Config) -> Result<S3, MaterialError> {
        let mut builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_virtual_hosted_style_request(!config.path_style)
            // A down store is retried by the caller's backoff (the delivery's), not here for
            // minutes: a few quick tries, then Unavailable.
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: std::time::Duration::from_secs(5),
                ..Default::default()
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder
            .build()
            .map_err(|e| MaterialError::Refused(e.to_string()))?;
        let describe = format!(
            "s3 bucket {} at {}",
            config.bucket,
            config.endpoint.as_deref().unwrap_or("the default endpoint")
        );
        Ok(S3 { store, describe })
    }
}

fn s3_error(e: object_store::Error) -> MaterialError {
    use object_store::Error as E;
    match e {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } | E::NotSupported { .. } => {
            MaterialError::Refused(e.to_string())
        }
        other => MaterialError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl MaterialStore for S3 {
    async fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>, MaterialError> {
        use object_store::ObjectStore;
        let name = checked_name(sha256)?;
        let got = match self
            .store
            .get(&object_store::path::Path::from(name.as_str()))
            .await
        {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(s3_error(e)),
        };
        let bytes = got.bytes().await.map_err(s3_error)?;
        verified(name, bytes.to_vec())
    }

    async fn put(&self, bytes: &[u8]) -> Result<String, MaterialError> {
        use object_store::ObjectStore;
        let name = sha256_hex(bytes);
        self.store
            .put(
                &object_store::path::Path::from(name.as_str()),
                object_store::PutPayload::from(bytes.to_vec()),
            )
            .await
            .map_err(s3_error)?;
        Ok(name)
    }

    async fn delete(&self, sha256: &str) -> Result<(), MaterialError> {
        use object_store::ObjectStore;
        let name = checked_name(sha256)?;
        match self
            .store
            .delete(&object_store::path::Path::from(name.as_str()))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn exists(&self, sha256: &str) -> Result<bool, MaterialError> {
        use object_store::ObjectStore;
        let name = checked_name(sha256)?;
        match self
            .store
            .head(&object_store::path::Path::from(name.as_str()))
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(s3_error(e)),
        }
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_64_hex_digits_name_a_material() {
        let good = "A".repeat(64);
        assert_eq!(checked_name(&good).unwrap(), "a".repeat(64));
        for bad in [
            "",
            "../etc/passwd",
            &"a".repeat(63),
            &format!("{}g", "a".repeat(63)),
        ] {
            assert!(
                matches!(checked_name(bad), Err(MaterialError::InvalidName(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_local_directory_serves_only_verified_bytes() {
        let dir = std::env::temp_dir().join(format!("wangban-local-{}", std::process::id()));
        let store = LocalDir::new(&dir);
        let name = store.put(b"a photo").await.unwrap();
        assert_eq!(name, sha256_hex(b"a photo"));
        assert_eq!(store.put(b"a photo").await.unwrap(), name, "idempotent");
        assert_eq!(store.get(&name).await.unwrap().unwrap(), b"a photo");
        assert!(store.get(&sha256_hex(b"other")).await.unwrap().is_none());
        std::fs::write(dir.join(&name), b"tampered").unwrap();
        assert!(matches!(
            store.get(&name).await,
            Err(MaterialError::Integrity { .. })
        ));
        store.delete(&name).await.unwrap();
        store.delete(&name).await.unwrap();
        assert!(store.get(&name).await.unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
