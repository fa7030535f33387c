//! Replies: decoding what the kernel sends, and building kernel-shaped replies (for tests
//! and fake kernels).
//!
//! The decoders look at attributes, not at the command: the kernel answers `GET_SERVICE`
//! with `NEW_SERVICE` messages, `GET_DEST` with `NEW_DEST`, `GET_DAEMON` with `NEW_DAEMON`,
//! `GET_CONFIG` with `SET_CONFIG` and `GET_INFO` with `SET_INFO`.

use super::DecodeError;
use super::address::RawAddress;
use super::command::CommandAttribute;
use super::config::decode_timeout_attributes;
use super::daemon::daemon_attributes_unchecked;
use super::daemon::{DaemonAttribute, decode_daemon_attributes};
use super::destination::{DestinationAttribute, decode_destination_attributes};
use super::info::{decode_info_attributes, info_attributes};
use super::message::{IpvsCommand, IpvsMessage};
use super::service::{ServiceAttribute, decode_service_attributes, netmask_bytes, service_flags};
use super::stats::{stats32_attributes, stats64_attributes};
use crate::model::{
    AddressFamily, DestinationEntry, Feature, Forwarding, Info, KernelFeatures, PersistenceNetmask,
    ServiceEntry, ServiceFlags, ServiceKey, SyncDaemon, Timeouts, Tunnel,
};

/// Decodes a service reply (one message of a `GET_SERVICE` answer or dump).
pub fn decode_service(msg: &IpvsMessage) -> Result<ServiceEntry, DecodeError> {
    decode_service_attributes(
        msg.service()
            .ok_or(DecodeError::MissingAttribute("IPVS_CMD_ATTR_SERVICE"))?,
    )
}

/// Decodes a destination reply (one message of a `GET_DEST` dump). `service_family` is the
/// family of the service dumped, used when the kernel (< 3.18) sends no `ADDR_FAMILY`.
pub fn decode_destination(
    msg: &IpvsMessage,
    service_family: AddressFamily,
) -> Result<DestinationEntry, DecodeError> {
    decode_destination_attributes(
        msg.destination()
            .ok_or(DecodeError::MissingAttribute("IPVS_CMD_ATTR_DEST"))?,
        service_family,
    )
}

/// Decodes a sync daemon reply (one message of a `GET_DAEMON` dump).
pub fn decode_daemon(msg: &IpvsMessage) -> Result<SyncDaemon, DecodeError> {
    decode_daemon_attributes(
        msg.daemon()
            .ok_or(DecodeError::MissingAttribute("IPVS_CMD_ATTR_DAEMON"))?,
    )
}

/// Decodes the `GET_INFO` reply.
pub fn decode_info(msg: &IpvsMessage) -> Result<Info, DecodeError> {
    decode_info_attributes(msg.attributes.iter().filter_map(|a| match a {
        CommandAttribute::Info(i) => Some(i),
        _ => None,
    }))
}

/// Decodes the `GET_CONFIG` reply; absent or zero timeouts are `None`.
pub fn decode_timeouts(msg: &IpvsMessage) -> Result<Timeouts, DecodeError> {
    Ok(decode_timeout_attributes(&msg.attributes))
}

impl TryFrom<&IpvsMessage> for ServiceEntry {
    type Error = DecodeError;
    fn try_from(msg: &IpvsMessage) -> Result<Self, DecodeError> {
        decode_service(msg)
    }
}

impl TryFrom<&IpvsMessage> for SyncDaemon {
    type Error = DecodeError;
    fn try_from(msg: &IpvsMessage) -> Result<Self, DecodeError> {
        decode_daemon(msg)
    }
}

impl TryFrom<&IpvsMessage> for Info {
    type Error = DecodeError;
    fn try_from(msg: &IpvsMessage) -> Result<Self, DecodeError> {
        decode_info(msg)
    }
}

impl TryFrom<&IpvsMessage> for Timeouts {
    type Error = DecodeError;
    fn try_from(msg: &IpvsMessage) -> Result<Self, DecodeError> {
        decode_timeouts(msg)
    }
}

/// Upgrades `features` with what a reply proves the kernel supports: `ADDR_FAMILY`,
/// `STATS64`, `TUN_TYPE` (GUE), `TUN_FLAGS` (flags and GRE), the 4.3 daemon attributes.
/// Never downgrades: an attribute's absence proves nothing.
pub fn observe_features(msg: &IpvsMessage, mut features: KernelFeatures) -> KernelFeatures {
    for a in &msg.attributes {
        match a {
            CommandAttribute::Service(v)
                if v.iter().any(|a| matches!(a, ServiceAttribute::Stats64(_))) =>
            {
                features = features.with(Feature::Stats64);
            }
            CommandAttribute::Destination(v) => {
                for a in v {
                    features = match a {
                        DestinationAttribute::AddressFamily(_) => {
                            features.with(Feature::DestinationAddressFamily)
                        }
                        DestinationAttribute::Stats64(_) => features.with(Feature::Stats64),
                        DestinationAttribute::TunnelType(_) => features.with(Feature::TunnelGue),
                        DestinationAttribute::TunnelFlags(_) => {
                            features.with(Feature::TunnelFlags).with(Feature::TunnelGre)
                        }
                        _ => features,
                    };
                }
            }
            CommandAttribute::Daemon(v) if v.iter().any(is_daemon_43) => {
                features = features.with(Feature::DaemonMulticastSettings);
            }
            _ => {}
        }
    }
    features
}

/// Whether a daemon attribute is one of those added in 4.3.
fn is_daemon_43(a: &DaemonAttribute) -> bool {
    !matches!(
        a,
        DaemonAttribute::State(_)
            | DaemonAttribute::Interface(_)
            | DaemonAttribute::SyncId(_)
            | DaemonAttribute::Other(_)
    )
}

/// The user-settable service flags; the others (HASHED, unknown bits) are the kernel's.
const USER_FLAGS: u32 = ServiceFlags::PERSISTENT
    | ServiceFlags::ONEPACKET
    | ServiceFlags::SCHED1
    | ServiceFlags::SCHED2
    | ServiceFlags::SCHED3;

/// A `NEW_SERVICE` message shaped like the kernel's reply for a kernel with `features`:
/// 16-byte address, flags with an all-ones mask (user flags from `entry.service`, the others
/// from `entry.flags`), `STATS` always and `STATS64` from 4.1.
pub fn service_reply(entry: &ServiceEntry, features: &KernelFeatures) -> IpvsMessage {
    let s = &entry.service;
    let family = s.key.family();
    let mut attrs = vec![ServiceAttribute::AddressFamily(family.number())];
    match s.key {
        ServiceKey::Fwmark { mark, .. } => attrs.push(ServiceAttribute::Fwmark(mark.get())),
        ServiceKey::Tuple {
            protocol,
            addr,
            port,
        } => {
            attrs.push(ServiceAttribute::Protocol(protocol.number()));
            attrs.push(ServiceAttribute::Address(RawAddress::padded(addr)));
            attrs.push(ServiceAttribute::Port(port));
        }
    }
    attrs.push(ServiceAttribute::SchedulerName(
        s.scheduler.name().to_owned(),
    ));
    if let Some(pe) = &s.persistence_engine {
        attrs.push(ServiceAttribute::PersistenceEngine(pe.as_str().to_owned()));
    }
    let flags = service_flags(s) | (entry.flags.0 & !USER_FLAGS);
    attrs.push(ServiceAttribute::Flags {
        flags,
        mask: u32::MAX,
    });
    let (timeout, netmask) = match s.persistence {
        Some(p) => (p.timeout_secs, p.netmask),
        None => (0, PersistenceNetmask::host(family)),
    };
    attrs.push(ServiceAttribute::Timeout(timeout));
    attrs.push(ServiceAttribute::Netmask(netmask_bytes(netmask)));
    attrs.push(ServiceAttribute::Stats(stats32_attributes(&entry.stats)));
    if features.supports(Feature::Stats64) {
        attrs.push(ServiceAttribute::Stats64(stats64_attributes(&entry.stats)));
    }
    IpvsMessage::new(
        IpvsCommand::NewService,
        vec![CommandAttribute::Service(attrs)],
    )
}

/// A `NEW_DEST` message shaped like the kernel's reply for a kernel with `features`:
/// 16-byte address, tunnel attributes from 5.2/5.3 (zero for other methods), `ADDR_FAMILY`
/// when `entry.reported_family` is set, `STATS` always and `STATS64` from 4.1.
pub fn destination_reply(entry: &DestinationEntry, features: &KernelFeatures) -> IpvsMessage {
    let d = &entry.destination;
    let mut attrs = vec![
        DestinationAttribute::Address(RawAddress::padded(d.addr)),
        DestinationAttribute::Port(d.port),
        DestinationAttribute::ForwardingMethod(d.forwarding.method_number()),
        DestinationAttribute::Weight(d.weight.get()),
    ];
    let tunnel = match d.forwarding {
        Forwarding::Tunnel(t) => t,
        _ => Tunnel::Ipip,
    };
    if features.supports(Feature::TunnelGue) {
        attrs.push(DestinationAttribute::TunnelType(tunnel.type_number()));
        let port = match tunnel {
            Tunnel::Gue { port, .. } => port.get(),
            _ => 0,
        };
        attrs.push(DestinationAttribute::TunnelPort(port));
    }
    if features.supports(Feature::TunnelFlags) {
        attrs.push(DestinationAttribute::TunnelFlags(tunnel.encap_flags()));
    }
    attrs.extend([
        DestinationAttribute::UpperThreshold(d.thresholds.upper()),
        DestinationAttribute::LowerThreshold(d.thresholds.lower()),
        DestinationAttribute::ActiveConnections(entry.active_connections),
        DestinationAttribute::InactiveConnections(entry.inactive_connections),
        DestinationAttribute::PersistentConnections(entry.persistent_connections),
    ]);
    if entry.reported_family.is_some() {
        attrs.push(DestinationAttribute::AddressFamily(d.family().number()));
    }
    attrs.push(DestinationAttribute::Stats(stats32_attributes(
        &entry.stats,
    )));
    if features.supports(Feature::Stats64) {
        attrs.push(DestinationAttribute::Stats64(stats64_attributes(
            &entry.stats,
        )));
    }
    IpvsMessage::new(
        IpvsCommand::NewDest,
        vec![CommandAttribute::Destination(attrs)],
    )
}

/// A `NEW_DAEMON` message carrying `daemon` as a `GET_DAEMON` dump does (the 4.3 settings
/// that are `None` are left out).
pub fn daemon_reply(daemon: &SyncDaemon) -> IpvsMessage {
    let attrs = daemon_attributes_unchecked(daemon);
    IpvsMessage::new(
        IpvsCommand::NewDaemon,
        vec![CommandAttribute::Daemon(attrs)],
    )
}

/// The `SET_INFO` message answering `GET_INFO`.
pub fn info_reply(info: &Info) -> IpvsMessage {
    IpvsMessage::new(
        IpvsCommand::SetInfo,
        info_attributes(info)
            .into_iter()
            .map(CommandAttribute::Info)
            .collect(),
    )
}

/// The `SET_CONFIG` message answering `GET_CONFIG` (all three timeouts, `None` as 0).
pub fn config_reply(t: &Timeouts) -> IpvsMessage {
    let v = |x: Option<std::num::NonZeroU32>| x.map_or(0, |x| x.get());
    IpvsMessage::new(
        IpvsCommand::SetConfig,
        vec![
            CommandAttribute::TimeoutTcp(v(t.tcp)),
            CommandAttribute::TimeoutTcpFin(v(t.tcp_fin)),
            CommandAttribute::TimeoutUdp(v(t.udp)),
        ],
    )
}
