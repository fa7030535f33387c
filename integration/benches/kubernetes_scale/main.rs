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
use integration::bench::{
    Cpu, Latencies, Machine, Memory, Scrape, klog, mib, ms, release_daemon, unix_seconds,
};
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

mod cluster;
mod report;
mod run;
mod table;

use cluster::*;
use report::*;
use run::*;
use table::*;

const ENDPOINTS: usize = 10;
const NODE: &str = "bench-node";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 6, 1);
const CLUSTER_CIDR: &str = "10.128.0.0/9";
/// Writes in flight while loading the API server or writing a burst.
const IN_FLIGHT: usize = 16;
/// The longest any one step may take before the run is called failed: kube-proxy's syncs of a
/// large table take minutes under emulation.
const SLOW: Duration = Duration::from_secs(3600);
/// The default `--cold-cap-secs`: under emulation kube-proxy's first sync of 10,000 Services
/// runs for longer than a benchmark run can wait, and a lower bound says enough.
const COLD_CAP: Duration = Duration::from_secs(600);
const MANAGED_BY: &str = "kubernetes-scale-bench";

#[derive(Debug, Clone)]
struct Options {
    sizes: Vec<usize>,
    daemon: PathBuf,
    write: Option<PathBuf>,
    logs: PathBuf,
    samples: usize,
    reference_samples: usize,
    /// kube-router's changes one at a time: each costs it a sync of the whole table.
    kube_router_samples: usize,
    burst: usize,
    steady_secs: u64,
    proxies: Vec<ProxyKind>,
    /// kube-router's binary (`--kube-router`); without it, kube-router is not run.
    kube_router: Option<PathBuf>,
    /// Seconds of kube-proxy's CPU profile taken at the end of each size (0: none).
    profile_secs: u64,
    /// How long a proxy's cold start may take before it is reported as not complete and the
    /// rest of its measurements at that size are left out.
    cold_cap: Duration,
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
            kube_router_samples: 2,
            burst: 1000,
            steady_secs: 60,
            proxies: Vec::new(),
            kube_router: None,
            profile_secs: 0,
            cold_cap: COLD_CAP,
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
                "--kube-router-samples" => {
                    o.kube_router_samples = number(&value("--kube-router-samples"))
                }
                "--burst" => o.burst = number(&value("--burst")),
                "--steady-secs" => o.steady_secs = number(&value("--steady-secs")) as u64,
                "--profile-secs" => o.profile_secs = number(&value("--profile-secs")) as u64,
                "--kube-router" => o.kube_router = Some(value("--kube-router").into()),
                "--cold-cap-secs" => {
                    o.cold_cap = Duration::from_secs(number(&value("--cold-cap-secs")) as u64)
                }
                "--proxies" => {
                    o.proxies = value("--proxies")
                        .split(',')
                        .map(|p| match p.trim() {
                            "ipvs-proxy" => ProxyKind::IpvsProxy,
                            "kube-proxy" => ProxyKind::KubeProxy,
                            "kube-router" => ProxyKind::KubeRouter,
                            other => panic!("--proxies: unknown proxy {other:?}"),
                        })
                        .collect()
                }
                // libtest's flags, when cargo bench passes them.
                other if other.starts_with("--") => {}
                other => panic!("unexpected argument {other:?}"),
            }
        }
        if o.proxies.is_empty() {
            o.proxies = vec![ProxyKind::IpvsProxy, ProxyKind::KubeProxy];
            if o.kube_router.is_some() {
                o.proxies.push(ProxyKind::KubeRouter);
            }
        }
        assert!(
            o.kube_router.is_some() || !o.proxies.contains(&ProxyKind::KubeRouter),
            "kube-router needs --kube-router PATH"
        );
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
            ProxyKind::KubeRouter => self.kube_router_samples,
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
