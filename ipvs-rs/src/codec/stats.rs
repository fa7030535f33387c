//! Statistics nests: `IPVS_SVC_ATTR_STATS(64)` and `IPVS_DEST_ATTR_STATS(64)`.
//!
//! Both nests hold the same `IPVS_STATS_ATTR_*` attributes. In the old `STATS` nest every
//! counter is a u32 except INBYTES/OUTBYTES (u64); in `STATS64` (4.1+) all are u64. The
//! kernel may insert `IPVS_STATS_ATTR_PAD` (an empty attribute) to align 64-bit values; it
//! lands in [`StatsAttribute::Other`]. Decoding prefers `STATS64` and falls back to `STATS`.

use netlink_packet_core::{DecodeError as NlDecodeError, DefaultNla, Nla, NlaBuffer, Parseable};

use super::constants::*;
use super::util::{Attributes, fixed, write};
use crate::model::{Rates, Stats};

/// A counter: 4 or 8 bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// A 32-bit counter (the old `STATS` nest).
    U32(u32),
    /// A 64-bit counter.
    U64(u64),
}

impl Counter {
    /// The value, widened.
    pub fn get(self) -> u64 {
        match self {
            Self::U32(v) => u64::from(v),
            Self::U64(v) => v,
        }
    }

    fn len(self) -> usize {
        match self {
            Self::U32(_) => 4,
            Self::U64(_) => 8,
        }
    }

    fn emit(self, buf: &mut [u8]) {
        match self {
            Self::U32(v) => write(buf, &v.to_ne_bytes()),
            Self::U64(v) => write(buf, &v.to_ne_bytes()),
        }
    }

    fn parse(name: &str, payload: &[u8]) -> Result<Self, NlDecodeError> {
        match payload.len() {
            4 => fixed(name, payload).map(|b| Self::U32(u32::from_ne_bytes(b))),
            _ => fixed(name, payload).map(|b| Self::U64(u64::from_ne_bytes(b))),
        }
    }
}

/// One attribute of a statistics nest (`IPVS_STATS_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsAttribute {
    /// `CONNS`: connections scheduled.
    Connections(Counter),
    /// `INPKTS`: packets in.
    InPackets(Counter),
    /// `OUTPKTS`: packets out.
    OutPackets(Counter),
    /// `INBYTES`: bytes in.
    InBytes(Counter),
    /// `OUTBYTES`: bytes out.
    OutBytes(Counter),
    /// `CPS`: connection rate.
    Cps(Counter),
    /// `INPPS`: packet-in rate.
    InPps(Counter),
    /// `OUTPPS`: packet-out rate.
    OutPps(Counter),
    /// `INBPS`: byte-in rate.
    InBps(Counter),
    /// `OUTBPS`: byte-out rate.
    OutBps(Counter),
    /// Anything else, including `PAD`.
    Other(DefaultNla),
}

impl StatsAttribute {
    fn counter(&self) -> Option<(u16, Counter)> {
        Some(match *self {
            Self::Connections(c) => (IPVS_STATS_ATTR_CONNS, c),
            Self::InPackets(c) => (IPVS_STATS_ATTR_INPKTS, c),
            Self::OutPackets(c) => (IPVS_STATS_ATTR_OUTPKTS, c),
            Self::InBytes(c) => (IPVS_STATS_ATTR_INBYTES, c),
            Self::OutBytes(c) => (IPVS_STATS_ATTR_OUTBYTES, c),
            Self::Cps(c) => (IPVS_STATS_ATTR_CPS, c),
            Self::InPps(c) => (IPVS_STATS_ATTR_INPPS, c),
            Self::OutPps(c) => (IPVS_STATS_ATTR_OUTPPS, c),
            Self::InBps(c) => (IPVS_STATS_ATTR_INBPS, c),
            Self::OutBps(c) => (IPVS_STATS_ATTR_OUTBPS, c),
            Self::Other(_) => return None,
        })
    }
}

impl Nla for StatsAttribute {
    fn value_len(&self) -> usize {
        match self {
            Self::Other(nla) => nla.value_len(),
            s => s.counter().map_or(0, |(_, c)| c.len()),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Other(nla) => nla.kind(),
            s => s.counter().map_or(0, |(k, _)| k),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Other(nla) => nla.emit_value(buffer),
            s => {
                if let Some((_, c)) = s.counter() {
                    c.emit(buffer)
                }
            }
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for StatsAttribute {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, NlDecodeError> {
        let p = buf.value();
        Ok(match buf.kind() {
            IPVS_STATS_ATTR_CONNS => Self::Connections(Counter::parse("IPVS_STATS_ATTR_CONNS", p)?),
            IPVS_STATS_ATTR_INPKTS => Self::InPackets(Counter::parse("IPVS_STATS_ATTR_INPKTS", p)?),
            IPVS_STATS_ATTR_OUTPKTS => {
                Self::OutPackets(Counter::parse("IPVS_STATS_ATTR_OUTPKTS", p)?)
            }
            IPVS_STATS_ATTR_INBYTES => Self::InBytes(Counter::parse("IPVS_STATS_ATTR_INBYTES", p)?),
            IPVS_STATS_ATTR_OUTBYTES => {
                Self::OutBytes(Counter::parse("IPVS_STATS_ATTR_OUTBYTES", p)?)
            }
            IPVS_STATS_ATTR_CPS => Self::Cps(Counter::parse("IPVS_STATS_ATTR_CPS", p)?),
            IPVS_STATS_ATTR_INPPS => Self::InPps(Counter::parse("IPVS_STATS_ATTR_INPPS", p)?),
            IPVS_STATS_ATTR_OUTPPS => Self::OutPps(Counter::parse("IPVS_STATS_ATTR_OUTPPS", p)?),
            IPVS_STATS_ATTR_INBPS => Self::InBps(Counter::parse("IPVS_STATS_ATTR_INBPS", p)?),
            IPVS_STATS_ATTR_OUTBPS => Self::OutBps(Counter::parse("IPVS_STATS_ATTR_OUTBPS", p)?),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Folds a statistics nest into [`Stats`]; absent counters are 0.
pub fn stats_from_attributes(attrs: &[StatsAttribute]) -> Stats {
    let mut s = Stats::default();
    for (kind, counter) in attrs.iter().filter_map(StatsAttribute::counter) {
        if let Some(field) = counter_field(&mut s, kind) {
            *field = counter.get();
        }
    }
    s
}

/// Folds a statistics nest straight from its bytes, as [`stats_from_attributes`] folds the
/// same nest parsed, without building the list of attributes (a listing decodes two such
/// nests per destination). Attributes it does not know (the kernel's `PAD`) are skipped.
pub(crate) fn stats_from_payload(name: &str, payload: &[u8]) -> Result<Stats, NlDecodeError> {
    let mut s = Stats::default();
    for attribute in Attributes::new(payload) {
        let (kind, value) = attribute.map_err(|e| NlDecodeError::from(format!("{name}: {e}")))?;
        if let Some(field) = counter_field(&mut s, kind) {
            *field = Counter::parse(name, value)
                .map_err(|e| NlDecodeError::from(format!("{name}: {e}")))?
                .get();
        }
    }
    Ok(s)
}

/// Where counter `kind` (`IPVS_STATS_ATTR_*`) goes in [`Stats`].
fn counter_field(s: &mut Stats, kind: u16) -> Option<&mut u64> {
    Some(match kind {
        IPVS_STATS_ATTR_CONNS => &mut s.connections,
        IPVS_STATS_ATTR_INPKTS => &mut s.packets_in,
        IPVS_STATS_ATTR_OUTPKTS => &mut s.packets_out,
        IPVS_STATS_ATTR_INBYTES => &mut s.bytes_in,
        IPVS_STATS_ATTR_OUTBYTES => &mut s.bytes_out,
        IPVS_STATS_ATTR_CPS => &mut s.rates.cps,
        IPVS_STATS_ATTR_INPPS => &mut s.rates.in_pps,
        IPVS_STATS_ATTR_OUTPPS => &mut s.rates.out_pps,
        IPVS_STATS_ATTR_INBPS => &mut s.rates.in_bps,
        IPVS_STATS_ATTR_OUTBPS => &mut s.rates.out_bps,
        _ => return None,
    })
}

/// The `STATS64` nest for `stats`.
pub fn stats64_attributes(s: &Stats) -> Vec<StatsAttribute> {
    let Rates {
        cps,
        in_pps,
        out_pps,
        in_bps,
        out_bps,
    } = s.rates;
    use Counter::U64;
    vec![
        StatsAttribute::Connections(U64(s.connections)),
        StatsAttribute::InPackets(U64(s.packets_in)),
        StatsAttribute::OutPackets(U64(s.packets_out)),
        StatsAttribute::InBytes(U64(s.bytes_in)),
        StatsAttribute::OutBytes(U64(s.bytes_out)),
        StatsAttribute::Cps(U64(cps)),
        StatsAttribute::InPps(U64(in_pps)),
        StatsAttribute::OutPps(U64(out_pps)),
        StatsAttribute::InBps(U64(in_bps)),
        StatsAttribute::OutBps(U64(out_bps)),
    ]
}

/// The old 32-bit `STATS` nest for `stats`, truncating like the kernel does (only the byte
/// counters stay 64-bit).
pub fn stats32_attributes(s: &Stats) -> Vec<StatsAttribute> {
    let t = |v: u64| Counter::U32(v as u32);
    vec![
        StatsAttribute::Connections(t(s.connections)),
        StatsAttribute::InPackets(t(s.packets_in)),
        StatsAttribute::OutPackets(t(s.packets_out)),
        StatsAttribute::InBytes(Counter::U64(s.bytes_in)),
        StatsAttribute::OutBytes(Counter::U64(s.bytes_out)),
        StatsAttribute::Cps(t(s.rates.cps)),
        StatsAttribute::InPps(t(s.rates.in_pps)),
        StatsAttribute::OutPps(t(s.rates.out_pps)),
        StatsAttribute::InBps(t(s.rates.in_bps)),
        StatsAttribute::OutBps(t(s.rates.out_bps)),
    ]
}
