//! [`KernelDataplane`]: the real node, over the `ipvs` crate, rtnetlink and `/proc/sys`.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;

use futures_util::{StreamExt, TryStreamExt};
use ipvs::codec::Operation;
use ipvs::model::{DestinationEntry, ServiceEntry, ServiceKey};
use ipvs::table::{ServiceConfig, Table};
use ipvs::{ErrorKind, Ipvs};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkDummy};

use super::{
    Connections, Dataplane, DataplaneError, InterfaceRemoval, Listing, OperationError,
    ServiceState, foreign_dummy_addresses, sysctl_path,
};

/// `ENODEV`: what the kernel answers for a link name it does not know.
const ENODEV: i32 = 19;
/// `EEXIST`: an address that is already bound.
const EEXIST: i32 = 17;
/// `EADDRNOTAVAIL`: an address that is not bound.
const EADDRNOTAVAIL: i32 = 99;

/// The node's real dataplane.
///
/// - IPVS through one blocking [`Ipvs`] handle (batches go out in as few `sendmsg` calls as
///   the library can make, each operation with its own answer);
/// - the dummy interface and addresses through rtnetlink, on a small current-thread tokio
///   runtime owned by this value. The interface is created as a `dummy` link and left **down**,
///   as kube-proxy leaves `kube-ipvs0`: IPVS intercepts packets to a local address in the
///   `LOCAL_IN` hook whatever the link state, and a down link never answers ARP or neighbour
///   solicitations for the VIPs nor carries routes of its own. VIPs are bound as /32 and /128;
/// - sysctls by writing `/proc/sys` directly.
///
/// Sockets belong to the network namespace of the thread that opened the dataplane;
/// `/proc/sys` is read in the namespace of the calling thread: use it from the thread that
/// opened it (or one in the same namespace).
pub struct KernelDataplane {
    ipvs: Ipvs,
    runtime: tokio::runtime::Runtime,
    handle: Handle,
    interface: String,
}

impl std::fmt::Debug for KernelDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelDataplane")
            .field("interface", &self.interface)
            .finish_non_exhaustive()
    }
}

fn netlink(context: impl Into<String>, error: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Netlink {
        context: context.into(),
        message: error.to_string(),
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

fn is_dummy(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Dummy))),
        _ => false,
    })
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
        Ok(Self {
            ipvs,
            runtime,
            handle,
            interface: interface.into(),
        })
    }

    /// The IPVS handle (to read what the dataplane does not expose).
    pub fn ipvs(&mut self) -> &mut Ipvs {
        &mut self.ipvs
    }

    /// The managed dummy interface's name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The index of the dummy interface, `None` when it does not exist.
    fn find_interface(&mut self) -> Result<Option<u32>, DataplaneError> {
        let handle = self.handle.clone();
        let name = self.interface.clone();
        let found = self.runtime.block_on(async move {
            let mut links = handle.link().get().match_name(name).execute();
            links.try_next().await
        });
        match found {
            Ok(Some(link)) if is_dummy(&link) => Ok(Some(link.header.index)),
            Ok(Some(_)) => Err(DataplaneError::NotDummy(self.interface.clone())),
            Ok(None) => Ok(None),
            Err(e) if errno_of(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(netlink(format!("look up interface {}", self.interface), e)),
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

    /// The addresses bound on the interface with this index.
    fn addresses_of(&mut self, index: u32) -> Result<BTreeSet<IpAddr>, DataplaneError> {
        Ok(self
            .all_addresses()?
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(address_of)
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

impl Dataplane for KernelDataplane {
    fn list(&mut self) -> Result<Listing, DataplaneError> {
        let listing = self
            .ipvs
            .services_with_destinations()
            .map_err(|source| DataplaneError::ipvs("list the IPVS table", source))?;
        let mut table = Table::new();
        let mut connections = HashMap::new();
        for (entry, dests) in listing {
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
        let index = self.ensure_interface()?;
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        let handle = self.handle.clone();
        let added = self
            .runtime
            .block_on(async move { handle.address().add(index, addr, prefix).execute().await });
        match added {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(EEXIST) => Ok(()),
            Err(e) => Err(netlink(
                format!("bind {addr}/{prefix} on {}", self.interface),
                e,
            )),
        }
    }

    fn add_dummy_addresses(&mut self, addrs: &[IpAddr]) -> Vec<Result<(), DataplaneError>> {
        /// Requests in flight at once on the rtnetlink socket.
        const IN_FLIGHT: usize = 128;
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
                            .unwrap_or_else(|| netlink(format!("bind {addr}"), &message)))
                    })
                    .collect();
            }
        };
        let started = std::time::Instant::now();
        let handle = self.handle.clone();
        let list: Vec<IpAddr> = addrs.to_vec();
        let answers: Vec<Result<(), rtnetlink::Error>> = self.runtime.block_on(async move {
            futures_util::stream::iter(list.into_iter().map(|addr| {
                let prefix = if addr.is_ipv4() { 32 } else { 128 };
                handle.address().add(index, addr, prefix).execute()
            }))
            .buffered(IN_FLIGHT)
            .collect()
            .await
        });
        tracing::debug!(
            addresses = addrs.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "addresses bound on the dummy interface"
        );
        addrs
            .iter()
            .zip(answers)
            .map(|(addr, answer)| match answer {
                Ok(()) => Ok(()),
                Err(e) if errno_of(&e) == Some(EEXIST) => Ok(()),
                Err(e) => Err(netlink(format!("bind {addr} on {}", self.interface), e)),
            })
            .collect()
    }

    fn delete_dummy_address(&mut self, addr: IpAddr) -> Result<(), DataplaneError> {
        let Some(index) = self.find_interface()? else {
            return Ok(());
        };
        let messages: Vec<AddressMessage> = self
            .all_addresses()?
            .into_iter()
            .filter(|m| m.header.index == index && address_of(m) == Some(addr))
            .collect();
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
        Ok(())
    }

    fn node_and_dummy_addresses(
        &mut self,
    ) -> Result<(BTreeSet<IpAddr>, BTreeSet<IpAddr>), DataplaneError> {
        let index = self.ensure_interface()?;
        let (dummy, node): (Vec<AddressMessage>, Vec<AddressMessage>) = self
            .all_addresses()?
            .into_iter()
            .partition(|m| m.header.index == index);
        Ok((
            node.iter().filter_map(address_of).collect(),
            dummy.iter().filter_map(address_of).collect(),
        ))
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
}
