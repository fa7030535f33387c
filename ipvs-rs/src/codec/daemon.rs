//! The sync daemon nest (`IPVS_CMD_ATTR_DAEMON`).
//!
//! Starting a daemon needs `STATE`, `MCAST_IFN` and `SYNC_ID`; 4.3 added `SYNC_MAXLEN`,
//! `MCAST_GROUP` (IPv4, network order) or `MCAST_GROUP6`, `MCAST_PORT` — in **host** byte
//! order, unlike every other port of IPVS — and `MCAST_TTL`. Stopping one needs only `STATE`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::{NonZeroU8, NonZeroU16};

use netlink_packet_core::{DecodeError as NlDecodeError, DefaultNla, Nla, NlaBuffer, Parseable};

use super::constants::*;
use super::util::{fixed, parse_cstring, parse_u8, parse_u16, parse_u32, write, write_cstring};
use super::{DecodeError, EncodeError};
use crate::model::{DaemonState, Feature, InterfaceName, KernelFeatures, SyncDaemon};

/// One attribute of the daemon nest (`IPVS_DAEMON_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAttribute {
    /// `STATE`: `IP_VS_STATE_MASTER` or `IP_VS_STATE_BACKUP`.
    State(u32),
    /// `MCAST_IFN` (sent NUL-terminated).
    Interface(String),
    /// `SYNC_ID`.
    SyncId(u32),
    /// `SYNC_MAXLEN` (4.3+).
    SyncMaxLen(u16),
    /// `MCAST_GROUP` (4.3+).
    McastGroup(Ipv4Addr),
    /// `MCAST_GROUP6` (4.3+).
    McastGroup6(Ipv6Addr),
    /// `MCAST_PORT` (host order, 4.3+).
    McastPort(u16),
    /// `MCAST_TTL` (4.3+).
    McastTtl(u8),
    /// Any attribute this crate does not know.
    Other(DefaultNla),
}

impl Nla for DaemonAttribute {
    fn value_len(&self) -> usize {
        match self {
            Self::State(_) | Self::SyncId(_) | Self::McastGroup(_) => 4,
            Self::Interface(s) => s.len() + 1,
            Self::SyncMaxLen(_) | Self::McastPort(_) => 2,
            Self::McastGroup6(_) => 16,
            Self::McastTtl(_) => 1,
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::State(_) => IPVS_DAEMON_ATTR_STATE,
            Self::Interface(_) => IPVS_DAEMON_ATTR_MCAST_IFN,
            Self::SyncId(_) => IPVS_DAEMON_ATTR_SYNC_ID,
            Self::SyncMaxLen(_) => IPVS_DAEMON_ATTR_SYNC_MAXLEN,
            Self::McastGroup(_) => IPVS_DAEMON_ATTR_MCAST_GROUP,
            Self::McastGroup6(_) => IPVS_DAEMON_ATTR_MCAST_GROUP6,
            Self::McastPort(_) => IPVS_DAEMON_ATTR_MCAST_PORT,
            Self::McastTtl(_) => IPVS_DAEMON_ATTR_MCAST_TTL,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Self::State(v) | Self::SyncId(v) => write(buf, &v.to_ne_bytes()),
            Self::Interface(s) => write_cstring(buf, s),
            Self::SyncMaxLen(v) | Self::McastPort(v) => write(buf, &v.to_ne_bytes()),
            Self::McastGroup(a) => write(buf, &a.octets()),
            Self::McastGroup6(a) => write(buf, &a.octets()),
            Self::McastTtl(v) => write(buf, &[*v]),
            Self::Other(nla) => nla.emit_value(buf),
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for DaemonAttribute {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, NlDecodeError> {
        let p = buf.value();
        Ok(match buf.kind() {
            IPVS_DAEMON_ATTR_STATE => Self::State(parse_u32("IPVS_DAEMON_ATTR_STATE", p)?),
            IPVS_DAEMON_ATTR_MCAST_IFN => {
                Self::Interface(parse_cstring("IPVS_DAEMON_ATTR_MCAST_IFN", p)?)
            }
            IPVS_DAEMON_ATTR_SYNC_ID => Self::SyncId(parse_u32("IPVS_DAEMON_ATTR_SYNC_ID", p)?),
            IPVS_DAEMON_ATTR_SYNC_MAXLEN => {
                Self::SyncMaxLen(parse_u16("IPVS_DAEMON_ATTR_SYNC_MAXLEN", p)?)
            }
            IPVS_DAEMON_ATTR_MCAST_GROUP => Self::McastGroup(Ipv4Addr::from(fixed::<4>(
                "IPVS_DAEMON_ATTR_MCAST_GROUP",
                p,
            )?)),
            IPVS_DAEMON_ATTR_MCAST_GROUP6 => Self::McastGroup6(Ipv6Addr::from(fixed::<16>(
                "IPVS_DAEMON_ATTR_MCAST_GROUP6",
                p,
            )?)),
            IPVS_DAEMON_ATTR_MCAST_PORT => {
                Self::McastPort(parse_u16("IPVS_DAEMON_ATTR_MCAST_PORT", p)?)
            }
            IPVS_DAEMON_ATTR_MCAST_TTL => {
                Self::McastTtl(parse_u8("IPVS_DAEMON_ATTR_MCAST_TTL", p)?)
            }
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The daemon nest for NEW_DAEMON, refusing 4.3 settings on older kernels and groups that
/// are not multicast.
pub fn daemon_attributes(
    daemon: &SyncDaemon,
    features: &KernelFeatures,
) -> Result<Vec<DaemonAttribute>, EncodeError> {
    let extended = daemon.max_len.is_some()
        || daemon.group.is_some()
        || daemon.port.is_some()
        || daemon.ttl.is_some();
    if extended && !features.supports(Feature::DaemonMulticastSettings) {
        return Err(EncodeError::Unsupported {
            feature: Feature::DaemonMulticastSettings,
        });
    }
    if let Some(g) = daemon.group
        && !g.is_multicast()
    {
        return Err(EncodeError::NotMulticast(g));
    }
    Ok(daemon_attributes_unchecked(daemon))
}

/// Every attribute `daemon` sets, unchecked.
pub(crate) fn daemon_attributes_unchecked(daemon: &SyncDaemon) -> Vec<DaemonAttribute> {
    let mut attrs = vec![
        DaemonAttribute::State(daemon.state.number()),
        DaemonAttribute::Interface(daemon.interface.as_str().to_owned()),
        DaemonAttribute::SyncId(daemon.sync_id),
    ];
    if let Some(v) = daemon.max_len {
        attrs.push(DaemonAttribute::SyncMaxLen(v.get()));
    }
    match daemon.group {
        Some(IpAddr::V4(g)) => attrs.push(DaemonAttribute::McastGroup(g)),
        Some(IpAddr::V6(g)) => attrs.push(DaemonAttribute::McastGroup6(g)),
        None => {}
    }
    if let Some(v) = daemon.port {
        attrs.push(DaemonAttribute::McastPort(v.get()));
    }
    if let Some(v) = daemon.ttl {
        attrs.push(DaemonAttribute::McastTtl(v.get()));
    }
    attrs
}

/// Decodes the daemon nest of a `GET_DAEMON` reply. Zero values of the 4.3 settings decode
/// as `None`.
pub fn decode_daemon_attributes(attrs: &[DaemonAttribute]) -> Result<SyncDaemon, DecodeError> {
    let (mut state, mut ifn, mut sync_id) = (None, None, None);
    let mut d = (None, None, None, None);
    for a in attrs {
        match a {
            DaemonAttribute::State(v) => state = Some(*v),
            DaemonAttribute::Interface(v) => ifn = Some(v.as_str()),
            DaemonAttribute::SyncId(v) => sync_id = Some(*v),
            DaemonAttribute::SyncMaxLen(v) => d.0 = NonZeroU16::new(*v),
            DaemonAttribute::McastGroup(v) => d.1 = Some(IpAddr::V4(*v)),
            DaemonAttribute::McastGroup6(v) => d.1 = Some(IpAddr::V6(*v)),
            DaemonAttribute::McastPort(v) => d.2 = NonZeroU16::new(*v),
            DaemonAttribute::McastTtl(v) => d.3 = NonZeroU8::new(*v),
            DaemonAttribute::Other(_) => {}
        }
    }
    let state = state.ok_or(DecodeError::MissingAttribute("IPVS_DAEMON_ATTR_STATE"))?;
    let state = DaemonState::from_number(state).ok_or(DecodeError::InvalidValue {
        attribute: "IPVS_DAEMON_ATTR_STATE",
        value: u64::from(state),
    })?;
    let ifn = ifn.ok_or(DecodeError::MissingAttribute("IPVS_DAEMON_ATTR_MCAST_IFN"))?;
    let interface = InterfaceName::new(ifn).map_err(|source| DecodeError::InvalidName {
        attribute: "IPVS_DAEMON_ATTR_MCAST_IFN",
        source,
    })?;
    let sync_id = sync_id.ok_or(DecodeError::MissingAttribute("IPVS_DAEMON_ATTR_SYNC_ID"))?;
    Ok(SyncDaemon {
        state,
        interface,
        sync_id,
        max_len: d.0,
        group: d.1,
        port: d.2,
        ttl: d.3,
    })
}
