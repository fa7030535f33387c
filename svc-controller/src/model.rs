//! Controller-side output types: what the IPVS table should contain.
//!
//! They speak the library's vocabulary ([`Protocol`], [`AddressFamily`], [`Scheduler`],
//! [`Persistence`] are `ipvs::model`'s) and add what a Service proxy knows and the kernel
//! does not: which Service and port a virtual server was made for, how it is exposed, and
//! whether its address is bound on the dummy interface. [`mapping`](crate::mapping) turns
//! them into the library's services and destinations.

use std::fmt;
use std::net::IpAddr;

use ipvs::model::{AddressFamily, Persistence, Protocol, Scheduler};
use serde::{Deserialize, Serialize};

/// The identity of a Kubernetes Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceRef {
    /// `metadata.namespace` (empty when the object had none).
    pub namespace: String,
    /// `metadata.name` (empty when the object had none).
    pub name: String,
}

impl ServiceRef {
    /// A reference to `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What identifies an IPVS virtual server: (address, protocol, port).
///
/// Ordered by address, then protocol, then port, so a `BTreeMap` of them lists each VIP's
/// virtual servers together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualServerKey {
    /// The virtual address (a ClusterIP, node address, external IP or load-balancer IP).
    pub addr: IpAddr,
    /// The transport protocol: TCP, UDP or SCTP, the protocols of a Service port.
    pub protocol: Protocol,
    /// The virtual port, host order.
    pub port: u16,
}

impl VirtualServerKey {
    /// The address family of the virtual server.
    pub fn family(&self) -> AddressFamily {
        AddressFamily::of(&self.addr)
    }
}

impl fmt::Display for VirtualServerKey {
    /// `TCP 10.96.0.10:53`, `UDP [fd00::a]:53`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.protocol,
            SocketDisplay(self.addr, self.port)
        )
    }
}

/// Which kind of Service address a virtual server was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Exposure {
    /// One of `spec.clusterIPs`.
    ClusterIp,
    /// A node address and `spec.ports[].nodePort`.
    NodePort,
    /// One of `spec.externalIPs`.
    ExternalIp,
    /// One of `status.loadBalancer.ingress[].ip`.
    LoadBalancer,
}

impl Exposure {
    /// Whether traffic to this address comes from outside the cluster, so that
    /// `externalTrafficPolicy` applies (NodePort, external IPs, load-balancer IPs).
    pub fn is_external(self) -> bool {
        !matches!(self, Exposure::ClusterIp)
    }
}

/// A real server (IPVS destination): one endpoint address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealServer {
    /// The endpoint address (always the virtual server's family).
    pub addr: IpAddr,
    /// The endpoint port, host order.
    pub port: u16,
    /// The IPVS weight; this controller uses 1 for every real server.
    pub weight: u32,
    /// Whether the endpoint runs on this node: a connection it makes to its own Service can
    /// come back to itself (hairpin), which the netfilter table masquerades.
    pub local: bool,
}

impl fmt::Display for RealServer {
    /// `10.244.1.5:8080 w1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} w{}",
            SocketDisplay(self.addr, self.port),
            self.weight
        )
    }
}

/// One IPVS virtual server with its real servers, as this node should have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    /// Address, protocol and port.
    pub key: VirtualServerKey,
    /// The scheduler: an in-tree one (see [`scheduler`](crate::scheduler)).
    pub scheduler: Scheduler,
    /// Client persistence, from `sessionAffinity: ClientIP`: every client address is its
    /// own group (the host netmask of the key's family).
    pub persistence: Option<Persistence>,
    /// The real servers, sorted by address then port, without duplicates. Empty means "reject":
    /// IPVS answers a connection to a virtual server without destinations with an ICMP port
    /// unreachable.
    pub real_servers: Vec<RealServer>,
    /// The Service this virtual server was made for.
    pub service: ServiceRef,
    /// The name of the Service port (`spec.ports[].name`, empty when unnamed).
    pub port_name: String,
    /// Which kind of Service address this is.
    pub exposure: Exposure,
    /// Whether the address must be bound on the dummy interface (ClusterIPs, external IPs and
    /// load-balancer IPs that are not already addresses of this node; never node addresses).
    pub bind_address: bool,
    /// Whether the traffic policy of this address is `Local` (`externalTrafficPolicy` for
    /// NodePorts, external and load-balancer IPs, `internalTrafficPolicy` for ClusterIPs):
    /// only this node's endpoints serve it, and external clients keep their address (the
    /// netfilter table does not masquerade it).
    pub local_policy: bool,
    /// For a load-balancer IP whose Service lists `loadBalancerSourceRanges`: the ranges of
    /// this address's family, the only sources the netfilter table lets through (an empty
    /// list lets none). `None`: every source.
    pub source_ranges: Option<Box<[ipnet::IpNet]>>,
}

impl fmt::Display for VirtualServer {
    /// The compact form used in logs and test fixtures:
    /// `TCP 10.96.0.10:53 rr -> 10.244.1.5:5353 w1, 10.244.2.5:5353 w1`, with
    /// ` persistent 10800` after the scheduler when persistence is on and `(none)` when there is
    /// no real server.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, self.scheduler)?;
        if let Some(p) = self.persistence {
            write!(f, " persistent {}", p.timeout_secs)?;
        }
        f.write_str(" ->")?;
        if self.real_servers.is_empty() {
            return f.write_str(" (none)");
        }
        for (i, rs) in self.real_servers.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{rs}")?;
        }
        Ok(())
    }
}

/// `addr:port`, with brackets around IPv6 addresses.
struct SocketDisplay(IpAddr, u16);

impl fmt::Display for SocketDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let key = VirtualServerKey {
            addr: "fd00::a".parse().unwrap(),
            protocol: Protocol::Udp,
            port: 53,
        };
        assert_eq!(key.to_string(), "UDP [fd00::a]:53");
        let vs = VirtualServer {
            key,
            scheduler: Scheduler::SourceHashing {
                fallback: false,
                port: false,
            },
            persistence: Some(Persistence {
                timeout_secs: 60,
                netmask: ipvs::model::PersistenceNetmask::host(key.family()),
            }),
            real_servers: vec![RealServer {
                addr: "fd00::1".parse().unwrap(),
                port: 5353,
                weight: 1,
                local: false,
            }],
            service: ServiceRef::new("kube-system", "dns"),
            port_name: "dns".into(),
            exposure: Exposure::ClusterIp,
            bind_address: true,
            local_policy: false,
            source_ranges: None,
        };
        assert_eq!(
            vs.to_string(),
            "UDP [fd00::a]:53 sh persistent 60 -> [fd00::1]:5353 w1"
        );
    }
}
