//! The CSI Node service: publish = read-only bind mount of the agent's socket directory onto the
//! pod's target path, unpublish = unmount and remove, both idempotent (DESIGN §9).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::Path;
use std::sync::Arc;

use signet_proto::csi::v1::{
    NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesRequest,
    NodeGetCapabilitiesResponse, NodeGetInfoRequest, NodeGetInfoResponse,
    NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest,
    NodePublishVolumeResponse, NodeServiceCapability, NodeStageVolumeRequest,
    NodeStageVolumeResponse, NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse,
    NodeUnstageVolumeRequest, NodeUnstageVolumeResponse, VolumeCondition, VolumeUsage,
    node_server::Node, node_service_capability, volume_usage,
};
use tonic::{Request, Response, Status};

use crate::mounts;
use crate::request::{self, PublishPlan, UnpublishPlan};
use crate::target::TargetPath;
use crate::{Settings, WORKLOAD_SOCKET_NAME};

#[derive(Debug)]
pub(crate) struct NodeService {
    settings: Arc<Settings>,
    /// Publish and unpublish of one target must not interleave (the kubelet retries while a
    /// call is still running); they take microseconds, so one lock for all targets is enough.
    mount_lock: Arc<tokio::sync::Mutex<()>>,
}

impl NodeService {
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        Self {
            settings,
            mount_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Settings) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        // The guard moves into the blocking task: if the kubelet gives up on the call and the
        // handler is dropped, the mount work still finishes before a retry may start.
        let guard = self.mount_lock.clone().lock_owned().await;
        let settings = self.settings.clone();
        tokio::task::spawn_blocking(move || {
            let result = work(&settings);
            drop(guard);
            result
        })
        .await
        .map_err(|e| Status::internal(format!("mount task failed: {e}")))?
    }
}

/// What publish found and did.
#[derive(Debug, PartialEq, Eq)]
enum Published {
    Mounted,
    AlreadyMounted,
}

fn publish(settings: &Settings, plan: &PublishPlan) -> Result<Published, Status> {
    let source = &settings.socket_dir;
    if !source.is_dir() {
        return Err(Status::failed_precondition(format!(
            "the agent's socket directory {} does not exist yet: is signet agent running on this node?",
            source.display()
        )));
    }
    let target = plan.target.path();
    check_parent(settings, &plan.target)?;
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match fs::DirBuilder::new().mode(0o750).create(target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    check_plain_directory(target)?;
                }
                Err(e) => return Err(io_status("creating the target directory", target, &e)),
            }
        }
        Err(e) => return Err(io_status("inspecting the target", target, &e)),
        Ok(_) => check_plain_directory(target)?,
    }
    let mounted = mounts::is_mount_point(target)
        .map_err(|e| io_status("checking whether the target is mounted", target, &e))?;
    if mounted {
        let ours = mounts::same_directory(target, source)
            .map_err(|e| io_status("comparing the target with the socket directory", target, &e))?;
        if !ours {
            return Err(Status::failed_precondition(format!(
                "{} is already a mount point of something other than {}",
                target.display(),
                source.display()
            )));
        }
        let read_only = mounts::is_read_only(target)
            .map_err(|e| io_status("checking the mount's flags", target, &e))?;
        if !read_only {
            mounts::remount_read_only(target)
                .map_err(|e| io_status("making the existing mount read-only", target, &e))?;
        }
        return Ok(Published::AlreadyMounted);
    }
    mounts::bind_read_only(source, target)
        .map_err(|e| io_status("bind-mounting the socket directory onto", target, &e))?;
    Ok(Published::Mounted)
}

/// The kubelet creates the volume directory; it must really be where the path says (no
/// symlinked component leading elsewhere).
fn check_parent(settings: &Settings, target: &TargetPath) -> Result<(), Status> {
    let parent = target.parent();
    let expected = parent
        .strip_prefix(&settings.pods_dir)
        .map(|rest| settings.pods_dir_resolved.join(rest))
        .map_err(|_| Status::internal("validated target left the pods directory"))?;
    match fs::canonicalize(parent) {
        Ok(resolved) if resolved == expected => Ok(()),
        Ok(resolved) => Err(Status::failed_precondition(format!(
            "{} resolves to {} (a symbolic link): refusing to mount there",
            parent.display(),
            resolved.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Status::failed_precondition(format!(
            "the volume directory {} does not exist: the kubelet creates it before publishing",
            parent.display()
        ))),
        Err(e) => Err(io_status("resolving the volume directory", parent, &e)),
    }
}

fn check_plain_directory(target: &Path) -> Result<(), Status> {
    let meta =
        fs::symlink_metadata(target).map_err(|e| io_status("inspecting the target", target, &e))?;
    if meta.file_type().is_symlink() {
        return Err(Status::failed_precondition(format!(
            "{} is a symbolic link: refusing to mount there",
            target.display()
        )));
    }
    if !meta.is_dir() {
        return Err(Status::failed_precondition(format!(
            "{} exists and is not a directory",
            target.display()
        )));
    }
    Ok(())
}

/// What unpublish found and did.
#[derive(Debug, PartialEq, Eq)]
enum Unpublished {
    Removed { unmounted: usize },
    AlreadyGone,
}

fn unpublish(settings: &Settings, plan: &UnpublishPlan) -> Result<Unpublished, Status> {
    let target = plan.target.path();
    if !plan.target.parent().exists() {
        return Ok(Unpublished::AlreadyGone);
    }
    // Never unmount or delete through a symlinked volume directory.
    check_parent(settings, &plan.target)?;
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Unpublished::AlreadyGone),
        Err(e) => return Err(io_status("inspecting the target", target, &e)),
        Ok(_) => check_plain_directory(target)?,
    }
    let unmounted =
        mounts::unmount_all(target).map_err(|e| io_status("unmounting the target", target, &e))?;
    match fs::remove_dir(target) {
        Ok(()) => Ok(Unpublished::Removed { unmounted }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Unpublished::Removed { unmounted }),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
            Err(Status::failed_precondition(format!(
                "{} is not mounted and not empty: it was not created by this plugin; refusing to delete its contents",
                target.display()
            )))
        }
        Err(e) => Err(io_status("removing the target directory", target, &e)),
    }
}

fn volume_stats(
    settings: &Settings,
    target: &TargetPath,
) -> Result<NodeGetVolumeStatsResponse, Status> {
    let path = target.path();
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Status::not_found(format!(
                "no volume at {}",
                path.display()
            )));
        }
        Err(e) => return Err(io_status("inspecting the volume", path, &e)),
        Ok(_) => {}
    }
    let mounted =
        mounts::is_mount_point(path).map_err(|e| io_status("checking the mount", path, &e))?;
    let socket = settings.socket_dir.join(WORKLOAD_SOCKET_NAME);
    let socket_present = fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket());
    let condition = if !mounted {
        VolumeCondition {
            abnormal: true,
            message: "the volume is not mounted; the pod must be restarted to get the Workload API"
                .into(),
        }
    } else if !socket_present {
        VolumeCondition {
            abnormal: true,
            message: format!(
                "the Workload API socket {} is missing: is signet agent running on this node?",
                socket.display()
            ),
        }
    } else {
        VolumeCondition {
            abnormal: false,
            message: "the Workload API socket is mounted".into(),
        }
    };
    let (bytes, inodes) = mounts::usage(path).map_err(|e| io_status("reading usage", path, &e))?;
    let usage_of = |[total, available, used]: [u64; 3], unit: volume_usage::Unit| VolumeUsage {
        total: i64::try_from(total).unwrap_or(i64::MAX),
        available: i64::try_from(available).unwrap_or(i64::MAX),
        used: i64::try_from(used).unwrap_or(i64::MAX),
        unit: unit as i32,
    };
    Ok(NodeGetVolumeStatsResponse {
        usage: vec![
            usage_of(bytes, volume_usage::Unit::Bytes),
            usage_of(inodes, volume_usage::Unit::Inodes),
        ],
        volume_condition: Some(condition),
    })
}

fn io_status(action: &str, path: &Path, error: &io::Error) -> Status {
    let message = format!("{action} {}: {error}", path.display());
    match error.kind() {
        io::ErrorKind::PermissionDenied => Status::permission_denied(message),
        io::ErrorKind::NotFound => Status::not_found(message),
        _ => Status::internal(message),
    }
}

fn refuse(operation: &'static str, error: request::RequestError) -> Status {
    tracing::warn!(operation, reason = %error, "CSI request refused");
    Status::invalid_argument(error.to_string())
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let plan = request::validate_publish(request.get_ref(), &self.settings.pods_dir)
            .map_err(|e| refuse("NodePublishVolume", e))?;
        let logged = plan.clone();
        let outcome = self
            .blocking(move |settings| publish(settings, &plan))
            .await;
        match &outcome {
            Ok(how) => tracing::info!(
                volume_id = %logged.volume_id,
                pod = %format_args!("{}/{}", logged.pod.namespace, logged.pod.name),
                pod_uid = %logged.pod.uid,
                volume = %logged.target.volume_name(),
                service_account = %logged.pod.service_account,
                target = %logged.target.path().display(),
                already_mounted = *how == Published::AlreadyMounted,
                "Workload API socket published"
            ),
            Err(status) => tracing::warn!(
                volume_id = %logged.volume_id,
                pod = %format_args!("{}/{}", logged.pod.namespace, logged.pod.name),
                target = %logged.target.path().display(),
                error = %status.message(),
                "publish failed"
            ),
        }
        outcome.map(|_| Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let plan = request::validate_unpublish(request.get_ref(), &self.settings.pods_dir)
            .map_err(|e| refuse("NodeUnpublishVolume", e))?;
        let logged = plan.clone();
        let outcome = self
            .blocking(move |settings| unpublish(settings, &plan))
            .await;
        match &outcome {
            Ok(Unpublished::Removed { unmounted }) => tracing::info!(
                volume_id = %logged.volume_id,
                target = %logged.target.path().display(),
                unmounted,
                "Workload API socket unpublished"
            ),
            Ok(Unpublished::AlreadyGone) => tracing::info!(
                volume_id = %logged.volume_id,
                target = %logged.target.path().display(),
                "unpublish: target already gone"
            ),
            Err(status) => tracing::warn!(
                volume_id = %logged.volume_id,
                target = %logged.target.path().display(),
                error = %status.message(),
                "unpublish failed"
            ),
        }
        outcome.map(|_| Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let request = request.into_inner();
        if request.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let target = TargetPath::parse(&request.volume_path, &self.settings.pods_dir)
            .map_err(|e| Status::invalid_argument(format!("volume_path: {e}")))?;
        let settings = self.settings.clone();
        tokio::task::spawn_blocking(move || volume_stats(&settings, &target))
            .await
            .map_err(|e| Status::internal(format!("stats task failed: {e}")))?
            .map(Response::new)
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        use node_service_capability::{Rpc, Type, rpc::Type as RpcType};
        let capability = |kind: RpcType| NodeServiceCapability {
            r#type: Some(Type::Rpc(Rpc {
                r#type: kind as i32,
            })),
        };
        // Stats with a volume condition let the kubelet report a pod whose socket went away.
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![
                capability(RpcType::GetVolumeStats),
                capability(RpcType::VolumeCondition),
            ],
        }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.settings.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }

    async fn node_stage_volume(
        &self,
        _request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "NodeStageVolume: this plugin does not advertise STAGE_UNSTAGE_VOLUME",
        ))
    }

    async fn node_unstage_volume(
        &self,
        _request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "NodeUnstageVolume: this plugin does not advertise STAGE_UNSTAGE_VOLUME",
        ))
    }

    async fn node_expand_volume(
        &self,
        _request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "NodeExpandVolume: this plugin does not advertise EXPAND_VOLUME",
        ))
    }
}
