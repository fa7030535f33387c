//! Transport protocols and address families as IPVS numbers them.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// The transport protocol of a virtual service, as an IPPROTO number.
///
/// The kernel accepts TCP, UDP and SCTP for address-based services; [`Protocol::Other`]
/// exists so that whatever a kernel reports can be represented. Equality, ordering and
/// hashing go by the protocol number, so `Protocol::Other(6) == Protocol::Tcp` and TCP sorts
/// before UDP before SCTP; [`Protocol::from_number`] always returns the named variant when
/// there is one.
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    /// TCP (IPPROTO_TCP, 6).
    Tcp,
    /// UDP (IPPROTO_UDP, 17).
    Udp,
    /// SCTP (IPPROTO_SCTP, 132).
    Sctp,
    /// Any other IPPROTO number.
    Other(u16),
}

impl Protocol {
    /// IPPROTO_TCP.
    pub const TCP_NUMBER: u16 = 6;
    /// IPPROTO_UDP.
    pub const UDP_NUMBER: u16 = 17;
    /// IPPROTO_SCTP.
    pub const SCTP_NUMBER: u16 = 132;

    /// The IPPROTO number, as sent in `IPVS_SVC_ATTR_PROTOCOL`.
    pub fn number(self) -> u16 {
        match self {
            Self::Tcp => Self::TCP_NUMBER,
            Self::Udp => Self::UDP_NUMBER,
            Self::Sctp => Self::SCTP_NUMBER,
            Self::Other(n) => n,
        }
    }

    /// The protocol for an IPPROTO number, preferring the named variants.
    pub fn from_number(n: u16) -> Self {
        match n {
            Self::TCP_NUMBER => Self::Tcp,
            Self::UDP_NUMBER => Self::Udp,
            Self::SCTP_NUMBER => Self::Sctp,
            n => Self::Other(n),
        }
    }
}

impl PartialEq for Protocol {
    fn eq(&self, other: &Self) -> bool {
        self.number() == other.number()
    }
}

impl Eq for Protocol {}

impl Hash for Protocol {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.number().hash(state);
    }
}

impl PartialOrd for Protocol {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Ordered by protocol number, as equality is, so that keys holding a protocol can be kept
/// in ordered maps.
impl Ord for Protocol {
    fn cmp(&self, other: &Self) -> Ordering {
        self.number().cmp(&other.number())
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp => f.write_str("TCP"),
            Self::Udp => f.write_str("UDP"),
            Self::Sctp => f.write_str("SCTP"),
            Self::Other(n) => write!(f, "proto-{n}"),
        }
    }
}

/// An address family, as the kernel's AF_* numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressFamily {
    /// IPv4 (AF_INET, 2).
    Ipv4,
    /// IPv6 (AF_INET6, 10).
    Ipv6,
}

impl AddressFamily {
    /// AF_INET.
    pub const INET: u16 = 2;
    /// AF_INET6.
    pub const INET6: u16 = 10;

    /// The AF_* number, as sent in `IPVS_SVC_ATTR_AF` and `IPVS_DEST_ATTR_ADDR_FAMILY`.
    pub fn number(self) -> u16 {
        match self {
            Self::Ipv4 => Self::INET,
            Self::Ipv6 => Self::INET6,
        }
    }

    /// The family for an AF_* number, or `None` for anything but AF_INET and AF_INET6.
    pub fn from_number(n: u16) -> Option<Self> {
        match n {
            Self::INET => Some(Self::Ipv4),
            Self::INET6 => Some(Self::Ipv6),
            _ => None,
        }
    }

    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::Ipv4,
            IpAddr::V6(_) => Self::Ipv6,
        }
    }
}

impl fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        })
    }
}
