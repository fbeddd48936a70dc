//! Prometheus metrics of the server (`signet_server_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of signing counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SvidLabels {
    /// `x509`, `jwt` or `agent`.
    pub kind: &'static str,
}

/// Label of attestation counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttestationLabels {
    /// `ok` or the refusal reason.
    pub result: &'static str,
}

/// Label of refused connections.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `total` or `unauthenticated_per_source`: the limit reached.
    pub limit: &'static str,
}

/// Labels of agent API calls refused by admission control.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// The call.
    pub call: &'static str,
    /// `queue` or `agent_sign_rate`.
    pub reason: &'static str,
}

/// Label of failed handshakes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `timeout` or `error`.
    pub reason: &'static str,
}

/// Labels of a CA authority gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthorityLabels {
    /// `x509` or `jwt`.
    pub kind: &'static str,
    /// Subject key id or kid.
    pub id: String,
    /// `prepared`, `active` or `old`.
    pub status: &'static str,
    /// `true` once an operator tainted it.
    pub tainted: &'static str,
}

/// Label of CA rotation events.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaEventLabels {
    /// `prepared`, `activated`, `expired`, `tainted` or `revoked`.
    pub event: &'static str,
}

/// The server's metric families.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// Open agent API connections (sampled at scrape).
    pub agent_connections: Gauge,
    /// Agent API connections closed at accept by a limit.
    pub agent_connections_refused: Family<RefusalLabels, Counter>,
    /// Agent API TLS handshakes that failed or timed out.
    pub agent_handshake_failures: Family<HandshakeLabels, Counter>,
    agent_limiter: std::sync::OnceLock<std::sync::Arc<signet_unix::ConnectionLimiter<()>>>,
    /// SVIDs signed.
    pub svids_signed: Family<SvidLabels, Counter>,
    /// Signing requests refused.
    pub svids_refused: Family<SvidLabels, Counter>,
    /// Node attestations.
    pub attestations: Family<AttestationLabels, Counter>,
    /// Open entry sync streams.
    pub sync_streams: Gauge,
    /// Agent API calls refused by admission control.
    pub admission_refusals: Family<AdmissionLabels, Counter>,
    /// Entries in the index.
    pub entries: Gauge,
    /// Unix time at which each authority expires (sampled at scrape).
    pub authority_expiry: Family<AuthorityLabels, Gauge>,
    /// Live SVIDs each authority signed, as the agents report them (sampled at scrape).
    pub authority_svids: Family<AuthorityLabels, Gauge>,
    /// Agents whose SVID report is current (sampled at scrape).
    pub reporting_agents: Gauge,
}

impl ServerMetrics {
    /// Samples open agent API connections from `limiter` at every scrape.
    pub(crate) fn watch_agent_connections(
        &self,
        limiter: std::sync::Arc<signet_unix::ConnectionLimiter<()>>,
    ) {
        let _ = self.agent_limiter.set(limiter);
    }

    /// Open agent API connections now.
    pub fn open_agent_connections(&self) -> i64 {
        self.agent_limiter
            .get()
            .map_or(0, |l| i64::try_from(l.open()).unwrap_or(i64::MAX))
    }

    /// Counts a failed agent API handshake.
    pub(crate) fn handshake_failed(&self, reason: &'static str) {
        self.agent_handshake_failures
            .get_or_create(&HandshakeLabels { reason })
            .inc();
    }

    /// Registers the families under `signet_server_`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("signet_server");
        sub.register("svids_signed", "SVIDs signed", self.svids_signed.clone());
        sub.register(
            "svids_refused",
            "SVID requests refused",
            self.svids_refused.clone(),
        );
        sub.register(
            "attestations",
            "Node attestations by result",
            self.attestations.clone(),
        );
        sub.register(
            "sync_streams",
            "Open SyncEntries streams",
            self.sync_streams.clone(),
        );
        sub.register(
            "admission_refusals",
            "Agent API calls told to retry later by admission control (reconnect storm, agent signing rate)",
            self.admission_refusals.clone(),
        );
        sub.register("entries", "Registration entries", self.entries.clone());
        sub.register(
            "ca_authority_expiry_timestamp_seconds",
            "When each CA authority expires, Unix seconds",
            self.authority_expiry.clone(),
        );
        sub.register(
            "ca_authority_svids",
            "Live SVIDs signed by each CA authority, as reported by the agents",
            self.authority_svids.clone(),
        );
        sub.register(
            "ca_reporting_agents",
            "Agents whose report of the SVIDs they hold is current",
            self.reporting_agents.clone(),
        );
        sub.register(
            "agent_api_connections",
            "Open agent API connections",
            self.agent_connections.clone(),
        );
        sub.register(
            "agent_api_connections_refused",
            "Agent API connections closed at accept, by the limit reached",
            self.agent_connections_refused.clone(),
        );
        sub.register(
            "agent_api_handshake_failures",
            "Agent API TLS handshakes that failed or timed out",
            self.agent_handshake_failures.clone(),
        );
    }
}
