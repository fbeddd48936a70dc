//! Persistence of the CA state (keys included) behind the [`KeyStore`] trait, with a file
//! implementation for standalone mode.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::KeyStoreError;
use crate::key::{KeyAlgorithm, KeyReference};
use crate::rotation::AuthorityStatus;

/// Version of the persisted format.
pub const STATE_FORMAT: u32 = 1;

/// The whole CA state as stored. Private keys are base64 PKCS#8, wiped from memory on drop.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    /// Format version.
    pub format: u32,
    /// Incremented on every write; the basis of optimistic concurrency.
    pub generation: u64,
    /// The trust domain the keys belong to.
    pub trust_domain: String,
    /// The bundle's `spiffe_sequence`.
    pub bundle_sequence: u64,
    /// X.509 authorities.
    pub x509: Vec<PersistedX509Authority>,
    /// JWT authorities.
    pub jwt: Vec<PersistedJwtAuthority>,
}

/// One X.509 authority as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedX509Authority {
    /// Rotation status.
    pub status: AuthorityStatus,
    /// Taint flag.
    pub tainted: bool,
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Base64 DER certificate.
    pub certificate: String,
    /// Base64 DER certificates between ours and the roots.
    pub upstream_chain: Vec<String>,
    /// Base64 PKCS#8 private key (keys in memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<Zeroizing<String>>,
    /// Where the key is in its device (keys in a PKCS#11 token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_reference: Option<KeyReference>,
}

/// One JWT authority as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedJwtAuthority {
    /// Rotation status.
    pub status: AuthorityStatus,
    /// Taint flag.
    pub tainted: bool,
    /// Key id.
    pub kid: String,
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
    /// Base64 PKCS#8 private key (keys in memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<Zeroizing<String>>,
    /// Where the key is in its device (keys in a PKCS#11 token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_reference: Option<KeyReference>,
}

/// Where the CA keeps its state.
///
/// `store` must be atomic (a reader sees the old or the new state, never a mix) and must fail
/// with [`KeyStoreError::Conflict`] when the stored generation is not `expected_generation`, so
/// that two writers never overwrite each other's keys.
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// Reads the state; `None` when nothing was ever stored.
    fn load(&self) -> Result<Option<PersistedState>, KeyStoreError>;
    /// Writes the state whose `generation` is one more than `expected_generation` (0 = new).
    fn store(&self, state: &PersistedState, expected_generation: u64) -> Result<(), KeyStoreError>;
}

/// A key store in one file: mode 0600, replaced atomically (write to a temporary file, fsync,
/// rename, fsync the directory).
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    path: PathBuf,
}

impl FileKeyStore {
    /// A store at `path`; its directory must exist.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> KeyStoreError {
        KeyStoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, reason: impl Into<String>) -> KeyStoreError {
        KeyStoreError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }
}

impl KeyStore for FileKeyStore {
    fn load(&self) -> Result<Option<PersistedState>, KeyStoreError> {
        let metadata = match fs::symlink_metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let untrusted = |reason: String| KeyStoreError::Untrusted {
            path: self.path.clone(),
            reason,
        };
        if metadata.file_type().is_symlink() {
            return Err(untrusted("it is a symbolic link".into()));
        }
        if !metadata.is_file() {
            return Err(untrusted("it is not a regular file".into()));
        }
        let uid = rustix::process::geteuid().as_raw();
        if metadata.uid() != uid {
            return Err(untrusted(format!(
                "it belongs to uid {}, not to this process (uid {uid})",
                metadata.uid()
            )));
        }
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyStoreError::InsecurePermissions {
                path: self.path.clone(),
                mode,
            });
        }
        let bytes = Zeroizing::new(fs::read(&self.path).map_err(|e| self.io(e))?);
        if bytes.is_empty() {
            return Err(self.corrupt("the file is empty"));
        }
        let state: PersistedState =
            serde_json::from_slice(&bytes).map_err(|e| self.corrupt(e.to_string()))?;
        if state.format != STATE_FORMAT {
            return Err(self.corrupt(format!(
                "format {} is not the supported format {STATE_FORMAT}",
                state.format
            )));
        }
        Ok(Some(state))
    }

    fn store(&self, state: &PersistedState, expected_generation: u64) -> Result<(), KeyStoreError> {
        let found = self.load()?.map_or(0, |s| s.generation);
        if found != expected_generation {
            return Err(KeyStoreError::Conflict {
                expected: expected_generation,
                found,
            });
        }
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(state).map_err(|e| self.corrupt(e.to_string()))?,
        );
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            file_name.unwrap_or_default(),
            std::process::id()
        ));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            // An existing temporary file keeps its old mode: force ours.
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| self.io(e))
    }
}
