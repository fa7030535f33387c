//! [`MemoryDataplane`]: an in-memory node for tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipvs::codec::Operation;
use ipvs::model::{DestinationKey, ServiceKey};
use ipvs::table::{Fault, SimulatedKernel, Table};

use super::{
    Connections, Dataplane, DataplaneError, InterfaceRemoval, IpvsWrites, Listing, OperationError,
    ServiceState, SimulatedNetfilter, canonical_sysctl_key, foreign_dummy_addresses,
};
use crate::netfilter::{Change, Contents};

/// A change to the dummy interface that a [`MemoryDataplane`] carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressOp {
    /// The dummy interface was created.
    CreateInterface,
    /// An address was bound.
    Add(IpAddr),
    /// An address was removed.
    Delete(IpAddr),
    /// The dummy interface was deleted.
    DeleteInterface,
}

/// An in-memory node: an IPVS table in a [`SimulatedKernel`] (the kernel's checks and
/// errnos), a dummy interface, the node's other addresses, and sysctls.
///
/// Tests use it to drive a [`Reconciler`](crate::reconcile::Reconciler) without privileges and
/// to break things on purpose:
///
/// - [`MemoryDataplane::inject`] makes chosen IPVS operations fail with a chosen errno;
///   [`MemoryDataplane::fail_listings`] and [`MemoryDataplane::fail_address_changes`] make
///   whole calls fail;
/// - [`MemoryDataplane::tamper`] edits the table behind the controller's back (another tool,
///   an admin with `ipvsadm`), without going through the journal;
/// - [`MemoryDataplane::set_connections`] sets a destination's connection counts, which a
///   simulated kernel otherwise reports as zero;
/// - [`MemoryDataplane::watching_writes`] makes it see IPVS writes as the kernel dataplane's
///   tap does ([`Dataplane::ipvs_writes`]): [`MemoryDataplane::tamper`] is seen, its own
///   operations and [`MemoryDataplane::tamper_unseen`] (a write the tap cannot see) are not.
///
/// Everything the controller did is recorded: IPVS requests in
/// [`MemoryDataplane::journal`], address changes in [`MemoryDataplane::address_log`], sysctl
/// writes in [`MemoryDataplane::sysctl_writes`].
#[derive(Debug, Clone, Default)]
pub struct MemoryDataplane {
    kernel: SimulatedKernel,
    connections: HashMap<(ServiceKey, DestinationKey), Connections>,
    dummy: Option<BTreeSet<IpAddr>>,
    node: BTreeSet<IpAddr>,
    sysctls: BTreeMap<String, String>,
    sysctl_writes: Vec<(String, String)>,
    address_log: Vec<AddressOp>,
    netfilter: SimulatedNetfilter,
    failing_listings: usize,
    failing_address_changes: usize,
    apply_calls: usize,
    read_calls: usize,
    address_calls: usize,
    /// Whether writes are watched, and whether one was made since the last look.
    watch: bool,
    written: bool,
}

/// The errno injected by whole-call faults (EAGAIN).
const INJECTED_ERRNO: i32 = 11;

impl MemoryDataplane {
    /// How many times [`Dataplane::apply`] was called (each call is one batch of requests to
    /// the kernel, so this counts round trips).
    pub fn apply_calls(&self) -> usize {
        self.apply_calls
    }

    /// How many reads of the table were made ([`Dataplane::list`], [`Dataplane::service`],
    /// [`Dataplane::services`] and [`Dataplane::service_keys`] count one each, as each is
    /// one exchange with the kernel).
    pub fn read_calls(&self) -> usize {
        self.read_calls
    }

    /// How many calls asked to bind or unbind addresses ([`Dataplane::add_dummy_addresses`]
    /// counts one, however many addresses it carries): each is an exchange with the kernel,
    /// even with nothing to change.
    pub fn address_calls(&self) -> usize {
        self.address_calls
    }

    /// Binds `addr` (one address of an [`Dataplane::add_dummy_address`] call or of an
    /// [`Dataplane::add_dummy_addresses`] call).
    fn bind(&mut self, addr: IpAddr) -> Result<(), DataplaneError> {
        self.address_fault(format!("bind {addr} on the dummy interface"))?;
        if self.dummy.is_none() {
            self.address_log.push(AddressOp::CreateInterface);
        }
        if self.dummy.get_or_insert_with(BTreeSet::new).insert(addr) {
            self.address_log.push(AddressOp::Add(addr));
        }
        Ok(())
    }

    /// An empty node: empty table, no dummy interface yet, no other address, no sysctl.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the node these addresses on its other interfaces.
    #[must_use]
    pub fn with_node_addresses(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.node.extend(addrs);
        self
    }

    /// Replaces the node's other addresses (an address added or removed on the node).
    pub fn set_node_addresses(&mut self, addrs: impl IntoIterator<Item = IpAddr>) {
        self.node = addrs.into_iter().collect();
    }

    /// Starts with this IPVS table (e.g. another tool's services).
    pub fn with_table(mut self, table: &Table) -> Result<Self, ipvs::table::Rejected> {
        self.kernel.load(table)?;
        Ok(self)
    }

    /// Starts with these sysctls (as if the kernel had them; others do not exist).
    #[must_use]
    pub fn with_sysctls<'a>(
        mut self,
        values: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        for (k, v) in values {
            self.sysctls.insert(canonical_sysctl_key(k), v.to_owned());
        }
        self
    }

    /// The simulated kernel (its table, journal and pending faults).
    pub fn kernel(&self) -> &SimulatedKernel {
        &self.kernel
    }

    /// The current IPVS table.
    pub fn table(&self) -> Table {
        self.kernel.table()
    }

    /// Every IPVS request received, with its answer.
    pub fn journal(&self) -> &[ipvs::table::JournalEntry] {
        self.kernel.journal()
    }

    /// Forgets the journal, the address log and the sysctl writes (e.g. before a restart test).
    pub fn clear_logs(&mut self) {
        self.kernel.take_journal();
        self.address_log.clear();
        self.sysctl_writes.clear();
    }

    /// Every address change carried out, in order.
    pub fn address_log(&self) -> &[AddressOp] {
        &self.address_log
    }

    /// Every sysctl written, in order.
    pub fn sysctl_writes(&self) -> &[(String, String)] {
        &self.sysctl_writes
    }

    /// The addresses on the dummy interface (`None`: it does not exist).
    pub fn dummy(&self) -> Option<&BTreeSet<IpAddr>> {
        self.dummy.as_ref()
    }

    /// A sysctl's value.
    pub fn sysctl_value(&self, key: &str) -> Option<&str> {
        self.sysctls
            .get(&canonical_sysctl_key(key))
            .map(String::as_str)
    }

    /// Makes IPVS operations fail (see [`Fault`]).
    pub fn inject(&mut self, fault: Fault) -> &mut Self {
        self.kernel.inject(fault);
        self
    }

    /// Removes every pending fault, including whole-call ones.
    pub fn clear_faults(&mut self) {
        self.kernel.clear_faults();
        self.failing_listings = 0;
        self.failing_address_changes = 0;
    }

    /// Makes the next `count` reads of the table fail (each call counted by
    /// [`MemoryDataplane::read_calls`] is one read).
    pub fn fail_listings(&mut self, count: usize) -> &mut Self {
        self.failing_listings = count;
        self
    }

    /// Makes the next `count` address additions or deletions (and interface deletions) fail.
    pub fn fail_address_changes(&mut self, count: usize) -> &mut Self {
        self.failing_address_changes = count;
        self
    }

    /// Changes the table behind the controller's back: `edit` gets the table and whatever it
    /// leaves is loaded with the kernel's checks, without journal entries. A watch of writes
    /// sees it.
    pub fn tamper(&mut self, edit: impl FnOnce(&mut Table)) -> Result<(), ipvs::table::Rejected> {
        self.written = true;
        self.tamper_unseen(edit)
    }

    /// [`MemoryDataplane::tamper`] by a writer no watch sees (the kernel's old `setsockopt`
    /// interface, say).
    pub fn tamper_unseen(
        &mut self,
        edit: impl FnOnce(&mut Table),
    ) -> Result<(), ipvs::table::Rejected> {
        let mut table = self.kernel.table();
        edit(&mut table);
        self.kernel.load(&table)
    }

    /// Watches IPVS writes from now on ([`Dataplane::ipvs_writes`] answers
    /// [`IpvsWrites::Unwatched`] until then, as a dataplane that cannot watch does).
    #[must_use]
    pub fn watching_writes(mut self) -> Self {
        self.watch = true;
        self
    }

    /// The controller's nftables table, simulated.
    pub fn netfilter(&self) -> &SimulatedNetfilter {
        &self.netfilter
    }

    /// The controller's nftables table, to tamper with or inject faults into.
    pub fn netfilter_mut(&mut self) -> &mut SimulatedNetfilter {
        &mut self.netfilter
    }

    /// Binds or unbinds a dummy-interface address behind the controller's back.
    pub fn tamper_dummy(&mut self, edit: impl FnOnce(&mut BTreeSet<IpAddr>)) {
        edit(self.dummy.get_or_insert_with(BTreeSet::new));
    }

    /// Sets the connection counts the kernel reports for one destination.
    pub fn set_connections(
        &mut self,
        service: ServiceKey,
        destination: DestinationKey,
        connections: Connections,
    ) {
        if connections.is_idle() {
            self.connections.remove(&(service, destination));
        } else {
            self.connections.insert((service, destination), connections);
        }
    }

    fn read_fault(&mut self, context: &str) -> Result<(), DataplaneError> {
        self.read_calls += 1;
        if self.failing_listings > 0 {
            self.failing_listings -= 1;
            return Err(DataplaneError::Io {
                context: context.to_owned(),
                source: std::io::Error::from_raw_os_error(INJECTED_ERRNO),
            });
        }
        Ok(())
    }

    fn address_fault(&mut self, context: String) -> Result<(), DataplaneError> {
        if self.failing_address_changes > 0 {
            self.failing_address_changes -= 1;
            return Err(DataplaneError::Io {
                context,
                source: std::io::Error::from_raw_os_error(INJECTED_ERRNO),
            });
        }
        Ok(())
    }

    fn state_of(&self, key: &ServiceKey) -> Option<ServiceState> {
        let config = self.kernel.as_table().get(key)?.clone();
        Some(ServiceState {
            config,
            connections: self.counts_of(key),
        })
    }

    fn counts_of(&self, key: &ServiceKey) -> HashMap<DestinationKey, Connections> {
        self.kernel
            .as_table()
            .get(key)
            .map(|s| {
                s.destination_keys()
                    .filter_map(|d| self.connections.get(&(*key, d)).map(|c| (d, *c)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Dataplane for MemoryDataplane {
    fn list(&mut self) -> Result<Listing, DataplaneError> {
        self.read_fault("list the IPVS table")?;
        let table = self.kernel.table();
        let connections = self
            .connections
            .iter()
            .filter(|((s, d), _)| table.destination(s, d).is_some())
            .map(|(k, c)| (*k, *c))
            .collect();
        Ok(Listing { table, connections })
    }

    fn service(&mut self, key: &ServiceKey) -> Result<Option<ServiceState>, DataplaneError> {
        self.read_fault("read one IPVS service")?;
        Ok(self.state_of(key))
    }

    fn services(
        &mut self,
        keys: &[ServiceKey],
    ) -> Result<Vec<Option<ServiceState>>, DataplaneError> {
        self.read_fault("read IPVS services")?;
        Ok(keys.iter().map(|key| self.state_of(key)).collect())
    }

    fn service_keys(&mut self) -> Result<Vec<ServiceKey>, DataplaneError> {
        self.read_fault("list IPVS services")?;
        Ok(self.kernel.as_table().keys().collect())
    }

    fn ipvs_writes(&mut self) -> IpvsWrites {
        match (self.watch, std::mem::take(&mut self.written)) {
            (false, _) => IpvsWrites::Unwatched,
            (true, true) => IpvsWrites::Seen,
            (true, false) => IpvsWrites::Quiet,
        }
    }

    fn apply(
        &mut self,
        operations: &[Operation],
    ) -> Result<Vec<Result<(), OperationError>>, DataplaneError> {
        self.apply_calls += 1;
        Ok(operations
            .iter()
            .map(|op| {
                let result = self.kernel.apply(op).map_err(|errno| {
                    OperationError::new(
                        Some(errno.get()),
                        format!("`{}` failed: {errno}", super::Describe(op)),
                    )
                });
                if result.is_ok() {
                    // Deleted destinations (and services) lose their counters.
                    let kernel = &self.kernel;
                    self.connections
                        .retain(|(s, d), _| kernel.as_table().destination(s, d).is_some());
                }
                result
            })
            .collect())
    }

    fn dummy_addresses(&mut self) -> Result<BTreeSet<IpAddr>, DataplaneError> {
        if self.dummy.is_none() {
            self.address_log.push(AddressOp::CreateInterface);
        }
        Ok(self.dummy.get_or_insert_with(BTreeSet::new).clone())
    }

    fn add_dummy_address(&mut self, addr: IpAddr) -> Result<(), DataplaneError> {
        self.address_calls += 1;
        self.bind(addr)
    }

    fn add_dummy_addresses(&mut self, addrs: &[IpAddr]) -> Vec<Result<(), DataplaneError>> {
        self.address_calls += 1;
        addrs.iter().map(|a| self.bind(*a)).collect()
    }

    fn delete_dummy_address(&mut self, addr: IpAddr) -> Result<(), DataplaneError> {
        self.address_calls += 1;
        self.address_fault(format!("unbind {addr} from the dummy interface"))?;
        if self.dummy.as_mut().is_some_and(|d| d.remove(&addr)) {
            self.address_log.push(AddressOp::Delete(addr));
        }
        Ok(())
    }

    fn existing_dummy_addresses(&mut self) -> Result<Option<BTreeSet<IpAddr>>, DataplaneError> {
        Ok(self.dummy.clone())
    }

    fn delete_dummy_interface(
        &mut self,
        owned: &BTreeSet<IpAddr>,
    ) -> Result<InterfaceRemoval, DataplaneError> {
        let Some(present) = &self.dummy else {
            return Ok(InterfaceRemoval::Absent);
        };
        let foreign = foreign_dummy_addresses(present, owned);
        if !foreign.is_empty() {
            return Ok(InterfaceRemoval::Kept { foreign });
        }
        self.address_fault("delete the dummy interface".to_owned())?;
        self.dummy = None;
        self.address_log.push(AddressOp::DeleteInterface);
        Ok(InterfaceRemoval::Deleted)
    }

    fn node_addresses(&mut self) -> Result<BTreeSet<IpAddr>, DataplaneError> {
        Ok(self.node.clone())
    }

    fn sysctl(&mut self, key: &str) -> Result<Option<String>, DataplaneError> {
        Ok(self.sysctls.get(&canonical_sysctl_key(key)).cloned())
    }

    fn set_sysctl(&mut self, key: &str, value: &str) -> Result<(), DataplaneError> {
        let key = canonical_sysctl_key(key);
        self.sysctl_writes.push((key.clone(), value.to_owned()));
        self.sysctls.insert(key, value.to_owned());
        Ok(())
    }

    fn netfilter_read(&mut self) -> Result<Option<Contents>, DataplaneError> {
        self.netfilter.read().map_err(|errno| DataplaneError::Io {
            context: "list the nftables table".into(),
            source: std::io::Error::from_raw_os_error(errno),
        })
    }

    fn netfilter_generation(&mut self) -> Result<u32, DataplaneError> {
        Ok(self.netfilter.generation())
    }

    fn delete_stale_udp_flows(
        &mut self,
        frontend: std::net::SocketAddr,
        keep: &std::collections::BTreeSet<IpAddr>,
    ) -> Result<usize, DataplaneError> {
        self.netfilter
            .delete_stale_udp_flows(frontend, keep)
            .map_err(|errno| DataplaneError::Io {
                context: format!("delete the stale UDP flows to {frontend}"),
                source: std::io::Error::from_raw_os_error(errno),
            })
    }

    fn netfilter_transact(&mut self, changes: &[Change]) -> Result<(), DataplaneError> {
        self.netfilter
            .transact(changes, self.apply_calls)
            .map_err(|errno| DataplaneError::Io {
                context: format!("nftables transaction of {} changes", changes.len()),
                source: std::io::Error::from_raw_os_error(errno),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use ipvs::model::{Destination, Forwarding, Scheduler, Service};
    use ipvs::table::{Errno, OperationKind};

    use super::*;

    fn web() -> ServiceKey {
        ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 1), 80)
    }

    fn backend() -> Destination {
        Destination::new(Ipv4Addr::new(10, 244, 0, 1), 8080, Forwarding::Masquerade)
    }

    #[test]
    fn a_listing_gives_each_service_once_as_a_read_of_it_answers() {
        let mut dp = MemoryDataplane::new();
        let other = Destination::new(Ipv4Addr::new(10, 244, 0, 2), 8080, Forwarding::Masquerade);
        let ops = [
            Operation::AddService(Service::new(web(), Scheduler::RoundRobin)),
            Operation::AddDestination(web(), backend()),
            Operation::AddDestination(web(), other),
        ];
        assert!(dp.apply(&ops).unwrap().iter().all(Result::is_ok));
        let busy = Connections {
            active: 3,
            inactive: 1,
        };
        dp.set_connections(web(), backend().key(), busy);
        let mut listing = dp.list().unwrap();
        let read = dp.service(&web()).unwrap().unwrap();
        let copy = listing.service(&web());
        let taken = listing.take_service(&web());
        assert_eq!(taken, copy);
        let taken = taken.unwrap();
        assert_eq!(taken.config, read.config);
        for d in [backend().key(), other.key()] {
            assert_eq!(taken.connections(&d), read.connections(&d));
        }
        assert_eq!(taken.connections(&backend().key()), busy);
        assert_eq!(listing.take_service(&web()), None, "taken once");
        assert!(listing.table.is_empty() && listing.connections.is_empty());
    }

    #[test]
    fn applies_with_one_result_each_and_injects_faults() {
        let mut dp = MemoryDataplane::new();
        dp.inject(Fault::new(Errno::ENOMEM).on(OperationKind::AddDestination));
        let ops = [
            Operation::AddService(Service::new(web(), Scheduler::RoundRobin)),
            Operation::AddDestination(web(), backend()),
            Operation::AddDestination(web(), backend()),
        ];
        let results = dp.apply(&ops).unwrap();
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().unwrap_err().errno, Some(12));
        assert!(results[2].is_ok());
        assert_eq!(dp.journal().len(), 3);
    }

    #[test]
    fn counts_tampering_and_addresses() {
        let mut dp =
            MemoryDataplane::new().with_node_addresses([Ipv4Addr::new(192, 168, 1, 2).into()]);
        dp.tamper(|t| {
            t.insert_service(Service::new(web(), Scheduler::RoundRobin));
            t.insert_destination(&web(), backend()).unwrap();
        })
        .unwrap();
        assert!(dp.journal().is_empty());
        dp.set_connections(
            web(),
            backend().key(),
            Connections {
                active: 2,
                inactive: 1,
            },
        );
        let listing = dp.list().unwrap();
        assert_eq!(listing.connections(&web(), &backend().key()).total(), 3);
        let one = dp.service(&web()).unwrap().unwrap();
        assert_eq!(one.connections(&backend().key()).active, 2);
        dp.apply(&[Operation::DeleteDestination(web(), backend().key())])
            .unwrap()
            .remove(0)
            .unwrap();
        assert!(dp.list().unwrap().connections.is_empty());

        assert!(dp.dummy().is_none());
        assert!(dp.dummy_addresses().unwrap().is_empty());
        let vip: IpAddr = Ipv4Addr::new(10, 96, 0, 1).into();
        dp.add_dummy_address(vip).unwrap();
        dp.add_dummy_address(vip).unwrap();
        dp.fail_address_changes(1);
        assert!(dp.delete_dummy_address(vip).is_err());
        dp.delete_dummy_address(vip).unwrap();
        assert_eq!(
            dp.address_log(),
            [
                AddressOp::CreateInterface,
                AddressOp::Add(vip),
                AddressOp::Delete(vip)
            ]
        );
        assert_eq!(dp.node_addresses().unwrap().len(), 1);

        // The interface goes only when nothing foreign is on it.
        let other: IpAddr = Ipv4Addr::new(10, 0, 0, 9).into();
        let link_local: IpAddr = "fe80::1".parse().unwrap();
        dp.add_dummy_address(other).unwrap();
        dp.tamper_dummy(|d| {
            d.insert(link_local);
        });
        assert_eq!(
            dp.delete_dummy_interface(&BTreeSet::new()).unwrap(),
            InterfaceRemoval::Kept {
                foreign: [other].into()
            }
        );
        assert!(dp.dummy().is_some());
        assert_eq!(
            dp.delete_dummy_interface(&[other].into()).unwrap(),
            InterfaceRemoval::Deleted
        );
        assert_eq!(dp.existing_dummy_addresses().unwrap(), None);
        assert_eq!(
            dp.delete_dummy_interface(&BTreeSet::new()).unwrap(),
            InterfaceRemoval::Absent
        );
        assert_eq!(dp.address_log().last(), Some(&AddressOp::DeleteInterface));

        dp.fail_listings(1);
        assert!(dp.list().is_err());
        assert!(dp.list().is_ok());

        assert_eq!(dp.sysctl("net.ipv4.ip_forward").unwrap(), None);
        dp.set_sysctl("net.ipv4.ip_forward", "1").unwrap();
        assert_eq!(
            dp.sysctl("net/ipv4/ip_forward").unwrap().as_deref(),
            Some("1")
        );
    }
}
