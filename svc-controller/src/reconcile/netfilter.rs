//! The node's nftables table kept in line with the desired state, beside IPVS: the full pass
//! reads its sets and writes what differs (creating the table when it is missing), an
//! incremental sync writes the elements of what changed; each round's changes are one
//! transaction. See [`crate::netfilter`].

use crate::netfilter::{Change, Elements, ServicePort, rules, table};

use super::*;

/// The last time a full pass found the nftables table as the desired state wants it: the
/// ruleset's generation read just before that read, and the node's addresses then. Any change
/// of the desired state forgets it. A later pass that finds it still there, the same
/// generation (no commit since, by anyone: the controller's own transactions included) and
/// the same addresses skips the read, so a quiet node's passes cost one request here whatever
/// the table's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checked {
    generation: u32,
    node: BTreeSet<IpAddr>,
}

impl<D: Dataplane> Round<'_, D> {
    /// The full netfilter pass: reads the table and writes what differs from the desired
    /// state: a missing table is created, rules that are not exactly the configuration's
    /// are written anew, the sets get the elements they lack and lose the others. With a
    /// table that already matches, no change.
    pub(super) fn verify_netfilter(&mut self) {
        if !self.config.netfilter {
            return;
        }
        // Read before the table, so that a commit made while it is read shows next time.
        let generation = match self.dataplane.netfilter_generation() {
            Ok(generation) => Some(generation),
            Err(e) => {
                debug!(error = %e, "cannot read the nftables generation; reading the table");
                None
            }
        };
        let checked = self.netfilter_checked.take();
        if let (Some(now), Some(last)) = (generation, &checked)
            && last.generation == now
            && last.node == self.vips.node
            && self.netfilter.is_some()
        {
            // Nothing committed since the table was found right, by anyone, and nothing it
            // depends on changed: the desired state (a change forgets the check) and the
            // node's addresses.
            self.metrics.netfilter_reads_skipped += 1;
            *self.netfilter_checked = checked;
            return;
        }
        let wanted = Elements::wanted(self.desired, &self.vips.node);
        let (have, mut changes) = match self.dataplane.netfilter_read() {
            Ok(Some(listing)) => {
                let changes = if listing.rules == rules::comments(&self.config.netfilter_rules) {
                    Vec::new()
                } else {
                    info!(
                        "the nftables table's rules differ from the configuration's; rewriting them"
                    );
                    rules::write(&self.config.netfilter_rules)
                };
                (listing.elements, changes)
            }
            Ok(None) => (
                Elements::default(),
                table::create(&self.config.netfilter_rules),
            ),
            Err(e) => {
                // The table is there but cannot be read whole (a set deleted behind our
                // back, say): it is replaced, in the same transaction, so no packet sees it
                // missing.
                self.metrics.read_failures += 1;
                warn!(error = %e, "cannot read the nftables table; replacing it");
                let mut changes = vec![table::delete()];
                changes.extend(table::create(&self.config.netfilter_rules));
                (Elements::default(), changes)
            }
        };
        let count = have.difference_len(&wanted);
        changes.extend(have.changes_to(&wanted));
        if changes.is_empty() {
            *self.netfilter = Some(wanted);
            *self.netfilter_checked = generation.map(|generation| Checked {
                generation,
                node: self.vips.node.clone(),
            });
            self.retries.clear(Work::Netfilter);
            return;
        }
        if self.transact_netfilter(&changes, count) {
            *self.netfilter = Some(wanted);
        }
    }

    /// Writes the elements of `vips` and of the virtual servers `keys` as the desired state
    /// now wants them. Before the table is known (no full pass yet, or a failed
    /// transaction), nothing: the full pass (or its retry) writes everything.
    ///
    /// An endpoint address that leaves the `hairpin` set is deleted by the next full pass
    /// only (a change of the desired state makes that pass read the table, see
    /// [`Checked`]): knowing here whether another virtual server still has it would cost a
    /// count per address. Until then it masquerades nothing but connections from that
    /// address to itself, which are hairpin connections whoever has it.
    pub(super) fn sync_netfilter(
        &mut self,
        vips: &BTreeSet<IpAddr>,
        keys: &BTreeSet<VirtualServerKey>,
    ) {
        if !self.config.netfilter {
            return;
        }
        let Some(view) = self.netfilter.as_ref() else {
            return;
        };
        let mut have = Elements::default();
        let mut want = Elements::default();
        for addr in vips {
            if view.vips.contains(addr) {
                have.vips.insert(*addr);
            }
            if self.vips.wanted(self.desired, addr) {
                want.vips.insert(*addr);
            }
        }
        for key in keys {
            let port = ServicePort {
                addr: key.addr,
                protocol: key.protocol,
                port: key.port,
            };
            let vs = self.desired.virtual_servers().get(key);
            let endpoints = vs
                .into_iter()
                .flat_map(|vs| vs.real_servers.iter().filter(|rs| rs.local))
                .map(|rs| rs.addr);
            have.extend(view.part(port, endpoints));
            if let Some(vs) = vs {
                want.add_virtual_server(
                    vs,
                    self.vips.wanted(self.desired, &key.addr),
                    &self.vips.node,
                );
            }
        }
        let changes = have.changes_to(&want);
        if changes.is_empty() {
            return;
        }
        if self.transact_netfilter(&changes, have.difference_len(&want))
            && let Some(view) = self.netfilter.as_mut()
        {
            view.remove(&have);
            view.extend(want);
        }
    }

    /// Applies `changes` (`elements` set elements among them) as one transaction; counts,
    /// logs, and on failure forgets the view of the table and schedules a full netfilter
    /// pass. Returns whether it was applied.
    fn transact_netfilter(&mut self, changes: &[Change], elements: usize) -> bool {
        let started = std::time::Instant::now();
        let result = self.dataplane.netfilter_transact(changes);
        let elapsed = started.elapsed();
        self.metrics.netfilter_micros += u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(()) => {
                self.metrics.netfilter_transactions += 1;
                self.metrics.netfilter_changes += elements as u64;
                self.report.netfilter_changes += elements;
                self.retries.clear(Work::Netfilter);
                debug!(
                    messages = changes.len(),
                    elements,
                    elapsed_ms = elapsed.as_secs_f64() * 1e3,
                    "nftables transaction applied"
                );
                true
            }
            Err(e) => {
                self.metrics.netfilter_failures += 1;
                // Nothing of it was applied, but what the table holds is no longer known
                // for sure: the retry reads it.
                *self.netfilter = None;
                self.retry_later(Work::Netfilter);
                warn!(
                    messages = changes.len(),
                    elements,
                    error = %e,
                    retry_in_ms = self.retries.retry_in_ms(Work::Netfilter, self.now),
                    "nftables transaction failed (nothing of it applied); retrying"
                );
                self.report.errors.push(e.into());
                false
            }
        }
    }
}
