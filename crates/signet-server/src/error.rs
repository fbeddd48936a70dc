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
    /// A file could not be written.
    #[error("{0}")]
    Io(String),
    /// A bug or poisoned lock.
    #[error("internal error: {0}")]
    Internal(String),
    /// A backend (the Kubernetes API) could not be reached; retry.
    #[error("{0}")]
    Unavailable(String),
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
            ServerError::Ca(_) | ServerError::Datastore(_) | ServerError::Io(_) => {
                // Details go to the server log, not to the caller.
                tracing::error!(error = %err, "request failed");
                Status::unavailable("the server could not complete the request; see its log")
            }
            ServerError::Unavailable(m) => Status::unavailable(m.clone()),
            ServerError::Internal(_) => {
                tracing::error!(error = %err, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
