//! The certificate authority: X.509 and JWT authority rings, their persistence, the bundle, and
//! minting with the active authorities.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use signet_spiffe::{Bundle, TrustDomain};
use zeroize::Zeroizing;

use crate::authority::{Authority, JwtAuthority, X509Authority};
use crate::clock::Clock;
use crate::error::{Error, KeyStoreError, Result};
use crate::key::{AuthorityKey, KeyAlgorithm, KeyReference};
use crate::key_manager::{KeyManager, MemoryKeys};
use crate::keystore::{
    KeyStore, PersistedJwtAuthority, PersistedState, PersistedX509Authority, STATE_FORMAT,
};
use crate::mint::{JwtSvidRequest, MintedX509Svid, X509SvidRequest, mint_jwt_svid, mint_x509_svid};
use crate::rotation::{AuthorityRing, AuthorityStatus, RotationEvent, Slot};
use crate::upstream::UpstreamCa;

/// Default CA lifetime.
pub const DEFAULT_CA_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default X509-SVID lifetime.
pub const DEFAULT_X509_SVID_TTL: Duration = Duration::from_secs(3600);
/// Default JWT-SVID lifetime.
pub const DEFAULT_JWT_SVID_TTL: Duration = Duration::from_secs(300);
/// Default bundle refresh hint.
pub const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);

/// Which kind of authority a command addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityKind {
    /// X.509 authorities.
    X509,
    /// JWT authorities.
    Jwt,
}

/// How the CA is set up.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Key algorithm of X.509 authorities.
    pub x509_key_algorithm: KeyAlgorithm,
    /// Key algorithm of JWT authorities.
    pub jwt_key_algorithm: KeyAlgorithm,
    /// Lifetime of each authority.
    pub ca_ttl: Duration,
    /// Longest X509-SVID lifetime granted, whatever an entry asks for.
    pub max_x509_svid_ttl: Duration,
    /// Longest JWT-SVID lifetime granted.
    pub max_jwt_svid_ttl: Duration,
    /// `spiffe_refresh_hint` of the bundle.
    pub refresh_hint: Duration,
    /// `iss` claim of JWT-SVIDs, when OIDC discovery is served.
    pub jwt_issuer: Option<String>,
    /// Upstream CA that signs our intermediates; `None` = self-signed roots.
    pub upstream: Option<UpstreamCa>,
    /// Where authority keys are made and kept (in memory with the state by default).
    pub keys: Arc<dyn KeyManager>,
}

impl CaConfig {
    /// Defaults of DESIGN §5 for a trust domain.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            x509_key_algorithm: KeyAlgorithm::EcP256,
            jwt_key_algorithm: KeyAlgorithm::EcP256,
            ca_ttl: DEFAULT_CA_TTL,
            max_x509_svid_ttl: DEFAULT_CA_TTL / 2,
            max_jwt_svid_ttl: DEFAULT_CA_TTL / 2,
            refresh_hint: DEFAULT_REFRESH_HINT,
            jwt_issuer: None,
            upstream: None,
            keys: Arc::new(MemoryKeys),
        }
    }
}

/// A summary of one authority, for `signet ca show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityInfo {
    /// X.509 or JWT.
    pub kind: AuthorityKind,
    /// Subject key id or kid.
    pub id: String,
    /// Rotation status.
    pub status: AuthorityStatus,
    /// Taint flag.
    pub tainted: bool,
    /// Validity start.
    pub not_before: SystemTime,
    /// Validity end.
    pub not_after: SystemTime,
}

#[derive(Clone)]
struct State {
    x509: AuthorityRing<X509Authority>,
    jwt: AuthorityRing<JwtAuthority>,
    bundle_sequence: u64,
    generation: u64,
}

/// The signing authority of one trust domain.
pub struct CertificateAuthority {
    config: CaConfig,
    store: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
    state: State,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.config.trust_domain)
            .field("bundle_sequence", &self.state.bundle_sequence)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA from its store, creating authorities on first start, and brings the rotation
    /// up to date. A corrupt store or one of another trust domain is an error, never replaced.
    pub fn open(config: CaConfig, store: Arc<dyn KeyStore>, clock: Arc<dyn Clock>) -> Result<Self> {
        let state = match store.load()? {
            Some(persisted) => decode_state(&config, &persisted)?,
            None => State {
                x509: AuthorityRing::default(),
                jwt: AuthorityRing::default(),
                bundle_sequence: 0,
                generation: 0,
            },
        };
        let mut ca = Self {
            config,
            store,
            clock,
            state,
        };
        ca.tick()?;
        Ok(ca)
    }

    /// Loads an existing CA without creating or rotating anything: how a follower replica of an
    /// HA server opens the authorities the leader created. `Ok(None)` while the store is empty.
    pub fn open_existing(
        config: CaConfig,
        store: Arc<dyn KeyStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<Self>> {
        let Some(persisted) = store.load()? else {
            return Ok(None);
        };
        let state = decode_state(&config, &persisted)?;
        Ok(Some(Self {
            config,
            store,
            clock,
            state,
        }))
    }

    /// Re-reads the store and adopts what another writer (the leader) stored. Returns whether
    /// anything changed.
    pub fn reload(&mut self) -> Result<bool> {
        let Some(persisted) = self.store.load()? else {
            return Ok(false);
        };
        if persisted.generation == self.state.generation {
            return Ok(false);
        }
        self.state = decode_state(&self.config, &persisted)?;
        Ok(true)
    }

    /// The generation of the state held (increments on every stored change).
    pub fn generation(&self) -> u64 {
        self.state.generation
    }

    /// The configuration.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }

    /// Applies time-driven rotation; persists and returns what changed.
    pub fn tick(&mut self) -> Result<Vec<RotationEvent>> {
        let now = self.clock.now();
        let config = self.config.clone();
        self.transition(|state| {
            let mut events = state.x509.tick(now, || {
                X509Authority::create(
                    &config.trust_domain,
                    config.keys.generate(config.x509_key_algorithm)?,
                    now,
                    config.ca_ttl,
                    config.upstream.as_ref(),
                )
            })?;
            events.extend(state.jwt.tick(now, || {
                JwtAuthority::create(
                    config.keys.generate(config.jwt_key_algorithm)?,
                    now,
                    config.ca_ttl,
                )
            })?);
            Ok(events)
        })
    }

    /// Prepares a new authority now, replacing a prepared one.
    pub fn prepare(&mut self, kind: AuthorityKind) -> Result<Vec<RotationEvent>> {
        let now = self.clock.now();
        let config = self.config.clone();
        self.transition(|state| match kind {
            AuthorityKind::X509 => Ok(state.x509.prepare(X509Authority::create(
                &config.trust_domain,
                config.keys.generate(config.x509_key_algorithm)?,
                now,
                config.ca_ttl,
                config.upstream.as_ref(),
            )?)),
            AuthorityKind::Jwt => Ok(state.jwt.prepare(JwtAuthority::create(
                config.keys.generate(config.jwt_key_algorithm)?,
                now,
                config.ca_ttl,
            )?)),
        })
    }

    /// Activates the prepared authority now.
    pub fn activate(&mut self, kind: AuthorityKind) -> Result<Vec<RotationEvent>> {
        self.transition(|state| match kind {
            AuthorityKind::X509 => state.x509.activate(),
            AuthorityKind::Jwt => state.jwt.activate(),
        })
    }

    /// Taints an old authority.
    pub fn taint(&mut self, kind: AuthorityKind, id: &str) -> Result<Vec<RotationEvent>> {
        self.transition(|state| match kind {
            AuthorityKind::X509 => state.x509.taint(id),
            AuthorityKind::Jwt => state.jwt.taint(id),
        })
    }

    /// Revokes a tainted authority, removing it from the bundle.
    pub fn revoke(&mut self, kind: AuthorityKind, id: &str) -> Result<Vec<RotationEvent>> {
        self.transition(|state| match kind {
            AuthorityKind::X509 => state.x509.revoke(id),
            AuthorityKind::Jwt => state.jwt.revoke(id),
        })
    }

    /// Adopts renewed upstream material (cert-manager renewed the Secret). Refused when an X.509
    /// authority still published chains to a root the new material drops: its SVIDs would stop
    /// validating. With `leading`, a new intermediate is issued under the new material: active
    /// at once when it chains to a root already in the bundle (nobody needs a new bundle), only
    /// prepared otherwise (the usual rotation activates it once the bundle has spread).
    /// Followers only take the material; they adopt the leader's intermediate from the store.
    pub fn set_upstream(
        &mut self,
        upstream: UpstreamCa,
        leading: bool,
    ) -> Result<Vec<RotationEvent>> {
        let Some(current) = &self.config.upstream else {
            return Err(Error::Upstream(
                "this CA has self-signed roots; an upstream CA is configured at start".into(),
            ));
        };
        if current.same_as(&upstream) {
            return Ok(Vec::new());
        }
        for slot in self.state.x509.slots() {
            let top = slot
                .authority
                .upstream_chain()
                .last()
                .unwrap_or(slot.authority.certificate());
            if upstream.anchor_of(top).is_none() {
                return Err(Error::Upstream(format!(
                    "the new upstream bundle drops the root X.509 authority {} chains to; keep \
                     that root in the bundle (ca.crt) until the authority expires or is revoked",
                    slot.authority.id()
                )));
            }
        }
        let known_root = upstream
            .issuing_root()
            .is_some_and(|root| current.roots().contains(root));
        self.config.upstream = Some(upstream);
        if !leading {
            return Ok(Vec::new());
        }
        let mut events = self.prepare(AuthorityKind::X509)?;
        if known_root {
            events.extend(self.activate(AuthorityKind::X509)?);
        }
        Ok(events)
    }

    /// Runs a change on a copy of the state, persists it, and only then adopts it, so that a
    /// failed write never leaves keys in use that a restart would lose.
    fn transition(
        &mut self,
        change: impl FnOnce(&mut State) -> Result<Vec<RotationEvent>>,
    ) -> Result<Vec<RotationEvent>> {
        let mut next = self.state.clone();
        let bundle_before = self.bundle_key_ids();
        let events = change(&mut next)?;
        if events.is_empty() {
            return Ok(events);
        }
        let bundle_after = bundle_key_ids(&next);
        if bundle_after != bundle_before {
            next.bundle_sequence += 1;
        }
        next.generation = self.state.generation + 1;
        let persisted = encode_state(&self.config, &next)?;
        self.store.store(&persisted, self.state.generation)?;
        let before = device_keys(&self.state);
        self.state = next;
        // Device keys of authorities that left for good go only once the state without them
        // is stored: a failed write must not leave the stored state pointing at nothing.
        let kept = device_keys(&self.state);
        for gone in before.iter().filter(|r| !kept.contains(r)) {
            if let Err(error) = self.config.keys.destroy(gone) {
                tracing::warn!(reference = ?gone, %error, "could not destroy the key of a retired authority");
            }
        }
        Ok(events)
    }

    fn bundle_key_ids(&self) -> Vec<String> {
        bundle_key_ids(&self.state)
    }

    /// The trust bundle of this trust domain.
    pub fn bundle(&self) -> Result<Bundle> {
        let mut bundle = Bundle::new(self.config.trust_domain.clone());
        match &self.config.upstream {
            Some(upstream) => {
                for root in upstream.roots() {
                    bundle
                        .add_x509_authority(root)
                        .map_err(|e| Error::Upstream(e.to_string()))?;
                }
            }
            None => {
                for authority in self.state.x509.published() {
                    bundle
                        .add_x509_authority(authority.certificate())
                        .map_err(|e| Error::Signing(e.to_string()))?;
                }
            }
        }
        for authority in self.state.jwt.published() {
            bundle
                .add_jwt_authority(authority.id(), authority.key().jwt_public_key()?)
                .map_err(|e| Error::Signing(e.to_string()))?;
        }
        bundle.set_sequence(self.state.bundle_sequence);
        bundle.set_refresh_hint(self.config.refresh_hint);
        Ok(bundle)
    }

    /// The bundle's current `spiffe_sequence`.
    pub fn bundle_sequence(&self) -> u64 {
        self.state.bundle_sequence
    }

    /// Every authority, for display.
    pub fn authorities(&self) -> Vec<AuthorityInfo> {
        fn info<A: Authority>(kind: AuthorityKind, slot: &Slot<A>) -> AuthorityInfo {
            AuthorityInfo {
                kind,
                id: slot.authority.id().to_owned(),
                status: slot.status,
                tainted: slot.tainted,
                not_before: slot.authority.not_before(),
                not_after: slot.authority.not_after(),
            }
        }
        let x509 = self
            .state
            .x509
            .slots()
            .iter()
            .map(|s| info(AuthorityKind::X509, s));
        let jwt = self
            .state
            .jwt
            .slots()
            .iter()
            .map(|s| info(AuthorityKind::Jwt, s));
        x509.chain(jwt).collect()
    }

    /// Key ids of tainted JWT authorities: JWT-SVIDs they signed must not be served again.
    pub fn tainted_jwt_authorities(&self) -> Vec<String> {
        self.state.jwt.tainted_ids()
    }

    /// Ids of tainted X.509 authorities: SVIDs they signed must be re-signed.
    pub fn tainted_x509_authorities(&self) -> Vec<String> {
        self.state.x509.tainted_ids()
    }

    /// The active X.509 authority.
    pub fn active_x509(&self) -> Result<&Arc<X509Authority>> {
        self.state
            .x509
            .active()
            .ok_or(Error::NoActiveAuthority("X.509"))
    }

    /// The longest X509-SVID lifetime that can be granted right now.
    pub fn max_x509_svid_ttl(&self) -> Duration {
        let now = self.clock.now();
        let left = self
            .state
            .x509
            .active()
            .and_then(|a| a.not_after().duration_since(now).ok())
            .unwrap_or_default();
        left.min(self.config.max_x509_svid_ttl)
    }

    /// Signs an X509-SVID with the active authority. The TTL is capped at the configured maximum
    /// and at the authority's expiry.
    pub fn mint_x509_svid(&self, request: &X509SvidRequest<'_>) -> Result<MintedX509Svid> {
        let authority = self.active_x509()?;
        let capped = X509SvidRequest {
            ttl: request.ttl.min(self.config.max_x509_svid_ttl),
            ..request.clone()
        };
        mint_x509_svid(
            authority,
            self.config.trust_domain.as_str(),
            &capped,
            self.clock.now(),
        )
    }

    /// Signs a JWT-SVID with the active JWT authority.
    pub fn mint_jwt_svid(&self, request: &JwtSvidRequest<'_>) -> Result<String> {
        let authority = self
            .state
            .jwt
            .active()
            .ok_or(Error::NoActiveAuthority("JWT"))?;
        let capped = JwtSvidRequest {
            ttl: request.ttl.min(self.config.max_jwt_svid_ttl),
            issuer: request.issuer.or(self.config.jwt_issuer.as_deref()),
            ..request.clone()
        };
        mint_jwt_svid(
            authority,
            self.config.trust_domain.as_str(),
            &capped,
            self.clock.now(),
        )
    }
}

fn device_keys(state: &State) -> Vec<KeyReference> {
    state
        .x509
        .slots()
        .iter()
        .filter_map(|s| s.authority.key().reference())
        .chain(
            state
                .jwt
                .slots()
                .iter()
                .filter_map(|s| s.authority.key().reference()),
        )
        .collect()
}

fn bundle_key_ids(state: &State) -> Vec<String> {
    let mut ids: Vec<String> = state
        .x509
        .published()
        .map(|a| format!("x509:{}", a.id()))
        .chain(state.jwt.published().map(|a| format!("jwt:{}", a.id())))
        .collect();
    ids.sort();
    ids
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn encoded_key(key: &AuthorityKey) -> Option<Zeroizing<String>> {
    key.pkcs8_der()
        .map(|der| Zeroizing::new(STANDARD.encode(der.as_slice())))
}

fn encode_state(config: &CaConfig, state: &State) -> Result<PersistedState> {
    let x509 = state
        .x509
        .slots()
        .iter()
        .map(|slot| PersistedX509Authority {
            status: slot.status,
            tainted: slot.tainted,
            key_algorithm: slot.authority.key().algorithm(),
            certificate: STANDARD.encode(slot.authority.certificate()),
            upstream_chain: slot
                .authority
                .upstream_chain()
                .iter()
                .map(|c| STANDARD.encode(c))
                .collect(),
            private_key: encoded_key(slot.authority.key()),
            key_reference: slot.authority.key().reference(),
        })
        .collect();
    let jwt = state
        .jwt
        .slots()
        .iter()
        .map(|slot| PersistedJwtAuthority {
            status: slot.status,
            tainted: slot.tainted,
            kid: slot.authority.id().to_owned(),
            key_algorithm: slot.authority.key().algorithm(),
            not_before: unix_secs(slot.authority.not_before()),
            not_after: unix_secs(slot.authority.not_after()),
            private_key: encoded_key(slot.authority.key()),
            key_reference: slot.authority.key().reference(),
        })
        .collect();
    Ok(PersistedState {
        format: STATE_FORMAT,
        generation: state.generation,
        trust_domain: config.trust_domain.to_string(),
        bundle_sequence: state.bundle_sequence,
        x509,
        jwt,
    })
}

fn decode_key(
    config: &CaConfig,
    algorithm: KeyAlgorithm,
    private_key: Option<&String>,
    reference: Option<&KeyReference>,
) -> Result<AuthorityKey> {
    let corrupt = |reason: &str| {
        Error::KeyStore(KeyStoreError::Corrupt {
            path: "<key store>".into(),
            reason: reason.to_owned(),
        })
    };
    match (private_key, reference) {
        (Some(b64), None) => {
            let der = Zeroizing::new(
                STANDARD
                    .decode(b64)
                    .map_err(|_| corrupt("private key is not valid base64"))?,
            );
            AuthorityKey::from_pkcs8(algorithm, &der)
        }
        (None, Some(reference)) => config.keys.open(algorithm, reference),
        (Some(_), Some(_)) => Err(corrupt(
            "an authority has both a private key and a device key",
        )),
        (None, None) => Err(corrupt("an authority has no key")),
    }
}

fn decode_state(config: &CaConfig, persisted: &PersistedState) -> Result<State> {
    let corrupt = |reason: String| {
        Error::KeyStore(KeyStoreError::Corrupt {
            path: "<key store>".into(),
            reason,
        })
    };
    if persisted.trust_domain != config.trust_domain.as_str() {
        return Err(corrupt(format!(
            "it holds keys of trust domain {:?}, not {:?}",
            persisted.trust_domain,
            config.trust_domain.as_str()
        )));
    }
    let decode = |what: &str, b64: &str| -> Result<Vec<u8>> {
        STANDARD
            .decode(b64)
            .map_err(|_| corrupt(format!("{what} is not valid base64")))
    };
    let mut x509 = Vec::new();
    for stored in &persisted.x509 {
        let key = decode_key(
            config,
            stored.key_algorithm,
            stored.private_key.as_deref(),
            stored.key_reference.as_ref(),
        )?;
        let cert = CertificateDer::from(decode("certificate", &stored.certificate)?);
        let chain = stored
            .upstream_chain
            .iter()
            .map(|c| decode("upstream chain", c).map(CertificateDer::from))
            .collect::<Result<Vec<_>>>()?;
        let authority = X509Authority::from_parts(cert, chain, key)
            .map_err(|e| corrupt(format!("X.509 authority: {e}")))?;
        x509.push(Slot {
            authority: Arc::new(authority),
            status: stored.status,
            tainted: stored.tainted,
        });
    }
    let mut jwt = Vec::new();
    for stored in &persisted.jwt {
        let key = decode_key(
            config,
            stored.key_algorithm,
            stored.private_key.as_deref(),
            stored.key_reference.as_ref(),
        )?;
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let authority = JwtAuthority::from_parts(
            stored.kid.clone(),
            key,
            at(stored.not_before),
            at(stored.not_after),
        );
        jwt.push(Slot {
            authority: Arc::new(authority),
            status: stored.status,
            tainted: stored.tainted,
        });
    }
    for (kind, statuses) in [
        (
            "X.509",
            persisted.x509.iter().map(|a| a.status).collect::<Vec<_>>(),
        ),
        (
            "JWT",
            persisted.jwt.iter().map(|a| a.status).collect::<Vec<_>>(),
        ),
    ] {
        for status in [AuthorityStatus::Active, AuthorityStatus::Prepared] {
            if statuses.iter().filter(|s| **s == status).count() > 1 {
                return Err(corrupt(format!(
                    "more than one {status:?} {kind} authority"
                )));
            }
        }
    }
    Ok(State {
        x509: AuthorityRing::from_slots(x509),
        jwt: AuthorityRing::from_slots(jwt),
        bundle_sequence: persisted.bundle_sequence,
        generation: persisted.generation,
    })
}
