//! kube-proxy as the reference: the release's kube-proxy (`--proxy-mode=ipvs`) and ipvs-proxy
//! run side by side, each in a node namespace of its own with the same node name and address,
//! both watching the real API server. Over a generated cluster (a seeded generator over every
//! Service type, both traffic policies, session affinity, named ports, dual-stack, terminating
//! endpoints, topology hints) and a sequence of changes, their IPVS tables (`ipvsadm -Sn`) and their VIPs
//! (`kube-ipvs0`'s addresses) are compared after each step. A difference fails the test unless
//! the daemon's README lists it as deliberate (see [`deliberate`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use integration::Netns;
use integration::cluster::{HEALTHZ, NodeNamespace, ProxyKind};
use integration::daemon::{DaemonProcess, http_get};
use k8s_openapi::api::core::v1::{
    ClientIPConfig, Pod, Service, ServicePort, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::harness::{Kube, labels, serial};

const NS: &str = "cp-reference";
const NODE: &str = "cp-ref-node";
const OTHER_NODE: &str = "cp-ref-other";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 5, 1);
const NODE_IP6: &str = "fd00:5::1";
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 5, 2);
const OTHER_IP6: &str = "fd00:5::2";
const CLUSTER_CIDR: &str = "10.244.0.0/16,fd00:244::/48";
const SEED: u64 = 0x1b5_2026;
const SERVICES: usize = 200;
const GROUPS: usize = 24;

/// One proxy under comparison: its node namespace (with its relay to the API server) and its
/// process.
struct Proxy {
    name: &'static str,
    node: NodeNamespace,
    process: DaemonProcess,
}

fn start_proxy(kube: &Kube, kind: ProxyKind, scratch: &Path) -> Proxy {
    let node = NodeNamespace::new(
        kind.name(),
        NODE_IP,
        Some(NODE_IP6.parse().unwrap()),
        kube.cluster.api_addr(),
    )
    .unwrap();
    let kubeconfig = scratch.join(format!("{}.kubeconfig", kind.name()));
    node.write_kubeconfig(&kube.cluster, kind.identity(), &kubeconfig)
        .unwrap();
    let program = match kind {
        ProxyKind::KubeProxy => kube.cluster.kube_proxy_binary(),
        ProxyKind::IpvsProxy => PathBuf::from(env!("CARGO_BIN_EXE_ipvs-proxy")),
        ProxyKind::KubeRouter => panic!("the reference tests compare with kube-proxy only"),
    };
    let args = kind.args(&kubeconfig, NODE, CLUSTER_CIDR, &[]);
    let process = DaemonProcess::start(
        node.netns(),
        &program,
        &args,
        &scratch.join(format!("{}.log", kind.name())),
    )
    .unwrap();
    Proxy {
        name: kind.name(),
        node,
        process,
    }
}

/// What a proxy programmed: `ipvsadm -Sn`'s lines grouped by virtual server, and the VIPs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Programmed {
    /// `"-t 10.96.0.10:80"` → its `-A` line's options and its `-a` lines' options, sorted.
    table: BTreeMap<String, (String, Vec<String>)>,
    vips: BTreeSet<IpAddr>,
}

fn run_in(netns: &Netns, program: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let name = program.to_owned();
    let out = netns
        .run(move || Command::new(&name).args(&args).output())
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn programmed(netns: &Netns) -> Programmed {
    let mut table: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in run_in(netns, "ipvsadm", &["-Sn"]).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 3 {
            continue;
        }
        // Canonical: an address as Rust writes it, as the Services' keys are written.
        let addr = words[2]
            .parse::<SocketAddr>()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| words[2].to_owned());
        let key = format!("{} {addr}", words[1]);
        let rest = words[3..].join(" ");
        match words[0] {
            "-A" => table.entry(key).or_default().0 = rest,
            "-a" => table.entry(key).or_default().1.push(rest),
            _ => {}
        }
    }
    for (_, dests) in table.values_mut() {
        dests.sort();
    }
    // kube-proxy binds a VIP as an address on kube-ipvs0, ipvs-proxy an IPv4 one as a local
    // route through it (README: "VIPs as routes"); both put a local route through kube-ipvs0
    // in the local table, which is what makes the kernel deliver the VIP's packets to IPVS.
    // Before a proxy has made kube-ipvs0 (kube-proxy makes it in its first sync, which comes
    // after its /healthz already answers 200), it binds nothing.
    let mut vips = BTreeSet::new();
    let has_dummy = run_in(netns, "ip", &["-o", "link", "show"])
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("kube-ipvs0:"));
    for family in ["-4", "-6"].into_iter().filter(|_| has_dummy) {
        let text = run_in(
            netns,
            "ip",
            &[
                family,
                "route",
                "show",
                "table",
                "local",
                "dev",
                "kube-ipvs0",
            ],
        );
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"local")
                && let Some(ip) = words.get(1).and_then(|a| a.parse().ok())
            {
                vips.insert(ip);
            }
        }
    }
    Programmed { table, vips }
}

/// Waits until every difference between the two tables is one `explained` accepts, or until
/// both have stopped changing for [`QUIET`], then returns both. kube-proxy rewrites everything
/// in each sync, and under emulation one sync of a few hundred Services takes minutes: a
/// difference seen before it is done is only lag.
fn settled(
    a: &Proxy,
    b: &Proxy,
    explained: impl Fn(&Programmed, &Programmed) -> bool,
) -> (Programmed, Programmed) {
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut last = (programmed(a.node.netns()), programmed(b.node.netns()));
    let mut quiet_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let now = (programmed(a.node.netns()), programmed(b.node.netns()));
        if now == last && explained(&now.0, &now.1) {
            return now;
        }
        if now != last {
            quiet_since = Instant::now();
        }
        last = now;
        if quiet_since.elapsed() > QUIET || Instant::now() > deadline {
            return last;
        }
    }
}

/// How long both tables must stay unchanged to count as settled while they still differ:
/// kube-proxy can start its IPv6 half minutes after its IPv4 one under emulation.
const QUIET: Duration = Duration::from_secs(300);

/// Waits until the proxy's `/healthz` says it has programmed what it knows.
fn wait_healthy(kube: &Kube, proxy: &Proxy) {
    if kube
        .try_wait_for(|| {
            matches!(
                http_get(proxy.node.netns(), HEALTHZ, "/healthz"),
                Ok((200, _))
            )
            .then_some(())
        })
        .is_none()
    {
        panic!(
            "{} never became healthy; its log:\n{}",
            proxy.name,
            tail(&proxy.process.log(), 60)
        );
    }
}

/// A difference between the two tables.
#[derive(Debug)]
struct Difference {
    /// The virtual server (`-t 10.96.0.10:80`), when it is about one.
    key: Option<String>,
    /// In words a person can read.
    text: String,
    /// kube-proxy has a real server there that ipvs-proxy, whose virtual server has none, lacks.
    reference_fills_our_empty: bool,
}

fn differences(reference: &Programmed, ours: &Programmed) -> Vec<Difference> {
    let mut out = Vec::new();
    let plain = |text: String| Difference {
        key: None,
        text,
        reference_fills_our_empty: false,
    };
    let keys: BTreeSet<&String> = reference.table.keys().chain(ours.table.keys()).collect();
    for key in keys {
        let about = |text: String, fills: bool| Difference {
            key: Some(key.clone()),
            text,
            reference_fills_our_empty: fills,
        };
        match (reference.table.get(key), ours.table.get(key)) {
            (Some(r), None) => out.push(about(format!("only kube-proxy has {key} {}", r.0), false)),
            (None, Some(o)) => out.push(about(format!("only ipvs-proxy has {key} {}", o.0), false)),
            (Some(r), Some(o)) => {
                if r.0 != o.0 {
                    out.push(about(
                        format!("{key}: kube-proxy `{}`, ipvs-proxy `{}`", r.0, o.0),
                        false,
                    ));
                }
                let rd: BTreeSet<&String> = r.1.iter().collect();
                let od: BTreeSet<&String> = o.1.iter().collect();
                for d in rd.difference(&od) {
                    out.push(about(
                        format!("{key}: only kube-proxy has real server {d}"),
                        o.1.is_empty(),
                    ));
                }
                for d in od.difference(&rd) {
                    out.push(about(
                        format!("{key}: only ipvs-proxy has real server {d}"),
                        false,
                    ));
                }
            }
            (None, None) => {}
        }
    }
    for vip in reference.vips.difference(&ours.vips) {
        out.push(plain(format!("only kube-proxy binds {vip}")));
    }
    for vip in ours.vips.difference(&reference.vips) {
        out.push(plain(format!("only ipvs-proxy binds {vip}")));
    }
    out
}

/// For each virtual server (`-t 10.96.0.10:80`), whether the traffic policy that applies to
/// its address is `Local` (`internalTrafficPolicy` for a ClusterIP, `externalTrafficPolicy`
/// for the rest), and the Service's name.
fn policies(kube: &Kube) -> BTreeMap<String, (bool, String)> {
    let mut out = BTreeMap::new();
    let list = kube
        .run(kube.api::<Service>(NS).list(&Default::default()))
        .unwrap();
    for service in list {
        let name = service.metadata.name.clone().unwrap_or_default();
        let Some(spec) = service.spec else { continue };
        let internal = spec.internal_traffic_policy.as_deref() == Some("Local");
        let external = spec.external_traffic_policy.as_deref() == Some("Local");
        let external_addrs: Vec<String> = spec
            .external_ips
            .iter()
            .flatten()
            .cloned()
            .chain(
                service
                    .status
                    .iter()
                    .filter_map(|s| s.load_balancer.as_ref())
                    .flat_map(|lb| lb.ingress.iter().flatten())
                    .filter_map(|i| i.ip.clone()),
            )
            .collect();
        for port in spec.ports.iter().flatten() {
            let flag = if port.protocol.as_deref() == Some("UDP") {
                "-u"
            } else {
                "-t"
            };
            // As `programmed` writes them (an IPv6 address in brackets).
            let key = |ip: &str, port: i32| match ip.parse::<IpAddr>() {
                Ok(ip) => format!("{flag} {}", SocketAddr::new(ip, port as u16)),
                Err(_) => format!("{flag} {ip}:{port}"),
            };
            for ip in spec.cluster_ips.iter().flatten().filter(|ip| *ip != "None") {
                out.insert(key(ip, port.port), (internal, name.clone()));
            }
            for ip in &external_addrs {
                out.insert(key(ip, port.port), (external, name.clone()));
            }
            if let Some(node_port) = port.node_port {
                for ip in [NODE_IP.to_string(), NODE_IP6.to_string()] {
                    out.insert(key(&ip, node_port), (external, name.clone()));
                }
            }
        }
    }
    out
}

/// The tag of the README's entry that makes `difference` deliberate, if any. Each entry of the
/// daemon README's "Differences from kube-proxy's IPVS mode" starts with a bold tag the test
/// knows; a tag the README lacks allows nothing.
fn deliberate(
    difference: &Difference,
    policies: &BTreeMap<String, (bool, String)>,
    readme: &str,
) -> Option<&'static str> {
    let local_without_local_endpoint = |d: &Difference| {
        d.reference_fills_our_empty
            && d.key
                .as_ref()
                .and_then(|k| policies.get(k))
                .is_some_and(|(local, _)| *local)
    };
    type Allows<'a> = &'a dyn Fn(&Difference) -> bool;
    let tags: &[(&str, Allows<'_>)] = &[(
        "A Local traffic policy with no local endpoint",
        &local_without_local_endpoint,
    )];
    tags.iter()
        .find(|(tag, allows)| readme.contains(&format!("**{tag}**")) && allows(difference))
        .map(|(tag, _)| *tag)
}

/// A seeded cluster of Services, pods and slices.
struct Generator {
    rng: fastrand::Rng,
}

impl Generator {
    fn pods(&mut self, kube: &Kube) -> Vec<String> {
        let mut names = Vec::new();
        for group in 0..GROUPS {
            for n in 0..self.rng.usize(0..4) {
                let (node, subnet) = if self.rng.bool() {
                    (NODE, 1)
                } else {
                    (OTHER_NODE, 2)
                };
                let name = format!("app{group}-{n}");
                let host = group * 8 + n + 2;
                let ip = format!("10.244.{subnet}.{host},fd00:244:{subnet}::{host:x}");
                kube.pod(NS, &name, node, &format!("app{group}"), &ip, 8080);
                if self.rng.u8(0..5) == 0 {
                    kube.set_pod_status(NS, &name, &ip, false);
                }
                names.push(name);
            }
        }
        names
    }

    fn service(&mut self, i: usize) -> (Service, Option<EndpointSlice>) {
        let name = format!("svc{i}");
        let kind = match self.rng.u8(0..100) {
            0..35 => "ClusterIP",
            35..55 => "NodePort",
            55..70 => "LoadBalancer",
            70..80 => "ExternalIPs",
            80..85 => "ExternalName",
            85..90 => "Headless",
            _ => "SelectorLess",
        };
        let mut ports = Vec::new();
        for p in 0..self.rng.usize(1..=3) {
            let udp = self.rng.u8(0..5) == 0;
            ports.push(ServicePort {
                name: Some(format!("p{p}")),
                port: 1000 + (i as i32) * 4 + p as i32,
                protocol: Some(if udp { "UDP" } else { "TCP" }.into()),
                target_port: Some(if !udp && self.rng.bool() {
                    IntOrString::String("http".into())
                } else {
                    IntOrString::Int(8080 + p as i32)
                }),
                ..Default::default()
            });
        }
        let mut spec = k8s_openapi::api::core::v1::ServiceSpec {
            ports: Some(ports.clone()),
            selector: Some(labels(&[(
                "app",
                &format!("app{}", self.rng.usize(0..GROUPS)),
            )])),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        };
        match kind {
            "NodePort" | "LoadBalancer" => {
                spec.type_ = Some(kind.into());
                if self.rng.u8(0..3) == 0 {
                    spec.external_traffic_policy = Some("Local".into());
                }
            }
            "ExternalIPs" => {
                spec.external_ips = Some(vec![format!("203.0.113.{}", 1 + i % 250)]);
                if self.rng.bool() {
                    spec.type_ = Some("NodePort".into());
                    spec.external_traffic_policy = Some("Local".into());
                }
            }
            "ExternalName" => {
                spec.type_ = Some("ExternalName".into());
                spec.external_name = Some(format!("svc{i}.example.invalid"));
                spec.selector = None;
            }
            "Headless" => spec.cluster_ip = Some("None".into()),
            "SelectorLess" => spec.selector = None,
            _ => {}
        }
        if kind != "ExternalName" {
            // Dual-stack: either order, or IPv6 alone, beside the IPv4 default.
            match self.rng.u8(0..10) {
                0..2 => spec.ip_family_policy = Some("PreferDualStack".into()),
                2 => {
                    spec.ip_family_policy = Some("RequireDualStack".into());
                    spec.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
                }
                3 => spec.ip_families = Some(vec!["IPv6".into()]),
                _ => {}
            }
            if self.rng.u8(0..10) == 0 {
                spec.internal_traffic_policy = Some("Local".into());
            }
            if self.rng.u8(0..5) == 0 {
                spec.session_affinity = Some("ClientIP".into());
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(*[60, 600, 10800].get(self.rng.usize(0..3)).unwrap()),
                    }),
                });
            }
            if self.rng.u8(0..10) == 0 {
                spec.traffic_distribution = Some("PreferClose".into());
            }
        }
        let service = Service {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        };
        let slice = (kind == "SelectorLess").then(|| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{name}-manual")),
                labels: Some(labels(&[("kubernetes.io/service-name", &name)])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                (0..self.rng.usize(1..4))
                    .map(|e| Endpoint {
                        addresses: vec![format!("10.244.9.{}", (i % 60) * 4 + e + 1)],
                        conditions: Some(EndpointConditions {
                            ready: Some(self.rng.u8(0..4) != 0),
                            serving: Some(true),
                            terminating: Some(false),
                        }),
                        node_name: Some(if self.rng.bool() { NODE } else { OTHER_NODE }.into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(
                ports
                    .iter()
                    .enumerate()
                    .map(|(p, port)| EndpointPort {
                        name: port.name.clone(),
                        port: Some(8080 + p as i32),
                        protocol: port.protocol.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
        });
        (service, slice)
    }
}

#[test]
#[ignore = "needs a real control plane: cargo xtask control-plane-tests"]
fn kube_proxy_and_ipvs_proxy_program_the_same_tables() {
    let _one = serial();
    let kube = Kube::connect();
    kube.bind_daemon();
    kube.namespace(NS);
    kube.node(NODE, &format!("{NODE_IP},{NODE_IP6}"), "zone-a");
    kube.node(OTHER_NODE, &format!("{OTHER_IP},{OTHER_IP6}"), "zone-b");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();

    let mut generator = Generator {
        rng: fastrand::Rng::with_seed(SEED),
    };
    let pods = generator.pods(&kube);
    let mut services = Vec::new();
    for i in 0..SERVICES {
        let (service, slice) = generator.service(i);
        let name = service.metadata.name.clone().unwrap();
        kube.create_service(NS, &service);
        if let Some(slice) = slice {
            kube.run(
                kube.api::<EndpointSlice>(NS)
                    .create(&PostParams::default(), &slice),
            )
            .unwrap();
        }
        services.push(name);
    }
    // Load balancers get their addresses, as a cloud controller writes them.
    for (i, name) in services.iter().enumerate() {
        let service = kube.run(kube.api::<Service>(NS).get(name)).unwrap();
        if service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") {
            let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": format!("198.51.100.{}", 1 + i % 250)}]}}});
            kube.run(kube.api::<Service>(NS).patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&status),
            ))
            .unwrap();
        }
    }

    let scratch = std::env::temp_dir().join(format!("cp-reference-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut reference = start_proxy(&kube, ProxyKind::KubeProxy, &scratch);
    let mut ours = start_proxy(&kube, ProxyKind::IpvsProxy, &scratch);

    let mut unexplained = Vec::new();
    let mut explained: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut compare = |step: &str, kube: &Kube, reference: &Proxy, ours: &Proxy| {
        // The API server's changes reach both watches before either is read.
        std::thread::sleep(Duration::from_secs(5));
        let policies = policies(kube);
        let (r, o) = settled(reference, ours, |r, o| {
            differences(r, o)
                .iter()
                .all(|d| deliberate(d, &policies, &readme).is_some())
        });
        println!(
            "{step}: kube-proxy {} virtual servers, {} VIPs; ipvs-proxy {} virtual servers, {} VIPs",
            r.table.len(),
            r.vips.len(),
            o.table.len(),
            o.vips.len()
        );
        let mut shown = 0;
        for difference in differences(&r, &o) {
            match deliberate(&difference, &policies, &readme) {
                Some(tag) => *explained.entry(tag).or_default() += 1,
                None => {
                    let service = difference
                        .key
                        .as_ref()
                        .and_then(|k| policies.get(k))
                        .map(|(_, name)| name.as_str())
                        .unwrap_or("?");
                    unexplained.push(format!("{step}: {} (Service {service})", difference.text));
                    // The whole virtual server on both sides, for the first few.
                    if let Some(key) = difference.key.as_ref().filter(|_| shown < 8) {
                        shown += 1;
                        println!(
                            "{step}: {key} (Service {service}):\n  kube-proxy {:?}\n  ipvs-proxy {:?}",
                            r.table.get(key),
                            o.table.get(key)
                        );
                        if let Ok(slices) = kube.run(
                            kube.api::<EndpointSlice>(NS).list(
                                &kube::api::ListParams::default()
                                    .labels(&format!("kubernetes.io/service-name={service}")),
                            ),
                        ) {
                            for slice in slices {
                                println!("  slice {:?}", slice.endpoints);
                            }
                        }
                    }
                }
            }
        }
    };
    wait_healthy(&kube, &reference);
    wait_healthy(&kube, &ours);
    compare("initial", &kube, &reference, &ours);

    // Changes: readiness flips, pods terminating, ports changing, Services going.
    let mut rng = fastrand::Rng::with_seed(SEED + 1);
    let flipped: Vec<&String> = pods.iter().filter(|_| rng.u8(0..4) == 0).collect();
    for name in flipped {
        let pod = kube.run(kube.api::<Pod>(NS).get(name)).unwrap();
        let ip = pod
            .status
            .and_then(|s| s.pod_ips)
            .unwrap()
            .into_iter()
            .map(|p| p.ip)
            .collect::<Vec<_>>()
            .join(",");
        kube.set_pod_status(NS, name, &ip, rng.bool());
    }
    compare("readiness flipped", &kube, &reference, &ours);
    for name in pods.iter().filter(|_| rng.u8(0..6) == 0) {
        kube.run(kube.api::<Pod>(NS).delete(name, &DeleteParams::default()))
            .unwrap();
    }
    compare("pods terminating", &kube, &reference, &ours);
    for name in services.iter().filter(|_| rng.u8(0..10) == 0) {
        let service = kube.run(kube.api::<Service>(NS).get(name)).unwrap();
        let Some(mut ports) = service.spec.and_then(|s| s.ports) else {
            continue;
        };
        for port in &mut ports {
            port.port += 2;
            port.node_port = None;
        }
        kube.patch_service(NS, name, json!({"spec": {"ports": ports}}));
    }
    compare("ports changed", &kube, &reference, &ours);
    for name in services.iter().filter(|_| rng.u8(0..10) == 0) {
        kube.delete_service(NS, name);
    }
    compare("Services deleted", &kube, &reference, &ours);

    for proxy in [&mut reference, &mut ours] {
        assert!(
            proxy.process.is_running(),
            "{} still running; log:\n{}",
            proxy.name,
            proxy.process.log()
        );
    }
    println!("deliberate differences seen: {explained:?}");
    if !unexplained.is_empty() {
        println!(
            "kube-proxy's log (tail):\n{}",
            tail(&reference.process.log(), 40)
        );
    }
    assert!(
        unexplained.is_empty(),
        "{} differences the README does not list:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
    let _ = reference.process.terminate(Duration::from_secs(30));
    let _ = ours.process.terminate(Duration::from_secs(30));
    kube.delete_namespace(NS);
    kube.delete_node(NODE);
    kube.delete_node(OTHER_NODE);
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
