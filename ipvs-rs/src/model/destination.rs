//! Destinations (real servers) and how packets are forwarded to them.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;

use super::{AddressFamily, ModelError, Stats};

/// A destination's weight: 0 (quiesced: no new connections) to `i32::MAX`.
///
/// The attribute is a `u32` but the kernel stores an `int` and answers ERANGE for a negative
/// one, so values above `i32::MAX` are refused here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Weight(u32);

impl Weight {
    /// Weight 0: existing connections continue, no new ones are scheduled.
    pub const QUIESCED: Self = Self(0);
    /// Weight 1, ipvsadm's default.
    pub const ONE: Self = Self(1);
    /// The largest weight the kernel accepts.
    pub const MAX: Self = Self(i32::MAX as u32);

    /// Validates a weight (≤ `i32::MAX`).
    pub fn new(weight: u32) -> Result<Self, ModelError> {
        if weight > i32::MAX as u32 {
            Err(ModelError::WeightTooLarge(weight))
        } else {
            Ok(Self(weight))
        }
    }

    /// The weight.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for Weight {
    fn default() -> Self {
        Self::ONE
    }
}

impl TryFrom<u32> for Weight {
    type Error = ModelError;
    fn try_from(w: u32) -> Result<Self, ModelError> {
        Self::new(w)
    }
}

/// Active-connection thresholds of a destination (`IPVS_DEST_ATTR_U_THRESH`, `L_THRESH`).
///
/// Above `upper` active connections the destination is overloaded and gets no new ones until
/// it drops to `lower` (or, when `lower` is 0, to three quarters of `upper`). 0 means no
/// limit. The kernel answers ERANGE when `lower > upper`, including when `upper` is 0, so
/// that pair cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Thresholds {
    upper: u32,
    lower: u32,
}

impl Thresholds {
    /// No thresholds (both 0).
    pub const NONE: Self = Self { upper: 0, lower: 0 };

    /// Validates `lower <= upper`.
    pub fn new(upper: u32, lower: u32) -> Result<Self, ModelError> {
        if lower > upper {
            Err(ModelError::LowerThresholdAboveUpper { lower, upper })
        } else {
            Ok(Self { upper, lower })
        }
    }

    /// The upper threshold (0: none).
    pub fn upper(self) -> u32 {
        self.upper
    }

    /// The lower threshold.
    pub fn lower(self) -> u32 {
        self.lower
    }
}

/// Tunnel encapsulation for [`Forwarding::Tunnel`] (`IPVS_DEST_ATTR_TUN_TYPE`,
/// `TUN_PORT`, `TUN_FLAGS`).
///
/// IPIP works on every kernel; GUE needs 5.2 and its checksum flags 5.3; GRE needs 5.3. Older
/// kernels ignore the attributes and would silently use IPIP: encoding refuses that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Tunnel {
    /// IP-in-IP (`IP_VS_CONN_F_TUNNEL_TYPE_IPIP`, 0).
    #[default]
    Ipip,
    /// Generic UDP Encapsulation (`IP_VS_CONN_F_TUNNEL_TYPE_GUE`, 1).
    Gue {
        /// The UDP destination port of the encapsulation (the kernel refuses 0).
        port: NonZeroU16,
        /// `IP_VS_TUNNEL_ENCAP_FLAG_CSUM`: compute the outer UDP checksum.
        checksum: bool,
        /// `IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM`: remote checksum offload.
        remote_checksum: bool,
    },
    /// GRE (`IP_VS_CONN_F_TUNNEL_TYPE_GRE`, 2).
    Gre {
        /// `IP_VS_TUNNEL_ENCAP_FLAG_CSUM`: add the GRE checksum.
        checksum: bool,
    },
}

impl Tunnel {
    /// `IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM`.
    pub const FLAG_NOCSUM: u16 = 0;
    /// `IP_VS_TUNNEL_ENCAP_FLAG_CSUM`.
    pub const FLAG_CSUM: u16 = 1 << 0;
    /// `IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM`.
    pub const FLAG_REMCSUM: u16 = 1 << 1;

    /// The `TUN_TYPE` number.
    pub fn type_number(&self) -> u8 {
        match self {
            Self::Ipip => 0,
            Self::Gue { .. } => 1,
            Self::Gre { .. } => 2,
        }
    }

    /// The `TUN_FLAGS` bits.
    pub fn encap_flags(&self) -> u16 {
        match *self {
            Self::Ipip => Self::FLAG_NOCSUM,
            Self::Gue {
                checksum,
                remote_checksum,
                ..
            } => {
                (if checksum { Self::FLAG_CSUM } else { 0 })
                    | (if remote_checksum {
                        Self::FLAG_REMCSUM
                    } else {
                        0
                    })
            }
            Self::Gre { checksum } => {
                if checksum {
                    Self::FLAG_CSUM
                } else {
                    Self::FLAG_NOCSUM
                }
            }
        }
    }
}

/// How packets reach a destination (`IPVS_DEST_ATTR_FWD_METHOD`, `IP_VS_CONN_F_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Forwarding {
    /// NAT (`IP_VS_CONN_F_MASQ`, 0): the destination's replies must come back through us.
    #[default]
    Masquerade,
    /// Deliver locally (`IP_VS_CONN_F_LOCALNODE`, 1).
    Local,
    /// Encapsulate (`IP_VS_CONN_F_TUNNEL`, 2): the only method allowed for a destination of
    /// another family than its service.
    Tunnel(Tunnel),
    /// Direct routing (`IP_VS_CONN_F_DROUTE`, 3): rewrite the MAC only.
    DirectRouting,
    /// Cache bypass (`IP_VS_CONN_F_BYPASS`, 4).
    Bypass,
}

impl Forwarding {
    /// The `IP_VS_CONN_F_*` number sent in `FWD_METHOD`.
    pub fn method_number(&self) -> u32 {
        match self {
            Self::Masquerade => 0,
            Self::Local => 1,
            Self::Tunnel(_) => 2,
            Self::DirectRouting => 3,
            Self::Bypass => 4,
        }
    }
}

/// What identifies a destination within its service: address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DestinationKey {
    /// The destination's address (its family may differ from the service's only with tunnels).
    pub addr: IpAddr,
    /// The destination's port (ignored for direct routing and tunnels in practice).
    pub port: u16,
}

impl fmt::Display for DestinationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// A destination (real server) as a caller asks for it (`IPVS_CMD_NEW_DEST` / `SET_DEST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The destination's address.
    pub addr: IpAddr,
    /// The destination's port.
    pub port: u16,
    /// How packets are forwarded to it.
    pub forwarding: Forwarding,
    /// Its share of new connections.
    pub weight: Weight,
    /// Its active-connection thresholds.
    pub thresholds: Thresholds,
}

impl Destination {
    /// A destination with weight 1, no thresholds and the given forwarding.
    pub fn new(addr: impl Into<IpAddr>, port: u16, forwarding: Forwarding) -> Self {
        Self {
            addr: addr.into(),
            port,
            forwarding,
            weight: Weight::ONE,
            thresholds: Thresholds::NONE,
        }
    }

    /// What identifies it within its service.
    pub fn key(&self) -> DestinationKey {
        DestinationKey {
            addr: self.addr,
            port: self.port,
        }
    }

    /// The family of its address.
    pub fn family(&self) -> AddressFamily {
        AddressFamily::of(&self.addr)
    }
}

/// A destination as the kernel reports it (`IPVS_CMD_GET_DEST` dump replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DestinationEntry {
    /// The destination's settings.
    pub destination: Destination,
    /// `IPVS_DEST_ATTR_ADDR_FAMILY` as reported (3.18+); `None` from older kernels, whose
    /// destinations always have their service's family.
    pub reported_family: Option<AddressFamily>,
    /// Active connections.
    pub active_connections: u32,
    /// Inactive connections.
    pub inactive_connections: u32,
    /// Persistent connections (persistence templates pointing at it).
    pub persistent_connections: u32,
    /// Its counters and rates.
    pub stats: Stats,
}
