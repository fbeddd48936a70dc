//! The agent's cache: this node's entries, the X509-SVID signed for each (keys in memory only),
//! JWT-SVIDs by audience, and the trust bundle. Every change bumps a watch channel so that
//! Workload API streams push the new full state at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::{Duration, SystemTime};

use signet_core::{EntryId, RegistrationEntry, SelectorSet};
use signet_spiffe::{Bundle, BundleSet, TrustDomain, X509Svid};
use tokio::sync::{Notify, watch};

/// An X509-SVID held for an entry.
#[derive(Debug, Clone)]
pub struct CachedSvid {
    /// The SVID and its key.
    pub svid: X509Svid,
    /// The authority that signed it.
    pub authority_id: String,
    /// When to re-sign it (½ TTL ± 10 %).
    pub refresh_at: SystemTime,
    /// The entry revision it was signed for.
    pub revision: u64,
}

#[derive(Debug, Clone)]
struct Slot {
    entry: Arc<RegistrationEntry>,
    svid: Option<Arc<CachedSvid>>,
    /// A newer SVID that is not valid yet (the server's clock is ahead of ours), held back
    /// while `svid` is still good and served from its notBefore on.
    next: Option<Arc<CachedSvid>>,
}

/// How far in the future a new SVID's notBefore may be and still be served at once: peers
/// check it against their own clocks.
pub const NOT_BEFORE_TOLERANCE: Duration = Duration::from_secs(1);

impl Slot {
    /// The SVID whose refresh time and revision decide when the entry is signed next: the
    /// held-back one when there is one (the served one is already replaced).
    fn scheduled(&self) -> Option<&Arc<CachedSvid>> {
        self.next.as_ref().or(self.svid.as_ref())
    }
}

/// Whether `svid` may be served at `now`: not expired, and not starting later than the
/// tolerance.
fn servable(svid: &CachedSvid, now: SystemTime) -> bool {
    svid.svid.not_after() > now && svid.svid.not_before() <= now + NOT_BEFORE_TOLERANCE
}

#[derive(Debug, Clone)]
struct CachedJwt {
    token: String,
    /// The key id that signed it.
    kid: String,
    refresh_at: SystemTime,
    expiry: SystemTime,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<EntryId, Slot>,
    bundle: Option<Arc<Bundle>>,
    /// Federated trust domains' bundles, by trust domain.
    federated: BTreeMap<TrustDomain, Arc<Bundle>>,
    tainted: HashSet<String>,
    /// SVIDs signed by a newly tainted authority are re-signed at a random time within this
    /// window, so that a taint does not send every agent's CSRs to the server in one instant.
    taint_resign_window: Duration,
    jwts: HashMap<(EntryId, Vec<String>), CachedJwt>,
    synced: bool,
    /// SVIDs are re-signed early enough to ride out a server outage this long.
    availability_target: Duration,
}

/// The identities a workload is entitled to.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    /// Matching entries whose SVID is ready, default identity first.
    pub ready: Vec<(Arc<RegistrationEntry>, Arc<CachedSvid>)>,
    /// Whether some matching entry is still waiting for its SVID (none yet, or the one held
    /// expired: it is never served).
    pub pending: bool,
    /// Matching SVIDs left out because they expired.
    pub expired: usize,
    /// The bundles of the trust domains the ready entries federate with (those held).
    pub federated: Vec<Arc<Bundle>>,
}

/// The agent cache.
#[derive(Debug)]
pub struct SvidCache {
    state: RwLock<State>,
    changed: watch::Sender<u64>,
    signer: Notify,
}

impl Default for SvidCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Picks when to re-sign an SVID: at half its lifetime, ± 10 % jitter, so a fleet does not
/// re-sign in lockstep; and, with an availability target, no later than that long (minus up to
/// 10 % jitter) before it expires, so an outage that starts just before a re-sign can last the
/// target without the SVID expiring. A lifetime shorter than the target cannot meet it: such an
/// SVID keeps the half-life schedule (the agent warns once).
pub fn refresh_time(
    issued: SystemTime,
    not_after: SystemTime,
    availability_target: Duration,
) -> SystemTime {
    let life = not_after.duration_since(issued).unwrap_or_default();
    let half = life / 2;
    let spread = life / 10;
    let at = issued + half.saturating_sub(spread) + random_within(spread * 2);
    if availability_target.is_zero() || availability_target >= life {
        return at;
    }
    let latest = not_after - availability_target;
    let jitter = random_within((life - availability_target) / 10);
    at.min(latest - jitter)
}

/// Whether an SVID living `life` can meet `availability_target`.
pub fn meets_availability_target(life: Duration, availability_target: Duration) -> bool {
    availability_target.is_zero() || life > availability_target
}

/// A uniformly random duration in `0..=window`.
fn random_within(window: Duration) -> Duration {
    let mut byte = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut byte);
    let unit = f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX); // 0..=1
    window.mul_f64(unit)
}

/// Default of [`SvidCache::set_taint_resign_window`].
pub const DEFAULT_TAINT_RESIGN_WINDOW: Duration = Duration::from_secs(30);

/// The SVIDs and JWT-SVIDs held per signing authority (X.509 by subject key id, JWT by kid).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorityUse {
    /// X509-SVIDs by the authority that signed them.
    pub x509: BTreeMap<String, u32>,
    /// Unexpired cached JWT-SVIDs by signing key.
    pub jwt: BTreeMap<String, u32>,
}

impl SvidCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            state: RwLock::new(State {
                taint_resign_window: DEFAULT_TAINT_RESIGN_WINDOW,
                ..State::default()
            }),
            changed: watch::channel(0).0,
            signer: Notify::new(),
        }
    }

    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> Option<T> {
        let result = Some(f(&mut self.state.write()));
        self.changed.send_modify(|n| *n += 1);
        result
    }

    fn read<T: Default>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read())
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Woken when there may be something to sign.
    pub fn signer_wakeup(&self) -> &Notify {
        &self.signer
    }

    /// The entry `id`, if it is one of this node's.
    pub fn entry(&self, id: &EntryId) -> Option<Arc<RegistrationEntry>> {
        self.read(|s| s.entries.get(id).map(|slot| slot.entry.clone()))
    }

    /// Replaces the federated bundles (streams are told only if something changed).
    pub fn set_federated_bundles(&self, bundles: BundleSet) {
        let next: BTreeMap<TrustDomain, Arc<Bundle>> = bundles
            .iter()
            .map(|b| (b.trust_domain().clone(), Arc::new(b.clone())))
            .collect();
        if self.read(|s| s.federated == next) {
            return;
        }
        self.update(|s| s.federated = next);
    }

    /// The bundles held of the trust domains `entries` federate with.
    pub fn federated_of(&self, entries: &[Arc<RegistrationEntry>]) -> Vec<Arc<Bundle>> {
        self.read(|s| {
            let mut out: Vec<Arc<Bundle>> = Vec::new();
            for trust_domain in entries.iter().flat_map(|e| &e.federates_with) {
                if let Some(bundle) = s.federated.get(trust_domain)
                    && !out.iter().any(|b| Arc::ptr_eq(b, bundle))
                {
                    out.push(bundle.clone());
                }
            }
            out
        })
    }

    /// Every federated bundle held.
    pub fn federated_bundles(&self) -> Vec<Arc<Bundle>> {
        self.read(|s| s.federated.values().cloned().collect())
    }

    /// Sets the trust bundle.
    pub fn set_bundle(&self, bundle: Bundle) {
        self.update(|s| s.bundle = Some(Arc::new(bundle)));
    }

    /// The trust bundle.
    pub fn bundle(&self) -> Option<Arc<Bundle>> {
        self.read(|s| s.bundle.clone())
    }

    /// Replaces all entries (a new snapshot); SVIDs of unchanged entries are kept.
    pub fn replace_entries(&self, entries: Vec<RegistrationEntry>) {
        self.update(|s| {
            let mut next = BTreeMap::new();
            for entry in entries {
                let (svid, held) = s
                    .entries
                    .get(&entry.id)
                    .map_or((None, None), |old| (old.svid.clone(), old.next.clone()));
                next.insert(
                    entry.id.clone(),
                    Slot {
                        entry: Arc::new(entry),
                        svid,
                        next: held,
                    },
                );
            }
            s.entries = next;
            s.jwts.retain(|(id, _), _| s.entries.contains_key(id));
            s.synced = true;
        });
        self.signer.notify_one();
    }

    /// Applies a delta.
    pub fn apply_delta(&self, upserted: Vec<RegistrationEntry>, removed: &[EntryId]) {
        self.update(|s| {
            for id in removed {
                s.entries.remove(id);
            }
            for entry in upserted {
                let (svid, next) = s
                    .entries
                    .get(&entry.id)
                    .map_or((None, None), |old| (old.svid.clone(), old.next.clone()));
                s.entries.insert(
                    entry.id.clone(),
                    Slot {
                        entry: Arc::new(entry),
                        svid,
                        next,
                    },
                );
            }
            s.jwts.retain(|(id, _), _| s.entries.contains_key(id));
        });
        self.signer.notify_one();
    }

    /// Sets the availability target applied to SVIDs signed from now on.
    pub fn set_availability_target(&self, target: Duration) {
        self.state.write().availability_target = target;
    }

    /// The availability target.
    pub fn availability_target(&self) -> Duration {
        self.read(|s| s.availability_target)
    }

    /// Loads entries and SVIDs persisted by an earlier run. Only into a cache that has not
    /// received a snapshot; the state stays *not synced* (a caller no restored entry matches
    /// hears UNAVAILABLE), and the first snapshot keeps the restored SVIDs of entries it still
    /// holds at the same revision.
    pub(crate) fn restore(
        &self,
        entries: Vec<(RegistrationEntry, Option<CachedSvid>)>,
        federated: BundleSet,
    ) {
        if self.is_synced() {
            return;
        }
        self.update(|s| {
            for (entry, svid) in entries {
                let svid = svid.filter(|v| v.revision == entry.revision).map(Arc::new);
                s.entries.insert(
                    entry.id.clone(),
                    Slot {
                        entry: Arc::new(entry),
                        svid,
                        next: None,
                    },
                );
            }
            s.federated = federated
                .iter()
                .map(|b| (b.trust_domain().clone(), Arc::new(b.clone())))
                .collect();
        });
        self.signer.notify_one();
    }

    /// Every entry and its SVID, for the persisted copy.
    pub(crate) fn persist_view(&self) -> Vec<(Arc<RegistrationEntry>, Option<Arc<CachedSvid>>)> {
        self.read(|s| {
            s.entries
                .values()
                .map(|slot| (slot.entry.clone(), slot.svid.clone()))
                .collect()
        })
    }

    /// How long until the first SVID held expires: how long a server outage starting now can
    /// last before a workload loses an identity.
    pub fn outage_tolerance(&self, now: SystemTime) -> Option<Duration> {
        self.read(|s| {
            s.entries
                .values()
                .filter_map(|slot| slot.svid.as_ref().map(|v| v.svid.not_after()))
                .min()
                .map(|at| at.duration_since(now).unwrap_or_default())
        })
    }

    /// Sets the window over which SVIDs of a newly tainted authority are re-signed.
    pub fn set_taint_resign_window(&self, window: Duration) {
        self.state.write().taint_resign_window = window;
    }

    /// Records tainted authorities; each SVID they signed is re-signed at a random time within
    /// the taint re-sign window (sooner if it was due anyway).
    pub fn set_tainted(&self, tainted: Vec<String>) {
        let tainted: HashSet<String> = tainted.into_iter().collect();
        let changed = self.read(|s| s.tainted != tainted);
        if changed {
            let now = SystemTime::now();
            self.update(|s| {
                let window = s.taint_resign_window;
                for slot in s.entries.values_mut() {
                    if let Some(svid) = &mut slot.svid
                        && tainted.contains(&svid.authority_id)
                        && !s.tainted.contains(&svid.authority_id)
                    {
                        let at = now + random_within(window);
                        if at < svid.refresh_at {
                            Arc::make_mut(svid).refresh_at = at;
                        }
                    }
                }
                s.tainted = tainted;
            });
            self.signer.notify_one();
        }
    }

    /// What is held per signing authority, for the server's `signet ca show` counts.
    pub fn authority_use(&self, now: SystemTime) -> AuthorityUse {
        self.read(|s| {
            let mut usage = AuthorityUse::default();
            for svid in s.entries.values().filter_map(|slot| slot.svid.as_ref()) {
                if svid.svid.not_after() > now {
                    *usage.x509.entry(svid.authority_id.clone()).or_default() += 1;
                }
            }
            for jwt in s
                .jwts
                .values()
                .filter(|j| j.expiry > now && !j.kid.is_empty())
            {
                *usage.jwt.entry(jwt.kid.clone()).or_default() += 1;
            }
            usage
        })
    }

    /// Whether the first snapshot has arrived.
    pub fn is_synced(&self) -> bool {
        self.read(|s| s.synced)
    }

    /// Entries that need an SVID now: none yet, due for rotation (a taint brings that time
    /// forward), or changed since signing.
    pub fn due(&self, now: SystemTime) -> Vec<Arc<RegistrationEntry>> {
        self.read(|s| {
            s.entries
                .values()
                .filter(|slot| match slot.scheduled() {
                    None => true,
                    Some(svid) => svid.refresh_at <= now || svid.revision != slot.entry.revision,
                })
                .map(|slot| slot.entry.clone())
                .collect()
        })
    }

    /// When the first SVID served expires after `after`, and when the first held-back SVID
    /// becomes valid: the moments streams must look again (one pass over the entries).
    pub fn next_wakeups(&self, after: SystemTime) -> (Option<SystemTime>, Option<SystemTime>) {
        self.read(|s| {
            let mut expiry: Option<SystemTime> = None;
            let mut promotion: Option<SystemTime> = None;
            for slot in s.entries.values() {
                if let Some(at) = slot.svid.as_ref().map(|v| v.svid.not_after())
                    && at > after
                {
                    expiry = Some(expiry.map_or(at, |e| e.min(at)));
                }
                if let Some(at) = slot.next.as_ref().map(|n| n.svid.not_before()) {
                    promotion = Some(promotion.map_or(at, |p| p.min(at)));
                }
            }
            (expiry, promotion)
        })
    }

    /// SVIDs held that have expired (the server could not be reached to re-sign them).
    pub fn expired_count(&self, now: SystemTime) -> usize {
        self.read(|s| {
            s.entries
                .values()
                .filter(|slot| {
                    slot.svid
                        .as_ref()
                        .is_some_and(|v| v.svid.not_after() <= now)
                })
                .count()
        })
    }

    /// Tells every stream to look again: an SVID expired (it leaves the messages).
    pub fn expired_now(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// The earliest scheduled rotation.
    pub fn next_refresh(&self) -> Option<SystemTime> {
        self.read(|s| {
            s.entries
                .values()
                .filter_map(|slot| slot.scheduled().map(|v| v.refresh_at))
                .min()
        })
    }

    /// Stores a freshly signed SVID, unless the entry vanished or changed meanwhile. One signed
    /// by an authority tainted while the request was in flight is re-signed within the window.
    pub fn store_svid(&self, entry_id: &EntryId, mut svid: CachedSvid) {
        self.update(|s| {
            if s.tainted.contains(&svid.authority_id) {
                let at = SystemTime::now() + random_within(s.taint_resign_window);
                svid.refresh_at = svid.refresh_at.min(at);
            }
            if let Some(slot) = s.entries.get_mut(entry_id)
                && slot.entry.revision == svid.revision
            {
                // A new SVID not valid yet (the server's clock is ahead) waits while the one
                // served is still good for this revision.
                let now = SystemTime::now();
                let keep_current = !servable(&svid, now)
                    && svid.svid.not_after() > now
                    && slot
                        .svid
                        .as_ref()
                        .is_some_and(|c| c.revision == svid.revision && servable(c, now));
                if keep_current {
                    slot.next = Some(Arc::new(svid));
                } else {
                    slot.svid = Some(Arc::new(svid));
                    slot.next = None;
                }
            }
        });
    }

    /// Serves the held-back SVIDs that are valid at `now`; true if any was.
    pub fn promote(&self, now: SystemTime) -> bool {
        let ready = |slot: &Slot| slot.next.as_ref().is_some_and(|next| servable(next, now));
        if !self.read(|s| s.entries.values().any(ready)) {
            return false;
        }
        self.update(|s| {
            for slot in s.entries.values_mut().filter(|slot| ready(slot)) {
                slot.svid = slot.next.take();
            }
        });
        true
    }

    /// Number of entries and of entries with an SVID.
    pub fn counts(&self) -> (usize, usize) {
        self.counts_inner()
    }

    /// The authority that signed the SVID held for `id`.
    pub fn authority_of(&self, id: &EntryId) -> Option<String> {
        self.read(|s| {
            s.entries
                .get(id)
                .and_then(|slot| slot.svid.as_ref().map(|svid| svid.authority_id.clone()))
        })
    }

    /// Ids of the entries that have an SVID now.
    pub fn signed_entry_ids(&self) -> Vec<EntryId> {
        self.read(|s| {
            s.entries
                .iter()
                .filter(|(_, slot)| slot.svid.is_some())
                .map(|(id, _)| id.clone())
                .collect()
        })
    }

    fn counts_inner(&self) -> (usize, usize) {
        self.read(|s| {
            (
                s.entries.len(),
                s.entries.values().filter(|e| e.svid.is_some()).count(),
            )
        })
    }

    /// The entries matching `selectors`, default first (ordered by SPIFFE ID, then entry id),
    /// with duplicate non-empty hints dropped.
    pub fn identities(&self, selectors: &SelectorSet) -> Identities {
        let now = SystemTime::now();
        self.read(|s| {
            let mut matching: Vec<&Slot> = s
                .entries
                .values()
                .filter(|slot| slot.entry.matches(selectors))
                .collect();
            matching.sort_by(|a, b| {
                (&a.entry.spiffe_id, &a.entry.id).cmp(&(&b.entry.spiffe_id, &b.entry.id))
            });
            let mut hints = HashSet::new();
            let mut out = Identities::default();
            for slot in matching {
                match &slot.svid {
                    // An expired SVID is worse than none: peers refuse it and the workload
                    // would not know why. It waits for its re-signing like a new entry.
                    Some(svid) if svid.svid.not_after() <= now => {
                        out.pending = true;
                        out.expired += 1;
                    }
                    Some(svid) => {
                        if !slot.entry.hint.is_empty() && !hints.insert(slot.entry.hint.clone()) {
                            continue;
                        }
                        for trust_domain in &slot.entry.federates_with {
                            if let Some(bundle) = s.federated.get(trust_domain)
                                && !out.federated.iter().any(|b| Arc::ptr_eq(b, bundle))
                            {
                                out.federated.push(bundle.clone());
                            }
                        }
                        out.ready.push((slot.entry.clone(), svid.clone()));
                    }
                    None => out.pending = true,
                }
            }
            out
        })
    }

    /// The matching entries regardless of SVID state (for JWT minting).
    pub fn matching_entries(&self, selectors: &SelectorSet) -> Vec<Arc<RegistrationEntry>> {
        self.read(|s| {
            let mut v: Vec<_> = s
                .entries
                .values()
                .filter(|slot| slot.entry.matches(selectors))
                .map(|slot| slot.entry.clone())
                .collect();
            v.sort_by(|a, b| (&a.spiffe_id, &a.id).cmp(&(&b.spiffe_id, &b.id)));
            v
        })
    }

    /// A cached JWT-SVID still before its refresh time.
    pub fn cached_jwt(
        &self,
        entry: &EntryId,
        audience: &[String],
        now: SystemTime,
    ) -> Option<String> {
        let key = (entry.clone(), audience.to_vec());
        self.read(|s| {
            s.jwts
                .get(&key)
                .filter(|j| j.refresh_at > now && j.expiry > now)
                .map(|j| j.token.clone())
        })
    }

    /// Forgets the cached JWT-SVIDs signed by these (tainted) keys: the next request mints a
    /// new one with the active key.
    pub fn drop_jwts_of(&self, tainted_kids: &[String]) {
        if tainted_kids.is_empty() {
            return;
        }
        let mut s = self.state.write();
        s.jwts.retain(|_, jwt| !tainted_kids.contains(&jwt.kid));
    }

    /// Caches a JWT-SVID until half its lifetime.
    pub fn store_jwt(
        &self,
        entry: &EntryId,
        audience: &[String],
        token: String,
        issued: SystemTime,
        expiry: SystemTime,
    ) {
        let life = expiry.duration_since(issued).unwrap_or(Duration::ZERO);
        let kid = signet_spiffe::JwtSvid::parse_insecure(&token)
            .map(|svid| svid.key_id().to_owned())
            .unwrap_or_default();
        let cached = CachedJwt {
            kid,
            token,
            refresh_at: issued + life / 2,
            expiry,
        };
        {
            let mut s = self.state.write();
            // Bounded: at most 16 audiences per entry are kept.
            let per_entry = s.jwts.keys().filter(|(id, _)| id == entry).count();
            if per_entry >= 16 {
                s.jwts.retain(|(id, _), _| id != entry);
            }
            s.jwts.insert((entry.clone(), audience.to_vec()), cached);
        }
    }
}

/// Wakes every stream when an SVID expires, so it leaves their messages at once rather than at
/// the next unrelated change.
pub(crate) async fn announce_expiries(cache: Arc<SvidCache>) {
    let mut changes = cache.subscribe();
    let mut announced = SystemTime::now();
    loop {
        let (expiry, promotion) = cache.next_wakeups(announced);
        let next = match (expiry, promotion) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wait = next
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .unwrap_or(if next.is_some() {
                Duration::ZERO
            } else {
                Duration::from_secs(3600)
            });
        tokio::select! {
            () = tokio::time::sleep(wait) => {
                let now = SystemTime::now();
                // Promotion notifies streams itself.
                cache.promote(now);
                if let Some(at) = expiry && at <= now {
                    announced = at;
                    cache.expired_now();
                }
            }
            _ = changes.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_half_life_with_bounded_jitter() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let not_after = issued + Duration::from_secs(3600);
        for _ in 0..200 {
            let at = refresh_time(issued, not_after, Duration::ZERO)
                .duration_since(issued)
                .unwrap()
                .as_secs();
            assert!((1440..=2160).contains(&at), "{at}");
        }
    }

    #[test]
    fn an_availability_target_renews_early_enough_to_ride_out_that_outage() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let day = Duration::from_secs(86_400);
        let not_after = issued + day;
        let target = Duration::from_secs(20 * 3600);
        for _ in 0..200 {
            let at = refresh_time(issued, not_after, target);
            let left = not_after.duration_since(at).unwrap();
            assert!(left >= target, "{left:?}");
            // Not much earlier than needed: within the jitter of the latest point.
            assert!(left <= target + (day - target) / 10, "{left:?}");
        }
        // A short target changes nothing: half-life comes first.
        for _ in 0..50 {
            let at = refresh_time(issued, not_after, Duration::from_secs(3600));
            let since = at.duration_since(issued).unwrap().as_secs();
            assert!((34_560..=51_840).contains(&since), "{since}");
        }
        // A target longer than the life cannot be met: half-life, never "already due".
        let at = refresh_time(issued, issued + Duration::from_secs(3600), day);
        assert!(at > issued);
        assert!(!meets_availability_target(Duration::from_secs(3600), day));
        assert!(meets_availability_target(day, Duration::ZERO));
    }

    #[test]
    fn restored_svids_are_served_but_the_cache_is_not_synced() {
        let cache = SvidCache::new();
        let entry = RegistrationEntry {
            id: EntryId::new("e1"),
            ..signet_test_entry()
        };
        cache.restore(vec![(entry.clone(), None)], BundleSet::new());
        assert!(!cache.is_synced());
        assert_eq!(cache.counts(), (1, 0));
        assert_eq!(cache.due(SystemTime::now()).len(), 1);
        // After a snapshot, restoring again changes nothing.
        cache.replace_entries(vec![]);
        cache.restore(vec![(entry, None)], BundleSet::new());
        assert_eq!(cache.counts(), (0, 0));
    }

    /// An SVID for `entry` signed by a CA whose clock is `skew` ahead of ours (behind if
    /// negative).
    fn skewed_svid(entry: &RegistrationEntry, ahead: bool, skew: Duration) -> CachedSvid {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let clock = signet_ca::ManualClock::new(if ahead { now + skew } else { now - skew });
        let ca = signet_ca::CertificateAuthority::open(
            signet_ca::CaConfig::new(entry.spiffe_id.trust_domain().clone()),
            Arc::new(signet_ca::FileKeyStore::new(dir.path().join("ca.json"))),
            Arc::new(clock),
        )
        .unwrap();
        let (key, csr) = signet_ca::csr::new_key_and_csr(Some(&entry.spiffe_id)).unwrap();
        let minted = ca
            .mint_x509_svid(&signet_ca::X509SvidRequest {
                csr_der: &csr,
                spiffe_id: &entry.spiffe_id,
                ttl: Duration::from_secs(600),
                dns_names: &[],
                csr_id_rule: signet_ca::CsrIdRule::Exact,
            })
            .unwrap();
        let chain: Vec<u8> = minted.chain.iter().flat_map(|c| c.to_vec()).collect();
        let svid = X509Svid::parse(&chain, &key.serialize_der()).unwrap();
        CachedSvid {
            refresh_at: refresh_time(now, svid.not_after(), Duration::ZERO),
            svid,
            authority_id: minted.authority_id,
            revision: entry.revision,
        }
    }

    #[test]
    fn an_svid_from_a_server_clock_ahead_is_held_back_until_valid_while_the_old_one_serves() {
        let cache = SvidCache::new();
        let entry = signet_test_entry();
        let selectors: SelectorSet = ["unix:uid:1".parse().unwrap()].into_iter().collect();
        cache.replace_entries(vec![entry.clone()]);
        let current = skewed_svid(&entry, true, Duration::ZERO);
        cache.store_svid(&entry.id, current.clone());
        // Signed by a server 60 s ahead: notBefore is ~50 s in our future.
        let early = skewed_svid(&entry, true, Duration::from_secs(60));
        cache.store_svid(&entry.id, early.clone());
        let served = cache.identities(&selectors);
        assert_eq!(served.ready.len(), 1);
        assert_eq!(
            served.ready[0].1.svid.leaf(),
            current.svid.leaf(),
            "the not-yet-valid SVID is not served"
        );
        // Not due again (the held one is what counts), so the signer does not spin, and its
        // next wake-up is the held one's refresh time, not the replaced SVID's.
        assert!(cache.due(SystemTime::now()).is_empty());
        assert_eq!(cache.next_refresh(), Some(early.refresh_at));
        let at = cache.next_wakeups(SystemTime::now()).1.unwrap();
        assert!(at > SystemTime::now() + Duration::from_secs(40));
        assert!(!cache.promote(SystemTime::now()));
        assert!(cache.promote(at));
        assert_eq!(
            cache.identities(&selectors).ready[0].1.svid.leaf(),
            early.svid.leaf()
        );
        assert_eq!(cache.next_wakeups(SystemTime::now()).1, None);

        // With nothing valid to serve instead, the early SVID is stored as it is.
        let other = SvidCache::new();
        other.replace_entries(vec![entry.clone()]);
        other.store_svid(&entry.id, early.clone());
        assert_eq!(other.identities(&selectors).ready.len(), 1);
    }

    fn signet_test_entry() -> RegistrationEntry {
        let wire = signet_proto::agent::Entry {
            id: "e".into(),
            spiffe_id: "spiffe://example.org/w".into(),
            parent_id: "spiffe://example.org/agent".into(),
            selectors: vec!["unix:uid:1".into()],
            ..Default::default()
        };
        RegistrationEntry::try_from(&wire).unwrap()
    }
}
