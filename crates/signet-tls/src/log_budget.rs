//! A per-second budget for log lines peers can trigger (denials, failed handshakes): a flood of
//! bad requests must not flood the logs too. Counters still count every event; the first line
//! after a suppressed stretch says how many were left out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// At most `per_second` lines per wall-clock second.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u64,
    /// The current second (high 32 bits) and the lines spent in it (low 32 bits).
    state: AtomicU64,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// A budget of `per_second` lines.
    pub const fn new(per_second: u64) -> Self {
        Self {
            per_second,
            state: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now; when it may, also how many were suppressed since the
    /// last one written.
    pub fn take(&self) -> Option<u64> {
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() & 0xffff_ffff);
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (at, spent) = (current >> 32, current & 0xffff_ffff);
            let next = if at == second {
                if spent >= self.per_second {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                current + 1
            } else {
                (second << 32) | 1
            };
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_budget_are_suppressed_and_reported_later() {
        let budget = LogBudget::new(3);
        // Stay within one second (retry if the test straddles a second boundary).
        for _ in 0..5 {
            let start = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let taken: Vec<Option<u64>> = (0..5).map(|_| budget.take()).collect();
            let end = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            if start == end {
                assert_eq!(taken.iter().filter(|t| t.is_some()).count(), 3, "{taken:?}");
                assert_eq!(&taken[3..], &[None, None]);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
