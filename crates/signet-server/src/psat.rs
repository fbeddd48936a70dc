//! `k8s_psat` node attestation (DESIGN §6): the agent presents its projected service-account
//! token; the API server vouches for it (TokenReview with our audience), the service account
//! must be allowed, the token must be bound to a pod that still exists with the same UID, and
//! that pod's node gives the agent its ID and selectors.

use std::collections::BTreeSet;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use signet_spiffe::{SpiffeId, TrustDomain};

const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
/// Longest token accepted before asking the API server.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a PSAT attestation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PsatError {
    /// The token is empty or implausibly large.
    #[error("token is malformed")]
    Malformed,
    /// The API server did not authenticate the token (bad signature, expired, wrong audience).
    #[error("token rejected by the API server: {0}")]
    NotAuthenticated(String),
    /// The API server authenticated it for other audiences than ours.
    #[error("token is not for audience {0}")]
    WrongAudience(String),
    /// The token's user is not an allowed service account.
    #[error("{0} is not an allowed agent service account")]
    ServiceAccountNotAllowed(String),
    /// The token is not bound to exactly one pod (not a projected token).
    #[error("token is not bound to a pod")]
    NotBound,
    /// The pod it is bound to is gone or was recreated.
    #[error("pod {0} no longer exists with the token's UID")]
    PodMismatch(String),
    /// The pod's node could not be identified.
    #[error("node of pod {0} is unknown")]
    NodeUnknown(String),
    /// The API server could not be asked.
    #[error("Kubernetes API: {0}")]
    Api(String),
}

impl PsatError {
    /// A metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NotAuthenticated(_) => "not_authenticated",
            Self::WrongAudience(_) => "wrong_audience",
            Self::ServiceAccountNotAllowed(_) => "sa_not_allowed",
            Self::NotBound => "not_bound",
            Self::PodMismatch(_) => "pod_mismatch",
            Self::NodeUnknown(_) => "node_unknown",
            Self::Api(_) => "api_unavailable",
        }
    }

    /// Whether the refusal is final (as opposed to the API server being unreachable).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Api(_))
    }
}

/// Configuration of PSAT attestation.
#[derive(Debug, Clone)]
pub struct PsatConfig {
    /// The server's trust domain.
    pub trust_domain: TrustDomain,
    /// The cluster name in agent IDs and selectors.
    pub cluster_name: String,
    /// The audience agent tokens must carry.
    pub audience: String,
    /// Allowed `namespace:serviceaccount` pairs.
    pub allowed_service_accounts: BTreeSet<String>,
    /// Node label keys reported as `k8s_psat:agent_node_label:<k>:<v>`.
    pub node_label_keys: BTreeSet<String>,
}

/// A successfully attested agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsatAgent {
    /// `spiffe://<td>/signet/agent/k8s/<cluster>/<node-uid>`.
    pub agent_id: SpiffeId,
    /// `k8s_psat:` node selectors.
    pub selectors: Vec<String>,
}

/// The PSAT attestor.
#[derive(Clone)]
pub struct PsatAttestor {
    config: PsatConfig,
    client: kube::Client,
}

impl std::fmt::Debug for PsatAttestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PsatAttestor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn single<'a>(
    extra: Option<&'a std::collections::BTreeMap<String, Vec<String>>>,
    key: &str,
) -> Option<&'a str> {
    match extra.and_then(|e| e.get(key)).map(Vec::as_slice) {
        Some([one]) if !one.is_empty() => Some(one.as_str()),
        _ => None,
    }
}

fn api_error(error: kube::Error) -> PsatError {
    PsatError::Api(match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    })
}

impl PsatAttestor {
    /// An attestor using `client`'s credentials (needs `tokenreviews: create`, `pods, nodes: get`).
    pub fn new(config: PsatConfig, client: kube::Client) -> Self {
        Self { config, client }
    }

    /// The agent ID for a node UID.
    pub fn agent_id(&self, node_uid: &str) -> Result<SpiffeId, PsatError> {
        signet_core::AgentId::kubernetes(
            &self.config.trust_domain,
            &self.config.cluster_name,
            node_uid,
        )
        .map(signet_core::AgentId::into_spiffe_id)
        .map_err(|e| PsatError::NodeUnknown(e.to_string()))
    }

    /// Attests an agent's token. The token itself never reaches logs or errors.
    pub async fn attest(&self, token: &str) -> Result<PsatAgent, PsatError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES || token.contains(char::is_whitespace)
        {
            return Err(PsatError::Malformed);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.config.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(api_error)?;
        let status = answer.status.unwrap_or_default();
        if let Some(error) = status.error.filter(|e| !e.is_empty()) {
            return Err(PsatError::NotAuthenticated(error));
        }
        if status.authenticated != Some(true) {
            return Err(PsatError::NotAuthenticated("not authenticated".into()));
        }
        if !status
            .audiences
            .iter()
            .flatten()
            .any(|a| *a == self.config.audience)
        {
            return Err(PsatError::WrongAudience(self.config.audience.clone()));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let Some((namespace, service_account)) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
        else {
            return Err(PsatError::ServiceAccountNotAllowed(username));
        };
        let pair = format!("{namespace}:{service_account}");
        if !self.config.allowed_service_accounts.contains(&pair) {
            return Err(PsatError::ServiceAccountNotAllowed(pair));
        }
        let extra = user.extra.as_ref();
        let (Some(pod_name), Some(pod_uid)) =
            (single(extra, EXTRA_POD_NAME), single(extra, EXTRA_POD_UID))
        else {
            return Err(PsatError::NotBound);
        };

        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod_ref = format!("{namespace}/{pod_name}");
        let pod = pods
            .get_opt(pod_name)
            .await
            .map_err(api_error)?
            .ok_or_else(|| PsatError::PodMismatch(pod_ref.clone()))?;
        if pod.metadata.uid.as_deref() != Some(pod_uid) {
            return Err(PsatError::PodMismatch(pod_ref));
        }
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| PsatError::NodeUnknown(pod_ref.clone()))?;
        if let Some(claimed) = single(extra, EXTRA_NODE_NAME)
            && claimed != node_name
        {
            return Err(PsatError::NodeUnknown(pod_ref));
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes
            .get_opt(&node_name)
            .await
            .map_err(api_error)?
            .ok_or_else(|| PsatError::NodeUnknown(pod_ref.clone()))?;
        let node_uid = node
            .metadata
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| PsatError::NodeUnknown(pod_ref.clone()))?;
        if let Some(claimed) = single(extra, EXTRA_NODE_UID)
            && claimed != node_uid
        {
            return Err(PsatError::NodeUnknown(pod_ref));
        }

        use signet_core::k8s_selectors::node as selector;
        let mut built = vec![
            selector::cluster(&self.config.cluster_name),
            selector::agent_namespace(namespace),
            selector::agent_service_account(service_account),
            selector::agent_pod_name(pod_name),
            selector::agent_pod_uid(pod_uid),
            selector::agent_node_name(&node_name),
            selector::agent_node_uid(&node_uid),
        ];
        if let Some(ip) = pod.status.as_ref().and_then(|s| s.host_ip.as_ref()) {
            built.push(selector::agent_node_ip(ip));
        }
        for (key, value) in node.metadata.labels.iter().flatten() {
            if self.config.node_label_keys.contains(key) {
                built.push(selector::agent_node_label(key, value));
            }
        }
        // Values that cannot be selectors (control characters, oversize) could never match.
        let mut selectors: Vec<String> = built
            .into_iter()
            .filter_map(Result::ok)
            .map(|s| s.to_string())
            .collect();
        selectors.sort();
        Ok(PsatAgent {
            agent_id: self.agent_id(&node_uid)?,
            selectors,
        })
    }
}
