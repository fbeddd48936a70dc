//! HTTP forwarding to the local application, behind the authorization layer. The verified peer
//! reaches the application in `x-signet-peer-id` (any such header from the client is removed
//! first, so it cannot be forged).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use signet_spiffe::SpiffeId;
use signet_tls::authz::Authorizer;
use signet_tls::http::{AuthorizeLayer, PeerIdentity};
use tower::{Layer, ServiceExt};
use tracing::warn;

/// The header carrying the verified peer SPIFFE ID to the application.
pub const PEER_ID_HEADER: &str = "x-signet-peer-id";

pub(crate) type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded.
// Parsed once: removing by `&str` parsed and hashed each name again on every request.
static HOP_BY_HOP: std::sync::LazyLock<[HeaderName; 8]> = std::sync::LazyLock::new(|| {
    [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::UPGRADE,
    ]
});

#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    client: Client<HttpConnector, Incoming>,
    authority: http::uri::Authority,
}

impl Forwarder {
    pub(crate) fn new(forward: SocketAddr) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(crate::CONNECT_TIMEOUT));
        let authority = forward
            .to_string()
            .parse()
            .unwrap_or_else(|_| http::uri::Authority::from_static("127.0.0.1"));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            authority,
        }
    }

    /// The per-connection service: authorize, then forward.
    pub(crate) fn service(
        &self,
        authorizer: Arc<Authorizer>,
        port: u16,
        peer: Option<SpiffeId>,
    ) -> impl tower::Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        let forwarder = self.clone();
        let peer_header = peer
            .as_ref()
            .and_then(|id| HeaderValue::from_str(id.as_str()).ok());
        let inner = tower::service_fn(move |request: Request<Incoming>| {
            let forwarder = forwarder.clone();
            let peer_header = peer_header.clone();
            async move { Ok::<_, Infallible>(forwarder.forward(request, peer_header).await) }
        });
        let identity = PeerIdentity(peer);
        let authorized = AuthorizeLayer::new(authorizer, port).layer(inner);
        tower::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(identity.clone());
            authorized.clone().oneshot(request)
        })
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        peer: Option<HeaderValue>,
    ) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build();
        let Ok(uri) = uri else {
            return status(StatusCode::BAD_REQUEST);
        };
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        remove_peer_headers(&mut parts.headers);
        if let Some(peer) = peer {
            parts
                .headers
                .insert(HeaderName::from_static(PEER_ID_HEADER), peer);
        }
        if !parts.headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(self.authority.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.boxed_unsync())
            }
            Err(error) => {
                warn!(%error, "the local application did not answer");
                status(StatusCode::BAD_GATEWAY)
            }
        }
    }
}

/// Removes every client-sent header the application could read as the peer ID: the name itself
/// and its spellings with `_` (CGI-style servers map both to `HTTP_X_SIGNET_PEER_ID`).
fn remove_peer_headers(headers: &mut http::HeaderMap) {
    // One pass without allocating; a Vec is only filled (and allocated) when a client sent one.
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| same_but_underscores(name.as_str(), PEER_ID_HEADER))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// Whether `name` is `wanted` with any of its `-` written as `_`.
fn same_but_underscores(name: &str, wanted: &str) -> bool {
    name.len() == wanted.len()
        && name
            .bytes()
            .zip(wanted.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers named by `Connection` are hop-by-hop too.
    let mut doomed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    // A scan of the few headers a request carries beats eight hash lookups that almost never
    // find anything.
    doomed.extend(
        headers
            .keys()
            .filter(|name| HOP_BY_HOP.contains(name))
            .cloned(),
    );
    for name in doomed {
        headers.remove(name);
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn every_spelling_of_the_peer_header_a_client_sends_is_removed() {
        let mut headers = map(&[
            ("x-signet-peer-id", "spiffe://evil/a"),
            ("x_signet_peer_id", "spiffe://evil/b"),
            ("x-signet_peer-id", "spiffe://evil/c"),
            ("x-signet-peer-idx", "kept"),
            ("accept", "*/*"),
        ]);
        remove_peer_headers(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-signet-peer-idx"]);
        assert!(!same_but_underscores("x-signet-peer-i", PEER_ID_HEADER));
        assert!(!same_but_underscores(
            "x-signet-peer-id",
            "x_signet_peer_id"
        ));
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_stripped() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-connection", "close"),
            ("x-private", "secret"),
            ("host", "app"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "host"]);
    }
}
