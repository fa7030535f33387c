//! Retries with backoff: failed work waits here, indexed by its due time.

use super::timed::{At, Timed};
use super::*;

/// Work to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Work {
    /// Reconcile one virtual server.
    Vs(VirtualServerKey),
    /// Bind or unbind one address.
    Vip(IpAddr),
    /// Bring the nftables table in line (a read or a transaction failed).
    Netfilter,
    /// Delete the stale UDP flows of one virtual server.
    UdpFlows(VirtualServerKey),
    /// A full pass ([`Reconciler::verify`]) that failed.
    FullPass,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    attempts: u32,
    due: Instant,
}

impl At for Backoff {
    fn at(&self) -> Instant {
        self.due
    }
}

/// The work waiting for a retry, with its backoff, indexed by its due time.
#[derive(Debug, Default)]
pub(super) struct Retries(Timed<Work, Backoff>);

impl Retries {
    /// The earliest due retry.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.0.first()
    }

    /// The work due at or before `now`, in key order: virtual servers before addresses
    /// before a full pass.
    pub(super) fn due(&self, now: Instant) -> BTreeSet<Work> {
        self.0.due(now).collect()
    }

    /// Schedules `work` for a retry, one more attempt after the last one, as `config`'s
    /// backoff says.
    pub(super) fn retry(&mut self, work: Work, now: Instant, config: &ReconcilerConfig) {
        let attempts = self
            .0
            .get(&work)
            .map_or(0, |b| b.attempts)
            .saturating_add(1);
        let due = now + config.retry_delay(attempts);
        self.0.insert(work, Backoff { attempts, due });
    }

    /// Forgets the retry of `work` (it succeeded, or is no longer wanted).
    pub(super) fn clear(&mut self, work: Work) {
        self.0.remove(&work);
    }

    /// Whether `work` waits for a retry.
    pub(super) fn is_pending(&self, work: &Work) -> bool {
        self.0.get(work).is_some()
    }

    /// The work waiting for a retry.
    pub(super) fn pending(&self) -> impl ExactSizeIterator<Item = &Work> + '_ {
        self.0.entries().keys()
    }

    /// The work waiting for a retry from `first` to `last`, in order.
    pub(super) fn pending_between(
        &self,
        first: Work,
        last: Work,
    ) -> impl Iterator<Item = &Work> + '_ {
        self.0.entries().range(first..=last).map(|(w, _)| w)
    }

    /// Milliseconds until `work` is retried (for logs).
    pub(super) fn retry_in_ms(&self, work: Work, now: Instant) -> u128 {
        self.0
            .get(&work)
            .map_or(0, |b| b.due.saturating_duration_since(now).as_millis())
    }

    /// Forgets every retry.
    pub(super) fn clear_all(&mut self) {
        self.0.clear();
    }
}
