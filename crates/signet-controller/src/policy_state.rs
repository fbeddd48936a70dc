//! AuthorizationPolicies in the controller: compiled once per generation, their targets
//! resolved to the identities of the selected pods (so agents and proxies decide by identity
//! alone), and their status computed as values for the leader's writer. Pure, like the index.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use signet_api::{AuthorizationPolicy, AuthorizationPolicyStatus, PolicyTargets};
use signet_core::policy::{IdPattern, PolicyBinding};
use signet_spiffe::{SpiffeId, TrustDomain};

use crate::Index;
use crate::authorization::{
    CompiledPolicy, PolicyError, PolicyTarget, compile, fail_closed, policy_status,
};

#[derive(Debug)]
struct Slot {
    generation: Option<i64>,
    compiled: Result<CompiledPolicy, Vec<PolicyError>>,
    /// For an invalid enforced policy whose targets are valid: what it binds meanwhile (see
    /// [`fail_closed`]).
    fail_closed: Option<CompiledPolicy>,
    conditions: Vec<Condition>,
}

/// Every AuthorizationPolicy, by `namespace/name`.
#[derive(Debug, Default)]
pub struct PolicyState {
    policies: BTreeMap<String, Slot>,
    /// Policies or pods changed since the bindings were last taken.
    dirty: bool,
    /// Resolved selector policies by `namespace/name`; dropped when the policy changes, and
    /// resolved again only when pods of their namespace changed (one pod event must not
    /// re-resolve every policy of the cluster).
    resolved: HashMap<String, ResolvedTargets>,
    dirty_namespaces: HashSet<String>,
    all_dirty: bool,
}

/// What a policy targets right now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedTargets {
    pub patterns: Vec<IdPattern>,
    pub pods: usize,
    pub spiffe_ids: BTreeSet<SpiffeId>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn exact(id: &SpiffeId) -> Option<IdPattern> {
    // A SPIFFE ID has no `*` segment, so it parses as a pattern matching only itself.
    IdPattern::parse(id.as_str()).ok()
}

impl PolicyState {
    /// A policy was added or changed.
    pub fn apply(&mut self, resource: &AuthorizationPolicy) {
        let namespace = resource.namespace().unwrap_or_default();
        let name = resource.name_any();
        let generation = resource.metadata.generation;
        let conditions = resource
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let slot = self.policies.entry(key(&namespace, &name));
        match slot {
            std::collections::btree_map::Entry::Occupied(mut existing)
                if existing.get().generation == generation && generation.is_some() =>
            {
                // Only status or metadata changed: nothing to recompile.
                if existing.get().conditions.is_empty() {
                    existing.get_mut().conditions = conditions;
                }
            }
            entry => {
                let compiled = compile(&namespace, &name, &resource.spec);
                let fail_closed = match &compiled {
                    Ok(_) => None,
                    Err(_) => fail_closed(&namespace, &name, &resource.spec),
                };
                let slot = Slot {
                    generation,
                    compiled,
                    fail_closed,
                    conditions,
                };
                self.resolved.remove(entry.key());
                match entry {
                    std::collections::btree_map::Entry::Occupied(mut o) => {
                        o.insert(slot);
                    }
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(slot);
                    }
                }
                self.dirty = true;
            }
        }
    }

    /// A policy was deleted (`namespace/name`).
    pub fn delete(&mut self, key: &str) {
        self.resolved.remove(key);
        if self.policies.remove(key).is_some() {
            self.dirty = true;
        }
    }

    /// Every policy's `namespace/name`.
    pub fn keys(&self) -> Vec<String> {
        self.policies.keys().cloned().collect()
    }

    /// Pods of `namespace` changed (`None`: possibly any pod, e.g. a namespace or identity
    /// change): selector targets there must be resolved again.
    pub fn pods_changed(&mut self, namespace: Option<&str>) {
        if self.policies.is_empty() {
            return;
        }
        self.dirty = true;
        match namespace {
            Some(namespace) => {
                if !self.dirty_namespaces.contains(namespace) {
                    self.dirty_namespaces.insert(namespace.to_owned());
                }
            }
            None => self.all_dirty = true,
        }
    }

    /// The bindings for agents, if anything changed since the last call (or always, with
    /// `force`). An invalid enforced policy binds its fail-closed form; its status says so.
    pub fn take_bindings(&mut self, index: &Index, force: bool) -> Option<Vec<PolicyBinding>> {
        if !std::mem::take(&mut self.dirty) && !force {
            return None;
        }
        let all_dirty = std::mem::take(&mut self.all_dirty);
        let dirty_namespaces = std::mem::take(&mut self.dirty_namespaces);
        let mut bindings = Vec::with_capacity(self.policies.len());
        for (key, slot) in &self.policies {
            let Some(bound) = slot.compiled.as_ref().ok().or(slot.fail_closed.as_ref()) else {
                continue;
            };
            let targets = match &bound.target {
                PolicyTarget::SpiffeIds(patterns) => patterns.clone(),
                PolicyTarget::Pods(_) => {
                    let stale = all_dirty
                        || dirty_namespaces.contains(&bound.policy.id.namespace)
                        || !self.resolved.contains_key(key);
                    if stale {
                        self.resolved.insert(key.clone(), resolve(bound, index));
                    }
                    self.resolved
                        .get(key)
                        .map(|r| r.patterns.clone())
                        .unwrap_or_default()
                }
            };
            bindings.push(PolicyBinding {
                policy: bound.policy.clone(),
                targets,
            });
        }
        Some(bindings)
    }

    /// The status of every policy, with the conditions last written (for transition times).
    pub fn statuses(
        &self,
        index: &Index,
        known_trust_domains: &[TrustDomain],
        now: &Time,
    ) -> Vec<(String, String, AuthorizationPolicyStatus)> {
        // Pods grouped by the set of IDs they hold, once: ID-pattern policies are counted over
        // these groups (a few thousand) instead of over every pod.
        let mut groups: Option<HashMap<Vec<&SpiffeId>, usize>> = None;
        self.policies
            .iter()
            .filter_map(|(key, slot)| {
                let (namespace, name) = key.split_once('/')?;
                // What the policy binds: itself, or its fail-closed form while invalid.
                let bound = slot.compiled.as_ref().ok().or(slot.fail_closed.as_ref());
                let targets = match bound.map(|b| (&b.target, b)) {
                    None => PolicyTargets::default(),
                    Some((PolicyTarget::Pods(_), bound)) => match self.resolved.get(key) {
                        Some(resolved) => counts(resolved),
                        None => counts(&resolve(bound, index)),
                    },
                    Some((PolicyTarget::SpiffeIds(patterns), _)) => {
                        let groups = groups.get_or_insert_with(|| pod_groups(index));
                        count_patterns(patterns, groups)
                    }
                };
                let mut status = policy_status(
                    &slot.compiled,
                    known_trust_domains,
                    targets,
                    slot.generation,
                    &slot.conditions,
                    now.clone(),
                );
                if let Some(fallback) = &slot.fail_closed {
                    for condition in &mut status.conditions {
                        if condition.type_ == signet_api::status::ACCEPTED {
                            let instead = match fallback.policy.action {
                                signet_core::policy::Action::Deny => {
                                    "failing closed, every request to its targets is denied until it is fixed:"
                                }
                                _ => {
                                    "failing closed, it admits nothing (and the default policy no longer applies to its targets) until it is fixed:"
                                }
                            };
                            condition.message =
                                condition.message.replacen("not enforced:", instead, 1);
                        }
                    }
                }
                Some((namespace.to_owned(), name.to_owned(), status))
            })
            .collect()
    }

    /// Remembers the conditions written for `namespace/name`.
    pub fn written(&mut self, key: &str, conditions: Vec<Condition>) {
        if let Some(slot) = self.policies.get_mut(key) {
            slot.conditions = conditions;
        }
    }
}

fn pod_groups(index: &Index) -> HashMap<Vec<&SpiffeId>, usize> {
    let mut groups: HashMap<Vec<&SpiffeId>, usize> = HashMap::new();
    for pod in index.pod_identities(None) {
        let mut ids = pod.spiffe_ids;
        if ids.is_empty() {
            continue;
        }
        ids.sort();
        ids.dedup();
        *groups.entry(ids).or_default() += 1;
    }
    groups
}

fn count_patterns(
    patterns: &[IdPattern],
    groups: &HashMap<Vec<&SpiffeId>, usize>,
) -> PolicyTargets {
    let mut pods = 0usize;
    let mut ids: HashSet<&SpiffeId> = HashSet::new();
    for (group, count) in groups {
        let mut matched = false;
        for id in group {
            if patterns.iter().any(|p| p.matches(id)) {
                matched = true;
                ids.insert(id);
            }
        }
        if matched {
            pods += count;
        }
    }
    PolicyTargets {
        pods: i32::try_from(pods).unwrap_or(i32::MAX),
        spiffe_ids: i32::try_from(ids.len()).unwrap_or(i32::MAX),
    }
}

fn counts(resolved: &ResolvedTargets) -> PolicyTargets {
    PolicyTargets {
        pods: i32::try_from(resolved.pods).unwrap_or(i32::MAX),
        spiffe_ids: i32::try_from(resolved.spiffe_ids.len()).unwrap_or(i32::MAX),
    }
}

/// The identities a policy applies to. Selector policies resolve to the IDs of the selected
/// pods (with the pod count); ID-pattern policies keep their patterns (they may name workloads
/// outside the cluster; their counts come from [`PolicyState::statuses`]).
pub fn resolve(compiled: &CompiledPolicy, index: &Index) -> ResolvedTargets {
    let mut resolved = ResolvedTargets::default();
    match &compiled.target {
        PolicyTarget::Pods(selector) => {
            for pod in index.pod_identities(Some(&compiled.policy.id.namespace)) {
                if selector.matches(pod.labels) {
                    resolved.pods += 1;
                    resolved
                        .spiffe_ids
                        .extend(pod.spiffe_ids.into_iter().cloned());
                }
            }
            resolved.patterns = resolved.spiffe_ids.iter().filter_map(exact).collect();
        }
        PolicyTarget::SpiffeIds(patterns) => resolved.patterns = patterns.clone(),
    }
    resolved
}
