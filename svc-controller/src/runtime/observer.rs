//! What the engine tells the rest of the program: the one door telemetry, health endpoints
//! and the Services' health-check servers look through.
//!
//! The engine owns the work; a program decides what to show of it. An [`Observer`] is
//! called on the engine's thread, in order, as things happen: it must be cheap (set a gauge,
//! store a value) and never block. Every method has an empty default, so an embedder
//! implements only what it shows; [`Silent`] shows nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::desired::{HealthCheck, NoLocalEndpoints};
use crate::model::ServiceRef;
use crate::reconcile::Metrics as ReconcilerMetrics;

/// The kind of objects a source delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// Services.
    Services,
    /// EndpointSlices.
    EndpointSlices,
}

/// What the engine's thread spent CPU on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Work {
    /// Adopting the node (and the early start before it).
    Adoption,
    /// Incremental syncs of the Services that changed.
    Sync,
    /// Retries and drain checks.
    Timers,
    /// Full passes.
    FullPass,
}

impl Work {
    /// A short name (`adoption`, `sync`, `timers`, `full_pass`), for labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Work::Adoption => "adoption",
            Work::Sync => "sync",
            Work::Timers => "timers",
            Work::FullPass => "full_pass",
        }
    }
}

/// A sync that ended: incremental (the Services that changed) or full (the adoption, a full
/// pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncEnd {
    /// The engine's time it took.
    pub elapsed: Duration,
    /// When it ended (wall clock).
    pub ended: SystemTime,
    /// Whether it was a full one.
    pub full: bool,
    /// Whether every operation and read succeeded.
    pub ok: bool,
}

/// The engine's state after any reconciler call.
#[derive(Debug, Clone, Copy)]
pub struct EngineState<'a> {
    /// The reconciler's counters since it started.
    pub reconciler: &'a ReconcilerMetrics,
    /// Desired virtual servers.
    pub virtual_servers: usize,
    /// Real servers draining.
    pub draining: usize,
    /// Services whose input has problems.
    pub services_invalid: usize,
    /// Service ports with a `Local` policy and no local endpoint.
    pub no_local_endpoints: NoLocalEndpoints,
}

/// Watches the engine. See the [module documentation](self).
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// A source delivered `objects` of `kind` (each counts as a change received, as
    /// kube-proxy counts them), adding `pending` changes to those waiting to be programmed.
    fn received(&self, kind: ObjectKind, objects: u64, pending: i64) {
        let _ = (kind, objects, pending);
    }

    /// A Service is waiting to be programmed, since `at`.
    fn queued(&self, at: SystemTime) {
        let _ = at;
    }

    /// Every change received has been programmed: nothing is pending.
    fn caught_up(&self) {}

    /// This node's Node object started (`true`) or stopped being deleted.
    fn node_deleting(&self, deleting: bool) {
        let _ = deleting;
    }

    /// The node was adopted: every source delivered its first state and the table holds it.
    fn adopted(&self) {}

    /// A sync ended.
    fn synced(&self, sync: SyncEnd) {
        let _ = sync;
    }

    /// A change reached the kernel `latency` after the change behind it happened (an
    /// EndpointSlice's trigger time; live changes only, as kube-proxy measures).
    fn programmed(&self, latency: Duration) {
        let _ = latency;
    }

    /// The engine's thread spent `cpu` on `work`.
    fn engine_cpu(&self, work: Work, cpu: Duration) {
        let _ = (work, cpu);
    }

    /// The state after a reconciler call.
    fn state(&self, state: &EngineState<'_>) {
        let _ = state;
    }

    /// One Service's health check as now computed (`None`: it has none).
    fn health_check(&self, service: &ServiceRef, check: Option<HealthCheck>) {
        let _ = (service, check);
    }

    /// Every Service's health check, replacing those known (at the adoption).
    fn health_checks(&self, all: Vec<(ServiceRef, HealthCheck)>) {
        let _ = all;
    }

    /// The addresses health checks listen on: every address (`None`) unless
    /// `nodePortAddresses` narrows the NodePorts to some node addresses, then those (as
    /// kube-proxy).
    fn health_check_addresses(&self, addresses: Option<BTreeSet<IpAddr>>) {
        let _ = addresses;
    }
}

/// An observer that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {}
