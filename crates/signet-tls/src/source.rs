//! An SVID, bundle and policy source fed by the SPIFFE Workload API on a Unix socket: follows
//! X509-SVID rotation and bundle changes (`FetchX509SVID`) and the workload's AuthorizationPolicy
//! (`signet.authz.v1.Authorization/WatchPolicy`), reconnecting with backoff. New SVIDs and
//! bundles apply to the next handshake; live connections are never touched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use signet_core::policy::TrustContext;
use signet_proto::authz::WatchPolicyRequest;
use signet_proto::authz::authorization_client::AuthorizationClient;
use signet_proto::workload::X509svidRequest;
use signet_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use signet_spiffe::{Bundle, BundleSet, SpiffeId, TrustDomain};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::authz::{Authorizer, AuthzMetrics, EffectivePolicy};
use crate::{RotatingSvid, SharedBundles, certified_key};

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach {path}: {reason}")]
    Connect { path: String, reason: String },
    #[error("no X509-SVID from the Workload API within {0:?}: {1}")]
    NoSvid(Duration, String),
}

/// What the source follows.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The Workload API socket.
    pub socket: PathBuf,
    /// Also follow the workload's AuthorizationPolicy (Signet agents only).
    pub watch_policy: bool,
    /// How long `start` waits for the first SVID.
    pub first_svid_timeout: Duration,
    /// Counters of the authorizer.
    pub metrics: AuthzMetrics,
}

impl SourceOptions {
    /// Defaults for a socket: policy followed, 30 s for the first SVID.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            watch_policy: true,
            first_svid_timeout: Duration::from_secs(30),
            metrics: AuthzMetrics::default(),
        }
    }
}

/// The workload's current identity, trust bundles and authorizer.
#[derive(Debug)]
pub struct WorkloadSource {
    svid: Arc<RotatingSvid>,
    bundles: Arc<SharedBundles>,
    identity: watch::Receiver<Option<(SpiffeId, String)>>,
    authorizer: Arc<Authorizer>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for WorkloadSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A gRPC channel to a Unix socket (the Workload API).
pub async fn unix_channel(socket: PathBuf) -> Result<Channel, SourceError> {
    let shown = socket.display().to_string();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|e| SourceError::Connect {
            path: shown,
            reason: e.to_string(),
        })
}

fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

struct Shared {
    svid: Arc<RotatingSvid>,
    bundles: Arc<SharedBundles>,
    identity: watch::Sender<Option<(SpiffeId, String)>>,
}

impl WorkloadSource {
    /// Connects, waits for the first X509-SVID and keeps following the Workload API. Until the
    /// first policy arrives (or when `watch_policy` is off and none ever does) the authorizer
    /// denies everything.
    pub async fn start(options: SourceOptions) -> Result<Self, SourceError> {
        let channel = unix_channel(options.socket.clone()).await?;
        let shared = Arc::new(Shared {
            svid: Arc::new(RotatingSvid::new()),
            bundles: Arc::new(SharedBundles::default()),
            identity: watch::channel(None).0,
        });
        let mut identity = shared.identity.subscribe();
        let mut tasks = vec![tokio::spawn(tracing::Instrument::instrument(
            follow_svids(channel.clone(), shared.clone()),
            tracing::info_span!("task", name = "workload-api-svids"),
        ))];
        let first = tokio::time::timeout(
            options.first_svid_timeout,
            identity.wait_for(Option::is_some),
        )
        .await
        .map(|r| r.map(|id| id.clone()));
        let Ok(Ok(Some((first_id, _)))) = first else {
            for task in &tasks {
                task.abort();
            }
            return Err(SourceError::NoSvid(
                options.first_svid_timeout,
                "is there a registration entry for this workload?".to_owned(),
            ));
        };
        let trust = TrustContext {
            local: first_id.trust_domain(),
            federated: Vec::new(),
        };
        let authorizer = Arc::new(Authorizer::new(
            EffectivePolicy::deny_all(trust),
            options.metrics.clone(),
        ));
        if options.watch_policy {
            tasks.push(tokio::spawn(tracing::Instrument::instrument(
                follow_policy(channel, authorizer.clone()),
                tracing::info_span!("task", name = "workload-api-policy"),
            )));
        }
        Ok(Self {
            svid: shared.svid.clone(),
            bundles: shared.bundles.clone(),
            identity,
            authorizer,
            tasks,
        })
    }

    /// The SVID resolver (server and client roles).
    pub fn svid(&self) -> Arc<RotatingSvid> {
        self.svid.clone()
    }

    /// The trust bundles (own and federated).
    pub fn bundles(&self) -> Arc<SharedBundles> {
        self.bundles.clone()
    }

    /// The workload's SPIFFE ID and the serial of its current SVID.
    pub fn identity(&self) -> Option<(SpiffeId, String)> {
        self.identity.borrow().clone()
    }

    /// A receiver that changes on every new SVID.
    pub fn identity_changes(&self) -> watch::Receiver<Option<(SpiffeId, String)>> {
        self.identity.clone()
    }

    /// The authorizer following the workload's policy.
    pub fn authorizer(&self) -> Arc<Authorizer> {
        self.authorizer.clone()
    }
}

/// Reconnect delays to the agent: 200 ms doubling to 10 s, jittered so that every workload of a
/// node does not come back at the same instant after an agent restart.
fn agent_backoff() -> signet_core::Backoff {
    signet_core::Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
}

async fn follow_svids(channel: Channel, shared: Arc<Shared>) {
    let mut backoff = agent_backoff();
    loop {
        let mut client = SpiffeWorkloadApiClient::new(channel.clone());
        match client.fetch_x509svid(with_header(X509svidRequest {})).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            backoff.reset();
                            if let Err(error) = apply_svids(&shared, &message) {
                                warn!(%error, "unusable X509-SVID response; keeping the current SVID");
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            debug!(%status, "X509-SVID stream ended");
                            break;
                        }
                    }
                }
            }
            Err(status) => warn!(%status, "FetchX509SVID failed; retrying"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

fn apply_svids(
    shared: &Shared,
    message: &signet_proto::workload::X509svidResponse,
) -> Result<(), String> {
    let svid = message.svids.first().ok_or("no SVID in the response")?;
    let id = SpiffeId::new(&svid.spiffe_id).map_err(|e| e.to_string())?;
    let chain: Vec<CertificateDer<'static>> =
        signet_spiffe::bundle::split_der_certificates(&svid.x509_svid)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(CertificateDer::from)
            .collect();
    let leaf = chain.first().ok_or("empty certificate chain")?;
    let serial = signet_spiffe::x509::serial_of(leaf).ok_or("unreadable leaf certificate")?;
    let key = certified_key(chain, &svid.x509_svid_key).map_err(|e| e.to_string())?;
    let mut bundles = BundleSet::new();
    bundles.insert(
        Bundle::from_der_concat(id.trust_domain(), &svid.bundle).map_err(|e| e.to_string())?,
    );
    for (name, der) in &message.federated_bundles {
        let trust_domain = TrustDomain::from_name_or_id(name).map_err(|e| e.to_string())?;
        bundles.insert(Bundle::from_der_concat(trust_domain, der).map_err(|e| e.to_string())?);
    }
    shared.svid.set(key);
    shared.bundles.set(bundles);
    let changed = shared.identity.send_if_modified(|current| {
        let next = Some((id.clone(), serial.clone()));
        if *current == next {
            return false;
        }
        *current = next;
        true
    });
    if changed {
        info!(spiffe_id = %id, %serial, "X509-SVID installed");
    }
    Ok(())
}

async fn follow_policy(channel: Channel, authorizer: Arc<Authorizer>) {
    let mut backoff = agent_backoff();
    loop {
        let mut client = AuthorizationClient::new(channel.clone());
        match client
            .watch_policy(with_header(WatchPolicyRequest {}))
            .await
        {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            backoff.reset();
                            match effective_policy(&message) {
                                Ok(policy) => {
                                    info!(
                                        policies = policy.policies.len(),
                                        default = policy.default_policy.as_str(),
                                        "authorization policy updated"
                                    );
                                    authorizer.set_policy(policy);
                                }
                                Err(error) => {
                                    warn!(%error, "unusable policy from the agent; keeping the previous one")
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            debug!(%status, "policy stream ended");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                warn!(%status, "WatchPolicy failed; retrying (requests stay decided by the last policy)")
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Reads a `WatchPolicyResponse`.
pub fn effective_policy(
    message: &signet_proto::authz::WatchPolicyResponse,
) -> Result<EffectivePolicy, String> {
    let spiffe_ids = message
        .spiffe_ids
        .iter()
        .map(|id| SpiffeId::new(id).map_err(|e| format!("spiffe_ids: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let local =
        TrustDomain::new(&message.trust_domain).map_err(|e| format!("trust_domain: {e}"))?;
    let federated = message
        .federated_trust_domains
        .iter()
        .map(|td| TrustDomain::new(td).map_err(|e| format!("federated_trust_domains: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    // The same reading as the agent's sync: an unreadable DENY denies everything.
    let (set, refused) = signet_proto::policy::policy_set_from(&signet_proto::authz::PolicySet {
        default_policy: message.default_policy,
        bindings: message
            .policies
            .iter()
            .map(|policy| signet_proto::authz::PolicyBinding {
                policy: Some(policy.clone()),
                targets: message.spiffe_ids.clone(),
            })
            .collect(),
    });
    for error in refused {
        warn!(%error, "a policy from the agent could not be read");
    }
    Ok(EffectivePolicy {
        policies: set.bindings.into_iter().map(|b| b.policy).collect(),
        spiffe_ids,
        default_policy: set.default_policy,
        trust: TrustContext { local, federated },
    })
}
