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
//! [`Answers`] is the sans-IO half (encoding a chunk, matching the answers to the requests);
//! [`RtnetlinkBatch`] owns the socket.

use std::io;

use netlink_packet_route::RouteNetlinkMessage;
// The versions `rtnetlink` itself is built with, so the messages are the same types.
use rtnetlink::packet_core::{
    Emitable, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

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

/// The requests of one chunk and their answers so far.
#[derive(Debug)]
pub(crate) struct Answers {
    first_seq: u32,
    answers: Vec<Option<Answer>>,
}

impl Answers {
    /// Encodes `messages` as one datagram into `out` (cleared first), with sequence numbers
    /// from `first_seq`, each creating what it names (`NLM_F_CREATE | NLM_F_EXCL`) and asking
    /// for an acknowledgement.
    pub(crate) fn encode(
        messages: &[RouteNetlinkMessage],
        first_seq: u32,
        out: &mut Vec<u8>,
    ) -> Self {
        out.clear();
        for (i, message) in messages.iter().enumerate() {
            // Header and payload written in place (a `NetlinkMessage` would own a copy).
            let mut header = NetlinkHeader::default();
            let header_len = header.buffer_len();
            let len = header_len + NetlinkSerializable::buffer_len(message);
            header.length = len as u32;
            header.message_type = message.message_type();
            header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
            header.sequence_number = first_seq.wrapping_add(i as u32);
            let start = out.len();
            out.resize(start + len, 0);
            header.emit(&mut out[start..start + header_len]);
            message.serialize(&mut out[start + header_len..]);
        }
        Self {
            first_seq,
            answers: vec![None; messages.len()],
        }
    }

    /// Takes the answers in one received datagram; anything else in it (a reply to an
    /// earlier chunk, a malformed message) is ignored.
    pub(crate) fn feed(&mut self, mut datagram: &[u8]) {
        while !datagram.is_empty() {
            let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(datagram) else {
                return;
            };
            let len = message.header.length as usize;
            let index = message.header.sequence_number.wrapping_sub(self.first_seq) as usize;
            if let (NetlinkPayload::Error(error), Some(slot)) =
                (&message.payload, self.answers.get_mut(index))
            {
                *slot = Some(match error.code {
                    None => Answer::Done,
                    Some(code) => Answer::Errno(code.get().abs()),
                });
            }
            // Messages are 4-byte aligned within a datagram.
            let next = len.div_ceil(4) * 4;
            if len == 0 || next > datagram.len() {
                return;
            }
            datagram = &datagram[next..];
        }
    }

    /// Whether every request has its answer.
    pub(crate) fn complete(&self) -> bool {
        self.answers.iter().all(Option::is_some)
    }

    /// One answer per request, in order; [`Answer::Missing`] for those that got none.
    pub(crate) fn finish(self) -> impl Iterator<Item = Answer> {
        self.answers
            .into_iter()
            .map(|a| a.unwrap_or(Answer::Missing))
    }
}

/// An rtnetlink socket for batches of requests, in the namespace it was opened in.
#[derive(Debug)]
pub(crate) struct RtnetlinkBatch {
    socket: Socket,
    next_seq: u32,
    send: Vec<u8>,
    recv: Vec<u8>,
}

impl RtnetlinkBatch {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_non_blocking(true)?;
        // Errors without the request echoed back: smaller answers. Older kernels lack it.
        let _ = socket.set_cap_ack(true);
        // Best effort: the default buffer holds a chunk's answers too.
        let _ = socket.set_rx_buf_sz(RECV_BUFFER);
        Ok(Self {
            socket,
            next_seq: 1,
            send: Vec::new(),
            recv: Vec::with_capacity(64 << 10),
        })
    }

    /// Sends `messages` in chunks of [`CHUNK`] and returns one answer per message, in order.
    /// A chunk the socket refuses, and every chunk after it, is [`Answer::Unsent`]; the
    /// requests of earlier chunks took effect as their answers say.
    pub(crate) fn send_all(&mut self, messages: &[RouteNetlinkMessage]) -> Vec<Answer> {
        let mut out = Vec::with_capacity(messages.len());
        // Answers an earlier call left unread (only after a failed read) would hold the
        // receive buffer: they go first.
        self.read_queued(None);
        for chunk in messages.chunks(CHUNK) {
            let mut answers = Answers::encode(chunk, self.next_seq, &mut self.send);
            self.next_seq = self.next_seq.wrapping_add(chunk.len() as u32);
            if let Err(e) = self.send() {
                out.resize(messages.len(), Answer::Unsent(e.kind()));
                return out;
            }
            self.read_queued(Some(&mut answers));
            out.extend(answers.finish());
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
    /// `send` returned), feeding it to `answers`. A receive buffer that overflowed is reported
    /// once (`ENOBUFS`; the answers it dropped stay missing) and the reading goes on: the
    /// kernel drops every new answer until the queue has been read empty.
    fn read_queued(&mut self, mut answers: Option<&mut Answers>) {
        loop {
            if answers.as_deref().is_some_and(Answers::complete) {
                return;
            }
            self.recv.clear();
            match self.socket.recv(&mut self.recv, 0) {
                Ok(_) => {
                    if let Some(answers) = answers.as_deref_mut() {
                        answers.feed(&self.recv);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {}
                // Nothing left (`WouldBlock`), or a socket error: what is missing stays so.
                Err(_) => return,
            }
        }
    }
}

/// The errno of a receive buffer that overflowed.
const ENOBUFS: i32 = 105;

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::num::NonZeroI32;

    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
    use rtnetlink::packet_core::{ErrorMessage, NLM_F_MULTIPART};

    use super::*;

    fn route(last: u8) -> RouteNetlinkMessage {
        let mut message = RouteMessage::default();
        message.header.destination_prefix_length = 32;
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                Ipv4Addr::new(10, 96, 0, last),
            )));
        RouteNetlinkMessage::NewRoute(message)
    }

    /// The kernel's answer to request `seq`: an acknowledgement (`errno` 0) or an error.
    fn answer(seq: u32, errno: i32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(-errno);
        let mut message =
            NetlinkMessage::<RouteNetlinkMessage>::new(header, NetlinkPayload::Error(error));
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    #[test]
    fn a_chunk_is_one_datagram_of_requests_each_with_its_sequence_and_flags() {
        let mut out = Vec::new();
        let answers = Answers::encode(&[route(1), route(2), route(3)], 40, &mut out);
        assert!(!answers.complete());
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
            assert!(matches!(
                message.payload,
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(_))
            ));
            seqs.push(message.header.sequence_number);
            rest = &rest[(message.header.length as usize).div_ceil(4) * 4..];
        }
        assert_eq!(seqs, [40, 41, 42]);
    }

    #[test]
    fn answers_are_matched_by_sequence_whatever_their_order_and_grouping() {
        let mut out = Vec::new();
        // Sequence numbers wrap around.
        let mut answers = Answers::encode(&[route(1), route(2), route(3)], u32::MAX, &mut out);
        // Two in one datagram, out of order; one for an earlier chunk (ignored).
        let mut two = answer(1, 17);
        two.extend(answer(u32::MAX, 0));
        answers.feed(&two);
        answers.feed(&answer(u32::MAX - 5, 0));
        assert!(!answers.complete());
        answers.feed(&[1, 2, 3]); // not a message: ignored
        let got: Vec<Answer> = answers.finish().collect();
        assert_eq!(got, [Answer::Done, Answer::Missing, Answer::Errno(17)]);

        let mut answers = Answers::encode(&[route(1)], 7, &mut out);
        answers.feed(&answer(7, 0));
        assert!(answers.complete());
        // Only errors and acknowledgements count as answers.
        let mut answers = Answers::encode(&[route(1)], 9, &mut out);
        let mut header = NetlinkHeader::default();
        header.sequence_number = 9;
        header.flags = NLM_F_MULTIPART;
        let mut done = NetlinkMessage::<RouteNetlinkMessage>::new(
            header,
            NetlinkPayload::Done(Default::default()),
        );
        done.finalize();
        let mut buf = vec![0; done.buffer_len()];
        done.serialize(&mut buf);
        answers.feed(&buf);
        assert!(!answers.complete());
    }

    /// Needs a network namespace (CAP_SYS_ADMIN): run in the VM by `cargo xtask test`.
    mod real_kernel {
        use integration::Netns;
        use netlink_packet_route::route::{RouteScope, RouteType};
        use rtnetlink::RouteMessageBuilder;

        use super::super::*;

        /// A local route for 10.96.1.`last` through the loopback interface (index 1 in a
        /// fresh namespace; down there, so the kernel may refuse it: an answer all the same).
        fn local_route(last: u8) -> RouteNetlinkMessage {
            RouteNetlinkMessage::NewRoute(
                RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(std::net::Ipv4Addr::new(10, 96, 1, last), 32)
                    .output_interface(1)
                    .table_id(255)
                    .kind(RouteType::Local)
                    .scope(RouteScope::Host)
                    .build(),
            )
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
