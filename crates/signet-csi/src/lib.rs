//! `signet csi`: the CSI node plugin of Signet (DESIGN §9). It serves the CSI Identity and Node
//! services on a Unix socket for the kubelet and bind-mounts the agent's Workload API socket
//! directory, read-only, into every pod that declares an inline `csi.signet.dev` volume.

mod identity;
pub mod mounts;
mod node;
mod request;
mod target;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use signet_proto::csi::v1::identity_server::IdentityServer;
use signet_proto::csi::v1::node_server::NodeServer;
use tokio::net::UnixListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;

/// The driver name registered with the kubelet unless configured otherwise.
pub const DEFAULT_DRIVER_NAME: &str = "csi.signet.dev";
/// The Workload API socket's file name inside the agent's socket directory.
pub const WORKLOAD_SOCKET_NAME: &str = "api.sock";
/// CSI requests are a few hundred bytes; anything near this is hostile.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// How long a stopping plugin lets calls in flight finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What `signet csi` needs to run.
#[derive(Debug, Clone)]
pub struct CsiConfig {
    /// Name reported by GetPluginInfo; must equal the CSIDriver object's name.
    pub driver_name: String,
    /// This node's name, reported by NodeGetInfo.
    pub node_id: String,
    /// The agent's socket directory, bind-mounted into pods.
    pub workload_socket_dir: PathBuf,
    /// The kubelet's pods directory as the kubelet names it (`<kubelet dir>/pods`).
    pub kubelet_pods_dir: PathBuf,
}

/// Why the plugin cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Settings shared by the services, checked once at start.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) driver_name: String,
    pub(crate) node_id: String,
    pub(crate) socket_dir: PathBuf,
    pub(crate) pods_dir: PathBuf,
    /// `pods_dir` with symlinks resolved: where target parents must really be.
    pub(crate) pods_dir_resolved: PathBuf,
}

/// A configured plugin, ready to serve.
#[derive(Debug, Clone)]
pub struct CsiPlugin {
    settings: Arc<Settings>,
}

impl CsiPlugin {
    /// Validates the configuration. The pods directory must exist (it is the kubelet's); the
    /// socket directory may appear later (the agent creates it), which Probe reports.
    pub fn new(config: CsiConfig) -> Result<Self, CsiError> {
        validate_driver_name(&config.driver_name)?;
        if config.node_id.is_empty() {
            return Err(CsiError::Config(
                "the node id is required (--node-id or NODE_NAME)".into(),
            ));
        }
        for (flag, path) in [
            ("--workload-socket-dir", &config.workload_socket_dir),
            ("--kubelet-pods-dir", &config.kubelet_pods_dir),
        ] {
            if !path.is_absolute() || path.components().any(|c| !is_plain(c)) {
                return Err(CsiError::Config(format!(
                    "{flag} must be an absolute, normalized path (got {})",
                    path.display()
                )));
            }
        }
        let pods_dir_resolved =
            fs::canonicalize(&config.kubelet_pods_dir).map_err(|source| CsiError::Io {
                context: format!(
                    "kubelet pods directory {} (mount it into this container at the same path)",
                    config.kubelet_pods_dir.display()
                ),
                source,
            })?;
        Ok(Self {
            settings: Arc::new(Settings {
                driver_name: config.driver_name,
                node_id: config.node_id,
                socket_dir: config.workload_socket_dir,
                pods_dir: config.kubelet_pods_dir,
                pods_dir_resolved,
            }),
        })
    }

    /// Serves Identity and Node on `listener` until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: UnixListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), CsiError> {
        let identity = IdentityServer::new(identity::IdentityService::new(self.settings.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let node = NodeServer::new(node::NodeService::new(self.settings.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .trace_fn(
                |request| tracing::info_span!("grpc", api = "csi", method = %request.uri().path()),
            )
            .add_service(identity)
            .add_service(node)
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener)
                    .map(|conn| conn.map(signet_unix::normalize_authority)),
                async {
                    let _ = stopped.await;
                },
            );
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => return Ok(result?),
            () = shutdown => {
                let _ = stop.send(());
            }
        }
        // The kubelet keeps its connection open forever; finish calls in flight, then go.
        match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
            Ok(result) => Ok(result?),
            Err(_) => {
                tracing::info!("closing idle kubelet connections");
                Ok(())
            }
        }
    }
}

/// Binds the plugin's socket, replacing a stale socket left by a previous run (but nothing that
/// is not a socket). Mode 0600: only root (the kubelet and the registrar) may call the plugin.
pub fn bind_socket(path: &Path) -> Result<UnixListener, CsiError> {
    let io_error = |context: &str, source| CsiError::Io {
        context: format!("{context} {}", path.display()),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| io_error("creating the directory of", e))?;
    }
    match signet_unix::bind_unix_socket(path, 0o600) {
        Ok(listener) => UnixListener::from_std(listener).map_err(|e| io_error("binding", e)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(CsiError::Config(e.to_string()))
        }
        Err(e) => Err(io_error("binding", e)),
    }
}

fn is_plain(component: std::path::Component<'_>) -> bool {
    matches!(
        component,
        std::path::Component::RootDir | std::path::Component::Normal(_)
    )
}

/// CSI: at most 63 characters, alphanumerics at both ends, alphanumerics, `-` and `.` between.
fn validate_driver_name(name: &str) -> Result<(), CsiError> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.');
    if valid {
        Ok(())
    } else {
        Err(CsiError::Config(format!(
            "driver name {name:?} is not a valid CSI plugin name (domain notation, at most 63 characters)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn driver_names_follow_the_csi_rules() {
        for good in [DEFAULT_DRIVER_NAME, "a", "csi-1.example.com"] {
            assert!(validate_driver_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-csi", "csi.", "csi_signet", "a/b", &"a".repeat(64)] {
            assert!(validate_driver_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configuration_errors_are_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = CsiConfig {
            driver_name: DEFAULT_DRIVER_NAME.into(),
            node_id: "node-1".into(),
            workload_socket_dir: dir.path().join("sockets"),
            kubelet_pods_dir: dir.path().to_owned(),
        };
        assert!(CsiPlugin::new(config.clone()).is_ok());
        let no_node = CsiPlugin::new(CsiConfig {
            node_id: String::new(),
            ..config.clone()
        });
        assert!(no_node.is_err_and(|e| e.to_string().contains("NODE_NAME")));
        let relative = CsiPlugin::new(CsiConfig {
            kubelet_pods_dir: "var/lib/kubelet/pods".into(),
            ..config.clone()
        });
        assert!(relative.is_err_and(|e| e.to_string().contains("--kubelet-pods-dir")));
        let dotted = CsiPlugin::new(CsiConfig {
            workload_socket_dir: dir.path().join("../x"),
            ..config.clone()
        });
        assert!(dotted.is_err_and(|e| e.to_string().contains("--workload-socket-dir")));
        let missing = CsiPlugin::new(CsiConfig {
            kubelet_pods_dir: dir.path().join("absent"),
            ..config
        });
        assert!(missing.is_err_and(|e| e.to_string().contains("kubelet pods directory")));
    }

    #[tokio::test]
    async fn bind_socket_replaces_only_stale_sockets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plugin/csi.sock");
        let first = bind_socket(&path).expect("bind");
        drop(first);
        let mode = fs::metadata(&path).expect("socket").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(bind_socket(&path).is_ok(), "a stale socket is replaced");
        let file = dir.path().join("regular");
        fs::write(&file, b"keep me").expect("write");
        assert!(bind_socket(&file).is_err());
        assert_eq!(fs::read(&file).expect("read"), b"keep me");
    }
}
