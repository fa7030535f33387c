//! The reconciler: keeps the node's IPVS table and dummy interface in line with the
//! [`DesiredState`], incrementally, safely, and without a state file.
//!
//! # Driving it
//!
//! [`Reconciler`] is a sans-IO state machine around a [`Dataplane`]: it never sleeps, never
//! reads a clock, never spawns. The caller passes `now` to every call and asks
//! [`Reconciler::next_wakeup`] when it wants to be called again (a retry is due, or a drain
//! must be checked); a daemon's loop looks like this:
//!
//! ```no_run
//! # use std::time::Instant;
//! # use svc_controller::reconcile::{Reconciler, ReconcilerConfig};
//! # use svc_controller::dataplane::MemoryDataplane;
//! # use svc_controller::DesiredState;
//! # fn events() -> Vec<svc_controller::ServiceDesired> { vec![] }
//! let mut reconciler = Reconciler::new(MemoryDataplane::new(), ReconcilerConfig::default());
//! reconciler.set_desired(DesiredState::new()); // everything known at start-up
//! reconciler.verify(Instant::now())?; // adopt the table: no operation if it is already right
//! for service in events() {
//!     reconciler.sync_service(service, Instant::now()); // work ∝ what changed
//!     if reconciler.next_wakeup().is_some_and(|t| t <= Instant::now()) {
//!         reconciler.poll(Instant::now()); // due retries and drain checks
//!     }
//!     // ...and every minute or so: reconciler.verify(Instant::now())
//! }
//! # Ok::<(), svc_controller::dataplane::DataplaneError>(())
//! ```
//!
//! # Incremental work
//!
//! [`Reconciler::sync_service`] and [`Reconciler::remove_service`] update the desired state and
//! program only the virtual servers and VIPs that [`DesiredState::update`] reports as changed,
//! diffing each against the reconciler's own view of it: a Service event costs work
//! proportional to that Service, not to the table; [`Reconciler::sync_services`] does the same
//! for many Services at once, with their reads and operations sent together.
//! [`Reconciler::verify`] is the full pass: it lists the kernel, rebuilds the view of every
//! owned virtual server from it, and repairs drift (a virtual server deleted or a weight edited
//! behind our back). A daemon runs the periodic one in slices instead
//! ([`Reconciler::start_sweep`], then [`Reconciler::sweep_step`] between its incremental
//! syncs), so that verifying a large table never holds a change back. Retries and
//! drain checks are indexed by time, so [`Reconciler::next_wakeup`] (called after every
//! event in the loop above) costs nothing per waiting item and [`Reconciler::poll`] costs
//! what is due.
//!
//! # The view never believes what the kernel does not hold
//!
//! The view (what the reconciler thinks the kernel has, for the virtual servers it owns) only
//! changes on an operation's successful answer or on a read of the kernel. After any failure
//! the virtual server is marked suspect, and the next attempt re-reads it from the kernel
//! before planning. Failures are retried with exponential backoff
//! ([`ReconcilerConfig::retry_delay`]) and counted in [`Metrics`].
//!
//! # Restart
//!
//! Ownership comes from the node (see [`ownership`](crate::ownership)), draining from the
//! table itself (a TCP real server with weight 0 that is not desired is draining), so a new
//! reconciler given the same desired state adopts an existing table with **zero** operations.
//!
//! # Graceful termination
//!
//! A TCP real server that leaves the desired set of a virtual server that stays is *quiesced*:
//! its weight is edited to 0 (new connections go elsewhere, established ones continue), and it
//! is deleted once its active and inactive connections are both 0 (IPVS's own timeouts expire
//! the entries of connections whose peers vanished), or at the drain deadline when one is set
//! ([`ReconcilerConfig::drain_timeout`]; none by default, as kube-proxy: see
//! [`DEFAULT_DRAIN_TIMEOUT`] for why). An idle one is deleted at
//! once. An endpoint that comes back while draining gets its weight restored by an edit: its
//! connections are never cut. UDP and SCTP real servers are deleted at once (there is no
//! connection end to wait for, and stale UDP flows are better expired than black-holed).
//! When a whole virtual server leaves the desired set (its Service was deleted or lost that
//! address), it is deleted with its real servers at once: nothing can be drained towards.
//!
//! # VIPs
//!
//! Desired VIPs are bound on the dummy interface, except addresses the node already has on
//! another interface; addresses on the dummy interface that are no longer wanted are removed.
//! A VIP is bound before its virtual servers are created and removed only after its last
//! owned virtual server is gone, which keeps the ownership rule true across crashes. When
//! binding fails, the VIP's virtual servers are **not created**: they are reported (an error
//! in the [`SyncReport`], [`Metrics::blocked_on_vip`], [`Reconciler::blocked_on_vip`]) and
//! created by the retry that binds the VIP, with the VIP's backoff. (One that already exists
//! is still kept in line: it is desired, so ours by the first rule.)
//! [`Reconciler::cleanup`] removes the virtual servers, then the addresses, then the dummy
//! interface itself when nothing foreign is on it.
//!
//! # Logs
//!
//! Events go through [`tracing`], with structured fields (`service`, `virtual_server`,
//! `real_server`, `vip`, `error`, `errno`, counts):
//!
//! - `warn`: every failed IPVS operation (the operation, its Service, the kernel's errno and
//!   message), failed batch, failed read, failed address change (the VIP, its Service, the
//!   error, when it is retried), virtual server not created for want of its VIP, sysctl that
//!   cannot be held, deletion of a virtual server that this process did not create and no
//!   Service asked for while it ran (with the ownership rule that made it ours);
//! - `info`: adoption of the node (owned, foreign and desired virtual servers, VIPs,
//!   drains, operations), drift repaired (virtual server, Service, operations), drains
//!   started, completed and expired (one event per real server, only when it happened:
//!   after the kernel accepted the change), sysctls written, cleanup;
//! - `debug`: each applied batch with its counts by kind, each address change, each full
//!   pass's totals;
//! - `trace`: each IPVS operation, in `ipvsadm` notation.
//!
//! Nothing per real server is logged at `info` on the programming path: a batch is one
//! `debug` event, and its operations are formatted only when `trace` is enabled.

pub mod config;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use ipvs::codec::Operation;
use ipvs::model::{
    Destination, DestinationKey, Forwarding, Persistence as IpvsPersistence, PersistenceNetmask,
    Scheduler as IpvsScheduler, Service, ServiceKey, Weight,
};
use ipvs::table::{OperationKind, ServiceConfig, Table, diff_service};
use tracing::{Level, debug, info, trace, warn};

pub use config::{
    DEFAULT_DRAIN_CHECK_INTERVAL, DEFAULT_DRAIN_TIMEOUT, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
    ReconcilerConfig,
};

use crate::dataplane::{
    Connections, Dataplane, DataplaneError, Describe, InterfaceRemoval, ServiceState,
};
use crate::desired::{Changes, DesiredState, ServiceDesired};
use crate::model::{Protocol, RealServer, Scheduler, ServiceRef, VirtualServer, VirtualServerKey};
use crate::ownership::{Ownership, from_service_key, to_service_key};

/// Counters for metrics (monotonic, since the reconciler was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Incremental syncs ([`Reconciler::sync_service`], [`Reconciler::remove_service`]).
    pub syncs: u64,
    /// Full passes ([`Reconciler::verify`]), successful or not.
    pub full_syncs: u64,
    /// IPVS operations that succeeded.
    pub operations_applied: u64,
    /// The same, by kind of operation.
    pub applied_by_kind: OperationCounts,
    /// IPVS operations that failed (each is retried).
    pub operations_failed: u64,
    /// Retries carried out (due work run by [`Reconciler::poll`]).
    pub retries: u64,
    /// Kernel reads (listing, one virtual server) that failed.
    pub read_failures: u64,
    /// Dummy-interface address changes that succeeded.
    pub address_changes: u64,
    /// Dummy-interface address changes that failed.
    pub address_failures: u64,
    /// Virtual servers found different from the view by a full pass (drift, then repaired).
    pub drift_detected: u64,
    /// Virtual servers deleted that this process did not create and no Service asked for
    /// while it ran (each also logged as a warning, with the rule that made it ours).
    pub unrequested_deletions: u64,
    /// Real servers quiesced for draining.
    pub drains_started: u64,
    /// Draining real servers deleted because their connections reached zero.
    pub drains_completed: u64,
    /// Draining real servers deleted at the deadline with connections left.
    pub drains_expired: u64,
    /// Times a virtual server was not created because its VIP could not be bound.
    pub blocked_on_vip: u64,
    /// Sysctls written.
    pub sysctl_writes: u64,
    /// Sysctls that could not be read or written.
    pub sysctl_failures: u64,
}

/// Operations counted by kind (for metrics labelled by kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationCounts {
    /// Virtual servers added.
    pub add_service: u64,
    /// Virtual servers edited.
    pub edit_service: u64,
    /// Virtual servers deleted.
    pub delete_service: u64,
    /// Real servers added.
    pub add_destination: u64,
    /// Real servers edited (weight changes, quiescing for a drain).
    pub edit_destination: u64,
    /// Real servers deleted.
    pub delete_destination: u64,
    /// Any other kind (the reconciler sends none today).
    pub other: u64,
}

impl OperationCounts {
    /// Counts one operation of `kind`.
    pub fn record(&mut self, kind: OperationKind) {
        let slot = match kind {
            OperationKind::AddService => &mut self.add_service,
            OperationKind::EditService => &mut self.edit_service,
            OperationKind::DeleteService => &mut self.delete_service,
            OperationKind::AddDestination => &mut self.add_destination,
            OperationKind::EditDestination => &mut self.edit_destination,
            OperationKind::DeleteDestination => &mut self.delete_destination,
            _ => &mut self.other,
        };
        *slot += 1;
    }

    /// Each count with a stable `snake_case` name for its kind (`add_service`, ...).
    pub fn by_name(&self) -> [(&'static str, u64); 7] {
        [
            ("add_service", self.add_service),
            ("edit_service", self.edit_service),
            ("delete_service", self.delete_service),
            ("add_destination", self.add_destination),
            ("edit_destination", self.edit_destination),
            ("delete_destination", self.delete_destination),
            ("other", self.other),
        ]
    }
}

/// What one call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// IPVS operations sent.
    pub operations: usize,
    /// Of those, how many failed.
    pub failed: usize,
    /// Dummy-interface addresses bound or removed.
    pub address_changes: usize,
    /// Sysctls written.
    pub sysctl_writes: usize,
    /// Whether the work was deferred to the first full pass (nothing adopted yet).
    pub deferred: bool,
    /// Whether [`Reconciler::cleanup`] deleted the dummy interface.
    pub interface_deleted: bool,
    /// The errors met, as messages (the work is retried).
    pub errors: Vec<String>,
}

impl SyncReport {
    /// Whether nothing at all was changed on the node and nothing failed.
    pub fn is_quiet(&self) -> bool {
        self.operations == 0
            && self.address_changes == 0
            && self.sysctl_writes == 0
            && !self.interface_deleted
            && self.errors.is_empty()
    }

    /// Whether everything attempted succeeded.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Adds what `other` did to this report (to sum the reports of several calls).
    pub fn merge(&mut self, other: SyncReport) {
        self.operations += other.operations;
        self.failed += other.failed;
        self.address_changes += other.address_changes;
        self.sysctl_writes += other.sysctl_writes;
        self.deferred |= other.deferred;
        self.interface_deleted |= other.interface_deleted;
        self.errors.extend(other.errors);
    }
}

/// One Service's new input for [`Reconciler::sync_services`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceUpdate {
    /// The Service's newly computed virtual servers (see
    /// [`compute_service`](crate::compute_service)).
    Set(ServiceDesired),
    /// The Service is gone, or no longer handled by this proxy.
    Remove(ServiceRef),
}

/// Work to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    /// Reconcile one virtual server.
    Vs(VirtualServerKey),
    /// Bind or unbind one address.
    Vip(IpAddr),
    /// A full pass ([`Reconciler::verify`]) that failed.
    FullPass,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    attempts: u32,
    due: Instant,
}

/// A draining real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// When it is deleted even with connections left; `None`: never (it goes when its last
    /// connection does).
    pub deadline: Option<Instant>,
    /// When its connection counts are read next.
    pub next_check: Instant,
}

type DrainKey = (VirtualServerKey, IpAddr, u16);

/// Something scheduled: a retry or a drain check, indexed by its time so that
/// [`Reconciler::next_wakeup`] and [`Reconciler::poll`] cost what is due, not what waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retry(Work),
    Drain(DrainKey),
}

/// Keeps IPVS and the dummy interface in line with the desired state. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct Reconciler<D> {
    dataplane: D,
    config: ReconcilerConfig,
    desired: DesiredState,
    /// What the kernel holds for the virtual servers we own, from successful answers and reads.
    view: Table,
    /// Addresses on the dummy interface.
    dummy: BTreeSet<IpAddr>,
    /// The node's other addresses (from the last full pass).
    node_addresses: BTreeSet<IpAddr>,
    drains: BTreeMap<DrainKey, Drain>,
    pending: BTreeMap<Work, Backoff>,
    /// Every retry's due time and every drain's next check, in time order (kept in step
    /// with `pending` and `drains` by `set_retry`, `clear_retry`, `set_drain`, `clear_drain`).
    timers: BTreeSet<(Instant, Timer)>,
    /// Virtual servers whose view must be re-read before planning.
    suspect: BTreeSet<VirtualServerKey>,
    /// Desired virtual servers not created because their VIP is not bound: retried when the
    /// VIP is.
    blocked: BTreeSet<VirtualServerKey>,
    adopted: bool,
    /// Virtual servers this process created, or that a Service asked for while it ran: the
    /// deletion of any other (a leftover of a Service deleted while no controller ran, or
    /// someone else's entry on an address it manages) is logged as a warning, with the rule
    /// that made it ours.
    known: BTreeSet<VirtualServerKey>,
    /// The full pass in slices under way, if any.
    sweep: Option<Sweep>,
    metrics: Metrics,
}

/// A full pass in slices (see [`Reconciler::start_sweep`]).
#[derive(Debug)]
struct Sweep {
    /// The virtual servers left to verify, in key order.
    keys: VecDeque<VirtualServerKey>,
    /// How many have been verified.
    examined: usize,
}

impl<D: Dataplane> Reconciler<D> {
    /// A reconciler with an empty desired state, that has not looked at the node yet. Give it
    /// the desired state ([`Reconciler::set_desired`] or [`Reconciler::sync_service`]) and
    /// call [`Reconciler::verify`] to adopt the node; incremental work is deferred until then.
    pub fn new(dataplane: D, config: ReconcilerConfig) -> Self {
        Self {
            dataplane,
            config,
            desired: DesiredState::new(),
            view: Table::new(),
            dummy: BTreeSet::new(),
            node_addresses: BTreeSet::new(),
            drains: BTreeMap::new(),
            pending: BTreeMap::new(),
            timers: BTreeSet::new(),
            suspect: BTreeSet::new(),
            blocked: BTreeSet::new(),
            adopted: false,
            known: BTreeSet::new(),
            sweep: None,
            metrics: Metrics::default(),
        }
    }

    /// Replaces the whole desired state without touching the node (at start-up, or after a
    /// full resync of the informers); the next [`Reconciler::verify`] programs it.
    pub fn set_desired(&mut self, desired: DesiredState) {
        self.desired = desired;
    }

    /// The desired state.
    pub fn desired(&self) -> &DesiredState {
        &self.desired
    }

    /// What the reconciler believes the kernel holds for the virtual servers it owns.
    pub fn view(&self) -> &Table {
        &self.view
    }

    /// The node's other addresses, as the last full pass read them.
    pub fn node_addresses(&self) -> &BTreeSet<IpAddr> {
        &self.node_addresses
    }

    /// The addresses the reconciler believes are bound on the dummy interface.
    pub fn dummy_addresses(&self) -> &BTreeSet<IpAddr> {
        &self.dummy
    }

    /// The draining real servers: virtual server, real server, and its schedule.
    pub fn draining(&self) -> impl Iterator<Item = (VirtualServerKey, DestinationKey, Drain)> + '_ {
        self.drains.iter().map(|((k, addr, port), d)| {
            (
                *k,
                DestinationKey {
                    addr: *addr,
                    port: *port,
                },
                *d,
            )
        })
    }

    /// The desired virtual servers not created because their VIP is not bound on the dummy
    /// interface (the binding failed): they are created when a retry binds it.
    pub fn blocked_on_vip(&self) -> impl Iterator<Item = VirtualServerKey> + '_ {
        self.blocked.iter().copied()
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The settings.
    pub fn config(&self) -> &ReconcilerConfig {
        &self.config
    }

    /// Whether a full pass has adopted the node.
    pub fn is_adopted(&self) -> bool {
        self.adopted
    }

    /// How many pieces of work wait for a retry.
    pub fn pending_retries(&self) -> usize {
        self.pending.len()
    }

    /// The dataplane.
    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    /// The dataplane, mutably (tests inject faults through it).
    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }

    /// Gives the dataplane back (e.g. to start another reconciler on it).
    pub fn into_dataplane(self) -> D {
        self.dataplane
    }

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

    /// Replaces one Service's desired virtual servers and programs what changed.
    pub fn sync_service(&mut self, desired: ServiceDesired, now: Instant) -> SyncReport {
        let changes = self.desired.update(desired);
        self.apply_changes(changes, now)
    }

    /// Removes one Service and programs what changed.
    pub fn remove_service(&mut self, service: &ServiceRef, now: Instant) -> SyncReport {
        let changes = self.desired.remove(service);
        self.apply_changes(changes, now)
    }

    /// Replaces the desired virtual servers of many Services and programs what changed, as
    /// one sync: the reads it needs are made together and its operations share batches, so
    /// a burst of changes across thousands of Services costs a few system calls, not round
    /// trips per Service. The result is the same as calling [`Reconciler::sync_service`] and
    /// [`Reconciler::remove_service`] for each update in turn.
    pub fn sync_services(
        &mut self,
        updates: impl IntoIterator<Item = ServiceUpdate>,
        now: Instant,
    ) -> SyncReport {
        let mut changes = Changes::default();
        for update in updates {
            let more = match update {
                ServiceUpdate::Set(desired) => self.desired.update(desired),
                ServiceUpdate::Remove(service) => self.desired.remove(&service),
            };
            changes.virtual_servers.extend(more.virtual_servers);
            changes.vips.extend(more.vips);
        }
        self.apply_changes(changes, now)
    }

    fn apply_changes(&mut self, changes: Changes, now: Instant) -> SyncReport {
        self.metrics.syncs += 1;
        let mut report = SyncReport::default();
        if !self.adopted {
            report.deferred = true;
            return report;
        }
        // Bind before creating, delete before unbinding (see the ownership rule).
        let (bind, unbind): (Vec<IpAddr>, Vec<IpAddr>) =
            changes.vips.iter().partition(|a| self.vip_wanted(a));
        let (bound, missing): (Vec<IpAddr>, Vec<IpAddr>) =
            bind.iter().partition(|a| self.dummy.contains(a));
        for addr in bound {
            self.clear_retry(Work::Vip(addr));
        }
        self.bind_vips(missing, now, &mut report);
        for addr in bind {
            self.unblock(addr, now, &mut report);
        }
        let items = changes.virtual_servers.iter().map(|key| (*key, None));
        self.reconcile_many(items, now, &mut report);
        for addr in unbind {
            self.reconcile_vip(addr, now, &mut report);
        }
        report
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
                        Err(e) => report.errors.push(e.to_string()),
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

    /// The full pass: reads the whole table, the dummy interface and the node's addresses,
    /// rebuilds the view of every owned virtual server from the kernel, repairs any
    /// difference from the desired state, and holds the configured sysctls. The first call
    /// adopts the node; with a table that already matches, it makes no change at all.
    ///
    /// An error means the node could not be read; the pass is retried by
    /// [`Reconciler::poll`] with backoff.
    pub fn verify(&mut self, now: Instant) -> Result<SyncReport, DataplaneError> {
        self.metrics.full_syncs += 1;
        let mut report = SyncReport::default();
        let read = (|| {
            let listing = self.dataplane.list()?;
            let (node, dummy) = self.dataplane.node_and_dummy_addresses()?;
            Ok::<_, DataplaneError>((listing, node, dummy))
        })();
        let (mut listing, node, dummy) = match read {
            Ok(x) => x,
            Err(e) => {
                self.metrics.read_failures += 1;
                self.schedule(Work::FullPass, now);
                warn!(error = %e, "full pass: cannot read the node; retrying");
                return Err(e);
            }
        };
        self.clear_retry(Work::FullPass);
        // This pass covers whatever a sweep had left.
        self.sweep = None;
        self.take_node(node, dummy, &mut report);
        let (keys, found) = self.pass_keys(listing.table.keys());
        let listed = listing.table.len();
        self.bind_missing_vips(now, &mut report);
        let examined = keys.len();
        let states = keys
            .into_iter()
            .map(|key| {
                let fresh = listing.take_service(&to_service_key(&key));
                (key, fresh)
            })
            .collect();
        drop(listing);
        self.verify_states(states, now, &mut report);
        self.unbind_stale_vips(now, &mut report);
        if !self.adopted {
            info!(
                owned_virtual_servers = found,
                foreign_virtual_servers = listed - found,
                desired_virtual_servers = self.desired.virtual_servers().len(),
                vips_bound = self.dummy.len(),
                draining = self.drains.len(),
                operations = report.operations,
                address_changes = report.address_changes,
                errors = report.errors.len(),
                "adopted the node"
            );
        }
        debug!(
            virtual_servers = examined,
            operations = report.operations,
            failed = report.failed,
            address_changes = report.address_changes,
            sysctl_writes = report.sysctl_writes,
            errors = report.errors.len(),
            "full pass done"
        );
        self.adopted = true;
        Ok(report)
    }

    /// Starts a full pass in slices: the same checks as [`Reconciler::verify`], with the
    /// work spread over [`Reconciler::sweep_step`] calls so that a large table is verified
    /// without holding up incremental syncs (a daemon runs them between slices).
    ///
    /// This call reads what is cheap to read whole: the node's addresses, the dummy
    /// interface, the sysctls and, with `discover`, the keys of the table's virtual servers
    /// (one dump, without destinations). It binds missing VIPs and lines up every virtual
    /// server to verify: the desired ones, the ones in the view, the ones waiting for a retry
    /// and, with `discover`, the owned ones in the kernel that are none of those (leftovers
    /// made behind the controller's back on its VIPs or NodePorts). The kernel resumes a
    /// service dump by position, so the dump costs time quadratic in the table's size (and
    /// nothing else runs meanwhile): a daemon
    /// discovers on every pass of a small table and on one pass in several of a large one.
    /// Each [`Reconciler::sweep_step`] then reads a slice of them whole (destinations and
    /// connection counts, at that moment, so changes made meanwhile are seen) and repairs
    /// what differs. A sweep started while another runs replaces it.
    ///
    /// An error means the node could not be read; nothing was changed and no sweep is
    /// running (the caller tries again later).
    pub fn start_sweep(
        &mut self,
        now: Instant,
        discover: bool,
    ) -> Result<SyncReport, DataplaneError> {
        let read = (|| {
            let listed = if discover {
                self.dataplane.service_keys()?
            } else {
                Vec::new()
            };
            let (node, dummy) = self.dataplane.node_and_dummy_addresses()?;
            Ok::<_, DataplaneError>((listed, node, dummy))
        })();
        let (listed, node, dummy) = match read {
            Ok(x) => x,
            Err(e) => {
                self.metrics.read_failures += 1;
                self.sweep = None;
                warn!(error = %e, "full pass: cannot read the node; trying again later");
                return Err(e);
            }
        };
        self.metrics.full_syncs += 1;
        let mut report = SyncReport::default();
        self.take_node(node, dummy, &mut report);
        let (keys, _) = self.pass_keys(listed.into_iter());
        self.bind_missing_vips(now, &mut report);
        self.sweep = Some(Sweep {
            examined: 0,
            keys: keys.into_iter().collect(),
        });
        Ok(report)
    }

    /// Verifies the next `max` virtual servers of the running sweep (see
    /// [`Reconciler::start_sweep`]): reads them in one go ([`Dataplane::services`]) and
    /// repairs what differs, as [`Reconciler::verify`] does. After the last slice the sweep
    /// ends: addresses no longer wanted are unbound and the pass is logged. A slice that
    /// cannot be read marks its virtual servers for a retry (with backoff) and the sweep goes
    /// on. Does nothing when no sweep runs.
    pub fn sweep_step(&mut self, now: Instant, max: usize) -> SyncReport {
        let mut report = SyncReport::default();
        let Some(sweep) = &mut self.sweep else {
            return report;
        };
        let take = max.max(1).min(sweep.keys.len());
        let keys: Vec<VirtualServerKey> = sweep.keys.drain(..take).collect();
        sweep.examined += keys.len();
        if !keys.is_empty() {
            let skeys: Vec<ServiceKey> = keys.iter().map(to_service_key).collect();
            match self.dataplane.services(&skeys) {
                Ok(states) => {
                    let states = keys.into_iter().zip(states).collect();
                    self.verify_states(states, now, &mut report);
                }
                Err(e) => {
                    self.metrics.read_failures += 1;
                    warn!(
                        virtual_servers = keys.len(),
                        error = %e,
                        "full pass: cannot read virtual servers; each is retried"
                    );
                    for key in keys {
                        self.suspect.insert(key);
                        self.schedule(Work::Vs(key), now);
                    }
                    report.errors.push(e.to_string());
                }
            }
        }
        if self.sweep.as_ref().is_some_and(|s| s.keys.is_empty()) {
            let examined = self.sweep.take().map_or(0, |s| s.examined);
            self.unbind_stale_vips(now, &mut report);
            self.adopted = true;
            debug!(virtual_servers = examined, "full pass (in slices) done");
        }
        report
    }

    /// How many virtual servers the running sweep has left to verify (`None`: no sweep).
    pub fn sweep_remaining(&self) -> Option<usize> {
        self.sweep.as_ref().map(|s| s.keys.len())
    }

    /// The virtual servers a full pass examines, given the keys of the kernel's table: the
    /// desired ones, the listed ones we own or have in the view, the rest of the view, and the
    /// ones waiting for a retry or suspect. Also returns how many listed ones are ours.
    fn pass_keys(
        &self,
        listed: impl Iterator<Item = ServiceKey>,
    ) -> (BTreeSet<VirtualServerKey>, usize) {
        let ownership = self.ownership();
        let mut keys: BTreeSet<VirtualServerKey> =
            self.desired.virtual_servers().keys().copied().collect();
        let mut found = 0usize;
        for skey in listed {
            if let Some(k) = from_service_key(&skey)
                && (keys.contains(&k) || ownership.owns(&k) || self.view.contains_service(&skey))
            {
                found += 1;
                keys.insert(k);
            }
        }
        keys.extend(self.view.keys().filter_map(|k| from_service_key(&k)));
        // Work waiting for a retry is done now, with the fresh read.
        keys.extend(self.pending.keys().filter_map(|w| match w {
            Work::Vs(k) => Some(*k),
            _ => None,
        }));
        keys.extend(self.suspect.iter().copied());
        (keys, found)
    }

    /// Takes in the node's addresses and the dummy interface's, just read by a full pass, and
    /// holds the configured sysctls.
    fn take_node(
        &mut self,
        node: BTreeSet<IpAddr>,
        dummy: BTreeSet<IpAddr>,
        report: &mut SyncReport,
    ) {
        self.node_addresses = node;
        self.dummy = dummy;
        self.hold_sysctls(report);
    }

    /// Binds the wanted VIPs the dummy interface lacks (a full pass does it after it has
    /// decided what it owns: a VIP bound earlier would make foreign entries on it look ours).
    fn bind_missing_vips(&mut self, now: Instant, report: &mut SyncReport) {
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
    fn unbind_stale_vips(&mut self, now: Instant, report: &mut SyncReport) {
        let wanted = self.wanted_vips();
        let stale: Vec<IpAddr> = self.dummy.difference(&wanted).copied().collect();
        for addr in stale {
            self.reconcile_vip(addr, now, report);
        }
    }

    /// The heart of a full pass: brings each virtual server in line with the desired state
    /// from its state just read from the kernel, counting and logging drift (the kernel
    /// differs from the view).
    fn verify_states(
        &mut self,
        states: Vec<(VirtualServerKey, Option<ServiceState>)>,
        now: Instant,
        report: &mut SyncReport,
    ) {
        let mut drifted = BTreeSet::new();
        let mut items = Vec::with_capacity(states.len());
        for (key, fresh) in states {
            let skey = to_service_key(&key);
            if self.adopted && self.view.get(&skey) != fresh.as_ref().map(|s| &s.config) {
                self.metrics.drift_detected += 1;
                drifted.insert(key);
            }
            self.suspect.remove(&key);
            items.push((key, Some(fresh)));
        }
        for (key, operations, ok) in self.reconcile_many(items, now, report) {
            if ok && drifted.contains(&key) {
                info!(
                    virtual_server = %key,
                    service = %self.owner(&key),
                    operations,
                    "drift repaired: the kernel differed from what was programmed"
                );
            }
        }
    }

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
    pub fn cleanup(&mut self) -> Result<SyncReport, DataplaneError> {
        let mut report = SyncReport::default();
        let listing = self.dataplane.list()?;
        self.node_addresses = self.dataplane.node_addresses()?;
        let interface = self.dataplane.existing_dummy_addresses()?;
        self.dummy = interface.clone().unwrap_or_default();
        let ownership = self.ownership();
        let ops: Vec<Operation> = listing
            .table
            .keys()
            .filter(|k| {
                from_service_key(k).is_some_and(|vk| {
                    ownership.owns(&vk)
                        || self.desired.virtual_servers().contains_key(&vk)
                        || self.view.contains_service(k)
                })
            })
            .map(Operation::DeleteService)
            .collect();
        let results = self.send_each(&ops, &mut report);
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
        self.view = ops
            .iter()
            .zip(&results)
            .filter(|(_, ok)| !**ok)
            .filter_map(|(op, _)| match op {
                Operation::DeleteService(k) => listing.table.get(k).cloned(),
                _ => None,
            })
            .collect();
        for addr in self.dummy.clone() {
            if kept.contains(&addr) {
                warn!(
                    vip = %addr,
                    "cleanup: VIP kept bound, a virtual server on it could not be deleted"
                );
                continue;
            }
            match self.dataplane.delete_dummy_address(addr) {
                Ok(()) => {
                    self.dummy.remove(&addr);
                    self.metrics.address_changes += 1;
                    report.address_changes += 1;
                }
                Err(e) => {
                    self.metrics.address_failures += 1;
                    warn!(
                        vip = %addr,
                        service = %self.vip_owner(addr),
                        error = %e,
                        "cleanup: cannot unbind VIP"
                    );
                    report.errors.push(e.to_string());
                }
            }
        }
        if let Some(bound) = interface
            && self.dummy.is_empty()
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
                    report.errors.push(e.to_string());
                }
            }
        }
        info!(
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
        self.drains.clear();
        self.pending.clear();
        self.timers.clear();
        self.suspect.clear();
        self.blocked.clear();
        Ok(report)
    }

    /// Keeps [`Reconciler::known`] in step with an operation the kernel accepted, and warns
    /// when a virtual server it did not know is deleted.
    fn note_known(&mut self, op: &Operation) {
        match op {
            Operation::AddService(s) => {
                if let Some(key) = from_service_key(&s.key) {
                    self.known.insert(key);
                }
            }
            Operation::DeleteService(k) => {
                let Some(key) = from_service_key(k) else {
                    return;
                };
                if !self.known.remove(&key) {
                    self.metrics.unrequested_deletions += 1;
                    warn!(
                        virtual_server = %key,
                        reason = self.why_ours(&key),
                        "deleted a virtual server this process did not create and no Service \
                         asks for"
                    );
                }
            }
            _ => {}
        }
    }

    /// Which rule of the [ownership](crate::ownership) made `key` ours, for logs.
    fn why_ours(&self, key: &VirtualServerKey) -> &'static str {
        if self.dummy.contains(&key.addr) {
            "its address is bound to the dummy interface this controller manages"
        } else if self.node_addresses.contains(&key.addr)
            && self.config.node_port_range.contains(&key.port)
        {
            "its port is in the NodePort range on a node address"
        } else {
            "it was programmed for a Service earlier"
        }
    }

    fn ownership(&self) -> Ownership {
        Ownership {
            dummy_addresses: self.dummy.clone(),
            node_addresses: self.node_addresses.clone(),
            node_port_range: self.config.node_port_range.clone(),
        }
    }

    fn vip_wanted(&self, addr: &IpAddr) -> bool {
        self.desired.has_vip(addr) && !self.node_addresses.contains(addr)
    }

    fn schedule(&mut self, work: Work, now: Instant) {
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

    fn clear_retry(&mut self, work: Work) {
        if let Some(old) = self.pending.remove(&work) {
            self.timers.remove(&(old.due, Timer::Retry(work)));
        }
    }

    fn set_drain(&mut self, key: DrainKey, drain: Drain) {
        if let Some(old) = self.drains.insert(key, drain) {
            self.timers.remove(&(old.next_check, Timer::Drain(key)));
        }
        self.timers.insert((drain.next_check, Timer::Drain(key)));
    }

    fn clear_drain(&mut self, key: DrainKey) {
        if let Some(old) = self.drains.remove(&key) {
            self.timers.remove(&(old.next_check, Timer::Drain(key)));
        }
    }

    fn hold_sysctls(&mut self, report: &mut SyncReport) {
        for (key, value) in self.config.sysctls.clone() {
            let current = self.dataplane.sysctl(&key);
            let result = match current {
                Ok(Some(v)) if v == value => Ok(false),
                Ok(_) => self.dataplane.set_sysctl(&key, &value).map(|()| true),
                Err(e) => Err(e),
            };
            match result {
                Ok(true) => {
                    self.metrics.sysctl_writes += 1;
                    report.sysctl_writes += 1;
                    info!(sysctl = %key, value = %value, "sysctl set");
                }
                Ok(false) => {}
                Err(e) => {
                    self.metrics.sysctl_failures += 1;
                    warn!(sysctl = %key, value = %value, error = %e, "cannot hold sysctl");
                    report.errors.push(e.to_string());
                }
            }
        }
    }

    /// Binds or unbinds one address as the desired state wants.
    fn reconcile_vip(&mut self, addr: IpAddr, now: Instant, report: &mut SyncReport) {
        let wanted = self.vip_wanted(&addr);
        let bound = self.dummy.contains(&addr);
        let result = if wanted && !bound {
            self.dataplane.add_dummy_address(addr).map(|()| {
                self.dummy.insert(addr);
            })
        } else if !wanted && bound {
            if self.has_unfinished_vs(addr) {
                // Its virtual servers are not all gone: unbinding now could orphan them.
                self.schedule(Work::Vip(addr), now);
                return;
            }
            self.dataplane.delete_dummy_address(addr).map(|()| {
                self.dummy.remove(&addr);
            })
        } else {
            self.clear_retry(Work::Vip(addr));
            return;
        };
        self.vip_changed(addr, wanted, result, now, report);
    }

    /// Binds many addresses the desired state wants and the dummy interface lacks, with the
    /// requests sent together (see [`Dataplane::add_dummy_addresses`]), then handles each
    /// result as [`Self::reconcile_vip`] does.
    fn bind_vips(&mut self, addrs: Vec<IpAddr>, now: Instant, report: &mut SyncReport) {
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
                    message: "the dataplane gave no answer".into(),
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
                self.clear_retry(Work::Vip(addr));
                debug!(vip = %addr, bound = wanted, "dummy interface address changed");
            }
            Err(e) => {
                self.metrics.address_failures += 1;
                self.schedule(Work::Vip(addr), now);
                warn!(
                    vip = %addr,
                    service = %self.vip_owner(addr),
                    change = if wanted { "bind" } else { "unbind" },
                    error = %e,
                    retry_in_ms = self.retry_in_ms(Work::Vip(addr), now),
                    "dummy interface address change failed; retrying"
                );
                report.errors.push(e.to_string());
            }
        }
    }

    /// Whether `addr` should be bound on the dummy interface and is not: its virtual servers
    /// must not be created (they would not be recognised as ours after a restart).
    fn vip_unbound(&self, addr: &IpAddr) -> bool {
        !self.dummy.contains(addr) && self.vip_wanted(addr)
    }

    /// Records that `key` is not created because its VIP is not bound; it is retried with
    /// the VIP (see [`Reconciler::unblock`]).
    fn block(&mut self, key: VirtualServerKey, now: Instant, report: &mut SyncReport) {
        self.clear_retry(Work::Vs(key));
        if self.blocked.insert(key) {
            self.metrics.blocked_on_vip += 1;
        }
        if !self.pending.contains_key(&Work::Vip(key.addr)) {
            // Not waiting for a retry (e.g. unbound behind our back): bind it soon.
            self.schedule(Work::Vip(key.addr), now);
        }
        let service = self.owner(&key);
        warn!(
            virtual_server = %key,
            service = %service,
            vip = %key.addr,
            retry_in_ms = self.retry_in_ms(Work::Vip(key.addr), now),
            "virtual server not created: its VIP is not bound; retried with the VIP"
        );
        report.errors.push(format!(
            "virtual server {key} of {service} not created: its VIP {} is not bound on the \
             dummy interface (retried with the VIP)",
            key.addr
        ));
    }

    /// Creates the virtual servers that waited for `addr` once it is bound.
    fn unblock(&mut self, addr: IpAddr, now: Instant, report: &mut SyncReport) {
        if !self.dummy.contains(&addr) {
            return;
        }
        let (lo, hi) = vs_range(addr);
        let keys: Vec<VirtualServerKey> = self.blocked.range(lo..=hi).copied().collect();
        for key in keys {
            self.reconcile_vs(key, now, None, report);
        }
    }

    /// Milliseconds until `work` is retried (for logs).
    fn retry_in_ms(&self, work: Work, now: Instant) -> u128 {
        self.pending
            .get(&work)
            .map_or(0, |b| b.due.saturating_duration_since(now).as_millis())
    }

    /// The Service of a virtual server, for logs and messages.
    fn owner(&self, key: &VirtualServerKey) -> Owner<'_> {
        Owner(
            self.desired
                .virtual_servers()
                .get(key)
                .map(|vs| &vs.service),
        )
    }

    /// A Service with a virtual server on `addr`, for logs.
    fn vip_owner(&self, addr: IpAddr) -> Owner<'_> {
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
        self.pending
            .range(Work::Vs(lo)..=Work::Vs(hi))
            .any(|(w, _)| matches!(w, Work::Vs(k) if !desired.contains_key(k)))
            || self
                .suspect
                .range(lo..=hi)
                .any(|k| !desired.contains_key(k))
    }

    /// Whether planning `key` needs fresh connection counts: a TCP real server leaves the
    /// desired set, or a draining one is due for a check.
    fn needs_counts(
        &self,
        key: &VirtualServerKey,
        desired: Option<&VirtualServer>,
        now: Instant,
    ) -> bool {
        if key.protocol != Protocol::Tcp {
            return false;
        }
        let (Some(vs), Some(have)) = (desired, self.view.get(&to_service_key(key))) else {
            return false;
        };
        have.destinations().any(|d| {
            !desires(vs, d)
                && self
                    .drains
                    .get(&(*key, d.addr, d.port))
                    .is_none_or(|r| r.next_check <= now)
        })
    }

    /// Brings one virtual server in line. `fresh`: the kernel's state of it, just read
    /// (`Some(None)`: the kernel does not have it); `None`: use the view, reading the kernel
    /// first when the view is suspect or connection counts are needed.
    fn reconcile_vs(
        &mut self,
        key: VirtualServerKey,
        now: Instant,
        fresh: Option<Option<ServiceState>>,
        report: &mut SyncReport,
    ) {
        if let Some(prepared) = self.prepare_vs(key, now, fresh, report) {
            let ok = prepared.operations.is_empty() || self.send(&prepared.operations, report);
            self.finish_vs(prepared, ok);
        }
    }

    /// Brings many virtual servers in line, as [`Self::reconcile_vs`] does for each, with
    /// their operations sent together in batches of up to [`MAX_BATCH_OPERATIONS`]: a full
    /// pass over thousands of virtual servers costs a few system calls, not one round trip
    /// each. Each plan is computed before any of the batch is sent, which is sound because a
    /// virtual server's plan depends only on its own state. Returns, for each virtual server
    /// that had a plan (not one waiting for its VIP or unreadable), its operations and whether
    /// they all succeeded.
    fn reconcile_many(
        &mut self,
        items: impl IntoIterator<Item = (VirtualServerKey, Option<Option<ServiceState>>)>,
        now: Instant,
        report: &mut SyncReport,
    ) -> Vec<(VirtualServerKey, usize, bool)> {
        let mut items: Vec<(VirtualServerKey, Option<Option<ServiceState>>)> =
            items.into_iter().collect();
        self.read_ahead(&mut items, now);
        let mut out = Vec::new();
        let mut pending: Vec<PreparedVs> = Vec::new();
        let mut pending_ops = 0usize;
        for (key, fresh) in items {
            if self.desired.virtual_servers().contains_key(&key) {
                self.known.insert(key);
            }
            let Some(prepared) = self.prepare_vs(key, now, fresh, report) else {
                continue;
            };
            pending_ops += prepared.operations.len();
            pending.push(prepared);
            if pending_ops >= MAX_BATCH_OPERATIONS {
                self.send_prepared(std::mem::take(&mut pending), report, &mut out);
                pending_ops = 0;
            }
        }
        self.send_prepared(pending, report, &mut out);
        out
    }

    /// Reads together the kernel's state of the items that need a read before planning
    /// (suspect, or a TCP real server leaves and its connection counts decide its drain), so
    /// that syncing many virtual servers costs a few system calls
    /// ([`Dataplane::services`]), not round trips each. If that read fails, each is read on
    /// its own by [`Self::prepare_vs`], which reports and retries its failure.
    fn read_ahead(
        &mut self,
        items: &mut [(VirtualServerKey, Option<Option<ServiceState>>)],
        now: Instant,
    ) {
        let wanted: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, (key, fresh))| fresh.is_none() && self.needs_read(key, now))
            .map(|(i, _)| i)
            .collect();
        if wanted.len() < 2 {
            return;
        }
        let keys: Vec<ServiceKey> = wanted
            .iter()
            .map(|&i| to_service_key(&items[i].0))
            .collect();
        match self.dataplane.services(&keys) {
            Ok(states) => {
                for (i, state) in wanted.into_iter().zip(states) {
                    items[i].1 = Some(state);
                }
            }
            Err(e) => {
                self.metrics.read_failures += 1;
                warn!(
                    virtual_servers = keys.len(),
                    error = %e,
                    "cannot read virtual servers together; reading each on its own"
                );
            }
        }
    }

    /// Whether planning `key` needs the kernel's state first (see [`Self::read_ahead`]).
    fn needs_read(&self, key: &VirtualServerKey, now: Instant) -> bool {
        self.suspect.contains(key)
            || self.needs_counts(key, self.desired.virtual_servers().get(key), now)
    }

    /// Sends the plans of `prepared` as one batch and finishes each virtual server with its
    /// own share of the results.
    fn send_prepared(
        &mut self,
        mut prepared: Vec<PreparedVs>,
        report: &mut SyncReport,
        out: &mut Vec<(VirtualServerKey, usize, bool)>,
    ) {
        let counts: Vec<usize> = prepared.iter().map(|p| p.operations.len()).collect();
        let ops: Vec<Operation> = prepared
            .iter_mut()
            .flat_map(|p| std::mem::take(&mut p.operations))
            .collect();
        let results = self.send_each(&ops, report);
        let mut results = results.into_iter();
        for (p, count) in prepared.into_iter().zip(counts) {
            // Every result of this share is consumed (no short-circuit), so the next share starts right.
            let ok = results.by_ref().take(count).filter(|ok| !ok).count() == 0;
            out.push((p.key, count, ok));
            self.finish_vs(p, ok);
        }
    }

    /// The first half of [`Self::reconcile_vs`]: reads what is needed and computes the plan.
    /// `None` when there is nothing to send and nothing to finish (the virtual server waits
    /// for its VIP, or could not be read and is scheduled for a retry).
    fn prepare_vs(
        &mut self,
        key: VirtualServerKey,
        now: Instant,
        fresh: Option<Option<ServiceState>>,
        report: &mut SyncReport,
    ) -> Option<PreparedVs> {
        let skey = to_service_key(&key);
        let desired = self.desired.virtual_servers().get(&key).cloned();
        let mut fresh = fresh;
        if fresh.is_none() && self.needs_read(&key, now) {
            match self.dataplane.service(&skey) {
                Ok(state) => fresh = Some(state),
                Err(e) => {
                    self.metrics.read_failures += 1;
                    self.schedule(Work::Vs(key), now);
                    warn!(
                        virtual_server = %key,
                        service = %self.owner(&key),
                        error = %e,
                        retry_in_ms = self.retry_in_ms(Work::Vs(key), now),
                        "cannot read virtual server; retrying"
                    );
                    report.errors.push(e.to_string());
                    return None;
                }
            }
        }
        if let Some(state) = &fresh {
            match state {
                Some(s) => {
                    self.view.insert(s.config.clone());
                }
                None => {
                    self.view.remove_service(&skey);
                }
            }
            self.suspect.remove(&key);
        }
        let counts = fresh.flatten();
        let have = self.view.get(&skey).cloned();
        // Bind before create: a virtual server off the dummy interface would not be
        // recognised as ours after a restart (see the ownership rule).
        if have.is_none() && desired.is_some() && self.vip_unbound(&key.addr) {
            self.block(key, now, report);
            return None;
        }
        self.blocked.remove(&key);
        let mut notes = Vec::new();
        let want = self.target(
            key,
            desired.as_ref(),
            have.as_ref(),
            counts.as_ref(),
            now,
            &mut notes,
        );
        let plan = diff_service(have.as_ref(), want.as_ref());
        Some(PreparedVs {
            key,
            operations: plan.into_operations(),
            notes,
            now,
        })
    }

    /// The second half of [`Self::reconcile_vs`], once the plan was sent (`ok`: every
    /// operation succeeded).
    fn finish_vs(&mut self, prepared: PreparedVs, ok: bool) {
        let PreparedVs {
            key, notes, now, ..
        } = prepared;
        if ok {
            self.clear_retry(Work::Vs(key));
        } else {
            self.suspect.insert(key);
            self.schedule(Work::Vs(key), now);
        }
        self.settle_drains(key, &notes);
        self.forget_finished_drains(key);
    }

    /// Counts and logs the drain decisions of one plan by what the view shows after it was
    /// sent: a drain has started once the real server is quiesced, and ended once it is
    /// deleted. A drain whose quiescing failed is forgotten, and decided again by the retry.
    fn settle_drains(&mut self, key: VirtualServerKey, notes: &[(DestinationKey, DrainNote)]) {
        let skey = to_service_key(&key);
        for (d, note) in notes {
            let in_view = self.view.destination(&skey, d);
            let real_server = SocketAddr::new(d.addr, d.port);
            match note {
                DrainNote::Started => {
                    if in_view.is_some_and(|x| x.weight == Weight::QUIESCED) {
                        self.metrics.drains_started += 1;
                        info!(
                            virtual_server = %key,
                            service = %self.owner(&key),
                            real_server = %real_server,
                            timeout_secs = self.config.drain_timeout.map(|t| t.as_secs()),
                            "drain started: real server quiesced (weight 0)"
                        );
                    } else {
                        self.clear_drain((key, d.addr, d.port));
                    }
                }
                DrainNote::Completed if in_view.is_none() => {
                    self.metrics.drains_completed += 1;
                    info!(
                        virtual_server = %key,
                        service = %self.owner(&key),
                        real_server = %real_server,
                        "drain completed: no connection left, real server deleted"
                    );
                }
                DrainNote::Expired(c) if in_view.is_none() => {
                    self.metrics.drains_expired += 1;
                    info!(
                        virtual_server = %key,
                        service = %self.owner(&key),
                        real_server = %real_server,
                        active = c.map(|c| c.active),
                        inactive = c.map(|c| c.inactive),
                        "drain expired: real server deleted at the deadline"
                    );
                }
                DrainNote::Completed | DrainNote::Expired(_) => {}
            }
        }
    }

    /// Sends operations; updates the view from each success. Returns whether all succeeded.
    fn send(&mut self, ops: &[Operation], report: &mut SyncReport) -> bool {
        self.send_each(ops, report).iter().all(|ok| *ok)
    }

    /// Sends operations; updates the view from each success. Returns, for each operation,
    /// whether it succeeded and the view could follow it.
    fn send_each(&mut self, ops: &[Operation], report: &mut SyncReport) -> Vec<bool> {
        if ops.is_empty() {
            return Vec::new();
        }
        report.operations += ops.len();
        if tracing::enabled!(Level::TRACE) {
            for op in ops {
                trace!(operation = %Describe(op), "IPVS operation");
            }
        }
        let results = match self.dataplane.apply(ops) {
            Err(e) => {
                self.metrics.operations_failed += ops.len() as u64;
                report.failed += ops.len();
                let first = ops.first().and_then(op_key);
                warn!(
                    operations = ops.len(),
                    virtual_server = first.map(|k| k.to_string()),
                    service = %first.map_or(Owner(None), |k| self.owner(&k)),
                    error = %e,
                    "IPVS batch failed: nothing known of its effect; retrying"
                );
                report.errors.push(e.to_string());
                return vec![false; ops.len()];
            }
            Ok(results) => results,
        };
        let mut out = Vec::with_capacity(ops.len());
        let mut failed = 0usize;
        for (op, result) in ops.iter().zip(results) {
            match result {
                Ok(()) => {
                    self.metrics.operations_applied += 1;
                    self.metrics.applied_by_kind.record(OperationKind::of(op));
                    self.note_known(op);
                    out.push(apply_to_view(&mut self.view, op));
                }
                Err(e) => {
                    failed += 1;
                    warn!(
                        operation = %Describe(op),
                        service = %op_key(op).map_or(Owner(None), |k| self.owner(&k)),
                        errno = e.errno,
                        error = %e,
                        "IPVS operation failed; retrying"
                    );
                    report.errors.push(e.to_string());
                    out.push(false);
                }
            }
        }
        if out.len() < ops.len() {
            let missing = ops.len() - out.len();
            failed += missing;
            warn!(
                answered = out.len(),
                sent = ops.len(),
                "the dataplane did not answer every IPVS operation; retrying the rest"
            );
            report.errors.push(format!(
                "the dataplane answered {} of {} IPVS operations",
                out.len(),
                ops.len()
            ));
            out.resize(ops.len(), false);
        }
        self.metrics.operations_failed += failed as u64;
        report.failed += failed;
        if tracing::enabled!(Level::DEBUG) {
            let count = |kind: OperationKind| ops.iter().filter(|op| kind.matches(op)).count();
            debug!(
                operations = ops.len(),
                failed,
                add_service = count(OperationKind::AddService),
                edit_service = count(OperationKind::EditService),
                delete_service = count(OperationKind::DeleteService),
                add_destination = count(OperationKind::AddDestination),
                edit_destination = count(OperationKind::EditDestination),
                delete_destination = count(OperationKind::DeleteDestination),
                "IPVS batch applied"
            );
        }
        out
    }

    /// What the kernel should hold for `key`: the desired virtual server plus the TCP real
    /// servers still draining (quiesced), or nothing.
    fn target(
        &mut self,
        key: VirtualServerKey,
        desired: Option<&VirtualServer>,
        have: Option<&ServiceConfig>,
        counts: Option<&ServiceState>,
        now: Instant,
        notes: &mut Vec<(DestinationKey, DrainNote)>,
    ) -> Option<ServiceConfig> {
        let vs = desired?;
        let mut want = ServiceConfig::new(ipvs_service(vs))
            .with_destinations(vs.real_servers.iter().map(ipvs_destination));
        let Some(have) = have else {
            return Some(want);
        };
        for d in have.destinations() {
            if want.contains_destination(&d.key()) || key.protocol != Protocol::Tcp {
                continue;
            }
            let dkey = (key, d.addr, d.port);
            let conns = counts.map(|s| s.connections(&d.key()));
            let record = self.drains.get(&dkey).copied();
            let keep = match (record, conns) {
                (_, Some(c)) if c.is_idle() => {
                    if record.is_some() {
                        notes.push((d.key(), DrainNote::Completed));
                    }
                    false
                }
                (Some(r), _) if r.deadline.is_some_and(|deadline| now >= deadline) => {
                    notes.push((d.key(), DrainNote::Expired(conns)));
                    false
                }
                (Some(r), Some(_)) => {
                    let next = at_most(now + self.config.drain_check_interval, r.deadline);
                    self.set_drain(
                        dkey,
                        Drain {
                            next_check: next,
                            ..r
                        },
                    );
                    true
                }
                (Some(_), None) => true,
                (None, _) if self.config.drain_timeout.is_some_and(|t| t.is_zero()) => false,
                (None, _) => {
                    // A timeout too large for the clock is no deadline.
                    let deadline = self
                        .config
                        .drain_timeout
                        .and_then(|timeout| now.checked_add(timeout));
                    let next_check = at_most(now + self.config.drain_check_interval, deadline);
                    self.set_drain(
                        dkey,
                        Drain {
                            deadline,
                            next_check,
                        },
                    );
                    notes.push((d.key(), DrainNote::Started));
                    true
                }
            };
            if keep {
                want.insert_destination(Destination {
                    weight: Weight::QUIESCED,
                    ..*d
                });
            }
        }
        Some(want)
    }

    /// Drops drain records of `key` that no longer describe a quiesced, undesired real server
    /// in the view (deleted, or desired again).
    fn forget_finished_drains(&mut self, key: VirtualServerKey) {
        let lo = (key, IpAddr::from([0u8; 4]), 0u16);
        let records: Vec<DrainKey> = self
            .drains
            .range(lo..)
            .take_while(|((k, _, _), _)| *k == key)
            .map(|(k, _)| *k)
            .collect();
        let skey = to_service_key(&key);
        let desired = self.desired.virtual_servers().get(&key);
        let finished: Vec<DrainKey> = records
            .into_iter()
            .filter(|(_, addr, port)| {
                let dk = DestinationKey {
                    addr: *addr,
                    port: *port,
                };
                let still = self.view.destination(&skey, &dk).is_some()
                    && desired.is_some_and(|vs| {
                        !vs.real_servers
                            .iter()
                            .any(|r| r.addr == *addr && r.port == *port)
                    });
                !still
            })
            .collect();
        for dkey in finished {
            self.clear_drain(dkey);
        }
    }
}

/// The most IPVS operations sent in one batch by a pass over many virtual servers: large
/// enough that a full pass of a big node costs a handful of system calls, small enough to
/// bound the memory of one batch (the kernel answers each with an ACK).
const MAX_BATCH_OPERATIONS: usize = 4096;

/// One virtual server's plan, computed and not yet sent.
#[derive(Debug)]
struct PreparedVs {
    key: VirtualServerKey,
    operations: Vec<Operation>,
    notes: Vec<(DestinationKey, DrainNote)>,
    now: Instant,
}

/// A drain decision of one plan, settled once the plan was sent.
#[derive(Debug, Clone, Copy)]
enum DrainNote {
    /// The real server is being quiesced.
    Started,
    /// Its connections reached zero: it is being deleted.
    Completed,
    /// The deadline passed: it is being deleted (with these counts, when read).
    Expired(Option<Connections>),
}

/// The Service of a virtual server in logs; `-` when no Service wants it (stale).
#[derive(Debug, Clone, Copy)]
struct Owner<'a>(Option<&'a ServiceRef>);

impl fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => fmt::Display::fmt(s, f),
            None => f.write_str("-"),
        }
    }
}

/// `t`, or `limit` when that comes first.
fn at_most(t: Instant, limit: Option<Instant>) -> Instant {
    limit.map_or(t, |limit| t.min(limit))
}

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

/// The virtual server an operation is about.
fn op_key(op: &Operation) -> Option<VirtualServerKey> {
    match op {
        Operation::AddService(s) | Operation::EditService(s) => from_service_key(&s.key),
        Operation::DeleteService(k)
        | Operation::AddDestination(k, _)
        | Operation::EditDestination(k, _)
        | Operation::DeleteDestination(k, _) => from_service_key(k),
        _ => None,
    }
}

/// Whether the desired virtual server has this destination.
fn desires(vs: &VirtualServer, d: &Destination) -> bool {
    vs.real_servers
        .iter()
        .any(|r| r.addr == d.addr && r.port == d.port)
}

/// Follows a successful operation in the view; `false` if the view could not (it did not
/// have the service), which makes the virtual server suspect.
fn apply_to_view(view: &mut Table, op: &Operation) -> bool {
    match op {
        Operation::AddService(s) => {
            view.insert(ServiceConfig::new(s.clone()));
        }
        Operation::EditService(s) => {
            view.insert_service(s.clone());
        }
        Operation::DeleteService(k) => {
            view.remove_service(k);
        }
        Operation::AddDestination(k, d) | Operation::EditDestination(k, d) => {
            return view.insert_destination(k, *d).is_ok();
        }
        Operation::DeleteDestination(k, d) => {
            view.remove_destination(k, d);
        }
        _ => {}
    }
    true
}

/// The IPVS service for a desired virtual server.
pub fn ipvs_service(vs: &VirtualServer) -> Service {
    let key: ServiceKey = to_service_key(&vs.key);
    let mut service = Service::new(key, ipvs_scheduler(vs.scheduler));
    service.persistence = vs.persistence.map(|p| IpvsPersistence {
        timeout_secs: p.timeout_seconds,
        netmask: PersistenceNetmask::host(key.family()),
    });
    service
}

/// The IPVS destination for a desired real server: masquerading (pods are reached through
/// NAT), no thresholds.
pub fn ipvs_destination(rs: &RealServer) -> Destination {
    let mut d = Destination::new(rs.addr, rs.port, Forwarding::Masquerade);
    d.weight = Weight::new(rs.weight).unwrap_or(Weight::MAX);
    d
}

/// The IPVS scheduler for a desired one (the `sh` and `mh` flags off).
pub fn ipvs_scheduler(s: Scheduler) -> IpvsScheduler {
    match s {
        Scheduler::Rr => IpvsScheduler::RoundRobin,
        Scheduler::Wrr => IpvsScheduler::WeightedRoundRobin,
        Scheduler::Lc => IpvsScheduler::LeastConnection,
        Scheduler::Wlc => IpvsScheduler::WeightedLeastConnection,
        Scheduler::Lblc => IpvsScheduler::LocalityBasedLeastConnection,
        Scheduler::Lblcr => IpvsScheduler::LocalityBasedLeastConnectionReplication,
        Scheduler::Dh => IpvsScheduler::DestinationHashing,
        Scheduler::Sh => IpvsScheduler::SourceHashing {
            fallback: false,
            port: false,
        },
        Scheduler::Sed => IpvsScheduler::ShortestExpectedDelay,
        Scheduler::Nq => IpvsScheduler::NeverQueue,
        Scheduler::Fo => IpvsScheduler::WeightedFailover,
        Scheduler::Ovf => IpvsScheduler::WeightedOverflow,
        Scheduler::Mh => IpvsScheduler::MaglevHashing {
            fallback: false,
            port: false,
        },
        Scheduler::Twos => IpvsScheduler::TwoChoice,
        Scheduler::None => IpvsScheduler::None,
    }
}

/// The table the desired state describes, for every virtual server (tests compare the
/// kernel's owned part against it).
pub fn desired_table(desired: &DesiredState) -> Table {
    desired
        .virtual_servers()
        .values()
        .map(|vs| {
            ServiceConfig::new(ipvs_service(vs))
                .with_destinations(vs.real_servers.iter().map(ipvs_destination))
        })
        .collect()
}

#[cfg(test)]
mod tests;
