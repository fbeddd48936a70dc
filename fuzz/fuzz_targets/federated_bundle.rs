//! A bundle endpoint's answer, as a federating server parses and checks it: arbitrary bytes as
//! SPIFFE bundle JSON, then the acceptance rules against a held bundle. Neither may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet_core::federation::accept_fetched_bundle;
use signet_spiffe::{Bundle, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(trust_domain) = TrustDomain::new("partner.example") else {
        return;
    };
    let Ok(fetched) = Bundle::from_spiffe_json(trust_domain.clone(), data) else {
        return;
    };
    let mut held = Bundle::new(trust_domain.clone());
    held.set_sequence(3);
    let _ = accept_fetched_bundle(&trust_domain, Some(&held), &fetched);
    let _ = accept_fetched_bundle(&trust_domain, None, &fetched);
    // What is accepted must serialise and parse back.
    let again = Bundle::from_spiffe_json(trust_domain, fetched.to_spiffe_json().as_bytes());
    assert!(again.is_ok());
});
