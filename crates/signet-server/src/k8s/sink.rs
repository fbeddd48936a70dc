//! The controller's entries flow straight into the server's entry index.

use signet_controller::EntryChange;
use signet_controller::runtime::EntrySink;

use crate::index::EntryIndex;

impl EntrySink for EntryIndex {
    fn apply(&self, changes: Vec<EntryChange>) {
        for change in changes {
            match change {
                EntryChange::Upsert(entry) => self.upsert_shared(entry),
                EntryChange::Remove(id) => {
                    self.remove(&id);
                }
            }
        }
    }

    fn synced(&self) {
        self.mark_synced();
    }
}

/// What the controller feeds in Kubernetes mode: entries into the entry index, resolved
/// AuthorizationPolicies into the policy store.
#[derive(Debug)]
pub struct ControllerSink {
    pub entries: std::sync::Arc<EntryIndex>,
    pub policies: std::sync::Arc<crate::policies::PolicyStore>,
}

impl EntrySink for ControllerSink {
    fn apply(&self, changes: Vec<EntryChange>) {
        self.entries.apply(changes);
    }

    fn synced(&self) {
        self.entries.synced();
    }

    fn policies(&self, bindings: Vec<signet_core::policy::PolicyBinding>) {
        self.policies.replace(bindings);
    }
}
