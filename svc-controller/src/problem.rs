//! Problems found in one Service's input, reported to the user instead of aborting.
//!
//! A problem always names the Service and the field (a JSON path into the Service, or the
//! EndpointSlice's name and a path into it). The part it is about is skipped; the rest of the
//! Service, and every other Service, is computed as usual.

use std::net::IpAddr;

use ipvs::model::{AddressFamily, Protocol};

use crate::model::{ServiceRef, VirtualServerKey};

/// One problem with one Service's input. The `Display` form is the message shown to users.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// An enumerated field has a value this controller does not know; the default is used.
    #[error("{service}: {field}: unsupported value {value:?} (expected {expected}); {action}")]
    InvalidValue {
        /// The Service.
        service: ServiceRef,
        /// The field, e.g. `spec.ports[0].protocol`.
        field: String,
        /// The value found.
        value: String,
        /// The values understood.
        expected: &'static str,
        /// What was done instead, e.g. `port skipped`.
        action: &'static str,
    },
    /// A port number (`port`, `targetPort`) is outside 1–65535; the port is skipped.
    #[error("{service}: {field}: port {value} is outside 1-65535; port skipped")]
    InvalidPort {
        /// The Service.
        service: ServiceRef,
        /// The field, e.g. `spec.ports[0].nodePort`.
        field: String,
        /// The value found.
        value: i64,
    },
    /// A Service address does not parse as an IP address; it is skipped.
    #[error("{service}: {field}: {value:?} is not an IP address; skipped")]
    InvalidAddress {
        /// The Service.
        service: ServiceRef,
        /// The field, e.g. `spec.clusterIPs[1]`.
        field: String,
        /// The value found.
        value: String,
    },
    /// A Service address (ClusterIP, external IP, load-balancer IP) is of a kind no Service
    /// address can be: unspecified, loopback, link-local, multicast, broadcast or IPv4-mapped
    /// (see [`desired::validate`](crate::desired::validate)); it is skipped.
    #[error("{service}: {field}: {addr} is {class}, never a Service address; skipped")]
    SpecialAddress {
        /// The Service.
        service: ServiceRef,
        /// The field, e.g. `spec.externalIPs[0]`.
        field: String,
        /// The address.
        addr: IpAddr,
        /// What kind of address it is, e.g. `loopback (127.0.0.0/8, ::1)`.
        class: &'static str,
    },
    /// A ClusterIP is one of this node's own addresses: its virtual servers would take the
    /// node's own traffic on those ports (SSH on 22, say). The API server allocates ClusterIPs
    /// from the service CIDR only; it is skipped.
    #[error(
        "{service}: {field}: {addr} is an address of this node, never a ClusterIP (it would take \
         the node's own traffic); skipped"
    )]
    ClusterIpIsNodeAddress {
        /// The Service.
        service: ServiceRef,
        /// The field, e.g. `spec.clusterIP`.
        field: String,
        /// The address.
        addr: IpAddr,
    },
    /// `spec.clusterIPs[0]` is not `spec.clusterIP` (the API server keeps them equal): either
    /// may be the address meant, so no ClusterIP is served (nothing at all when either is
    /// `None`).
    #[error(
        "{service}: spec.clusterIPs[0]: {first:?} is not spec.clusterIP {cluster_ip:?}; \
         ClusterIPs skipped"
    )]
    ClusterIpMismatch {
        /// The Service.
        service: ServiceRef,
        /// `spec.clusterIP`.
        cluster_ip: String,
        /// `spec.clusterIPs[0]`.
        first: String,
    },
    /// A Service lists more than one ClusterIP of a family (the API server allows one per
    /// family); the later ones are skipped.
    #[error("{service}: {field}: {addr} is a second {family} ClusterIP (one per family); skipped")]
    SecondClusterIp {
        /// The Service.
        service: ServiceRef,
        /// The field, e.g. `spec.clusterIPs[1]`.
        field: String,
        /// The address.
        addr: IpAddr,
        /// Its family (`IPv4`, `IPv6`).
        family: AddressFamily,
    },
    /// A `nodePort` or `healthCheckNodePort` is outside the cluster's NodePort range
    /// ([`ProxyConfig::node_port_range`](crate::ProxyConfig::node_port_range)), where the API
    /// server never allocates one.
    #[error("{service}: {field}: {value} is outside the NodePort range {first}-{last}; {action}")]
    NodePortOutOfRange {
        /// The Service.
        service: ServiceRef,
        /// The field, e.g. `spec.ports[0].nodePort`.
        field: String,
        /// The value found.
        value: i32,
        /// The first port of the range.
        first: u16,
        /// The last port of the range.
        last: u16,
        /// What was done, e.g. `no NodePort for this port`.
        action: &'static str,
    },
    /// An external or load-balancer IP is of a family the Service has no cluster IP of.
    #[error("{service}: {field}: {addr} is {family} but the Service is not; skipped")]
    FamilyNotServed {
        /// The Service.
        service: ServiceRef,
        /// The field, e.g. `spec.externalIPs[0]`.
        field: String,
        /// The address.
        addr: IpAddr,
        /// Its family (`IPv4`, `IPv6`).
        family: AddressFamily,
    },
    /// The scheduler annotation names no in-tree IPVS scheduler; the default is used.
    #[error(
        "{service}: metadata.annotations[{annotation}]: unknown IPVS scheduler {value:?} \
         (in-tree: rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos none); using {default}"
    )]
    UnknownScheduler {
        /// The Service.
        service: ServiceRef,
        /// The annotation ([`SCHEDULER_ANNOTATION`](crate::SCHEDULER_ANNOTATION)).
        annotation: &'static str,
        /// The value found.
        value: String,
        /// The scheduler used instead.
        default: String,
    },
    /// The session affinity timeout is outside 1–86400 s; the default (10800) is used.
    #[error(
        "{service}: spec.sessionAffinityConfig.clientIP.timeoutSeconds: {value} is outside \
         1-86400; using 10800"
    )]
    InvalidAffinityTimeout {
        /// The Service.
        service: ServiceRef,
        /// The value found.
        value: i32,
    },
    /// An EndpointSlice has an `addressType` other than IPv4, IPv6 or FQDN; it is skipped.
    #[error(
        "{service}: EndpointSlice {slice}: addressType {value:?} is not IPv4, IPv6 or FQDN; slice skipped"
    )]
    UnknownAddressType {
        /// The Service.
        service: ServiceRef,
        /// The slice's name.
        slice: String,
        /// The value found.
        value: String,
    },
    /// An endpoint address does not parse as an IP address; the endpoint is skipped.
    #[error(
        "{service}: EndpointSlice {slice}: {field}: {value:?} is not an IP address; endpoint skipped"
    )]
    InvalidEndpointAddress {
        /// The Service.
        service: ServiceRef,
        /// The slice's name.
        slice: String,
        /// The field, e.g. `endpoints[3].addresses[0]`.
        field: String,
        /// The value found.
        value: String,
    },
    /// An endpoint address is not of the slice's `addressType`; the endpoint is skipped.
    #[error(
        "{service}: EndpointSlice {slice}: {field}: {addr} does not match addressType \
         {address_type}; endpoint skipped"
    )]
    AddressTypeMismatch {
        /// The Service.
        service: ServiceRef,
        /// The slice's name.
        slice: String,
        /// The field, e.g. `endpoints[0].addresses[0]`.
        field: String,
        /// The address.
        addr: IpAddr,
        /// The slice's address type.
        address_type: AddressFamily,
    },
    /// An endpoint address is of a kind no endpoint can be: unspecified, loopback,
    /// link-local, multicast, broadcast or IPv4-mapped (see
    /// [`desired::validate`](crate::desired::validate)); the endpoint is skipped.
    #[error(
        "{service}: EndpointSlice {slice}: {field}: {addr} is {class}, never an endpoint; \
         endpoint skipped"
    )]
    SpecialEndpointAddress {
        /// The Service.
        service: ServiceRef,
        /// The slice's name.
        slice: String,
        /// The field, e.g. `endpoints[0].addresses[0]`.
        field: String,
        /// The address.
        addr: IpAddr,
        /// What kind of address it is, e.g. `loopback (127.0.0.0/8, ::1)`.
        class: &'static str,
    },
    /// An EndpointSlice port number is outside 1–65535; the slice is skipped for that port.
    #[error(
        "{service}: EndpointSlice {slice}: {field}: port {value} is outside 1-65535; slice skipped for this port"
    )]
    InvalidEndpointPort {
        /// The Service.
        service: ServiceRef,
        /// The slice's name.
        slice: String,
        /// The field, e.g. `ports[0].port`.
        field: String,
        /// The value found.
        value: i32,
    },
    /// A named `targetPort` is not among an EndpointSlice's ports (nor is the Service port's
    /// name, nor does a matching entry carry a number); the slice is skipped for that port.
    #[error(
        "{service}: spec.ports[{index}].targetPort: named port {target:?} resolves to nothing in \
         EndpointSlice {slice}; slice skipped for this port"
    )]
    UnresolvedTargetPort {
        /// The Service.
        service: ServiceRef,
        /// The index of the Service port.
        index: usize,
        /// The target port name.
        target: String,
        /// The slice's name.
        slice: String,
    },
    /// An EndpointSlice with endpoints has no port entry for a Service port (matched by the
    /// Service port's name and protocol); the slice is skipped for that port.
    #[error(
        "{service}: EndpointSlice {slice}: no {protocol} port named {port_name:?} for \
         spec.ports[{index}]; slice skipped for this port"
    )]
    MissingSlicePort {
        /// The Service.
        service: ServiceRef,
        /// The index of the Service port.
        index: usize,
        /// The Service port's name (empty when unnamed).
        port_name: String,
        /// The Service port's protocol.
        protocol: Protocol,
        /// The slice's name.
        slice: String,
    },
    /// Two addresses or ports of the same Service map to one virtual server; the first is kept.
    #[error("{service}: {field}: {key} is already a virtual server of this Service; skipped")]
    DuplicateVirtualServer {
        /// The Service.
        service: ServiceRef,
        /// The field that produced the duplicate, e.g. `spec.externalIPs[0]`.
        field: String,
        /// The virtual server.
        key: VirtualServerKey,
    },
    /// Another Service already owns this virtual server (the Service that sorts first by
    /// namespace and name wins); this Service's copy is not programmed.
    #[error(
        "{service}: {key} is also claimed by {owner}, which wins; not programmed for this Service"
    )]
    VirtualServerConflict {
        /// The Service that lost.
        service: ServiceRef,
        /// The virtual server.
        key: VirtualServerKey,
        /// The Service that owns it.
        owner: ServiceRef,
    },
}

impl Problem {
    /// The Service the problem is about.
    pub fn service(&self) -> &ServiceRef {
        match self {
            Problem::InvalidValue { service, .. }
            | Problem::InvalidPort { service, .. }
            | Problem::InvalidAddress { service, .. }
            | Problem::SpecialAddress { service, .. }
            | Problem::ClusterIpIsNodeAddress { service, .. }
            | Problem::SecondClusterIp { service, .. }
            | Problem::ClusterIpMismatch { service, .. }
            | Problem::NodePortOutOfRange { service, .. }
            | Problem::SpecialEndpointAddress { service, .. }
            | Problem::FamilyNotServed { service, .. }
            | Problem::UnknownScheduler { service, .. }
            | Problem::InvalidAffinityTimeout { service, .. }
            | Problem::UnknownAddressType { service, .. }
            | Problem::InvalidEndpointAddress { service, .. }
            | Problem::AddressTypeMismatch { service, .. }
            | Problem::InvalidEndpointPort { service, .. }
            | Problem::UnresolvedTargetPort { service, .. }
            | Problem::MissingSlicePort { service, .. }
            | Problem::DuplicateVirtualServer { service, .. }
            | Problem::VirtualServerConflict { service, .. } => service,
        }
    }
}
