//! An in-memory Kubernetes API server for kube clients: objects with `resourceVersion`s, LIST
//! with `fieldSelector=spec.nodeName=`, streaming WATCH that replays from a resourceVersion,
//! create / replace (409 on a stale version) / merge-patch and server-side apply (including the
//! `status` subresource) / delete, and a TokenReview responder. Enough for the controller, the
//! server's Kubernetes mode and the agent's pod watch to run unchanged in one process. Every call
//! is recorded, and an interceptor can answer a call before the store does (an API error, an
//! outage, a conflict at exactly the wrong moment).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;
type TokenReviewer = Box<dyn FnMut(&Value) -> Value + Send>;
type Interceptor = Box<dyn FnMut(&Call) -> Option<Reply> + Send>;

/// One request a client made.
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

impl Call {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

/// An answer: status code and JSON body.
pub type Reply = (u16, Value);

/// A Kubernetes `Status` error body, as the API server sends it.
pub fn status_error(code: u16, reason: &str, message: &str) -> Reply {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

struct Watcher {
    collection: String,
    namespace: Option<String>,
    node: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    version: u64,
    uid: u64,
    /// collection → (namespace, name) → object
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    log: Vec<(u64, String, &'static str, Value)>,
    watchers: Vec<Watcher>,
    token_reviewer: Option<TokenReviewer>,
    interceptor: Option<Interceptor>,
    calls: Vec<Call>,
    /// Watches from a resourceVersion older than this get 410 Gone (history compacted).
    compacted: u64,
}

/// The fake cluster; cheap to clone.
#[derive(Clone, Default)]
pub struct FakeCluster {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeCluster")
    }
}

/// The collection key (`v1/pods`, `signet.dev/v1alpha1/clusterspiffeids`) of an object.
pub fn collection_of(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let kind = object["kind"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let plural = if let Some(stem) = kind.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{kind}s")
    };
    format!("{api_version}/{plural}")
}

struct Target {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ((*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let target = |plural: &str, namespace: Option<&str>, name: Option<&str>, status| Target {
        collection: format!("{prefix}/{plural}"),
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        status,
    };
    Some(match rest {
        [plural] => target(plural, None, None, false),
        ["namespaces", ns, plural] if *plural != "status" => target(plural, Some(ns), None, false),
        ["namespaces", ns, plural, name] => target(plural, Some(ns), Some(name), false),
        ["namespaces", ns, plural, name, "status"] => target(plural, Some(ns), Some(name), true),
        [plural, name] => target(plural, None, Some(name), false),
        [plural, name, "status"] => target(plural, None, Some(name), true),
        _ => return None,
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| {
            v.replace("%3D", "=")
                .replace("%3d", "=")
                .replace("%2C", ",")
        })
    })
}

fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (key, value) in p {
                if value.is_null() {
                    t.remove(key);
                } else {
                    merge(t.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// `(namespace, name)` of an object.
fn key_of(object: &Value) -> (String, String) {
    (
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn error(code: u16, reason: &str, message: &str) -> Reply {
    status_error(code, reason, message)
}

fn matches(object: &Value, namespace: Option<&str>, node: Option<&str>) -> bool {
    namespace.is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
        && node.is_none_or(|n| object["spec"]["nodeName"].as_str() == Some(n))
}

impl State {
    fn emit(&mut self, collection: &str, kind: &'static str, object: &Value) {
        self.log
            .push((self.version, collection.to_owned(), kind, object.clone()));
        let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": object})));
        self.watchers.retain(|w| {
            if w.collection != collection
                || !matches(object, w.namespace.as_deref(), w.node.as_deref())
            {
                return !w.tx.is_closed();
            }
            w.tx.send(line.clone()).is_ok()
        });
    }

    fn store(&mut self, collection: &str, mut object: Value, kind: &'static str) -> Value {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        if object["metadata"]["uid"].is_null() {
            self.uid += 1;
            object["metadata"]["uid"] = json!(format!("00000000-0000-0000-0000-{:012}", self.uid));
        }
        if object["metadata"]["creationTimestamp"].is_null() {
            object["metadata"]["creationTimestamp"] = json!("2026-11-23T00:00:00Z");
        }
        let key = key_of(&object);
        self.objects
            .entry(collection.to_owned())
            .or_default()
            .insert(key, object.clone());
        self.emit(collection, kind, &object);
        object
    }
}

impl FakeCluster {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers TokenReviews with `reviewer(request) → TokenReview`.
    pub fn on_token_review(&self, reviewer: impl FnMut(&Value) -> Value + Send + 'static) {
        self.state.lock().token_reviewer = Some(Box::new(reviewer));
    }

    /// Answers every call `interceptor` returns a reply for instead of the store (the call is
    /// still recorded); `None` lets the store answer.
    pub fn intercept(&self, interceptor: impl FnMut(&Call) -> Option<Reply> + Send + 'static) {
        self.state.lock().interceptor = Some(Box::new(interceptor));
    }

    /// Creates or replaces an object (must carry apiVersion, kind and metadata.name).
    pub fn apply(&self, object: Value) -> Value {
        let collection = collection_of(&object);
        let mut state = self.state.lock();
        let key = key_of(&object);
        let existing = state
            .objects
            .get(&collection)
            .and_then(|c| c.get(&key))
            .cloned();
        let mut object = object;
        let kind = match existing {
            Some(old) => {
                if object["metadata"]["uid"].is_null() {
                    object["metadata"]["uid"] = old["metadata"]["uid"].clone();
                }
                "MODIFIED"
            }
            None => "ADDED",
        };
        state.store(&collection, object, kind)
    }

    /// Deletes an object.
    pub fn delete(&self, collection: &str, namespace: &str, name: &str) {
        let mut state = self.state.lock();
        let removed = state
            .objects
            .get_mut(collection)
            .and_then(|c| c.remove(&(namespace.to_owned(), name.to_owned())));
        if let Some(object) = removed {
            state.version += 1;
            state.emit(collection, "DELETED", &object);
        }
    }

    /// An object.
    pub fn get(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .objects
            .get(collection)?
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Ends every open watch, as an API server restart or a dropped connection would; clients
    /// re-list.
    pub fn break_watches(&self) {
        self.state.lock().watchers.clear();
    }

    /// Compacts the history: watches resuming from an older resourceVersion get 410 Gone and
    /// clients must re-list (what etcd compaction does after a long disconnection).
    pub fn expire_history(&self) {
        let mut state = self.state.lock();
        state.compacted = state.version + 1;
    }

    /// Deletes an object without telling open watches (a deletion missed during an outage).
    pub fn delete_silently(&self, collection: &str, namespace: &str, name: &str) {
        if let Some(c) = self.state.lock().objects.get_mut(collection) {
            c.remove(&(namespace.to_owned(), name.to_owned()));
        }
    }

    /// `METHOD path` (query stripped) of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state
            .lock()
            .calls
            .iter()
            .map(|c| format!("{} {}", c.method, c.path()))
            .collect()
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().calls.clone()
    }

    /// A client talking to this cluster.
    pub fn client(&self) -> kube::Client {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<Body>, Response<ResponseBody>>();
        let cluster = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let cluster = cluster.clone();
                tokio::spawn(async move {
                    let response = cluster.serve(request).await;
                    send.send_response(response);
                });
            }
        });
        kube::Client::new(service, "default")
    }

    async fn serve(&self, request: Request<Body>) -> Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let method = parts.method.as_str().to_owned();
        let call = Call {
            method: method.clone(),
            uri: parts.uri.to_string(),
            body: body.clone(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        };
        let intercepted = {
            let mut state = self.state.lock();
            state.calls.push(call.clone());
            state.interceptor.as_mut().and_then(|answer| answer(&call))
        };
        let watch = matches!(query_param(&query, "watch").as_deref(), Some("true" | "1"));
        let (code, value) = match intercepted {
            Some(reply) => reply,
            None if method == "GET" && watch => return self.watch(&path, &query),
            None => self.handle(&method, &path, &query, body),
        };
        let mut response = Response::new(
            http_body_util::Full::new(Bytes::from(serde_json::to_vec(&value).unwrap_or_default()))
                .boxed_unsync(),
        );
        *response.status_mut() =
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response
    }

    fn watch(&self, path: &str, query: &str) -> Response<ResponseBody> {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        if let Some(target) = parse_path(path) {
            let mut state = self.state.lock();
            let node = query_param(query, "fieldSelector")
                .and_then(|f| f.strip_prefix("spec.nodeName=").map(str::to_owned));
            let since: u64 = query_param(query, "resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if since < state.compacted {
                let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}});
                let _ = tx.send(Bytes::from(format!("{gone}\n")));
                drop(tx);
                let stream =
                    UnboundedReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
                return Response::new(StreamBody::new(stream).boxed_unsync());
            }
            for (version, collection, kind, object) in &state.log {
                if *version > since
                    && *collection == target.collection
                    && matches(object, target.namespace.as_deref(), node.as_deref())
                {
                    let _ = tx.send(Bytes::from(format!(
                        "{}\n",
                        json!({"type": kind, "object": object})
                    )));
                }
            }
            state.watchers.push(Watcher {
                collection: target.collection,
                namespace: target.namespace,
                node,
                tx,
            });
        }
        let stream = UnboundedReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
        Response::new(StreamBody::new(stream).boxed_unsync())
    }

    fn handle(&self, method: &str, path: &str, query: &str, body: Value) -> (u16, Value) {
        let Some(target) = parse_path(path) else {
            return error(404, "NotFound", "unknown path");
        };
        let mut state = self.state.lock();
        if target.collection == "authentication.k8s.io/v1/tokenreviews" && method == "POST" {
            return match state.token_reviewer.as_mut() {
                Some(reviewer) => (201, reviewer(&body)),
                None => error(403, "Forbidden", "no token reviewer"),
            };
        }
        let ns = target.namespace.clone().unwrap_or_default();
        let key = |name: &str| (ns.clone(), name.to_owned());
        let existing = target.name.as_deref().and_then(|name| {
            state
                .objects
                .get(&target.collection)
                .and_then(|c| c.get(&key(name)))
                .cloned()
        });
        match (method, target.name.as_deref()) {
            ("GET", None) => {
                let node = query_param(query, "fieldSelector")
                    .and_then(|f| f.strip_prefix("spec.nodeName=").map(str::to_owned));
                let items: Vec<Value> = state
                    .objects
                    .get(&target.collection)
                    .map(|c| {
                        c.values()
                            .filter(|o| matches(o, target.namespace.as_deref(), node.as_deref()))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": state.version.to_string()}, "items": items}),
                )
            }
            ("GET", Some(name)) => match existing {
                Some(object) => (200, object),
                None => error(404, "NotFound", &format!("{name} not found")),
            },
            ("POST", None) => {
                let mut body = body;
                if body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty()
                {
                    state.uid += 1;
                    let prefix = body["metadata"]["generateName"].as_str().unwrap_or("obj-");
                    body["metadata"]["name"] = json!(format!("{prefix}{}", state.uid));
                }
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if state
                    .objects
                    .get(&target.collection)
                    .is_some_and(|c| c.contains_key(&key(&name)))
                {
                    return error(409, "AlreadyExists", &format!("{name} already exists"));
                }
                if target.namespace.is_some() {
                    body["metadata"]["namespace"] = json!(ns);
                }
                (201, state.store(&target.collection, body, "ADDED"))
            }
            ("PUT", Some(name)) => {
                let Some(old) = existing else {
                    return error(404, "NotFound", &format!("{name} not found"));
                };
                let expected = &body["metadata"]["resourceVersion"];
                if !expected.is_null() && *expected != old["metadata"]["resourceVersion"] {
                    return error(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version",
                    );
                }
                let mut object = body;
                if target.status {
                    let mut full = old.clone();
                    full["status"] = object["status"].clone();
                    object = full;
                }
                object["metadata"]["uid"] = old["metadata"]["uid"].clone();
                object["metadata"]["creationTimestamp"] =
                    old["metadata"]["creationTimestamp"].clone();
                (200, state.store(&target.collection, object, "MODIFIED"))
            }
            ("PATCH", Some(name)) => {
                let (mut object, kind) = match existing {
                    Some(old) => (old, "MODIFIED"),
                    None if target.status => {
                        return error(404, "NotFound", &format!("{name} not found"));
                    }
                    None => {
                        let mut fresh = json!({"metadata": {"name": name}});
                        if target.namespace.is_some() {
                            fresh["metadata"]["namespace"] = json!(ns);
                        }
                        (fresh, "ADDED")
                    }
                };
                if target.status {
                    object["status"] = body["status"].clone();
                } else {
                    let mut patch = body;
                    if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.remove("resourceVersion");
                    }
                    merge(&mut object, &patch);
                }
                (200, state.store(&target.collection, object, kind))
            }
            ("DELETE", Some(name)) => match existing {
                Some(object) => {
                    if let Some(c) = state.objects.get_mut(&target.collection) {
                        c.remove(&key(name));
                    }
                    state.version += 1;
                    state.emit(&target.collection, "DELETED", &object);
                    (200, object)
                }
                None => error(404, "NotFound", &format!("{name} not found")),
            },
            _ => error(405, "MethodNotAllowed", "unsupported"),
        }
    }
}
