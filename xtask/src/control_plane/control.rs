//! The control channel: a test in the VM asks the host to stop or start the API server, or to
//! compact etcd's history, one line per request (`stop apiserver`, `start apiserver`,
//! `compact`), answered with one line (`ok …` or `error …`).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Processes, components};
use crate::Result;

/// The channel's listener thread.
pub(crate) struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on a free loopback port.
    pub(crate) fn start(processes: Arc<Mutex<Processes>>) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &processes),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers the requests of one connection, one at a time.
fn serve(stream: TcpStream, processes: &Mutex<Processes>) {
    let _ = stream.set_nonblocking(false);
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
        let answer = match handle(line.trim(), processes) {
            Ok(detail) => format!("ok {detail}"),
            Err(e) => format!("error {}", e.replace('\n', " / ")),
        };
        println!("    control channel: {} -> {answer}", line.trim());
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

fn handle(request: &str, processes: &Mutex<Processes>) -> Result<String> {
    let mut p = processes
        .lock()
        .map_err(|_| "control plane lock poisoned")?;
    match request {
        "stop apiserver" => {
            p.apiserver.stop(Duration::from_secs(20));
            Ok("stopped".into())
        }
        "start apiserver" => {
            p.start_apiserver()?;
            Ok("listening".into())
        }
        "compact" => components::compact_etcd(p.etcd_addr).map(|r| format!("revision {r}")),
        other => Err(format!("unknown request {other:?}")),
    }
}
