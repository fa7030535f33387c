//! Booting the test kernel under QEMU with virtme-ng and running one command in it.
//!
//! The guest sees the host's root file system read-only (plus the folders given as writable), so
//! it runs binaries built on the host in place. Its exit status and output come back to us; a
//! guest that hangs is killed after a timeout.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::provision::{self, Kernel};
use crate::{Result, step};

/// Environment variables passed on to the guest command when set.
const FORWARDED_ENV: &[&str] = &[
    "IPVS_BENCH_SERVICES",
    "IPVS_BENCH_REPEATS",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "PROPTEST_CASES",
];

/// How long a guest may run before it is killed: env `IPVS_VM_TIMEOUT_SECS`, else `default`,
/// else 40 minutes.
fn timeout(default: Option<Duration>) -> Duration {
    std::env::var("IPVS_VM_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .or(default)
        .unwrap_or(Duration::from_secs(2400))
}

/// How a guest is booted, beyond the command it runs.
#[derive(Debug, Default)]
pub(crate) struct GuestOptions<'a> {
    /// Host folders the guest may write to.
    pub(crate) writable: Vec<&'a Path>,
    /// Its memory (a QEMU size such as `6G`; `2G` when empty) unless the environment's
    /// `IPVS_VM_MEMORY` says otherwise.
    pub(crate) memory: &'a str,
    /// A user-mode network (QEMU's slirp): the guest reaches the host's loopback at
    /// `10.0.2.2`.
    pub(crate) network: bool,
    /// Variables set for the guest command, beside the forwarded ones.
    pub(crate) env: Vec<(&'static str, String)>,
    /// How long it may run unless `IPVS_VM_TIMEOUT_SECS` says (`None`: 40 minutes).
    pub(crate) timeout: Option<Duration>,
}

/// Runs `command` (a shell command line) in the guest. Returns whether it exited with status 0.
pub(crate) fn run_in_guest(
    kernel: &Kernel,
    command: &str,
    options: &GuestOptions<'_>,
) -> Result<bool> {
    let vng = provision::vng_path()?;
    let default_memory = if options.memory.is_empty() {
        "2G"
    } else {
        options.memory
    };
    let memory = std::env::var("IPVS_VM_MEMORY").unwrap_or_else(|_| default_memory.into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    let mut cmd = Command::new(&vng);
    cmd.arg("--run").arg(&kernel.vmlinuz);
    // /dev/kvm is present on these machines but QEMU cannot run a stock kernel with it (it
    // aborts on an MSR write), so the guest runs under software emulation unless asked.
    if std::env::var("IPVS_VM_KVM").as_deref() != Ok("1") {
        cmd.arg("--disable-kvm");
    }
    cmd.args(["--memory", &memory, "--cpus", &cpus.to_string()]);
    for dir in &options.writable {
        cmd.arg("--rwdir").arg(dir);
    }
    if options.network {
        cmd.args(["--network", "user"]);
    }
    // The guest starts with a clean environment: pass on the variables that tune what runs.
    let mut forwarded = String::new();
    for var in FORWARDED_ENV {
        if let Ok(value) = std::env::var(var) {
            forwarded += &format!("{var}='{}' ", value.replace('\'', ""));
        }
    }
    for (var, value) in &options.env {
        forwarded += &format!("{var}='{}' ", value.replace('\'', ""));
    }
    let command = format!("{forwarded}{command}");
    let command = command.as_str();
    cmd.arg("--exec").arg(command);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        // virtme-ng reopens /dev/stderr for writing, which would truncate a log file our caller
        // redirected into: relay its stderr through a pipe as well.
        .stderr(Stdio::piped())
        .process_group(0);
    let limit = timeout(options.timeout);
    step(&format!(
        "booting kernel {} under QEMU (software emulation, {cpus} CPUs, {memory}); timeout {}s",
        kernel.version,
        limit.as_secs()
    ));
    println!("    guest command: {command}");
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", vng.display()))?;
    let mut relay = child
        .stdout
        .take()
        .map(|out| std::thread::spawn(move || relay_output(out)));
    let mut relay_err = child
        .stderr
        .take()
        .map(|err| std::thread::spawn(move || relay_output(err)));
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => {
                for relay in [relay.take(), relay_err.take()].into_iter().flatten() {
                    let _ = relay.join();
                }
                println!(
                    "    guest finished in {:.0}s: {status}",
                    started.elapsed().as_secs_f64()
                );
                return Ok(status.success());
            }
            None if started.elapsed() > limit => {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!(
                    "the guest ran for more than {}s and was killed (set IPVS_VM_TIMEOUT_SECS to change)",
                    limit.as_secs()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// QEMU's user-mode network: the guest's address, and the host's loopback as the guest sees it.
const GUEST_ADDR: &str = "10.0.2.15/24";
const HOST_ADDR: &str = "10.0.2.2";

/// Inside the guest: makes sure its network is up. virtme-ng asks for an address over DHCP in
/// the background and starts the command without waiting, so the command can find no address
/// yet (or, when the interface was renamed meanwhile, never). After a short wait for DHCP the
/// address QEMU's DHCP server would give is set by hand.
pub(crate) fn ensure_guest_network() -> Result<()> {
    let ip = |args: &[&str]| -> Result<String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let configured = || {
        ip(&["-4", "-o", "addr", "show", "scope", "global"]).is_ok_and(|t| !t.trim().is_empty())
            && ip(&["-4", "route", "show", "default"]).is_ok_and(|t| !t.trim().is_empty())
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if configured() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let links = ip(&["-o", "link", "show"])?;
    let name = links
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .map(|n| n.split('@').next().unwrap_or(n))
        .find(|n| *n != "lo")
        .ok_or("the guest has no network interface")?
        .to_string();
    println!("guest-run: no address from DHCP yet: {GUEST_ADDR} on {name}, by hand");
    ip(&["link", "set", &name, "up"])?;
    let _ = ip(&["addr", "add", GUEST_ADDR, "dev", &name]);
    let _ = ip(&[
        "route", "replace", "default", "via", HOST_ADDR, "dev", &name,
    ]);
    if configured() {
        Ok(())
    } else {
        Err(format!(
            "{name} has no address or default route after setting them"
        ))
    }
}

/// `cargo xtask vm CMD`.
pub(crate) fn run_shell(command: &str, writable: &[std::path::PathBuf]) -> Result<bool> {
    let kernel = provision::provision()?;
    let options = GuestOptions {
        writable: writable.iter().map(|p| p.as_path()).collect(),
        ..GuestOptions::default()
    };
    run_in_guest(&kernel, command, &options)
}

/// Copies the guest's console to our stdout without the terminal control sequences virtme-ng
/// emits (cursor moves, a line of padding), so logs stay readable in CI.
fn relay_output(out: impl std::io::Read) {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(out);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let text = strip_control(&String::from_utf8_lossy(&line));
        if !text.is_empty() {
            println!("{text}");
        }
        line.clear();
    }
}

/// Removes ANSI escape sequences and carriage returns, and trailing white space.
fn strip_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte; other escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::strip_control;

    #[test]
    fn strips_escapes_and_padding() {
        assert_eq!(
            strip_control("\u{1b}[?25l\u{1b}[2Jtest ok   \r\n"),
            "test ok"
        );
        assert_eq!(strip_control("   \u{1b}7\u{1b}8  "), "");
        assert_eq!(strip_control("plain"), "plain");
    }
}
