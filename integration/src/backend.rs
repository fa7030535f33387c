//! Tiny TCP backends that answer with their own name, and clients that count who answered.
//!
//! A backend accepts connections, writes its name and a newline, then echoes every line it
//! receives until the client closes. A short client reads the name and hangs up; a long-lived
//! client keeps the connection open and can check that it still works later.
//!
//! Clients hang up with a reset (`SO_LINGER` 0): IPVS then keeps the closed connection for
//! 10 s (state `CLOSE`) instead of the 2 minutes of `TIME_WAIT`. A draining real server is
//! deleted only once IPVS has forgotten every connection to it (as kube-proxy does), so tests
//! and demos that watch a drain end would otherwise wait two minutes after each burst of
//! short connections.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Netns;

/// How long a client waits for a connection or an answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running name server; stops when dropped.
#[derive(Debug)]
pub struct Backend {
    name: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Backend {
    /// Starts a backend called `name` listening on `addr` inside `netns`.
    pub fn start(netns: &Netns, name: &str, addr: SocketAddr) -> io::Result<Self> {
        let listener = netns.run(move || TcpListener::bind(addr))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, name) = (stop.clone(), name.to_string());
            netns.spawn(move || serve(listener, &name, &stop))?
        };
        Ok(Self {
            name: name.to_string(),
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The backend's name (what it answers).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: TcpListener, name: &str, stop: &AtomicBool) -> io::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let name = name.to_string();
                std::thread::spawn(move || answer(stream, &name));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn answer(stream: TcpStream, name: &str) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut writer = stream.try_clone()?;
    writeln!(writer, "{name}")?;
    for line in BufReader::new(stream).lines() {
        writeln!(writer, "{}", line?)?;
    }
    Ok(())
}

/// Connects to `addr`, reads the backend's name and closes. Call it inside a namespace.
pub fn ask_name(addr: SocketAddr) -> io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    close_with_reset(&stream);
    let name = line.trim_end().to_string();
    if name.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "backend closed without a name",
        ));
    }
    Ok(name)
}

/// Opens `count` connections to `addr` from inside `netns`, one after another, and counts the
/// answers by backend name. Failed connections are counted under `"(failed: <error kind>)"`.
pub fn tally(netns: &Netns, addr: SocketAddr, count: usize) -> io::Result<BTreeMap<String, usize>> {
    netns.run(move || {
        let mut counts = BTreeMap::new();
        for _ in 0..count {
            let key = match ask_name(addr) {
                Ok(name) => name,
                Err(e) => format!("(failed: {:?})", e.kind()),
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    })
}

/// A connection that stays open: it learns the backend's name, then can check that the path
/// still carries data.
#[derive(Debug)]
pub struct LongLivedConnection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    backend: String,
}

impl LongLivedConnection {
    /// Opens the connection from inside `netns`.
    pub fn open(netns: &Netns, addr: SocketAddr) -> io::Result<Self> {
        let stream = netns.run(move || TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT))??;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut backend = String::new();
        reader.read_line(&mut backend)?;
        Ok(Self {
            reader,
            writer,
            backend: backend.trim_end().to_string(),
        })
    }

    /// The backend that answered.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Closes the connection with a reset (see the module documentation).
    pub fn reset(self) {
        close_with_reset(&self.writer);
    }

    /// Sends `text` and checks that it comes back.
    pub fn echo(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.writer, "{text}")?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if line.trim_end() == text {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "sent {text:?}, got back {line:?}"
            )))
        }
    }
}

/// Sets `SO_LINGER` to 0, so that the close the caller makes (by dropping every handle of the
/// socket) sends a reset; see the module documentation for why. Best effort: a socket that
/// refuses it closes normally.
fn close_with_reset(stream: &TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::Linger, &linger);
}
