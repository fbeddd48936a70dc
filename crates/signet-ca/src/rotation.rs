//! The rotation state machine shared by X.509 and JWT authorities (DESIGN §5).
//!
//! An authority is *prepared* (published in the bundle, not yet signing) when the active one has
//! min(½ life, 30 d) left, *activated* when it has min(⅙ life, 7 d) left, and the previous one
//! stays in the bundle as *old* until it expires, because everything it signed expires no later.
//! Time is passed in, so tests drive it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::authority::Authority;
use crate::error::{Error, Result};

const THIRTY_DAYS: Duration = Duration::from_secs(30 * 24 * 3600);
const SEVEN_DAYS: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where an authority is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorityStatus {
    /// Published in the bundle, not yet signing.
    Prepared,
    /// Signing.
    Active,
    /// Replaced; published until it expires (or is revoked).
    Old,
}

/// One authority and its place in the rotation.
#[derive(Debug)]
pub struct Slot<A> {
    /// The authority.
    pub authority: Arc<A>,
    /// Its status.
    pub status: AuthorityStatus,
    /// Whether an operator tainted it: SVIDs it signed must be re-signed now.
    pub tainted: bool,
}

impl<A> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Self {
            authority: self.authority.clone(),
            status: self.status,
            tainted: self.tainted,
        }
    }
}

/// What a transition did, for logs, metrics and agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationEvent {
    /// A new authority was prepared and published.
    Prepared(String),
    /// An authority became the signing one.
    Activated(String),
    /// An authority left the bundle because it expired.
    Expired(String),
    /// An authority was tainted.
    Tainted(String),
    /// An authority was revoked and left the bundle.
    Revoked(String),
}

/// When to prepare the next authority: remaining lifetime ≤ min(½ life, 30 d).
pub fn prepare_threshold(life: Duration) -> Duration {
    (life / 2).min(THIRTY_DAYS)
}

/// When to activate it: remaining lifetime ≤ min(⅙ life, 7 d).
pub fn activate_threshold(life: Duration) -> Duration {
    (life / 6).min(SEVEN_DAYS)
}

/// The authorities of one kind (X.509 or JWT).
#[derive(Debug)]
pub struct AuthorityRing<A> {
    slots: Vec<Slot<A>>,
}

impl<A> Clone for AuthorityRing<A> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
        }
    }
}

impl<A> Default for AuthorityRing<A> {
    fn default() -> Self {
        Self { slots: Vec::new() }
    }
}

impl<A: Authority> AuthorityRing<A> {
    /// A ring from persisted slots.
    pub fn from_slots(slots: Vec<Slot<A>>) -> Self {
        Self { slots }
    }

    /// All slots, in no particular order.
    pub fn slots(&self) -> &[Slot<A>] {
        &self.slots
    }

    /// The signing authority.
    pub fn active(&self) -> Option<&Arc<A>> {
        self.find(AuthorityStatus::Active).map(|s| &s.authority)
    }

    /// The prepared authority.
    pub fn prepared(&self) -> Option<&Arc<A>> {
        self.find(AuthorityStatus::Prepared).map(|s| &s.authority)
    }

    fn find(&self, status: AuthorityStatus) -> Option<&Slot<A>> {
        self.slots.iter().find(|s| s.status == status)
    }

    /// Authorities whose keys belong in the bundle.
    pub fn published(&self) -> impl Iterator<Item = &Arc<A>> {
        self.slots.iter().map(|s| &s.authority)
    }

    /// Ids of tainted authorities.
    pub fn tainted_ids(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.tainted)
            .map(|s| s.authority.id().to_owned())
            .collect()
    }

    /// Advances the rotation to `now`, creating authorities with `create` as needed.
    pub fn tick(
        &mut self,
        now: SystemTime,
        mut create: impl FnMut() -> Result<A>,
    ) -> Result<Vec<RotationEvent>> {
        let mut events = Vec::new();
        // Anything expired can no longer have valid SVIDs: drop it from the bundle.
        self.slots.retain(|slot| {
            let keep = slot.authority.not_after() > now;
            if !keep {
                events.push(RotationEvent::Expired(slot.authority.id().to_owned()));
            }
            keep
        });
        if self.active().is_none() {
            if self.prepared().is_none() {
                self.push_prepared(create()?, &mut events);
            }
            self.activate_prepared(&mut events)?;
        }
        let Some(active) = self.active() else {
            return Err(Error::NoActiveAuthority("rotated"));
        };
        let life = active
            .not_after()
            .duration_since(active.not_before())
            .unwrap_or_default();
        let remaining = active.not_after().duration_since(now).unwrap_or_default();
        if remaining <= prepare_threshold(life) && self.prepared().is_none() {
            self.push_prepared(create()?, &mut events);
        }
        if remaining <= activate_threshold(life) && self.prepared().is_some() {
            self.activate_prepared(&mut events)?;
        }
        Ok(events)
    }

    fn push_prepared(&mut self, authority: A, events: &mut Vec<RotationEvent>) {
        events.push(RotationEvent::Prepared(authority.id().to_owned()));
        self.slots.push(Slot {
            authority: Arc::new(authority),
            status: AuthorityStatus::Prepared,
            tainted: false,
        });
    }

    fn activate_prepared(&mut self, events: &mut Vec<RotationEvent>) -> Result<()> {
        if self.prepared().is_none() {
            return Err(Error::InvalidTransition(
                "no prepared authority to activate".into(),
            ));
        }
        for slot in &mut self.slots {
            match slot.status {
                AuthorityStatus::Active => slot.status = AuthorityStatus::Old,
                AuthorityStatus::Prepared => {
                    slot.status = AuthorityStatus::Active;
                    events.push(RotationEvent::Activated(slot.authority.id().to_owned()));
                }
                AuthorityStatus::Old => {}
            }
        }
        Ok(())
    }

    /// Forces preparation of a new authority, replacing any prepared one.
    pub fn prepare(&mut self, authority: A) -> Vec<RotationEvent> {
        self.slots.retain(|s| s.status != AuthorityStatus::Prepared);
        let mut events = Vec::new();
        self.push_prepared(authority, &mut events);
        events
    }

    /// Forces activation of the prepared authority.
    pub fn activate(&mut self) -> Result<Vec<RotationEvent>> {
        let mut events = Vec::new();
        self.activate_prepared(&mut events)?;
        Ok(events)
    }

    /// Taints an old authority: agents must re-sign what it signed.
    pub fn taint(&mut self, id: &str) -> Result<Vec<RotationEvent>> {
        let slot = self.slot_mut(id)?;
        if slot.status != AuthorityStatus::Old {
            return Err(Error::InvalidTransition(format!(
                "authority {id} is {:?}; only an old authority can be tainted (activate its successor first)",
                slot.status
            )));
        }
        if slot.tainted {
            return Err(Error::InvalidTransition(format!(
                "authority {id} is already tainted"
            )));
        }
        slot.tainted = true;
        Ok(vec![RotationEvent::Tainted(id.to_owned())])
    }

    /// Revokes a tainted authority: it leaves the bundle at once.
    pub fn revoke(&mut self, id: &str) -> Result<Vec<RotationEvent>> {
        let slot = self.slot_mut(id)?;
        if !slot.tainted {
            return Err(Error::InvalidTransition(format!(
                "authority {id} is not tainted; taint it first so that agents re-sign its SVIDs"
            )));
        }
        self.slots.retain(|s| s.authority.id() != id);
        Ok(vec![RotationEvent::Revoked(id.to_owned())])
    }

    fn slot_mut(&mut self, id: &str) -> Result<&mut Slot<A>> {
        self.slots
            .iter_mut()
            .find(|s| s.authority.id() == id)
            .ok_or_else(|| Error::InvalidTransition(format!("no authority with id {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fake {
        id: String,
        not_before: SystemTime,
        not_after: SystemTime,
    }

    impl Authority for Fake {
        fn id(&self) -> &str {
            &self.id
        }
        fn not_before(&self) -> SystemTime {
            self.not_before
        }
        fn not_after(&self) -> SystemTime {
            self.not_after
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn t(hours: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + HOUR * hours as u32
    }

    fn maker(now: SystemTime, counter: &mut u32) -> impl FnMut() -> Result<Fake> + '_ {
        move || {
            *counter += 1;
            Ok(Fake {
                id: format!("a{counter}"),
                not_before: now,
                not_after: now + 24 * HOUR,
            })
        }
    }

    fn statuses(ring: &AuthorityRing<Fake>) -> Vec<(String, AuthorityStatus)> {
        let mut s: Vec<_> = ring
            .slots()
            .iter()
            .map(|s| (s.authority.id.clone(), s.status))
            .collect();
        s.sort_by(|a, b| a.0.cmp(&b.0));
        s
    }

    #[test]
    fn thresholds_follow_the_design() {
        assert_eq!(prepare_threshold(24 * HOUR), 12 * HOUR);
        assert_eq!(activate_threshold(24 * HOUR), 4 * HOUR);
        let year = Duration::from_secs(365 * 24 * 3600);
        assert_eq!(prepare_threshold(year), THIRTY_DAYS);
        assert_eq!(activate_threshold(year), SEVEN_DAYS);
    }

    #[test]
    fn full_lifecycle_prepare_activate_expire() {
        let mut ring = AuthorityRing::<Fake>::default();
        let mut n = 0;
        let events = ring.tick(t(0), maker(t(0), &mut n)).unwrap();
        assert_eq!(
            events,
            [
                RotationEvent::Prepared("a1".into()),
                RotationEvent::Activated("a1".into())
            ]
        );
        // Nothing happens before half-life.
        assert!(ring.tick(t(11), maker(t(11), &mut n)).unwrap().is_empty());
        // At 12 h left the successor is prepared and published, but a1 still signs.
        let events = ring.tick(t(12), maker(t(12), &mut n)).unwrap();
        assert_eq!(events, [RotationEvent::Prepared("a2".into())]);
        assert_eq!(ring.active().unwrap().id, "a1");
        assert_eq!(ring.published().count(), 2);
        // Nothing more until 4 h left.
        assert!(ring.tick(t(19), maker(t(19), &mut n)).unwrap().is_empty());
        let events = ring.tick(t(20), maker(t(20), &mut n)).unwrap();
        assert_eq!(events, [RotationEvent::Activated("a2".into())]);
        assert_eq!(
            statuses(&ring),
            [
                ("a1".into(), AuthorityStatus::Old),
                ("a2".into(), AuthorityStatus::Active)
            ]
        );
        // a1 stays published until it expires at 24 h, which is also a2's half-life (a2 was
        // created at 12 h), so the cycle continues with a3.
        assert!(ring.tick(t(23), maker(t(23), &mut n)).unwrap().is_empty());
        let events = ring.tick(t(24), maker(t(24), &mut n)).unwrap();
        assert_eq!(
            events,
            [
                RotationEvent::Expired("a1".into()),
                RotationEvent::Prepared("a3".into())
            ]
        );
        assert_eq!(
            statuses(&ring),
            [
                ("a2".into(), AuthorityStatus::Active),
                ("a3".into(), AuthorityStatus::Prepared)
            ]
        );
    }

    #[test]
    fn long_outage_replaces_an_expired_active_authority() {
        let mut ring = AuthorityRing::<Fake>::default();
        let mut n = 0;
        ring.tick(t(0), maker(t(0), &mut n)).unwrap();
        let events = ring.tick(t(100), maker(t(100), &mut n)).unwrap();
        assert_eq!(
            events,
            [
                RotationEvent::Expired("a1".into()),
                RotationEvent::Prepared("a2".into()),
                RotationEvent::Activated("a2".into())
            ]
        );
    }

    #[test]
    fn forced_prepare_replaces_and_activate_needs_one() {
        let mut ring = AuthorityRing::<Fake>::default();
        let mut n = 0;
        ring.tick(t(0), maker(t(0), &mut n)).unwrap();
        assert!(matches!(ring.activate(), Err(Error::InvalidTransition(_))));
        ring.prepare(Fake {
            id: "p1".into(),
            not_before: t(1),
            not_after: t(25),
        });
        ring.prepare(Fake {
            id: "p2".into(),
            not_before: t(1),
            not_after: t(25),
        });
        assert_eq!(ring.prepared().unwrap().id, "p2");
        assert_eq!(ring.published().count(), 2);
        ring.activate().unwrap();
        assert_eq!(ring.active().unwrap().id, "p2");
    }

    #[test]
    fn taint_and_revoke_rules() {
        let mut ring = AuthorityRing::<Fake>::default();
        let mut n = 0;
        ring.tick(t(0), maker(t(0), &mut n)).unwrap();
        // The active authority cannot be tainted or revoked.
        assert!(matches!(ring.taint("a1"), Err(Error::InvalidTransition(_))));
        assert!(matches!(
            ring.revoke("a1"),
            Err(Error::InvalidTransition(_))
        ));
        assert!(matches!(
            ring.taint("nope"),
            Err(Error::InvalidTransition(_))
        ));
        ring.prepare(Fake {
            id: "b".into(),
            not_before: t(1),
            not_after: t(25),
        });
        ring.activate().unwrap();
        assert_eq!(
            ring.taint("a1").unwrap(),
            [RotationEvent::Tainted("a1".into())]
        );
        assert!(matches!(ring.taint("a1"), Err(Error::InvalidTransition(_))));
        assert_eq!(ring.tainted_ids(), ["a1"]);
        assert_eq!(
            ring.revoke("a1").unwrap(),
            [RotationEvent::Revoked("a1".into())]
        );
        assert_eq!(ring.published().count(), 1);
    }

    #[test]
    fn untainted_authority_cannot_be_revoked() {
        let mut ring = AuthorityRing::<Fake>::default();
        let mut n = 0;
        ring.tick(t(0), maker(t(0), &mut n)).unwrap();
        ring.prepare(Fake {
            id: "b".into(),
            not_before: t(1),
            not_after: t(25),
        });
        ring.activate().unwrap();
        assert!(matches!(
            ring.revoke("a1"),
            Err(Error::InvalidTransition(_))
        ));
    }
}
