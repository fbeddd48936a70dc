//! The entry index: entries grouped by the agent they are parented to, with a change signal per
//! agent so that only that agent's sync streams wake up, and a bounded log of what changed so a
//! stream sends exactly the changes instead of diffing the agent's whole map. A stream that fell
//! further behind than the log reaches gets a snapshot to diff instead.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::RwLock;

use signet_core::{EntryId, RegistrationEntry};
use signet_spiffe::SpiffeId;
use tokio::sync::watch;

/// Entries of one agent.
pub type AgentEntries = BTreeMap<EntryId, Arc<RegistrationEntry>>;

/// Changes one agent's log keeps; a stream further behind gets a snapshot.
pub const CHANGE_LOG_LENGTH: usize = 4096;

#[derive(Debug)]
struct Slot {
    entries: AgentEntries,
    /// The sequence number of the last change.
    changed: watch::Sender<u64>,
    /// The last changes, oldest first: (sequence number, entry changed).
    log: VecDeque<(u64, EntryId)>,
}

impl Slot {
    fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            changed: watch::channel(0).0,
            log: VecDeque::new(),
        }
    }

    fn record(&mut self, id: &EntryId) {
        let sequence = *self.changed.borrow() + 1;
        self.log.push_back((sequence, id.clone()));
        if self.log.len() > CHANGE_LOG_LENGTH {
            self.log.pop_front();
        }
        self.changed.send_replace(sequence);
    }
}

/// What changed for one agent after a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentChanges {
    /// Nothing.
    Unchanged,
    /// These entries were added or replaced, these removed (or moved to another agent), up to
    /// `sequence`.
    Changed {
        /// The sequence number now reached.
        sequence: u64,
        /// Current entries that changed.
        upserted: Vec<Arc<RegistrationEntry>>,
        /// Entries that are no longer the agent's.
        removed: Vec<EntryId>,
    },
    /// The log no longer reaches back that far: take a snapshot.
    TooFarBehind,
}

/// Entries by id and by parent agent.
#[derive(Debug)]
pub struct EntryIndex {
    inner: RwLock<Inner>,
    /// Whether the content is complete (an entry source that lists asynchronously — the
    /// Kubernetes controller — sets it once every list is in). Agents get no snapshot before.
    synced: watch::Sender<bool>,
}

impl Default for EntryIndex {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            synced: watch::channel(true).0,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<EntryId, Arc<RegistrationEntry>>,
    by_agent: HashMap<SpiffeId, Slot>,
}

impl EntryIndex {
    /// An empty, complete index (the SQLite source loads synchronously).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty index that is not complete until [`mark_synced`](Self::mark_synced).
    pub fn new_unsynced() -> Self {
        let index = Self::default();
        index.synced.send_replace(false);
        index
    }

    /// Marks the content complete.
    pub fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    /// Whether the content is complete.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the content is complete.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Replaces the whole content (start-up load).
    pub fn load(&self, entries: Vec<RegistrationEntry>) {
        for entry in entries {
            self.upsert(entry);
        }
    }

    /// Makes the content exactly `entries` (a resync): entries gone are removed, the others
    /// upserted only when they changed, so agents receive exact deltas.
    pub fn replace(&self, entries: Vec<RegistrationEntry>) {
        let wanted: std::collections::HashSet<EntryId> =
            entries.iter().map(|e| e.id.clone()).collect();
        let gone: Vec<EntryId> = self
            .inner
            .read()
            .by_id
            .keys()
            .filter(|id| !wanted.contains(*id))
            .cloned()
            .collect();
        for id in &gone {
            self.remove(id);
        }
        for entry in entries {
            self.upsert_if_changed(entry);
        }
    }

    /// Upserts unless the same entry is held: an unchanged write (a server hearing its own
    /// notification) sends agents no delta.
    pub fn upsert_if_changed(&self, entry: RegistrationEntry) {
        if self.get(&entry.id).is_none_or(|held| *held != entry) {
            self.upsert(entry);
        }
    }

    /// Inserts or replaces an entry, moving it between agents if its parent changed.
    pub fn upsert(&self, entry: RegistrationEntry) {
        self.upsert_shared(Arc::new(entry));
    }

    /// Inserts or replaces an entry another component already holds (the controller), without
    /// copying it.
    pub fn upsert_shared(&self, entry: Arc<RegistrationEntry>) {
        let mut inner = self.inner.write();
        if let Some(old) = inner.by_id.insert(entry.id.clone(), entry.clone())
            && old.parent_id != entry.parent_id
            && let Some(slot) = inner.by_agent.get_mut(&old.parent_id)
        {
            slot.entries.remove(&old.id);
            slot.record(&old.id);
        }
        let slot = inner
            .by_agent
            .entry(entry.parent_id.clone())
            .or_insert_with(Slot::new);
        let id = entry.id.clone();
        slot.entries.insert(id.clone(), entry);
        slot.record(&id);
    }

    /// Removes an entry.
    pub fn remove(&self, id: &EntryId) -> Option<Arc<RegistrationEntry>> {
        let mut inner = self.inner.write();
        let old = inner.by_id.remove(id)?;
        if let Some(slot) = inner.by_agent.get_mut(&old.parent_id) {
            slot.entries.remove(id);
            slot.record(id);
        }
        Some(old)
    }

    /// One entry.
    pub fn get(&self, id: &EntryId) -> Option<Arc<RegistrationEntry>> {
        self.inner.read().by_id.get(id).cloned()
    }

    /// All entries, ordered by id.
    pub fn all(&self) -> Vec<Arc<RegistrationEntry>> {
        let inner = self.inner.read();
        let mut all: Vec<_> = inner.by_id.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.inner.read().by_id.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries of one agent and the sequence number they are current at.
    pub fn agent_snapshot(&self, agent: &SpiffeId) -> (u64, AgentEntries) {
        let inner = self.inner.read();
        inner
            .by_agent
            .get(agent)
            .map_or((0, AgentEntries::new()), |slot| {
                (*slot.changed.borrow(), slot.entries.clone())
            })
    }

    /// What changed for `agent` after sequence number `after`.
    pub fn changes_since(&self, agent: &SpiffeId, after: u64) -> AgentChanges {
        let inner = self.inner.read();
        let Some(slot) = inner.by_agent.get(agent) else {
            return AgentChanges::Unchanged;
        };
        let sequence = *slot.changed.borrow();
        if sequence == after {
            return AgentChanges::Unchanged;
        }
        // The log must hold every change after `after`.
        if sequence < after || slot.log.front().is_none_or(|(first, _)| *first > after + 1) {
            return AgentChanges::TooFarBehind;
        }
        let changed: BTreeSet<&EntryId> = slot
            .log
            .iter()
            .filter(|(seq, _)| *seq > after)
            .map(|(_, id)| id)
            .collect();
        let mut upserted = Vec::new();
        let mut removed = Vec::new();
        for id in changed {
            match slot.entries.get(id) {
                Some(entry) => upserted.push(entry.clone()),
                None => removed.push(id.clone()),
            }
        }
        AgentChanges::Changed {
            sequence,
            upserted,
            removed,
        }
    }

    /// The entry `id` if it is parented to `agent` (the CSR authorisation check).
    pub fn authorized_entry(
        &self,
        agent: &SpiffeId,
        id: &EntryId,
    ) -> Option<Arc<RegistrationEntry>> {
        self.get(id).filter(|e| &e.parent_id == agent)
    }

    /// A receiver that changes whenever `agent`'s entries do.
    pub fn subscribe(&self, agent: &SpiffeId) -> watch::Receiver<u64> {
        if let Some(slot) = self.inner.read().by_agent.get(agent) {
            return slot.changed.subscribe();
        }
        self.inner
            .write()
            .by_agent
            .entry(agent.clone())
            .or_insert_with(Slot::new)
            .changed
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use signet_core::SelectorSet;

    use super::*;

    fn entry(id: &str, parent: &str) -> RegistrationEntry {
        RegistrationEntry {
            id: EntryId::new(id),
            spiffe_id: SpiffeId::new("spiffe://example.org/app").unwrap(),
            parent_id: SpiffeId::new(parent).unwrap(),
            selectors: SelectorSet::parse_all(&["unix:uid:1"]).unwrap(),
            x509_svid_ttl: Duration::from_secs(60),
            jwt_svid_ttl: Duration::from_secs(60),
            dns_names: vec![],
            federates_with: vec![],
            admin: false,
            downstream: false,
            hint: String::new(),
            revision: 1,
        }
    }

    const A: &str = "spiffe://example.org/signet/agent/join/a";
    const B: &str = "spiffe://example.org/signet/agent/join/b";

    #[test]
    fn entries_follow_their_parent_and_only_that_agent_is_woken() {
        let index = EntryIndex::new();
        let a = SpiffeId::new(A).unwrap();
        let b = SpiffeId::new(B).unwrap();
        let mut rx_a = index.subscribe(&a);
        let rx_b = index.subscribe(&b);
        index.upsert(entry("e1", A));
        assert!(rx_a.has_changed().unwrap());
        assert!(!rx_b.has_changed().unwrap());
        rx_a.mark_unchanged();
        assert_eq!(index.agent_snapshot(&a).1.len(), 1);
        assert!(index.authorized_entry(&a, &EntryId::new("e1")).is_some());
        assert!(index.authorized_entry(&b, &EntryId::new("e1")).is_none());
        // Re-parenting moves it and wakes both.
        index.upsert(entry("e1", B));
        assert!(rx_a.has_changed().unwrap() && rx_b.has_changed().unwrap());
        assert!(index.agent_snapshot(&a).1.is_empty());
        assert_eq!(index.agent_snapshot(&b).1.len(), 1);
        index.remove(&EntryId::new("e1"));
        assert!(index.is_empty());
        assert!(index.agent_snapshot(&b).1.is_empty());
    }

    #[test]
    fn changes_since_names_exactly_what_changed() {
        let index = EntryIndex::new();
        let a = SpiffeId::new(A).unwrap();
        let b = SpiffeId::new(B).unwrap();
        let _ = index.subscribe(&a);
        assert_eq!(index.changes_since(&a, 0), AgentChanges::Unchanged);
        index.upsert(entry("e1", A));
        index.upsert(entry("e2", A));
        let AgentChanges::Changed {
            sequence,
            upserted,
            removed,
        } = index.changes_since(&a, 0)
        else {
            panic!("expected changes");
        };
        assert_eq!(sequence, 2);
        assert_eq!(upserted.len(), 2);
        assert!(removed.is_empty());
        assert_eq!(index.changes_since(&a, 2), AgentChanges::Unchanged);

        // e1 moves to B and e2 is removed: both are gone for A; e1 arrives at B.
        index.upsert(entry("e1", B));
        index.remove(&EntryId::new("e2"));
        let AgentChanges::Changed {
            sequence,
            upserted,
            removed,
        } = index.changes_since(&a, 2)
        else {
            panic!("expected changes");
        };
        assert_eq!(sequence, 4);
        assert!(upserted.is_empty());
        assert_eq!(removed, vec![EntryId::new("e1"), EntryId::new("e2")]);
        assert!(matches!(
            index.changes_since(&b, 0),
            AgentChanges::Changed { ref upserted, .. } if upserted.len() == 1
        ));
        let (sequence, snapshot) = index.agent_snapshot(&a);
        assert_eq!((sequence, snapshot.len()), (4, 0));
    }

    #[test]
    fn a_reader_behind_the_log_gets_told_to_snapshot() {
        let index = EntryIndex::new();
        let a = SpiffeId::new(A).unwrap();
        for i in 0..=CHANGE_LOG_LENGTH {
            index.upsert(entry(&format!("e{i}"), A));
        }
        assert_eq!(index.changes_since(&a, 0), AgentChanges::TooFarBehind);
        assert!(matches!(
            index.changes_since(&a, 1),
            AgentChanges::Changed { ref upserted, .. } if upserted.len() == CHANGE_LOG_LENGTH
        ));
        // A sequence from the future (another replica's numbering) also means: snapshot.
        assert_eq!(
            index.changes_since(&a, u64::MAX),
            AgentChanges::TooFarBehind
        );
    }
}
