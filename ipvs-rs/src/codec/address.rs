//! Addresses as IPVS carries them: 4 or 16 bytes, interpreted by a separate family.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::DecodeError as NlDecodeError;

use super::DecodeError;
use crate::model::AddressFamily;

/// The bytes of an address attribute (`IPVS_SVC_ATTR_ADDR`, `IPVS_DEST_ATTR_ADDR`).
///
/// The kernel copies up to 16 bytes into a `union nf_inet_addr`, so requests may carry 4
/// bytes for IPv4; replies always carry all 16, an IPv4 address in the first 4. Which it is
/// depends on the family sent beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RawAddress {
    /// A 4-byte attribute (IPv4, as this crate sends it).
    Short([u8; 4]),
    /// A 16-byte attribute (IPv6, or any address in a reply).
    Full([u8; 16]),
}

impl RawAddress {
    /// The compact form: 4 bytes for IPv4, 16 for IPv6.
    pub fn compact(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Self::Short(a.octets()),
            IpAddr::V6(a) => Self::Full(a.octets()),
        }
    }

    /// The kernel's reply form: always 16 bytes, IPv4 in the first 4 and zeros after.
    pub fn padded(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                for (d, s) in b.iter_mut().zip(a.octets()) {
                    *d = s;
                }
                Self::Full(b)
            }
            IpAddr::V6(a) => Self::Full(a.octets()),
        }
    }

    /// The bytes on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Short(b) => b,
            Self::Full(b) => b,
        }
    }

    /// The address for `family`.
    pub fn to_ip(
        &self,
        family: AddressFamily,
        attribute: &'static str,
    ) -> Result<IpAddr, DecodeError> {
        match (family, self) {
            (AddressFamily::Ipv4, Self::Short(b)) => Ok(Ipv4Addr::from(*b).into()),
            (AddressFamily::Ipv4, Self::Full([a, b, c, d, ..])) => {
                Ok(Ipv4Addr::new(*a, *b, *c, *d).into())
            }
            (AddressFamily::Ipv6, Self::Full(b)) => Ok(Ipv6Addr::from(*b).into()),
            (AddressFamily::Ipv6, Self::Short(_)) => {
                Err(DecodeError::AddressTooShort { attribute })
            }
        }
    }

    pub(crate) fn parse(name: &str, payload: &[u8]) -> Result<Self, NlDecodeError> {
        if let Ok(b) = <[u8; 4]>::try_from(payload) {
            Ok(Self::Short(b))
        } else if let Ok(b) = <[u8; 16]>::try_from(payload) {
            Ok(Self::Full(b))
        } else {
            Err(NlDecodeError::from(format!(
                "{name}: expected 4 or 16 bytes, got {}",
                payload.len()
            )))
        }
    }
}
