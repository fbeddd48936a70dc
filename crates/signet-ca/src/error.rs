//! Errors of the signing authority.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the signing authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Key generation failed.
    #[error("key generation failed: {0}")]
    KeyGeneration(String),
    /// A key has an unsupported type, size or encoding.
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    /// Building or signing a certificate or token failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The CSR is malformed or its signature does not verify.
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// The CSR asks for something other than exactly the authorised SPIFFE ID.
    #[error("CSR does not request exactly {expected}: {detail}")]
    CsrIdMismatch {
        /// The ID the caller is authorised for.
        expected: String,
        /// What the CSR asked for.
        detail: String,
    },
    /// The requested SVID is not allowed (wrong trust domain, reserved path, bad DNS name...).
    #[error("SVID request refused: {0}")]
    InvalidRequest(String),
    /// The upstream CA material is unusable.
    #[error("upstream CA: {0}")]
    Upstream(String),
    /// No active authority exists to sign with.
    #[error("no active {0} authority")]
    NoActiveAuthority(&'static str),
    /// A rotation command does not apply in the current state.
    #[error("{0}")]
    InvalidTransition(String),
    /// The PKCS#11 module, token or key failed (never carries the PIN).
    #[error("PKCS#11: {0}")]
    Device(String),
    /// The key store could not be read or written.
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
}

/// Failures of a key store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// Reading or writing the backing file failed.
    #[error("key store {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The stored state is unreadable; it is never replaced silently.
    #[error(
        "key store {path} is corrupt ({reason}); refusing to start rather than replace the CA keys. Restore it from a backup or move it away deliberately"
    )]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file can be read by other users.
    #[error(
        "key store {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)"
    )]
    InsecurePermissions {
        /// The file involved.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is a link, not a regular file, or belongs to another user: someone else may
    /// have planted it (their CA) and could replace it.
    #[error(
        "key store {path} cannot be trusted: {reason}; remove it (and restore the real one) or choose another data directory"
    )]
    Untrusted {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The store's backend could not be reached (e.g. the Kubernetes API for a Secret store).
    #[error("key store {store} is unavailable: {reason}")]
    Unavailable {
        /// Which store.
        store: String,
        /// What failed.
        reason: String,
    },
    /// Another writer changed the store since it was read (optimistic concurrency).
    #[error("key store changed concurrently (expected generation {expected}, found {found})")]
    Conflict {
        /// The generation the writer based its change on.
        expected: u64,
        /// The generation found in the store.
        found: u64,
    },
}

impl Error {
    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::KeyGeneration(_) => "key_generation",
            Self::UnsupportedKey(_) => "unsupported_key",
            Self::Signing(_) => "signing",
            Self::InvalidCsr(_) => "invalid_csr",
            Self::CsrIdMismatch { .. } => "csr_id_mismatch",
            Self::InvalidRequest(_) => "invalid_request",
            Self::Upstream(_) => "upstream",
            Self::NoActiveAuthority(_) => "no_active_authority",
            Self::InvalidTransition(_) => "invalid_transition",
            Self::KeyStore(_) => "key_store",
            Self::Device(_) => "device",
        }
    }
}
