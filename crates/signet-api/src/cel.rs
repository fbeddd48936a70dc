//! CEL rules shared by the resources. They mirror the SPIFFE ID rules of `signet-spiffe` as far as
//! RE2 allows; the controller re-checks everything with the real parser.

/// A SPIFFE ID: scheme, a lowercase trust domain, path segments of `[A-Za-z0-9._-]`, no `.`/`..`
/// segment, no trailing slash.
pub const SPIFFE_ID_RULE: &str = "self.matches('^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*$') && !self.matches('/[.][.]?(/|$)') && size(self) <= 2048";
/// Message for [`SPIFFE_ID_RULE`].
pub const SPIFFE_ID_MESSAGE: &str = "must be a SPIFFE ID: spiffe://<trust domain>/<path>, lowercase trust domain, path segments of [A-Za-z0-9._-], no '.', '..' or empty segments";

/// A trust domain name.
pub const TRUST_DOMAIN_RULE: &str = "self.matches('^[a-z0-9._-]{1,255}$')";
/// Message for [`TRUST_DOMAIN_RULE`].
pub const TRUST_DOMAIN_MESSAGE: &str =
    "must be a trust domain name: 1-255 characters of [a-z0-9._-]";

/// A list of trust domain names.
pub const TRUST_DOMAIN_LIST_RULE: &str = "self.all(td, td.matches('^[a-z0-9._-]{1,255}$'))";

/// An SVID TTL: a Go duration between 0 (server default) and one year. The syntax is matched
/// before `duration()` runs: `duration()` of an unparsable string is an evaluation error, which
/// the API server reports with its own words ("type conversion error") instead of the message.
/// At most five digits per component keep every 32-character value far below the overflow of
/// Go's durations (about 2.5 million hours), so `duration()` never fails on a matched value.
pub const TTL_RULE: &str = "self == '0' || (self.matches('^([0-9]{1,5}([.][0-9]{1,9})?(ns|us|ms|s|m|h))+$') && duration(self) <= duration('8760h'))";
/// Message for [`TTL_RULE`].
pub const TTL_MESSAGE: &str =
    "must be a duration such as 1h or 90m, between 0s (server default) and 8760h";

/// Every selector has the form `type:value`.
pub const SELECTORS_RULE: &str = "self.all(s, s.matches('^[a-z0-9_]+:.+$'))";
/// Message for [`SELECTORS_RULE`].
pub const SELECTORS_MESSAGE: &str =
    "every selector must have the form type:value, e.g. k8s:ns:default";
