//! Traffic counters and rate estimates of services and destinations.

/// Counters since the service or destination was added or last zeroed
/// (`IPVS_SVC_ATTR_STATS64` / `IPVS_DEST_ATTR_STATS64` on 4.1+, else the 32-bit `..._STATS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Stats {
    /// Connections scheduled.
    pub connections: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// The kernel's rate estimates.
    pub rates: Rates,
}

/// Rate estimates, smoothed by the kernel's estimator (per second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Packets in per second.
    pub in_pps: u64,
    /// Packets out per second.
    pub out_pps: u64,
    /// Bytes in per second.
    pub in_bps: u64,
    /// Bytes out per second.
    pub out_bps: u64,
}
