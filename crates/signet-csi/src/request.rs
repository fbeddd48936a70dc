//! Validation of NodePublishVolume / NodeUnpublishVolume requests (DESIGN §9). Pure: turns a
//! request into a plan or a precise `InvalidArgument`, before anything touches the filesystem.

use std::collections::HashMap;
use std::path::Path;

use signet_proto::csi::v1::{
    NodePublishVolumeRequest, NodeUnpublishVolumeRequest, VolumeCapability,
    volume_capability::{AccessMode, AccessType, access_mode::Mode},
};

use crate::target::{TargetError, TargetPath, is_pod_uid};

/// The volume-context keys the kubelet adds when the CSIDriver has `podInfoOnMount: true`.
pub const EPHEMERAL_KEY: &str = "csi.storage.k8s.io/ephemeral";
pub const POD_NAME_KEY: &str = "csi.storage.k8s.io/pod.name";
pub const POD_NAMESPACE_KEY: &str = "csi.storage.k8s.io/pod.namespace";
pub const POD_UID_KEY: &str = "csi.storage.k8s.io/pod.uid";
pub const SERVICE_ACCOUNT_KEY: &str = "csi.storage.k8s.io/serviceAccount.name";
/// The kubelet's key prefix. Pod authors can also write keys with it in `volumeAttributes`; the
/// kubelet overwrites the ones it injects (`ephemeral`, `pod.*`, `serviceAccount.name`), so only
/// those are trusted, and unknown keys under the prefix are merely tolerated.
const KUBELET_KEY_PREFIX: &str = "csi.storage.k8s.io/";
/// Longest volume id accepted (the kubelet's are `csi-<64 hex>`).
const MAX_VOLUME_ID_LEN: usize = 256;

/// Why a request was refused; every variant becomes `InvalidArgument`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("volume_id is required")]
    MissingVolumeId,
    #[error("volume_id is longer than {MAX_VOLUME_ID_LEN} bytes or has control characters")]
    BadVolumeId,
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("volume_capability is required")]
    MissingCapability,
    #[error("block volumes are not supported: use a mount (filesystem) volume")]
    BlockAccess,
    #[error("volume_capability must set an access type (mount)")]
    MissingAccessType,
    #[error("fsType is not supported (got {0:?}): the volume is a bind mount of a directory")]
    FsType(String),
    #[error(
        "mount flags are not supported: the volume is always mounted read-only, nosuid, nodev, noexec"
    )]
    MountFlags,
    #[error("volume_mount_group is not supported")]
    MountGroup,
    #[error("access_mode is required")]
    MissingAccessMode,
    #[error("access mode {0} is not supported: use a single-node mode")]
    AccessMode(String),
    #[error("readOnly must be true: set `readOnly: true` on the pod's csi volume")]
    NotReadOnly,
    #[error(
        "only ephemeral inline volumes are supported: the pod must declare the volume inline (csi: {{driver: ...}}) \
         and the CSIDriver must have podInfoOnMount: true and volumeLifecycleModes: [Ephemeral]"
    )]
    NotEphemeral,
    #[error("volume context lacks {0}: the CSIDriver must have podInfoOnMount: true")]
    MissingPodInfo(&'static str),
    #[error("volume context {key} is not a valid pod UID")]
    BadPodUid { key: &'static str },
    #[error(
        "volumeAttributes are not supported (got {0:?}): remove them from the pod's csi volume"
    )]
    UnknownAttribute(String),
    #[error("staging_target_path must be empty: this plugin has no stage step")]
    Staged,
}

/// The pod a volume is published for, from the kubelet's volume context (for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
}

/// A NodePublishVolume request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishPlan {
    pub volume_id: String,
    pub target: TargetPath,
    pub pod: PodInfo,
}

/// A NodeUnpublishVolume request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpublishPlan {
    pub volume_id: String,
    pub target: TargetPath,
}

pub fn validate_publish(
    request: &NodePublishVolumeRequest,
    pods_dir: &Path,
) -> Result<PublishPlan, RequestError> {
    let volume_id = validate_volume_id(&request.volume_id)?;
    let target = TargetPath::parse(&request.target_path, pods_dir)?;
    if !request.staging_target_path.is_empty() {
        return Err(RequestError::Staged);
    }
    validate_capability(request.volume_capability.as_ref())?;
    if !request.readonly {
        return Err(RequestError::NotReadOnly);
    }
    let pod = validate_context(&request.volume_context)?;
    target.check_pod(&pod.uid)?;
    Ok(PublishPlan {
        volume_id,
        target,
        pod,
    })
}

pub fn validate_unpublish(
    request: &NodeUnpublishVolumeRequest,
    pods_dir: &Path,
) -> Result<UnpublishPlan, RequestError> {
    Ok(UnpublishPlan {
        volume_id: validate_volume_id(&request.volume_id)?,
        target: TargetPath::parse(&request.target_path, pods_dir)?,
    })
}

fn validate_volume_id(volume_id: &str) -> Result<String, RequestError> {
    if volume_id.is_empty() {
        return Err(RequestError::MissingVolumeId);
    }
    if volume_id.len() > MAX_VOLUME_ID_LEN || volume_id.chars().any(char::is_control) {
        return Err(RequestError::BadVolumeId);
    }
    Ok(volume_id.to_owned())
}

fn validate_capability(capability: Option<&VolumeCapability>) -> Result<(), RequestError> {
    let capability = capability.ok_or(RequestError::MissingCapability)?;
    match &capability.access_type {
        None => return Err(RequestError::MissingAccessType),
        Some(AccessType::Block(_)) => return Err(RequestError::BlockAccess),
        Some(AccessType::Mount(mount)) => {
            if !mount.fs_type.is_empty() {
                return Err(RequestError::FsType(mount.fs_type.clone()));
            }
            if !mount.mount_flags.is_empty() {
                return Err(RequestError::MountFlags);
            }
            if !mount.volume_mount_group.is_empty() {
                return Err(RequestError::MountGroup);
            }
        }
    }
    let access = capability
        .access_mode
        .as_ref()
        .ok_or(RequestError::MissingAccessMode)?;
    validate_access_mode(access)
}

/// The kubelet sends a single-node mode for inline volumes; anything else is a misconfiguration.
fn validate_access_mode(access: &AccessMode) -> Result<(), RequestError> {
    match Mode::try_from(access.mode) {
        Ok(
            Mode::SingleNodeWriter
            | Mode::SingleNodeReaderOnly
            | Mode::SingleNodeSingleWriter
            | Mode::SingleNodeMultiWriter,
        ) => Ok(()),
        Ok(Mode::Unknown) => Err(RequestError::MissingAccessMode),
        Ok(other) => Err(RequestError::AccessMode(other.as_str_name().to_owned())),
        Err(_) => Err(RequestError::AccessMode(access.mode.to_string())),
    }
}

fn validate_context(context: &HashMap<String, String>) -> Result<PodInfo, RequestError> {
    if context.get(EPHEMERAL_KEY).map(String::as_str) != Some("true") {
        return Err(RequestError::NotEphemeral);
    }
    // Pod authors control every other key; refusing them makes a typo'd option fail loudly.
    let mut user_keys: Vec<&String> = context
        .keys()
        .filter(|key| !key.starts_with(KUBELET_KEY_PREFIX))
        .collect();
    user_keys.sort();
    if let Some(key) = user_keys.first() {
        return Err(RequestError::UnknownAttribute((*key).clone()));
    }
    let required = |key: &'static str| {
        context
            .get(key)
            .filter(|value| !value.is_empty())
            .cloned()
            .ok_or(RequestError::MissingPodInfo(key))
    };
    let uid = required(POD_UID_KEY)?;
    if !is_pod_uid(&uid) {
        return Err(RequestError::BadPodUid { key: POD_UID_KEY });
    }
    Ok(PodInfo {
        namespace: required(POD_NAMESPACE_KEY)?,
        name: required(POD_NAME_KEY)?,
        uid,
        service_account: context
            .get(SERVICE_ACCOUNT_KEY)
            .cloned()
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use signet_proto::csi::v1::volume_capability::{BlockVolume, MountVolume};

    use super::*;

    const PODS: &str = "/var/lib/kubelet/pods";
    const UID: &str = "a8b4bd0f-bdd8-40ba-bcd5-05e874c2fe1d";

    /// The request a real kubelet sent (reference fixture), with `readOnly: true` set on the volume.
    fn kubelet_request() -> NodePublishVolumeRequest {
        let context = [
            (EPHEMERAL_KEY, "true"),
            (POD_NAME_KEY, "csi-inline"),
            (POD_NAMESPACE_KEY, "default"),
            (POD_UID_KEY, UID),
            (SERVICE_ACCOUNT_KEY, "default"),
        ];
        NodePublishVolumeRequest {
            volume_id: "csi-0f6ed7f1e0819689ec9087b2dc988df8f5ab33a3b513a130009dff180eaabee6"
                .into(),
            target_path: format!("{PODS}/{UID}/volumes/kubernetes.io~csi/v/mount"),
            volume_capability: Some(VolumeCapability {
                access_type: Some(AccessType::Mount(MountVolume::default())),
                access_mode: Some(AccessMode {
                    mode: Mode::SingleNodeMultiWriter as i32,
                }),
            }),
            readonly: true,
            volume_context: context
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    fn refused(edit: impl FnOnce(&mut NodePublishVolumeRequest)) -> RequestError {
        let mut request = kubelet_request();
        edit(&mut request);
        validate_publish(&request, Path::new(PODS)).expect_err("request must be refused")
    }

    #[test]
    fn accepts_the_kubelets_request() {
        let plan = validate_publish(&kubelet_request(), Path::new(PODS)).expect("valid");
        assert_eq!(plan.pod.namespace, "default");
        assert_eq!(plan.pod.name, "csi-inline");
        assert_eq!(plan.pod.service_account, "default");
        assert_eq!(plan.target.pod_uid(), UID);
        // Secrets and publish context are ignored (and never logged).
        let mut request = kubelet_request();
        request.secrets.insert("token".into(), "s3cr3t".into());
        request.publish_context.insert("k".into(), "v".into());
        assert!(validate_publish(&request, Path::new(PODS)).is_ok());
    }

    #[test]
    fn refuses_hostile_or_misconfigured_requests() {
        assert_eq!(refused(|r| r.readonly = false), RequestError::NotReadOnly);
        assert_eq!(
            refused(|r| r.volume_id.clear()),
            RequestError::MissingVolumeId
        );
        assert_eq!(
            refused(|r| r.volume_id = "a\nb".into()),
            RequestError::BadVolumeId
        );
        assert_eq!(
            refused(|r| r.volume_id = "x".repeat(300)),
            RequestError::BadVolumeId
        );
        assert_eq!(
            refused(|r| {
                r.volume_context.remove(EPHEMERAL_KEY);
            }),
            RequestError::NotEphemeral
        );
        assert_eq!(
            refused(|r| {
                r.volume_context
                    .insert(EPHEMERAL_KEY.into(), "false".into());
            }),
            RequestError::NotEphemeral
        );
        assert_eq!(
            refused(|r| {
                r.volume_context.insert("size".into(), "10Mi".into());
            }),
            RequestError::UnknownAttribute("size".into())
        );
        assert_eq!(
            refused(|r| {
                r.volume_context.remove(POD_UID_KEY);
            }),
            RequestError::MissingPodInfo(POD_UID_KEY)
        );
        assert_eq!(
            refused(|r| {
                r.volume_context
                    .insert(POD_UID_KEY.into(), "../../x".into());
            }),
            RequestError::BadPodUid { key: POD_UID_KEY }
        );
        assert!(matches!(
            refused(|r| {
                r.volume_context.insert(
                    POD_UID_KEY.into(),
                    "00000000-0000-0000-0000-000000000000".into(),
                );
            }),
            RequestError::Target(TargetError::PodMismatch { .. })
        ));
        assert_eq!(
            refused(|r| r.staging_target_path = "/var/lib/kubelet/plugins/x".into()),
            RequestError::Staged
        );
        assert!(matches!(
            refused(|r| r.target_path =
                format!("{PODS}/{UID}/volumes/kubernetes.io~csi/v/../../../../../etc")),
            RequestError::Target(TargetError::NotNormalized(_))
        ));
    }

    #[test]
    fn refuses_unsupported_capabilities() {
        let capability = |edit: fn(&mut VolumeCapability)| {
            refused(|r| {
                if let Some(capability) = r.volume_capability.as_mut() {
                    edit(capability);
                }
            })
        };
        assert_eq!(
            refused(|r| r.volume_capability = None),
            RequestError::MissingCapability
        );
        assert_eq!(
            capability(|c| c.access_type = Some(AccessType::Block(BlockVolume {}))),
            RequestError::BlockAccess
        );
        assert_eq!(
            capability(|c| c.access_type = None),
            RequestError::MissingAccessType
        );
        assert_eq!(
            capability(|c| {
                c.access_type = Some(AccessType::Mount(MountVolume {
                    fs_type: "ext4".into(),
                    ..Default::default()
                }))
            }),
            RequestError::FsType("ext4".into())
        );
        assert_eq!(
            capability(|c| {
                c.access_type = Some(AccessType::Mount(MountVolume {
                    mount_flags: vec!["rw".into()],
                    ..Default::default()
                }))
            }),
            RequestError::MountFlags
        );
        assert_eq!(
            capability(|c| {
                c.access_type = Some(AccessType::Mount(MountVolume {
                    volume_mount_group: "1000".into(),
                    ..Default::default()
                }))
            }),
            RequestError::MountGroup
        );
        assert_eq!(
            capability(|c| c.access_mode = None),
            RequestError::MissingAccessMode
        );
        assert_eq!(
            capability(|c| c.access_mode = Some(AccessMode { mode: 0 })),
            RequestError::MissingAccessMode
        );
        assert_eq!(
            capability(|c| {
                c.access_mode = Some(AccessMode {
                    mode: Mode::MultiNodeMultiWriter as i32,
                })
            }),
            RequestError::AccessMode("MULTI_NODE_MULTI_WRITER".into())
        );
        assert_eq!(
            capability(|c| c.access_mode = Some(AccessMode { mode: 99 })),
            RequestError::AccessMode("99".into())
        );
        for mode in [
            Mode::SingleNodeWriter,
            Mode::SingleNodeReaderOnly,
            Mode::SingleNodeSingleWriter,
        ] {
            let mut request = kubelet_request();
            if let Some(capability) = request.volume_capability.as_mut() {
                capability.access_mode = Some(AccessMode { mode: mode as i32 });
            }
            assert!(
                validate_publish(&request, Path::new(PODS)).is_ok(),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn unpublish_checks_the_target_only() {
        let request = NodeUnpublishVolumeRequest {
            volume_id: "csi-1".into(),
            target_path: format!("{PODS}/{UID}/volumes/kubernetes.io~csi/v/mount"),
        };
        assert!(validate_unpublish(&request, Path::new(PODS)).is_ok());
        let hostile = NodeUnpublishVolumeRequest {
            volume_id: "csi-1".into(),
            target_path: "/etc".into(),
        };
        assert!(matches!(
            validate_unpublish(&hostile, Path::new(PODS)),
            Err(RequestError::Target(TargetError::OutsidePodsDir(_)))
        ));
        let missing = NodeUnpublishVolumeRequest {
            volume_id: String::new(),
            target_path: request.target_path.clone(),
        };
        assert_eq!(
            validate_unpublish(&missing, Path::new(PODS)),
            Err(RequestError::MissingVolumeId)
        );
    }
}
