//! Errors of encoding operations and decoding replies.

use std::net::IpAddr;

use thiserror::Error;

use crate::model::{AddressFamily, Feature, ModelError};

/// Why an operation could not be encoded: the kernel would refuse it, or worse, silently
/// ignore part of it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The running kernel does not know an attribute the operation needs; it would ignore it.
    #[error("the kernel does not support {feature}")]
    Unsupported {
        /// The missing capability (its `Display` names the first kernel with it).
        feature: Feature,
    },
    /// A persistence netmask of another family than its service.
    #[error("persistence netmask is for {netmask} but the service is {service}")]
    NetmaskFamilyMismatch {
        /// The service's family.
        service: AddressFamily,
        /// The netmask's family.
        netmask: AddressFamily,
    },
    /// A destination of another family than its service without tunnel forwarding (the
    /// kernel answers EINVAL).
    #[error("a {destination} destination of a {service} service needs tunnel forwarding")]
    MixedFamilyNeedsTunnel {
        /// The service's family.
        service: AddressFamily,
        /// The destination's family.
        destination: AddressFamily,
    },
    /// A sync daemon group that is not a multicast address (the kernel answers EINVAL).
    #[error("sync daemon group {0} is not a multicast address")]
    NotMulticast(IpAddr),
    /// A value refused by the model's rules.
    #[error(transparent)]
    Invalid(#[from] ModelError),
}

/// Why a reply could not be decoded. Decoding never panics and allocates at most in
/// proportion to its input.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not well-formed netlink attributes (bad length, truncated, wrong size
    /// for a known attribute).
    #[error("malformed message: {0}")]
    Malformed(#[from] netlink_packet_core::DecodeError),
    /// A message whose command is not the one expected (e.g. a reply decoded as a request).
    #[error("unexpected command {0}")]
    UnexpectedCommand(u8),
    /// An attribute the reply must carry is absent.
    #[error("missing attribute {0}")]
    MissingAttribute(&'static str),
    /// An attribute holds a value outside what the UAPI defines.
    #[error("invalid value {value} in {attribute}")]
    InvalidValue {
        /// The attribute's UAPI name.
        attribute: &'static str,
        /// The value, widened.
        value: u64,
    },
    /// An address family other than AF_INET and AF_INET6.
    #[error("unknown address family {family} in {attribute}")]
    UnknownAddressFamily {
        /// The attribute's UAPI name.
        attribute: &'static str,
        /// The AF_* number.
        family: u16,
    },
    /// An address attribute too short for its family (4 bytes for IPv6).
    #[error("{attribute} holds a 4-byte address but the family is IPv6")]
    AddressTooShort {
        /// The attribute's UAPI name.
        attribute: &'static str,
    },
    /// A name the model refuses (empty, too long, in-tree name as a custom scheduler…).
    #[error("invalid {attribute}: {source}")]
    InvalidName {
        /// The attribute's UAPI name.
        attribute: &'static str,
        /// Why.
        source: ModelError,
    },
}
