//! Retries with backoff: failed work waits here, indexed by its due time, so that
//! [`Reconciler::next_wakeup`] and [`Reconciler::poll`] cost what is due, not what waits.

use super::*;

/// Work to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Work {
    /// Reconcile one virtual server.
    Vs(VirtualServerKey),
    /// Bind or unbind one address.
    Vip(IpAddr),
    /// A full pass ([`Reconciler::verify`]) that failed.
    FullPass,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    attempts: u32,
    due: Instant,
}

/// The work waiting for a retry, with its backoff.
#[derive(Debug, Default)]
pub(super) struct Retries {
    /// Work waiting for a retry, with its backoff.
    pending: BTreeMap<Work, Backoff>,
    /// Every retry's due time, in time order, kept in step with `pending` by every method
    /// that changes it.
    due: BTreeSet<(Instant, Work)>,
}

impl Retries {
    /// The earliest due retry.
    pub(super) fn next_due(&self) -> Option<Instant> {
        debug_assert!(self.in_step(), "retry index out of step");
        self.due.first().map(|(t, _)| *t)
    }

    /// Whether the time index holds exactly the pending retries (debug builds check it at
    /// every [`Retries::next_due`]).
    fn in_step(&self) -> bool {
        self.pending.len() == self.due.len()
            && self
                .pending
                .iter()
                .all(|(w, b)| self.due.contains(&(b.due, *w)))
    }

    /// The work due at or before `now`, in key order: virtual servers before addresses
    /// before a full pass.
    pub(super) fn due(&self, now: Instant) -> BTreeSet<Work> {
        self.due
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, work)| *work)
            .collect()
    }

    /// Schedules `work` for a retry, one more attempt after the last one, as `config`'s
    /// backoff says.
    pub(super) fn retry(&mut self, work: Work, now: Instant, config: &ReconcilerConfig) {
        let attempts = self
            .pending
            .get(&work)
            .map_or(0, |b| b.attempts)
            .saturating_add(1);
        let due = now + config.retry_delay(attempts);
        if let Some(old) = self.pending.insert(work, Backoff { attempts, due }) {
            self.due.remove(&(old.due, work));
        }
        self.due.insert((due, work));
    }

    /// Forgets the retry of `work` (it succeeded, or is no longer wanted).
    pub(super) fn clear(&mut self, work: Work) {
        if let Some(old) = self.pending.remove(&work) {
            self.due.remove(&(old.due, work));
        }
    }

    /// Whether `work` waits for a retry.
    pub(super) fn is_pending(&self, work: &Work) -> bool {
        self.pending.contains_key(work)
    }

    /// The work waiting for a retry.
    pub(super) fn pending(&self) -> impl ExactSizeIterator<Item = &Work> + '_ {
        self.pending.keys()
    }

    /// The work waiting for a retry from `first` to `last`, in order.
    pub(super) fn pending_between(
        &self,
        first: Work,
        last: Work,
    ) -> impl Iterator<Item = &Work> + '_ {
        self.pending.range(first..=last).map(|(w, _)| w)
    }

    /// Milliseconds until `work` is retried (for logs).
    pub(super) fn retry_in_ms(&self, work: Work, now: Instant) -> u128 {
        self.pending
            .get(&work)
            .map_or(0, |b| b.due.saturating_duration_since(now).as_millis())
    }

    /// Forgets every retry.
    pub(super) fn clear_all(&mut self) {
        *self = Self::default();
    }
}
