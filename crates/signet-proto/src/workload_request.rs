//! The checks every Workload API request passes before the agent acts on it: the security
//! header, and the fields of the JWT requests. Pure functions over the decoded message, so the
//! agent's handlers and the fuzz target run the same code.

use signet_spiffe::SpiffeId;

use crate::workload::{JwtsvidRequest, ValidateJwtsvidRequest};

/// The metadata key every Workload API call must carry with the value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
/// Longest audience accepted by ValidateJWTSVID.
pub const MAX_VALIDATE_AUDIENCE_BYTES: usize = 4096;
/// Longest JWT accepted for validation.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A request refused before any work; the agent answers INVALID_ARGUMENT with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(String);

/// Checks the values sent for the security header: exactly one, and it is `true`.
pub fn check_security_header<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), BadRequest> {
    let mut values = values.into_iter();
    match (values.next(), values.next()) {
        (Some(b"true"), None) => Ok(()),
        _ => Err(BadRequest("security header missing from request".into())),
    }
}

/// What a FetchJWTSVID request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvidParams {
    /// The audiences, sorted and without duplicates (the cache key).
    pub audience: Vec<String>,
    /// The one SPIFFE ID asked for, if any.
    pub spiffe_id: Option<SpiffeId>,
}

/// Checks a FetchJWTSVID request.
pub fn jwt_svid_params(request: &JwtsvidRequest) -> Result<JwtSvidParams, BadRequest> {
    signet_spiffe::jwt::check_audiences(&request.audience).map_err(BadRequest)?;
    let spiffe_id = if request.spiffe_id.is_empty() {
        None
    } else {
        Some(
            SpiffeId::new(&request.spiffe_id)
                .map_err(|e| BadRequest(format!("invalid spiffe_id: {e}")))?,
        )
    };
    let mut audience = request.audience.clone();
    audience.sort();
    audience.dedup();
    Ok(JwtSvidParams {
        audience,
        spiffe_id,
    })
}

/// Checks a ValidateJWTSVID request's fields (the token itself is validated against bundles).
pub fn check_validate_request(request: &ValidateJwtsvidRequest) -> Result<(), BadRequest> {
    if request.audience.is_empty() {
        return Err(BadRequest("audience must be specified".into()));
    }
    if request.svid.is_empty() {
        return Err(BadRequest("svid must be specified".into()));
    }
    if request.svid.len() > MAX_TOKEN_BYTES || request.audience.len() > MAX_VALIDATE_AUDIENCE_BYTES
    {
        return Err(BadRequest("svid or audience too long".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_security_header_must_be_exactly_one_true() {
        assert!(check_security_header([b"true".as_slice()]).is_ok());
        for hostile in [
            vec![],
            vec![b"True".as_slice()],
            vec![b"true ".as_slice()],
            vec![b"true".as_slice(), b"true".as_slice()],
            vec![b"".as_slice()],
        ] {
            assert!(
                check_security_header(hostile.clone()).is_err(),
                "{hostile:?}"
            );
        }
    }

    #[test]
    fn jwt_requests_are_checked_and_normalised() {
        let params = jwt_svid_params(&JwtsvidRequest {
            audience: vec!["b".into(), "a".into(), "b".into()],
            spiffe_id: String::new(),
        })
        .unwrap();
        assert_eq!(params.audience, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(params.spiffe_id, None);
        for hostile in [
            JwtsvidRequest {
                audience: vec![],
                spiffe_id: String::new(),
            },
            JwtsvidRequest {
                audience: vec![String::new()],
                spiffe_id: String::new(),
            },
            JwtsvidRequest {
                audience: vec!["a".into()],
                spiffe_id: "spiffe://example.org/../x".into(),
            },
            JwtsvidRequest {
                audience: vec!["a".repeat(2000)],
                spiffe_id: String::new(),
            },
        ] {
            assert!(jwt_svid_params(&hostile).is_err(), "{hostile:?}");
        }
        let valid = ValidateJwtsvidRequest {
            audience: "a".into(),
            svid: "x.y.z".into(),
        };
        assert!(check_validate_request(&valid).is_ok());
        for hostile in [
            ValidateJwtsvidRequest {
                audience: String::new(),
                ..valid.clone()
            },
            ValidateJwtsvidRequest {
                svid: String::new(),
                ..valid.clone()
            },
            ValidateJwtsvidRequest {
                svid: "x".repeat(MAX_TOKEN_BYTES + 1),
                ..valid.clone()
            },
        ] {
            assert!(check_validate_request(&hostile).is_err());
        }
    }
}
