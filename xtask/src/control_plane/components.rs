//! The control plane's processes: etcd, kube-apiserver and kube-controller-manager, each
//! started with the flags a small single-node test cluster needs, logging to its own file.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Result;

/// One component: how to start it, and the running process if any.
pub(crate) struct Component {
    pub(crate) name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Component {
    pub(crate) fn new(name: &'static str, program: PathBuf, args: Vec<String>, dir: &Path) -> Self {
        Self {
            name,
            program,
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// Starts the process (its output appended to its log).
    pub(crate) fn start(&mut self) -> Result<()> {
        if self.running() {
            return Ok(());
        }
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C meant for us is ours to pass on, in order.
            .process_group(0);
        // SAFETY: the closure runs in the child between fork and exec and only makes one
        // async-signal-safe system call (prctl). It kills the component when we die without
        // stopping it (killed, or a panic that skips our teardown), so no orphan keeps a port.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("{}: {e}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether the process is running.
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the process: SIGTERM, then SIGKILL after `grace`.
    pub(crate) fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Fails with the log's tail if the process has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if self.running() {
            return Ok(());
        }
        Err(format!(
            "{} is not running; its log ends:\n{}",
            self.name,
            self.log_tail(40)
        ))
    }

    /// The last `lines` lines of its log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Waits until `addr` accepts TCP connections while `component` runs.
pub(crate) fn wait_for_port(
    component: &mut Component,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        component.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not listen on {addr} within {timeout:?}; its log ends:\n{}",
                component.name,
                component.log_tail(40)
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One plain-HTTP request (etcd's client port speaks HTTP/1.1 JSON); returns the status and
/// the body.
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("{addr}: {e}"))?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}: no HTTP status in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    // etcd's gateway answers small bodies whole, but may chunk: keep the JSON object.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if start <= end => &body[start..=end],
        _ => body,
    };
    Ok((status, body.to_string()))
}

/// Waits until etcd's `/health` says it is healthy.
pub(crate) fn wait_for_etcd(
    etcd: &mut Component,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((200, body)) = http(addr, "GET", "/health", "")
            && body.contains("\"true\"")
        {
            return Ok(());
        }
        etcd.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!(
                "etcd was not healthy within {timeout:?}; its log ends:\n{}",
                etcd.log_tail(40)
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Compacts etcd's history up to its current revision (physically), so a watch from any older
/// resource version is answered `410 Gone`. Returns the revision.
pub(crate) fn compact_etcd(addr: SocketAddr) -> Result<u64> {
    let (status, body) = http(addr, "POST", "/v3/kv/range", r#"{"key":"AA=="}"#)?;
    if status != 200 {
        return Err(format!("etcd range: HTTP {status}: {body}"));
    }
    let value: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("etcd range: {e}: {body}"))?;
    let revision: u64 = value["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| format!("etcd range: no header.revision in {body}"))?;
    let request = serde_json::json!({"revision": revision.to_string(), "physical": true});
    let (status, body) = http(addr, "POST", "/v3/kv/compaction", &request.to_string())?;
    if status != 200 {
        return Err(format!("etcd compaction: HTTP {status}: {body}"));
    }
    Ok(revision)
}
