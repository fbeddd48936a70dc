//! Server errors and their gRPC status codes.

use tonic::Status;

/// What can go wrong in the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Bad request content.
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller is not allowed to do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller did not authenticate.
    #[error("{0}")]
    Unauthenticated(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The signing authority refused or failed.
    #[error(transparent)]
    Ca(#[from] signet_ca::Error),
    /// The datastore failed.
    #[error(transparent)]
    Datastore(#[from] crate::datastore::DatastoreError),
    /// A file, directory or socket could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (`binding the admin socket /run/...`).
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A data directory cannot be trusted with the server's state.
    #[error(transparent)]
    PrivateDir(#[from] signet_unix::PrivateDirError),
    /// The CA journal records a CA whose key store is gone.
    #[error(
        "{} is missing, but the CA journal in signet.db records a CA (last event: {last_event}). \
         Restore {} from a backup. To start a new CA deliberately (every agent then needs the new \
         bundle.pem, and every workload new SVIDs), start once with --new-ca",
        keys.display(),
        keys.display()
    )]
    LostKeyStore {
        /// The key store file.
        keys: std::path::PathBuf,
        /// The journal's last event.
        last_event: String,
    },
    /// A key, CSR, random value or TLS credential could not be made.
    #[error("{what}: {source}")]
    Crypto {
        /// What was being made.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A SPIFFE ID the server builds from its configuration is invalid.
    #[error("invalid SPIFFE ID: {0}")]
    SpiffeId(#[from] signet_spiffe::IdError),
    /// The Kubernetes API could not be reached or refused a request; retry.
    #[error("{what}: {source}")]
    Kubernetes {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// A shared object kept changing under concurrent writers; retry.
    #[error("{0}")]
    Contended(String),
}

impl ServerError {
    /// Making `what` failed.
    pub fn crypto(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Crypto {
            what,
            source: source.into(),
        }
    }

    /// `what` failed with `source`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// A short stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ServerError::InvalidArgument(_) => "invalid_argument",
            ServerError::PermissionDenied(_) => "permission_denied",
            ServerError::Unauthenticated(_) => "unauthenticated",
            ServerError::NotFound(_) => "not_found",
            ServerError::Ca(_) => "ca",
            ServerError::Datastore(_) => "datastore",
            ServerError::Io { .. } => "io",
            ServerError::PrivateDir(_) => "private_dir",
            ServerError::LostKeyStore { .. } => "lost_key_store",
            ServerError::Crypto { .. } => "crypto",
            ServerError::SpiffeId(_) => "spiffe_id",
            ServerError::Kubernetes { .. } => "kubernetes",
            ServerError::Contended(_) => "contended",
        }
    }
}

impl From<ServerError> for Status {
    fn from(err: ServerError) -> Self {
        use signet_ca::Error as Ca;
        match &err {
            ServerError::InvalidArgument(m) => Status::invalid_argument(m.clone()),
            ServerError::PermissionDenied(m) => Status::permission_denied(m.clone()),
            ServerError::Unauthenticated(m) => Status::unauthenticated(m.clone()),
            ServerError::NotFound(m) => Status::not_found(m.clone()),
            ServerError::Ca(
                Ca::InvalidCsr(_) | Ca::CsrIdMismatch { .. } | Ca::InvalidRequest(_),
            ) => Status::invalid_argument(err.to_string()),
            ServerError::Ca(Ca::InvalidTransition(_)) => {
                Status::failed_precondition(err.to_string())
            }
            ServerError::Datastore(datastore) if datastore.condition().is_some() => {
                tracing::error!(error = %err, "request failed");
                Status::unavailable(format!(
                    "the server could not complete the request: {}; see its log",
                    datastore.condition().unwrap_or_default()
                ))
            }
            ServerError::Ca(_)
            | ServerError::Datastore(_)
            | ServerError::Io { .. }
            | ServerError::PrivateDir(_)
            | ServerError::LostKeyStore { .. }
            | ServerError::Kubernetes { .. } => {
                // Details go to the server log, not to the caller.
                tracing::error!(error = %err, "request failed");
                Status::unavailable("the server could not complete the request; see its log")
            }
            ServerError::Contended(m) => Status::unavailable(m.clone()),
            ServerError::Crypto { .. } | ServerError::SpiffeId(_) => {
                tracing::error!(error = %err, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
