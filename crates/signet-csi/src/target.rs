//! Target paths: the only place the plugin mounts onto, so they are checked lexically against the
//! kubelet's layout for CSI volumes before anything touches the filesystem:
//! `<kubelet pods dir>/<pod uid>/volumes/kubernetes.io~csi/<volume name>/mount`.

use std::path::{Path, PathBuf};

/// Longest target path accepted; the kubelet's are far shorter and `PATH_MAX` is 4096.
const MAX_TARGET_LEN: usize = 4096;
/// The kubelet's directory name for CSI volumes under a pod's `volumes/`.
const CSI_PLUGIN_DIR: &str = "kubernetes.io~csi";

/// Why a target path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("target_path is required")]
    Empty,
    #[error("target_path is longer than {MAX_TARGET_LEN} bytes")]
    TooLong,
    #[error("target_path must be absolute")]
    NotAbsolute,
    #[error("target_path contains a NUL byte")]
    Nul,
    #[error("target_path must be normalized: segment {0:?} is not allowed")]
    NotNormalized(String),
    #[error("target_path is not under the kubelet pods directory {0}")]
    OutsidePodsDir(PathBuf),
    #[error(
        "target_path does not have the kubelet's layout <pods dir>/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount"
    )]
    UnexpectedLayout,
    #[error("target_path names pod {in_path} but the request is for pod {in_context}")]
    PodMismatch { in_path: String, in_context: String },
}

/// A target path that passed every lexical check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPath {
    path: PathBuf,
    pod_uid: String,
    volume_name: String,
}

impl TargetPath {
    /// Checks `raw` against the layout under `pods_dir` (an absolute, normalized directory).
    pub fn parse(raw: &str, pods_dir: &Path) -> Result<Self, TargetError> {
        if raw.is_empty() {
            return Err(TargetError::Empty);
        }
        if raw.len() > MAX_TARGET_LEN {
            return Err(TargetError::TooLong);
        }
        if raw.contains('\0') {
            return Err(TargetError::Nul);
        }
        let Some(relative) = raw.strip_prefix('/') else {
            return Err(TargetError::NotAbsolute);
        };
        let segments: Vec<&str> = relative.split('/').collect();
        if let Some(bad) = segments
            .iter()
            .find(|segment| segment.is_empty() || **segment == "." || **segment == "..")
        {
            return Err(TargetError::NotNormalized((*bad).to_owned()));
        }
        let path = PathBuf::from(raw);
        let rest = path
            .strip_prefix(pods_dir)
            .map_err(|_| TargetError::OutsidePodsDir(pods_dir.to_owned()))?;
        let rest: Vec<&str> = rest.iter().filter_map(|part| part.to_str()).collect();
        let [pod_uid, "volumes", CSI_PLUGIN_DIR, volume_name, "mount"] = rest.as_slice() else {
            return Err(TargetError::UnexpectedLayout);
        };
        if !is_pod_uid(pod_uid) || !is_volume_name(volume_name) {
            return Err(TargetError::UnexpectedLayout);
        }
        Ok(Self {
            pod_uid: (*pod_uid).to_owned(),
            volume_name: (*volume_name).to_owned(),
            path,
        })
    }

    /// Requires the pod of the path to be the pod the kubelet says the volume is for.
    pub fn check_pod(&self, pod_uid_in_context: &str) -> Result<(), TargetError> {
        if self.pod_uid == pod_uid_in_context {
            Ok(())
        } else {
            Err(TargetError::PodMismatch {
                in_path: self.pod_uid.clone(),
                in_context: pod_uid_in_context.to_owned(),
            })
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub fn pod_uid(&self) -> &str {
        &self.pod_uid
    }

    pub fn volume_name(&self) -> &str {
        &self.volume_name
    }

    /// The directory the kubelet creates for the volume; the plugin creates only `mount` in it.
    pub fn parent(&self) -> &Path {
        self.path.parent().unwrap_or(&self.path)
    }
}

/// Kubernetes object UIDs are RFC 4122 UUIDs in their 36-character lowercase text form.
pub fn is_pod_uid(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(b),
        })
}

/// Pod volume names are DNS-1123 labels (the API server validates them).
fn is_volume_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: &str = "/var/lib/kubelet/pods";
    const UID: &str = "a8b4bd0f-bdd8-40ba-bcd5-05e874c2fe1d";

    fn parse(raw: &str) -> Result<TargetPath, TargetError> {
        TargetPath::parse(raw, Path::new(PODS))
    }

    #[test]
    fn accepts_the_kubelet_layout_from_the_captured_request() {
        let raw = format!("{PODS}/{UID}/volumes/kubernetes.io~csi/v/mount");
        let target = parse(&raw).expect("valid target");
        assert_eq!(target.path(), Path::new(&raw));
        assert_eq!(target.pod_uid(), UID);
        assert_eq!(target.volume_name(), "v");
        assert_eq!(
            target.parent(),
            Path::new(&format!("{PODS}/{UID}/volumes/kubernetes.io~csi/v"))
        );
        assert!(target.check_pod(UID).is_ok());
        assert!(matches!(
            target.check_pod("00000000-0000-0000-0000-000000000000"),
            Err(TargetError::PodMismatch { .. })
        ));
    }

    #[test]
    fn refuses_traversal_and_unnormalized_paths() {
        for raw in [
            format!("{PODS}/{UID}/volumes/kubernetes.io~csi/v/../../../../../../etc/mount"),
            format!("{PODS}/../../../etc/{UID}/volumes/kubernetes.io~csi/v/mount"),
            format!("{PODS}/{UID}/./volumes/kubernetes.io~csi/v/mount"),
            format!("{PODS}//{UID}/volumes/kubernetes.io~csi/v/mount"),
            format!("{PODS}/{UID}/volumes/kubernetes.io~csi/v/mount/"),
            format!("{PODS}/{UID}/volumes/kubernetes.io~csi/v/.."),
        ] {
            assert!(
                matches!(parse(&raw), Err(TargetError::NotNormalized(_))),
                "{raw}"
            );
        }
    }

    #[test]
    fn refuses_paths_outside_the_layout() {
        assert_eq!(parse(""), Err(TargetError::Empty));
        assert_eq!(
            parse("var/lib/kubelet/pods/x"),
            Err(TargetError::NotAbsolute)
        );
        assert_eq!(parse("/etc/x\0"), Err(TargetError::Nul));
        assert_eq!(
            parse(&format!("/{}", "a/".repeat(3000))),
            Err(TargetError::TooLong)
        );
        assert!(matches!(
            parse("/etc/kubernetes/manifests"),
            Err(TargetError::OutsidePodsDir(_))
        ));
        // A sibling directory sharing the prefix as a string is not inside.
        assert!(matches!(
            parse(&format!(
                "/var/lib/kubelet/pods-evil/{UID}/volumes/kubernetes.io~csi/v/mount"
            )),
            Err(TargetError::OutsidePodsDir(_))
        ));
        for raw in [
            format!("{PODS}/{UID}"),
            format!("{PODS}/{UID}/volumes/kubernetes.io~csi/v"),
            format!("{PODS}/{UID}/volumes/kubernetes.io~empty-dir/v/mount"),
            format!("{PODS}/{UID}/volumes/kubernetes.io~csi/v/mount/extra"),
            format!("{PODS}/not-a-uid/volumes/kubernetes.io~csi/v/mount"),
            format!(
                "{PODS}/{}/volumes/kubernetes.io~csi/v/mount",
                UID.to_uppercase()
            ),
            format!("{PODS}/{UID}/volumes/kubernetes.io~csi/Bad_Name/mount"),
            format!("{PODS}/{UID}/volumes/kubernetes.io~csi/-v/mount"),
            format!("{PODS}/{UID}/plugins/kubernetes.io~csi/v/mount"),
        ] {
            assert_eq!(parse(&raw), Err(TargetError::UnexpectedLayout), "{raw}");
        }
    }

    #[test]
    fn pod_uids_are_lowercase_uuids() {
        assert!(is_pod_uid(UID));
        assert!(!is_pod_uid("a8b4bd0f_bdd8_40ba_bcd5_05e874c2fe1d"));
        assert!(!is_pod_uid("a8b4bd0f-bdd8-40ba-bcd5-05e874c2fe1"));
        assert!(!is_pod_uid("g8b4bd0f-bdd8-40ba-bcd5-05e874c2fe1d"));
    }
}
