//! VIPs on the dummy interface: bound before their virtual servers are created, unbound after
//! the last is deleted, and virtual servers held back while their VIP cannot be bound.

use super::*;

/// The first and last possible virtual-server keys on `addr` (keys sort by address first).
fn vs_range(addr: IpAddr) -> (VirtualServerKey, VirtualServerKey) {
    (
        VirtualServerKey {
            addr,
            protocol: Protocol::Tcp,
            port: 0,
        },
        VirtualServerKey {
            addr,
            protocol: Protocol::Sctp,
            port: u16::MAX,
        },
    )
}

impl<D: Dataplane> Reconciler<D> {
    /// Binds the wanted VIPs the dummy interface lacks (a full pass does it after it has
    /// decided what it owns: a VIP bound earlier would make foreign entries on it look ours).
    pub(super) fn bind_missing_vips(&mut self, now: Instant, report: &mut SyncReport) {
        let missing: Vec<IpAddr> = self
            .wanted_vips()
            .difference(&self.dummy)
            .copied()
            .collect();
        self.bind_vips(missing, now, report);
    }

    /// The VIPs to bind on the dummy interface: the desired ones the node does not already
    /// have on another interface.
    fn wanted_vips(&self) -> BTreeSet<IpAddr> {
        self.desired
            .vips()
            .into_iter()
            .filter(|a| !self.node_addresses.contains(a))
            .collect()
    }

    /// Unbinds the dummy interface's addresses that are no longer wanted (each once its
    /// virtual servers are gone).
    pub(super) fn unbind_stale_vips(&mut self, now: Instant, report: &mut SyncReport) {
        let wanted = self.wanted_vips();
        let stale: Vec<IpAddr> = self.dummy.difference(&wanted).copied().collect();
        for addr in stale {
            self.reconcile_vip(addr, now, report);
        }
    }

    pub(super) fn vip_wanted(&self, addr: &IpAddr) -> bool {
        self.desired.has_vip(addr) && !self.node_addresses.contains(addr)
    }

    /// Binds or unbinds one address as the desired state wants.
    pub(super) fn reconcile_vip(&mut self, addr: IpAddr, now: Instant, report: &mut SyncReport) {
        let wanted = self.vip_wanted(&addr);
        let bound = self.dummy.contains(&addr);
        let result = if wanted && !bound {
            self.dataplane.add_dummy_address(addr).map(|()| {
                self.dummy.insert(addr);
            })
        } else if !wanted && bound {
            if self.has_unfinished_vs(addr) {
                // Its virtual servers are not all gone: unbinding now could orphan them.
                self.retry_later(Work::Vip(addr), now);
                return;
            }
            self.dataplane.delete_dummy_address(addr).map(|()| {
                self.dummy.remove(&addr);
            })
        } else {
            self.schedule.clear_retry(Work::Vip(addr));
            return;
        };
        self.vip_changed(addr, wanted, result, now, report);
    }

    /// Binds many addresses the desired state wants and the dummy interface lacks, with the
    /// requests sent together (see [`Dataplane::add_dummy_addresses`]), then handles each
    /// result as [`Self::reconcile_vip`] does.
    pub(super) fn bind_vips(&mut self, addrs: Vec<IpAddr>, now: Instant, report: &mut SyncReport) {
        let addrs: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|a| self.vip_wanted(a) && !self.dummy.contains(a))
            .collect();
        if addrs.is_empty() {
            // Nothing to ask the kernel (a sync that binds nothing costs no round trip).
            return;
        }
        let results = self.dataplane.add_dummy_addresses(&addrs);
        let mut results = results.into_iter();
        for addr in addrs {
            let result = results.next().unwrap_or_else(|| {
                Err(DataplaneError::Netlink {
                    context: format!("bind {addr}"),
                    source: "the dataplane gave no answer".into(),
                })
            });
            if result.is_ok() {
                self.dummy.insert(addr);
            }
            self.vip_changed(addr, true, result, now, report);
        }
    }

    /// Counts, logs and schedules the outcome of binding (`wanted`) or unbinding `addr`.
    fn vip_changed(
        &mut self,
        addr: IpAddr,
        wanted: bool,
        result: Result<(), DataplaneError>,
        now: Instant,
        report: &mut SyncReport,
    ) {
        match result {
            Ok(()) => {
                self.metrics.address_changes += 1;
                report.address_changes += 1;
                self.schedule.clear_retry(Work::Vip(addr));
                debug!(vip = %addr, bound = wanted, "dummy interface address changed");
            }
            Err(e) => {
                self.metrics.address_failures += 1;
                self.retry_later(Work::Vip(addr), now);
                warn!(
                    vip = %addr,
                    service = %self.vip_owner(addr),
                    change = if wanted { "bind" } else { "unbind" },
                    error = %e,
                    retry_in_ms = self.schedule.retry_in_ms(Work::Vip(addr), now),
                    "dummy interface address change failed; retrying"
                );
                report.errors.push(e.into());
            }
        }
    }

    /// Whether `addr` should be bound on the dummy interface and is not: its virtual servers
    /// must not be created (they would not be recognised as ours after a restart).
    pub(super) fn vip_unbound(&self, addr: &IpAddr) -> bool {
        !self.dummy.contains(addr) && self.vip_wanted(addr)
    }

    /// Records that `key` is not created because its VIP is not bound; it is retried with
    /// the VIP (see [`Reconciler::unblock`]).
    pub(super) fn block(&mut self, key: VirtualServerKey, now: Instant, report: &mut SyncReport) {
        self.schedule.clear_retry(Work::Vs(key));
        if self.blocked.insert(key) {
            self.metrics.blocked_on_vip += 1;
        }
        if !self.schedule.is_pending(&Work::Vip(key.addr)) {
            // Not waiting for a retry (e.g. unbound behind our back): bind it soon.
            self.retry_later(Work::Vip(key.addr), now);
        }
        let service = self.owner(&key);
        warn!(
            virtual_server = %key,
            service = %service,
            vip = %key.addr,
            retry_in_ms = self.schedule.retry_in_ms(Work::Vip(key.addr), now),
            "virtual server not created: its VIP is not bound; retried with the VIP"
        );
        report.errors.push(SyncError::VipNotBound {
            key,
            service: service.0.cloned(),
        });
    }

    /// Creates the virtual servers that waited for `addr` once it is bound.
    pub(super) fn unblock(&mut self, addr: IpAddr, now: Instant, report: &mut SyncReport) {
        if !self.dummy.contains(&addr) {
            return;
        }
        let (lo, hi) = vs_range(addr);
        let keys: Vec<VirtualServerKey> = self.blocked.range(lo..=hi).copied().collect();
        for key in keys {
            self.reconcile_vs(key, now, None, report);
        }
    }

    /// A Service with a virtual server on `addr`, for logs.
    pub(super) fn vip_owner(&self, addr: IpAddr) -> Owner<'_> {
        let (lo, hi) = vs_range(addr);
        Owner(
            self.desired
                .virtual_servers()
                .range(lo..=hi)
                .next()
                .map(|(_, vs)| &vs.service),
        )
    }

    /// Whether an owned virtual server on `addr` that is not desired may still be in the
    /// kernel. Every undesired virtual server is deleted before its VIP is looked at (by the
    /// sync that removed it, or by the full pass), and one whose deletion failed waits for a
    /// retry, so the retry queue (ordered by address) says it without scanning the table.
    fn has_unfinished_vs(&self, addr: IpAddr) -> bool {
        let (lo, hi) = vs_range(addr);
        let desired = self.desired.virtual_servers();
        self.schedule
            .pending_between(Work::Vs(lo), Work::Vs(hi))
            .any(|w| matches!(w, Work::Vs(k) if !desired.contains_key(k)))
            || self
                .suspect
                .range(lo..=hi)
                .any(|k| !desired.contains_key(k))
    }
}
