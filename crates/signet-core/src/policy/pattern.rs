//! Structural patterns of AuthorizationPolicy rules. SPIFFE ID patterns are matched segment by
//! segment on parsed IDs — never as raw string prefixes, so `…/ns/foo/*` cannot match `…/ns/foobar`.

use std::fmt;

use signet_spiffe::{SpiffeId, TrustDomain};

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("{0:?} is not a SPIFFE ID pattern: it must start with spiffe://<trust domain>")]
    NotSpiffe(String),
    #[error("{pattern:?}: bad trust domain: {reason}")]
    TrustDomain { pattern: String, reason: String },
    #[error("{0:?}: empty path segment")]
    EmptySegment(String),
    #[error("{0:?}: `.` and `..` segments are not allowed")]
    DotSegment(String),
    #[error("{0:?}: `*` and `**` must be whole segments (structural matching, no partial globs)")]
    PartialWildcard(String),
    #[error("{0:?}: `**` is only allowed as the last segment")]
    RestNotLast(String),
    #[error("{0:?}: segment has a character not allowed in SPIFFE IDs")]
    BadCharacter(String),
    #[error(
        "{0:?}: a path pattern must be `*`, start with `/` or `*`, and have at most one `*` at either end"
    )]
    Path(String),
    #[error(
        "{0:?} is not in normal form (no `//`, `.` or `..` segments, escapes, `?`, `#` or `;`): it could never match a request path"
    )]
    NotNormal(String),
}

/// One path segment of an ID pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**` (last only): one or more remaining segments.
    Rest,
}

/// A SPIFFE ID pattern: `spiffe://td/ns/frontend/sa/*`, `spiffe://td/ns/**`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdPattern {
    trust_domain: TrustDomain,
    segments: Vec<Segment>,
}

impl IdPattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let rest = pattern
            .strip_prefix("spiffe://")
            .ok_or_else(|| PatternError::NotSpiffe(pattern.to_owned()))?;
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        let trust_domain = TrustDomain::new(domain).map_err(|e| PatternError::TrustDomain {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        })?;
        let mut segments = Vec::new();
        if !path.is_empty() {
            let parts: Vec<&str> = path.split('/').collect();
            for (i, part) in parts.iter().enumerate() {
                let segment = match *part {
                    "" => return Err(PatternError::EmptySegment(pattern.to_owned())),
                    "." | ".." => return Err(PatternError::DotSegment(pattern.to_owned())),
                    "*" => Segment::One,
                    "**" if i + 1 == parts.len() => Segment::Rest,
                    "**" => return Err(PatternError::RestNotLast(pattern.to_owned())),
                    literal if literal.contains('*') => {
                        return Err(PatternError::PartialWildcard(pattern.to_owned()));
                    }
                    literal
                        if !literal.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
                        }) =>
                    {
                        return Err(PatternError::BadCharacter(pattern.to_owned()));
                    }
                    literal => Segment::Literal(literal.to_owned()),
                };
                segments.push(segment);
            }
        }
        Ok(Self {
            trust_domain,
            segments,
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn matches(&self, id: &SpiffeId) -> bool {
        if id.trust_domain_name() != self.trust_domain.as_str() {
            return false;
        }
        let path = id.path();
        // A valid SPIFFE ID path is empty or `/seg(/seg)*` with no empty segment.
        let mut actual = path.split('/').skip(1);
        for segment in &self.segments {
            let Some(next) = actual.next() else {
                return false;
            };
            match segment {
                Segment::Rest => return true,
                Segment::One => {}
                Segment::Literal(literal) => {
                    if next != literal {
                        return false;
                    }
                }
            }
        }
        actual.next().is_none()
    }
}

impl fmt::Display for IdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}", self.trust_domain)?;
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => write!(f, "/{literal}")?,
                Segment::One => f.write_str("/*")?,
                Segment::Rest => f.write_str("/**")?,
            }
        }
        Ok(())
    }
}

/// An HTTP path pattern: exact `/a/b`, prefix `/a/*`, suffix `*.json`, or `*` (any path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathPattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl PathPattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let bad = || PatternError::Path(pattern.to_owned());
        if pattern == "*" {
            return Ok(Self::Any);
        }
        let stars = pattern.matches('*').count();
        if let Some(suffix) = pattern.strip_prefix('*') {
            return if stars == 1 && !suffix.is_empty() {
                Self::Suffix(suffix.to_owned()).check_normal_form(pattern)
            } else {
                Err(bad())
            };
        }
        if !pattern.starts_with('/') {
            return Err(bad());
        }
        let parsed = match (stars, pattern.strip_suffix('*')) {
            (0, _) => Self::Exact(pattern.to_owned()),
            (1, Some(prefix)) => Self::Prefix(prefix.to_owned()),
            _ => return Err(bad()),
        };
        parsed.check_normal_form(pattern)
    }

    /// Request paths are normalized before matching, so a pattern not in normal form (`//a`,
    /// `/a/../b`, `/%61`, `/a?x`, `/a;x`) could never match: refuse it instead of letting a DENY
    /// silently do nothing.
    fn check_normal_form(self, pattern: &str) -> Result<Self, PatternError> {
        let literal = match &self {
            Self::Any => return Ok(self),
            Self::Exact(text) | Self::Prefix(text) => text.clone(),
            Self::Suffix(text) => format!("/x{text}"),
        };
        if normalize_path(&literal).is_ok_and(|normal| normal == literal) {
            Ok(self)
        } else {
            Err(PatternError::NotNormal(pattern.to_owned()))
        }
    }

    /// Matches an already normalized request path (see [`normalize_path`]).
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => path == exact,
            Self::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Self::Suffix(suffix) => path.ends_with(suffix.as_str()),
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(exact) => f.write_str(exact),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Why a request path cannot be authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with /")]
    NotAbsolute,
    #[error("the request path has an encoded slash, backslash or NUL, or a malformed escape")]
    AmbiguousEncoding,
    #[error("the request path has `;` parameters, which servers disagree about")]
    Parameters,
    #[error("the request path is not UTF-8 once decoded")]
    NotUtf8,
}

/// The one form a path is matched in — what the application will route on — so `/a/../admin`,
/// `//admin`, `/%61dmin` or `/admin%3Bx` cannot slip past a rule on `/admin`: the query and
/// fragment are dropped, percent-escapes are decoded (except `%25`, `%3F` and `%23`, kept in
/// upper case so the result reads the same when parsed again), dot segments are resolved and
/// repeated slashes merged. Normalizing a normalized path changes nothing. What servers resolve differently is refused instead of guessed at: escapes of
/// `/`, `\` or NUL, raw `\`, and `;` path parameters.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let (byte, escaped) = match bytes[i] {
            b'%' => {
                let value = bytes
                    .get(i + 1..i + 3)
                    .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or(PathError::AmbiguousEncoding)?;
                i += 3;
                (value, true)
            }
            other => {
                i += 1;
                (other, false)
            }
        };
        match byte {
            b'\\' | 0 => return Err(PathError::AmbiguousEncoding),
            b'/' if escaped => return Err(PathError::AmbiguousEncoding),
            b';' => return Err(PathError::Parameters),
            // Kept escaped: decoding them would change the path's meaning when it is parsed
            // again (a `?` starts a query, `%` another escape), so normalizing twice would differ.
            b'%' | b'?' | b'#' if escaped => {
                decoded.extend_from_slice(format!("%{byte:02X}").as_bytes());
            }
            _ => decoded.push(byte),
        }
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut normalized = format!("/{}", segments.join("/"));
    let ends_in_directory =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if ends_in_directory && normalized.len() > 1 {
        normalized.push('/');
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(value: &str) -> SpiffeId {
        SpiffeId::new(value).unwrap_or_else(|e| unreachable!("{value}: {e}"))
    }

    fn pattern(value: &str) -> IdPattern {
        IdPattern::parse(value).unwrap_or_else(|e| unreachable!("{value}: {e}"))
    }

    #[test]
    fn one_star_is_one_segment_and_two_stars_the_rest() {
        let sa = pattern("spiffe://td/ns/frontend/sa/*");
        assert!(sa.matches(&id("spiffe://td/ns/frontend/sa/web")));
        assert!(!sa.matches(&id("spiffe://td/ns/frontend/sa/web/extra")));
        assert!(!sa.matches(&id("spiffe://td/ns/frontend/sa")));
        assert!(
            !sa.matches(&id("spiffe://td/ns/frontendx/sa/web")),
            "no string prefixing"
        );
        assert!(
            !sa.matches(&id("spiffe://other/ns/frontend/sa/web")),
            "trust domain differs"
        );

        let ns = pattern("spiffe://td/ns/**");
        assert!(ns.matches(&id("spiffe://td/ns/a")));
        assert!(ns.matches(&id("spiffe://td/ns/a/sa/b")));
        assert!(
            !ns.matches(&id("spiffe://td/ns")),
            "** needs at least one segment"
        );
        assert!(!ns.matches(&id("spiffe://td/nsx/a")));

        let exact = pattern("spiffe://td/ns/a/sa/b");
        assert!(exact.matches(&id("spiffe://td/ns/a/sa/b")));
        assert!(!exact.matches(&id("spiffe://td/ns/a/sa/bb")));
        assert!(pattern("spiffe://td").matches(&id("spiffe://td")));
        assert!(!pattern("spiffe://td").matches(&id("spiffe://td/x")));
        assert_eq!(sa.to_string(), "spiffe://td/ns/frontend/sa/*");
        assert_eq!(ns.to_string(), "spiffe://td/ns/**");
    }

    #[test]
    fn malformed_id_patterns_are_refused() {
        for (bad, expected) in [
            ("td/ns/a", PatternError::NotSpiffe("td/ns/a".into())),
            (
                "spiffe://td//a",
                PatternError::EmptySegment("spiffe://td//a".into()),
            ),
            (
                "spiffe://td/a/",
                PatternError::EmptySegment("spiffe://td/a/".into()),
            ),
            (
                "spiffe://td/../a",
                PatternError::DotSegment("spiffe://td/../a".into()),
            ),
            (
                "spiffe://td/sa-*",
                PatternError::PartialWildcard("spiffe://td/sa-*".into()),
            ),
            (
                "spiffe://td/***",
                PatternError::PartialWildcard("spiffe://td/***".into()),
            ),
            (
                "spiffe://td/**/x",
                PatternError::RestNotLast("spiffe://td/**/x".into()),
            ),
            (
                "spiffe://td/a b",
                PatternError::BadCharacter("spiffe://td/a b".into()),
            ),
        ] {
            assert_eq!(IdPattern::parse(bad), Err(expected), "{bad}");
        }
        assert!(matches!(
            IdPattern::parse("spiffe://TD/x"),
            Err(PatternError::TrustDomain { .. })
        ));
        assert!(matches!(
            IdPattern::parse("spiffe://*/x"),
            Err(PatternError::TrustDomain { .. })
        ));
    }

    #[test]
    fn path_patterns() {
        assert_eq!(PathPattern::parse("*"), Ok(PathPattern::Any));
        let prefix = PathPattern::parse("/inventory/*").unwrap_or(PathPattern::Any);
        assert!(prefix.matches("/inventory/items"));
        assert!(prefix.matches("/inventory/"));
        assert!(!prefix.matches("/inventory"));
        assert!(!prefix.matches("/inventoryx/a"));
        let suffix = PathPattern::parse("*.json").unwrap_or(PathPattern::Any);
        assert!(suffix.matches("/a/b.json") && !suffix.matches("/a/b.jsonp"));
        let exact = PathPattern::parse("/healthz").unwrap_or(PathPattern::Any);
        assert!(exact.matches("/healthz") && !exact.matches("/healthz/"));
        for bad in ["", "healthz", "/a*b", "/a/**", "**", "*/a*"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(prefix.to_string(), "/inventory/*");
        assert_eq!(suffix.to_string(), "*.json");
    }

    #[test]
    fn request_paths_are_normalized_before_matching() {
        for (raw, normalized) in [
            ("/admin", "/admin"),
            ("/a/../admin", "/admin"),
            ("//admin", "/admin"),
            ("/./admin/", "/admin/"),
            ("/%61dmin", "/admin"),
            ("/admin?x=/public", "/admin"),
            ("/admin#frag", "/admin"),
            ("/api/v1%3Adelete", "/api/v1:delete"),
            ("/caf%C3%A9/x", "/café/x"),
            ("/a%3fb%23c%25", "/a%3Fb%23c%25"),
            ("/a%2561", "/a%2561"),
            ("/%2e%2e/admin", "/admin"),
            ("/a/..", "/"),
            ("/a/b/.", "/a/b/"),
            ("/../../etc", "/etc"),
            ("/", "/"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(normalized), "{raw}");
        }
        for raw in [
            "/a%2Fb", "/a%2fb", "/a%5Cb", "/a\\b", "/a%00", "/a%zz", "/a%4", "/a%+1",
        ] {
            assert_eq!(
                normalize_path(raw),
                Err(PathError::AmbiguousEncoding),
                "{raw}"
            );
        }
        assert_eq!(normalize_path("/admin;x"), Err(PathError::Parameters));
        assert_eq!(normalize_path("/admin%3Bx"), Err(PathError::Parameters));
        assert_eq!(normalize_path("/%C3"), Err(PathError::NotUtf8));
        assert_eq!(normalize_path("admin"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn path_patterns_must_be_in_normal_form() {
        for bad in [
            "//a", "/a/../b", "/a/./b", "/%61dmin", "/a?x", "/a#x", "/a;x", "*.json?x", "*/../a",
            "/a//*",
        ] {
            assert_eq!(
                PathPattern::parse(bad),
                Err(PatternError::NotNormal(bad.to_owned())),
                "{bad}"
            );
        }
        for good in ["/", "/*", "/a/", "/a/*", "*.json", "*/v1", "/café"] {
            assert!(PathPattern::parse(good).is_ok(), "{good}");
        }
    }
}
