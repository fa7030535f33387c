//! The reconciler: keeps the node's IPVS table, dummy interface and nftables table (see
//! [`netfilter`](crate::netfilter)) in line with the [`DesiredState`], incrementally, safely,
//! and without a state file.
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
//! in the [`SyncReport`], [`Metrics::blocked_on_vip`], [`Vips::blocked`]) and
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
//!   error, when it is retried), failed nftables transaction or read of the nftables table,
//!   virtual server not created for want of its VIP, sysctl that
//!   cannot be held, deletion of a virtual server that this process did not create and no
//!   Service asked for while it ran (with the ownership rule that made it ours);
//! - `info`: adoption of the node (owned, foreign and desired virtual servers, VIPs,
//!   drains, operations), drift repaired (virtual server, Service, operations), drains
//!   started, completed and expired (one event per real server, only when it happened:
//!   after the kernel accepted the change), sysctls written, cleanup;
//! - `debug`: each applied batch with its counts by kind, each address change, each nftables
//!   transaction (messages, set elements), each full pass's totals;
//! - `trace`: each IPVS operation, in `ipvsadm` notation.
//!
//! Nothing per real server is logged at `info` on the programming path: a batch is one
//! `debug` event, and its operations are formatted only when `trace` is enabled.
//!
//! # Where each concept lives
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | the [`Reconciler`], its inputs (desired-state updates) and accessors |
//! | `round.rs` | a round: one call's instant and report, over the state it borrows |
//! | `view.rs` | the view: what the kernel holds for the virtual servers we own, and which are suspect |
//! | `send.rs` | planning a virtual server from the view, sending plans in shared batches |
//! | `drains.rs` | graceful termination: which real servers drain, until when, and their ends |
//! | `vips.rs` | [`Vips`]: VIPs on the dummy interface, and virtual servers held back for want of one |
//! | `retries.rs` | failed work waiting for a retry, with its backoff |
//! | `timed.rs` | entries indexed by their time, for retries and drain checks |
//! | `due.rs` | what is due: [`Reconciler::next_wakeup`] and [`Reconciler::poll`] |
//! | `netfilter.rs` | the nftables table's sets kept in line, in one transaction per round |
//! | `conntrack.rs` | stale UDP flows deleted after their virtual servers changed |
//! | `full_pass.rs` | the full pass: at once ([`Reconciler::verify`]) or in slices (the sweep) |
//! | `quiet.rs` | when a pass in slices may skip reading the IPVS table (a quiet node) |
//! | `cleanup.rs` | [`Reconciler::cleanup`] |
//! | `sysctls.rs` | the sysctls held at every full pass |
//! | `report.rs` | [`SyncReport`] and the [`Metrics`] counters |
//! | `config.rs` | [`ReconcilerConfig`] |

mod cleanup;
pub mod config;
mod conntrack;
mod drains;
mod due;
mod full_pass;
mod netfilter;
mod quiet;
mod report;
mod retries;
mod round;
mod send;
mod sysctls;
mod timed;
mod view;
mod vips;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use ipvs::codec::Operation;
use ipvs::model::{Destination, DestinationKey, Protocol, ServiceKey, Weight};
use ipvs::table::{OperationKind, ServiceConfig, Table, diff_service};
use tracing::{Level, debug, info, trace, warn};

pub use config::{
    DEFAULT_DRAIN_CHECK_INTERVAL, DEFAULT_DRAIN_TIMEOUT, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
    ReconcilerConfig,
};
pub use drains::Drain;
pub use report::{Metrics, OperationCounts, SyncError, SyncReport};
pub use vips::Vips;

use drains::{DrainNote, Drains};
use full_pass::Sweep;
use retries::{Retries, Work};
use round::{Owner, Round, vip_owner};
#[cfg(test)]
use send::MAX_BATCH_OPERATIONS;
use send::desires;
use view::View;
use vips::vs_range;

use crate::dataplane::{
    Connections, Dataplane, DataplaneError, Describe, InterfaceRemoval, ServiceState,
};
use crate::desired::{Changes, DesiredState, ServiceDesired};
use crate::mapping::{from_service_key, service_config, to_service_key};
use crate::model::{ServiceRef, VirtualServer, VirtualServerKey};
use crate::netfilter::Elements;
use crate::ownership::Ownership;

/// One Service's new input for [`Reconciler::sync_services`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceUpdate {
    /// The Service's newly computed virtual servers (see
    /// [`compute_service`](crate::compute_service)).
    Set(ServiceDesired),
    /// The Service is gone, or no longer handled by this proxy.
    Remove(ServiceRef),
}

/// Keeps IPVS and the dummy interface in line with the desired state. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct Reconciler<D> {
    dataplane: D,
    config: ReconcilerConfig,
    desired: DesiredState,
    view: View,
    vips: Vips,
    drains: Drains,
    retries: Retries,
    /// What the nftables table's sets hold, as the last full pass read them and the
    /// transactions since changed them; `None` before the first or after a failure.
    netfilter: Option<Elements>,
    /// What the table was last found right at (see [`netfilter::Checked`]).
    netfilter_checked: Option<netfilter::Checked>,
    /// Whether a full pass has read the node and taken over what is ours.
    adopted: bool,
    /// The full pass in slices under way, if any.
    sweep: Option<Sweep>,
    /// Whether the next pass in slices may skip reading the IPVS table.
    quiet: quiet::Quiet,
    /// Moves with every desired state set without being programmed
    /// ([`Reconciler::set_desired`]).
    desired_version: u64,
    metrics: Metrics,
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
            view: View::default(),
            vips: Vips::default(),
            drains: Drains::default(),
            retries: Retries::default(),
            netfilter: None,
            netfilter_checked: None,
            adopted: false,
            sweep: None,
            quiet: quiet::Quiet::default(),
            desired_version: 0,
            metrics: Metrics::default(),
        }
    }

    /// Replaces the whole desired state without touching the node (at start-up, or after a
    /// full resync of the informers); the next [`Reconciler::verify`] programs it.
    pub fn set_desired(&mut self, desired: DesiredState) {
        self.desired = desired;
        self.desired_changed();
    }

    /// A desired state set without programming it: what was found right no longer holds,
    /// the nftables table and the IPVS table are read at the next pass.
    fn desired_changed(&mut self) {
        self.netfilter_checked = None;
        self.desired_version += 1;
    }

    /// The desired state.
    pub fn desired(&self) -> &DesiredState {
        &self.desired
    }

    /// What the reconciler believes the kernel holds for the virtual servers it owns.
    pub fn view(&self) -> &Table {
        &self.view.table
    }

    /// The VIPs bound on the dummy interface, the node's other addresses as the last full
    /// pass read them, and the virtual servers waiting for their VIP.
    pub fn vips(&self) -> &Vips {
        &self.vips
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

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The settings.
    pub fn config(&self) -> &ReconcilerConfig {
        &self.config
    }

    /// Whether a full pass has adopted the node: read what it holds and taken over the virtual
    /// servers and VIPs that are ours. Until then incremental work is deferred.
    pub fn is_adopted(&self) -> bool {
        self.adopted
    }

    /// How many pieces of work wait for a retry.
    pub fn pending_retries(&self) -> usize {
        self.retries.pending().len()
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
        // What the nftables table should hold may have changed in ways no commit shows (a
        // sync deferred until the adoption, a hairpin element left for the full pass). The
        // IPVS table is programmed here, and the view follows the kernel's answers: what
        // failed waits for a retry, which a pass reads whether it reads the rest or not.
        if !changes.virtual_servers.is_empty() || !changes.vips.is_empty() {
            self.netfilter_checked = None;
        }
        if !self.adopted {
            return SyncReport {
                deferred: true,
                ..SyncReport::default()
            };
        }
        let mut round = self.round(now);
        // The nftables sets first: a port a Service now defines is let through before its
        // virtual server exists (after, its first connections would meet the drop rule).
        round.sync_netfilter(&changes.vips, &changes.virtual_servers);
        // Bind before creating, delete before unbinding (see the ownership rule).
        let (bind, unbind): (Vec<IpAddr>, Vec<IpAddr>) = changes
            .vips
            .iter()
            .partition(|a| round.vips.wanted(round.desired, a));
        let (bound, missing): (Vec<IpAddr>, Vec<IpAddr>) =
            bind.iter().partition(|a| round.vips.bound.contains(a));
        for addr in bound {
            round.retries.clear(Work::Vip(addr));
        }
        round.bind_vips(missing);
        for addr in bind {
            round.unblock(addr);
        }
        let items = changes.virtual_servers.iter().map(|key| (*key, None));
        round.reconcile_many(items);
        for addr in unbind {
            round.reconcile_vip(addr);
        }
        round.clear_stale_udp_flows(&changes.virtual_servers);
        round.report
    }

    /// A round of work at `now` over the reconciler's state.
    fn round(&mut self, now: Instant) -> Round<'_, D> {
        Round {
            dataplane: &mut self.dataplane,
            config: &self.config,
            desired: &self.desired,
            view: &mut self.view,
            vips: &mut self.vips,
            drains: &mut self.drains,
            retries: &mut self.retries,
            netfilter: &mut self.netfilter,
            netfilter_checked: &mut self.netfilter_checked,
            metrics: &mut self.metrics,
            now,
            report: SyncReport::default(),
        }
    }
}

#[cfg(test)]
mod tests;
