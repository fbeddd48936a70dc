//! The filesystem side: read-only bind mounts, mount-point detection and clean unmounting.
//! Blocking calls; the gRPC handlers run them on the blocking pool.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, StatVfsMountFlags, StatxAttributes, StatxFlags};
use rustix::mount::{MountFlags, UnmountFlags};

/// Unmounts stacked on one target (left by older drivers or crashes) that are cleaned up at most.
const MAX_STACKED_MOUNTS: usize = 16;

/// Whether `path` itself is the root of a mount (symlinks are not followed).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
    match rustix::fs::statx(CWD, path, flags, StatxFlags::empty()) {
        Ok(stat)
            if stat
                .stx_attributes_mask
                .contains(StatxAttributes::MOUNT_ROOT) =>
        {
            Ok(stat.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
        }
        // Kernels before 5.8 do not report STATX_ATTR_MOUNT_ROOT: ask mountinfo.
        Ok(_) | Err(rustix::io::Errno::NOSYS) => {
            let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
            Ok(mount_points(&mountinfo).any(|point| point == path))
        }
        Err(errno) => Err(errno.into()),
    }
}

/// Mount points listed in a `/proc/<pid>/mountinfo` text, with the kernel's octal escapes undone.
pub fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    use std::os::unix::ffi::OsStringExt;
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(std::ffi::OsString::from_vec(unescape_octal(field))))
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline and backslash are escaped).
fn unescape_octal(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes.get(i + 1..i + 4).and_then(|digits| {
            digits
                .iter()
                .all(|d| (b'0'..=b'7').contains(d))
                .then(|| {
                    digits
                        .iter()
                        .fold(0u32, |value, d| value * 8 + u32::from(d - b'0'))
                })
                .and_then(|value| u8::try_from(value).ok())
        });
        match (bytes[i], escaped) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// Bind-mounts `source` onto `target` and makes that mount read-only, nosuid, nodev and noexec.
/// If the second step fails the bind is undone: a writable mount is never left behind.
pub fn bind_read_only(source: &Path, target: &Path) -> io::Result<()> {
    rustix::mount::mount_bind(source, target)?;
    if let Err(errno) = remount_read_only(target) {
        let _ = rustix::mount::unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW);
        return Err(errno);
    }
    Ok(())
}

/// Makes the bind mount at `target` read-only (and nosuid, nodev, noexec).
pub fn remount_read_only(target: &Path) -> io::Result<()> {
    let flags = MountFlags::BIND
        | MountFlags::RDONLY
        | MountFlags::NOSUID
        | MountFlags::NODEV
        | MountFlags::NOEXEC;
    rustix::mount::mount_remount(target, flags, "")?;
    Ok(())
}

/// Whether the filesystem view at `path` is mounted read-only.
pub fn is_read_only(path: &Path) -> io::Result<bool> {
    Ok(rustix::fs::statvfs(path)?
        .f_flag
        .contains(StatVfsMountFlags::RDONLY))
}

/// Whether `a` and `b` are the same directory (a bind mount shows its source's inode).
pub fn same_directory(a: &Path, b: &Path) -> io::Result<bool> {
    let (a, b) = (fs::metadata(a)?, fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// Unmounts everything stacked on `target`; returns how many mounts were removed. A busy mount is
/// detached lazily so a pod can always terminate.
pub fn unmount_all(target: &Path) -> io::Result<usize> {
    let mut removed = 0;
    while removed < MAX_STACKED_MOUNTS && is_mount_point(target)? {
        match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) => {}
            Err(rustix::io::Errno::BUSY) => {
                rustix::mount::unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW)?;
            }
            Err(errno) => return Err(errno.into()),
        }
        removed += 1;
    }
    Ok(removed)
}

/// Capacity and inode figures of the filesystem at `path`: (bytes total, available, used) and
/// (inodes total, available, used).
pub fn usage(path: &Path) -> io::Result<([u64; 3], [u64; 3])> {
    let stat = rustix::fs::statvfs(path)?;
    let block = stat.f_frsize;
    let bytes_total = stat.f_blocks.saturating_mul(block);
    let bytes = [
        bytes_total,
        stat.f_bavail.saturating_mul(block),
        bytes_total.saturating_sub(stat.f_bfree.saturating_mul(block)),
    ];
    let inodes = [
        stat.f_files,
        stat.f_favail,
        stat.f_files.saturating_sub(stat.f_ffree),
    ];
    Ok((bytes, inodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        let mountinfo = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
523 22 0:5 /run/signet/sockets /var/lib/kubelet/pods/a8b4bd0f-bdd8-40ba-bcd5-05e874c2fe1d/volumes/kubernetes.io~csi/v/mount ro,nosuid,nodev,noexec shared:1 - tmpfs tmpfs rw
524 22 0:5 / /mnt/with\\040space\\011tab\\134slash rw - tmpfs tmpfs rw
525 22 0:5 / /mnt/bad\\09escape\\777 rw - tmpfs tmpfs rw
short line
";
        let points: Vec<PathBuf> = mount_points(mountinfo).collect();
        assert_eq!(
            points,
            vec![
                PathBuf::from("/"),
                PathBuf::from(
                    "/var/lib/kubelet/pods/a8b4bd0f-bdd8-40ba-bcd5-05e874c2fe1d/volumes/kubernetes.io~csi/v/mount"
                ),
                PathBuf::from("/mnt/with space\ttab\\slash"),
                // Invalid escapes are kept literally instead of being guessed at.
                PathBuf::from("/mnt/bad\\09escape\\777"),
            ]
        );
    }

    #[test]
    fn the_root_is_a_mount_point_and_a_plain_directory_is_not() -> io::Result<()> {
        assert!(is_mount_point(Path::new("/"))?);
        let dir = tempfile::tempdir()?;
        let plain = dir.path().join("plain");
        fs::create_dir(&plain)?;
        assert!(!is_mount_point(&plain)?);
        assert!(is_mount_point(&dir.path().join("missing")).is_err());
        Ok(())
    }
}
