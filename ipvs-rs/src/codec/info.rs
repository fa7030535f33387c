//! The attributes of the `GET_INFO` reply (command `SET_INFO`).
//!
//! Unlike every other reply they sit at the top level of the message, and their numbers
//! (`VERSION` 1, `CONN_TAB_SIZE` 2) collide with `IPVS_CMD_ATTR_SERVICE` and `_DEST`: the
//! message parser reads them as [`InfoAttribute`]s only for the `SET_INFO`/`GET_INFO` commands.

use netlink_packet_core::{DecodeError as NlDecodeError, DefaultNla, Nla, NlaBuffer, Parseable};

use super::DecodeError;
use super::constants::*;
use super::util::{parse_u32, write};
use crate::model::{Info, Version};

/// One attribute of the info reply (`IPVS_INFO_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoAttribute {
    /// `VERSION`: `0x00MMmmpp`.
    Version(u32),
    /// `CONN_TAB_SIZE`: buckets of the connection table.
    ConnectionTableSize(u32),
    /// Any attribute this crate does not know.
    Other(DefaultNla),
}

impl Nla for InfoAttribute {
    fn value_len(&self) -> usize {
        match self {
            Self::Version(_) | Self::ConnectionTableSize(_) => 4,
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Version(_) => IPVS_INFO_ATTR_VERSION,
            Self::ConnectionTableSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Self::Version(v) | Self::ConnectionTableSize(v) => write(buf, &v.to_ne_bytes()),
            Self::Other(nla) => nla.emit_value(buf),
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for InfoAttribute {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, NlDecodeError> {
        let p = buf.value();
        Ok(match buf.kind() {
            IPVS_INFO_ATTR_VERSION => Self::Version(parse_u32("IPVS_INFO_ATTR_VERSION", p)?),
            IPVS_INFO_ATTR_CONN_TAB_SIZE => {
                Self::ConnectionTableSize(parse_u32("IPVS_INFO_ATTR_CONN_TAB_SIZE", p)?)
            }
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The info attributes for `info`.
pub fn info_attributes(info: &Info) -> Vec<InfoAttribute> {
    vec![
        InfoAttribute::Version(info.version.code()),
        InfoAttribute::ConnectionTableSize(info.connection_table_size),
    ]
}

/// Decodes the info attributes; both are required.
pub fn decode_info_attributes<'a>(
    attrs: impl IntoIterator<Item = &'a InfoAttribute>,
) -> Result<Info, DecodeError> {
    let (mut version, mut size) = (None, None);
    for a in attrs {
        match a {
            InfoAttribute::Version(v) => version = Some(*v),
            InfoAttribute::ConnectionTableSize(v) => size = Some(*v),
            InfoAttribute::Other(_) => {}
        }
    }
    Ok(Info {
        version: Version::from_code(
            version.ok_or(DecodeError::MissingAttribute("IPVS_INFO_ATTR_VERSION"))?,
        ),
        connection_table_size: size.ok_or(DecodeError::MissingAttribute(
            "IPVS_INFO_ATTR_CONN_TAB_SIZE",
        ))?,
    })
}
