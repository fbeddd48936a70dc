//! DNS names an X509-SVID may carry as SANs: one rule for entries, templates and the CA.

use std::fmt;

/// Why a string is not a DNS name an SVID may carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsNameError {
    /// Empty, or longer than 253 characters.
    #[error("DNS name {0:?} must be 1 to 253 characters")]
    Length(String),
    /// A label is empty or longer than 63 characters.
    #[error("DNS name {0:?} has an empty or over-long label")]
    Label(String),
    /// A label starts or ends with `-`.
    #[error("DNS name {0:?} has a label starting or ending with '-'")]
    Hyphen(String),
    /// A character other than letters, digits, `-` and `.` (after an optional leading `*.`).
    #[error("DNS name {0:?} may hold only letters, digits, '-' and '.'")]
    Character(String),
}

/// A DNS name: labels of letters, digits and inner hyphens, at most 63 characters each and 253
/// in all, optionally behind one leading `*.` wildcard label.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

impl DnsName {
    /// Checks `name`.
    pub fn new(name: &str) -> Result<Self, DnsNameError> {
        // Error messages quote at most a bounded prefix of hostile input.
        let quoted = || name.chars().take(300).collect::<String>();
        if name.is_empty() || name.len() > 253 {
            return Err(DnsNameError::Length(quoted()));
        }
        let body = name.strip_prefix("*.").unwrap_or(name);
        for label in body.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(DnsNameError::Label(quoted()));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(DnsNameError::Hyphen(quoted()));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(DnsNameError::Character(quoted()));
            }
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DnsName({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_and_one_leading_wildcard() {
        for good in [
            "a",
            "billing.internal",
            "*.svc.cluster.local",
            "x-1.example.org",
            "A.B",
        ] {
            assert_eq!(DnsName::new(good).unwrap().as_str(), good);
        }
        assert!(DnsName::new(&format!("{}.org", "a".repeat(63))).is_ok());
    }

    #[test]
    fn refuses_hostile_names() {
        let long_label = format!("{}.org", "a".repeat(64));
        let long_name = ["a"; 128].join(".");
        for (bad, want) in [
            ("", "1 to 253"),
            (long_name.as_str(), "1 to 253"),
            (long_label.as_str(), "label"),
            ("a..b", "label"),
            (".a", "label"),
            ("a.", "label"),
            ("*", "letters"),
            ("a.*.b", "letters"),
            ("*.*.a", "letters"),
            ("-a.b", "'-'"),
            ("a-.b", "'-'"),
            ("a_b.c", "letters"),
            ("a b", "letters"),
            ("a\u{0}b", "letters"),
            ("bücher.de", "letters"),
            ("a/b", "letters"),
        ] {
            let error = DnsName::new(bad).unwrap_err().to_string();
            assert!(error.contains(want), "{bad:?}: {error}");
        }
    }
}
