//! The `unix` workload attestor: uid/gid from the kernel's peer credentials, supplementary groups
//! from `/proc/<pid>/status`, user and group names from the passwd and group files, and
//! optionally the binary's path and SHA-256.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use signet_core::{Selector, SelectorSet};

use crate::peer::PeerInfo;

/// Where the attestor reads from and what it reports.
#[derive(Debug, Clone)]
pub struct UnixAttestorConfig {
    /// The `/proc` to read (a fixture directory in tests).
    pub proc_root: PathBuf,
    /// The passwd file.
    pub passwd: PathBuf,
    /// The group file.
    pub group: PathBuf,
    /// Report `unix:path` of the workload binary.
    pub discover_path: bool,
    /// Report `unix:sha256` of the workload binary (reads the binary; implies a path lookup).
    pub hash_binary: bool,
    /// Hashes computed so far, shared by every clone of this configuration.
    pub binary_hashes: std::sync::Arc<super::binary_hash::BinaryHashes>,
}

impl Default for UnixAttestorConfig {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
            discover_path: true,
            hash_binary: false,
            binary_hashes: std::sync::Arc::default(),
        }
    }
}

/// Why attestation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The kernel did not report the peer's PID.
    #[error("the peer's process id is unknown")]
    NoPid,
    /// `/proc/<pid>` could not be read (the process exited?).
    #[error("reading /proc for pid {pid}: {source}")]
    Proc {
        /// The process.
        pid: i32,
        /// The error.
        source: std::io::Error,
    },
}

fn selector(kind: &str, value: String) -> Option<Selector> {
    Selector::new("unix", &format!("{kind}:{value}")).ok()
}

/// Name of `id` in a passwd/group style file (`name:x:id:...`).
fn name_of(file: &Path, id: u32) -> Option<String> {
    let content = std::fs::read_to_string(file).ok()?;
    content.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let value: u32 = fields.next()?.parse().ok()?;
        (value == id && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The supplementary groups listed in `/proc/<pid>/status`.
pub fn supplementary_groups(status: &str) -> BTreeSet<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Attests a peer. Runs blocking file I/O: call it on the blocking pool.
///
/// Only a pinned peer (the kernel gave the connecting process's pidfd) has selectors read from
/// `/proc/<pid>`; for any other, `/proc/<pid>` may describe a process that took the PID after the
/// caller left, so only the connect-time uid and gid (and their names) are offered.
pub fn attest(config: &UnixAttestorConfig, peer: &PeerInfo) -> Result<SelectorSet, AttestError> {
    let mut found: Vec<Option<Selector>> = vec![
        selector("uid", peer.uid.to_string()),
        selector("gid", peer.gid.to_string()),
        name_of(&config.passwd, peer.uid).and_then(|n| selector("user", n)),
        name_of(&config.group, peer.gid).and_then(|n| selector("group", n)),
    ];
    if peer.pinned() {
        found.extend(proc_selectors(config, peer)?);
    }
    Ok(found.into_iter().flatten().collect())
}

/// What `/proc/<pid>` tells of a pinned peer: supplementary groups, and the binary's path and
/// digest when configured.
fn proc_selectors(
    config: &UnixAttestorConfig,
    peer: &PeerInfo,
) -> Result<Vec<Option<Selector>>, AttestError> {
    let pid = peer.pid.ok_or(AttestError::NoPid)?;
    let proc_dir = config.proc_root.join(pid.to_string());
    let status = std::fs::read_to_string(proc_dir.join("status"))
        .map_err(|source| AttestError::Proc { pid, source })?;
    let mut found = Vec::new();
    for gid in supplementary_groups(&status) {
        found.push(selector("supplementary_gid", gid.to_string()));
        found.push(name_of(&config.group, gid).and_then(|n| selector("supplementary_group", n)));
    }
    if config.discover_path || config.hash_binary {
        let exe = proc_dir.join("exe");
        match std::fs::read_link(&exe) {
            Ok(path) => found.push(selector("path", path.to_string_lossy().into_owned())),
            // Typically EACCES: the process holds capabilities the agent lacks (ptrace access
            // check), so no unix:path selector can be offered for it.
            Err(error) => tracing::debug!(pid = peer.pid, %error, "no unix:path selector"),
        }
        if config.hash_binary {
            // Hash through /proc/<pid>/exe: the binary the process runs, even if the path was
            // replaced since.
            found.push(
                config
                    .binary_hashes
                    .sha256(&exe)
                    .and_then(|hex| selector("sha256", hex)),
            );
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A peer the kernel pinned (the pidfd is this test process's own; `pid` names the fixture).
    fn pinned(pid: i32, uid: u32, gid: u32) -> PeerInfo {
        let own = rustix::process::getpid();
        let pidfd = rustix::process::pidfd_open(own, rustix::process::PidfdFlags::empty()).unwrap();
        PeerInfo {
            pid: Some(pid),
            uid,
            gid,
            pidfd: Some(Arc::new(pidfd)),
            activity: signet_unix::Activity::new(),
        }
    }

    fn fixture() -> (tempfile::TempDir, UnixAttestorConfig) {
        let dir = tempfile::tempdir().unwrap();
        let proc_dir = dir.path().join("proc/4242");
        std::fs::create_dir_all(&proc_dir).unwrap();
        std::fs::write(proc_dir.join("status"), "Name:\tapp\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nGroups:\t27 100 \n").unwrap();
        let binary = dir.path().join("app-bin");
        std::fs::write(&binary, b"hello").unwrap();
        std::os::unix::fs::symlink(&binary, proc_dir.join("exe")).unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("group"),
            "root:x:0:\nsudo:x:27:alice\nusers:x:100:\nalice:x:1000:\n",
        )
        .unwrap();
        let config = UnixAttestorConfig {
            proc_root: dir.path().join("proc"),
            passwd: dir.path().join("passwd"),
            group: dir.path().join("group"),
            discover_path: true,
            hash_binary: true,
            ..UnixAttestorConfig::default()
        };
        (dir, config)
    }

    #[test]
    fn reports_every_unix_selector() {
        let (dir, config) = fixture();
        let set = attest(&config, &pinned(4242, 1000, 1000)).unwrap();
        let binary = dir.path().join("app-bin");
        let expected = [
            "unix:uid:1000".to_owned(),
            "unix:gid:1000".into(),
            "unix:user:alice".into(),
            "unix:group:alice".into(),
            "unix:supplementary_gid:27".into(),
            "unix:supplementary_group:sudo".into(),
            "unix:supplementary_gid:100".into(),
            "unix:supplementary_group:users".into(),
            format!("unix:path:{}", binary.display()),
            // sha256("hello")
            "unix:sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into(),
        ];
        let got = set.to_strings();
        for s in expected {
            assert!(got.contains(&s), "missing {s} in {got:?}");
        }
        assert_eq!(got.len(), 10);
    }

    /// Without a connect-time pidfd, /proc/<pid> may describe a process that took the PID after
    /// the caller left: only the connect-time uid and gid count.
    #[test]
    fn an_unpinned_peer_gets_no_proc_selectors() {
        let (_dir, config) = fixture();
        let peer = PeerInfo {
            pid: Some(4242),
            uid: 1000,
            gid: 1000,
            pidfd: None,
            activity: signet_unix::Activity::new(),
        };
        let got = attest(&config, &peer).unwrap().to_strings();
        assert_eq!(
            got,
            [
                "unix:gid:1000",
                "unix:group:alice",
                "unix:uid:1000",
                "unix:user:alice"
            ]
        );
    }

    #[test]
    fn unknown_names_and_missing_processes() {
        let (_dir, config) = fixture();
        let got = attest(&config, &pinned(4242, 5555, 5555))
            .unwrap()
            .to_strings();
        assert!(got.contains(&"unix:uid:5555".to_owned()));
        assert!(!got.iter().any(|s| s.starts_with("unix:user:")));
        assert!(matches!(
            attest(&config, &pinned(9999, 0, 0)),
            Err(AttestError::Proc { pid: 9999, .. })
        ));
        let no_pid = PeerInfo {
            pid: None,
            ..pinned(0, 0, 0)
        };
        assert_eq!(
            attest(&config, &no_pid).unwrap().to_strings(),
            [
                "unix:gid:0",
                "unix:group:root",
                "unix:uid:0",
                "unix:user:root"
            ],
            "no pid: connect-time credentials only"
        );
    }

    #[test]
    fn groups_line_parsing_is_tolerant() {
        assert!(supplementary_groups("Name: x\n").is_empty());
        assert_eq!(supplementary_groups("Groups:\n").len(), 0);
        assert_eq!(supplementary_groups("Groups:\t1 2 x 3\n").len(), 3);
    }
}
