//! Which Services select each pod, read from EndpointSlices, for `autoPopulateDNSNames`: a pod
//! behind Service `web` in namespace `shop` gets `web.shop.svc.<cluster domain>`, `web.shop.svc`,
//! `web.shop` and `web` as DNS names (as spire-controller-manager gives them).
//!
//! An EndpointSlice names its Service in the `kubernetes.io/service-name` label and each endpoint's
//! pod in `targetRef`. A Service's endpoints may be spread over several slices, so memberships are
//! counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::index::pod_key;

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slice {
    namespace: String,
    service: String,
    /// Names of the pods it lists.
    pods: BTreeSet<String>,
}

impl Slice {
    fn of(slice: &EndpointSlice) -> Option<Self> {
        let namespace = slice.metadata.namespace.clone()?;
        let service = slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)?
            .clone();
        // A Service name is a DNS-1035 label; anything else (a dotted name someone labelled a
        // slice with) would put names no Service has into SVIDs.
        if !is_service_name(&service) {
            return None;
        }
        let pods = slice
            .endpoints
            .iter()
            .filter_map(|endpoint| endpoint.target_ref.as_ref())
            .filter(|target| target.kind.as_deref() == Some("Pod"))
            .filter(|target| target.namespace.as_deref().is_none_or(|ns| ns == namespace))
            .filter_map(|target| target.name.clone())
            .collect();
        Some(Self {
            namespace,
            service,
            pods,
        })
    }
}

/// Whether `name` can be a Service name: 1-63 of `[a-z0-9-]`, starting with a letter, not ending
/// with `-`.
fn is_service_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Services per pod, kept from EndpointSlice events.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    slices: HashMap<String, Slice>,
    /// Pod key → Service name → number of slices listing the pod for that Service.
    by_pod: HashMap<String, BTreeMap<String, usize>>,
}

/// `namespace/name` of a slice.
pub fn slice_key(slice: &EndpointSlice) -> String {
    format!(
        "{}/{}",
        slice.metadata.namespace.as_deref().unwrap_or_default(),
        slice.metadata.name.as_deref().unwrap_or_default()
    )
}

impl ServiceIndex {
    /// A slice was added or changed; returns the keys of the pods whose Services changed.
    pub fn apply(&mut self, slice: &EndpointSlice) -> BTreeSet<String> {
        let key = slice_key(slice);
        match Slice::of(slice) {
            Some(new) => {
                if self.slices.get(&key) == Some(&new) {
                    return BTreeSet::new();
                }
                let mut affected = self.remove(&key);
                for pod in &new.pods {
                    let pod_key = pod_key(&new.namespace, pod);
                    *self
                        .by_pod
                        .entry(pod_key.clone())
                        .or_default()
                        .entry(new.service.clone())
                        .or_default() += 1;
                    affected.insert(pod_key);
                }
                self.slices.insert(key, new);
                affected
            }
            // Not (or no longer) a Service's slice.
            None => self.remove(&key),
        }
    }

    /// A slice was deleted; returns the keys of the pods whose Services changed.
    pub fn remove(&mut self, key: &str) -> BTreeSet<String> {
        let Some(old) = self.slices.remove(key) else {
            return BTreeSet::new();
        };
        let mut affected = BTreeSet::new();
        for pod in &old.pods {
            let pod_key = pod_key(&old.namespace, pod);
            if let Some(services) = self.by_pod.get_mut(&pod_key) {
                if let Some(count) = services.get_mut(&old.service) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        services.remove(&old.service);
                    }
                }
                if services.is_empty() {
                    self.by_pod.remove(&pod_key);
                }
            }
            affected.insert(pod_key);
        }
        affected
    }

    /// Forgets everything (the watch stopped); returns the pods that had Services.
    pub fn clear(&mut self) -> BTreeSet<String> {
        self.slices.clear();
        std::mem::take(&mut self.by_pod).into_keys().collect()
    }

    /// Keys of the slices held.
    pub fn keys(&self) -> Vec<String> {
        self.slices.keys().cloned().collect()
    }

    /// The DNS names of the Services selecting a pod, Services in name order.
    pub fn dns_names(&self, namespace: &str, pod: &str, cluster_domain: &str) -> Vec<String> {
        let Some(services) = self.by_pod.get(&pod_key(namespace, pod)) else {
            return Vec::new();
        };
        services
            .keys()
            .flat_map(|service| {
                [
                    format!("{service}.{namespace}.svc.{cluster_domain}"),
                    format!("{service}.{namespace}.svc"),
                    format!("{service}.{namespace}"),
                    service.clone(),
                ]
            })
            .collect()
    }
}
