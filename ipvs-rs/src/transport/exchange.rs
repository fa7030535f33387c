//! The sans-IO core: encodes requests and matches the kernel's replies to them.
//!
//! [`Exchange`] performs no system calls. A driver (the blocking
//! [`Connection`](super::blocking::Connection) or the async one) asks it to encode
//! requests into a send buffer, sends that buffer in one `send`, then feeds it every
//! datagram it receives until [`Exchange::in_flight`] drops to zero, and collects the
//! per-request results with [`Exchange::finish`].
//!
//! # The netlink rules relied on
//!
//! * A datagram holds one or more messages, each starting at a 4-byte aligned offset with a
//!   16-byte `nlmsghdr` (length, type, flags, sequence number, port id; host byte order).
//!   `nlmsg_len` excludes the trailing padding. A length below 16 or beyond the datagram is
//!   a framing error: the datagram is rejected as a [`TransportError::Decode`], never
//!   indexed out of bounds.
//! * Every request carries `NLM_F_REQUEST | NLM_F_ACK` and a fresh sequence number. The
//!   kernel copies the sequence number into every reply and sets the port id to ours.
//!   Several requests may share one datagram; the kernel processes them in order and
//!   answers each one separately, in that order. A request pushed without `NLM_F_ACK`
//!   ([`Exchange::push_unacknowledged`]) is answered only by an error; the answer to a later
//!   request of the call settles it.
//! * A request that is not a dump ends with exactly one `NLMSG_ERROR`: errno 0 is the ACK,
//!   a negative errno a rejection. Its data replies, if any, come before it.
//! * A dump (`NLM_F_DUMP`) is answered by any number of `NLM_F_MULTI` messages spread over
//!   several datagrams and ends with `NLMSG_DONE`, whose 4-byte payload is 0 or a negative
//!   errno. A dump that fails to start ends with an `NLMSG_ERROR` instead. The kernel does
//!   not acknowledge a dump that started, even with `NLM_F_ACK`; a stray ACK after
//!   `NLMSG_DONE` would be discarded anyway.
//! * If the data changed while a dump was running (the family tracks a generation counter),
//!   the kernel flags the affected messages with `NLM_F_DUMP_INTR`: the dump completes but
//!   its result is reported as [`TransportError::DumpInterrupted`].
//! * With `NETLINK_EXT_ACK` the kernel may set `NLM_F_ACK_TLVS` on `NLMSG_ERROR` and
//!   `NLMSG_DONE` and append attributes after the echoed request header (all of the request
//!   unless `NLM_F_CAPPED`): `NLMSGERR_ATTR_MSG` (a string) and `NLMSGERR_ATTR_OFFS` (u32
//!   offset of the offending attribute) are carried into [`KernelError`]. Malformed
//!   extended-ACK attributes are ignored, never fatal.
//! * A reply whose sequence number belongs to an earlier call (one that timed out or was
//!   cancelled) is *stale*: it is counted and discarded. A sequence number this exchange
//!   never issued, or a foreign port id, is a [`TransportError::Protocol`] error.
//!   Messages with sequence number 0 are notifications, not replies, and are discarded.
//! * `NLMSG_NOOP` is ignored; `NLMSG_OVERRUN` means replies were lost
//!   ([`TransportError::Overrun`]).

use std::fmt::Debug;

use netlink_packet_core::{
    Emitable, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
    NetlinkHeader,
};

use super::error::{KernelError, Result, TransportError};
use super::payload::{Payload, ReplyError};

/// Length of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Length of `struct genlmsghdr`.
pub const GENL_HDRLEN: usize = 4;
const NLMSG_ALIGNTO: usize = 4;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLMSG_MIN_TYPE: u16 = 0x10;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_OFFS: u16 = 2;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Rounds `len` up to the netlink alignment (4 bytes).
pub(crate) const fn nlmsg_align(len: usize) -> usize {
    (len + NLMSG_ALIGNTO - 1) & !(NLMSG_ALIGNTO - 1)
}

/// The outcome of one request: its reply payloads, or why it failed.
pub type RequestResult<F> = Result<Vec<F>, TransportError>;

/// One in-flight request.
#[derive(Debug)]
struct Slot<F> {
    dump: bool,
    /// Whether the kernel answers it on success (`NLM_F_ACK`); one that is not answered is
    /// settled by the answer to a later request (see [`Exchange::push_unacknowledged`]).
    acknowledged: bool,
    done: bool,
    interrupted: bool,
    replies: Vec<F>,
    error: Option<TransportError>,
}

/// The sans-IO request/reply matcher of one netlink socket (see the module docs).
///
/// One exchange serves one socket: its sequence numbers tell this socket's replies apart
/// across calls. Within a call (between [`begin`](Self::begin) and
/// [`finish`](Self::finish)) the requests get consecutive sequence numbers.
#[derive(Debug)]
pub struct Exchange<F> {
    family_id: u16,
    port_id: u32,
    first_seq: u32,
    next_seq: u32,
    base_seq: u32,
    slots: Vec<Slot<F>>,
    open: usize,
    /// Every unacknowledged request before this index of the current call is settled.
    settled: usize,
    abandoned_dumps: Vec<u32>,
    discarded: u64,
}

impl<F> Exchange<F>
where
    F: Payload,
{
    /// An exchange for the family with this resolved id, on the socket bound to `port_id`
    /// (0 disables the port check), issuing sequence numbers from `first_seq` upwards.
    pub fn new(family_id: u16, port_id: u32, first_seq: u32) -> Self {
        let first_seq = first_seq.max(1);
        Self {
            family_id,
            port_id,
            first_seq,
            next_seq: first_seq,
            base_seq: first_seq,
            slots: Vec::new(),
            open: 0,
            settled: 0,
            abandoned_dumps: Vec::new(),
            discarded: 0,
        }
    }

    /// An exchange for another family on the same socket, continuing this one's sequence
    /// numbers so that this exchange's late replies are still recognised as stale.
    pub fn successor<G>(&self, family_id: u16) -> Exchange<G>
    where
        G: Payload,
    {
        let mut next = Exchange::new(family_id, self.port_id, self.first_seq);
        next.next_seq = self.next_seq;
        next.base_seq = self.next_seq;
        next.abandoned_dumps = self.abandoned_dumps.clone();
        if self.open > 0 {
            next.abandoned_dumps.extend(
                self.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, slot)| slot.dump && !slot.done)
                    .map(|(i, _)| seq_at(self.base_seq, i)),
            );
        }
        next
    }

    /// The resolved family id written into each request's `nlmsg_type`
    /// (unless the payload has a static id of its own).
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    /// The port id replies must carry (0: not checked).
    pub fn port_id(&self) -> u32 {
        self.port_id
    }

    /// Starts a new call. Requests of an unfinished previous call (timed out, failed or
    /// cancelled) are abandoned: their late replies will be discarded as stale.
    pub fn begin(&mut self) {
        self.abandon();
        self.base_seq = self.next_seq;
    }

    /// Abandons every unfinished request of the current call (see [`begin`](Self::begin)).
    pub fn abandon(&mut self) {
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.dump && !slot.done {
                self.abandoned_dumps.push(seq_at(self.base_seq, i));
            }
        }
        self.slots.clear();
        self.open = 0;
        self.settled = 0;
        self.base_seq = self.next_seq;
    }

    /// Encodes one request (with `NLM_F_REQUEST | NLM_F_ACK | extra_flags`) at the end of
    /// `out`, 4-byte aligned, and registers it in the current call. Returns its sequence
    /// number.
    pub fn push(&mut self, payload: &F, extra_flags: u16, out: &mut Vec<u8>) -> Result<u32> {
        self.encode(payload, NLM_F_ACK | extra_flags, true, out)
    }

    /// Encodes one request that the kernel answers only if it fails (`NLM_F_REQUEST |
    /// extra_flags`, without `NLM_F_ACK`), and registers it in the current call. The kernel
    /// answers a socket's requests in order, so the answer to any later request settles it:
    /// as failed if an error for it came first, else as done. A call must therefore end with
    /// an acknowledged request (a barrier), or its unacknowledged requests stay in flight.
    ///
    /// This is how a protocol that answers thousands of requests in one go is used without
    /// an acknowledgement each (which would overflow the receive buffer): nftables'
    /// transactions, whose messages are answered only when they fail.
    pub fn push_unacknowledged(
        &mut self,
        payload: &F,
        extra_flags: u16,
        out: &mut Vec<u8>,
    ) -> Result<u32> {
        if extra_flags & NLM_F_DUMP == NLM_F_DUMP {
            return Err(TransportError::protocol(
                "a dump is always answered: it cannot be pushed unacknowledged",
            ));
        }
        self.encode(payload, extra_flags & !NLM_F_ACK, false, out)
    }

    fn encode(
        &mut self,
        payload: &F,
        extra_flags: u16,
        acknowledged: bool,
        out: &mut Vec<u8>,
    ) -> Result<u32> {
        let len = NLMSG_HDRLEN + payload.payload_len();
        let length = u32::try_from(len).map_err(|_| {
            TransportError::protocol(format!("request of {len} bytes is too large"))
        })?;
        let seq = self.next_seq;
        let message_type = payload.message_type(self.family_id);
        let mut header = NetlinkHeader::default();
        header.length = length;
        header.message_type = message_type;
        header.flags = NLM_F_REQUEST | extra_flags;
        header.sequence_number = seq;
        // The sender's port, as libnl writes it: the kernel ignores it in a request, and a tap
        // on netlink tells this socket's requests from other programs' by it.
        header.port_number = self.port_id;

        let start = out.len();
        out.resize(start + nlmsg_align(len), 0);
        let message = &mut out[start..start + len];
        header.emit(&mut message[..NLMSG_HDRLEN]);
        payload.emit_payload(&mut message[NLMSG_HDRLEN..]);

        self.next_seq = match seq.wrapping_add(1) {
            0 => 1,
            next => next,
        };
        self.slots.push(Slot {
            dump: extra_flags & NLM_F_DUMP == NLM_F_DUMP,
            acknowledged,
            done: false,
            interrupted: false,
            replies: Vec::new(),
            error: None,
        });
        self.open += 1;
        Ok(seq)
    }

    /// How many requests of the current call still await their final message.
    pub fn in_flight(&self) -> usize {
        self.open
    }

    /// How many requests the current call holds (answered or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the current call holds no request.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether an abandoned dump may still be running in the kernel. Only one dump can run
    /// per socket (a second one gets `EBUSY`), so a driver should feed datagrams until this
    /// is false before starting a new dump.
    pub fn draining(&self) -> bool {
        !self.abandoned_dumps.is_empty()
    }

    /// How many stale messages have been discarded so far.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Consumes one received datagram.
    ///
    /// Replies to the current call's requests are recorded; stale replies are discarded.
    /// An error is returned for a malformed datagram, a protocol violation or an overrun:
    /// the driver should then fail the call (and [`abandon`](Self::abandon) it).
    pub fn feed(&mut self, datagram: &[u8]) -> Result<()> {
        let mut rest = datagram;
        while !rest.is_empty() {
            if rest.len() < NLMSG_HDRLEN {
                return Err(TransportError::decode(
                    format!(
                        "datagram ends with {} bytes, less than a netlink header",
                        rest.len()
                    ),
                    None,
                ));
            }
            let header = parse_header(rest);
            let len = header.length as usize;
            if len < NLMSG_HDRLEN || len > rest.len() {
                return Err(TransportError::decode(
                    format!(
                        "netlink message length {len} outside 16..={} (type {}, seq {})",
                        rest.len(),
                        header.message_type,
                        header.sequence_number
                    ),
                    None,
                ));
            }
            self.handle(&header, &rest[NLMSG_HDRLEN..len])?;
            rest = &rest[nlmsg_align(len).min(rest.len())..];
        }
        Ok(())
    }

    /// Takes the results of a batch chunk, in request order, and appends them to `results`:
    /// a kernel error stays that request's result; any other failure is kept in
    /// `first_failure` (the first one wins) and the request is marked `EPROTO`.
    pub fn finish_batch(
        &mut self,
        results: &mut Vec<std::result::Result<Vec<F>, KernelError>>,
        first_failure: &mut Option<TransportError>,
    ) {
        for result in self.finish() {
            results.push(match result {
                Ok(replies) => Ok(replies),
                Err(TransportError::Kernel(e)) => Err(e),
                Err(other) => {
                    first_failure.get_or_insert(other);
                    Err(KernelError::new(nix::libc::EPROTO))
                }
            });
        }
    }

    /// Ends a call of one request: its result (see [`finish`](Self::finish)).
    pub fn finish_one(&mut self) -> RequestResult<F> {
        self.finish().pop().unwrap_or_else(|| {
            Err(TransportError::protocol(
                "a call finished without its request",
            ))
        })
    }

    /// Ends a call of one request whose answer, if it has one, was read without waiting
    /// (the kernel queues it inside `sendmsg`): `None` when none came (the request is
    /// abandoned), else its result.
    pub fn finish_one_or_silence(&mut self) -> Result<Option<Vec<F>>, TransportError> {
        if self.in_flight() > 0 {
            self.abandon();
            return Ok(None);
        }
        self.finish_one().map(Some)
    }

    /// Takes the results of the current call, in request order. Call it once
    /// [`in_flight`](Self::in_flight) is 0; requests still in flight are abandoned and
    /// reported as [`TransportError::Protocol`] errors.
    pub fn finish(&mut self) -> Vec<RequestResult<F>> {
        let slots = std::mem::take(&mut self.slots);
        let base = self.base_seq;
        let results = slots
            .into_iter()
            .enumerate()
            .map(|(i, slot)| {
                let seq = seq_at(base, i);
                if !slot.done {
                    if slot.dump {
                        self.abandoned_dumps.push(seq);
                    }
                    return Err(TransportError::protocol(format!(
                        "request {seq} finished without a final message"
                    )));
                }
                match slot.error {
                    Some(error) => Err(error),
                    None if slot.interrupted => Err(TransportError::DumpInterrupted),
                    None => Ok(slot.replies),
                }
            })
            .collect();
        self.open = 0;
        self.settled = 0;
        self.base_seq = self.next_seq;
        results
    }

    /// Settles the unacknowledged requests before `index` that no error answered: the
    /// kernel has moved on to a later request, so they succeeded.
    fn settle_before(&mut self, index: usize) {
        if index <= self.settled {
            return;
        }
        for slot in &mut self.slots[self.settled..index] {
            if !slot.acknowledged && !slot.done {
                slot.done = true;
                self.open -= 1;
            }
        }
        self.settled = index;
    }

    fn issued(&self, seq: u32) -> bool {
        seq.wrapping_sub(self.first_seq) < self.next_seq.wrapping_sub(self.first_seq)
    }

    fn handle(&mut self, header: &NetlinkHeader, payload: &[u8]) -> Result<()> {
        let seq = header.sequence_number;
        if seq == 0 {
            self.discarded += 1;
            return Ok(());
        }
        if self.port_id != 0 && header.port_number != self.port_id {
            return Err(TransportError::protocol(format!(
                "reply for port id {} on the socket of port id {}",
                header.port_number, self.port_id
            )));
        }
        let index = index_of(self.base_seq, seq);
        if index >= self.slots.len() {
            if !self.issued(seq) {
                return Err(TransportError::protocol(format!(
                    "reply with sequence number {seq}, which was never sent"
                )));
            }
            if matches!(header.message_type, NLMSG_DONE | NLMSG_ERROR) {
                self.abandoned_dumps.retain(|&s| s != seq);
            }
            self.discarded += 1;
            return Ok(());
        }
        self.settle_before(index);
        let family_id = self.family_id;
        let slot = &mut self.slots[index];
        if slot.done {
            self.discarded += 1;
            return Ok(());
        }
        match header.message_type {
            NLMSG_NOOP => {}
            NLMSG_OVERRUN => return Err(TransportError::Overrun),
            NLMSG_ERROR => {
                match parse_error(header.flags, payload) {
                    Ok(None) => {}
                    Ok(Some(error)) => slot.error = Some(TransportError::Kernel(error)),
                    Err(error) => slot.error = Some(error),
                }
                slot.done = true;
                self.open -= 1;
            }
            NLMSG_DONE => {
                // A DONE without the 4-byte errno (older protocols) counts as success.
                if let Some(code) = read_i32(payload, 0).filter(|&code| code != 0) {
                    let tlvs = if header.flags & NLM_F_ACK_TLVS != 0 {
                        &payload[4..]
                    } else {
                        &[]
                    };
                    slot.error = Some(TransportError::Kernel(ext_ack(
                        KernelError::from_raw_code(code),
                        tlvs,
                    )));
                }
                slot.done = true;
                self.open -= 1;
            }
            message_type if message_type < NLMSG_MIN_TYPE => {
                return Err(TransportError::protocol(format!(
                    "unknown netlink control message type {message_type} (seq {seq})"
                )));
            }
            message_type => {
                if header.flags & NLM_F_DUMP_INTR != 0 {
                    slot.interrupted = true;
                }
                if slot.error.is_some() {
                    // Keep the first failure; still wait for the final message.
                } else {
                    match F::parse_reply(message_type, family_id, payload) {
                        Ok(reply) => slot.replies.push(reply),
                        Err(ReplyError::UnexpectedType) => {
                            slot.error = Some(TransportError::protocol(format!(
                                "reply of message type {message_type} to a request of family \
                                 {family_id}"
                            )));
                        }
                        Err(ReplyError::Decode(error)) => {
                            slot.error = Some(TransportError::decode(
                                format!("reply {} to request {seq}", slot.replies.len() + 1),
                                Some(error),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A batch on its way through a connection: the requests not yet sent, and the results and
/// first failure so far. Both connections run it the same way: while
/// [`has_more`](Self::has_more), begin a call, [`fill`](Self::fill) it, send and wait, then
/// [`collect`](Self::collect); at the end, [`finish`](Self::finish).
#[derive(Debug)]
pub struct BatchRun<I: Iterator> {
    requests: std::iter::Peekable<I>,
    results: Vec<std::result::Result<Vec<I::Item>, KernelError>>,
    first_failure: Option<TransportError>,
    max_chunk: usize,
}

impl<F, I> BatchRun<I>
where
    I: Iterator<Item = F>,
    F: Payload,
{
    /// A batch of `requests`, sent in chunks of at most `max_chunk` requests.
    pub fn new(requests: impl IntoIterator<IntoIter = I>, max_chunk: usize) -> Self {
        let requests = requests.into_iter().peekable();
        Self {
            results: Vec::with_capacity(requests.size_hint().0),
            requests,
            first_failure: None,
            max_chunk: max_chunk.max(1),
        }
    }

    /// Whether requests are left to send.
    pub fn has_more(&mut self) -> bool {
        self.requests.peek().is_some()
    }

    /// Pushes the next requests into the exchange's current call, encoded at the end of
    /// `send_buf`, while the chunk has room: at most `max_chunk` requests and `max_bytes`
    /// bytes (the first request of a chunk always goes, whatever its size).
    pub fn fill(
        &mut self,
        exchange: &mut Exchange<F>,
        send_buf: &mut Vec<u8>,
        max_bytes: usize,
    ) -> Result<()> {
        while exchange.len() < self.max_chunk {
            let fits = self.requests.peek().is_some_and(|next| {
                let len = nlmsg_align(NLMSG_HDRLEN + next.payload_len());
                exchange.is_empty() || send_buf.len() + len <= max_bytes
            });
            let Some(next) = self.requests.next_if(|_| fits) else {
                break;
            };
            exchange.push(&next, 0, send_buf)?;
        }
        Ok(())
    }

    /// Takes the results of the chunk just answered (see [`Exchange::finish_batch`]).
    pub fn collect(&mut self, exchange: &mut Exchange<F>) {
        exchange.finish_batch(&mut self.results, &mut self.first_failure);
    }

    /// Every request's result, in order, or the first failure that was not a request's own.
    pub fn finish(self) -> Result<Vec<std::result::Result<Vec<F>, KernelError>>> {
        match self.first_failure {
            Some(failure) => Err(failure),
            None => Ok(self.results),
        }
    }
}

/// The sequence number of request `index` of a call whose first request is `base`: the
/// numbers are consecutive, skipping 0 (which notifications carry) where they wrap.
fn seq_at(base: u32, index: usize) -> u32 {
    let seq = base.wrapping_add(index as u32);
    if seq < base { seq.wrapping_add(1) } else { seq }
}

/// The index in a call whose first request is `base` of the request numbered `seq` (the
/// inverse of [`seq_at`]); an index beyond the call for a number it did not issue.
fn index_of(base: u32, seq: u32) -> usize {
    let distance = seq.wrapping_sub(base);
    if seq < base {
        distance.wrapping_sub(1) as usize
    } else {
        distance as usize
    }
}

/// Reads a `nlmsghdr` from the first 16 bytes of `buf` (the caller checked the length).
fn parse_header(buf: &[u8]) -> NetlinkHeader {
    let mut header = NetlinkHeader::default();
    header.length = read_u32(buf, 0).unwrap_or(0);
    header.message_type = read_u16(buf, 4).unwrap_or(0);
    header.flags = read_u16(buf, 6).unwrap_or(0);
    header.sequence_number = read_u32(buf, 8).unwrap_or(0);
    header.port_number = read_u32(buf, 12).unwrap_or(0);
    header
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn read_i32(buf: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// Parses the payload of an `NLMSG_ERROR`: `Ok(None)` for an ACK, `Ok(Some(_))` for a
/// rejection (with extended-ACK details when present).
fn parse_error(flags: u16, payload: &[u8]) -> Result<Option<KernelError>> {
    let code = read_i32(payload, 0).ok_or_else(|| {
        TransportError::decode(
            format!("NLMSG_ERROR of {} bytes has no error code", payload.len()),
            None,
        )
    })?;
    if code == 0 {
        return Ok(None);
    }
    let error = KernelError::from_raw_code(code);
    if flags & NLM_F_ACK_TLVS == 0 {
        return Ok(Some(error));
    }
    let echoed = &payload[4..];
    let skip = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        read_u32(echoed, 0).map_or(usize::MAX, |len| nlmsg_align(len as usize))
    };
    let tlvs = echoed.get(skip..).unwrap_or(&[]);
    Ok(Some(ext_ack(error, tlvs)))
}

/// Adds the extended-ACK attributes found in `tlvs` to `error`; stops at the first
/// malformed attribute.
fn ext_ack(mut error: KernelError, mut tlvs: &[u8]) -> KernelError {
    while let (Some(len), Some(kind)) = (read_u16(tlvs, 0), read_u16(tlvs, 2)) {
        let len = usize::from(len);
        if len < 4 || len > tlvs.len() {
            break;
        }
        let value = &tlvs[4..len];
        match kind & NLA_TYPE_MASK {
            NLMSGERR_ATTR_MSG => {
                let text = value.split(|&b| b == 0).next().unwrap_or(&[]);
                let text = String::from_utf8_lossy(text).into_owned();
                if !text.is_empty() {
                    error = error.with_message(text);
                }
            }
            NLMSGERR_ATTR_OFFS => {
                if let Some(offset) = read_u32(value, 0) {
                    error = error.with_offset(offset);
                }
            }
            _ => {}
        }
        tlvs = &tlvs[nlmsg_align(len).min(tlvs.len())..];
    }
    error
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NLM_F_MULTIPART, NetlinkBuffer};
    use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs};
    use netlink_packet_generic::{GenlFamily, GenlHeader};

    use super::*;

    const CTRL: u16 = 0x10;
    const PORT: u32 = 4242;

    fn get_family(name: &str) -> GenlCtrl {
        GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
        }
    }

    fn new_family(name: &str, id: u16) -> GenlCtrl {
        GenlCtrl {
            cmd: GenlCtrlCmd::NewFamily,
            nlas: vec![
                GenlCtrlAttrs::FamilyName(name.to_owned()),
                GenlCtrlAttrs::FamilyId(id),
            ],
        }
    }

    fn header(len: usize, kind: u16, flags: u16, seq: u32, port: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&port.to_ne_bytes());
        out
    }

    /// A data reply carrying `payload`.
    fn data(seq: u32, flags: u16, payload: &GenlCtrl) -> Vec<u8> {
        let body_len = GENL_HDRLEN + payload.buffer_len();
        let mut out = header(NLMSG_HDRLEN + body_len, CTRL, flags, seq, PORT);
        let mut body = vec![0; body_len];
        GenlHeader {
            cmd: payload.command(),
            version: payload.version(),
        }
        .emit(&mut body[..GENL_HDRLEN]);
        payload.emit(&mut body[GENL_HDRLEN..]);
        out.extend_from_slice(&body);
        pad(out)
    }

    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        pad(out)
    }

    fn pad(mut out: Vec<u8>) -> Vec<u8> {
        out.resize(nlmsg_align(out.len()), 0);
        out
    }

    /// An NLMSG_ERROR (capped echo) with an optional extended-ACK message and offset.
    fn error(seq: u32, code: i32, msg: Option<&str>, offset: Option<u32>) -> Vec<u8> {
        let mut body = code.to_ne_bytes().to_vec();
        body.extend_from_slice(&header(36, CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, 0));
        let mut flags = NLM_F_CAPPED;
        if let Some(msg) = msg {
            let mut value = msg.as_bytes().to_vec();
            value.push(0);
            body.extend_from_slice(&tlv(NLMSGERR_ATTR_MSG, &value));
            flags |= NLM_F_ACK_TLVS;
        }
        if let Some(offset) = offset {
            body.extend_from_slice(&tlv(NLMSGERR_ATTR_OFFS, &offset.to_ne_bytes()));
            flags |= NLM_F_ACK_TLVS;
        }
        let mut out = header(NLMSG_HDRLEN + body.len(), NLMSG_ERROR, flags, seq, PORT);
        out.extend_from_slice(&body);
        out
    }

    fn ack(seq: u32) -> Vec<u8> {
        error(seq, 0, None, None)
    }

    fn done(seq: u32, code: i32) -> Vec<u8> {
        let mut out = header(NLMSG_HDRLEN + 4, NLMSG_DONE, NLM_F_MULTIPART, seq, PORT);
        out.extend_from_slice(&code.to_ne_bytes());
        out
    }

    fn exchange() -> Exchange<GenlCtrl> {
        Exchange::new(CTRL, PORT, 100)
    }

    fn names(replies: &[GenlCtrl]) -> Vec<String> {
        replies
            .iter()
            .flat_map(|r| r.nlas.iter())
            .filter_map(|nla| match nla {
                GenlCtrlAttrs::FamilyName(name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn encodes_requests_back_to_back_with_request_and_ack_flags() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        let a = ex.push(&get_family("a"), 0, &mut out).unwrap();
        let b = ex.push(&get_family("bcdef"), NLM_F_DUMP, &mut out).unwrap();
        assert_eq!((a, b), (100, 101));
        assert_eq!(ex.in_flight(), 2);
        let first = NetlinkBuffer::new_checked(&out[..]).unwrap();
        assert_eq!(first.message_type(), CTRL);
        assert_eq!(first.flags(), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(first.sequence_number(), 100);
        let second_at = nlmsg_align(first.length() as usize);
        let second = NetlinkBuffer::new_checked(&out[second_at..]).unwrap();
        assert_eq!(second.flags(), NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP);
        assert_eq!(second.sequence_number(), 101);
        assert_eq!(out.len(), second_at + nlmsg_align(second.length() as usize));
        // The genl header carries the command and version.
        assert_eq!(out[16], 3); // CTRL_CMD_GETFAMILY
        assert_eq!(out[17], 2);
    }

    #[test]
    fn request_reply_then_ack() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        ex.push(&get_family("nlctrl"), 0, &mut out).unwrap();
        ex.feed(&data(100, 0, &new_family("nlctrl", 16))).unwrap();
        assert_eq!(ex.in_flight(), 1);
        ex.feed(&ack(100)).unwrap();
        assert_eq!(ex.in_flight(), 0);
        let results = ex.finish();
        let replies = results.into_iter().next().unwrap().unwrap();
        assert_eq!(names(&replies), ["nlctrl"]);
    }

    #[test]
    fn interleaved_replies_in_one_datagram_are_matched_by_sequence() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        for name in ["a", "b", "c"] {
            ex.push(&get_family(name), 0, &mut out).unwrap();
        }
        let mut datagram = Vec::new();
        datagram.extend(data(102, 0, &new_family("c", 3)));
        datagram.extend(data(100, 0, &new_family("a", 1)));
        datagram.extend(ack(102));
        datagram.extend(error(101, -2, Some("no such family"), Some(20)));
        datagram.extend(ack(100));
        ex.feed(&datagram).unwrap();
        assert_eq!(ex.in_flight(), 0);
        let results = ex.finish();
        assert_eq!(names(results[0].as_ref().unwrap()), ["a"]);
        match &results[1] {
            Err(TransportError::Kernel(e)) => {
                assert_eq!(e.errno(), 2);
                assert_eq!(e.message(), Some("no such family"));
                assert_eq!(e.offset(), Some(20));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(names(results[2].as_ref().unwrap()), ["c"]);
    }

    #[test]
    fn error_mid_batch_fails_only_that_request() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        for i in 0..10 {
            ex.push(&get_family(&format!("f{i}")), 0, &mut out).unwrap();
        }
        for i in 0..10u32 {
            let reply = if i == 4 {
                error(100 + i, -22, None, None)
            } else {
                ack(100 + i)
            };
            ex.feed(&reply).unwrap();
        }
        let results = ex.finish();
        for (i, result) in results.iter().enumerate() {
            if i == 4 {
                assert_eq!(result.as_ref().unwrap_err().kernel_errno(), Some(22));
            } else {
                assert!(result.as_ref().unwrap().is_empty());
            }
        }
    }

    #[test]
    fn dump_spanning_several_datagrams() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        ex.push(&get_family(""), NLM_F_DUMP, &mut out).unwrap();
        let mut first = data(100, NLM_F_MULTIPART, &new_family("a", 1));
        first.extend(data(100, NLM_F_MULTIPART, &new_family("b", 2)));
        ex.feed(&first).unwrap();
        ex.feed(&data(100, NLM_F_MULTIPART, &new_family("c", 3)))
            .unwrap();
        assert_eq!(ex.in_flight(), 1);
        ex.feed(&done(100, 0)).unwrap();
        assert_eq!(ex.in_flight(), 0);
        let results = ex.finish();
        assert_eq!(names(results[0].as_ref().unwrap()), ["a", "b", "c"]);
        // A stray ACK after DONE belongs to a finished call and is discarded.
        ex.begin();
        ex.feed(&ack(100)).unwrap();
        assert_eq!(ex.discarded(), 1);
    }

    #[test]
    fn dump_intr_is_reported_after_the_dump_ends() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        ex.push(&get_family(""), NLM_F_DUMP, &mut out).unwrap();
        ex.feed(&data(100, NLM_F_MULTIPART, &new_family("a", 1)))
            .unwrap();
        ex.feed(&data(
            100,
            NLM_F_MULTIPART | NLM_F_DUMP_INTR,
            &new_family("b", 2),
        ))
        .unwrap();
        assert_eq!(ex.in_flight(), 1);
        ex.feed(&done(100, 0)).unwrap();
        assert!(matches!(
            ex.finish()[0],
            Err(TransportError::DumpInterrupted)
        ));
    }

    #[test]
    fn dump_ending_with_an_errno_in_done() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        ex.push(&get_family(""), NLM_F_DUMP, &mut out).unwrap();
        let mut done = done(100, -16);
        // Extended ACK after the errno of NLMSG_DONE.
        done[6..8].copy_from_slice(&(NLM_F_MULTIPART | NLM_F_ACK_TLVS).to_ne_bytes());
        done.extend(tlv(NLMSGERR_ATTR_MSG, b"busy\0"));
        let len = done.len() as u32;
        done[..4].copy_from_slice(&len.to_ne_bytes());
        ex.feed(&done).unwrap();
        match &ex.finish()[0] {
            Err(TransportError::Kernel(e)) => {
                assert_eq!(e.errno(), 16);
                assert_eq!(e.message(), Some("busy"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn uncapped_error_skips_the_echoed_request() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        ex.push(&get_family("x"), 0, &mut out).unwrap();
        let mut body = (-2i32).to_ne_bytes().to_vec();
        body.extend_from_slice(&out); // the whole request echoed back
        body.extend(tlv(NLMSGERR_ATTR_MSG, b"missing\0"));
        let mut msg = header(
            NLMSG_HDRLEN + body.len(),
            NLMSG_ERROR,
            NLM_F_ACK_TLVS,
            100,
            PORT,
        );
        msg.extend(body);
        ex.feed(&msg).unwrap();
        match &ex.finish()[0] {
            Err(TransportError::Kernel(e)) => assert_eq!(e.message(), Some("missing")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn stale_replies_of_an_abandoned_call_are_discarded() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        ex.push(&get_family("old"), 0, &mut out).unwrap();
        ex.push(&get_family("old2"), 0, &mut out).unwrap();
        ex.feed(&ack(100)).unwrap();
        // Timed out: a new call starts.
        ex.begin();
        out.clear();
        let seq = ex.push(&get_family("new"), 0, &mut out).unwrap();
        assert_eq!(seq, 102);
        let mut datagram = data(101, 0, &new_family("old2", 9));
        datagram.extend(ack(101));
        datagram.extend(data(102, 0, &new_family("new", 7)));
        ex.feed(&datagram).unwrap();
        ex.feed(&ack(102)).unwrap();
        assert_eq!(ex.discarded(), 2);
        assert_eq!(names(ex.finish()[0].as_ref().unwrap()), ["new"]);
    }

    #[test]
    fn abandoned_dump_is_drained_until_its_end() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        ex.push(&get_family(""), NLM_F_DUMP, &mut out).unwrap();
        ex.feed(&data(100, NLM_F_MULTIPART, &new_family("a", 1)))
            .unwrap();
        ex.begin();
        assert!(ex.draining());
        ex.feed(&data(100, NLM_F_MULTIPART, &new_family("b", 2)))
            .unwrap();
        assert!(ex.draining());
        ex.feed(&done(100, 0)).unwrap();
        assert!(!ex.draining());
    }

    #[test]
    fn successor_keeps_sequence_numbers_and_staleness() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        ex.push(&get_family("x"), 0, &mut out).unwrap();
        let mut next: Exchange<GenlCtrl> = ex.successor(0x20);
        next.begin();
        assert_eq!(next.push(&get_family("y"), 0, &mut out).unwrap(), 101);
        next.feed(&ack(100)).unwrap();
        assert_eq!(next.discarded(), 1);
    }

    #[test]
    fn never_issued_sequence_and_foreign_port_are_protocol_errors() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        ex.push(&get_family("x"), 0, &mut out).unwrap();
        assert!(matches!(
            ex.feed(&ack(5000)),
            Err(TransportError::Protocol { .. })
        ));
        let mut foreign = ack(100);
        foreign[12..16].copy_from_slice(&7u32.to_ne_bytes());
        assert!(matches!(
            ex.feed(&foreign),
            Err(TransportError::Protocol { .. })
        ));
        // Notifications (seq 0) are ignored.
        ex.feed(&ack(0)).unwrap();
        assert_eq!(ex.in_flight(), 1);
    }

    #[test]
    fn unparseable_reply_fails_its_request_not_the_call() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        ex.push(&get_family("x"), 0, &mut out).unwrap();
        ex.push(&get_family("y"), 0, &mut out).unwrap();
        // A genl header with an unknown ctrl command, then a truncated attribute.
        let mut bad = header(NLMSG_HDRLEN + 8, CTRL, 0, 100, PORT);
        bad.extend_from_slice(&[0xee, 2, 0, 0, 9, 0, 1, 0]);
        ex.feed(&bad).unwrap();
        ex.feed(&ack(100)).unwrap();
        ex.feed(&ack(101)).unwrap();
        let results = ex.finish();
        assert!(matches!(results[0], Err(TransportError::Decode { .. })));
        assert!(results[1].is_ok());
    }

    #[test]
    fn overrun_message_is_an_error() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        ex.push(&get_family("x"), 0, &mut out).unwrap();
        let msg = header(NLMSG_HDRLEN, NLMSG_OVERRUN, 0, 100, PORT);
        assert!(matches!(ex.feed(&msg), Err(TransportError::Overrun)));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let mut ex = exchange();
        let mut out = Vec::new();
        ex.begin();
        ex.push(&get_family("x"), NLM_F_DUMP, &mut out).unwrap();
        // Short datagram, zero length, length beyond the end.
        assert!(ex.feed(&[1, 2, 3]).is_err());
        assert!(ex.feed(&header(0, CTRL, 0, 100, PORT)).is_err());
        assert!(ex.feed(&header(64, CTRL, 0, 100, PORT)).is_err());
        // Error message too short for its code.
        let short = header(NLMSG_HDRLEN + 2, NLMSG_ERROR, 0, 100, PORT);
        let mut short = short;
        short.extend_from_slice(&[0, 0, 0, 0]);
        short[..4].copy_from_slice(&18u32.to_ne_bytes());
        ex.feed(&short).unwrap();
        assert!(matches!(ex.finish()[0], Err(TransportError::Decode { .. })));

        // Pseudo-random bytes, with a plausible header, of every length up to 300.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..300usize {
            ex.begin();
            ex.push(&get_family("x"), NLM_F_DUMP, &mut out).unwrap();
            let seq = ex.base_seq;
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if len >= NLMSG_HDRLEN {
                bytes[..4].copy_from_slice(&(len as u32).to_ne_bytes());
                bytes[4..6]
                    .copy_from_slice(&[CTRL, NLMSG_ERROR, NLMSG_DONE][len % 3].to_ne_bytes());
                bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
                bytes[12..16].copy_from_slice(&PORT.to_ne_bytes());
            }
            let _ = ex.feed(&bytes);
            let _ = ex.finish();
        }
    }

    #[test]
    fn a_call_whose_sequence_numbers_wrap_matches_each_reply_to_its_request() {
        let mut ex: Exchange<GenlCtrl> = Exchange::new(CTRL, PORT, u32::MAX - 1);
        let mut out = Vec::new();
        ex.begin();
        let seqs: Vec<u32> = (0..4)
            .map(|_| ex.push(&get_family("x"), 0, &mut out).unwrap())
            .collect();
        // 0 is skipped: it is what notifications carry.
        assert_eq!(seqs, [u32::MAX - 1, u32::MAX, 1, 2]);
        // Each request gets its own answer, whichever side of the wrap it is on.
        for (i, seq) in seqs.iter().enumerate() {
            ex.feed(&error(*seq, -(i as i32 + 1), None, None)).unwrap();
        }
        assert_eq!(ex.in_flight(), 0);
        let errnos: Vec<i32> = ex
            .finish()
            .into_iter()
            .map(|r| match r {
                Err(TransportError::Kernel(e)) => e.errno(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(errnos, [1, 2, 3, 4]);
        assert_eq!(ex.discarded(), 0);
        // The next call goes on from 3; a late reply to the wrapped call is stale.
        ex.begin();
        assert_eq!(ex.push(&get_family("x"), 0, &mut out).unwrap(), 3);
        ex.feed(&error(1, 0, None, None)).unwrap();
        assert_eq!(ex.discarded(), 1);
        assert_eq!(ex.in_flight(), 1);
    }

    #[test]
    fn unacknowledged_requests_are_settled_by_the_answer_to_a_later_one() {
        let mut ex: Exchange<GenlCtrl> = Exchange::new(CTRL, PORT, 10);
        let mut out = Vec::new();
        ex.begin();
        let quiet: Vec<u32> = (0..3)
            .map(|_| {
                ex.push_unacknowledged(&get_family("x"), 0, &mut out)
                    .unwrap()
            })
            .collect();
        let barrier = ex.push(&get_family("x"), 0, &mut out).unwrap();
        assert_eq!((quiet.clone(), barrier), (vec![10, 11, 12], 13));
        // Only the barrier asks for an acknowledgement.
        let mut flags = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let header = parse_header(rest);
            flags.push(header.flags);
            rest = &rest[nlmsg_align(header.length as usize)..];
        }
        assert_eq!(
            flags,
            [
                NLM_F_REQUEST,
                NLM_F_REQUEST,
                NLM_F_REQUEST,
                NLM_F_REQUEST | NLM_F_ACK
            ]
        );
        assert_eq!(ex.in_flight(), 4);
        // An error for the second; nothing for the others until the barrier's answer.
        ex.feed(&error(11, -22, None, None)).unwrap();
        assert_eq!(
            ex.in_flight(),
            2,
            "the second is answered, and the first settled by that answer"
        );
        ex.feed(&error(13, 0, None, None)).unwrap();
        assert_eq!(ex.in_flight(), 0);
        let results = ex.finish();
        assert!(results[0].is_ok());
        assert!(matches!(&results[1], Err(TransportError::Kernel(e)) if e.errno() == 22));
        assert!(results[2].is_ok());
        assert!(results[3].is_ok());

        // Without a later answer, an unacknowledged request stays in flight.
        ex.begin();
        ex.push_unacknowledged(&get_family("x"), 0, &mut out)
            .unwrap();
        assert_eq!(ex.in_flight(), 1);
        assert!(ex.finish()[0].is_err());
        // A dump is always answered.
        ex.begin();
        assert!(
            ex.push_unacknowledged(&get_family("x"), NLM_F_DUMP, &mut out)
                .is_err()
        );
    }
}
