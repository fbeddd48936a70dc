//! `ClusterFederatedTrustDomain` in Kubernetes mode: every replica follows the resources and
//! fetches the federated bundles itself (no coordination needed to trust), the leader writes their
//! status, and the bundles are kept in a ConfigMap so that a restart while a peer is down keeps
//! trust in it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::events::{Event as K8sEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use signet_api::{BundleEndpointProfileType, ClusterFederatedTrustDomain};
use signet_core::federation::{BundleEndpointUrl, EndpointProfile, FederationRelationship};
use signet_spiffe::{Bundle, SpiffeId, TrustDomain};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::federation::{Federation, RelationshipView};

/// Field manager of the status writer.
const FIELD_MANAGER: &str = "signet-federation";
/// How often the leader refreshes the resources' status.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// A resource's spec as a relationship and the bundle to start from.
pub(crate) fn relationship_of(
    local: &TrustDomain,
    resource: &ClusterFederatedTrustDomain,
) -> Result<(FederationRelationship, Option<Bundle>), String> {
    let spec = &resource.spec;
    let trust_domain =
        TrustDomain::new(&spec.trust_domain).map_err(|e| format!("trustDomain: {e}"))?;
    let url = BundleEndpointUrl::parse(&spec.bundle_endpoint_url)
        .map_err(|e| format!("bundleEndpointURL: {e}"))?;
    let profile = match (
        spec.bundle_endpoint_profile.type_,
        &spec.bundle_endpoint_profile.endpoint_spiffe_id,
    ) {
        (BundleEndpointProfileType::HttpsWeb, None) => EndpointProfile::HttpsWeb,
        (BundleEndpointProfileType::HttpsSpiffe, Some(id)) => EndpointProfile::HttpsSpiffe {
            endpoint_spiffe_id: SpiffeId::new(id)
                .map_err(|e| format!("bundleEndpointProfile.endpointSPIFFEID: {e}"))?,
        },
        (BundleEndpointProfileType::HttpsWeb, Some(_)) => {
            return Err("bundleEndpointProfile.endpointSPIFFEID is for https_spiffe only".into());
        }
        (BundleEndpointProfileType::HttpsSpiffe, None) => {
            return Err(
                "bundleEndpointProfile.endpointSPIFFEID is required for https_spiffe".into(),
            );
        }
    };
    let bootstrap = spec
        .trust_domain_bundle
        .as_deref()
        .map(|json| Bundle::from_spiffe_json(trust_domain.clone(), json.as_bytes()))
        .transpose()
        .map_err(|e| format!("trustDomainBundle: {e}"))?;
    let relationship = FederationRelationship::new(local, trust_domain, url, profile)
        .map_err(|e| e.to_string())?;
    Ok((relationship, bootstrap))
}

/// The `Ready` condition of a relationship's state.
pub(crate) fn ready_condition(
    view: Option<&RelationshipView>,
    generation: Option<i64>,
    invalid: Option<&str>,
) -> Condition {
    let (status, reason, message) = match (invalid, view) {
        (Some(error), _) => ("False", "InvalidSpec".to_owned(), error.to_owned()),
        (None, None) => ("False", "Pending".to_owned(), "not followed yet".to_owned()),
        (None, Some(view)) => match (&view.status.last_error, view.status.last_success) {
            (Some((reason, message)), _) => {
                let held = if view.bundle.is_some() {
                    " (the last good bundle is still trusted)"
                } else {
                    ""
                };
                ("False", reason.clone(), format!("{message}{held}"))
            }
            (None, Some(_)) => (
                "True",
                "BundleFetched".to_owned(),
                "the bundle is current".to_owned(),
            ),
            (None, None) => (
                "False",
                "Pending".to_owned(),
                "the first fetch is under way".to_owned(),
            ),
        },
    };
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

fn time_of(at: SystemTime) -> Option<Time> {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).ok()?)
        .ok()
        .map(Time)
}

/// Follows the resources into `federation`; the leader writes status and keeps the bundle
/// ConfigMap. Returns the tasks.
pub(crate) async fn spawn(
    client: kube::Client,
    namespace: &str,
    bundles_configmap: String,
    class_name: Option<String>,
    replica_name: String,
    federation: Arc<Federation>,
    leader: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    seed_from_configmap(&configmaps, &bundles_configmap, &federation).await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "signet".into(),
            instance: Some(replica_name),
        },
    );
    let resources: Api<ClusterFederatedTrustDomain> = Api::all(client);
    let invalid = Arc::new(parking_lot::Mutex::new(BTreeMap::<String, String>::new()));
    vec![
        signet_unix::spawn_named(
            "cftd-watch",
            follow(
                resources.clone(),
                class_name,
                federation.clone(),
                invalid.clone(),
            ),
        ),
        signet_unix::spawn_named(
            "cftd-status",
            write_status(
                resources,
                recorder,
                federation.clone(),
                invalid,
                leader.clone(),
            ),
        ),
        signet_unix::spawn_named(
            "federated-bundles-configmap",
            keep_configmap(configmaps, bundles_configmap, federation, leader),
        ),
    ]
}

/// The bundles kept by the last leader, trusted until the first fetch replaces them.
async fn seed_from_configmap(api: &Api<ConfigMap>, name: &str, federation: &Federation) {
    match api.get_opt(name).await {
        Ok(Some(configmap)) => {
            let mut seeded = 0;
            for (key, json) in configmap.data.unwrap_or_default() {
                match TrustDomain::new(&key)
                    .map_err(|e| e.to_string())
                    .and_then(|td| {
                        Bundle::from_spiffe_json(td, json.as_bytes()).map_err(|e| e.to_string())
                    }) {
                    Ok(bundle) => {
                        federation.seed(bundle);
                        seeded += 1;
                    }
                    Err(error) => {
                        warn!(key, %error, "a kept federated bundle is unreadable; skipped")
                    }
                }
            }
            info!(
                configmap = name,
                bundles = seeded,
                "federated bundles restored"
            );
        }
        Ok(None) => {}
        Err(error) => {
            warn!(%error, configmap = name, "kept federated bundles could not be read; starting without them")
        }
    }
}

async fn follow(
    api: Api<ClusterFederatedTrustDomain>,
    class_name: Option<String>,
    federation: Arc<Federation>,
    invalid: Arc<parking_lot::Mutex<BTreeMap<String, String>>>,
) {
    let ours = |resource: &ClusterFederatedTrustDomain| {
        resource.spec.class_name.is_none() || resource.spec.class_name == class_name
    };
    // name → trust domain followed for it
    let mut followed: BTreeMap<String, TrustDomain> = BTreeMap::new();
    // name → the spec last applied
    let mut applied: BTreeMap<String, signet_api::ClusterFederatedTrustDomainSpec> =
        BTreeMap::new();
    let mut listing: Option<BTreeMap<String, TrustDomain>> = None;
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let resource = match event {
            Ok(Event::Init) => {
                listing = Some(BTreeMap::new());
                continue;
            }
            Ok(Event::InitApply(resource) | Event::Apply(resource)) => resource,
            Ok(Event::InitDone) => {
                // What vanished while no watch saw it.
                let seen = listing.take().unwrap_or_default();
                for (name, trust_domain) in std::mem::take(&mut followed) {
                    if !seen.contains_key(&name) {
                        applied.remove(&name);
                        end(&federation, &trust_domain).await;
                    }
                }
                followed = seen;
                federation.forget_unrelated();
                continue;
            }
            Ok(Event::Delete(resource)) => {
                let name = resource.metadata.name.clone().unwrap_or_default();
                invalid.lock().remove(&name);
                applied.remove(&name);
                if let Some(trust_domain) = followed.remove(&name) {
                    end(&federation, &trust_domain).await;
                }
                continue;
            }
            Err(error) => {
                warn!(%error, "watching ClusterFederatedTrustDomains failed; retrying");
                continue;
            }
        };
        let name = resource.metadata.name.clone().unwrap_or_default();
        if !ours(&resource) {
            continue;
        }
        match relationship_of(federation.local(), &resource) {
            Ok((relationship, bootstrap)) => {
                invalid.lock().remove(&name);
                // Status writes and unrelated edits come back as events: only a changed spec
                // (or a relationship this replica lost) restarts fetching.
                let unchanged = applied.get(&name) == Some(&resource.spec)
                    && federation
                        .get(&relationship.trust_domain)
                        .is_some_and(|view| view.relationship == relationship);
                let trust_domain = relationship.trust_domain.clone();
                if let Some(previous) = followed.get(&name)
                    && previous != &trust_domain
                {
                    end(&federation, previous).await;
                }
                // The spec's bundle is where trust starts; once a bundle is held (fetched since,
                // or kept from an earlier run), a possibly older spec bundle does not replace it.
                let bootstrap =
                    bootstrap.filter(|_| federation.bundles().get(&trust_domain).is_none());
                if !unchanged {
                    match federation.set(relationship, bootstrap).await {
                        Ok(()) => {
                            applied.insert(name.clone(), resource.spec.clone());
                        }
                        Err(error) => {
                            warn!(resource = name, %error, "federation relationship not applied");
                        }
                    }
                }
                if let Some(listing) = listing.as_mut() {
                    listing.insert(name.clone(), trust_domain.clone());
                }
                followed.insert(name, trust_domain);
            }
            Err(error) => {
                warn!(resource = name, %error, "ClusterFederatedTrustDomain is invalid");
                invalid.lock().insert(name, error);
            }
        }
    }
}

async fn end(federation: &Federation, trust_domain: &TrustDomain) {
    if let Err(error) = federation.remove(trust_domain).await {
        warn!(%trust_domain, %error, "ending a federation relationship failed");
    }
}

/// The leader keeps each resource's status current (written only when it changed).
async fn write_status(
    api: Api<ClusterFederatedTrustDomain>,
    recorder: Recorder,
    federation: Arc<Federation>,
    invalid: Arc<parking_lot::Mutex<BTreeMap<String, String>>>,
    leader: watch::Receiver<bool>,
) {
    let mut written: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    // The Ready reason last reported per resource: an Event marks every change of it.
    let mut reasons: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::time::sleep(STATUS_EVERY).await;
        if !*leader.borrow() {
            written.clear();
            continue;
        }
        let resources = match api.list(&Default::default()).await {
            Ok(list) => list.items,
            Err(error) => {
                warn!(%error, "listing ClusterFederatedTrustDomains for status failed");
                continue;
            }
        };
        for resource in resources {
            let name = resource.metadata.name.clone().unwrap_or_default();
            let problem = invalid.lock().get(&name).cloned();
            let view = TrustDomain::new(&resource.spec.trust_domain)
                .ok()
                .and_then(|td| federation.get(&td));
            let condition = ready_condition(
                view.as_ref(),
                resource.metadata.generation,
                problem.as_deref(),
            );
            let status = json!({
                "observedGeneration": resource.metadata.generation,
                "conditions": [condition],
                "lastRefresh": view.as_ref().and_then(|v| v.status.last_success).and_then(time_of),
                "sequence": view.as_ref().and_then(|v| v.bundle.as_ref()).and_then(Bundle::sequence),
            });
            // The transition time is not part of "changed".
            let mut comparable = status.clone();
            comparable["conditions"][0]["lastTransitionTime"] = serde_json::Value::Null;
            if written.get(&name) == Some(&comparable) {
                continue;
            }
            let patch = json!({
                "apiVersion": "signet.dev/v1alpha1",
                "kind": "ClusterFederatedTrustDomain",
                "status": status,
            });
            let reason = condition.reason.clone();
            let note = condition.message.clone();
            let healthy = condition.status == "True";
            match api
                .patch_status(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(object) => {
                    if reasons.get(&name) != Some(&reason) {
                        let event = K8sEvent {
                            type_: if healthy {
                                EventType::Normal
                            } else {
                                EventType::Warning
                            },
                            reason: reason.clone(),
                            note: Some(note.chars().take(1000).collect()),
                            action: "FetchBundle".into(),
                            secondary: None,
                        };
                        if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await
                        {
                            tracing::debug!(%error, "could not publish a ClusterFederatedTrustDomain event");
                        }
                        reasons.insert(name.clone(), reason);
                    }
                    written.insert(name, comparable);
                }
                Err(error) => {
                    warn!(resource = name, %error, "writing ClusterFederatedTrustDomain status failed")
                }
            }
        }
    }
}

/// The leader keeps the federated bundles in a ConfigMap (one key per trust domain).
async fn keep_configmap(
    api: Api<ConfigMap>,
    name: String,
    federation: Arc<Federation>,
    mut leader: watch::Receiver<bool>,
) {
    let mut bundles = federation.subscribe();
    let mut pending = true;
    loop {
        if pending && *leader.borrow_and_update() {
            let current = federation.bundles();
            let data: BTreeMap<String, String> = current
                .iter()
                .map(|b| (b.trust_domain().to_string(), b.to_spiffe_json()))
                .collect();
            // Replace, not merge: a relationship that ended takes its bundle along.
            let configmap = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "signet"}},
                "data": data,
            });
            match api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&configmap),
                )
                .await
            {
                Ok(_) => pending = false,
                Err(error) => {
                    warn!(%error, configmap = name, "keeping the federated bundles failed; retrying")
                }
            }
        }
        tokio::select! {
            changed = bundles.changed() => { if changed.is_err() { break } pending = true; }
            changed = leader.changed() => { if changed.is_err() { break } pending = true; }
            () = tokio::time::sleep(Duration::from_secs(if pending { 2 } else { 300 })) => {}
        }
    }
}
