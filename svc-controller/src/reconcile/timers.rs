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

impl<D: Dataplane> Reconciler<D> {
    /// When the reconciler wants [`Reconciler::poll`] to be called: the earliest due retry or
    /// drain check; `None` when nothing is scheduled.
    pub fn next_wakeup(&self) -> Option<Instant> {
        debug_assert!(self.timers_in_step(), "timer index out of step");
        self.timers.first().map(|(t, _)| *t)
    }

    /// Whether the timer index holds exactly the retries and drain checks (debug builds
    /// check it at every [`Reconciler::next_wakeup`]).
    fn timers_in_step(&self) -> bool {
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

    /// Runs what is due at `now`: retries whose backoff has elapsed and drain checks.
    pub fn poll(&mut self, now: Instant) -> SyncReport {
        let mut report = SyncReport::default();
        // Retries run in key order: virtual servers (together) before addresses before a
        // full pass.
        let due: BTreeSet<Work> = self
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
            .due(now)
            .filter_map(|t| match t {
                Timer::Drain(k) => Some(k),
                Timer::Retry(_) => None,
            })
            .collect();
        let mut drains = BTreeSet::new();
        for dkey in due {
            if let Some(d) = self.drains.get(&dkey).copied() {
                let next = at_most(now + interval, d.deadline);
                let next_check = if next > now { next } else { now + interval };
                self.set_drain(dkey, Drain { next_check, ..d });
                drains.insert(dkey.0);
            }
        }
        // A check reads the kernel's connection counts.
        self.suspect.extend(drains.iter().copied());
        self.reconcile_many(drains.into_iter().map(|key| (key, None)), now, &mut report);
        report
    }

    pub(super) fn schedule(&mut self, work: Work, now: Instant) {
        let attempts = self
            .pending
            .get(&work)
            .map_or(0, |b| b.attempts)
            .saturating_add(1);
        let due = now + self.config.retry_delay(attempts);
        self.set_retry(work, Backoff { attempts, due });
    }

    /// What is scheduled at or before `now`, in time order.
    fn due(&self, now: Instant) -> impl Iterator<Item = Timer> + '_ {
        self.timers
            .iter()
            .take_while(move |(t, _)| *t <= now)
            .map(|(_, timer)| *timer)
    }

    fn set_retry(&mut self, work: Work, backoff: Backoff) {
        if let Some(old) = self.pending.insert(work, backoff) {
            self.timers.remove(&(old.due, Timer::Retry(work)));
        }
        self.timers.insert((backoff.due, Timer::Retry(work)));
    }

    pub(super) fn clear_retry(&mut self, work: Work) {
        if let Some(old) = self.pending.remove(&work) {
            self.timers.remove(&(old.due, Timer::Retry(work)));
        }
    }

    pub(super) fn set_drain(&mut self, key: DrainKey, drain: Drain) {
        if let Some(old) = self.drains.insert(key, drain) {
            self.timers.remove(&(old.next_check, Timer::Drain(key)));
        }
        self.timers.insert((drain.next_check, Timer::Drain(key)));
    }

    pub(super) fn clear_drain(&mut self, key: DrainKey) {
        if let Some(old) = self.drains.remove(&key) {
            self.timers.remove(&(old.next_check, Timer::Drain(key)));
        }
    }

    /// Milliseconds until `work` is retried (for logs).
    pub(super) fn retry_in_ms(&self, work: Work, now: Instant) -> u128 {
        self.pending
            .get(&work)
            .map_or(0, |b| b.due.saturating_duration_since(now).as_millis())
    }
}
