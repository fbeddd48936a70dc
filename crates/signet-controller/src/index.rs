//! The incremental index: the current pods, namespaces, nodes and resources, each pod's rendered
//! entries, and the winning (published) entry set. Every operation recomputes only what it
//! touches — a pod change that pod, a ClusterSPIFFEID change the pods it selects before and after,
//! a namespace or node change the pods in it — and records which published entries changed, for
//! [`Index::take_changes`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use regex::Regex;
use signet_api::{ClusterSPIFFEID, ClusterStaticEntry};
use signet_core::{AgentId, EntryId, RegistrationEntry, SelectorSet};
use signet_spiffe::{SpiffeId, TrustDomain};

use crate::cluster_spiffe_id::{
    CompileError, CompiledClusterSpiffeId, PodRenderError, SourceOrder,
};
use crate::pod_context::{ClusterInfo, NodeData, PodContext, PodData};
use crate::services::ServiceIndex;
use crate::static_entry::{self, CompiledStaticEntry, StaticEntryError};

/// What the controller is configured with.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The server's trust domain.
    pub trust_domain: TrustDomain,
    /// Template values.
    pub cluster: ClusterInfo,
    /// Anchored namespace patterns whose pods get no entries.
    pub ignore_namespaces: Vec<Regex>,
    /// Only resources of this `className` are reconciled.
    pub class_name: Option<String>,
    /// Resources without a `className` are reconciled too.
    pub watch_classless: bool,
    /// X509-SVID TTL when a resource sets none.
    pub default_x509_ttl: Duration,
    /// JWT-SVID TTL when a resource sets none.
    pub default_jwt_ttl: Duration,
}

impl ControllerConfig {
    /// Defaults: ignore `kube-system` and `kube-public`, reconcile class-less resources, TTLs of
    /// DESIGN §5.
    pub fn new(trust_domain: TrustDomain, cluster_name: &str) -> Self {
        let cluster = ClusterInfo {
            trust_domain: trust_domain.to_string(),
            cluster_name: cluster_name.to_owned(),
            cluster_domain: "cluster.local".to_owned(),
        };
        Self {
            trust_domain,
            cluster,
            ignore_namespaces: anchored(&["kube-system", "kube-public"]).unwrap_or_default(),
            class_name: None,
            watch_classless: true,
            default_x509_ttl: Duration::from_secs(3600),
            default_jwt_ttl: Duration::from_secs(300),
        }
    }

    /// The agent ID of a node (DESIGN §4): `spiffe://<td>/signet/agent/k8s/<cluster>/<node-uid>`.
    pub fn agent_id(&self, node_uid: &str) -> Option<SpiffeId> {
        AgentId::kubernetes(&self.trust_domain, &self.cluster.cluster_name, node_uid)
            .ok()
            .map(AgentId::into_spiffe_id)
    }

    fn ignores(&self, namespace: &str) -> bool {
        self.ignore_namespaces.iter().any(|r| r.is_match(namespace))
    }

    fn reconciles(&self, class_name: Option<&String>) -> bool {
        match class_name {
            None => self.watch_classless,
            Some(class) => self.class_name.as_ref() == Some(class),
        }
    }
}

/// Compiles namespace patterns anchored at both ends, so `kube-system` never matches
/// `my-kube-system-tools`.
pub fn anchored(patterns: &[&str]) -> Result<Vec<Regex>, regex::Error> {
    patterns
        .iter()
        .map(|p| Regex::new(&format!("^(?:{p})$")))
        .collect()
}

/// A pod as AuthorizationPolicy targets see it.
#[derive(Debug, Clone)]
pub struct PodIdentities<'a> {
    pub namespace: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// The SPIFFE IDs of the entries the pod was given.
    pub spiffe_ids: Vec<&'a SpiffeId>,
}

/// A change to the published entry set.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryChange {
    /// Insert or replace.
    Upsert(Arc<RegistrationEntry>),
    /// Remove.
    Remove(EntryId),
}

/// The outcome of one identity for one pod.
#[derive(Debug, Clone)]
enum Outcome {
    Entry(Arc<RegistrationEntry>),
    Failed(Box<PodRenderError>),
    /// A fallback identity that does not apply because another identity gave the pod an entry.
    Shadowed,
}

/// The uniqueness key of an entry (SPIFFE ID, parent, selectors), borrowing the fields of an
/// entry instead of copying them.
#[derive(Debug, Clone)]
struct EntryKey(Arc<RegistrationEntry>);

impl EntryKey {
    fn of(entry: &Arc<RegistrationEntry>) -> Self {
        Self(entry.clone())
    }

    fn parts(&self) -> (&SpiffeId, &SpiffeId, &SelectorSet) {
        (&self.0.spiffe_id, &self.0.parent_id, &self.0.selectors)
    }
}

impl PartialEq for EntryKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for EntryKey {}

impl std::hash::Hash for EntryKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

#[derive(Debug, Clone)]
struct Claim {
    order: SourceOrder,
    entry: Arc<RegistrationEntry>,
}

/// Outcomes of one pod by identity name; a short sorted list (a pod is selected by a few
/// identities), far smaller than a map per pod.
#[derive(Debug, Default)]
struct Outcomes(Vec<(Arc<str>, Outcome)>);

impl Outcomes {
    fn get(&self, identity: &str) -> Option<&Outcome> {
        self.0
            .iter()
            .find(|(name, _)| &**name == identity)
            .map(|(_, o)| o)
    }

    fn insert(&mut self, identity: Arc<str>, outcome: Outcome) {
        self.0.push((identity, outcome));
    }
}

#[derive(Debug)]
struct PodSlot {
    pod: Arc<PodData>,
    outcomes: Outcomes,
}

#[derive(Debug)]
struct IdentitySlot {
    name: Arc<str>,
    compiled: Option<Arc<CompiledClusterSpiffeId>>,
    generation: Option<i64>,
    error: Option<CompileError>,
    selected: HashSet<Arc<str>>,
}

impl Default for IdentitySlot {
    fn default() -> Self {
        Self {
            name: Arc::from(""),
            compiled: None,
            generation: None,
            error: None,
            selected: HashSet::new(),
        }
    }
}

#[derive(Debug, Default)]
struct StaticSlot {
    compiled: Option<CompiledStaticEntry>,
    generation: Option<i64>,
    error: Option<StaticEntryError>,
}

/// The controller's state.
#[derive(Debug)]
pub struct Index {
    config: ControllerConfig,
    namespaces: HashMap<String, Option<BTreeMap<String, String>>>,
    nodes: HashMap<String, Arc<NodeData>>,
    pods: HashMap<Arc<str>, PodSlot>,
    pods_by_namespace: HashMap<String, BTreeSet<Arc<str>>>,
    pods_by_node: HashMap<String, BTreeSet<Arc<str>>>,
    identities: BTreeMap<String, IdentitySlot>,
    statics: BTreeMap<String, StaticSlot>,
    claims: HashMap<EntryKey, Vec<Claim>>,
    published: HashMap<EntryId, Arc<RegistrationEntry>>,
    /// Published state of each id touched since the last `take_changes`, as it was before.
    touched: HashMap<EntryId, Option<Arc<RegistrationEntry>>>,
    /// The Services selecting each pod (fed only while some identity has autoPopulateDNSNames).
    services: ServiceIndex,
}

/// `namespace/name` of a pod.
pub fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Index {
    /// An empty index.
    pub fn new(config: ControllerConfig) -> Self {
        Self {
            config,
            namespaces: HashMap::new(),
            nodes: HashMap::new(),
            pods: HashMap::new(),
            pods_by_namespace: HashMap::new(),
            pods_by_node: HashMap::new(),
            identities: BTreeMap::new(),
            statics: BTreeMap::new(),
            claims: HashMap::new(),
            published: HashMap::new(),
            touched: HashMap::new(),
            services: ServiceIndex::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The published entries.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<RegistrationEntry>> {
        self.published.values()
    }

    /// Number of published entries.
    pub fn len(&self) -> usize {
        self.published.len()
    }

    /// Whether nothing is published.
    pub fn is_empty(&self) -> bool {
        self.published.is_empty()
    }

    /// Changes to the published set since the last call: upserts, then removals of ids that
    /// really disappeared (an entry that moved keys is a single upsert).
    pub fn take_changes(&mut self) -> Vec<EntryChange> {
        let mut changes = Vec::new();
        for (id, before) in std::mem::take(&mut self.touched) {
            match (before, self.published.get(&id)) {
                (Some(_), None) => changes.push(EntryChange::Remove(id)),
                (None, Some(now)) => changes.push(EntryChange::Upsert(now.clone())),
                (Some(before), Some(now)) if *before != **now => {
                    changes.push(EntryChange::Upsert(now.clone()));
                }
                _ => {}
            }
        }
        // Creations before deletions: when an entry hands over to another (masking, a changed
        // key), the new one is in place before the old one goes.
        changes.sort_by(|a, b| {
            (matches!(a, EntryChange::Remove(_)), change_id(a))
                .cmp(&(matches!(b, EntryChange::Remove(_)), change_id(b)))
        });
        changes
    }

    // ---- namespaces ----

    /// A namespace was added or changed.
    pub fn apply_namespace(&mut self, namespace: &Namespace) {
        let Some(name) = namespace.metadata.name.clone() else {
            return;
        };
        let labels = namespace.metadata.labels.clone();
        if self.namespaces.get(&name) == Some(&labels) {
            return;
        }
        self.namespaces.insert(name.clone(), labels);
        self.recompute_namespace(&name);
    }

    /// A namespace was deleted.
    pub fn delete_namespace(&mut self, name: &str) {
        if self.namespaces.remove(name).is_some() {
            self.recompute_namespace(name);
        }
    }

    /// Names of the namespaces held.
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    fn recompute_namespace(&mut self, name: &str) {
        let keys = self.pods_by_namespace.get(name).cloned();
        self.recompute_pods(keys);
    }

    fn recompute_pods(&mut self, keys: Option<BTreeSet<Arc<str>>>) {
        for key in keys.into_iter().flatten() {
            self.recompute_pod(&key);
        }
    }

    // ---- services (autoPopulateDNSNames) ----

    /// Whether some identity asks for the DNS names of its pods' Services: only then are
    /// EndpointSlices worth watching.
    pub fn wants_service_names(&self) -> bool {
        self.identities
            .values()
            .filter_map(|slot| slot.compiled.as_ref())
            .any(|identity| identity.auto_populate_dns_names)
    }

    /// An EndpointSlice was added or changed.
    pub fn apply_endpoint_slice(&mut self, slice: &EndpointSlice) {
        let affected = self.services.apply(slice);
        self.recompute_service_pods(affected);
    }

    /// An EndpointSlice (`namespace/name`) was deleted.
    pub fn delete_endpoint_slice(&mut self, key: &str) {
        let affected = self.services.remove(key);
        self.recompute_service_pods(affected);
    }

    /// EndpointSlices are no longer watched: forget them.
    pub fn clear_endpoint_slices(&mut self) {
        let affected = self.services.clear();
        self.recompute_service_pods(affected);
    }

    /// Keys (`namespace/name`) of the EndpointSlices held.
    pub fn endpoint_slice_keys(&self) -> Vec<String> {
        self.services.keys()
    }

    fn recompute_service_pods(&mut self, keys: BTreeSet<String>) {
        let held: BTreeSet<Arc<str>> = keys
            .iter()
            .filter_map(|key| {
                self.pods
                    .get_key_value(key.as_str())
                    .map(|(k, _)| k.clone())
            })
            .collect();
        self.recompute_pods(Some(held));
    }

    // ---- nodes ----

    /// A node was added or changed. Status-only changes (heartbeats) recompute nothing.
    pub fn apply_node(&mut self, node: &Node) {
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        let slim = NodeData::from_node(node);
        if self.nodes.get(&name).is_some_and(|old| **old == slim) {
            return;
        }
        self.nodes.insert(name.clone(), Arc::new(slim));
        self.recompute_node(&name);
    }

    /// A node was deleted.
    pub fn delete_node(&mut self, name: &str) {
        if self.nodes.remove(name).is_some() {
            self.recompute_node(name);
        }
    }

    /// Names of the nodes held.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    fn recompute_node(&mut self, name: &str) {
        let keys = self.pods_by_node.get(name).cloned();
        self.recompute_pods(keys);
    }

    // ---- pods ----

    /// A pod was added or changed. Changes templates cannot see (status other than phase,
    /// managed fields) recompute nothing.
    pub fn apply_pod(&mut self, pod: &Pod) {
        let slim = PodData::from_pod(pod);
        let key: Arc<str> = slim.key().into();
        if let Some(slot) = self.pods.get(&*key) {
            if *slot.pod == slim {
                return;
            }
            let old = slot.pod.clone();
            self.unlink_pod(&key, &old);
        }
        self.pods_by_namespace
            .entry(slim.meta.namespace.clone())
            .or_default()
            .insert(key.clone());
        if let Some(node) = slim.node_name() {
            self.pods_by_node
                .entry(node.to_owned())
                .or_default()
                .insert(key.clone());
        }
        let outcomes = self
            .pods
            .remove(&*key)
            .map(|s| s.outcomes)
            .unwrap_or_default();
        self.pods.insert(
            key.clone(),
            PodSlot {
                pod: Arc::new(slim),
                outcomes,
            },
        );
        self.recompute_pod(&key);
    }

    /// Every pod with its namespace, labels and the SPIFFE IDs it was given (for
    /// AuthorizationPolicy targets); pods of `namespace` only when one is given.
    pub fn pod_identities(&self, namespace: Option<&str>) -> Vec<PodIdentities<'_>> {
        fn identities(slot: &PodSlot) -> PodIdentities<'_> {
            let ids: Vec<&SpiffeId> = slot
                .outcomes
                .0
                .iter()
                .filter_map(|(_, outcome)| match outcome {
                    Outcome::Entry(entry) => Some(&entry.spiffe_id),
                    Outcome::Failed(_) | Outcome::Shadowed => None,
                })
                .collect();
            PodIdentities {
                namespace: slot.pod.meta.namespace.as_str(),
                labels: slot.pod.meta.labels.as_ref(),
                spiffe_ids: ids,
            }
        }
        match namespace {
            Some(namespace) => self
                .pods_by_namespace
                .get(namespace)
                .into_iter()
                .flatten()
                .filter_map(|key| self.pods.get(key))
                .map(identities)
                .collect(),
            None => self.pods.values().map(identities).collect(),
        }
    }

    /// A pod was deleted.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        let key = pod_key(namespace, name);
        let Some(slot) = self.pods.get(key.as_str()) else {
            return;
        };
        let pod = slot.pod.clone();
        self.unlink_pod(&key, &pod);
        if let Some(slot) = self.pods.remove(key.as_str()) {
            self.release(&key, slot.outcomes);
        }
    }

    /// Keys (`namespace/name`) of the pods held.
    pub fn pod_keys(&self) -> Vec<String> {
        self.pods.keys().map(|k| k.to_string()).collect()
    }

    fn unlink_pod(&mut self, key: &str, pod: &PodData) {
        let namespace = pod.meta.namespace.as_str();
        if let Some(set) = self.pods_by_namespace.get_mut(namespace) {
            set.remove(key);
            if set.is_empty() {
                self.pods_by_namespace.remove(namespace);
            }
        }
        if let Some(node) = pod.node_name()
            && let Some(set) = self.pods_by_node.get_mut(node)
        {
            set.remove(key);
            if set.is_empty() {
                self.pods_by_node.remove(node);
            }
        }
    }

    /// Drops a pod's claims and selection records.
    fn release(&mut self, key: &str, outcomes: Outcomes) {
        for (identity, outcome) in outcomes.0 {
            if let Some(slot) = self.identities.get_mut(&*identity) {
                slot.selected.remove(key);
            }
            if let Outcome::Entry(entry) = outcome {
                self.unclaim(&entry);
            }
        }
    }

    /// Which identities select the pod, rendered. Empty for pods that cannot have entries
    /// (unscheduled, terminal, node unknown, ignored namespace).
    fn outcomes_for(&self, pod: &PodData) -> Outcomes {
        let mut outcomes = Outcomes::default();
        let namespace = pod.meta.namespace.as_str();
        if pod.is_terminal() || self.config.ignores(namespace) {
            return outcomes;
        }
        let Some(node) = pod.node_name().and_then(|n| self.nodes.get(n)) else {
            return outcomes;
        };
        let Some(parent) = Some(node.meta.uid.as_str())
            .filter(|uid| !uid.is_empty())
            .and_then(|uid| self.config.agent_id(uid))
        else {
            return outcomes;
        };
        let namespace_labels = self.namespaces.get(namespace).and_then(Option::as_ref);
        let context = PodContext {
            cluster: &self.config.cluster,
            pod,
            node: Some(node),
        };
        let defaults = (self.config.default_x509_ttl, self.config.default_jwt_ttl);
        let mut covered = false;
        // Non-fallback identities first, so fallback ones know whether the pod is covered.
        for fallback_pass in [false, true] {
            for slot in self.identities.values() {
                let Some(identity) = slot.compiled.as_ref() else {
                    continue;
                };
                if identity.fallback != fallback_pass
                    || !identity.namespace_selector.matches(namespace_labels)
                    || !identity.pod_selector.matches(pod.meta.labels.as_ref())
                {
                    continue;
                }
                let outcome = if fallback_pass && covered {
                    Outcome::Shadowed
                } else {
                    let service_names = if identity.auto_populate_dns_names {
                        self.services.dns_names(
                            namespace,
                            &pod.meta.name,
                            &self.config.cluster.cluster_domain,
                        )
                    } else {
                        Vec::new()
                    };
                    match identity.render(
                        &context,
                        &parent,
                        &self.config.trust_domain,
                        defaults,
                        &service_names,
                    ) {
                        Ok(entry) => Outcome::Entry(Arc::new(entry)),
                        Err(error) => Outcome::Failed(Box::new(error)),
                    }
                };
                if !fallback_pass && matches!(outcome, Outcome::Entry(_)) {
                    covered = true;
                }
                outcomes.insert(slot.name.clone(), outcome);
            }
        }
        outcomes
    }

    fn recompute_pod(&mut self, key: &str) {
        let Some((key, slot)) = self.pods.get_key_value(key) else {
            return;
        };
        let key = key.clone();
        let pod = slot.pod.clone();
        let mut outcomes = self.outcomes_for(&pod);
        let old = self
            .pods
            .get_mut(&*key)
            .map(|s| std::mem::take(&mut s.outcomes))
            .unwrap_or_default();
        // Claim the new entries before releasing the old ones, so an entry that changes keeps
        // being served.
        for (identity, outcome) in &mut outcomes.0 {
            if let Some(slot) = self.identities.get_mut(&**identity) {
                slot.selected.insert(key.clone());
            }
            if let Outcome::Entry(entry) = outcome {
                // Unchanged entries keep their Arc so nothing downstream sees a change.
                if let Some(Outcome::Entry(previous)) = old.get(identity)
                    && **previous == **entry
                {
                    *entry = previous.clone();
                    continue;
                }
                let order = self
                    .identities
                    .get(&**identity)
                    .and_then(|s| s.compiled.as_ref())
                    .map(|c| c.order.clone())
                    .unwrap_or_default();
                self.claim(order, entry.clone());
            }
        }
        for (identity, outcome) in old.0 {
            match outcomes.get(&identity) {
                None => {
                    if let Some(slot) = self.identities.get_mut(&*identity) {
                        slot.selected.remove(&*key);
                    }
                }
                Some(Outcome::Entry(now)) => {
                    if let Outcome::Entry(before) = &outcome
                        && Arc::ptr_eq(before, now)
                    {
                        continue;
                    }
                }
                Some(_) => {}
            }
            if let Outcome::Entry(entry) = outcome {
                self.unclaim(&entry);
            }
        }
        if let Some(slot) = self.pods.get_mut(&*key) {
            slot.outcomes = outcomes;
        }
    }

    // ---- identities ----

    /// A ClusterSPIFFEID was added or changed. An invalid new version is reported and the last
    /// valid one keeps being served, so a typo never removes identities.
    pub fn apply_identity(&mut self, resource: &ClusterSPIFFEID) {
        let Some(name) = resource.metadata.name.clone() else {
            return;
        };
        if !self.config.reconciles(resource.spec.class_name.as_ref()) {
            self.delete_identity(&name);
            return;
        }
        let compiled = CompiledClusterSpiffeId::compile(resource);
        let slot = self
            .identities
            .entry(name.clone())
            .or_insert_with(|| IdentitySlot {
                name: name.as_str().into(),
                ..IdentitySlot::default()
            });
        slot.generation = resource.metadata.generation;
        let compiled = match compiled {
            Err(error) => {
                slot.error = Some(error);
                return;
            }
            Ok(compiled) => compiled,
        };
        slot.error = None;
        if slot
            .compiled
            .as_ref()
            .is_some_and(|old| old.same_output(&compiled))
        {
            slot.compiled = Some(Arc::new(compiled));
            return;
        }
        let mut affected: BTreeSet<Arc<str>> = slot.selected.iter().cloned().collect();
        let namespaces = &self.namespaces;
        affected.extend(
            self.pods
                .iter()
                .filter(|(_, s)| {
                    compiled.namespace_selector.matches(
                        namespaces
                            .get(&s.pod.meta.namespace)
                            .and_then(Option::as_ref),
                    ) && compiled.pod_selector.matches(s.pod.meta.labels.as_ref())
                })
                .map(|(k, _)| k.clone()),
        );
        if let Some(slot) = self.identities.get_mut(&name) {
            slot.compiled = Some(Arc::new(compiled));
        }
        for key in affected {
            self.recompute_pod(&key);
        }
    }

    /// A ClusterSPIFFEID was deleted.
    pub fn delete_identity(&mut self, name: &str) {
        let Some(slot) = self.identities.remove(name) else {
            return;
        };
        for key in slot.selected {
            self.recompute_pod(&key);
        }
    }

    /// Names of the ClusterSPIFFEIDs held.
    pub fn identity_names(&self) -> Vec<String> {
        self.identities.keys().cloned().collect()
    }

    // ---- static entries ----

    /// A ClusterStaticEntry was added or changed; an invalid version keeps the last valid one.
    pub fn apply_static(&mut self, resource: &ClusterStaticEntry) {
        let Some(name) = resource.metadata.name.clone() else {
            return;
        };
        if !self.config.reconciles(resource.spec.class_name.as_ref()) {
            self.delete_static(&name);
            return;
        }
        let defaults = (self.config.default_x509_ttl, self.config.default_jwt_ttl);
        let compiled = static_entry::compile(resource, &self.config.trust_domain, defaults);
        let slot = self.statics.entry(name).or_default();
        slot.generation = resource.metadata.generation;
        match compiled {
            Err(error) => slot.error = Some(error),
            Ok(compiled) => {
                slot.error = None;
                if let Some(current) = slot.compiled.as_mut()
                    && current.entry == compiled.entry
                    && current.order == compiled.order
                {
                    current.generation = compiled.generation;
                    return;
                }
                let old = slot.compiled.replace(compiled.clone());
                self.claim(compiled.order, Arc::new(compiled.entry));
                if let Some(old) = old {
                    self.unclaim_static(&old.entry);
                }
            }
        }
    }

    /// A ClusterStaticEntry was deleted.
    pub fn delete_static(&mut self, name: &str) {
        if let Some(slot) = self.statics.remove(name)
            && let Some(compiled) = slot.compiled
        {
            self.unclaim_static(&compiled.entry);
        }
    }

    /// Static entries are not held as `Arc`s by their slot: find the claim by id and content.
    fn unclaim_static(&mut self, entry: &RegistrationEntry) {
        let claimed = self
            .claims
            .get(&EntryKey::of(&Arc::new(entry.clone())))
            .and_then(|list| list.iter().find(|c| *c.entry == *entry))
            .map(|c| c.entry.clone());
        if let Some(claimed) = claimed {
            self.unclaim(&claimed);
        }
    }

    /// Names of the ClusterStaticEntries held.
    pub fn static_names(&self) -> Vec<String> {
        self.statics.keys().cloned().collect()
    }

    // ---- claims and masking ----

    fn winner(claims: &[Claim]) -> Option<&Arc<RegistrationEntry>> {
        claims
            .iter()
            .min_by(|a, b| (&a.order, &a.entry.id).cmp(&(&b.order, &b.entry.id)))
            .map(|c| &c.entry)
    }

    fn claim(&mut self, order: SourceOrder, entry: Arc<RegistrationEntry>) {
        let key = EntryKey::of(&entry);
        let list = self.claims.entry(key.clone()).or_default();
        let before = Self::winner(list).cloned();
        list.retain(|c| c.entry.id != entry.id);
        list.push(Claim { order, entry });
        let after = Self::winner(list).cloned();
        self.switch(before, after);
    }

    fn unclaim(&mut self, entry: &Arc<RegistrationEntry>) {
        let key = EntryKey::of(entry);
        let Some(list) = self.claims.get_mut(&key) else {
            return;
        };
        let before = Self::winner(list).cloned();
        // Only this very claim: a newer entry with the same id may already have replaced it.
        list.retain(|c| !Arc::ptr_eq(&c.entry, entry));
        let after = Self::winner(list).cloned();
        if list.is_empty() {
            self.claims.remove(&key);
        }
        self.switch(before, after);
    }

    fn switch(
        &mut self,
        before: Option<Arc<RegistrationEntry>>,
        after: Option<Arc<RegistrationEntry>>,
    ) {
        if let (Some(b), Some(a)) = (&before, &after)
            && Arc::ptr_eq(b, a)
        {
            return;
        }
        if let Some(old) = before
            && self
                .published
                .get(&old.id)
                .is_some_and(|p| Arc::ptr_eq(p, &old))
        {
            self.touch(&old.id);
            self.published.remove(&old.id);
        }
        if let Some(new) = after {
            self.touch(&new.id);
            self.published.insert(new.id.clone(), new);
        }
    }

    fn touch(&mut self, id: &EntryId) {
        if !self.touched.contains_key(id) {
            let before = self.published.get(id).cloned();
            self.touched.insert(id.clone(), before);
        }
    }

    fn is_published(&self, entry: &Arc<RegistrationEntry>) -> bool {
        self.published
            .get(&entry.id)
            .is_some_and(|p| Arc::ptr_eq(p, entry))
    }
}

fn change_id(change: &EntryChange) -> &EntryId {
    match change {
        EntryChange::Upsert(entry) => &entry.id,
        EntryChange::Remove(id) => id,
    }
}

/// Figures for one ClusterSPIFFEID's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityReport {
    /// Generation last seen.
    pub generation: Option<i64>,
    /// Why the current generation is unusable.
    pub error: Option<CompileError>,
    /// Whether an older valid generation is still served.
    pub serving_previous: bool,
    /// Counters.
    pub stats: signet_api::ClusterSPIFFEIDStats,
    /// Up to a few render failures, for the condition message and Events.
    pub failures: Vec<(String, String)>,
}

/// Figures for one ClusterStaticEntry's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticReport {
    /// Generation last seen.
    pub generation: Option<i64>,
    /// Why the current generation is unusable.
    pub error: Option<StaticEntryError>,
    /// Whether its entry is published.
    pub served: bool,
    /// Whether an older resource declares the same entry.
    pub masked: bool,
}

const MAX_REPORTED_FAILURES: usize = 5;

impl Index {
    /// The figures of one ClusterSPIFFEID (`None` when it is not held).
    pub fn identity_report(&self, name: &str) -> Option<IdentityReport> {
        let slot = self.identities.get(name)?;
        let mut report = IdentityReport {
            generation: slot.generation,
            error: slot.error.clone(),
            serving_previous: slot.error.is_some() && slot.compiled.is_some(),
            ..IdentityReport::default()
        };
        if let Some(identity) = &slot.compiled {
            for (namespace, labels) in &self.namespaces {
                if identity.namespace_selector.matches(labels.as_ref()) {
                    if self.config.ignores(namespace) {
                        report.stats.namespaces_ignored += 1;
                    } else {
                        report.stats.namespaces_selected += 1;
                    }
                }
            }
        }
        let mut keys: Vec<&Arc<str>> = slot.selected.iter().collect();
        keys.sort();
        for key in keys {
            report.stats.pods_selected += 1;
            match self.pods.get(&**key).and_then(|p| p.outcomes.get(name)) {
                Some(Outcome::Entry(entry)) if self.is_published(entry) => {
                    report.stats.entries_to_set += 1;
                }
                Some(Outcome::Entry(_)) => report.stats.entries_masked += 1,
                Some(Outcome::Failed(error)) => {
                    report.stats.pod_entry_render_failures += 1;
                    if report.failures.len() < MAX_REPORTED_FAILURES {
                        report.failures.push((key.to_string(), error.to_string()));
                    }
                }
                Some(Outcome::Shadowed) | None => {}
            }
        }
        Some(report)
    }

    /// The figures of one ClusterStaticEntry (`None` when it is not held).
    pub fn static_report(&self, name: &str) -> Option<StaticReport> {
        let slot = self.statics.get(name)?;
        let (served, masked) = match &slot.compiled {
            None => (false, false),
            Some(compiled) => {
                let served = self
                    .published
                    .get(&compiled.entry.id)
                    .is_some_and(|p| **p == compiled.entry);
                (served, !served)
            }
        };
        Some(StaticReport {
            generation: slot.generation,
            error: slot.error.clone(),
            served,
            masked,
        })
    }
}
