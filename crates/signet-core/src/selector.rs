//! Selectors: `type:value` facts about a workload or node (`unix:uid:1000`, `k8s:ns:prod`).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest selector accepted, to bound memory per entry.
pub const MAX_SELECTOR_BYTES: usize = 1024;

/// Why a string is not a selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// No `:` separates type and value.
    #[error("selector {0:?} must have the form type:value")]
    MissingSeparator(String),
    /// The type is empty or has characters outside `[a-z0-9_]`.
    #[error("selector type {0:?} must be lowercase letters, digits or '_'")]
    BadType(String),
    /// The value is empty.
    #[error("selector {0:?} has an empty value")]
    EmptyValue(String),
    /// The selector is too long or contains control characters.
    #[error("selector is longer than 1024 bytes or contains control characters")]
    BadValue,
}

/// One selector.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    kind: String,
    value: String,
}

impl Selector {
    /// Builds a selector from its type and value.
    pub fn new(kind: &str, value: &str) -> Result<Self, SelectorError> {
        format!("{kind}:{value}").parse()
    }

    /// The type (`unix`, `k8s`, ...).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The value (`uid:1000`).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Checks a `unix:` selector against what the unix attestor can ever report, so that an
    /// entry that could never match (`unix:uid:abc`, `unix:uid: 1001`, a relative path) is
    /// refused when it is written instead of silently serving nobody.
    pub fn check_unix(&self) -> Result<(), String> {
        if self.kind != "unix" {
            return Err(format!(
                "{self}: only unix: selectors can match in standalone mode (the unix attestor)"
            ));
        }
        let (key, value) = self
            .value
            .split_once(':')
            .ok_or_else(|| format!("{self}: expected unix:<key>:<value>"))?;
        let ok = match key {
            "uid" | "gid" | "supplementary_gid" => {
                !value.is_empty()
                    && value.bytes().all(|b| b.is_ascii_digit())
                    && value.parse::<u32>().is_ok()
            }
            "user" | "group" | "supplementary_group" => {
                !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == ':')
            }
            "path" => value.starts_with('/'),
            "sha256" => {
                value.len() == 64
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            }
            _ => {
                return Err(format!(
                    "{self}: unknown unix selector; use uid, gid, supplementary_gid, user, group, \
                     supplementary_group, path or sha256"
                ));
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{self}: not a value the unix attestor reports (uid/gid: a decimal number up to \
                 4294967295; path: absolute; sha256: 64 lowercase hex digits; names: no spaces)"
            ))
        }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_SELECTOR_BYTES || s.chars().any(char::is_control) {
            return Err(SelectorError::BadValue);
        }
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| SelectorError::MissingSeparator(s.to_owned()))?;
        if kind.is_empty()
            || !kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(SelectorError::BadType(kind.to_owned()));
        }
        if value.is_empty() {
            return Err(SelectorError::EmptyValue(s.to_owned()));
        }
        Ok(Self {
            kind: kind.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({self})")
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A set of selectors.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SelectorSet(BTreeSet<Selector>);

impl SelectorSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses each string.
    pub fn parse_all<S: AsRef<str>>(items: &[S]) -> Result<Self, SelectorError> {
        items
            .iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Adds a selector.
    pub fn insert(&mut self, selector: Selector) {
        self.0.insert(selector);
    }

    /// Adds every selector of another set.
    pub fn extend(&mut self, other: SelectorSet) {
        self.0.extend(other.0);
    }

    /// Whether every selector of `self` is in `other` — the entry match rule.
    pub fn is_subset_of(&self, other: &SelectorSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// Iterates in order.
    pub fn iter(&self) -> impl Iterator<Item = &Selector> {
        self.0.iter()
    }

    /// Number of selectors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The selectors as strings.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl FromIterator<Selector> for SelectorSet {
    fn from_iter<I: IntoIterator<Item = Selector>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Debug for SelectorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.0.iter().map(ToString::to_string))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let s: Selector = "unix:uid:1000".parse().unwrap();
        assert_eq!(s.kind(), "unix");
        assert_eq!(s.value(), "uid:1000");
        assert_eq!(s.to_string(), "unix:uid:1000");
        let k: Selector = "k8s:pod-label:app:web".parse().unwrap();
        assert_eq!(k.value(), "pod-label:app:web");
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            "nocolon".parse::<Selector>(),
            Err(SelectorError::MissingSeparator(_))
        ));
        assert!(matches!(
            ":x".parse::<Selector>(),
            Err(SelectorError::BadType(_))
        ));
        assert!(matches!(
            "Unix:uid:1".parse::<Selector>(),
            Err(SelectorError::BadType(_))
        ));
        assert!(matches!(
            "unix:".parse::<Selector>(),
            Err(SelectorError::EmptyValue(_))
        ));
        assert!(matches!(
            "unix:a\nb".parse::<Selector>(),
            Err(SelectorError::BadValue)
        ));
        let long = format!("unix:{}", "x".repeat(1100));
        assert!(matches!(
            long.parse::<Selector>(),
            Err(SelectorError::BadValue)
        ));
    }

    #[test]
    fn subset_is_the_match_rule() {
        let entry = SelectorSet::parse_all(&["unix:uid:1000"]).unwrap();
        let workload = SelectorSet::parse_all(&["unix:uid:1000", "unix:gid:1000"]).unwrap();
        assert!(entry.is_subset_of(&workload));
        assert!(!workload.is_subset_of(&entry));
        let other = SelectorSet::parse_all(&["unix:uid:0"]).unwrap();
        assert!(!other.is_subset_of(&workload));
    }
}

#[cfg(test)]
mod unix_tests {
    use super::*;

    #[test]
    fn unix_selectors_are_checked_against_what_the_attestor_reports() {
        for good in [
            "unix:uid:0",
            "unix:uid:4294967295",
            "unix:gid:1000",
            "unix:supplementary_gid:27",
            "unix:user:alice",
            "unix:group:staff",
            "unix:path:/usr/bin/sleep",
            "unix:sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        ] {
            let selector: Selector = good.parse().unwrap();
            assert_eq!(selector.check_unix(), Ok(()), "{good}");
        }
        for bad in [
            "unix:uid:abc",
            "unix:uid:-1",
            "unix:uid: 1001",
            "unix:uid:+5",
            "unix:uid:4294967296",
            "unix:gid:",
            "unix:path:relative/bin",
            "unix:sha256:ABC",
            "unix:user:a b",
            "unix:pid:1",
            "unix:uid",
            "k8s:ns:default",
            "docker:label:x",
        ] {
            let selector: Selector = bad.parse().unwrap();
            assert!(selector.check_unix().is_err(), "{bad} was accepted");
        }
    }
}
