#![no_main]
//! The Workload API's request path before any work is done: the gRPC message bytes decoded as
//! each request type, the security-header check and the JWT request checks. Never panics; a
//! request the checks accept satisfies what the handlers rely on.

use libfuzzer_sys::fuzz_target;
use prost::Message;
use signet_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest,
    X509svidRequest,
};
use signet_proto::workload_request::{
    MAX_TOKEN_BYTES, check_security_header, check_validate_request, jwt_svid_params,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    match selector % 4 {
        0 => {
            let _ = X509svidRequest::decode(body);
            let _ = X509BundlesRequest::decode(body);
            let _ = JwtBundlesRequest::decode(body);
        }
        1 => {
            if let Ok(request) = JwtsvidRequest::decode(body) {
                if let Ok(params) = jwt_svid_params(&request) {
                    assert!(!params.audience.is_empty());
                    assert!(params.audience.windows(2).all(|w| w[0] < w[1]));
                    assert!(params.audience.iter().all(|a| request.audience.contains(a)));
                    if let Some(id) = &params.spiffe_id {
                        assert_eq!(id.to_string(), request.spiffe_id);
                    }
                }
            }
        }
        2 => {
            if let Ok(request) = ValidateJwtsvidRequest::decode(body) {
                if check_validate_request(&request).is_ok() {
                    assert!(!request.audience.is_empty() && !request.svid.is_empty());
                    assert!(request.svid.len() <= MAX_TOKEN_BYTES);
                }
            }
        }
        _ => {
            // Header values as a client may send them: split on NUL.
            let values: Vec<&[u8]> = body.split(|b| *b == 0).collect();
            if check_security_header(values.iter().copied()).is_ok() {
                assert_eq!(values, vec![b"true".as_slice()]);
            }
        }
    }
});
