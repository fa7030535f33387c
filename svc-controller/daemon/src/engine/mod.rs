//! The engine: the one loop that owns the [`Reconciler`] and the [`ObjectStore`].
//!
//! It runs on a thread of its own (the kernel dataplane blocks on netlink), reads
//! [`Message`]s from the sources, and:
//!
//! 1. **waits** until every source has delivered its complete initial state (a `Reset` of
//!    Services, of EndpointSlices and, with the Kubernetes source, of the Node). Until then it
//!    touches nothing: a daemon that cannot reach the API server leaves the table alone.
//!    The one exception is a node that holds nothing of ours (no virtual server the
//!    [ownership rule](svc_controller::ownership) claims, no VIP): there is nothing to leave
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
//! The adoption and the early start live in `adoption`, the full passes' pacing in `full_pass`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use foldhash::{HashMap, HashMapExt};
use k8s_openapi::api::core::v1::Node;
use svc_controller::dataplane::{Dataplane, DataplaneError};
use svc_controller::ownership::Ownership;
use svc_controller::reconcile::{Reconciler, ReconcilerConfig, ServiceUpdate, SyncReport};
use svc_controller::{NodeInfo, Problem, ProxyConfig, ServiceRef};
use tracing::{debug, error, info, warn};

use crate::memory::release_free_memory;
use crate::service_health::ServiceHealthChecks;
use crate::source::Message;
use crate::store::{Change, NodeFacts, ObjectStore, trigger_time};
use crate::telemetry::{Health, Metrics};

mod adoption;
mod full_pass;

use adoption::EarlyStart;
use full_pass::SweepPace;
pub use full_pass::{
    DISCOVER_ALWAYS_BELOW, DISCOVER_EVERY, FULL_PASS_SHARE, SWEEP_SLICE, full_pass_period,
};

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's name.
    pub node_name: String,
    /// How Services map to virtual servers. Its `node_port_range` is replaced by the
    /// reconciler's ([`Engine::new`]).
    pub proxy: ProxyConfig,
    /// The interval of full passes.
    pub sync_period: Duration,
    /// The shortest interval between two incremental syncs.
    pub min_sync_period: Duration,
    /// Whether to wait for the Node object before adopting (the Kubernetes source sends it;
    /// the manifests source has none).
    pub wait_for_node: bool,
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
    adopted: bool,
    next_adoption: Option<Instant>,
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
    /// Programming the first load as it arrives (see step 1 of the module documentation).
    early: EarlyStart,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Each Service's health check, answered by [`crate::service_health::serve`].
    health_checks: Arc<ServiceHealthChecks>,
}

impl<D: Dataplane> Engine<D> {
    /// An engine over `dataplane`; nothing is touched until the sources have synced.
    ///
    /// The NodePort range of `config.proxy` is set to the reconciler's: the computation
    /// accepts exactly the NodePorts the ownership rule covers, or a NodePort it programmed
    /// outside the rule would leak when its Service goes while the daemon is down.
    pub fn new(
        dataplane: D,
        reconciler: ReconcilerConfig,
        mut config: EngineConfig,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Self {
        config.proxy.node_port_range = reconciler.node_port_range.clone();
        let node = NodeInfo::new(config.node_name.clone());
        let health_checks = Arc::new(ServiceHealthChecks::new());
        health_checks.set_addresses(health_check_addresses(&config.proxy, &node));
        Self {
            reconciler: Reconciler::new(dataplane, reconciler),
            store: ObjectStore::new(),
            node,
            config,
            node_deleting: false,
            synced: Synced::default(),
            adopted: false,
            next_adoption: None,
            dirty: BTreeSet::new(),
            triggers: HashMap::new(),
            problems: HashMap::new(),
            last_sync: None,
            next_full: None,
            sweep: None,
            passes: 0,
            early: EarlyStart::Undecided,
            metrics,
            health,
            health_checks,
        }
    }

    /// The Services' health checks as the engine computes them, for
    /// [`crate::service_health::serve`].
    pub fn health_checks(&self) -> Arc<ServiceHealthChecks> {
        self.health_checks.clone()
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

    /// Whether the node has been adopted (every source synced, first full pass done).
    pub fn is_adopted(&self) -> bool {
        self.adopted
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
                self.metrics.service_changes.inc_by(received);
                let touched = self.store.change_services(change);
                self.metrics
                    .service_changes_pending
                    .inc_by(effective_changes(reset, &touched));
                touched
            }
            Message::Slices(change) => {
                let (received, reset) = objects_in(&change);
                self.metrics.endpoint_changes.inc_by(received);
                // Network programming latency is measured for live changes, as kube-proxy.
                let trigger = match &change {
                    Change::Applied(slice) | Change::Deleted(slice) if self.adopted => {
                        trigger_time(slice)
                    }
                    Change::Reset(_) | Change::Synced => {
                        self.synced.slices = true;
                        None
                    }
                    _ => None,
                };
                let touched = self.store.change_slices(change);
                self.metrics
                    .endpoint_changes_pending
                    .inc_by(effective_changes(reset, &touched));
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
            self.health.queued(wall);
            self.metrics.last_queued.set(unix_seconds(wall));
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
            self.health.set_node_deleting(facts.deleting);
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
            self.metrics.service_changes_pending.set(0);
            self.metrics.endpoint_changes_pending.set(0);
        }
    }

    /// The work of [`Engine::step`].
    fn step_inner(&mut self, now: Instant, wall: SystemTime) {
        if !self.adopted {
            let cpu = thread_cpu();
            if self.ready() && self.next_adoption.is_none_or(|t| t <= now) {
                // What the first load's parsing freed, before the adoption allocates.
                release_free_memory();
                if matches!(self.early, EarlyStart::Fresh { .. }) {
                    self.finish_early_start(now, wall);
                } else {
                    self.adopt(now, wall);
                }
                if self.adopted {
                    release_free_memory();
                }
                self.charge("adoption", cpu);
            } else if !self.ready() && !self.dirty.is_empty() && self.node_known() {
                self.early_step(now, wall);
                self.charge("adoption", cpu);
            }
            return;
        }
        let min_gap_passed = self
            .last_sync
            .is_none_or(|t| now >= t + self.config.min_sync_period);
        if !self.dirty.is_empty() && min_gap_passed {
            let cpu = thread_cpu();
            self.sync_dirty(now, wall);
            self.charge("sync", cpu);
        }
        if self.reconciler.next_wakeup().is_some_and(|t| t <= now) {
            let cpu = thread_cpu();
            let report = self.reconciler.poll(now);
            self.after(&report);
            self.charge("timers", cpu);
        }
        if self.sweep.as_ref().is_some_and(|p| p.next <= now) {
            let cpu = thread_cpu();
            self.sweep_slice(now, wall);
            self.charge("full_pass", cpu);
        } else if self.sweep.is_none() && self.next_full.is_some_and(|t| t <= now) {
            let cpu = thread_cpu();
            self.start_full_pass(now, wall);
            self.charge("full_pass", cpu);
        }
    }

    /// Adds the engine thread's CPU time since `since` (a [`thread_cpu`] reading) to `work`.
    fn charge(&self, work: &str, since: Duration) {
        self.metrics
            .engine_cpu(work, thread_cpu().saturating_sub(since));
    }

    /// When [`Engine::step`] has work next (`None`: only a message can create work).
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.adopted {
            return if self.ready() {
                self.next_adoption
            } else if !self.dirty.is_empty()
                && self.node_known()
                && !matches!(self.early, EarlyStart::No)
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
            if self.adopted {
                info!(addresses = ?addresses, "node addresses changed");
                self.dirty.extend(self.store.service_refs().cloned());
            }
            self.node.addresses = addresses;
            self.health_checks
                .set_addresses(health_check_addresses(&self.config.proxy, &self.node));
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
            self.health_checks
                .set(service, desired.as_ref().and_then(|d| d.health_check));
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
        if let EarlyStart::Fresh {
            compute,
            operations,
            ..
        } = &mut self.early
            && !self.adopted
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
                let latency = done.duration_since(t).unwrap_or_default();
                self.metrics
                    .network_programming
                    .observe(latency.as_secs_f64());
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
        let elapsed = elapsed.as_secs_f64();
        self.metrics.sync_duration.observe(elapsed);
        if full {
            self.metrics.full_sync_duration.observe(elapsed);
        } else {
            self.metrics.partial_sync_duration.observe(elapsed);
        }
        if report.is_ok() {
            self.health.updated(ended);
            self.metrics.last_sync.set(unix_seconds(ended));
        }
        self.after(report);
    }

    /// Updates the gauges and counters after any reconciler call.
    fn after(&mut self, _report: &SyncReport) {
        self.metrics.record_reconciler(self.reconciler.metrics());
        self.metrics
            .virtual_servers
            .set(self.reconciler.desired().virtual_servers().len() as i64);
        self.metrics
            .draining
            .set(self.reconciler.draining().count() as i64);
        self.metrics
            .services_invalid
            .set(self.problems.len() as i64);
        let no_local = self.reconciler.desired().no_local_endpoints();
        self.metrics
            .set_no_local_endpoints(no_local.internal, no_local.external);
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

/// The CPU time the calling thread has used (zero if the clock cannot be read).
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
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
mod tests {
    use super::adoption::EARLY_SYNC_MAX;
    use super::full_pass::{FULL_PASS_RETRY, discovers, next_slice};
    use super::*;
    use crate::testing::{service, slice};
    use ipvs::table::OperationKind;
    use svc_controller::dataplane::MemoryDataplane;

    fn engine(wait_for_node: bool) -> Engine<MemoryDataplane> {
        engine_over(MemoryDataplane::new(), wait_for_node)
    }

    fn engine_over(dp: MemoryDataplane, wait_for_node: bool) -> Engine<MemoryDataplane> {
        Engine::new(
            dp,
            ReconcilerConfig::default(),
            EngineConfig {
                node_name: "node-a".into(),
                proxy: ProxyConfig::default(),
                sync_period: Duration::from_secs(30),
                min_sync_period: Duration::ZERO,
                wait_for_node,
            },
            Arc::new(Metrics::new(false)),
            Arc::new(Health::new(Duration::from_secs(60))),
        )
    }

    fn feed(e: &mut Engine<MemoryDataplane>, messages: Vec<Message>, now: Instant) {
        for m in messages {
            assert_eq!(e.handle(m, SystemTime::now()), Flow::Continue);
        }
        e.step(now, SystemTime::now());
    }

    fn initial() -> Vec<Message> {
        vec![
            Message::Services(Change::Reset(vec![
                service("ns", "a", "10.96.0.1"),
                service("ns", "b", "10.96.0.2"),
            ])),
            Message::Slices(Change::Reset(vec![
                slice("ns", "a-1", "a", &["10.1.0.1", "10.1.0.2"]),
                slice("ns", "b-1", "b", &["10.1.1.1"]),
            ])),
        ]
    }

    fn kinds(e: &Engine<MemoryDataplane>) -> Vec<OperationKind> {
        e.reconciler()
            .dataplane()
            .journal()
            .iter()
            .map(|j| OperationKind::of(&j.operation))
            .collect()
    }

    #[test]
    fn nothing_is_touched_before_every_source_synced() {
        let now = Instant::now();
        let mut e = engine(true);
        let mut msgs = initial();
        let slices = msgs.pop().unwrap();
        feed(&mut e, msgs, now);
        assert!(!e.is_adopted());
        assert_eq!(
            e.next_deadline(),
            None,
            "nothing to do until the slices come"
        );
        feed(&mut e, vec![slices], now);
        assert!(!e.is_adopted(), "the Node has not been listed yet");
        assert!(e.reconciler().dataplane().journal().is_empty());
        assert!(!e.health.healthz(SystemTime::now()).healthy, "not ready");
        assert!(e.health.livez(SystemTime::now()).healthy, "but alive");
        feed(&mut e, vec![Message::Node(Change::Reset(vec![]))], now);
        assert!(e.is_adopted());
        assert_eq!(e.reconciler().dataplane().table().len(), 2);
        assert!(e.health.healthz(SystemTime::now()).healthy);
    }

    #[test]
    fn a_change_programs_only_its_service() {
        let now = Instant::now();
        let mut e = engine(false);
        feed(&mut e, initial(), now);
        assert!(e.is_adopted());
        e.reconciler.dataplane_mut().clear_logs();
        feed(
            &mut e,
            vec![Message::Slices(Change::Applied(slice(
                "ns",
                "b-1",
                "b",
                &["10.1.1.1", "10.1.1.2"],
            )))],
            now,
        );
        assert_eq!(kinds(&e), [OperationKind::AddDestination]);
        assert_eq!(e.pending(), 0);
    }

    #[test]
    fn health_checks_follow_the_services() {
        let now = Instant::now();
        let mut e = engine(false);
        let checks = e.health_checks();
        let mut b = service("ns", "b", "10.96.0.2");
        if let Some(spec) = b.spec.as_mut() {
            spec.type_ = Some("LoadBalancer".into());
            spec.external_traffic_policy = Some("Local".into());
            spec.health_check_node_port = Some(32000);
        }
        let on = |node: &str, addrs: &[&str]| {
            let mut s = slice("ns", "b-1", "b", addrs);
            for ep in s.endpoints.iter_mut().flatten() {
                ep.node_name = Some(node.into());
            }
            s
        };
        let mut messages = initial();
        messages[0] = Message::Services(Change::Reset(vec![
            service("ns", "a", "10.96.0.1"),
            b.clone(),
        ]));
        messages[1] = Message::Slices(Change::Reset(vec![
            slice("ns", "a-1", "a", &["10.1.0.1"]),
            on("node-a", &["10.1.1.1", "10.1.1.2"]),
        ]));
        feed(&mut e, messages, now);
        assert!(e.is_adopted());
        let b_ref = ServiceRef::new("ns", "b");
        assert_eq!(
            checks.ports(),
            std::collections::BTreeMap::from([(32000, b_ref.clone())])
        );
        assert_eq!(checks.answer(32000, true).unwrap().local_endpoints, 2);
        // The endpoints move to another node: this one answers 503.
        let moved = on("node-b", &["10.1.1.1", "10.1.1.2"]);
        feed(&mut e, vec![Message::Slices(Change::Applied(moved))], now);
        let answer = checks.answer(32000, true).unwrap();
        assert_eq!(answer.local_endpoints, 0);
        assert_eq!(answer.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        // The Service goes: so does its health check.
        feed(&mut e, vec![Message::Services(Change::Deleted(b))], now);
        assert!(checks.ports().is_empty());
    }

    #[test]
    fn node_ports_are_checked_against_the_reconcilers_range() {
        let node_address = std::net::IpAddr::from([192, 168, 1, 10]);
        let dp = MemoryDataplane::new().with_node_addresses([node_address]);
        let mut e = Engine::new(
            dp,
            ReconcilerConfig {
                node_port_range: 40000..=40100,
                ..ReconcilerConfig::default()
            },
            EngineConfig {
                node_name: "node-a".into(),
                proxy: ProxyConfig::default(),
                sync_period: Duration::from_secs(30),
                min_sync_period: Duration::ZERO,
                wait_for_node: false,
            },
            Arc::new(Metrics::new(false)),
            Arc::new(Health::new(Duration::from_secs(60))),
        );
        let mut a = service("ns", "a", "10.96.0.1");
        if let Some(spec) = a.spec.as_mut() {
            spec.type_ = Some("NodePort".into());
            for (port, node_port) in spec.ports.iter_mut().flatten().zip([40001]) {
                port.node_port = Some(node_port);
            }
            // Inside the default range but outside the reconciler's: refused.
            spec.ports
                .get_or_insert_with(Vec::new)
                .push(k8s_openapi::api::core::v1::ServicePort {
                    name: Some("default-range".into()),
                    port: 81,
                    node_port: Some(30081),
                    ..Default::default()
                });
        }
        let mut messages = initial();
        messages[0] = Message::Services(Change::Reset(vec![a]));
        feed(&mut e, messages, Instant::now());
        assert!(e.is_adopted());
        let node_ports: Vec<u16> = e
            .reconciler()
            .dataplane()
            .table()
            .keys()
            .filter_map(|k| svc_controller::mapping::from_service_key(&k))
            .filter(|k| k.addr == node_address)
            .map(|k| k.port)
            .collect();
        assert_eq!(node_ports, [40001]);
    }

    #[test]
    fn health_checks_listen_on_the_node_port_addresses_when_narrowed() {
        let node = |last: u8| std::net::IpAddr::from([192, 168, 1, last]);
        let other = std::net::IpAddr::from([10, 0, 0, 7]);
        let narrowed = |cidrs: &[&str]| {
            let dp = MemoryDataplane::new().with_node_addresses([node(10), other]);
            let mut e = engine_over(dp, false);
            e.config.proxy.node_port_cidrs = cidrs.iter().map(|c| c.parse().unwrap()).collect();
            let before = health_check_addresses(&e.config.proxy, &e.node);
            feed(&mut e, initial(), Instant::now());
            (before, e)
        };
        // Every address by default.
        let (_, e) = narrowed(&[]);
        assert_eq!(e.health_checks().addresses(), None);
        // Narrowed: nothing until the node's addresses are read, then the matching ones, and
        // they follow the node.
        let (before, mut e) = narrowed(&["192.168.0.0/16"]);
        assert_eq!(before, Some(BTreeSet::new()));
        assert_eq!(
            e.health_checks().addresses(),
            Some(BTreeSet::from([node(10)]))
        );
        e.dataplane_mut().set_node_addresses([node(11), other]);
        let later = Instant::now() + Duration::from_secs(30);
        e.step(later, SystemTime::now());
        assert_eq!(
            e.health_checks().addresses(),
            Some(BTreeSet::from([node(11)]))
        );
    }

    #[test]
    fn a_restart_with_the_same_input_changes_nothing() {
        let now = Instant::now();
        let mut e = engine(false);
        feed(&mut e, initial(), now);
        let mut dp = e.reconciler.into_dataplane();
        dp.clear_logs();
        let mut e = engine_over(dp, false);
        feed(&mut e, initial(), now);
        assert!(e.is_adopted());
        assert!(kinds(&e).is_empty(), "{:?}", kinds(&e));
    }

    #[test]
    fn a_relist_applies_what_was_missed_and_nothing_else() {
        let now = Instant::now();
        let mut e = engine(false);
        feed(&mut e, initial(), now);
        e.reconciler.dataplane_mut().clear_logs();
        // The watch was lost; meanwhile b was deleted. The relist says so.
        feed(
            &mut e,
            vec![
                Message::Services(Change::Reset(vec![service("ns", "a", "10.96.0.1")])),
                Message::Slices(Change::Reset(vec![slice(
                    "ns",
                    "a-1",
                    "a",
                    &["10.1.0.1", "10.1.0.2"],
                )])),
            ],
            now,
        );
        assert_eq!(kinds(&e), [OperationKind::DeleteService]);
        assert_eq!(e.reconciler().dataplane().table().len(), 1);
    }

    #[test]
    fn syncs_respect_the_minimum_interval_and_coalesce() {
        let t0 = Instant::now();
        let mut e = engine(false);
        e.config.min_sync_period = Duration::from_secs(1);
        feed(&mut e, initial(), t0);
        e.reconciler.dataplane_mut().clear_logs();
        let flip =
            |addrs: &[&str]| Message::Slices(Change::Applied(slice("ns", "b-1", "b", addrs)));
        feed(&mut e, vec![flip(&["10.1.1.1", "10.1.1.2"])], t0);
        assert!(kinds(&e).is_empty(), "too soon after the adoption");
        assert_eq!(e.next_deadline(), Some(t0 + Duration::from_secs(1)));
        feed(
            &mut e,
            vec![flip(&["10.1.1.1", "10.1.1.3"])],
            t0 + Duration::from_millis(500),
        );
        e.step(t0 + Duration::from_secs(1), SystemTime::now());
        // Both changes in one sync: the table goes straight to the last state.
        assert_eq!(kinds(&e), [OperationKind::AddDestination]);
    }

    #[test]
    fn invalid_services_are_counted_and_others_work() {
        let now = Instant::now();
        let mut e = engine(false);
        let mut bad = service("ns", "bad", "10.96.0.9");
        bad.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 0;
        let mut msgs = initial();
        if let Message::Services(Change::Reset(v)) = &mut msgs[0] {
            v.push(bad);
        }
        feed(&mut e, msgs, now);
        assert_eq!(e.reconciler().dataplane().table().len(), 2);
        assert_eq!(e.metrics.services_invalid.get(), 1);
        feed(
            &mut e,
            vec![Message::Services(Change::Applied(service(
                "ns",
                "bad",
                "10.96.0.9",
            )))],
            now,
        );
        assert_eq!(e.metrics.services_invalid.get(), 0);
        assert_eq!(e.reconciler().dataplane().table().len(), 3);
    }

    #[test]
    fn network_programming_latency_is_measured_from_the_trigger_time() {
        let now = Instant::now();
        let mut e = engine(false);
        feed(&mut e, initial(), now);
        let mut s = slice("ns", "b-1", "b", &["10.1.1.1", "10.1.1.2"]);
        let trigger = SystemTime::now() - Duration::from_secs(3);
        s.metadata.annotations = Some(std::collections::BTreeMap::from([(
            crate::store::TRIGGER_TIME_ANNOTATION.into(),
            humantime::format_rfc3339(trigger).to_string(),
        )]));
        feed(&mut e, vec![Message::Slices(Change::Applied(s))], now);
        let text = e.metrics.encode().unwrap();
        assert!(
            text.contains("kubeproxy_network_programming_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"2.0\"} 0"),
            "{text}"
        );
    }

    /// The value of `series` in the engine's metrics (0 when absent, as a counter not yet
    /// created).
    fn sample(e: &Engine<MemoryDataplane>, series: &str) -> f64 {
        e.metrics.sample(series).unwrap_or(0.0)
    }

    const SERVICE_TOTAL: &str = "kubeproxy_sync_proxy_rules_service_changes_total";
    const SERVICE_PENDING: &str = "kubeproxy_sync_proxy_rules_service_changes_pending";
    const ENDPOINT_TOTAL: &str = "kubeproxy_sync_proxy_rules_endpoint_changes_total";
    const ENDPOINT_PENDING: &str = "kubeproxy_sync_proxy_rules_endpoint_changes_pending";

    #[test]
    fn changes_are_counted_and_pending_until_synced() {
        let now = Instant::now();
        let mut e = engine(false);
        for m in initial() {
            e.handle(m, SystemTime::now());
        }
        // The first lists: two Services, two slices, all new.
        assert_eq!(sample(&e, SERVICE_TOTAL), 2.0);
        assert_eq!(sample(&e, SERVICE_PENDING), 2.0);
        assert_eq!(sample(&e, ENDPOINT_TOTAL), 2.0);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 2.0);
        e.step(now, SystemTime::now());
        assert!(e.is_adopted());
        assert_eq!(sample(&e, SERVICE_PENDING), 0.0);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 0.0);

        // A slice that changes, then the same slice again (no change): both received, one
        // pending.
        let b = slice("ns", "b-1", "b", &["10.1.1.1", "10.1.1.2"]);
        e.handle(
            Message::Slices(Change::Applied(b.clone())),
            SystemTime::now(),
        );
        e.handle(Message::Slices(Change::Applied(b)), SystemTime::now());
        assert_eq!(sample(&e, ENDPOINT_TOTAL), 4.0);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 1.0);
        // A Service that changes, and one deleted.
        e.handle(
            Message::Services(Change::Applied(service("ns", "a", "10.96.0.9"))),
            SystemTime::now(),
        );
        e.handle(
            Message::Services(Change::Deleted(service("ns", "b", "10.96.0.2"))),
            SystemTime::now(),
        );
        assert_eq!(sample(&e, SERVICE_TOTAL), 4.0);
        assert_eq!(sample(&e, SERVICE_PENDING), 2.0);
        e.step(now, SystemTime::now());
        assert_eq!(sample(&e, SERVICE_PENDING), 0.0);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 0.0);
        assert_eq!(sample(&e, SERVICE_TOTAL), 4.0, "totals only grow");
        assert_eq!(sample(&e, ENDPOINT_TOTAL), 4.0);
    }

    #[test]
    fn changes_stay_pending_while_the_sync_waits() {
        let now = Instant::now();
        let mut e = engine(false);
        e.config.min_sync_period = Duration::from_secs(1);
        feed(&mut e, initial(), now);
        let b = slice("ns", "b-1", "b", &["10.1.1.1", "10.1.1.2"]);
        // Within the minimum interval since the adoption's sync: nothing is programmed yet.
        feed(&mut e, vec![Message::Slices(Change::Applied(b))], now);
        assert_eq!(e.pending(), 1);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 1.0);
        e.step(now + Duration::from_secs(1), SystemTime::now());
        assert_eq!(e.pending(), 0);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 0.0);
    }

    #[test]
    fn relists_count_each_object_and_each_service_they_change() {
        let now = Instant::now();
        let mut e = engine(false);
        feed(&mut e, initial(), now);
        // The same two Services and slices, one slice changed.
        let relist = Message::Slices(Change::Reset(vec![
            slice("ns", "a-1", "a", &["10.1.0.1", "10.1.0.2"]),
            slice("ns", "b-1", "b", &["10.1.1.9"]),
        ]));
        e.handle(relist, SystemTime::now());
        assert_eq!(sample(&e, ENDPOINT_TOTAL), 4.0);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 1.0);
    }

    #[test]
    fn syncs_are_partial_or_full() {
        let now = Instant::now();
        let mut e = engine(false);
        feed(&mut e, initial(), now);
        let count = |e: &Engine<MemoryDataplane>, name: &str| sample(e, &format!("{name}_count"));
        const ALL: &str = "kubeproxy_sync_proxy_rules_duration_seconds";
        const PARTIAL: &str = "kubeproxy_sync_partial_proxy_rules_duration_seconds";
        const FULL: &str = "kubeproxy_sync_full_proxy_rules_duration_seconds";
        // The adoption is a full sync.
        assert_eq!(
            (count(&e, ALL), count(&e, PARTIAL), count(&e, FULL)),
            (1.0, 0.0, 1.0)
        );
        let b = slice("ns", "b-1", "b", &["10.1.1.1", "10.1.1.2"]);
        feed(&mut e, vec![Message::Slices(Change::Applied(b))], now);
        assert_eq!(
            (count(&e, ALL), count(&e, PARTIAL), count(&e, FULL)),
            (2.0, 1.0, 1.0)
        );
        // A full pass (its slices end at once on this small table).
        let later = now + Duration::from_secs(30);
        e.step(later, SystemTime::now());
        while e.full_pass_running() {
            e.step(e.next_deadline().unwrap_or(later), SystemTime::now());
        }
        assert_eq!(
            (count(&e, ALL), count(&e, PARTIAL), count(&e, FULL)),
            (3.0, 1.0, 2.0)
        );
    }

    #[test]
    fn local_policies_without_local_endpoints_are_counted() {
        const INTERNAL: &str =
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"}";
        const EXTERNAL: &str =
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"}";
        let now = Instant::now();
        let mut e = engine(false);
        // a: internalTrafficPolicy Local. b: an external IP, externalTrafficPolicy Local.
        // c: both Local, but no endpoint anywhere (refused whatever the policy: not counted).
        let mut a = service("ns", "a", "10.96.0.1");
        let mut b = service("ns", "b", "10.96.0.2");
        let mut c = service("ns", "c", "10.96.0.3");
        if let Some(spec) = a.spec.as_mut() {
            spec.internal_traffic_policy = Some("Local".into());
        }
        for svc in [&mut b, &mut c] {
            if let Some(spec) = svc.spec.as_mut() {
                spec.external_ips = Some(vec!["203.0.113.7".into()]);
                spec.external_traffic_policy = Some("Local".into());
                spec.internal_traffic_policy = Some("Local".into());
            }
        }
        if let Some(spec) = b.spec.as_mut() {
            spec.internal_traffic_policy = None;
            spec.external_ips = Some(vec!["203.0.113.8".into()]);
        }
        let on = |svc: &str, node: &str| {
            let mut s = slice("ns", &format!("{svc}-1"), svc, &["10.1.0.1"]);
            for ep in s.endpoints.iter_mut().flatten() {
                ep.node_name = Some(node.into());
            }
            s
        };
        let messages = vec![
            Message::Services(Change::Reset(vec![a, b, c])),
            Message::Slices(Change::Reset(vec![on("a", "node-b"), on("b", "node-b")])),
        ];
        feed(&mut e, messages, now);
        assert!(e.is_adopted());
        assert_eq!(sample(&e, INTERNAL), 1.0);
        assert_eq!(sample(&e, EXTERNAL), 1.0);
        // An endpoint comes to this node: a has one.
        feed(
            &mut e,
            vec![Message::Slices(Change::Applied(on("a", "node-a")))],
            now,
        );
        assert_eq!(sample(&e, INTERNAL), 0.0);
        assert_eq!(sample(&e, EXTERNAL), 1.0);
        // b goes.
        feed(
            &mut e,
            vec![Message::Services(Change::Deleted(service(
                "ns",
                "b",
                "10.96.0.2",
            )))],
            now,
        );
        assert_eq!(sample(&e, EXTERNAL), 0.0);
    }

    #[test]
    fn node_deletion_fails_healthz_and_zone_changes_recompute() {
        let now = Instant::now();
        let mut e = engine(true);
        let mut msgs = initial();
        msgs.push(Message::Node(Change::Reset(vec![Node::default()])));
        feed(&mut e, msgs, now);
        assert!(e.health.healthz(SystemTime::now()).healthy);
        let mut node = Node::default();
        node.metadata.labels = Some(std::collections::BTreeMap::from([(
            crate::store::ZONE_LABEL.into(),
            "zone-b".into(),
        )]));
        node.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert_eq!(
            e.handle(Message::Node(Change::Applied(node)), SystemTime::now()),
            Flow::Continue
        );
        assert_eq!(e.node().zone.as_deref(), Some("zone-b"));
        assert_eq!(
            e.pending(),
            2,
            "every Service is recomputed for the new zone"
        );
        assert!(!e.health.healthz(SystemTime::now()).healthy);
        assert!(e.health.livez(SystemTime::now()).healthy);
    }

    #[test]
    fn shutdown_stops_and_leaves_the_table() {
        let (tx, rx) = std::sync::mpsc::channel();
        for m in initial() {
            tx.send(m).unwrap();
        }
        tx.send(Message::Shutdown).unwrap();
        let e = engine(false);
        let dp = e.run(rx);
        // The initial messages and the shutdown arrived together: the loop stops before
        // adopting, and whatever was in the kernel stays.
        assert!(dp.journal().is_empty());
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || engine(false).run(rx));
        for m in initial() {
            tx.send(m).unwrap();
        }
        // Wait until adopted: the table has both virtual servers.
        std::thread::sleep(Duration::from_millis(200));
        tx.send(Message::Shutdown).unwrap();
        let dp = handle.join().unwrap();
        assert_eq!(dp.table().len(), 2, "the table stays after a shutdown");
    }
    #[test]
    fn the_full_pass_runs_in_slices_and_changes_go_between_them() {
        let t0 = Instant::now();
        let mut e = engine(false);
        let count = SWEEP_SLICE * 2 + 10;
        let services = (0..count)
            .map(|i| {
                service(
                    "ns",
                    &format!("s{i}"),
                    &format!("10.96.{}.{}", i / 200, i % 200 + 1),
                )
            })
            .collect();
        let slices = (0..count)
            .map(|i| slice("ns", &format!("s{i}-1"), &format!("s{i}"), &["10.1.0.1"]))
            .collect();
        feed(
            &mut e,
            vec![
                Message::Services(Change::Reset(services)),
                Message::Slices(Change::Reset(slices)),
            ],
            t0,
        );
        assert!(e.is_adopted());
        assert_eq!(e.next_deadline(), Some(t0 + Duration::from_secs(30)));
        // Drift behind our back: the last virtual server is deleted.
        let last =
            ipvs::model::ServiceKey::tcp("10.96.2.122".parse::<std::net::Ipv4Addr>().unwrap(), 80);
        e.reconciler
            .dataplane_mut()
            .tamper(|t| {
                assert!(t.remove_service(&last).is_some());
            })
            .unwrap();
        e.reconciler.dataplane_mut().clear_logs();

        // The pass starts with its first slice, the next ones are spread over 15 s.
        let t1 = t0 + Duration::from_secs(30);
        e.step(t1, SystemTime::now());
        assert!(e.full_pass_running());
        assert_eq!(e.next_deadline(), Some(t1 + Duration::from_secs(5)));
        // A change between slices is programmed at once.
        feed(
            &mut e,
            vec![Message::Slices(Change::Applied(slice(
                "ns",
                "s0-1",
                "s0",
                &["10.1.0.1", "10.1.0.2"],
            )))],
            t1 + Duration::from_millis(1),
        );
        assert_eq!(kinds(&e), [OperationKind::AddDestination]);
        assert!(e.full_pass_running());
        // The later slices: the missing virtual server comes back.
        e.step(t1 + Duration::from_secs(5), SystemTime::now());
        assert!(e.full_pass_running());
        e.step(t1 + Duration::from_secs(10), SystemTime::now());
        assert!(!e.full_pass_running());
        assert_eq!(
            kinds(&e),
            [
                OperationKind::AddDestination,
                OperationKind::AddService,
                OperationKind::AddDestination
            ]
        );
        assert!(e.reconciler().dataplane().table().get(&last).is_some());
        // The next pass is one period after this one started.
        assert_eq!(e.next_deadline(), Some(t1 + Duration::from_secs(30)));
    }

    #[test]
    fn full_passes_of_a_large_table_take_a_bounded_share_of_the_engine() {
        let period = Duration::from_secs(30);
        // A quick pass: the configured period.
        assert_eq!(full_pass_period(period, Duration::from_secs(2)), period);
        assert_eq!(full_pass_period(period, Duration::ZERO), period);
        // A pass that took 20 s of work: the next one 80 s after its start.
        assert_eq!(
            full_pass_period(period, Duration::from_secs(20)),
            Duration::from_secs(80)
        );
        // Slices: the planned interval, unless the last one took more than half of it.
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(next_slice(t, ms(60), ms(10)), t + ms(60));
        assert_eq!(next_slice(t, ms(60), ms(100)), t + ms(200));
    }

    #[test]
    fn a_full_pass_that_cannot_read_the_node_is_tried_again() {
        let t0 = Instant::now();
        let mut e = engine(false);
        feed(&mut e, initial(), t0);
        e.reconciler.dataplane_mut().fail_listings(1);
        let t1 = t0 + Duration::from_secs(30);
        e.step(t1, SystemTime::now());
        assert!(!e.full_pass_running());
        assert_eq!(e.next_deadline(), Some(t1 + FULL_PASS_RETRY));
        e.step(t1 + FULL_PASS_RETRY, SystemTime::now());
        assert!(!e.full_pass_running(), "one slice covers this small table");
        assert_eq!(
            e.next_deadline(),
            Some(t1 + FULL_PASS_RETRY + Duration::from_secs(30))
        );
    }
    /// The first load of [`initial`] in two parts, as the manifests source streams it: the
    /// Services and the first slice, then the second slice.
    fn first_load_in_parts() -> (Vec<Message>, Vec<Message>) {
        (
            vec![
                Message::Services(Change::Applied(service("ns", "a", "10.96.0.1"))),
                Message::Slices(Change::Applied(slice(
                    "ns",
                    "a-1",
                    "a",
                    &["10.1.0.1", "10.1.0.2"],
                ))),
                Message::Services(Change::Applied(service("ns", "b", "10.96.0.2"))),
                Message::Services(Change::Synced),
            ],
            vec![
                Message::Slices(Change::Applied(slice("ns", "b-1", "b", &["10.1.1.1"]))),
                Message::Slices(Change::Synced),
            ],
        )
    }

    /// The kernel table an engine fed [`initial`] at once programs.
    fn table_of_initial() -> ipvs::table::Table {
        let mut e = engine(false);
        feed(&mut e, initial(), Instant::now());
        e.reconciler().dataplane().table().clone()
    }

    #[test]
    fn a_first_load_in_parts_on_a_fresh_node_is_programmed_as_it_arrives() {
        let now = Instant::now();
        let mut e = engine(true);
        let (first, rest) = first_load_in_parts();
        feed(&mut e, first, now);
        assert!(
            e.reconciler().dataplane().journal().is_empty(),
            "nothing before the Node is known"
        );
        feed(&mut e, vec![Message::Node(Change::Reset(vec![]))], now);
        assert!(!e.is_adopted(), "the slices are not all in");
        let table = e.reconciler().dataplane().table();
        assert_eq!(table.len(), 2, "both Services programmed early");
        let destinations = |vip: &str| {
            table
                .iter()
                .find(|s| s.key().to_string().contains(vip))
                .map(|s| s.destinations().len())
        };
        assert_eq!(destinations("10.96.0.1"), Some(2));
        assert_eq!(destinations("10.96.0.2"), Some(0), "its slice comes later");
        assert_eq!(e.pending(), 0);

        feed(&mut e, rest, now);
        assert!(e.is_adopted());
        assert_eq!(e.pending(), 0);
        assert_eq!(e.reconciler().dataplane().table(), table_of_initial());
        // The first full pass (a period later) finds nothing to repair.
        e.reconciler.dataplane_mut().clear_logs();
        let later = now + Duration::from_secs(30);
        for i in 0..100 {
            e.step(later + Duration::from_secs(i), SystemTime::now());
        }
        assert!(!e.full_pass_running());
        assert!(kinds(&e).is_empty(), "{:?}", kinds(&e));
    }

    #[test]
    fn an_early_start_programs_a_bounded_share_per_step() {
        let now = Instant::now();
        let mut e = engine(false);
        let total = EARLY_SYNC_MAX + 6;
        for i in 0..total {
            let vip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
            let message = Message::Services(Change::Applied(service("ns", &format!("s{i}"), &vip)));
            assert_eq!(e.handle(message, SystemTime::now()), Flow::Continue);
        }
        e.step(now, SystemTime::now());
        assert_eq!(e.pending(), 6);
        // Changes stay pending until every Service they touched is programmed.
        assert_eq!(sample(&e, SERVICE_PENDING), total as f64);
        assert_eq!(e.reconciler().dataplane().table().len(), EARLY_SYNC_MAX);
        assert_eq!(e.next_deadline().map(|t| t <= Instant::now()), Some(true));
        e.step(now, SystemTime::now());
        assert_eq!(e.pending(), 0);
        assert_eq!(sample(&e, SERVICE_PENDING), 0.0);
        assert_eq!(e.reconciler().dataplane().table().len(), total);
        assert!(!e.is_adopted());
    }

    #[test]
    fn a_first_load_in_parts_on_a_node_with_our_state_waits_for_the_adoption() {
        let now = Instant::now();
        // A node that ran the daemon before: Service c is gone from the input since.
        let mut e = engine(false);
        let mut before = initial();
        before.push(Message::Services(Change::Applied(service(
            "ns",
            "c",
            "10.96.0.3",
        ))));
        feed(&mut e, before, now);
        assert_eq!(e.reconciler().dataplane().table().len(), 3);
        let mut dp = e.reconciler.into_dataplane();
        dp.clear_logs();

        let mut e = engine_over(dp, false);
        let (first, rest) = first_load_in_parts();
        feed(&mut e, first, now);
        assert!(!e.is_adopted(), "the slices are not all in");
        assert!(
            e.reconciler().dataplane().journal().is_empty(),
            "{:?}",
            kinds(&e)
        );
        assert_eq!(e.reconciler().dataplane().table().len(), 3, "untouched");
        feed(&mut e, rest, now);
        assert!(e.is_adopted());
        assert_eq!(e.reconciler().dataplane().table(), table_of_initial());
        assert_eq!(kinds(&e), vec![OperationKind::DeleteService]);
        assert_eq!(e.pending(), 0);
    }

    #[test]
    fn a_full_pass_follows_the_node_addresses() {
        let t0 = Instant::now();
        let node = |last: u8| std::net::IpAddr::from([192, 168, 1, last]);
        let dp = MemoryDataplane::new().with_node_addresses([node(10)]);
        let mut e = engine_over(dp, false);
        let mut port = crate::testing::service("ns", "np", "10.96.0.9");
        if let Some(spec) = port.spec.as_mut() {
            spec.type_ = Some("NodePort".into());
            if let Some(p) = spec.ports.as_mut().and_then(|p| p.first_mut()) {
                p.node_port = Some(30080);
            }
        }
        feed(
            &mut e,
            vec![
                Message::Services(Change::Reset(vec![port])),
                Message::Slices(Change::Reset(vec![slice(
                    "ns",
                    "np-1",
                    "np",
                    &["10.1.0.1"],
                )])),
            ],
            t0,
        );
        let on = |e: &Engine<MemoryDataplane>, last: u8| {
            e.reconciler()
                .dataplane()
                .table()
                .get(&ipvs::model::ServiceKey::tcp(node(last), 30080))
                .is_some()
        };
        assert!(on(&e, 10));
        e.dataplane_mut().set_node_addresses([node(11)]);
        // The pass reads the new address; the NodePort moves at the next step.
        let t1 = t0 + Duration::from_secs(30);
        e.step(t1, SystemTime::now());
        e.step(t1, SystemTime::now());
        assert!(on(&e, 11), "{:?}", e.reconciler().dataplane().table());
        assert!(!on(&e, 10));
        assert_eq!(e.node().addresses, [node(11)]);
    }
    #[test]
    fn large_tables_look_for_leftovers_on_one_pass_in_ten() {
        assert!((1..=30).all(|pass| discovers(pass, DISCOVER_ALWAYS_BELOW)));
        let large: Vec<u64> = (1..=30)
            .filter(|pass| discovers(*pass, DISCOVER_ALWAYS_BELOW + 1))
            .collect();
        assert_eq!(large, [10, 20, 30]);
    }
}
