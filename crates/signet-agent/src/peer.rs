//! Who is on the other end of a Workload API connection: kernel-supplied credentials
//! (`SO_PEERCRED`) plus a pidfd of the process that called `connect()`, taken by the kernel at
//! connect time (`SO_PEERPIDFD`, Linux ≥ 6.5). The pidfd pins that process: after attestation
//! reads `/proc/<pid>`, it tells whether the PID still belongs to the process that connected.
//!
//! A pidfd opened at *accept* (`pidfd_open(pid)`) is not enough: a caller can connect, exit and
//! let another process take its PID while the connection waits in the accept queue, and the agent
//! would then attest the newcomer. Where the kernel cannot give the connect-time pidfd, the peer
//! is not pinned and attestation uses the connect-time credentials only (uid, gid and their
//! names): no selector is read from `/proc` (see `attestor::unix` and `workload_api`).

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
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
    /// A pidfd of the process that connected, taken by the kernel at connect time; `None` when
    /// the kernel cannot provide it (the peer is then not pinned: no `/proc`-based selectors).
    pub pidfd: Option<Arc<OwnedFd>>,
    /// The requests open on this connection (for closing it when idle).
    pub activity: Arc<signet_unix::Activity>,
}

impl PeerInfo {
    /// Reads the credentials the kernel recorded when the peer connected.
    pub fn from_stream(stream: &UnixStream) -> io::Result<Self> {
        let cred = stream.peer_cred()?;
        Ok(Self {
            pid: cred.pid(),
            uid: cred.uid(),
            gid: cred.gid(),
            pidfd: connect_time_pidfd(stream).map(Arc::new),
            activity: signet_unix::Activity::new(),
        })
    }

    /// Whether the pinned process that connected has exited (never true for an unpinned peer,
    /// which cannot be told apart from its successors).
    pub fn is_gone(&self) -> bool {
        self.pinned() && !self.still_alive()
    }

    /// Whether `/proc/<pid>` may be read for this peer: the process that connected is pinned.
    pub fn pinned(&self) -> bool {
        self.pid.is_some() && self.pidfd.is_some()
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

/// The pidfd of the process that connected `stream`, as the kernel recorded it at connect time.
fn connect_time_pidfd(stream: &UnixStream) -> Option<OwnedFd> {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerPidfd).ok()
}

/// Whether this kernel records the connecting process's pidfd (`SO_PEERPIDFD`, Linux ≥ 6.5).
/// Without it, `/proc`-based selectors are never offered.
pub fn kernel_pins_peers() -> bool {
    std::os::unix::net::UnixStream::pair().is_ok_and(|(a, _b)| {
        nix::sys::socket::getsockopt(&a, nix::sys::socket::sockopt::PeerPidfd).is_ok()
    })
}

/// A Unix stream carrying the peer information captured at accept, and its place within the
/// connection limits for as long as it is open.
#[derive(Debug)]
pub struct PeerStream {
    inner: UnixStream,
    info: PeerInfo,
    _slot: Option<signet_unix::ConnectionSlot>,
    idle: Option<signet_unix::IdleDeadline>,
}

impl PeerStream {
    /// Captures the peer of `inner`.
    pub fn new(inner: UnixStream) -> io::Result<Self> {
        let info = PeerInfo::from_stream(&inner)?;
        Ok(Self {
            inner,
            info,
            _slot: None,
            idle: None,
        })
    }

    /// Ends the connection (reads see end-of-stream, so the HTTP/2 server closes it) once it has
    /// carried no request for `timeout`.
    pub fn closing_when_idle(self, timeout: std::time::Duration) -> Self {
        let idle = signet_unix::IdleDeadline::new(self.info.activity.clone(), timeout);
        Self {
            idle: Some(idle),
            ..self
        }
    }

    /// Holds `slot` until the connection is dropped.
    pub fn holding(self, slot: signet_unix::ConnectionSlot) -> Self {
        Self {
            _slot: Some(slot),
            ..self
        }
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
        if self.idle.as_mut().is_some_and(|idle| idle.poll_expired(cx)) {
            return Poll::Ready(Ok(()));
        }
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
    use rustix::process::{Pid, PidfdFlags, pidfd_open};

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
            activity: signet_unix::Activity::new(),
        };
        assert!(!info.still_alive());
        let unknown = PeerInfo {
            pid: None,
            uid: 0,
            gid: 0,
            pidfd: None,
            activity: signet_unix::Activity::new(),
        };
        assert!(!unknown.still_alive());
    }
}
