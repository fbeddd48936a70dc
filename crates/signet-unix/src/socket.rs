//! Unix sockets bound with their final mode before anyone can reach them. `bind` creates the
//! socket with the process umask (0777 & !umask); a `chmod` afterwards leaves a window in which
//! another user can connect (with umask 000, another uid reached the admin socket and created
//! join tokens). Here the socket is bound inside a fresh 0700 directory next to its final path,
//! given its mode there, and then renamed into place (`rename` is atomic and keeps the mode).

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

/// Binds a Unix socket at `path` with `mode`, replacing a stale socket but nothing that is not a
/// socket. The directory of `path` must exist. Returns a non-blocking listener.
pub fn bind_unix_socket(path: &Path, mode: u32) -> io::Result<UnixListener> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a socket path needs a file name",
        )
    })?;
    let staging = parent.join(format!(
        ".{}.{}.{:016x}",
        name.to_string_lossy(),
        std::process::id(),
        random_suffix()
    ));
    DirBuilder::new().mode(0o700).create(&staging)?;
    let result = (|| {
        let staged = staging.join("s");
        let listener = UnixListener::bind(&staged)?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(mode))?;
        fs::rename(&staged, path)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })();
    let _ = fs::remove_dir_all(&staging);
    result
}

/// A random suffix (collisions only make `create` fail, never reuse another's directory).
fn random_suffix() -> u64 {
    let mut bytes = [0u8; 8];
    if let Ok(file) = fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut &file, &mut bytes);
    }
    u64::from_le_bytes(bytes) ^ u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn the_socket_has_its_mode_and_nothing_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = bind_unix_socket(&path, 0o600).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no staging directory left"
        );
        // A stale socket is replaced; the new one answers.
        drop(listener);
        let listener = bind_unix_socket(&path, 0o660).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o660);
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(listener);
        // Anything else at the path is left alone.
        let file = dir.path().join("data.db");
        fs::write(&file, b"keep").unwrap();
        assert!(bind_unix_socket(&file, 0o600).is_err());
        assert_eq!(fs::read(&file).unwrap(), b"keep");
    }
}
