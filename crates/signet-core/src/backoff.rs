//! Reconnect delays: exponential between a floor and a ceiling, each drawn ±50 % around its
//! nominal value so that clients cut off together (an agent restart, a server outage) do not all
//! come back at the same instant.

use std::time::Duration;

/// Exponential backoff with ±50 % jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    floor: Duration,
    ceiling: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `floor`, doubles up to `ceiling`.
    pub fn new(floor: Duration, ceiling: Duration) -> Self {
        Self {
            floor,
            ceiling: ceiling.max(floor),
            next: floor,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.ceiling);
        nominal.mul_f64(0.5 + fastrand::f64())
    }

    /// Back to the floor after a success.
    pub fn reset(&mut self) {
        self.next = self.floor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_with_bounded_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let nominal = [100u64, 200, 400, 800, 1000, 1000];
        for n in nominal {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(
                (n / 2..=n * 3 / 2).contains(&delay),
                "{delay} ms for {n} ms"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(150));
    }

    #[test]
    fn delays_spread() {
        let mut delays: Vec<_> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 40, "jitter spreads clients apart");
    }
}
