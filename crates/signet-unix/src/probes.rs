//! The one `/livez`, `/readyz` and `/metrics` endpoint every daemon serves (server, agent, proxy,
//! helper), so probes and scrapes see the same paths, codes and content types everywhere.

use std::convert::Infallible;
use std::future::Ready;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response, StatusCode, header};

use crate::http_endpoint::{EndpointBounds, serve_http};

/// The OpenMetrics text content type `/metrics` answers with.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a daemon reports to its probes.
pub trait Probes: Send + Sync + 'static {
    /// `Ok` when ready to serve; otherwise why not (the body of the 503 answer).
    fn readiness(&self) -> Result<(), &'static str>;

    /// The OpenMetrics text exposition, `None` when this daemon has no `/metrics`.
    fn metrics(&self) -> Option<Result<String, std::fmt::Error>>;
}

/// Routes `/livez`, `/readyz` and `/metrics` to `probes`.
pub struct ProbeService {
    probes: Arc<dyn Probes>,
}

impl std::fmt::Debug for ProbeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeService").finish_non_exhaustive()
    }
}

impl Clone for ProbeService {
    fn clone(&self) -> Self {
        Self {
            probes: self.probes.clone(),
        }
    }
}

impl ProbeService {
    /// A service answering for `probes`.
    pub fn new(probes: Arc<dyn Probes>) -> Self {
        Self { probes }
    }

    fn answer(&self, method: &Method, path: &str) -> Response<String> {
        let known = matches!(path, "/livez" | "/readyz")
            || (path == "/metrics" && self.probes.metrics().is_some());
        if !known {
            return plain(StatusCode::NOT_FOUND, String::new());
        }
        if method != Method::GET && method != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, String::new());
        }
        let response = match path {
            "/livez" => plain(StatusCode::OK, "ok\n".to_owned()),
            "/readyz" => match self.probes.readiness() {
                Ok(()) => plain(StatusCode::OK, "ok\n".to_owned()),
                Err(reason) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
            },
            _ => match self.probes.metrics() {
                Some(Ok(body)) => with_type(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, body),
                _ => plain(StatusCode::INTERNAL_SERVER_ERROR, String::new()),
            },
        };
        if method == Method::HEAD {
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, String::new());
        }
        response
    }
}

fn plain(status: StatusCode, body: String) -> Response<String> {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

impl<B> tower_service::Service<Request<B>> for ProbeService {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        std::future::ready(Ok(self.answer(request.method(), request.uri().path())))
    }
}

/// Binds `address` and serves the probe endpoints within [`EndpointBounds::PROBES`]; returns the
/// bound address and the serving task. `what` names the endpoint in logs and task spans.
pub async fn serve_probes(
    address: SocketAddr,
    probes: Arc<dyn Probes>,
    what: &'static str,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    Ok((bound, serve_probes_on(listener, probes, what)))
}

/// Serves the probe endpoints on a listener the caller bound.
pub fn serve_probes_on(
    listener: tokio::net::TcpListener,
    probes: Arc<dyn Probes>,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    crate::spawn_named(what, async move {
        serve_http(
            listener,
            ProbeService::new(probes),
            EndpointBounds::PROBES,
            what,
        )
        .await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Fixed {
        ready: AtomicBool,
        metrics: bool,
    }

    impl Probes for Fixed {
        fn readiness(&self) -> Result<(), &'static str> {
            if self.ready.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("waiting for the first snapshot")
            }
        }

        fn metrics(&self) -> Option<Result<String, std::fmt::Error>> {
            self.metrics.then(|| Ok("# EOF\n".to_owned()))
        }
    }

    fn service(ready: bool, metrics: bool) -> ProbeService {
        ProbeService::new(Arc::new(Fixed {
            ready: AtomicBool::new(ready),
            metrics,
        }))
    }

    #[test]
    fn readiness_reports_the_reason() {
        let answer = service(false, true).answer(&Method::GET, "/readyz");
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.body(), "waiting for the first snapshot\n");
        let answer = service(true, true).answer(&Method::GET, "/readyz");
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(
            service(false, false)
                .answer(&Method::GET, "/livez")
                .status(),
            StatusCode::OK
        );
    }

    #[test]
    fn metrics_carry_the_openmetrics_type_and_only_where_offered() {
        let answer = service(true, true).answer(&Method::GET, "/metrics");
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(
            answer.headers()[header::CONTENT_TYPE],
            OPENMETRICS_CONTENT_TYPE
        );
        assert_eq!(answer.body(), "# EOF\n");
        let answer = service(true, false).answer(&Method::GET, "/metrics");
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let probes = service(true, true);
        assert_eq!(
            probes.answer(&Method::GET, "/").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            probes.answer(&Method::GET, "/livez/../metrics").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            probes.answer(&Method::POST, "/readyz").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let head = probes.answer(&Method::HEAD, "/metrics");
        assert_eq!(head.status(), StatusCode::OK);
        assert!(head.body().is_empty());
    }
}
