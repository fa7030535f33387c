//! Opening the generic-netlink socket, in the current or another network namespace,
//! and the non-blocking `send`/`recv` primitives both drivers share.
//!
//! # What the socket is set up for
//!
//! * `NETLINK_GENERIC`, bound to a kernel-assigned port id (replies carry it, and the
//!   exchange checks it) and connected to the kernel (port 0), non-blocking, close-on-exec.
//! * `NETLINK_EXT_ACK`: errors carry the kernel's explanation (`NLMSGERR_ATTR_MSG`).
//!   `NETLINK_CAP_ACK`: error messages echo only the request's header, not the whole
//!   request, so a batch's ACKs stay small. Both are best effort (older kernels lack them).
//! * A large receive buffer: `SO_RCVBUFFORCE` (needs `CAP_NET_ADMIN`), else `SO_RCVBUF`
//!   (capped by `net.core.rmem_max`). The kernel answers all requests of one `send` before
//!   `send` returns, queueing every reply on this socket; when the queue is full it drops
//!   replies and reports `ENOBUFS` on the next `recv`. Batches are therefore chunked so
//!   that one chunk's replies fit the buffer (see [`Options::batch_reply_cost`]).
//! * A large send buffer (`SO_SNDBUFFORCE`, else `SO_SNDBUF`): one `send` may carry at most
//!   `sk_sndbuf - 32` bytes (`EMSGSIZE` otherwise).
//! * Datagrams are read many per system call (`recvmmsg` into 64 slots of
//!   4 KiB; the kernel sizes dump chunks to the reader's buffer, so they fit a slot).
//!   Every receive passes `MSG_TRUNC`, so the kernel returns a datagram's real length even
//!   when it did not fit: truncation is detected per datagram and reported as
//!   [`TransportError::Truncated`] (and the slots grown), never silently accepted.
//!
//! # Namespaces
//!
//! A socket belongs to the network namespace of the thread that created it, for its whole
//! life. To open one in another namespace without touching the caller's thread, a
//! short-lived helper thread enters the namespace (`setns(CLONE_NEWNET)`), creates the
//! socket, and exits; the caller's thread never changes namespace.

use std::{
    fmt::Debug,
    fs::File,
    io::{self, IoSliceMut},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::PathBuf,
    time::Duration,
};

use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};
use nix::{
    errno::Errno,
    libc,
    sched::{CloneFlags, setns},
    sys::socket::{MsgFlags, MultiHeaders, getsockopt, recvmmsg, setsockopt, sockopt},
};

use super::{
    error::{Result, TransportError},
    exchange::{Exchange, RequestResult, nlmsg_align},
    payload::Payload,
};

/// The network namespace a connection's socket is created in.
#[derive(Debug, Default)]
pub enum Namespace {
    /// The namespace of the calling thread.
    #[default]
    Current,
    /// The namespace referred to by this file, e.g. `/var/run/netns/NAME` or
    /// `/proc/PID/task/TID/ns/net`.
    Path(PathBuf),
    /// The namespace referred to by this open file descriptor.
    Fd(OwnedFd),
}

/// How a connection is opened and how it behaves.
#[derive(Debug)]
#[non_exhaustive]
pub struct Options {
    /// The network namespace to talk to.
    pub namespace: Namespace,
    /// The deadline of every call (for a batch: of every chunk), renewed whenever the kernel
    /// sends a datagram: the longest the kernel may stay silent. An answer already queued
    /// always counts, however long the kernel worked on the request. Default: 5 s.
    pub timeout: Duration,
    /// Requested receive-buffer size in bytes (the kernel doubles it). Default: 4 MiB.
    pub recv_buffer: usize,
    /// Requested send-buffer size in bytes (the kernel doubles it). Default: 1 MiB.
    pub send_buffer: usize,
    /// Estimated receive-buffer bytes one batched request's replies occupy (kernel
    /// accounting, i.e. socket-buffer overhead included). A batch chunk holds at most
    /// `receive buffer / batch_reply_cost` requests. Default: 4096. Measured here (Linux 6.x,
    /// `NETLINK_CAP_ACK` on): about 830 bytes for a bare ACK or error, about 1,660 bytes for a
    /// small (~200-byte) reply plus its ACK; the default leaves room for replies of ~2 KiB.
    pub batch_reply_cost: usize,
    /// Upper bound on the requests of one batch chunk. Default: 4096.
    pub max_batch: usize,
    /// Size of each receive slot in bytes (one datagram each; 64 of them per
    /// `recvmmsg`). The kernel sizes every dump chunk to the largest buffer its reader
    /// offered, from about 3.7 KiB up to about 32 KiB, and clears each chunk it allocates, so
    /// small slots make small dumps (one service's destinations) cheaper, while large ones
    /// make a dump of thousands of services cheaper: the kernel resumes such a dump by
    /// walking past every service already sent, once per chunk. Default: 4096 (one page).
    pub recv_slot: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: Namespace::Current,
            timeout: Duration::from_secs(5),
            recv_buffer: 4 << 20,
            send_buffer: 1 << 20,
            batch_reply_cost: 4096,
            max_batch: 4096,
            recv_slot: RECV_SLOT,
        }
    }
}

impl Options {
    /// These settings in another namespace.
    pub(crate) fn in_namespace(&self, namespace: Namespace) -> Self {
        Self {
            namespace,
            timeout: self.timeout,
            recv_buffer: self.recv_buffer,
            send_buffer: self.send_buffer,
            batch_reply_cost: self.batch_reply_cost,
            max_batch: self.max_batch,
            recv_slot: self.recv_slot,
        }
    }

    /// A copy (the namespace's file descriptor, if any, duplicated); `None` if it cannot be
    /// duplicated.
    pub(crate) fn duplicate(&self) -> Option<Self> {
        let namespace = match &self.namespace {
            Namespace::Current => Namespace::Current,
            Namespace::Path(path) => Namespace::Path(path.clone()),
            Namespace::Fd(fd) => Namespace::Fd(fd.try_clone().ok()?),
        };
        Some(self.in_namespace(namespace))
    }

    /// Sets [`Options::namespace`].
    pub fn with_namespace(mut self, namespace: Namespace) -> Self {
        self.namespace = namespace;
        self
    }

    /// Sets [`Options::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`Options::recv_buffer`].
    pub fn with_recv_buffer(mut self, bytes: usize) -> Self {
        self.recv_buffer = bytes;
        self
    }

    /// Sets [`Options::batch_reply_cost`].
    pub fn with_batch_reply_cost(mut self, bytes: usize) -> Self {
        self.batch_reply_cost = bytes;
        self
    }

    /// Sets [`Options::max_batch`].
    pub fn with_max_batch(mut self, requests: usize) -> Self {
        self.max_batch = requests;
        self
    }

    /// Sets [`Options::recv_slot`] (at least 4096 bytes are used).
    pub fn with_recv_slot(mut self, bytes: usize) -> Self {
        self.recv_slot = bytes;
        self
    }
}

/// An open, bound and connected generic-netlink socket.
#[derive(Debug)]
pub(crate) struct NlSocket {
    pub(crate) socket: Socket,
    pub(crate) port_id: u32,
    /// Effective receive-buffer size (as reported by the kernel).
    pub(crate) rcvbuf: usize,
    /// Effective send-buffer size (as reported by the kernel).
    pub(crate) sndbuf: usize,
}

impl NlSocket {
    /// Opens the socket as described in the module docs.
    pub(crate) fn open(options: &Options) -> Result<Self> {
        let mut socket = match &options.namespace {
            Namespace::Current => new_socket()?,
            Namespace::Path(path) => {
                let file = File::open(path).map_err(|e| TransportError::io("open namespace", e))?;
                new_socket_in(file.as_fd())?
            }
            Namespace::Fd(fd) => new_socket_in(fd.as_fd())?,
        };
        let addr = socket
            .bind_auto()
            .map_err(|e| TransportError::io("bind", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| TransportError::io("connect", e))?;
        socket
            .set_non_blocking(true)
            .map_err(|e| TransportError::io("set non-blocking", e))?;
        // Best effort: both options exist since Linux 4.2/4.12 and only refine errors.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);

        if setsockopt(&socket, sockopt::RcvBufForce, &options.recv_buffer).is_err() {
            setsockopt(&socket, sockopt::RcvBuf, &options.recv_buffer)
                .map_err(|e| TransportError::io("setsockopt(SO_RCVBUF)", e))?;
        }
        if setsockopt(&socket, sockopt::SndBufForce, &options.send_buffer).is_err() {
            setsockopt(&socket, sockopt::SndBuf, &options.send_buffer)
                .map_err(|e| TransportError::io("setsockopt(SO_SNDBUF)", e))?;
        }
        let rcvbuf = getsockopt(&socket, sockopt::RcvBuf)
            .map_err(|e| TransportError::io("getsockopt(SO_RCVBUF)", e))?;
        let sndbuf = getsockopt(&socket, sockopt::SndBuf)
            .map_err(|e| TransportError::io("getsockopt(SO_SNDBUF)", e))?;
        Ok(Self {
            socket,
            port_id: addr.port_number(),
            rcvbuf,
            sndbuf,
        })
    }

    /// The largest datagram one `send` may carry (`sk_sndbuf - 32`, with a margin).
    pub(crate) fn max_send(&self) -> usize {
        self.sndbuf.saturating_sub(64).max(4096)
    }

    /// How many requests one batch chunk may hold.
    pub(crate) fn max_chunk(&self, options: &Options) -> usize {
        (self.rcvbuf / options.batch_reply_cost.max(1)).clamp(1, options.max_batch.max(1))
    }
}

fn new_socket() -> Result<Socket> {
    Socket::new(NETLINK_GENERIC).map_err(|e| TransportError::io("socket", e))
}

/// Creates the socket on a helper thread that entered the namespace of `ns`.
fn new_socket_in(ns: BorrowedFd<'_>) -> Result<Socket> {
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("netlink-netns".into())
            .spawn_scoped(scope, move || {
                setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| TransportError::io("setns", e))?;
                new_socket()
                // The thread ends here; its namespace change dies with it.
            })
            .map_err(|e| TransportError::io("spawn namespace thread", e))?;
        helper.join().unwrap_or_else(|_| {
            Err(TransportError::io(
                "namespace thread",
                io::Error::other("the thread panicked"),
            ))
        })
    })
}

/// Sends one datagram. `Ok(false)`: the socket would block (try again when writable).
pub(crate) fn send(socket: &Socket, bytes: &[u8]) -> Result<bool> {
    loop {
        return match socket.send(bytes, 0) {
            Ok(n) if n == bytes.len() => Ok(true),
            Ok(n) => Err(TransportError::io(
                "send",
                io::Error::other(format!("sent {n} of {} bytes", bytes.len())),
            )),
            Err(e) => match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
                Errno::EINTR => continue,
                Errno::EAGAIN => Ok(false),
                Errno::ENOBUFS => Err(TransportError::Overrun),
                _ => Err(TransportError::io("send", e)),
            },
        };
    }
}

/// Receive slots: how many datagrams one `recvmmsg` may return.
pub(crate) const RECV_SLOTS: usize = 64;

/// Size of one receive slot: one page. The kernel allocates every dump chunk, the final
/// `NLMSG_DONE` included, at the size of the largest buffer the reader offered (at least about
/// 3.7 KiB, at most about 32 KiB), so the slot size is paid twice per dump: page-sized slots
/// keep a one-service `GET_DEST` dump cheap, and a large dump simply comes in more chunks,
/// still read 64 per system call.
const RECV_SLOT: usize = 4 << 10;

/// The receive side of a socket: [`RECV_SLOTS`] equal buffers filled by one `recvmmsg`.
///
/// A batch's replies are one datagram per request (an ACK is about 36 bytes) and a dump
/// answers in one datagram per chunk, so reading many datagrams per system call is what keeps
/// the receive side from costing a system call per request. It also takes a dump's last data
/// and its `NLMSG_DONE` in one call: the kernel builds the next dump chunk (or the DONE)
/// while a `recvmsg` dequeues the previous one, so the following slot finds it queued.
///
/// All slots have the same size, and the kernel sizes a dump chunk to the largest buffer a
/// reader offered (up to about 32 KiB), so chunks fit a slot. A datagram that does not fit
/// anyway is detected (`MSG_TRUNC` makes the kernel report its real length) and reported as
/// [`TransportError::Truncated`]; the slots grow before the next receive.
#[derive(Debug)]
pub(crate) struct RecvBuffers {
    buf: Vec<u8>,
    slot: usize,
    /// Slot size needed after a truncation (applied at the next receive).
    grow_to: usize,
    /// The length of each datagram of the last receive, in order (the real length, which
    /// exceeds `slot` for a truncated one).
    received: Vec<usize>,
}

impl RecvBuffers {
    /// Buffers of [`RECV_SLOTS`] slots of `slot` bytes (at least [`RECV_SLOT`]).
    pub(crate) fn new(slot: usize) -> Self {
        let slot = nlmsg_align(slot.max(RECV_SLOT));
        Self {
            buf: vec![0; slot * RECV_SLOTS],
            slot,
            grow_to: slot,
            received: Vec::with_capacity(RECV_SLOTS),
        }
    }

    /// Receives the queued datagrams, up to [`RECV_SLOTS`], in one system call, and returns
    /// how many it got (0: nothing queued). Read them with [`datagrams`](Self::datagrams).
    pub(crate) fn recv(&mut self, fd: &impl AsRawFd) -> Result<usize> {
        self.received.clear();
        if self.grow_to > self.slot {
            self.slot = self.grow_to;
            self.buf = vec![0; self.slot * RECV_SLOTS];
        }
        let slot = self.slot;
        let mut grow_to = self.grow_to;
        loop {
            let mut headers = MultiHeaders::<()>::preallocate(RECV_SLOTS, None);
            let mut slots = self.buf.chunks_exact_mut(slot);
            let mut iovs: [[IoSliceMut<'_>; 1]; RECV_SLOTS] = std::array::from_fn(|_| {
                [IoSliceMut::new(
                    slots.next().expect("the buffer holds RECV_SLOTS slots"),
                )]
            });
            match recvmmsg(
                fd.as_raw_fd(),
                &mut headers,
                iovs.iter_mut(),
                MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(results) => {
                    for msg in results {
                        // With MSG_TRUNC the length is the datagram's, not what was copied.
                        let len = if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                            msg.bytes.max(slot + 1)
                        } else {
                            msg.bytes
                        };
                        if len > slot {
                            grow_to = grow_to.max(nlmsg_align(len));
                        }
                        self.received.push(len);
                    }
                    break;
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(Errno::ENOBUFS) => return Err(TransportError::Overrun),
                Err(e) => return Err(TransportError::io("recvmmsg", io::Error::from(e))),
            }
        }
        self.grow_to = grow_to;
        Ok(self.received.len())
    }

    /// The datagrams of the last [`recv`](Self::recv), in order; a truncated one is a
    /// [`TransportError::Truncated`] error.
    pub(crate) fn datagrams(&self) -> impl Iterator<Item = Result<&[u8]>> + '_ {
        let slot = self.slot;
        self.received.iter().enumerate().map(move |(i, &len)| {
            if len > slot {
                Err(TransportError::Truncated {
                    len,
                    capacity: slot,
                })
            } else {
                Ok(&self.buf[i * slot..i * slot + len])
            }
        })
    }

    /// Feeds the datagrams of the last [`recv`](Self::recv) to `exchange`, in order; stops
    /// at the first error (a truncated datagram, or one the exchange rejects).
    pub(crate) fn feed<G>(&self, exchange: &mut Exchange<G>) -> Result<()>
    where
        G: Payload,
    {
        for datagram in self.datagrams() {
            exchange.feed(datagram?)?;
        }
        Ok(())
    }

    /// Discards everything queued on the socket (replies of an abandoned call), feeding it to
    /// `exchange` so that it learns which abandoned dumps have ended.
    pub(crate) fn flush<G>(&mut self, fd: &impl AsRawFd, exchange: &mut Exchange<G>)
    where
        G: Payload,
    {
        loop {
            match self.recv(fd) {
                Ok(0) => break,
                Ok(_) => {
                    // Errors in stale replies do not concern the next call.
                    for datagram in self.datagrams().flatten() {
                        let _ = exchange.feed(datagram);
                    }
                }
                Err(TransportError::Overrun) => {}
                Err(_) => break,
            }
        }
    }
}

/// The `CTRL_CMD_GETFAMILY` request resolving `name`.
pub(crate) fn get_family(name: &str) -> GenlCtrl {
    GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
    }
}

/// Extracts the family id from the answer to [`get_family`].
pub(crate) fn family_id(name: &str, results: Vec<RequestResult<GenlCtrl>>) -> Result<u16> {
    match results.into_iter().next() {
        Some(Ok(replies)) => replies
            .iter()
            .flat_map(|reply| reply.nlas.iter())
            .find_map(|nla| match nla {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| {
                TransportError::protocol(format!(
                    "CTRL_CMD_GETFAMILY({name:?}) reply without an id"
                ))
            }),
        Some(Err(TransportError::Kernel(e))) if e.errno() == libc::ENOENT => {
            Err(TransportError::FamilyNotFound {
                name: name.to_owned(),
            })
        }
        Some(Err(e)) => Err(e),
        None => Err(TransportError::protocol("no answer to CTRL_CMD_GETFAMILY")),
    }
}

/// The time left until `deadline`, rounded up to whole milliseconds for `poll`.
pub(crate) fn poll_millis(left: Duration) -> u16 {
    let millis = left.as_nanos().div_ceil(1_000_000);
    u16::try_from(millis).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::KernelError;

    #[test]
    fn poll_millis_rounds_up_and_saturates() {
        assert_eq!(poll_millis(Duration::from_nanos(1)), 1);
        assert_eq!(poll_millis(Duration::from_millis(3)), 3);
        assert_eq!(poll_millis(Duration::from_secs(3600)), u16::MAX);
    }

    #[test]
    fn family_resolution_maps_enoent_to_family_not_found() {
        let reply = GenlCtrl {
            cmd: GenlCtrlCmd::NewFamily,
            nlas: vec![
                GenlCtrlAttrs::FamilyName("x".into()),
                GenlCtrlAttrs::FamilyId(33),
            ],
        };
        assert_eq!(family_id("x", vec![Ok(vec![reply])]).unwrap(), 33);
        let missing = Err(TransportError::Kernel(KernelError::new(libc::ENOENT)));
        assert!(matches!(
            family_id("IPVS", vec![missing]),
            Err(TransportError::FamilyNotFound { name }) if name == "IPVS"
        ));
        let denied = Err(TransportError::Kernel(KernelError::new(libc::EPERM)));
        assert_eq!(
            family_id("IPVS", vec![denied]).unwrap_err().kernel_errno(),
            Some(libc::EPERM)
        );
        assert!(family_id("x", vec![Ok(vec![])]).is_err());
        assert!(family_id("x", vec![]).is_err());
    }
}
