//! Timeouts: `SET_CONFIG` requests and `GET_CONFIG` replies (command `SET_CONFIG`).
//!
//! The three timeouts are top-level u32 attributes in seconds. In a request 0 (or an absent
//! attribute) keeps the kernel's current value, so only the timeouts that are `Some` are
//! sent; a reply carries all three.

use std::num::NonZeroU32;

use super::command::CommandAttribute;
use crate::model::Timeouts;

/// The attributes of a `SET_CONFIG` request: one per timeout that is set.
pub fn timeout_attributes(t: &Timeouts) -> Vec<CommandAttribute> {
    let mut attrs = Vec::new();
    if let Some(v) = t.tcp {
        attrs.push(CommandAttribute::TimeoutTcp(v.get()));
    }
    if let Some(v) = t.tcp_fin {
        attrs.push(CommandAttribute::TimeoutTcpFin(v.get()));
    }
    if let Some(v) = t.udp {
        attrs.push(CommandAttribute::TimeoutUdp(v.get()));
    }
    attrs
}

/// Decodes the timeouts of a message; absent or zero values are `None`.
pub fn decode_timeout_attributes<'a>(
    attrs: impl IntoIterator<Item = &'a CommandAttribute>,
) -> Timeouts {
    let mut t = Timeouts::default();
    for a in attrs {
        match a {
            CommandAttribute::TimeoutTcp(v) => t.tcp = NonZeroU32::new(*v),
            CommandAttribute::TimeoutTcpFin(v) => t.tcp_fin = NonZeroU32::new(*v),
            CommandAttribute::TimeoutUdp(v) => t.udp = NonZeroU32::new(*v),
            _ => {}
        }
    }
    t
}
