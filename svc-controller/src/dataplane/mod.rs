//! The dataplane boundary: what the reconciler needs from the node, and nothing more.
//!
//! The [`Reconciler`](crate::reconcile::Reconciler) never talks to the kernel itself. It asks a
//! [`Dataplane`] to:
//!
//! - **list** the IPVS table ([`Dataplane::list`]) as an [`ipvs::table::Table`] plus the active
//!   and inactive connection counts of every destination (needed to finish a drain), or read a
//!   single virtual server the same way ([`Dataplane::service`]);
//! - **apply** a batch of [`Operation`]s ([`Dataplane::apply`]), getting one result per
//!   operation: the kernel has no transactions, so a batch may half succeed, and the reconciler
//!   must know exactly which half;
//! - list, bind and unbind the VIPs on the **dummy interface** that holds them (the kernel
//!   dataplane binds an IPv4 VIP as a local route through it and an IPv6 one as an address;
//!   [`Dataplane::dummy_addresses`] creates the interface when it is missing;
//!   [`Dataplane::delete_dummy_interface`] removes it at cleanup when nothing foreign is on
//!   it), and list the
//!   node's **other addresses** ([`Dataplane::node_addresses`]), so that a VIP that is already
//!   a node address is not bound a second time;
//! - read and write **sysctls** by key ([`Dataplane::sysctl`], [`Dataplane::set_sysctl`]);
//! - tell whether another program wrote to the IPVS table since it last asked
//!   ([`Dataplane::ipvs_writes`]), so that a full pass on a quiet node need not read it.
//!
//! Two implementations exist: [`MemoryDataplane`] (an in-memory node over
//! [`ipvs::table::SimulatedKernel`], with fault injection, behind-the-back edits and settable
//! connection counts, for tests) and [`KernelDataplane`] (the real node: the `ipvs` crate for
//! IPVS, rtnetlink for addresses, `/proc/sys` for sysctls; it never runs `ip`, `ipvsadm` or
//! `sysctl`).
//!
//! The trait is blocking on purpose: the reconciler is a sans-IO state machine driven by the
//! caller with explicit times, and each call here is a short netlink exchange. An async caller
//! runs the reconciler on a blocking thread (`tokio::task::spawn_blocking`) or a dedicated one.

mod kernel;
mod memory;
mod rtnetlink_batch;
mod simulated_netfilter;
mod write_watch;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::net::IpAddr;

use ipvs::codec::Operation;
use ipvs::model::{DestinationKey, ServiceKey};
use ipvs::table::{ServiceConfig, Table};

use crate::netfilter::{self, Contents};

pub use kernel::{KernelDataplane, VIP_ROUTE_PROTOCOL};
pub use memory::{AddressOp, MemoryDataplane};
pub use simulated_netfilter::SimulatedNetfilter;
pub use write_watch::{IpvsWrites, WRITE_WATCH_INTERFACE};

/// How many connections a destination has, as the kernel counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Connections {
    /// Established connections (`IPVS_DEST_ATTR_ACTIVE_CONNS`).
    pub active: u32,
    /// Connections in other states, e.g. TIME_WAIT (`IPVS_DEST_ATTR_INACT_CONNS`).
    pub inactive: u32,
}

impl Connections {
    /// No connection at all.
    pub const NONE: Self = Self {
        active: 0,
        inactive: 0,
    };

    /// Active plus inactive connections (saturating).
    pub fn total(self) -> u64 {
        u64::from(self.active) + u64::from(self.inactive)
    }

    /// Whether there is no connection left.
    pub fn is_idle(self) -> bool {
        self.total() == 0
    }
}

/// The whole IPVS table with the connection counts of each destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The table's configuration (every service, ours or not).
    pub table: Table,
    /// Connection counts by service and destination; a destination missing here has none.
    pub connections: HashMap<(ServiceKey, DestinationKey), Connections>,
}

impl Listing {
    /// The counts of one destination (none if unknown).
    pub fn connections(&self, service: &ServiceKey, destination: &DestinationKey) -> Connections {
        self.connections
            .get(&(*service, *destination))
            .copied()
            .unwrap_or_default()
    }

    /// Takes one service out of the listing, with its destinations' counts, as
    /// [`Dataplane::service`] answers (no copy: a full pass over a large table takes every
    /// service once, and copies would double the listing's memory).
    pub fn take_service(&mut self, key: &ServiceKey) -> Option<ServiceState> {
        let config = self.table.remove_service(key)?;
        let connections = config
            .destination_keys()
            .map(|d| (d, self.connections.remove(&(*key, d)).unwrap_or_default()))
            .collect();
        Some(ServiceState {
            config,
            connections,
        })
    }

    /// One service with its destinations' counts, as [`Dataplane::service`] answers.
    pub fn service(&self, key: &ServiceKey) -> Option<ServiceState> {
        let config = self.table.get(key)?.clone();
        let connections = config
            .destination_keys()
            .map(|d| (d, self.connections(key, &d)))
            .collect();
        Some(ServiceState {
            config,
            connections,
        })
    }
}

/// One virtual server as the kernel holds it, with its destinations' connection counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// Settings and destinations.
    pub config: ServiceConfig,
    /// Connection counts by destination; a destination missing here has none.
    pub connections: HashMap<DestinationKey, Connections>,
}

impl ServiceState {
    /// The counts of one destination (none if unknown).
    pub fn connections(&self, destination: &DestinationKey) -> Connections {
        self.connections
            .get(destination)
            .copied()
            .unwrap_or_default()
    }
}

/// What [`Dataplane::delete_dummy_interface`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceRemoval {
    /// The interface was deleted.
    Deleted,
    /// There was no such interface.
    Absent,
    /// The interface holds addresses that are not ours: it was kept.
    Kept {
        /// The addresses that are not ours.
        foreign: BTreeSet<IpAddr>,
    },
}

/// Whether an address on the dummy interface counts against deleting it: everything but
/// what we own and the IPv6 link-local addresses the kernel generates itself.
pub(crate) fn foreign_dummy_addresses<'a>(
    present: impl IntoIterator<Item = &'a IpAddr>,
    owned: &BTreeSet<IpAddr>,
) -> BTreeSet<IpAddr> {
    present
        .into_iter()
        .filter(|a| !owned.contains(a))
        .filter(|a| match a {
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            IpAddr::V4(_) => true,
        })
        .copied()
        .collect()
}

/// Why one operation of a batch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OperationError {
    /// The errno the kernel answered, when it answered one (`None`: refused before sending).
    pub errno: Option<i32>,
    /// What went wrong, in the operation's terms.
    pub message: String,
}

impl OperationError {
    /// An error with an errno and a message.
    pub fn new(errno: Option<i32>, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
        }
    }
}

/// A failure of the dataplane as a whole (a listing, an address change, a sysctl), as opposed
/// to the failure of one operation of a batch ([`OperationError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataplaneError {
    /// An IPVS call failed.
    #[error("{context}: {source}")]
    Ipvs {
        /// What was being done.
        context: String,
        /// The library's error (boxed: it is large).
        #[source]
        source: Box<ipvs::Error>,
    },
    /// An rtnetlink call (links, addresses, routes) failed.
    #[error("{context}: {source}")]
    Netlink {
        /// What was being done.
        context: String,
        /// The error: rtnetlink's, the kernel's errno as an OS error, or what was missing.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading or writing a sysctl under `/proc/sys` failed.
    #[error("sysctl {key}: {source}")]
    Sysctl {
        /// The sysctl's key.
        key: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The dummy interface exists but is not a dummy interface we can use.
    #[error("interface {0} exists but is not a dummy interface; refusing to manage it")]
    NotDummy(String),
    /// Anything else: an I/O error setting up the dataplane, or a fault a
    /// [`MemoryDataplane`] was told to inject (an OS error with the injected errno, as the
    /// kernel would fail).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl DataplaneError {
    /// Wraps an IPVS error met while doing `context`.
    pub fn ipvs(context: impl Into<String>, source: ipvs::Error) -> Self {
        Self::Ipvs {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

/// What the controller needs from the node. See the [module documentation](self).
pub trait Dataplane {
    /// The whole IPVS table with each destination's connection counts.
    fn list(&mut self) -> Result<Listing, DataplaneError>;

    /// One virtual server with its destinations' connection counts; `None` when the kernel
    /// does not have it.
    fn service(&mut self, key: &ServiceKey) -> Result<Option<ServiceState>, DataplaneError>;

    /// Several virtual servers, as [`Dataplane::service`] answers for each, in the order of
    /// `keys`. The kernel dataplane reads them in a few system calls (a batch of requests and
    /// dumps spread over parallel sockets), where one [`Dataplane::service`] call each costs
    /// round trips each; this default reads one at a time.
    fn services(
        &mut self,
        keys: &[ServiceKey],
    ) -> Result<Vec<Option<ServiceState>>, DataplaneError> {
        keys.iter().map(|key| self.service(key)).collect()
    }

    /// The keys of every virtual server in the table, without their destinations (one
    /// dump, where [`Dataplane::list`] costs one more per virtual server).
    fn service_keys(&mut self) -> Result<Vec<ServiceKey>, DataplaneError> {
        Ok(self.list()?.table.keys().collect())
    }

    /// Whether another program wrote to the IPVS table since the last call (this dataplane's
    /// own writes are left out: the controller learns what they did from their answers).
    /// The kernel dataplane watches through an `nlmon` tap (see [`IpvsWrites`] and
    /// [`WRITE_WATCH_INTERFACE`]) and starts watching on the first call, which answers
    /// [`IpvsWrites::Unwatched`]; this default never watches.
    fn ipvs_writes(&mut self) -> IpvsWrites {
        IpvsWrites::Unwatched
    }

    /// Stops watching IPVS writes and removes what the watch put on the node (the kernel
    /// dataplane's `nlmon` interface, an earlier run's too), for a cleanup. The next
    /// [`Dataplane::ipvs_writes`] starts watching again.
    fn stop_watching_writes(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }

    /// Applies `operations` in order, one request each, and returns one result per operation
    /// (a failure does not stop the next ones). The outer error means the conversation itself
    /// failed and nothing is known about which operations took effect.
    fn apply(
        &mut self,
        operations: &[Operation],
    ) -> Result<Vec<Result<(), OperationError>>, DataplaneError>;

    /// The VIPs bound to the dummy interface (its addresses and, in the kernel dataplane, the
    /// IPv4 local routes through it), creating the interface (left down) when missing.
    fn dummy_addresses(&mut self) -> Result<BTreeSet<IpAddr>, DataplaneError>;

    /// Binds `addr` to the dummy interface (already bound: success): the kernel dataplane
    /// adds an IPv4 VIP as a local route through the interface, an IPv6 one as a /128.
    fn add_dummy_address(&mut self, addr: IpAddr) -> Result<(), DataplaneError>;

    /// Binds each of `addrs` as [`Dataplane::add_dummy_address`] does, with one result per
    /// address, in order. The kernel dataplane sends the requests without waiting for each
    /// answer (a cold start binds thousands of VIPs); this default binds one at a time.
    fn add_dummy_addresses(&mut self, addrs: &[IpAddr]) -> Vec<Result<(), DataplaneError>> {
        addrs.iter().map(|a| self.add_dummy_address(*a)).collect()
    }

    /// Unbinds `addr` from the dummy interface, as a route and as an address (not bound:
    /// success).
    fn delete_dummy_address(&mut self, addr: IpAddr) -> Result<(), DataplaneError>;

    /// The addresses on the dummy interface, `None` when it does not exist; never creates it
    /// (for [`cleanup`](crate::reconcile::Reconciler::cleanup), which must not make what it
    /// is about to remove).
    fn existing_dummy_addresses(&mut self) -> Result<Option<BTreeSet<IpAddr>>, DataplaneError>;

    /// Deletes the dummy interface, but only when it is a dummy interface and every address
    /// on it is in `owned` (IPv6 link-local addresses, which the kernel generates itself on a
    /// link that was set up, do not count). An interface of another kind is an error
    /// ([`DataplaneError::NotDummy`]) and is left alone.
    fn delete_dummy_interface(
        &mut self,
        owned: &BTreeSet<IpAddr>,
    ) -> Result<InterfaceRemoval, DataplaneError>;

    /// The addresses of every other interface of the node (loopback included).
    fn node_addresses(&mut self) -> Result<BTreeSet<IpAddr>, DataplaneError>;

    /// [`Dataplane::node_addresses`] and [`Dataplane::dummy_addresses`] together. The kernel
    /// dataplane answers both from one read of the node's addresses, which a full pass makes
    /// once instead of twice (at 50,000 Services the dummy interface holds 51,000 of them).
    fn node_and_dummy_addresses(
        &mut self,
    ) -> Result<(BTreeSet<IpAddr>, BTreeSet<IpAddr>), DataplaneError> {
        Ok((self.node_addresses()?, self.dummy_addresses()?))
    }

    /// The value of a sysctl (`net.ipv4.vs.conntrack` or `net/ipv4/vs/conntrack`), trimmed;
    /// `None` when it does not exist.
    fn sysctl(&mut self, key: &str) -> Result<Option<String>, DataplaneError>;

    /// Writes a sysctl.
    fn set_sysctl(&mut self, key: &str, value: &str) -> Result<(), DataplaneError>;

    /// What the controller's nftables table holds (see [`netfilter`]); `None` when the node
    /// has no such table.
    fn netfilter_read(&mut self) -> Result<Option<Contents>, DataplaneError>;

    /// The nftables ruleset's generation, which the kernel changes with every transaction
    /// it commits in the namespace (see [`netfilter::NfnlSocket::generation`]).
    fn netfilter_generation(&mut self) -> Result<u32, DataplaneError>;

    /// Applies nftables changes as one transaction: all of them, or none when the kernel
    /// refuses one.
    fn netfilter_transact(&mut self, changes: &[netfilter::Change]) -> Result<(), DataplaneError>;

    /// Deletes the UDP conntrack entries to `frontend` whose reply source is not in `keep`
    /// (see [`netfilter::conntrack`]); returns how many went.
    fn delete_stale_udp_flows(
        &mut self,
        frontend: std::net::SocketAddr,
        keep: &BTreeSet<IpAddr>,
    ) -> Result<usize, DataplaneError>;
}

/// A non-blocking netlink socket of `protocol` in the calling thread's network namespace,
/// bound to a port the kernel picks (returned) and connected to the kernel, for a batch
/// driver over the library's [`Exchange`](ipvs::transport::exchange::Exchange). Best effort,
/// as older kernels lack them: errors without the request echoed back (smaller answers), with
/// the kernel's explanation, and a receive buffer of `recv_buffer` bytes.
pub(crate) fn batch_socket(
    protocol: isize,
    recv_buffer: usize,
) -> io::Result<(rtnetlink::sys::Socket, u32)> {
    let mut socket = rtnetlink::sys::Socket::new(protocol)?;
    let port_id = socket.bind_auto()?.port_number();
    socket.connect(&rtnetlink::sys::SocketAddr::new(0, 0))?;
    socket.set_non_blocking(true)?;
    let _ = socket.set_cap_ack(true);
    let _ = socket.set_ext_ack(true);
    let _ = socket.set_rx_buf_sz(recv_buffer);
    Ok((socket, port_id))
}

/// The path under `/proc/sys` of a sysctl key: dots become slashes unless the key already uses
/// slashes (so `net/ipv4/conf/eth0.100/rp_filter` can name a VLAN interface).
pub fn sysctl_path(key: &str) -> String {
    if key.contains('/') {
        format!("/proc/sys/{}", key.trim_start_matches('/'))
    } else {
        format!("/proc/sys/{}", key.replace('.', "/"))
    }
}

/// A key in the canonical slash form used by [`MemoryDataplane`].
pub(crate) fn canonical_sysctl_key(key: &str) -> String {
    sysctl_path(key).trim_start_matches("/proc/sys/").to_owned()
}

/// Short human form of an operation for messages: `ipvsadm` notation without the newline.
pub(crate) struct Describe<'a>(pub(crate) &'a Operation);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", ipvs::table::IpvsadmNotation(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_map_to_proc_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.vs.conntrack"),
            "/proc/sys/net/ipv4/vs/conntrack"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/rp_filter"),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(
            canonical_sysctl_key("net.ipv4.ip_forward"),
            "net/ipv4/ip_forward"
        );
    }

    #[test]
    fn connections_total_saturates_nothing() {
        let c = Connections {
            active: u32::MAX,
            inactive: u32::MAX,
        };
        assert_eq!(c.total(), 2 * u64::from(u32::MAX));
        assert!(!c.is_idle());
        assert!(Connections::NONE.is_idle());
    }
}
