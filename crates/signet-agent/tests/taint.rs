//! A taint as the agent's cache applies it: SVIDs of the tainted authority are re-signed at
//! random times spread over the re-sign window (not all at once, not later than the window), an
//! SVID signed by the tainted authority while its request was in flight is caught too, and what
//! the agent holds is counted per authority for the server's `signet ca show`.

use std::time::{Duration, SystemTime};

use signet_agent::SvidCache;
use signet_test_support::workload_api::{SigningCa, entry_for_uid};

const WINDOW: Duration = Duration::from_secs(10);

#[test]
fn tainted_svids_are_re_signed_spread_over_the_window() {
    let ca = SigningCa::new();
    let cache = SvidCache::new();
    cache.set_taint_resign_window(WINDOW);
    let entries: Vec<_> = (0..200)
        .map(|i| entry_for_uid(&format!("w{i}"), 1000 + i))
        .collect();
    cache.replace_entries(entries.clone());
    let mut authority = String::new();
    for entry in &entries {
        let svid = ca.svid(entry);
        authority.clone_from(&svid.authority_id);
        cache.store_svid(&entry.id, svid);
    }
    let now = SystemTime::now();
    assert!(cache.due(now).is_empty(), "fresh SVIDs are not due");
    assert_eq!(cache.authority_use(now).x509.get(&authority), Some(&200));

    // A taint of another authority changes nothing.
    cache.set_tainted(vec!["someone-else".into()]);
    assert!(cache.due(now + WINDOW + Duration::from_secs(1)).is_empty());

    cache.set_tainted(vec![authority.clone()]);
    let tainted_at = SystemTime::now();
    let due_within = |after: Duration| cache.due(tainted_at + after).len();
    assert_eq!(
        due_within(WINDOW + Duration::from_millis(50)),
        200,
        "all within the window"
    );
    let halfway = due_within(WINDOW / 2);
    assert!(
        (40..=160).contains(&halfway),
        "spread over the window, not at once: {halfway} of 200 due at half the window"
    );
    assert!(
        due_within(Duration::ZERO) < 20,
        "not all at the same instant"
    );

    // Tainting again (the same set, repeated on every sync message) does not reshuffle.
    let before = cache.next_refresh();
    cache.set_tainted(vec![authority.clone()]);
    assert_eq!(cache.next_refresh(), before);
}

#[test]
fn an_svid_of_a_tainted_authority_stored_late_is_re_signed_within_the_window() {
    let ca = SigningCa::new();
    let cache = SvidCache::new();
    cache.set_taint_resign_window(WINDOW);
    let entry = entry_for_uid("late", 1000);
    cache.replace_entries(vec![entry.clone()]);
    let svid = ca.svid(&entry);
    // The taint arrived while the signing request was in flight.
    cache.set_tainted(vec![svid.authority_id.clone()]);
    cache.store_svid(&entry.id, svid);
    let now = SystemTime::now();
    assert_eq!(cache.due(now + WINDOW + Duration::from_millis(50)).len(), 1);
}

#[test]
fn the_authority_of_an_svid_is_its_issuers_subject_key_id() {
    // The agent counts its own SVID by the authority key id of its certificate; the server names
    // authorities by subject key id: the two must be the same string.
    let ca = SigningCa::new();
    let entry = entry_for_uid("aki", 1000);
    let svid = ca.svid(&entry);
    let leaf = svid
        .svid
        .chain()
        .first()
        .map(|c| c.to_vec())
        .unwrap_or_default();
    assert_eq!(
        signet_spiffe::x509::authority_key_id_of(&leaf),
        Some(svid.authority_id)
    );
    assert_eq!(
        signet_spiffe::x509::authority_key_id_of(b"not a certificate"),
        None
    );
}
