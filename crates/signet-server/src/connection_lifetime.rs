//! Connections to the agent API that carry no agent SVID exist to attest (one RPC). Left open,
//! they cost memory and a descriptor each: 19,800 idle ones took 640 MB and every descriptor,
//! and real agents waited. Such a connection ends after a bounded lifetime.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// A connection that ends (reads see end-of-stream) once its lifetime is over, if it has one.
#[derive(Debug)]
pub struct Bounded<S> {
    inner: S,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    slots: crate::agent_listener::Slots,
}

impl<S> Bounded<S> {
    /// `lifetime` `None`: unbounded (authenticated agents keep their sync stream open); `slots`
    /// are released when the connection closes.
    pub fn new(inner: S, lifetime: Option<Duration>, slots: crate::agent_listener::Slots) -> Self {
        Self {
            inner,
            deadline: lifetime.map(|l| Box::pin(tokio::time::sleep(l))),
            slots,
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) || self.slots.poll_evicted(cx) {
            // End of stream: the HTTP/2 server closes the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
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

impl<S: Connected> Connected for Bounded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
