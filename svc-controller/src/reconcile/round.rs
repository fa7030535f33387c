//! A round: the work of one call into the reconciler, at one instant, into one report. It
//! borrows the reconciler's state for that call, so that planning, sending, binding VIPs and
//! settling drains share `now` and the report without passing them around.

use super::*;

/// One call's work: the reconciler's state it may change, its instant and its report.
pub(super) struct Round<'a, D> {
    pub(super) dataplane: &'a mut D,
    pub(super) config: &'a ReconcilerConfig,
    pub(super) desired: &'a DesiredState,
    pub(super) view: &'a mut View,
    pub(super) vips: &'a mut Vips,
    pub(super) drains: &'a mut Drains,
    pub(super) retries: &'a mut Retries,
    pub(super) netfilter: &'a mut Option<Elements>,
    pub(super) netfilter_checked: &'a mut Option<netfilter::Checked>,
    pub(super) metrics: &'a mut Metrics,
    /// The instant the call was made at (the reconciler never reads a clock).
    pub(super) now: Instant,
    /// What the call did, returned to its caller.
    pub(super) report: SyncReport,
}

impl<D: Dataplane> Round<'_, D> {
    /// Schedules `work` for a retry with its backoff (see [`Retries::retry`]).
    pub(super) fn retry_later(&mut self, work: Work) {
        self.retries.retry(work, self.now, self.config);
    }

    /// The Service of a virtual server, for logs and messages.
    pub(super) fn owner(&self, key: &VirtualServerKey) -> Owner<'_> {
        owner(self.desired, key)
    }

    /// A Service with a virtual server on `addr`, for logs.
    pub(super) fn vip_owner(&self, addr: IpAddr) -> Owner<'_> {
        vip_owner(self.desired, addr)
    }
}

/// The Service of a virtual server, for logs and messages.
pub(super) fn owner<'d>(desired: &'d DesiredState, key: &VirtualServerKey) -> Owner<'d> {
    Owner(desired.virtual_servers().get(key).map(|vs| &vs.service))
}

/// A Service with a virtual server on `addr`, for logs.
pub(super) fn vip_owner(desired: &DesiredState, addr: IpAddr) -> Owner<'_> {
    let (lo, hi) = vs_range(addr);
    Owner(
        desired
            .virtual_servers()
            .range(lo..=hi)
            .next()
            .map(|(_, vs)| &vs.service),
    )
}

/// The Service of a virtual server in logs; `-` when no Service wants it (stale).
#[derive(Debug, Clone, Copy)]
pub(super) struct Owner<'a>(pub(super) Option<&'a ServiceRef>);

impl fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => fmt::Display::fmt(s, f),
            None => f.write_str("-"),
        }
    }
}
