//! SPIFFE IDs and trust domain names, parsed exactly as the SPIFFE ID specification demands.
//!
//! Parsing follows the reference implementation (go-spiffe) where the specification leaves room:
//! the scheme and the trust domain must already be lowercase; nothing is normalised.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The URI scheme prefix every SPIFFE ID starts with.
const SCHEME_PREFIX: &str = "spiffe://";
/// Implementations must support IDs of at least this many bytes and must not generate longer ones.
pub const MAX_SPIFFE_ID_BYTES: usize = 2048;
/// A trust domain is a URI host, limited to 255 bytes.
pub const MAX_TRUST_DOMAIN_BYTES: usize = 255;

/// Why a string is not a valid SPIFFE ID or trust domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input is empty.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// The input does not start with the lowercase `spiffe://` scheme.
    #[error("scheme is missing or invalid: a SPIFFE ID starts with \"spiffe://\"")]
    WrongScheme,
    /// The authority (trust domain) part is empty.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// The trust domain name exceeds 255 bytes.
    #[error("trust domain is {0} bytes long; at most 255 are allowed")]
    TrustDomainTooLong(usize),
    /// The whole ID exceeds 2048 bytes.
    #[error("SPIFFE ID is {0} bytes long; at most 2048 are allowed")]
    IdTooLong(usize),
    /// The authority carries user information (`user@host`).
    #[error("trust domain must not contain user info ('@')")]
    UserInfo,
    /// The authority carries a port (`host:port`).
    #[error("trust domain must not contain a port (':')")]
    Port,
    /// A `?` query component is present.
    #[error("SPIFFE ID must not contain a query ('?')")]
    Query,
    /// A `#` fragment component is present.
    #[error("SPIFFE ID must not contain a fragment ('#')")]
    Fragment,
    /// A percent-encoded character is present.
    #[error("SPIFFE ID must not contain percent-encoded characters ('%')")]
    PercentEncoding,
    /// The trust domain contains a character outside `[a-z0-9.-_]`.
    #[error(
        "trust domain contains {0:?}: only lowercase letters, digits, '.', '-' and '_' are allowed"
    )]
    BadTrustDomainChar(char),
    /// A path segment contains a character outside `[a-zA-Z0-9.-_]`.
    #[error("path contains {0:?}: only letters, digits, '.', '-' and '_' are allowed")]
    BadPathChar(char),
    /// The path contains an empty segment (`//`).
    #[error("path must not contain empty segments")]
    EmptySegment,
    /// The path contains a `.` or `..` segment.
    #[error("path must not contain '.' or '..' segments")]
    DotSegment,
    /// The path ends with `/`.
    #[error("path must not have a trailing slash")]
    TrailingSlash,
    /// A path was given where only a trust domain is allowed.
    #[error("a trust domain ID must not have a path")]
    UnexpectedPath,
}

impl IdError {
    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::WrongScheme => "wrong_scheme",
            Self::MissingTrustDomain => "missing_trust_domain",
            Self::TrustDomainTooLong(_) => "trust_domain_too_long",
            Self::IdTooLong(_) => "id_too_long",
            Self::UserInfo => "user_info",
            Self::Port => "port",
            Self::Query => "query",
            Self::Fragment => "fragment",
            Self::PercentEncoding => "percent_encoding",
            Self::BadTrustDomainChar(_) => "bad_trust_domain_char",
            Self::BadPathChar(_) => "bad_path_char",
            Self::EmptySegment => "empty_segment",
            Self::DotSegment => "dot_segment",
            Self::TrailingSlash => "trailing_slash",
            Self::UnexpectedPath => "unexpected_path",
        }
    }
}

/// A validated trust domain name, such as `example.org`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`).
    pub fn new(name: &str) -> Result<Self, IdError> {
        validate_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// Parses either a bare name or a SPIFFE ID without path (`spiffe://example.org`), the form
    /// the Workload API uses as bundle map keys.
    pub fn from_name_or_id(input: &str) -> Result<Self, IdError> {
        if input.starts_with(SCHEME_PREFIX) {
            let id = SpiffeId::new(input)?;
            if !id.is_trust_domain_id() {
                return Err(IdError::UnexpectedPath);
            }
            Ok(id.trust_domain())
        } else {
            Self::new(input)
        }
    }

    /// The trust domain name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself (`spiffe://<name>`), used by signing authorities
    /// and as the key of bundle maps.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            trust_domain_end: SCHEME_PREFIX.len() + self.0.len(),
            id: format!("{SCHEME_PREFIX}{}", self.0),
        }
    }

    /// Builds an ID in this trust domain from path segments, validating each segment.
    pub fn id_from_segments<S: AsRef<str>>(&self, segments: &[S]) -> Result<SpiffeId, IdError> {
        let mut id = format!("{SCHEME_PREFIX}{}", self.0);
        for segment in segments {
            // A segment is one segment: a `/` inside it would change the ID's shape.
            if segment.as_ref().contains('/') {
                return Err(IdError::BadPathChar('/'));
            }
            id.push('/');
            id.push_str(segment.as_ref());
        }
        SpiffeId::new(&id)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A validated SPIFFE ID, such as `spiffe://example.org/ns/prod/sa/api`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    id: String,
    /// Byte offset where the trust domain ends and the path begins.
    trust_domain_end: usize,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn new(input: &str) -> Result<Self, IdError> {
        if input.is_empty() {
            return Err(IdError::Empty);
        }
        if input.len() > MAX_SPIFFE_ID_BYTES {
            return Err(IdError::IdTooLong(input.len()));
        }
        let rest = input
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(IdError::WrongScheme)?;
        // Query and fragment end the path in RFC 3986, so report them before anything else.
        if rest.contains('?') {
            return Err(IdError::Query);
        }
        if rest.contains('#') {
            return Err(IdError::Fragment);
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        validate_trust_domain(authority)?;
        validate_path(path)?;
        Ok(Self {
            id: input.to_owned(),
            trust_domain_end: SCHEME_PREFIX.len() + authority.len(),
        })
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The trust domain name, borrowed.
    pub fn trust_domain_name(&self) -> &str {
        &self.id[SCHEME_PREFIX.len()..self.trust_domain_end]
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.trust_domain_end..]
    }

    /// The path segments, without the separating slashes.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').skip(1)
    }

    /// Whether this ID names the trust domain itself (no path), as signing authorities do.
    pub fn is_trust_domain_id(&self) -> bool {
        self.path().is_empty()
    }

    /// Whether this ID is in the given trust domain.
    pub fn is_member_of(&self, trust_domain: &TrustDomain) -> bool {
        self.trust_domain_name() == trust_domain.as_str()
    }

    /// The whole ID as a string.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.id)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(&raw).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(&raw).map_err(serde::de::Error::custom)
    }
}

fn validate_trust_domain(name: &str) -> Result<(), IdError> {
    if name.is_empty() {
        return Err(IdError::MissingTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_BYTES {
        return Err(IdError::TrustDomainTooLong(name.len()));
    }
    for c in name.chars() {
        match c {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            '@' => return Err(IdError::UserInfo),
            ':' => return Err(IdError::Port),
            '%' => return Err(IdError::PercentEncoding),
            '?' => return Err(IdError::Query),
            '#' => return Err(IdError::Fragment),
            other => return Err(IdError::BadTrustDomainChar(other)),
        }
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(IdError::TrailingSlash);
    }
    // `path` starts with '/', so the first split item is the empty string before it.
    for segment in path.split('/').skip(1) {
        match segment {
            "" => return Err(IdError::EmptySegment),
            "." | ".." => return Err(IdError::DotSegment),
            _ => {}
        }
        for c in segment.chars() {
            match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
                '%' => return Err(IdError::PercentEncoding),
                other => return Err(IdError::BadPathChar(other)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::new("spiffe://example.org/ns/prod/sa/api").unwrap();
        assert_eq!(id.trust_domain_name(), "example.org");
        assert_eq!(id.path(), "/ns/prod/sa/api");
        assert_eq!(
            id.segments().collect::<Vec<_>>(),
            ["ns", "prod", "sa", "api"]
        );
        assert!(!id.is_trust_domain_id());
        let td = SpiffeId::new("spiffe://example.org").unwrap();
        assert!(td.is_trust_domain_id());
        assert_eq!(td.path(), "");
        // IPv4 dotted quads are ordinary trust domain names.
        assert!(SpiffeId::new("spiffe://10.0.0.1/x").is_ok());
        assert!(SpiffeId::new("spiffe://a_b-c.d/A.b-C_9").is_ok());
    }

    #[test]
    fn rejects_each_rule_with_its_own_error() {
        let cases: &[(&str, IdError)] = &[
            ("", IdError::Empty),
            ("http://example.org/x", IdError::WrongScheme),
            ("SPIFFE://example.org/x", IdError::WrongScheme),
            ("spiffe:/example.org/x", IdError::WrongScheme),
            ("example.org/x", IdError::WrongScheme),
            ("spiffe://", IdError::MissingTrustDomain),
            ("spiffe:///path", IdError::MissingTrustDomain),
            ("spiffe://user@example.org/x", IdError::UserInfo),
            ("spiffe://example.org:443/x", IdError::Port),
            ("spiffe://example.org/x?y=1", IdError::Query),
            ("spiffe://example.org/x#frag", IdError::Fragment),
            ("spiffe://example.org/%41", IdError::PercentEncoding),
            ("spiffe://ex%41mple.org/x", IdError::PercentEncoding),
            ("spiffe://Example.org/x", IdError::BadTrustDomainChar('E')),
            ("spiffe://[::1]/x", IdError::BadTrustDomainChar('[')),
            ("spiffe://exa mple.org", IdError::BadTrustDomainChar(' ')),
            ("spiffe://example.org/a b", IdError::BadPathChar(' ')),
            ("spiffe://example.org/ünï", IdError::BadPathChar('ü')),
            ("spiffe://example.org/a//b", IdError::EmptySegment),
            ("spiffe://example.org/a/./b", IdError::DotSegment),
            ("spiffe://example.org/a/../b", IdError::DotSegment),
            ("spiffe://example.org/..", IdError::DotSegment),
            ("spiffe://example.org/a/", IdError::TrailingSlash),
            ("spiffe://example.org/", IdError::TrailingSlash),
        ];
        for (input, expected) in cases {
            assert_eq!(
                SpiffeId::new(input).unwrap_err(),
                *expected,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn enforces_length_limits() {
        let td = "a".repeat(255);
        assert!(TrustDomain::new(&td).is_ok());
        assert_eq!(
            TrustDomain::new(&"a".repeat(256)).unwrap_err(),
            IdError::TrustDomainTooLong(256)
        );
        let prefix = format!("spiffe://{td}/");
        let max_path = "p".repeat(MAX_SPIFFE_ID_BYTES - prefix.len());
        assert!(SpiffeId::new(&format!("{prefix}{max_path}")).is_ok());
        let too_long = format!("{prefix}{max_path}p");
        assert_eq!(
            SpiffeId::new(&too_long).unwrap_err(),
            IdError::IdTooLong(2049)
        );
    }

    #[test]
    fn trust_domain_forms() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(td.id().as_str(), "spiffe://example.org");
        assert_eq!(
            TrustDomain::from_name_or_id("spiffe://example.org").unwrap(),
            td
        );
        assert_eq!(TrustDomain::from_name_or_id("example.org").unwrap(), td);
        assert_eq!(
            TrustDomain::from_name_or_id("spiffe://example.org/x").unwrap_err(),
            IdError::UnexpectedPath
        );
        assert_eq!(
            TrustDomain::new("").unwrap_err(),
            IdError::MissingTrustDomain
        );
        let id = td.id_from_segments(&["ns", "default"]).unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/ns/default");
        assert_eq!(
            td.id_from_segments(&["a", ".."]).unwrap_err(),
            IdError::DotSegment
        );
        // One segment stays one segment.
        for hostile in ["a/b", "/a", "a/", "/"] {
            assert_eq!(
                td.id_from_segments(&["x", hostile]).unwrap_err(),
                IdError::BadPathChar('/'),
                "{hostile}"
            );
        }
        assert!(id.is_member_of(&td));
        assert!(!id.is_member_of(&TrustDomain::new("other.org").unwrap()));
    }

    #[test]
    fn serde_round_trip_validates() {
        let id: SpiffeId = serde_json::from_str("\"spiffe://example.org/a\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"spiffe://example.org/a\""
        );
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://example.org/a/\"").is_err());
        assert!(serde_json::from_str::<TrustDomain>("\"UPPER\"").is_err());
    }

    fn td_strategy() -> impl Strategy<Value = String> {
        "[a-z0-9._-]{1,40}"
    }

    fn segment_strategy() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._-]{1,20}".prop_filter("dot segments are invalid", |s| s != "." && s != "..")
    }

    proptest! {
        #[test]
        fn valid_ids_round_trip(td in td_strategy(), segs in proptest::collection::vec(segment_strategy(), 0..6)) {
            let mut input = format!("spiffe://{td}");
            for s in &segs { input.push('/'); input.push_str(s); }
            let id = SpiffeId::new(&input).unwrap();
            prop_assert_eq!(id.to_string(), input.clone());
            prop_assert_eq!(id.trust_domain_name(), td.as_str());
            prop_assert_eq!(id.segments().map(str::to_owned).collect::<Vec<_>>(), segs);
            let reparsed: SpiffeId = id.to_string().parse().unwrap();
            prop_assert_eq!(reparsed, id);
        }

        #[test]
        fn arbitrary_input_never_panics_and_accepted_ids_print_back(input in "\\PC{0,80}") {
            if let Ok(id) = SpiffeId::new(&input) {
                prop_assert_eq!(id.as_str(), input.as_str());
            }
        }
    }
}
