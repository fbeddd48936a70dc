//! Closing connections nobody uses. A connection costs a descriptor and HTTP/2 state; one that
//! carries no request (it never sent one, or its last stream ended) for the idle timeout is
//! closed. A connection with an open stream is never idle, however quiet the stream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The requests open on one connection, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    /// A connection with no request yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    /// Counts a request as open until the guard is dropped (with its response body).
    pub fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.open.fetch_add(1, Ordering::AcqRel);
        ActiveRequest(self.clone())
    }

    /// How long the connection has carried no request; `None` while one is open.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self.idle_since.lock();
        Some(since.elapsed())
    }
}

/// One open request (see [`Activity::begin`]).
#[derive(Debug)]
pub struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let mut since = self.0.idle_since.lock();
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            *since = Instant::now();
        }
    }
}

/// Tells a connection's reader when the connection has been idle for its timeout.
#[derive(Debug)]
pub struct IdleDeadline {
    activity: Arc<Activity>,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
}

impl IdleDeadline {
    /// Watches `activity` with `timeout`.
    pub fn new(activity: Arc<Activity>, timeout: Duration) -> Self {
        Self {
            activity,
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Whether the connection is idle past its timeout; otherwise the timer is armed to wake
    /// the task when it might be.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let wait = match self.activity.idle_for() {
                Some(idle) if idle >= self.timeout => return true,
                Some(idle) => self.timeout - idle,
                None => self.timeout,
            };
            self.timer.as_mut().reset(Instant::now() + wait);
        }
    }
}

/// A response body that keeps its request counted as open until the body is dropped (for a
/// server-streaming RPC: until the stream ends).
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _request: ActiveRequest,
}

impl<B> TrackedBody<B> {
    /// `inner`, counted under `request`.
    pub fn new(inner: B, request: ActiveRequest) -> Self {
        Self {
            inner,
            _request: request,
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
