//! Planning and sending: each virtual server's plan computed from the [view](super::view)
//! (read again when suspect), sent in shared batches, each accepted operation followed by the
//! view, each failure counted, logged and retried.

use super::*;

/// The most IPVS operations sent in one batch by a pass over many virtual servers: large
/// enough that a full pass of a big node costs a handful of system calls, small enough to
/// bound the memory of one batch (the kernel answers each with an ACK).
pub(super) const MAX_BATCH_OPERATIONS: usize = 4096;

/// One virtual server's plan, computed and not yet sent.
#[derive(Debug)]
struct PreparedVs {
    key: VirtualServerKey,
    operations: Vec<Operation>,
    notes: Vec<(DestinationKey, DrainNote)>,
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
pub(super) fn desires(vs: &VirtualServer, d: &Destination) -> bool {
    vs.real_servers
        .iter()
        .any(|r| r.addr == d.addr && r.port == d.port)
}

impl<D: Dataplane> Round<'_, D> {
    /// Brings virtual servers in line. For each, `fresh` is the kernel's state of it, just
    /// read (`Some(None)`: the kernel does not have it); `None`: use the view, reading the
    /// kernel first when the view is suspect or connection counts are needed. Their
    /// operations are sent together in batches of up to [`MAX_BATCH_OPERATIONS`]: a full
    /// pass over thousands of virtual servers costs a few system calls, not one round trip
    /// each. Each plan is computed before any of the batch is sent, which is sound because a
    /// virtual server's plan depends only on its own state. Returns, for each virtual server
    /// that had a plan (not one waiting for its VIP or unreadable), its operations and whether
    /// they all succeeded.
    pub(super) fn reconcile_many(
        &mut self,
        items: impl IntoIterator<Item = (VirtualServerKey, Option<Option<ServiceState>>)>,
    ) -> Vec<(VirtualServerKey, usize, bool)> {
        let mut items: Vec<(VirtualServerKey, Option<Option<ServiceState>>)> =
            items.into_iter().collect();
        self.read_ahead(&mut items);
        let mut out = Vec::new();
        let mut pending: Vec<PreparedVs> = Vec::new();
        let mut pending_ops = 0usize;
        for (key, fresh) in items {
            if self.desired.virtual_servers().contains_key(&key) {
                self.view.known.insert(key);
            }
            let Some(prepared) = self.prepare_vs(key, fresh) else {
                continue;
            };
            pending_ops += prepared.operations.len();
            pending.push(prepared);
            if pending_ops >= MAX_BATCH_OPERATIONS {
                self.send_prepared(std::mem::take(&mut pending), &mut out);
                pending_ops = 0;
            }
        }
        self.send_prepared(pending, &mut out);
        out
    }

    /// Reads together the kernel's state of the items that need a read before planning
    /// (suspect, or a TCP real server leaves and its connection counts decide its drain), so
    /// that syncing many virtual servers costs a few system calls
    /// ([`Dataplane::services`]), not round trips each. If that read fails, each is read on
    /// its own by [`Self::prepare_vs`], which reports and retries its failure.
    fn read_ahead(&mut self, items: &mut [(VirtualServerKey, Option<Option<ServiceState>>)]) {
        let wanted: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, (key, fresh))| fresh.is_none() && self.needs_read(key))
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
    fn needs_read(&self, key: &VirtualServerKey) -> bool {
        self.view.suspect.contains(key)
            || self.drains.needs_counts(
                key,
                self.desired.virtual_servers().get(key),
                self.view.table.get(&to_service_key(key)),
                self.now,
            )
    }

    /// Sends the plans of `prepared` as one batch and finishes each virtual server with its
    /// own share of the results.
    fn send_prepared(
        &mut self,
        mut prepared: Vec<PreparedVs>,
        out: &mut Vec<(VirtualServerKey, usize, bool)>,
    ) {
        let counts: Vec<usize> = prepared.iter().map(|p| p.operations.len()).collect();
        let ops: Vec<Operation> = prepared
            .iter_mut()
            .flat_map(|p| std::mem::take(&mut p.operations))
            .collect();
        let results = self.send_each(&ops);
        let mut results = results.into_iter();
        for (p, count) in prepared.into_iter().zip(counts) {
            // Every result of this share is consumed (no short-circuit), so the next share starts right.
            let ok = results.by_ref().take(count).filter(|ok| !ok).count() == 0;
            out.push((p.key, count, ok));
            self.finish_vs(p, ok);
        }
    }

    /// Reads what planning one virtual server needs and computes its plan.
    /// `None` when there is nothing to send and nothing to finish (the virtual server waits
    /// for its VIP, or could not be read and is scheduled for a retry).
    fn prepare_vs(
        &mut self,
        key: VirtualServerKey,
        fresh: Option<Option<ServiceState>>,
    ) -> Option<PreparedVs> {
        let skey = to_service_key(&key);
        let desired = self.desired.virtual_servers().get(&key).cloned();
        let mut fresh = fresh;
        if fresh.is_none() && self.needs_read(&key) {
            match self.dataplane.service(&skey) {
                Ok(state) => fresh = Some(state),
                Err(e) => {
                    self.metrics.read_failures += 1;
                    self.retry_later(Work::Vs(key));
                    warn!(
                        virtual_server = %key,
                        service = %self.owner(&key),
                        error = %e,
                        retry_in_ms = self.retries.retry_in_ms(Work::Vs(key), self.now),
                        "cannot read virtual server; retrying"
                    );
                    self.report.errors.push(e.into());
                    return None;
                }
            }
        }
        if let Some(state) = &fresh {
            self.view.take_read(key, state.as_ref());
        }
        let counts = fresh.flatten();
        let have = self.view.table.get(&skey).cloned();
        // Bind before create: a virtual server off the dummy interface would not be
        // recognised as ours after a restart (see the ownership rule).
        if have.is_none() && desired.is_some() && self.vips.unbound(self.desired, &key.addr) {
            self.block(key);
            return None;
        }
        self.vips.blocked.remove(&key);
        let (want, notes) = self.drains.target(
            key,
            desired.as_ref(),
            have.as_ref(),
            counts.as_ref(),
            self.now,
            self.config,
        );
        let plan = diff_service(have.as_ref(), want.as_ref());
        Some(PreparedVs {
            key,
            operations: plan.into_operations(),
            notes,
        })
    }

    /// Finishes one virtual server once its plan was sent (`ok`: every operation
    /// succeeded): a failure makes it suspect and schedules a retry; its drains are settled.
    fn finish_vs(&mut self, prepared: PreparedVs, ok: bool) {
        let PreparedVs { key, notes, .. } = prepared;
        if ok {
            self.retries.clear(Work::Vs(key));
        } else {
            self.view.suspect.insert(key);
            self.retry_later(Work::Vs(key));
        }
        self.settle_drains(key, &notes);
        self.drains.forget_finished(
            key,
            self.view.table.get(&to_service_key(&key)),
            self.desired.virtual_servers().get(&key),
        );
    }

    /// Sends operations; updates the view from each success. Returns, for each operation,
    /// whether it succeeded and the view could follow it.
    pub(super) fn send_each(&mut self, ops: &[Operation]) -> Vec<bool> {
        if ops.is_empty() {
            return Vec::new();
        }
        self.report.operations += ops.len();
        if tracing::enabled!(Level::TRACE) {
            for op in ops {
                trace!(operation = %Describe(op), "IPVS operation");
            }
        }
        let results = match self.dataplane.apply(ops) {
            Err(e) => {
                self.metrics.operations_failed += ops.len() as u64;
                self.report.failed += ops.len();
                let first = ops.first().and_then(op_key);
                warn!(
                    operations = ops.len(),
                    virtual_server = first.map(|k| k.to_string()),
                    service = %first.map_or(Owner(None), |k| self.owner(&k)),
                    error = %e,
                    "IPVS batch failed: nothing known of its effect; retrying"
                );
                self.report.errors.push(e.into());
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
                    let followed = self.view.follow(op);
                    if let Some(key) = followed.unrequested {
                        self.metrics.unrequested_deletions += 1;
                        warn!(
                            virtual_server = %key,
                            reason = self.vips.why_ours(&key, self.config),
                            "deleted a virtual server this process did not create and no \
                             Service asks for"
                        );
                    }
                    out.push(followed.in_view);
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
                    self.report.errors.push(e.into());
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
            self.report.errors.push(SyncError::Unanswered {
                answered: out.len(),
                sent: ops.len(),
            });
            out.resize(ops.len(), false);
        }
        self.metrics.operations_failed += failed as u64;
        self.report.failed += failed;
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
}
