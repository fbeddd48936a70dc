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

/// Objects kept by a fake API server with `resourceVersion` semantics: GET by path, POST to the
/// collection (409 if it exists), PUT (409 if the body's resourceVersion is stale), PATCH (server-side
/// apply: the body becomes the object).
#[derive(Debug, Default, Clone)]
pub struct ObjectStore {
    objects: Arc<Mutex<std::collections::BTreeMap<String, Value>>>,
    version: Arc<Mutex<u64>>,
}

impl ObjectStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The object at `path` (`/api/v1/namespaces/x/configmaps/y`).
    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().ok()?.get(path).cloned()
    }

    /// Puts an object at `path`, assigning a new resourceVersion.
    pub fn put(&self, path: &str, mut object: Value) -> Value {
        let version = {
            let Ok(mut v) = self.version.lock() else {
                return object;
            };
            *v += 1;
            *v
        };
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        if let Ok(mut objects) = self.objects.lock() {
            objects.insert(path.to_owned(), object.clone());
        }
        object
    }

    /// Answers a call if it concerns an object under `collection`; `None` otherwise.
    pub fn handle(&self, collection: &str, call: &Call) -> Option<Reply> {
        let path = call.uri.split('?').next().unwrap_or_default();
        let name_of = |p: &str| {
            p.strip_prefix(collection)?
                .strip_prefix('/')
                .map(str::to_owned)
        };
        match call.method.as_str() {
            "GET" => {
                let name = name_of(path)?;
                Some(match self.get(path) {
                    Some(object) => (200, object),
                    None => status_error(404, "NotFound", &format!("{name} not found")),
                })
            }
            "POST" if path == collection => {
                let name = call.body["metadata"]["name"].as_str()?.to_owned();
                let object_path = format!("{collection}/{name}");
                if self.get(&object_path).is_some() {
                    return Some(status_error(
                        409,
                        "AlreadyExists",
                        &format!("{name} already exists"),
                    ));
                }
                Some((201, self.put(&object_path, call.body.clone())))
            }
            "PUT" => {
                name_of(path)?;
                let current = self
                    .get(path)
                    .map(|o| o["metadata"]["resourceVersion"].clone());
                if current != Some(call.body["metadata"]["resourceVersion"].clone()) {
                    return Some(status_error(
                        409,
                        "Conflict",
                        "the object has been modified",
                    ));
                }
                Some((200, self.put(path, call.body.clone())))
            }
            "PATCH" => {
                name_of(path)?;
                let mut object = call.body.clone();
                if let Some(existing) = self.get(path) {
                    object["metadata"]["resourceVersion"] =
                        existing["metadata"]["resourceVersion"].clone();
                }
                Some((200, self.put(path, object)))
            }
            _ => None,
        }
    }
}
