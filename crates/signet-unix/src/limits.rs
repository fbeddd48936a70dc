//! Bounded listeners. A local user could open connections until the daemon runs out of file
//! descriptors (then `accept` fails at once, forever, and a loop that retries at once spins a core
//! and floods the log while real workloads time out). Here: a cap on connections in total and per
//! peer (a uid on Unix sockets, a source address on TCP), checked before a connection costs more
//! than its descriptor, and accept errors that pause with backoff and log at most once a second.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// How many connections a listener keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections in total.
    pub total: usize,
    /// Open connections of one peer (uid, or source address).
    pub per_peer: usize,
}

impl ConnectionLimits {
    /// The limits, the total lowered to what the process's descriptor limit can hold (with
    /// `reserve` descriptors left for everything else the daemon opens) when each connection
    /// holds `per_connection` descriptors (a socket, and e.g. its caller's pidfd).
    pub fn within_descriptor_limit(self, reserve: usize, per_connection: usize) -> Self {
        let descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX);
        let total = self
            .total
            .min((descriptors.saturating_sub(reserve) / per_connection.max(1)).max(1));
        Self {
            total,
            per_peer: self.per_peer.min(total),
        }
    }
}

/// Raises the soft descriptor limit to the hard one (a daemon that serves many local clients
/// should not stop at the 1,024 a shell hands down).
pub fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let below = match (limit.current, limit.maximum) {
        (Some(current), Some(maximum)) => current < maximum,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

/// Why a connection was refused, for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The listener holds its total.
    Total,
    /// The caller (its uid, or its source address) holds its share.
    PerPeer,
}

impl Refusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::PerPeer => "per_peer",
        }
    }
}

/// What identifies a peer for the per-peer share.
pub trait PeerKey: Copy + Eq + Hash + Debug + Send + Sync + 'static {}
impl<K: Copy + Eq + Hash + Debug + Send + Sync + 'static> PeerKey for K {}

#[derive(Debug)]
struct Counts<K> {
    total: usize,
    by_peer: HashMap<K, usize>,
}

/// Counts open connections and hands out slots within the limits; `K` identifies a peer (a uid
/// by default).
#[derive(Debug)]
pub struct ConnectionLimiter<K: PeerKey = u32> {
    limits: ConnectionLimits,
    counts: Mutex<Counts<K>>,
    refused_total: AtomicU64,
    refused_per_peer: AtomicU64,
}

impl<K: PeerKey> ConnectionLimiter<K> {
    /// A limiter with these limits.
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::new(Counts {
                total: 0,
                by_peer: HashMap::new(),
            }),
            refused_total: AtomicU64::new(0),
            refused_per_peer: AtomicU64::new(0),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// A slot for a new connection of `peer`, held until the connection is dropped.
    pub fn try_acquire(self: &Arc<Self>, peer: K) -> Result<ConnectionSlot<K>, Refusal> {
        let mut counts = self.counts.lock();
        let refusal = if counts.total >= self.limits.total {
            Some(Refusal::Total)
        } else if counts.by_peer.get(&peer).copied().unwrap_or(0) >= self.limits.per_peer {
            Some(Refusal::PerPeer)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            match refusal {
                Refusal::Total => &self.refused_total,
                Refusal::PerPeer => &self.refused_per_peer,
            }
            .fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }
        counts.total += 1;
        *counts.by_peer.entry(peer).or_default() += 1;
        Ok(ConnectionSlot {
            limiter: self.clone(),
            peer,
        })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.counts.lock().total
    }

    /// Connections refused since start, by reason.
    pub fn refused(&self, reason: Refusal) -> u64 {
        match reason {
            Refusal::Total => &self.refused_total,
            Refusal::PerPeer => &self.refused_per_peer,
        }
        .load(Ordering::Relaxed)
    }

    fn release(&self, peer: K) {
        let mut counts = self.counts.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_peer.remove(&peer);
            }
        }
    }
}

/// One open connection's place within the limits: keep it with the connection, drop it with it.
#[derive(Debug)]
pub struct ConnectionSlot<K: PeerKey = u32> {
    limiter: Arc<ConnectionLimiter<K>>,
    peer: K,
}

impl<K: PeerKey> Drop for ConnectionSlot<K> {
    fn drop(&mut self) {
        self.limiter.release(self.peer);
    }
}

/// What an accept loop does after `accept` failed: pause (1 ms doubling to 1 s; running out of
/// descriptors does not pass by retrying at once) and log at most once a second, with the number
/// of failures not logged since.
#[derive(Debug)]
pub struct AcceptErrors {
    what: &'static str,
    pause: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
    total: u64,
}

const FIRST_PAUSE: Duration = Duration::from_millis(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

impl AcceptErrors {
    /// For the listener named `what` (in log lines).
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            pause: FIRST_PAUSE,
            last_log: None,
            unlogged: 0,
            total: 0,
        }
    }

    /// Accept errors since start.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Calls `accept` until it succeeds, pausing (and logging, rate-limited) after each failure.
    pub async fn accept<T, F, Fut>(&mut self, mut accept: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = io::Result<T>>,
    {
        loop {
            match accept().await {
                Ok(accepted) => {
                    self.reset();
                    return accepted;
                }
                Err(error) => self.pause_after(&error).await,
            }
        }
    }

    /// After a successful accept.
    pub fn reset(&mut self) {
        self.pause = FIRST_PAUSE;
    }

    /// Logs (rate-limited) and waits before the next accept.
    pub async fn pause_after(&mut self, error: &io::Error) {
        self.total += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            tracing::warn!(
                listener = self.what,
                %error,
                not_logged_since_last = self.unlogged,
                pause = ?self.pause,
                "accepting a connection failed (out of file descriptors?); pausing"
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
    }
}
