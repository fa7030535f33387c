//! A node for a service proxy under test: its network namespace, an uplink for its default
//! route, its way to the API server, and the command lines of the proxies that run there
//! (ipvs-proxy, the release's kube-proxy and kube-router's service proxy), so that the tests
//! and the benchmarks that compare them start them the same way.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use super::{Identity, Relay, TestCluster};
use crate::{Netns, link};

/// Where a proxy in a node namespace finds the API server: a [`Relay`] on its own loopback.
pub const API_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6443);
/// Where both proxies serve `/healthz` in their namespace (kube-proxy's default port).
pub const HEALTHZ: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10256);
/// Where both proxies serve `/metrics` in their namespace (kube-proxy's default port).
pub const METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10249);

/// A node's network namespace: `eth0` holds the node's address (`/24`, and an IPv6 one `/64`
/// when given), its default route goes to `.254` in an uplink namespace, and a [`Relay`] on
/// [`API_LISTEN`] reaches the API server.
#[derive(Debug)]
pub struct NodeNamespace {
    netns: Netns,
    _uplink: Netns,
    relay: Relay,
}

impl NodeNamespace {
    /// Builds the namespace `name` (and `name-up`) with the node's addresses; `api` is the API
    /// server's address as this process dials it.
    pub fn new(
        name: &str,
        ipv4: Ipv4Addr,
        ipv6: Option<Ipv6Addr>,
        api: SocketAddr,
    ) -> io::Result<Self> {
        let [a, b, c, last] = ipv4.octets();
        if last == 254 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{ipv4}: .254 is the uplink's address"),
            ));
        }
        let gateway = Ipv4Addr::new(a, b, c, 254);
        let netns = Netns::new(name)?;
        let uplink = Netns::new(&format!("{name}-up"))?;
        netns.run(|| -> io::Result<()> {
            link::add_veth("eth0", "uplink0", &uplink)?;
            link::add_address("eth0", ipv4.into(), 24)?;
            if let Some(ipv6) = ipv6 {
                link::set_sysctl("net/ipv6/conf/eth0/accept_dad", "0")?;
                link::add_address("eth0", ipv6.into(), 64)?;
            }
            link::set_up("eth0")?;
            link::add_default_route(gateway.into())
        })??;
        uplink.run(|| -> io::Result<()> {
            link::add_address("uplink0", gateway.into(), 24)?;
            link::set_up("uplink0")
        })??;
        let relay = Relay::start(&netns, API_LISTEN, api)?;
        Ok(Self {
            netns,
            _uplink: uplink,
            relay,
        })
    }

    /// The node's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The relay to the API server (cut it to partition this node).
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Writes a kubeconfig for `identity` that reaches the API server through this node's relay.
    pub fn write_kubeconfig(
        &self,
        cluster: &TestCluster,
        identity: Identity,
        path: &Path,
    ) -> io::Result<()> {
        std::fs::write(path, cluster.kubeconfig(identity, Some(&self.relay.url()))?)
    }
}

/// A service proxy that runs on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyKind {
    /// This project's daemon.
    IpvsProxy,
    /// The release's kube-proxy, `--proxy-mode=ipvs`.
    KubeProxy,
    /// kube-router with only its service proxy running (no routing, no network policies).
    KubeRouter,
}

impl ProxyKind {
    /// The program's name.
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::IpvsProxy => "ipvs-proxy",
            ProxyKind::KubeProxy => "kube-proxy",
            ProxyKind::KubeRouter => "kube-router",
        }
    }

    /// The identity it talks to the API server as.
    pub fn identity(self) -> Identity {
        match self {
            ProxyKind::IpvsProxy => Identity::Daemon,
            ProxyKind::KubeProxy => Identity::KubeProxy,
            // Its informers also list pods, namespaces and network policies, which kube-proxy's
            // role does not grant; its rights are no part of what is measured.
            ProxyKind::KubeRouter => Identity::Admin,
        }
    }

    /// Its command line on node `node`: the same kube-proxy flags for ipvs-proxy and
    /// kube-proxy (IPVS mode, round robin, the cluster CIDR, health and metrics on the node's
    /// loopback), plus what kube-proxy needs to run in a namespace of a shared kernel;
    /// kube-router's equivalents (its own flags, below). `extra` comes last.
    pub fn args(
        self,
        kubeconfig: &Path,
        node: &str,
        cluster_cidr: &str,
        extra: &[String],
    ) -> Vec<String> {
        if self == ProxyKind::KubeRouter {
            let mut args = Self::kube_router_args(kubeconfig, node);
            args.extend(extra.iter().cloned());
            return args;
        }
        let mut args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--hostname-override={node}"),
            "--proxy-mode=ipvs".into(),
            "--ipvs-scheduler=rr".into(),
            format!("--cluster-cidr={cluster_cidr}"),
            format!("--healthz-bind-address={HEALTHZ}"),
            format!("--metrics-bind-address={METRICS}"),
        ];
        if self == ProxyKind::KubeProxy {
            args.extend([
                // The conntrack table's global settings are the machine's, not a node's.
                "--conntrack-max-per-core=0".into(),
                "--conntrack-tcp-timeout-established=0".into(),
                "--conntrack-tcp-timeout-close-wait=0".into(),
                "--v=2".into(),
            ]);
        }
        args.extend(extra.iter().cloned());
        args
    }

    /// kube-router's service proxy alone, as close to the others as its flags go: the node
    /// named, metrics on the node's loopback ([`METRICS`]), health on [`HEALTHZ`]'s port,
    /// round robin and otherwise its defaults (a full sync every 5 minutes, and one at every
    /// change). Its informers must sync before it starts, which takes minutes at 10,000
    /// Services under emulation. `--v=1` logs each sync's end, which its metrics tell only as
    /// a histogram.
    fn kube_router_args(kubeconfig: &Path, node: &str) -> Vec<String> {
        vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--hostname-override={node}"),
            "--run-service-proxy=true".into(),
            "--run-router=false".into(),
            "--run-firewall=false".into(),
            format!("--metrics-addr={}", METRICS.ip()),
            format!("--metrics-port={}", METRICS.port()),
            format!("--health-port={}", HEALTHZ.port()),
            "--cache-sync-timeout=60m".into(),
            "--v=1".into(),
        ]
    }
}
