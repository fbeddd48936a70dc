//! The one shape of every Workload API and policy stream (FetchX509SVID, FetchX509Bundles,
//! FetchJWTBundles, WatchPolicy): the first response at once; then, at each change signal, one
//! entitlement check for all of them — the process that opened the stream must still be alive —
//! and the stream's own next response, pushed only when it differs. A stream ends with the
//! status its `next` returns (e.g. `PermissionDenied` once the caller lost every identity).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::Status;

use crate::peer::PeerInfo;

/// A server-streaming response.
pub(crate) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Ends a stream whose opener is gone: a stream handed to another process (SCM_RIGHTS) must not
/// keep delivering rotated keys to it.
pub(crate) fn check_caller(peer: Option<&PeerInfo>) -> Result<(), Status> {
    if peer.is_some_and(PeerInfo::is_gone) {
        return Err(Status::unauthenticated(
            "the process that opened this stream has exited; open a new one",
        ));
    }
    Ok(())
}

/// Streams `first`, then whatever `next` returns after each item of `changes` (`Ok(None)`:
/// nothing new to push), until `changes` ends or `next` or the caller check fails.
pub(crate) fn pushed<T, C>(
    first: T,
    peer: Option<PeerInfo>,
    mut changes: impl Stream<Item = C> + Send + Unpin + 'static,
    mut next: impl FnMut(C) -> Result<Option<T>, Status> + Send + 'static,
) -> ResponseStream<T>
where
    T: Send + 'static,
    C: Send + 'static,
{
    Box::pin(async_stream::try_stream! {
        yield first;
        while let Some(change) = changes.next().await {
            check_caller(peer.as_ref())?;
            if let Some(response) = next(change)? {
                yield response;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn pushes_only_what_next_returns_and_ends_with_its_status() {
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let changes = tokio_stream::wrappers::WatchStream::from_changes(rx);
        let mut stream = pushed(0u64, None, changes, |revision| match revision {
            1 => Ok(None),
            2 => Ok(Some(2)),
            _ => Err(Status::permission_denied("no identity")),
        });
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        // Watch changes coalesce; what counts is that revision 1 pushed nothing.
        let got = stream.next().await.unwrap().unwrap();
        assert_eq!(got, 2);
        tx.send(3).unwrap();
        let ended = stream.next().await.unwrap().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::PermissionDenied);
    }

    #[tokio::test]
    async fn a_stream_whose_opener_exited_ends_unauthenticated() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
        child.wait().unwrap();
        let peer = PeerInfo {
            pid: Some(pid.as_raw_pid()),
            uid: 0,
            gid: 0,
            pidfd: Some(Arc::new(pidfd)),
            activity: signet_unix::Activity::new(),
        };
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let changes = tokio_stream::wrappers::WatchStream::from_changes(rx);
        let mut stream = pushed(0u64, Some(peer), changes, |r| Ok(Some(r)));
        assert!(
            stream.next().await.unwrap().is_ok(),
            "the first response is sent"
        );
        tx.send(1).unwrap();
        let ended = stream.next().await.unwrap().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::Unauthenticated);
    }
}
