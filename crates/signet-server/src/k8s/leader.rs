//! Leader election on a `coordination.k8s.io/v1` Lease: one replica rotates the CA, writes CR
//! status and publishes the bundle; the others serve agents and follow. Writes use the Lease's
//! `resourceVersion`, so two replicas can never both win the same term.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's name (its pod name; the Lease holder identity).
    pub replica_name: String,
    /// How long a lease lasts without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews (and others check).
    pub renew_every: Duration,
}

/// One participant.
#[derive(Debug, Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl LeaderElector {
    /// A participant using `client`.
    pub fn new(client: kube::Client, config: LeaderConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    fn lease(&self, resource_version: Option<String>, spec: LeaseSpec) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.lease_name.clone()),
                namespace: Some(self.config.namespace.clone()),
                resource_version,
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        }
    }

    /// One round: acquire, renew or observe. Returns whether this replica leads now.
    pub async fn step(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let me = &self.config.replica_name;
        let existing = self.api.get_opt(&self.config.lease_name).await?;
        let Some(lease) = existing else {
            let spec = LeaseSpec {
                holder_identity: Some(me.clone()),
                lease_duration_seconds: Some(seconds(self.config.lease_duration)),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            };
            return match self
                .api
                .create(&PostParams::default(), &self.lease(None, spec))
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .map_or(self.config.lease_duration, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            let age = now.duration_since(renewed.0);
            age.as_secs() >= i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
        });
        let next = if holder == *me {
            LeaseSpec {
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(seconds(self.config.lease_duration)),
                ..spec
            }
        } else if holder.is_empty() || expired {
            LeaseSpec {
                holder_identity: Some(me.clone()),
                lease_duration_seconds: Some(seconds(self.config.lease_duration)),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + 1),
                ..spec
            }
        } else {
            return Ok(false);
        };
        match self
            .api
            .replace(
                &self.config.lease_name,
                &PostParams::default(),
                &self.lease(lease.metadata.resource_version.clone(), next),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Runs the election forever; the receiver reads `true` while this replica leads. On API
    /// errors a leader steps down once its own lease would have expired, so two replicas never
    /// both act as leader for longer than the API outage lets them.
    pub fn spawn(self) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let task = signet_unix::spawn_named("leader-election", async move {
            let mut last_renewal: Option<tokio::time::Instant> = None;
            loop {
                let leading = match self.step(Timestamp::now()).await {
                    Ok(true) => {
                        last_renewal = Some(tokio::time::Instant::now());
                        true
                    }
                    Ok(false) => false,
                    Err(error) => {
                        warn!(%error, "leader election round failed");
                        last_renewal.is_some_and(|t| t.elapsed() < self.config.lease_duration)
                    }
                };
                if *tx.borrow() != leading {
                    info!(replica = %self.config.replica_name, leading, "leadership changed");
                    tx.send_replace(leading);
                }
                tokio::time::sleep(self.config.renew_every).await;
            }
        });
        (rx, task)
    }
}
