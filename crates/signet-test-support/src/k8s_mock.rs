//! A fake Kubernetes API server for kube clients, in the kube-rs `tower-test` style: every
//! request reaches a handler that answers like the API server would, and every call is recorded
//! so a test can prove exactly which requests were made.

use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// One request the client made.
#[derive(Debug, Clone)]
pub struct Call {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// JSON body, if any.
    pub body: Value,
    /// `Content-Type` (e.g. `application/apply-patch+yaml` for server-side apply).
    pub content_type: String,
}

/// What the handler answers.
pub type Reply = (u16, Value);

/// A running fake API server.
#[derive(Debug, Clone)]
pub struct MockApiServer {
    calls: Arc<Mutex<Vec<Call>>>,
}

/// A Kubernetes `Status` error body.
pub fn status_error(code: u16, reason: &str, message: &str) -> Reply {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

impl MockApiServer {
    /// A client wired to a handler. The handler runs for every request until the client is dropped.
    pub fn start(
        mut handler: impl FnMut(&Call) -> Reply + Send + 'static,
    ) -> (kube::Client, MockApiServer) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let call = Call {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                };
                let (code, reply) = handler(&call);
                if let Ok(mut calls) = recorded.lock() {
                    calls.push(call);
                }
                let mut response =
                    Response::new(Body::from(serde_json::to_vec(&reply).unwrap_or_default()));
                *response.status_mut() =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                send.send_response(response);
            }
        });
        (client, MockApiServer { calls })
    }

    /// Every call so far, as `METHOD path`.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// `METHOD path` (query stripped) of every call so far.
    pub fn call_lines(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c.method,
                    c.uri.split('?').next().unwrap_or_default()
                )
            })
            .collect()
    }
}
