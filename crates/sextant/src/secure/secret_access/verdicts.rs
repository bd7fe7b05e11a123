//! SubjectAccessReview answers kept for a while: an identity allowed for [`ALLOWED_TTL`], one
//! refused for [`DENIED_TTL`] (istiod's one and five minutes: access need not be revoked
//! quickly, and a Role granted after a refusal should be noticed soon). A verdict past its
//! time still serves until a new answer replaces it, so that asking again never takes a
//! gateway's certificates away while the API server answers, or when it cannot.
//!
//! Allowed and refused identities are kept apart, each at most `capacity`: refusals never push
//! out acceptances. A key is also marked while its review is under way, so that one identity
//! is asked about once at a time.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use crate::credentials::Access;

/// How long an identity found allowed is trusted without asking again.
pub const ALLOWED_TTL: Duration = Duration::from_secs(300);

/// How long a refusal is kept without asking again.
pub const DENIED_TTL: Duration = Duration::from_secs(60);

/// Whom a verdict is about: an identity as one registration of one cluster's API server
/// answered for it (see `queues::Queue::registration`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Key {
    /// The cluster whose API server was asked.
    pub cluster: String,
    /// Its registration.
    pub registration: u64,
    /// The identity's namespace.
    pub namespace: String,
    /// The identity's service account.
    pub service_account: String,
}

/// A kept verdict: what it says and until when it is fresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// [`Access::Allowed`] or [`Access::Denied`].
    pub access: Access,
    /// Past this, the identity is asked about again (and the verdict serves meanwhile).
    pub fresh_until: Instant,
}

/// The verdicts, and the keys being reviewed.
pub struct Verdicts {
    capacity: usize,
    allowed: HashMap<Key, Instant>,
    denied: HashMap<Key, (Instant, String)>,
    reviewing: HashSet<Key>,
}

impl Verdicts {
    /// At most `capacity` allowed and `capacity` refused identities.
    pub fn new(capacity: usize) -> Self {
        Verdicts {
            capacity,
            allowed: HashMap::new(),
            denied: HashMap::new(),
            reviewing: HashSet::new(),
        }
    }

    /// The verdict kept for `key`, fresh or not.
    pub fn get(&self, key: &Key) -> Option<Kept> {
        if let Some(until) = self.allowed.get(key) {
            return Some(Kept {
                access: Access::Allowed,
                fresh_until: *until,
            });
        }
        self.denied.get(key).map(|(until, why)| Kept {
            access: Access::Denied(why.clone()),
            fresh_until: *until,
        })
    }

    /// Marks `key` as being reviewed; false when it already is.
    pub fn start(&mut self, key: &Key) -> bool {
        self.reviewing.insert(key.clone())
    }

    /// The review of `key` ended without an answer.
    pub fn abandon(&mut self, key: &Key) {
        self.reviewing.remove(key);
    }

    /// Keeps the answer for `key` at `now` (ending its review); the verdict it replaces.
    pub fn answer(&mut self, key: &Key, allowed: Result<(), String>, now: Instant) -> Option<Kept> {
        self.reviewing.remove(key);
        let before = self.get(key);
        self.allowed.remove(key);
        self.denied.remove(key);
        if self.capacity == 0 {
            return before;
        }
        match allowed {
            Ok(()) => {
                make_room(&mut self.allowed, self.capacity, now, |until| *until);
                self.allowed.insert(key.clone(), now + ALLOWED_TTL);
            }
            Err(why) => {
                make_room(&mut self.denied, self.capacity, now, |(until, _)| *until);
                self.denied.insert(key.clone(), (now + DENIED_TTL, why));
            }
        }
        before
    }

    /// Verdicts kept, allowed and refused.
    #[cfg(test)]
    pub fn len(&self) -> (usize, usize) {
        (self.allowed.len(), self.denied.len())
    }
}

/// Frees a place in a full `map`: the stale verdicts go first, else any one.
fn make_room<V>(
    map: &mut HashMap<Key, V>,
    capacity: usize,
    now: Instant,
    until: impl Fn(&V) -> Instant,
) {
    if map.len() < capacity {
        return;
    }
    map.retain(|_, v| until(v) > now);
    if map.len() >= capacity
        && let Some(any) = map.keys().next().cloned()
    {
        map.remove(&any);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(service_account: &str) -> Key {
        Key {
            cluster: "Kubernetes".into(),
            registration: 0,
            namespace: "istio-system".into(),
            service_account: service_account.into(),
        }
    }

    #[test]
    fn verdicts_are_fresh_for_their_ttl_and_serve_until_replaced() {
        let mut verdicts = Verdicts::new(10);
        let now = Instant::now();
        assert_eq!(verdicts.get(&key("gw")), None);
        assert!(verdicts.start(&key("gw")));
        assert!(!verdicts.start(&key("gw")), "one review at a time");
        assert_eq!(verdicts.answer(&key("gw"), Ok(()), now), None);
        let kept = verdicts.get(&key("gw")).expect("kept");
        assert_eq!(kept.access, Access::Allowed);
        assert_eq!(kept.fresh_until, now + ALLOWED_TTL);
        assert!(verdicts.start(&key("gw")), "the review ended");
        verdicts.abandon(&key("gw"));
        // Asked again later: refused now, for a shorter while.
        let later = now + ALLOWED_TTL;
        let before = verdicts.answer(&key("gw"), Err("no rule".into()), later);
        assert_eq!(before.map(|k| k.access), Some(Access::Allowed));
        assert_eq!(
            verdicts.get(&key("gw")),
            Some(Kept {
                access: Access::Denied("no rule".into()),
                fresh_until: later + DENIED_TTL,
            })
        );
        assert_eq!(verdicts.len(), (0, 1));
    }

    #[test]
    fn refusals_never_push_out_acceptances() {
        let mut verdicts = Verdicts::new(2);
        let now = Instant::now();
        verdicts.answer(&key("gw"), Ok(()), now);
        for i in 0..100 {
            verdicts.answer(&key(&format!("other-{i}")), Err("no".into()), now);
        }
        assert_eq!(verdicts.len(), (1, 2));
        assert_eq!(
            verdicts.get(&key("gw")).map(|k| k.access),
            Some(Access::Allowed)
        );
        // Full of fresh acceptances: one goes to make room; stale ones go first.
        verdicts.answer(&key("gw-2"), Ok(()), now);
        let later = now + ALLOWED_TTL + Duration::from_secs(1);
        verdicts.answer(&key("gw-3"), Ok(()), later);
        assert_eq!(verdicts.len().0, 1);
        assert!(verdicts.get(&key("gw-3")).is_some());
        // Nothing kept at all with no room.
        let mut none = Verdicts::new(0);
        none.answer(&key("gw"), Ok(()), now);
        assert_eq!(none.get(&key("gw")), None);
    }
}
