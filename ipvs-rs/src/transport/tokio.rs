//! The async driver (feature `tokio`): [`AsyncConnection`], the same exchange core as the
//! blocking [`Connection`](super::Connection), with the socket registered in tokio's
//! reactor through [`AsyncFd`] and deadlines from `tokio::time`.
//!
//! Cancellation: dropping a call's future abandons its requests; the next call flushes the
//! receive queue and discards their late replies, exactly as after a timeout.
//! Opening a connection in another namespace briefly blocks on a helper thread.

use std::{
    fmt::Debug,
    io,
    os::fd::{AsFd, BorrowedFd},
    time::Duration,
};

use netlink_packet_core::{Emitable, NLM_F_DUMP, ParseableParametrized};
use netlink_packet_generic::{GenlFamily, GenlHeader, constants::GENL_ID_CTRL, ctrl::GenlCtrl};
use netlink_sys::Socket;
use tokio::{io::unix::AsyncFd, time::Instant};

use super::{
    error::{KernelError, Result, TransportError},
    exchange::{BatchRun, Exchange},
    socket::{self, NlSocket, Options, RecvBuffers},
};

/// An async generic-netlink connection to one family, in one network namespace.
///
/// Calls take `&mut self`: a connection serves one call at a time.
#[derive(Debug)]
pub struct AsyncConnection<F> {
    io: Io,
    exchange: Exchange<F>,
    max_chunk: usize,
    /// Set while a call runs and cleared when it completes: a call that failed or whose
    /// future was dropped leaves it set, and the next call flushes the receive queue.
    dirty: bool,
}

/// The socket, for options this crate does not set (a socket filter, `SO_PRIORITY`, …).
/// Reading from it or writing to it would take replies from the connection.
impl<F> AsFd for AsyncConnection<F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.fd.get_ref().as_fd()
    }
}

/// The socket and its buffers, apart from the exchange so both can be borrowed at once.
#[derive(Debug)]
struct Io {
    fd: AsyncFd<Socket>,
    port_id: u32,
    max_send: usize,
    recv: RecvBuffers,
    send_buf: Vec<u8>,
    timeout: Duration,
}

impl<F> AsyncConnection<F>
where
    F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
{
    /// Opens a socket as `options` say, registers it with the current tokio runtime and
    /// resolves the id of the family `family_name`; see
    /// [`Connection::open`](super::Connection::open). Outside a tokio runtime (with the
    /// I/O driver enabled) it fails with an [`TransportError::Io`] error.
    pub async fn open(family_name: &str, options: Options) -> Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TransportError::io(
                "register with the tokio reactor",
                io::Error::other("not called within a tokio runtime"),
            ));
        }
        let socket = NlSocket::open(&options)?;
        let max_chunk = socket.max_chunk(&options);
        let max_send = socket.max_send();
        let port_id = socket.port_id;
        // SAFETY: `netlink_sys::Socket` owns its descriptor: it stays open, and refers to the
        // same socket, until the `Socket` is dropped, which happens only when the `AsyncFd`
        // drops it; nothing here takes the descriptor out of it or replaces it.
        let fd = unsafe { AsyncFd::register(socket.socket) }
            .map_err(|e| TransportError::io("register with the tokio reactor", e.into_parts().1))?;
        let mut io = Io {
            fd,
            port_id,
            max_send,
            recv: RecvBuffers::new(options.recv_slot),
            send_buf: Vec::new(),
            timeout: options.timeout,
        };
        let deadline = Instant::now() + options.timeout;
        let mut ctrl: Exchange<GenlCtrl> = Exchange::new(GENL_ID_CTRL, port_id, 1);
        ctrl.begin();
        ctrl.push(&socket::get_family(family_name), 0, &mut io.send_buf)?;
        io.send(deadline).await?;
        io.wait(&mut ctrl, deadline, |ex| ex.in_flight() == 0)
            .await?;
        let family_id = socket::family_id(family_name, ctrl.finish())?;
        let exchange = ctrl.successor(family_id);
        Ok(Self {
            io,
            exchange,
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
        self.io.port_id
    }

    /// The deadline applied to each call (per chunk for batches).
    pub fn timeout(&self) -> Duration {
        self.io.timeout
    }

    /// Changes the deadline applied to each call.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.io.timeout = timeout;
    }

    /// The most requests one [`batch`](Self::batch) chunk holds (one `send` each).
    pub fn batch_chunk_size(&self) -> usize {
        self.max_chunk
    }

    /// How many stale replies (to abandoned calls) have been discarded so far.
    pub fn discarded(&self) -> u64 {
        self.exchange.discarded()
    }

    /// Sends one request and returns its reply payloads once it is acknowledged (or its
    /// dump ended); see [`Connection::request`](super::Connection::request).
    pub async fn request(&mut self, payload: F, flags: u16) -> Result<Vec<F>> {
        let deadline = Instant::now() + self.io.timeout;
        self.begin();
        if flags & NLM_F_DUMP == NLM_F_DUMP {
            self.io
                .wait(&mut self.exchange, deadline, |ex| !ex.draining())
                .await?;
        }
        self.exchange.begin();
        self.exchange.push(&payload, flags, &mut self.io.send_buf)?;
        self.run(deadline).await?;
        self.dirty = false;
        self.exchange.finish_one()
    }

    /// Sends one request that is not a dump and returns its reply payloads, or `None` when
    /// the kernel left it unanswered, without waiting for a deadline; see
    /// [`Connection::request_allowing_silence`](super::Connection::request_allowing_silence).
    pub async fn request_allowing_silence(&mut self, payload: F) -> Result<Option<Vec<F>>> {
        let deadline = Instant::now() + self.io.timeout;
        self.begin();
        self.exchange.begin();
        self.exchange.push(&payload, 0, &mut self.io.send_buf)?;
        self.io.send(deadline).await?;
        // The answer, if any, was queued before `send` returned: read what is there.
        while self.exchange.in_flight() > 0 {
            match self.io.recv.recv(self.io.fd.get_ref()) {
                Ok(0) => break,
                Ok(_) => self.io.recv.feed(&mut self.exchange)?,
                // An overrun or truncation keeps its own kind.
                Err(e) => return Err(e),
            }
        }
        self.dirty = false;
        self.exchange.finish_one_or_silence()
    }

    /// Dumps; see [`Connection::dump`](super::Connection::dump).
    pub async fn dump(&mut self, payload: F) -> Result<Vec<F>> {
        self.request(payload, NLM_F_DUMP).await
    }

    /// Sends many requests in chunks, each with its own result, in order; see
    /// [`Connection::batch`](super::Connection::batch).
    pub async fn batch(
        &mut self,
        requests: impl IntoIterator<Item = F>,
    ) -> Result<Vec<Result<Vec<F>, KernelError>>> {
        let mut batch = BatchRun::new(requests, self.max_chunk);
        while batch.has_more() {
            self.begin();
            self.exchange.begin();
            batch.fill(&mut self.exchange, &mut self.io.send_buf, self.io.max_send)?;
            self.run(Instant::now() + self.io.timeout).await?;
            self.dirty = false;
            batch.collect(&mut self.exchange);
        }
        batch.finish()
    }

    /// Marks a call as running, first flushing what a failed or cancelled one left behind.
    fn begin(&mut self) {
        if self.dirty {
            self.exchange.abandon();
            self.io.flush(&mut self.exchange);
        }
        self.dirty = true;
        self.io.send_buf.clear();
    }

    async fn run(&mut self, deadline: Instant) -> Result<()> {
        self.io.send(deadline).await?;
        self.io
            .wait(&mut self.exchange, deadline, |ex| ex.in_flight() == 0)
            .await
    }
}

impl Io {
    fn timeout_error(&self, pending: usize) -> TransportError {
        TransportError::Timeout {
            timeout: self.timeout,
            pending,
        }
    }

    /// Sends the send buffer as one datagram before `deadline`.
    async fn send(&mut self, deadline: Instant) -> Result<()> {
        loop {
            if socket::send(self.fd.get_ref(), &self.send_buf)? {
                return Ok(());
            }
            let mut guard = tokio::time::timeout_at(deadline, self.fd.writable())
                .await
                .map_err(|_| self.timeout_error(1))?
                .map_err(|e| TransportError::io("poll", e))?;
            guard.clear_ready();
        }
    }

    /// Feeds received datagrams to `exchange` until `done` says so or `deadline` passes.
    async fn wait<G>(
        &mut self,
        exchange: &mut Exchange<G>,
        mut deadline: Instant,
        done: impl Fn(&Exchange<G>) -> bool,
    ) -> Result<()>
    where
        G: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        while !done(exchange) {
            let received = match tokio::time::timeout_at(deadline, self.fd.readable()).await {
                Ok(guard) => {
                    let mut guard = guard.map_err(|e| TransportError::io("poll", e))?;
                    let recv = &mut self.recv;
                    let received = guard.try_io(|fd| match recv.recv(fd.get_ref()) {
                        Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                        Ok(n) => Ok(Ok(n)),
                        Err(e) => Ok(Err(e)),
                    });
                    // `Err(_)`: nothing queued after all; readiness was cleared, wait again.
                    match received {
                        Ok(result) => result.map_err(|e| TransportError::io("recv", e))?? > 0,
                        Err(_) => false,
                    }
                }
                // The kernel runs a request inside `sendmsg`: one that took longer than the
                // timeout has its answer queued already, and the reactor may not have seen it
                // yet. What is queued counts; only silence is a timeout.
                Err(_) => match self.recv.recv(self.fd.get_ref()) {
                    Ok(0) => return Err(self.timeout_error(exchange.in_flight())),
                    Ok(_) => true,
                    Err(e) => return Err(e),
                },
            };
            if received {
                self.recv.feed(exchange)?;
                // The kernel answered: the timeout bounds its silence, not a long dump.
                deadline = Instant::now() + self.timeout;
            }
        }
        Ok(())
    }

    /// Discards everything already queued (see `Connection::flush` in the blocking driver).
    fn flush<G>(&mut self, exchange: &mut Exchange<G>)
    where
        G: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        self.recv.flush(self.fd.get_ref(), exchange);
    }
}
