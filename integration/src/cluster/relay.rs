//! A TCP relay that puts the API server on a network namespace's loopback.
//!
//! The daemon under test runs in a namespace of its own (its own IPVS table), which has no
//! route to the VM's network. The relay listens inside that namespace and connects out from
//! the namespace the test runs in: a listening socket keeps the namespace it was made in,
//! while the threads that serve it live in the test's. TLS passes through untouched, so the
//! daemon verifies the API server's certificate (which names `127.0.0.1`) as it would anywhere.
//!
//! [`Relay::cut`] partitions that one daemon from the API server — its connections close and
//! new ones are refused — while the tests, the controllers and every other daemon still reach
//! it; [`Relay::restore`] ends the partition.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Netns;

#[derive(Debug, Default)]
struct State {
    cut: AtomicBool,
    stopped: AtomicBool,
    live: Mutex<Vec<TcpStream>>,
}

impl State {
    fn close_all(&self) {
        if let Ok(mut live) = self.live.lock() {
            for stream in live.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// A running relay; stops (and closes its connections) when dropped.
#[derive(Debug)]
pub struct Relay {
    state: Arc<State>,
    listen: SocketAddr,
}

impl Relay {
    /// Listens on `listen` inside `netns` and relays each connection to `target`.
    pub fn start(netns: &Netns, listen: SocketAddr, target: SocketAddr) -> io::Result<Self> {
        let listener = netns.run(move || TcpListener::bind(listen))??;
        Self::serve(listener, target)
    }

    /// Listens on `listen` (port 0: any) in the caller's namespace: a client in the test
    /// itself that a test can partition.
    pub fn start_here(listen: SocketAddr, target: SocketAddr) -> io::Result<Self> {
        Self::serve(TcpListener::bind(listen)?, target)
    }

    fn serve(listener: TcpListener, target: SocketAddr) -> io::Result<Self> {
        let listen = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let state = Arc::new(State::default());
        let shared = state.clone();
        std::thread::spawn(move || accept_loop(&listener, target, &shared));
        Ok(Self { state, listen })
    }

    /// The address it listens on, inside the namespace.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The URL a kubeconfig in the namespace names.
    pub fn url(&self) -> String {
        format!("https://{}", self.listen)
    }

    /// Partitions: closes every relayed connection and refuses new ones until
    /// [`restore`](Self::restore).
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.close_all();
    }

    /// Ends a partition.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.state.close_all();
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, state: &Arc<State>) {
    while !state.stopped.load(Ordering::SeqCst) {
        let inbound = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if state.cut.load(Ordering::SeqCst) {
            // Refused: closed at once, as a partitioned network would end it.
            let _ = inbound.shutdown(Shutdown::Both);
            continue;
        }
        let state = state.clone();
        std::thread::spawn(move || {
            let _ = relay(inbound, target, &state);
        });
    }
}

/// Copies both ways until either side closes.
fn relay(inbound: TcpStream, target: SocketAddr, state: &State) -> io::Result<()> {
    inbound.set_nonblocking(false)?;
    let outbound = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    if let Ok(mut live) = state.live.lock() {
        live.retain(|s| s.peer_addr().is_ok());
        live.push(inbound.try_clone()?);
        live.push(outbound.try_clone()?);
    }
    let (mut in_read, mut out_write) = (inbound.try_clone()?, outbound.try_clone()?);
    let upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut in_read, &mut out_write);
        let _ = out_write.shutdown(Shutdown::Write);
    });
    let (mut out_read, mut in_write) = (outbound, inbound);
    let _ = io::copy(&mut out_read, &mut in_write);
    let _ = in_write.shutdown(Shutdown::Both);
    let _ = out_read.shutdown(Shutdown::Both);
    let _ = upstream.join();
    Ok(())
}
