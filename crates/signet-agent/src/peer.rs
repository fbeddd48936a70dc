//! Who is on the other end of a Workload API connection: kernel-supplied credentials
//! (`SO_PEERCRED`) plus a pidfd opened at accept time. The pidfd pins the original process, so
//! after attestation reads `/proc/<pid>` we can tell whether that PID still belongs to the
//! process that connected (PID-reuse defence).

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::Connected;

/// Credentials of a connected peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Process id (absent when the kernel could not tell, e.g. across PID namespaces).
    pub pid: Option<i32>,
    /// Effective user id at connect time.
    pub uid: u32,
    /// Effective group id at connect time.
    pub gid: u32,
    /// A pidfd for `pid`, opened at accept time.
    pub pidfd: Option<Arc<OwnedFd>>,
}

impl PeerInfo {
    /// Reads the credentials of a freshly accepted connection and pins the process.
    pub fn from_stream(stream: &UnixStream) -> io::Result<Self> {
        let cred = stream.peer_cred()?;
        let pid = cred.pid();
        let pidfd = pid
            .and_then(Pid::from_raw)
            .and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
            .map(Arc::new);
        Ok(Self {
            pid,
            uid: cred.uid(),
            gid: cred.gid(),
            pidfd,
        })
    }

    /// Whether the process that connected is still alive (so `/proc/<pid>` still describes it).
    /// A pidfd becomes readable when its process exits.
    pub fn still_alive(&self) -> bool {
        let Some(fd) = &self.pidfd else { return false };
        let mut fds = [PollFd::new(fd.as_ref(), PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&zero)) {
            Ok(0) => true,
            Ok(_) => !fds[0]
                .revents()
                .intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR),
            Err(_) => false,
        }
    }
}

/// A Unix stream carrying the peer information captured at accept.
#[derive(Debug)]
pub struct PeerStream {
    inner: UnixStream,
    info: PeerInfo,
}

impl PeerStream {
    /// Captures the peer of `inner`.
    pub fn new(inner: UnixStream) -> io::Result<Self> {
        let info = PeerInfo::from_stream(&inner)?;
        Ok(Self { inner, info })
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captures_our_own_credentials_and_liveness() {
        let (a, _b) = UnixStream::pair().unwrap();
        let info = PeerInfo::from_stream(&a).unwrap();
        assert_eq!(info.pid, Some(std::process::id() as i32));
        assert_eq!(info.uid, rustix::process::geteuid().as_raw());
        assert!(info.still_alive());
    }

    #[test]
    fn an_exited_process_is_detected() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32).unwrap();
        let fd = pidfd_open(pid, PidfdFlags::empty()).unwrap();
        child.wait().unwrap();
        let info = PeerInfo {
            pid: Some(pid.as_raw_pid()),
            uid: 0,
            gid: 0,
            pidfd: Some(Arc::new(fd)),
        };
        assert!(!info.still_alive());
        let unknown = PeerInfo {
            pid: None,
            uid: 0,
            gid: 0,
            pidfd: None,
        };
        assert!(!unknown.still_alive());
    }
}
