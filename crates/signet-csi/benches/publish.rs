//! Pod-start cost of the CSI driver: NodePublishVolume and NodeUnpublishVolume latency over the
//! real Unix socket with real bind mounts (run as root): `cargo bench -p signet-csi`.
//! `SIGNET_BENCH_VOLUMES` sets the number of volumes (default 500).

#![expect(clippy::unwrap_used, clippy::print_stdout, reason = "bench binary")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use signet_csi::{CsiConfig, CsiPlugin};
use signet_proto::csi::v1::{
    NodePublishVolumeRequest, NodeUnpublishVolumeRequest, VolumeCapability,
    node_client::NodeClient,
    volume_capability::{AccessMode, AccessType, MountVolume},
};
use signet_test_support::percentile;
use tonic::transport::Endpoint;

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<22} n={:<5} p50={:>8.1?} p99={:>8.1?} max={:>8.1?}",
        samples.len(),
        percentile(&mut samples, 0.50),
        percentile(&mut samples, 0.99),
        samples[samples.len() - 1]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let volumes: usize = std::env::var("SIGNET_BENCH_VOLUMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let root = tempfile::tempdir().unwrap();
    let pods = root.path().join("pods");
    let sockets = root.path().join("sockets");
    std::fs::create_dir_all(&pods).unwrap();
    std::fs::create_dir_all(&sockets).unwrap();
    let plugin = CsiPlugin::new(CsiConfig {
        driver_name: "csi.signet.dev".into(),
        node_id: "bench".into(),
        workload_socket_dir: sockets,
        kubelet_pods_dir: pods.clone(),
    })
    .unwrap();
    let csi_socket = root.path().join("csi.sock");
    let listener = signet_csi::bind_socket(&csi_socket).unwrap();
    tokio::spawn(async move { plugin.serve(listener, std::future::pending()).await });
    let channel = Endpoint::from_static("http://csi")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = csi_socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .unwrap();
    let mut client = NodeClient::new(channel);

    let mut targets = Vec::with_capacity(volumes);
    for i in 0..volumes {
        let uid = format!("00000000-0000-0000-0000-{i:012x}");
        let dir = pods.join(&uid).join("volumes/kubernetes.io~csi/spiffe");
        std::fs::create_dir_all(&dir).unwrap();
        targets.push((uid, dir.join("mount")));
    }
    let mut publish = Vec::with_capacity(volumes);
    let mut republish = Vec::with_capacity(volumes);
    for (uid, target) in &targets {
        let request = NodePublishVolumeRequest {
            volume_id: format!("csi-{uid}"),
            target_path: target.to_str().unwrap().into(),
            volume_capability: Some(VolumeCapability {
                access_type: Some(AccessType::Mount(MountVolume::default())),
                access_mode: Some(AccessMode { mode: 1 }),
            }),
            readonly: true,
            volume_context: HashMap::from([
                ("csi.storage.k8s.io/ephemeral".into(), "true".into()),
                ("csi.storage.k8s.io/pod.uid".into(), uid.clone()),
                ("csi.storage.k8s.io/pod.name".into(), "bench".into()),
                ("csi.storage.k8s.io/pod.namespace".into(), "bench".into()),
            ]),
            ..Default::default()
        };
        let start = Instant::now();
        client.node_publish_volume(request.clone()).await.unwrap();
        publish.push(start.elapsed());
        let start = Instant::now();
        client.node_publish_volume(request).await.unwrap();
        republish.push(start.elapsed());
    }
    let mut unpublish = Vec::with_capacity(volumes);
    for (uid, target) in &targets {
        let start = Instant::now();
        client
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: format!("csi-{uid}"),
                target_path: target.to_str().unwrap().into(),
            })
            .await
            .unwrap();
        unpublish.push(start.elapsed());
    }
    println!("signet csi, {volumes} volumes (real bind mounts, gRPC over a Unix socket)");
    report("NodePublishVolume", publish);
    report("  again (idempotent)", republish);
    report("NodeUnpublishVolume", unpublish);
}
