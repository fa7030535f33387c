//! The virtual servers of one Service.
//!
//! Which addresses a Service gets (see the crate docs for the why):
//! - every `spec.clusterIPs` entry (or `spec.clusterIP` when the list is empty), one per family;
//! - for `NodePort` and `LoadBalancer` Services with a `nodePort`, every NodePort address of
//!   this node ([`ProxyConfig::node_port_addresses`]) of a family the Service has;
//! - every `spec.externalIPs` entry;
//! - for `LoadBalancer` Services, every `status.loadBalancer.ingress[].ip` whose `ipMode` is
//!   unset or `VIP` (`Proxy` means the load balancer does not deliver packets to that IP).
//!
//! Each address is combined with every valid Service port; the real servers are those of the
//! address's family, chosen by [`endpoints`] under the traffic policy that
//! applies to the address (internal for ClusterIPs, external for the rest).
//!
//! Addresses and ports the API server would refuse (a loopback ClusterIP, a ClusterIP on one
//! of the node's addresses, a `nodePort` outside the NodePort range, ...) are reported and
//! skipped: the rules, and how much each refusal skips, are in [`validate`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use ipvs::model::{AddressFamily, Persistence, PersistenceNetmask, Scheduler};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::endpoints::{self, Candidates, EndpointSets};
use super::ports::{self, ServicePortSpec};
use super::spelling;
use super::validate;
use super::{HealthCheck, NoLocalEndpoints, ServiceDesired};
use crate::config::{
    DEFAULT_AFFINITY_TIMEOUT_SECONDS, MAX_AFFINITY_TIMEOUT_SECONDS, ProxyConfig,
    SCHEDULER_ANNOTATION, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL,
};
use crate::model::{Exposure, ServiceRef, VirtualServer, VirtualServerKey};
use crate::node::NodeInfo;
use crate::problem::Problem;

/// The Service's identity (`namespace/name`; missing parts are empty).
pub(crate) fn service_ref(service: &Service) -> ServiceRef {
    ServiceRef::new(
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone().unwrap_or_default(),
    )
}

/// The Service an EndpointSlice belongs to: its namespace and its
/// `kubernetes.io/service-name` label. `None` for a slice without that label.
pub(crate) fn slice_service(slice: &EndpointSlice) -> Option<ServiceRef> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(ServiceRef::new(
        slice.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

/// Whether this proxy handles the Service, by its `service.kubernetes.io/service-proxy-name`
/// label (see [`ProxyConfig::service_proxy_name`]).
pub(crate) fn is_handled(service: &Service, config: &ProxyConfig) -> bool {
    let label = service
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_PROXY_NAME_LABEL));
    match (&config.service_proxy_name, label) {
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(ours), Some(theirs)) => ours == theirs,
    }
}

/// The addresses of one Service, with the field each came from.
struct Address {
    addr: IpAddr,
    exposure: Exposure,
    field: String,
}

/// Computes one Service (see [`compute_service`](super::compute_service)).
pub(crate) fn compute(
    service: &Service,
    slices: &[&EndpointSlice],
    node: &NodeInfo,
    config: &ProxyConfig,
) -> ServiceDesired {
    let sref = service_ref(service);
    let mut out = ServiceDesired {
        service: sref.clone(),
        virtual_servers: BTreeMap::new(),
        problems: Vec::new(),
        health_check: None,
        no_local_endpoints: NoLocalEndpoints::default(),
    };
    if !is_handled(service, config) {
        return out;
    }
    let Some(spec) = service.spec.as_ref() else {
        return out;
    };
    let problems = &mut out.problems;

    let (node_ports, load_balancer) = match spec.type_.as_deref() {
        None | Some("ClusterIP") => (false, false),
        Some("NodePort") => (true, false),
        Some("LoadBalancer") => (true, true),
        Some("ExternalName") => return out,
        Some(other) => {
            problems.push(invalid_value(
                &sref,
                "spec.type",
                other,
                "ClusterIP, NodePort, LoadBalancer or ExternalName",
                "treated as ClusterIP",
            ));
            (false, false)
        }
    };
    let mut cluster_ip_strings: Vec<(String, &str)> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (format!("spec.clusterIPs[{i}]"), ip.as_str()))
            .collect(),
        _ => spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty())
            .map(|ip| vec![("spec.clusterIP".to_owned(), ip)])
            .unwrap_or_default(),
    };
    let mismatch = validate::cluster_ip_mismatch(&sref, spec);
    if cluster_ip_strings.iter().any(|(_, ip)| *ip == "None")
        || mismatch.as_ref().is_some_and(|m| m.headless)
    {
        // Headless: DNS points at the pods directly; nothing to proxy.
        problems.extend(mismatch.map(|m| m.problem));
        return out;
    }
    if let Some(m) = mismatch {
        problems.push(m.problem);
        cluster_ip_strings.clear();
    }

    // Addresses.
    let mut addresses: Vec<Address> = Vec::new();
    let mut cluster_ip_families = Vec::new();
    // The families of the ClusterIPs that parse, refused or not: a refused ClusterIP still
    // says which family the Service is.
    let mut declared_families = BTreeSet::new();
    for (field, ip) in cluster_ip_strings {
        let Some(addr) = parse_address(&sref, &field, ip, problems) else {
            continue;
        };
        declared_families.insert(AddressFamily::of(&addr));
        if validate::cluster_ip(
            &sref,
            &field,
            addr,
            node,
            &mut cluster_ip_families,
            problems,
        ) {
            addresses.push(Address {
                addr,
                exposure: Exposure::ClusterIp,
                field,
            });
        }
    }
    let families = service_families(spec, declared_families);
    if node_ports {
        for addr in config.node_port_addresses(node) {
            if families.is_empty() || families.contains(&AddressFamily::of(&addr)) {
                let field = format!("node address {addr}");
                addresses.push(Address {
                    addr,
                    exposure: Exposure::NodePort,
                    field,
                });
            }
        }
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        let field = format!("spec.externalIPs[{i}]");
        if let Some(addr) = parse_address(&sref, &field, ip, problems)
            && validate::service_address(&sref, &field, addr, problems)
            && served(&sref, &field, addr, &families, problems)
        {
            addresses.push(Address {
                addr,
                exposure: Exposure::ExternalIp,
                field,
            });
        }
    }
    if load_balancer {
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_deref())
            .unwrap_or(&[]);
        for (i, ing) in ingress.iter().enumerate() {
            let Some(ip) = ing.ip.as_deref().filter(|ip| !ip.is_empty()) else {
                continue;
            };
            match ing.ip_mode.as_deref() {
                None | Some("VIP") => {}
                Some("Proxy") => continue,
                Some(other) => {
                    let field = format!("status.loadBalancer.ingress[{i}].ipMode");
                    problems.push(invalid_value(
                        &sref,
                        &field,
                        other,
                        "VIP or Proxy",
                        "ingress skipped",
                    ));
                    continue;
                }
            }
            let field = format!("status.loadBalancer.ingress[{i}].ip");
            if let Some(addr) = parse_address(&sref, &field, ip, problems)
                && validate::service_address(&sref, &field, addr, problems)
                && served(&sref, &field, addr, &families, problems)
            {
                addresses.push(Address {
                    addr,
                    exposure: Exposure::LoadBalancer,
                    field,
                });
            }
        }
    }

    // Per-Service settings.
    let service_ports = ports::service_ports(
        &sref,
        spec.ports.as_deref().unwrap_or(&[]),
        node_ports,
        &config.node_port_range,
        problems,
    );
    let scheduler = scheduler(service, &sref, config, problems);
    let affinity_timeout = persistence(spec, &sref, problems);
    let external_local = policy_is_local(
        spec.external_traffic_policy.as_deref(),
        &sref,
        "spec.externalTrafficPolicy",
        problems,
    );
    let internal_local = policy_is_local(
        spec.internal_traffic_policy.as_deref(),
        &sref,
        "spec.internalTrafficPolicy",
        problems,
    );
    if addresses.is_empty() || service_ports.is_empty() {
        return out;
    }

    // Endpoints, checked once for the whole Service.
    let own: Vec<&EndpointSlice> = slices
        .iter()
        .copied()
        .filter(|s| slice_service(s).as_ref() == Some(&sref))
        .collect();
    let parsed = endpoints::parse_slices(&sref, &own, node, problems);
    if load_balancer && external_local {
        out.health_check = health_check(spec, &sref, &parsed, config, problems);
    }
    let source_ranges = if load_balancer {
        source_ranges(spec, &sref, problems)
    } else {
        SourceRanges::default()
    };

    let used_families: BTreeSet<AddressFamily> = addresses
        .iter()
        .map(|a| AddressFamily::of(&a.addr))
        .collect();
    for sp in &service_ports {
        let mut sets: BTreeMap<AddressFamily, EndpointSets> = BTreeMap::new();
        for family in &used_families {
            sets.insert(
                *family,
                endpoint_sets(&sref, sp, *family, &parsed, node, config, problems),
            );
        }
        // As kube-proxy: a policy counts when the port and family have endpoints, none here,
        // and an address the policy applies to.
        for (family, set) in &sets {
            if set.cluster.is_empty() || !set.local.is_empty() {
                continue;
            }
            let served = |external: bool| {
                addresses.iter().any(|a| {
                    AddressFamily::of(&a.addr) == *family
                        && a.exposure.is_external() == external
                        && (a.exposure != Exposure::NodePort || sp.node_port.is_some())
                })
            };
            if internal_local && served(false) {
                out.no_local_endpoints.internal = out.no_local_endpoints.internal.saturating_add(1);
            }
            if external_local && served(true) {
                out.no_local_endpoints.external = out.no_local_endpoints.external.saturating_add(1);
            }
        }
        for a in &addresses {
            let family = AddressFamily::of(&a.addr);
            let Some(set) = sets.get(&family) else {
                continue;
            };
            let local = if a.exposure.is_external() {
                external_local
            } else {
                internal_local
            };
            let port = match a.exposure {
                Exposure::NodePort => match sp.node_port {
                    Some(p) => p,
                    None => continue,
                },
                _ => sp.port,
            };
            let key = VirtualServerKey {
                addr: a.addr,
                protocol: sp.protocol,
                port,
            };
            if out.virtual_servers.contains_key(&key) {
                problems.push(Problem::DuplicateVirtualServer {
                    service: sref.clone(),
                    field: a.field.clone(),
                    key,
                });
                continue;
            }
            let vs = VirtualServer {
                key,
                scheduler: scheduler.clone(),
                persistence: affinity_timeout.map(|timeout_secs| Persistence {
                    timeout_secs,
                    netmask: PersistenceNetmask::host(family),
                }),
                real_servers: if local {
                    set.local.clone()
                } else {
                    set.cluster.clone()
                },
                service: sref.clone(),
                port_name: sp.name.clone(),
                exposure: a.exposure,
                bind_address: a.exposure != Exposure::NodePort && !node.addresses.contains(&a.addr),
                local_policy: local,
                source_ranges: match a.exposure {
                    Exposure::LoadBalancer => source_ranges.of(family),
                    _ => None,
                },
            };
            out.virtual_servers.insert(key, vs);
        }
    }
    out
}

/// The families the Service is served in: those of its cluster IPs (`from_ips`, those that
/// parse), or `spec.ipFamilies` when it has none. Empty means unknown (no restriction).
fn service_families(
    spec: &ServiceSpec,
    from_ips: BTreeSet<AddressFamily>,
) -> BTreeSet<AddressFamily> {
    if !from_ips.is_empty() {
        return from_ips;
    }
    spec.ip_families
        .iter()
        .flatten()
        .filter_map(|f| spelling::address_family(f))
        .collect()
}

fn served(
    sref: &ServiceRef,
    field: &str,
    addr: IpAddr,
    families: &BTreeSet<AddressFamily>,
    problems: &mut Vec<Problem>,
) -> bool {
    let family = AddressFamily::of(&addr);
    if families.is_empty() || families.contains(&family) {
        return true;
    }
    problems.push(Problem::FamilyNotServed {
        service: sref.clone(),
        field: field.to_owned(),
        addr,
        family,
    });
    false
}

#[allow(clippy::too_many_arguments)]
fn endpoint_sets(
    sref: &ServiceRef,
    sp: &ServicePortSpec,
    family: AddressFamily,
    slices: &[endpoints::ParsedSlice<'_>],
    node: &NodeInfo,
    config: &ProxyConfig,
    problems: &mut Vec<Problem>,
) -> EndpointSets {
    let mut candidates = Candidates::default();
    for slice in slices
        .iter()
        .filter(|s| s.family == family && !s.endpoints.is_empty())
    {
        let Some(port) = ports::resolve_in_slice(sref, sp, &slice.name, slice.ports, problems)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            candidates.add(ep, port);
        }
    }
    endpoints::select(&candidates, node, config)
}

/// A Service's `loadBalancerSourceRanges`, parsed.
#[derive(Debug, Default)]
struct SourceRanges {
    /// Whether the Service lists any (valid or not).
    listed: bool,
    /// Whether every entry listed is invalid.
    none_valid: bool,
    ranges: Vec<IpNet>,
}

impl SourceRanges {
    /// The ranges of `family` a load-balancer IP of that family lets through; `None` when
    /// every source may pass: nothing listed, or only ranges of the other family (as
    /// kube-proxy reads them). A list whose every entry is invalid lets nothing through:
    /// a typo closes the load balancer rather than opening it.
    fn of(&self, family: AddressFamily) -> Option<Box<[IpNet]>> {
        let own: Box<[IpNet]> = self
            .ranges
            .iter()
            .filter(|r| AddressFamily::of(&r.addr()) == family)
            .copied()
            .collect();
        (self.listed && (!own.is_empty() || self.none_valid)).then_some(own)
    }
}

/// Parses `spec.loadBalancerSourceRanges` (kube-proxy trims spaces around each entry).
fn source_ranges(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    sref: &ServiceRef,
    problems: &mut Vec<Problem>,
) -> SourceRanges {
    let listed: Vec<&str> = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .collect();
    let mut ranges = Vec::new();
    for (i, text) in listed.iter().enumerate() {
        match text.parse::<IpNet>() {
            Ok(net) => ranges.push(net.trunc()),
            Err(_) => problems.push(invalid_value(
                sref,
                &format!("spec.loadBalancerSourceRanges[{i}]"),
                text,
                "a CIDR",
                "range skipped: the load balancer stays closed to it",
            )),
        }
    }
    ranges.sort();
    ranges.dedup();
    SourceRanges {
        listed: !listed.is_empty(),
        none_valid: !listed.is_empty() && ranges.is_empty(),
        ranges,
    }
}

fn parse_address(
    sref: &ServiceRef,
    field: &str,
    value: &str,
    problems: &mut Vec<Problem>,
) -> Option<IpAddr> {
    match value.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(Problem::InvalidAddress {
                service: sref.clone(),
                field: field.to_owned(),
                value: value.to_owned(),
            });
            None
        }
    }
}

fn invalid_value(
    sref: &ServiceRef,
    field: &str,
    value: &str,
    expected: &'static str,
    action: &'static str,
) -> Problem {
    Problem::InvalidValue {
        service: sref.clone(),
        field: field.to_owned(),
        value: value.to_owned(),
        expected,
        action,
    }
}

fn scheduler(
    service: &Service,
    sref: &ServiceRef,
    config: &ProxyConfig,
    problems: &mut Vec<Problem>,
) -> Scheduler {
    let Some(value) = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEDULER_ANNOTATION))
    else {
        return config.default_scheduler.clone();
    };
    match crate::scheduler::in_tree(value.trim()) {
        Ok(s) => s,
        Err(_) => {
            problems.push(Problem::UnknownScheduler {
                service: sref.clone(),
                annotation: SCHEDULER_ANNOTATION,
                value: value.clone(),
                default: config.default_scheduler.name().to_owned(),
            });
            config.default_scheduler.clone()
        }
    }
}

fn persistence(spec: &ServiceSpec, sref: &ServiceRef, problems: &mut Vec<Problem>) -> Option<u32> {
    match spec.session_affinity.as_deref() {
        None | Some("None") => None,
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout_seconds = match timeout {
                None => DEFAULT_AFFINITY_TIMEOUT_SECONDS,
                Some(t) => match u32::try_from(t) {
                    Ok(t) if (1..=MAX_AFFINITY_TIMEOUT_SECONDS).contains(&t) => t,
                    _ => {
                        problems.push(Problem::InvalidAffinityTimeout {
                            service: sref.clone(),
                            value: t,
                        });
                        DEFAULT_AFFINITY_TIMEOUT_SECONDS
                    }
                },
            };
            Some(timeout_seconds)
        }
        Some(other) => {
            problems.push(invalid_value(
                sref,
                "spec.sessionAffinity",
                other,
                "None or ClientIP",
                "treated as None",
            ));
            None
        }
    }
}

/// The health check of a `LoadBalancer` Service with `externalTrafficPolicy: Local`: its
/// `healthCheckNodePort` (none set, none served; outside the NodePort range, a problem, see
/// [`validate`]) and its ready endpoints on this node, each address once (an endpoint in
/// several slices, or serving several ports, counts once).
fn health_check(
    spec: &ServiceSpec,
    sref: &ServiceRef,
    parsed: &[endpoints::ParsedSlice<'_>],
    config: &ProxyConfig,
    problems: &mut Vec<Problem>,
) -> Option<HealthCheck> {
    let port = spec.health_check_node_port?;
    let node_port = validate::node_port(
        sref,
        || "spec.healthCheckNodePort".to_owned(),
        port,
        &config.node_port_range,
        "no health check served",
        problems,
    )?;
    Some(HealthCheck {
        node_port,
        local_endpoints: u32::try_from(endpoints::local_ready(parsed)).unwrap_or(u32::MAX),
    })
}

fn policy_is_local(
    value: Option<&str>,
    sref: &ServiceRef,
    field: &str,
    problems: &mut Vec<Problem>,
) -> bool {
    match value {
        None | Some("Cluster") => false,
        Some("Local") => true,
        Some(other) => {
            problems.push(invalid_value(
                sref,
                field,
                other,
                "Cluster or Local",
                "treated as Cluster",
            ));
            false
        }
    }
}
