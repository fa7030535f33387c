//! Top-level attributes of an IPVS message (`IPVS_CMD_ATTR_*`).

use netlink_packet_core::{
    DecodeError as NlDecodeError, DefaultNla, Emitable, NLA_F_NESTED, Nla, NlaBuffer, Parseable,
};

use super::constants::*;
use super::daemon::DaemonAttribute;
use super::destination::DestinationAttribute;
use super::info::InfoAttribute;
use super::service::ServiceAttribute;
use super::util::{parse_nested, parse_u32, write};

/// One top-level attribute of an IPVS message.
///
/// Nested attributes are sent with `NLA_F_NESTED` set (the kernel masks it off; its own
/// replies do not set it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandAttribute {
    /// `SERVICE`: the nested service.
    Service(Vec<ServiceAttribute>),
    /// `DEST`: the nested destination.
    Destination(Vec<DestinationAttribute>),
    /// `DAEMON`: the nested sync daemon.
    Daemon(Vec<DaemonAttribute>),
    /// `TIMEOUT_TCP` in seconds (0: unchanged).
    TimeoutTcp(u32),
    /// `TIMEOUT_TCP_FIN` in seconds (0: unchanged).
    TimeoutTcpFin(u32),
    /// `TIMEOUT_UDP` in seconds (0: unchanged).
    TimeoutUdp(u32),
    /// An info attribute, at the top level of `SET_INFO` replies only.
    Info(InfoAttribute),
    /// Any attribute this crate does not know.
    Other(DefaultNla),
}

impl Nla for CommandAttribute {
    fn value_len(&self) -> usize {
        match self {
            Self::Service(v) => v.as_slice().buffer_len(),
            Self::Destination(v) => v.as_slice().buffer_len(),
            Self::Daemon(v) => v.as_slice().buffer_len(),
            Self::TimeoutTcp(_) | Self::TimeoutTcpFin(_) | Self::TimeoutUdp(_) => 4,
            Self::Info(a) => a.value_len(),
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Service(_) => IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED,
            Self::Destination(_) => IPVS_CMD_ATTR_DEST | NLA_F_NESTED,
            Self::Daemon(_) => IPVS_CMD_ATTR_DAEMON | NLA_F_NESTED,
            Self::TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            Self::TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            Self::TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            Self::Info(a) => a.kind(),
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Self::Service(v) => v.as_slice().emit(buf),
            Self::Destination(v) => v.as_slice().emit(buf),
            Self::Daemon(v) => v.as_slice().emit(buf),
            Self::TimeoutTcp(v) | Self::TimeoutTcpFin(v) | Self::TimeoutUdp(v) => {
                write(buf, &v.to_ne_bytes())
            }
            Self::Info(a) => a.emit_value(buf),
            Self::Other(nla) => nla.emit_value(buf),
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for CommandAttribute {
    /// Parses a top-level attribute of any message but `SET_INFO` (see [`InfoAttribute`]).
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, NlDecodeError> {
        let p = buf.value();
        Ok(match buf.kind() {
            IPVS_CMD_ATTR_SERVICE => Self::Service(parse_nested("IPVS_CMD_ATTR_SERVICE", p)?),
            IPVS_CMD_ATTR_DEST => Self::Destination(parse_nested("IPVS_CMD_ATTR_DEST", p)?),
            IPVS_CMD_ATTR_DAEMON => Self::Daemon(parse_nested("IPVS_CMD_ATTR_DAEMON", p)?),
            IPVS_CMD_ATTR_TIMEOUT_TCP => {
                Self::TimeoutTcp(parse_u32("IPVS_CMD_ATTR_TIMEOUT_TCP", p)?)
            }
            IPVS_CMD_ATTR_TIMEOUT_TCP_FIN => {
                Self::TimeoutTcpFin(parse_u32("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", p)?)
            }
            IPVS_CMD_ATTR_TIMEOUT_UDP => {
                Self::TimeoutUdp(parse_u32("IPVS_CMD_ATTR_TIMEOUT_UDP", p)?)
            }
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}
