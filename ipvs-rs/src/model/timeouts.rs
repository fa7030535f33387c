//! Connection timeouts of the IPVS connection table (`IPVS_CMD_SET_CONFIG` / `GET_CONFIG`).

use std::num::NonZeroU32;

/// The TCP, TCP FIN-WAIT and UDP connection timeouts, in seconds.
///
/// On the wire 0 means "keep the kernel's current value"; here that is `None`, so a
/// `SetTimeouts` only sends the values that are `Some`. In a `GET_CONFIG` reply `None` means
/// the kernel reported 0 (the protocol is not compiled in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timeouts {
    /// Established TCP connections (`IPVS_CMD_ATTR_TIMEOUT_TCP`).
    pub tcp: Option<NonZeroU32>,
    /// TCP connections after a FIN (`IPVS_CMD_ATTR_TIMEOUT_TCP_FIN`).
    pub tcp_fin: Option<NonZeroU32>,
    /// UDP "connections" (`IPVS_CMD_ATTR_TIMEOUT_UDP`).
    pub udp: Option<NonZeroU32>,
}
