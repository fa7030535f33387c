//! Backends that say who they are and whom they saw: each answers a TCP connection or a UDP
//! datagram with its name and the client's address as it reached it, so a test sees both
//! which endpoint served it and whether its address was kept or masqueraded.
//!
//! The answer is one line, `NAME ADDRESS:PORT`.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Netns;
use crate::backend::CLIENT_TIMEOUT;

/// A running witness on one TCP and one UDP port; stops when dropped.
#[derive(Debug)]
pub struct Witness {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Witness {
    /// Starts a witness called `name` on `addr` (TCP and UDP) inside `netns`.
    pub fn start(netns: &Netns, name: &str, addr: SocketAddr) -> io::Result<Self> {
        let tcp = netns.run(move || TcpListener::bind(addr))??;
        tcp.set_nonblocking(true)?;
        let udp = netns.run(move || UdpSocket::bind(addr))??;
        udp.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let tcp_thread = {
            let (stop, name) = (stop.clone(), name.to_owned());
            std::thread::spawn(move || serve_tcp(tcp, &name, &stop))
        };
        let udp_thread = {
            let (stop, name) = (stop.clone(), name.to_owned());
            std::thread::spawn(move || serve_udp(udp, &name, &stop))
        };
        Ok(Self {
            stop,
            threads: vec![tcp_thread, udp_thread],
        })
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn serve_tcp(listener: TcpListener, name: &str, stop: &AtomicBool) -> io::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                stream.set_nonblocking(false)?;
                // One line, then the client hangs up; a failed write is the client's business.
                let _ = writeln!(stream, "{name} {peer}");
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn serve_udp(socket: UdpSocket, name: &str, stop: &AtomicBool) -> io::Result<()> {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) => {
                let _ = socket.send_to(format!("{name} {peer}\n").as_bytes(), peer);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a witness answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The witness's name.
    pub name: String,
    /// The client's address as the witness saw it.
    pub client: SocketAddr,
}

impl Answer {
    fn parse(line: &str) -> io::Result<Self> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("answer {line:?}"));
        let (name, client) = line.trim_end().split_once(' ').ok_or_else(bad)?;
        Ok(Self {
            name: name.to_owned(),
            client: client.parse().map_err(|_| bad())?,
        })
    }
}

/// Connects to `addr` over TCP and reads the answer. Call it inside a namespace.
pub fn ask_tcp(addr: SocketAddr) -> io::Result<Answer> {
    let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    Answer::parse(&line)
}

/// Sends one datagram to `addr` from `socket` and reads the answer, waiting at most
/// `timeout`. Call it inside a namespace (the socket was bound in one).
pub fn ask_udp(socket: &UdpSocket, addr: SocketAddr, timeout: Duration) -> io::Result<Answer> {
    socket.set_read_timeout(Some(timeout))?;
    socket.send_to(b"who\n", addr)?;
    let mut buf = [0u8; 512];
    let (len, _) = socket.recv_from(&mut buf)?;
    Answer::parse(&String::from_utf8_lossy(&buf[..len]))
}
