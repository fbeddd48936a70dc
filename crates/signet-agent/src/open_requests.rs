//! Counts each Workload API request as open on its connection until its response (for a stream:
//! the whole stream) is over, so a connection with no open request can be closed when idle (see
//! `PeerStream::closing_when_idle`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::peer::PeerInfo;

/// The layer, for `tonic::transport::Server::layer`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountOpenRequestsLayer;

impl<S> tower::Layer<S> for CountOpenRequestsLayer {
    type Service = CountOpenRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountOpenRequests { inner }
    }
}

/// See [`CountOpenRequestsLayer`].
#[derive(Debug, Clone)]
pub struct CountOpenRequests<S> {
    inner: S,
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for CountOpenRequests<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<signet_unix::TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = Boxed<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // Tonic puts the connection's `PeerInfo` on every request; a request without one (none
        // on this server) is counted on a throwaway activity.
        let open = request
            .extensions()
            .get::<PeerInfo>()
            .map_or_else(signet_unix::Activity::new, |peer| peer.activity.clone())
            .begin();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| signet_unix::TrackedBody::new(body, open)))
        })
    }
}
