//! Small wire helpers shared by the attribute modules. Parsers check exact sizes and never
//! index out of bounds; emitters write through `zip`, so a wrong buffer size truncates
//! instead of panicking.

use netlink_packet_core::{DecodeError as NlDecodeError, NlaBuffer, NlasIterator, Parseable};

pub(crate) fn size_error(name: &str, expected: usize, got: usize) -> NlDecodeError {
    NlDecodeError::from(format!("{name}: expected {expected} bytes, got {got}"))
}

pub(crate) fn fixed<const N: usize>(name: &str, payload: &[u8]) -> Result<[u8; N], NlDecodeError> {
    <[u8; N]>::try_from(payload).map_err(|_| size_error(name, N, payload.len()))
}

pub(crate) fn parse_u8(name: &str, payload: &[u8]) -> Result<u8, NlDecodeError> {
    fixed::<1>(name, payload).map(|[b]| b)
}

pub(crate) fn parse_u16(name: &str, payload: &[u8]) -> Result<u16, NlDecodeError> {
    fixed(name, payload).map(u16::from_ne_bytes)
}

pub(crate) fn parse_be16(name: &str, payload: &[u8]) -> Result<u16, NlDecodeError> {
    fixed(name, payload).map(u16::from_be_bytes)
}

pub(crate) fn parse_u32(name: &str, payload: &[u8]) -> Result<u32, NlDecodeError> {
    fixed(name, payload).map(u32::from_ne_bytes)
}

/// A NUL-terminated string: the bytes before the first NUL (all of them if there is none).
pub(crate) fn parse_cstring(name: &str, payload: &[u8]) -> Result<String, NlDecodeError> {
    let end = payload
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(payload.len());
    let bytes = payload.get(..end).unwrap_or_default();
    String::from_utf8(bytes.to_vec())
        .map_err(|_| NlDecodeError::from(format!("{name}: not valid UTF-8")))
}

/// Parses every attribute nested in `payload`.
pub(crate) fn parse_nested<A>(name: &str, payload: &[u8]) -> Result<Vec<A>, NlDecodeError>
where
    A: for<'a> Parseable<NlaBuffer<&'a [u8]>>,
{
    NlasIterator::new(payload)
        .map(|nla| nla.and_then(|nla| A::parse(&nla)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NlDecodeError::from(format!("{name}: {e}")))
}

/// The attributes of a nest as `(type, value)` pairs, walked by hand: what
/// `netlink_packet_core::NlasIterator` yields, for the hot decoding paths (a listing walks
/// about thirty attributes per destination, and the generic iterator re-reads and re-checks
/// each header through calls that do not inline across crates). The type has its flag bits
/// (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`) cleared. A malformed header ends the walk with an
/// error.
pub(crate) struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Attributes<'a> {
    /// The attributes packed in `payload`.
    pub(crate) fn new(payload: &'a [u8]) -> Self {
        Self { rest: payload }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), NlDecodeError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        /// `NLA_TYPE_MASK`: the type without its two flag bits.
        const TYPE_MASK: u16 = 0x3fff;
        let rest = self.rest;
        if rest.is_empty() {
            return None;
        }
        let header = match rest.get(..4) {
            Some(&[l0, l1, t0, t1]) => Some((
                usize::from(u16::from_ne_bytes([l0, l1])),
                u16::from_ne_bytes([t0, t1]) & TYPE_MASK,
            )),
            _ => None,
        };
        let Some((len, kind)) = header.filter(|(len, _)| (4..=rest.len()).contains(len)) else {
            self.rest = &[];
            return Some(Err(NlDecodeError::from(format!(
                "attribute header invalid: {} bytes left, length field {}",
                rest.len(),
                rest.get(..2)
                    .map_or(0, |b| u16::from_ne_bytes([b[0], b[1]]))
            ))));
        };
        let value = rest.get(4..len).unwrap_or_default();
        self.rest = rest.get((len + 3) & !3..).unwrap_or_default();
        Some(Ok((kind, value)))
    }
}

/// Copies `bytes` into the start of `buf`.
pub(crate) fn write(buf: &mut [u8], bytes: &[u8]) {
    for (d, s) in buf.iter_mut().zip(bytes) {
        *d = *s;
    }
}

/// Writes `s` and its terminating NUL.
pub(crate) fn write_cstring(buf: &mut [u8], s: &str) {
    for (d, s) in buf
        .iter_mut()
        .zip(s.as_bytes().iter().chain(std::iter::once(&0)))
    {
        *d = *s;
    }
}
