//! The service nest (`IPVS_CMD_ATTR_SERVICE`).
//!
//! A service is named by `AF` plus either `PROTOCOL` + `ADDR` + `PORT` or `FWMARK`. Adding or
//! editing one also needs `SCHED_NAME`, `FLAGS`, `TIMEOUT` and `NETMASK` (the kernel answers
//! EINVAL without any of them); `PE_NAME` is optional and editing without it removes the
//! engine. Byte orders: `PORT` is network order; `NETMASK` is the IPv4 mask in network order
//! or the IPv6 prefix length as a host-order u32. `FLAGS` is `struct ip_vs_flags` — the kernel
//! applies `(old & !mask) | (flags & mask)`, so the mask must always be sent; this crate sends
//! `0xffff_ffff` (as ipvsadm does) and never sets HASHED, which the kernel owns.

use std::net::Ipv4Addr;
use std::num::NonZeroU32;

use netlink_packet_core::{
    DecodeError as NlDecodeError, DefaultNla, NLA_F_NESTED, Nla, NlaBuffer, Parseable,
};

use super::address::RawAddress;
use super::constants::*;
use super::stats::{StatsAttribute, stats_from_attributes, stats_from_payload};
use super::util::{
    fixed, parse_be16, parse_cstring, parse_nested, parse_u16, parse_u32, write, write_cstring,
};
use super::{DecodeError, EncodeError};
use crate::model::{
    AddressFamily, Feature, Ipv6PrefixLen, KernelFeatures, Persistence, PersistenceEngine,
    PersistenceNetmask, Protocol, Scheduler, Service, ServiceEntry, ServiceFlags, ServiceKey,
    Stats,
};

/// One attribute of the service nest (`IPVS_SVC_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAttribute {
    /// `AF`: AF_INET or AF_INET6.
    AddressFamily(u16),
    /// `PROTOCOL`: the IPPROTO number.
    Protocol(u16),
    /// `ADDR`.
    Address(RawAddress),
    /// `PORT` (the value; sent in network order).
    Port(u16),
    /// `FWMARK`.
    Fwmark(u32),
    /// `SCHED_NAME` (sent NUL-terminated).
    SchedulerName(String),
    /// `FLAGS`: `struct ip_vs_flags`.
    Flags {
        /// The flag values.
        flags: u32,
        /// Which flags to change.
        mask: u32,
    },
    /// `TIMEOUT`: persistence timeout in seconds.
    Timeout(u32),
    /// `NETMASK`, as its 4 raw bytes (meaning depends on the family).
    Netmask([u8; 4]),
    /// `STATS`: the 32-bit statistics nest.
    Stats(Vec<StatsAttribute>),
    /// `PE_NAME` (sent NUL-terminated).
    PersistenceEngine(String),
    /// `STATS64`: the 64-bit statistics nest.
    Stats64(Vec<StatsAttribute>),
    /// Any attribute this crate does not know.
    Other(DefaultNla),
}

impl Nla for ServiceAttribute {
    fn value_len(&self) -> usize {
        match self {
            Self::AddressFamily(_) | Self::Protocol(_) | Self::Port(_) => 2,
            Self::Fwmark(_) | Self::Timeout(_) | Self::Netmask(_) => 4,
            Self::Address(a) => a.as_bytes().len(),
            Self::SchedulerName(s) | Self::PersistenceEngine(s) => s.len() + 1,
            Self::Flags { .. } => 8,
            Self::Stats(v) | Self::Stats64(v) => v.as_slice().buffer_len(),
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::AddressFamily(_) => IPVS_SVC_ATTR_AF,
            Self::Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            Self::Address(_) => IPVS_SVC_ATTR_ADDR,
            Self::Port(_) => IPVS_SVC_ATTR_PORT,
            Self::Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            Self::SchedulerName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            Self::Flags { .. } => IPVS_SVC_ATTR_FLAGS,
            Self::Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            Self::Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            Self::Stats(_) => IPVS_SVC_ATTR_STATS | NLA_F_NESTED,
            Self::PersistenceEngine(_) => IPVS_SVC_ATTR_PE_NAME,
            Self::Stats64(_) => IPVS_SVC_ATTR_STATS64 | NLA_F_NESTED,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Self::AddressFamily(v) | Self::Protocol(v) => write(buf, &v.to_ne_bytes()),
            Self::Port(v) => write(buf, &v.to_be_bytes()),
            Self::Fwmark(v) | Self::Timeout(v) => write(buf, &v.to_ne_bytes()),
            Self::Netmask(b) => write(buf, b),
            Self::Address(a) => write(buf, a.as_bytes()),
            Self::SchedulerName(s) | Self::PersistenceEngine(s) => write_cstring(buf, s),
            Self::Flags { flags, mask } => {
                write(buf, &flags.to_ne_bytes());
                write(buf.get_mut(4..).unwrap_or_default(), &mask.to_ne_bytes());
            }
            Self::Stats(v) | Self::Stats64(v) => v.as_slice().emit(buf),
            Self::Other(nla) => nla.emit_value(buf),
        }
    }
}

use netlink_packet_core::Emitable;

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for ServiceAttribute {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, NlDecodeError> {
        match Self::from_value(buf.kind(), buf.value())? {
            Some(attribute) => Ok(attribute),
            None => Ok(Self::Other(DefaultNla::parse(buf)?)),
        }
    }
}

impl ServiceAttribute {
    /// The attribute of type `kind` (flags cleared) with value `p`; `None` for a type this
    /// crate does not know (the caller keeps it as [`Self::Other`], or skips it).
    pub(crate) fn from_value(kind: u16, p: &[u8]) -> Result<Option<Self>, NlDecodeError> {
        Ok(Some(match kind {
            IPVS_SVC_ATTR_AF => Self::AddressFamily(parse_u16("IPVS_SVC_ATTR_AF", p)?),
            IPVS_SVC_ATTR_PROTOCOL => Self::Protocol(parse_u16("IPVS_SVC_ATTR_PROTOCOL", p)?),
            IPVS_SVC_ATTR_ADDR => Self::Address(RawAddress::parse("IPVS_SVC_ATTR_ADDR", p)?),
            IPVS_SVC_ATTR_PORT => Self::Port(parse_be16("IPVS_SVC_ATTR_PORT", p)?),
            IPVS_SVC_ATTR_FWMARK => Self::Fwmark(parse_u32("IPVS_SVC_ATTR_FWMARK", p)?),
            IPVS_SVC_ATTR_SCHED_NAME => {
                Self::SchedulerName(parse_cstring("IPVS_SVC_ATTR_SCHED_NAME", p)?)
            }
            IPVS_SVC_ATTR_FLAGS => {
                let b: [u8; 8] = fixed("IPVS_SVC_ATTR_FLAGS", p)?;
                let [f0, f1, f2, f3, m0, m1, m2, m3] = b;
                Self::Flags {
                    flags: u32::from_ne_bytes([f0, f1, f2, f3]),
                    mask: u32::from_ne_bytes([m0, m1, m2, m3]),
                }
            }
            IPVS_SVC_ATTR_TIMEOUT => Self::Timeout(parse_u32("IPVS_SVC_ATTR_TIMEOUT", p)?),
            IPVS_SVC_ATTR_NETMASK => Self::Netmask(fixed("IPVS_SVC_ATTR_NETMASK", p)?),
            IPVS_SVC_ATTR_STATS => Self::Stats(parse_nested("IPVS_SVC_ATTR_STATS", p)?),
            IPVS_SVC_ATTR_PE_NAME => {
                Self::PersistenceEngine(parse_cstring("IPVS_SVC_ATTR_PE_NAME", p)?)
            }
            IPVS_SVC_ATTR_STATS64 => Self::Stats64(parse_nested("IPVS_SVC_ATTR_STATS64", p)?),
            _ => return Ok(None),
        }))
    }
}

/// The attributes naming a service: `AF` and `PROTOCOL` + `ADDR` + `PORT`, or `AF` + `FWMARK`.
pub fn service_key_attributes(key: &ServiceKey) -> Vec<ServiceAttribute> {
    let mut attrs = Vec::with_capacity(4);
    push_service_key(key, &mut attrs);
    attrs
}

fn push_service_key(key: &ServiceKey, attrs: &mut Vec<ServiceAttribute>) {
    match key {
        ServiceKey::Tuple {
            protocol,
            addr,
            port,
        } => attrs.extend([
            ServiceAttribute::AddressFamily(AddressFamily::of(addr).number()),
            ServiceAttribute::Protocol(protocol.number()),
            ServiceAttribute::Address(RawAddress::compact(*addr)),
            ServiceAttribute::Port(*port),
        ]),
        ServiceKey::Fwmark { family, mark } => attrs.extend([
            ServiceAttribute::AddressFamily(family.number()),
            ServiceAttribute::Fwmark(mark.get()),
        ]),
    }
}

/// The 4 `NETMASK` bytes of a persistence netmask.
pub fn netmask_bytes(netmask: PersistenceNetmask) -> [u8; 4] {
    match netmask {
        PersistenceNetmask::V4(mask) => mask.octets(),
        PersistenceNetmask::V6(len) => u32::from(len.get()).to_ne_bytes(),
    }
}

/// The service flags (never HASHED) a service is sent with.
pub fn service_flags(service: &Service) -> u32 {
    let mut flags = service.scheduler.flags();
    if service.persistence.is_some() {
        flags |= ServiceFlags::PERSISTENT;
    }
    if service.one_packet {
        flags |= ServiceFlags::ONEPACKET;
    }
    flags
}

/// The full service nest for NEW_SERVICE / SET_SERVICE: the key, `SCHED_NAME`, `FLAGS` (with
/// the all-ones mask), `TIMEOUT`, `NETMASK` (the host netmask when not persistent) and
/// `PE_NAME` when set.
pub fn service_attributes(service: &Service) -> Result<Vec<ServiceAttribute>, EncodeError> {
    let family = service.key.family();
    let (timeout, netmask) = match service.persistence {
        Some(p) => {
            if p.netmask.family() != family {
                return Err(EncodeError::NetmaskFamilyMismatch {
                    service: family,
                    netmask: p.netmask.family(),
                });
            }
            (p.timeout_secs, p.netmask)
        }
        None => (0, PersistenceNetmask::host(family)),
    };
    // Room for the key, the settings and a persistence engine: one allocation.
    let mut attrs = Vec::with_capacity(9);
    push_service_key(&service.key, &mut attrs);
    attrs.push(ServiceAttribute::SchedulerName(
        service.scheduler.name().to_owned(),
    ));
    attrs.push(ServiceAttribute::Flags {
        flags: service_flags(service),
        mask: u32::MAX,
    });
    attrs.push(ServiceAttribute::Timeout(timeout));
    attrs.push(ServiceAttribute::Netmask(netmask_bytes(netmask)));
    if let Some(pe) = &service.persistence_engine {
        attrs.push(ServiceAttribute::PersistenceEngine(pe.as_str().to_owned()));
    }
    Ok(attrs)
}

fn family_of(attribute: &'static str, af: u16) -> Result<AddressFamily, DecodeError> {
    AddressFamily::from_number(af).ok_or(DecodeError::UnknownAddressFamily {
        attribute,
        family: af,
    })
}

/// Decodes the service nest of a `GET_SERVICE` reply.
pub fn decode_service_attributes(attrs: &[ServiceAttribute]) -> Result<ServiceEntry, DecodeError> {
    decode_service_nest(attrs, true)
}

/// Decodes the key of a service nest (`AF` and `FWMARK`, or `PROTOCOL` + `ADDR` + `PORT`).
pub fn decode_service_key(attrs: &[ServiceAttribute]) -> Result<ServiceKey, DecodeError> {
    let mut fields = ServiceFields::default();
    for a in attrs {
        fields.take_key(a);
    }
    fields.key()
}

/// Decodes a full service nest; statistics are required in replies only (zero otherwise).
pub(crate) fn decode_service_nest(
    attrs: &[ServiceAttribute],
    require_stats: bool,
) -> Result<ServiceEntry, DecodeError> {
    let mut fields = ServiceFields::default();
    for a in attrs {
        fields.take(a);
    }
    fields.finish_nest(require_stats)
}

/// The fields of a service nest, gathered one attribute at a time: from parsed
/// [`ServiceAttribute`]s (what [`decode_service`](super::decode_service) does) or straight
/// from the nest's bytes, without an attribute list (what a
/// [`ListingMessage`](super::ListingMessage) does). Both end in [`ServiceFields::finish`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServiceFields {
    af: Option<u16>,
    protocol: Option<u16>,
    addr: Option<RawAddress>,
    port: Option<u16>,
    fwmark: Option<u32>,
    sched: Option<String>,
    flags: Option<u32>,
    timeout: Option<u32>,
    netmask: Option<[u8; 4]>,
    pe: Option<String>,
    stats: Option<Stats>,
    stats64: Option<Stats>,
}

impl ServiceFields {
    /// Takes one of the attributes that name the service; ignores the others.
    fn take_key(&mut self, a: &ServiceAttribute) {
        match a {
            ServiceAttribute::AddressFamily(v) => self.af = Some(*v),
            ServiceAttribute::Protocol(v) => self.protocol = Some(*v),
            ServiceAttribute::Address(v) => self.addr = Some(*v),
            ServiceAttribute::Port(v) => self.port = Some(*v),
            ServiceAttribute::Fwmark(v) => self.fwmark = Some(*v),
            _ => {}
        }
    }

    /// Takes one parsed attribute (a later one of a kind replaces an earlier one).
    fn take(&mut self, a: &ServiceAttribute) {
        match a {
            ServiceAttribute::SchedulerName(v) => self.sched = Some(v.clone()),
            ServiceAttribute::Flags { flags, .. } => self.flags = Some(*flags),
            ServiceAttribute::Timeout(v) => self.timeout = Some(*v),
            ServiceAttribute::Netmask(v) => self.netmask = Some(*v),
            ServiceAttribute::Stats(v) => self.stats = Some(stats_from_attributes(v)),
            ServiceAttribute::PersistenceEngine(v) => self.pe = Some(v.clone()),
            ServiceAttribute::Stats64(v) => self.stats64 = Some(stats_from_attributes(v)),
            key => self.take_key(key),
        }
    }

    /// Takes one attribute from the nest's bytes: the statistics nests are folded without a
    /// list of their attributes, and unknown attributes are skipped without a copy.
    pub(crate) fn take_nla(&mut self, kind: u16, value: &[u8]) -> Result<(), NlDecodeError> {
        match kind {
            IPVS_SVC_ATTR_STATS => {
                self.stats = Some(stats_from_payload("IPVS_SVC_ATTR_STATS", value)?);
            }
            IPVS_SVC_ATTR_STATS64 => {
                self.stats64 = Some(stats_from_payload("IPVS_SVC_ATTR_STATS64", value)?);
            }
            _ => {
                if let Some(a) = ServiceAttribute::from_value(kind, value)? {
                    self.take(&a);
                }
            }
        }
        Ok(())
    }

    /// What the attributes taken prove the kernel supports, as
    /// [`observe_features`](super::observe_features) learns it from a parsed reply.
    pub fn features(&self) -> KernelFeatures {
        if self.stats64.is_some() {
            KernelFeatures::baseline().with(Feature::Stats64)
        } else {
            KernelFeatures::baseline()
        }
    }

    /// The service's key, checked.
    fn key(&self) -> Result<ServiceKey, DecodeError> {
        let family = family_of(
            "IPVS_SVC_ATTR_AF",
            self.af
                .ok_or(DecodeError::MissingAttribute("IPVS_SVC_ATTR_AF"))?,
        )?;
        Ok(match self.fwmark.and_then(NonZeroU32::new) {
            Some(mark) => ServiceKey::Fwmark { family, mark },
            None => {
                let protocol = self
                    .protocol
                    .ok_or(DecodeError::MissingAttribute("IPVS_SVC_ATTR_PROTOCOL"))?;
                let addr = self
                    .addr
                    .ok_or(DecodeError::MissingAttribute("IPVS_SVC_ATTR_ADDR"))?;
                let port = self
                    .port
                    .ok_or(DecodeError::MissingAttribute("IPVS_SVC_ATTR_PORT"))?;
                ServiceKey::Tuple {
                    protocol: Protocol::from_number(protocol),
                    addr: addr.to_ip(family, "IPVS_SVC_ATTR_ADDR")?,
                    port,
                }
            }
        })
    }

    /// The service of a reply, checked as [`decode_service`](super::decode_service) checks it.
    pub fn finish(self) -> Result<ServiceEntry, DecodeError> {
        self.finish_nest(true)
    }

    /// The service, checked; statistics are required in replies only (zero otherwise).
    fn finish_nest(self, require_stats: bool) -> Result<ServiceEntry, DecodeError> {
        let key = self.key()?;
        let family = key.family();
        let Self {
            sched,
            flags,
            timeout,
            netmask,
            pe,
            stats,
            stats64,
            ..
        } = self;
        let sched = sched.as_deref();
        let pe = pe.as_deref();
        let flags = flags.ok_or(DecodeError::MissingAttribute("IPVS_SVC_ATTR_FLAGS"))?;
        let sched = sched.ok_or(DecodeError::MissingAttribute("IPVS_SVC_ATTR_SCHED_NAME"))?;
        let scheduler = Scheduler::from_name_and_flags(sched, flags).map_err(|source| {
            DecodeError::InvalidName {
                attribute: "IPVS_SVC_ATTR_SCHED_NAME",
                source,
            }
        })?;
        let persistence = if flags & ServiceFlags::PERSISTENT != 0 {
            let timeout_secs =
                timeout.ok_or(DecodeError::MissingAttribute("IPVS_SVC_ATTR_TIMEOUT"))?;
            let raw = netmask.ok_or(DecodeError::MissingAttribute("IPVS_SVC_ATTR_NETMASK"))?;
            let netmask = match family {
                AddressFamily::Ipv4 => PersistenceNetmask::V4(Ipv4Addr::from(raw)),
                AddressFamily::Ipv6 => {
                    let len = u32::from_ne_bytes(raw);
                    let invalid = DecodeError::InvalidValue {
                        attribute: "IPVS_SVC_ATTR_NETMASK",
                        value: u64::from(len),
                    };
                    let len = u8::try_from(len).map_err(|_| invalid)?;
                    PersistenceNetmask::V6(Ipv6PrefixLen::new(len).map_err(|_| {
                        DecodeError::InvalidValue {
                            attribute: "IPVS_SVC_ATTR_NETMASK",
                            value: u64::from(len),
                        }
                    })?)
                }
            };
            Some(Persistence {
                timeout_secs,
                netmask,
            })
        } else {
            None
        };
        let persistence_engine = match pe {
            Some(name) if !name.is_empty() => Some(PersistenceEngine::new(name).map_err(
                |source| DecodeError::InvalidName {
                    attribute: "IPVS_SVC_ATTR_PE_NAME",
                    source,
                },
            )?),
            _ => None,
        };
        let stats = match (stats64, stats) {
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) if require_stats => {
                return Err(DecodeError::MissingAttribute("IPVS_SVC_ATTR_STATS"));
            }
            (None, None) => Default::default(),
        };
        Ok(ServiceEntry {
            service: Service {
                key,
                scheduler,
                persistence,
                one_packet: flags & ServiceFlags::ONEPACKET != 0,
                persistence_engine,
            },
            flags: ServiceFlags(flags),
            stats,
        })
    }
}
