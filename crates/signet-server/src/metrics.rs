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

/// The server's metric families.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// SVIDs signed.
    pub svids_signed: Family<SvidLabels, Counter>,
    /// Signing requests refused.
    pub svids_refused: Family<SvidLabels, Counter>,
    /// Node attestations.
    pub attestations: Family<AttestationLabels, Counter>,
    /// Open entry sync streams.
    pub sync_streams: Gauge,
    /// Entries in the index.
    pub entries: Gauge,
}

impl ServerMetrics {
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
        sub.register("entries", "Registration entries", self.entries.clone());
    }
}
