//! The destination nest (`IPVS_CMD_ATTR_DEST`).
//!
//! A destination is named by `ADDR` + `PORT` (network order) within the service sent beside
//! it. Adding or editing one needs `FWD_METHOD`, `WEIGHT`, `U_THRESH` and `L_THRESH`; this
//! crate always sends all four (a public client that left the thresholds out saw its
//! destinations acknowledged but never programmed). `ADDR_FAMILY` (3.18+) is sent whenever
//! the kernel knows it, and is required for a destination of another family than its service,
//! which only tunnel forwarding allows. Tunnels add `TUN_TYPE` (u8) and, for GUE, `TUN_PORT`
//! (network order) since 5.2, and `TUN_FLAGS` (u16) since 5.3. Replies also carry the
//! connection counts and the statistics nests, and always a 16-byte address.

use std::num::NonZeroU16;

use netlink_packet_core::{
    DecodeError as NlDecodeError, DefaultNla, Emitable, NLA_F_NESTED, Nla, NlaBuffer, Parseable,
};

use super::address::RawAddress;
use super::constants::*;
use super::stats::{StatsAttribute, stats_from_attributes, stats_from_payload};
use super::util::{parse_be16, parse_nested, parse_u8, parse_u16, parse_u32, write};
use super::{DecodeError, EncodeError};
use crate::model::{
    AddressFamily, Destination, DestinationEntry, DestinationKey, Feature, Forwarding,
    KernelFeatures, Stats, Thresholds, Tunnel, Weight,
};

/// One attribute of the destination nest (`IPVS_DEST_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationAttribute {
    /// `ADDR`.
    Address(RawAddress),
    /// `PORT` (the value; sent in network order).
    Port(u16),
    /// `FWD_METHOD`: an `IP_VS_CONN_F_*` number.
    ForwardingMethod(u32),
    /// `WEIGHT`.
    Weight(u32),
    /// `U_THRESH`.
    UpperThreshold(u32),
    /// `L_THRESH`.
    LowerThreshold(u32),
    /// `ACTIVE_CONNS` (replies).
    ActiveConnections(u32),
    /// `INACT_CONNS` (replies).
    InactiveConnections(u32),
    /// `PERSIST_CONNS` (replies).
    PersistentConnections(u32),
    /// `STATS`: the 32-bit statistics nest.
    Stats(Vec<StatsAttribute>),
    /// `ADDR_FAMILY` (3.18+).
    AddressFamily(u16),
    /// `STATS64`: the 64-bit statistics nest (4.1+).
    Stats64(Vec<StatsAttribute>),
    /// `TUN_TYPE` (5.2+).
    TunnelType(u8),
    /// `TUN_PORT` (the value; sent in network order; 5.2+).
    TunnelPort(u16),
    /// `TUN_FLAGS` (5.3+).
    TunnelFlags(u16),
    /// Any attribute this crate does not know.
    Other(DefaultNla),
}

impl Nla for DestinationAttribute {
    fn value_len(&self) -> usize {
        match self {
            Self::Address(a) => a.as_bytes().len(),
            Self::Port(_) | Self::AddressFamily(_) | Self::TunnelPort(_) | Self::TunnelFlags(_) => {
                2
            }
            Self::TunnelType(_) => 1,
            Self::ForwardingMethod(_)
            | Self::Weight(_)
            | Self::UpperThreshold(_)
            | Self::LowerThreshold(_)
            | Self::ActiveConnections(_)
            | Self::InactiveConnections(_)
            | Self::PersistentConnections(_) => 4,
            Self::Stats(v) | Self::Stats64(v) => v.as_slice().buffer_len(),
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Address(_) => IPVS_DEST_ATTR_ADDR,
            Self::Port(_) => IPVS_DEST_ATTR_PORT,
            Self::ForwardingMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            Self::Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            Self::UpperThreshold(_) => IPVS_DEST_ATTR_U_THRESH,
            Self::LowerThreshold(_) => IPVS_DEST_ATTR_L_THRESH,
            Self::ActiveConnections(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            Self::InactiveConnections(_) => IPVS_DEST_ATTR_INACT_CONNS,
            Self::PersistentConnections(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            Self::Stats(_) => IPVS_DEST_ATTR_STATS | NLA_F_NESTED,
            Self::AddressFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            Self::Stats64(_) => IPVS_DEST_ATTR_STATS64 | NLA_F_NESTED,
            Self::TunnelType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            Self::TunnelPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            Self::TunnelFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Self::Address(a) => write(buf, a.as_bytes()),
            Self::Port(v) | Self::TunnelPort(v) => write(buf, &v.to_be_bytes()),
            Self::AddressFamily(v) | Self::TunnelFlags(v) => write(buf, &v.to_ne_bytes()),
            Self::TunnelType(v) => write(buf, &[*v]),
            Self::ForwardingMethod(v)
            | Self::Weight(v)
            | Self::UpperThreshold(v)
            | Self::LowerThreshold(v)
            | Self::ActiveConnections(v)
            | Self::InactiveConnections(v)
            | Self::PersistentConnections(v) => write(buf, &v.to_ne_bytes()),
            Self::Stats(v) | Self::Stats64(v) => v.as_slice().emit(buf),
            Self::Other(nla) => nla.emit_value(buf),
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for DestinationAttribute {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, NlDecodeError> {
        match Self::from_value(buf.kind(), buf.value())? {
            Some(attribute) => Ok(attribute),
            None => Ok(Self::Other(DefaultNla::parse(buf)?)),
        }
    }
}

impl DestinationAttribute {
    /// The attribute of type `kind` (flags cleared) with value `p`; `None` for a type this
    /// crate does not know (the caller keeps it as [`Self::Other`], or skips it).
    pub(crate) fn from_value(kind: u16, p: &[u8]) -> Result<Option<Self>, NlDecodeError> {
        Ok(Some(match kind {
            IPVS_DEST_ATTR_ADDR => Self::Address(RawAddress::parse("IPVS_DEST_ATTR_ADDR", p)?),
            IPVS_DEST_ATTR_PORT => Self::Port(parse_be16("IPVS_DEST_ATTR_PORT", p)?),
            IPVS_DEST_ATTR_FWD_METHOD => {
                Self::ForwardingMethod(parse_u32("IPVS_DEST_ATTR_FWD_METHOD", p)?)
            }
            IPVS_DEST_ATTR_WEIGHT => Self::Weight(parse_u32("IPVS_DEST_ATTR_WEIGHT", p)?),
            IPVS_DEST_ATTR_U_THRESH => {
                Self::UpperThreshold(parse_u32("IPVS_DEST_ATTR_U_THRESH", p)?)
            }
            IPVS_DEST_ATTR_L_THRESH => {
                Self::LowerThreshold(parse_u32("IPVS_DEST_ATTR_L_THRESH", p)?)
            }
            IPVS_DEST_ATTR_ACTIVE_CONNS => {
                Self::ActiveConnections(parse_u32("IPVS_DEST_ATTR_ACTIVE_CONNS", p)?)
            }
            IPVS_DEST_ATTR_INACT_CONNS => {
                Self::InactiveConnections(parse_u32("IPVS_DEST_ATTR_INACT_CONNS", p)?)
            }
            IPVS_DEST_ATTR_PERSIST_CONNS => {
                Self::PersistentConnections(parse_u32("IPVS_DEST_ATTR_PERSIST_CONNS", p)?)
            }
            IPVS_DEST_ATTR_STATS => Self::Stats(parse_nested("IPVS_DEST_ATTR_STATS", p)?),
            IPVS_DEST_ATTR_ADDR_FAMILY => {
                Self::AddressFamily(parse_u16("IPVS_DEST_ATTR_ADDR_FAMILY", p)?)
            }
            IPVS_DEST_ATTR_STATS64 => Self::Stats64(parse_nested("IPVS_DEST_ATTR_STATS64", p)?),
            IPVS_DEST_ATTR_TUN_TYPE => Self::TunnelType(parse_u8("IPVS_DEST_ATTR_TUN_TYPE", p)?),
            IPVS_DEST_ATTR_TUN_PORT => Self::TunnelPort(parse_be16("IPVS_DEST_ATTR_TUN_PORT", p)?),
            IPVS_DEST_ATTR_TUN_FLAGS => {
                Self::TunnelFlags(parse_u16("IPVS_DEST_ATTR_TUN_FLAGS", p)?)
            }
            _ => return Ok(None),
        }))
    }
}

/// Checks that a destination of `dest` family may be sent to a service of `service` family:
/// same family, or a kernel with `ADDR_FAMILY` (and, unless deleting, tunnel forwarding).
fn check_family(
    service: AddressFamily,
    dest: AddressFamily,
    forwarding: Option<&Forwarding>,
    features: &KernelFeatures,
) -> Result<(), EncodeError> {
    if service == dest {
        return Ok(());
    }
    if let Some(f) = forwarding
        && !matches!(f, Forwarding::Tunnel(_))
    {
        return Err(EncodeError::MixedFamilyNeedsTunnel {
            service,
            destination: dest,
        });
    }
    if !features.supports(Feature::DestinationAddressFamily) {
        return Err(EncodeError::Unsupported {
            feature: Feature::DestinationAddressFamily,
        });
    }
    Ok(())
}

/// The destination nest naming `key` (DEL_DEST): `ADDR`, `PORT` and, when the kernel knows
/// it, `ADDR_FAMILY`.
pub fn destination_key_attributes(
    service_family: AddressFamily,
    key: &DestinationKey,
    features: &KernelFeatures,
) -> Result<Vec<DestinationAttribute>, EncodeError> {
    let family = AddressFamily::of(&key.addr);
    check_family(service_family, family, None, features)?;
    let mut attrs = vec![
        DestinationAttribute::Address(RawAddress::compact(key.addr)),
        DestinationAttribute::Port(key.port),
    ];
    if features.supports(Feature::DestinationAddressFamily) {
        attrs.push(DestinationAttribute::AddressFamily(family.number()));
    }
    Ok(attrs)
}

/// The tunnel attributes for `tunnel`, refusing what `features` lacks.
fn tunnel_attributes(
    tunnel: &Tunnel,
    features: &KernelFeatures,
) -> Result<Vec<DestinationAttribute>, EncodeError> {
    let need = |f: Feature| {
        if features.supports(f) {
            Ok(())
        } else {
            Err(EncodeError::Unsupported { feature: f })
        }
    };
    let mut attrs = Vec::new();
    match tunnel {
        Tunnel::Ipip => {}
        Tunnel::Gue { .. } => need(Feature::TunnelGue)?,
        Tunnel::Gre { .. } => need(Feature::TunnelGre)?,
    }
    if features.supports(Feature::TunnelGue) {
        attrs.push(DestinationAttribute::TunnelType(tunnel.type_number()));
    }
    if let Tunnel::Gue { port, .. } = tunnel {
        attrs.push(DestinationAttribute::TunnelPort(port.get()));
    }
    let flags = tunnel.encap_flags();
    if features.supports(Feature::TunnelFlags) {
        if !matches!(tunnel, Tunnel::Ipip) {
            attrs.push(DestinationAttribute::TunnelFlags(flags));
        }
    } else if flags != Tunnel::FLAG_NOCSUM {
        need(Feature::TunnelFlags)?;
    }
    Ok(attrs)
}

/// The full destination nest for NEW_DEST / SET_DEST: `ADDR`, `PORT`, `FWD_METHOD`,
/// `WEIGHT`, `U_THRESH`, `L_THRESH`, then `ADDR_FAMILY` and the tunnel attributes as the
/// kernel supports them.
pub fn destination_attributes(
    service_family: AddressFamily,
    dest: &Destination,
    features: &KernelFeatures,
) -> Result<Vec<DestinationAttribute>, EncodeError> {
    let family = dest.family();
    check_family(service_family, family, Some(&dest.forwarding), features)?;
    // Room for the settings, the family and the tunnel's: one allocation.
    let mut attrs = Vec::with_capacity(10);
    attrs.extend([
        DestinationAttribute::Address(RawAddress::compact(dest.addr)),
        DestinationAttribute::Port(dest.port),
        DestinationAttribute::ForwardingMethod(dest.forwarding.method_number()),
        DestinationAttribute::Weight(dest.weight.get()),
        DestinationAttribute::UpperThreshold(dest.thresholds.upper()),
        DestinationAttribute::LowerThreshold(dest.thresholds.lower()),
    ]);
    if features.supports(Feature::DestinationAddressFamily) {
        attrs.push(DestinationAttribute::AddressFamily(family.number()));
    }
    if let Forwarding::Tunnel(t) = &dest.forwarding {
        attrs.extend(tunnel_attributes(t, features)?);
    }
    Ok(attrs)
}

/// Decodes the destination nest of a `GET_DEST` reply. `service_family` is used when the
/// kernel (< 3.18) sends no `ADDR_FAMILY`.
pub fn decode_destination_attributes(
    attrs: &[DestinationAttribute],
    service_family: AddressFamily,
) -> Result<DestinationEntry, DecodeError> {
    decode_destination_nest(attrs, service_family, true)
}

/// Decodes the key of a destination nest (`ADDR`, `PORT`, `ADDR_FAMILY` or `service_family`).
pub fn decode_destination_key(
    attrs: &[DestinationAttribute],
    service_family: AddressFamily,
) -> Result<DestinationKey, DecodeError> {
    let (mut addr, mut port, mut af) = (None, None, None);
    for a in attrs {
        match a {
            DestinationAttribute::Address(v) => addr = Some(*v),
            DestinationAttribute::Port(v) => port = Some(*v),
            DestinationAttribute::AddressFamily(v) => af = Some(*v),
            _ => {}
        }
    }
    let family = match af {
        Some(f) => AddressFamily::from_number(f).ok_or(DecodeError::UnknownAddressFamily {
            attribute: "IPVS_DEST_ATTR_ADDR_FAMILY",
            family: f,
        })?,
        None => service_family,
    };
    Ok(DestinationKey {
        addr: addr
            .ok_or(DecodeError::MissingAttribute("IPVS_DEST_ATTR_ADDR"))?
            .to_ip(family, "IPVS_DEST_ATTR_ADDR")?,
        port: port.ok_or(DecodeError::MissingAttribute("IPVS_DEST_ATTR_PORT"))?,
    })
}

/// Decodes a full destination nest; statistics are required in replies only.
pub(crate) fn decode_destination_nest(
    attrs: &[DestinationAttribute],
    service_family: AddressFamily,
    require_stats: bool,
) -> Result<DestinationEntry, DecodeError> {
    let mut fields = DestinationFields::default();
    for a in attrs {
        fields.take(a);
    }
    fields.finish_nest(service_family, require_stats)
}

/// The fields of a destination nest, gathered one attribute at a time: from parsed
/// [`DestinationAttribute`]s (what [`decode_destination`](super::decode_destination) does) or
/// straight from the nest's bytes, without an attribute list (what a
/// [`ListingMessage`](super::ListingMessage) does: the listing's hot path). Both end in
/// [`DestinationFields::finish`], so they decode the same bytes the same way.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DestinationFields {
    addr: Option<RawAddress>,
    port: Option<u16>,
    fwd: Option<u32>,
    weight: Option<u32>,
    upper: Option<u32>,
    lower: Option<u32>,
    active: u32,
    inactive: u32,
    persistent: u32,
    af: Option<u16>,
    stats: Option<Stats>,
    stats64: Option<Stats>,
    tun_type: Option<u8>,
    tun_port: Option<u16>,
    tun_flags: Option<u16>,
}

impl DestinationFields {
    /// Takes one parsed attribute (a later one of a kind replaces an earlier one).
    fn take(&mut self, a: &DestinationAttribute) {
        match a {
            DestinationAttribute::Address(v) => self.addr = Some(*v),
            DestinationAttribute::Port(v) => self.port = Some(*v),
            DestinationAttribute::ForwardingMethod(v) => self.fwd = Some(*v),
            DestinationAttribute::Weight(v) => self.weight = Some(*v),
            DestinationAttribute::UpperThreshold(v) => self.upper = Some(*v),
            DestinationAttribute::LowerThreshold(v) => self.lower = Some(*v),
            DestinationAttribute::ActiveConnections(v) => self.active = *v,
            DestinationAttribute::InactiveConnections(v) => self.inactive = *v,
            DestinationAttribute::PersistentConnections(v) => self.persistent = *v,
            DestinationAttribute::Stats(v) => self.stats = Some(stats_from_attributes(v)),
            DestinationAttribute::AddressFamily(v) => self.af = Some(*v),
            DestinationAttribute::Stats64(v) => self.stats64 = Some(stats_from_attributes(v)),
            DestinationAttribute::TunnelType(v) => self.tun_type = Some(*v),
            DestinationAttribute::TunnelPort(v) => self.tun_port = Some(*v),
            DestinationAttribute::TunnelFlags(v) => self.tun_flags = Some(*v),
            DestinationAttribute::Other(_) => {}
        }
    }

    /// Takes one attribute from the nest's bytes: the statistics nests are folded without a
    /// list of their attributes, and unknown attributes are skipped without a copy.
    pub(crate) fn take_nla(&mut self, kind: u16, value: &[u8]) -> Result<(), NlDecodeError> {
        match kind {
            IPVS_DEST_ATTR_STATS => {
                self.stats = Some(stats_from_payload("IPVS_DEST_ATTR_STATS", value)?);
            }
            IPVS_DEST_ATTR_STATS64 => {
                self.stats64 = Some(stats_from_payload("IPVS_DEST_ATTR_STATS64", value)?);
            }
            _ => {
                if let Some(a) = DestinationAttribute::from_value(kind, value)? {
                    self.take(&a);
                }
            }
        }
        Ok(())
    }

    /// What the attributes taken prove the kernel supports, as
    /// [`observe_features`](super::observe_features) learns it from a parsed reply.
    pub fn features(&self) -> KernelFeatures {
        let mut features = KernelFeatures::baseline();
        if self.af.is_some() {
            features = features.with(Feature::DestinationAddressFamily);
        }
        if self.stats64.is_some() {
            features = features.with(Feature::Stats64);
        }
        if self.tun_type.is_some() {
            features = features.with(Feature::TunnelGue);
        }
        if self.tun_flags.is_some() {
            features = features.with(Feature::TunnelFlags).with(Feature::TunnelGre);
        }
        features
    }

    /// The destination of a reply, checked as [`decode_destination`](super::decode_destination)
    /// checks it. `service_family` is used when the kernel (< 3.18) sends no `ADDR_FAMILY`.
    pub fn finish(self, service_family: AddressFamily) -> Result<DestinationEntry, DecodeError> {
        self.finish_nest(service_family, true)
    }

    /// The destination, checked; statistics are required in replies only.
    fn finish_nest(
        self,
        service_family: AddressFamily,
        require_stats: bool,
    ) -> Result<DestinationEntry, DecodeError> {
        let Self {
            addr,
            port,
            fwd,
            weight,
            upper,
            lower,
            active,
            inactive,
            persistent,
            af,
            stats,
            stats64,
            tun_type,
            tun_port,
            tun_flags,
        } = self;
        let reported_family = af
            .map(|f| {
                AddressFamily::from_number(f).ok_or(DecodeError::UnknownAddressFamily {
                    attribute: "IPVS_DEST_ATTR_ADDR_FAMILY",
                    family: f,
                })
            })
            .transpose()?;
        let family = reported_family.unwrap_or(service_family);
        let addr = addr
            .ok_or(DecodeError::MissingAttribute("IPVS_DEST_ATTR_ADDR"))?
            .to_ip(family, "IPVS_DEST_ATTR_ADDR")?;
        let port = port.ok_or(DecodeError::MissingAttribute("IPVS_DEST_ATTR_PORT"))?;
        let fwd = fwd.ok_or(DecodeError::MissingAttribute("IPVS_DEST_ATTR_FWD_METHOD"))?;
        let forwarding = match fwd & IP_VS_CONN_F_FWD_MASK {
            IP_VS_CONN_F_MASQ => Forwarding::Masquerade,
            IP_VS_CONN_F_LOCALNODE => Forwarding::Local,
            IP_VS_CONN_F_DROUTE => Forwarding::DirectRouting,
            IP_VS_CONN_F_BYPASS => Forwarding::Bypass,
            IP_VS_CONN_F_TUNNEL => {
                let flags = tun_flags.unwrap_or(Tunnel::FLAG_NOCSUM);
                let checksum = flags & Tunnel::FLAG_CSUM != 0;
                Forwarding::Tunnel(match tun_type.unwrap_or(IP_VS_CONN_F_TUNNEL_TYPE_IPIP) {
                    IP_VS_CONN_F_TUNNEL_TYPE_IPIP => Tunnel::Ipip,
                    IP_VS_CONN_F_TUNNEL_TYPE_GUE => {
                        let port = tun_port
                            .ok_or(DecodeError::MissingAttribute("IPVS_DEST_ATTR_TUN_PORT"))?;
                        Tunnel::Gue {
                            port: NonZeroU16::new(port).ok_or(DecodeError::InvalidValue {
                                attribute: "IPVS_DEST_ATTR_TUN_PORT",
                                value: 0,
                            })?,
                            checksum,
                            remote_checksum: flags & Tunnel::FLAG_REMCSUM != 0,
                        }
                    }
                    IP_VS_CONN_F_TUNNEL_TYPE_GRE => Tunnel::Gre { checksum },
                    other => {
                        return Err(DecodeError::InvalidValue {
                            attribute: "IPVS_DEST_ATTR_TUN_TYPE",
                            value: u64::from(other),
                        });
                    }
                })
            }
            other => {
                return Err(DecodeError::InvalidValue {
                    attribute: "IPVS_DEST_ATTR_FWD_METHOD",
                    value: u64::from(other),
                });
            }
        };
        let weight = weight.ok_or(DecodeError::MissingAttribute("IPVS_DEST_ATTR_WEIGHT"))?;
        let weight = Weight::new(weight).map_err(|_| DecodeError::InvalidValue {
            attribute: "IPVS_DEST_ATTR_WEIGHT",
            value: u64::from(weight),
        })?;
        let upper = upper.ok_or(DecodeError::MissingAttribute("IPVS_DEST_ATTR_U_THRESH"))?;
        let lower = lower.ok_or(DecodeError::MissingAttribute("IPVS_DEST_ATTR_L_THRESH"))?;
        let thresholds = Thresholds::new(upper, lower).map_err(|_| DecodeError::InvalidValue {
            attribute: "IPVS_DEST_ATTR_L_THRESH",
            value: u64::from(lower),
        })?;
        let stats = match (stats64, stats) {
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) if require_stats => {
                return Err(DecodeError::MissingAttribute("IPVS_DEST_ATTR_STATS"));
            }
            (None, None) => Default::default(),
        };
        Ok(DestinationEntry {
            destination: Destination {
                addr,
                port,
                forwarding,
                weight,
                thresholds,
            },
            reported_family,
            active_connections: active,
            inactive_connections: inactive,
            persistent_connections: persistent,
            stats,
        })
    }
}
