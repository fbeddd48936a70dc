//! What a fetched federated bundle must be to replace the held one, with CA certificates of real
//! (test) CAs.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use signet_core::federation::{BundleRefusal, accept_fetched_bundle};
use signet_spiffe::{Bundle, TrustDomain};
use signet_test_support::TestCa;

fn bundle(ca: &TestCa, sequence: Option<u64>) -> Bundle {
    let mut bundle = Bundle::new(TrustDomain::new(&ca.trust_domain).unwrap());
    bundle.add_x509_authority(&ca.cert_der).unwrap();
    if let Some(sequence) = sequence {
        bundle.set_sequence(sequence);
    }
    bundle
}

#[test]
fn a_bundle_of_the_trust_domain_with_a_newer_or_equal_sequence_is_accepted() {
    let ca = TestCa::new("partner.example");
    let td = TrustDomain::new("partner.example").unwrap();
    let held = bundle(&ca, Some(4));
    assert_eq!(accept_fetched_bundle(&td, None, &held), Ok(()));
    assert_eq!(
        accept_fetched_bundle(&td, Some(&held), &bundle(&ca, Some(4))),
        Ok(())
    );
    assert_eq!(
        accept_fetched_bundle(&td, Some(&held), &bundle(&ca, Some(5))),
        Ok(())
    );
    // A bundle without a sequence cannot be ordered; it is not a regression.
    assert_eq!(
        accept_fetched_bundle(&td, Some(&held), &bundle(&ca, None)),
        Ok(())
    );
}

#[test]
fn regressions_other_trust_domains_and_empty_bundles_are_refused() {
    let ca = TestCa::new("partner.example");
    let td = TrustDomain::new("partner.example").unwrap();
    let held = bundle(&ca, Some(7));
    assert_eq!(
        accept_fetched_bundle(&td, Some(&held), &bundle(&ca, Some(6))),
        Err(BundleRefusal::SequenceRegressed { have: 7, got: 6 })
    );
    let impostor = TestCa::new("attacker.example");
    assert!(matches!(
        accept_fetched_bundle(&td, None, &bundle(&impostor, Some(9))),
        Err(BundleRefusal::OtherTrustDomain { named, .. }) if named == "attacker.example"
    ));
    let empty = Bundle::new(td.clone());
    assert_eq!(
        accept_fetched_bundle(&td, None, &empty),
        Err(BundleRefusal::NoX509Authority)
    );
}
