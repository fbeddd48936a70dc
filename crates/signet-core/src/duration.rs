//! Go duration strings (`1h30m`, `90s`, `1.5h`), the format Kubernetes resources use for TTLs
//! (`metav1.Duration`).

use std::time::Duration;

/// Why a string is not a Go duration Signet accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The text is not a duration.
    #[error("{0:?} is not a duration such as 1h30m, 90s or 1.5h")]
    Invalid(String),
    /// The duration is negative.
    #[error("{0:?} is negative")]
    Negative(String),
    /// The duration overflows.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration. `0` alone is allowed without a unit, as in Go; negative values are refused.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(text.chars().take(64).collect());
    let mut rest = text;
    if let Some(stripped) = rest.strip_prefix('-') {
        if stripped
            .trim_start_matches(['0', '.'])
            .chars()
            .any(|c| c.is_ascii_digit())
        {
            return Err(DurationError::Negative(text.to_owned()));
        }
        rest = stripped;
    } else if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, after) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(invalid());
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(invalid)?;
        let too_large = || DurationError::TooLarge(text.to_owned());
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let mut nanos = whole.checked_mul(scale).ok_or_else(too_large)?;
        // Fractions beyond nanosecond precision are dropped, as Go does.
        let mut divisor = 1u128;
        for digit in fraction.bytes().take(18) {
            divisor *= 10;
            nanos = nanos
                .checked_add(u128::from(digit - b'0') * scale / divisor)
                .ok_or_else(too_large)?;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(too_large)?;
        rest = next;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000)
        .map_err(|_| DurationError::TooLarge(text.to_owned()))?;
    let nanos = u32::try_from(total_nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

/// Parses a duration as Signet's flags and configuration files take it: a Go duration
/// (`1h30m`, `90s`, `1.5h`), or for convenience whole days (`7d`) or bare seconds (`90`).
/// Kubernetes resources take Go durations only ([`parse_go_duration`]).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let too_large = || DurationError::TooLarge(text.chars().take(64).collect());
    if digits(text) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| too_large());
    }
    if let Some(days) = text.strip_suffix('d')
        && digits(days)
    {
        return days
            .parse::<u64>()
            .ok()
            .and_then(|d| d.checked_mul(86_400))
            .map(Duration::from_secs)
            .ok_or_else(too_large);
    }
    parse_go_duration(text)
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn flags_take_go_durations_days_and_bare_seconds() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "d", "1w", "-5s", "5 s", "1d2h", "x"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::TooLarge(_))
        ));
        assert!(matches!(
            parse_duration("999999999999999999d"),
            Err(DurationError::TooLarge(_))
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        for (text, secs, nanos) in [
            ("0", 0, 0),
            ("0s", 0, 0),
            ("1h", 3600, 0),
            ("1h30m", 5400, 0),
            ("90s", 90, 0),
            ("1.5h", 5400, 0),
            (".5s", 0, 500_000_000),
            ("300ms", 0, 300_000_000),
            ("1m1s1ms1us1ns", 61, 1_001_001),
            ("2µs", 0, 2000),
            ("+5m", 300, 0),
            ("-0", 0, 0),
        ] {
            assert_eq!(
                parse_go_duration(text),
                Ok(Duration::new(secs, nanos)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_what_go_rejects_and_negatives() {
        for text in [
            "", "1", "h", "1d", "1 h", "1.2.3s", ".s", "1hh", "s1", "-", "+",
        ] {
            assert!(
                matches!(parse_go_duration(text), Err(DurationError::Invalid(_))),
                "{text}"
            );
        }
        assert!(matches!(
            parse_go_duration("-1h"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            parse_go_duration("99999999999999999999999999999999999999h"),
            Err(DurationError::TooLarge(_))
        ));
    }
}
