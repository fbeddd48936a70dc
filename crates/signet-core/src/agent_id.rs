//! Agent SPIFFE IDs (DESIGN §4), one typed rule for every crate that builds or recognises them:
//! `spiffe://<td>/signet/agent/join/<token-id>` for join-token agents and
//! `spiffe://<td>/signet/agent/k8s/<cluster>/<node-uid>` for Kubernetes node agents. IDs are
//! compared by segments, never as string prefixes (cluster `prod` must not match `prod-2`).

use std::fmt;

use signet_spiffe::{IdError, SpiffeId, TrustDomain};

const RESERVED: [&str; 2] = ["signet", "agent"];
const JOIN: &str = "join";
const KUBERNETES: &str = "k8s";

/// How an agent attested, as its ID tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentIdKind<'a> {
    /// A join token (`/signet/agent/join/<token-id>`).
    JoinToken {
        /// The token's public id.
        token_id: &'a str,
    },
    /// A Kubernetes node (`/signet/agent/k8s/<cluster>/<node-uid>`).
    Kubernetes {
        /// The cluster name.
        cluster: &'a str,
        /// The node's UID.
        node_uid: &'a str,
    },
}

/// A SPIFFE ID under the reserved agent path in one of the known forms.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AgentId(SpiffeId);

impl AgentId {
    /// The ID of the agent that redeemed the join token with public id `token_id`.
    pub fn join_token(trust_domain: &TrustDomain, token_id: &str) -> Result<Self, IdError> {
        trust_domain
            .id_from_segments(&[RESERVED[0], RESERVED[1], JOIN, token_id])
            .map(Self)
    }

    /// The ID of the node agent of node `node_uid` in `cluster`.
    pub fn kubernetes(
        trust_domain: &TrustDomain,
        cluster: &str,
        node_uid: &str,
    ) -> Result<Self, IdError> {
        trust_domain
            .id_from_segments(&[RESERVED[0], RESERVED[1], KUBERNETES, cluster, node_uid])
            .map(Self)
    }

    /// `id` as an agent ID, if it has one of the known forms.
    pub fn parse(id: &SpiffeId) -> Option<Self> {
        let agent = Self(id.clone());
        agent.kind().is_some().then_some(agent)
    }

    /// Whether `id` lies under the reserved agent path (`/signet/agent/...`), in a known form or
    /// not: such IDs are never granted to workloads, and only agents may hold them.
    pub fn is_reserved(id: &SpiffeId) -> bool {
        let mut segments = id.segments();
        segments.next() == Some(RESERVED[0]) && segments.next() == Some(RESERVED[1])
    }

    /// How this agent attested.
    pub fn kind(&self) -> Option<AgentIdKind<'_>> {
        let segments: Vec<&str> = self.0.segments().collect();
        match segments.as_slice() {
            [a, b, JOIN, token_id] if [*a, *b] == RESERVED => {
                Some(AgentIdKind::JoinToken { token_id })
            }
            [a, b, KUBERNETES, cluster, node_uid] if [*a, *b] == RESERVED => {
                Some(AgentIdKind::Kubernetes { cluster, node_uid })
            }
            _ => None,
        }
    }

    /// Whether this is the node agent of a node of `cluster` in `trust_domain`.
    pub fn is_node_of(&self, trust_domain: &TrustDomain, cluster: &str) -> bool {
        self.0.is_member_of(trust_domain)
            && matches!(self.kind(), Some(AgentIdKind::Kubernetes { cluster: c, .. }) if c == cluster)
    }

    /// The SPIFFE ID.
    pub fn as_spiffe_id(&self) -> &SpiffeId {
        &self.0
    }

    /// The SPIFFE ID, owned.
    pub fn into_spiffe_id(self) -> SpiffeId {
        self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    #[test]
    fn builds_the_two_forms() {
        assert_eq!(
            AgentId::join_token(&td(), "abc").unwrap().to_string(),
            "spiffe://example.org/signet/agent/join/abc"
        );
        let node = AgentId::kubernetes(&td(), "prod", "uid-1").unwrap();
        assert_eq!(
            node.to_string(),
            "spiffe://example.org/signet/agent/k8s/prod/uid-1"
        );
        assert_eq!(
            node.kind(),
            Some(AgentIdKind::Kubernetes {
                cluster: "prod",
                node_uid: "uid-1"
            })
        );
        assert!(AgentId::kubernetes(&td(), "a/b", "n").is_err());
        assert!(AgentId::join_token(&td(), "..").is_err());
    }

    #[test]
    fn recognises_nodes_by_segment_never_by_prefix() {
        let node = |s: &str| AgentId::parse(&id(s));
        let prod = node("spiffe://example.org/signet/agent/k8s/prod/uid-1").unwrap();
        assert!(prod.is_node_of(&td(), "prod"));
        // Hostile look-alikes.
        assert!(
            !node("spiffe://example.org/signet/agent/k8s/prod-2/uid-1")
                .unwrap()
                .is_node_of(&td(), "prod")
        );
        assert!(!prod.is_node_of(&TrustDomain::new("example.org.evil").unwrap(), "prod"));
        assert!(
            !node("spiffe://example.org.evil/signet/agent/k8s/prod/uid-1")
                .unwrap()
                .is_node_of(&td(), "prod")
        );
        for hostile in [
            "spiffe://example.org/signet/agent/k8s/prod",
            "spiffe://example.org/signet/agent/k8s/prod/uid-1/extra",
            "spiffe://example.org/signet/agent/join",
            "spiffe://example.org/signet/agent/join/a/b",
            "spiffe://example.org/signet/agents/k8s/prod/uid-1",
            "spiffe://example.org/x/signet/agent/k8s/prod/uid-1",
            "spiffe://example.org/signet/agent/other/x",
            "spiffe://example.org/app",
        ] {
            assert_eq!(node(hostile), None, "{hostile}");
        }
    }

    #[test]
    fn the_reserved_path_covers_unknown_forms() {
        assert!(AgentId::is_reserved(&id(
            "spiffe://example.org/signet/agent/other/x"
        )));
        assert!(AgentId::is_reserved(&id(
            "spiffe://example.org/signet/agent"
        )));
        assert!(!AgentId::is_reserved(&id(
            "spiffe://example.org/signet/server"
        )));
        assert!(!AgentId::is_reserved(&id(
            "spiffe://example.org/signetagent"
        )));
    }
}
