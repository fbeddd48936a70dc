//! "Come back later, after this long": the `grpc-retry-pushback-ms` metadata gRPC's retry
//! throttling reads, set by the server's admission control and the agent's Workload API on
//! UNAVAILABLE answers, with jitter so that refused callers do not return in lockstep.

use std::time::Duration;

/// The metadata key carrying how long a refused caller should wait, in milliseconds.
pub const PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";

/// `status` with a pushback of `base` plus a uniformly random part of `jitter`.
pub fn with_pushback(mut status: tonic::Status, base: Duration, jitter: Duration) -> tonic::Status {
    let wait = base + jitter.mul_f64(fastrand::f64());
    let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    if let Ok(value) = millis.to_string().parse() {
        status.metadata_mut().insert(PUSHBACK_KEY, value);
    }
    status
}

/// The pushback a status carries, at most five minutes (a server cannot park a caller for
/// days).
pub fn pushback_of(status: &tonic::Status) -> Option<Duration> {
    let millis: u64 = status
        .metadata()
        .get(PUSHBACK_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_millis(millis.min(300_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushbacks_are_jittered_read_back_and_capped() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let status = with_pushback(
                tonic::Status::unavailable("x"),
                Duration::from_millis(500),
                Duration::from_secs(1),
            );
            let wait = pushback_of(&status).unwrap();
            assert!((Duration::from_millis(500)..=Duration::from_millis(1500)).contains(&wait));
            seen.insert(wait);
        }
        assert!(seen.len() > 10);
        let mut hostile = tonic::Status::unavailable("x");
        hostile
            .metadata_mut()
            .insert(PUSHBACK_KEY, "99999999999".parse().unwrap());
        assert_eq!(pushback_of(&hostile), Some(Duration::from_secs(300)));
        let mut garbage = tonic::Status::unavailable("x");
        garbage
            .metadata_mut()
            .insert(PUSHBACK_KEY, "soon".parse().unwrap());
        assert_eq!(pushback_of(&garbage), None);
    }
}
