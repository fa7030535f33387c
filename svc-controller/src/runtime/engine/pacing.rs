//! Full passes: when one is due, its pace (slices spread over the period) and how often one
//! also looks for leftovers nobody asked for.

use super::*;

/// How long to wait before trying a full pass again when the node could not be read.
pub(super) const FULL_PASS_RETRY: Duration = Duration::from_secs(5);

/// The most of the engine's time full passes take on a large table in the long run, as a
/// fraction: passes start at least `1 / FULL_PASS_SHARE` times the last pass's work apart
/// (and at least [`EngineConfig::sync_period`] apart). See [`full_pass_period`].
pub const FULL_PASS_SHARE: f64 = 0.25;

/// How many virtual servers one slice of a full pass verifies (one read of that many, then
/// their repairs). At 10 real servers each, a slice reads about 2,800 netlink messages.
pub const SWEEP_SLICE: usize = 256;

/// Up to this many desired virtual servers, every full pass also looks for owned leftovers in
/// the kernel (see [`Reconciler::start_sweep`]); above, one pass in [`DISCOVER_EVERY`] does.
pub const DISCOVER_ALWAYS_BELOW: usize = 20_000;

/// See [`DISCOVER_ALWAYS_BELOW`].
pub const DISCOVER_EVERY: u64 = 10;

/// A full pass under way: when its next slice is due and what it has done so far.
#[derive(Debug)]
pub(super) struct SweepPace {
    /// When the pass started.
    pub(super) started: Instant,
    /// When the next slice is due.
    pub(super) next: Instant,
    /// The time between two slices.
    pub(super) interval: Duration,
    /// Time spent working on the pass (its slices), for the full-sync duration metric.
    pub(super) work: Duration,
    /// What the pass has done so far.
    pub(super) report: SyncReport,
}

impl<D: Dataplane> Engine<D> {
    /// Starts a full pass (see step 4 of the [module documentation](self)); its first slice
    /// runs at once.
    pub(super) fn start_full_pass(&mut self, now: Instant, wall: SystemTime) {
        let started = Instant::now();
        if !self.dirty.is_empty() {
            self.sync_dirty(now, wall);
        }
        // The adoption looked at the whole table: the first discovery of a large table comes
        // DISCOVER_EVERY passes later.
        self.passes += 1;
        let discover = discovers(
            self.passes,
            self.reconciler.desired().virtual_servers().len(),
        );
        match self.reconciler.start_sweep(now, discover) {
            Ok(report) => {
                // The sweep read the node's addresses: NodePort virtual servers follow them.
                let addresses: Vec<_> = self
                    .reconciler
                    .vips()
                    .node_addresses()
                    .iter()
                    .copied()
                    .collect();
                self.node_addresses_read(addresses);
                let remaining = self.reconciler.sweep_remaining().unwrap_or(0);
                let slices = remaining.div_ceil(SWEEP_SLICE).max(1);
                let interval =
                    (self.config.sync_period / 2) / u32::try_from(slices).unwrap_or(u32::MAX);
                self.sweep = Some(SweepPace {
                    started: now,
                    next: now,
                    interval,
                    work: started.elapsed(),
                    report,
                });
                self.sweep_slice(now, wall);
            }
            Err(e) => {
                warn!(error = %e, retry_in_ms = FULL_PASS_RETRY.as_millis() as u64, "full pass failed");
                self.next_full = Some(now + FULL_PASS_RETRY);
                let report = SyncReport {
                    errors: vec![e.into()],
                    ..SyncReport::default()
                };
                let elapsed = started.elapsed();
                self.finish_sync(elapsed, wall + elapsed, &report, true);
            }
        }
    }

    /// Runs the next slice of the full pass under way, and ends the pass after its last.
    pub(super) fn sweep_slice(&mut self, now: Instant, wall: SystemTime) {
        let started = Instant::now();
        let report = self.reconciler.sweep_step(now, SWEEP_SLICE);
        let Some(pace) = &mut self.sweep else {
            return;
        };
        let took = started.elapsed();
        pace.work += took;
        pace.report.merge(report);
        pace.next = next_slice(now, pace.interval, took);
        if self.reconciler.sweep_remaining().is_some() {
            self.after(&SyncReport::default());
            return;
        }
        let Some(pace) = self.sweep.take() else {
            return;
        };
        debug!(
            operations = pace.report.operations,
            failed = pace.report.failed,
            work_ms = pace.work.as_millis() as u64,
            elapsed_ms = now.saturating_duration_since(pace.started).as_millis() as u64,
            "full pass done"
        );
        let period = full_pass_period(self.config.sync_period, pace.work);
        self.next_full = Some((pace.started + period).max(now));
        // The pass ends with this slice, which began with this step.
        self.finish_sync(pace.work, wall + took, &pace.report, true);
        release_free_memory();
    }
}

/// The time from the start of a full pass to the start of the next, given the engine time
/// the pass took (`work`, its slices): the configured period, or that work divided by
/// [`FULL_PASS_SHARE`] if more. On a table too large to verify in a fraction of the period
/// (tens of thousands of Services on a slow machine), passes thus come less often instead of
/// keeping the engine busy all the time. Within a pass, each slice waits at
/// least twice the previous one's work, so a pass under way takes at most half the engine.
pub fn full_pass_period(sync_period: Duration, work: Duration) -> Duration {
    sync_period.max(work.div_f64(FULL_PASS_SHARE))
}

/// When the slice after one that ran at `now` and took `took` of work is due: after the
/// planned `interval`, or after twice that work if longer. While a pass runs, it takes at
/// most half the engine's time, and changes get the rest.
pub(super) fn next_slice(now: Instant, interval: Duration, took: Duration) -> Instant {
    now + interval.max(took * 2)
}

/// Whether full pass number `pass` (from 1) of a node with `virtual_servers` desired looks for
/// leftovers in the kernel (see [`DISCOVER_ALWAYS_BELOW`]).
pub(super) fn discovers(pass: u64, virtual_servers: usize) -> bool {
    virtual_servers <= DISCOVER_ALWAYS_BELOW || pass.is_multiple_of(DISCOVER_EVERY)
}
