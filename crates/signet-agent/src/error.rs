//! Agent errors.

use std::path::PathBuf;

/// What can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The bootstrap trust bundle cannot be used.
    #[error("trust bundle {path}: {source}")]
    TrustBundle {
        /// The bundle file.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: signet_spiffe::BundleError,
    },
    /// The server cannot be reached (or answered with a transient status).
    #[error("server unavailable: {0}")]
    Unavailable(#[source] tonic::Status),
    /// The client towards the server could not be built.
    #[error("server connection: {0}")]
    Connect(#[source] tonic::transport::Error),
    /// The server refused this agent (not attested, evicted, banned, bad token).
    #[error("refused by the server: {}", .0.message())]
    Refused(#[source] tonic::Status),
    /// The server refused a request as invalid, or does not implement it.
    #[error("server error: {:?}: {}", .0.code(), .0.message())]
    Server(#[source] tonic::Status),
    /// The server answered something that cannot be used.
    #[error("the server answered an invalid {what}: {source}")]
    InvalidAnswer {
        /// What was invalid (the agent SVID, a bundle, entry `id`).
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A key, CSR or TLS credential could not be made.
    #[error("{what}: {source}")]
    Crypto {
        /// What was being made.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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
    /// A blocking task panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl AgentError {
    /// `what` failed with `source`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// The server answered an unusable `what`.
    pub fn invalid_answer(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::InvalidAnswer {
            what: what.into(),
            source: source.into(),
        }
    }

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

    /// A short stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AgentError::Config(_) => "config",
            AgentError::TrustBundle { .. } => "trust_bundle",
            AgentError::Unavailable(_) | AgentError::Connect(_) => "unavailable",
            AgentError::Refused(_) => "refused",
            AgentError::Server(_) => "server",
            AgentError::InvalidAnswer { .. } => "invalid_answer",
            AgentError::Crypto { .. } => "crypto",
            AgentError::Io { .. } => "io",
            AgentError::PrivateDir(_) => "private_dir",
            AgentError::Task(_) => "task",
        }
    }

    /// Classifies a gRPC status from the server.
    /// How long the server asked this agent to wait before trying again (admission control
    /// in a reconnect storm, or this agent's signing budget), at most five minutes.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        let AgentError::Unavailable(status) = self else {
            return None;
        };
        signet_proto::pushback::pushback_of(status)
    }

    pub fn from_status(status: tonic::Status) -> Self {
        use tonic::Code;
        match status.code() {
            Code::PermissionDenied | Code::Unauthenticated => Self::Refused(status),
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::Unimplemented => Self::Server(status),
            _ => Self::Unavailable(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_and_keep_their_source() {
        let refused = AgentError::from_status(tonic::Status::permission_denied("agent is banned"));
        assert_eq!(refused.metric_label(), "refused");
        assert_eq!(
            refused.to_string(),
            "refused by the server: agent is banned"
        );
        assert!(std::error::Error::source(&refused).is_some());
        let down = AgentError::from_status(tonic::Status::unavailable("connection refused"));
        assert_eq!(down.metric_label(), "unavailable");
        let mut busy = tonic::Status::resource_exhausted("busy");
        busy.metadata_mut()
            .insert("grpc-retry-pushback-ms", "1500".parse().unwrap());
        let busy = AgentError::from_status(busy);
        assert_eq!(
            busy.retry_after(),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(down.retry_after(), None);
        let mut hostile = tonic::Status::resource_exhausted("busy");
        hostile
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", "99999999999".parse().unwrap());
        assert_eq!(
            AgentError::from_status(hostile).retry_after(),
            Some(std::time::Duration::from_secs(300)),
            "a server cannot park an agent for days"
        );
        let invalid = AgentError::from_status(tonic::Status::invalid_argument("bad CSR"));
        assert_eq!(invalid.metric_label(), "server");
        assert!(invalid.to_string().contains("bad CSR"));
    }
}
