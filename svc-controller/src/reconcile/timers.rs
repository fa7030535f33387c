//! Retries and drain checks in time order: the backoff of failed work and the timer index
//! that makes [`Reconciler::next_wakeup`] and [`Reconciler::poll`] cost what is due.

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
pub(super) struct Backoff {
    pub(super) attempts: u32,
    pub(super) due: Instant,
}

/// Something scheduled: a retry or a drain check, indexed by its time so that
/// [`Reconciler::next_wakeup`] and [`Reconciler::poll`] cost what is due, not what waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Retry(Work),
    Drain(DrainKey),
}

/// Retries with backoff and drain checks, indexed by their time so that
/// [`Reconciler::next_wakeup`] and [`Reconciler::poll`] cost what is due, not what waits.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    /// Work waiting for a retry, with its backoff.
    pending: BTreeMap<Work, Backoff>,
    /// Draining real servers, with their deadline and next check.
    drains: BTreeMap<DrainKey, Drain>,
    /// Every retry's due time and every drain's next check, in time order, kept in step with
    /// `pending` and `drains` by every method that changes them.
    timers: BTreeSet<(Instant, Timer)>,
}

impl Schedule {
    /// The earliest due retry or drain check.
    pub(super) fn next_wakeup(&self) -> Option<Instant> {
        debug_assert!(self.in_step(), "timer index out of step");
        self.timers.first().map(|(t, _)| *t)
    }

    /// Whether the timer index holds exactly the retries and drain checks (debug builds
    /// check it at every [`Schedule::next_wakeup`]).
    fn in_step(&self) -> bool {
        let derived: BTreeSet<(Instant, Timer)> = self
            .pending
            .iter()
            .map(|(w, b)| (b.due, Timer::Retry(*w)))
            .chain(
                self.drains
                    .iter()
                    .map(|(k, d)| (d.next_check, Timer::Drain(*k))),
            )
            .collect();
        derived == self.timers
    }

    /// What is scheduled at or before `now`, in time order.
    pub(super) fn due(&self, now: Instant) -> impl Iterator<Item = Timer> + '_ {
        self.timers
            .iter()
            .take_while(move |(t, _)| *t <= now)
            .map(|(_, timer)| *timer)
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
            self.timers.remove(&(old.due, Timer::Retry(work)));
        }
        self.timers.insert((due, Timer::Retry(work)));
    }

    /// Forgets the retry of `work` (it succeeded, or is no longer wanted).
    pub(super) fn clear_retry(&mut self, work: Work) {
        if let Some(old) = self.pending.remove(&work) {
            self.timers.remove(&(old.due, Timer::Retry(work)));
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

    /// Records (or updates) a drain and its next check.
    pub(super) fn set_drain(&mut self, key: DrainKey, drain: Drain) {
        if let Some(old) = self.drains.insert(key, drain) {
            self.timers.remove(&(old.next_check, Timer::Drain(key)));
        }
        self.timers.insert((drain.next_check, Timer::Drain(key)));
    }

    /// Forgets a drain (its real server is gone, or it is wanted again).
    pub(super) fn clear_drain(&mut self, key: DrainKey) {
        if let Some(old) = self.drains.remove(&key) {
            self.timers.remove(&(old.next_check, Timer::Drain(key)));
        }
    }

    /// One drain.
    pub(super) fn drain(&self, key: &DrainKey) -> Option<Drain> {
        self.drains.get(key).copied()
    }

    /// Every drain.
    pub(super) fn drains(&self) -> &BTreeMap<DrainKey, Drain> {
        &self.drains
    }

    /// Forgets everything scheduled.
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }
}

impl<D: Dataplane> Reconciler<D> {
    /// When the reconciler wants [`Reconciler::poll`] to be called: the earliest due retry or
    /// drain check; `None` when nothing is scheduled.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.schedule.next_wakeup()
    }

    /// Runs what is due at `now`: retries whose backoff has elapsed and drain checks.
    pub fn poll(&mut self, now: Instant) -> SyncReport {
        let mut report = SyncReport::default();
        // Retries run in key order: virtual servers (together) before addresses before a
        // full pass.
        let due: BTreeSet<Work> = self
            .schedule
            .due(now)
            .filter_map(|t| match t {
                Timer::Retry(w) => Some(w),
                Timer::Drain(_) => None,
            })
            .collect();
        let virtual_servers: Vec<(VirtualServerKey, Option<Option<ServiceState>>)> = due
            .iter()
            .filter_map(|w| match w {
                Work::Vs(key) => Some((*key, None)),
                _ => None,
            })
            .collect();
        self.metrics.retries += virtual_servers.len() as u64;
        self.reconcile_many(virtual_servers, now, &mut report);
        for work in due {
            match work {
                Work::Vs(_) => {} // done above, together
                Work::Vip(addr) => {
                    self.metrics.retries += 1;
                    self.reconcile_vip(addr, now, &mut report);
                    self.unblock(addr, now, &mut report);
                }
                Work::FullPass => {
                    self.metrics.retries += 1;
                    match self.verify(now) {
                        Ok(r) => report.merge(r),
                        Err(e) => report.errors.push(e.into()),
                    }
                }
            }
        }
        // Due drain checks. The next check is pushed back first, so that a check that cannot
        // read the kernel waits for the next interval instead of being due again at once.
        let interval = self.config.drain_check_interval;
        let due: Vec<DrainKey> = self
            .schedule
            .due(now)
            .filter_map(|t| match t {
                Timer::Drain(k) => Some(k),
                Timer::Retry(_) => None,
            })
            .collect();
        let mut drains = BTreeSet::new();
        for dkey in due {
            if let Some(d) = self.schedule.drain(&dkey) {
                let next = at_most(now + interval, d.deadline);
                let next_check = if next > now { next } else { now + interval };
                self.schedule.set_drain(dkey, Drain { next_check, ..d });
                drains.insert(dkey.0);
            }
        }
        // A check reads the kernel's connection counts.
        self.suspect.extend(drains.iter().copied());
        self.reconcile_many(drains.into_iter().map(|key| (key, None)), now, &mut report);
        report
    }

    /// Schedules `work` for a retry (see [`Schedule::retry`]).
    pub(super) fn retry_later(&mut self, work: Work, now: Instant) {
        self.schedule.retry(work, now, &self.config);
    }
}
