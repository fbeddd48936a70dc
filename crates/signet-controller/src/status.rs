//! Status values computed from the index (pure): what the one writer on the leader applies.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use signet_api::status::{MASKED, READY, condition};
use signet_api::{ClusterSPIFFEIDStatus, ClusterStaticEntryStatus};

use crate::index::{IdentityReport, StaticReport};

/// The status of a ClusterSPIFFEID.
pub fn identity_status(
    report: &IdentityReport,
    previous: &[Condition],
    now: Time,
) -> ClusterSPIFFEIDStatus {
    let stats = report.stats.clone();
    let (ready, reason, message) = if let Some(error) = &report.error {
        let serving = if report.serving_previous {
            "; the previous valid generation is still served"
        } else {
            ""
        };
        (false, error.reason(), format!("{error}{serving}"))
    } else if stats.pod_entry_render_failures > 0 {
        let examples: Vec<String> = report
            .failures
            .iter()
            .map(|(pod, why)| format!("{pod}: {why}"))
            .collect();
        (
            false,
            "RenderFailures",
            format!(
                "{} of {} selected pods could not be rendered ({})",
                stats.pod_entry_render_failures,
                stats.pods_selected,
                examples.join("; ")
            ),
        )
    } else {
        (
            true,
            "Reconciled",
            format!(
                "{} entries for {} selected pods ({} masked)",
                stats.entries_to_set, stats.pods_selected, stats.entries_masked
            ),
        )
    };
    ClusterSPIFFEIDStatus {
        observed_generation: report.generation,
        conditions: vec![condition(
            previous,
            READY,
            ready,
            reason,
            message,
            report.generation,
            now,
        )],
        stats,
    }
}

/// The status of a ClusterStaticEntry. `Masked` is stable: it changes only when masking does.
pub fn static_status(
    report: &StaticReport,
    previous: &[Condition],
    now: Time,
) -> ClusterStaticEntryStatus {
    let (ready, reason, message) = match (&report.error, report.served, report.masked) {
        (Some(error), served, _) => (
            false,
            "Invalid",
            if served {
                format!("{error}; the previous valid generation is still served")
            } else {
                error.to_string()
            },
        ),
        (None, true, _) => (true, "Reconciled", "the entry is served".to_owned()),
        (None, false, true) => (
            false,
            "Masked",
            "an older resource declares the same SPIFFE ID, parent and selectors".to_owned(),
        ),
        (None, false, false) => (false, "Pending", "not computed yet".to_owned()),
    };
    ClusterStaticEntryStatus {
        observed_generation: report.generation,
        conditions: vec![
            condition(
                previous,
                READY,
                ready,
                reason,
                message,
                report.generation,
                now.clone(),
            ),
            condition(
                previous,
                MASKED,
                report.masked,
                if report.masked { "Masked" } else { "NotMasked" },
                String::new(),
                report.generation,
                now,
            ),
        ],
    }
}
