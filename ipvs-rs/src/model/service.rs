//! Virtual services: what clients connect to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;

use super::{AddressFamily, ModelError, PersistenceEngine, Protocol, Scheduler, Stats};

/// What identifies a virtual service: an (address, protocol, port) tuple or a firewall mark.
///
/// The kernel looks a service up by `(AF, PROTOCOL, ADDR, PORT)` or by `(AF, FWMARK)`; these
/// are the only attributes sent to name a service in deletions, destination commands and
/// per-service reads. Port 0 makes a "catch-all" service for every port of the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKey {
    /// An address-based service.
    Tuple {
        /// The transport protocol.
        protocol: Protocol,
        /// The virtual address; its family is the service's family.
        addr: IpAddr,
        /// The virtual port (0: every port).
        port: u16,
    },
    /// A service matching packets carrying a netfilter mark.
    Fwmark {
        /// The family of the packets matched.
        family: AddressFamily,
        /// The mark (the kernel treats 0 as "no mark", so it cannot name a service).
        mark: NonZeroU32,
    },
}

impl ServiceKey {
    /// A TCP service.
    pub fn tcp(addr: impl Into<IpAddr>, port: u16) -> Self {
        Self::Tuple {
            protocol: Protocol::Tcp,
            addr: addr.into(),
            port,
        }
    }

    /// A UDP service.
    pub fn udp(addr: impl Into<IpAddr>, port: u16) -> Self {
        Self::Tuple {
            protocol: Protocol::Udp,
            addr: addr.into(),
            port,
        }
    }

    /// The service's address family.
    pub fn family(&self) -> AddressFamily {
        match self {
            Self::Tuple { addr, .. } => AddressFamily::of(addr),
            Self::Fwmark { family, .. } => *family,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tuple {
                protocol,
                addr: IpAddr::V4(a),
                port,
            } => write!(f, "{protocol} {a}:{port}"),
            Self::Tuple {
                protocol,
                addr: IpAddr::V6(a),
                port,
            } => {
                write!(f, "{protocol} [{a}]:{port}")
            }
            Self::Fwmark { family, mark } => write!(f, "fwmark {mark} ({family})"),
        }
    }
}

/// An IPv6 persistence prefix length, 1 to 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6PrefixLen(u8);

impl Ipv6PrefixLen {
    /// /128: every client address is its own persistence group.
    pub const HOST: Self = Self(128);

    /// Validates a prefix length in 1..=128.
    pub fn new(len: u8) -> Result<Self, ModelError> {
        if (1..=128).contains(&len) {
            Ok(Self(len))
        } else {
            Err(ModelError::InvalidPrefixLength(len))
        }
    }

    /// The prefix length.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// The netmask grouping client addresses for persistence (`IPVS_SVC_ATTR_NETMASK`).
///
/// The attribute is 4 bytes whose meaning depends on the service's family: for IPv4 it is
/// the mask itself in network byte order (`255.255.255.0`); for IPv6 it is the prefix length
/// (1–128) as a host-order `u32`. The variant must match the service's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersistenceNetmask {
    /// An IPv4 mask (the kernel does not require it to be contiguous).
    V4(Ipv4Addr),
    /// An IPv6 prefix length.
    V6(Ipv6PrefixLen),
}

impl PersistenceNetmask {
    /// The netmask that makes every client address its own group: `/32` or `/128`; it is
    /// also what is sent for services without persistence.
    pub fn host(family: AddressFamily) -> Self {
        match family {
            AddressFamily::Ipv4 => Self::V4(Ipv4Addr::BROADCAST),
            AddressFamily::Ipv6 => Self::V6(Ipv6PrefixLen::HOST),
        }
    }

    /// The family this netmask is for.
    pub fn family(&self) -> AddressFamily {
        match self {
            Self::V4(_) => AddressFamily::Ipv4,
            Self::V6(_) => AddressFamily::Ipv6,
        }
    }
}

/// Persistence ("sticky" connections): connections from one client group go to the same
/// destination for `timeout_secs` after the last one ends (service flag PERSISTENT,
/// `IPVS_SVC_ATTR_TIMEOUT`, `IPVS_SVC_ATTR_NETMASK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Persistence {
    /// The persistence timeout in seconds (ipvsadm's default is 300).
    pub timeout_secs: u32,
    /// How client addresses are grouped; must match the service's family.
    pub netmask: PersistenceNetmask,
}

/// A virtual service as a caller asks for it (`IPVS_CMD_NEW_SERVICE` / `SET_SERVICE`).
///
/// Editing a service replaces all of these settings: a field left at its default is reset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    /// What identifies the service.
    pub key: ServiceKey,
    /// How destinations are chosen.
    pub scheduler: Scheduler,
    /// Persistence, if any (its netmask must be of the key's family).
    pub persistence: Option<Persistence>,
    /// One-packet scheduling (flag ONEPACKET, UDP only in practice): schedule every datagram.
    pub one_packet: bool,
    /// A persistence engine, e.g. `sip`.
    pub persistence_engine: Option<PersistenceEngine>,
}

impl Service {
    /// A service with the given scheduler and nothing else.
    pub fn new(key: ServiceKey, scheduler: Scheduler) -> Self {
        Self {
            key,
            scheduler,
            persistence: None,
            one_packet: false,
            persistence_engine: None,
        }
    }
}

/// The service flags as the kernel reports them (`IPVS_SVC_ATTR_FLAGS`), including the ones
/// it sets itself, like HASHED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ServiceFlags(pub u32);

impl ServiceFlags {
    /// `IP_VS_SVC_F_PERSISTENT`.
    pub const PERSISTENT: u32 = 0x01;
    /// `IP_VS_SVC_F_HASHED`: set by the kernel on every service in its table; never sent.
    pub const HASHED: u32 = 0x02;
    /// `IP_VS_SVC_F_ONEPACKET`.
    pub const ONEPACKET: u32 = 0x04;
    /// `IP_VS_SVC_F_SCHED1` (sh/mh: fallback).
    pub const SCHED1: u32 = 0x08;
    /// `IP_VS_SVC_F_SCHED2` (sh/mh: port).
    pub const SCHED2: u32 = 0x10;
    /// `IP_VS_SVC_F_SCHED3`.
    pub const SCHED3: u32 = 0x20;

    /// Whether the kernel has the service in its hash table (always, for a listed service).
    pub fn is_hashed(self) -> bool {
        self.0 & Self::HASHED != 0
    }

    /// Whether the service is persistent.
    pub fn is_persistent(self) -> bool {
        self.0 & Self::PERSISTENT != 0
    }

    /// Whether one-packet scheduling is on.
    pub fn is_one_packet(self) -> bool {
        self.0 & Self::ONEPACKET != 0
    }
}

/// A service as the kernel reports it (`IPVS_CMD_GET_SERVICE` replies).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceEntry {
    /// The service's settings.
    pub service: Service,
    /// The raw flags reported (see [`ServiceFlags::is_hashed`]).
    pub flags: ServiceFlags,
    /// Its counters and rates.
    pub stats: Stats,
}
