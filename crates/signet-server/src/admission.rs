//! Admission control for the agent API, so that a reconnect storm (thousands of agents coming
//! back at once after a server restart or a network partition) costs bounded memory and CPU and
//! every agent still gets through:
//! - attestations and signing batches run at most a few at a time per core; a bounded number
//!   wait, and beyond that the caller is told to come back later;
//! - each agent has a signing budget (a token bucket of SVIDs), so one agent — buggy or hostile
//!   — cannot take the signer from the others;
//! - full entry snapshots (the expensive part of a reconnect) are built a bounded number at a
//!   time; the others wait, holding nothing but their connection.
//!
//! "Come back later" is RESOURCE_EXHAUSTED with a `grpc-retry-pushback-ms` value (the gRPC
//! retry-throttling key) chosen at random over a window that grows with the queue, so refused
//! agents do not return in lockstep; the agent sleeps that long instead of its own backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use signet_spiffe::SpiffeId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use signet_proto::pushback::with_pushback as pushback;

/// The admission bounds of one server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionLimits {
    /// Attestations and signing batches running at once.
    pub concurrent_work: usize,
    /// Calls waiting for a place; more are refused with a pushback.
    pub max_waiting: usize,
    /// Full snapshots being built and sent at once.
    pub concurrent_snapshots: usize,
    /// Each agent's sustained signing rate, SVIDs per second.
    pub agent_sign_rate: f64,
    /// Each agent's signing burst, SVIDs.
    pub agent_sign_burst: f64,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            concurrent_work: 2 * cores,
            max_waiting: 1024,
            concurrent_snapshots: 64,
            agent_sign_rate: 5_000.0,
            agent_sign_burst: 20_000.0,
        }
    }
}

/// Why a call was not admitted (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many calls waiting.
    Queue,
    /// The agent's signing budget is spent.
    AgentRate,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Queue => "queue",
            Refusal::AgentRate => "agent_sign_rate",
        }
    }
}

/// A refused call: the status to answer and why.
#[derive(Debug)]
pub struct Refused {
    /// RESOURCE_EXHAUSTED with a pushback.
    pub status: Status,
    /// Why.
    pub reason: Refusal,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The agent API's admission control.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    work: Arc<Semaphore>,
    waiting: AtomicUsize,
    snapshots: Arc<Semaphore>,
    buckets: Mutex<HashMap<SpiffeId, Bucket>>,
}

/// A place to work; released on drop.
#[derive(Debug)]
pub struct Admitted(#[allow(dead_code, reason = "held for its drop")] OwnedSemaphorePermit);

impl Admission {
    /// Admission control with these limits.
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            work: Arc::new(Semaphore::new(limits.concurrent_work.max(1))),
            snapshots: Arc::new(Semaphore::new(limits.concurrent_snapshots.max(1))),
            waiting: AtomicUsize::new(0),
            buckets: Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// Waits for a place to attest or sign, or refuses at once when too many already wait.
    pub async fn work(&self) -> Result<Admitted, Refused> {
        if let Ok(permit) = self.work.clone().try_acquire_owned() {
            return Ok(Admitted(permit));
        }
        let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.waiting);
        if waiting >= self.limits.max_waiting {
            return Err(self.refuse(Refusal::Queue, waiting));
        }
        match self.work.clone().acquire_owned().await {
            Ok(permit) => Ok(Admitted(permit)),
            // Never closed; answer as if busy rather than panic.
            Err(_) => Err(self.refuse(Refusal::Queue, waiting)),
        }
    }

    /// Takes `count` SVIDs from `agent`'s signing budget, or refuses with the time until the
    /// budget holds them.
    pub fn sign_budget(&self, agent: &SpiffeId, count: usize) -> Result<(), Refused> {
        self.sign_budget_at(agent, count, Instant::now())
    }

    fn sign_budget_at(&self, agent: &SpiffeId, count: usize, now: Instant) -> Result<(), Refused> {
        let (rate, burst) = (self.limits.agent_sign_rate, self.limits.agent_sign_burst);
        if rate <= 0.0 {
            return Ok(());
        }
        #[allow(clippy::cast_precision_loss, reason = "batch sizes are small")]
        let wanted = (count as f64).min(burst);
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Forget agents whose budget is full again: they are indistinguishable from new.
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(agent.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((wanted - bucket.tokens) / rate);
        Err(Refused {
            status: pushback(
                Status::resource_exhausted(format!(
                    "signing rate of this agent exceeded ({rate:.0} SVIDs/s, burst {burst:.0}); retry later"
                )),
                wait,
                wait / 2,
            ),
            reason: Refusal::AgentRate,
        })
    }

    /// Waits for a place to build and send a full snapshot.
    pub async fn snapshot(&self) -> Option<Admitted> {
        self.snapshots
            .clone()
            .acquire_owned()
            .await
            .ok()
            .map(Admitted)
    }

    fn refuse(&self, reason: Refusal, waiting: usize) -> Refused {
        // The deeper the queue, the longer the window the refused spread over: about the time
        // the queue takes to drain at a few milliseconds per call, at least a second.
        #[allow(clippy::cast_possible_truncation, reason = "bounded by max_waiting")]
        let window = Duration::from_millis(1_000 + 4 * waiting as u64);
        Refused {
            status: pushback(
                Status::resource_exhausted("the server is busy (reconnect storm?); retry later"),
                Duration::from_millis(500),
                window,
            ),
            reason,
        }
    }
}

struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signet_proto::pushback::pushback_of;

    fn agent(n: u32) -> SpiffeId {
        SpiffeId::new(&format!("spiffe://example.org/signet/agent/join_token/{n}")).unwrap()
    }

    #[test]
    fn each_agent_has_its_own_signing_budget_refilled_at_its_rate() {
        let admission = Admission::new(AdmissionLimits {
            agent_sign_rate: 100.0,
            agent_sign_burst: 1_000.0,
            ..AdmissionLimits::default()
        });
        let start = Instant::now();
        assert!(admission.sign_budget_at(&agent(1), 1_000, start).is_ok());
        let refused = admission.sign_budget_at(&agent(1), 500, start).unwrap_err();
        assert_eq!(refused.reason, Refusal::AgentRate);
        assert_eq!(refused.status.code(), tonic::Code::ResourceExhausted);
        let wait = pushback_of(&refused.status).unwrap();
        assert!(
            (Duration::from_secs(5)..=Duration::from_millis(7_600)).contains(&wait),
            "{wait:?}"
        );
        // Another agent is not affected.
        assert!(admission.sign_budget_at(&agent(2), 1_000, start).is_ok());
        // Five seconds later 500 tokens are back.
        assert!(
            admission
                .sign_budget_at(&agent(1), 500, start + Duration::from_secs(5))
                .is_ok()
        );
        // A batch larger than the burst is admitted once the bucket is full, not never.
        let later = start + Duration::from_secs(100);
        assert!(admission.sign_budget_at(&agent(1), 5_000, later).is_ok());
    }

    #[tokio::test]
    async fn work_is_bounded_and_the_queue_beyond_its_bound_is_refused_with_jitter() {
        let admission = Arc::new(Admission::new(AdmissionLimits {
            concurrent_work: 2,
            max_waiting: 3,
            ..AdmissionLimits::default()
        }));
        let first = admission.work().await.unwrap();
        let _second = admission.work().await.unwrap();
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let admission = admission.clone();
            waiters.push(tokio::spawn(async move { admission.work().await.is_ok() }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut waits = std::collections::HashSet::new();
        for _ in 0..20 {
            let refused = admission.work().await.unwrap_err();
            assert_eq!(refused.reason, Refusal::Queue);
            let wait = pushback_of(&refused.status).unwrap();
            assert!(wait >= Duration::from_millis(500), "{wait:?}");
            waits.insert(wait);
        }
        assert!(waits.len() > 5, "pushbacks are spread: {waits:?}");
        drop(first);
        drop(_second);
        for waiter in waiters {
            assert!(waiter.await.unwrap(), "a waiting call is admitted");
        }
    }
}
