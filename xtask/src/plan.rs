//! A test plan: the binaries (and programs) to run where IPVS is, and their results.
//!
//! The host side builds everything, writes a plan, and runs `xtask guest-run` either directly or
//! inside the VM. `guest-run` runs each test binary's real-kernel tests (the ignored tests under a
//! `real_kernel` module), streams their output, and writes the counts to a results file the host
//! reads back: what ran, where, and how it ended.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Result;

/// One thing to run.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// A short name for messages (package and target).
    pub(crate) name: String,
    /// The executable.
    pub(crate) exe: PathBuf,
    /// Its working directory (the package's folder, as `cargo test` would use).
    pub(crate) cwd: PathBuf,
    /// `Tests(filter)`: a libtest binary whose real-kernel tests run; `Program(args)`: a program
    /// that must exit 0.
    pub(crate) kind: EntryKind,
}

/// What an [`Entry`] is.
#[derive(Debug, Clone)]
pub(crate) enum EntryKind {
    /// A libtest binary; the optional extra filter narrows the real-kernel tests.
    Tests(Option<String>),
    /// A program run with these arguments.
    Program(Vec<String>),
}

/// Writes the plan file.
pub(crate) fn write_plan(entries: &[Entry], path: &Path) -> Result<()> {
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            let (kind, arg) = match &e.kind {
                EntryKind::Tests(filter) => ("tests", json!(filter)),
                EntryKind::Program(args) => ("program", json!(args)),
            };
            json!({"name": e.name, "exe": e.exe, "cwd": e.cwd, "kind": kind, "arg": arg})
        })
        .collect();
    std::fs::write(path, json!({ "entries": list }).to_string())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn read_plan(path: &Path) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let entries = value["entries"].as_array().ok_or("plan without entries")?;
    entries
        .iter()
        .map(|e| {
            let s = |k: &str| {
                e[k].as_str()
                    .map(str::to_string)
                    .ok_or(format!("plan entry without {k}"))
            };
            let kind = match s("kind")?.as_str() {
                "tests" => EntryKind::Tests(e["arg"].as_str().map(str::to_string)),
                _ => EntryKind::Program(
                    e["arg"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str().map(str::to_string))
                        .collect(),
                ),
            };
            Ok(Entry {
                name: s("name")?,
                exe: s("exe")?.into(),
                cwd: s("cwd")?.into(),
                kind,
            })
        })
        .collect()
}

/// The counts of a run, as written to and read from the results file.
#[derive(Debug, Default, Clone)]
pub(crate) struct Results {
    /// Real-kernel tests that passed.
    pub(crate) passed: u64,
    /// Real-kernel tests that failed (or binaries that crashed, counted once each).
    pub(crate) failed: u64,
    /// Programs that exited 0.
    pub(crate) programs_ok: u64,
    /// Programs that failed.
    pub(crate) programs_failed: u64,
    /// The kernel release it ran on.
    pub(crate) kernel: String,
    /// Names of what failed.
    pub(crate) failures: Vec<String>,
}

impl Results {
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "no results at {} ({e}): the guest crashed or never ran the plan",
                path.display()
            )
        })?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Ok(Self {
            passed: n("passed"),
            failed: n("failed"),
            programs_ok: n("programs_ok"),
            programs_failed: n("programs_failed"),
            kernel: v["kernel"].as_str().unwrap_or("?").to_string(),
            failures: v["failures"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect(),
        })
    }

    fn write(&self, path: &Path) -> Result<()> {
        let v = json!({
            "passed": self.passed, "failed": self.failed,
            "programs_ok": self.programs_ok, "programs_failed": self.programs_failed,
            "kernel": self.kernel, "failures": self.failures,
        });
        std::fs::write(path, v.to_string()).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// `xtask guest-run`: runs the plan here and writes the results. Succeeds when nothing failed
/// and at least one real-kernel test or program ran.
///
/// `in_vm`: the guest is a throw-away VM, whose kernel settings may be changed: the hung-task
/// detector reports a task stuck in the kernel after [`HUNG_TASK_SECS`] instead of 120 s.
/// Wherever it runs, a test binary that fails prints the end of the kernel log.
pub(crate) fn guest_run(plan: &Path, results_path: &Path, in_vm: bool) -> Result<bool> {
    let entries = read_plan(plan)?;
    if in_vm {
        let knob = "/proc/sys/kernel/hung_task_timeout_secs";
        if let Err(e) = std::fs::write(knob, HUNG_TASK_SECS.to_string()) {
            println!("guest-run: cannot set {knob} ({e}); stalls are reported after the default");
        }
    }
    let mut results = Results {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        ..Results::default()
    };
    println!(
        "guest-run: kernel {}, {} entries",
        results.kernel,
        entries.len()
    );
    for entry in &entries {
        match &entry.kind {
            EntryKind::Tests(filter) => run_tests(entry, filter.as_deref(), in_vm, &mut results),
            EntryKind::Program(args) => run_program(entry, args, &mut results),
        }
        // Write after every entry, so a guest that dies later still reports what it did.
        results.write(results_path)?;
    }
    results.write(results_path)?;
    println!(
        "guest-run: {} passed, {} failed; programs {} ok, {} failed",
        results.passed, results.failed, results.programs_ok, results.programs_failed
    );
    Ok(results.failed == 0
        && results.programs_failed == 0
        && results.passed + results.programs_ok > 0)
}

fn test_args(filter: Option<&str>) -> Vec<String> {
    // libtest ORs its filters, so a user's filter replaces the `real_kernel` one rather than
    // joining it; `--ignored` still limits the run to marked tests.
    vec![
        "--ignored".to_string(),
        filter.unwrap_or("real_kernel").to_string(),
    ]
}

fn run_tests(entry: &Entry, filter: Option<&str>, in_vm: bool, results: &mut Results) {
    // Only binaries that hold real-kernel tests are run (saves a boot's worth of noise).
    let listed = Command::new(&entry.exe)
        .args(test_args(filter))
        .args(["--list", "--format", "terse"])
        .current_dir(&entry.cwd)
        .output();
    let listed = match listed {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.ends_with(": test"))
            .count(),
        Err(e) => {
            results.failed += 1;
            results
                .failures
                .push(format!("{}: cannot run: {e}", entry.name));
            return;
        }
    };
    if listed == 0 {
        return;
    }
    println!("\n--- {} ({listed} real-kernel tests)", entry.name);
    let child = Command::new(&entry.exe)
        .args(test_args(filter))
        .args(["--test-threads", "2"])
        .current_dir(&entry.cwd)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            results.failed += 1;
            results
                .failures
                .push(format!("{}: cannot run: {e}", entry.name));
            return;
        }
    };
    let watchdog = Watchdog::start(&entry.name, child.id(), in_vm, BINARY_LIMIT);
    let (mut passed, mut failed, mut saw_result) = (0, 0, false);
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            println!("{line}");
            if let Some((p, f)) = parse_test_result(&line) {
                passed += p;
                failed += f;
                saw_result = true;
            }
            if let Some(name) = line
                .strip_prefix("test ")
                .and_then(|l| l.strip_suffix(" ... FAILED"))
            {
                results.failures.push(format!("{}: {name}", entry.name));
            }
        }
    }
    let status = child.wait();
    watchdog.stop();
    print_kernel_log_tail(failed > 0 || !status.as_ref().is_ok_and(|s| s.success()));
    results.passed += passed;
    results.failed += failed;
    if !saw_result || !status.as_ref().is_ok_and(|s| s.success()) && failed == 0 {
        results.failed += 1;
        results.failures.push(format!(
            "{}: ended without a result ({status:?})",
            entry.name
        ));
    }
}

/// How long one test binary may run before it is taken for stalled (the longest, the
/// daemon's, takes about 4 minutes in the VM).
const BINARY_LIMIT: Duration = Duration::from_secs(900);

/// Kills a test binary that runs past [`BINARY_LIMIT`], after logging what the kernel's
/// blocked tasks are doing: a call stuck in the kernel then fails its binary with the kernel's
/// side of the story, instead of hanging until the whole VM is killed without a word.
struct Watchdog {
    done: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Watchdog {
    fn start(name: &str, pid: u32, in_vm: bool, limit: Duration) -> Self {
        let (done, finished) = mpsc::channel::<()>();
        let name = name.to_string();
        let thread = std::thread::spawn(move || {
            if finished.recv_timeout(limit) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            println!(
                "guest-run: {name} still runs after {}s: taken for stalled and killed",
                limit.as_secs()
            );
            if in_vm {
                // `w`: the stacks of every blocked (uninterruptible) task, into the kernel log.
                let _ = std::fs::write("/proc/sysrq-trigger", "w");
            }
            print_kernel_log_tail(true);
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        });
        Self { done, thread }
    }

    /// The binary ended: the watchdog ends too.
    fn stop(self) {
        let _ = self.done.send(());
        let _ = self.thread.join();
    }
}

/// How long a task may sit uninterruptible in the kernel before the VM's kernel logs its stack.
const HUNG_TASK_SECS: u32 = 20;

/// How much of the kernel log a failed test binary prints.
const KERNEL_LOG_LINES: usize = 150;

/// Prints the last [`KERNEL_LOG_LINES`] lines of the kernel log (stacks of stalled tasks,
/// IPVS's own messages) after a test binary `failed`, or whenever the log holds a hung-task
/// report, so that a real-kernel failure or stall carries the kernel's side of it.
fn print_kernel_log_tail(failed: bool) {
    match Command::new("dmesg").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            if !failed && !text.contains("blocked for more than") {
                return;
            }
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(KERNEL_LOG_LINES)..];
            println!("--- kernel log, last {} lines", tail.len());
            for line in tail {
                println!("{line}");
            }
            println!("--- end of kernel log");
        }
        Ok(out) => println!(
            "--- kernel log unavailable: dmesg {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => println!("--- kernel log unavailable: dmesg: {e}"),
    }
}

fn run_program(entry: &Entry, args: &[String], results: &mut Results) {
    println!("\n--- {} {}", entry.name, args.join(" "));
    let status = Command::new(&entry.exe)
        .args(args)
        .current_dir(&entry.cwd)
        .env("RUST_BACKTRACE", "1")
        .status();
    match status {
        Ok(s) if s.success() => results.programs_ok += 1,
        other => {
            results.programs_failed += 1;
            results.failures.push(format!("{}: {other:?}", entry.name));
        }
    }
}

/// Parses libtest's `test result: ok. 3 passed; 1 failed; ...` line.
pub(crate) fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |word: &str| {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .trim_start_matches("ok. ")
                    .trim_start_matches("FAILED. ")
                    .strip_suffix(word)
            })
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

#[cfg(test)]
mod tests {
    use std::{os::unix::process::ExitStatusExt, process::Command, time::Duration};

    use super::{Watchdog, parse_test_result};

    #[test]
    fn the_watchdog_kills_a_binary_that_runs_too_long_and_spares_one_that_ends() {
        let mut stalled = Command::new("sleep").arg("60").spawn().expect("sleep");
        let watchdog = Watchdog::start("sleep", stalled.id(), false, Duration::from_millis(200));
        let status = stalled.wait().expect("wait");
        watchdog.stop();
        assert_eq!(status.signal(), Some(9), "{status:?}");

        let mut quick = Command::new("true").spawn().expect("true");
        let watchdog = Watchdog::start("true", quick.id(), false, Duration::from_secs(60));
        assert!(quick.wait().expect("wait").success());
        // Returns at once: the watchdog does not wait out its limit.
        let started = std::time::Instant::now();
        watchdog.stop();
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn parses_libtest_result_lines() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 2 filtered out; finished in 0.16s"
            ),
            Some((3, 0))
        );
        assert_eq!(
            parse_test_result(
                "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out"
            ),
            Some((1, 2))
        );
        assert_eq!(parse_test_result("running 3 tests"), None);
    }
}
