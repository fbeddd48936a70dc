//! Directories that hold keys, databases and sockets. Another local user must not be able to
//! plant one for us (a pre-created `/tmp/signet-quickstart-0` with their own CA key in it), swap
//! one (a directory on the path that they own), or redirect one (a symbolic link). And we must
//! never need to `chmod` a directory that is not ours: a Kubernetes `emptyDir` is created by the
//! kubelet as `root:<fsGroup>` mode 2777, which an unprivileged server may not change, so state
//! lives in a subdirectory we create inside it.

use std::fs::{DirBuilder, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a directory cannot be trusted with Signet's state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateDirError {
    /// The directory (or a component on its way) is a symbolic link.
    #[error(
        "{path} is a symbolic link: Signet keeps keys only in real directories (a link can be \
         re-pointed); use the directory it points to"
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// Something other than a directory is in the way.
    #[error("{path} exists and is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The directory, or one on its way, belongs to another user.
    #[error(
        "{path} belongs to uid {owner}, which this process (uid {uid}) cannot trust with its \
         state: that user could read or replace what Signet stores there. Remove it, or name a \
         directory that does not exist yet (Signet creates it; on a Kubernetes volume, a \
         subdirectory of the mount)"
    )]
    ForeignOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        uid: u32,
    },
    /// A filesystem call failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PrivateDirError {
    let path = path.to_path_buf();
    move |source| PrivateDirError::Io {
        action,
        path,
        source,
    }
}

fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Makes sure `path` is a directory of ours with exactly `mode` (e.g. 0o700 for keys, 0o755 for
/// a socket directory others traverse), creating it (and any missing parent, 0o755).
///
/// Refused: a symbolic link as the directory itself, anything but a directory, a directory
/// owned by another uid, and existing parents owned by anyone but root or us.
pub fn ensure_private_dir(path: &Path, mode: u32) -> Result<(), PrivateDirError> {
    let path = std::path::absolute(path).map_err(io_error("resolving", path))?;
    let uid = effective_uid();
    let mut missing = Vec::new();
    let mut existing = path.as_path();
    loop {
        match existing.symlink_metadata() {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(existing.to_path_buf());
                match existing.parent() {
                    Some(parent) => existing = parent,
                    None => break,
                }
            }
            Err(e) => return Err(io_error("inspecting", existing)(e)),
        }
    }
    check_ancestors(existing, uid, missing.is_empty())?;
    for dir in missing.iter().rev() {
        // Parents we create are ours and closed to writers; only the target gets `mode`.
        let dir_mode = if *dir == path { mode } else { 0o755 };
        match DirBuilder::new().mode(dir_mode).create(dir) {
            Ok(()) => {}
            // Created meanwhile by someone else: the checks below decide whether to trust it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("creating", dir)(e)),
        }
        let metadata = dir
            .symlink_metadata()
            .map_err(io_error("inspecting", dir))?;
        check_own_directory(dir, &metadata, uid)?;
    }
    let metadata = path
        .symlink_metadata()
        .map_err(io_error("inspecting", &path))?;
    check_own_directory(&path, &metadata, uid)?;
    // The mode is set through a descriptor of the directory just checked (opened without
    // following links, checked again), so a swap of the path in between cannot redirect it.
    let fd = rustix::fs::open(
        &path,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| io_error("opening", &path)(e.into()))?;
    let opened = std::fs::File::from(fd);
    let metadata = opened.metadata().map_err(io_error("inspecting", &path))?;
    check_own_directory(&path, &metadata, uid)?;
    // The umask may have taken bits away at creation; an existing directory may have others.
    if metadata.mode() & 0o7777 != mode {
        opened
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_error("setting the mode of", &path))?;
    }
    Ok(())
}

fn check_own_directory(path: &Path, metadata: &Metadata, uid: u32) -> Result<(), PrivateDirError> {
    if metadata.file_type().is_symlink() {
        return Err(PrivateDirError::Symlink {
            path: path.to_path_buf(),
        });
    }
    if !metadata.is_dir() {
        return Err(PrivateDirError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    if metadata.uid() != uid {
        return Err(PrivateDirError::ForeignOwner {
            path: path.to_path_buf(),
            owner: metadata.uid(),
            uid,
        });
    }
    Ok(())
}

/// Every existing directory from `/` down to `deepest` (which is the target itself when
/// `is_target`) must belong to root or to us. Links among the parents are followed (`/var/run`
/// is commonly one) and the directories they lead to are checked instead.
fn check_ancestors(deepest: &Path, uid: u32, is_target: bool) -> Result<(), PrivateDirError> {
    let parents = if is_target {
        deepest.parent()
    } else {
        Some(deepest)
    };
    let Some(parents) = parents else {
        return Ok(());
    };
    let canonical = parents
        .canonicalize()
        .map_err(io_error("resolving", parents))?;
    for dir in canonical.ancestors() {
        let metadata = dir.metadata().map_err(io_error("inspecting", dir))?;
        if !metadata.is_dir() {
            return Err(PrivateDirError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        if metadata.uid() != 0 && metadata.uid() != uid {
            return Err(PrivateDirError::ForeignOwner {
                path: dir.to_path_buf(),
                owner: metadata.uid(),
                uid,
            });
        }
    }
    Ok(())
}
