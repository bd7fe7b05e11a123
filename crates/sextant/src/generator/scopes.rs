//! The scope cache: each scope's compiled entry, at most a cap of them, least recently used
//! evicted first.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::ScopeEntry;

/// A cached scope and when it was last asked for.
pub(super) struct Slot {
    entry: Arc<Mutex<ScopeEntry>>,
    used: u64,
}

/// The scope cache: entries by scope key, at most `max`, least recently used evicted first.
pub(super) struct Scopes {
    pub(super) slots: HashMap<String, Slot>,
    pub(super) clock: u64,
    pub(super) max: usize,
}

impl Scopes {
    /// The entry of `key` if there is one (counted as a use).
    pub(super) fn cached(&mut self, key: &str) -> Option<Arc<Mutex<ScopeEntry>>> {
        self.clock += 1;
        let slot = self.slots.get_mut(key)?;
        slot.used = self.clock;
        Some(slot.entry.clone())
    }

    /// The entry of `key`, made if missing, and whether another was evicted to make room.
    pub(super) fn get(&mut self, key: String) -> (Arc<Mutex<ScopeEntry>>, bool) {
        if let Some(entry) = self.cached(&key) {
            return (entry, false);
        }
        let clock = self.clock;
        let evicted = self.slots.len() >= self.max && self.evict();
        let entry = Arc::new(Mutex::new(ScopeEntry::default()));
        self.slots.insert(
            key,
            Slot {
                entry: entry.clone(),
                used: clock,
            },
        );
        (entry, evicted)
    }

    /// Evicts the least recently used scope, preferring one whose resources no stream holds
    /// (no connected proxy uses it); proxies of an evicted scope still hold their resources
    /// and get the scope compiled again at their next update.
    fn evict(&mut self) -> bool {
        let unheld = |s: &Slot| {
            Arc::strong_count(&s.entry) == 1
                && s.entry
                    .try_lock()
                    .is_ok_and(|e| Arc::strong_count(&e.resources) == 1)
        };
        let victim = self
            .slots
            .iter()
            .filter(|(_, s)| unheld(s))
            .min_by_key(|(_, s)| s.used)
            .or_else(|| self.slots.iter().min_by_key(|(_, s)| s.used))
            .map(|(k, _)| k.clone());
        victim.is_some_and(|k| self.slots.remove(&k).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_cache_keeps_at_most_its_cap_least_recently_used_first() {
        let mut scopes = Scopes {
            slots: HashMap::new(),
            clock: 0,
            max: 2,
        };
        assert!(!scopes.get("a".into()).1);
        let (_held, _) = scopes.get("b".into());
        assert!(!scopes.get("a".into()).1);
        // "b" is older but held by someone; "a" goes first.
        assert!(scopes.get("c".into()).1);
        assert_eq!(scopes.slots.len(), 2);
        assert!(scopes.slots.contains_key("b") && scopes.slots.contains_key("c"));
    }
}
