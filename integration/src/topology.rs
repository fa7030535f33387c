//! A ready-made load-balancer network: a client, a director and N backends, each in its own
//! namespace, joined by veth pairs.
//!
//! ```text
//!   client 192.0.2.2 ── 192.0.2.1 director ── 203.0.113.1 ── backend-1 203.0.113.2
//!                           (VIP 198.51.100.10 on lo)  203.0.113.5 ── backend-2 203.0.113.6 …
//! ```
//!
//! Addresses come from the documentation ranges (RFC 5737), live only inside these namespaces,
//! and vanish with them. The director forwards (`ip_forward=1`) and backends route back through it,
//! which is what IPVS masquerading (NAT) needs.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::Netns;
use crate::backend::Backend;
use crate::link;

/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The director's address on the client side.
pub const DIRECTOR_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The virtual IP bound on the director's loopback.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The port every backend listens on.
pub const BACKEND_PORT: u16 = 8080;

/// The namespaces, links and backends of one load-balancer network.
#[derive(Debug)]
pub struct LoadBalancerTopology {
    /// Where connections come from.
    pub client: Netns,
    /// Where IPVS runs.
    pub director: Netns,
    /// One namespace per backend, in order.
    pub backend_hosts: Vec<Netns>,
    /// The running name servers, one per backend host, named `backend-1`, `backend-2`, …
    pub backends: Vec<Backend>,
}

impl LoadBalancerTopology {
    /// Builds the network with `count` backends (1 to 63) and starts their name servers.
    pub fn build(count: usize) -> io::Result<Self> {
        if !(1..=63).contains(&count) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "1 to 63 backends",
            ));
        }
        let client = Netns::new("client")?;
        let director = Netns::new("director")?;
        director.run(|| -> io::Result<()> {
            link::add_veth("to-client", "eth0", &client)?;
            link::add_address("to-client", DIRECTOR_ADDR.into(), 24)?;
            link::set_up("to-client")?;
            link::add_address("lo", VIP.into(), 32)?;
            link::set_sysctl("net/ipv4/ip_forward", "1")
        })??;
        client.run(|| -> io::Result<()> {
            link::add_address("eth0", CLIENT_ADDR.into(), 24)?;
            link::set_up("eth0")?;
            link::add_default_route(DIRECTOR_ADDR.into())
        })??;
        let mut backend_hosts = Vec::new();
        let mut backends = Vec::new();
        for i in 0..count {
            let host = Netns::new(&format!("backend-{}", i + 1))?;
            let gateway = Self::gateway(i);
            let addr = Self::backend_ip(i);
            let side = format!("to-b{}", i + 1);
            director.run(|| -> io::Result<()> {
                link::add_veth(&side, "eth0", &host)?;
                link::add_address(&side, gateway.into(), 30)?;
                link::set_up(&side)
            })??;
            host.run(|| -> io::Result<()> {
                link::add_address("eth0", addr.into(), 30)?;
                link::set_up("eth0")?;
                link::add_default_route(gateway.into())
            })??;
            let server = Backend::start(
                &host,
                &format!("backend-{}", i + 1),
                SocketAddr::new(addr.into(), BACKEND_PORT),
            )?;
            backend_hosts.push(host);
            backends.push(server);
        }
        Ok(Self {
            client,
            director,
            backend_hosts,
            backends,
        })
    }

    /// The address of backend `i` (0-based).
    pub fn backend_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, (4 * i + 2) as u8)
    }

    /// The director's address facing backend `i` (0-based).
    fn gateway(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, (4 * i + 1) as u8)
    }

    /// The socket address of backend `i` (0-based).
    pub fn backend_addr(i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Self::backend_ip(i)), BACKEND_PORT)
    }
}
