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
    /// A local file, directory or socket could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A data or socket directory cannot be trusted.
    #[error(transparent)]
    PrivateDir(#[from] signet_unix::PrivateDirError),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AgentError {
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
            AgentError::Config(_) => "config",
            AgentError::Unavailable(_) => "unavailable",
            AgentError::Refused(_) => "refused",
            AgentError::Server(_) => "server",
            AgentError::Io { .. } => "io",
            AgentError::PrivateDir(_) => "private_dir",
            AgentError::Internal(_) => "internal",
        }
    }

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
