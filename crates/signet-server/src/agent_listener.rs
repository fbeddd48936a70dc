//! The agent API's TCP listener. Anyone on the network can reach it, so every stage is bounded:
//! connections in total; connections still in the TLS handshake or without an agent SVID (those
//! can only attest), per source address and in total; the handshake's duration; and the
//! lifetime of a connection without an agent SVID. Authenticated agents keep their sync stream
//! open as long as they answer HTTP/2 keep-alive pings.
//!
//! A flood from many addresses fills the unauthenticated pool; refusing newcomers then would
//! refuse real agents too. So a full pool closes its *oldest* member instead: a flood churns
//! through the pool while a real handshake (milliseconds) and attestation (one call) complete.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;

use signet_unix::{ConnectionLimiter, ConnectionLimits, ConnectionSlot, Refusal};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

use crate::connection_lifetime::Bounded;
use crate::metrics::{RefusalLabels, ServerMetrics};

/// The bounds of the agent API listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentApiBounds {
    /// Open connections in total (lowered to what the descriptor limit holds).
    pub max_connections: usize,
    /// Connections of one source address that are in their TLS handshake or carry no agent
    /// SVID.
    pub unauthenticated_per_source: usize,
    /// Such connections in total; when full, the oldest is closed to admit a new one.
    pub max_unauthenticated: usize,
    /// Longest TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a connection without an agent SVID may stay open.
    pub unauthenticated_lifetime: Duration,
}

impl Default for AgentApiBounds {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            unauthenticated_per_source: 128,
            max_unauthenticated: 4_096,
            handshake_timeout: Duration::from_secs(10),
            unauthenticated_lifetime: Duration::from_secs(60),
        }
    }
}

/// Descriptors kept for everything but agent connections (database, key files, the API server).
const RESERVED_DESCRIPTORS: usize = 256;

/// A connection's places within the bounds, released when it closes.
#[derive(Debug)]
pub(crate) struct Slots {
    _total: ConnectionSlot<()>,
    unauthenticated: Option<(ConnectionSlot<IpAddr>, Membership)>,
}

impl Slots {
    /// Whether the unauthenticated pool closed this connection to admit a newer one.
    pub(crate) fn poll_evicted(&self, cx: &mut Context<'_>) -> bool {
        self.unauthenticated
            .as_ref()
            .is_some_and(|(_, membership)| membership.eviction.poll(cx))
    }
}

/// Set when the pool closes a member; wakes the task reading that connection.
#[derive(Debug, Default)]
struct Eviction {
    evicted: AtomicBool,
    waker: AtomicWaker,
}

impl Eviction {
    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn poll(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.evicted.load(Ordering::Acquire)
    }
}

/// The connections without an agent SVID, oldest first.
#[derive(Debug)]
struct UnauthenticatedPool {
    capacity: usize,
    next: AtomicU64,
    members: Mutex<BTreeMap<u64, Arc<Eviction>>>,
}

/// A place in the pool, given back on drop.
#[derive(Debug)]
pub(crate) struct Membership {
    pool: Arc<UnauthenticatedPool>,
    id: u64,
    eviction: Arc<Eviction>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.pool.members.lock().remove(&self.id);
    }
}

impl UnauthenticatedPool {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity: capacity.max(1),
            next: AtomicU64::new(0),
            members: Mutex::default(),
        })
    }

    /// A place for a new connection; the second value says whether the oldest was closed.
    fn admit(self: &Arc<Self>) -> (Membership, bool) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let eviction = Arc::new(Eviction::default());
        let mut members = self.members.lock();
        let mut evicted = false;
        while members.len() >= self.capacity {
            if let Some((_, oldest)) = members.pop_first() {
                oldest.evict();
                evicted = true;
            }
        }
        members.insert(id, eviction.clone());
        drop(members);
        (
            Membership {
                pool: self.clone(),
                id,
                eviction,
            },
            evicted,
        )
    }
}

/// An accepted, handshaken agent API connection.
pub(crate) type AgentConnection = Bounded<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

/// Accepts on `listener`, handshakes within the bounds and hands connections to the gRPC server
/// through the returned stream.
pub(crate) fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    bounds: AgentApiBounds,
    metrics: Arc<ServerMetrics>,
) -> (
    ReceiverStream<std::io::Result<AgentConnection>>,
    tokio::task::JoinHandle<()>,
) {
    signet_unix::raise_descriptor_limit();
    let total = ConnectionLimiter::<()>::new(
        ConnectionLimits {
            total: bounds.max_connections,
            per_peer: bounds.max_connections,
        }
        .within_descriptor_limit(RESERVED_DESCRIPTORS, 1),
    );
    let per_source = ConnectionLimiter::<IpAddr>::new(ConnectionLimits {
        total: bounds.max_connections,
        per_peer: bounds.unauthenticated_per_source,
    });
    let pool = UnauthenticatedPool::new(bounds.max_unauthenticated);
    metrics.watch_agent_connections(total.clone());
    let (conn_tx, conn_rx) = tokio::sync::mpsc::channel(128);
    let task = signet_unix::spawn_named("agent-api-accept", async move {
        let mut errors = signet_unix::AcceptErrors::new("agent API");
        let refusal_log = signet_tls::log_budget::LogBudget::new(1);
        loop {
            let (tcp, peer) = errors.accept(|| listener.accept()).await;
            let slots = total.try_acquire(()).and_then(|total_slot| {
                let pending = per_source.try_acquire(peer.ip())?;
                Ok((total_slot, pending))
            });
            let (total_slot, pending) = match slots {
                Ok(slots) => slots,
                Err(refusal) => {
                    let limit = match refusal {
                        Refusal::Total => "total",
                        Refusal::PerPeer => "unauthenticated_per_source",
                    };
                    metrics
                        .agent_connections_refused
                        .get_or_create(&RefusalLabels { limit })
                        .inc();
                    if let Some(suppressed) = refusal_log.take() {
                        tracing::warn!(%peer, limit, suppressed, "agent API connection refused: connection limit reached");
                    }
                    continue;
                }
            };
            let (membership, evicted) = pool.admit();
            if evicted {
                metrics
                    .agent_connections_refused
                    .get_or_create(&RefusalLabels {
                        limit: "unauthenticated_oldest_closed",
                    })
                    .inc();
            }
            // Small gRPC frames (unary responses, stream deltas) must not wait for delayed ACKs.
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let conn_tx = conn_tx.clone();
            let metrics = metrics.clone();
            // Handshakes run concurrently so one slow client cannot stall accepting.
            signet_unix::spawn_named("agent-api-handshake", async move {
                let eviction = membership.eviction.clone();
                let evicted = std::future::poll_fn(|cx| {
                    if eviction.poll(cx) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                });
                let handshake = tokio::select! {
                    handshake = tokio::time::timeout(bounds.handshake_timeout, acceptor.accept(tcp)) => handshake,
                    () = evicted => {
                        debug!(%peer, "handshake abandoned: the unauthenticated pool admitted a newer connection");
                        return;
                    }
                };
                match handshake {
                    Ok(Ok(stream)) => {
                        let authenticated = stream.get_ref().1.peer_certificates().is_some();
                        let (lifetime, unauthenticated) = if authenticated {
                            (None, None)
                        } else {
                            (
                                Some(bounds.unauthenticated_lifetime),
                                Some((pending, membership)),
                            )
                        };
                        let slots = Slots {
                            _total: total_slot,
                            unauthenticated,
                        };
                        let stream = Bounded::new(stream, lifetime, slots);
                        let _ = conn_tx.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => {
                        metrics.handshake_failed("error");
                        debug!(%peer, %error, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics.handshake_failed("timeout");
                        debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    (ReceiverStream::new(conn_rx), task)
}
