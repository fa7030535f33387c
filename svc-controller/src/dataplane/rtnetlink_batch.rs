//! Many rtnetlink requests in few system calls: binding thousands of VIPs at a cold start.
//!
//! The `rtnetlink` crate sends each request in its own `sendmsg` and waits for it through the
//! async machinery: a system call and a round trip per VIP, a visible share of a large cold
//! start (`BENCHMARKS.md` times the binds). Here the requests go [`CHUNK`] to a `sendmsg`,
//! each with its own sequence number and acknowledgement. The kernel runs every request of a
//! datagram inside that `sendmsg` and queues each answer before it returns, so after the send
//! the answers are read from what is queued, without waiting: a request with no answer then
//! has none coming.
//!
//! The numbering of requests and the matching of answers are the library's sans-IO
//! [`Exchange`], the one its IPVS connections run: [`RouteRequest`] is how rtnetlink messages
//! ride on it. [`RtnetlinkBatch`] owns the socket and runs the exchange.

use std::io;

use ipvs::transport::exchange::Exchange;
use ipvs::transport::{Payload, ReplyError, TransportError};
use netlink_packet_route::RouteNetlinkMessage;
// The versions `rtnetlink` itself is built with, so the messages are the same types.
use rtnetlink::packet_core::{
    NLM_F_CREATE, NLM_F_EXCL, NetlinkDeserializable, NetlinkHeader, NetlinkSerializable,
};
use rtnetlink::sys::{Socket, protocols::NETLINK_ROUTE};

/// Requests per `sendmsg`: their acknowledgements (about 1 KiB of receive buffer each, as the
/// kernel counts them) fit the receive buffer asked for ([`RECV_BUFFER`]), and the default one.
pub(crate) const CHUNK: usize = 128;

/// The receive buffer asked for (the kernel caps it at `net.core.rmem_max`, and doubles it).
const RECV_BUFFER: usize = 1 << 20;

/// The answer to one request: success, or the kernel's errno (positive), or no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Acknowledged.
    Done,
    /// Refused with this errno.
    Errno(i32),
    /// Nothing came back (the kernel answers every request that asks for an acknowledgement,
    /// unless its answer was dropped for want of receive buffer).
    Missing,
    /// Not sent: the socket refused the chunk (the error).
    Unsent(io::ErrorKind),
}

impl Answer {
    /// A request's answer from the exchange's result for it.
    fn of<T>(result: Result<T, TransportError>) -> Self {
        match result {
            Ok(_) => Answer::Done,
            Err(TransportError::Kernel(e)) => Answer::Errno(e.errno()),
            // Unanswered, or an answer that did not decode: nothing is known of its effect.
            Err(_) => Answer::Missing,
        }
    }
}

/// An rtnetlink message as the library's [`Exchange`] carries it.
#[derive(Debug)]
pub(crate) struct RouteRequest(pub(crate) RouteNetlinkMessage);

impl Payload for RouteRequest {
    fn message_type(&self, _family_id: u16) -> u16 {
        self.0.message_type()
    }

    fn payload_len(&self) -> usize {
        NetlinkSerializable::buffer_len(&self.0)
    }

    fn emit_payload(&self, buf: &mut [u8]) {
        self.0.serialize(buf);
    }

    fn parse_reply(message_type: u16, _family_id: u16, payload: &[u8]) -> Result<Self, ReplyError> {
        let mut header = NetlinkHeader::default();
        header.message_type = message_type;
        RouteNetlinkMessage::deserialize(&header, payload)
            .map(Self)
            .map_err(ReplyError::Decode)
    }
}

/// An rtnetlink socket for batches of requests, in the namespace it was opened in.
#[derive(Debug)]
pub(crate) struct RtnetlinkBatch {
    socket: Socket,
    exchange: Exchange<RouteRequest>,
    send: Vec<u8>,
    recv: Vec<u8>,
}

impl RtnetlinkBatch {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        // The default receive buffer holds a chunk's answers too: asking for more is best effort.
        let (socket, port_id) = super::batch_socket(NETLINK_ROUTE, RECV_BUFFER)?;
        Ok(Self {
            socket,
            // rtnetlink has no family to resolve: each message names its type.
            exchange: Exchange::new(0, port_id, 1),
            send: Vec::new(),
            recv: Vec::with_capacity(64 << 10),
        })
    }

    /// Sends `requests` in chunks of [`CHUNK`], each creating what it names
    /// (`NLM_F_CREATE | NLM_F_EXCL`), and returns one answer per request, in order. A chunk
    /// the socket refuses, and every chunk after it, is [`Answer::Unsent`]; the requests of
    /// earlier chunks took effect as their answers say.
    pub(crate) fn send_all(&mut self, requests: &[RouteRequest]) -> Vec<Answer> {
        let mut out = Vec::with_capacity(requests.len());
        // Answers an earlier call left unread (only after a failed read) would hold the
        // receive buffer: they go first.
        self.read_queued();
        for chunk in requests.chunks(CHUNK) {
            if let Err(kind) = encode(&mut self.exchange, chunk, &mut self.send) {
                out.resize(requests.len(), Answer::Unsent(kind));
                return out;
            }
            if let Err(e) = self.send() {
                self.exchange.abandon();
                out.resize(requests.len(), Answer::Unsent(e.kind()));
                return out;
            }
            self.read_queued();
            out.extend(self.exchange.finish().into_iter().map(Answer::of));
        }
        out
    }

    /// Sends the send buffer as one datagram.
    fn send(&mut self) -> io::Result<()> {
        let sent = loop {
            match self.socket.send(&self.send, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if sent != self.send.len() {
            return Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                self.send.len()
            )));
        }
        Ok(())
    }

    /// Reads everything queued on the socket (the kernel queued a chunk's answers before its
    /// `send` returned) into the exchange, until the call in flight has all its answers. A
    /// receive buffer that overflowed is reported once (`ENOBUFS`; the answers it dropped
    /// stay missing) and the reading goes on: the kernel drops every new answer until the
    /// queue has been read empty. A datagram the exchange rejects loses the answers it held,
    /// which stay missing too.
    fn read_queued(&mut self) {
        loop {
            if !self.exchange.is_empty() && self.exchange.in_flight() == 0 {
                return;
            }
            self.recv.clear();
            match self.socket.recv(&mut self.recv, 0) {
                Ok(_) => {
                    let _ = self.exchange.feed(&self.recv);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {}
                // Nothing left (`WouldBlock`), or a socket error: what is missing stays so.
                Err(_) => return,
            }
        }
    }
}

/// Starts a call of `exchange` with `chunk`, encoded as one datagram into `out` (cleared
/// first), each request creating what it names (`NLM_F_CREATE | NLM_F_EXCL`).
fn encode(
    exchange: &mut Exchange<RouteRequest>,
    chunk: &[RouteRequest],
    out: &mut Vec<u8>,
) -> Result<(), io::ErrorKind> {
    exchange.begin();
    out.clear();
    for request in chunk {
        if exchange
            .push(request, NLM_F_CREATE | NLM_F_EXCL, out)
            .is_err()
        {
            exchange.abandon();
            return Err(io::ErrorKind::InvalidInput);
        }
    }
    Ok(())
}

/// The errno of a receive buffer that overflowed.
const ENOBUFS: i32 = 105;

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::num::NonZeroI32;

    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
    use rtnetlink::packet_core::{
        ErrorMessage, NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
    };

    use super::*;

    const PORT: u32 = 4242;

    fn route(last: u8) -> RouteRequest {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.destination_prefix_length = 32;
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                Ipv4Addr::new(10, 96, 0, last),
            )));
        RouteRequest(RouteNetlinkMessage::NewRoute(message))
    }

    fn datagram(seq: u32, payload: NetlinkPayload<RouteNetlinkMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        header.port_number = PORT;
        let mut message = NetlinkMessage::new(header, payload);
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    /// The kernel's answer to request `seq`: an acknowledgement (`errno` 0) or an error.
    fn answer(seq: u32, errno: i32) -> Vec<u8> {
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(-errno);
        datagram(seq, NetlinkPayload::Error(error))
    }

    #[test]
    fn a_chunk_is_one_datagram_of_requests_each_with_its_sequence_and_flags() {
        let mut exchange = Exchange::new(0, PORT, 40);
        let mut out = Vec::new();
        encode(&mut exchange, &[route(1), route(2), route(3)], &mut out).unwrap();
        assert_eq!(exchange.in_flight(), 3);
        let mut seqs = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest).unwrap();
            let flags = message.header.flags;
            assert_eq!(
                flags,
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                "{flags:#x}"
            );
            assert_eq!(
                message.payload,
                NetlinkPayload::InnerMessage(route(seqs.len() as u8 + 1).0)
            );
            seqs.push(message.header.sequence_number);
            rest = &rest[(message.header.length as usize).div_ceil(4) * 4..];
        }
        assert_eq!(seqs, [40, 41, 42]);
    }

    #[test]
    fn answers_are_matched_by_sequence_whatever_their_order_grouping_or_staleness() {
        let mut exchange = Exchange::new(0, PORT, u32::MAX - 1);
        let mut out = Vec::new();
        // A first call whose answer never came.
        encode(&mut exchange, &[route(9)], &mut out).unwrap();
        let first: Vec<Answer> = exchange.finish().into_iter().map(Answer::of).collect();
        assert_eq!(first, [Answer::Missing]);
        // Sequence numbers wrap around (skipping 0, which notifications carry).
        encode(&mut exchange, &[route(1), route(2), route(3)], &mut out).unwrap();
        // Two in one datagram, out of order.
        let mut two = answer(2, 17);
        two.extend(answer(u32::MAX, 0));
        exchange.feed(&two).unwrap();
        // The first call's late answer is stale: discarded.
        exchange.feed(&answer(u32::MAX - 1, 0)).unwrap();
        assert_eq!(exchange.discarded(), 1);
        // Not a message: rejected, and nothing is answered by it.
        assert!(exchange.feed(&[1, 2, 3]).is_err());
        assert_eq!(exchange.in_flight(), 1);
        let got: Vec<Answer> = exchange.finish().into_iter().map(Answer::of).collect();
        assert_eq!(got, [Answer::Done, Answer::Missing, Answer::Errno(17)]);
    }

    #[test]
    fn a_data_reply_decodes_as_rtnetlink_and_the_ack_ends_the_request() {
        let mut exchange = Exchange::new(0, PORT, 7);
        let mut out = Vec::new();
        encode(&mut exchange, &[route(1)], &mut out).unwrap();
        let echoed = route(1).0;
        exchange
            .feed(&datagram(7, NetlinkPayload::InnerMessage(echoed.clone())))
            .unwrap();
        assert_eq!(
            exchange.in_flight(),
            1,
            "a data reply does not end the request"
        );
        exchange.feed(&answer(7, 0)).unwrap();
        let result = exchange.finish_one().unwrap();
        assert_eq!(result.len(), 1);
        assert_eq!(result[0].0, echoed);
    }

    /// Needs a network namespace (CAP_SYS_ADMIN): run in the VM by `cargo xtask test`.
    mod real_kernel {
        use integration::Netns;
        use netlink_packet_route::route::{RouteScope, RouteType};
        use rtnetlink::RouteMessageBuilder;

        use super::super::*;

        /// A local route for 10.96.1.`last` through the loopback interface (index 1 in a
        /// fresh namespace; down there, so the kernel may refuse it: an answer all the same).
        fn local_route(last: u8) -> RouteRequest {
            RouteRequest(RouteNetlinkMessage::NewRoute(
                RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(std::net::Ipv4Addr::new(10, 96, 1, last), 32)
                    .output_interface(1)
                    .table_id(255)
                    .kind(RouteType::Local)
                    .scope(RouteScope::Host)
                    .build(),
            ))
        }

        #[test]
        #[ignore = "real kernel: run by cargo xtask test"]
        fn a_full_receive_buffer_loses_answers_once_and_the_next_call_is_whole() {
            Netns::new("rtnl-batch")
                .expect("a fresh namespace")
                .run(|| {
                    let mut batch = RtnetlinkBatch::open().unwrap();
                    // The smallest receive buffer the kernel allows holds a few answers.
                    batch.socket.set_rx_buf_sz(256usize).unwrap();
                    let routes: Vec<_> = (0..CHUNK as u8).map(local_route).collect();
                    let first = batch.send_all(&routes);
                    assert_eq!(first.len(), routes.len());
                    let missing = first.iter().filter(|a| **a == Answer::Missing).count();
                    let answered = first
                        .iter()
                        .filter(|a| matches!(a, Answer::Done | Answer::Errno(_)))
                        .count();
                    assert!(missing > 0, "every answer fitted: {first:?}");
                    // The overflow is reported before the answers that fitted, which are read.
                    assert!(answered > 0, "{first:?}");
                    assert_eq!(missing + answered, routes.len(), "{first:?}");
                    // The overflow was read away: the next call is answered whole.
                    let second = batch.send_all(&[local_route(200)]);
                    assert!(
                        matches!(second[..], [Answer::Done | Answer::Errno(_)]),
                        "{second:?}"
                    );
                })
                .expect("the test body ran");
        }
    }
}
