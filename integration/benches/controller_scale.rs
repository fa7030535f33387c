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
//!
//! Figures, not assertions: it prints a table and, with `--write PATH` (or
//! `IPVS_BENCH_WRITE`), writes `BENCHMARKS.md` there. Options (flags win over the
//! environment): `--sizes 1000,10000` (`IPVS_BENCH_CLUSTER_SIZES`), `--samples 50`
//! (`IPVS_BENCH_CHURN_SAMPLES`), `--burst 1000` (`IPVS_BENCH_BURST`), `--steady-secs 30`
//! (`IPVS_BENCH_STEADY_SECS`), `--daemon-args "ARGS"` (`IPVS_BENCH_DAEMON_ARGS`: more
//! arguments for the daemon, split at spaces), `--daemon PATH` (default: `ipvs-proxy` in the
//! bench's own target profile folder, which `cargo xtask bench` builds). Needs the real
//! kernel and root: `cargo xtask bench` runs it where IPVS is (the VM here).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use integration::Netns;
use integration::bench::{Cpu, Latencies, Machine, Memory, mib, ms, release_daemon};
use integration::daemon::DaemonProcess;
use integration::link;
use integration::synthetic::{SERVICE_PORT, SyntheticCluster, TARGET_PORT};
use ipvs::Ipvs;
use ipvs::codec::Operation;
use ipvs::model::{Destination, Forwarding, Scheduler, Service, ServiceKey};
use serde_json::Value;

const ENDPOINTS: usize = 10;
/// The node's own address: NodePort virtual servers live on it.
const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const METRICS: &str = "127.0.0.1:10249";
const HEALTHZ: &str = "127.0.0.1:10256";
/// Generous: the VM here is emulated (TCG), and 50,000 Services take a while.
const SLOW: Duration = Duration::from_secs(1200);
const COLD_LOG_LEVEL: &str = "info,ipvs_proxy=debug,svc_controller::dataplane=debug";
const RESTART_LOG_LEVEL: &str = "info,ipvs_proxy=debug,svc_controller::reconcile=trace";

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
            steady: Duration::from_secs(number("steady-secs", "IPVS_BENCH_STEADY_SECS", 30) as u64),
            write: get("write", "IPVS_BENCH_WRITE").map(PathBuf::from),
            daemon,
            daemon_args: get("daemon-args", "IPVS_BENCH_DAEMON_ARGS")
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon's metrics.

/// The daemon's metrics that matter here.
#[derive(Debug, Clone, Default)]
struct Metrics {
    operations: BTreeMap<String, u64>,
    sync_seconds_sum: f64,
    sync_count: u64,
    /// Full passes, which the sync histogram also counts.
    full_seconds_sum: f64,
    full_count: u64,
    /// The engine thread's CPU time in incremental syncs (`ipvs_proxy_engine_cpu_seconds_total`).
    sync_cpu_seconds: f64,
}

impl Metrics {
    /// Reads /metrics; call from inside the daemon's namespace.
    fn read() -> Self {
        let addr: SocketAddr = METRICS.parse().expect("metrics address");
        let mut text = String::new();
        let ok = (|| -> std::io::Result<()> {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
            write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            stream.read_to_string(&mut text)?;
            Ok(())
        })();
        ok.expect("GET /metrics");
        let mut m = Metrics::default();
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if let Some(kind) = name
                .strip_prefix("ipvs_proxy_operations_total{kind=\"")
                .and_then(|k| k.strip_suffix("\"}"))
            {
                m.operations
                    .insert(kind.to_owned(), value.parse().unwrap_or(0));
            } else if name == "kubeproxy_sync_proxy_rules_duration_seconds_sum" {
                m.sync_seconds_sum = value.parse().unwrap_or(0.0);
            } else if name == "kubeproxy_sync_proxy_rules_duration_seconds_count" {
                m.sync_count = value.parse().unwrap_or(0);
            } else if name == "kubeproxy_sync_full_proxy_rules_duration_seconds_sum" {
                m.full_seconds_sum = value.parse().unwrap_or(0.0);
            } else if name == "kubeproxy_sync_full_proxy_rules_duration_seconds_count" {
                m.full_count = value.parse().unwrap_or(0);
            } else if name == "ipvs_proxy_engine_cpu_seconds_total{work=\"sync\"}" {
                m.sync_cpu_seconds = value.parse().unwrap_or(0.0);
            }
        }
        m
    }

    fn total(&self) -> u64 {
        self.operations.values().sum()
    }

    /// Incremental syncs since `before`: their count and total seconds (the sync histogram
    /// also counts full passes, which are taken out).
    fn incremental_syncs_since(&self, before: &Metrics) -> (u64, f64) {
        let count = (self.sync_count - before.sync_count)
            .saturating_sub(self.full_count - before.full_count);
        let seconds = (self.sync_seconds_sum - before.sync_seconds_sum)
            - (self.full_seconds_sum - before.full_seconds_sum);
        (count, seconds.max(0.0))
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon's JSON log.

/// Parses `2025-06-12T08:57:55.123456Z` (what tracing-subscriber writes) to Unix seconds.
fn parse_timestamp(text: &str) -> Option<f64> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let s: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + s)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The JSON lines of a log file.
fn log_entries(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

fn timestamp(v: &Value) -> f64 {
    v["timestamp"]
        .as_str()
        .and_then(parse_timestamp)
        .unwrap_or(f64::NAN)
}

/// The first entry with this message.
fn find<'a>(entries: &'a [Value], text: &str) -> Option<&'a Value> {
    entries.iter().find(|v| message(v) == text)
}

/// The engine's `synced` lines (one per incremental sync) logged in a time window.
#[derive(Debug, Default)]
struct SyncLines {
    rows: Vec<SyncLine>,
}

/// One `synced` line's figures.
#[derive(Debug, Clone, Copy)]
struct SyncLine {
    services: u64,
    operations: u64,
    cpu_us: u64,
    compute_cpu_us: u64,
    elapsed_us: u64,
}

impl SyncLines {
    fn between(entries: &[Value], (from, to): (f64, f64)) -> Self {
        let field = |v: &Value, name: &str| v[name].as_u64().unwrap_or(0);
        let rows = entries
            .iter()
            .filter(|v| message(v) == "synced")
            .filter(|v| (from..=to).contains(&timestamp(v)))
            .map(|v| SyncLine {
                services: field(v, "services"),
                operations: field(v, "operations"),
                cpu_us: field(v, "cpu_us"),
                compute_cpu_us: field(v, "compute_cpu_us"),
                elapsed_us: field(v, "elapsed_us"),
            })
            .collect();
        Self { rows }
    }

    /// Each sync's CPU, in seconds.
    fn cpu(&self) -> Latencies {
        self.rows.iter().map(|r| r.cpu_us as f64 / 1e6).collect()
    }

    /// Count, CPU per sync p50 / p90 / max and total, and the most expensive syncs.
    fn describe(&self) -> String {
        let cpu = self.cpu();
        let total: u64 = self.rows.iter().map(|r| r.cpu_us).sum();
        let mut top = self.rows.clone();
        top.sort_by_key(|r| std::cmp::Reverse(r.cpu_us));
        let top: Vec<String> = top
            .iter()
            .take(5)
            .map(|r| {
                format!(
                    "{} svc/{} ops: cpu {} us (compute {} us), took {} us",
                    r.services, r.operations, r.cpu_us, r.compute_cpu_us, r.elapsed_us
                )
            })
            .collect();
        format!(
            "{} syncs, CPU p50 / p90 / max {} / {} / {}, total {}; most expensive: [{}]",
            self.rows.len(),
            ms(cpu.quantile(0.5)),
            ms(cpu.quantile(0.9)),
            ms(cpu.quantile(1.0)),
            ms(total as f64 / 1e6),
            top.join("; ")
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Results.

#[derive(Debug, Clone, Default)]
struct SizeResult {
    services: usize,
    mix: (usize, usize, usize),
    virtual_servers: usize,
    real_servers: usize,
    manifest_bytes: u64,
    peer_library: f64,
    peer_restore: f64,
    cold_total: f64,
    cold_loaded: f64,
    cold_first_log: f64,
    /// Burst changes not seen programmed in time (0: the burst completed).
    burst_unfinished: usize,
    cold_adopt_ms: f64,
    cold_compute_ms: f64,
    cold_bind_ms: f64,
    cold_operations: u64,
    cold_address_changes: u64,
    cold_hwm_kib: u64,
    cold_kernel_ok: bool,
    steady_secs: f64,
    steady_cpu: Cpu,
    steady_rss_kib: u64,
    single: Latencies,
    single_ops: f64,
    single_cpu: Cpu,
    single_sync_ms: f64,
    single_sync_cpu_ms: f64,
    /// The median of the single changes' syncs' CPU (from the `synced` log lines).
    single_sync_cpu_p50_ms: f64,
    /// The longest stall of a spinning thread, no daemon: empty table, the table loaded, and
    /// with the kernel's rate estimation off.
    kernel_stalls: (f64, f64, f64),
    burst_sync_cpu_ms: f64,
    single_changes: usize,
    restart_total: f64,
    restart_adopt_ms: f64,
    restart_operations: u64,
    restart_log_operations: u64,
    restart_address_changes: u64,
    restart_hwm_kib: u64,
    burst: Latencies,
    burst_changes: usize,
    burst_ops: f64,
    burst_cpu: Cpu,
    burst_syncs: u64,
    burst_write_secs: f64,
    burst_kernel_ok: bool,
    peak_hwm_kib: u64,
}

impl SizeResult {
    fn ratio(&self) -> f64 {
        self.cold_total / self.peer_library.max(1e-9)
    }
}

// ---------------------------------------------------------------------------------------------
// Peers.

/// The table the daemon should build, as library operations (rr, masquerading, weight 1: what
/// the daemon programs for these Services).
fn peer_operations(cluster: &SyntheticCluster) -> Vec<Operation> {
    let mut ops = Vec::new();
    for s in cluster.services() {
        for (addr, port) in s.virtual_servers(NODE_ADDR) {
            let key = ServiceKey::tcp(addr, port);
            ops.push(Operation::AddService(Service::new(
                key,
                Scheduler::RoundRobin,
            )));
            for ip in &s.endpoints {
                ops.push(Operation::AddDestination(
                    key,
                    Destination::new(*ip, TARGET_PORT, Forwarding::Masquerade),
                ));
            }
        }
    }
    ops
}

fn restore_script(cluster: &SyntheticCluster) -> String {
    let mut s = String::new();
    for svc in cluster.services() {
        for (addr, port) in svc.virtual_servers(NODE_ADDR) {
            s += &format!("-A -t {addr}:{port} -s rr\n");
            for ip in &svc.endpoints {
                s += &format!("-a -t {addr}:{port} -r {ip}:{TARGET_PORT} -m -w 1\n");
            }
        }
    }
    s
}

/// (virtual servers, real servers) in the calling thread's namespace.
fn kernel_counts() -> (usize, usize) {
    let mut ipvs = Ipvs::open().expect("IPVS handle");
    let listing = ipvs
        .services_with_destinations()
        .expect("list the IPVS table");
    let dests = listing.iter().map(|(_, d)| d.len()).sum();
    (listing.len(), dests)
}

/// The longest time any of a few threads spinning for `spell` (one per CPU) went without
/// running, in seconds. Under no other load, that is the longest the kernel kept a CPU to
/// itself: on kernels before 6.2, IPVS estimates every service's and destination's rates in
/// one timer every 2 seconds, work that lands on whatever thread the CPU was running.
fn longest_stall(spell: Duration) -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spin = move || {
        let started = Instant::now();
        let mut last = started;
        let mut longest = Duration::ZERO;
        while last.duration_since(started) < spell {
            let now = Instant::now();
            longest = longest.max(now - last);
            last = now;
        }
        longest.as_secs_f64()
    };
    let others: Vec<_> = (1..threads).map(|_| std::thread::spawn(spin)).collect();
    let mine = spin();
    others
        .into_iter()
        .map(|t| t.join().unwrap_or(f64::NAN))
        .fold(mine, f64::max)
}

/// The peers' load times (library, `ipvsadm-restore`), and the longest stall of a spinning
/// thread before and after the library loaded the table, then with the table and the
/// kernel's rate estimation off (see [`longest_stall`]; NaN where the kernel has no switch).
fn measure_peers(cluster: &SyntheticCluster, want: (usize, usize)) -> (f64, f64, (f64, f64, f64)) {
    let ops = peer_operations(cluster);
    let script = restore_script(cluster);
    let lib_ns = Netns::new("scale-peer-library").expect("namespace");
    let mut stalls = (f64::NAN, f64::NAN, f64::NAN);
    let library = lib_ns
        .run(|| {
            let mut ipvs = Ipvs::open().expect("IPVS handle");
            stalls.0 = longest_stall(STALL_SPELL);
            let started = Instant::now();
            let results = ipvs.apply_batch(&ops).expect("batch");
            let took = started.elapsed().as_secs_f64();
            let failed = results.iter().filter(|r| r.is_err()).count();
            assert_eq!(failed, 0, "library batch: {failed} operations failed");
            assert_eq!(kernel_counts(), want, "library batch: incomplete table");
            stalls.1 = longest_stall(STALL_SPELL);
            // What `ipvs-proxy --ipvs-rate-estimation false` does (this namespace only).
            if std::fs::write("/proc/sys/net/ipv4/vs/run_estimation", "0").is_ok() {
                stalls.2 = longest_stall(STALL_SPELL);
            }
            took
        })
        .expect("library peer");
    drop(lib_ns);
    let restore_ns = Netns::new("scale-peer-restore").expect("namespace");
    let restore = restore_ns
        .run(|| {
            let started = Instant::now();
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
            let status = child.wait().expect("ipvsadm-restore ends");
            let took = started.elapsed().as_secs_f64();
            assert!(status.success(), "ipvsadm-restore failed: {status}");
            assert_eq!(kernel_counts(), want, "ipvsadm-restore: incomplete table");
            took
        })
        .expect("ipvsadm peer");
    drop(restore_ns);
    (library, restore, stalls)
}

/// How long [`longest_stall`] watches, with and without the table: a few of the kernel's
/// 2-second estimation rounds.
const STALL_SPELL: Duration = Duration::from_secs(6);

// ---------------------------------------------------------------------------------------------
// The daemon.

struct Scratch(PathBuf);

impl Scratch {
    /// On a tmpfs (`/dev/shm`) where there is one, as a node's manifests are (a ConfigMap
    /// volume): the VM's `/tmp` is an overlay over the host's 9p share, where every lookup
    /// of a file is a round trip to the host that a node never pays.
    fn new(services: usize) -> Self {
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        let dir = root.join(format!("ipvs-scale-{services}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).expect("scratch folder");
        Self(dir)
    }
    fn manifests(&self) -> PathBuf {
        self.0.join("manifests")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn daemon_args(
    dir: &Path,
    cluster: &SyntheticCluster,
    log_level: &str,
    extra: &[String],
) -> Vec<String> {
    let range = cluster.node_port_range();
    let args = [
        "--manifests",
        dir.to_str().expect("UTF-8 path"),
        "--hostname-override",
        "node-1",
        "--metrics-bind-address",
        METRICS,
        "--healthz-bind-address",
        HEALTHZ,
        "--log-format",
        "json",
        "--log-level",
        log_level,
        "--node-port-range",
        &format!("{}-{}", range.start(), range.end()),
    ];
    args.iter()
        .map(|s| (*s).to_owned())
        .chain(extra.iter().cloned())
        .collect()
}

/// Starts the daemon and waits for its adoption; returns it, the wall time it was started at
/// and the adoption's log entry.
fn start_daemon(
    ns: &Netns,
    opts: &Options,
    args: &[String],
    log: &Path,
) -> (DaemonProcess, SystemTime, Value) {
    let started = SystemTime::now();
    let mut daemon = DaemonProcess::start(ns, &opts.daemon, args, log).unwrap_or_else(|e| {
        panic!(
            "cannot start {} ({e}): cargo xtask bench builds it (cargo build --release -p ipvs-proxy)",
            opts.daemon.display()
        )
    });
    let line = daemon
        .wait_for_log(0, &["node adopted"], SLOW)
        .expect("the daemon adopts the node");
    let entry: Value = serde_json::from_str(&line).expect("a JSON log line");
    (daemon, started, entry)
}

/// Whether the kernel shows endpoint `ip` as wanted (`ready`: present with a weight; not
/// ready: absent or quiesced) on every virtual server of `keys`.
fn programmed(ipvs: &mut Ipvs, keys: &[ServiceKey], ip: Ipv4Addr, ready: bool) -> bool {
    keys.iter().all(|key| {
        let dests = ipvs.destinations(key).unwrap_or_default();
        let found = dests
            .iter()
            .find(|d| d.destination.addr == IpAddr::V4(ip) && d.destination.port == TARGET_PORT);
        match found {
            Some(d) => ready == (d.destination.weight.get() > 0),
            None => !ready,
        }
    })
}

fn keys_of(cluster: &SyntheticCluster, service: usize) -> Vec<ServiceKey> {
    cluster
        .service(service)
        .virtual_servers(NODE_ADDR)
        .into_iter()
        .map(|(a, p)| ServiceKey::tcp(a, p))
        .collect()
}

fn run_size(n: usize, opts: &Options) -> SizeResult {
    let mut r = SizeResult {
        services: n,
        ..SizeResult::default()
    };
    let mut cluster = SyntheticCluster::new(n, ENDPOINTS);
    r.mix = cluster.mix();
    let want = cluster.table_size();
    (r.virtual_servers, r.real_servers) = want;
    println!(
        "\n== {n} Services ({} ClusterIP, {} NodePort, {} LoadBalancer) x {ENDPOINTS} endpoints: \
         {} virtual servers, {} real servers",
        r.mix.0, r.mix.1, r.mix.2, want.0, want.1
    );

    // 1. Peers.
    (r.peer_library, r.peer_restore, r.kernel_stalls) = measure_peers(&cluster, want);
    println!(
        "peers: library batch {:.3} s, ipvsadm-restore {:.3} s; kernel alone, longest stall of \
         a spinning thread: empty {}, loaded {}, loaded with run_estimation=0 {}",
        r.peer_library,
        r.peer_restore,
        ms(r.kernel_stalls.0),
        ms(r.kernel_stalls.1),
        ms(r.kernel_stalls.2)
    );

    // The node: one address on a veth whose other end is in a namespace of its own.
    let ns = Netns::new("scale-node").expect("namespace");
    let outside = Netns::new("scale-outside").expect("namespace");
    ns.run(|| -> std::io::Result<()> {
        link::add_veth("eth0", "eth0-peer", &outside)?;
        link::add_address("eth0", IpAddr::V4(NODE_ADDR), 24)?;
        link::set_up("eth0")
    })
    .expect("node namespace")
    .expect("node address");
    outside
        .run(|| link::set_up("eth0-peer"))
        .expect("outside namespace")
        .expect("peer up");

    let scratch = Scratch::new(n);
    let dir = scratch.manifests();
    let t = Instant::now();
    cluster.write_all(&dir).expect("write the manifests");
    r.manifest_bytes = std::fs::read_dir(&dir)
        .expect("manifests")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "manifests: {n} files, {:.1} MiB, written in {:.1} s",
        r.manifest_bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    // 2. Cold start.
    let log = scratch.0.join("daemon.log");
    let args = daemon_args(&dir, &cluster, COLD_LOG_LEVEL, &opts.daemon_args);
    let (mut daemon, started, adopted) = start_daemon(&ns, opts, &args, &log);
    let pid = daemon.pid();
    r.cold_hwm_kib = Memory::read(pid).peak_kib;
    let entries = log_entries(&log);
    r.cold_total = timestamp(&adopted) - unix(started);
    r.cold_adopt_ms = adopted["elapsed_ms"].as_f64().unwrap_or(f64::NAN);
    r.cold_compute_ms = adopted["compute_ms"].as_f64().unwrap_or(f64::NAN);
    r.cold_bind_ms = entries
        .iter()
        .filter(|v| message(v) == "VIPs bound to the dummy interface")
        .filter_map(|v| v["elapsed_ms"].as_f64())
        .sum();
    r.cold_loaded =
        find(&entries, "manifests loaded").map_or(f64::NAN, |v| timestamp(v) - unix(started));
    r.cold_first_log = entries
        .first()
        .map_or(f64::NAN, |v| timestamp(v) - unix(started));
    // The engine's `node adopted` line counts every VIP bound since the start (after an
    // early start, the reconciler's own `adopted the node` came before any was bound).
    r.cold_address_changes = adopted["address_changes"].as_u64().unwrap_or(0);
    let phase = ns
        .run(|| {
            let m = Metrics::read();
            let counts = kernel_counts();
            (m, counts)
        })
        .expect("cold start checks");
    r.cold_operations = phase.0.total();
    r.cold_kernel_ok = phase.1 == want;
    println!(
        "cold start: {:.3} s to adoption (first log line at {:.3} s, manifests loaded at {:.3} \
         s; adoption {:.0} ms), {} operations, {} address changes, VmHWM {}; kernel table {:?} \
         (want {:?})",
        r.cold_total,
        r.cold_first_log,
        r.cold_loaded,
        r.cold_adopt_ms,
        r.cold_operations,
        r.cold_address_changes,
        mib(r.cold_hwm_kib),
        phase.1,
        want
    );

    // 3. Steady state.
    std::thread::sleep(Duration::from_secs(2));
    let cpu0 = Cpu::read(pid);
    let t = Instant::now();
    std::thread::sleep(opts.steady);
    r.steady_secs = t.elapsed().as_secs_f64();
    r.steady_cpu = Cpu::read(pid).since(&cpu0);
    r.steady_rss_kib = Memory::read(pid).now_kib;
    println!(
        "steady: {:.3} CPU s over {:.0} s ({:.2} %), engine {:.2} s, manifests {:.2} s; RSS {}",
        r.steady_cpu.total,
        r.steady_secs,
        100.0 * r.steady_cpu.total / r.steady_secs,
        r.steady_cpu.thread("engine"),
        r.steady_cpu.thread("manifests"),
        mib(r.steady_rss_kib)
    );

    // 4. Single changes, one at a time: an endpoint goes down, then up again.
    let pairs = opts.samples.div_ceil(2);
    let single_started = SystemTime::now();
    let single = ns
        .run(|| {
            let mut ipvs = Ipvs::open().expect("IPVS handle");
            let mut lat = Latencies::default();
            let m0 = Metrics::read();
            let cpu0 = Cpu::read(pid);
            let mut changes = 0usize;
            for k in 0..pairs {
                let service = (k * 7919 + 13) % n;
                let endpoint = k % ENDPOINTS;
                let keys = keys_of(&cluster, service);
                let ip = cluster.service(service).endpoints[endpoint];
                for ready in [false, true] {
                    let t = Instant::now();
                    cluster
                        .set_ready(&dir, service, endpoint, ready)
                        .expect("rewrite the manifest");
                    while !programmed(&mut ipvs, &keys, ip, ready) {
                        assert!(t.elapsed() < SLOW, "change {k} never programmed");
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    lat.push(t.elapsed().as_secs_f64());
                    changes += 1;
                    // Let the daemon finish its bookkeeping before the next change.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let cpu = Cpu::read(pid).since(&cpu0);
            let m1 = Metrics::read();
            (lat, changes, cpu, m0, m1)
        })
        .expect("single changes");
    let (lat, changes, cpu, m0, m1) = single;
    let single_window = (unix(single_started), unix(SystemTime::now()));
    r.single = lat;
    r.single_changes = changes;
    r.single_cpu = cpu;
    r.single_ops = (m1.total() - m0.total()) as f64 / changes as f64;
    let (syncs, seconds) = m1.incremental_syncs_since(&m0);
    r.single_sync_ms = 1e3 * seconds / syncs.max(1) as f64;
    r.single_sync_cpu_ms = 1e3 * (m1.sync_cpu_seconds - m0.sync_cpu_seconds) / changes as f64;
    println!(
        "single changes ({changes}): latency p50/p99/max {}; {:.2} operations per change; CPU per \
         change {:.2} ms (engine {:.2} ms, of which incremental syncs {:.2} ms; manifests {:.2} \
         ms); mean sync {:.2} ms",
        r.single.describe(),
        r.single_ops,
        1e3 * r.single_cpu.total / changes as f64,
        1e3 * r.single_cpu.thread("engine") / changes as f64,
        r.single_sync_cpu_ms,
        1e3 * r.single_cpu.thread("manifests") / changes as f64,
        r.single_sync_ms
    );

    let syncs = SyncLines::between(&log_entries(&log), single_window);
    println!("single changes, the engine's syncs: {}", syncs.describe());
    r.single_sync_cpu_p50_ms = 1e3 * syncs.cpu().quantile(0.5);

    // 5. Restart on unchanged inputs.
    let hwm = Memory::read(pid).peak_kib;
    r.peak_hwm_kib = hwm;
    daemon
        .terminate(Duration::from_secs(120))
        .expect("the daemon stops on SIGTERM");
    drop(daemon);
    let log2 = scratch.0.join("daemon-restart.log");
    let args = daemon_args(&dir, &cluster, RESTART_LOG_LEVEL, &opts.daemon_args);
    let (daemon, started, adopted) = start_daemon(&ns, opts, &args, &log2);
    let pid = daemon.pid();
    r.restart_total = timestamp(&adopted) - unix(started);
    r.restart_adopt_ms = adopted["elapsed_ms"].as_f64().unwrap_or(f64::NAN);
    r.restart_log_operations = adopted["operations"].as_u64().unwrap_or(u64::MAX);
    r.restart_address_changes = adopted["address_changes"].as_u64().unwrap_or(u64::MAX);
    r.restart_operations = ns.run(Metrics::read).expect("metrics").total();
    r.restart_hwm_kib = Memory::read(pid).peak_kib;
    println!(
        "restart: {:.3} s to adoption (adoption {:.0} ms), {} operations ({} in the log), {} \
         address changes, VmHWM {}",
        r.restart_total,
        r.restart_adopt_ms,
        r.restart_operations,
        r.restart_log_operations,
        r.restart_address_changes,
        mib(r.restart_hwm_kib)
    );

    // 6. Burst: `burst` endpoints across as many Services go down, written as fast as possible.
    let burst = opts.burst.min(n);
    let stride = n / burst.max(1);
    let targets: Vec<(usize, usize)> = (0..burst)
        .map(|k| ((k * stride + 1) % n, (k + 3) % ENDPOINTS))
        .collect();
    let m0 = ns.run(Metrics::read).expect("metrics");
    let lines_before = daemon.log_lines();
    let cpu0 = Cpu::read(pid);
    let mut written = Vec::with_capacity(burst);
    let t = Instant::now();
    for (service, endpoint) in &targets {
        cluster
            .set_ready(&dir, *service, *endpoint, false)
            .expect("rewrite the manifest");
        written.push(unix(SystemTime::now()));
    }
    r.burst_write_secs = t.elapsed().as_secs_f64();
    // Which change each real server belongs to, and how many virtual servers it must leave.
    let index: HashMap<String, usize> = targets
        .iter()
        .enumerate()
        .map(|(c, (s, e))| {
            (
                format!("{}:{TARGET_PORT}", cluster.service(*s).endpoints[*e]),
                c,
            )
        })
        .collect();
    let need: Vec<usize> = targets
        .iter()
        .map(|(s, _)| cluster.service(*s).virtual_servers(NODE_ADDR).len())
        .collect();
    // Generous, but short of the VM's own timeout: an unfinished burst is reported, and the
    // other sizes still run.
    let burst_limit = Duration::from_secs(300);
    let deadline = Instant::now() + burst_limit;
    let done = loop {
        let (seen, when) = burst_progress(&log2, lines_before, &index, burst);
        let unfinished: Vec<usize> = (0..burst).filter(|c| seen[*c] < need[*c]).collect();
        if unfinished.is_empty() {
            break Some(when);
        }
        if Instant::now() >= deadline {
            let text = std::fs::read_to_string(&log2).unwrap_or_default();
            let lines: Vec<&str> = text.lines().skip(lines_before).collect();
            let sample: Vec<String> = unfinished
                .iter()
                .take(5)
                .map(|c| {
                    let (s, e) = targets[*c];
                    format!(
                        "{}:{TARGET_PORT} ({} of {})",
                        cluster.service(s).endpoints[e],
                        seen[*c],
                        need[*c]
                    )
                })
                .collect();
            println!(
                "burst: {} of {burst} changes not seen programmed within {burst_limit:?} (e.g. \
                 {sample:?}); {} log lines since the burst began, the first: {:#?}, the last: \
                 {:#?}",
                unfinished.len(),
                lines.len(),
                &lines[..lines.len().min(3)],
                &lines[lines.len().saturating_sub(3)..]
            );
            r.burst_unfinished = unfinished.len();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    std::thread::sleep(Duration::from_millis(200));
    r.burst_cpu = Cpu::read(pid).since(&cpu0);
    let m1 = ns.run(Metrics::read).expect("metrics");
    if let Some(done) = &done {
        for c in 0..burst {
            r.burst.push(done[c] - written[c]);
        }
    }
    r.burst_changes = burst;
    r.burst_ops = (m1.total() - m0.total()) as f64 / burst.max(1) as f64;
    r.burst_sync_cpu_ms = 1e3 * (m1.sync_cpu_seconds - m0.sync_cpu_seconds) / burst.max(1) as f64;
    r.burst_syncs = m1.incremental_syncs_since(&m0).0;
    r.burst_kernel_ok = ns
        .run(|| {
            let mut ipvs = Ipvs::open().expect("IPVS handle");
            targets.iter().all(|(s, e)| {
                programmed(
                    &mut ipvs,
                    &keys_of(&cluster, *s),
                    cluster.service(*s).endpoints[*e],
                    false,
                )
            })
        })
        .expect("burst check");
    let hwm = Memory::read(pid).peak_kib;
    r.peak_hwm_kib = r.peak_hwm_kib.max(hwm);
    println!(
        "burst ({burst} changes written in {:.3} s): latency p50/p99/max {}; {:.2} operations per \
         change; {} syncs; CPU per change {:.2} ms (engine {:.2} ms, manifests {:.2} ms); \
         kernel {}",
        r.burst_write_secs,
        r.burst.describe(),
        r.burst_ops,
        r.burst_syncs,
        1e3 * r.burst_cpu.total / burst.max(1) as f64,
        1e3 * r.burst_cpu.thread("engine") / burst.max(1) as f64,
        1e3 * r.burst_cpu.thread("manifests") / burst.max(1) as f64,
        if r.burst_kernel_ok {
            "checked"
        } else {
            "WRONG"
        }
    );
    drop(daemon);
    // The daemon's logs go beside the report, for a look at what a figure came from.
    if let Some(folder) = opts.write.as_deref().and_then(Path::parent) {
        for (from, name) in [(&log, "daemon"), (&log2, "daemon-restart")] {
            let _ = std::fs::copy(from, folder.join(format!("{name}-{n}.log")));
        }
    }
    drop(scratch);
    r
}

/// From the log after `skip` lines: for each change, how many of its IPVS operations were
/// applied, and the time (Unix seconds) of the batch answer that applied the last one.
fn burst_progress(
    log: &Path,
    skip: usize,
    index: &HashMap<String, usize>,
    changes: usize,
) -> (Vec<usize>, Vec<f64>) {
    let mut seen = vec![0usize; changes];
    let mut when = vec![f64::NAN; changes];
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut pending: Vec<usize> = Vec::new();
    for line in text.lines().skip(skip) {
        if line.contains("\"IPVS operation\"") {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let op = v["operation"].as_str().unwrap_or("");
            if let Some(rs) = op
                .split_once("-r ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                && let Some(c) = index.get(rs)
            {
                pending.push(*c);
            }
        } else if line.contains("\"IPVS batch applied\"") {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let t = timestamp(&v);
            for c in pending.drain(..) {
                seen[c] += 1;
                when[c] = t;
            }
        }
    }
    (seen, when)
}

// ---------------------------------------------------------------------------------------------
// The machine and the report.

fn yes(ok: bool, target: &str) -> String {
    format!("{} ({target})", if ok { "**met**" } else { "**missed**" })
}

fn report(results: &[SizeResult], opts: &Options) -> String {
    let Machine {
        description: machine,
        kernel,
    } = Machine::read();
    let sizes: Vec<String> = opts.sizes.iter().map(|s| s.to_string()).collect();
    let mut md = String::new();
    md += "# Benchmarks: ipvs-proxy at cluster scale\n\n";
    md += "Generated by the benchmark itself; do not edit by hand. Regenerate with:\n\n";
    md += &format!(
        "```sh\nIPVS_BENCH_CLUSTER_SIZES={} cargo xtask bench\n```\n\n",
        sizes.join(",")
    );
    md += &format!(
        "(`integration/benches/controller_scale.rs`, run with `--sizes {} --samples {} --burst {} \
         --steady-secs {}`; `cargo xtask bench` builds `ipvs-proxy` in release mode and writes \
         this file.)\n\n",
        sizes.join(","),
        opts.samples,
        opts.burst,
        opts.steady.as_secs()
    );
    md += &format!("- machine: {machine}\n- kernel: {kernel}\n");
    md += &format!(
        "- date: {}\n",
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    );
    md += "- cluster: 80 % ClusterIP, 18 % NodePort, 2 % LoadBalancer (one ingress IP); one TCP \
           port; one EndpointSlice of 10 ready endpoints per Service; one JSON manifest file per \
           Service (`integration::synthetic`) in a folder on a tmpfs (`/dev/shm`, as a \
           ConfigMap volume is; the VM's `/tmp` is an overlay over the host's 9p share); the node has one address, so a NodePort Service \
           has 2 virtual servers and a LoadBalancer Service 3\n";
    md += "- daemon: release `ipvs-proxy --manifests DIR --log-format json` with default sync \
           settings (`--ipvs-min-sync-period 0`, `--ipvs-sync-period 30s`), logs at \
           `info,ipvs_proxy=debug` (the restarted daemon also at \
           `svc_controller::reconcile=trace`, to time each operation of the burst)";
    if !opts.daemon_args.is_empty() {
        md += &format!("; also given `{}`", opts.daemon_args.join(" "));
    }
    md += "\n\n";

    md += "## Results\n\n";
    let mut header = "| | ".to_owned();
    let mut sep = "| --- | ".to_owned();
    for r in results {
        header += &format!("{} Services | ", r.services);
        sep += "--- | ";
    }
    md += &format!("{}\n{}\n", header.trim_end(), sep.trim_end());
    let row = |md: &mut String, name: &str, f: &dyn Fn(&SizeResult) -> String| {
        let mut line = format!("| {name} | ");
        for r in results {
            line += &format!("{} | ", f(r));
        }
        *md += line.trim_end();
        *md += "\n";
    };
    let per = |x: f64, n: usize| x / n.max(1) as f64;
    row(&mut md, "virtual servers / real servers", &|r| {
        format!("{} / {}", r.virtual_servers, r.real_servers)
    });
    row(&mut md, "**cold start**: start → table complete", &|r| {
        format!("{:.2} s", r.cold_total)
    });
    row(
        &mut md,
        "of which process start (spawn → first log line)",
        &|r| format!("{:.2} s", r.cold_first_log),
    );
    row(
        &mut md,
        "of which manifests read (process start → loaded)",
        &|r| format!("{:.2} s", r.cold_loaded),
    );
    row(&mut md, "of which adoption (compute + program)", &|r| {
        format!("{:.2} s", r.cold_adopt_ms / 1e3)
    });
    row(
        &mut md,
        "adoption: desired-state computation / VIP binds",
        &|r| {
            format!(
                "{:.2} s / {:.2} s",
                r.cold_compute_ms / 1e3,
                r.cold_bind_ms / 1e3
            )
        },
    );
    row(
        &mut md,
        "peer: library batch load of the same table",
        &|r| format!("{:.2} s", r.peer_library),
    );
    row(&mut md, "peer: `ipvsadm-restore` of the same table", &|r| {
        format!("{:.2} s", r.peer_restore)
    });
    row(
        &mut md,
        "cold start / library load (target ≤ 2×)",
        &|r| format!("{:.1}×", r.ratio()),
    );
    row(&mut md, "cold start: IPVS operations / VIPs bound", &|r| {
        format!("{} / {}", r.cold_operations, r.cold_address_changes)
    });
    row(&mut md, "cold start: table checked complete", &|r| {
        (if r.cold_kernel_ok { "yes" } else { "**no**" }).to_owned()
    });
    row(&mut md, "cold start: peak RSS (VmHWM)", &|r| {
        mib(r.cold_hwm_kib)
    });
    row(&mut md, "**steady state**: CPU (no change)", &|r| {
        format!(
            "{:.2} % ({:.2} s in {:.0} s)",
            100.0 * r.steady_cpu.total / r.steady_secs.max(1e-9),
            r.steady_cpu.total,
            r.steady_secs
        )
    });
    row(&mut md, "of which engine / manifests source", &|r| {
        format!(
            "{:.2} s / {:.2} s",
            r.steady_cpu.thread("engine"),
            r.steady_cpu.thread("manifests")
        )
    });
    row(&mut md, "steady state: RSS", &|r| mib(r.steady_rss_kib));
    row(
        &mut md,
        "**one change at a time**: latency p50 / p99 / max",
        &|r| r.single.describe(),
    );
    row(&mut md, "IPVS operations per change", &|r| {
        format!("{:.2}", r.single_ops)
    });
    row(
        &mut md,
        "controller CPU per change: incremental syncs (engine thread's CPU clock), median (mean)",
        &|r| {
            format!(
                "{:.2} ms ({:.2} ms)",
                r.single_sync_cpu_p50_ms, r.single_sync_cpu_ms
            )
        },
    );
    row(
        &mut md,
        "kernel alone (no daemon): longest stall of a spinning thread, empty table / this \
         table / this table with `run_estimation=0`",
        &|r| {
            format!(
                "{} / {} / {}",
                ms(r.kernel_stalls.0),
                ms(r.kernel_stalls.1),
                ms(r.kernel_stalls.2)
            )
        },
    );
    row(
        &mut md,
        "engine thread CPU per change, full-pass slices included",
        &|r| {
            format!(
                "{:.2} ms",
                1e3 * per(r.single_cpu.thread("engine"), r.single_changes)
            )
        },
    );
    row(&mut md, "manifests source CPU per change", &|r| {
        format!(
            "{:.2} ms",
            1e3 * per(r.single_cpu.thread("manifests"), r.single_changes)
        )
    });
    row(&mut md, "whole daemon CPU per change", &|r| {
        format!("{:.2} ms", 1e3 * per(r.single_cpu.total, r.single_changes))
    });
    row(&mut md, "mean incremental sync (compute + program)", &|r| {
        format!("{:.2} ms", r.single_sync_ms)
    });
    row(&mut md, "**burst**: changes (files renamed in)", &|r| {
        format!("{} ({:.2} s)", r.burst_changes, r.burst_write_secs)
    });
    row(&mut md, "burst: latency p50 / p99 / max", &|r| {
        if r.burst_unfinished > 0 {
            return format!("**{} changes not programmed in 300 s**", r.burst_unfinished);
        }
        r.burst.describe()
    });
    row(&mut md, "burst: IPVS operations per change / syncs", &|r| {
        format!("{:.2} / {}", r.burst_ops, r.burst_syncs)
    });
    row(
        &mut md,
        "burst: engine (of which incremental syncs) / manifests CPU per change",
        &|r| {
            format!(
                "{:.2} ms ({:.2} ms) / {:.2} ms",
                1e3 * per(r.burst_cpu.thread("engine"), r.burst_changes),
                r.burst_sync_cpu_ms,
                1e3 * per(r.burst_cpu.thread("manifests"), r.burst_changes)
            )
        },
    );
    row(&mut md, "burst: kernel checked", &|r| {
        (if r.burst_kernel_ok { "yes" } else { "**no**" }).to_owned()
    });
    row(
        &mut md,
        "**restart** (same inputs): start → adopted",
        &|r| {
            format!(
                "{:.2} s (adoption {:.2} s)",
                r.restart_total,
                r.restart_adopt_ms / 1e3
            )
        },
    );
    row(
        &mut md,
        "restart: IPVS operations / address changes (must be 0)",
        &|r| format!("{} / {}", r.restart_operations, r.restart_address_changes),
    );
    row(&mut md, "restart: peak RSS (VmHWM)", &|r| {
        mib(r.restart_hwm_kib)
    });
    row(&mut md, "peak RSS of the first daemon, whole run", &|r| {
        mib(r.peak_hwm_kib)
    });

    md += "\n## Targets\n\n";
    for r in results.iter().filter(|r| r.services == 10_000) {
        md += &format!(
            "- cold start within 2× of the library's bulk load: {:.1}× — {}\n",
            r.ratio(),
            yes(r.ratio() <= 2.0, "10,000 Services")
        );
        md += &format!(
            "- one endpoint change, a handful of netlink operations: {:.2} per change — {}\n",
            r.single_ops,
            yes(r.single_ops <= 5.0, "10,000 Services")
        );
        md += &format!(
            "- p99 change-to-programmed under the burst below 1 s: {} — {}\n",
            ms(r.burst.quantile(0.99)),
            yes(r.burst.quantile(0.99) < 1.0, "10,000 Services")
        );
        md += &format!(
            "- daemon RSS below 150 MiB: peak {} — {}\n",
            mib(r.peak_hwm_kib.max(r.restart_hwm_kib)),
            yes(
                r.peak_hwm_kib.max(r.restart_hwm_kib) < 150 * 1024,
                "10,000 Services"
            )
        );
        md += &format!(
            "- restart with unchanged inputs changes nothing: {} operations — {}\n",
            r.restart_operations,
            yes(r.restart_operations == 0, "10,000 Services")
        );
    }
    let engine: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{:.2} ms at {} (mean {:.2} ms)",
                r.single_sync_cpu_p50_ms, r.services, r.single_sync_cpu_ms
            )
        })
        .collect();
    md += &format!(
        "- controller CPU per change does not grow with the number of Services (median \
         sync): {}\n",
        engine.join(", ")
    );
    md += "\n## How each figure is taken\n\n";
    md += "- **cold start**: from just before the daemon is spawned to the timestamp of its \
           `node adopted` log line (written after the adoption's full pass returned); the \
           kernel's table is then listed and compared with the expected counts. Operations are \
           the sum of `ipvs_proxy_operations_total`; peak RSS is `VmHWM` from \
           `/proc/PID/status`. The peers load the same virtual and real servers in a fresh \
           namespace each; they do not bind VIPs, which the daemon does (one local route \
           through `kube-ipvs0` per ClusterIP and ingress IP).\n";
    md += "- **steady state**: utime + stime from `/proc/PID/stat` (and per thread from \
           `/proc/PID/task/*/stat`) over the window, which includes a full pass when passes \
           come every 30 s (every virtual server of the kernel table read whole and compared, \
           in slices of 256 spread over half the period); on a table whose pass takes more \
           than a quarter of the period, the next pass starts four times the last one's work \
           after it began (at most 25 % of the engine in the long run), so a window may hold \
           part of one or none; the manifests source rescans the whole folder once a minute \
           (less often if that takes more than 1 % of its time) when inotify works.\n";
    md += "- **one change at a time**: an endpoint's readiness is flipped by renaming a new \
           file over its Service's manifest; latency is from just before the rename to the \
           kernel showing the change on every virtual server of the Service (polled every \
           2 ms with `Ipvs::destinations`); then 100 ms of quiet before the next change. The \
           controller's CPU per change is the engine thread's CPU clock in incremental \
           syncs (one per change): the median of each sync's (`cpu_us` of the engine's \
           `synced` debug line), and the mean (`ipvs_proxy_engine_cpu_seconds_total\
           {work=\"sync\"}` divided by the changes). Both include the kernel's work on the \
           sync's requests, and whatever interrupt work the kernel did while the engine \
           thread ran: on kernels before 6.2, IPVS estimates the rates of every virtual and \
           real server in one timer every 2 s, which keeps a CPU for the whole walk (the \
           `kernel alone` row: the longest a thread spinning on each CPU went without running, \
           in the peer's namespace with no daemon, before and after the library loaded the \
           table, then with the kernel's estimation switched off as `ipvs-proxy \
           --ipvs-rate-estimation false` does); a sync it lands in counts that walk, so the \
           mean moves with where a few of those land, and the median is the controller's own \
           cost. The per-thread \
           figures are the threads' CPU over the whole series (10 ms clock ticks), which \
           also holds the slices of the full pass that ran meanwhile.\n";
    md += "- **burst**: the files are renamed one after the other as fast as possible; each \
           change's latency runs from its rename (wall clock) to the timestamp of the `IPVS \
           batch applied` debug line that follows its last IPVS operation in the daemon's log \
           (so it includes the kernel's answer). Every change is then checked in the kernel.\n";
    md += "- **restart**: SIGTERM (the table stays), then the same command on the same files; \
           the operations are read from `/metrics` after adoption.\n";
    md
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
