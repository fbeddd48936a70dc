//! A `tower` layer enforcing AuthorizationPolicy on HTTP requests: the peer identity comes from
//! the [`PeerIdentity`] request extension the connection set, the method and path from the
//! request; a denial answers `403 Forbidden` without calling the service.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{Request, Response, StatusCode};
use signet_spiffe::SpiffeId;

use crate::authz::{Access, Authorizer};

/// The verified peer of the connection a request arrived on (`None`: plaintext peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub Option<SpiffeId>);

/// Layer adding [`Authorize`].
#[derive(Debug, Clone)]
pub struct AuthorizeLayer {
    authorizer: Arc<Authorizer>,
    port: u16,
}

impl AuthorizeLayer {
    /// Enforces `authorizer`'s policy for requests to `port` (the port the policies name).
    pub fn new(authorizer: Arc<Authorizer>, port: u16) -> Self {
        Self { authorizer, port }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            authorizer: self.authorizer.clone(),
            port: self.port,
        }
    }
}

/// The enforcing service.
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    authorizer: Arc<Authorizer>,
    port: u16,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Authorize<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<ResBody>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let peer = request
            .extensions()
            .get::<PeerIdentity>()
            .and_then(|p| p.0.clone());
        let allowed = self.authorizer.allows(&Access {
            peer: peer.as_ref(),
            port: self.port,
            http: Some((request.method().as_str(), request.uri().path())),
        });
        if allowed {
            return Either::Left(self.inner.call(request));
        }
        let mut response = Response::new(ResBody::default());
        *response.status_mut() = StatusCode::FORBIDDEN;
        Either::Right(ready(Ok(response)))
    }
}
