//! Kubernetes mode at scale: ipvs-proxy against kube-proxy's IPVS mode (the release the control
//! plane runs), each watching the real API server loaded with the synthetic cluster.
//!
//! Run by `cargo xtask bench`, which builds the daemon in release mode, starts the control
//! plane on the host (as for the control-plane tests) and runs this program in the VM with
//! `IPVS_CONTROL_PLANE` set. For each size, in increasing order, the API server holds the first
//! N Services of [`integration::synthetic`]: selector-less Services, each with an EndpointSlice
//! of ten ready endpoints written as an EndpointSlice controller writes them, the ClusterIPs
//! and NodePorts given out by the API server, a load balancer's ingress written to its status.
//! Then each proxy runs alone (one after the other, so that neither takes the other's CPU) in a
//! fresh node namespace of its own, as the same node, and is measured the same way:
//!
//! - **cold start**: from spawning it to the end of the sync after which the kernel's table
//!   holds every virtual server with its ready endpoints (the sync's end is the
//!   `kubeproxy_sync_proxy_rules_last_timestamp_seconds` gauge both serve; the table is listed
//!   to check it);
//! - **steady state**: its CPU over a window with no change, and its RSS;
//! - **one change at a time**: an endpoint's readiness flipped in its EndpointSlice through the
//!   API server, timed from just before the write to the kernel showing it on every virtual
//!   server of the Service; CPU per change is the process's CPU over the series ÷ changes;
//! - **burst**: that many changes of as many Services written at once (16 writes in flight),
//!   each timed from its own write to the kernel showing it;
//! - **restart**: SIGTERM (both leave the table) and the same command again: time to its first
//!   sync, whether the table (virtual servers, real servers, weights) is the same afterwards,
//!   and, for ipvs-proxy, the IPVS operations it made (kube-proxy does not count them).
//!
//! It writes a Markdown section (`--write FILE`) that `cargo xtask bench` places in
//! BENCHMARKS.md.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::{self, StreamExt};
use integration::bench::{Cpu, Latencies, Machine, Memory, mib, ms, release_daemon};
use integration::cluster::{Identity, METRICS, NodeNamespace, ProxyKind, TestCluster};
use integration::daemon::{DaemonProcess, http_get};
use integration::synthetic::SyntheticCluster;
use integration::table::listing;
use integration::{Netns, synthetic};
use ipvs::Ipvs;
use ipvs::model::{DestinationEntry, ServiceKey};
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

const ENDPOINTS: usize = 10;
const NODE: &str = "bench-node";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 6, 1);
const CLUSTER_CIDR: &str = "10.128.0.0/9";
/// Writes in flight while loading the API server or writing a burst.
const IN_FLIGHT: usize = 16;
/// The longest any one step may take before the run is called failed: kube-proxy's syncs of a
/// large table take minutes under emulation.
const SLOW: Duration = Duration::from_secs(3600);
const MANAGED_BY: &str = "kubernetes-scale-bench";

#[derive(Debug, Clone)]
struct Options {
    sizes: Vec<usize>,
    daemon: PathBuf,
    write: Option<PathBuf>,
    logs: PathBuf,
    samples: usize,
    reference_samples: usize,
    burst: usize,
    steady_secs: u64,
    proxies: Vec<ProxyKind>,
    /// Seconds of kube-proxy's CPU profile taken at the end of each size (0: none).
    profile_secs: u64,
}

impl Options {
    fn parse() -> Self {
        let mut o = Options {
            sizes: vec![1000],
            daemon: release_daemon(),
            write: None,
            logs: std::env::temp_dir(),
            samples: 50,
            reference_samples: 10,
            burst: 1000,
            steady_secs: 30,
            proxies: vec![ProxyKind::IpvsProxy, ProxyKind::KubeProxy],
            profile_secs: 0,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .unwrap_or_else(|| panic!("{name} needs a value"))
            };
            match arg.as_str() {
                "--bench" => {}
                "--sizes" => o.sizes = numbers(&value("--sizes")),
                "--daemon" => o.daemon = value("--daemon").into(),
                "--write" => o.write = Some(value("--write").into()),
                "--logs" => o.logs = value("--logs").into(),
                "--samples" => o.samples = number(&value("--samples")),
                "--reference-samples" => {
                    o.reference_samples = number(&value("--reference-samples"))
                }
                "--burst" => o.burst = number(&value("--burst")),
                "--steady-secs" => o.steady_secs = number(&value("--steady-secs")) as u64,
                "--profile-secs" => o.profile_secs = number(&value("--profile-secs")) as u64,
                "--proxies" => {
                    o.proxies = value("--proxies")
                        .split(',')
                        .map(|p| match p.trim() {
                            "ipvs-proxy" => ProxyKind::IpvsProxy,
                            "kube-proxy" => ProxyKind::KubeProxy,
                            other => panic!("--proxies: unknown proxy {other:?}"),
                        })
                        .collect()
                }
                // libtest's flags, when cargo bench passes them.
                other if other.starts_with("--") => {}
                other => panic!("unexpected argument {other:?}"),
            }
        }
        o.sizes.sort_unstable();
        o.sizes.dedup();
        assert!(!o.sizes.is_empty(), "--sizes names no size");
        o
    }

    fn samples(&self, kind: ProxyKind) -> usize {
        // An even count: each Service flipped is flipped back, so every size starts ready.
        let n = match kind {
            ProxyKind::IpvsProxy => self.samples,
            ProxyKind::KubeProxy => self.reference_samples,
        };
        n.div_ceil(2) * 2
    }
}

fn number(text: &str) -> usize {
    text.trim()
        .replace('_', "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

fn numbers(text: &str) -> Vec<usize> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(number)
        .collect()
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// The API server and what it holds.

/// The admin's view of the control plane, and the synthetic cluster loaded into it so far.
struct Cluster {
    test: TestCluster,
    rt: tokio::runtime::Runtime,
    client: Client,
    synthetic: SyntheticCluster,
    /// The virtual servers of each loaded Service (ClusterIP, NodePort, ingress), in order.
    keys: Vec<Vec<ServiceKey>>,
}

impl Cluster {
    fn connect(largest: usize) -> Self {
        let test = TestCluster::from_env().expect("the control plane's description");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let kubeconfig = test
            .kubeconfig(Identity::Admin, None)
            .expect("the admin's kubeconfig");
        let client = rt.block_on(async {
            let config = Kubeconfig::from_yaml(&kubeconfig).expect("a kubeconfig");
            let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
                .await
                .expect("a client configuration");
            Client::try_from(config).expect("a client")
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        while let Err(e) = rt.block_on(client.apiserver_version()) {
            assert!(
                Instant::now() < deadline,
                "the API server never answered: {e}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Self {
            test,
            rt,
            client,
            synthetic: SyntheticCluster::new(largest, ENDPOINTS),
            keys: Vec::new(),
        }
    }

    /// The node, the namespaces, and the daemon's rights: those of kube-proxy
    /// (`system:node-proxier`), so that both proxies are authorized alike.
    fn prepare(&self) {
        let apply = PatchParams::apply(MANAGED_BY).force();
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "ipvs-proxy-bench"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:node-proxier"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": Identity::Daemon.user()}],
        }))
        .expect("a ClusterRoleBinding");
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        }))
        .expect("a Node");
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": NODE_IP.to_string()}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        self.rt.block_on(async {
            Api::<ClusterRoleBinding>::all(self.client.clone())
                .patch("ipvs-proxy-bench", &apply, &Patch::Apply(&binding))
                .await
                .expect("bind the daemon's identity");
            nodes
                .patch(NODE, &apply, &Patch::Apply(&node))
                .await
                .expect("the bench's Node");
            nodes
                .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("the bench's Node's status");
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            for i in 0..synthetic::NAMESPACES.min(self.synthetic.len()) {
                let name = self.synthetic.service(i).namespace.clone();
                let ns: Namespace = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                }))
                .expect("a Namespace");
                namespaces
                    .patch(&name, &apply, &Patch::Apply(&ns))
                    .await
                    .expect("a namespace");
            }
        });
    }

    /// Creates Services `self.keys.len()..n` with their slices; returns the seconds it took.
    fn load(&mut self, n: usize) -> f64 {
        let started = Instant::now();
        let from = self.keys.len();
        let client = &self.client;
        let synthetic = &self.synthetic;
        let created: Vec<(usize, Vec<ServiceKey>)> = self.rt.block_on(
            stream::iter(from..n)
                .map(|i| create_service(client, synthetic, i))
                .buffer_unordered(IN_FLIGHT)
                .collect(),
        );
        let mut created: BTreeMap<usize, Vec<ServiceKey>> = created.into_iter().collect();
        for i in from..n {
            self.keys
                .push(created.remove(&i).expect("every Service was created"));
        }
        started.elapsed().as_secs_f64()
    }

    /// What a complete table holds for the loaded Services: each virtual server and how many
    /// of its real servers are ready.
    fn expected(&self) -> Vec<(ServiceKey, usize)> {
        self.keys
            .iter()
            .enumerate()
            .flat_map(|(i, keys)| {
                let ready = (0..ENDPOINTS)
                    .filter(|&j| self.synthetic.is_ready(i, j))
                    .count();
                keys.iter().map(move |k| (*k, ready))
            })
            .collect()
    }

    /// Sets one endpoint's readiness in its EndpointSlice.
    fn set_ready(&mut self, service: usize, endpoint: usize, ready: bool) {
        self.synthetic
            .mark_ready(service, endpoint, ready)
            .expect("an endpoint of the cluster");
        let (ns, name, patch) = slice_patch(&self.synthetic, service);
        self.rt.block_on(async {
            Api::<EndpointSlice>::namespaced(self.client.clone(), &ns)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("update an EndpointSlice")
        });
    }

    /// Sets the readiness of endpoint `endpoint` of each of `services`, `IN_FLIGHT` writes at a
    /// time, telling `written` just before each write starts.
    fn set_ready_all(
        &mut self,
        services: &[usize],
        endpoint: usize,
        ready: bool,
        written: &(dyn Fn(usize) + Sync),
    ) {
        let mut patches = Vec::new();
        for (k, &s) in services.iter().enumerate() {
            self.synthetic
                .mark_ready(s, endpoint, ready)
                .expect("an endpoint of the cluster");
            patches.push((k, slice_patch(&self.synthetic, s)));
        }
        let client = &self.client;
        self.rt.block_on(
            stream::iter(patches)
                .map(|(k, (ns, name, patch))| async move {
                    written(k);
                    Api::<EndpointSlice>::namespaced(client.clone(), &ns)
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .expect("update an EndpointSlice");
                })
                .buffer_unordered(IN_FLIGHT)
                .collect::<Vec<()>>(),
        );
    }
}

/// Service `i` and its slice, as the API server should hold them: the ClusterIP and NodePort
/// left for the API server to give out.
fn objects(synthetic: &SyntheticCluster, i: usize) -> (Service, EndpointSlice) {
    let list: Value = serde_json::from_str(&synthetic.manifest(i)).expect("a synthetic manifest");
    let mut service = list["items"][0].clone();
    if let Some(spec) = service["spec"].as_object_mut() {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    if let Some(port) = service["spec"]["ports"][0].as_object_mut() {
        port.remove("nodePort");
    }
    if let Some(obj) = service.as_object_mut() {
        obj.remove("status");
    }
    let mut slice = list["items"][1].clone();
    slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] = json!(MANAGED_BY);
    (
        serde_json::from_value(service).expect("a Service"),
        serde_json::from_value(slice).expect("an EndpointSlice"),
    )
}

/// The namespace, name and merge patch that give Service `i`'s slice its endpoints' current
/// readiness.
fn slice_patch(synthetic: &SyntheticCluster, i: usize) -> (String, String, Value) {
    let list: Value = serde_json::from_str(&synthetic.manifest(i)).expect("a synthetic manifest");
    let slice = &list["items"][1];
    (
        slice["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        slice["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        json!({"endpoints": slice["endpoints"]}),
    )
}

async fn create_service(
    client: &Client,
    synthetic: &SyntheticCluster,
    i: usize,
) -> (usize, Vec<ServiceKey>) {
    let described = synthetic.service(i);
    let (service, slice) = objects(synthetic, i);
    let services: Api<Service> = Api::namespaced(client.clone(), &described.namespace);
    let created = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap_or_else(|e| panic!("create Service {}: {e}", described.name));
    if let Some(ip) = described.ingress_ip {
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string()}]}}});
        services
            .patch_status(
                &described.name,
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap_or_else(|e| panic!("Service {}'s status: {e}", described.name));
    }
    Api::<EndpointSlice>::namespaced(client.clone(), &described.namespace)
        .create(&PostParams::default(), &slice)
        .await
        .unwrap_or_else(|e| panic!("create {}'s EndpointSlice: {e}", described.name));
    let spec = created.spec.unwrap_or_default();
    let cluster_ip: IpAddr = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("Service {} got no ClusterIP", described.name));
    let first = spec
        .ports
        .as_ref()
        .and_then(|p| p.first())
        .unwrap_or_else(|| panic!("Service {} has no port", described.name));
    let port = u16::try_from(first.port).unwrap_or(0);
    let mut keys = vec![ServiceKey::tcp(cluster_ip, port)];
    if let Some(node_port) = first.node_port.and_then(|p| u16::try_from(p).ok()) {
        keys.push(ServiceKey::tcp(NODE_IP, node_port));
    }
    if let Some(ip) = described.ingress_ip {
        keys.push(ServiceKey::tcp(ip, port));
    }
    (i, keys)
}

// ---------------------------------------------------------------------------------------------
// A proxy's table and its own figures, read inside its namespace.

/// How far the namespace's table is from `expected`: `None` when complete, else what is
/// missing or wrong, in words.
fn incomplete(netns: &Netns, expected: &[(ServiceKey, usize)]) -> Option<String> {
    netns
        .run(|| {
            let mut ipvs = Ipvs::open().expect("IPVS handle");
            let present: HashSet<ServiceKey> = match ipvs.services() {
                Ok(services) => services.into_iter().map(|s| s.service.key).collect(),
                Err(e) => return Some(format!("cannot list the table: {e}")),
            };
            let missing: Vec<&ServiceKey> = expected
                .iter()
                .map(|(k, _)| k)
                .filter(|k| !present.contains(k))
                .collect();
            if let Some(first) = missing.first() {
                return Some(format!(
                    "{} of {} virtual servers missing ({} present), {first:?} among them",
                    missing.len(),
                    expected.len(),
                    present.len()
                ));
            }
            let keys: Vec<ServiceKey> = expected.iter().map(|(k, _)| *k).collect();
            let listed = match ipvs.destinations_of(&keys) {
                Ok(listed) => listed,
                Err(e) => return Some(format!("cannot list the real servers: {e}")),
            };
            let wrong: Vec<String> = listed
                .iter()
                .map(|d| ready_count(d))
                .zip(expected)
                .filter(|(have, (_, want))| have != want)
                .map(|(have, (key, want))| format!("{key:?}: {have} ready, not {want}"))
                .collect();
            (!wrong.is_empty()).then(|| {
                format!(
                    "{} virtual servers with the wrong real servers, as {}",
                    wrong.len(),
                    wrong[0]
                )
            })
        })
        .unwrap_or_else(|e| Some(format!("cannot enter the namespace: {e}")))
}

/// What [`Running::wait_complete`] saw: when (Unix seconds) a listing first found the table
/// complete, the end of the sync that left it so, and the metrics read then.
#[derive(Debug, Clone, Copy)]
struct Completed {
    seen: f64,
    synced: f64,
    metrics: Metrics,
}

/// The proxy's metrics that matter here: the end of its last sync, and (ipvs-proxy) the IPVS
/// operations it made.
#[derive(Debug, Clone, Copy, Default)]
struct Metrics {
    last_sync: f64,
    /// Syncs so far and their seconds (`kubeproxy_sync_proxy_rules_duration_seconds`, all
    /// families).
    syncs: u64,
    sync_seconds: f64,
    operations: Option<u64>,
}

impl Metrics {
    fn read(netns: &Netns) -> Option<Self> {
        let (status, text) = http_get(netns, METRICS, "/metrics").ok()?;
        if status != 200 {
            return None;
        }
        let mut m = Metrics::default();
        // The family exists from the start; a counter without a label set yet is zero.
        if text.contains("# TYPE ipvs_proxy_operations counter") {
            m.operations = Some(0);
        }
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            // kube-proxy labels it per IP family: the latest of any.
            let bare = name.split('{').next().unwrap_or(name);
            if bare == "kubeproxy_sync_proxy_rules_last_timestamp_seconds" {
                m.last_sync = m.last_sync.max(value.parse().unwrap_or(0.0));
            } else if bare == "kubeproxy_sync_proxy_rules_duration_seconds_count" {
                m.syncs += value.parse::<f64>().unwrap_or(0.0) as u64;
            } else if bare == "kubeproxy_sync_proxy_rules_duration_seconds_sum" {
                m.sync_seconds += value.parse::<f64>().unwrap_or(0.0);
            } else if name.starts_with("ipvs_proxy_operations_total{") {
                *m.operations.get_or_insert(0) += value.parse::<u64>().unwrap_or(0);
            }
        }
        Some(m)
    }
}

/// A Go CPU profile of `secs` seconds from the pprof handler on the proxy's metrics address.
fn cpu_profile(netns: &Netns, secs: u64) -> std::io::Result<Vec<u8>> {
    netns.run(|| -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&METRICS, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(Duration::from_secs(secs + 120)))?;
        write!(
            stream,
            "GET /debug/pprof/profile?seconds={secs} HTTP/1.0\r\nHost: {METRICS}\r\n\r\n"
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let body = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| response.split_off(at + 4))
            .unwrap_or_default();
        if !response.starts_with(b"HTTP/1.0 200") && !response.starts_with(b"HTTP/1.1 200") {
            return Err(std::io::Error::other(format!(
                "{}",
                String::from_utf8_lossy(&response[..response.len().min(80)])
            )));
        }
        Ok(body)
    })?
}

/// Real servers that take new connections (weight above 0).
fn ready_count(destinations: &[DestinationEntry]) -> usize {
    destinations
        .iter()
        .filter(|d| d.destination.weight.get() > 0)
        .count()
}

/// Whether every virtual server of `keys` shows `ready` ready real servers.
fn shows(ipvs: &mut Ipvs, keys: &[ServiceKey], ready: usize) -> bool {
    keys.iter().all(|key| {
        ipvs.destinations(key)
            .is_ok_and(|d| ready_count(&d) == ready)
    })
}

/// How long to wait before looking again, `elapsed` into a wait: often at first, then about
/// twenty times over the wait so far, so that a minutes-long sync is not slowed by the watching.
fn poll_interval(elapsed: Duration) -> Duration {
    (elapsed / 20).clamp(Duration::from_millis(2), Duration::from_millis(250))
}

// ---------------------------------------------------------------------------------------------
// One proxy at one size.

#[derive(Debug, Clone, Default)]
struct ProxyResult {
    /// Spawn → a listing found the table complete.
    cold: f64,
    /// Spawn → the end of the sync that left it complete.
    cold_sync: f64,
    /// Syncs until the table was complete, and their seconds.
    cold_syncs: (u64, f64),
    cold_hwm_kib: u64,
    steady_cpu: f64,
    steady_secs: f64,
    steady_rss_kib: u64,
    one: Latencies,
    one_cpu_per_change: f64,
    burst: Latencies,
    burst_cpu_per_change: f64,
    burst_written: f64,
    restart: f64,
    restart_unchanged: bool,
    restart_operations: Option<u64>,
    peak_kib: u64,
}

struct Running {
    kind: ProxyKind,
    node: NodeNamespace,
    process: DaemonProcess,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Running {
    fn start(cluster: &Cluster, kind: ProxyKind, opts: &Options, n: usize) -> Self {
        let node = NodeNamespace::new(kind.name(), NODE_IP, None, cluster.test.api_addr())
            .expect("a node namespace");
        let kubeconfig = opts.logs.join(format!("{}-{n}.kubeconfig", kind.name()));
        node.write_kubeconfig(&cluster.test, kind.identity(), &kubeconfig)
            .expect("write a kubeconfig");
        let program = match kind {
            ProxyKind::IpvsProxy => opts.daemon.clone(),
            ProxyKind::KubeProxy => cluster.test.kube_proxy_binary(),
        };
        // kube-proxy serves its Go profiles on the metrics address when asked to.
        let extra = if kind == ProxyKind::KubeProxy && opts.profile_secs > 0 {
            vec!["--profiling".to_string()]
        } else {
            Vec::new()
        };
        let args = kind.args(&kubeconfig, NODE, CLUSTER_CIDR, &extra);
        let log = opts.logs.join(format!("{}-{n}.log", kind.name()));
        let _ = std::fs::remove_file(&log);
        let process = DaemonProcess::start(node.netns(), &program, &args, &log)
            .unwrap_or_else(|e| panic!("start {} ({e})", program.display()));
        Self {
            kind,
            node,
            process,
            program,
            args,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn alive(&mut self) {
        assert!(
            self.process.is_running(),
            "{} exited; its log ({}) ends:\n{}",
            self.kind.name(),
            self.log.display(),
            tail(&self.process.log(), 40)
        );
    }

    /// Waits until the table is complete and a sync that ended at or after `since` (Unix
    /// seconds) has left it so. The table can be complete before the sync that fills it ends
    /// (kube-proxy programs IPVS first, then its ipsets and iptables rules).
    fn wait_complete(&mut self, expected: &[(ServiceKey, usize)], since: f64) -> Completed {
        let started = Instant::now();
        let mut told = Instant::now();
        let mut seen: Option<f64> = None;
        // The start of the last look that found the table incomplete: the sync that completed
        // it ended after that.
        let mut last_incomplete = since;
        let mut last_scrape: Option<Instant> = None;
        loop {
            self.alive();
            let look = unix(SystemTime::now());
            let mut status = incomplete(self.node.netns(), expected);
            match (&status, seen) {
                (Some(_), None) => last_incomplete = look,
                (None, None) => seen = Some(unix(SystemTime::now())),
                _ => {}
            }
            // A scrape of /metrics costs the proxy (kube-proxy's is large): only once the
            // table is complete, and at most every 2 s.
            if let Some(seen) = seen
                && last_scrape.is_none_or(|t| t.elapsed() >= Duration::from_secs(2))
            {
                last_scrape = Some(Instant::now());
                if let Some(m) = Metrics::read(self.node.netns())
                    && m.last_sync >= last_incomplete.max(since)
                {
                    return Completed {
                        seen,
                        synced: m.last_sync.min(unix(SystemTime::now())),
                        metrics: m,
                    };
                }
                status = Some("complete; waiting for the end of the sync".into());
            }
            if started.elapsed() > SLOW || told.elapsed() > Duration::from_secs(60) {
                println!(
                    "  {}: after {:.0} s: {}",
                    self.kind.name(),
                    started.elapsed().as_secs_f64(),
                    status.as_deref().unwrap_or("complete")
                );
                told = Instant::now();
                assert!(
                    started.elapsed() < SLOW,
                    "{}: the table was not complete after {SLOW:?}",
                    self.kind.name()
                );
            }
            std::thread::sleep(poll_interval(started.elapsed()).max(Duration::from_millis(100)));
        }
    }

    /// Waits until every virtual server of `keys` shows `ready` ready real servers; returns
    /// the seconds from `from`.
    fn wait_shows(&mut self, keys: &[ServiceKey], ready: usize, from: Instant) -> f64 {
        let netns = self.node.netns().clone();
        let seen = netns
            .run(|| {
                let mut ipvs = Ipvs::open().expect("IPVS handle");
                loop {
                    if shows(&mut ipvs, keys, ready) {
                        return Some(from.elapsed().as_secs_f64());
                    }
                    if from.elapsed() > SLOW {
                        return None;
                    }
                    std::thread::sleep(poll_interval(from.elapsed()));
                }
            })
            .expect("enter the node's namespace");
        self.alive();
        seen.unwrap_or_else(|| panic!("{}: a change never showed", self.kind.name()))
    }

    fn stop(mut self) {
        let _ = self.process.terminate(Duration::from_secs(30));
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Services spread over the cluster, `count` of them, distinct when `count <= n`.
fn spread(n: usize, count: usize, salt: usize) -> Vec<usize> {
    let step = (n / count.max(1)).max(1);
    (0..count).map(|k| (k * step + salt) % n).collect()
}

fn run_proxy(cluster: &mut Cluster, kind: ProxyKind, n: usize, opts: &Options) -> ProxyResult {
    let mut r = ProxyResult::default();
    let name = kind.name();
    let expected = cluster.expected();

    // Cold start.
    let spawned = unix(SystemTime::now());
    let mut proxy = Running::start(cluster, kind, opts, n);
    let done = proxy.wait_complete(&expected, spawned);
    r.cold = done.seen - spawned;
    r.cold_sync = done.synced - spawned;
    r.cold_syncs = (done.metrics.syncs, done.metrics.sync_seconds);
    r.cold_hwm_kib = Memory::read(proxy.pid()).peak_kib;
    println!(
        "  {name}: cold start: table complete after {}, its sync ended after {} ({} syncs taking {})",
        ms(r.cold),
        ms(r.cold_sync),
        done.metrics.syncs,
        ms(done.metrics.sync_seconds)
    );

    // Steady state.
    std::thread::sleep(Duration::from_secs(5));
    let before = Cpu::read(proxy.pid());
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(opts.steady_secs));
    r.steady_cpu = Cpu::read(proxy.pid()).since(&before).with_children();
    r.steady_secs = window.elapsed().as_secs_f64();
    r.steady_rss_kib = Memory::read(proxy.pid()).now_kib;
    println!(
        "  {name}: steady {:.2} s CPU in {:.0} s",
        r.steady_cpu, r.steady_secs
    );

    // One change at a time: a Service's endpoint 0 goes unready, then ready again.
    let samples = opts.samples(kind);
    let services = spread(n, samples / 2, 7);
    let before = Cpu::read(proxy.pid());
    for k in 0..samples {
        let service = services[k / 2];
        let ready = k % 2 == 1;
        let keys = cluster.keys[service].clone();
        let want = (0..ENDPOINTS)
            .filter(|&j| (j == 0 && ready) || (j != 0 && cluster.synthetic.is_ready(service, j)))
            .count();
        let from = Instant::now();
        cluster.set_ready(service, 0, ready);
        r.one.push(proxy.wait_shows(&keys, want, from));
        std::thread::sleep(Duration::from_millis(100));
    }
    r.one_cpu_per_change =
        Cpu::read(proxy.pid()).since(&before).with_children() / samples.max(1) as f64;
    println!(
        "  {name}: one change at a time p50/p99/max {}",
        r.one.describe()
    );

    // A burst: endpoint 1 of `burst` Services goes unready at once.
    let count = opts.burst.min(n);
    let services = spread(n, count, 3);
    let watch: Vec<(Vec<ServiceKey>, usize)> = services
        .iter()
        .map(|&s| (cluster.keys[s].clone(), ENDPOINTS - 1))
        .collect();
    let writes: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; count]));
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let writes = Arc::clone(&writes);
        let done = Arc::clone(&done);
        proxy
            .node
            .netns()
            .spawn(move || {
                let mut ipvs = Ipvs::open().map_err(std::io::Error::other)?;
                let mut seen: Vec<Option<f64>> = vec![None; watch.len()];
                let started = Instant::now();
                while seen.iter().any(Option::is_none) && started.elapsed() < SLOW {
                    let written: Vec<Option<Instant>> =
                        writes.lock().map(|w| w.clone()).unwrap_or_default();
                    for (k, (keys, ready)) in watch.iter().enumerate() {
                        if seen[k].is_none()
                            && let Some(at) = written.get(k).copied().flatten()
                            && shows(&mut ipvs, keys, *ready)
                        {
                            seen[k] = Some(at.elapsed().as_secs_f64());
                        }
                    }
                    // Often while the writes go on, then less and less.
                    let pause = if done.load(Ordering::Relaxed) {
                        poll_interval(started.elapsed())
                    } else {
                        Duration::from_millis(5)
                    };
                    std::thread::sleep(pause);
                }
                Ok(seen)
            })
            .expect("a thread in the node's namespace")
    };
    let before = Cpu::read(proxy.pid());
    let burst_start = Instant::now();
    cluster.set_ready_all(&services, 1, false, &|k| {
        if let Ok(mut w) = writes.lock() {
            w[k] = Some(Instant::now());
        }
    });
    r.burst_written = burst_start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let seen = poller
        .join()
        .expect("the burst's watcher")
        .expect("the burst's watcher");
    proxy.alive();
    r.burst_cpu_per_change =
        Cpu::read(proxy.pid()).since(&before).with_children() / count.max(1) as f64;
    for (k, s) in seen.iter().enumerate() {
        r.burst
            .push(s.unwrap_or_else(|| panic!("{name}: burst change {k} never showed")));
    }
    println!(
        "  {name}: burst of {count} written in {}, p50/p99/max {}",
        ms(r.burst_written),
        r.burst.describe()
    );
    // Back to ready, not measured.
    let since = unix(SystemTime::now());
    cluster.set_ready_all(&services, 1, true, &|_| {});
    let expected = cluster.expected();
    let _ = proxy.wait_complete(&expected, since);

    // Restart with unchanged inputs.
    std::thread::sleep(Duration::from_secs(2));
    let table_before = listing(proxy.node.netns()).expect("list the IPVS table");
    r.peak_kib = Memory::read(proxy.pid()).peak_kib;
    proxy
        .process
        .terminate(Duration::from_secs(60))
        .expect("stop the proxy");
    let restarted = unix(SystemTime::now());
    proxy.process =
        DaemonProcess::start(proxy.node.netns(), &proxy.program, &proxy.args, &proxy.log)
            .expect("restart the proxy");
    r.restart = proxy.wait_complete(&expected, restarted).synced - restarted;
    r.restart_operations = Metrics::read(proxy.node.netns()).and_then(|m| m.operations);
    r.restart_unchanged = listing(proxy.node.netns()).expect("list the IPVS table") == table_before;
    r.peak_kib = r.peak_kib.max(Memory::read(proxy.pid()).peak_kib);
    println!(
        "  {name}: restart {}, table unchanged: {}",
        ms(r.restart),
        r.restart_unchanged
    );

    // Where kube-proxy's time goes, after every figure is taken: its periodic syncs, whose
    // work is a full sync's, as every one of its syncs is.
    if kind == ProxyKind::KubeProxy && opts.profile_secs > 0 {
        let path = opts.logs.join(format!("{name}-{n}.pprof"));
        match cpu_profile(proxy.node.netns(), opts.profile_secs) {
            Ok(bytes) => {
                std::fs::write(&path, bytes).expect("write the profile");
                println!(
                    "  {name}: CPU profile of {} s in {}",
                    opts.profile_secs,
                    path.display()
                );
            }
            Err(e) => println!("  {name}: no CPU profile: {e}"),
        }
    }
    proxy.stop();
    r
}

// ---------------------------------------------------------------------------------------------
// The report.

struct SizeResult {
    n: usize,
    load_secs: f64,
    table: (usize, usize),
    proxies: BTreeMap<ProxyKind, ProxyResult>,
}

fn ratio(reference: f64, ours: f64) -> String {
    if ours > 0.0 && reference.is_finite() && ours.is_finite() {
        format!("{:.1}×", reference / ours)
    } else {
        "n/a".into()
    }
}

fn report(results: &[SizeResult], opts: &Options, cluster: &Cluster) -> String {
    let Machine {
        description: machine,
        kernel,
    } = Machine::read();
    let mut md = String::new();
    md += "## Kubernetes mode: ipvs-proxy and kube-proxy on a real API server\n\n";
    md += &format!(
        "(`integration/benches/kubernetes_scale.rs`, run with `--sizes {} --samples {} --reference-samples {} --burst {} --steady-secs {}`.)\n\n",
        opts.sizes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
        opts.samples,
        opts.reference_samples,
        opts.burst,
        opts.steady_secs
    );
    md += &format!("- machine: {machine}\n- kernel: {kernel}\n");
    md += &format!(
        "- control plane: Kubernetes {} (kube-apiserver, kube-controller-manager, etcd) on the host, reached over QEMU's user-mode network; kube-proxy {} `--proxy-mode=ipvs`\n",
        cluster.test.version(),
        cluster.test.version()
    );
    md += "- cluster: the synthetic cluster above as API objects: selector-less Services with one EndpointSlice of 10 ready endpoints each, ClusterIPs and NodePorts given out by the API server\n";
    md += "- each proxy alone in a fresh node namespace (one address), as the same Node, with its own identity (the daemon bound to kube-proxy's `system:node-proxier`), the same kube-proxy flags (`--proxy-mode=ipvs --ipvs-scheduler=rr --cluster-cidr`) and otherwise each one's defaults (kube-proxy: at most one sync a second, a full sync every 30 s; ipvs-proxy: a sync as soon as a change comes, a full pass every 30 s)\n\n";

    let header = |md: &mut String| {
        *md += "| |";
        for r in results {
            *md += &format!(" {} Services: ipvs-proxy | kube-proxy | ratio |", r.n);
        }
        *md += "\n| --- |";
        for _ in results {
            *md += " --- | --- | --- |";
        }
        *md += "\n";
    };
    header(&mut md);
    let row = |md: &mut String,
               label: &str,
               cell: &dyn Fn(&ProxyResult) -> String,
               value: Option<&dyn Fn(&ProxyResult) -> f64>| {
        *md += &format!("| {label} |");
        for r in results {
            let ours = r.proxies.get(&ProxyKind::IpvsProxy);
            let reference = r.proxies.get(&ProxyKind::KubeProxy);
            let show = |p: Option<&ProxyResult>| p.map_or("not run".into(), cell);
            let ratio = match (value, ours, reference) {
                (Some(v), Some(o), Some(k)) => ratio(v(k), v(o)),
                _ => String::new(),
            };
            *md += &format!(" {} | {} | {ratio} |", show(ours), show(reference));
        }
        *md += "\n";
    };
    md += "| API objects loaded (Services + slices, seconds) |";
    for r in results {
        md += &format!(" {} ({:.0} s) | | |", r.n, r.load_secs);
    }
    md += "\n| virtual servers / ready real servers expected |";
    for r in results {
        md += &format!(" {} / {} | | |", r.table.0, r.table.1);
    }
    md += "\n";
    row(
        &mut md,
        "**cold start**: spawn → IPVS table complete",
        &|p| ms(p.cold),
        Some(&|p| p.cold),
    );
    row(
        &mut md,
        "cold start: spawn → end of the sync that completed it",
        &|p| ms(p.cold_sync),
        Some(&|p| p.cold_sync),
    );
    row(
        &mut md,
        "cold start: syncs until then (their time)",
        &|p| format!("{} ({})", p.cold_syncs.0, ms(p.cold_syncs.1)),
        None,
    );
    row(
        &mut md,
        "cold start: peak RSS (VmHWM)",
        &|p| mib(p.cold_hwm_kib),
        None,
    );
    row(
        &mut md,
        "**steady state**: CPU with no change",
        &|p| {
            format!(
                "{:.2} % ({:.2} s in {:.0} s)",
                100.0 * p.steady_cpu / p.steady_secs.max(1e-9),
                p.steady_cpu,
                p.steady_secs
            )
        },
        Some(&|p| p.steady_cpu / p.steady_secs.max(1e-9)),
    );
    row(
        &mut md,
        "steady state: RSS",
        &|p| mib(p.steady_rss_kib),
        Some(&|p| p.steady_rss_kib as f64),
    );
    row(
        &mut md,
        "**one change at a time**: p50 / p99 / max",
        &|p| format!("{} ({} changes)", p.one.describe(), p.one.len()),
        None,
    );
    row(
        &mut md,
        "one change: p99",
        &|p| ms(p.one.quantile(0.99)),
        Some(&|p| p.one.quantile(0.99)),
    );
    row(
        &mut md,
        "one change: process CPU per change",
        &|p| ms(p.one_cpu_per_change),
        Some(&|p| p.one_cpu_per_change),
    );
    row(
        &mut md,
        "**burst**: p50 / p99 / max",
        &|p| {
            format!(
                "{} ({} changes written in {})",
                p.burst.describe(),
                p.burst.len(),
                ms(p.burst_written)
            )
        },
        None,
    );
    row(
        &mut md,
        "burst: p99",
        &|p| ms(p.burst.quantile(0.99)),
        Some(&|p| p.burst.quantile(0.99)),
    );
    row(
        &mut md,
        "burst: process CPU per change",
        &|p| ms(p.burst_cpu_per_change),
        Some(&|p| p.burst_cpu_per_change),
    );
    row(
        &mut md,
        "**restart** (same inputs): start → end of its first complete sync",
        &|p| ms(p.restart),
        Some(&|p| p.restart),
    );
    row(
        &mut md,
        "restart: table unchanged / IPVS operations",
        &|p| {
            format!(
                "{} / {}",
                if p.restart_unchanged { "yes" } else { "**no**" },
                p.restart_operations
                    .map_or("not counted".into(), |o| o.to_string())
            )
        },
        None,
    );
    row(
        &mut md,
        "peak RSS, whole run",
        &|p| mib(p.peak_kib),
        Some(&|p| p.peak_kib as f64),
    );
    md += "\nRatios are kube-proxy ÷ ipvs-proxy: above 1× ipvs-proxy is faster or smaller.\n\n";
    md += "How each figure is taken:\n\n";
    md += "- **cold start**: from just before the proxy is spawned to the end of the first listing of the kernel's table (polled about twenty times over the wait so far, at least every 250 ms) that holds every virtual server of the loaded Services with its ready real servers; and to the end of the sync that left it so (the `kubeproxy_sync_proxy_rules_last_timestamp_seconds` gauge, any IP family, read at most every 2 s once the table is complete: kube-proxy programs IPVS first and its ipsets and iptables rules after). The syncs are `kubeproxy_sync_proxy_rules_duration_seconds`' count and sum then.\n";
    md += "- **steady state**: the user + system CPU of the process and of the programs it ran (`/proc/PID/stat`: kube-proxy runs `ipset` and `iptables-restore`; ipvs-proxy runs nothing) over the window, starting 5 s after the cold start; RSS is `VmRSS` at its end, peaks `VmHWM` (the process's own).\n";
    md += "- **one change at a time**: endpoint 0 of a Service flipped unready (then ready again) by a merge patch of its EndpointSlice; from just before the request to the kernel showing the new count of ready real servers (weight above 0) on every virtual server of the Service, polled often at first and about twenty times over the wait after; then 100 ms of quiet. CPU per change: the process's CPU over the whole series ÷ changes (periodic work included).\n";
    md += "- **burst**: endpoint 1 of that many Services flipped unready, 16 requests in flight; each change from just before its own request to the kernel showing it (one watcher checks every pending Service in turn). Then every one flipped back, not measured.\n";
    md += "- **under emulation**: kube-proxy's IPVS mode adds each ipset entry by running the `ipset` program once per entry, and lists each set by running it again in every sync (`pkg/proxy/ipvs/ipset.go`); a process start costs far more under QEMU's software emulation than on hardware, so this part of kube-proxy's cost, which dominates its cold start (every entry is new), weighs more here than it would on hardware.\n";
    md += "- **restart**: SIGTERM (both leave the table), the same command again: to the end of its first sync that leaves the table complete; the table compared with the one before (virtual servers, real servers, weights); ipvs-proxy's IPVS operations from `ipvs_proxy_operations_total` (kube-proxy does not count its own).\n\n";
    md
}

fn main() {
    let opts = Options::parse();
    let largest = *opts.sizes.last().expect("a size");
    let mut cluster = Cluster::connect(largest);
    cluster.prepare();
    std::fs::create_dir_all(&opts.logs).expect("the logs' folder");
    let mut results = Vec::new();
    for &n in &opts.sizes {
        println!("{n} Services: loading the API server");
        let load_secs = cluster.load(n);
        let expected = cluster.expected();
        let table = (
            expected.len(),
            expected.iter().map(|(_, ready)| ready).sum(),
        );
        println!(
            "{n} Services loaded in {load_secs:.1} s ({} virtual servers)",
            table.0
        );
        let mut proxies = BTreeMap::new();
        for &kind in &opts.proxies {
            proxies.insert(kind, run_proxy(&mut cluster, kind, n, &opts));
        }
        results.push(SizeResult {
            n,
            load_secs,
            table,
            proxies,
        });
        let text = report(&results, &opts, &cluster);
        if let Some(path) = &opts.write {
            std::fs::write(path, &text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        println!("{text}");
    }
}
