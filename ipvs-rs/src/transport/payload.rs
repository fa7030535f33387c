//! What an [`Exchange`](super::Exchange) carries: how a request is written after its netlink
//! header, and how a data reply's payload is read back.
//!
//! Every generic-netlink family (a type that is `GenlFamily`, `Emitable` and parsed with a
//! `GenlHeader`, as `netlink-packet-generic` defines them) is a [`Payload`] as it is: the
//! generic-netlink header is written and read here. Another netlink protocol, such as
//! rtnetlink, implements [`Payload`] for its messages and runs on the same exchange: the
//! sequence numbers, the acknowledgements, the errors with their extended-ACK details and the
//! stale replies of abandoned calls are the netlink layer's, whatever the protocol.

use std::fmt::Debug;

use netlink_packet_core::{DecodeError, Emitable, ParseableParametrized};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

use super::exchange::GENL_HDRLEN;

/// A netlink protocol's message, as requests and data replies.
pub trait Payload: Sized + Debug {
    /// The request's `nlmsg_type`. `family_id` is the id the exchange was made for (generic
    /// netlink resolves one per family; other protocols ignore it).
    fn message_type(&self, family_id: u16) -> u16;

    /// The request's length after the netlink header.
    fn payload_len(&self) -> usize;

    /// Writes the request after the netlink header into `buf`, [`payload_len`] bytes long.
    ///
    /// [`payload_len`]: Payload::payload_len
    fn emit_payload(&self, buf: &mut [u8]);

    /// Reads a data reply of type `message_type` to a request made for `family_id`, from
    /// what follows its netlink header.
    fn parse_reply(message_type: u16, family_id: u16, payload: &[u8]) -> Result<Self, ReplyError>;
}

/// Why a data reply could not be read.
#[derive(Debug)]
pub enum ReplyError {
    /// A message type this protocol does not answer the request with.
    UnexpectedType,
    /// The payload does not decode.
    Decode(DecodeError),
}

impl<F> Payload for F
where
    F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
{
    fn message_type(&self, family_id: u16) -> u16 {
        // A family with a static id (`nlctrl`) names it; the others use the resolved one.
        match self.family_id() {
            0 => family_id,
            id => id,
        }
    }

    fn payload_len(&self) -> usize {
        GENL_HDRLEN + self.buffer_len()
    }

    fn emit_payload(&self, buf: &mut [u8]) {
        GenlHeader {
            cmd: self.command(),
            version: self.version(),
        }
        .emit(&mut buf[..GENL_HDRLEN]);
        self.emit(&mut buf[GENL_HDRLEN..]);
    }

    fn parse_reply(message_type: u16, family_id: u16, payload: &[u8]) -> Result<Self, ReplyError> {
        if message_type != family_id {
            return Err(ReplyError::UnexpectedType);
        }
        GenlMessage::<F>::parse_with_param(payload, message_type)
            .map(|message| message.payload)
            .map_err(ReplyError::Decode)
    }
}
