//! What a sync reports, and the counters behind the metrics.

use super::*;
use crate::dataplane::OperationError;

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
    /// nftables transactions applied.
    pub netfilter_transactions: u64,
    /// Set elements of the nftables table added or deleted.
    pub netfilter_changes: u64,
    /// nftables transactions the kernel refused or that failed (none of each applied).
    pub netfilter_failures: u64,
    /// Wall-clock time spent in nftables transactions (applied or refused), in microseconds.
    pub netfilter_micros: u64,
    /// Full passes that did not read the nftables table because nothing was committed since
    /// it was last found right (the ruleset's generation had not moved).
    pub netfilter_reads_skipped: u64,
    /// Full passes in slices that did not read the IPVS table: the dataplane saw no write to
    /// it, and the Services did not change, since a pass last found it right (see
    /// [`Reconciler::start_sweep`]).
    pub ipvs_reads_skipped: u64,
    /// Stale UDP conntrack entries deleted (see [`crate::netfilter::conntrack`]).
    pub udp_flows_deleted: u64,
    /// Clean-ups of stale UDP flows that failed (each retried).
    pub udp_flow_failures: u64,
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
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// IPVS operations sent.
    pub operations: usize,
    /// Of those, how many failed.
    pub failed: usize,
    /// Dummy-interface addresses bound or removed.
    pub address_changes: usize,
    /// Sysctls written.
    pub sysctl_writes: usize,
    /// Set elements of the nftables table added or deleted.
    pub netfilter_changes: usize,
    /// Stale UDP conntrack entries deleted.
    pub udp_flows_deleted: usize,
    /// Whether the work was deferred to the first full pass (nothing adopted yet).
    pub deferred: bool,
    /// Whether [`Reconciler::cleanup`] deleted the dummy interface.
    pub interface_deleted: bool,
    /// The errors met (the work each was about is retried).
    pub errors: Vec<SyncError>,
}

/// One error a call of the reconciler met; the work it was about is retried.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The dataplane failed as a whole: a read, an address change, a sysctl, a batch that
    /// got no answer (shared: a report is cloned, the error is not).
    #[error(transparent)]
    Dataplane(std::sync::Arc<DataplaneError>),
    /// One IPVS operation of a batch failed.
    #[error(transparent)]
    Operation(#[from] OperationError),
    /// A virtual server was not created: its VIP is not bound on the dummy interface (it is
    /// created once the VIP is).
    #[error(
        "virtual server {key}{} not created: its VIP {} is not bound on the dummy interface \
         (retried with the VIP)",
        service.as_ref().map(|s| format!(" of {s}")).unwrap_or_default(),
        key.addr
    )]
    VipNotBound {
        /// The virtual server.
        key: VirtualServerKey,
        /// Its Service, when one desires it.
        service: Option<ServiceRef>,
    },
    /// The dataplane answered fewer IPVS operations of a batch than it was sent.
    #[error("the dataplane answered {answered} of {sent} IPVS operations")]
    Unanswered {
        /// Operations answered.
        answered: usize,
        /// Operations sent.
        sent: usize,
    },
}

impl From<DataplaneError> for SyncError {
    fn from(error: DataplaneError) -> Self {
        Self::Dataplane(std::sync::Arc::new(error))
    }
}

impl SyncReport {
    /// Whether nothing at all was changed on the node and nothing failed.
    pub fn is_quiet(&self) -> bool {
        self.operations == 0
            && self.address_changes == 0
            && self.sysctl_writes == 0
            && self.netfilter_changes == 0
            && self.udp_flows_deleted == 0
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
        self.netfilter_changes += other.netfilter_changes;
        self.udp_flows_deleted += other.udp_flows_deleted;
        self.deferred |= other.deferred;
        self.interface_deleted |= other.interface_deleted;
        self.errors.extend(other.errors);
    }
}
