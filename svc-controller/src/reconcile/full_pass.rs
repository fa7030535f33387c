//! The full pass: the whole table read again and repaired, at once ([`Reconciler::verify`])
//! or in slices ([`Reconciler::start_sweep`], [`Reconciler::sweep_step`]).

use super::*;

/// A full pass in slices (see [`Reconciler::start_sweep`]).
#[derive(Debug)]
pub(super) struct Sweep {
    /// The virtual servers left to verify, in key order.
    keys: VecDeque<VirtualServerKey>,
    /// How many have been verified.
    examined: usize,
    /// Whether the pass reads the whole table (see `super::quiet`): `false`, it verifies
    /// only what waits for a retry or is suspect.
    reads_table: bool,
    /// The desired state's version when the pass started.
    version: u64,
    /// Whether no slice has failed yet.
    clean: bool,
}

impl<D: Dataplane> Reconciler<D> {
    /// The full pass: reads the whole table, the dummy interface and the node's addresses,
    /// rebuilds the view of every owned virtual server from the kernel, repairs any
    /// difference from the desired state, and holds the configured sysctls. The first call
    /// adopts the node; with a table that already matches, it makes no change at all.
    ///
    /// An error means the node could not be read; the pass is retried by
    /// [`Reconciler::poll`] with backoff.
    pub fn verify(&mut self, now: Instant) -> Result<SyncReport, DataplaneError> {
        self.metrics.full_syncs += 1;
        // The watch of writes is the sliced passes' business: it starts with the first one,
        // so that an adoption's reads of a large table do not pass through the tap.
        self.quiet.reading();
        let read = (|| {
            let listing = self.dataplane.list()?;
            let (node, dummy) = self.dataplane.node_and_dummy_addresses()?;
            Ok::<_, DataplaneError>((listing, node, dummy))
        })();
        let (mut listing, node, dummy) = match read {
            Ok(x) => x,
            Err(e) => {
                self.metrics.read_failures += 1;
                self.retries.retry(Work::FullPass, now, &self.config);
                warn!(error = %e, "full pass: cannot read the node; retrying");
                return Err(e);
            }
        };
        self.retries.clear(Work::FullPass);
        // This pass covers whatever a sweep had left.
        self.sweep = None;
        let adopted = self.adopted;
        let mut round = self.round(now);
        round.take_node(node, dummy);
        // Before any virtual server is created (see `Reconciler::sync_services`).
        round.verify_netfilter();
        let (keys, found) = round.pass_keys(listing.table.keys());
        // The adoption deletes the stale UDP flows of every UDP virtual server it examines,
        // the ones it deletes too (what changed while no daemon ran).
        let udp: Vec<VirtualServerKey> = if adopted {
            Vec::new()
        } else {
            keys.iter()
                .filter(|k| k.protocol == ipvs::model::Protocol::Udp)
                .copied()
                .collect()
        };
        let listed = listing.table.len();
        round.bind_missing_vips();
        let examined = keys.len();
        let states = keys
            .into_iter()
            .map(|key| {
                let fresh = listing.take_service(&to_service_key(&key));
                (key, fresh)
            })
            .collect();
        drop(listing);
        round.verify_states(states, adopted);
        round.unbind_stale_vips();
        round.clear_stale_udp_flows(&udp);
        let report = round.report;
        if !adopted {
            info!(
                owned_virtual_servers = found,
                foreign_virtual_servers = listed - found,
                desired_virtual_servers = self.desired.virtual_servers().len(),
                vips_bound = self.vips.bound.len(),
                draining = self.drains.iter().len(),
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
    /// The pass skips the table when no other program wrote to it: when the dataplane saw no
    /// such IPVS write ([`Dataplane::ipvs_writes`]) since a pass last read the whole table and
    /// left nothing undone, and no desired state was set since without being programmed
    /// ([`Reconciler::set_desired`]), only the virtual servers waiting for a retry are read,
    /// and no leftovers are looked for (counted in
    /// [`Metrics::ipvs_reads_skipped`]); the rest of the pass is as above. At most
    /// [`ReconcilerConfig::max_skipped_reads`] passes in a row skip.
    ///
    /// An error means the node could not be read; nothing was changed and no sweep is
    /// running (the caller tries again later).
    pub fn start_sweep(
        &mut self,
        now: Instant,
        discover: bool,
    ) -> Result<SyncReport, DataplaneError> {
        // Before any read: a write made while the table is read shows at the next pass.
        let writes = self.dataplane.ipvs_writes();
        let version = self.desired_version;
        let reads_table = self
            .quiet
            .must_read(writes, version, self.config.max_skipped_reads);
        let discover = discover && reads_table;
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
                self.quiet.reading();
                self.sweep = None;
                warn!(error = %e, "full pass: cannot read the node; trying again later");
                return Err(e);
            }
        };
        self.metrics.full_syncs += 1;
        let mut round = self.round(now);
        round.take_node(node, dummy);
        round.verify_netfilter();
        let keys = if reads_table {
            round.pass_keys(listed.into_iter()).0
        } else {
            round.metrics.ipvs_reads_skipped += 1;
            round.unverified_keys()
        };
        round.bind_missing_vips();
        let report = round.report;
        self.sweep = Some(Sweep {
            examined: 0,
            keys: keys.into_iter().collect(),
            reads_table,
            version,
            clean: true,
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
        let Some(sweep) = &mut self.sweep else {
            return SyncReport::default();
        };
        let take = max.max(1).min(sweep.keys.len());
        let keys: Vec<VirtualServerKey> = sweep.keys.drain(..take).collect();
        sweep.examined += keys.len();
        let finished = sweep.keys.is_empty().then_some(sweep.examined);
        let adopted = self.adopted;
        let mut round = self.round(now);
        if !keys.is_empty() {
            let skeys: Vec<ServiceKey> = keys.iter().map(to_service_key).collect();
            match round.dataplane.services(&skeys) {
                Ok(states) => {
                    let states = keys.into_iter().zip(states).collect();
                    round.verify_states(states, adopted);
                }
                Err(e) => {
                    round.metrics.read_failures += 1;
                    warn!(
                        virtual_servers = keys.len(),
                        error = %e,
                        "full pass: cannot read virtual servers; each is retried"
                    );
                    for key in keys {
                        round.view.suspect.insert(key);
                        round.retry_later(Work::Vs(key));
                    }
                    round.report.errors.push(e.into());
                }
            }
        }
        if let Some(examined) = finished {
            round.unbind_stale_vips();
            debug!(virtual_servers = examined, "full pass (in slices) done");
        }
        let report = round.report;
        if let Some(sweep) = &mut self.sweep {
            sweep.clean &= report.failed == 0 && report.errors.is_empty();
        }
        if finished.is_some()
            && let Some(sweep) = self.sweep.take()
        {
            self.adopted = true;
            if sweep.reads_table
                && sweep.clean
                && sweep.version == self.desired_version
                && self.left_right(&report)
            {
                self.quiet.found_right(sweep.version);
            }
        }
        report
    }

    /// How many virtual servers the running sweep has left to verify (`None`: no sweep).
    pub fn sweep_remaining(&self) -> Option<usize> {
        self.sweep.as_ref().map(|s| s.keys.len())
    }
}

impl<D: Dataplane> Round<'_, D> {
    /// Takes in the node's addresses and the dummy interface's, just read by a full pass, and
    /// holds the configured sysctls.
    fn take_node(&mut self, node: BTreeSet<IpAddr>, dummy: BTreeSet<IpAddr>) {
        self.vips.node = node;
        self.vips.bound = dummy;
        self.hold_sysctls();
    }

    /// The virtual servers a full pass examines, given the keys of the kernel's table: the
    /// desired ones, the listed ones we own or have in the view, the rest of the view, and the
    /// ones waiting for a retry or suspect. Also returns how many listed ones are ours.
    fn pass_keys(
        &self,
        listed: impl Iterator<Item = ServiceKey>,
    ) -> (BTreeSet<VirtualServerKey>, usize) {
        let ownership = self.vips.ownership(self.config);
        let mut keys: BTreeSet<VirtualServerKey> =
            self.desired.virtual_servers().keys().copied().collect();
        let mut found = 0usize;
        for skey in listed {
            if let Some(k) = from_service_key(&skey)
                && (keys.contains(&k)
                    || ownership.owns(&k)
                    || self.view.table.contains_service(&skey))
            {
                found += 1;
                keys.insert(k);
            }
        }
        keys.extend(self.view.table.keys().filter_map(|k| from_service_key(&k)));
        keys.extend(self.unverified_keys());
        (keys, found)
    }

    /// The virtual servers waiting for a retry or suspect: a full pass reads them whether it
    /// reads the rest of the table or not, and does the work waiting for a retry now.
    fn unverified_keys(&self) -> BTreeSet<VirtualServerKey> {
        let mut keys: BTreeSet<VirtualServerKey> = self
            .retries
            .pending()
            .filter_map(|w| match w {
                Work::Vs(k) => Some(*k),
                _ => None,
            })
            .collect();
        keys.extend(self.view.suspect.iter().copied());
        keys
    }

    /// The heart of a full pass: brings each virtual server in line with the desired state
    /// from its state just read from the kernel, counting and logging drift (the kernel
    /// differs from the view) once the node is `adopted`.
    fn verify_states(
        &mut self,
        states: Vec<(VirtualServerKey, Option<ServiceState>)>,
        adopted: bool,
    ) {
        let mut drifted = BTreeSet::new();
        let mut items = Vec::with_capacity(states.len());
        for (key, fresh) in states {
            let skey = to_service_key(&key);
            if adopted && self.view.table.get(&skey) != fresh.as_ref().map(|s| &s.config) {
                self.metrics.drift_detected += 1;
                drifted.insert(key);
            }
            self.view.suspect.remove(&key);
            items.push((key, Some(fresh)));
        }
        for (key, operations, ok) in self.reconcile_many(items) {
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
}
