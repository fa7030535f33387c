//! The library's bulk load and listing against `ipvsadm`, in the same kernel, in one run.
//!
//! 10,000 TCP services × 5 masquerading destinations (60,000 operations), each measurement in a
//! fresh network namespace:
//! 1. load through the library's batches (`Ipvs::apply_batch`);
//! 2. load with `ipvsadm-restore` (the reference C client);
//! 3. load through the library with one request per round trip (`Ipvs::apply` in a loop);
//! 4. list the whole table back (services, then each one's destinations, with statistics)
//!    through the library (`Ipvs::services_with_destinations`), and with `ipvsadm -Sn`.
//!
//! Figures, not assertions: it prints times and ratios. It does check that every load produced
//! the full table, so a fast wrong answer cannot pass for a result. Needs the real kernel:
//! `cargo xtask bench` runs it where IPVS is (the VM here).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::Netns;
use ipvs::Ipvs;
use ipvs::codec::Operation;
use ipvs::model::{Destination, Forwarding, Scheduler, Service, ServiceKey};

/// The default table: 10,000 services (env `IPVS_BENCH_SERVICES` changes it for a quick run).
fn services_count() -> u32 {
    std::env::var("IPVS_BENCH_SERVICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}
const DESTINATIONS: u32 = 5;

/// Service `i`: 198.18.0.0/15 (the benchmarking range), port 80 + i / 65,000-ish spread.
fn service_key(i: u32) -> ServiceKey {
    ServiceKey::tcp(Ipv4Addr::from(0xC612_0000 + i), 80)
}

fn destination(i: u32, j: u32) -> Destination {
    Destination::new(
        Ipv4Addr::from(0xC613_0000 + i * 8 + j),
        8080,
        Forwarding::Masquerade,
    )
}

fn operations() -> Vec<Operation> {
    let mut ops = Vec::with_capacity((services_count() * (1 + DESTINATIONS)) as usize);
    for i in 0..services_count() {
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

fn restore_script() -> String {
    let mut s = String::new();
    for i in 0..services_count() {
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
        .expect("ipvsadm runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let services = text.lines().filter(|l| l.starts_with("-A")).count();
    let dests = text.lines().filter(|l| l.starts_with("-a")).count();
    (services, dests)
}

fn check_full(what: &str, counts: (usize, usize)) {
    let want = (
        services_count() as usize,
        (services_count() * DESTINATIONS) as usize,
    );
    assert_eq!(counts, want, "{what}: the table is incomplete");
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let ops = operations();
    let script = restore_script();
    println!(
        "IPVS bulk load: {} TCP services x {DESTINATIONS} masquerading destinations = {} operations",
        services_count(),
        ops.len()
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel {}", release.trim());

    // Warm-up, not measured: the first service loads the scheduler module (a usermode modprobe),
    // which must not be charged to whichever measurement happens to come first.
    Netns::new("bench-warmup")
        .expect("namespace")
        .run(|| {
            let mut ipvs = Ipvs::open().expect("IPVS handle");
            ipvs.apply(&ops[0]).expect("warm-up service");
            let status = Command::new("ipvsadm")
                .arg("-Sn")
                .stdout(Stdio::null())
                .status();
            assert!(status.is_ok_and(|s| s.success()), "ipvsadm runs");
        })
        .expect("warm-up");

    // 1. The library, batched.
    let lib_ns = Netns::new("bench-library").expect("namespace");
    let (batch_time, lib_list_time, ipvsadm_list_time, listed, services_only_time) = lib_ns
        .run(|| {
            let mut ipvs = Ipvs::open().expect("IPVS handle");
            let (results, load) = timed(|| ipvs.apply_batch(&ops).expect("batch"));
            let failed = results.iter().filter(|r| r.is_err()).count();
            assert_eq!(failed, 0, "library batch: {failed} operations failed");
            check_full("library batch", count_with_ipvsadm());
            let (listed, list) = timed(|| {
                let listing = ipvs
                    .services_with_destinations()
                    .expect("list services and destinations");
                let dests: usize = listing.iter().map(|(_, dests)| dests.len()).sum();
                (listing.len(), dests)
            });
            // Where the listing's time goes: the one service dump; the rest is per-service
            // destination dumps.
            let (_, services_only) = timed(|| ipvs.services().expect("list services"));
            let (_, ipvsadm_list) = timed(|| {
                let out = Command::new("ipvsadm")
                    .arg("-Sn")
                    .stdout(Stdio::null())
                    .status();
                assert!(out.is_ok_and(|s| s.success()));
            });
            (load, list, ipvsadm_list, listed, services_only)
        })
        .expect("library run");
    check_full("library listing", listed);
    drop(lib_ns);

    // 2. ipvsadm-restore.
    let restore_ns = Netns::new("bench-ipvsadm").expect("namespace");
    let restore_time = restore_ns
        .run(|| {
            let (status, time) = timed(|| {
                let mut child = Command::new("ipvsadm-restore")
                    .stdin(Stdio::piped())
                    .spawn()
                    .expect("ipvsadm-restore runs");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(script.as_bytes())
                    .expect("write rules");
                child.wait().expect("ipvsadm-restore ends")
            });
            assert!(status.success(), "ipvsadm-restore failed: {status}");
            check_full("ipvsadm-restore", count_with_ipvsadm());
            time
        })
        .expect("ipvsadm run");
    drop(restore_ns);

    // 3. The library, one request per round trip.
    let single_ns = Netns::new("bench-single").expect("namespace");
    let single_time = single_ns
        .run(|| {
            let mut ipvs = Ipvs::open().expect("IPVS handle");
            let ((), time) = timed(|| {
                for op in &ops {
                    ipvs.apply(op).expect("operation");
                }
            });
            check_full("library one by one", count_with_ipvsadm());
            time
        })
        .expect("single run");
    drop(single_ns);

    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-9);
    println!();
    println!("| measurement | time | vs peer |");
    println!("| --- | --- | --- |");
    println!(
        "| load, library batched | {} | {:.1}x faster than ipvsadm-restore |",
        secs(batch_time),
        ratio(batch_time, restore_time)
    );
    println!(
        "| load, ipvsadm-restore | {} | (peer) |",
        secs(restore_time)
    );
    println!(
        "| load, library one request per round trip | {} | batching is {:.1}x faster |",
        secs(single_time),
        ratio(batch_time, single_time)
    );
    println!(
        "| list all, library | {} | {:.1}x faster than ipvsadm -Sn |",
        secs(lib_list_time),
        ratio(lib_list_time, ipvsadm_list_time)
    );
    println!(
        "| list all, ipvsadm -Sn | {} | (peer) |",
        secs(ipvsadm_list_time)
    );
    println!(
        "| of which the service dump alone, library | {} | {:.0}% of the library's listing |",
        secs(services_only_time),
        100.0 * services_only_time.as_secs_f64() / lib_list_time.as_secs_f64().max(1e-9)
    );
}
