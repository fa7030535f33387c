//! Builders for tests of this crate and of the programs that embed it (feature `testing`):
//! Kubernetes objects as the sources deliver them, desired virtual servers, and a table of
//! other people's virtual servers that the reconciler must never touch.
//!
//! Every builder returns a plain value to adjust: a test changes the one field it is about.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;

use ipvs::model::{
    AddressFamily, Destination, Forwarding, Protocol, Scheduler, Service as IpvsService, ServiceKey,
};
use ipvs::table::Table;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::SERVICE_NAME_LABEL;
use crate::desired::ServiceDesired;
use crate::model::{Exposure, RealServer, ServiceRef, VirtualServer, VirtualServerKey};
use crate::runtime::{Change, Message};

/// A ClusterIP Service `ns/name` at `ip` with one TCP port 80, and an annotation and a
/// resource version nothing reads (a store must not count them as changes).
pub fn service(ns: &str, name: &str, ip: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            resource_version: Some("7".into()),
            annotations: Some(BTreeMap::from([("unrelated".into(), "x".into())])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            cluster_ips: Some(vec![ip.into()]),
            ports: Some(vec![ServicePort {
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// An IPv4 EndpointSlice `ns/name` of Service `svc` with a ready endpoint at each of `addrs`,
/// port 8080.
pub fn slice(ns: &str, name: &str, svc: &str, addrs: &[&str]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(SERVICE_NAME_LABEL.into(), svc.into())])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(
            addrs
                .iter()
                .map(|a| Endpoint {
                    addresses: vec![(*a).into()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        ..Default::default()
                    }),
                    hostname: Some("pod".into()),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(vec![EndpointPort {
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

/// A first load as sources deliver it: Services `ns/a` (10.96.0.1) and `ns/b` (10.96.0.2),
/// and their slices, `a-1` with two endpoints and `b-1` with one.
pub fn first_load() -> Vec<Message> {
    vec![
        Message::Services(Change::Reset(vec![
            service("ns", "a", "10.96.0.1"),
            service("ns", "b", "10.96.0.2"),
        ])),
        Message::Slices(Change::Reset(vec![
            slice("ns", "a-1", "a", &["10.1.0.1", "10.1.0.2"]),
            slice("ns", "b-1", "b", &["10.1.1.1"]),
        ])),
    ]
}

/// A round-robin ClusterIP virtual server `addr:port` with a real server of weight 1 at each
/// `(address, port)` of `backends`, bound on the dummy interface.
pub fn virtual_server(
    addr: &str,
    protocol: Protocol,
    port: u16,
    backends: &[(&str, u16)],
) -> VirtualServer {
    let ip = |s: &str| s.parse::<IpAddr>().expect("a test address");
    VirtualServer {
        key: VirtualServerKey {
            addr: ip(addr),
            protocol,
            port,
        },
        scheduler: Scheduler::RoundRobin,
        persistence: None,
        real_servers: backends
            .iter()
            .map(|(a, p)| RealServer {
                addr: ip(a),
                port: *p,
                weight: 1,
                local: false,
            })
            .collect(),
        service: ServiceRef::new("", ""),
        port_name: String::new(),
        exposure: Exposure::ClusterIp,
        bind_address: true,
        local_policy: false,
        source_ranges: None,
    }
}

/// Service `default/name`'s desired state: `virtual_servers`, each made its own, and no
/// problem, health check or policy without local endpoints.
pub fn desired(name: &str, virtual_servers: Vec<VirtualServer>) -> ServiceDesired {
    let sref = ServiceRef::new("default", name);
    ServiceDesired {
        service: sref.clone(),
        virtual_servers: virtual_servers
            .into_iter()
            .map(|mut v| {
                v.service = sref.clone();
                (v.key, v)
            })
            .collect::<BTreeMap<_, _>>(),
        problems: Vec::new(),
        health_check: None,
        no_local_endpoints: Default::default(),
    }
}

/// Other people's virtual servers on a node whose address is 192.168.1.10: keepalived's on
/// an address that is not ours (with a destination), one on the node's address outside the
/// NodePort range, and a firewall-mark service. The ownership rule claims none of them.
pub fn foreign_table() -> Table {
    let keepalived = ServiceKey::tcp(Ipv4Addr::new(192, 168, 50, 1), 80);
    let nodeport_like = ServiceKey::tcp(Ipv4Addr::new(192, 168, 1, 10), 8443);
    let fwmark = ServiceKey::Fwmark {
        family: AddressFamily::Ipv4,
        mark: NonZeroU32::new(7).unwrap_or(NonZeroU32::MIN),
    };
    let with_keepalived = Table::new()
        .with_service(IpvsService::new(
            keepalived,
            Scheduler::WeightedLeastConnection,
        ))
        .with_destination(
            &keepalived,
            Destination::new(
                Ipv4Addr::new(192, 168, 50, 2),
                80,
                Forwarding::DirectRouting,
            ),
        )
        .expect("the service was just added");
    with_keepalived
        .with_service(IpvsService::new(nodeport_like, Scheduler::RoundRobin))
        .with_service(IpvsService::new(fwmark, Scheduler::RoundRobin))
}
