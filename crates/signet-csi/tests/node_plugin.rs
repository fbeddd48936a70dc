//! `signet csi` end to end: real gRPC over a real Unix socket, real bind mounts in a temporary
//! directory (the tests run as root, like the plugin), requests shaped exactly like the ones a
//! real kubelet sent (fixtures captured from a cluster).

#![expect(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use signet_csi::{CsiConfig, CsiPlugin, mounts};
use signet_proto::csi::v1::{
    GetPluginCapabilitiesRequest, GetPluginInfoRequest, NodeGetCapabilitiesRequest,
    NodeGetInfoRequest, NodeGetVolumeStatsRequest, NodePublishVolumeRequest,
    NodeStageVolumeRequest, NodeUnpublishVolumeRequest, ProbeRequest, VolumeCapability,
    identity_client::IdentityClient,
    node_client::NodeClient,
    node_service_capability,
    volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume},
};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../signet-test-support/fixtures"
);
const GREETING: &[u8] = b"workload api";

/// A node: kubelet pods dir, the agent's socket dir with a live socket, and the plugin serving.
struct Node {
    root: tempfile::TempDir,
    pods: PathBuf,
    sockets: PathBuf,
    identity: IdentityClient<Channel>,
    node: NodeClient<Channel>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Node {
    async fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        let pods = root.path().join("kubelet/pods");
        let sockets = root.path().join("run/signet/sockets");
        fs::create_dir_all(&pods).unwrap();
        fs::create_dir_all(&sockets).unwrap();
        serve_greeting(&sockets.join("api.sock"));
        let plugin = CsiPlugin::new(CsiConfig {
            driver_name: "csi.signet.dev".into(),
            node_id: "kind-worker".into(),
            workload_socket_dir: sockets.clone(),
            kubelet_pods_dir: pods.clone(),
        })
        .unwrap();
        let csi_socket = root.path().join("plugins/csi.signet.dev/csi.sock");
        let listener = signet_csi::bind_socket(&csi_socket).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            plugin
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let channel = Endpoint::from_static("http://csi")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = csi_socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .unwrap();
        Self {
            root,
            pods,
            sockets,
            identity: IdentityClient::new(channel.clone()),
            node: NodeClient::new(channel),
            _shutdown: stop,
        }
    }

    /// What the kubelet does before NodePublishVolume: create the volume directory.
    fn volume_dir(&self, pod_uid: &str, volume: &str) -> PathBuf {
        let dir = self
            .pods
            .join(pod_uid)
            .join("volumes/kubernetes.io~csi")
            .join(volume);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The fixture's NodePublishVolume request, retargeted into this node's pods dir.
    fn kubelet_publish(&self) -> NodePublishVolumeRequest {
        let mut request = fixture_publish_request();
        let relative = Path::new(&request.target_path)
            .strip_prefix("/var/lib/kubelet/pods")
            .unwrap()
            .to_owned();
        let target = self.pods.join(relative);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        request.target_path = target.to_str().unwrap().to_owned();
        request
    }

    fn valid_publish(&self) -> NodePublishVolumeRequest {
        let mut request = self.kubelet_publish();
        request.readonly = true;
        request.volume_context.remove("size");
        request
    }

    async fn publish(&mut self, request: NodePublishVolumeRequest) -> Result<(), tonic::Status> {
        self.node.node_publish_volume(request).await.map(|_| ())
    }

    async fn unpublish(&mut self, target: &str) -> Result<(), tonic::Status> {
        self.node
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: "csi-test".into(),
                target_path: target.into(),
            })
            .await
            .map(|_| ())
    }
}

impl Drop for Node {
    /// Never leave a mount behind, even when an assertion failed half way.
    fn drop(&mut self) {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<PathBuf> = mounts::mount_points(&mountinfo)
            .filter(|point| point.starts_with(self.root.path()))
            .collect();
        ours.sort();
        for point in ours.iter().rev() {
            let _ = mounts::unmount_all(point);
        }
    }
}

/// The agent's socket: answers every connection with a greeting, so a test can prove a
/// workload reaches it through the mount.
fn serve_greeting(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(GREETING);
        }
    });
}

/// Parses the `GRPC request: {...}` line of the kubelet's NodePublishVolume from the fixture.
fn fixture_publish_request() -> NodePublishVolumeRequest {
    let log = fs::read_to_string(format!(
        "{FIXTURES}/csi-node-publish-unpublish-requests.log"
    ))
    .unwrap();
    let json = log
        .lines()
        .filter_map(|line| line.split_once("GRPC request: ").map(|(_, json)| json))
        .find(|json| json.contains("volume_capability"))
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    let text = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .unwrap()
            .to_owned()
    };
    let mode = match text("/volume_capability/access_mode/mode").as_str() {
        "SINGLE_NODE_MULTI_WRITER" => 7,
        "SINGLE_NODE_WRITER" => 1,
        other => panic!("unexpected access mode {other}"),
    };
    let context: HashMap<String, String> = value["volume_context"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    NodePublishVolumeRequest {
        volume_id: text("/volume_id"),
        target_path: text("/target_path"),
        volume_capability: Some(VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(AccessMode { mode }),
        }),
        readonly: value
            .get("readonly")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        volume_context: context,
        ..Default::default()
    }
}

/// What the kubelet sends to read a volume's health.
fn stats_request(volume_path: &str) -> NodeGetVolumeStatsRequest {
    NodeGetVolumeStatsRequest {
        volume_id: "csi-x".into(),
        volume_path: volume_path.into(),
        staging_target_path: String::new(),
    }
}

fn mount_count(path: &Path) -> usize {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts::mount_points(&mountinfo)
        .filter(|p| p == path)
        .count()
}

/// Connects to `<dir>/api.sock` as a workload in the pod would. Through `/proc/self/fd` because
/// the temporary directory makes the path longer than a socket address can be.
fn greeting_through(dir: &Path) -> Vec<u8> {
    let dir = fs::File::open(dir).unwrap();
    let short = format!("/proc/self/fd/{}/api.sock", dir.as_raw_fd());
    let mut stream = UnixStream::connect(short).unwrap();
    let mut received = Vec::new();
    stream.read_to_end(&mut received).unwrap();
    received
}

#[tokio::test]
async fn the_kubelets_call_sequence_mounts_the_socket_directory_read_only() {
    let mut node = Node::start().await;

    // The calls in the order a real kubelet made them (csi-kubelet-call-sequence.log).
    let info = node
        .identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "csi.signet.dev");
    assert!(!info.vendor_version.is_empty());
    let capabilities = node
        .identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(capabilities.capabilities.is_empty(), "node plugin only");
    let info = node
        .node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "kind-worker");
    for _ in 0..2 {
        let caps = node
            .node
            .node_get_capabilities(NodeGetCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner();
        let kinds: Vec<i32> = caps
            .capabilities
            .iter()
            .filter_map(|c| {
                c.r#type
                    .map(|node_service_capability::Type::Rpc(rpc)| rpc.r#type)
            })
            .collect();
        assert_eq!(
            kinds,
            vec![2, 4],
            "GET_VOLUME_STATS and VOLUME_CONDITION, no staging"
        );
    }

    // The captured request came from a pod without `readOnly: true`: refused with the fix.
    let as_captured = node.kubelet_publish();
    let target = PathBuf::from(&as_captured.target_path);
    let refused = node.publish(as_captured).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("readOnly: true"),
        "{}",
        refused.message()
    );
    assert!(!target.exists(), "nothing created for a refused request");

    node.publish(node.valid_publish()).await.unwrap();
    assert!(mounts::is_mount_point(&target).unwrap());
    assert_eq!(
        greeting_through(&target),
        GREETING,
        "the socket works through the mount"
    );
    let write = fs::write(target.join("planted"), b"x").unwrap_err();
    assert_eq!(
        write.raw_os_error(),
        Some(libc_erofs()),
        "writes fail: {write}"
    );
    assert!(
        fs::remove_file(target.join("api.sock")).is_err(),
        "the socket cannot be removed"
    );
    assert!(mounts::is_read_only(&target).unwrap());

    let stats = node
        .node
        .node_get_volume_stats(stats_request(target.to_str().unwrap()))
        .await
        .unwrap()
        .into_inner();
    let condition = stats.volume_condition.unwrap();
    assert!(!condition.abnormal, "{}", condition.message);
    assert_eq!(stats.usage.len(), 2, "bytes and inodes");

    // Idempotent: the kubelet republishing after a restart does not stack mounts.
    node.publish(node.valid_publish()).await.unwrap();
    node.publish(node.valid_publish()).await.unwrap();
    assert_eq!(mount_count(&target), 1);

    node.unpublish(target.to_str().unwrap()).await.unwrap();
    assert!(!target.exists(), "target removed");
    assert!(
        node.sockets.join("api.sock").exists(),
        "the agent's socket is untouched"
    );
    assert_eq!(greeting_through(&node.sockets), GREETING);
    // Idempotent: already gone is success (a kubelet retry after a crash, or a node reboot).
    node.unpublish(target.to_str().unwrap()).await.unwrap();
}

/// EROFS, without a libc dependency for one constant.
fn libc_erofs() -> i32 {
    rustix::io::Errno::ROFS.raw_os_error()
}

#[tokio::test]
async fn hostile_requests_are_refused_and_touch_nothing() {
    let mut node = Node::start().await;
    let outside = node.root.path().join("escape");
    let traversal = format!(
        "{}/a8b4bd0f-bdd8-40ba-bcd5-05e874c2fe1d/volumes/kubernetes.io~csi/v/../../../../../escape",
        node.pods.display()
    );
    type Edit = Box<dyn Fn(&mut NodePublishVolumeRequest)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("not read-only", Box::new(|r| r.readonly = false)),
        (
            "not ephemeral",
            Box::new(|r| {
                r.volume_context.remove("csi.storage.k8s.io/ephemeral");
            }),
        ),
        (
            "persistent volume",
            Box::new(|r| {
                r.volume_context
                    .insert("csi.storage.k8s.io/ephemeral".into(), "false".into());
            }),
        ),
        (
            "block access",
            Box::new(|r| {
                r.volume_capability.as_mut().unwrap().access_type =
                    Some(AccessType::Block(BlockVolume {}));
            }),
        ),
        (
            "fsType",
            Box::new(|r| {
                r.volume_capability.as_mut().unwrap().access_type =
                    Some(AccessType::Mount(MountVolume {
                        fs_type: "ext4".into(),
                        ..Default::default()
                    }));
            }),
        ),
        (
            "mount flags",
            Box::new(|r| {
                r.volume_capability.as_mut().unwrap().access_type =
                    Some(AccessType::Mount(MountVolume {
                        mount_flags: vec!["rw".into(), "suid".into()],
                        ..Default::default()
                    }));
            }),
        ),
        (
            "path traversal",
            Box::new(move |r| r.target_path = traversal.clone()),
        ),
        ("outside the pods dir", {
            let outside = outside.clone();
            Box::new(move |r| r.target_path = outside.to_str().unwrap().into())
        }),
        (
            "another pod's path",
            Box::new(|r| {
                r.volume_context.insert(
                    "csi.storage.k8s.io/pod.uid".into(),
                    "00000000-0000-0000-0000-000000000001".into(),
                );
            }),
        ),
        (
            "volume attributes",
            Box::new(|r| {
                r.volume_context.insert("socketDir".into(), "/etc".into());
            }),
        ),
    ];
    for (name, edit) in cases {
        let mut request = node.valid_publish();
        edit(&mut request);
        let status = node.publish(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{name}: {}",
            status.message()
        );
    }
    assert!(!outside.exists(), "nothing created outside the pods dir");
    let target = PathBuf::from(node.valid_publish().target_path);
    assert!(!target.exists(), "nothing created for refused requests");

    // Unpublish refuses paths outside the layout too: it must never unmount or delete them.
    fs::create_dir_all(&outside).unwrap();
    let status = node.unpublish(outside.to_str().unwrap()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(outside.exists());

    let status = node
        .node
        .node_stage_volume(NodeStageVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    // An oversized request is refused by the transport; the plugin keeps serving.
    let mut huge = node.valid_publish();
    huge.volume_context
        .insert("csi.storage.k8s.io/x".into(), "y".repeat(128 * 1024));
    let refused = node.publish(huge).await.unwrap_err();
    assert!(
        matches!(refused.code(), Code::OutOfRange | Code::ResourceExhausted),
        "the size limit refused it: {refused:?}"
    );
    node.publish(node.valid_publish()).await.unwrap();
}

#[tokio::test]
async fn symlinks_and_foreign_mounts_are_not_followed() {
    let mut node = Node::start().await;
    let elsewhere = node.root.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();

    // The volume directory is a symlink leading out of the pods dir.
    let uid = "11111111-2222-3333-4444-555555555555";
    let csi_dir = node.pods.join(uid).join("volumes/kubernetes.io~csi");
    fs::create_dir_all(&csi_dir).unwrap();
    symlink(&elsewhere, csi_dir.join("v")).unwrap();
    let mut request = node.valid_publish();
    request.target_path = csi_dir.join("v/mount").to_str().unwrap().into();
    request
        .volume_context
        .insert("csi.storage.k8s.io/pod.uid".into(), uid.into());
    let status = node.publish(request).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );
    assert!(!elsewhere.join("mount").exists());
    // Nor does unpublish remove anything through it.
    fs::create_dir(elsewhere.join("mount")).unwrap();
    let status = node
        .unpublish(csi_dir.join("v/mount").to_str().unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );
    assert!(
        elsewhere.join("mount").exists(),
        "nothing removed outside the pods dir"
    );
    fs::remove_dir(elsewhere.join("mount")).unwrap();

    // The target itself is a symlink.
    let request = node.valid_publish();
    let target = PathBuf::from(&request.target_path);
    symlink(&elsewhere, &target).unwrap();
    let status = node.publish(request.clone()).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );
    assert!(!mounts::is_mount_point(&elsewhere).unwrap());
    let status = node.unpublish(target.to_str().unwrap()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    fs::remove_file(&target).unwrap();

    // The target is a regular file.
    fs::write(&target, b"").unwrap();
    assert_eq!(
        node.publish(request.clone()).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    fs::remove_file(&target).unwrap();

    // The target is already a mount of something else: not ours to reuse.
    fs::create_dir(&target).unwrap();
    bind_with_mount_command(&elsewhere, &target);
    let status = node.publish(request.clone()).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );
    mounts::unmount_all(&target).unwrap();

    // A writable bind of the socket dir (an older driver's) is made read-only, not stacked.
    bind_with_mount_command(&node.sockets, &target);
    assert!(!mounts::is_read_only(&target).unwrap());
    node.publish(request.clone()).await.unwrap();
    assert!(mounts::is_read_only(&target).unwrap());
    assert_eq!(mount_count(&target), 1);
    node.unpublish(target.to_str().unwrap()).await.unwrap();

    // An unmounted, non-empty target was not made by the plugin: its contents are kept.
    fs::create_dir(&target).unwrap();
    fs::write(target.join("data"), b"keep").unwrap();
    let status = node.unpublish(target.to_str().unwrap()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(fs::read(target.join("data")).unwrap(), b"keep");
}

/// A writable bind made by someone else (util-linux `mount`, not the plugin).
fn bind_with_mount_command(source: &Path, target: &Path) {
    std::process::Command::new("mount")
        .arg("--bind")
        .arg(source)
        .arg(target)
        .status()
        .map(|status| assert!(status.success()))
        .unwrap();
}

#[tokio::test]
async fn probe_and_volume_health_follow_the_agent() {
    let mut node = Node::start().await;
    let probe = node
        .identity
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));

    let request = node.valid_publish();
    let target = request.target_path.clone();
    let stats = stats_request;
    let missing = node
        .node
        .node_get_volume_stats(stats(&target))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let hostile = node
        .node
        .node_get_volume_stats(stats("/etc"))
        .await
        .unwrap_err();
    assert_eq!(hostile.code(), Code::InvalidArgument);

    // A directory that is not mounted is reported abnormal.
    fs::create_dir(&target).unwrap();
    let condition = node
        .node
        .node_get_volume_stats(stats(&target))
        .await
        .unwrap()
        .into_inner()
        .volume_condition
        .unwrap();
    assert!(condition.abnormal);
    fs::remove_dir(&target).unwrap();

    // Mounted, but the agent's socket went away: abnormal, with the reason.
    node.publish(request).await.unwrap();
    fs::remove_file(node.sockets.join("api.sock")).unwrap();
    let condition = node
        .node
        .node_get_volume_stats(stats(&target))
        .await
        .unwrap()
        .into_inner()
        .volume_condition
        .unwrap();
    assert!(condition.abnormal);
    assert!(
        condition.message.contains("signet agent"),
        "{}",
        condition.message
    );
    node.unpublish(&target).await.unwrap();

    // Without the agent's socket directory the plugin is not ready and publish explains why.
    let _ = node.volume_dir("a8b4bd0f-bdd8-40ba-bcd5-05e874c2fe1d", "v");
    fs::remove_dir_all(&node.sockets).unwrap();
    let probe = node
        .identity
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(false));
    let status = node.publish(node.valid_publish()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("signet agent"),
        "{}",
        status.message()
    );
}
