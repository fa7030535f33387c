//! A node daemon (`ipvs-proxy`) run as a real process inside a namespace, for end-to-end tests
//! and the examples: start it, read its log, talk HTTP to it, stop it with a signal.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Netns;

/// A running daemon; killed when dropped if still running.
#[derive(Debug)]
pub struct DaemonProcess {
    child: Child,
    log: PathBuf,
}

impl DaemonProcess {
    /// Starts `program` with `args` inside `netns`, its stdout and stderr appended to `log`.
    pub fn start(netns: &Netns, program: &Path, args: &[String], log: &Path) -> io::Result<Self> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // The child inherits the network namespace of the thread that forks it.
        let child = netns.run(move || command.spawn())??;
        Ok(Self {
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a log line after the first `skip_lines` contains every one of `needles`;
    /// returns that line. Fails with the log's tail on timeout or if the process exits.
    pub fn wait_for_log(
        &mut self,
        skip_lines: usize,
        needles: &[&str],
        timeout: Duration,
    ) -> io::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(line) = log
                .lines()
                .skip(skip_lines)
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return Ok(line.to_owned());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "the daemon exited ({status}) before logging {needles:?}; log:\n{}",
                    tail(&log, 40)
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no log line with {needles:?} within {timeout:?}; log:\n{}",
                        tail(&log, 40)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How many lines are logged so far (to wait for lines logged after now).
    pub fn log_lines(&self) -> usize {
        self.log().lines().count()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> io::Result<ExitStatus> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).map_err(io::Error::other)?);
        kill(pid, Signal::SIGTERM).map_err(io::Error::from)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("still running {timeout:?} after SIGTERM"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A plain HTTP/1.0 GET from inside `netns`: the status code and the body.
pub fn http_get(netns: &Netns, addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let path = path.to_owned();
    netns.run(move || http_get_here(addr, &path))?
}

/// A plain HTTP/1.0 GET from the calling thread's network namespace: the status code and the
/// body.
pub fn http_get_here(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// Calls `probe` until it returns `Some`, every 100 ms, for at most `timeout`.
pub fn wait_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `text` to `path` atomically (a temporary file renamed over it), as editors and
/// configuration tools do, so a reader never sees half a file.
pub fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("no file name"))?;
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// A scratch folder for a daemon under test: a `manifests` folder and a log file, under the
/// system's temporary folder, named after the test and the process; removed when dropped.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates (afresh) the folder for `name`.
    pub fn new(name: &str) -> io::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("ipvs-proxy-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests"))?;
        Ok(Self(dir))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The manifests folder in it.
    pub fn manifests(&self) -> PathBuf {
        self.0.join("manifests")
    }

    /// A log file in it, `name.log`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.log"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
