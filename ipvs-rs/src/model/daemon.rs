//! Connection-synchronisation daemons (`IPVS_CMD_NEW_DAEMON` / `DEL_DAEMON` / `GET_DAEMON`).

use std::fmt;
use std::net::IpAddr;
use std::num::{NonZeroU8, NonZeroU16};

use super::InterfaceName;

/// The role of a sync daemon (`IPVS_DAEMON_ATTR_STATE`). A host may run one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DaemonState {
    /// Sends the connection table (`IP_VS_STATE_MASTER`, 1).
    Master,
    /// Receives it (`IP_VS_STATE_BACKUP`, 2).
    Backup,
}

impl DaemonState {
    /// The `IP_VS_STATE_*` number.
    pub fn number(self) -> u32 {
        match self {
            Self::Master => 1,
            Self::Backup => 2,
        }
    }

    /// The state for an `IP_VS_STATE_*` number (NONE, 0, has no daemon and gives `None`).
    pub fn from_number(n: u32) -> Option<Self> {
        match n {
            1 => Some(Self::Master),
            2 => Some(Self::Backup),
            _ => None,
        }
    }
}

impl fmt::Display for DaemonState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Master => "master",
            Self::Backup => "backup",
        })
    }
}

/// A sync daemon's configuration.
///
/// `state`, `interface` and `sync_id` work on every kernel; the other fields need 4.3 and are
/// `None` to keep the kernel's default (group 224.0.0.81, port 8848, TTL 1, a length derived
/// from the interface MTU). A kernel reports all of them from 4.3 on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyncDaemon {
    /// Master or backup.
    pub state: DaemonState,
    /// The interface to send or listen on.
    pub interface: InterfaceName,
    /// The sync id (only the low 8 bits travel in sync messages).
    pub sync_id: u32,
    /// The maximum UDP payload of sync messages (`SYNC_MAXLEN`, 4.3+).
    pub max_len: Option<NonZeroU16>,
    /// The multicast group (`MCAST_GROUP` or `MCAST_GROUP6`, 4.3+); must be a multicast address.
    pub group: Option<IpAddr>,
    /// The base UDP port (`MCAST_PORT`, host byte order, 4.3+).
    pub port: Option<NonZeroU16>,
    /// The multicast TTL (`MCAST_TTL`, 4.3+).
    pub ttl: Option<NonZeroU8>,
}

impl SyncDaemon {
    /// A daemon with the kernel's defaults for everything but the three base fields.
    pub fn new(state: DaemonState, interface: InterfaceName, sync_id: u32) -> Self {
        Self {
            state,
            interface,
            sync_id,
            max_len: None,
            group: None,
            port: None,
            ttl: None,
        }
    }
}
