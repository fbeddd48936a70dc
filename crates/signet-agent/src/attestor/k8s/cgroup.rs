//! `/proc/<pid>/cgroup` → the pod UID and container ID of a process (DESIGN §7).
//!
//! The kernel writes this file; a workload cannot change it except by moving itself into a
//! *descendant* of its own cgroup. So the segments nearest the root are the ones the kubelet and
//! the container runtime chose: the first `pod<uid>` segment from the root names the pod and the
//! segment right below it names the container. Anything a workload appends deeper (a fake
//! `pod<victim>/<victim-container>` sub-cgroup) is ignored. `mountinfo` is never read: a workload
//! can forge it in its own mount namespace.
//!
//! Layouts handled (fixtures under `fixtures/cgroup/`): cgroup v1 and v2; cgroupfs
//! (`/kubepods/<qos>/pod<uid>/<id>`) and systemd (`kubepods-<qos>-pod<uid_with_underscores>.slice/
//! cri-containerd-<id>.scope`) drivers; containerd, CRI-O (`crio-<id>.scope`) and docker
//! (`docker-<id>.scope`) prefixes; kind's nested `/docker/<node>/kubepods/...`; a private cgroup
//! namespace (`0::/../../pod<uid>/<id>`); and CRI-O without a pod segment (`0::/../crio-<id>.scope`).

/// The container a process runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// The pod UID, when the path names one.
    pub pod_uid: Option<String>,
    /// The 64-hex container ID.
    pub container_id: String,
}

/// Why a cgroup file cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// Lines name different pods or containers (e.g. CRI-O's conmon next to the container).
    #[error("cgroup lines disagree: {0} vs {1}")]
    Conflict(String, String),
    /// A path without a pod segment has several container-like segments.
    #[error("ambiguous cgroup path {0:?}: several container IDs and no pod")]
    Ambiguous(String),
    /// The file is too large to be a cgroup file.
    #[error("cgroup file is implausibly large")]
    TooLarge,
}

const MAX_CGROUP_FILE: usize = 64 * 1024;

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The container ID a path segment names, if any.
fn container_id(segment: &str) -> Option<&str> {
    let body = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = ["cri-containerd-", "crio-", "docker-"]
        .iter()
        .find_map(|prefix| body.strip_prefix(prefix))
        .unwrap_or(body);
    is_hex64(id).then_some(id)
}

/// The pod UID a path segment names, if any (`pod<uid>` or `...-pod<uid_underscored>.slice`).
fn pod_uid(segment: &str) -> Option<String> {
    let body = segment.strip_suffix(".slice").unwrap_or(segment);
    let start = body.rfind("pod")?;
    // `pod` must start the segment or follow a `-` (systemd slice naming).
    if start != 0 && !body[..start].ends_with('-') {
        return None;
    }
    let uid = &body[start + 3..];
    let groups: Vec<&str> = uid.split(['-', '_']).collect();
    let lengths = [8, 4, 4, 4, 12];
    let valid = uid.len() == 36
        && groups.len() == 5
        && groups.iter().zip(lengths).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    valid.then(|| uid.replace('_', "-"))
}

fn parse_path(path: &str) -> Result<Option<ContainerRef>, CgroupError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(pod_index) = segments.iter().position(|s| pod_uid(s).is_some()) {
        let pod = pod_uid(segments[pod_index]);
        // The container is the pod segment's direct child; a process in the pod cgroup itself
        // (no child) is not in a container.
        return Ok(segments
            .get(pod_index + 1)
            .and_then(|s| container_id(s))
            .map(|id| ContainerRef {
                pod_uid: pod,
                container_id: id.to_owned(),
            }));
    }
    let ids: Vec<&str> = segments.iter().filter_map(|s| container_id(s)).collect();
    match ids.as_slice() {
        [] => Ok(None),
        [id] => Ok(Some(ContainerRef {
            pod_uid: None,
            container_id: (*id).to_owned(),
        })),
        _ => Err(CgroupError::Ambiguous(path.chars().take(256).collect())),
    }
}

/// Parses the content of `/proc/<pid>/cgroup`. `Ok(None)` means the process is not in a
/// Kubernetes container (the attestor then adds no selectors).
pub fn parse(content: &str) -> Result<Option<ContainerRef>, CgroupError> {
    if content.len() > MAX_CGROUP_FILE {
        return Err(CgroupError::TooLarge);
    }
    let mut with_pod: Option<ContainerRef> = None;
    let mut without_pod: Option<ContainerRef> = None;
    for line in content.lines() {
        // hierarchy-ID:controllers:path — the path may itself contain ':'.
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Some(found) = parse_path(path)? else {
            continue;
        };
        let slot = if found.pod_uid.is_some() {
            &mut with_pod
        } else {
            &mut without_pod
        };
        match slot {
            Some(existing) if *existing != found => {
                return Err(CgroupError::Conflict(describe(existing), describe(&found)));
            }
            Some(_) => {}
            None => *slot = Some(found),
        }
    }
    // A line naming the pod outranks lines that do not (kind's `0::/docker/<node>/...` line
    // next to the v1 hierarchy lines).
    Ok(with_pod.or(without_pod))
}

fn describe(container: &ContainerRef) -> String {
    format!(
        "pod {} container {}",
        container.pod_uid.as_deref().unwrap_or("?"),
        container.container_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "66cf01ec-811b-46e1-9145-7357b92bad2a";
    const CID: &str = "953a816f59f1ed5948728656092d95cace58208684b5357a27949e15c6456de7";
    const NODE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn expect(content: &str, pod: Option<&str>, container: &str) {
        assert_eq!(
            parse(content),
            Ok(Some(ContainerRef {
                pod_uid: pod.map(str::to_owned),
                container_id: container.to_owned()
            })),
            "{content}"
        );
    }

    #[test]
    fn captured_cluster_file_cgroup_v1_cgroupfs_containerd() {
        let captured = include_str!("../../../../signet-test-support/fixtures/cgroups.txt");
        let first = captured
            .split("== pid ")
            .nth(1)
            .map(|block| block.split_once('\n').map_or("", |(_, rest)| rest))
            .unwrap_or_default();
        expect(first, Some(UID), CID);
    }

    #[test]
    fn every_layout() {
        let underscored = UID.replace('-', "_");
        for (name, content, pod) in [
            (
                "cgroupfs v2",
                format!("0::/kubepods/burstable/pod{UID}/{CID}\n"),
                Some(UID),
            ),
            (
                "systemd v2 containerd",
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-{CID}.scope\n"
                ),
                Some(UID),
            ),
            (
                "systemd v1 crio",
                format!(
                    "12:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{underscored}.slice/crio-{CID}.scope\n1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{underscored}.slice/crio-{CID}.scope\n"
                ),
                Some(UID),
            ),
            (
                "systemd guaranteed docker",
                format!("0::/kubepods.slice/kubepods-pod{underscored}.slice/docker-{CID}.scope\n"),
                Some(UID),
            ),
            (
                "kind nested",
                format!("0::/docker/{NODE}/kubepods/besteffort/pod{UID}/{CID}\n"),
                Some(UID),
            ),
            (
                "kind on macOS: unified line without pod next to v1 lines",
                format!(
                    "5:cpu:/docker/{NODE}/kubepods/besteffort/pod{UID}/{CID}\n0::/docker/{NODE}/system.slice/containerd.service\n"
                ),
                Some(UID),
            ),
            (
                "private cgroupns",
                format!("0::/../../pod{UID}/{CID}\n"),
                Some(UID),
            ),
            (
                "crio without pod",
                format!("0::/../crio-{CID}.scope\n"),
                None,
            ),
        ] {
            let parsed = parse(&content);
            assert_eq!(
                parsed,
                Ok(Some(ContainerRef {
                    pod_uid: pod.map(str::to_owned),
                    container_id: CID.to_owned()
                })),
                "{name}"
            );
        }
    }

    #[test]
    fn host_processes_are_not_containers() {
        for content in [
            "0::/\n",
            "0::/system.slice/sshd.service\n",
            "0::/user.slice/user-1000.slice/session-3.scope\n",
            &format!("0::/kubepods/burstable/pod{UID}\n"),
            "",
            "garbage without colons\n",
        ] {
            assert_eq!(parse(content), Ok(None), "{content}");
        }
    }

    #[test]
    fn hostile_sub_cgroups_cannot_claim_another_pod() {
        let victim_uid = "11111111-2222-3333-4444-555555555555";
        let victim_cid = "f".repeat(64);
        // The workload moved itself into a descendant cgroup named like the victim.
        let forged =
            format!("0::/kubepods/besteffort/pod{UID}/{CID}/pod{victim_uid}/{victim_cid}\n");
        expect(&forged, Some(UID), CID);
        let forged = format!("0::/kubepods/besteffort/pod{UID}/{CID}/{victim_cid}\n");
        expect(&forged, Some(UID), CID);
    }

    #[test]
    fn conflicting_lines_are_refused() {
        let other = "e".repeat(64);
        let conmon =
            format!("1:name=systemd:/kubepods/pod{UID}/{CID}\n0::/kubepods/pod{UID}/{other}\n");
        assert!(matches!(parse(&conmon), Err(CgroupError::Conflict(..))));
        let two_pods = format!(
            "1:cpu:/kubepods/pod{UID}/{CID}\n0::/kubepods/pod11111111-2222-3333-4444-555555555555/{CID}\n"
        );
        assert!(matches!(parse(&two_pods), Err(CgroupError::Conflict(..))));
        let ambiguous = format!("0::/docker/{NODE}/{CID}\n");
        assert!(matches!(parse(&ambiguous), Err(CgroupError::Ambiguous(_))));
        assert_eq!(parse(&"0::/a\n".repeat(20_000)), Err(CgroupError::TooLarge));
    }

    #[test]
    fn near_miss_segments_are_not_ids() {
        assert_eq!(container_id(&"A".repeat(64)), None);
        assert_eq!(container_id(&"a".repeat(63)), None);
        assert_eq!(container_id(&format!("crio-conmon-{CID}.scope")), None);
        assert_eq!(pod_uid(&format!("xpod{UID}")), None);
        assert_eq!(pod_uid(&format!("pod{UID}x")), None);
        assert_eq!(pod_uid("pod12345678-1234-1234-1234-1234567890ag"), None);
        assert_eq!(
            pod_uid(&format!("kubepods-pod{UID}.slice")).as_deref(),
            Some(UID)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(content in "\\PC{0,400}") {
            let _ = parse(&content);
        }
    }
}
