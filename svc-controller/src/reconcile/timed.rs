//! Entries with a time, indexed by it: what retries and drain checks share, so that
//! [`Reconciler::next_wakeup`] and [`Reconciler::poll`] cost what is due, not what waits.

use super::*;

/// Something that is due at a time.
pub(super) trait At {
    /// When it is due.
    fn at(&self) -> Instant;
}

/// Entries by key, with a time index kept in step with them by every method that changes
/// them.
#[derive(Debug)]
pub(super) struct Timed<K, V> {
    entries: BTreeMap<K, V>,
    by_time: BTreeSet<(Instant, K)>,
}

impl<K, V> Default for Timed<K, V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            by_time: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Copy, V: At> Timed<K, V> {
    /// The earliest time.
    pub(super) fn first(&self) -> Option<Instant> {
        debug_assert!(self.in_step(), "time index out of step");
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Whether the time index holds exactly the entries' times (debug builds check it at
    /// every [`Timed::first`]).
    fn in_step(&self) -> bool {
        self.entries.len() == self.by_time.len()
            && self
                .entries
                .iter()
                .all(|(k, v)| self.by_time.contains(&(v.at(), *k)))
    }

    /// The keys due at or before `now`, in time order.
    pub(super) fn due(&self, now: Instant) -> impl Iterator<Item = K> + '_ {
        self.by_time
            .iter()
            .take_while(move |(t, _)| *t <= now)
            .map(|(_, k)| *k)
    }

    /// One entry.
    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }

    /// Inserts or replaces an entry.
    pub(super) fn insert(&mut self, key: K, value: V) {
        let at = value.at();
        if let Some(old) = self.entries.insert(key, value) {
            self.by_time.remove(&(old.at(), key));
        }
        self.by_time.insert((at, key));
    }

    /// Removes an entry.
    pub(super) fn remove(&mut self, key: &K) {
        if let Some(old) = self.entries.remove(key) {
            self.by_time.remove(&(old.at(), *key));
        }
    }

    /// The entries, in key order.
    pub(super) fn entries(&self) -> &BTreeMap<K, V> {
        &self.entries
    }

    /// Forgets every entry.
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }
}
