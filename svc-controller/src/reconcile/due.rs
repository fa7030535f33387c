//! What is due: [`Reconciler::next_wakeup`] says when, [`Reconciler::poll`] runs the retries
//! whose backoff has elapsed and the drain checks.

use super::*;

impl<D: Dataplane> Reconciler<D> {
    /// When the reconciler wants [`Reconciler::poll`] to be called: the earliest due retry or
    /// drain check; `None` when nothing is scheduled.
    pub fn next_wakeup(&self) -> Option<Instant> {
        match (self.retries.next_due(), self.drains.next_check()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs what is due at `now`: retries whose backoff has elapsed and drain checks.
    pub fn poll(&mut self, now: Instant) -> SyncReport {
        // Retries run in key order: virtual servers (together) before addresses before a
        // full pass.
        let due = self.retries.due(now);
        let full_pass = due.contains(&Work::FullPass);
        let mut round = self.round(now);
        let virtual_servers: Vec<(VirtualServerKey, Option<Option<ServiceState>>)> = due
            .iter()
            .filter_map(|w| match w {
                Work::Vs(key) => Some((*key, None)),
                _ => None,
            })
            .collect();
        round.metrics.retries += virtual_servers.len() as u64;
        round.reconcile_many(virtual_servers);
        for work in &due {
            match *work {
                Work::Vip(addr) => {
                    round.metrics.retries += 1;
                    round.reconcile_vip(addr);
                    round.unblock(addr);
                }
                Work::UdpFlows(key) => {
                    round.metrics.retries += 1;
                    round.clear_stale_udp_flows([&key]);
                }
                // A full pass due as well does it.
                Work::Netfilter if !full_pass => {
                    round.metrics.retries += 1;
                    round.verify_netfilter();
                }
                _ => {}
            }
        }
        let mut report = round.report;
        if full_pass {
            self.metrics.retries += 1;
            match self.verify(now) {
                Ok(r) => report.merge(r),
                Err(e) => report.errors.push(e.into()),
            }
        }
        // Due drain checks: each reads the kernel's connection counts.
        let drains = self.drains.take_due(now, self.config.drain_check_interval);
        let mut round = self.round(now);
        round.view.suspect.extend(drains.iter().copied());
        round.reconcile_many(drains.into_iter().map(|key| (key, None)));
        report.merge(round.report);
        report
    }
}
