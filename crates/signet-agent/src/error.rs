//! Agent errors.

/// What can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Bad configuration or bootstrap material.
    #[error("configuration: {0}")]
    Config(String),
    /// The server cannot be reached.
    #[error("server unavailable: {0}")]
    Unavailable(String),
    /// The server refused this agent (not attested, evicted, banned, bad token).
    #[error("refused by the server: {0}")]
    Refused(String),
    /// The server answered something invalid.
    #[error("server error: {0}")]
    Server(String),
    /// Local file I/O failed.
    #[error("{0}")]
    Io(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AgentError {
    /// Classifies a gRPC status from the server.
    pub fn from_status(status: tonic::Status) -> Self {
        use tonic::Code;
        match status.code() {
            Code::PermissionDenied | Code::Unauthenticated => {
                Self::Refused(status.message().to_owned())
            }
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::Unimplemented => {
                Self::Server(format!("{:?}: {}", status.code(), status.message()))
            }
            _ => Self::Unavailable(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}
