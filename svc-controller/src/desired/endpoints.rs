//! Endpoint selection: which EndpointSlice endpoints become real servers.
//!
//! # Conditions (KEP-1669)
//! An endpoint is *ready* when `conditions.ready` is true or unset, *serving* when
//! `conditions.serving` is true or unset, and *terminating* only when `conditions.terminating`
//! is true (the API's reading of unset conditions). A set of endpoints yields its ready ones;
//! only when none is ready does it fall back to those that are serving **and** terminating, so
//! that connections to a Service whose pods are all shutting down gracefully still succeed.
//! This choice is made separately for the cluster-wide set and for the node-local set
//! (endpoints whose `nodeName` is this node), so a node whose own pod is terminating still
//! uses it under a `Local` policy even though other nodes have ready pods.
//!
//! # Topology hints
//! When [`ProxyConfig::topology_hints`] is on, this node has a zone, and **every** endpoint of
//! the chosen cluster-wide set carries `hints.forZones`, only the endpoints whose hints name
//! this node's zone are used; if none does, all of them are (an empty set would be an outage,
//! which hints must never cause). A single endpoint without hints disables the filter: the
//! EndpointSlice controller writes hints for all endpoints or for none, so a partial set means
//! a transition or a hand-written slice, where filtering would overload the hinted few. Hints
//! only narrow the cluster-wide set; the node-local set is already narrower.
//!
//! # Duplicates and addresses
//! Only the first of an endpoint's `addresses` is used: the API defines them as fungible
//! addresses of one backend, and using several would give that backend several shares of the
//! traffic. The same address and port listed in several slices (as happens while the
//! EndpointSlice controller moves an endpoint between slices) becomes one real server, with
//! the most usable of its conditions.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};

use crate::config::ProxyConfig;
use ipvs::model::AddressFamily;

use super::spelling;
use crate::model::{RealServer, ServiceRef};
use crate::node::NodeInfo;
use crate::problem::Problem;

use super::validate;

/// One EndpointSlice, checked once per Service (not once per port).
#[derive(Debug)]
pub(crate) struct ParsedSlice<'a> {
    /// `metadata.name`, for messages.
    pub(crate) name: String,
    /// `addressType`.
    pub(crate) family: AddressFamily,
    /// `ports`.
    pub(crate) ports: &'a [EndpointPort],
    /// The endpoints whose first address parsed and matched the address type.
    pub(crate) endpoints: Vec<ParsedEndpoint<'a>>,
}

/// One endpoint of a [`ParsedSlice`].
#[derive(Debug, Clone)]
pub(crate) struct ParsedEndpoint<'a> {
    addr: IpAddr,
    usability: Usability,
    local: bool,
    /// `hints.forZones[].name`, `None` when there is no zone hint.
    zones: Option<Vec<&'a str>>,
}

/// How usable an endpoint is, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Usability {
    /// Neither ready nor serving-and-terminating.
    Unusable,
    /// Serving and terminating: used only when no endpoint of the set is ready.
    Terminating,
    /// Ready.
    Ready,
}

/// Reads `EndpointSlice.endpoints`, which k8s-openapi types as a list for Kubernetes up to 1.35
/// and as an optional list from 1.36 on. Implemented for both, so this crate compiles whichever
/// version feature the final binary enables.
pub(crate) trait EndpointList {
    /// The endpoints (empty when absent).
    fn as_endpoints(&self) -> &[Endpoint];
}

impl EndpointList for Vec<Endpoint> {
    fn as_endpoints(&self) -> &[Endpoint] {
        self
    }
}

impl EndpointList for Option<Vec<Endpoint>> {
    fn as_endpoints(&self) -> &[Endpoint] {
        self.as_deref().unwrap_or(&[])
    }
}

/// A slice name for messages.
pub(crate) fn slice_name(slice: &EndpointSlice) -> String {
    slice
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "<unnamed>".to_owned())
}

/// Checks the Service's slices once: FQDN slices are skipped silently (IPVS cannot use names),
/// unknown address types and bad, mismatched or special addresses (loopback, link-local, ...:
/// see [`validate`]) are reported and skipped. Slices are
/// returned sorted by name so that the result does not depend on the order they were listed in.
pub(crate) fn parse_slices<'a>(
    service: &ServiceRef,
    slices: &[&'a EndpointSlice],
    node: &NodeInfo,
    problems: &mut Vec<Problem>,
) -> Vec<ParsedSlice<'a>> {
    let mut sorted: Vec<&'a EndpointSlice> = slices.to_vec();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Vec::with_capacity(sorted.len());
    for slice in sorted {
        let name = slice_name(slice);
        let family = match slice.address_type.as_str() {
            "FQDN" => continue,
            other => match spelling::address_family(other) {
                Some(f) => f,
                None => {
                    problems.push(Problem::UnknownAddressType {
                        service: service.clone(),
                        slice: name,
                        value: other.to_owned(),
                    });
                    continue;
                }
            },
        };
        let listed = slice.endpoints.as_endpoints();
        let mut endpoints = Vec::with_capacity(listed.len());
        for (i, ep) in listed.iter().enumerate() {
            let Some(first) = ep.addresses.first() else {
                continue;
            };
            let field = || format!("endpoints[{i}].addresses[0]");
            let addr: IpAddr = match first.parse() {
                Ok(a) => a,
                Err(_) => {
                    problems.push(Problem::InvalidEndpointAddress {
                        service: service.clone(),
                        slice: name.clone(),
                        field: field(),
                        value: first.clone(),
                    });
                    continue;
                }
            };
            if AddressFamily::of(&addr) != family {
                problems.push(Problem::AddressTypeMismatch {
                    service: service.clone(),
                    slice: name.clone(),
                    field: field(),
                    addr,
                    address_type: family,
                });
                continue;
            }
            if let Some(class) = validate::special_address(addr) {
                problems.push(Problem::SpecialEndpointAddress {
                    service: service.clone(),
                    slice: name.clone(),
                    field: field(),
                    addr,
                    class,
                });
                continue;
            }
            let cond = ep.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(true);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            let usability = if ready {
                Usability::Ready
            } else if serving && terminating {
                Usability::Terminating
            } else {
                Usability::Unusable
            };
            let zones = ep
                .hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .filter(|z| !z.is_empty())
                .map(|z| z.iter().map(|z| z.name.as_str()).collect());
            let local =
                ep.node_name.as_deref() == Some(node.name.as_str()) && !node.name.is_empty();
            endpoints.push(ParsedEndpoint {
                addr,
                usability,
                local,
                zones,
            });
        }
        out.push(ParsedSlice {
            name,
            family,
            ports: slice.ports.as_deref().unwrap_or(&[]),
            endpoints,
        });
    }
    out
}

/// How many distinct addresses of `parsed` are ready endpoints on this node.
pub(crate) fn local_ready(parsed: &[ParsedSlice<'_>]) -> usize {
    parsed
        .iter()
        .flat_map(|slice| &slice.endpoints)
        .filter(|ep| ep.local && ep.usability == Usability::Ready)
        .map(|ep| ep.addr)
        .collect::<std::collections::BTreeSet<IpAddr>>()
        .len()
}

/// Endpoint candidates of one Service port and family, deduplicated by address and port.
#[derive(Debug, Default)]
pub(crate) struct Candidates<'a> {
    by_addr: BTreeMap<(IpAddr, u16), ParsedEndpoint<'a>>,
}

impl<'a> Candidates<'a> {
    /// Adds an endpoint with its resolved port; a duplicate keeps its most usable copy.
    pub(crate) fn add(&mut self, ep: &ParsedEndpoint<'a>, port: u16) {
        match self.by_addr.get_mut(&(ep.addr, port)) {
            Some(existing) if existing.usability >= ep.usability => {}
            Some(existing) => *existing = ep.clone(),
            None => {
                self.by_addr.insert((ep.addr, port), ep.clone());
            }
        }
    }
}

/// The real servers for one Service port and family.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct EndpointSets {
    /// The cluster-wide set (after topology hints), for `Cluster` traffic policies.
    pub(crate) cluster: Vec<RealServer>,
    /// The node-local set, for `Local` traffic policies.
    pub(crate) local: Vec<RealServer>,
}

/// Chooses the cluster-wide and node-local sets (see the module docs).
pub(crate) fn select(
    candidates: &Candidates<'_>,
    node: &NodeInfo,
    config: &ProxyConfig,
) -> EndpointSets {
    let all: Vec<(&(IpAddr, u16), &ParsedEndpoint<'_>)> = candidates.by_addr.iter().collect();
    let cluster = choose(all.iter().copied());
    let cluster = apply_hints(cluster, node, config);
    let local = choose(all.iter().copied().filter(|(_, ep)| ep.local));
    EndpointSets {
        cluster: real_servers(&cluster),
        local: real_servers(&local),
    }
}

type Entry<'c, 'a> = (&'c (IpAddr, u16), &'c ParsedEndpoint<'a>);

/// Ready endpoints, or when there are none the serving-and-terminating ones.
fn choose<'c, 'a>(set: impl Iterator<Item = Entry<'c, 'a>> + Clone) -> Vec<Entry<'c, 'a>> {
    let ready: Vec<_> = set
        .clone()
        .filter(|(_, ep)| ep.usability == Usability::Ready)
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    set.filter(|(_, ep)| ep.usability == Usability::Terminating)
        .collect()
}

fn apply_hints<'c, 'a>(
    set: Vec<Entry<'c, 'a>>,
    node: &NodeInfo,
    config: &ProxyConfig,
) -> Vec<Entry<'c, 'a>> {
    let Some(zone) = node.zone.as_deref().filter(|z| !z.is_empty()) else {
        return set;
    };
    if !config.topology_hints || set.is_empty() || set.iter().any(|(_, ep)| ep.zones.is_none()) {
        return set;
    }
    let in_zone: Vec<_> = set
        .iter()
        .copied()
        .filter(|(_, ep)| ep.zones.as_ref().is_some_and(|z| z.contains(&zone)))
        .collect();
    if in_zone.is_empty() { set } else { in_zone }
}

fn real_servers(set: &[Entry<'_, '_>]) -> Vec<RealServer> {
    // The map iterates in (address, port) order, so the result is already sorted and unique.
    set.iter()
        .map(|((addr, port), ep)| RealServer {
            addr: *addr,
            port: *port,
            weight: 1,
            local: ep.local,
        })
        .collect()
}
