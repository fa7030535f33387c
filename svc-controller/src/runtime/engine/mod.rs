//! The engine: the one loop that owns the [`Reconciler`] and the [`ObjectStore`].
//!
//! It runs on a thread of its own (the kernel dataplane blocks on netlink), reads
//! [`Message`]s from the sources, and:
//!
//! 1. **waits** until every source has delivered its complete initial state (a `Reset` of
//!    Services, of EndpointSlices and, with the Kubernetes source, of the Node). Until then it
//!    touches nothing: a daemon that cannot reach the API server leaves the table alone.
//!    The one exception is a node that holds nothing of ours (no virtual server the
//!    [ownership rule](crate::ownership) claims, no VIP): there is nothing to leave
//!    alone, so what has arrived is programmed at once (once the Node is known, when it is
//!    awaited). A first load delivered in parts (the manifests source) is then read and
//!    programmed at the same time, and a fresh node is complete soon after its last part;
//! 2. **adopts** the node: computes the whole desired state and runs one full pass, which
//!    changes nothing when the table is already right (a restart); after an early start, it
//!    programs what is left and the first full pass comes a period later;
//! 3. then **syncs incrementally**: each message marks the Services it touched; all messages
//!    waiting in the channel are taken before a sync, so a burst is programmed in one go, and
//!    syncs are at least [`EngineConfig::min_sync_period`] apart. Only the touched Services
//!    are recomputed and reprogrammed;
//! 4. runs the reconciler's due work (retries, drain checks) when
//!    [`Reconciler::next_wakeup`] says, and a full pass every [`EngineConfig::sync_period`]
//!    (less often on a table whose pass takes more than [`FULL_PASS_SHARE`] of that: see
//!    [`full_pass_period`]),
//!    which re-reads the node's addresses (NodePort virtual servers follow them) and repairs
//!    drift. The pass is a sweep in slices of [`SWEEP_SLICE`] virtual servers
//!    ([`Reconciler::start_sweep`]), spread over the first half of the period (each slice
//!    waits at least twice the previous one's work, so a pass takes at most half the engine
//!    while it runs), with incremental syncs run between slices: verifying a table of 100,000
//!    real servers never holds a change back for longer than one slice. Above
//!    [`DISCOVER_ALWAYS_BELOW`] virtual servers, only one pass in [`DISCOVER_EVERY`] dumps the
//!    kernel's whole service list to find leftovers nobody asked for (that dump's cost grows
//!    with the square of the table).
//!
//! A [`Message::Shutdown`] returns from [`Engine::run`] and leaves the table as it is: traffic
//! keeps flowing through a restart, and the next start adopts it with no change.
//!
//! The adoption and the early start live in `adoption`, the full passes' pacing in `pacing`;
//! what happens is reported to an [`Observer`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use foldhash::{HashMap, HashMapExt};
use k8s_openapi::api::core::v1::Node;
use tracing::{debug, error, info, warn};

use super::message::{Change, Message};
use super::observer::{EngineState, ObjectKind, Observer, SyncEnd, Work};
use super::store::{NodeFacts, ObjectStore, trigger_time};
use super::system::{release_free_memory, thread_cpu};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::ownership::Ownership;
use crate::reconcile::{Reconciler, ReconcilerConfig, ServiceUpdate, SyncReport};
use crate::{NodeInfo, Problem, ProxyConfig, ServiceRef};

mod adoption;
mod pacing;

pub use adoption::EARLY_SYNC_MAX;
use adoption::EarlyStart;
use pacing::SweepPace;
pub use pacing::{
    DISCOVER_ALWAYS_BELOW, DISCOVER_EVERY, FULL_PASS_SHARE, SWEEP_SLICE, full_pass_period,
};

/// The engine's settings, the reconciler's among them.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's name.
    pub node_name: String,
    /// How Services map to virtual servers. Its `node_port_range` is replaced by the
    /// reconciler's ([`Engine::new`]).
    pub proxy: ProxyConfig,
    /// How the table is kept in line: retries, drains, ownership, sysctls.
    pub reconciler: ReconcilerConfig,
    /// The interval of full passes.
    pub sync_period: Duration,
    /// The shortest interval between two incremental syncs.
    pub min_sync_period: Duration,
    /// Whether to wait for the Node object before adopting (the Kubernetes source sends it;
    /// the manifests source has none).
    pub wait_for_node: bool,
}

impl EngineConfig {
    /// The settings for node `node_name` with the defaults of a program that has no others:
    /// the default [`ProxyConfig`] and [`ReconcilerConfig`], a full pass every 30 seconds
    /// (kube-proxy's default), no minimum interval between syncs, and no Node object awaited.
    pub fn for_node(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            proxy: ProxyConfig::default(),
            reconciler: ReconcilerConfig::default(),
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::ZERO,
            wait_for_node: false,
        }
    }
}

/// Which sources have delivered their complete state.
#[derive(Debug, Default, Clone, Copy)]
struct Synced {
    services: bool,
    slices: bool,
    node: bool,
}

/// What [`Engine::handle`] asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Stop (leave the table as it is).
    Stop,
}

/// The loop's state. See the [module documentation](self).
#[derive(Debug)]
pub struct Engine<D> {
    reconciler: Reconciler<D>,
    store: ObjectStore,
    config: EngineConfig,
    node: NodeInfo,
    node_deleting: bool,
    synced: Synced,
    /// Where the engine is in its life: starting (and how), or adopted.
    phase: Phase,
    dirty: BTreeSet<ServiceRef>,
    /// The earliest trigger time of the slice changes waiting, by Service.
    triggers: HashMap<ServiceRef, SystemTime>,
    /// The problems last reported, by Service (only Services that have some).
    problems: HashMap<ServiceRef, Vec<Problem>>,
    last_sync: Option<Instant>,
    next_full: Option<Instant>,
    /// The full pass under way, if any.
    sweep: Option<SweepPace>,
    /// Full passes started.
    passes: u64,
    observer: Arc<dyn Observer>,
}

/// Where the engine is in its life (steps 1 and 2 of the [module documentation](self), then
/// the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the adoption: the sources' first states arrive.
    Starting {
        /// Whether the first load is programmed as it arrives.
        early: EarlyStart,
        /// When a failed adoption is tried again.
        retry_at: Option<Instant>,
    },
    /// Adopted: incremental syncs, retries and full passes.
    Running,
}

impl<D: Dataplane> Engine<D> {
    /// An engine over `dataplane`; nothing is touched until the sources have synced.
    ///
    /// The NodePort range of `config.proxy` is set to the reconciler's: the computation
    /// accepts exactly the NodePorts the ownership rule covers, or a NodePort it programmed
    /// outside the rule would leak when its Service goes while the daemon is down.
    pub fn new(dataplane: D, mut config: EngineConfig, observer: Arc<dyn Observer>) -> Self {
        config.proxy.node_port_range = config.reconciler.node_port_range.clone();
        let node = NodeInfo::new(config.node_name.clone());
        observer.health_check_addresses(health_check_addresses(&config.proxy, &node));
        // The reconciler owns its settings from here on (`Reconciler::config`): the engine
        // keeps no second copy to drift from them.
        let reconciler = Reconciler::new(dataplane, std::mem::take(&mut config.reconciler));
        Self {
            reconciler,
            store: ObjectStore::new(),
            node,
            config,
            node_deleting: false,
            synced: Synced::default(),
            phase: Phase::Starting {
                early: EarlyStart::Undecided,
                retry_at: None,
            },
            dirty: BTreeSet::new(),
            triggers: HashMap::new(),
            problems: HashMap::new(),
            last_sync: None,
            next_full: None,
            sweep: None,
            passes: 0,
            observer,
        }
    }

    /// The reconciler (to inspect it in tests).
    pub fn reconciler(&self) -> &Reconciler<D> {
        &self.reconciler
    }

    /// The dataplane (to inspect or tamper with it in tests and benchmarks).
    pub fn dataplane_mut(&mut self) -> &mut D {
        self.reconciler.dataplane_mut()
    }

    /// The node as the computation sees it.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Whether the node has been adopted: every source delivered its first state and the
    /// table holds it (what `/healthz` waits for). The reconciler may have taken the table
    /// over earlier, at an early start on a fresh node ([`Reconciler::is_adopted`]); the
    /// engine's adoption is the end of the start-up, its own is the first read of the node.
    pub fn is_adopted(&self) -> bool {
        self.phase == Phase::Running
    }

    /// How the first load is programmed, while starting.
    fn early(&self) -> Option<EarlyStart> {
        match self.phase {
            Phase::Starting { early, .. } => Some(early),
            Phase::Running => None,
        }
    }

    /// Whether a full pass is under way (it runs in slices, see step 4 of the
    /// [module documentation](self)).
    pub fn full_pass_running(&self) -> bool {
        self.sweep.is_some()
    }

    /// Services touched and not programmed yet.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    fn ready(&self) -> bool {
        self.synced.services
            && self.synced.slices
            && (self.synced.node || !self.config.wait_for_node)
    }

    /// Takes one message into the store. Cheap: the work is done by [`Engine::step`].
    pub fn handle(&mut self, message: Message, wall: SystemTime) -> Flow {
        let touched = match message {
            Message::Shutdown => return Flow::Stop,
            Message::Services(change) => {
                if matches!(change, Change::Reset(_) | Change::Synced) {
                    self.synced.services = true;
                }
                let (received, reset) = objects_in(&change);
                let touched = self.store.change_services(change);
                self.observer.received(
                    ObjectKind::Services,
                    received,
                    effective_changes(reset, &touched),
                );
                touched
            }
            Message::Slices(change) => {
                let (received, reset) = objects_in(&change);
                // Network programming latency is measured for live changes, as kube-proxy.
                let trigger = match &change {
                    Change::Applied(slice) | Change::Deleted(slice) if self.is_adopted() => {
                        trigger_time(slice)
                    }
                    Change::Reset(_) | Change::Synced => {
                        self.synced.slices = true;
                        None
                    }
                    _ => None,
                };
                let touched = self.store.change_slices(change);
                self.observer.received(
                    ObjectKind::EndpointSlices,
                    received,
                    effective_changes(reset, &touched),
                );
                if let Some(t) = trigger {
                    for service in &touched {
                        let entry = self.triggers.entry(service.clone()).or_insert(t);
                        *entry = (*entry).min(t);
                    }
                }
                touched
            }
            Message::Node(change) => {
                self.synced.node = true;
                self.set_node(change)
            }
        };
        if !touched.is_empty() {
            self.observer.queued(wall);
            self.dirty.extend(touched);
        }
        Flow::Continue
    }

    fn set_node(&mut self, change: Change<Node>) -> BTreeSet<ServiceRef> {
        let facts = match change {
            Change::Applied(node) => NodeFacts::of(&node),
            Change::Deleted(_) => NodeFacts::default(),
            Change::Reset(nodes) => nodes.first().map(NodeFacts::of).unwrap_or_default(),
            // Only sent for kinds delivered in parts; the Node never is.
            Change::Synced => return BTreeSet::new(),
        };
        if facts.deleting != self.node_deleting {
            self.node_deleting = facts.deleting;
            self.observer.node_deleting(facts.deleting);
            if facts.deleting {
                warn!(node = %self.node.name, "this node is being deleted: /healthz now fails");
            }
        }
        if facts.zone != self.node.zone {
            info!(node = %self.node.name, zone = ?facts.zone, "node zone changed");
            self.node.zone = facts.zone;
            return self.store.service_refs().cloned().collect();
        }
        BTreeSet::new()
    }

    /// Does the work that is due at `now`.
    pub fn step(&mut self, now: Instant, wall: SystemTime) {
        self.step_inner(now, wall);
        // Every change received has been programmed once no Service is left to program.
        if self.dirty.is_empty() {
            self.observer.caught_up();
        }
    }

    /// The work of [`Engine::step`].
    fn step_inner(&mut self, now: Instant, wall: SystemTime) {
        if let Phase::Starting { early, retry_at } = self.phase {
            let cpu = thread_cpu();
            if self.ready() && retry_at.is_none_or(|t| t <= now) {
                // What the first load's parsing freed, before the adoption allocates.
                release_free_memory();
                if matches!(early, EarlyStart::Fresh { .. }) {
                    self.finish_early_start(now, wall);
                } else {
                    self.adopt(now, wall);
                }
                if self.is_adopted() {
                    release_free_memory();
                }
                self.charge(Work::Adoption, cpu);
            } else if !self.ready() && !self.dirty.is_empty() && self.node_known() {
                self.early_step(now, wall);
                self.charge(Work::Adoption, cpu);
            }
            return;
        }
        let min_gap_passed = self
            .last_sync
            .is_none_or(|t| now >= t + self.config.min_sync_period);
        if !self.dirty.is_empty() && min_gap_passed {
            let cpu = thread_cpu();
            self.sync_dirty(now, wall);
            self.charge(Work::Sync, cpu);
        }
        if self.reconciler.next_wakeup().is_some_and(|t| t <= now) {
            let cpu = thread_cpu();
            let report = self.reconciler.poll(now);
            self.after(&report);
            self.charge(Work::Timers, cpu);
        }
        if self.sweep.as_ref().is_some_and(|p| p.next <= now) {
            let cpu = thread_cpu();
            self.sweep_slice(now, wall);
            self.charge(Work::FullPass, cpu);
        } else if self.sweep.is_none() && self.next_full.is_some_and(|t| t <= now) {
            let cpu = thread_cpu();
            self.start_full_pass(now, wall);
            self.charge(Work::FullPass, cpu);
        }
    }

    /// Adds the engine thread's CPU time since `since` (a [`thread_cpu`] reading) to `work`.
    fn charge(&self, work: Work, since: Duration) {
        self.observer
            .engine_cpu(work, thread_cpu().saturating_sub(since));
    }

    /// When [`Engine::step`] has work next (`None`: only a message can create work).
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Phase::Starting { early, retry_at } = self.phase {
            return if self.ready() {
                retry_at
            } else if !self.dirty.is_empty()
                && self.node_known()
                && !matches!(early, EarlyStart::No)
            {
                Some(Instant::now())
            } else {
                None
            };
        }
        let sync = (!self.dirty.is_empty()).then(|| {
            self.last_sync
                .map_or_else(Instant::now, |t| t + self.config.min_sync_period)
        });
        let full = match &self.sweep {
            Some(pace) => Some(pace.next),
            None => self.next_full,
        };
        [sync, self.reconciler.next_wakeup(), full]
            .into_iter()
            .flatten()
            .min()
    }

    /// Reads the node's addresses (see [`Self::node_addresses_read`]).
    fn refresh_node_addresses(&mut self) {
        match self.reconciler.dataplane_mut().node_addresses() {
            Ok(addresses) => self.node_addresses_read(addresses.into_iter().collect()),
            Err(e) => warn!(error = %e, "cannot read the node's addresses; keeping the last known"),
        }
    }

    /// Takes the node's addresses as just read; when they changed, every Service is
    /// recomputed.
    fn node_addresses_read(&mut self, addresses: Vec<std::net::IpAddr>) {
        if addresses != self.node.addresses {
            if self.is_adopted() {
                info!(addresses = ?addresses, "node addresses changed");
                self.dirty.extend(self.store.service_refs().cloned());
            }
            self.node.addresses = addresses;
            self.observer
                .health_check_addresses(health_check_addresses(&self.config.proxy, &self.node));
        }
    }

    fn sync_dirty(&mut self, now: Instant, wall: SystemTime) {
        let started = Instant::now();
        let cpu = thread_cpu();
        let dirty = std::mem::take(&mut self.dirty);
        let mut updates = Vec::with_capacity(dirty.len());
        let compute_started = Instant::now();
        let computed = self
            .store
            .compute_many(&dirty, &self.node, &self.config.proxy);
        for (service, desired) in dirty.iter().zip(computed) {
            self.observer
                .health_check(service, desired.as_ref().and_then(|d| d.health_check));
            match desired {
                Some(desired) => {
                    self.note_problems(service, &desired.problems);
                    updates.push(ServiceUpdate::Set(desired));
                }
                None => {
                    self.note_problems(service, &[]);
                    updates.push(ServiceUpdate::Remove(service.clone()));
                }
            }
        }
        let computed = compute_started.elapsed();
        let compute_cpu = thread_cpu().saturating_sub(cpu);
        // One sync for all: reads and operations of every touched Service go together.
        let total = self.reconciler.sync_services(updates, now);
        if let Phase::Starting {
            early:
                EarlyStart::Fresh {
                    compute,
                    operations,
                    ..
                },
            ..
        } = &mut self.phase
        {
            *compute += computed;
            *operations += total.operations;
        }
        self.last_sync = Some(now);
        debug!(
            services = dirty.len(),
            operations = total.operations,
            failed = total.failed,
            elapsed_us = started.elapsed().as_micros() as u64,
            compute_us = computed.as_micros() as u64,
            cpu_us = thread_cpu().saturating_sub(cpu).as_micros() as u64,
            compute_cpu_us = compute_cpu.as_micros() as u64,
            "synced"
        );
        let elapsed = started.elapsed();
        self.finish_sync(elapsed, wall + elapsed, &total, false);
        let done = SystemTime::now();
        for service in &dirty {
            if let Some(t) = self.triggers.remove(service) {
                self.observer
                    .programmed(done.duration_since(t).unwrap_or_default());
            }
        }
    }

    fn note_problems(&mut self, service: &ServiceRef, problems: &[Problem]) {
        let before = self.problems.get(service).map(Vec::as_slice).unwrap_or(&[]);
        if before == problems {
            return;
        }
        for problem in problems {
            if !before.contains(problem) {
                warn!(service = %service, %problem, "invalid Service input skipped");
            }
        }
        if problems.is_empty() {
            if self.problems.remove(service).is_some() {
                info!(service = %service, "Service input valid again");
            }
        } else {
            self.problems.insert(service.clone(), problems.to_vec());
        }
    }

    /// Records a sync that took `elapsed` of the engine's time and ended at `ended` (wall
    /// clock): kube-proxy's gauge and `/healthz` say when the last sync ended.
    fn finish_sync(
        &mut self,
        elapsed: Duration,
        ended: SystemTime,
        report: &SyncReport,
        full: bool,
    ) {
        self.observer.synced(SyncEnd {
            elapsed,
            ended,
            full,
            ok: report.is_ok(),
        });
        self.after(report);
    }

    /// Reports the state after any reconciler call.
    fn after(&mut self, _report: &SyncReport) {
        self.observer.state(&EngineState {
            reconciler: self.reconciler.metrics(),
            virtual_servers: self.reconciler.desired().virtual_servers().len(),
            draining: self.reconciler.draining().count(),
            services_invalid: self.problems.len(),
            no_local_endpoints: self.reconciler.desired().no_local_endpoints(),
        });
    }

    /// Runs until [`Message::Shutdown`] or until every sender is gone; returns the dataplane.
    pub fn run(mut self, messages: Receiver<Message>) -> D {
        loop {
            let message = match self.next_deadline() {
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    messages.recv_timeout(wait)
                }
                None => messages.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match message {
                Ok(message) => {
                    let mut flow = self.handle(message, SystemTime::now());
                    // Take everything already waiting: a burst becomes one sync.
                    while flow == Flow::Continue {
                        match messages.try_recv() {
                            Ok(message) => flow = self.handle(message, SystemTime::now()),
                            Err(_) => break,
                        }
                    }
                    if flow == Flow::Stop {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.step(Instant::now(), SystemTime::now());
        }
        info!("stopping; the IPVS table is left in place");
        self.reconciler.into_dataplane()
    }
}

/// How many objects a change delivers (kube-proxy counts each as a change received), and
/// whether it is a relist.
fn objects_in<K>(change: &Change<K>) -> (u64, bool) {
    match change {
        Change::Applied(_) | Change::Deleted(_) => (1, false),
        Change::Reset(objects) => (objects.len() as u64, true),
        Change::Synced => (0, false),
    }
}

/// How many pending changes a change received adds, given the Services it `touched`: one
/// if it changed anything (a slice that moves to another Service touches two), one per
/// Service a relist changed.
fn effective_changes(reset: bool, touched: &BTreeSet<ServiceRef>) -> i64 {
    match (reset, touched.is_empty()) {
        (_, true) => 0,
        (false, false) => 1,
        (true, false) => i64::try_from(touched.len()).unwrap_or(i64::MAX),
    }
}

/// Where the health checks listen: every address (`None`) unless `nodePortAddresses` narrows
/// the NodePorts to some node addresses, then those (as kube-proxy).
fn health_check_addresses(
    proxy: &ProxyConfig,
    node: &NodeInfo,
) -> Option<BTreeSet<std::net::IpAddr>> {
    (!proxy.node_port_cidrs.is_empty())
        .then(|| proxy.node_port_addresses(node).into_iter().collect())
}

#[cfg(test)]
mod tests;
