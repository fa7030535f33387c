//! A quiet node: a full pass in slices reads the IPVS table only when it may have changed
//! since a pass last found it right.
//!
//! Reading the table is the whole cost of a pass on a node where nothing happens: one dump
//! of every virtual server's destinations. The kernel keeps no count of IPVS changes, but
//! the dataplane can see every write as it is made ([`Dataplane::ipvs_writes`]; the kernel
//! dataplane taps netlink). So a pass skips the read when all of these hold, and verifies
//! what is cheap as always (the node's addresses, the VIPs, the nftables table, sysctls):
//!
//! - the last pass that read the table left it as the desired state wants it: nothing
//!   failed, nothing waits for a retry, nothing is suspect;
//! - no desired state was set without being programmed since ([`Reconciler::set_desired`]:
//!   a sync programs what it changes, and what fails waits for a retry, which a pass reads
//!   whether it reads the rest or not);
//! - the dataplane watched all along and saw no write by another program (the controller's
//!   own are left out: the view follows their answers);
//! - fewer than [`ReconcilerConfig::max_skipped_reads`] passes in a row have skipped it: the
//!   writes no watch sees (the old `setsockopt` interface) are repaired within that many
//!   passes.
//!
//! [`Reconciler::verify`] always reads the whole table: it is the explicit full read (and
//! the adoption), and leaves the next sliced pass to read it again and start the watch (the
//! kernel dataplane's tap starts on its first [`Dataplane::ipvs_writes`]), so that the
//! adoption's reads of a large table do not pass through the tap.

use super::*;
use crate::dataplane::IpvsWrites;

/// What the next sliced full pass needs to know to skip reading the table.
#[derive(Debug, Default)]
pub(super) struct Quiet {
    /// The desired state's version ([`Reconciler::desired_version`]) when a pass that read
    /// the whole table last left it right; `None` since a pass started reading it.
    right_at: Option<u64>,
    /// How many passes in a row skipped the read.
    skipped: u32,
}

impl Quiet {
    /// Whether a pass starting now reads the table, given what the dataplane saw since the
    /// last pass (`writes`) and the desired state's `version`; counts the skip.
    pub(super) fn must_read(&mut self, writes: IpvsWrites, version: u64, max_skipped: u32) -> bool {
        let skip = writes == IpvsWrites::Quiet
            && self.right_at == Some(version)
            && self.skipped < max_skipped;
        if skip {
            self.skipped += 1;
        } else {
            self.reading();
        }
        !skip
    }

    /// A pass reads the whole table: until it ends right, nothing may be skipped.
    pub(super) fn reading(&mut self) {
        self.right_at = None;
        self.skipped = 0;
    }

    /// A pass that read the whole table at the desired state's `version` left it right.
    pub(super) fn found_right(&mut self, version: u64) {
        self.right_at = Some(version);
    }
}

impl<D: Dataplane> Reconciler<D> {
    /// Whether nothing is left undone after a pass that read the whole table: no failure in
    /// `report`, no retry waiting, no suspect virtual server.
    pub(super) fn left_right(&self, report: &SyncReport) -> bool {
        report.failed == 0
            && report.errors.is_empty()
            && self.retries.pending().next().is_none()
            && self.view.suspect.is_empty()
    }
}
