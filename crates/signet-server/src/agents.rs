//! Attested agents as the request path sees them: an in-memory view of the datastore's agent
//! table, with a signal when an agent is evicted or banned so its streams end at once.

use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use signet_spiffe::SpiffeId;
use tokio::sync::watch;

use crate::datastore::AgentRecord;

/// Why an agent is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentRefusal {
    /// Never attested, or evicted: it must attest again.
    Unknown,
    /// Banned by an operator.
    Banned,
}

/// Agents known to the server.
#[derive(Debug)]
pub struct AgentRegistry {
    agents: RwLock<HashMap<SpiffeId, bool>>,
    changed: watch::Sender<u64>,
    /// In Kubernetes mode agents may talk to any replica: an agent whose SVID (already verified
    /// by TLS) names a node agent of this trust domain and cluster is accepted even if this
    /// replica did not attest it. Bans still apply.
    trusted_cluster: Option<(signet_spiffe::TrustDomain, String)>,
    /// Bans and evictions every replica shares (Kubernetes mode: from the cluster).
    shared: RwLock<SharedAgentState>,
}

/// Bans and evictions kept outside this replica (Kubernetes mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedAgentState {
    /// Agents refused until unbanned.
    pub banned: HashSet<SpiffeId>,
    /// Agents whose SVIDs issued up to this time are refused: they must attest again.
    pub evicted: HashMap<SpiffeId, SystemTime>,
}

impl AgentRegistry {
    /// A registry holding `records`.
    pub fn new(records: &[AgentRecord]) -> Self {
        let agents = records
            .iter()
            .map(|r| (r.spiffe_id.clone(), r.banned))
            .collect();
        Self {
            agents: RwLock::new(agents),
            changed: watch::channel(0).0,
            trusted_cluster: None,
            shared: RwLock::default(),
        }
    }

    /// Accepts node agents of `cluster` (`spiffe://<td>/signet/agent/k8s/<cluster>/<node-uid>`)
    /// with a valid SVID without a local attestation record.
    pub fn with_trusted_cluster(
        mut self,
        trust_domain: signet_spiffe::TrustDomain,
        cluster: String,
    ) -> Self {
        self.trusted_cluster = Some((trust_domain, cluster));
        self
    }

    /// Whether `id` may use the agent API.
    pub fn check(&self, id: &SpiffeId) -> Result<(), AgentRefusal> {
        self.check_svid(id, None)
    }

    /// Whether `id`, holding an SVID issued at `issued` (when known), may use the agent API: an
    /// eviction refuses every SVID issued up to it, so the agent must attest again.
    pub fn check_svid(
        &self,
        id: &SpiffeId,
        issued: Option<SystemTime>,
    ) -> Result<(), AgentRefusal> {
        {
            let shared = self.shared.read();
            if shared.banned.contains(id) {
                return Err(AgentRefusal::Banned);
            }
            if let Some(at) = shared.evicted.get(id)
                && issued.is_none_or(|issued| issued <= *at)
            {
                return Err(AgentRefusal::Unknown);
            }
        }
        let known = self.agents.read().get(id).copied();
        match known {
            None if self.trusted_cluster.as_ref().is_some_and(|(td, cluster)| {
                signet_core::AgentId::parse(id).is_some_and(|a| a.is_node_of(td, cluster))
            }) =>
            {
                Ok(())
            }
            None => Err(AgentRefusal::Unknown),
            Some(true) => Err(AgentRefusal::Banned),
            Some(false) => Ok(()),
        }
    }

    /// Whether `id` is banned.
    pub fn is_banned(&self, id: &SpiffeId) -> bool {
        self.check(id) == Err(AgentRefusal::Banned)
    }

    /// Records a (re-)attested agent.
    pub fn attested(&self, id: SpiffeId) {
        let mut agents = self.agents.write();
        let banned = agents.get(&id).copied().unwrap_or(false);
        agents.insert(id, banned);
    }

    /// Replaces every agent with what the shared database holds (another server attested,
    /// banned or evicted one); streams of agents now refused end.
    pub fn reload(&self, records: &[AgentRecord]) {
        let next: std::collections::HashMap<SpiffeId, bool> = records
            .iter()
            .map(|r| (r.spiffe_id.clone(), r.banned))
            .collect();
        let changed = {
            let mut agents = self.agents.write();
            let changed = *agents != next;
            *agents = next;
            changed
        };
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Forgets an agent.
    pub fn evict(&self, id: &SpiffeId) {
        self.agents.write().remove(id);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Bans an agent.
    pub fn ban(&self, id: SpiffeId) {
        self.agents.write().insert(id, true);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Lifts a local ban.
    pub fn unban(&self, id: &SpiffeId) {
        if let Some(banned) = self.agents.write().get_mut(id) {
            *banned = false;
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Replaces the shared bans and evictions (Kubernetes mode, on every change of the cluster
    /// object); streams of agents newly refused end.
    pub fn set_shared(&self, state: SharedAgentState) {
        let changed = {
            let mut shared = self.shared.write();
            let changed = *shared != state;
            *shared = state;
            changed
        };
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// The shared bans and evictions.
    pub fn shared(&self) -> SharedAgentState {
        self.shared.read().clone()
    }

    /// Agents this replica has seen attest or was told about, with their local ban flag.
    pub fn known(&self) -> Vec<(SpiffeId, bool)> {
        self.agents
            .read()
            .iter()
            .map(|(id, banned)| (id.clone(), *banned))
            .collect()
    }

    /// Changes on every eviction or ban.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Number of agents allowed in.
    pub fn active_count(&self) -> usize {
        self.agents
            .read()
            .values()
            .filter(|banned| !**banned)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use signet_spiffe::TrustDomain;

    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    #[test]
    fn replicas_trust_node_agents_of_their_cluster_only() {
        let registry = AgentRegistry::new(&[])
            .with_trusted_cluster(TrustDomain::new("example.org").unwrap(), "prod".into());
        assert_eq!(
            registry.check(&id("spiffe://example.org/signet/agent/k8s/prod/node-1")),
            Ok(())
        );
        for hostile in [
            // A cluster whose name extends ours (a string prefix would have matched).
            "spiffe://example.org/signet/agent/k8s/prod-2/node-1",
            "spiffe://example.org/signet/agent/k8s/prodx/node-1",
            // Not a node agent ID in shape.
            "spiffe://example.org/signet/agent/k8s/prod/node-1/extra",
            "spiffe://example.org/signet/agent/k8s/prod",
            // Join-token agents are known only through attestation records.
            "spiffe://example.org/signet/agent/join/abc",
            "spiffe://example.org/app",
        ] {
            assert_eq!(
                registry.check(&id(hostile)),
                Err(AgentRefusal::Unknown),
                "{hostile}"
            );
        }
    }
}
