//! gRPC channels over Unix sockets (admin API and Workload API clients).

use std::path::{Path, PathBuf};

use tonic::transport::Channel;

/// Connects to a gRPC server on a Unix socket.
pub async fn channel(path: &Path) -> anyhow::Result<Channel> {
    signet_tls::source::unix_channel(path.to_owned())
        .await
        .map_err(|e| {
            anyhow::anyhow!("{e} (is the process that serves it running, and may you open it?)")
        })
}

/// Parses a Workload API endpoint (`unix:///path` or a plain path).
pub fn endpoint_path(endpoint: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        anyhow::ensure!(
            path.starts_with('/'),
            "endpoint {endpoint:?} must be unix:///absolute/path"
        );
        return Ok(PathBuf::from(path));
    }
    anyhow::ensure!(
        !endpoint.contains("://"),
        "only unix:// endpoints are supported, got {endpoint:?}"
    );
    Ok(PathBuf::from(endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint_path("unix:///tmp/a.sock").unwrap(),
            PathBuf::from("/tmp/a.sock")
        );
        assert_eq!(
            endpoint_path("/tmp/a.sock").unwrap(),
            PathBuf::from("/tmp/a.sock")
        );
        assert!(endpoint_path("unix://relative").is_err());
        assert!(endpoint_path("tcp://127.0.0.1:1").is_err());
    }
}
