//! [`SimulatedKernel`]: an in-memory IPVS table with the kernel's checks and errnos.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use thiserror::Error;

use super::diff::{OperationKind, Plan, diff};
use super::notation::IpvsadmNotation;
use super::snapshot::Table;
use crate::codec::{Operation, service_flags};
use crate::model::{
    DaemonState, Destination, DestinationEntry, Forwarding, Scheduler, Service, ServiceEntry,
    ServiceFlags, ServiceKey, Stats, SyncDaemon, Timeouts,
};
use crate::transport::KernelError;

/// An errno, as the kernel answers a request with (a positive number).
///
/// The constants are the Linux numbers the IPVS commands answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Error)]
#[error("{}", self.describe())]
pub struct Errno(i32);

impl Errno {
    /// Operation not permitted (no `CAP_NET_ADMIN`).
    pub const EPERM: Self = Self(1);
    /// No such file or directory: a missing destination, an unknown scheduler or
    /// persistence engine.
    pub const ENOENT: Self = Self(2);
    /// No such process: a missing service, a sync daemon that is not running.
    pub const ESRCH: Self = Self(3);
    /// Resource temporarily unavailable.
    pub const EAGAIN: Self = Self(11);
    /// Cannot allocate memory.
    pub const ENOMEM: Self = Self(12);
    /// Device or resource busy (a second dump on one socket).
    pub const EBUSY: Self = Self(16);
    /// File exists: a service, destination or sync daemon that already exists.
    pub const EEXIST: Self = Self(17);
    /// No such device (a sync daemon's interface).
    pub const ENODEV: Self = Self(19);
    /// Invalid argument.
    pub const EINVAL: Self = Self(22);
    /// Numerical result out of range: a negative weight, a lower threshold above the upper.
    pub const ERANGE: Self = Self(34);
    /// Message too long.
    pub const EMSGSIZE: Self = Self(90);
    /// Operation not supported.
    pub const EOPNOTSUPP: Self = Self(95);
    /// Address family not supported by protocol.
    pub const EAFNOSUPPORT: Self = Self(97);
    /// No buffer space available (netlink dropped a reply).
    pub const ENOBUFS: Self = Self(105);

    const NAMES: [(Self, &'static str, &'static str); 14] = [
        (Self::EPERM, "EPERM", "operation not permitted"),
        (Self::ENOENT, "ENOENT", "no such file or directory"),
        (Self::ESRCH, "ESRCH", "no such process"),
        (Self::EAGAIN, "EAGAIN", "resource temporarily unavailable"),
        (Self::ENOMEM, "ENOMEM", "cannot allocate memory"),
        (Self::EBUSY, "EBUSY", "device or resource busy"),
        (Self::EEXIST, "EEXIST", "file exists"),
        (Self::ENODEV, "ENODEV", "no such device"),
        (Self::EINVAL, "EINVAL", "invalid argument"),
        (Self::ERANGE, "ERANGE", "numerical result out of range"),
        (Self::EMSGSIZE, "EMSGSIZE", "message too long"),
        (Self::EOPNOTSUPP, "EOPNOTSUPP", "operation not supported"),
        (
            Self::EAFNOSUPPORT,
            "EAFNOSUPPORT",
            "address family not supported by protocol",
        ),
        (Self::ENOBUFS, "ENOBUFS", "no buffer space available"),
    ];

    /// An errno from its number; a negative number (as netlink carries it) is made positive.
    pub const fn new(errno: i32) -> Self {
        Self(errno.saturating_abs())
    }

    /// The errno as a positive number.
    pub const fn get(self) -> i32 {
        self.0
    }

    /// The symbolic name (`"ESRCH"`) for the constants of this type.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMES
            .iter()
            .find(|(e, _, _)| *e == self)
            .map(|(_, name, _)| *name)
    }

    fn describe(self) -> String {
        match Self::NAMES.iter().find(|(e, _, _)| *e == self) {
            Some((_, name, text)) => format!("{name} ({text})"),
            None => format!("errno {}", self.0),
        }
    }
}

impl From<Errno> for KernelError {
    fn from(errno: Errno) -> Self {
        KernelError::new(errno.get())
    }
}

impl From<&KernelError> for Errno {
    fn from(error: &KernelError) -> Self {
        Errno::new(error.errno())
    }
}

impl From<Errno> for io::Error {
    fn from(errno: Errno) -> Self {
        io::Error::from_raw_os_error(errno.get())
    }
}

/// An operation the simulated kernel refused, with its errno.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{}` failed: {errno}", IpvsadmNotation(&self.operation))]
pub struct Rejected {
    /// The operation.
    pub operation: Operation,
    /// The errno the kernel answered.
    pub errno: Errno,
}

/// One request the simulated kernel received through [`SimulatedKernel::apply`], and its
/// answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The operation.
    pub operation: Operation,
    /// The answer.
    pub result: Result<(), Errno>,
    /// Whether the answer came from an injected [`Fault`] (the table was not touched).
    pub injected: bool,
}

type Predicate = Arc<dyn Fn(&Operation) -> bool + Send + Sync>;

/// A failure to inject into a [`SimulatedKernel`]: the next operations that match fail
/// with `errno`, without changing the table.
///
/// By default a fault matches any operation and fires once; each condition added narrows
/// it, and [`Fault::times`] or [`Fault::forever`] make it fire more often.
///
/// ```
/// use ipvs::table::{Errno, Fault, OperationKind};
///
/// // The next two destination additions fail with ENOMEM.
/// let fault = Fault::new(Errno::ENOMEM).on(OperationKind::AddDestination).times(2);
/// assert_eq!(fault.remaining(), Some(2));
/// ```
#[derive(Clone)]
pub struct Fault {
    errno: Errno,
    remaining: Option<usize>,
    conditions: Vec<Predicate>,
}

impl Fault {
    /// Fails the next operation, whatever it is, once, with `errno`.
    pub fn new(errno: Errno) -> Self {
        Self {
            errno,
            remaining: Some(1),
            conditions: Vec::new(),
        }
    }

    /// Fires for the next `count` matching operations (0: never).
    #[must_use]
    pub fn times(mut self, count: usize) -> Self {
        self.remaining = Some(count);
        self
    }

    /// Fires for every matching operation from now on.
    #[must_use]
    pub fn forever(mut self) -> Self {
        self.remaining = None;
        self
    }

    /// Only matches operations for which `predicate` returns `true`.
    #[must_use]
    pub fn when(mut self, predicate: impl Fn(&Operation) -> bool + Send + Sync + 'static) -> Self {
        self.conditions.push(Arc::new(predicate));
        self
    }

    /// Only matches operations of this kind.
    #[must_use]
    pub fn on(self, kind: OperationKind) -> Self {
        self.when(move |op| kind.matches(op))
    }

    /// Only matches operations on this service (the service itself or its destinations).
    #[must_use]
    pub fn on_service(self, key: ServiceKey) -> Self {
        self.when(move |op| service_of(op) == Some(key))
    }

    /// The errno it answers with.
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// How many more times it fires (`None`: forever).
    pub fn remaining(&self) -> Option<usize> {
        self.remaining
    }

    fn matches(&self, op: &Operation) -> bool {
        self.remaining != Some(0) && self.conditions.iter().all(|c| c(op))
    }
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fault")
            .field("errno", &self.errno)
            .field("remaining", &self.remaining)
            .field("conditions", &self.conditions.len())
            .finish()
    }
}

/// The service an operation is about, if any.
fn service_of(op: &Operation) -> Option<ServiceKey> {
    match op {
        Operation::AddService(s) | Operation::EditService(s) => Some(s.key),
        Operation::DeleteService(k)
        | Operation::AddDestination(k, _)
        | Operation::EditDestination(k, _)
        | Operation::DeleteDestination(k, _)
        | Operation::ZeroCounters(Some(k)) => Some(*k),
        _ => None,
    }
}

/// An in-memory IPVS table that applies [`Operation`]s with the kernel's semantics and
/// errnos: a fake kernel for testing controllers without privileges or a VM.
///
/// Each call to [`SimulatedKernel::apply`] is one request, as the kernel handles them: it
/// succeeds completely or changes nothing, and there are no transactions across requests.
///
/// # Kernel semantics
///
/// What is modelled, from `net/netfilter/ipvs/ip_vs_ctl.c` (`ip_vs_genl_set_cmd` and the
/// functions it calls) and `ip_vs_sync.c`, in the order the kernel checks it:
///
/// | operation | errno |
/// |---|---|
/// | `AddService` of an existing key | EEXIST (checked before anything else) |
/// | `EditService`, `DeleteService`, `ZeroCounters(Some)`, any destination operation on a missing service | ESRCH |
/// | `AddService` / `EditService` with an unknown scheduler or persistence engine | ENOENT (`ip_vs_scheduler_get`, `ip_vs_pe_getbyname`) |
/// | a persistence netmask of the other family | EINVAL (an IPv6 prefix outside 1..=128 is EINVAL in the kernel; the codec refuses both cases) |
/// | `AddDestination` / `EditDestination` of another family than the service while a sync daemon runs, or without tunnel forwarding | EINVAL |
/// | `AddDestination` of an existing destination | EEXIST |
/// | `AddDestination` to an address that cannot be a unicast destination (0.0.0.0/8, 255.255.255.255, multicast, `::`, IPv6 link-local) | EINVAL (`ip_vs_new_dest`) |
/// | `EditDestination` / `DeleteDestination` of a missing destination | ENOENT |
/// | `StartDaemon` while a destination of another family than its service exists | EINVAL |
/// | `StartDaemon` with a sync group that is not multicast | EINVAL (the codec refuses it too) |
/// | `StartDaemon` of a role already running | EEXIST |
/// | `StopDaemon` of a role not running | ESRCH |
///
/// A negative weight and a lower threshold above the upper one (ERANGE), and a GUE tunnel
/// on port 0 (EINVAL), cannot be expressed with the [`crate::model`] types, so they never
/// reach the simulation.
///
/// The destination port is stored as given, whatever the forwarding method: the rule that
/// a direct-routing or tunnel destination takes its service's port is `ipvsadm`'s
/// (`process_options` sets `ce.dest.port = ce.svc.port` for `-g` and `-i` unless the service
/// is a firewall mark), not the kernel's, which looks destinations up by the port it was
/// sent. A controller that wants `ipvsadm`'s behaviour must write the service port itself.
///
/// Not modelled: anything that depends on the host (real routes and local addresses, which
/// scheduler and persistence-engine modules can be loaded, the sync daemon's interface),
/// counters (always zero), memory exhaustion. In-tree schedulers and the `sip` persistence
/// engine are known; [`SimulatedKernel::with_scheduler`] and
/// [`SimulatedKernel::with_persistence_engine`] add others.
///
/// # Example
///
/// ```
/// use std::net::Ipv4Addr;
/// use ipvs::codec::Operation;
/// use ipvs::model::{Destination, Forwarding, Scheduler, Service, ServiceKey};
/// use ipvs::table::{Errno, Fault, OperationKind, SimulatedKernel};
///
/// let web = ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80);
/// let backend = Destination::new(Ipv4Addr::new(10, 1, 0, 1), 80, Forwarding::DirectRouting);
///
/// let mut kernel = SimulatedKernel::new();
/// assert_eq!(kernel.apply(&Operation::AddDestination(web, backend)), Err(Errno::ESRCH));
/// kernel.apply(&Operation::AddService(Service::new(web, Scheduler::RoundRobin)))?;
///
/// kernel.inject(Fault::new(Errno::ENOMEM).on(OperationKind::AddDestination));
/// assert_eq!(kernel.apply(&Operation::AddDestination(web, backend)), Err(Errno::ENOMEM));
/// kernel.apply(&Operation::AddDestination(web, backend))?;
/// assert_eq!(kernel.apply(&Operation::AddDestination(web, backend)), Err(Errno::EEXIST));
///
/// assert_eq!(kernel.table().destination_count(), 1);
/// assert_eq!(kernel.journal().len(), 5);
/// # Ok::<(), Errno>(())
/// ```
#[derive(Debug, Clone)]
pub struct SimulatedKernel {
    table: Table,
    timeouts: Timeouts,
    master: Option<SyncDaemon>,
    backup: Option<SyncDaemon>,
    schedulers: BTreeSet<String>,
    engines: BTreeSet<String>,
    faults: Vec<Fault>,
    journal: Vec<JournalEntry>,
}

impl Default for SimulatedKernel {
    fn default() -> Self {
        Self::new()
    }
}

impl SimulatedKernel {
    /// The kernel's default connection timeouts: TCP 900 s, TCP FIN 120 s, UDP 300 s.
    pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
        tcp: NonZeroU32::new(900),
        tcp_fin: NonZeroU32::new(120),
        udp: NonZeroU32::new(300),
    };

    /// An empty table, default timeouts, no sync daemon; the in-tree schedulers and the
    /// `sip` persistence engine are available.
    pub fn new() -> Self {
        Self {
            table: Table::new(),
            timeouts: Self::DEFAULT_TIMEOUTS,
            master: None,
            backup: None,
            schedulers: BTreeSet::new(),
            engines: BTreeSet::from(["sip".to_owned()]),
            faults: Vec::new(),
            journal: Vec::new(),
        }
    }

    /// A kernel holding `table`, as if its services and destinations had been added one by
    /// one; fails on the first one the kernel would refuse.
    pub fn with_table(table: &Table) -> Result<Self, Rejected> {
        let mut kernel = Self::new();
        kernel.load(table)?;
        Ok(kernel)
    }

    /// Makes an out-of-tree scheduler available (loadable as `ip_vs_<name>`).
    #[must_use]
    pub fn with_scheduler(mut self, name: impl Into<String>) -> Self {
        self.schedulers.insert(name.into());
        self
    }

    /// Makes a persistence engine available (loadable as `ip_vs_pe_<name>`).
    #[must_use]
    pub fn with_persistence_engine(mut self, name: impl Into<String>) -> Self {
        self.engines.insert(name.into());
        self
    }

    /// Brings the table to `table` with the checks of [`SimulatedKernel::apply`] but
    /// without faults and without journal entries: test set-up, not something under test.
    /// Stops at the first operation the kernel refuses.
    pub fn load(&mut self, table: &Table) -> Result<(), Rejected> {
        for operation in diff(&self.table, table) {
            if let Err(errno) = self.execute(&operation) {
                return Err(Rejected { operation, errno });
            }
        }
        Ok(())
    }

    /// Handles one request: the first pending [`Fault`] that matches answers it (and the
    /// table is left alone), otherwise it is applied with the kernel's checks. Either way it
    /// is recorded in the [journal](SimulatedKernel::journal).
    pub fn apply(&mut self, operation: &Operation) -> Result<(), Errno> {
        let (result, injected) = match self.take_fault(operation) {
            Some(errno) => (Err(errno), true),
            None => (self.execute(operation), false),
        };
        self.journal.push(JournalEntry {
            operation: operation.clone(),
            result,
            injected,
        });
        result
    }

    /// Handles a batch as the kernel handles several requests in one `sendmsg`: each in
    /// order, each with its own answer, a failure not stopping the next ones.
    pub fn apply_all<'a>(
        &mut self,
        operations: impl IntoIterator<Item = &'a Operation>,
    ) -> Vec<Result<(), Errno>> {
        operations.into_iter().map(|op| self.apply(op)).collect()
    }

    /// Applies a plan in order, stopping at the first failure (the operations before it
    /// stay applied).
    pub fn apply_plan(&mut self, plan: &Plan) -> Result<(), Rejected> {
        for operation in plan {
            self.apply(operation).map_err(|errno| Rejected {
                operation: operation.clone(),
                errno,
            })?;
        }
        Ok(())
    }

    /// The table, as a listing would report it.
    pub fn table(&self) -> Table {
        self.table.clone()
    }

    /// The table, borrowed.
    pub fn as_table(&self) -> &Table {
        &self.table
    }

    /// What `GET_SERVICE` answers for one service (ESRCH if missing).
    pub fn service_entry(&self, key: &ServiceKey) -> Result<ServiceEntry, Errno> {
        self.table
            .service(key)
            .map(service_entry)
            .ok_or(Errno::ESRCH)
    }

    /// What a `GET_SERVICE` dump answers: every service, with the HASHED flag and zero
    /// counters.
    pub fn service_entries(&self) -> Vec<ServiceEntry> {
        self.table.services().map(service_entry).collect()
    }

    /// What a `GET_DEST` dump answers for a service: its destinations with zero counters,
    /// or nothing when the service is missing (the kernel does not answer ESRCH here).
    pub fn destination_entries(&self, key: &ServiceKey) -> Vec<DestinationEntry> {
        self.table
            .get(key)
            .map(|s| s.destinations().map(destination_entry).collect())
            .unwrap_or_default()
    }

    /// Every service with its destinations, as a client's listing returns them (feed it to
    /// [`Table::from_entries`]).
    pub fn listing(&self) -> Vec<(ServiceEntry, Vec<DestinationEntry>)> {
        self.table
            .iter()
            .map(|s| {
                (
                    service_entry(s.service()),
                    s.destinations().map(destination_entry).collect(),
                )
            })
            .collect()
    }

    /// The connection timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The running sync daemons (master first).
    pub fn daemons(&self) -> Vec<SyncDaemon> {
        self.master.iter().chain(&self.backup).cloned().collect()
    }

    /// Adds a fault; faults are tried in the order they were injected.
    pub fn inject(&mut self, fault: Fault) -> &mut Self {
        if fault.remaining != Some(0) {
            self.faults.push(fault);
        }
        self
    }

    /// Makes the next `count` operations for which `predicate` returns `true` fail with
    /// `errno`.
    pub fn fail_next(
        &mut self,
        count: usize,
        errno: Errno,
        predicate: impl Fn(&Operation) -> bool + Send + Sync + 'static,
    ) -> &mut Self {
        self.inject(Fault::new(errno).times(count).when(predicate))
    }

    /// The faults that can still fire.
    pub fn pending_faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Removes every pending fault.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// Every request handled by [`SimulatedKernel::apply`] (and the batch and plan
    /// variants), in order, with its answer.
    pub fn journal(&self) -> &[JournalEntry] {
        &self.journal
    }

    /// Returns the journal and starts a new one.
    pub fn take_journal(&mut self) -> Vec<JournalEntry> {
        std::mem::take(&mut self.journal)
    }

    fn take_fault(&mut self, op: &Operation) -> Option<Errno> {
        let index = self.faults.iter().position(|f| f.matches(op))?;
        let fault = self.faults.get_mut(index)?;
        let errno = fault.errno;
        if let Some(n) = &mut fault.remaining {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.faults.remove(index);
            }
        }
        Some(errno)
    }

    fn execute(&mut self, op: &Operation) -> Result<(), Errno> {
        match op {
            Operation::AddService(s) => {
                if self.table.contains_service(&s.key) {
                    return Err(Errno::EEXIST);
                }
                self.check_service(s)?;
                self.table.insert_service(s.clone());
            }
            Operation::EditService(s) => {
                if !self.table.contains_service(&s.key) {
                    return Err(Errno::ESRCH);
                }
                self.check_service(s)?;
                self.table.insert_service(s.clone());
            }
            Operation::DeleteService(k) => {
                self.table.remove_service(k).ok_or(Errno::ESRCH)?;
            }
            Operation::AddDestination(k, d) => {
                let exists = self
                    .table
                    .get(k)
                    .ok_or(Errno::ESRCH)?
                    .contains_destination(&d.key());
                self.check_destination_family(k, d)?;
                if exists {
                    return Err(Errno::EEXIST);
                }
                check_destination_address(d.addr)?;
                self.table
                    .insert_destination(k, *d)
                    .map_err(|_| Errno::ESRCH)?;
            }
            Operation::EditDestination(k, d) => {
                let exists = self
                    .table
                    .get(k)
                    .ok_or(Errno::ESRCH)?
                    .contains_destination(&d.key());
                self.check_destination_family(k, d)?;
                if !exists {
                    return Err(Errno::ENOENT);
                }
                self.table
                    .insert_destination(k, *d)
                    .map_err(|_| Errno::ESRCH)?;
            }
            Operation::DeleteDestination(k, d) => {
                self.table
                    .get_mut(k)
                    .ok_or(Errno::ESRCH)?
                    .remove_destination(d)
                    .ok_or(Errno::ENOENT)?;
            }
            Operation::Flush => self.table.clear(),
            Operation::ZeroCounters(Some(k)) => {
                if !self.table.contains_service(k) {
                    return Err(Errno::ESRCH);
                }
            }
            Operation::ZeroCounters(None) => {}
            Operation::SetTimeouts(t) => {
                self.timeouts.tcp = t.tcp.or(self.timeouts.tcp);
                self.timeouts.tcp_fin = t.tcp_fin.or(self.timeouts.tcp_fin);
                self.timeouts.udp = t.udp.or(self.timeouts.udp);
            }
            Operation::StartDaemon(d) => {
                if self.has_mixed_family_destinations() {
                    return Err(Errno::EINVAL);
                }
                if d.group.is_some_and(|g| !g.is_multicast()) {
                    return Err(Errno::EINVAL);
                }
                let slot = match d.state {
                    DaemonState::Master => &mut self.master,
                    DaemonState::Backup => &mut self.backup,
                };
                if slot.is_some() {
                    return Err(Errno::EEXIST);
                }
                *slot = Some(d.clone());
            }
            Operation::StopDaemon(state) => {
                let slot = match state {
                    DaemonState::Master => &mut self.master,
                    DaemonState::Backup => &mut self.backup,
                };
                slot.take().ok_or(Errno::ESRCH)?;
            }
        }
        Ok(())
    }

    /// `ip_vs_add_service` / `ip_vs_edit_service`: the scheduler, then the persistence
    /// engine, then the netmask.
    fn check_service(&self, s: &Service) -> Result<(), Errno> {
        if let Scheduler::Other(custom) = &s.scheduler
            && !self.schedulers.contains(custom.name())
        {
            return Err(Errno::ENOENT);
        }
        if let Some(pe) = &s.persistence_engine
            && !self.engines.contains(pe.as_str())
        {
            return Err(Errno::ENOENT);
        }
        if let Some(p) = s.persistence
            && p.netmask.family() != s.key.family()
        {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// `ip_vs_genl_set_cmd`: a destination of another family than its service needs
    /// tunnel forwarding and no sync daemon.
    fn check_destination_family(&self, k: &ServiceKey, d: &Destination) -> Result<(), Errno> {
        if d.family() == k.family() {
            return Ok(());
        }
        if self.master.is_some() || self.backup.is_some() {
            return Err(Errno::EINVAL);
        }
        match d.forwarding {
            Forwarding::Tunnel(_) => Ok(()),
            _ => Err(Errno::EINVAL),
        }
    }

    fn has_mixed_family_destinations(&self) -> bool {
        self.table
            .iter()
            .any(|s| s.destinations().any(|d| d.family() != s.key().family()))
    }
}

/// `ip_vs_new_dest`: an IPv4 destination must be of type RTN_LOCAL or RTN_UNICAST, an IPv6
/// one unicast and not link-local (unless local). Without routes, only the addresses that
/// are never unicast are refused.
fn check_destination_address(addr: IpAddr) -> Result<(), Errno> {
    let invalid = match addr {
        IpAddr::V4(a) => a.octets()[0] == 0 || a.is_broadcast() || a.is_multicast(),
        IpAddr::V6(a) => {
            a.is_unspecified() || a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    if invalid { Err(Errno::EINVAL) } else { Ok(()) }
}

fn service_entry(service: &Service) -> ServiceEntry {
    ServiceEntry {
        service: service.clone(),
        flags: ServiceFlags(service_flags(service) | ServiceFlags::HASHED),
        stats: Stats::default(),
    }
}

fn destination_entry(destination: &Destination) -> DestinationEntry {
    DestinationEntry {
        destination: *destination,
        reported_family: Some(destination.family()),
        active_connections: 0,
        inactive_connections: 0,
        persistent_connections: 0,
        stats: Stats::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::num::NonZeroU16;

    use super::*;
    use crate::model::{
        AddressFamily, CustomScheduler, DestinationKey, InterfaceName, Persistence,
        PersistenceEngine, PersistenceNetmask, Tunnel, Weight,
    };

    fn web() -> ServiceKey {
        ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80)
    }

    fn svc() -> Service {
        Service::new(web(), Scheduler::RoundRobin)
    }

    fn dest(last: u8) -> Destination {
        Destination::new(Ipv4Addr::new(10, 1, 0, last), 8080, Forwarding::Masquerade)
    }

    fn daemon(state: DaemonState) -> SyncDaemon {
        let ifname = InterfaceName::new("eth0").expect("valid name");
        SyncDaemon::new(state, ifname, 1)
    }

    fn kernel_with_service() -> SimulatedKernel {
        let mut k = SimulatedKernel::new();
        assert_eq!(k.apply(&Operation::AddService(svc())), Ok(()));
        k
    }

    #[test]
    fn duplicate_service_is_eexist() {
        let mut k = kernel_with_service();
        assert_eq!(k.apply(&Operation::AddService(svc())), Err(Errno::EEXIST));
    }

    #[test]
    fn missing_service_is_esrch() {
        let mut k = SimulatedKernel::new();
        for op in [
            Operation::EditService(svc()),
            Operation::DeleteService(web()),
            Operation::AddDestination(web(), dest(1)),
            Operation::EditDestination(web(), dest(1)),
            Operation::DeleteDestination(web(), dest(1).key()),
            Operation::ZeroCounters(Some(web())),
        ] {
            assert_eq!(k.apply(&op), Err(Errno::ESRCH), "{op:?}");
        }
        assert!(k.as_table().is_empty());
    }

    #[test]
    fn missing_destination_is_enoent_and_duplicate_eexist() {
        let mut k = kernel_with_service();
        assert_eq!(
            k.apply(&Operation::EditDestination(web(), dest(1))),
            Err(Errno::ENOENT)
        );
        assert_eq!(
            k.apply(&Operation::DeleteDestination(web(), dest(1).key())),
            Err(Errno::ENOENT)
        );
        assert_eq!(k.apply(&Operation::AddDestination(web(), dest(1))), Ok(()));
        assert_eq!(
            k.apply(&Operation::AddDestination(web(), dest(1))),
            Err(Errno::EEXIST)
        );
    }

    #[test]
    fn edit_replaces_settings_and_keeps_destinations() {
        let mut k = kernel_with_service();
        k.apply(&Operation::AddDestination(web(), dest(1)))
            .expect("add");
        let edited = Service {
            scheduler: Scheduler::SourceHashing {
                fallback: true,
                port: false,
            },
            ..svc()
        };
        k.apply(&Operation::EditService(edited.clone()))
            .expect("edit");
        assert_eq!(k.as_table().service(&web()), Some(&edited));
        assert_eq!(k.as_table().destination_count(), 1);
        let heavier = Destination {
            weight: Weight::new(7).expect("weight"),
            ..dest(1)
        };
        k.apply(&Operation::EditDestination(web(), heavier))
            .expect("edit dest");
        assert_eq!(
            k.as_table().destination(&web(), &heavier.key()),
            Some(&heavier)
        );
    }

    #[test]
    fn delete_service_takes_its_destinations() {
        let mut k = kernel_with_service();
        k.apply(&Operation::AddDestination(web(), dest(1)))
            .expect("add");
        k.apply(&Operation::DeleteService(web())).expect("delete");
        assert!(k.as_table().is_empty());
        assert!(k.destination_entries(&web()).is_empty());
        assert_eq!(k.service_entry(&web()), Err(Errno::ESRCH));
    }

    #[test]
    fn unknown_scheduler_and_engine_are_enoent() {
        let custom = CustomScheduler::new("foo", 0).expect("name");
        let mut k = kernel_with_service();
        let with_custom = Service {
            scheduler: Scheduler::Other(Box::new(custom.clone())),
            ..svc()
        };
        assert_eq!(
            k.apply(&Operation::EditService(with_custom.clone())),
            Err(Errno::ENOENT)
        );
        let mut k = k.with_scheduler("foo");
        assert_eq!(k.apply(&Operation::EditService(with_custom)), Ok(()));

        let with_pe = Service {
            persistence_engine: Some(PersistenceEngine::new("bar").expect("name")),
            ..svc()
        };
        assert_eq!(
            k.apply(&Operation::EditService(with_pe.clone())),
            Err(Errno::ENOENT)
        );
        let sip = Service {
            persistence_engine: Some(PersistenceEngine::new("sip").expect("name")),
            ..svc()
        };
        assert_eq!(k.apply(&Operation::EditService(sip)), Ok(()));
    }

    #[test]
    fn wrong_family_netmask_is_einval() {
        let mut k = SimulatedKernel::new();
        let s = Service {
            persistence: Some(Persistence {
                timeout_secs: 300,
                netmask: PersistenceNetmask::host(AddressFamily::Ipv6),
            }),
            ..svc()
        };
        assert_eq!(k.apply(&Operation::AddService(s)), Err(Errno::EINVAL));
        assert!(k.as_table().is_empty());
    }

    #[test]
    fn mixed_family_needs_a_tunnel_and_no_daemon() {
        let mut k = kernel_with_service();
        let v6 = |forwarding| {
            Destination::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1), 80, forwarding)
        };
        assert_eq!(
            k.apply(&Operation::AddDestination(
                web(),
                v6(Forwarding::Masquerade)
            )),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            k.apply(&Operation::AddDestination(
                web(),
                v6(Forwarding::DirectRouting)
            )),
            Err(Errno::EINVAL)
        );
        let tunnel = v6(Forwarding::Tunnel(Tunnel::Ipip));
        assert_eq!(k.apply(&Operation::AddDestination(web(), tunnel)), Ok(()));
        // Editing it back to masquerading is refused too.
        assert_eq!(
            k.apply(&Operation::EditDestination(
                web(),
                v6(Forwarding::Masquerade)
            )),
            Err(Errno::EINVAL)
        );
        // No sync daemon while a mixed-family destination exists.
        assert_eq!(
            k.apply(&Operation::StartDaemon(daemon(DaemonState::Master))),
            Err(Errno::EINVAL)
        );
        k.apply(&Operation::DeleteDestination(web(), tunnel.key()))
            .expect("delete");
        k.apply(&Operation::StartDaemon(daemon(DaemonState::Master)))
            .expect("start");
        // And no mixed-family destination while a sync daemon runs, even with a tunnel.
        assert_eq!(
            k.apply(&Operation::AddDestination(web(), tunnel)),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn daemon_start_and_stop() {
        let mut k = SimulatedKernel::new();
        assert_eq!(
            k.apply(&Operation::StopDaemon(DaemonState::Backup)),
            Err(Errno::ESRCH)
        );
        k.apply(&Operation::StartDaemon(daemon(DaemonState::Backup)))
            .expect("start");
        assert_eq!(
            k.apply(&Operation::StartDaemon(daemon(DaemonState::Backup))),
            Err(Errno::EEXIST)
        );
        k.apply(&Operation::StartDaemon(daemon(DaemonState::Master)))
            .expect("master too");
        assert_eq!(k.daemons().len(), 2);
        k.apply(&Operation::StopDaemon(DaemonState::Backup))
            .expect("stop");
        assert_eq!(k.daemons(), vec![daemon(DaemonState::Master)]);
    }

    #[test]
    fn invalid_destination_addresses_are_einval() {
        let mut k = kernel_with_service();
        for addr in [
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(0, 1, 2, 3),
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(224, 0, 0, 1),
        ] {
            let d = Destination::new(addr, 80, Forwarding::Masquerade);
            assert_eq!(
                k.apply(&Operation::AddDestination(web(), d)),
                Err(Errno::EINVAL),
                "{addr}"
            );
        }
        let v6 = ServiceKey::tcp(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1), 80);
        k.apply(&Operation::AddService(Service::new(
            v6,
            Scheduler::default(),
        )))
        .expect("v6 service");
        for addr in [
            Ipv6Addr::UNSPECIFIED,
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
        ] {
            let d = Destination::new(addr, 80, Forwarding::Masquerade);
            assert_eq!(
                k.apply(&Operation::AddDestination(v6, d)),
                Err(Errno::EINVAL),
                "{addr}"
            );
        }
        let ok = Destination::new(Ipv6Addr::LOCALHOST, 80, Forwarding::Masquerade);
        assert_eq!(k.apply(&Operation::AddDestination(v6, ok)), Ok(()));
    }

    #[test]
    fn direct_routing_keeps_the_port_it_was_given() {
        let mut k = kernel_with_service();
        let d = Destination::new(Ipv4Addr::new(10, 1, 0, 1), 8080, Forwarding::DirectRouting);
        k.apply(&Operation::AddDestination(web(), d)).expect("add");
        let key = DestinationKey {
            addr: d.addr,
            port: 8080,
        };
        assert_eq!(k.as_table().destination(&web(), &key), Some(&d));
        let service_port = DestinationKey { port: 80, ..key };
        assert_eq!(
            k.apply(&Operation::DeleteDestination(web(), service_port)),
            Err(Errno::ENOENT)
        );
    }

    #[test]
    fn flush_zero_and_timeouts() {
        let mut k = kernel_with_service();
        assert_eq!(k.apply(&Operation::ZeroCounters(Some(web()))), Ok(()));
        assert_eq!(k.apply(&Operation::ZeroCounters(None)), Ok(()));
        k.apply(&Operation::Flush).expect("flush");
        assert!(k.as_table().is_empty());
        let t = Timeouts {
            udp: NonZeroU32::new(60),
            ..Timeouts::default()
        };
        k.apply(&Operation::SetTimeouts(t)).expect("timeouts");
        assert_eq!(
            k.timeouts(),
            Timeouts {
                udp: NonZeroU32::new(60),
                ..SimulatedKernel::DEFAULT_TIMEOUTS
            }
        );
    }

    #[test]
    fn listing_reports_hashed_flags_and_round_trips() {
        let mut k = kernel_with_service();
        let gue = Destination::new(
            Ipv4Addr::new(10, 1, 0, 9),
            80,
            Forwarding::Tunnel(Tunnel::Gue {
                port: NonZeroU16::MIN,
                checksum: true,
                remote_checksum: false,
            }),
        );
        k.apply(&Operation::AddDestination(web(), gue))
            .expect("add");
        let entries = k.service_entries();
        assert_eq!(entries.len(), 1);
        assert!(entries[0].flags.is_hashed());
        assert_eq!(Table::from_entries(k.listing()), k.table());
    }

    #[test]
    fn errno_names_and_conversions() {
        assert_eq!(Errno::new(-3), Errno::ESRCH);
        assert_eq!(Errno::ESRCH.name(), Some("ESRCH"));
        assert_eq!(Errno::ESRCH.to_string(), "ESRCH (no such process)");
        assert_eq!(Errno::new(200).to_string(), "errno 200");
        assert_eq!(Errno::new(i32::MIN).get(), i32::MAX);
        let kernel: KernelError = Errno::EEXIST.into();
        assert_eq!(kernel.errno(), 17);
        assert_eq!(Errno::from(&kernel), Errno::EEXIST);
        assert_eq!(io::Error::from(Errno::EINVAL).raw_os_error(), Some(22));
    }
}
