//! The pure desired-state computation alone: no kernel, no I/O.
//!
//! The cluster is the one of the real-kernel scale benchmark (`integration::synthetic`, rebuilt
//! here because `integration` depends on this crate): of every 50 Services, 40 ClusterIP, 9
//! NodePort and 1 LoadBalancer with an ingress IP; one TCP port; one EndpointSlice of 10 ready
//! endpoints each; a node with one address.
//!
//! - `compute_service/<kind>`: one Service ([`compute_service`]);
//! - `one_change/<N>`: one endpoint of one Service flips readiness in a node of N Services:
//!   [`compute_service`] plus [`DesiredState::update`], what an incremental sync computes;
//! - `whole_cluster/<N>`: [`DesiredState::compute`] of N Services (an adoption's computation).
//!
//! `cargo bench -p svc-controller --bench desired_state`; runs on any host.

#![allow(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use svc_controller::{DesiredState, NodeInfo, ProxyConfig, compute_service};

const ENDPOINTS: usize = 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

/// The kind of Service `i`, as `integration::synthetic` chooses it.
fn kind_of(i: usize) -> Kind {
    match i % 50 {
        25 => Kind::LoadBalancer,
        r if r % 5 == 2 && r != 47 => Kind::NodePort,
        _ => Kind::ClusterIp,
    }
}

fn offset(base: Ipv4Addr, by: usize) -> String {
    Ipv4Addr::from(u32::from(base).wrapping_add(by as u32)).to_string()
}

fn meta(i: usize, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(format!("ns-{:03}", i % 100)),
        ..ObjectMeta::default()
    }
}

fn service(i: usize, kind: Kind, node_port: i32) -> Service {
    let cluster_ip = offset(Ipv4Addr::new(10, 96, 0, 0), i + 1);
    let type_ = match kind {
        Kind::ClusterIp => "ClusterIP",
        Kind::NodePort => "NodePort",
        Kind::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata: meta(i, format!("svc-{i:06}")),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: Some(cluster_ip.clone()),
            cluster_ips: Some(vec![cluster_ip]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                node_port: (kind != Kind::ClusterIp).then_some(node_port),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: (kind == Kind::LoadBalancer).then(|| ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some(offset(Ipv4Addr::new(172, 16, 0, 0), i + 1)),
                    ..LoadBalancerIngress::default()
                }]),
            }),
            ..ServiceStatus::default()
        }),
    }
}

fn slice(i: usize, not_ready: Option<usize>) -> EndpointSlice {
    let mut metadata = meta(i, format!("svc-{i:06}-abcde"));
    metadata.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_owned(),
        format!("svc-{i:06}"),
    )]));
    EndpointSlice {
        metadata,
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            protocol: Some("TCP".into()),
            port: Some(8080),
            ..EndpointPort::default()
        }]),
        endpoints: Some(
            (0..ENDPOINTS)
                .map(|j| {
                    let ready = not_ready != Some(j);
                    Endpoint {
                        addresses: vec![offset(Ipv4Addr::new(10, 128, 0, 0), i * 16 + j + 1)],
                        conditions: Some(EndpointConditions {
                            ready: Some(ready),
                            serving: Some(ready),
                            terminating: Some(false),
                        }),
                        node_name: Some(format!("node-{}", (i + j) % 100)),
                        ..Endpoint::default()
                    }
                })
                .collect(),
        ),
    }
}

/// `n` Services and their slices.
fn cluster(n: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut node_port = 30_000;
    let services = (0..n)
        .map(|i| {
            let kind = kind_of(i);
            let s = service(i, kind, node_port);
            if kind != Kind::ClusterIp {
                node_port += 1;
            }
            s
        })
        .collect();
    (services, (0..n).map(|i| slice(i, None)).collect())
}

fn node() -> NodeInfo {
    let mut node = NodeInfo::new("node-1");
    node.addresses = vec![Ipv4Addr::new(192, 0, 2, 1).into()];
    node
}

fn per_service(c: &mut Criterion) {
    let node = node();
    let config = ProxyConfig::default();
    let mut group = c.benchmark_group("compute_service");
    for (name, i) in [("ClusterIP", 0), ("NodePort", 2), ("LoadBalancer", 25)] {
        let svc = service(i, kind_of(i), 30_000);
        let sl = slice(i, None);
        group.bench_function(name, |b| {
            b.iter(|| compute_service(black_box(&svc), &[black_box(&sl)], &node, &config))
        });
    }
    group.finish();
}

fn sizes() -> Vec<usize> {
    std::env::var("DESIRED_STATE_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000])
}

fn one_change(c: &mut Criterion) {
    let node = node();
    let config = ProxyConfig::default();
    let mut group = c.benchmark_group("one_change");
    for n in sizes() {
        let (services, slices) = cluster(n);
        let mut state = DesiredState::compute(&services, &slices, &node, &config);
        // The changed Service: a NodePort one in the middle of the table.
        let i = (n / 2 / 50) * 50 + 2;
        let flipped = [slice(i, Some(3)), slice(i, None)];
        let mut k = 0usize;
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                k += 1;
                let desired = compute_service(&services[i], &[&flipped[k % 2]], &node, &config);
                black_box(state.update(desired))
            })
        });
    }
    group.finish();
}

fn whole_cluster(c: &mut Criterion) {
    let node = node();
    let config = ProxyConfig::default();
    let mut group = c.benchmark_group("whole_cluster");
    group.sample_size(10);
    for n in sizes() {
        let (services, slices) = cluster(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                DesiredState::compute(black_box(&services), black_box(&slices), &node, &config)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, per_service, one_change, whole_cluster);
criterion_main!(benches);
