//! The in-memory dataplane's nftables: the controller's table as the kernel would keep it,
//! with its transactions counted and faults to inject.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_netfilter::nftables::NfTablesMessage;

use crate::netfilter::conntrack::UdpFlow;
use crate::netfilter::rules::rule_comment;
use crate::netfilter::{Change, Contents, Elements};

/// `ENOENT`, `EINVAL`, `EOPNOTSUPP`, and the errno of injected faults (`EAGAIN`).
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const EOPNOTSUPP: i32 = 95;
const INJECTED: i32 = 11;

/// The controller's nftables table, simulated: whether it exists, what its sets hold and
/// which rules it has.
#[derive(Debug, Clone, Default)]
pub struct SimulatedNetfilter {
    table: Option<Contents>,
    transactions: usize,
    /// For each transaction applied, how many IPVS batches the dataplane had applied before it.
    after_batches: Vec<usize>,
    failing: usize,
    unreadable: bool,
    /// Conntrack's UDP flows.
    flows: Vec<UdpFlow>,
    failing_flow_deletions: usize,
    /// The ruleset's generation: moves with every commit and every change made behind the
    /// controller's back.
    generation: u32,
    /// How many times the table was read.
    reads: usize,
}

impl SimulatedNetfilter {
    /// What the sets hold; `None` when there is no table.
    pub fn elements(&self) -> Option<&Elements> {
        self.table.as_ref().map(|t| &t.elements)
    }

    /// How many transactions were applied or refused.
    pub fn transactions(&self) -> usize {
        self.transactions
    }

    /// For each transaction applied, how many IPVS batches came before it (to check what a
    /// sync does first).
    pub fn after_batches(&self) -> &[usize] {
        &self.after_batches
    }

    /// Adds a UDP flow to conntrack, as a client's datagram would.
    pub fn add_udp_flow(&mut self, flow: UdpFlow) {
        self.flows.push(flow);
    }

    /// Conntrack's UDP flows.
    pub fn udp_flows(&self) -> &[UdpFlow] {
        &self.flows
    }

    /// Makes the next `count` deletions of stale UDP flows fail.
    pub fn fail_flow_deletions(&mut self, count: usize) {
        self.failing_flow_deletions = count;
    }

    /// Deletes the flows to `frontend` whose reply source is not in `keep`.
    pub(crate) fn delete_stale_udp_flows(
        &mut self,
        frontend: SocketAddr,
        keep: &BTreeSet<IpAddr>,
    ) -> Result<usize, i32> {
        if self.failing_flow_deletions > 0 {
            self.failing_flow_deletions -= 1;
            return Err(INJECTED);
        }
        let before = self.flows.len();
        self.flows
            .retain(|f| f.frontend != frontend || keep.contains(&f.backend));
        Ok(before - self.flows.len())
    }

    /// Makes the next `count` transactions fail as a whole.
    pub fn fail_transactions(&mut self, count: usize) {
        self.failing = count;
    }

    /// Makes the table unreadable until a transaction deletes it (as a table whose set was
    /// deleted behind the controller's back is).
    pub fn break_table(&mut self) {
        self.unreadable = true;
        self.generation = self.generation.wrapping_add(1);
    }

    /// The ruleset's generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// How many times the table was read.
    pub fn reads(&self) -> usize {
        self.reads
    }

    /// What a listing reads: the sets, `None` when there is no table, an errno when the
    /// table cannot be read.
    pub(crate) fn read(&mut self) -> Result<Option<Contents>, i32> {
        self.reads += 1;
        if self.unreadable && self.table.is_some() {
            return Err(ENOENT);
        }
        Ok(self.table.clone())
    }

    /// Changes the table behind the controller's back (`None`: no table).
    pub fn tamper(&mut self, edit: impl FnOnce(&mut Option<Contents>)) {
        edit(&mut self.table);
        self.generation = self.generation.wrapping_add(1);
    }

    /// Applies `changes` as the kernel applies a batch: all, or, at the first refused one,
    /// none (the error is its errno).
    pub(crate) fn transact(&mut self, changes: &[Change], batches: usize) -> Result<(), i32> {
        self.transactions += 1;
        if self.failing > 0 {
            self.failing -= 1;
            return Err(INJECTED);
        }
        let mut table = self.table.clone();
        let mut unreadable = self.unreadable;
        for change in changes {
            match change.message.as_nftables() {
                Some(NfTablesMessage::NewTable(_)) => {
                    table.get_or_insert_with(Contents::default);
                }
                Some(NfTablesMessage::DeleteTable(_)) => {
                    table.take().ok_or(ENOENT)?;
                    unreadable = false;
                }
                Some(NfTablesMessage::NewSet(_) | NfTablesMessage::NewChain(_)) => {
                    table.as_ref().ok_or(ENOENT)?;
                }
                Some(NfTablesMessage::NewRule(rule)) => {
                    let table = table.as_mut().ok_or(ENOENT)?;
                    let (chain, comment) = rule_comment(rule).ok_or(EINVAL)?;
                    table
                        .rules
                        .entry(chain.to_owned())
                        .or_default()
                        .push(comment.to_vec());
                }
                // Without a handle: the chain's rules go.
                Some(NfTablesMessage::DeleteRule(rule)) => {
                    let table = table.as_mut().ok_or(ENOENT)?;
                    let (chain, _) = rule_comment(rule).ok_or(EINVAL)?;
                    table.rules.remove(chain);
                }
                Some(NfTablesMessage::NewSetElement(_) | NfTablesMessage::DeleteSetElement(_)) => {
                    let sets = &mut table.as_mut().ok_or(ENOENT)?.elements;
                    if !sets.apply(change) {
                        return Err(EINVAL);
                    }
                }
                _ => return Err(EOPNOTSUPP),
            }
        }
        self.table = table;
        self.unreadable = unreadable;
        self.generation = self.generation.wrapping_add(1);
        self.after_batches.push(batches);
        Ok(())
    }
}
