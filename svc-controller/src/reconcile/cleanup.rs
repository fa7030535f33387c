//! `--cleanup`: everything this controller owns removed from the node.

use crate::netfilter::table;

use super::*;

impl<D: Dataplane> Reconciler<D> {
    /// Removes everything this controller owns from the node: every owned virtual server
    /// (see [`ownership`](crate::ownership)), every address of the dummy interface, and then
    /// the dummy interface itself when nothing foreign is left on it
    /// ([`Dataplane::delete_dummy_interface`]; a missing interface is not created). Foreign
    /// virtual servers are left alone. The desired state is emptied, so a later full pass
    /// does not program it again.
    ///
    /// The ownership rule holds here too: an address whose virtual servers could not all be
    /// deleted stays bound (and the interface stays), so that calling `cleanup` again still
    /// recognises them as ours.
    pub fn cleanup(&mut self, now: Instant) -> Result<SyncReport, DataplaneError> {
        let listing = self.dataplane.list()?;
        self.vips.node = self.dataplane.node_addresses()?;
        let interface = self.dataplane.existing_dummy_addresses()?;
        self.vips.bound = interface.clone().unwrap_or_default();
        let ownership = self.vips.ownership(&self.config);
        let ops: Vec<Operation> = listing
            .table
            .keys()
            .filter(|k| {
                from_service_key(k).is_some_and(|vk| {
                    ownership.owns(&vk)
                        || self.desired.virtual_servers().contains_key(&vk)
                        || self.view.table.contains_service(k)
                })
            })
            .map(Operation::DeleteService)
            .collect();
        let mut round = self.round(now);
        let results = round.send_each(&ops);
        let mut report = round.report;
        let kept: BTreeSet<IpAddr> = ops
            .iter()
            .zip(&results)
            .filter(|(_, ok)| !**ok)
            .filter_map(|(op, _)| match op {
                Operation::DeleteService(k) => from_service_key(k).map(|v| v.addr),
                _ => None,
            })
            .collect();
        // The view keeps exactly what is left of ours, as the listing showed it.
        self.view.table = ops
            .iter()
            .zip(&results)
            .filter(|(_, ok)| !**ok)
            .filter_map(|(op, _)| match op {
                Operation::DeleteService(k) => listing.table.get(k).cloned(),
                _ => None,
            })
            .collect();
        for addr in self.vips.bound.clone() {
            if kept.contains(&addr) {
                warn!(
                    vip = %addr,
                    "cleanup: VIP kept bound, a virtual server on it could not be deleted"
                );
                continue;
            }
            match self.dataplane.delete_dummy_address(addr) {
                Ok(()) => {
                    self.vips.bound.remove(&addr);
                    self.metrics.address_changes += 1;
                    report.address_changes += 1;
                }
                Err(e) => {
                    self.metrics.address_failures += 1;
                    warn!(
                        vip = %addr,
                        service = %vip_owner(&self.desired, addr),
                        error = %e,
                        "cleanup: cannot unbind VIP"
                    );
                    report.errors.push(e.into());
                }
            }
        }
        if let Some(bound) = interface
            && self.vips.bound.is_empty()
        {
            match self.dataplane.delete_dummy_interface(&bound) {
                Ok(InterfaceRemoval::Deleted) => report.interface_deleted = true,
                Ok(InterfaceRemoval::Absent) => {}
                Ok(InterfaceRemoval::Kept { foreign }) => {
                    info!(
                        foreign = ?foreign,
                        "cleanup: dummy interface kept, it holds addresses that are not ours"
                    );
                }
                Err(e) => {
                    warn!(error = %e, "cleanup: cannot delete the dummy interface");
                    report.errors.push(e.into());
                }
            }
        }
        // The nftables table goes whole, whatever the settings: it is ours by its name.
        let count = match self.dataplane.netfilter_read() {
            Ok(Some(listing)) => Some(listing.elements.len()),
            Ok(None) => None,
            // A table that cannot be read whole (a set deleted by hand) still goes.
            Err(e) => {
                warn!(error = %e, "cleanup: cannot read the nftables table; deleting it");
                Some(0)
            }
        };
        if let Some(count) = count {
            match self.dataplane.netfilter_transact(&[table::delete()]) {
                Ok(()) => {
                    self.metrics.netfilter_transactions += 1;
                    self.metrics.netfilter_changes += count as u64;
                    report.netfilter_changes += count;
                }
                Err(e) => {
                    self.metrics.netfilter_failures += 1;
                    warn!(error = %e, "cleanup: cannot delete the nftables table");
                    report.errors.push(e.into());
                }
            }
        }
        self.netfilter = None;
        if let Err(e) = self.dataplane.stop_watching_writes() {
            warn!(error = %e, "cleanup: cannot remove the watch of IPVS writes");
            report.errors.push(e.into());
        }
        info!(
            netfilter_elements_removed = report.netfilter_changes,
            virtual_servers_deleted = results.iter().filter(|ok| **ok).count(),
            virtual_servers_left = results.iter().filter(|ok| !**ok).count(),
            foreign_virtual_servers = listing.table.len() - ops.len(),
            addresses_removed = report.address_changes,
            interface_deleted = report.interface_deleted,
            errors = report.errors.len(),
            "cleanup done"
        );
        self.desired = DesiredState::new();
        self.sweep = None;
        self.retries.clear_all();
        self.drains.clear_all();
        self.view.suspect.clear();
        self.vips.blocked.clear();
        Ok(report)
    }
}
