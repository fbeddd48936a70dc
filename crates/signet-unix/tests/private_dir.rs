//! Private directories: created with the right mode, and refused when another user could have
//! planted, swapped or redirected them. Tests that need other uids run as root (as CI does) and
//! switch uid in a child process.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use signet_unix::{PrivateDirError, ensure_private_dir};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

#[test]
fn missing_directories_are_created_with_their_modes() {
    let base = tempfile::tempdir().unwrap();
    let target = base.path().join("a/b/server");
    ensure_private_dir(&target, 0o700).unwrap();
    assert_eq!(mode(&target), 0o700);
    assert_eq!(
        mode(&base.path().join("a/b")),
        0o755,
        "parents are traversable"
    );
    // Idempotent, and it repairs a mode that drifted.
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o777)).unwrap();
    ensure_private_dir(&target, 0o700).unwrap();
    assert_eq!(mode(&target), 0o700);
    let sockets = base.path().join("sockets");
    ensure_private_dir(&sockets, 0o755).unwrap();
    assert_eq!(mode(&sockets), 0o755);
}

#[test]
fn links_files_and_foreign_directories_are_refused() {
    let base = tempfile::tempdir().unwrap();
    let real = base.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = base.path().join("link");
    symlink(&real, &link).unwrap();
    assert!(matches!(
        ensure_private_dir(&link, 0o700),
        Err(PrivateDirError::Symlink { .. })
    ));
    let file = base.path().join("file");
    std::fs::write(&file, b"").unwrap();
    assert!(matches!(
        ensure_private_dir(&file, 0o700),
        Err(PrivateDirError::NotADirectory { .. })
    ));
    assert!(matches!(
        ensure_private_dir(&file.join("below"), 0o700),
        Err(PrivateDirError::NotADirectory { .. } | PrivateDirError::Io { .. })
    ));
    if !is_root() {
        eprintln!("skipping the foreign-owner half: needs root to chown");
        return;
    }
    // The quickstart attack: another user pre-creates the predictable directory.
    let planted = base.path().join("signet-quickstart-0");
    std::fs::create_dir_all(planted.join("server")).unwrap();
    std::fs::write(planted.join("server/ca-keys.json"), b"{}").unwrap();
    chown(&planted, 4242);
    chown(&planted.join("server"), 4242);
    let error = ensure_private_dir(&planted.join("server"), 0o700).unwrap_err();
    assert!(
        matches!(error, PrivateDirError::ForeignOwner { owner: 4242, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("uid 4242"), "{error}");
    // A directory of ours below a directory another user owns is refused too: they could swap it.
    chown(&planted.join("server"), 0);
    assert!(matches!(
        ensure_private_dir(&planted.join("server"), 0o700),
        Err(PrivateDirError::ForeignOwner { owner: 4242, .. })
    ));
    // And a new directory would not be created there.
    assert!(matches!(
        ensure_private_dir(&planted.join("agent"), 0o700),
        Err(PrivateDirError::ForeignOwner { owner: 4242, .. })
    ));
    assert!(!planted.join("agent").exists());
}

/// The kubelet creates an emptyDir as root:<fsGroup> mode 2777; the server runs as uid 65532
/// without capabilities. Run in a child process with that uid (see `child_entry`).
#[test]
fn an_unprivileged_user_gets_a_private_subdirectory_of_a_kubelet_empty_dir() {
    if !is_root() {
        eprintln!("skipping: needs root to switch uid");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let volume = base.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o2777)).unwrap();
    let run_as_65532 = |target: &Path| {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_entry", "--nocapture"])
            .env("SIGNET_TEST_PRIVATE_DIR", target)
            .uid(65532)
            .gid(65532)
            .output()
            .unwrap()
    };
    let out = run_as_65532(&volume.join("server"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let server = std::fs::metadata(volume.join("server")).unwrap();
    assert_eq!((server.uid(), server.mode() & 0o7777), (65532, 0o700));
    // The mount point itself is not ours: refused with the fix, never chmod-ed.
    let out = run_as_65532(&volume);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        said.contains("belongs to uid 0") && said.contains("subdirectory"),
        "{said}"
    );
    assert_eq!(mode(&volume), 0o2777);
}

/// Runs only when a test above starts this binary as a child.
#[test]
fn child_entry() {
    let Some(target) = std::env::var_os("SIGNET_TEST_PRIVATE_DIR") else {
        return;
    };
    if let Err(error) = ensure_private_dir(Path::new(&target), 0o700) {
        println!("{error}");
        std::process::exit(1);
    }
}
