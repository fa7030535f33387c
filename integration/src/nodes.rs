//! A small cluster's network: nodes on one LAN, pods behind each node's bridge, pod networks
//! routed between the nodes as a CNI would, and a client outside the cluster.
//!
//! ```text
//!                        LAN 192.168.50.0/24 (a bridge in its own namespace)
//!   client .100 ──────────────┬───────────────────────────┬───────────── …
//!                   node-a .11 (eth0)              node-b .12 (eth0)
//!                   cni0 10.244.1.1/24              cni0 10.244.2.1/24
//!                   ├─ pod a1 10.244.1.2            ├─ pod b1 10.244.2.2
//!                   └─ pod a2 10.244.1.3 …          └─ …
//! ```
//!
//! Each node routes the other nodes' pod networks to them; the client reaches the nodes'
//! addresses on the LAN and nothing of the pod networks, as a machine outside a cluster; a
//! test routes a load balancer's address to the node it picks ([`Nodes::route_from_client`]).
//! A pod answers on [`POD_PORT`] (TCP and UDP) with its name and the client address it saw
//! (a [`Witness`]). Nodes forward (`ip_forward=1`); nothing else is set up: what a node needs
//! for Services (IPVS, its nftables table, sysctls) is the node daemon's job.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::Netns;
use crate::link;
use crate::witness::Witness;

/// The client's address on the LAN.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 100);
/// The cluster's pod network: each node has one `/24` of it.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The port every pod answers on, TCP and UDP.
pub const POD_PORT: u16 = 8080;

/// One pod: a namespace behind its node's bridge, and the witness answering in it.
#[derive(Debug)]
pub struct Pod {
    /// Its name (what it answers), `a1`, `b2`, …
    pub name: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its namespace.
    pub netns: Netns,
    /// The witness; `None` once stopped.
    pub witness: Option<Witness>,
}

/// One node: a namespace on the LAN with a bridge for its pods.
#[derive(Debug)]
pub struct Node {
    /// Its name, `node-a`, `node-b`, … (the `nodeName` of its endpoints).
    pub name: String,
    /// Its LAN address.
    pub addr: Ipv4Addr,
    /// Its bridge's address (its pods' gateway).
    pub gateway: Ipv4Addr,
    /// Its namespace (the node's host network).
    pub netns: Netns,
    /// Its pods.
    pub pods: Vec<Pod>,
}

/// The whole network.
#[derive(Debug)]
pub struct Nodes {
    /// The LAN's bridge.
    pub lan: Netns,
    /// The client outside the cluster.
    pub client: Netns,
    /// The nodes, `node-a` first.
    pub nodes: Vec<Node>,
}

impl Nodes {
    /// Builds `pods.len()` nodes (1 to 9), node `i` with `pods[i]` pods (0 to 50).
    pub fn build(pods: &[usize]) -> io::Result<Self> {
        if !(1..=9).contains(&pods.len()) || pods.iter().any(|p| *p > 50) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "1 to 9 nodes of 0 to 50 pods",
            ));
        }
        let lan = Netns::new("lan")?;
        lan.run(|| link::add_bridge("lan0"))??;
        let client = Netns::new("client")?;
        attach(&lan, &client, "to-client", CLIENT_ADDR, 24)?;
        let mut nodes = Vec::new();
        for (i, count) in pods.iter().enumerate() {
            let letter = char::from(b'a' + i as u8);
            let name = format!("node-{letter}");
            let netns = Netns::new(&name)?;
            let addr = Self::node_addr(i);
            attach(&lan, &netns, &format!("to-{name}"), addr, 24)?;
            let gateway = Ipv4Addr::new(10, 244, i as u8 + 1, 1);
            netns.run(|| -> io::Result<()> {
                link::set_sysctl("net/ipv4/ip_forward", "1")?;
                link::set_up("lo")?;
                link::add_bridge("cni0")?;
                link::add_address("cni0", gateway.into(), 24)?;
                for j in 0..pods.len() {
                    if j != i {
                        link::add_route(
                            Ipv4Addr::new(10, 244, j as u8 + 1, 0),
                            24,
                            Self::node_addr(j),
                        )?;
                    }
                }
                Ok(())
            })??;
            let mut node_pods = Vec::new();
            for k in 0..*count {
                let pod_name = format!("{letter}{}", k + 1);
                let pod_ns = Netns::new(&format!("pod-{pod_name}"))?;
                let pod_addr = Ipv4Addr::new(10, 244, i as u8 + 1, k as u8 + 2);
                let side = format!("veth-{pod_name}");
                // Made from the pod's side: the node has an `eth0` of its own.
                pod_ns.run(|| link::add_veth("eth0", &side, &netns))??;
                netns.run(|| -> io::Result<()> {
                    link::set_bridge(&side, "cni0")?;
                    link::set_up(&side)
                })??;
                pod_ns.run(|| -> io::Result<()> {
                    link::set_up("lo")?;
                    link::add_address("eth0", pod_addr.into(), 24)?;
                    link::set_up("eth0")?;
                    link::add_default_route(gateway.into())
                })??;
                let witness = Witness::start(
                    &pod_ns,
                    &pod_name,
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), POD_PORT),
                )?;
                node_pods.push(Pod {
                    name: pod_name,
                    addr: pod_addr,
                    netns: pod_ns,
                    witness: Some(witness),
                });
            }
            nodes.push(Node {
                name,
                addr,
                gateway,
                netns,
                pods: node_pods,
            });
        }
        Ok(Self { lan, client, nodes })
    }

    /// The LAN address of node `i` (0-based).
    pub fn node_addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 50, 11 + i as u8)
    }

    /// Routes `addr` (a load balancer's, say) from the client to node `i`.
    pub fn route_from_client(&self, addr: Ipv4Addr, i: usize) -> io::Result<()> {
        self.client
            .run(|| link::add_route(addr, 32, Self::node_addr(i)))?
    }

    /// The pod called `name`.
    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.nodes
            .iter()
            .flat_map(|n| &n.pods)
            .find(|p| p.name == name)
    }
}

/// Joins `host` to the LAN: its `eth0` with `addr/prefix`, the peer `side` on the bridge.
fn attach(lan: &Netns, host: &Netns, side: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    host.run(|| link::add_veth("eth0", side, lan))??;
    lan.run(|| -> io::Result<()> {
        link::set_bridge(side, "lan0")?;
        link::set_up(side)
    })??;
    host.run(|| -> io::Result<()> {
        link::set_up("lo")?;
        link::add_address("eth0", addr.into(), prefix)?;
        link::set_up("eth0")
    })?
}

#[cfg(test)]
mod tests {
    mod real_kernel {
        use std::net::{IpAddr, SocketAddr};

        use super::super::*;
        use crate::witness::ask_tcp;

        #[test]
        #[ignore = "real kernel: run by cargo xtask test"]
        fn pods_reach_each_other_across_nodes_and_the_client_reaches_only_the_nodes() {
            let net = Nodes::build(&[1, 1]).unwrap();
            let (a1, b1) = (net.pod("a1").unwrap(), net.pod("b1").unwrap());
            let b1_addr = SocketAddr::new(IpAddr::V4(b1.addr), POD_PORT);
            // Pod to pod across nodes, routed: the address is kept.
            let answer = a1.netns.run(move || ask_tcp(b1_addr)).unwrap().unwrap();
            assert_eq!(answer.name, "b1");
            assert_eq!(answer.client.ip(), IpAddr::V4(a1.addr));
            // A node reaches its own and the other node's pods.
            let answer = net.nodes[0]
                .netns
                .run(move || ask_tcp(b1_addr))
                .unwrap()
                .unwrap();
            assert_eq!(answer.name, "b1");
            // The client has no route to pods.
            assert!(net.client.run(move || ask_tcp(b1_addr)).unwrap().is_err());
        }
    }
}
