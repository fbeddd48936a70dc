#![no_main]
//! Bundle documents in every form: never panics; what parses re-serialises and parses again
//! to the same bundle.

use libfuzzer_sys::fuzz_target;
use signet_spiffe::{Bundle, BundleSet, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let td = TrustDomain::new("example.org").unwrap();
    if let Ok(bundle) = Bundle::from_spiffe_json(td.clone(), data) {
        let again = Bundle::from_spiffe_json(td.clone(), bundle.to_spiffe_json().as_bytes()).unwrap();
        assert_eq!(again, bundle);
        let _ = bundle.to_jwks_json();
    }
    if let Ok(set) = BundleSet::from_bundle_map_json(data) {
        let again = BundleSet::from_bundle_map_json(set.to_bundle_map_json().as_bytes()).unwrap();
        assert_eq!(again.len(), set.len());
    }
    let _ = Bundle::from_pem(td.clone(), data);
    let _ = Bundle::from_der_concat(td, data);
});
