//! Reading one message of the agent's entry sync stream into typed values. Everything the server
//! sends is parsed and checked here before the agent applies any of it, so a malformed message
//! changes nothing (and the reader is a fuzz target).

use signet_core::{EntryId, RegistrationEntry};
use signet_spiffe::{Bundle, BundleSet, TrustDomain};

use crate::agent::{SyncEntriesResponse, sync_entries_response::Update};
use crate::convert::InvalidMessage;
use crate::policy::policy_set_from;
use signet_core::policy::PolicySet;

/// Most entries one snapshot may hold; far above any real node, it bounds what a hostile or
/// broken server can make an agent buffer.
pub const MAX_SNAPSHOT_ENTRIES: usize = 2_000_000;

/// One sync message, parsed.
#[derive(Debug)]
pub struct SyncMessage {
    /// X.509 authority ids whose SVIDs must be re-signed now.
    pub tainted_authorities: Vec<String>,
    /// JWT key ids whose cached tokens must not be served any more.
    pub tainted_jwt_authorities: Vec<String>,
    /// What changed, if anything.
    pub update: Option<SyncUpdate>,
}

/// The change one sync message carries.
#[derive(Debug)]
pub enum SyncUpdate {
    /// This trust domain's bundle.
    Bundle {
        /// The bundle.
        bundle: Bundle,
        /// Its sequence number.
        sequence: u64,
    },
    /// Every federated trust domain's bundle.
    FederatedBundles(BundleSet),
    /// The whole policy set, and the policies that could not be read (an unreadable DENY
    /// denies what it targets, so the agent must know of them).
    Policies(PolicySet, Vec<InvalidMessage>),
    /// One chunk of a full snapshot.
    Snapshot {
        /// The chunk's entries.
        entries: Vec<RegistrationEntry>,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// Entries added or changed, and entries removed.
    Delta {
        /// Added or changed.
        upserted: Vec<RegistrationEntry>,
        /// Removed.
        removed: Vec<EntryId>,
    },
}

/// Why a sync message was refused.
#[derive(Debug, thiserror::Error)]
pub enum SyncMessageError {
    /// An entry did not parse.
    #[error("entry {id:?}: {source}")]
    Entry {
        /// The entry's id as sent.
        id: String,
        /// What is wrong.
        source: InvalidMessage,
    },
    /// A bundle did not parse.
    #[error("{what}: {reason}")]
    Bundle {
        /// Which bundle.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A removed entry id is not an id.
    #[error("removed entry id {0:?} is not valid")]
    RemovedId(String),
    /// A snapshot larger than an agent accepts.
    #[error("entry snapshot of more than {0} entries")]
    SnapshotTooLarge(usize),
}

/// Collects a snapshot's chunks until the last one, refusing one that grows past a bound.
#[derive(Debug)]
pub struct SnapshotAssembler {
    entries: Vec<RegistrationEntry>,
    limit: usize,
}

impl Default for SnapshotAssembler {
    fn default() -> Self {
        Self::with_limit(MAX_SNAPSHOT_ENTRIES)
    }
}

impl SnapshotAssembler {
    /// An assembler refusing snapshots of more than `limit` entries.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            entries: Vec::new(),
            limit,
        }
    }

    /// Adds one chunk; the whole snapshot once `last` is set.
    pub fn push(
        &mut self,
        entries: Vec<RegistrationEntry>,
        last: bool,
    ) -> Result<Option<Vec<RegistrationEntry>>, SyncMessageError> {
        if self.entries.len() + entries.len() > self.limit {
            self.entries = Vec::new();
            return Err(SyncMessageError::SnapshotTooLarge(self.limit));
        }
        self.entries.extend(entries);
        Ok(last.then(|| std::mem::take(&mut self.entries)))
    }
}

/// Parses one message of the sync stream for an agent of `trust_domain`.
pub fn parse_sync_message(
    message: SyncEntriesResponse,
    trust_domain: &TrustDomain,
) -> Result<SyncMessage, SyncMessageError> {
    let update = match message.update {
        None => None,
        Some(Update::Bundle(wire)) => Some(SyncUpdate::Bundle {
            bundle: Bundle::from_spiffe_json(trust_domain.clone(), &wire.spiffe_json).map_err(
                |e| SyncMessageError::Bundle {
                    what: "bundle update".into(),
                    reason: e.to_string(),
                },
            )?,
            sequence: wire.sequence,
        }),
        Some(Update::FederatedBundles(wire)) => {
            let mut set = BundleSet::new();
            for bundle in &wire.bundles {
                let federated = TrustDomain::new(&bundle.trust_domain).map_err(|e| {
                    SyncMessageError::Bundle {
                        what: format!("federated trust domain {:?}", bundle.trust_domain),
                        reason: e.to_string(),
                    }
                })?;
                let parsed = Bundle::from_spiffe_json(federated.clone(), &bundle.spiffe_json)
                    .map_err(|e| SyncMessageError::Bundle {
                        what: format!("bundle of {federated}"),
                        reason: e.to_string(),
                    })?;
                set.insert(parsed);
            }
            Some(SyncUpdate::FederatedBundles(set))
        }
        Some(Update::Policies(wire)) => {
            let (set, refused) = policy_set_from(&wire);
            Some(SyncUpdate::Policies(set, refused))
        }
        Some(Update::Snapshot(chunk)) => Some(SyncUpdate::Snapshot {
            entries: entries(&chunk.entries)?,
            last: chunk.last,
        }),
        Some(Update::Delta(delta)) => Some(SyncUpdate::Delta {
            upserted: entries(&delta.upserted)?,
            removed: delta
                .removed
                .into_iter()
                .map(|id| {
                    if id.is_empty() {
                        Err(SyncMessageError::RemovedId(id))
                    } else {
                        Ok(EntryId::new(id))
                    }
                })
                .collect::<Result<_, _>>()?,
        }),
    };
    Ok(SyncMessage {
        tainted_authorities: message.tainted_authorities,
        tainted_jwt_authorities: message.tainted_jwt_authorities,
        update,
    })
}

fn entries(wire: &[crate::agent::Entry]) -> Result<Vec<RegistrationEntry>, SyncMessageError> {
    wire.iter()
        .map(|entry| {
            RegistrationEntry::try_from(entry).map_err(|source| SyncMessageError::Entry {
                id: entry.id.clone(),
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    #[test]
    fn a_delta_with_a_bad_entry_is_refused_whole() {
        let good = agent::Entry {
            id: "e1".into(),
            spiffe_id: "spiffe://example.org/a".into(),
            parent_id: "spiffe://example.org/agent".into(),
            selectors: vec!["unix:uid:1".into()],
            ..Default::default()
        };
        let bad = agent::Entry {
            id: "e2".into(),
            spiffe_id: "not a spiffe id".into(),
            ..good.clone()
        };
        let message = SyncEntriesResponse {
            update: Some(Update::Delta(agent::EntriesDelta {
                upserted: vec![good.clone(), bad],
                removed: vec![],
            })),
            ..Default::default()
        };
        let error = parse_sync_message(message, &td()).unwrap_err();
        assert!(error.to_string().contains("e2"), "{error}");

        let message = SyncEntriesResponse {
            update: Some(Update::Delta(agent::EntriesDelta {
                upserted: vec![good],
                removed: vec!["gone".into()],
            })),
            tainted_authorities: vec!["abc".into()],
            ..Default::default()
        };
        let parsed = parse_sync_message(message, &td()).unwrap();
        assert_eq!(parsed.tainted_authorities, vec!["abc".to_owned()]);
        match parsed.update {
            Some(SyncUpdate::Delta { upserted, removed }) => {
                assert_eq!(upserted.len(), 1);
                assert_eq!(removed, vec![EntryId::new("gone")]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_snapshot_is_assembled_from_its_chunks_and_an_oversized_one_refused() {
        let entry = |n: usize| {
            RegistrationEntry::try_from(&agent::Entry {
                id: format!("e{n}"),
                spiffe_id: format!("spiffe://example.org/w{n}"),
                parent_id: "spiffe://example.org/agent".into(),
                selectors: vec!["unix:uid:1".into()],
                ..Default::default()
            })
            .unwrap()
        };
        let mut assembler = SnapshotAssembler::with_limit(3);
        assert!(
            assembler
                .push(vec![entry(1), entry(2)], false)
                .unwrap()
                .is_none()
        );
        let whole = assembler.push(vec![entry(3)], true).unwrap().unwrap();
        assert_eq!(whole.len(), 3);
        // The next snapshot starts empty; a hostile server streaming more than the bound is
        // refused before it is buffered.
        assert!(
            assembler
                .push(vec![entry(1), entry(2)], false)
                .unwrap()
                .is_none()
        );
        let error = assembler.push(vec![entry(3), entry(4)], false).unwrap_err();
        assert!(
            matches!(error, SyncMessageError::SnapshotTooLarge(3)),
            "{error}"
        );
        assert_eq!(assembler.push(vec![], true).unwrap().unwrap().len(), 0);
    }

    #[test]
    fn hostile_bundles_and_ids_are_refused() {
        for update in [
            Update::Bundle(agent::Bundle {
                spiffe_json: b"{not json".to_vec(),
                ..Default::default()
            }),
            Update::FederatedBundles(agent::FederatedBundles {
                bundles: vec![agent::Bundle {
                    trust_domain: "Bad Domain".into(),
                    spiffe_json: b"{\"keys\":[]}".to_vec(),
                    ..Default::default()
                }],
            }),
            Update::Delta(agent::EntriesDelta {
                upserted: vec![],
                removed: vec![String::new()],
            }),
        ] {
            let message = SyncEntriesResponse {
                update: Some(update),
                ..Default::default()
            };
            assert!(parse_sync_message(message, &td()).is_err());
        }
    }
}
