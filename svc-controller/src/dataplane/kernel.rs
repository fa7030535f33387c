//! [`KernelDataplane`]: the real node, over the `ipvs` crate, rtnetlink and `/proc/sys`.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipvs::codec::Operation;
use ipvs::model::{DestinationEntry, ServiceEntry, ServiceKey};
use ipvs::table::{ServiceConfig, Table};
use ipvs::{ErrorKind, Ipvs};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkDummy, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder,
};
use tracing::{info, warn};

use super::rtnetlink_batch::{Answer, RouteRequest, RtnetlinkBatch};
use super::write_watch::{IpvsWrites, WRITE_WATCH_INTERFACE, WriteWatch};
use super::{
    Connections, Dataplane, DataplaneError, InterfaceRemoval, Listing, OperationError,
    ServiceState, foreign_dummy_addresses, sysctl_path,
};
use crate::netfilter::{Change, Contents, NfnlSocket};

/// `ENODEV`: what the kernel answers for a link name it does not know.
const ENODEV: i32 = 19;
/// `EEXIST`: an address that is already bound.
const EEXIST: i32 = 17;
/// `EADDRNOTAVAIL`: an address that is not bound.
const EADDRNOTAVAIL: i32 = 99;
/// `ESRCH`: a route that does not exist.
const ESRCH: i32 = 3;
/// The kernel's `local` routing table (`RT_TABLE_LOCAL`).
const LOCAL_TABLE: u8 = 255;

/// The routing protocol number (`rtm_protocol`) of the local routes that bind IPv4 VIPs:
/// `ip route show table local proto 73` lists them. Any local route through the dummy
/// interface counts as a bound VIP whatever its protocol (an address on the interface makes
/// one with protocol `kernel`); this number only tells an operator, and a delete, which ones
/// the controller made.
pub const VIP_ROUTE_PROTOCOL: u8 = 73;

/// The node's real dataplane.
///
/// - IPVS through one blocking [`Ipvs`] handle (batches go out in as few `sendmsg` calls as
///   the library can make, each operation with its own answer);
/// - the dummy interface and the VIPs through rtnetlink, on a small current-thread tokio
///   runtime owned by this value. The interface is created as a `dummy` link and left **down**,
///   as kube-proxy leaves `kube-ipvs0`: IPVS intercepts packets to a local destination in the
///   `LOCAL_IN` hook whatever the link state, and a down link never answers ARP or neighbour
///   solicitations for the VIPs nor carries routes of its own.
///
///   An **IPv4 VIP is bound as a local route** through the interface (`local VIP dev
///   kube-ipvs0 table local proto 73`, see [`VIP_ROUTE_PROTOCOL`]), not as an address: the
///   kernel delivers a packet locally because of that route either way (an address only adds
///   the route for you), but adding an address walks the interface's whole address list
///   (kernel 6.1), so binding 10,000 VIPs as addresses costs time quadratic in their number,
///   where routes go into the FIB trie; and a VIP that is no address is never picked as a
///   source address. An address already on the interface (made by an older version, or by
///   kube-proxy) counts as bound, and unbinding removes it. **IPv6 VIPs are bound as /128
///   addresses**: the kernel refuses an IPv6 route through a link that is down;
/// - sysctls by writing `/proc/sys` directly.
///
/// Sockets belong to the network namespace of the thread that opened the dataplane;
/// `/proc/sys` is read in the namespace of the calling thread: use it from the thread that
/// opened it (or one in the same namespace).
pub struct KernelDataplane {
    ipvs: Ipvs,
    runtime: tokio::runtime::Runtime,
    handle: Handle,
    /// Binds VIPs many to a `sendmsg` (see [`super::rtnetlink_batch`]).
    batch: RtnetlinkBatch,
    /// The controller's nftables table (see [`crate::netfilter`]).
    nft: NfnlSocket,
    interface: String,
    watch: Watch,
}

/// Where the dataplane is with seeing IPVS writes (see [`super::write_watch`]).
#[derive(Debug)]
enum Watch {
    /// Not tried yet, or broken (it starts again at the next call).
    Off,
    /// Watching, through the `nlmon` interface.
    On(WriteWatch),
    /// Switched off, or the node cannot have it (no `nlmon` in its kernel, say): not tried
    /// again.
    Unavailable,
}

impl std::fmt::Debug for KernelDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelDataplane")
            .field("interface", &self.interface)
            .finish_non_exhaustive()
    }
}

fn netlink(
    context: impl Into<String>,
    error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> DataplaneError {
    DataplaneError::Netlink {
        context: context.into(),
        source: error.into(),
    }
}

fn errno_of(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| c.get().abs()),
        _ => None,
    }
}

fn address_of(message: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS otherwise.
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(addr) => Some(*addr),
        _ => None,
    });
    local.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(addr) => Some(*addr),
            _ => None,
        })
    })
}

/// The local route that binds the IPv4 VIP `addr` through the interface `index`.
fn vip_route(index: u32, addr: std::net::Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<std::net::Ipv4Addr>::new()
        .destination_prefix(addr, 32)
        .output_interface(index)
        .table_id(u32::from(LOCAL_TABLE))
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .protocol(RouteProtocol::Other(VIP_ROUTE_PROTOCOL))
        .build()
}

/// The request that binds `addr` to the interface `index`: an IPv4 VIP as a local route
/// ([`vip_route`]), an IPv6 one as a /128 address.
fn bind_message(index: u32, addr: IpAddr) -> RouteNetlinkMessage {
    match addr {
        IpAddr::V4(v4) => RouteNetlinkMessage::NewRoute(vip_route(index, v4)),
        IpAddr::V6(v6) => RouteNetlinkMessage::NewAddress(
            AddressMessageBuilder::<std::net::Ipv6Addr>::new()
                .index(index)
                .address(v6, 128)
                .build(),
        ),
    }
}

/// The destination of a host route in the local table through the interface `index`
/// (a bound IPv4 VIP), `None` for any other route.
fn local_route_through(message: &RouteMessage, index: u32) -> Option<IpAddr> {
    let header = &message.header;
    let table = message
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(header.table));
    if header.kind != RouteType::Local
        || table != u32::from(LOCAL_TABLE)
        || header.destination_prefix_length != 32
    {
        return None;
    }
    let through = message
        .attributes
        .iter()
        .any(|a| matches!(a, RouteAttribute::Oif(oif) if *oif == index));
    if !through {
        return None;
    }
    message.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(addr)) => Some(IpAddr::V4(*addr)),
        _ => None,
    })
}

/// Whether `link` is of this kind (`dummy`, `nlmon`).
fn is_kind(link: &LinkMessage, kind: &InfoKind) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(k) if k == kind)),
        _ => false,
    })
}

fn is_nlmon(link: &LinkMessage) -> bool {
    is_kind(link, &InfoKind::Nlmon)
}

fn is_dummy(link: &LinkMessage) -> bool {
    is_kind(link, &InfoKind::Dummy)
}

impl KernelDataplane {
    /// Opens the dataplane of the calling thread's network namespace, managing the dummy
    /// interface `interface` (usually [`DEFAULT_DUMMY_INTERFACE`](crate::DEFAULT_DUMMY_INTERFACE)).
    /// Nothing is created yet; the interface is created on first use.
    pub fn open(interface: impl Into<String>) -> Result<Self, DataplaneError> {
        let ipvs = Ipvs::open().map_err(|source| DataplaneError::ipvs("open IPVS", source))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|source| DataplaneError::Io {
                context: "start the rtnetlink runtime".into(),
                source,
            })?;
        let handle = runtime.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(connection);
            Ok::<_, io::Error>(handle)
        });
        let handle = handle.map_err(|source| DataplaneError::Io {
            context: "open an rtnetlink socket".into(),
            source,
        })?;
        let batch = RtnetlinkBatch::open().map_err(|source| DataplaneError::Io {
            context: "open an rtnetlink socket for batches".into(),
            source,
        })?;
        let nft = NfnlSocket::open().map_err(|source| DataplaneError::Io {
            context: "open a netfilter socket".into(),
            source,
        })?;
        Ok(Self {
            ipvs,
            runtime,
            handle,
            batch,
            nft,
            interface: interface.into(),
            watch: Watch::Off,
        })
    }

    /// Creates the `nlmon` interface ([`WRITE_WATCH_INTERFACE`], up) unless it exists, and
    /// starts watching IPVS writes through it.
    fn start_watch(&mut self) -> Result<WriteWatch, DataplaneError> {
        let handle = self.handle.clone();
        let created = self.runtime.block_on(async move {
            let link = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Nlmon)
                .name(WRITE_WATCH_INTERFACE.to_owned())
                .up()
                .build();
            handle.link().add(link).execute().await
        });
        let context = || format!("create the {WRITE_WATCH_INTERFACE} interface (nlmon)");
        match created {
            Ok(()) => {}
            // Left by an earlier run, or made by another controller in the namespace.
            Err(e) if errno_of(&e) == Some(EEXIST) => {}
            Err(e) => return Err(netlink(context(), e)),
        }
        let link = match self.link_named(WRITE_WATCH_INTERFACE) {
            Ok(Some(link)) => link,
            Ok(None) => return Err(netlink(context(), "missing after creation")),
            Err(e) => return Err(netlink(context(), e)),
        };
        if !is_nlmon(&link) {
            return Err(netlink(
                context(),
                format!("{WRITE_WATCH_INTERFACE} exists and is not an nlmon interface"),
            ));
        }
        let index = link.header.index;
        let handle = self.handle.clone();
        self.runtime
            .block_on(async move {
                let up = LinkMessageBuilder::<LinkUnspec>::new()
                    .index(index)
                    .up()
                    .build();
                handle.link().set(up).execute().await
            })
            .map_err(|e| netlink(format!("set {WRITE_WATCH_INTERFACE} up"), e))?;
        // Every write of this dataplane goes through this one handle.
        let family_id = self.ipvs.connection().family_id();
        let own_port = self.ipvs.connection().port_id();
        WriteWatch::open(index, family_id, own_port).map_err(|source| DataplaneError::Io {
            context: format!("open a packet socket on {WRITE_WATCH_INTERFACE}"),
            source,
        })
    }

    /// Whether to watch IPVS writes ([`Dataplane::ipvs_writes`]; on by default). Off, no
    /// `nlmon` interface is made and [`Dataplane::ipvs_writes`] always answers
    /// [`IpvsWrites::Unwatched`]: every full pass reads the whole table.
    pub fn set_watch_writes(&mut self, on: bool) {
        match (on, &self.watch) {
            (true, Watch::Unavailable) => self.watch = Watch::Off,
            (true, _) => {}
            (false, Watch::On(_)) => {
                if let Err(e) = self.stop_watching_writes() {
                    warn!(error = %e, "cannot delete the {WRITE_WATCH_INTERFACE} interface");
                }
                self.watch = Watch::Unavailable;
            }
            (false, _) => self.watch = Watch::Unavailable,
        }
    }

    /// The IPVS handle (to read what the dataplane does not expose).
    pub fn ipvs(&mut self) -> &mut Ipvs {
        &mut self.ipvs
    }

    /// The managed dummy interface's name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The link called `name`, `None` when there is none.
    fn link_named(&mut self, name: &str) -> Result<Option<LinkMessage>, rtnetlink::Error> {
        let handle = self.handle.clone();
        let name = name.to_owned();
        let found = self.runtime.block_on(async move {
            let mut links = handle.link().get().match_name(name).execute();
            links.try_next().await
        });
        match found {
            Err(e) if errno_of(&e) == Some(ENODEV) => Ok(None),
            other => other,
        }
    }

    /// The index of the dummy interface, `None` when it does not exist.
    fn find_interface(&mut self) -> Result<Option<u32>, DataplaneError> {
        let name = self.interface.clone();
        match self.link_named(&name) {
            Ok(Some(link)) if is_dummy(&link) => Ok(Some(link.header.index)),
            Ok(Some(_)) => Err(DataplaneError::NotDummy(name)),
            Ok(None) => Ok(None),
            Err(e) => Err(netlink(format!("look up interface {name}"), e)),
        }
    }

    /// The index of the dummy interface, created (down) when missing.
    fn ensure_interface(&mut self) -> Result<u32, DataplaneError> {
        if let Some(index) = self.find_interface()? {
            return Ok(index);
        }
        let handle = self.handle.clone();
        let name = self.interface.clone();
        let created = self.runtime.block_on(async move {
            handle
                .link()
                .add(LinkDummy::new(&name).build())
                .execute()
                .await
        });
        match created {
            Ok(()) => {}
            // Created meanwhile by someone else: use it.
            Err(e) if errno_of(&e) == Some(EEXIST) => {}
            Err(e) => {
                return Err(netlink(
                    format!("create dummy interface {}", self.interface),
                    e,
                ));
            }
        }
        self.find_interface()?.ok_or_else(|| {
            netlink(
                format!("create dummy interface {}", self.interface),
                "the interface is missing after creation",
            )
        })
    }

    /// The VIPs bound to the interface with this index: its addresses and the IPv4 local
    /// routes through it.
    fn addresses_of(&mut self, index: u32) -> Result<BTreeSet<IpAddr>, DataplaneError> {
        Ok(self.node_and_bound(index)?.1)
    }

    /// The addresses of the other interfaces, and the VIPs bound to the interface with this
    /// index (its addresses and the IPv4 local routes through it): one address dump and one
    /// route dump.
    fn node_and_bound(
        &mut self,
        index: u32,
    ) -> Result<(BTreeSet<IpAddr>, BTreeSet<IpAddr>), DataplaneError> {
        let (dummy, node): (Vec<AddressMessage>, Vec<AddressMessage>) = self
            .all_addresses()?
            .into_iter()
            .partition(|m| m.header.index == index);
        let mut bound: BTreeSet<IpAddr> = dummy.iter().filter_map(address_of).collect();
        bound.extend(self.routes_through(index)?);
        Ok((node.iter().filter_map(address_of).collect(), bound))
    }

    /// The destinations of the IPv4 local routes through the interface with this index.
    fn routes_through(&mut self, index: u32) -> Result<Vec<IpAddr>, DataplaneError> {
        let handle = self.handle.clone();
        // The kernel answers a dump with every IPv4 route of every table (without strict
        // checking it ignores the table asked for); the local table is a few entries per
        // node address plus the VIPs.
        let filter = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .table_id(u32::from(LOCAL_TABLE))
            .build();
        let routes: Vec<RouteMessage> = self
            .runtime
            .block_on(async move { handle.route().get(filter).execute().try_collect().await })
            .map_err(|e| netlink("list the local routes", e))?;
        Ok(routes
            .iter()
            .filter_map(|m| local_route_through(m, index))
            .collect())
    }

    /// Every address of the namespace with its interface index.
    fn all_addresses(&mut self) -> Result<Vec<AddressMessage>, DataplaneError> {
        let handle = self.handle.clone();
        self.runtime
            .block_on(async move { handle.address().get().execute().try_collect().await })
            .map_err(|e| netlink("list addresses", e))
    }

    fn read_service(&mut self, key: &ServiceKey) -> Result<Option<ServiceState>, DataplaneError> {
        let entry = match self.ipvs.service(key) {
            Ok(entry) => entry,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(DataplaneError::ipvs(format!("read service {key}"), source));
            }
        };
        let dests = self.ipvs.destinations(key).map_err(|source| {
            DataplaneError::ipvs(format!("list the destinations of {key}"), source)
        })?;
        Ok(Some(service_state(entry, dests)))
    }
}

/// One virtual server as read from the kernel, with its destinations' connection counts.
fn service_state(entry: ServiceEntry, dests: Vec<DestinationEntry>) -> ServiceState {
    let connections = dests
        .iter()
        .map(|d| {
            (
                d.destination.key(),
                Connections {
                    active: d.active_connections,
                    inactive: d.inactive_connections,
                },
            )
        })
        .collect();
    ServiceState {
        config: ServiceConfig::from_entries(entry, dests),
        connections,
    }
}

impl Drop for KernelDataplane {
    /// Deletes the `nlmon` interface: while it exists, the kernel copies every netlink
    /// message of the namespace to it. Another controller watching through it sees its
    /// socket fail and makes it again.
    fn drop(&mut self) {
        if matches!(self.watch, Watch::On(..))
            && let Err(e) = self.stop_watching_writes()
        {
            warn!(error = %e, "cannot delete the {WRITE_WATCH_INTERFACE} interface");
        }
    }
}

impl Dataplane for KernelDataplane {
    fn stop_watching_writes(&mut self) -> Result<(), DataplaneError> {
        if matches!(self.watch, Watch::On(_)) {
            self.watch = Watch::Off;
        }
        let link = match self.link_named(WRITE_WATCH_INTERFACE) {
            Ok(Some(link)) if is_nlmon(&link) => link,
            Ok(_) => return Ok(()),
            Err(e) => return Err(netlink(format!("look up {WRITE_WATCH_INTERFACE}"), e)),
        };
        let handle = self.handle.clone();
        let index = link.header.index;
        match self
            .runtime
            .block_on(async move { handle.link().del(index).execute().await })
        {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(ENODEV) => Ok(()),
            Err(e) => Err(netlink(format!("delete {WRITE_WATCH_INTERFACE}"), e)),
        }
    }

    fn ipvs_writes(&mut self) -> IpvsWrites {
        match &mut self.watch {
            Watch::On(watch) => match watch.drain() {
                Ok(false) => IpvsWrites::Quiet,
                Ok(true) => IpvsWrites::Seen,
                Err(e) => {
                    warn!(
                        error = %e,
                        "the watch of IPVS writes broke ({WRITE_WATCH_INTERFACE} deleted or set \
                         down?); starting it again"
                    );
                    self.watch = Watch::Off;
                    IpvsWrites::Seen
                }
            },
            Watch::Unavailable => IpvsWrites::Unwatched,
            Watch::Off => {
                self.watch = match self.start_watch() {
                    Ok(watch) => {
                        info!(
                            interface = WRITE_WATCH_INTERFACE,
                            "watching IPVS writes: a full pass on a quiet node skips reading \
                             the table"
                        );
                        Watch::On(watch)
                    }
                    Err(e) => {
                        warn!(
                            error = %e,
                            "cannot watch IPVS writes; every full pass reads the whole table"
                        );
                        Watch::Unavailable
                    }
                };
                IpvsWrites::Unwatched
            }
        }
    }

    fn list(&mut self) -> Result<Listing, DataplaneError> {
        /// Services whose destinations are read (and converted) at a time: the kernel's
        /// entries, with their statistics, are several times the size of the table they
        /// become, and a whole table of them at once was the peak of a restart's adoption.
        const CHUNK: usize = 2048;
        let error = |source| DataplaneError::ipvs("list the IPVS table", source);
        let mut services = self.ipvs.services().map_err(error)?.into_iter();
        let mut table = Table::new();
        let mut connections = HashMap::new();
        loop {
            let chunk: Vec<ServiceEntry> = services.by_ref().take(CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            let keys: Vec<ServiceKey> = chunk.iter().map(|e| e.service.key).collect();
            let lists = self.ipvs.destinations_of(&keys).map_err(error)?;
            for (entry, dests) in chunk.into_iter().zip(lists) {
                let key = entry.service.key;
                for d in &dests {
                    let c = Connections {
                        active: d.active_connections,
                        inactive: d.inactive_connections,
                    };
                    if !c.is_idle() {
                        connections.insert((key, d.destination.key()), c);
                    }
                }
                table.insert(ServiceConfig::from_entries(entry, dests));
            }
        }
        Ok(Listing { table, connections })
    }

    fn service(&mut self, key: &ServiceKey) -> Result<Option<ServiceState>, DataplaneError> {
        self.read_service(key)
    }

    fn services(
        &mut self,
        keys: &[ServiceKey],
    ) -> Result<Vec<Option<ServiceState>>, DataplaneError> {
        let entries = self.ipvs.services_by_key(keys).map_err(|source| {
            DataplaneError::ipvs(format!("read {} IPVS services", keys.len()), source)
        })?;
        let found: Vec<ServiceKey> = entries
            .iter()
            .flatten()
            .map(|entry| entry.service.key)
            .collect();
        // One socket: these reads are a slice of a full pass or the few a sync needs, where
        // the helper threads of a parallel read cost more CPU than they save time (the
        // kernel serialises the dumps anyway). `list` reads the whole table in parallel.
        let mut lists = Vec::with_capacity(found.len());
        for key in &found {
            lists.push(self.ipvs.destinations(key).map_err(|source| {
                DataplaneError::ipvs(format!("list the destinations of {key}"), source)
            })?);
        }
        let mut lists = lists.into_iter();
        Ok(entries
            .into_iter()
            .map(|entry| {
                let entry = entry?;
                let dests = lists.next().unwrap_or_default();
                Some(service_state(entry, dests))
            })
            .collect())
    }

    fn service_keys(&mut self) -> Result<Vec<ServiceKey>, DataplaneError> {
        Ok(self
            .ipvs
            .services()
            .map_err(|source| DataplaneError::ipvs("list IPVS services", source))?
            .into_iter()
            .map(|entry| entry.service.key)
            .collect())
    }

    fn apply(
        &mut self,
        operations: &[Operation],
    ) -> Result<Vec<Result<(), OperationError>>, DataplaneError> {
        if operations.is_empty() {
            return Ok(Vec::new());
        }
        let results = self.ipvs.apply_batch(operations).map_err(|source| {
            DataplaneError::ipvs(
                format!("apply {} IPVS operations", operations.len()),
                source,
            )
        })?;
        Ok(results
            .into_iter()
            .map(|r| r.map_err(|e| OperationError::new(e.errno(), e.to_string())))
            .collect())
    }

    fn dummy_addresses(&mut self) -> Result<BTreeSet<IpAddr>, DataplaneError> {
        let index = self.ensure_interface()?;
        self.addresses_of(index)
    }

    fn existing_dummy_addresses(&mut self) -> Result<Option<BTreeSet<IpAddr>>, DataplaneError> {
        match self.find_interface()? {
            Some(index) => self.addresses_of(index).map(Some),
            None => Ok(None),
        }
    }

    fn delete_dummy_interface(
        &mut self,
        owned: &BTreeSet<IpAddr>,
    ) -> Result<InterfaceRemoval, DataplaneError> {
        // `find_interface` refuses an interface of another kind (NotDummy).
        let Some(index) = self.find_interface()? else {
            return Ok(InterfaceRemoval::Absent);
        };
        let foreign = foreign_dummy_addresses(&self.addresses_of(index)?, owned);
        if !foreign.is_empty() {
            return Ok(InterfaceRemoval::Kept { foreign });
        }
        let handle = self.handle.clone();
        let deleted = self
            .runtime
            .block_on(async move { handle.link().del(index).execute().await });
        match deleted {
            Ok(()) => Ok(InterfaceRemoval::Deleted),
            // Deleted meanwhile by someone else.
            Err(e) if errno_of(&e) == Some(ENODEV) => Ok(InterfaceRemoval::Absent),
            Err(e) => Err(netlink(
                format!("delete dummy interface {}", self.interface),
                e,
            )),
        }
    }

    fn add_dummy_address(&mut self, addr: IpAddr) -> Result<(), DataplaneError> {
        self.add_dummy_addresses(&[addr])
            .pop()
            .unwrap_or_else(|| Err(netlink(format!("bind {addr}"), "no result")))
    }

    fn add_dummy_addresses(&mut self, addrs: &[IpAddr]) -> Vec<Result<(), DataplaneError>> {
        if addrs.is_empty() {
            return Vec::new();
        }
        let index = match self.ensure_interface() {
            Ok(index) => index,
            Err(e) => {
                // The first address carries the error itself; the others say the same.
                let message = e.to_string();
                let mut first = Some(e);
                return addrs
                    .iter()
                    .map(|addr| {
                        Err(first
                            .take()
                            .unwrap_or_else(|| netlink(format!("bind {addr}"), message.clone())))
                    })
                    .collect();
            }
        };
        let started = std::time::Instant::now();
        let messages: Vec<RouteRequest> = addrs
            .iter()
            .map(|addr| RouteRequest(bind_message(index, *addr)))
            .collect();
        let answers = self.batch.send_all(&messages);
        tracing::debug!(
            addresses = addrs.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "VIPs bound to the dummy interface"
        );
        let context = |addr: &IpAddr| format!("bind {addr} to {}", self.interface);
        addrs
            .iter()
            .zip(answers)
            .map(|(addr, answer)| match answer {
                Answer::Done => Ok(()),
                Answer::Errno(errno) if errno == EEXIST => Ok(()),
                Answer::Errno(errno) => {
                    Err(netlink(context(addr), io::Error::from_raw_os_error(errno)))
                }
                Answer::Missing => Err(netlink(
                    context(addr),
                    "no answer from the kernel (lost to a full receive buffer?)",
                )),
                Answer::Unsent(kind) => Err(netlink(
                    context(addr),
                    format!("not sent: {}", io::Error::from(kind)),
                )),
            })
            .collect()
    }

    fn delete_dummy_address(&mut self, addr: IpAddr) -> Result<(), DataplaneError> {
        let Some(index) = self.find_interface()? else {
            return Ok(());
        };
        if let IpAddr::V4(v4) = addr {
            // The route this controller made (its protocol must match: the route an address
            // makes is the address's to remove, below).
            let handle = self.handle.clone();
            let deleted = self
                .runtime
                .block_on(async move { handle.route().del(vip_route(index, v4)).execute().await });
            match deleted {
                Ok(()) => {}
                Err(e) if errno_of(&e) == Some(ESRCH) => {}
                Err(e) => {
                    return Err(netlink(format!("unbind {addr} from {}", self.interface), e));
                }
            }
        }
        // An address: IPv6 VIPs, and IPv4 ones bound as addresses by an older version.
        let on_interface: Vec<AddressMessage> = self
            .all_addresses()?
            .into_iter()
            .filter(|m| m.header.index == index)
            .collect();
        let (messages, others): (Vec<AddressMessage>, Vec<AddressMessage>) = on_interface
            .into_iter()
            .partition(|m| address_of(m) == Some(addr));
        // The kernel flushes every IPv4 route through an interface when its last IPv4
        // address goes (`fib_disable_ip`): the VIPs bound as routes must be bound again.
        let last_v4 = addr.is_ipv4()
            && !messages.is_empty()
            && !others
                .iter()
                .any(|m| address_of(m).is_some_and(|a| a.is_ipv4()));
        let routes = if last_v4 {
            let mut routes = self.routes_through(index)?;
            routes.retain(|r| *r != addr);
            routes
        } else {
            Vec::new()
        };
        for message in messages {
            let handle = self.handle.clone();
            let deleted = self
                .runtime
                .block_on(async move { handle.address().del(message).execute().await });
            match deleted {
                Ok(()) => {}
                Err(e) if errno_of(&e) == Some(EADDRNOTAVAIL) => {}
                Err(e) => {
                    return Err(netlink(format!("unbind {addr} from {}", self.interface), e));
                }
            }
        }
        if !routes.is_empty() {
            tracing::info!(
                vips = routes.len(),
                "the last IPv4 address left the dummy interface and took its routes: \
                 binding the VIPs again"
            );
            if let Some(error) = self
                .add_dummy_addresses(&routes)
                .into_iter()
                .find_map(Result::err)
            {
                return Err(error);
            }
        }
        Ok(())
    }

    fn node_and_dummy_addresses(
        &mut self,
    ) -> Result<(BTreeSet<IpAddr>, BTreeSet<IpAddr>), DataplaneError> {
        let index = self.ensure_interface()?;
        self.node_and_bound(index)
    }

    fn node_addresses(&mut self) -> Result<BTreeSet<IpAddr>, DataplaneError> {
        let dummy = self.find_interface()?;
        Ok(self
            .all_addresses()?
            .iter()
            .filter(|m| Some(m.header.index) != dummy)
            .filter_map(address_of)
            .collect())
    }

    fn sysctl(&mut self, key: &str) -> Result<Option<String>, DataplaneError> {
        match std::fs::read_to_string(sysctl_path(key)) {
            Ok(value) => Ok(Some(value.trim().to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DataplaneError::Sysctl {
                key: key.to_owned(),
                source,
            }),
        }
    }

    fn set_sysctl(&mut self, key: &str, value: &str) -> Result<(), DataplaneError> {
        std::fs::write(sysctl_path(key), value).map_err(|source| DataplaneError::Sysctl {
            key: key.to_owned(),
            source,
        })
    }

    fn netfilter_read(&mut self) -> Result<Option<Contents>, DataplaneError> {
        Contents::read(&mut self.nft).map_err(|e| netlink("list the nftables table", e))
    }

    fn netfilter_generation(&mut self) -> Result<u32, DataplaneError> {
        self.nft
            .generation()
            .map_err(|e| netlink("read the nftables generation", e))
    }

    fn delete_stale_udp_flows(
        &mut self,
        frontend: std::net::SocketAddr,
        keep: &std::collections::BTreeSet<IpAddr>,
    ) -> Result<usize, DataplaneError> {
        self.nft
            .delete_stale_udp_flows(frontend, keep)
            .map_err(|e| netlink(format!("delete the stale UDP flows to {frontend}"), e))
    }

    fn netfilter_transact(&mut self, changes: &[Change]) -> Result<(), DataplaneError> {
        self.nft.transact(changes).map_err(|e| {
            netlink(
                format!("nftables transaction of {} changes", changes.len()),
                e,
            )
        })
    }
}
