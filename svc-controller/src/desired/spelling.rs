//! The Kubernetes spellings of the library's protocols and address families.
//!
//! The API server stores them exactly as written here (`TCP`, `IPv4`); anything else in an
//! object is reported by the caller, never guessed at.

use ipvs::model::{AddressFamily, Protocol};

/// A `ServicePort.protocol` or `EndpointPort.protocol`: `TCP`, `UDP` or `SCTP`.
pub(crate) fn protocol(value: &str) -> Option<Protocol> {
    match value {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// An `EndpointSlice.addressType` or `Service.spec.ipFamilies` entry: `IPv4` or `IPv6`.
pub(crate) fn address_family(value: &str) -> Option<AddressFamily> {
    match value {
        "IPv4" => Some(AddressFamily::Ipv4),
        "IPv6" => Some(AddressFamily::Ipv6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_read_back_as_the_library_displays_them() {
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            assert_eq!(protocol(&p.to_string()), Some(p));
        }
        for f in [AddressFamily::Ipv4, AddressFamily::Ipv6] {
            assert_eq!(address_family(&f.to_string()), Some(f));
        }
        for bad in ["tcp", "Tcp", "ICMP", ""] {
            assert_eq!(protocol(bad), None, "{bad:?}");
        }
        for bad in ["ipv4", "IPV6", "FQDN", ""] {
            assert_eq!(address_family(bad), None, "{bad:?}");
        }
    }
}
