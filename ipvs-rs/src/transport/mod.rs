//! Netlink sockets: a blocking and an async connection over one sans-IO exchange core.
//!
//! The transport knows netlink, not IPVS: it is generic over the [`Payload`] it carries,
//! which every generic-netlink family is (`F: GenlFamily + Emitable +
//! ParseableParametrized<[u8], GenlHeader>`), so it can be exercised with the kernel's
//! always-present `nlctrl` family; another protocol (the controller's rtnetlink batches)
//! implements [`Payload`] for its messages.
//!
//! * [`exchange`]: the sans-IO core. It numbers and encodes requests (many per datagram)
//!   and matches the kernel's replies to them: ACKs, errors with extended-ACK details,
//!   multi-part dumps, interrupted dumps, stale replies of abandoned calls.
//! * [`payload`]: what an exchange carries, with generic netlink built in.
//! * [`socket`]: opening the socket (buffers, `NETLINK_EXT_ACK`, `NETLINK_CAP_ACK`,
//!   truncation detection) in the current or another network namespace.
//! * [`blocking`]: [`Connection`], driven with `send`/`poll`/`recv` under a deadline.
//! * `tokio` (feature `tokio`): `AsyncConnection`, the same over tokio's reactor.
//! * [`error`]: [`TransportError`] for failed calls, [`KernelError`] for rejected requests.
//!
//! Each connection resolves its family id once, when it opens (`CTRL_CMD_GETFAMILY`).

pub mod blocking;
pub mod error;
pub mod exchange;
pub mod payload;
pub mod socket;
#[cfg(feature = "tokio")]
pub mod tokio;

#[cfg(feature = "tokio")]
pub use self::tokio::AsyncConnection;
pub use self::{
    blocking::Connection,
    error::{KernelError, Result, TransportError},
    exchange::Exchange,
    payload::{Payload, ReplyError},
    socket::{Namespace, Options},
};
