//! Attested agents as the request path sees them: an in-memory view of the datastore's agent
//! table, with a signal when an agent is evicted or banned so its streams end at once.

use std::collections::HashMap;
use std::sync::RwLock;

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
        }
    }

    /// Whether `id` may use the agent API.
    pub fn check(&self, id: &SpiffeId) -> Result<(), AgentRefusal> {
        match self.agents.read().ok().and_then(|a| a.get(id).copied()) {
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
        if let Ok(mut agents) = self.agents.write() {
            let banned = agents.get(&id).copied().unwrap_or(false);
            agents.insert(id, banned);
        }
    }

    /// Forgets an agent.
    pub fn evict(&self, id: &SpiffeId) {
        if let Ok(mut agents) = self.agents.write() {
            agents.remove(id);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Bans an agent.
    pub fn ban(&self, id: SpiffeId) {
        if let Ok(mut agents) = self.agents.write() {
            agents.insert(id, true);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Changes on every eviction or ban.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Number of agents allowed in.
    pub fn active_count(&self) -> usize {
        self.agents
            .read()
            .map_or(0, |a| a.values().filter(|banned| !**banned).count())
    }
}
