//! Sans-IO encoding and decoding of IPVS generic-netlink messages.
//!
//! Three layers, each usable on its own:
//!
//! 1. **Attributes** — one enum per nest, mirroring `include/uapi/linux/ip_vs.h`:
//!    [`CommandAttribute`] (top level), [`ServiceAttribute`], [`DestinationAttribute`],
//!    [`DaemonAttribute`], [`StatsAttribute`], [`InfoAttribute`]. Each implements
//!    netlink-packet-core's `Nla` and `Parseable<NlaBuffer>`, and keeps unknown attributes in
//!    an `Other(DefaultNla)` variant so newer kernels do not break decoding.
//! 2. **Messages** — [`IpvsMessage`] (an [`IpvsCommand`] and its attributes) implements
//!    `GenlFamily` (`"IPVS"`, version 1), `Emitable` and `ParseableParametrized<[u8],
//!    GenlHeader>`, so it plugs into `NetlinkMessage<GenlMessage<IpvsMessage>>`.
//!    [`ListingMessage`] is the same payload for listings: service and destination replies are
//!    gathered into [`ServiceFields`] and [`DestinationFields`] as their bytes are walked,
//!    without attribute lists, then checked by the same code.
//! 3. **Model** — [`Operation::to_message`] and [`Request::to_message`] build requests from
//!    [`crate::model`] types; [`decode_service`], [`decode_destination`], [`decode_daemon`],
//!    [`decode_info`] and [`decode_timeouts`] turn replies back into them.
//!
//! What the kernel expects, in short:
//!
//! - Integers are host order except the service and destination `PORT`, the destination
//!   `TUN_PORT`, the IPv4 persistence `NETMASK` and the daemon `MCAST_GROUP`, which are network
//!   order. The daemon `MCAST_PORT` is host order.
//! - Addresses may be sent as 4 bytes for IPv4; replies always carry 16.
//! - Strings (`SCHED_NAME`, `PE_NAME`, `MCAST_IFN`) are NUL-terminated, at most 15 characters.
//! - Service `FLAGS` is 8 bytes, flags then mask; flags sent without the mask are ignored, and
//!   HASHED must never be sent.
//! - The kernel ignores attributes it does not know, so encoding takes a
//!   [`crate::model::KernelFeatures`] and refuses what would be dropped.
//!
//! Decoding never panics, and allocates at most in proportion to the input.

mod address;
mod command;
mod config;
pub mod constants;
mod daemon;
mod destination;
mod error;
mod info;
mod listing;
mod message;
mod operation;
mod reply;
mod service;
mod stats;
mod util;

pub use address::RawAddress;
pub use command::CommandAttribute;
pub use config::{decode_timeout_attributes, timeout_attributes};
pub use daemon::{DaemonAttribute, daemon_attributes, decode_daemon_attributes};
pub use destination::{
    DestinationAttribute, DestinationFields, decode_destination_attributes, decode_destination_key,
    destination_attributes, destination_key_attributes,
};
pub use error::{DecodeError, EncodeError};
pub use info::{InfoAttribute, decode_info_attributes, info_attributes};
pub use listing::ListingMessage;
pub use message::{IpvsCommand, IpvsMessage};
pub use operation::{Operation, Request};
pub use reply::{
    config_reply, daemon_reply, decode_daemon, decode_destination, decode_info, decode_service,
    decode_timeouts, destination_reply, info_reply, observe_features, service_reply,
};
pub use service::{
    ServiceAttribute, ServiceFields, decode_service_attributes, decode_service_key, netmask_bytes,
    service_attributes, service_flags, service_key_attributes,
};
pub use stats::{
    Counter, StatsAttribute, stats_from_attributes, stats32_attributes, stats64_attributes,
};
