//! VIPs on the dummy interface: bound before their virtual servers are created, unbound after
//! the last is deleted, and virtual servers held back while their VIP cannot be bound.

use super::*;

/// The first and last possible virtual-server keys on `addr` (keys sort by address first).
pub(super) fn vs_range(addr: IpAddr) -> (VirtualServerKey, VirtualServerKey) {
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

/// The node's addresses as the reconciler sees them: the VIPs bound on the dummy interface,
/// the node's other addresses (a desired VIP the node already has is not bound again), and
/// the virtual servers held back because their VIP could not be bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vips {
    pub(super) bound: BTreeSet<IpAddr>,
    pub(super) node: BTreeSet<IpAddr>,
    pub(super) blocked: BTreeSet<VirtualServerKey>,
}

impl Vips {
    /// The addresses the reconciler believes are bound on the dummy interface.
    pub fn bound(&self) -> &BTreeSet<IpAddr> {
        &self.bound
    }

    /// The node's other addresses, as the last full pass read them.
    pub fn node_addresses(&self) -> &BTreeSet<IpAddr> {
        &self.node
    }

    /// The desired virtual servers not created because their VIP is not bound on the dummy
    /// interface (the binding failed): they are created when a retry binds it.
    pub fn blocked(&self) -> impl ExactSizeIterator<Item = VirtualServerKey> + '_ {
        self.blocked.iter().copied()
    }

    /// Whether `addr` is to be bound on the dummy interface: desired, and not an address the
    /// node has on another interface.
    pub(super) fn wanted(&self, desired: &DesiredState, addr: &IpAddr) -> bool {
        desired.has_vip(addr) && !self.node.contains(addr)
    }

    /// Every address to bind on the dummy interface.
    pub(super) fn wanted_all(&self, desired: &DesiredState) -> BTreeSet<IpAddr> {
        desired
            .vips()
            .into_iter()
            .filter(|a| !self.node.contains(a))
            .collect()
    }

    /// Whether `addr` should be bound on the dummy interface and is not: its virtual servers
    /// must not be created (they would not be recognised as ours after a restart).
    pub(super) fn unbound(&self, desired: &DesiredState, addr: &IpAddr) -> bool {
        !self.bound.contains(addr) && self.wanted(desired, addr)
    }

    /// The ownership rule over these addresses.
    pub(super) fn ownership(&self, config: &ReconcilerConfig) -> Ownership {
        Ownership {
            dummy_addresses: self.bound.clone(),
            node_addresses: self.node.clone(),
            node_port_range: config.node_port_range.clone(),
            excluded: config.exclude_cidrs.clone(),
        }
    }

    /// Which rule of the [ownership](crate::ownership) made `key` ours, for logs.
    pub(super) fn why_ours(
        &self,
        key: &VirtualServerKey,
        config: &ReconcilerConfig,
    ) -> &'static str {
        if self.bound.contains(&key.addr) {
            "its address is bound to the dummy interface this controller manages"
        } else if self.node.contains(&key.addr) && config.node_port_range.contains(&key.port) {
            "its port is in the NodePort range on a node address"
        } else {
            "it was programmed for a Service earlier"
        }
    }
}

impl<D: Dataplane> Round<'_, D> {
    /// Binds the wanted VIPs the dummy interface lacks (a full pass does it after it has
    /// decided what it owns: a VIP bound earlier would make foreign entries on it look ours).
    pub(super) fn bind_missing_vips(&mut self) {
        let missing: Vec<IpAddr> = self
            .vips
            .wanted_all(self.desired)
            .difference(&self.vips.bound)
            .copied()
            .collect();
        self.bind_vips(missing);
    }

    /// Unbinds the dummy interface's addresses that are no longer wanted (each once its
    /// virtual servers are gone).
    pub(super) fn unbind_stale_vips(&mut self) {
        let wanted = self.vips.wanted_all(self.desired);
        let stale: Vec<IpAddr> = self.vips.bound.difference(&wanted).copied().collect();
        for addr in stale {
            self.reconcile_vip(addr);
        }
    }

    /// Binds or unbinds one address as the desired state wants.
    pub(super) fn reconcile_vip(&mut self, addr: IpAddr) {
        let wanted = self.vips.wanted(self.desired, &addr);
        let bound = self.vips.bound.contains(&addr);
        let result = if wanted && !bound {
            self.dataplane.add_dummy_address(addr).map(|()| {
                self.vips.bound.insert(addr);
            })
        } else if !wanted && bound {
            if self.has_unfinished_vs(addr) {
                // Its virtual servers are not all gone: unbinding now could orphan them.
                self.retry_later(Work::Vip(addr));
                return;
            }
            self.dataplane.delete_dummy_address(addr).map(|()| {
                self.vips.bound.remove(&addr);
            })
        } else {
            self.retries.clear(Work::Vip(addr));
            return;
        };
        self.vip_changed(addr, wanted, result);
    }

    /// Binds many addresses the desired state wants and the dummy interface lacks, with the
    /// requests sent together (see [`Dataplane::add_dummy_addresses`]), then handles each
    /// result as [`Self::reconcile_vip`] does.
    pub(super) fn bind_vips(&mut self, addrs: Vec<IpAddr>) {
        let addrs: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|a| self.vips.unbound(self.desired, a))
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
                self.vips.bound.insert(addr);
            }
            self.vip_changed(addr, true, result);
        }
    }

    /// Counts, logs and schedules the outcome of binding (`wanted`) or unbinding `addr`.
    fn vip_changed(&mut self, addr: IpAddr, wanted: bool, result: Result<(), DataplaneError>) {
        match result {
            Ok(()) => {
                self.metrics.address_changes += 1;
                self.report.address_changes += 1;
                self.retries.clear(Work::Vip(addr));
                debug!(vip = %addr, bound = wanted, "dummy interface address changed");
            }
            Err(e) => {
                self.metrics.address_failures += 1;
                self.retry_later(Work::Vip(addr));
                warn!(
                    vip = %addr,
                    service = %self.vip_owner(addr),
                    change = if wanted { "bind" } else { "unbind" },
                    error = %e,
                    retry_in_ms = self.retries.retry_in_ms(Work::Vip(addr), self.now),
                    "dummy interface address change failed; retrying"
                );
                self.report.errors.push(e.into());
            }
        }
    }

    /// Records that `key` is not created because its VIP is not bound; it is retried with
    /// the VIP (see [`Round::unblock`]).
    pub(super) fn block(&mut self, key: VirtualServerKey) {
        self.retries.clear(Work::Vs(key));
        if self.vips.blocked.insert(key) {
            self.metrics.blocked_on_vip += 1;
        }
        if !self.retries.is_pending(&Work::Vip(key.addr)) {
            // Not waiting for a retry (e.g. unbound behind our back): bind it soon.
            self.retry_later(Work::Vip(key.addr));
        }
        let service = self.owner(&key);
        warn!(
            virtual_server = %key,
            service = %service,
            vip = %key.addr,
            retry_in_ms = self.retries.retry_in_ms(Work::Vip(key.addr), self.now),
            "virtual server not created: its VIP is not bound; retried with the VIP"
        );
        let service = service.0.cloned();
        self.report
            .errors
            .push(SyncError::VipNotBound { key, service });
    }

    /// Creates the virtual servers that waited for `addr`, once it is bound.
    pub(super) fn unblock(&mut self, addr: IpAddr) {
        if !self.vips.bound.contains(&addr) {
            return;
        }
        let (lo, hi) = vs_range(addr);
        let keys: Vec<VirtualServerKey> = self.vips.blocked.range(lo..=hi).copied().collect();
        self.reconcile_many(keys.into_iter().map(|key| (key, None)));
    }

    /// Whether an owned virtual server on `addr` that is not desired may still be in the
    /// kernel. Every undesired virtual server is deleted before its VIP is looked at (by the
    /// sync that removed it, or by the full pass), and one whose deletion failed waits for a
    /// retry, so the retry queue (ordered by address) says it without scanning the table.
    fn has_unfinished_vs(&self, addr: IpAddr) -> bool {
        let (lo, hi) = vs_range(addr);
        let desired = self.desired.virtual_servers();
        self.retries
            .pending_between(Work::Vs(lo), Work::Vs(hi))
            .any(|w| matches!(w, Work::Vs(k) if !desired.contains_key(k)))
            || self.view.suspect_undesired_on(addr, self.desired)
    }
}
