//! The CA as a server component: minting under a lock, periodic rotation, the published bundle
//! (watch channel, files) and the server's own TLS SVID.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use signet_ca::{
    AuthorityKind, CertificateAuthority, CsrIdRule, JwtSvidRequest, MintedX509Svid, RotationEvent,
    X509SvidRequest,
};
use signet_spiffe::{Bundle, BundleSet, SpiffeId};
use signet_tls::{BundleSource, RotatingSvid};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::error::ServerError;
use crate::metrics::CaEventLabels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Lifetime of the server's own TLS SVID.
const SERVER_SVID_TTL: Duration = Duration::from_secs(3600);

/// The signing authority shared by the server's services.
#[derive(Debug)]
pub struct AuthorityService {
    ca: RwLock<CertificateAuthority>,
    bundle: watch::Sender<Arc<Bundle>>,
    server_svid: Arc<RotatingSvid>,
    server_svid_expiry: RwLock<SystemTime>,
    bundle_files: Option<(PathBuf, PathBuf)>,
    journal: Option<crate::datastore::Datastore>,
    events: Family<CaEventLabels, Counter>,
}

impl AuthorityService {
    /// Wraps an opened CA; `bundle_dir` receives `bundle.pem` and `bundle.json`.
    pub fn new(
        ca: CertificateAuthority,
        bundle_dir: Option<PathBuf>,
        journal: Option<crate::datastore::Datastore>,
    ) -> Result<Arc<Self>, ServerError> {
        let bundle = ca.bundle()?;
        let service = Arc::new(Self {
            ca: RwLock::new(ca),
            bundle: watch::channel(Arc::new(bundle)).0,
            server_svid: Arc::new(RotatingSvid::new()),
            server_svid_expiry: RwLock::new(SystemTime::UNIX_EPOCH),
            bundle_files: bundle_dir.map(|d| (d.join("bundle.pem"), d.join("bundle.json"))),
            journal,
            events: Family::default(),
        });
        let summary = service
            .authorities()
            .iter()
            .map(|a| {
                format!(
                    "{:?} {} {:?}{}",
                    a.kind,
                    a.id,
                    a.status,
                    if a.tainted { " tainted" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        service.record(format!(
            "started: bundle sequence {}, authorities: {summary}",
            service.bundle().sequence().unwrap_or(0)
        ));
        service.write_bundle_files()?;
        service.renew_server_svid()?;
        Ok(service)
    }

    /// The trust domain's SPIFFE ID for the server.
    pub fn server_id(&self) -> Result<SpiffeId, ServerError> {
        let td = self.ca.read().trust_domain().clone();
        Ok(signet_core::server_id(&td)?)
    }

    /// The current bundle.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle.borrow().clone()
    }

    /// Notified on every bundle change.
    pub fn subscribe_bundle(&self) -> watch::Receiver<Arc<Bundle>> {
        self.bundle.subscribe()
    }

    /// The server's TLS certificate resolver.
    pub fn server_svid(&self) -> Arc<RotatingSvid> {
        self.server_svid.clone()
    }

    /// Tainted JWT authority key ids.
    pub fn tainted_jwt_authorities(&self) -> Vec<String> {
        self.ca.read().tainted_jwt_authorities()
    }

    /// Tainted X.509 authority ids.
    pub fn tainted_authorities(&self) -> Vec<String> {
        self.ca.read().tainted_x509_authorities()
    }

    /// Signs a workload X509-SVID.
    pub fn mint_x509(&self, request: &X509SvidRequest<'_>) -> Result<MintedX509Svid, ServerError> {
        Ok(self.ca.read().mint_x509_svid(request)?)
    }

    /// Mints a JWT-SVID.
    pub fn mint_jwt(&self, request: &JwtSvidRequest<'_>) -> Result<String, ServerError> {
        Ok(self.ca.read().mint_jwt_svid(request)?)
    }

    /// Signs an agent SVID: the CSR may omit the ID, which the server assigns.
    pub fn mint_agent_svid(
        &self,
        csr: &[u8],
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<MintedX509Svid, ServerError> {
        let request = X509SvidRequest {
            csr_der: csr,
            spiffe_id: id,
            ttl,
            dns_names: &[],
            csr_id_rule: CsrIdRule::ExactOrNone,
        };
        Ok(self.ca.read().mint_x509_svid(&request)?)
    }

    /// Runs time-driven rotation; publishes the bundle if it changed.
    pub fn tick(&self) -> Result<Vec<RotationEvent>, ServerError> {
        let events = self.ca.write().tick()?;
        self.after_change(&events)?;
        if self.server_svid_due() {
            self.renew_server_svid()?;
        }
        Ok(events)
    }

    /// CA rotation events by kind (counted by this replica: the one that made the change).
    pub fn events(&self) -> Family<CaEventLabels, Counter> {
        self.events.clone()
    }

    /// Operator commands (`signet ca prepare|activate|taint|revoke`). The command applies to the
    /// state in the store: another replica (the leader rotating, an operator elsewhere) may have
    /// changed it since this one loaded it. The store's generation check refuses a write that
    /// raced another; the command is then applied once more to what won.
    pub fn command(
        &self,
        f: impl Fn(&mut CertificateAuthority) -> Result<Vec<RotationEvent>, signet_ca::Error>,
    ) -> Result<Vec<RotationEvent>, ServerError> {
        self.reload()?;
        let events = match f(&mut self.ca.write()) {
            Err(signet_ca::Error::KeyStore(signet_ca::KeyStoreError::Conflict { .. })) => {
                info!(
                    "another replica changed the CA meanwhile; applying the command to its state"
                );
                self.reload()?;
                f(&mut self.ca.write())?
            }
            other => other?,
        };
        self.after_change(&events)?;
        Ok(events)
    }

    /// Adopts renewed upstream material; the leader (or a lone server) re-issues the
    /// intermediate under it.
    pub fn set_upstream(
        &self,
        upstream: signet_ca::UpstreamCa,
        leading: bool,
    ) -> Result<Vec<RotationEvent>, ServerError> {
        let events = self.command(|ca| ca.set_upstream(upstream.clone(), leading))?;
        if events.is_empty() {
            // The roots may have changed without a new authority (a follower).
            let bundle = self.ca.read().bundle()?;
            if *self.bundle.borrow().as_ref() != bundle {
                self.bundle.send_replace(Arc::new(bundle));
                self.write_bundle_files()?;
            }
        }
        Ok(events)
    }

    fn after_change(&self, events: &[RotationEvent]) -> Result<(), ServerError> {
        if events.is_empty() {
            return Ok(());
        }
        for event in events {
            info!(?event, "CA rotation");
            self.record(format!("{event:?}"));
            let name = match event {
                RotationEvent::Prepared(_) => "prepared",
                RotationEvent::Activated(_) => "activated",
                RotationEvent::Expired(_) => "expired",
                RotationEvent::Tainted(_) => "tainted",
                RotationEvent::Revoked(_) => "revoked",
            };
            self.events
                .get_or_create(&CaEventLabels { event: name })
                .inc();
        }
        let bundle = self.ca.read().bundle()?;
        let changed = self.bundle.borrow().sequence() != bundle.sequence();
        if changed
            || events
                .iter()
                .any(|e| matches!(e, RotationEvent::Tainted(_)))
        {
            self.bundle.send_replace(Arc::new(bundle));
            self.write_bundle_files()?;
        }
        if events
            .iter()
            .any(|e| matches!(e, RotationEvent::Activated(_)))
        {
            self.renew_server_svid()?;
        }
        Ok(())
    }

    /// Appends to the CA journal, in order; a failure is logged, never fatal to rotation.
    fn record(&self, event: String) {
        if let Some(journal) = &self.journal
            && let Err(error) = journal.journal_now(&event)
        {
            warn!(%error, "could not write the CA journal");
        }
    }

    fn server_svid_due(&self) -> bool {
        let expiry = *self.server_svid_expiry.read();
        let half = SERVER_SVID_TTL / 2;
        expiry
            .duration_since(SystemTime::now())
            .map_or(true, |left| left < half)
    }

    /// Issues the server's TLS SVID (`spiffe://<td>/signet/server`) with a fresh key.
    fn renew_server_svid(&self) -> Result<(), ServerError> {
        let id = self.server_id()?;
        let (key, csr) = signet_ca::csr::new_key_and_csr(Some(&id))
            .map_err(|e| ServerError::crypto("making the server SVID key and CSR", e))?;
        let request = X509SvidRequest {
            csr_der: &csr,
            spiffe_id: &id,
            ttl: SERVER_SVID_TTL,
            dns_names: &[],
            csr_id_rule: CsrIdRule::Exact,
        };
        // The server ID is reserved for workloads but minted here directly by the CA.
        let minted = self.ca.read().mint_x509_svid(&request)?;
        let chain: Vec<CertificateDer<'static>> = minted.chain.clone();
        let certified = signet_tls::certified_key(chain, &key.serialize_der())
            .map_err(|e| ServerError::crypto("loading the server SVID into TLS", e))?;
        self.server_svid.set(certified);
        *self.server_svid_expiry.write() = minted.not_after;
        Ok(())
    }

    fn write_bundle_files(&self) -> Result<(), ServerError> {
        let Some((pem_path, json_path)) = &self.bundle_files else {
            return Ok(());
        };
        let bundle = self.bundle();
        for (path, content) in [
            (pem_path, bundle.to_pem()),
            (json_path, bundle.to_spiffe_json()),
        ] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, content.as_bytes())
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| ServerError::io(format!("writing {}", path.display()), e))?;
        }
        Ok(())
    }

    /// The active X.509 authority.
    pub fn active_x509(&self) -> Option<Arc<signet_ca::X509Authority>> {
        self.ca.read().active_x509().ok().cloned()
    }

    /// The CA's authorities, for `signet ca show`.
    pub fn authorities(&self) -> Vec<signet_ca::AuthorityInfo> {
        self.ca.read().authorities()
    }

    /// Forces rotation steps (exposed for tests and the admin CLI).
    pub fn force(
        &self,
        kind: AuthorityKind,
        step: &str,
    ) -> Result<Vec<RotationEvent>, ServerError> {
        match step {
            "prepare" => self.command(|ca| ca.prepare(kind)),
            "activate" => self.command(|ca| ca.activate(kind)),
            other => Err(ServerError::InvalidArgument(format!(
                "unknown CA step {other:?}"
            ))),
        }
    }

    /// Adopts changes another replica stored (HA followers); publishes the bundle if it changed.
    pub fn reload(&self) -> Result<bool, ServerError> {
        let changed = self.ca.write().reload()?;
        if changed {
            info!("CA state reloaded from the key store");
            self.bundle.send_replace(Arc::new(self.ca.read().bundle()?));
            self.write_bundle_files()?;
            self.renew_server_svid()?;
        } else if self.server_svid_due() {
            self.renew_server_svid()?;
        }
        Ok(changed)
    }

    /// One step of the rotation loop: the leader (or a lone server) rotates; followers reload.
    /// A leader that lost a write race reloads and tries again next time.
    fn rotation_step(&self, leading: bool) {
        let result = if leading {
            match self.tick() {
                Err(ServerError::Ca(signet_ca::Error::KeyStore(
                    signet_ca::KeyStoreError::Conflict { .. },
                ))) => {
                    info!("another replica changed the CA; reloading");
                    self.reload().map(|_| ())
                }
                other => other.map(|_| ()),
            }
        } else {
            self.reload().map(|_| ())
        };
        if let Err(error) = result {
            warn!(%error, "CA rotation step failed; retrying");
        }
    }

    /// Spawns the rotation loop of a lone server.
    pub fn spawn_rotation(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        self.spawn_rotation_led(every, None)
    }

    /// Spawns the rotation loop; with `leader`, only while it reads `true` (the others reload).
    pub fn spawn_rotation_led(
        self: &Arc<Self>,
        every: Duration,
        leader: Option<watch::Receiver<bool>>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        signet_unix::spawn_named("ca-rotation", async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let leading = leader.as_ref().is_none_or(|l| *l.borrow());
                this.rotation_step(leading);
            }
        })
    }
}

impl BundleSource for AuthorityService {
    fn bundles(&self) -> Arc<BundleSet> {
        let mut set = BundleSet::new();
        set.insert((*self.bundle()).clone());
        Arc::new(set)
    }
}
