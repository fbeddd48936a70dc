//! `signet csi` as a process: flags, the socket the kubelet calls, a clean stop on SIGTERM.
//! (Publish/unpublish with real mounts are tested in the signet-csi crate.)

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{signet_bin, wait_for};
use signet_proto::csi::v1::{
    GetPluginInfoRequest, NodeGetInfoRequest, identity_client::IdentityClient,
    node_client::NodeClient,
};

#[tokio::test]
async fn serves_the_kubelet_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods");
    let sockets = dir.path().join("sockets");
    std::fs::create_dir_all(&pods).unwrap();
    std::fs::create_dir_all(&sockets).unwrap();
    let csi_socket = dir.path().join("plugin/csi.sock");
    let mut child = Command::new(signet_bin())
        .arg("csi")
        .arg("--csi-socket")
        .arg(&csi_socket)
        .arg("--workload-socket-dir")
        .arg(&sockets)
        .arg("--kubelet-pods-dir")
        .arg(&pods)
        .env("NODE_NAME", "worker-1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the CSI socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&csi_socket).is_ok()
    });

    let channel = signet_cli::uds::channel(&csi_socket).await.unwrap();
    let info = IdentityClient::new(channel.clone())
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "csi.signet.dev");
    let node = NodeClient::new(channel.clone())
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node.node_id, "worker-1", "node id from NODE_NAME");

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    // The client connection stays open, as the kubelet's does: the plugin must still stop.
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit {status:?}");
    assert!(!csi_socket.exists(), "socket removed on shutdown");
    drop(channel);
}

#[test]
fn refuses_to_start_without_a_node_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(signet_bin())
        .arg("csi")
        .arg("--csi-socket")
        .arg(dir.path().join("csi.sock"))
        .arg("--kubelet-pods-dir")
        .arg(dir.path())
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NODE_NAME"), "{err}");
}
