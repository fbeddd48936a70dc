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
