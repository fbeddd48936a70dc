//! The controller's I/O: watches on namespaces, nodes, pods and the resources feed the [`Index`]
//! (one task owns it, so the computation needs no locks); entry changes go to an [`EntrySink`]
//! (the server's entry index) at once; status values go to one writer that applies them with
//! server-side apply, only while this replica leads.
//!
//! A watch restart relists: objects missing from the new list are deleted only when the list is
//! complete (`InitDone`), and a watch error keeps the last known state. The sink is told the
//! state is complete once every watch has listed once, so no agent is ever sent a partial
//! snapshot after a restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event as K8sEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde_json::json;
use signet_api::{AuthorizationPolicy, ClusterSPIFFEID, ClusterStaticEntry};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::index::{EntryChange, Index};
use crate::policy_state::PolicyState;
use crate::status::{identity_status, static_status};

/// Where computed entries go.
pub trait EntrySink: Send + Sync + 'static {
    /// Applies changes, in order.
    fn apply(&self, changes: Vec<EntryChange>);
    /// Every watch has listed once: the entry set is complete.
    fn synced(&self);
    /// The AuthorizationPolicies with their targets resolved, after every change.
    fn policies(&self, _bindings: Vec<signet_core::policy::PolicyBinding>) {}
}

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// How often status is recomputed and, if changed, written (leader only).
    pub status_interval: Duration,
    /// The Events reporter (controller name and this pod's name).
    pub reporter_instance: String,
    /// Most events handled before the changes are handed to the sink.
    pub batch: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            status_interval: Duration::from_secs(2),
            reporter_instance: "signet-server".into(),
            batch: 1024,
        }
    }
}

enum Input {
    Namespace(Box<Event<Namespace>>),
    Node(Box<Event<Node>>),
    Pod(Box<Event<Pod>>),
    Identity(Box<Event<ClusterSPIFFEID>>),
    Static(Box<Event<ClusterStaticEntry>>),
    Policy(Box<Event<AuthorizationPolicy>>),
    /// Only while some ClusterSPIFFEID has autoPopulateDNSNames; never gates the entry set.
    Slice(Box<Event<EndpointSlice>>),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Namespace,
    Node,
    Pod,
    Identity,
    Static,
    Policy,
}

const KINDS: usize = 6;

fn stream<K>(
    api: Api<K>,
    wrap: fn(Event<K>) -> Input,
    kind: &'static str,
) -> BoxStream<'static, Input>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| async move {
            match event {
                Ok(event) => Some(wrap(event)),
                Err(error) => {
                    // The watcher retries with backoff; state is kept meanwhile.
                    warn!(kind, %error, "watch error; keeping the last known state");
                    None
                }
            }
        })
        .boxed()
}

/// The namespace of the pod an event is about (`None` for list boundaries: any pod).
fn pod_namespace(event: &Event<Pod>) -> Option<&str> {
    match event {
        Event::Apply(pod) | Event::InitApply(pod) | Event::Delete(pod) => {
            pod.metadata.namespace.as_deref()
        }
        Event::Init | Event::InitDone => None,
    }
}

/// A status to write.
#[derive(Debug, Clone)]
enum StatusWrite {
    Identity(String, serde_json::Value, Option<String>),
    Static(String, serde_json::Value),
    /// Namespace, name, status.
    Policy(String, String, serde_json::Value),
}

struct Loop {
    index: Index,
    sink: Arc<dyn EntrySink>,
    relisting: [Option<HashSet<String>>; KINDS],
    listed: [bool; KINDS],
    announced: bool,
    conditions: HashMap<(Kind, String), Vec<Condition>>,
    /// A digest of the status last handed to the writer per resource: a status JSON per resource
    /// would be the controller's largest memory user with many resources.
    written: HashMap<(Kind, String), u64>,
    reported_failures: HashMap<String, Vec<(String, String)>>,
    policies: PolicyState,
    policies_announced: bool,
    /// EndpointSlice keys seen during a relist of the slice watch.
    slices_relisting: Option<HashSet<String>>,
}

fn slot(kind: Kind) -> usize {
    kind as usize
}

impl Loop {
    fn names(&self, kind: Kind) -> Vec<String> {
        match kind {
            Kind::Namespace => self.index.namespace_names(),
            Kind::Node => self.index.node_names(),
            Kind::Pod => self.index.pod_keys(),
            Kind::Identity => self.index.identity_names(),
            Kind::Static => self.index.static_names(),
            Kind::Policy => self.policies.keys(),
        }
    }

    fn delete(&mut self, kind: Kind, name: &str) {
        match kind {
            Kind::Namespace => self.index.delete_namespace(name),
            Kind::Node => self.index.delete_node(name),
            Kind::Pod => {
                if let Some((ns, pod)) = name.split_once('/') {
                    self.index.delete_pod(ns, pod);
                }
            }
            Kind::Identity => {
                self.index.delete_identity(name);
                self.conditions.remove(&(kind, name.to_owned()));
                self.written.remove(&(kind, name.to_owned()));
            }
            Kind::Static => {
                self.index.delete_static(name);
                self.conditions.remove(&(kind, name.to_owned()));
                self.written.remove(&(kind, name.to_owned()));
            }
            Kind::Policy => {
                self.policies.delete(name);
                self.written.remove(&(kind, name.to_owned()));
            }
        }
    }

    fn event<K>(
        &mut self,
        kind: Kind,
        event: Event<K>,
        name_of: fn(&K) -> String,
        apply: fn(&mut Self, &K),
    ) {
        match event {
            Event::Init => self.relisting[slot(kind)] = Some(HashSet::new()),
            Event::InitApply(object) => {
                apply(self, &object);
                if let Some(seen) = self.relisting[slot(kind)].as_mut() {
                    seen.insert(name_of(&object));
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.relisting[slot(kind)].take() {
                    for name in self.names(kind) {
                        if !seen.contains(&name) {
                            debug!(?kind, %name, "gone after relist");
                            self.delete(kind, &name);
                        }
                    }
                }
                self.listed[slot(kind)] = true;
            }
            Event::Apply(object) => apply(self, &object),
            Event::Delete(object) => self.delete(kind, &name_of(&object)),
        }
    }

    fn handle(&mut self, input: Input) {
        // Selector policies resolve to the identities pods get: any change to pods, namespaces
        // or identities may change their targets.
        match &input {
            Input::Pod(event) => self.policies.pods_changed(pod_namespace(event)),
            Input::Namespace(_) | Input::Identity(_) => self.policies.pods_changed(None),
            Input::Node(_) | Input::Static(_) | Input::Policy(_) | Input::Slice(_) => {}
        }
        match input {
            Input::Namespace(e) => self.event(
                Kind::Namespace,
                *e,
                |o| o.name_any(),
                |s, o| s.index.apply_namespace(o),
            ),
            Input::Node(e) => self.event(
                Kind::Node,
                *e,
                |o| o.name_any(),
                |s, o| s.index.apply_node(o),
            ),
            Input::Pod(e) => self.event(
                Kind::Pod,
                *e,
                |o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()),
                |s, o| s.index.apply_pod(o),
            ),
            Input::Identity(e) => self.event(
                Kind::Identity,
                *e,
                |o| o.name_any(),
                |s, o| {
                    let conditions = o
                        .status
                        .as_ref()
                        .map(|st| st.conditions.clone())
                        .unwrap_or_default();
                    s.conditions
                        .insert((Kind::Identity, o.name_any()), conditions);
                    s.index.apply_identity(o);
                },
            ),
            Input::Static(e) => self.event(
                Kind::Static,
                *e,
                |o| o.name_any(),
                |s, o| {
                    let conditions = o
                        .status
                        .as_ref()
                        .map(|st| st.conditions.clone())
                        .unwrap_or_default();
                    s.conditions
                        .insert((Kind::Static, o.name_any()), conditions);
                    s.index.apply_static(o);
                },
            ),
            Input::Policy(e) => self.event(
                Kind::Policy,
                *e,
                |o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()),
                |s, o| s.policies.apply(o),
            ),
            Input::Slice(e) => self.slice_event(*e),
        }
    }

    fn slice_event(&mut self, event: Event<EndpointSlice>) {
        match event {
            Event::Init => self.slices_relisting = Some(HashSet::new()),
            Event::InitApply(slice) => {
                self.index.apply_endpoint_slice(&slice);
                if let Some(seen) = self.slices_relisting.as_mut() {
                    seen.insert(crate::services::slice_key(&slice));
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.slices_relisting.take() {
                    for key in self.index.endpoint_slice_keys() {
                        if !seen.contains(&key) {
                            self.index.delete_endpoint_slice(&key);
                        }
                    }
                }
            }
            Event::Apply(slice) => self.index.apply_endpoint_slice(&slice),
            Event::Delete(slice) => self
                .index
                .delete_endpoint_slice(&crate::services::slice_key(&slice)),
        }
    }

    /// Starts or stops the EndpointSlice watch as ClusterSPIFFEIDs ask for Service DNS names.
    fn follow_slices(
        &mut self,
        client: &kube::Client,
        slices: &mut Option<BoxStream<'static, Input>>,
    ) {
        match (self.index.wants_service_names(), slices.is_some()) {
            (true, false) => {
                info!("a ClusterSPIFFEID sets autoPopulateDNSNames: watching EndpointSlices");
                *slices = Some(stream(
                    Api::<EndpointSlice>::all(client.clone()),
                    |e| Input::Slice(Box::new(e)),
                    "endpointslices",
                ));
            }
            (false, true) => {
                info!("no ClusterSPIFFEID sets autoPopulateDNSNames: EndpointSlice watch stopped");
                *slices = None;
                self.slices_relisting = None;
                self.index.clear_endpoint_slices();
                self.flush();
            }
            _ => {}
        }
    }

    fn flush(&mut self) {
        let changes = self.index.take_changes();
        if !changes.is_empty() {
            self.sink.apply(changes);
        }
        // Policies go out only once every list is complete: a partial policy list would drop
        // DENYs, and a partial pod list would resolve selectors to too few identities. The first
        // time even if there are none: that tells the server they are loaded.
        if self.listed.iter().all(|listed| *listed) {
            let first = !self.policies_announced;
            if let Some(bindings) = self.policies.take_bindings(&self.index, first) {
                self.policies_announced = true;
                self.sink.policies(bindings);
            }
        }
        // AuthorizationPolicies do not gate the entry set: a cluster without their CRD (or
        // without RBAC for them) must still get identities.
        let entry_kinds_listed = self
            .listed
            .iter()
            .enumerate()
            .all(|(i, listed)| *listed || i == slot(Kind::Policy));
        if !self.announced && entry_kinds_listed {
            self.announced = true;
            info!(
                entries = self.index.len(),
                "initial lists complete; entry set is authoritative"
            );
            self.sink.synced();
        }
    }

    /// Status values that differ from what was last written.
    fn status_writes(&mut self) -> Vec<StatusWrite> {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut writes = Vec::new();
        for name in self.index.identity_names() {
            let Some(report) = self.index.identity_report(&name) else {
                continue;
            };
            let key = (Kind::Identity, name.clone());
            let previous = self.conditions.get(&key).cloned().unwrap_or_default();
            let status = identity_status(&report, &previous, now.clone());
            let value = serde_json::to_value(&status).unwrap_or_default();
            let digest = digest(&value);
            if self.written.get(&key) != Some(&digest) {
                let event = (self.reported_failures.get(&name) != Some(&report.failures)
                    && !report.failures.is_empty())
                .then(|| {
                    report
                        .failures
                        .iter()
                        .map(|(pod, why)| format!("{pod}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                });
                self.reported_failures
                    .insert(name.clone(), report.failures.clone());
                self.conditions
                    .insert(key.clone(), status.conditions.clone());
                self.written.insert(key, digest);
                writes.push(StatusWrite::Identity(name, value, event));
            }
        }
        for name in self.index.static_names() {
            let Some(report) = self.index.static_report(&name) else {
                continue;
            };
            let key = (Kind::Static, name.clone());
            let previous = self.conditions.get(&key).cloned().unwrap_or_default();
            let status = static_status(&report, &previous, now.clone());
            let value = serde_json::to_value(&status).unwrap_or_default();
            let digest = digest(&value);
            if self.written.get(&key) != Some(&digest) {
                self.conditions
                    .insert(key.clone(), status.conditions.clone());
                self.written.insert(key, digest);
                writes.push(StatusWrite::Static(name, value));
            }
        }
        let known = [self.index.config().trust_domain.clone()];
        for (namespace, name, status) in self.policies.statuses(&self.index, &known, &now) {
            let key = (Kind::Policy, format!("{namespace}/{name}"));
            let value = serde_json::to_value(&status).unwrap_or_default();
            let digest = digest(&value);
            if self.written.get(&key) != Some(&digest) {
                self.policies.written(&key.1, status.conditions.clone());
                self.written.insert(key, digest);
                writes.push(StatusWrite::Policy(namespace, name, value));
            }
        }
        writes
    }
}

/// A stable digest of a status value (JSON text hashed with SipHash; collisions only cost a
/// skipped rewrite of an unchanged-looking status until the next real change).
fn digest(value: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// The next EndpointSlice event, or never while the slice watch is off.
async fn next_slice(slices: &mut Option<BoxStream<'static, Input>>) -> Option<Input> {
    match slices {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// Runs the controller until the task is dropped.
pub async fn run(
    client: kube::Client,
    index: Index,
    sink: Arc<dyn EntrySink>,
    mut leader: watch::Receiver<bool>,
    config: RuntimeConfig,
) {
    let mut inputs = futures::stream::select_all([
        stream(
            Api::<Namespace>::all(client.clone()),
            |e| Input::Namespace(Box::new(e)),
            "namespaces",
        ),
        stream(
            Api::<Node>::all(client.clone()),
            |e| Input::Node(Box::new(e)),
            "nodes",
        ),
        stream(
            Api::<Pod>::all(client.clone()),
            |e| Input::Pod(Box::new(e)),
            "pods",
        ),
        stream(
            Api::<ClusterSPIFFEID>::all(client.clone()),
            |e| Input::Identity(Box::new(e)),
            "clusterspiffeids",
        ),
        stream(
            Api::<ClusterStaticEntry>::all(client.clone()),
            |e| Input::Static(Box::new(e)),
            "clusterstaticentries",
        ),
        stream(
            Api::<AuthorizationPolicy>::all(client.clone()),
            |e| Input::Policy(Box::new(e)),
            "authorizationpolicies",
        ),
    ]);
    let (writes_tx, writes_rx) = mpsc::channel::<Vec<StatusWrite>>(4);
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<(Kind, String)>();
    tokio::spawn(tracing::Instrument::instrument(
        status_writer(
            client.clone(),
            config.reporter_instance.clone(),
            writes_rx,
            failed_tx,
        ),
        tracing::info_span!("task", name = "status-writer"),
    ));

    let mut state = Loop {
        index,
        sink,
        relisting: Default::default(),
        listed: [false; KINDS],
        announced: false,
        conditions: HashMap::new(),
        written: HashMap::new(),
        reported_failures: HashMap::new(),
        policies: PolicyState::default(),
        policies_announced: false,
        slices_relisting: None,
    };
    let mut slices: Option<BoxStream<'static, Input>> = None;
    let mut status_tick = tokio::time::interval(config.status_interval);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        state.follow_slices(&client, &mut slices);
        tokio::select! {
            Some(input) = next_slice(&mut slices) => {
                state.handle(input);
                state.flush();
            }
            input = inputs.next() => {
                let Some(input) = input else { break };
                state.handle(input);
                // Drain what is already queued so an initial list is computed in batches.
                for _ in 1..config.batch {
                    match inputs.next().now_or_never() {
                        Some(Some(input)) => state.handle(input),
                        _ => break,
                    }
                }
                state.flush();
            }
            _ = status_tick.tick() => {
                while let Ok(key) = failed_rx.try_recv() {
                    state.written.remove(&key);
                }
                if *leader.borrow_and_update() && state.announced {
                    let writes = state.status_writes();
                    if !writes.is_empty() && writes_tx.try_send(writes).is_err() {
                        // The writer is behind: forget what we computed so it is resent.
                        state.written.clear();
                    }
                }
            }
            changed = leader.changed() => {
                if changed.is_err() { break }
                // A new leader writes everything once.
                state.written.clear();
                state.reported_failures.clear();
            }
        }
    }
}

async fn status_writer(
    client: kube::Client,
    instance: String,
    mut writes: mpsc::Receiver<Vec<StatusWrite>>,
    failed: mpsc::UnboundedSender<(Kind, String)>,
) {
    let params = PatchParams::apply("signet").force();
    let identities: Api<ClusterSPIFFEID> = Api::all(client.clone());
    let statics: Api<ClusterStaticEntry> = Api::all(client.clone());
    let policies_client = client.clone();
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "signet".into(),
            instance: Some(instance),
        },
    );
    while let Some(batch) = writes.recv().await {
        for write in batch {
            let (kind, name, result) = match &write {
                StatusWrite::Identity(name, status, event) => {
                    let result = apply_status(&identities, name, status, &params).await;
                    if let (Some(note), Ok(Ok(object))) = (event, &result) {
                        let event = K8sEvent {
                            type_: EventType::Warning,
                            reason: "RenderFailed".into(),
                            note: Some(note.chars().take(1000).collect()),
                            action: "Render".into(),
                            secondary: None,
                        };
                        if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await
                        {
                            debug!(%error, "could not publish event");
                        }
                    }
                    (Kind::Identity, name.clone(), result.map(|r| r.map(|_| ())))
                }
                StatusWrite::Static(name, status) => {
                    let result = apply_status(&statics, name, status, &params).await;
                    (Kind::Static, name.clone(), result.map(|r| r.map(|_| ())))
                }
                StatusWrite::Policy(namespace, name, status) => {
                    let api: Api<AuthorizationPolicy> =
                        Api::namespaced(policies_client.clone(), namespace);
                    let result = apply_status(&api, name, status, &params).await;
                    (
                        Kind::Policy,
                        format!("{namespace}/{name}"),
                        result.map(|r| r.map(|_| ())),
                    )
                }
            };
            match result {
                Ok(Ok(())) => {}
                Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
                Ok(Err(error)) => {
                    warn!(%name, %error, "status write failed; will retry");
                    let _ = failed.send((kind, name));
                }
                Err(_) => {
                    warn!(%name, "status write timed out; will retry");
                    let _ = failed.send((kind, name));
                }
            }
        }
    }
}

/// Server-side applies `status` to one resource, with a timeout.
async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    status: &serde_json::Value,
    params: &PatchParams,
) -> Result<Result<K, kube::Error>, tokio::time::error::Elapsed>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    tokio::time::timeout(
        Duration::from_secs(10),
        api.patch_status(name, params, &Patch::Apply(&patch)),
    )
    .await
}
