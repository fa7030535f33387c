//! Controller configuration and the well-known Kubernetes names it uses.

use std::net::{IpAddr, Ipv6Addr};
use std::ops::RangeInclusive;

use ipnet::IpNet;
use ipvs::model::Scheduler;
use serde::{Deserialize, Serialize};

use crate::node::NodeInfo;
use crate::ownership::DEFAULT_NODE_PORT_RANGE;

/// The dummy interface VIPs are bound on by default (kube-proxy's name, so existing tooling and
/// firewall rules keep working).
pub const DEFAULT_DUMMY_INTERFACE: &str = "kube-ipvs0";

/// The annotation that overrides the IPVS scheduler for one Service, e.g.
/// `ipvs.kube-proxy.rs/scheduler: wlc`. The value must be one of the in-tree scheduler names
/// ([`IN_TREE_NAMES`](crate::scheduler::IN_TREE_NAMES)); anything else is reported and the configured default is used.
pub const SCHEDULER_ANNOTATION: &str = "ipvs.kube-proxy.rs/scheduler";

/// The label that hands a Service to another proxy.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// The annotation on EndpointSlices that records when the change behind them happened
/// (kube-proxy's network-programming latency is measured from it).
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The node label that names the node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The label that joins an EndpointSlice to its Service (by name, in the same namespace).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours), as the API server
/// defaults it.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;

/// The largest `sessionAffinityConfig.clientIP.timeoutSeconds` the API accepts (1 day).
pub const MAX_AFFINITY_TIMEOUT_SECONDS: u32 = 86_400;

/// How this node's proxy is configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// The scheduler of every virtual server whose Service has no [`SCHEDULER_ANNOTATION`]:
    /// an in-tree one, written by name.
    #[serde(with = "crate::scheduler::by_name")]
    pub default_scheduler: Scheduler,
    /// Which node addresses get NodePort virtual servers (kube-proxy's `nodePortAddresses`).
    /// Empty means every usable node address. Loopback and IPv6 link-local addresses are never
    /// used, whatever these say: see [`ProxyConfig::node_port_addresses`].
    pub node_port_cidrs: Vec<IpNet>,
    /// The dummy interface VIPs are bound on ([`DEFAULT_DUMMY_INTERFACE`]).
    pub dummy_interface: String,
    /// Which Services this proxy handles, by the [`SERVICE_PROXY_NAME_LABEL`] label. `None` (the
    /// default, as kube-proxy) handles the Services without that label and skips every labelled
    /// one; `Some(name)` handles only the Services labelled with exactly `name`.
    pub service_proxy_name: Option<String>,
    /// Whether to honour topology hints (`hints.forZones`) on endpoints. On by default.
    pub topology_hints: bool,
    /// The cluster's NodePort range (the API server's `--service-node-port-range`,
    /// [`DEFAULT_NODE_PORT_RANGE`] by default). A `nodePort` or `healthCheckNodePort` outside
    /// it is refused (see [`desired::validate`](crate::desired::validate)): the API server
    /// never allocates one, and the reconciler's ownership rule covers node addresses only on
    /// these ports, so it must be the same range as the reconciler's.
    pub node_port_range: RangeInclusive<u16>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            default_scheduler: crate::scheduler::KUBE_PROXY_DEFAULT,
            node_port_cidrs: Vec::new(),
            dummy_interface: DEFAULT_DUMMY_INTERFACE.to_owned(),
            service_proxy_name: None,
            topology_hints: true,
            node_port_range: DEFAULT_NODE_PORT_RANGE,
        }
    }
}

impl ProxyConfig {
    /// The node addresses that get NodePort virtual servers, sorted and without duplicates.
    ///
    /// An address is used when it is inside one of [`node_port_cidrs`](Self::node_port_cidrs)
    /// (or that list is empty) and it is neither:
    /// - loopback (`127.0.0.0/8`, `::1`): IPVS does not handle NodePort on loopback. Packets to
    ///   127.0.0.1 are routed locally and, once IPVS rewrites the destination to a pod, the kernel
    ///   drops them as martians (a loopback source may not leave the host); this is kubernetes
    ///   #56320 and #67730. kube-proxy's iptables mode needs `route_localnet` for it; IPVS has no
    ///   such knob, so we do not pretend to serve it.
    /// - IPv6 link-local (`fe80::/10`): only meaningful with a zone (interface) that an IPVS
    ///   virtual server cannot carry, and not reachable from other links anyway.
    /// - unspecified or multicast: not an address a node is reached on.
    pub fn node_port_addresses(&self, node: &NodeInfo) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = node
            .addresses
            .iter()
            .copied()
            .filter(|a| usable_node_port_address(*a))
            .filter(|a| {
                self.node_port_cidrs.is_empty()
                    || self.node_port_cidrs.iter().any(|n| n.contains(a))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn usable_node_port_address(addr: IpAddr) -> bool {
    if addr.is_loopback() || addr.is_unspecified() || addr.is_multicast() {
        return false;
    }
    match addr {
        IpAddr::V4(_) => true,
        IpAddr::V6(a) => !is_ipv6_link_local(a),
    }
}

fn is_ipv6_link_local(a: Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_port_addresses_filters() {
        let node = NodeInfo {
            name: "n".into(),
            zone: None,
            addresses: [
                "127.0.0.1",
                "::1",
                "fe80::1",
                "192.168.1.10",
                "10.0.0.5",
                "2001:db8::5",
                "0.0.0.0",
                "192.168.1.10",
            ]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
        };
        let all = ProxyConfig::default().node_port_addresses(&node);
        let all: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(all, ["10.0.0.5", "192.168.1.10", "2001:db8::5"]);

        let cfg = ProxyConfig {
            node_port_cidrs: vec![
                "192.168.0.0/16".parse().unwrap(),
                "127.0.0.0/8".parse().unwrap(),
            ],
            ..ProxyConfig::default()
        };
        let some: Vec<String> = cfg
            .node_port_addresses(&node)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(some, ["192.168.1.10"]);
    }
}
