//! The blocking driver: [`Connection`], one socket driven with `send`, `poll` and `recv`.
//!
//! Every call has a deadline ([`Options::timeout`]; for a batch, per chunk): the socket is
//! non-blocking, the driver reads whatever is queued (many datagrams per `recvmmsg`) and
//! otherwise waits in `poll` for at most the time left. The deadline bounds the kernel's
//! silence, not its work: an answer already queued always counts (the kernel runs a request
//! inside `sendmsg`, so one it took long over is answered by the time `send` returns), and
//! each datagram received renews the deadline, so a dump of a huge table that keeps arriving
//! is not cut short, while a lost reply still fails the call. No call can wait forever. A
//! call that times out (or fails) abandons its requests; their late replies are discarded as
//! stale by the next call, so the connection stays usable.

use std::{
    fmt::Debug,
    os::fd::{AsFd, BorrowedFd},
    sync::OnceLock,
    time::Duration,
};

use netlink_packet_core::{Emitable, NLM_F_DUMP, ParseableParametrized};
use netlink_packet_generic::{GenlFamily, GenlHeader, ctrl::GenlCtrl};
use nix::{
    poll::{PollFd, PollFlags, poll},
    time::{ClockId, clock_getres, clock_gettime},
};

use super::{
    error::{KernelError, Result, TransportError},
    exchange::{BatchRun, Exchange},
    socket::{self, NlSocket, Options, RecvBuffers},
};

/// A call's deadline (the clock starts when the call starts).
///
/// Deadlines of a second or so are kept on `CLOCK_MONOTONIC_COARSE` (the time of the last
/// timer tick, a few milliseconds coarse), which the vDSO always serves without entering
/// the kernel: `CLOCK_MONOTONIC` enters it whenever the clock source cannot be read from user
/// space (an HPET or a virtual machine without a paravirtual clock), and a call reads the
/// clock at least twice. Timeouts too short for the coarse clock use the precise one.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    timeout: Duration,
    clock: ClockId,
    /// On `clock`.
    at: Duration,
}

impl Deadline {
    fn new(timeout: Duration) -> Self {
        let clock = match coarse_resolution() {
            Some(resolution) if timeout >= resolution * 100 => ClockId::CLOCK_MONOTONIC_COARSE,
            _ => ClockId::CLOCK_MONOTONIC,
        };
        Self {
            timeout,
            clock,
            at: now(clock).saturating_add(timeout),
        }
    }

    /// Starts the timeout again from now (the kernel just answered).
    fn renew(&mut self) {
        self.at = now(self.clock).saturating_add(self.timeout);
    }

    fn left(&self) -> Duration {
        self.at.saturating_sub(now(self.clock))
    }
}

/// The resolution of `CLOCK_MONOTONIC_COARSE`, if the system has it.
fn coarse_resolution() -> Option<Duration> {
    static RESOLUTION: OnceLock<Option<Duration>> = OnceLock::new();
    *RESOLUTION.get_or_init(|| {
        let res = clock_getres(ClockId::CLOCK_MONOTONIC_COARSE).ok()?;
        let res = Duration::from(res);
        // A monotonic coarse clock ticks at least every 100 ms on any sane system.
        (res > Duration::ZERO && res <= Duration::from_millis(100)).then_some(res)
    })
}

/// The time on `clock` (monotonic clocks cannot fail; if one did, the maximum, which makes
/// the deadline pass at once rather than never).
fn now(clock: ClockId) -> Duration {
    clock_gettime(clock).map_or(Duration::MAX, Duration::from)
}

/// A blocking generic-netlink connection to one family, in one network namespace.
///
/// Calls take `&mut self`: a connection serves one call at a time. Open one connection per
/// thread, or put it behind a mutex.
#[derive(Debug)]
pub struct Connection<F> {
    socket: NlSocket,
    exchange: Exchange<F>,
    recv: RecvBuffers,
    send_buf: Vec<u8>,
    timeout: Duration,
    max_chunk: usize,
    /// A call failed: replies may still sit in the receive queue.
    dirty: bool,
}

impl<F> Connection<F>
where
    F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
{
    /// Opens a socket as `options` say and resolves the id of the family `family_name`
    /// (`CTRL_CMD_GETFAMILY`). A family the kernel does not know gives
    /// [`TransportError::FamilyNotFound`].
    pub fn open(family_name: &str, options: Options) -> Result<Self> {
        let socket = NlSocket::open(&options)?;
        let mut recv = RecvBuffers::new(options.recv_slot);
        let mut send_buf = Vec::new();
        let mut deadline = Deadline::new(options.timeout);
        let mut ctrl: Exchange<GenlCtrl> = Exchange::new(
            netlink_packet_generic::constants::GENL_ID_CTRL,
            socket.port_id,
            1,
        );
        ctrl.begin();
        ctrl.push(&socket::get_family(family_name), 0, &mut send_buf)?;
        send_all(&socket, &send_buf, &mut deadline)?;
        wait(&socket, &mut recv, &mut ctrl, &mut deadline, |ex| {
            ex.in_flight() == 0
        })?;
        let family_id = socket::family_id(family_name, ctrl.finish())?;
        let exchange = ctrl.successor(family_id);
        let max_chunk = socket.max_chunk(&options);
        Ok(Self {
            socket,
            exchange,
            recv,
            send_buf,
            timeout: options.timeout,
            max_chunk,
            dirty: false,
        })
    }

    /// The family id the kernel assigned to the family.
    pub fn family_id(&self) -> u16 {
        self.exchange.family_id()
    }

    /// The socket's netlink port id.
    pub fn port_id(&self) -> u32 {
        self.socket.port_id
    }

    /// The deadline applied to each call (per chunk for batches).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the deadline applied to each call.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The most requests one [`batch`](Self::batch) chunk holds (one `send` each).
    pub fn batch_chunk_size(&self) -> usize {
        self.max_chunk
    }

    /// How many stale replies (to abandoned calls) have been discarded so far.
    pub fn discarded(&self) -> u64 {
        self.exchange.discarded()
    }

    /// Sends one request (flags: `NLM_F_REQUEST | NLM_F_ACK | flags`) and returns its reply
    /// payloads once the kernel has acknowledged it (or, with `NLM_F_DUMP`, ended the dump).
    pub fn request(&mut self, payload: F, flags: u16) -> Result<Vec<F>> {
        let mut deadline = Deadline::new(self.timeout);
        if self.dirty {
            self.flush();
        }
        if flags & NLM_F_DUMP == NLM_F_DUMP {
            self.drain(&mut deadline)?;
        }
        self.begin();
        self.exchange.push(&payload, flags, &mut self.send_buf)?;
        self.run(&mut deadline)?;
        self.exchange.finish_one()
    }

    /// Sends one request that is not a dump and returns its reply payloads, or `None` when
    /// the kernel left it unanswered — without waiting for a deadline.
    ///
    /// The kernel runs a request inside `sendmsg` and queues its answer before `send`
    /// returns, so what is queued then is all there will be. A handler that returns `EINTR`
    /// gets no answer at all, not even an error: netlink reserves that errno for "a dump has
    /// started" and skips the acknowledgement. Stopping a sync daemon whose thread had not yet
    /// run is such a request (the kernel's `kthread_stop` returns `EINTR`, and the daemon is
    /// stopped); [`request`](Self::request) would wait for its deadline and report a timeout.
    pub fn request_allowing_silence(&mut self, payload: F) -> Result<Option<Vec<F>>> {
        let mut deadline = Deadline::new(self.timeout);
        self.begin();
        self.exchange.push(&payload, 0, &mut self.send_buf)?;
        let outcome = send_all(&self.socket, &self.send_buf, &mut deadline)
            .and_then(|()| read_queued(&self.socket, &mut self.recv, &mut self.exchange));
        if let Err(e) = outcome {
            self.exchange.abandon();
            self.dirty = true;
            return Err(e);
        }
        self.exchange.finish_one_or_silence()
    }

    /// Dumps: sends `payload` with `NLM_F_DUMP` and returns every message of the dump.
    /// A dump the kernel flagged as inconsistent gives [`TransportError::DumpInterrupted`].
    pub fn dump(&mut self, payload: F) -> Result<Vec<F>> {
        self.request(payload, NLM_F_DUMP)
    }

    /// Sends many requests, as few `send` calls as the buffers allow, each request with its
    /// own sequence number and result, in order. A request the kernel rejects yields its
    /// [`KernelError`] without affecting the others (there is no transaction: the kernel
    /// applies each request on its own).
    ///
    /// Requests go in chunks of at most [`batch_chunk_size`](Self::batch_chunk_size)
    /// (so one chunk's replies fit the receive buffer) and at most the send buffer's size;
    /// the deadline applies per chunk. If a chunk fails as a whole (timeout, overrun, I/O),
    /// that error is returned and the results of earlier chunks are lost, although the
    /// kernel applied them; a reply that cannot be decoded fails the batch only after every
    /// chunk has been sent and answered.
    pub fn batch(
        &mut self,
        requests: impl IntoIterator<Item = F>,
    ) -> Result<Vec<Result<Vec<F>, KernelError>>> {
        let mut batch = BatchRun::new(requests, self.max_chunk);
        let max_bytes = self.socket.max_send();
        while batch.has_more() {
            self.begin();
            batch.fill(&mut self.exchange, &mut self.send_buf, max_bytes)?;
            self.run(&mut Deadline::new(self.timeout))?;
            batch.collect(&mut self.exchange);
        }
        batch.finish()
    }

    /// Sends the current call's buffer and waits for all its replies; abandons it on error.
    fn run(&mut self, deadline: &mut Deadline) -> Result<()> {
        let outcome = send_all(&self.socket, &self.send_buf, deadline).and_then(|()| {
            wait(
                &self.socket,
                &mut self.recv,
                &mut self.exchange,
                deadline,
                |ex| ex.in_flight() == 0,
            )
        });
        if outcome.is_err() {
            self.exchange.abandon();
            self.dirty = true;
        }
        outcome
    }

    /// Starts a call: cleans up after a failed one, then opens a new exchange call.
    fn begin(&mut self) {
        if self.dirty {
            self.flush();
        }
        self.exchange.begin();
        self.send_buf.clear();
    }

    /// Discards everything already queued on the socket (the replies of a failed call).
    ///
    /// Without this, the stale replies of a timed-out or overrun batch could fill the receive
    /// queue, and the kernel would drop the replies of the next call. Every non-dump reply is
    /// queued before `send` returns, so reading until the queue is empty removes them all.
    fn flush(&mut self) {
        self.exchange.abandon();
        self.recv.flush(&self.socket.socket, &mut self.exchange);
        self.dirty = false;
    }

    /// Waits for the end of abandoned dumps: the kernel refuses a second dump on a socket
    /// (`EBUSY`) until the first one has been read to its end.
    fn drain(&mut self, deadline: &mut Deadline) -> Result<()> {
        wait(
            &self.socket,
            &mut self.recv,
            &mut self.exchange,
            deadline,
            |ex| !ex.draining(),
        )
    }
}

/// The socket, for options this crate does not set (a socket filter, `SO_PRIORITY`, …).
/// Reading from it or writing to it would take replies from the connection.
impl<F> AsFd for Connection<F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.socket.as_fd()
    }
}

/// Sends `bytes` as one datagram before `deadline`.
fn send_all(socket: &NlSocket, bytes: &[u8], deadline: &mut Deadline) -> Result<()> {
    while !socket::send(&socket.socket, bytes)? {
        wait_ready(socket, PollFlags::POLLOUT, deadline, 1)?;
    }
    Ok(())
}

/// Feeds received datagrams to `exchange` until `done` says so or `deadline` passes.
fn wait<G>(
    socket: &NlSocket,
    recv: &mut RecvBuffers,
    exchange: &mut Exchange<G>,
    deadline: &mut Deadline,
    done: impl Fn(&Exchange<G>) -> bool,
) -> Result<()>
where
    G: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
{
    // The deadline is checked only when nothing is queued (in `wait_ready`): the kernel runs
    // a request inside `sendmsg`, so a request that took longer than the timeout has its
    // answer queued by the time `send` returns; that answer counts. (A request the kernel
    // leaves unanswered stays so: see `request_allowing_silence`.)
    while !done(exchange) {
        match recv.recv(&socket.socket)? {
            0 => wait_ready(socket, PollFlags::POLLIN, deadline, exchange.in_flight())?,
            _ => {
                recv.feed(exchange)?;
                deadline.renew();
            }
        }
    }
    Ok(())
}

/// Feeds what is already queued on the socket to `exchange`, without waiting, until nothing
/// is left or every request is answered.
fn read_queued<G>(
    socket: &NlSocket,
    recv: &mut RecvBuffers,
    exchange: &mut Exchange<G>,
) -> Result<()>
where
    G: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
{
    while exchange.in_flight() > 0 && recv.recv(&socket.socket)? > 0 {
        recv.feed(exchange)?;
    }
    Ok(())
}

/// Polls the socket for `events` until it is ready or `deadline` passes.
fn wait_ready(
    socket: &NlSocket,
    events: PollFlags,
    deadline: &mut Deadline,
    pending: usize,
) -> Result<()> {
    loop {
        let left = deadline.left();
        if left.is_zero() {
            return Err(TransportError::Timeout {
                timeout: deadline.timeout,
                pending,
            });
        }
        let mut fds = [PollFd::new(socket.socket.as_fd(), events)];
        match poll(&mut fds, socket::poll_millis(left)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            // Readable, writable, or an error (POLLERR) that the next recv/send reports.
            Ok(_) => return Ok(()),
            Err(e) => return Err(TransportError::io("poll", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_passes_after_its_timeout_unless_renewed() {
        let timeout = Duration::from_millis(300);
        let mut deadline = Deadline::new(timeout);
        assert!(!deadline.left().is_zero());
        assert!(deadline.left() <= timeout);
        std::thread::sleep(Duration::from_millis(200));
        deadline.renew();
        std::thread::sleep(Duration::from_millis(200));
        // 400 ms since the start, 200 ms since the renewal.
        assert!(
            !deadline.left().is_zero(),
            "the renewal restarted the timeout"
        );
        std::thread::sleep(Duration::from_millis(250));
        assert!(deadline.left().is_zero());
        assert_eq!(deadline.left(), Duration::ZERO);
    }
}
