//! SHA-256 of workload binaries for `unix:sha256`, cached by what identifies a file's content
//! without reading it: device, inode, size, modification and change times. A workload could
//! otherwise make the agent re-read up to 1 GiB on every call (40 calls cost 30 CPU-seconds).
//! A hash is cached only if the file's identity did not change while it was read.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest::{Context, SHA256};
use parking_lot::Mutex;

/// Largest binary hashed (bounds the work a workload can cause).
const MAX_HASHED_BINARY_BYTES: u64 = 1 << 30;
/// Most binaries remembered; the cache starts over when full.
const MAX_CACHED: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileIdentity {
    fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// Binary hashes, shared by every attestation.
#[derive(Debug, Default)]
pub struct BinaryHashes {
    known: Mutex<HashMap<FileIdentity, String>>,
    computed: AtomicU64,
}

impl BinaryHashes {
    /// The lowercase hex SHA-256 of the file at `path` (through `/proc/<pid>/exe`: the binary the
    /// process runs, even if its path was replaced since).
    pub fn sha256(&self, path: &Path) -> Option<String> {
        let mut file = std::fs::File::open(path).ok()?;
        let before = FileIdentity::of(&file.metadata().ok()?);
        if let Some(hex) = self.known.lock().get(&before) {
            return Some(hex.clone());
        }
        let hex = hash(&mut file)?;
        self.computed.fetch_add(1, Ordering::Relaxed);
        let after = FileIdentity::of(&file.metadata().ok()?);
        if before == after {
            let mut known = self.known.lock();
            if known.len() >= MAX_CACHED {
                known.clear();
            }
            known.insert(before, hex.clone());
        }
        Some(hex)
    }

    /// How many times a binary was actually read and hashed.
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }
}

fn hash(file: &mut std::fs::File) -> Option<String> {
    let mut reader = file.take(MAX_HASHED_BINARY_BYTES);
    let mut context = Context::new(&SHA256);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buffer).ok()?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Some(
        context
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_is_read_once_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app");
        std::fs::write(&path, b"hello").unwrap();
        let hashes = BinaryHashes::default();
        let first = hashes.sha256(&path).unwrap();
        assert_eq!(
            first,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        for _ in 0..40 {
            assert_eq!(hashes.sha256(&path).as_deref(), Some(first.as_str()));
        }
        assert_eq!(hashes.computed(), 1, "40 more calls read nothing");
        // Rewritten in place (same inode, new size and times): hashed again.
        std::fs::write(&path, b"hello, world").unwrap();
        let second = hashes.sha256(&path).unwrap();
        assert_ne!(second, first);
        assert_eq!(hashes.computed(), 2);
        // Replaced by another file (new inode) of the same content: hashed again, same result.
        let other = dir.path().join("app.new");
        std::fs::write(&other, b"hello, world").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(hashes.sha256(&path).unwrap(), second);
        assert_eq!(hashes.computed(), 3);
    }
}
