//! The library's bulk load and listing against what users would run instead, in the same kernel,
//! in one run.
//!
//! N TCP services × 5 masquerading destinations (6 N operations; N = 10,000 and 50,000 unless
//! `IPVS_BENCH_SERVICES` says otherwise, a comma-separated list), loaded and
//! listed back by each tool in a fresh network namespace:
//! - the library, batched: `Ipvs::apply_batch`, then `Ipvs::services_with_destinations`
//!   (and the service dump alone, `Ipvs::services`);
//! - `ipvsadm-restore`, then `ipvsadm -Sn` (the reference C client);
//! - moby/ipvs (the Go library Docker and others use), through a small Go program of the
//!   project's (`integration/go/mobyipvs-peer`) given by `--moby-peer PATH` or
//!   `IPVS_BENCH_MOBY_PEER`: `cargo xtask bench` builds it and passes it. Without it the
//!   benchmark runs without this peer and says so;
//! - the library with one request per round trip (`Ipvs::apply` in a loop).
//!
//! Every tool runs `IPVS_BENCH_REPEATS` times (3 unless told otherwise), the order rotated from
//! one round to the next so that no tool always runs first or last; the tables give the
//! minimum, median and maximum wall time, and the medians of the user and system CPU time the
//! tool used (a child process's own, from `wait4`; the library's, this process's around the
//! call). The system time is the kernel's work on the tool's behalf, so wall time as a multiple
//! of it says how close a tool comes to the kernel's own floor.
//!
//! The batched load's memory is measured too: how far the process's resident memory rises
//! above where it stood before the call (the kernel's high-water mark, reset first). After the
//! last size, a table gives how each figure grew from the first size, against the table's
//! growth. `--write PATH` also writes the report as Markdown (`cargo xtask bench` puts it into
//! `BENCHMARKS.md` and `ipvs-rs/README.md`).
//!
//! Figures, not assertions: it prints times and ratios. It does check that every load produced
//! the full table and every listing returned it, so a fast wrong answer cannot pass for a
//! result. Needs the real kernel: `cargo xtask bench` runs it where IPVS is (the VM here).

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use integration::Netns;
use integration::bench::Memory;
use ipvs::Ipvs;
use ipvs::codec::Operation;
use ipvs::model::{Destination, Forwarding, Scheduler, Service, ServiceKey};
use nix::sys::resource::{UsageWho, getrusage};

const DESTINATIONS: u32 = 5;

/// Appends a formatted line to a report being built.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// Ends the benchmark with a message (bad settings, a tool that cannot run).
fn fail(message: &str) -> ! {
    eprintln!("ipvs_bulk_load: {message}");
    std::process::exit(2)
}

/// The table sizes: `IPVS_BENCH_SERVICES` (a comma-separated list; `_` allowed in numbers),
/// 10,000 and 50,000 when unset.
fn sizes() -> Vec<u32> {
    let Ok(text) = std::env::var("IPVS_BENCH_SERVICES") else {
        return vec![10_000, 50_000];
    };
    let sizes: Vec<u32> = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| match s.trim().replace('_', "").parse::<u32>() {
            // The bound keeps the destinations' addresses (198.19.0.0 + 8 i + j) in 32 bits.
            Ok(n) if (1..=1_000_000).contains(&n) => n,
            _ => fail(&format!(
                "IPVS_BENCH_SERVICES={text}: expected numbers of services from 1 to 1,000,000, \
                 separated by commas"
            )),
        })
        .collect();
    if sizes.is_empty() {
        fail("IPVS_BENCH_SERVICES is empty");
    }
    sizes
}

/// How many times each tool runs (`IPVS_BENCH_REPEATS`, at least 1, 3 when unset).
fn repeats() -> usize {
    match std::env::var("IPVS_BENCH_REPEATS") {
        Err(_) => 3,
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => fail(&format!(
                "IPVS_BENCH_REPEATS={text}: expected a number of rounds, 1 or more"
            )),
        },
    }
}

/// The moby/ipvs peer's binary: `--moby-peer PATH` or `IPVS_BENCH_MOBY_PEER`.
fn moby_peer() -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--moby-peer" {
            return args.next().map(PathBuf::from);
        }
    }
    std::env::var_os("IPVS_BENCH_MOBY_PEER")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Service `i`: 198.18.0.0 + i (the benchmarking range), port 80.
fn service_key(i: u32) -> ServiceKey {
    ServiceKey::tcp(Ipv4Addr::from(0xC612_0000 + i), 80)
}

/// Destination `j` of service `i`: 198.19.0.0 + 8 i + j, port 8080.
fn destination(i: u32, j: u32) -> Destination {
    Destination::new(
        Ipv4Addr::from(0xC613_0000 + i * 8 + j),
        8080,
        Forwarding::Masquerade,
    )
}

fn operations(n: u32) -> Vec<Operation> {
    let mut ops = Vec::with_capacity((n * (1 + DESTINATIONS)) as usize);
    for i in 0..n {
        let key = service_key(i);
        ops.push(Operation::AddService(Service::new(
            key,
            Scheduler::RoundRobin,
        )));
        for j in 0..DESTINATIONS {
            ops.push(Operation::AddDestination(key, destination(i, j)));
        }
    }
    ops
}

/// The same table as [`operations`], for `ipvsadm-restore`.
fn restore_script(n: u32) -> String {
    let mut s = String::new();
    for i in 0..n {
        let vip = Ipv4Addr::from(0xC612_0000 + i);
        s += &format!("-A -t {vip}:80 -s rr\n");
        for j in 0..DESTINATIONS {
            let rip = Ipv4Addr::from(0xC613_0000 + i * 8 + j);
            s += &format!("-a -t {vip}:80 -r {rip}:8080 -m -w 1\n");
        }
    }
    s
}

/// Counts services and destinations with ipvsadm (an independent check of each load).
fn count_with_ipvsadm() -> (usize, usize) {
    let out = Command::new("ipvsadm")
        .arg("-Sn")
        .output()
        .unwrap_or_else(|e| fail(&format!("ipvsadm -Sn: {e}")));
    let text = String::from_utf8_lossy(&out.stdout);
    let services = text.lines().filter(|l| l.starts_with("-A")).count();
    let dests = text.lines().filter(|l| l.starts_with("-a")).count();
    (services, dests)
}

fn check_full(what: &str, n: u32, counts: (usize, usize)) {
    let want = (n as usize, (n * DESTINATIONS) as usize);
    assert_eq!(counts, want, "{what}: the table is incomplete");
}

/// One measurement: wall time, and the user and system CPU time it cost.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    wall: Duration,
    user: Duration,
    system: Duration,
}

/// Runs `f` and returns how far this process's resident memory rose above where it stood
/// when `f` began, at its peak, in KiB: the kernel's high-water mark is reset to the current
/// size first (`5` written to `/proc/self/clear_refs`).
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, u64) {
    std::fs::write("/proc/self/clear_refs", "5")
        .unwrap_or_else(|e| fail(&format!("resetting the peak RSS: {e}")));
    let me = std::process::id();
    let base = Memory::read(me).now_kib;
    let value = f();
    (value, Memory::read(me).peak_kib.saturating_sub(base))
}

fn cpu_times(who: UsageWho) -> (Duration, Duration) {
    let usage = getrusage(who).unwrap_or_else(|e| fail(&format!("getrusage: {e}")));
    let d = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    (d(usage.user_time()), d(usage.system_time()))
}

/// Runs `f` in this process and measures it (CPU: the whole process's, which is this thread's
/// and any the library starts; the benchmark's other threads wait meanwhile).
fn in_process<T>(f: impl FnOnce() -> T) -> (T, Sample) {
    let (user0, system0) = cpu_times(UsageWho::RUSAGE_SELF);
    let start = Instant::now();
    let value = f();
    let wall = start.elapsed();
    let (user1, system1) = cpu_times(UsageWho::RUSAGE_SELF);
    let sample = Sample {
        wall,
        user: user1.saturating_sub(user0),
        system: system1.saturating_sub(system0),
    };
    (value, sample)
}

/// Runs a child process to its end and measures it (CPU: the child's own and its waited-for
/// children's, the difference of this process's `RUSAGE_CHILDREN` around its wait; no other
/// child is waited for meanwhile). `stdin` is written to its standard input; its standard
/// output is returned when `capture`.
fn child_process(
    mut command: Command,
    stdin: Option<&[u8]>,
    capture: bool,
) -> (ExitStatus, String, Sample) {
    let what = format!("{command:?}");
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let (user0, system0) = cpu_times(UsageWho::RUSAGE_CHILDREN);
    let start = Instant::now();
    let mut child: Child = command
        .spawn()
        .unwrap_or_else(|e| fail(&format!("{what}: {e}")));
    if let (Some(bytes), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(bytes)
            .unwrap_or_else(|e| fail(&format!("{what}: writing its input: {e}")));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| fail(&format!("{what}: {e}")));
    let wall = start.elapsed();
    let (user1, system1) = cpu_times(UsageWho::RUSAGE_CHILDREN);
    let sample = Sample {
        wall,
        user: user1.saturating_sub(user0),
        system: system1.saturating_sub(system0),
    };
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        sample,
    )
}

/// The tools, each run in its own fresh namespace per round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    LibraryBatched,
    IpvsadmRestore,
    Moby,
    LibrarySingle,
}

/// Everything measured at one size: each measurement's samples, one per round.
#[derive(Debug, Default)]
struct Samples {
    library_load: Vec<Sample>,
    /// How far the process's resident memory rose during each batched load (KiB).
    library_load_peak_kib: Vec<u64>,
    /// The size of the results `apply_batch` returns (bytes): one per operation, held as the
    /// failures alone.
    results_bytes: u64,
    library_list: Vec<Sample>,
    library_services_only: Vec<Sample>,
    restore_load: Vec<Sample>,
    ipvsadm_list: Vec<Sample>,
    moby_load: Vec<Sample>,
    moby_list: Vec<Sample>,
    /// moby/ipvs's own timer (from its open handle to its last reply), load then listing.
    moby_own_load: Vec<Duration>,
    moby_own_list: Vec<Duration>,
    single_load: Vec<Sample>,
    /// The moby/ipvs version the peer reports.
    moby_version: Option<String>,
}

/// A `key=value` field of the moby peer's output line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

fn status_text(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

fn run_tool(tool: Tool, n: u32, round: usize, peer: Option<&Path>, all: &mut Samples) {
    let ns = Netns::new(&format!("bench-{tool:?}-{round}")).expect("namespace");
    ns.run(|| match tool {
        Tool::LibraryBatched => {
            let ops = operations(n);
            let mut ipvs = Ipvs::open().expect("IPVS handle");
            let ((results, load), peak_kib) =
                peak_growth(|| in_process(|| ipvs.apply_batch(&ops).expect("batch")));
            let failed = results.iter().filter(|r| r.is_err()).count();
            assert_eq!(failed, 0, "library batch: {failed} operations failed");
            check_full("library batch", n, count_with_ipvsadm());
            let (listed, list) = in_process(|| {
                let listing = ipvs
                    .services_with_destinations()
                    .expect("list services and destinations");
                let dests: usize = listing.iter().map(|(_, dests)| dests.len()).sum();
                (listing.len(), dests)
            });
            check_full("library listing", n, listed);
            // Where the listing's time goes: the one service dump; the rest is per-service
            // destination dumps.
            let (services, services_only) =
                in_process(|| ipvs.services().expect("list services").len());
            assert_eq!(services, n as usize, "library service dump: incomplete");
            all.library_load.push(load);
            all.library_load_peak_kib.push(peak_kib);
            all.results_bytes = (std::mem::size_of_val(&results)
                + results.failures().len() * std::mem::size_of::<(usize, ipvs::Error)>())
                as u64;
            all.library_list.push(list);
            all.library_services_only.push(services_only);
        }
        Tool::IpvsadmRestore => {
            let script = restore_script(n);
            let (status, _, load) = child_process(
                Command::new("ipvsadm-restore"),
                Some(script.as_bytes()),
                false,
            );
            assert!(
                status.success(),
                "ipvsadm-restore failed: {}",
                status_text(status)
            );
            check_full("ipvsadm-restore", n, count_with_ipvsadm());
            let mut list = Command::new("ipvsadm");
            list.arg("-Sn");
            let (status, _, listed) = child_process(list, None, false);
            assert!(status.success(), "ipvsadm -Sn: {}", status_text(status));
            all.restore_load.push(load);
            all.ipvsadm_list.push(listed);
        }
        Tool::Moby => {
            let Some(peer) = peer else { return };
            let mut command = Command::new(peer);
            command.args(["load", &n.to_string()]);
            let (status, out, load) = child_process(command, None, true);
            assert!(
                status.success(),
                "moby/ipvs load: {}: {out}",
                status_text(status)
            );
            check_full("moby/ipvs load", n, count_with_ipvsadm());
            let mut command = Command::new(peer);
            command.arg("list");
            let (status, listed_out, list) = child_process(command, None, true);
            assert!(
                status.success(),
                "moby/ipvs list: {}: {listed_out}",
                status_text(status)
            );
            let count = |key| {
                field(&listed_out, key)
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or_else(|| fail(&format!("moby/ipvs list: no {key} in {listed_out:?}")))
            };
            check_full(
                "moby/ipvs listing",
                n,
                (count("services"), count("destinations")),
            );
            let own = |text: &str| {
                field(text, "seconds")
                    .and_then(|v| v.parse::<f64>().ok())
                    .map(Duration::from_secs_f64)
                    .unwrap_or_default()
            };
            all.moby_own_load.push(own(&out));
            all.moby_own_list.push(own(&listed_out));
            all.moby_version = field(&out, "moby_ipvs").map(str::to_string);
            all.moby_load.push(load);
            all.moby_list.push(list);
        }
        Tool::LibrarySingle => {
            let ops = operations(n);
            let mut ipvs = Ipvs::open().expect("IPVS handle");
            let ((), load) = in_process(|| {
                for op in &ops {
                    ipvs.apply(op).expect("operation");
                }
            });
            check_full("library one by one", n, count_with_ipvsadm());
            all.single_load.push(load);
        }
    })
    .expect("run in a fresh namespace");
}

/// Min, median and max of a measurement's samples, and the medians of its CPU times.
#[derive(Debug, Clone, Copy)]
struct Summary {
    min: Duration,
    median: Duration,
    max: Duration,
    user: Duration,
    system: Duration,
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    match values.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2,
    }
}

fn summarize(samples: &[Sample]) -> Option<Summary> {
    let walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
    Some(Summary {
        min: *walls.iter().min()?,
        max: *walls.iter().max()?,
        median: median(walls),
        user: median(samples.iter().map(|s| s.user).collect()),
        system: median(samples.iter().map(|s| s.system).collect()),
    })
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// How many times `slow` takes `fast`'s time.
fn ratio(fast: Duration, slow: Duration) -> f64 {
    slow.as_secs_f64() / fast.as_secs_f64().max(1e-9)
}

/// One table row: the wall times, the CPU times, and wall time as a multiple of system time.
fn row(out: &mut String, what: &str, s: Option<Summary>, versus: &str) {
    match s {
        Some(s) => put!(
            out,
            "| {what} | {} / {} / {} | {} | {} | {} | {versus} |",
            secs(s.min),
            secs(s.median),
            secs(s.max),
            secs(s.user),
            secs(s.system),
            of_system(s),
        ),
        None => put!(out, "| {what} | — | — | — | — | {versus} |"),
    }
}

/// The median wall time as a multiple of the median system time ("—" below the clock's
/// resolution, where the ratio would mean nothing).
fn of_system(s: Summary) -> String {
    if s.system < Duration::from_millis(1) {
        "—".into()
    } else {
        format!("{:.2}×", ratio(s.system, s.median))
    }
}

/// "4.2× faster than X" (medians), or "—" when either is absent.
fn faster(us: Option<Summary>, them: Option<Summary>, name: &str) -> String {
    match (us, them) {
        (Some(us), Some(them)) => {
            format!("{:.1}× faster than {name}", ratio(us.median, them.median))
        }
        _ => String::new(),
    }
}

fn joined(parts: &[String]) -> String {
    let parts: Vec<&str> = parts
        .iter()
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .collect();
    parts.join(", ")
}

fn report(n: u32, rounds: usize, all: &Samples, peer_absent: Option<&str>) -> String {
    let mut out = String::new();
    let library_load = summarize(&all.library_load);
    let library_list = summarize(&all.library_list);
    let restore = summarize(&all.restore_load);
    let ipvsadm_list = summarize(&all.ipvsadm_list);
    let moby_load = summarize(&all.moby_load);
    let moby_list = summarize(&all.moby_list);
    let single = summarize(&all.single_load);
    let services_only = summarize(&all.library_services_only);
    let moby = format!(
        "moby/ipvs {}",
        all.moby_version.as_deref().unwrap_or("(version unknown)")
    );

    out.push('\n');
    put!(
        out,
        "{n} services × {DESTINATIONS} destinations, {rounds} rounds per tool (order rotated), \
         each in a fresh namespace; times in seconds"
    );
    out.push('\n');
    put!(
        out,
        "| measurement | wall min / median / max | user CPU | system CPU | wall / system | vs peers (medians) |"
    );
    put!(out, "| --- | --- | --- | --- | --- | --- |");
    row(
        &mut out,
        "load, library batched (`apply_batch`)",
        library_load,
        &joined(&[
            faster(library_load, restore, "ipvsadm-restore"),
            faster(library_load, moby_load, &moby),
        ]),
    );
    row(&mut out, "load, `ipvsadm-restore`", restore, "(peer)");
    match peer_absent {
        None => row(
            &mut out,
            &format!("load, {moby} (Go, one request per round trip)"),
            moby_load,
            &format!(
                "(peer; its own timer, without start-up: {} s)",
                secs(median(all.moby_own_load.clone()))
            ),
        ),
        Some(why) => put!(out, "| load, moby/ipvs | absent: {why} | | | | |"),
    }
    row(
        &mut out,
        "load, library one request per round trip",
        single,
        &match (library_load, single) {
            (Some(b), Some(s)) => format!("batching is {:.1}× faster", ratio(b.median, s.median)),
            _ => String::new(),
        },
    );
    row(
        &mut out,
        "list all, library (`services_with_destinations`)",
        library_list,
        &joined(&[
            faster(library_list, ipvsadm_list, "`ipvsadm -Sn`"),
            faster(library_list, moby_list, &moby),
        ]),
    );
    row(&mut out, "list all, `ipvsadm -Sn`", ipvsadm_list, "(peer)");
    match peer_absent {
        None => row(
            &mut out,
            &format!("list all, {moby}"),
            moby_list,
            &format!(
                "(peer; its own timer, without start-up: {} s)",
                secs(median(all.moby_own_list.clone()))
            ),
        ),
        Some(why) => put!(out, "| list all, moby/ipvs | absent: {why} | | | | |"),
    }
    row(
        &mut out,
        "of which the service dump alone, library",
        services_only,
        &match (services_only, library_list) {
            (Some(s), Some(l)) => format!(
                "{:.0}% of the library's listing",
                100.0 * s.median.as_secs_f64() / l.median.as_secs_f64().max(1e-9)
            ),
            _ => String::new(),
        },
    );
    out.push('\n');
    put!(
        out,
        "wall / system: the median wall time as a multiple of the median system CPU time (the \
         kernel's work for the tool, its floor); below 1× the tool kept several CPUs busy at once \
         (the library's listing spreads its destination dumps over several sockets, a thread each). \
         A child process's times include its start-up."
    );
    if let (Some(load), Some(list)) = (library_load, library_list) {
        put!(
            out,
            "The kernel's floor: the library's batched load took {} its own system CPU time \
             ({} s of {} s), its listing {} ({} s of {} s).",
            of_system(load),
            secs(load.system),
            secs(load.median),
            of_system(list),
            secs(list.system),
            secs(list.median),
        );
    }
    if !all.library_load_peak_kib.is_empty() {
        let mut peaks = all.library_load_peak_kib.clone();
        peaks.sort_unstable();
        put!(
            out,
            "\nMemory of the batched load: the process's resident memory rose by {} above where \
             it stood before `apply_batch` (median of the rounds; min {}, max {}; less where \
             the allocator reused memory an earlier round or size freed, so a lower bound). The \
             results it returns (`BatchResults`: one per operation, held as the failures alone) \
             take {} bytes; the operations themselves ({}) were built before.",
            mib(peaks[peaks.len() / 2]),
            mib(peaks[0]),
            mib(peaks[peaks.len() - 1]),
            all.results_bytes,
            mib((n * (1 + DESTINATIONS)) as u64 * std::mem::size_of::<Operation>() as u64 / 1024),
        );
    }
    out
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// How the library's figures grew from the smallest size to each larger one, against the
/// table's growth and the peers'.
fn growth(results: &[(u32, Samples)]) -> String {
    let mut out = String::new();
    let Some((n0, first)) = results.first() else {
        return out;
    };
    if results.len() < 2 {
        return out;
    }
    let med = |samples: &[Sample]| summarize(samples).map(|s| s.median);
    put!(
        out,
        "\n| growth from {n0} services | table | library load | library listing | of which the service dump | moby/ipvs listing | `ipvsadm -Sn` |"
    );
    put!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    for (n, all) in &results[1..] {
        let times = |a: &[Sample], b: &[Sample]| match (med(a), med(b)) {
            (Some(a), Some(b)) => format!("{:.1}×", ratio(a, b)),
            _ => "—".into(),
        };
        put!(
            out,
            "| to {n} | {:.1}× | {} | {} | {} | {} | {} |",
            f64::from(*n) / f64::from(*n0),
            times(&first.library_load, &all.library_load),
            times(&first.library_list, &all.library_list),
            times(&first.library_services_only, &all.library_services_only),
            times(&first.moby_list, &all.moby_list),
            times(&first.ipvsadm_list, &all.ipvsadm_list),
        );
    }
    out
}

/// `--write PATH`: where the report goes (markdown), beside the standard output.
fn write_path() -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--write" {
            return args.next().map(PathBuf::from);
        }
    }
    None
}

fn main() {
    // `cargo bench` passes `--bench`; `--moby-peer PATH` and `--write PATH` are read.
    let sizes = sizes();
    let rounds = repeats();
    let peer = moby_peer();
    let peer_absent = match &peer {
        Some(path) if !path.is_file() => Some(format!("{} is not a file", path.display())),
        Some(_) => None,
        None => Some(
            "no `--moby-peer PATH` or `IPVS_BENCH_MOBY_PEER` (`cargo xtask bench` builds it with Go)"
                .to_string(),
        ),
    };
    let peer = peer.filter(|_| peer_absent.is_none());
    println!(
        "IPVS bulk load: {} TCP services x {DESTINATIONS} masquerading destinations, {rounds} rounds per tool",
        sizes
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" and ")
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel {}", release.trim());
    match (&peer, &peer_absent) {
        (Some(path), _) => println!("moby/ipvs peer: {}", path.display()),
        (None, Some(why)) => println!("moby/ipvs peer ABSENT: {why}"),
        (None, None) => {}
    }

    // Warm-up, not measured: the first service loads the scheduler module (a usermode modprobe),
    // which must not be charged to whichever measurement happens to come first.
    Netns::new("bench-warmup")
        .expect("namespace")
        .run(|| {
            let mut ipvs = Ipvs::open().expect("IPVS handle");
            ipvs.apply(&operations(1)[0]).expect("warm-up service");
            let status = Command::new("ipvsadm")
                .arg("-Sn")
                .stdout(Stdio::null())
                .status();
            assert!(status.is_ok_and(|s| s.success()), "ipvsadm runs");
        })
        .expect("warm-up");

    let mut tools = vec![Tool::LibraryBatched, Tool::IpvsadmRestore];
    if peer.is_some() {
        tools.push(Tool::Moby);
    }
    tools.push(Tool::LibrarySingle);
    let mut results = Vec::new();
    for &n in &sizes {
        let mut all = Samples::default();
        for round in 0..rounds {
            let mut order = tools.clone();
            order.rotate_left(round % tools.len());
            println!(
                "{n} services, round {}/{rounds}: {}",
                round + 1,
                order
                    .iter()
                    .map(|t| format!("{t:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for &tool in &order {
                run_tool(tool, n, round, peer.as_deref(), &mut all);
            }
        }
        let text = report(n, rounds, &all, peer_absent.as_deref());
        println!("{text}");
        results.push((n, all));
    }
    let grew = growth(&results);
    println!("{grew}");
    if let Some(path) = write_path() {
        let machine = integration::bench::Machine::read();
        let date = integration::bench::utc_minute();
        let mut md = format!(
            "(`integration/benches/ipvs_bulk_load.rs`, `IPVS_BENCH_SERVICES={}` \
             `IPVS_BENCH_REPEATS={rounds}`, run by `cargo xtask bench`.)\n\n\
             - machine: {}\n- kernel: {}\n- date: {date}\n- moby/ipvs: {}\n",
            sizes
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            machine.description,
            machine.kernel,
            results
                .iter()
                .find_map(|(_, all)| all.moby_version.clone())
                .or(peer_absent.clone())
                .unwrap_or_default(),
        );
        for (n, all) in &results {
            md += "\n";
            md += &report(*n, rounds, all, peer_absent.as_deref());
        }
        md += &grew;
        std::fs::write(&path, md)
            .unwrap_or_else(|e| fail(&format!("writing {}: {e}", path.display())));
    }
}
