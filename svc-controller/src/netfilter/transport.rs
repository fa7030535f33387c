//! nftables over netlink: transactions that apply whole or not at all, and listings.
//!
//! nftables is programmed with nfnetlink messages on a `NETLINK_NETFILTER` socket. A change
//! is a *batch*: a `BATCH_BEGIN` message, the changes, a `BATCH_END` message, all in one
//! datagram. The kernel checks every change, then commits them together, or, if any fails,
//! applies none and answers each failed message with its error: a reader of the ruleset never
//! sees half a change.
//!
//! The kernel answers a batch's messages only when they fail: an acknowledgement each would
//! be thousands of answers for a large sync, more than a receive buffer holds. So each is sent
//! unacknowledged ([`Exchange::push_unacknowledged`]), and the batch is followed, in a second
//! datagram (the kernel ignores anything after `BATCH_END` in the first), by a request that is
//! acknowledged: its answer comes after every error of the batch, so it settles the batch.
//! The numbering of the requests and the matching of the answers are the library's sans-IO
//! [`Exchange`], the one the IPVS connections and the rtnetlink batches run.

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ipvs::transport::exchange::Exchange;
use ipvs::transport::{KernelError, Payload, ReplyError, TransportError};
use netlink_packet_netfilter::nftables::{
    DataAttribute, GenAttribute, GenMessage, ListAttribute, NfTablesMessage, RuleAttribute,
    RuleMessage, SetElementAttribute, SetElementList, SetElementMessage, TableAttribute,
    TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    NetfilterSubsystem,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{setsockopt, sockopt};
// The versions `netlink-packet-netfilter` is built with (the same as `rtnetlink`'s).
use rtnetlink::packet_core::{
    DecodeError, DefaultNla, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NetlinkDeserializable,
    NetlinkHeader, NetlinkSerializable, NlasIterator,
};
use rtnetlink::sys::{Socket, protocols::NETLINK_NETFILTER};

/// The receive buffer asked for (the kernel caps it at `net.core.rmem_max`, and doubles it).
const RECV_BUFFER: usize = 1 << 20;

/// How long the kernel's answers are waited for. The kernel answers inside the `sendmsg`
/// (and a listing as it is read), so this bounds only a kernel that misbehaves.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// An nfnetlink message as the library's [`Exchange`] carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nfnl(pub NetfilterMessage);

impl Payload for Nfnl {
    fn message_type(&self, _family_id: u16) -> u16 {
        NetlinkSerializable::message_type(&self.0)
    }

    fn payload_len(&self) -> usize {
        NetlinkSerializable::buffer_len(&self.0)
    }

    fn emit_payload(&self, buf: &mut [u8]) {
        self.0.serialize(buf);
    }

    fn parse_reply(message_type: u16, _family_id: u16, payload: &[u8]) -> Result<Self, ReplyError> {
        if message_type == NEW_SET_ELEMENT {
            return parse_set_elements(payload)
                .map(Self)
                .map_err(ReplyError::Decode);
        }
        let mut header = NetlinkHeader::default();
        header.message_type = message_type;
        NetfilterMessage::deserialize(&header, payload)
            .map(Self)
            .map_err(ReplyError::Decode)
    }
}

/// `NFT_MSG_NEWSETELEM` of the nftables subsystem, as a message's netlink type.
const NEW_SET_ELEMENT: u16 = (10 << 8) | 12;

/// `NFTA_SET_ELEM_LIST_TABLE`, `_SET`, `_ELEMENTS`; `NFTA_SET_ELEM_KEY`; `NFTA_DATA_VALUE`.
const LIST_TABLE: u16 = 1;
const LIST_SET: u16 = 2;
const LIST_ELEMENTS: u16 = 3;
const ELEMENT_KEY: u16 = 1;
/// `NFTA_SET_ELEM_KEY_END`: the last key of a range.
const ELEMENT_KEY_END: u16 = 10;
const DATA_VALUE: u16 = 1;

/// Reads a set-element message (a listing's reply) for its table, set and element keys.
/// `netlink-packet-netfilter`'s parser spends far longer on a message of several hundred
/// elements (what a listing brings) than the kernel takes to list them: this walks the
/// attributes once and keeps only the keys.
fn parse_set_elements(payload: &[u8]) -> Result<NetfilterMessage, DecodeError> {
    let header = NetfilterHeader::parse(payload)?;
    let string = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes.strip_suffix(&[0]).unwrap_or(bytes)).into_owned()
    };
    let mut attributes = Vec::new();
    let mut elements = Vec::new();
    for nla in NlasIterator::new(payload.get(4..).unwrap_or_default()) {
        let nla = nla?;
        match nla.kind() {
            LIST_TABLE => attributes.push(SetElementList::Table(string(nla.value()))),
            LIST_SET => attributes.push(SetElementList::Set(string(nla.value()))),
            LIST_ELEMENTS => {
                for element in NlasIterator::new(nla.value()) {
                    let element = element?;
                    let mut attributes = Vec::with_capacity(1);
                    for attribute in NlasIterator::new(element.value()) {
                        let attribute = attribute?;
                        let kind = attribute.kind();
                        if kind != ELEMENT_KEY && kind != ELEMENT_KEY_END {
                            continue;
                        }
                        for data in NlasIterator::new(attribute.value()) {
                            let data = data?;
                            if data.kind() != DATA_VALUE {
                                continue;
                            }
                            attributes.push(if kind == ELEMENT_KEY {
                                SetElementAttribute::Key(DataAttribute::Value(
                                    data.value().to_vec(),
                                ))
                            } else {
                                SetElementAttribute::KeyEnd(vec![DefaultNla::new(
                                    DATA_VALUE,
                                    data.value().to_vec(),
                                )])
                            });
                        }
                    }
                    if !attributes.is_empty() {
                        elements.push(ListAttribute::Element(attributes));
                    }
                }
            }
            _ => {}
        }
    }
    attributes.push(SetElementList::Elements(elements));
    Ok(NetfilterMessage::new(
        header,
        NfTablesMessage::NewSetElement(SetElementMessage { attributes }),
    ))
}

impl Nfnl {
    /// An nftables message about an object of `family`.
    pub fn nftables(family: NetfilterProtoFamily, message: NfTablesMessage) -> Self {
        let header = NetfilterHeader::new(family, 0, 0);
        Self(NetfilterMessage::new(header, message))
    }

    /// A batch delimiter for the nftables subsystem.
    fn batch(control: ControlMessage) -> Self {
        let subsystem = u16::from(u8::from(NetfilterSubsystem::NfTables));
        let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, subsystem);
        Self(NetfilterMessage::new(header, control))
    }

    /// The nftables message it carries, if it is one.
    pub fn as_nftables(&self) -> Option<&NfTablesMessage> {
        match &self.0.inner {
            NetfilterMessageInner::NfTables(message) => Some(message),
            _ => None,
        }
    }
}

/// One change of a transaction: a message and the netlink flags it is sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The message.
    pub message: Nfnl,
    /// Its flags besides `NLM_F_REQUEST` (`NLM_F_CREATE`, `NLM_F_APPEND`, ...).
    pub flags: u16,
}

impl Change {
    /// Adds what `message` names (a `New*` message): a table, chain, set or set element is
    /// created, or kept as it is when it exists; a rule is appended to its chain.
    pub fn add(family: NetfilterProtoFamily, message: NfTablesMessage) -> Self {
        let flags = match message {
            NfTablesMessage::NewRule(_) => NLM_F_CREATE | NLM_F_APPEND,
            _ => NLM_F_CREATE,
        };
        Self {
            message: Nfnl::nftables(family, message),
            flags,
        }
    }

    /// Deletes what `message` names (a `Delete*` message).
    pub fn delete(family: NetfilterProtoFamily, message: NfTablesMessage) -> Self {
        Self {
            message: Nfnl::nftables(family, message),
            flags: 0,
        }
    }
}

/// Why a transaction or a listing failed.
#[derive(Debug, thiserror::Error)]
pub enum NfnlError {
    /// The kernel refused a change of the transaction: none of it was applied.
    #[error("nftables refused change {index} of the transaction ({change}): {source}")]
    Refused {
        /// The change's position in the transaction.
        index: usize,
        /// The change, for the log.
        change: String,
        /// The kernel's error.
        #[source]
        source: KernelError,
    },
    /// The kernel refused the batch itself (its delimiters): none of it was applied.
    #[error("nftables refused the transaction: {0}")]
    Batch(#[source] KernelError),
    /// The socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The kernel's answers broke the netlink protocol, or did not come.
    #[error("{context}: {source}")]
    Answers {
        /// What was being done.
        context: &'static str,
        /// The error.
        #[source]
        source: TransportError,
    },
    /// The kernel answered a generation request without a generation.
    #[error("the kernel's answer to a generation request names no generation")]
    NoGeneration,
}

/// A `NETLINK_NETFILTER` socket, in the network namespace it was opened in: nftables
/// transactions and listings here, conntrack's in [`conntrack`](super::conntrack).
#[derive(Debug)]
pub struct NfnlSocket {
    socket: Socket,
    exchange: Exchange<Nfnl>,
    send: Vec<u8>,
    recv: Vec<u8>,
    /// The largest datagram the send buffer was sized for.
    send_capacity: usize,
}

impl NfnlSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let (socket, port_id) = crate::dataplane::batch_socket(NETLINK_NETFILTER, RECV_BUFFER)?;
        Ok(Self {
            socket,
            // nfnetlink has no family to resolve: each message names its subsystem and type.
            exchange: Exchange::new(0, port_id, 1),
            send: Vec::new(),
            recv: Vec::with_capacity(64 << 10),
            send_capacity: 0,
        })
    }

    /// Applies `changes` as one transaction: all of them, or, when the kernel refuses any,
    /// none (the first refused one is the error).
    pub fn transact(&mut self, changes: &[Change]) -> Result<(), NfnlError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.exchange.begin();
        self.send.clear();
        let pushed = (|| {
            let exchange = &mut self.exchange;
            exchange.push_unacknowledged(
                &Nfnl::batch(ControlMessage::BatchBegin),
                0,
                &mut self.send,
            )?;
            for change in changes {
                exchange.push_unacknowledged(&change.message, change.flags, &mut self.send)?;
            }
            exchange.push_unacknowledged(&Nfnl::batch(ControlMessage::BatchEnd), 0, &mut self.send)
        })();
        pushed.map_err(|source| self.fail("encoding the transaction", source))?;
        self.fit_send_buffer();
        self.send_buffer("sending the transaction")?;
        // The settling request: the generation the kernel is at, acknowledged.
        self.send.clear();
        let barrier = Nfnl::nftables(
            NetfilterProtoFamily::Unspec,
            NfTablesMessage::GetGen(GenMessage { attributes: vec![] }),
        );
        self.exchange
            .push(&barrier, 0, &mut self.send)
            .map_err(|source| self.fail("encoding the transaction's barrier", source))?;
        self.send_buffer("sending the transaction's barrier")?;
        self.wait("waiting for the transaction's answers")?;
        let results = self.exchange.finish();
        let last = results.len() - 1;
        for (index, result) in results.into_iter().enumerate() {
            match result {
                Ok(_) => {}
                Err(TransportError::Kernel(source)) if index == 0 || index == last - 1 => {
                    return Err(NfnlError::Batch(source));
                }
                Err(TransportError::Kernel(source)) if index < last => {
                    let change = &changes[index - 1];
                    return Err(NfnlError::Refused {
                        index: index - 1,
                        change: format!("{:?}", change.message.0.inner),
                        source,
                    });
                }
                Err(source) => {
                    return Err(NfnlError::Answers {
                        context: "the transaction's answers",
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// The ruleset's generation: a number the kernel changes with every transaction it
    /// commits in this network namespace, of any table, whoever sends it. The same number
    /// twice means nothing in nftables changed in between.
    pub fn generation(&mut self) -> Result<u32, NfnlError> {
        const CONTEXT: &str = "reading the nftables generation";
        let request = Nfnl::nftables(
            NetfilterProtoFamily::Unspec,
            NfTablesMessage::GetGen(GenMessage { attributes: vec![] }),
        );
        self.exchange.begin();
        self.send.clear();
        self.exchange
            .push(&request, 0, &mut self.send)
            .map_err(|source| self.fail(CONTEXT, source))?;
        self.send_buffer(CONTEXT)?;
        self.wait(CONTEXT)?;
        let replies = self
            .exchange
            .finish_one()
            .map_err(|source| NfnlError::Answers {
                context: CONTEXT,
                source,
            })?;
        replies
            .iter()
            .find_map(|reply| match reply.as_nftables() {
                Some(NfTablesMessage::NewGen(generation)) => {
                    generation.attributes.iter().find_map(|a| match a {
                        GenAttribute::Id(id) => Some(*id),
                        _ => None,
                    })
                }
                _ => None,
            })
            .ok_or(NfnlError::NoGeneration)
    }

    /// The tables of every family: (family, name).
    pub fn tables(&mut self) -> Result<Vec<(NetfilterProtoFamily, String)>, NfnlError> {
        let request = Nfnl::nftables(
            NetfilterProtoFamily::Unspec,
            NfTablesMessage::GetTable(TableMessage { attributes: vec![] }),
        );
        let replies = self.dump(&request, "listing the nftables tables")?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply.as_nftables() {
                Some(NfTablesMessage::NewTable(table)) => {
                    let name = table.attributes.iter().find_map(|a| match a {
                        TableAttribute::Name(name) => Some(name.clone()),
                        _ => None,
                    })?;
                    Some((reply.0.header.family, name))
                }
                _ => None,
            })
            .collect())
    }

    /// The keys of the elements of `set` in `table`.
    pub fn set_keys(
        &mut self,
        family: NetfilterProtoFamily,
        table: &str,
        set: &str,
    ) -> Result<Vec<Vec<u8>>, NfnlError> {
        let request = Nfnl::nftables(
            family,
            NfTablesMessage::GetSetElement(SetElementMessage {
                attributes: vec![
                    SetElementList::Table(table.into()),
                    SetElementList::Set(set.into()),
                ],
            }),
        );
        let replies = self.dump(&request, "listing an nftables set")?;
        let mut keys = Vec::new();
        for reply in &replies {
            if let Some(NfTablesMessage::NewSetElement(message)) = reply.as_nftables() {
                keys.extend(super::table::element_keys(message).1);
            }
        }
        Ok(keys)
    }

    /// The comments of the rules of `table`, per chain in order (rules without one have an
    /// empty comment).
    pub fn rule_comments(
        &mut self,
        family: NetfilterProtoFamily,
        table: &str,
    ) -> Result<super::rules::RuleComments, NfnlError> {
        let request = Nfnl::nftables(
            family,
            NfTablesMessage::GetRule(RuleMessage {
                attributes: vec![RuleAttribute::Table(table.into())],
            }),
        );
        let replies = self.dump(&request, "listing nftables rules")?;
        let mut comments = super::rules::RuleComments::new();
        for reply in &replies {
            if let Some(NfTablesMessage::NewRule(rule)) = reply.as_nftables()
                && let Some((chain, comment)) = super::rules::rule_comment(rule)
            {
                comments
                    .entry(chain.to_owned())
                    .or_default()
                    .push(comment.to_vec());
            }
        }
        Ok(comments)
    }

    /// Sends `requests`, each acknowledged, and returns each one's result.
    pub(super) fn acknowledged(
        &mut self,
        requests: &[Nfnl],
        context: &'static str,
    ) -> Result<Vec<Result<(), TransportError>>, NfnlError> {
        self.exchange.begin();
        self.send.clear();
        for request in requests {
            self.exchange
                .push(request, 0, &mut self.send)
                .map_err(|source| self.fail(context, source))?;
        }
        self.fit_send_buffer();
        self.send_buffer(context)?;
        self.wait(context)?;
        Ok(self
            .exchange
            .finish()
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect())
    }

    /// Runs one dump and returns its replies.
    pub(super) fn dump(
        &mut self,
        request: &Nfnl,
        context: &'static str,
    ) -> Result<Vec<Nfnl>, NfnlError> {
        self.exchange.begin();
        self.send.clear();
        self.exchange
            .push(request, NLM_F_DUMP, &mut self.send)
            .map_err(|source| self.fail(context, source))?;
        self.send_buffer(context)?;
        self.wait(context)?;
        self.exchange
            .finish_one()
            .map_err(|source| NfnlError::Answers { context, source })
    }

    /// Abandons the call under way and describes why.
    fn fail(&mut self, context: &'static str, source: TransportError) -> NfnlError {
        self.exchange.abandon();
        NfnlError::Answers { context, source }
    }

    /// Sizes the socket's send buffer for the datagram in the send buffer: a transaction is
    /// one datagram however large (the kernel aborts a batch that does not end in the
    /// datagram it began in), and the kernel refuses a datagram larger than the buffer. With
    /// `CAP_NET_ADMIN` the size is forced past `net.core.wmem_max`; without, it is asked for
    /// (and capped), and a datagram still too large fails with the kernel's error.
    fn fit_send_buffer(&mut self) {
        let needed = self.send.len() + 4096;
        if needed <= self.send_capacity {
            return;
        }
        // The kernel doubles the value for its bookkeeping, and counts the datagram against it.
        let fd = self.socket.as_fd();
        if setsockopt(&fd, sockopt::SndBufForce, &needed).is_err() {
            let _ = setsockopt(&fd, sockopt::SndBuf, &needed);
        }
        self.send_capacity = needed;
    }

    /// Sends the send buffer as one datagram.
    fn send_buffer(&mut self, context: &'static str) -> Result<(), NfnlError> {
        let sent = loop {
            match self.socket.send(&self.send, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let result = match sent {
            Ok(n) if n == self.send.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!(
                "sent {n} of {} bytes",
                self.send.len()
            ))),
            Err(e) => Err(e),
        };
        result.map_err(|source| {
            self.exchange.abandon();
            NfnlError::Io { context, source }
        })
    }

    /// Reads answers into the exchange until the call under way has all of them.
    fn wait(&mut self, context: &'static str) -> Result<(), NfnlError> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        while self.exchange.in_flight() > 0 {
            self.recv.clear();
            match self.socket.recv(&mut self.recv, 0) {
                Ok(_) => {
                    if let Err(source) = self.exchange.feed(&self.recv) {
                        return Err(self.fail(context, source));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.exchange.abandon();
                        return Err(NfnlError::Io {
                            context,
                            source: io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the kernel did not answer",
                            ),
                        });
                    }
                    let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                    let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, PollTimeout::from(millis)) {
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(errno) => {
                            self.exchange.abandon();
                            return Err(NfnlError::Io {
                                context,
                                source: io::Error::from(errno),
                            });
                        }
                    }
                }
                Err(source) => {
                    self.exchange.abandon();
                    return Err(NfnlError::Io { context, source });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_netfilter::nftables::{ChainAttribute, ChainMessage};
    use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};

    use super::*;

    fn table(name: &str) -> NfTablesMessage {
        NfTablesMessage::NewTable(TableMessage {
            attributes: vec![TableAttribute::Name(name.into())],
        })
    }

    /// The messages of a datagram, with their headers.
    fn messages(mut datagram: &[u8]) -> Vec<NetlinkMessage<NetfilterMessage>> {
        let mut out = Vec::new();
        while !datagram.is_empty() {
            let message = NetlinkMessage::<NetfilterMessage>::deserialize(datagram).unwrap();
            datagram = &datagram[(message.header.length as usize).div_ceil(4) * 4..];
            out.push(message);
        }
        out
    }

    #[test]
    fn a_batch_delimiter_is_the_kernels_own_bytes() {
        // `BATCH_BEGIN` as `nft` sends it: type 0x10, NLM_F_REQUEST, family unspec, version 0,
        // res_id NFNL_SUBSYS_NFTABLES (10) in network order.
        let mut exchange: Exchange<Nfnl> = Exchange::new(0, 0, 7);
        let mut out = Vec::new();
        exchange.begin();
        exchange
            .push_unacknowledged(&Nfnl::batch(ControlMessage::BatchBegin), 0, &mut out)
            .unwrap();
        assert_eq!(
            out,
            [
                0x14, 0, 0, 0, 0x10, 0, 0x01, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a
            ]
        );
    }

    #[test]
    fn changes_carry_their_family_and_create_or_append_without_asking_for_an_ack() {
        let mut exchange: Exchange<Nfnl> = Exchange::new(0, 0, 1);
        let mut out = Vec::new();
        exchange.begin();
        let chain = NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table("t".into()),
                ChainAttribute::Name("c".into()),
            ],
        });
        let changes = [
            Change::add(NetfilterProtoFamily::Inet, table("t")),
            Change::add(NetfilterProtoFamily::Inet, chain.clone()),
            Change::delete(
                NetfilterProtoFamily::IPv4,
                NfTablesMessage::DeleteTable(TableMessage {
                    attributes: vec![TableAttribute::Name("old".into())],
                }),
            ),
        ];
        for change in &changes {
            exchange
                .push_unacknowledged(&change.message, change.flags, &mut out)
                .unwrap();
        }
        let sent = messages(&out);
        let flags: Vec<u16> = sent.iter().map(|m| m.header.flags).collect();
        assert_eq!(
            flags,
            [
                NLM_F_REQUEST | NLM_F_CREATE,
                NLM_F_REQUEST | NLM_F_CREATE,
                NLM_F_REQUEST
            ]
        );
        assert!(flags.iter().all(|f| f & NLM_F_ACK == 0));
        for (message, change) in sent.iter().zip(&changes) {
            assert_eq!(
                message.payload,
                NetlinkPayload::InnerMessage(change.message.0.clone())
            );
        }
        assert_eq!(
            sent[1].header.message_type,
            (10 << 8) | 3,
            "NFT_MSG_NEWCHAIN"
        );
        let rule = Change::add(
            NetfilterProtoFamily::Inet,
            NfTablesMessage::NewRule(netlink_packet_netfilter::nftables::RuleMessage {
                attributes: vec![],
            }),
        );
        assert_eq!(rule.flags, NLM_F_CREATE | NLM_F_APPEND);
    }

    #[test]
    fn a_set_element_reply_is_read_for_its_keys() {
        let keys: Vec<Vec<u8>> = (0..600u16).map(|i| i.to_be_bytes().repeat(2)).collect();
        let reply = Nfnl::nftables(
            NetfilterProtoFamily::Inet,
            NfTablesMessage::NewSetElement(SetElementMessage {
                attributes: vec![
                    SetElementList::Table("ipvs-proxy".into()),
                    SetElementList::Set("vips-v4".into()),
                    SetElementList::Elements(
                        keys.iter()
                            .map(|key| {
                                ListAttribute::Element(vec![SetElementAttribute::Key(
                                    DataAttribute::Value(key.clone()),
                                )])
                            })
                            .collect(),
                    ),
                ],
            }),
        );
        let mut bytes = vec![0; reply.payload_len()];
        reply.emit_payload(&mut bytes);
        assert_eq!(reply.message_type(0), NEW_SET_ELEMENT);
        let back = Nfnl::parse_reply(NEW_SET_ELEMENT, 0, &bytes).unwrap();
        assert_eq!(back, reply);
        // Cut short: an error, not a panic.
        assert!(Nfnl::parse_reply(NEW_SET_ELEMENT, 0, &bytes[..bytes.len() - 3]).is_err());
        assert!(Nfnl::parse_reply(NEW_SET_ELEMENT, 0, &bytes[..2]).is_err());
    }

    #[test]
    fn a_listing_reply_decodes_as_nftables() {
        let reply = Nfnl::nftables(NetfilterProtoFamily::Inet, table("ipvs-proxy"));
        let mut bytes = vec![0; reply.payload_len()];
        reply.emit_payload(&mut bytes);
        let back = Nfnl::parse_reply(reply.message_type(0), 0, &bytes).unwrap();
        assert_eq!(back, reply);
        assert!(matches!(
            back.as_nftables(),
            Some(NfTablesMessage::NewTable(_))
        ));
        assert!(matches!(
            Nfnl::parse_reply(reply.message_type(0), 0, &bytes[..2]),
            Err(ReplyError::Decode(_))
        ));
    }

    /// Needs a network namespace and nf_tables: run in the VM by `cargo xtask test`.
    mod real_kernel {
        use std::process::Command;

        use integration::Netns;
        use netlink_packet_netfilter::nftables::{ChainAttribute, ChainMessage};

        use super::super::*;

        fn add_table(name: &str) -> Change {
            Change::add(
                NetfilterProtoFamily::Inet,
                NfTablesMessage::NewTable(TableMessage {
                    attributes: vec![TableAttribute::Name(name.into())],
                }),
            )
        }

        fn has(
            tables: &[(NetfilterProtoFamily, String)],
            family: NetfilterProtoFamily,
            name: &str,
        ) -> bool {
            tables.iter().any(|(f, n)| *f == family && n == name)
        }

        #[test]
        #[ignore = "real kernel: run by cargo xtask test"]
        fn the_generation_moves_with_every_commit_of_anyone_only() {
            Netns::new("nft-gen")
                .expect("a fresh namespace")
                .run(|| {
                    let mut nft = NfnlSocket::open().unwrap();
                    let first = nft.generation().unwrap();
                    assert_eq!(
                        nft.generation().unwrap(),
                        first,
                        "no commit, same generation"
                    );
                    nft.tables().unwrap();
                    assert_eq!(
                        nft.generation().unwrap(),
                        first,
                        "a listing commits nothing"
                    );
                    nft.transact(&[add_table("ipvs-proxy")]).unwrap();
                    let ours = nft.generation().unwrap();
                    assert_ne!(ours, first, "our commit");
                    // Another tool's commit, through another socket.
                    let status = Command::new("nft")
                        .args(["add", "table", "ip", "theirs"])
                        .status()
                        .expect("nft runs");
                    assert!(status.success());
                    assert_ne!(nft.generation().unwrap(), ours, "another tool's commit");
                })
                .unwrap();
        }

        #[test]
        #[ignore = "real kernel: run by cargo xtask test"]
        fn a_transaction_applies_whole_or_not_at_all() {
            Netns::new("nft-tx")
                .expect("a fresh namespace")
                .run(|| {
                    let mut nft = NfnlSocket::open().unwrap();
                    nft.transact(&[add_table("one")]).unwrap();
                    assert!(has(&nft.tables().unwrap(), NetfilterProtoFamily::Inet, "one"));
                    // Adding what exists keeps it.
                    nft.transact(&[add_table("one")]).unwrap();
                    // A table, then a chain in a table that does not exist: refused, and the
                    // table is not created either.
                    let orphan = Change::add(
                        NetfilterProtoFamily::Inet,
                        NfTablesMessage::NewChain(ChainMessage {
                            attributes: vec![
                                ChainAttribute::Table("missing".into()),
                                ChainAttribute::Name("c".into()),
                            ],
                        }),
                    );
                    let error = nft.transact(&[add_table("two"), orphan]).unwrap_err();
                    assert!(
                        matches!(&error, NfnlError::Refused { index: 1, source, .. } if source.errno() == 2),
                        "{error}"
                    );
                    let tables = nft.tables().unwrap();
                    assert!(!has(&tables, NetfilterProtoFamily::Inet, "two"), "{tables:?}");
                    assert!(has(&tables, NetfilterProtoFamily::Inet, "one"));
                    // The socket goes on after a refusal.
                    nft.transact(&[add_table("two")]).unwrap();
                    assert!(has(&nft.tables().unwrap(), NetfilterProtoFamily::Inet, "two"));
                })
                .expect("the test body ran");
        }

        #[test]
        #[ignore = "real kernel: run by cargo xtask test"]
        fn deleting_a_table_leaves_another_tools_tables_alone() {
            Netns::new("nft-own")
                .expect("a fresh namespace")
                .run(|| {
                    // Another tool's table: iptables-nft's `ip filter`.
                    let status = Command::new("iptables")
                        .args(["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"])
                        .status()
                        .expect("iptables runs");
                    assert!(status.success());
                    let mut nft = NfnlSocket::open().unwrap();
                    nft.transact(&[add_table("ipvs-proxy")]).unwrap();
                    let tables = nft.tables().unwrap();
                    assert!(
                        has(&tables, NetfilterProtoFamily::IPv4, "filter"),
                        "{tables:?}"
                    );
                    assert!(has(&tables, NetfilterProtoFamily::Inet, "ipvs-proxy"));
                    let delete = Change::delete(
                        NetfilterProtoFamily::Inet,
                        NfTablesMessage::DeleteTable(TableMessage {
                            attributes: vec![TableAttribute::Name("ipvs-proxy".into())],
                        }),
                    );
                    nft.transact(&[delete]).unwrap();
                    let tables = nft.tables().unwrap();
                    assert!(!has(&tables, NetfilterProtoFamily::Inet, "ipvs-proxy"));
                    assert!(
                        has(&tables, NetfilterProtoFamily::IPv4, "filter"),
                        "{tables:?}"
                    );
                    let rules = Command::new("iptables")
                        .args(["-S", "INPUT"])
                        .output()
                        .unwrap();
                    let rules = String::from_utf8_lossy(&rules.stdout);
                    assert!(rules.contains("--dport 22 -j ACCEPT"), "{rules}");
                })
                .expect("the test body ran");
        }
    }
}
