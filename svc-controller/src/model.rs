//! Controller-side output types: what the IPVS table should contain.
//!
//! These types are deliberately independent of the `ipvs-rs` crate, but shaped so that the
//! reconciler's mapping onto it is one field per field: addresses are [`IpAddr`], ports are
//! host-order `u16`, the protocol is one of the three IPVS handles for Services, and the
//! scheduler is one of the kernel's in-tree scheduler names.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The transport protocol of a virtual server (a Kubernetes `ServicePort.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP (`IPPROTO_TCP`), the Kubernetes default.
    Tcp,
    /// UDP (`IPPROTO_UDP`).
    Udp,
    /// SCTP (`IPPROTO_SCTP`).
    Sctp,
}

impl Protocol {
    /// The Kubernetes spelling: `TCP`, `UDP` or `SCTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// Parses the Kubernetes spelling (exact, upper case, as the API server stores it).
    pub fn from_k8s(value: &str) -> Option<Self> {
        match value {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AddressFamily {
    /// IPv4 (`AF_INET`).
    #[serde(rename = "IPv4")]
    Ipv4,
    /// IPv6 (`AF_INET6`).
    #[serde(rename = "IPv6")]
    Ipv6,
}

impl AddressFamily {
    /// The family of `addr`.
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => AddressFamily::Ipv4,
            IpAddr::V6(_) => AddressFamily::Ipv6,
        }
    }

    /// The Kubernetes spelling (`IPv4`, `IPv6`), as in `EndpointSlice.addressType` and
    /// `Service.spec.ipFamilies`.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressFamily::Ipv4 => "IPv4",
            AddressFamily::Ipv6 => "IPv6",
        }
    }

    /// Parses the Kubernetes spelling (`IPv4`, `IPv6`).
    pub fn from_k8s(value: &str) -> Option<Self> {
        match value {
            "IPv4" => Some(AddressFamily::Ipv4),
            "IPv6" => Some(AddressFamily::Ipv6),
            _ => None,
        }
    }
}

impl fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IPVS scheduler, one of the kernel's in-tree set (`ip_vs_<name>` modules).
///
/// Scheduler names are open strings in the kernel UAPI; this controller only sends the in-tree
/// ones, so a typo in an annotation is reported instead of failing later with `ENOENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Scheduler {
    /// `rr`: round robin (the default, as in kube-proxy).
    #[default]
    Rr,
    /// `wrr`: weighted round robin.
    Wrr,
    /// `lc`: least connection.
    Lc,
    /// `wlc`: weighted least connection.
    Wlc,
    /// `lblc`: locality-based least connection.
    Lblc,
    /// `lblcr`: locality-based least connection with replication.
    Lblcr,
    /// `dh`: destination hashing.
    Dh,
    /// `sh`: source hashing.
    Sh,
    /// `sed`: shortest expected delay.
    Sed,
    /// `nq`: never queue.
    Nq,
    /// `fo`: weighted failover.
    Fo,
    /// `ovf`: weighted overflow.
    Ovf,
    /// `mh`: maglev hashing.
    Mh,
    /// `twos`: weighted random twos choice.
    Twos,
    /// `none`: no scheduling (connections are only created by other means, e.g. sync).
    None,
}

impl Scheduler {
    /// Every in-tree scheduler, in the order of their names in [`Scheduler::NAMES`].
    pub const ALL: [Scheduler; 15] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Lblc,
        Scheduler::Lblcr,
        Scheduler::Dh,
        Scheduler::Sh,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Fo,
        Scheduler::Ovf,
        Scheduler::Mh,
        Scheduler::Twos,
        Scheduler::None,
    ];

    /// The kernel names of the in-tree schedulers.
    pub const NAMES: [&'static str; 15] = [
        "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh",
        "twos", "none",
    ];

    /// The name sent to the kernel (`IPVS_SVC_ATTR_SCHED_NAME`).
    pub fn as_str(self) -> &'static str {
        let index = Scheduler::ALL.iter().position(|s| *s == self).unwrap_or(0);
        Scheduler::NAMES[index]
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scheduler name outside the kernel's in-tree set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown IPVS scheduler {0:?} (in-tree: rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos none)"
)]
pub struct UnknownScheduler(pub String);

impl FromStr for Scheduler {
    type Err = UnknownScheduler;

    /// Parses a kernel scheduler name, exactly (lower case, no surrounding spaces).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Scheduler::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Scheduler::ALL[i])
            .ok_or_else(|| UnknownScheduler(name.to_owned()))
    }
}

impl Serialize for Scheduler {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scheduler {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Client persistence (the IPVS `PERSISTENT` flag), from `sessionAffinity: ClientIP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Persistence {
    /// The persistence timeout in seconds (`IPVS_SVC_ATTR_TIMEOUT`), 1 to 86400.
    pub timeout_seconds: u32,
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VirtualServerKey {
    /// The virtual address (a ClusterIP, node address, external IP or load-balancer IP).
    pub addr: IpAddr,
    /// The transport protocol.
    pub protocol: Protocol,
    /// The virtual port, host order.
    pub port: u16,
}

impl VirtualServerKey {
    /// The address family of the virtual server.
    pub fn family(&self) -> AddressFamily {
        AddressFamily::of(self.addr)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RealServer {
    /// The endpoint address (always the virtual server's family).
    pub addr: IpAddr,
    /// The endpoint port, host order.
    pub port: u16,
    /// The IPVS weight; this controller uses 1 for every real server.
    pub weight: u32,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualServer {
    /// Address, protocol and port.
    pub key: VirtualServerKey,
    /// The scheduler.
    pub scheduler: Scheduler,
    /// Client persistence, from `sessionAffinity: ClientIP`.
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
}

impl fmt::Display for VirtualServer {
    /// The compact form used in logs and test fixtures:
    /// `TCP 10.96.0.10:53 rr -> 10.244.1.5:5353 w1, 10.244.2.5:5353 w1`, with
    /// ` persistent 10800` after the scheduler when persistence is on and `(none)` when there is
    /// no real server.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, self.scheduler)?;
        if let Some(p) = self.persistence {
            write!(f, " persistent {}", p.timeout_seconds)?;
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
    fn scheduler_names_round_trip() {
        for s in Scheduler::ALL {
            assert_eq!(s.as_str().parse::<Scheduler>(), Ok(s));
        }
        assert!("RR".parse::<Scheduler>().is_err());
        assert!("".parse::<Scheduler>().is_err());
        assert!("maglev".parse::<Scheduler>().is_err());
    }

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
            scheduler: Scheduler::Sh,
            persistence: Some(Persistence {
                timeout_seconds: 60,
            }),
            real_servers: vec![RealServer {
                addr: "fd00::1".parse().unwrap(),
                port: 5353,
                weight: 1,
            }],
            service: ServiceRef::new("kube-system", "dns"),
            port_name: "dns".into(),
            exposure: Exposure::ClusterIp,
            bind_address: true,
        };
        assert_eq!(
            vs.to_string(),
            "UDP [fd00::a]:53 sh persistent 60 -> [fd00::1]:5353 w1"
        );
    }
}
