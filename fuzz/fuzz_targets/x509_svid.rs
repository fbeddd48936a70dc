#![no_main]
//! X509-SVID chain and leaf parsing: never panics.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = signet_spiffe::x509::validate_leaf(data);
    let _ = signet_spiffe::X509Svid::parse(data, data);
});
