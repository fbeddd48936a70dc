//! One agent's `SyncEntries` stream as a session: what the agent was sent (entries, policies) and
//! where in the index's change log it stands. Each event (entries, policies or bundle changed)
//! becomes the updates to send, computed from the change log rather than by diffing the agent's
//! whole entry set; a full diff happens only when the log no longer reaches back far enough.

use std::collections::HashMap;
use std::sync::Arc;

use signet_core::policy::PolicySet;
use signet_core::{EntryId, RegistrationEntry};
use signet_proto::agent::{self as pb, sync_entries_response::Update};
use signet_spiffe::{Bundle, BundleSet, SpiffeId};

use crate::index::{AgentChanges, AgentEntries, EntryIndex};

/// Most entries in one snapshot or delta message (keeps messages far below gRPC limits).
pub const MAX_ENTRIES_PER_MESSAGE: usize = 1000;

/// A snapshot's chunks, each converted to wire form when it is asked for.
pub(crate) struct SnapshotChunks {
    entries: Vec<Arc<RegistrationEntry>>,
    next: usize,
    done: bool,
}

impl Iterator for SnapshotChunks {
    type Item = Update;

    fn next(&mut self) -> Option<Update> {
        if self.done {
            return None;
        }
        let end = (self.next + MAX_ENTRIES_PER_MESSAGE).min(self.entries.len());
        let entries = self.entries[self.next..end]
            .iter()
            .map(|e| pb::Entry::from(e.as_ref()))
            .collect();
        self.next = end;
        self.done = end == self.entries.len();
        Some(Update::Snapshot(pb::EntriesChunk {
            entries,
            last: self.done,
        }))
    }
}

/// The state of one agent's stream.
pub(crate) struct SyncSession {
    agent: SpiffeId,
    index: Arc<EntryIndex>,
    /// The index's change-log position the agent's entries are current at.
    seen: u64,
    sent: HashMap<EntryId, Arc<RegistrationEntry>>,
    sent_policies: Option<PolicySet>,
}

impl SyncSession {
    /// A session for `agent`; nothing is sent yet.
    pub(crate) fn new(agent: SpiffeId, index: Arc<EntryIndex>) -> Self {
        Self {
            agent,
            index,
            seen: 0,
            sent: HashMap::new(),
            sent_policies: None,
        }
    }

    /// The first messages: the bundle, the agent's policies (once the store has them), and its
    /// entries as a snapshot in chunks (one empty chunk when it has none).
    #[cfg(test)]
    pub(crate) fn open(
        &mut self,
        bundle: &Bundle,
        federated: &BundleSet,
        policies: Option<&PolicySet>,
    ) -> Vec<Update> {
        let (mut updates, chunks) = self.open_chunked(bundle, federated, policies);
        updates.extend(chunks);
        updates
    }

    /// As `open`, with the snapshot chunks made one at a time as they are sent: with 100,000
    /// entries, converting them all up front held ~100 MB of wire messages per connecting
    /// agent.
    pub(crate) fn open_chunked(
        &mut self,
        bundle: &Bundle,
        federated: &BundleSet,
        policies: Option<&PolicySet>,
    ) -> (Vec<Update>, SnapshotChunks) {
        let mut updates = vec![
            Update::Bundle(bundle_message(bundle)),
            Self::federated_bundles(federated),
        ];
        // The snapshot and the change-log position it is current at, read together.
        let (seen, snapshot) = self.index.agent_snapshot(&self.agent);
        self.seen = seen;
        // Policies before entries: a new identity's policy must not trail its entry.
        updates.extend(policies.and_then(|set| self.policy_update(set)));
        let entries: Vec<Arc<RegistrationEntry>> = snapshot.values().cloned().collect();
        self.sent = snapshot.into_iter().collect();
        (
            updates,
            SnapshotChunks {
                entries,
                next: 0,
                done: false,
            },
        )
    }

    /// The agent's entries changed: its policies if they changed with them, then the entries
    /// that changed and the ids removed, in chunks.
    pub(crate) fn entries_changed(&mut self, policies: Option<&PolicySet>) -> Vec<Update> {
        let (upserted, removed) = match self.index.changes_since(&self.agent, self.seen) {
            AgentChanges::Unchanged => return Vec::new(),
            AgentChanges::Changed {
                sequence,
                upserted,
                removed,
            } => {
                self.seen = sequence;
                self.apply_changes(upserted, &removed)
            }
            AgentChanges::TooFarBehind => {
                let (sequence, current) = self.index.agent_snapshot(&self.agent);
                self.seen = sequence;
                self.apply_snapshot(&current)
            }
        };
        let mut updates: Vec<Update> = policies
            .and_then(|set| self.policy_update(set))
            .into_iter()
            .collect();
        let mut upserted = upserted.into_iter().peekable();
        let mut removed = Some(removed);
        while upserted.peek().is_some() || removed.as_ref().is_some_and(|r| !r.is_empty()) {
            updates.push(Update::Delta(pb::EntriesDelta {
                upserted: upserted.by_ref().take(MAX_ENTRIES_PER_MESSAGE).collect(),
                removed: removed.take().unwrap_or_default(),
            }));
        }
        updates
    }

    /// The policy set changed: the agent's part of it, if that changed.
    pub(crate) fn policies_changed(&mut self, policies: &PolicySet) -> Option<Update> {
        self.policy_update(policies)
    }

    /// The federated bundles changed (or the stream opened): all of them.
    pub(crate) fn federated_bundles(federated: &BundleSet) -> Update {
        Update::FederatedBundles(pb::FederatedBundles {
            bundles: federated.iter().map(bundle_message).collect(),
        })
    }

    /// The bundle changed.
    pub(crate) fn bundle_changed(bundle: &Bundle) -> Update {
        Update::Bundle(bundle_message(bundle))
    }

    fn policy_update(&mut self, set: &PolicySet) -> Option<Update> {
        let mine = policies_of(set, self.sent.values());
        if self.sent_policies.as_ref() == Some(&mine) {
            return None;
        }
        let update = Update::Policies(signet_proto::authz::PolicySet::from(&mine));
        self.sent_policies = Some(mine);
        Some(update)
    }

    /// Applies logged changes to what the agent was sent; entries the agent already has,
    /// unchanged, are not sent again.
    fn apply_changes(
        &mut self,
        upserted: Vec<Arc<RegistrationEntry>>,
        removed: &[EntryId],
    ) -> (Vec<pb::Entry>, Vec<String>) {
        let mut changed = Vec::new();
        for entry in upserted {
            if !self.already_sent(&entry) {
                changed.push(pb::Entry::from(entry.as_ref()));
                self.sent.insert(entry.id.clone(), entry);
            }
        }
        let gone = removed
            .iter()
            .filter(|id| self.sent.remove(*id).is_some())
            .map(ToString::to_string)
            .collect();
        (changed, gone)
    }

    /// The difference between what the agent was sent and `current`, applied.
    fn apply_snapshot(&mut self, current: &AgentEntries) -> (Vec<pb::Entry>, Vec<String>) {
        let mut changed = Vec::new();
        for entry in current.values() {
            if !self.already_sent(entry) {
                changed.push(pb::Entry::from(entry.as_ref()));
                self.sent.insert(entry.id.clone(), entry.clone());
            }
        }
        let gone: Vec<EntryId> = self
            .sent
            .keys()
            .filter(|id| !current.contains_key(*id))
            .cloned()
            .collect();
        for id in &gone {
            self.sent.remove(id);
        }
        (changed, gone.iter().map(ToString::to_string).collect())
    }

    fn already_sent(&self, entry: &Arc<RegistrationEntry>) -> bool {
        self.sent
            .get(&entry.id)
            .is_some_and(|old| Arc::ptr_eq(old, entry) || **old == **entry)
    }
}

/// The part of `set` that targets an identity among `entries` (one agent's): a node learns
/// nothing about the policies of other nodes' workloads.
pub(crate) fn policies_of<'a>(
    set: &PolicySet,
    entries: impl IntoIterator<Item = &'a Arc<RegistrationEntry>>,
) -> PolicySet {
    let mut ids: Vec<&SpiffeId> = entries.into_iter().map(|e| &e.spiffe_id).collect();
    ids.sort();
    ids.dedup();
    PolicySet {
        default_policy: set.default_policy,
        bindings: set
            .bindings
            .iter()
            .filter(|binding| ids.iter().any(|id| binding.targets(id)))
            .cloned()
            .collect(),
    }
}

pub(crate) fn bundle_message(bundle: &Bundle) -> pb::Bundle {
    pb::Bundle {
        trust_domain: bundle.trust_domain().to_string(),
        spiffe_json: bundle.to_spiffe_json().into_bytes(),
        sequence: bundle.sequence().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use signet_core::SelectorSet;
    use signet_core::policy::{
        Action, DefaultPolicy, Enforcement, IdPattern, Policy, PolicyBinding, PolicyRef,
    };
    use signet_spiffe::TrustDomain;

    use super::*;
    use crate::index::CHANGE_LOG_LENGTH;

    const AGENT: &str = "spiffe://example.org/signet/agent/join/a";

    fn entry(id: &str, spiffe_id: &str, parent: &str) -> RegistrationEntry {
        RegistrationEntry {
            id: EntryId::new(id),
            spiffe_id: SpiffeId::new(spiffe_id).unwrap(),
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

    fn mine(id: &str, spiffe_id: &str) -> RegistrationEntry {
        entry(id, spiffe_id, AGENT)
    }

    fn binding(name: &str, target: &str) -> PolicyBinding {
        PolicyBinding {
            policy: Policy {
                id: PolicyRef {
                    namespace: "default".into(),
                    name: name.into(),
                },
                action: Action::Allow,
                enforcement: Enforcement::Enforce,
                rules: vec![],
            },
            targets: vec![IdPattern::parse(target).unwrap()],
        }
    }

    fn bundle() -> Bundle {
        Bundle::new(TrustDomain::new("example.org").unwrap())
    }

    fn session(index: &Arc<EntryIndex>) -> SyncSession {
        SyncSession::new(SpiffeId::new(AGENT).unwrap(), index.clone())
    }

    /// The entry ids of snapshot chunks, and whether each was marked last.
    fn chunks(updates: &[Update]) -> Vec<(usize, bool)> {
        updates
            .iter()
            .filter_map(|u| match u {
                Update::Snapshot(chunk) => Some((chunk.entries.len(), chunk.last)),
                _ => None,
            })
            .collect()
    }

    fn deltas(updates: &[Update]) -> Vec<(Vec<String>, Vec<String>)> {
        updates
            .iter()
            .filter_map(|u| match u {
                Update::Delta(delta) => Some((
                    delta.upserted.iter().map(|e| e.id.clone()).collect(),
                    delta.removed.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_first_messages_are_bundle_policies_and_a_chunked_snapshot() {
        let index = Arc::new(EntryIndex::new());
        index.load(
            (0..2_500)
                .map(|i| mine(&format!("e{i}"), &format!("spiffe://example.org/w/{i}")))
                .chain([entry(
                    "other",
                    "spiffe://example.org/other",
                    "spiffe://example.org/signet/agent/join/b",
                )])
                .collect(),
        );
        let policies = PolicySet {
            default_policy: DefaultPolicy::Deny,
            bindings: vec![binding("w", "spiffe://example.org/w/**")],
        };
        let updates = session(&index).open(&bundle(), &BundleSet::new(), Some(&policies));
        assert!(matches!(updates[0], Update::Bundle(_)));
        assert!(matches!(updates[1], Update::FederatedBundles(_)));
        assert!(matches!(updates[2], Update::Policies(_)));
        assert_eq!(
            chunks(&updates),
            [(1000, false), (1000, false), (500, true)]
        );
        assert_eq!(updates.len(), 6);
    }

    #[test]
    fn an_agent_without_entries_gets_one_empty_last_chunk_and_no_policies_before_the_store_loads() {
        let index = Arc::new(EntryIndex::new());
        let updates = session(&index).open(&bundle(), &BundleSet::new(), None);
        assert!(matches!(updates[0], Update::Bundle(_)));
        assert!(matches!(updates[1], Update::FederatedBundles(_)));
        assert_eq!(chunks(&updates), [(0, true)]);
        assert_eq!(updates.len(), 3);
    }

    #[test]
    fn changes_are_sent_exactly_once_from_the_change_log() {
        let index = Arc::new(EntryIndex::new());
        index.load(vec![
            mine("keep", "spiffe://example.org/keep"),
            mine("drop", "spiffe://example.org/drop"),
        ]);
        let mut session = session(&index);
        session.open(&bundle(), &BundleSet::new(), None);
        assert!(session.entries_changed(None).is_empty(), "nothing changed");

        index.upsert(mine("new", "spiffe://example.org/new"));
        index.remove(&EntryId::new("drop"));
        // Someone else's entry is none of this agent's business.
        index.upsert(entry(
            "theirs",
            "spiffe://example.org/theirs",
            "spiffe://example.org/signet/agent/join/b",
        ));
        let updates = session.entries_changed(None);
        assert_eq!(
            deltas(&updates),
            [(vec!["new".to_owned()], vec!["drop".to_owned()])]
        );
        // Re-writing an entry unchanged sends nothing.
        index.upsert(mine("keep", "spiffe://example.org/keep"));
        assert!(deltas(&session.entries_changed(None)).is_empty());
    }

    #[test]
    fn an_agent_behind_the_change_log_gets_the_exact_difference() {
        let index = Arc::new(EntryIndex::new());
        index.load(vec![mine("old", "spiffe://example.org/old")]);
        let mut session = session(&index);
        session.open(&bundle(), &BundleSet::new(), None);
        // More changes than the log holds: the session falls back to a diff of the snapshot.
        for i in 0..=CHANGE_LOG_LENGTH {
            index.upsert(mine(
                &format!("n{i}"),
                &format!("spiffe://example.org/n/{i}"),
            ));
        }
        index.remove(&EntryId::new("old"));
        let updates = session.entries_changed(None);
        let sent = deltas(&updates);
        let upserted: usize = sent.iter().map(|(u, _)| u.len()).sum();
        let removed: Vec<String> = sent.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(upserted, CHANGE_LOG_LENGTH + 1);
        assert_eq!(removed, ["old"]);
        assert!(sent.iter().all(|(u, _)| u.len() <= MAX_ENTRIES_PER_MESSAGE));
        assert!(session.entries_changed(None).is_empty());
    }

    #[test]
    fn a_new_identitys_policy_goes_out_before_its_entry() {
        let index = Arc::new(EntryIndex::new());
        let policies = PolicySet {
            default_policy: DefaultPolicy::Deny,
            bindings: vec![binding("api", "spiffe://example.org/api")],
        };
        let mut session = session(&index);
        let opened = session.open(&bundle(), &BundleSet::new(), Some(&policies));
        assert!(
            opened
                .iter()
                .any(|u| matches!(u, Update::Policies(p) if p.bindings.is_empty()))
        );
        index.upsert(mine("api", "spiffe://example.org/api"));
        let updates = session.entries_changed(Some(&policies));
        assert!(matches!(&updates[0], Update::Policies(p) if p.bindings.len() == 1));
        assert!(matches!(updates[1], Update::Delta(_)));
        // The same policies again change nothing.
        assert!(session.policies_changed(&policies).is_none());
    }

    #[test]
    fn an_agent_gets_only_the_policies_of_its_own_workloads() {
        let set = PolicySet {
            default_policy: DefaultPolicy::Deny,
            bindings: vec![
                binding("api", "spiffe://example.org/api"),
                binding("all-web", "spiffe://example.org/web/**"),
                binding("elsewhere", "spiffe://example.org/db"),
            ],
        };
        let entries: Vec<Arc<RegistrationEntry>> = [
            mine("1", "spiffe://example.org/api"),
            mine("2", "spiffe://example.org/web/a"),
            mine("3", "spiffe://example.org/web/a"),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let mine = policies_of(&set, &entries);
        let names: Vec<&str> = mine
            .bindings
            .iter()
            .map(|b| b.policy.id.name.as_str())
            .collect();
        assert_eq!(names, ["api", "all-web"]);
        assert_eq!(mine.default_policy, DefaultPolicy::Deny);
        assert!(policies_of(&set, []).bindings.is_empty());
    }
}
