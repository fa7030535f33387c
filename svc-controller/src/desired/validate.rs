//! What the Kubernetes API server would refuse, for the fields this computation reads.
//!
//! Objects from the API server have passed its validation; objects from a manifests folder (or
//! written around the API server) have not, and a proxy that programs whatever it is handed
//! adds local routes for `127.0.0.1` or `255.255.255.255` on the dummy interface, takes the
//! node's own SSH port, or creates NodePorts outside the range its ownership rule covers
//! (which then leak when their Service goes while the daemon is down). So the API server's
//! rules are applied here too, each where the field is read:
//!
//! | field | refused | the API server's rule |
//! |---|---|---|
//! | `spec.clusterIP(s)` | `clusterIPs[0]` other than `clusterIP` when both are set | `ValidateServiceClusterIPsRelatedFields` ("first value must match `clusterIP`") |
//! | `spec.clusterIP(s)` | a second address of the same family | `ValidateServiceClusterIPsRelatedFields` (one per family) |
//! | `spec.clusterIP(s)` | unspecified, loopback, link-local, multicast, broadcast, IPv4-mapped | the allocator: a ClusterIP must be inside the service CIDR, never its network or IPv4 broadcast address (`ipallocator`) |
//! | `spec.clusterIP(s)` | an address of this node | the same: a node address is never in the service CIDR |
//! | `spec.externalIPs` | unspecified, loopback, link-local, multicast, broadcast, IPv4-mapped | `ValidateService`: `IsValidIP` then `ValidateNonSpecialIP` |
//! | `status.loadBalancer.ingress[].ip` | the same | *stricter*: `ValidateLoadBalancerStatus` only checks `IsValidIP` |
//! | `spec.ports[].port`, `targetPort` | outside 1–65535 | `validateServicePort`: `IsValidPortNum` ([`ports`](super::ports)) |
//! | `spec.ports[].nodePort` | outside the NodePort range | the port allocator: `--service-node-port-range` (`portallocator`, `ErrNotInRange`) |
//! | `spec.healthCheckNodePort` | outside the NodePort range | the same allocator hands it out |
//! | `spec.sessionAffinityConfig.clientIP.timeoutSeconds` | outside 1–86400 | `validateClientIPAffinityConfig` (the default is used) |
//! | `endpoints[].addresses` (EndpointSlice) | unspecified, loopback, link-local, multicast, broadcast, IPv4-mapped | `discovery` validation: `IsValidIPv4Address` / `IsValidIPv6Address` then `ValidateEndpointIP` |
//! | `ports[].port` (EndpointSlice) | outside 1–65535 | ([`ports`](super::ports)) |
//!
//! (Sources: `pkg/apis/core/validation/validation.go`, `pkg/apis/discovery/validation`,
//! `pkg/registry/core/service/{ipallocator,portallocator}` in kubernetes/kubernetes.)
//!
//! The address classes are one set for every address this computation reads. The API
//! server's `ValidateNonSpecialIP` / `ValidateEndpointIP` refuse unspecified, loopback,
//! link-local unicast and link-local multicast addresses; this set also refuses every other
//! multicast address and `255.255.255.255` (its own comment calls letting global multicast
//! through "probably a bug": neither is a destination a TCP, UDP or SCTP Service can have) and
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, which the API server reads as IPv4 and the
//! kernel would program as IPv6). The daemon does not know the service CIDR, so the rest of
//! the allocator's rule (inside the CIDR) is not checked; the node's own addresses are, since
//! a ClusterIP there captures the node's own traffic.
//!
//! An external IP or load-balancer IP that is one of the node's addresses is kept, as
//! kube-proxy keeps it: it is a common way to expose a Service on a node's own address (the
//! API server allows it; clusters that must not allow it use the `DenyServiceExternalIPs`
//! admission plugin). Its virtual servers are not bound on the dummy interface, and outside the
//! NodePort range they are ours only while desired (see [`ownership`](crate::ownership)).
//!
//! # What is skipped
//! The API server refuses the whole object; this computation skips the smallest part whose
//! meaning the refusal leaves unclear, so that a mistake in one field does not take down what
//! the rest of the Service says clearly (and every other Service always keeps working):
//! - a refused address: that address only (each address is its own set of virtual servers);
//! - `clusterIPs[0]` other than `clusterIP`: every ClusterIP, since either may be the one
//!   meant (and the whole Service when either says `None`, as for a headless Service);
//! - a refused `nodePort`: the NodePort virtual servers of that port only (its ClusterIP,
//!   external and load-balancer virtual servers do not use the field);
//! - a refused `healthCheckNodePort`: the health check only;
//! - a refused endpoint address: that endpoint only.

use std::net::IpAddr;
use std::ops::RangeInclusive;

use k8s_openapi::api::core::v1::ServiceSpec;

use ipvs::model::AddressFamily;

use crate::model::ServiceRef;
use crate::node::NodeInfo;
use crate::problem::Problem;

/// The kind of `addr` when it is one that is never a Service address nor an endpoint (see the
/// module documentation), as shown in problems; `None` for an ordinary unicast address.
pub(crate) fn special_address(addr: IpAddr) -> Option<&'static str> {
    if addr.is_unspecified() {
        return Some("unspecified");
    }
    if addr.is_loopback() {
        return Some("loopback (127.0.0.0/8, ::1)");
    }
    match addr {
        IpAddr::V4(a) => {
            if a.is_link_local() {
                Some("link-local (169.254.0.0/16)")
            } else if a.is_multicast() {
                Some("multicast (224.0.0.0/4)")
            } else if a.is_broadcast() {
                Some("the broadcast address")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if (a.segments()[0] & 0xffc0) == 0xfe80 {
                Some("link-local (fe80::/10)")
            } else if a.is_multicast() {
                Some("multicast (ff00::/8)")
            } else if a.to_ipv4_mapped().is_some() {
                Some("IPv4-mapped (::ffff:0:0/96)")
            } else {
                None
            }
        }
    }
}

/// Checks one Service address (already parsed) against the address classes; pushes the
/// problem and returns false when it is refused.
pub(crate) fn service_address(
    sref: &ServiceRef,
    field: &str,
    addr: IpAddr,
    problems: &mut Vec<Problem>,
) -> bool {
    match special_address(addr) {
        None => true,
        Some(class) => {
            problems.push(Problem::SpecialAddress {
                service: sref.clone(),
                field: field.to_owned(),
                addr,
                class,
            });
            false
        }
    }
}

/// Checks one ClusterIP: the address classes, then not one of the node's own addresses, then
/// the first of its family (`seen` holds the families of the ClusterIPs already accepted).
/// Pushes the problem and returns false when it is refused.
pub(crate) fn cluster_ip(
    sref: &ServiceRef,
    field: &str,
    addr: IpAddr,
    node: &NodeInfo,
    seen: &mut Vec<AddressFamily>,
    problems: &mut Vec<Problem>,
) -> bool {
    if !service_address(sref, field, addr, problems) {
        return false;
    }
    if node.addresses.contains(&addr) {
        problems.push(Problem::ClusterIpIsNodeAddress {
            service: sref.clone(),
            field: field.to_owned(),
            addr,
        });
        return false;
    }
    let family = AddressFamily::of(&addr);
    if seen.contains(&family) {
        problems.push(Problem::SecondClusterIp {
            service: sref.clone(),
            field: field.to_owned(),
            addr,
            family,
        });
        return false;
    }
    seen.push(family);
    true
}

/// `spec.clusterIPs[0]` differing from `spec.clusterIP`, both set.
pub(crate) struct ClusterIpMismatch {
    /// The problem to report.
    pub(crate) problem: Problem,
    /// Whether either says `None` (headless).
    pub(crate) headless: bool,
}

/// Checks that `spec.clusterIPs[0]` is `spec.clusterIP` when both are set, as the API server
/// requires (it keeps them in step itself).
pub(crate) fn cluster_ip_mismatch(
    sref: &ServiceRef,
    spec: &ServiceSpec,
) -> Option<ClusterIpMismatch> {
    let cluster_ip = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty())?;
    let first = spec.cluster_ips.as_deref()?.first()?;
    (first != cluster_ip).then(|| ClusterIpMismatch {
        problem: Problem::ClusterIpMismatch {
            service: sref.clone(),
            cluster_ip: cluster_ip.to_owned(),
            first: first.clone(),
        },
        headless: cluster_ip == "None" || first == "None",
    })
}

/// A `nodePort` or `healthCheckNodePort` inside the NodePort range; `None` after pushing the
/// problem (`action` says what is given up) when it is outside.
pub(crate) fn node_port(
    sref: &ServiceRef,
    field: impl FnOnce() -> String,
    value: i32,
    range: &RangeInclusive<u16>,
    action: &'static str,
    problems: &mut Vec<Problem>,
) -> Option<u16> {
    let port = u16::try_from(value).ok().filter(|p| range.contains(p));
    if port.is_none() {
        problems.push(Problem::NodePortOutOfRange {
            service: sref.clone(),
            field: field(),
            value,
            first: *range.start(),
            last: *range.end(),
            action,
        });
    }
    port
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<&'static str> {
        special_address(s.parse().expect("literal address"))
    }

    #[test]
    fn special_addresses_are_classified() {
        for (addr, expected) in [
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("127.0.0.1", "loopback (127.0.0.0/8, ::1)"),
            ("127.255.0.9", "loopback (127.0.0.0/8, ::1)"),
            ("::1", "loopback (127.0.0.0/8, ::1)"),
            ("169.254.169.254", "link-local (169.254.0.0/16)"),
            ("fe80::1", "link-local (fe80::/10)"),
            ("febf::1", "link-local (fe80::/10)"),
            ("224.0.0.251", "multicast (224.0.0.0/4)"),
            ("239.1.2.3", "multicast (224.0.0.0/4)"),
            ("ff02::fb", "multicast (ff00::/8)"),
            ("ff05::2", "multicast (ff00::/8)"),
            ("255.255.255.255", "the broadcast address"),
            ("::ffff:10.96.0.1", "IPv4-mapped (::ffff:0:0/96)"),
        ] {
            assert_eq!(class(addr), Some(expected), "{addr}");
        }
        for ordinary in [
            "10.96.0.1",
            "192.168.1.10",
            "203.0.113.7",
            "100.64.0.1",
            "223.255.255.255",
            "240.0.0.1",
            "fd00::a",
            "2001:db8::1",
            "fec0::1",
        ] {
            assert_eq!(class(ordinary), None, "{ordinary}");
        }
    }

    #[test]
    fn node_ports_outside_the_range_are_refused() {
        let sref = ServiceRef::new("ns", "s");
        let range = 30000..=32767;
        let check = |v| {
            let mut problems = Vec::new();
            let port = node_port(&sref, || "f".into(), v, &range, "x", &mut problems);
            (port, problems)
        };
        assert_eq!(check(30000), (Some(30000), vec![]));
        assert_eq!(check(32767), (Some(32767), vec![]));
        for bad in [0, -1, 22, 80, 29999, 32768, 65535, 70000] {
            let (port, problems) = check(bad);
            assert_eq!(port, None, "{bad}");
            assert!(
                matches!(problems.as_slice(), [Problem::NodePortOutOfRange { value, .. }] if *value == bad),
                "{bad}: {problems:?}"
            );
        }
    }
}
