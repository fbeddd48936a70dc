#![no_main]
//! SPIFFE ID and trust domain parsing: never panics, and what parses prints back unchanged.

use libfuzzer_sys::fuzz_target;
use signet_spiffe::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    if let Ok(id) = SpiffeId::new(input) {
        assert_eq!(id.as_str(), input);
        assert!(input.len() <= 2048);
        let td = id.trust_domain();
        assert_eq!(format!("spiffe://{td}{}", id.path()), input);
        assert_eq!(SpiffeId::new(&id.to_string()).ok(), Some(id));
    }
    let _ = TrustDomain::from_name_or_id(input);
});
