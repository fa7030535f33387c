//! Adoption: taking over the node once every source has synced, and the early start that
//! programs a fresh node while its first load still arrives.

use super::*;

/// How long to wait before trying the adoption again after it failed.
pub(super) const ADOPTION_RETRY: Duration = Duration::from_secs(1);

/// How many Services one step of an early start programs (see [`Engine::step`]): the rest
/// waits for the next step, so that messages are read in between.
pub const EARLY_SYNC_MAX: usize = 1024;

/// Whether the first load is programmed as it arrives, before every source has synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EarlyStart {
    /// Not looked at yet (nothing has arrived, or the Node is awaited).
    Undecided,
    /// The node held nothing of ours: parts are programmed as they come.
    Fresh {
        /// When the early programming began.
        started: Instant,
        /// Time spent computing desired states meanwhile.
        compute: Duration,
        /// Operations issued meanwhile.
        operations: usize,
    },
    /// The node holds virtual servers or VIPs of ours (or could not be read): nothing is
    /// touched before the adoption.
    No,
}

impl<D: Dataplane> Engine<D> {
    /// Whether the Node facts the computation needs are in (or not awaited).
    pub(super) fn node_known(&self) -> bool {
        self.synced.node || !self.config.wait_for_node
    }

    /// Before every source has synced: on a node that holds nothing of ours, programs the
    /// Services that have arrived so far (a first load delivered in parts overlaps reading
    /// with programming); elsewhere does nothing (see step 1 of the module documentation).
    pub(super) fn early_step(&mut self, now: Instant, wall: SystemTime) {
        if self.early() == Some(EarlyStart::Undecided) {
            let decided = self.decide_early_start(now);
            self.phase = Phase::Starting {
                early: decided,
                retry_at: None,
            };
        }
        if matches!(self.early(), Some(EarlyStart::Fresh { .. })) {
            // A bounded share per step: the messages that arrived meanwhile are taken into
            // the store between two shares, and one sync's transient buffers stay small.
            let rest = match self.dirty.iter().nth(EARLY_SYNC_MAX).cloned() {
                Some(first_left) => self.dirty.split_off(&first_left),
                None => BTreeSet::new(),
            };
            self.sync_dirty(now, wall);
            self.dirty = rest;
        }
    }

    /// Reads the node: with no virtual server and no VIP of ours, the reconciler adopts
    /// it at once with an empty desired state (which changes nothing there) and the first
    /// load is programmed as it comes. Anything of ours, or a read that fails, means the
    /// first load waits for the adoption, which must see the whole desired state before it
    /// removes anything.
    pub(super) fn decide_early_start(&mut self, now: Instant) -> EarlyStart {
        let started = Instant::now();
        let node_port_range = self.reconciler.config().node_port_range.clone();
        let excluded = self.reconciler.config().exclude_cidrs.clone();
        let not_now = |e: DataplaneError| {
            debug!(error = %e, "cannot read the node; the first load waits for the adoption");
            EarlyStart::No
        };
        let dataplane = self.reconciler.dataplane_mut();
        // The VIPs first: a node that ran the daemon has some, and then the service list
        // (whose dump costs time quadratic in a large table) is not read at all.
        let (node, dummy) = match dataplane.node_and_dummy_addresses() {
            Ok(read) => read,
            Err(e) => return not_now(e),
        };
        if !dummy.is_empty() {
            info!(
                vips = dummy.len(),
                "the node holds VIPs of ours: the first load is programmed when complete"
            );
            return EarlyStart::No;
        }
        let keys = match dataplane.service_keys() {
            Ok(keys) => keys,
            Err(e) => return not_now(e),
        };
        let ownership = Ownership {
            dummy_addresses: dummy,
            node_addresses: node.clone(),
            node_port_range,
            excluded,
        };
        let owned = keys.iter().filter(|k| ownership.owns_kernel_key(k)).count();
        if owned > 0 {
            info!(
                owned_virtual_servers = owned,
                "the node holds virtual servers of ours: the first load is programmed when \
                 complete"
            );
            return EarlyStart::No;
        }
        self.node_addresses_read(node.into_iter().collect());
        match self.reconciler.verify(now) {
            Ok(report) => {
                info!(
                    foreign_virtual_servers = keys.len(),
                    "nothing of ours on this node: the first load is programmed as it arrives"
                );
                self.after(&report);
                EarlyStart::Fresh {
                    started,
                    compute: Duration::ZERO,
                    operations: report.operations,
                }
            }
            Err(e) => not_now(e),
        }
    }

    /// Every source has synced after an early start: programs what is left and takes the
    /// node as adopted (the reconciler adopted it when the early start began, and has
    /// programmed every Service since; the first full pass comes a period later).
    pub(super) fn finish_early_start(&mut self, now: Instant, wall: SystemTime) {
        if !self.dirty.is_empty() {
            self.sync_dirty(now, wall);
        }
        let EarlyStart::Fresh {
            started,
            compute,
            operations,
        } = self.early().unwrap_or(EarlyStart::No)
        else {
            return;
        };
        self.mark_adopted(now, started, operations, compute, true);
    }

    /// The node is adopted at `now`: incremental syncs from here on, the first full pass a
    /// period later. Logs `node adopted` with what the adoption (begun at `started`) did.
    pub(super) fn mark_adopted(
        &mut self,
        now: Instant,
        started: Instant,
        operations: usize,
        compute: Duration,
        early: bool,
    ) {
        self.phase = Phase::Running;
        self.observer.adopted();
        self.triggers.clear();
        self.last_sync = Some(now);
        self.next_full = Some(now + self.config.sync_period);
        info!(
            services = self.store.services_len(),
            slices = self.store.slices_len(),
            virtual_servers = self.reconciler.desired().virtual_servers().len(),
            operations,
            address_changes = self.reconciler.metrics().address_changes,
            compute_ms = compute.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            early,
            "node adopted"
        );
    }

    pub(super) fn adopt(&mut self, now: Instant, wall: SystemTime) {
        let started = Instant::now();
        self.refresh_node_addresses();
        let desired = self.store.compute_all(&self.node, &self.config.proxy);
        let computed = started.elapsed();
        for problem in desired.problems() {
            warn!(%problem, "invalid Service input skipped");
        }
        self.problems.clear();
        for service in self.store.service_refs() {
            let problems = desired.problems_of(service);
            if !problems.is_empty() {
                self.problems.insert(service.clone(), problems);
            }
        }
        self.observer.health_checks(
            desired
                .health_checks()
                .map(|(service, check)| (service.clone(), check))
                .collect(),
        );
        self.reconciler.set_desired(desired);
        match self.reconciler.verify(now) {
            Ok(report) => {
                self.dirty.clear();
                self.mark_adopted(now, started, report.operations, computed, false);
                let elapsed = started.elapsed();
                self.finish_sync(elapsed, wall + elapsed, &report, true);
            }
            Err(e) => {
                error!(error = %e, "cannot adopt the node (reading IPVS failed); retrying");
                if let Phase::Starting { retry_at, .. } = &mut self.phase {
                    *retry_at = Some(now + ADOPTION_RETRY);
                }
                self.after(&SyncReport::default());
            }
        }
    }
}
