#![no_main]
//! The agent's reading of one entry sync message from the server: protobuf decoding, entries,
//! bundles, federated bundles and policies. Never panics; every entry accepted carries a valid
//! SPIFFE ID and parent and survives the wire round trip.

use libfuzzer_sys::fuzz_target;
use prost::Message;
use signet_core::RegistrationEntry;
use signet_proto::agent::{Entry, SyncEntriesResponse};
use signet_proto::sync::{SyncUpdate, parse_sync_message};
use signet_spiffe::TrustDomain;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = SyncEntriesResponse::decode(data) else { return };
    let Ok(trust_domain) = TrustDomain::new("example.org") else { return };
    let Ok(parsed) = parse_sync_message(message, &trust_domain) else { return };
    let entries = match parsed.update {
        Some(SyncUpdate::Snapshot { entries, .. }) => entries,
        Some(SyncUpdate::Delta { upserted, .. }) => upserted,
        _ => return,
    };
    for entry in entries {
        let wire = Entry::from(&entry);
        let again = RegistrationEntry::try_from(&wire).expect("an accepted entry round-trips");
        assert_eq!(again, entry);
    }
});
