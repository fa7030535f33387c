//! The node daemon (`ipvs-proxy`) at cluster scale, in the real kernel, with its peers measured
//! in the same run.
//!
//! For each cluster size (1,000 / 10,000 / 50,000 Services by default; 80 % ClusterIP, 18 %
//! NodePort, 2 % LoadBalancer; 10 endpoints each: see `integration::synthetic`), in a fresh
//! network namespace whose node has one address (192.0.2.1 on a veth):
//!
//! 1. **peers**: the same IPVS table loaded by the library's batch API (`Ipvs::apply_batch`,
//!    one request stream) and by `ipvsadm-restore`, each in a namespace of its own;
//! 2. **cold start**: manifests written (one JSON file per Service), the release `ipvs-proxy`
//!    started on them; time from the start of the process to the daemon's `node adopted` log
//!    line (its own JSON timestamp; the table is then checked complete), IPVS operations
//!    (`ipvs_proxy_operations_total`), and the peak RSS (`VmHWM`);
//! 3. **steady state**: CPU (utime + stime, per thread) and RSS over a window with no change;
//! 4. **single changes**: one endpoint's readiness flipped at a time (down, then up again);
//!    latency from the file's rename to the kernel showing the change (polled every 2 ms
//!    through netlink), IPVS operations per change, and CPU per change of the controller's
//!    thread (`engine`) and of the manifests source (`manifests`);
//! 5. **restart**: SIGTERM, start again on the same inputs; time to adoption and the
//!    operations it made (must be 0). The second daemon logs each IPVS operation
//!    (`svc_controller::reconcile=trace`; adoption makes none, so this costs it nothing);
//! 6. **burst**: 1,000 endpoints across 1,000 Services made not ready as fast as files can be
//!    renamed; per-change latency from each rename (wall clock) to the daemon's log line that
//!    follows the IPVS batch carrying that change (the batch is logged after the kernel
//!    answered), p50 / p99 / max; operations and CPU per change. The kernel is checked after.
//! 7. **netfilter**, from the daemon's metrics through the phases above: the nftables
//!    transactions and set elements of the cold start, of each single and burst change and
//!    of the restart, the time in transactions; then, the daemon stopped (its table stays),
//!    the kernel memory the table held: unreclaimable slab, vmalloc and per-CPU memory freed
//!    when it is deleted (with `nft`).
//!
//! Figures, not assertions: it prints a table and, with `--write PATH` (or
//! `IPVS_BENCH_WRITE`), writes `BENCHMARKS.md` there. Options (flags win over the
//! environment): `--sizes 1000,10000` (`IPVS_BENCH_CLUSTER_SIZES`), `--samples 50`
//! (`IPVS_BENCH_CHURN_SAMPLES`), `--burst 1000` (`IPVS_BENCH_BURST`), `--steady-secs 60`
//! (`IPVS_BENCH_STEADY_SECS`), `--daemon-args "ARGS"` (`IPVS_BENCH_DAEMON_ARGS`: more
//! arguments for the daemon, split at spaces), `--daemon PATH` (default: `ipvs-proxy` in the
//! bench's own target profile folder, which `cargo xtask bench` builds). Needs the real
//! kernel and root: `cargo xtask bench` runs it where IPVS is (the VM here).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use integration::Netns;
use integration::bench::log::{self, find, message, timestamp};
use integration::bench::{
    Cpu, Latencies, Machine, Memory, Scrape, mib, ms, release_daemon, unix_seconds,
};
use integration::daemon::DaemonProcess;
use integration::link;
use integration::synthetic::{SERVICE_PORT, SyntheticCluster, TARGET_PORT};
use ipvs::Ipvs;
use ipvs::codec::Operation;
use ipvs::model::{Destination, Forwarding, Scheduler, Service, ServiceKey};
use serde_json::Value;

mod observe;
mod peers;
mod report;
mod run;

use observe::*;
use peers::*;
use report::*;
use run::*;

const ENDPOINTS: usize = 10;
/// The node's own address: NodePort virtual servers live on it.
const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const METRICS: &str = "127.0.0.1:10249";
const HEALTHZ: &str = "127.0.0.1:10256";
/// Generous: the VM here is emulated (TCG), and 50,000 Services take a while.
const SLOW: Duration = Duration::from_secs(1200);
const COLD_LOG_LEVEL: &str =
    "info,ipvs_proxy=debug,svc_controller::runtime=debug,svc_controller::dataplane=debug";
const RESTART_LOG_LEVEL: &str =
    "info,ipvs_proxy=debug,svc_controller::runtime=debug,svc_controller::reconcile=trace";

#[derive(Debug, Clone)]
struct Options {
    sizes: Vec<usize>,
    samples: usize,
    burst: usize,
    steady: Duration,
    write: Option<PathBuf>,
    daemon: PathBuf,
    /// More arguments for the daemon (`--daemon-args "--ipvs-rate-estimation false"`).
    daemon_args: Vec<String>,
}

impl Options {
    fn parse() -> Self {
        let mut flags: HashMap<String, String> = HashMap::new();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if let Some(name) = arg.strip_prefix("--")
                && name != "bench"
                && let Some(value) = args.next()
            {
                flags.insert(name.to_owned(), value);
            }
        }
        let get = |flag: &str, env: &str| {
            flags
                .get(flag)
                .cloned()
                .or_else(|| std::env::var(env).ok())
                .filter(|v| !v.trim().is_empty())
        };
        let number = |flag: &str, env: &str, default: usize| {
            get(flag, env)
                .map(|v| {
                    v.trim()
                        .replace('_', "")
                        .parse()
                        .unwrap_or_else(|_| panic!("--{flag} {v:?}: not a number"))
                })
                .unwrap_or(default)
        };
        let sizes = get("sizes", "IPVS_BENCH_CLUSTER_SIZES")
            .unwrap_or_else(|| "1000,10000,50000".into())
            .split(',')
            .map(|s| {
                s.trim()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("cluster size {s:?}: not a number"))
            })
            .collect();
        let daemon = get("daemon", "IPVS_BENCH_DAEMON")
            .map(PathBuf::from)
            .unwrap_or_else(release_daemon);
        Self {
            sizes,
            samples: number("samples", "IPVS_BENCH_CHURN_SAMPLES", 50).max(2),
            burst: number("burst", "IPVS_BENCH_BURST", 1000),
            steady: Duration::from_secs(number("steady-secs", "IPVS_BENCH_STEADY_SECS", 60) as u64),
            write: get("write", "IPVS_BENCH_WRITE").map(PathBuf::from),
            daemon,
            daemon_args: get("daemon-args", "IPVS_BENCH_DAEMON_ARGS")
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }
}

fn main() {
    let opts = Options::parse();
    let Machine {
        description: machine,
        kernel,
    } = Machine::read();
    println!(
        "ipvs-proxy at scale: sizes {:?}, {ENDPOINTS} endpoints per Service; daemon {}",
        opts.sizes,
        opts.daemon.display()
    );
    println!("machine: {machine}; kernel {kernel}");
    assert!(
        opts.daemon.is_file(),
        "no daemon at {}: build it with cargo build --release -p ipvs-proxy --bin ipvs-proxy \
         (cargo xtask bench does)",
        opts.daemon.display()
    );
    // The daemon runs from a local copy: in the VM the build folder is the host's, shared
    // over 9p, and paging a 20 MiB binary in over it under emulation takes seconds that a
    // node (whose binary is on a local disk) never pays.
    let local = std::env::temp_dir().join(format!("ipvs-proxy-bench-{}", std::process::id()));
    let mut opts = opts;
    if std::fs::copy(&opts.daemon, &local).is_ok() {
        opts.daemon = local.clone();
    }
    // Warm-up, not measured: the first service loads the scheduler module.
    Netns::new("scale-warmup")
        .expect("namespace")
        .run(|| {
            let mut ipvs = Ipvs::open().expect("IPVS handle");
            ipvs.add_service(&Service::new(
                ServiceKey::tcp(Ipv4Addr::new(198, 18, 0, 1), SERVICE_PORT),
                Scheduler::RoundRobin,
            ))
            .expect("warm-up service");
        })
        .expect("warm-up");

    let mut results = Vec::new();
    for &n in &opts.sizes {
        results.push(run_size(n, &opts));
    }
    let _ = std::fs::remove_file(&local);
    let md = report(&results, &opts);
    println!("\n{md}");
    if let Some(path) = &opts.write {
        std::fs::write(path, &md)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        println!("written to {}", path.display());
    }
}
