//! Example 3 — the node daemon on manifests (the README's demo).
//!
//! A "node" namespace runs `ipvs-proxy` on a folder of Kubernetes manifests: a Service `shop/web`
//! with a ClusterIP and a NodePort, backed by three "pods" (backend namespaces that answer with
//! their names). A client namespace reaches it by ClusterIP and by node address and NodePort.
//! Then the program edits the manifests, as the Kubernetes control plane would edit the
//! EndpointSlice, and shows IPVS follow:
//!
//! 1. a pod becomes **not ready**: it stops receiving connections;
//! 2. a pod starts **terminating** while a long-lived connection to it is open: the connection
//!    keeps working (its real server is drained at weight 0) while new connections go elsewhere;
//!    when it closes, the real server is deleted;
//! 3. the Service is **deleted**: its virtual servers and its VIP are gone;
//! 4. the daemon stops on SIGTERM.
//!
//! Then a second act ([`cross_node`]) on two nodes: a client outside the cluster reaches a pod
//! on one node through the other node's NodePort, and the reply comes back; a Service with
//! `externalTrafficPolicy: Local` keeps the client's address.
//!
//! Run it with `cargo xtask demo` (in a VM when the host kernel has no IPVS); it needs the
//! `ipvs-proxy` binary built beside it (`cargo build -p ipvs-proxy`).

mod cross_node;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use examples::{expect, render_tally};
use integration::Netns;
use integration::backend::{LongLivedConnection, tally};
use integration::daemon::{DaemonProcess, Scratch, wait_until, write_atomically};
use integration::topology::{DIRECTOR_ADDR, LoadBalancerTopology};

const CLUSTER_IP: &str = "10.96.0.10";
const NODE_PORT: u16 = 30080;
/// Emulated VMs are slow: generous waits, which return as soon as the state is reached.
const WAIT: Duration = Duration::from_secs(90);

/// An endpoint's state in the EndpointSlice.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pod {
    Ready,
    NotReady,
    Terminating,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!(
                "\nOK: IPVS followed the manifests: readiness, graceful termination, deletion; \
                 across nodes, replies came back and Local kept the client's address."
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nFAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn manifest(pods: &[Pod; 3]) -> String {
    let mut text = format!(
        "\
# The Service: a ClusterIP and a NodePort.
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: NodePort
  clusterIP: {CLUSTER_IP}
  ports:
  - name: http
    port: 80
    targetPort: 8080
    nodePort: {NODE_PORT}
---
# Its endpoints, as the EndpointSlice controller would write them.
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
endpoints:
"
    );
    for (i, pod) in pods.iter().enumerate() {
        let (ready, serving, terminating) = match pod {
            Pod::Ready => (true, true, false),
            Pod::NotReady => (false, false, false),
            Pod::Terminating => (false, true, true),
        };
        text.push_str(&format!(
            "- addresses: [{}]\n  conditions: {{ready: {ready}, serving: {serving}, terminating: {terminating}}}\n  nodeName: node-a\n  targetRef: {{kind: Pod, namespace: shop, name: backend-{}}}\n",
            LoadBalancerTopology::backend_ip(i),
            i + 1
        ));
    }
    text
}

/// The ClusterIP virtual server's real servers as `(backend address, weight)`.
fn real_servers(node: &Netns) -> Result<BTreeMap<String, u32>, Box<dyn std::error::Error>> {
    let out = node.run(|| -> Result<BTreeMap<String, u32>, String> {
        let mut ipvs = ipvs::Ipvs::open().map_err(|e| e.to_string())?;
        let table = ipvs.table().map_err(|e| e.to_string())?;
        let key = ipvs::model::ServiceKey::tcp(
            CLUSTER_IP
                .parse::<std::net::Ipv4Addr>()
                .map_err(|e| e.to_string())?,
            80,
        );
        Ok(table
            .get(&key)
            .map(|c| {
                c.destinations()
                    .map(|d| (d.addr.to_string(), d.weight.get()))
                    .collect()
            })
            .unwrap_or_default())
    })??;
    Ok(out)
}

fn table_text(node: &Netns) -> String {
    node.run(|| {
        let mut ipvs = ipvs::Ipvs::open().ok()?;
        let (info, listing) = examples::listing::read(&mut ipvs).ok()?;
        Some(examples::listing::render_text(
            &info,
            &listing,
            examples::listing::Columns::Connections,
        ))
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| "(cannot read the table)".into())
}

fn wait_for(
    node: &Netns,
    what: &str,
    ok: impl Fn(&BTreeMap<String, u32>) -> bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let reached = wait_until(WAIT, || real_servers(node).ok().filter(|rs| ok(rs)));
    expect(
        reached.is_some(),
        format!("IPVS never showed {what}:\n{}", table_text(node)),
    )?;
    Ok(())
}

fn ip(i: usize) -> String {
    LoadBalancerTopology::backend_ip(i).to_string()
}

fn daemon_binary() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let beside = exe
        .parent()
        .map(|d| d.join("ipvs-proxy"))
        .ok_or("no folder for the current program")?;
    expect(
        beside.exists(),
        format!(
            "{} not found: build it with `cargo build -p ipvs-proxy`",
            beside.display()
        ),
    )?;
    Ok(beside)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let binary = daemon_binary()?;
    println!("Building the network: client → node → 3 pods, one namespace each…");
    let net = LoadBalancerTopology::build(3)?;
    let node = &net.director;
    let scratch = Scratch::new("node-daemon-demo")?;
    let manifests = scratch.manifests();
    let file = manifests.join("web.yaml");
    write_atomically(&file, &manifest(&[Pod::Ready; 3]))?;

    println!(
        "Starting ipvs-proxy in the node on {} (Service shop/web: ClusterIP {CLUSTER_IP}:80, NodePort {NODE_PORT}, 3 ready pods)…",
        manifests.display()
    );
    let args: Vec<String> = [
        "--manifests",
        path_str(&manifests)?,
        "--hostname-override",
        "node-a",
        "--metrics-bind-address",
        "127.0.0.1:10249",
        "--healthz-bind-address",
        "127.0.0.1:10256",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let log = scratch.log("ipvs-proxy");
    let mut daemon = DaemonProcess::start(node, &binary, &args, &log)?;
    daemon.wait_for_log(0, &["node adopted"], WAIT)?;
    wait_for(node, "three real servers", |rs| rs.len() == 3)?;
    println!("\nThe node's IPVS table:\n{}", table_text(node));

    let cluster_ip: SocketAddr = format!("{CLUSTER_IP}:80").parse()?;
    let node_port = SocketAddr::new(DIRECTOR_ADDR.into(), NODE_PORT);
    println!("\n30 connections to the ClusterIP {cluster_ip}:");
    let counts = tally(&net.client, cluster_ip, 30)?;
    println!("{}", render_tally(&counts));
    expect(
        counts.len() == 3 && counts.values().all(|n| *n == 10),
        format!("expected 10 connections on each pod, got {counts:?}"),
    )?;
    println!("\n30 connections to the node address and NodePort {node_port}:");
    let counts = tally(&net.client, node_port, 30)?;
    println!("{}", render_tally(&counts));
    expect(
        counts.len() == 3 && counts.values().all(|n| *n == 10),
        format!("expected 10 connections on each pod, got {counts:?}"),
    )?;

    println!("\nbackend-2 fails its readiness probe (ready: false in the EndpointSlice)…");
    write_atomically(&file, &manifest(&[Pod::Ready, Pod::NotReady, Pod::Ready]))?;
    wait_for(node, "backend-2 removed", |rs| {
        rs.len() == 2 && !rs.contains_key(&ip(1))
    })?;
    let counts = tally(&net.client, cluster_ip, 20)?;
    println!(
        "20 connections to the ClusterIP:\n{}",
        render_tally(&counts)
    );
    expect(
        !counts.contains_key("backend-2") && counts.values().sum::<usize>() == 20,
        format!("backend-2 still got traffic, or connections failed: {counts:?}"),
    )?;

    println!("\nA client opens a long-lived connection…");
    let mut long = LongLivedConnection::open(&net.client, cluster_ip)?;
    let pinned = long.backend().to_owned();
    let pinned_index = match pinned.as_str() {
        "backend-1" => 0,
        "backend-3" => 2,
        other => return Err(format!("the connection reached {other}, which is not ready").into()),
    };
    println!("  it reached {pinned}.");
    println!("{pinned} starts terminating (ready: false, serving: true, terminating: true)…");
    let mut pods = [Pod::Ready, Pod::NotReady, Pod::Ready];
    pods[pinned_index] = Pod::Terminating;
    write_atomically(&file, &manifest(&pods))?;
    wait_for(node, &format!("{pinned} drained at weight 0"), |rs| {
        rs.get(&ip(pinned_index)) == Some(&0)
    })?;
    println!(
        "\nThe node's IPVS table ({pinned} quiesced: weight 0, its connection still counted):\n{}",
        table_text(node)
    );
    long.echo("still there?")?;
    println!("  the long-lived connection still works.");
    let counts = tally(&net.client, cluster_ip, 10)?;
    println!("10 new connections:\n{}", render_tally(&counts));
    let other = if pinned_index == 0 {
        "backend-3"
    } else {
        "backend-1"
    };
    expect(
        counts.get(other) == Some(&10),
        format!("new connections should all go to {other}: {counts:?}"),
    )?;
    long.echo("and now?")?;
    println!(
        "  the long-lived connection still works; closing it (with a reset: IPVS forgets a reset \
         connection after 10 s, a closed one after the 2 minutes of TIME_WAIT)…"
    );
    long.reset();
    wait_for(node, &format!("{pinned} deleted once idle"), |rs| {
        !rs.contains_key(&ip(pinned_index))
    })?;
    println!("  {pinned}'s real server is deleted once its connections ended.");

    println!("\nThe Service is deleted (its manifest removed)…");
    std::fs::remove_file(&file)?;
    let gone = wait_until(WAIT, || {
        let empty = node
            .run(|| {
                ipvs::Ipvs::open()
                    .and_then(|mut i| i.services())
                    .map(|s| s.is_empty())
            })
            .ok()?
            .ok()?;
        empty.then_some(())
    });
    expect(
        gone.is_some(),
        format!("virtual servers left:\n{}", table_text(node)),
    )?;
    let vip_left = node.run(|| {
        std::fs::read_to_string("/proc/net/fib_trie")
            .map(|t| t.contains(CLUSTER_IP))
            .unwrap_or(true)
    })?;
    expect(!vip_left, "the ClusterIP is still bound on kube-ipvs0")?;
    println!("  no virtual server left, and the ClusterIP is unbound from kube-ipvs0.");

    let status = daemon.terminate(WAIT)?;
    expect(status.success(), format!("ipvs-proxy exited with {status}"))?;
    println!("\nipvs-proxy stopped on SIGTERM ({status}).");
    cross_node::run(&binary)
}

fn path_str(path: &Path) -> Result<&str, Box<dyn std::error::Error>> {
    path.to_str().ok_or_else(|| "a non-UTF-8 path".into())
}
