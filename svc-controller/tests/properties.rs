//! Property tests over random, often invalid, Services and EndpointSlices.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec,
    ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use proptest::sample::select;
use svc_controller::{
    AddressFamily, DesiredState, NodeInfo, ProxyConfig, SCHEDULER_ANNOTATION, SERVICE_NAME_LABEL,
    SERVICE_PROXY_NAME_LABEL, compute_service, group_slices, service_ref,
};

/// `EndpointSlice.endpoints` is a list before Kubernetes 1.36 and an optional list after; this
/// builds either, whichever version the dev-dependency enables.
trait FromEndpoints {
    fn from_endpoints(v: Vec<Endpoint>) -> Self;
}
impl FromEndpoints for Vec<Endpoint> {
    fn from_endpoints(v: Vec<Endpoint>) -> Self {
        v
    }
}
impl FromEndpoints for Option<Vec<Endpoint>> {
    fn from_endpoints(v: Vec<Endpoint>) -> Self {
        Some(v)
    }
}

const NAMESPACES: &[&str] = &["a", "b"];
const NAMES: &[&str] = &["s0", "s1", "s2", "s3"];
const SERVICE_IPS: &[&str] = &[
    "10.96.0.1",
    "10.96.0.2",
    "fd00::1",
    "fd00::2",
    "198.51.100.7",
    "2001:db8::7",
    "None",
    "",
    "garbage",
    "192.168.1.10",
    "127.0.0.1",
];
const ENDPOINT_IPS: &[&str] = &[
    "10.244.0.1",
    "10.244.0.2",
    "10.244.0.3",
    "fd00:1::1",
    "fd00:1::2",
    "x.y",
    "",
    "999.1.1.1",
];

fn opt_str(values: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(select(values).prop_map(str::to_owned))
}

/// Mostly one of `usual`, sometimes one of `odd` (so that most cases reach real servers and
/// the rest exercise the error paths).
fn mostly(
    usual: &'static [&'static str],
    odd: &'static [&'static str],
) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(usual).prop_map(str::to_owned),
        1 => select(odd).prop_map(str::to_owned),
    ]
}

fn port_value() -> impl Strategy<Value = i32> {
    prop_oneof![
        16 => select(&[53, 80, 443][..]),
        1 => select(&[-1, 0, 65535, 65536, 70000][..]),
        1 => any::<i32>(),
    ]
}

fn service_port() -> impl Strategy<Value = ServicePort> {
    (
        prop_oneof![6 => Just(Some("http".to_owned())), 1 => opt_str(&["dns", ""])],
        port_value(),
        proptest::option::of(mostly(&["TCP"], &["UDP", "SCTP", "ICMP"])),
        proptest::option::of(prop_oneof![
            port_value().prop_map(IntOrString::Int),
            select(&["http", "web", "", "8080"][..]).prop_map(|s| IntOrString::String(s.into())),
        ]),
        proptest::option::of(port_value()),
    )
        .prop_map(
            |(name, port, protocol, target_port, node_port)| ServicePort {
                name,
                port,
                protocol,
                target_port,
                node_port,
                ..ServicePort::default()
            },
        )
}

fn service() -> impl Strategy<Value = Service> {
    let meta = (
        mostly(&["a"], NAMESPACES),
        mostly(&["s0", "s1"], NAMES),
        opt_str(&["rr", "wlc", "maglev", ""]),
        prop_oneof![6 => Just(None), 1 => opt_str(&["other", "ipvs"])],
    );
    let spec = (
        opt_str(&[
            "ClusterIP",
            "NodePort",
            "LoadBalancer",
            "ExternalName",
            "Weird",
        ]),
        proptest::collection::vec(
            mostly(&["10.96.0.1", "10.96.0.2", "fd00::1"], SERVICE_IPS),
            1..3,
        ),
        proptest::collection::vec(select(SERVICE_IPS).prop_map(str::to_owned), 0..3),
        proptest::collection::vec(service_port(), 1..4),
        opt_str(&["Cluster", "Local", "Odd"]),
        opt_str(&["Cluster", "Local", "Odd"]),
        opt_str(&["None", "ClientIP", "Cookie"]),
        proptest::option::of(any::<i32>()),
    );
    let status = proptest::collection::vec(
        (opt_str(SERVICE_IPS), opt_str(&["VIP", "Proxy", "Tunnel"])),
        0..3,
    );
    (meta, spec, status).prop_map(
        |(
            (ns, name, sched, proxy),
            (type_, cluster_ips, external_ips, ports, etp, itp, affinity, timeout),
            ingress,
        )| {
            let mut annotations = BTreeMap::new();
            if let Some(s) = sched {
                annotations.insert(SCHEDULER_ANNOTATION.to_owned(), s);
            }
            let mut labels = BTreeMap::new();
            if let Some(p) = proxy {
                labels.insert(SERVICE_PROXY_NAME_LABEL.to_owned(), p);
            }
            Service {
                metadata: ObjectMeta {
                    namespace: Some(ns),
                    name: Some(name),
                    annotations: Some(annotations),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                spec: Some(ServiceSpec {
                    type_,
                    cluster_ip: cluster_ips.first().cloned(),
                    cluster_ips: Some(cluster_ips),
                    external_ips: Some(external_ips),
                    ports: Some(ports),
                    external_traffic_policy: etp,
                    internal_traffic_policy: itp,
                    session_affinity: affinity,
                    session_affinity_config: Some(SessionAffinityConfig {
                        client_ip: Some(ClientIPConfig {
                            timeout_seconds: timeout,
                        }),
                    }),
                    ..ServiceSpec::default()
                }),
                status: Some(ServiceStatus {
                    load_balancer: Some(LoadBalancerStatus {
                        ingress: Some(
                            ingress
                                .into_iter()
                                .map(|(ip, ip_mode)| LoadBalancerIngress {
                                    ip,
                                    ip_mode,
                                    ..LoadBalancerIngress::default()
                                })
                                .collect(),
                        ),
                    }),
                    ..ServiceStatus::default()
                }),
            }
        },
    )
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (
        proptest::collection::vec(
            mostly(
                &[
                    "10.244.0.1",
                    "10.244.0.2",
                    "10.244.0.3",
                    "fd00:1::1",
                    "fd00:1::2",
                ],
                ENDPOINT_IPS,
            ),
            0..3,
        ),
        proptest::option::of((
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
        )),
        opt_str(&["node-a", "node-b"]),
        proptest::option::of(proptest::collection::vec(
            select(&["zone-a", "zone-b"][..]),
            0..3,
        )),
    )
        .prop_map(|(addresses, conditions, node_name, zones)| Endpoint {
            addresses,
            conditions: conditions.map(|(ready, serving, terminating)| EndpointConditions {
                ready,
                serving,
                terminating,
            }),
            node_name,
            hints: zones.map(|z| EndpointHints {
                for_zones: Some(
                    z.into_iter()
                        .map(|name| ForZone { name: name.into() })
                        .collect(),
                ),
                ..EndpointHints::default()
            }),
            ..Endpoint::default()
        })
}

fn slice() -> impl Strategy<Value = EndpointSlice> {
    (
        mostly(&["a"], NAMESPACES),
        prop_oneof![6 => mostly(&["s0", "s1"], NAMES).prop_map(Some), 1 => Just(None)],
        0u8..10,
        mostly(&["IPv4", "IPv6"], &["FQDN", "IPX"]),
        proptest::collection::vec(
            (
                prop_oneof![6 => Just(Some("http".to_owned())), 1 => opt_str(&["dns", "web", ""])],
                proptest::option::of(port_value()),
                proptest::option::of(mostly(&["TCP"], &["UDP", "SCTP", "ICMP"])),
            ),
            1..3,
        ),
        proptest::collection::vec(endpoint(), 1..5),
    )
        .prop_map(|(ns, owner, id, address_type, ports, endpoints)| {
            let mut labels = BTreeMap::new();
            if let Some(o) = owner {
                labels.insert(SERVICE_NAME_LABEL.to_owned(), o);
            }
            EndpointSlice {
                metadata: ObjectMeta {
                    namespace: Some(ns),
                    name: Some(format!("slice-{id}")),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                address_type,
                ports: Some(
                    ports
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name,
                            port,
                            protocol,
                            ..EndpointPort::default()
                        })
                        .collect(),
                ),
                endpoints: FromEndpoints::from_endpoints(endpoints),
            }
        })
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        zone: Some("zone-a".into()),
        addresses: ["192.168.1.10", "127.0.0.1", "2001:db8::10", "fe80::1"]
            .iter()
            .map(|a| a.parse().expect("literal address"))
            .collect(),
    }
}

/// Services with distinct identities (the API never has two with one name).
fn distinct(services: Vec<Service>) -> Vec<Service> {
    let mut seen = std::collections::BTreeSet::new();
    services
        .into_iter()
        .filter(|s| seen.insert(service_ref(s)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Nothing panics, and every virtual server is well formed: real servers of its own
    /// family, sorted, unique, weight 1, non-zero ports; NodePort addresses are never bound and
    /// never loopback or link-local.
    #[test]
    fn output_is_well_formed(
        services in proptest::collection::vec(service(), 0..6),
        slices in proptest::collection::vec(slice(), 0..8),
    ) {
        let services = distinct(services);
        let config = ProxyConfig::default();
        let state = DesiredState::compute(&services, &slices, &node(), &config);
        for (key, vs) in state.virtual_servers() {
            prop_assert_eq!(*key, vs.key);
            prop_assert!(key.port != 0);
            for rs in &vs.real_servers {
                prop_assert_eq!(AddressFamily::of(&rs.addr), key.family(), "{}", vs);
                prop_assert_eq!(rs.weight, 1);
                prop_assert!(rs.port != 0);
            }
            prop_assert!(vs.real_servers.windows(2).all(|w| (w[0].addr, w[0].port) < (w[1].addr, w[1].port)), "{}", vs);
            if vs.exposure == svc_controller::Exposure::NodePort {
                prop_assert!(!vs.bind_address);
                prop_assert!(!key.addr.is_loopback());
            }
            if vs.bind_address {
                prop_assert!(state.has_vip(&key.addr));
            }
        }
        // Problems always name a Service that was in the input.
        for p in state.problems() {
            prop_assert!(services.iter().any(|s| service_ref(s) == *p.service()), "{}", p);
        }
    }

    /// A Service's result depends only on its own input: other Services and their slices,
    /// and slices of other Services handed to it by mistake, change nothing.
    #[test]
    fn service_output_is_isolated(
        target in service(),
        own_slices in proptest::collection::vec(slice(), 0..5),
        others in proptest::collection::vec(service(), 0..5),
        other_slices in proptest::collection::vec(slice(), 0..6),
    ) {
        let node = node();
        let config = ProxyConfig::default();
        let sref = service_ref(&target);
        // Make `own_slices` belong to the target, and keep `other_slices` away from it.
        let own: Vec<EndpointSlice> = own_slices.into_iter().map(|mut s| {
            s.metadata.namespace = Some(sref.namespace.clone());
            s.metadata.labels.get_or_insert_default().insert(SERVICE_NAME_LABEL.into(), sref.name.clone());
            s
        }).collect();
        let foreign: Vec<EndpointSlice> = other_slices.into_iter().filter(|s| {
            svc_controller::slice_service(s).as_ref() != Some(&sref)
        }).collect();
        let others: Vec<Service> = others.into_iter().filter(|s| service_ref(s) != sref).collect();

        let own_refs: Vec<&EndpointSlice> = own.iter().collect();
        let alone = compute_service(&target, &own_refs, &node, &config);

        let all_refs: Vec<&EndpointSlice> = own.iter().chain(foreign.iter()).collect();
        let with_foreign = compute_service(&target, &all_refs, &node, &config);
        prop_assert_eq!(&alone, &with_foreign);

        let mut services = distinct(others);
        services.push(target.clone());
        let slices: Vec<EndpointSlice> = own.iter().chain(foreign.iter()).cloned().collect();
        let grouped = group_slices(&slices);
        let via_group = compute_service(&target, grouped.get(&sref).map(Vec::as_slice).unwrap_or(&[]), &node, &config);
        prop_assert_eq!(&alone, &via_group);

        let state = DesiredState::compute(&services, &slices, &node, &config);
        if alone.virtual_servers.is_empty() && alone.problems.is_empty() {
            prop_assert!(state.service(&sref).is_none());
        } else {
            prop_assert_eq!(state.service(&sref), Some(alone.clone()));
        }
    }

    /// Incremental updates and removals reach the same state as a full computation, and the
    /// reported changes cover every difference.
    #[test]
    fn incremental_matches_full(
        services in proptest::collection::vec(service(), 0..6),
        slices in proptest::collection::vec(slice(), 0..8),
        removed in proptest::collection::vec(any::<bool>(), 6),
    ) {
        let services = distinct(services);
        let node = node();
        let config = ProxyConfig::default();
        let mut state = DesiredState::compute(&services, &slices, &node, &config);
        let before = state.clone();
        let mut kept = Vec::new();
        let mut changed = std::collections::BTreeSet::new();
        let mut changed_vips = std::collections::BTreeSet::new();
        for (svc, remove) in services.iter().zip(removed) {
            if remove {
                let c = state.remove(&service_ref(svc));
                changed.extend(c.virtual_servers);
                changed_vips.extend(c.vips);
            } else {
                kept.push(svc.clone());
            }
        }
        let full = DesiredState::compute(&kept, &slices, &node, &config);
        prop_assert_eq!(state.virtual_servers(), full.virtual_servers());
        prop_assert_eq!(state.vips(), full.vips());
        prop_assert_eq!(state.problems(), full.problems());
        prop_assert_eq!(state.no_local_endpoints(), full.no_local_endpoints());
        for (key, vs) in before.virtual_servers() {
            if state.virtual_servers().get(key) != Some(vs) {
                prop_assert!(changed.contains(key));
            }
        }
        for vip in before.vips().symmetric_difference(&state.vips()) {
            prop_assert!(changed_vips.contains(vip));
        }
        // Re-adding everything restores the original state.
        for svc in &services {
            let grouped = group_slices(&slices);
            let own = grouped.get(&service_ref(svc)).map(Vec::as_slice).unwrap_or(&[]);
            state.update(compute_service(svc, own, &node, &config));
        }
        prop_assert_eq!(state.virtual_servers(), before.virtual_servers());
        prop_assert_eq!(state.vips(), before.vips());
        prop_assert_eq!(state.problems(), before.problems());
        prop_assert_eq!(state.no_local_endpoints(), before.no_local_endpoints());
    }
}
