//! The desired state: entry points for one Service and for the whole node.
//!
//! [`compute_service`] turns one Service, its EndpointSlices, the node and the configuration
//! into that Service's virtual servers and problems; its cost is proportional to that Service
//! alone, and its result depends on nothing else. [`DesiredState`] collects those results,
//! keyed by [`VirtualServerKey`], and tells on each [`DesiredState::update`] which virtual
//! servers and VIPs changed, so a controller reacting to one Service or EndpointSlice event
//! only recomputes and reprograms that Service:
//!
//! ```
//! # use svc_controller::{DesiredState, NodeInfo, ProxyConfig, compute_service};
//! # use k8s_openapi::api::core::v1::Service;
//! # use k8s_openapi::api::discovery::v1::EndpointSlice;
//! # fn on_event(state: &mut DesiredState, svc: &Service, slices: &[&EndpointSlice]) {
//! let node = NodeInfo::new("node-a");
//! let config = ProxyConfig::default();
//! let changes = state.update(compute_service(svc, slices, &node, &config));
//! for key in &changes.virtual_servers {
//!     match state.virtual_servers().get(key) {
//!         Some(_vs) => { /* create or edit it in IPVS */ }
//!         None => { /* delete it from IPVS */ }
//!     }
//! }
//! # }
//! ```
//!
//! Input is checked against the Kubernetes API server's own rules for the fields read here,
//! since objects from a manifests folder never went through it: a ClusterIP, external IP or
//! load-balancer IP that is loopback, unspecified, link-local, multicast or broadcast, a
//! ClusterIP on one of the node's addresses, a `nodePort` or `healthCheckNodePort` outside the
//! NodePort range, an endpoint address of those kinds, are reported as [`Problem`]s and only
//! they are skipped. [`validate`] lists the rules, where each comes from, and what each
//! refusal skips.
//!
//! When two Services claim the same virtual server (two Services listing the same external IP
//! and port, say), the one that sorts first by namespace and name owns it and the other gets a
//! [`Problem::VirtualServerConflict`]. The rule is arbitrary but stable: the owner does not
//! change with the order events arrive in, and the loser takes over when the owner goes away.

pub mod endpoints;
pub mod ports;
pub mod reads;
pub mod service;
mod spelling;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::config::ProxyConfig;
use crate::model::{ServiceRef, VirtualServer, VirtualServerKey};
use crate::node::NodeInfo;
use crate::problem::Problem;

/// What one Service contributes to the node's IPVS table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDesired {
    /// The Service.
    pub service: ServiceRef,
    /// Its virtual servers. Empty for a Service that is skipped (ExternalName, headless, another
    /// proxy's) or has nothing valid to serve.
    pub virtual_servers: BTreeMap<VirtualServerKey, VirtualServer>,
    /// The problems found in its input, in the order they were found.
    pub problems: Vec<Problem>,
    /// The health check the node serves for it: a `LoadBalancer` Service with
    /// `externalTrafficPolicy: Local` and a `healthCheckNodePort`.
    pub health_check: Option<HealthCheck>,
    /// Its ports whose `Local` traffic policy finds no endpoint on this node while the
    /// Service has endpoints elsewhere (see [`NoLocalEndpoints`]).
    pub no_local_endpoints: NoLocalEndpoints,
}

/// Service ports with a `Local` traffic policy and no endpoint on this node although the
/// Service has endpoints elsewhere: their virtual servers of that policy have no real server,
/// and traffic to them is refused. Counted as kube-proxy counts its
/// `kubeproxy_sync_proxy_rules_no_local_endpoints_total`: once per Service port and address
/// family served, for each policy. A Service with no endpoint at all is not counted (it
/// refuses traffic whatever the policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NoLocalEndpoints {
    /// Under `internalTrafficPolicy: Local` (the ClusterIPs).
    pub internal: u32,
    /// Under `externalTrafficPolicy: Local` (NodePorts, external IPs, load-balancer IPs).
    pub external: u32,
}

impl NoLocalEndpoints {
    /// Whether nothing is counted.
    pub fn is_empty(self) -> bool {
        self == Self::default()
    }

    fn compact(self) -> [u16; 2] {
        let small = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
        [small(self.internal), small(self.external)]
    }

    fn from_compact([internal, external]: [u16; 2]) -> Self {
        Self {
            internal: internal.into(),
            external: external.into(),
        }
    }

    fn add(self, other: Self) -> Self {
        Self {
            internal: self.internal.saturating_add(other.internal),
            external: self.external.saturating_add(other.external),
        }
    }

    fn sub(self, other: Self) -> Self {
        Self {
            internal: self.internal.saturating_sub(other.internal),
            external: self.external.saturating_sub(other.external),
        }
    }
}

/// What a node answers on a Service's `healthCheckNodePort`, where the cloud's load balancer
/// asks whether to send the Service's external traffic to this node: with
/// `externalTrafficPolicy: Local` only nodes with a ready endpoint of their own should get it
/// (the external virtual servers of the others have no real server, see the crate
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// The TCP port (`spec.healthCheckNodePort`), on the node's addresses.
    pub node_port: u16,
    /// The Service's ready endpoints on this node (distinct addresses): the node is healthy
    /// for the Service when there is at least one.
    pub local_endpoints: u32,
}

impl ServiceDesired {
    /// The addresses to bind on the dummy interface for this Service.
    pub fn vips(&self) -> BTreeSet<IpAddr> {
        self.virtual_servers
            .values()
            .filter(|vs| vs.bind_address)
            .map(|vs| vs.key.addr)
            .collect()
    }
}

/// Computes the virtual servers of one Service.
///
/// `slices` should be the Service's EndpointSlices (same namespace, label
/// `kubernetes.io/service-name` equal to the Service's name, see [`group_slices`]); slices that
/// are not are ignored, so that the result depends on this Service's own input only. Never
/// panics; bad input is reported in [`ServiceDesired::problems`].
pub fn compute_service(
    service: &Service,
    slices: &[&EndpointSlice],
    node: &NodeInfo,
    config: &ProxyConfig,
) -> ServiceDesired {
    service::compute(service, slices, node, config)
}

/// The identity of a Service object (`metadata.namespace`, `metadata.name`; missing parts are
/// empty strings).
pub fn service_ref(service: &Service) -> ServiceRef {
    service::service_ref(service)
}

/// The Service an EndpointSlice belongs to (its namespace and its `kubernetes.io/service-name`
/// label), `None` when it has no such label.
pub fn slice_service(slice: &EndpointSlice) -> Option<ServiceRef> {
    service::slice_service(slice)
}

/// Groups EndpointSlices by the Service they belong to ([`slice_service`]); slices without the
/// label are left out.
pub fn group_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<ServiceRef, Vec<&'a EndpointSlice>> {
    let mut out: BTreeMap<ServiceRef, Vec<&'a EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if let Some(owner) = slice_service(slice) {
            out.entry(owner).or_default().push(slice);
        }
    }
    out
}

/// What an update changed in a [`DesiredState`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Virtual servers that appeared, disappeared or changed: look each up in
    /// [`DesiredState::virtual_servers`]; absent means delete.
    pub virtual_servers: BTreeSet<VirtualServerKey>,
    /// VIPs that must now be bound or unbound: look each up in [`DesiredState::vips`].
    pub vips: BTreeSet<IpAddr>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.virtual_servers.is_empty() && self.vips.is_empty()
    }
}

/// The whole desired IPVS state of the node: every virtual server, the VIPs to bind on the
/// dummy interface, and the problems of every Service.
///
/// Kept compact, as a node holds it for every Service: each Service's result as a boxed slice
/// sorted by key (a `BTreeMap` of one to three entries allocates a node for eleven), claims as
/// short sorted vectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// Each Service's own result (only Services with virtual servers, problems, a health check
    /// or ports without local endpoints).
    services: BTreeMap<ServiceRef, StoredService>,
    /// Which Services claim each virtual server, sorted; the first one owns it.
    claims: BTreeMap<VirtualServerKey, Vec<ServiceRef>>,
    /// The owners' virtual servers.
    virtual_servers: BTreeMap<VirtualServerKey, VirtualServer>,
    /// How many virtual servers bind each VIP.
    vip_refs: BTreeMap<IpAddr, usize>,
    /// The sum of every Service's [`NoLocalEndpoints`].
    no_local_endpoints: NoLocalEndpoints,
}

/// One Service's result as [`DesiredState`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredService {
    /// Its virtual servers, sorted by key.
    virtual_servers: Box<[VirtualServer]>,
    problems: Box<[Problem]>,
    health_check: Option<HealthCheck>,
    /// Its [`NoLocalEndpoints`], internal then external, saturated at `u16::MAX` (a Service
    /// has at most a few ports): kept small, as every stored Service has one.
    no_local_endpoints: [u16; 2],
}

impl StoredService {
    fn get(&self, key: &VirtualServerKey) -> Option<&VirtualServer> {
        self.virtual_servers
            .binary_search_by(|vs| vs.key.cmp(key))
            .ok()
            .map(|i| &self.virtual_servers[i])
    }

    fn keys(&self) -> impl Iterator<Item = &VirtualServerKey> + '_ {
        self.virtual_servers.iter().map(|vs| &vs.key)
    }
}

impl DesiredState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Computes the state of a whole node from every Service and EndpointSlice (a full resync).
    pub fn compute(
        services: &[Service],
        slices: &[EndpointSlice],
        node: &NodeInfo,
        config: &ProxyConfig,
    ) -> Self {
        let grouped = group_slices(slices);
        let mut state = DesiredState::new();
        for svc in services {
            let own = grouped
                .get(&service_ref(svc))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            state.update(compute_service(svc, own, node, config));
        }
        state
    }

    /// Replaces one Service's contribution with `desired`; costs work proportional to that
    /// Service's old and new virtual servers.
    pub fn update(&mut self, desired: ServiceDesired) -> Changes {
        let sref = desired.service.clone();
        let mut touched: BTreeSet<VirtualServerKey> = BTreeSet::new();
        if let Some(old) = self.services.remove(&sref) {
            self.no_local_endpoints = self
                .no_local_endpoints
                .sub(NoLocalEndpoints::from_compact(old.no_local_endpoints));
            for key in old.keys() {
                self.unclaim(key, &sref);
                touched.insert(*key);
            }
        }
        for key in desired.virtual_servers.keys() {
            let claimants = self.claims.entry(*key).or_default();
            if let Err(at) = claimants.binary_search(&sref) {
                claimants.insert(at, sref.clone());
            }
            touched.insert(*key);
        }
        if !desired.virtual_servers.is_empty()
            || !desired.problems.is_empty()
            || desired.health_check.is_some()
            || !desired.no_local_endpoints.is_empty()
        {
            let no_local_endpoints = desired.no_local_endpoints.compact();
            self.no_local_endpoints = self
                .no_local_endpoints
                .add(NoLocalEndpoints::from_compact(no_local_endpoints));
            let stored = StoredService {
                virtual_servers: desired.virtual_servers.into_values().collect(),
                problems: desired.problems.into_boxed_slice(),
                health_check: desired.health_check,
                no_local_endpoints,
            };
            self.services.insert(sref, stored);
        }
        let mut changes = Changes::default();
        for key in touched {
            self.refresh(key, &mut changes);
        }
        changes
    }

    /// Removes a Service (it was deleted, or is no longer handled by this proxy).
    pub fn remove(&mut self, service: &ServiceRef) -> Changes {
        self.update(ServiceDesired {
            service: service.clone(),
            virtual_servers: BTreeMap::new(),
            problems: Vec::new(),
            health_check: None,
            no_local_endpoints: NoLocalEndpoints::default(),
        })
    }

    /// Every virtual server this node should have.
    pub fn virtual_servers(&self) -> &BTreeMap<VirtualServerKey, VirtualServer> {
        &self.virtual_servers
    }

    /// The addresses to bind on the dummy interface, sorted.
    pub fn vips(&self) -> BTreeSet<IpAddr> {
        self.vip_refs.keys().copied().collect()
    }

    /// Whether `addr` should be bound on the dummy interface.
    pub fn has_vip(&self, addr: &IpAddr) -> bool {
        self.vip_refs.contains_key(addr)
    }

    /// One Service's own result (a copy), if it has virtual servers, problems or a health
    /// check.
    pub fn service(&self, service: &ServiceRef) -> Option<ServiceDesired> {
        let stored = self.services.get(service)?;
        Some(ServiceDesired {
            service: service.clone(),
            virtual_servers: stored
                .virtual_servers
                .iter()
                .map(|vs| (vs.key, vs.clone()))
                .collect(),
            problems: stored.problems.to_vec(),
            health_check: stored.health_check,
            no_local_endpoints: NoLocalEndpoints::from_compact(stored.no_local_endpoints),
        })
    }

    /// Every Service's health check (see [`HealthCheck`]).
    pub fn health_checks(&self) -> impl Iterator<Item = (&ServiceRef, HealthCheck)> {
        self.services
            .iter()
            .filter_map(|(service, stored)| Some((service, stored.health_check?)))
    }

    /// The Service ports with a `Local` traffic policy and no endpoint on this node, over
    /// every Service (see [`NoLocalEndpoints`]).
    pub fn no_local_endpoints(&self) -> NoLocalEndpoints {
        self.no_local_endpoints
    }

    /// The problems of one Service, including conflicts with other Services.
    pub fn problems_of(&self, service: &ServiceRef) -> Vec<Problem> {
        let Some(desired) = self.services.get(service) else {
            return Vec::new();
        };
        let mut out = desired.problems.to_vec();
        out.extend(desired.keys().filter_map(|key| self.conflict(key, service)));
        out
    }

    /// The problems of every Service, grouped by Service (sorted by namespace and name).
    pub fn problems(&self) -> Vec<Problem> {
        self.services
            .keys()
            .flat_map(|s| self.problems_of(s))
            .collect()
    }

    fn conflict(&self, key: &VirtualServerKey, service: &ServiceRef) -> Option<Problem> {
        let owner = self.claims.get(key)?.first()?;
        (owner != service).then(|| Problem::VirtualServerConflict {
            service: service.clone(),
            key: *key,
            owner: owner.clone(),
        })
    }

    fn unclaim(&mut self, key: &VirtualServerKey, service: &ServiceRef) {
        if let Some(claimants) = self.claims.get_mut(key) {
            claimants.retain(|c| c != service);
            if claimants.is_empty() {
                self.claims.remove(key);
            }
        }
    }

    /// Recomputes the owner's virtual server for `key` and records what changed.
    fn refresh(&mut self, key: VirtualServerKey, changes: &mut Changes) {
        let new = self
            .claims
            .get(&key)
            .and_then(|claimants| claimants.first())
            .and_then(|owner| self.services.get(owner))
            .and_then(|d| d.get(&key))
            .cloned();
        let old = self.virtual_servers.get(&key);
        if old == new.as_ref() {
            return;
        }
        changes.virtual_servers.insert(key);
        let old_vip = old.filter(|vs| vs.bind_address).map(|vs| vs.key.addr);
        // Take the new reference before dropping the old one, so that a VIP kept by the new
        // owner is not reported as changed.
        match new {
            Some(vs) => {
                if vs.bind_address {
                    let count = self.vip_refs.entry(key.addr).or_insert(0);
                    *count += 1;
                    if *count == 1 {
                        changes.vips.insert(key.addr);
                    }
                }
                self.virtual_servers.insert(key, vs);
            }
            None => {
                self.virtual_servers.remove(&key);
            }
        }
        if let Some(addr) = old_vip {
            self.release_vip(addr, changes);
        }
    }

    fn release_vip(&mut self, addr: IpAddr, changes: &mut Changes) {
        if let Some(count) = self.vip_refs.get_mut(&addr) {
            *count -= 1;
            if *count == 0 {
                self.vip_refs.remove(&addr);
                changes.vips.insert(addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_balancer_ips_carry_their_familys_source_ranges_and_a_bad_list_closes_them() {
        use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};

        use crate::model::Exposure;

        let lb = |ranges: &[&str]| {
            let mut svc = crate::testing::service("shop", "lb", "10.96.0.20");
            let spec = svc.spec.as_mut().unwrap();
            spec.type_ = Some("LoadBalancer".into());
            spec.ports.as_mut().unwrap()[0].node_port = Some(30080);
            spec.load_balancer_source_ranges =
                Some(ranges.iter().map(|r| (*r).to_owned()).collect());
            svc.status = Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some("203.0.113.7".into()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            });
            let mut node = NodeInfo::new("node-a");
            node.addresses = vec!["192.168.1.10".parse().unwrap()];
            let out = compute_service(&svc, &[], &node, &ProxyConfig::default());
            let ranges = |exposure: Exposure| {
                out.virtual_servers
                    .values()
                    .find(|vs| vs.exposure == exposure)
                    .map(|vs| vs.source_ranges.as_deref().map(<[ipnet::IpNet]>::to_vec))
                    .unwrap()
            };
            assert_eq!(
                ranges(Exposure::NodePort),
                None,
                "NodePorts are not filtered"
            );
            assert_eq!(ranges(Exposure::ClusterIp), None);
            (ranges(Exposure::LoadBalancer), out.problems.len())
        };
        let net = |t: &str| t.parse::<ipnet::IpNet>().unwrap();
        assert_eq!(lb(&[]), (None, 0));
        assert_eq!(
            lb(&[" 192.0.2.7/24 ", "fd00::/8", "198.51.100.7/32"]),
            (Some(vec![net("192.0.2.0/24"), net("198.51.100.7/32")]), 0),
            "trimmed, host bits dropped, the family's only"
        );
        assert_eq!(lb(&["fd00::/8"]), (None, 0), "only the other family: open");
        assert_eq!(lb(&["office"]), (Some(vec![]), 1), "nothing valid: closed");
        assert_eq!(
            lb(&["office", "192.0.2.0/24"]),
            (Some(vec![net("192.0.2.0/24")]), 1)
        );
    }

    #[test]
    fn the_count_of_ports_without_local_endpoints_costs_a_stored_service_nothing() {
        // Two boxed slices and the health check, padded: the count fits in the padding.
        assert!(std::mem::size_of::<StoredService>() <= 6 * std::mem::size_of::<usize>());
    }

    #[test]
    fn counts_beyond_what_is_stored_saturate_and_totals_stay_consistent() {
        let sref = ServiceRef::new("ns", "many-ports");
        let many = NoLocalEndpoints {
            internal: 70_000,
            external: 3,
        };
        let mut state = DesiredState::new();
        state.update(ServiceDesired {
            service: sref.clone(),
            virtual_servers: BTreeMap::new(),
            problems: Vec::new(),
            health_check: None,
            no_local_endpoints: many,
        });
        let expected = NoLocalEndpoints {
            internal: u32::from(u16::MAX),
            external: 3,
        };
        assert_eq!(state.no_local_endpoints(), expected);
        assert_eq!(
            state.service(&sref).map(|s| s.no_local_endpoints),
            Some(expected)
        );
        state.remove(&sref);
        assert_eq!(state.no_local_endpoints(), NoLocalEndpoints::default());
        assert!(state.service(&sref).is_none());
    }
}
