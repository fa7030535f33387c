//! The second act: two nodes on a LAN, a pod on one of them, a client outside the cluster.
//!
//! A NodePort is open on every node, so the client may reach the pod through the node it does
//! not run on. That node's IPVS sends the connection on to the other node; the pod's reply
//! must come back the same way to be un-NATed, so the node masquerades the connection (the
//! pod sees the node's address). A Service with `externalTrafficPolicy: Local` instead keeps
//! the client's address, and only the node that runs a pod serves it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use examples::expect;
use integration::daemon::{DaemonProcess, Scratch, write_atomically};
use integration::nodes::{CLIENT_ADDR, CLUSTER_CIDR, Nodes, POD_PORT};
use integration::witness::ask_tcp;

const WAIT: Duration = Duration::from_secs(90);

/// A NodePort Service `name` with ClusterIP `cluster_ip`, its one pod at `pod` on node-b.
fn service(name: &str, cluster_ip: &str, node_port: u16, policy: &str, pod: Ipv4Addr) -> String {
    format!(
        "\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: shop
spec:
  type: NodePort
  clusterIP: {cluster_ip}
  externalTrafficPolicy: {policy}
  ports:
  - name: http
    port: 80
    targetPort: {POD_PORT}
    nodePort: {node_port}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: shop
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: http
  port: {POD_PORT}
endpoints:
- addresses: [{pod}]
  conditions: {{ready: true}}
  nodeName: node-b
"
    )
}

/// Runs the second act with the daemon at `binary`.
pub(crate) fn run(binary: &Path) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "\nTwo nodes now, on a LAN with a client outside the cluster: node-a {}, node-b {} \
         with pod b1, client {CLIENT_ADDR}…",
        Nodes::node_addr(0),
        Nodes::node_addr(1)
    );
    let net = Nodes::build(&[0, 1])?;
    let b1 = net.pod("b1").ok_or("no pod b1")?.addr;
    let scratch = Scratch::new("demo-cross-node")?;
    write_atomically(
        &scratch.manifests().join("web.yaml"),
        &service("web", "10.96.0.10", 30080, "Cluster", b1),
    )?;
    write_atomically(
        &scratch.manifests().join("web-local.yaml"),
        &service("web-local", "10.96.0.11", 30081, "Local", b1),
    )?;
    println!(
        "Starting ipvs-proxy on both nodes (shop/web: NodePort 30080; shop/web-local: NodePort \
         30081, externalTrafficPolicy: Local; both served by b1)…"
    );
    let mut daemons = Vec::new();
    for node in &net.nodes {
        let args: Vec<String> = [
            "--manifests",
            scratch.manifests().to_str().ok_or("a non-UTF-8 path")?,
            "--hostname-override",
            &node.name,
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--metrics-bind-address",
            "127.0.0.1:10249",
            "--healthz-bind-address",
            "127.0.0.1:10256",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut daemon =
            DaemonProcess::start(&node.netns, binary, &args, &scratch.log(&node.name))?;
        daemon.wait_for_log(0, &["node adopted"], WAIT)?;
        daemons.push(daemon);
    }

    let ask = |node: usize, port: u16| {
        let target = SocketAddr::new(IpAddr::V4(Nodes::node_addr(node)), port);
        net.client.run(move || ask_tcp(target))
    };
    let answer = ask(0, 30080)??;
    println!(
        "\nclient → node-a:30080 (the pod is on node-b): {} answered, and saw the client as {}",
        answer.name,
        answer.client.ip()
    );
    expect(
        answer.name == "b1" && answer.client.ip() == IpAddr::V4(Nodes::node_addr(0)),
        format!("expected b1 to see node-a's address: {answer:?}"),
    )?;
    println!(
        "  node-a masqueraded the connection, so b1 answered node-a, which un-NATed the reply \
         back to the client."
    );

    let answer = ask(1, 30081)??;
    println!(
        "client → node-b:30081 (Local, the pod is here): {} answered, and saw the client as {}",
        answer.name,
        answer.client.ip()
    );
    expect(
        answer.name == "b1" && answer.client.ip() == IpAddr::V4(CLIENT_ADDR),
        format!("expected b1 to see the client's own address: {answer:?}"),
    )?;
    let refused = ask(0, 30081)?.is_err();
    println!(
        "client → node-a:30081 (Local, no pod here): {}",
        if refused {
            "refused, as the Local policy asks"
        } else {
            "ANSWERED"
        }
    );
    expect(
        refused,
        "node-a served a Local NodePort without a pod of its own",
    )?;

    let sets = net.nodes[0].netns.run(|| {
        let mut socket = svc_controller::netfilter::NfnlSocket::open()?;
        svc_controller::netfilter::Contents::read(&mut socket)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })??;
    if let Some(contents) = sets {
        println!(
            "\nnode-a's nftables table `inet ipvs-proxy` marks for masquerading the ports of \
             Cluster-policy NodePorts (set masquerade-ports):"
        );
        for port in &contents.elements.masquerade {
            println!("  {} {}:{}", port.protocol, port.addr, port.port);
        }
    }
    for mut daemon in daemons {
        let status = daemon.terminate(WAIT)?;
        expect(status.success(), format!("ipvs-proxy exited with {status}"))?;
    }
    println!("Both daemons stopped on SIGTERM.");
    Ok(())
}
