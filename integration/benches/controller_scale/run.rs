//! One cluster size: the daemon's cold start, steady state, single changes, restart and burst, with the peers.

use super::*;

#[derive(Debug, Clone, Default)]
pub(crate) struct SizeResult {
    pub(crate) services: usize,
    pub(crate) mix: (usize, usize, usize),
    pub(crate) virtual_servers: usize,
    pub(crate) real_servers: usize,
    pub(crate) manifest_bytes: u64,
    pub(crate) peer_library: f64,
    pub(crate) peer_restore: f64,
    pub(crate) cold_total: f64,
    pub(crate) cold_loaded: f64,
    pub(crate) cold_first_log: f64,
    /// Burst changes not seen programmed in time (0: the burst completed).
    pub(crate) burst_unfinished: usize,
    pub(crate) cold_adopt_ms: f64,
    pub(crate) cold_compute_ms: f64,
    pub(crate) cold_bind_ms: f64,
    pub(crate) cold_operations: u64,
    pub(crate) cold_address_changes: u64,
    pub(crate) cold_hwm_kib: u64,
    pub(crate) cold_kernel_ok: bool,
    pub(crate) steady_secs: f64,
    /// The work of the first full pass after the adoption, which reads the whole table (and
    /// starts the watch of IPVS writes); on a quiet node one pass in ten does (ms).
    pub(crate) reading_pass_ms: f64,
    /// The work of the full pass after that one, which on a quiet node does not read the
    /// table (ms).
    pub(crate) quiet_pass_ms: f64,
    /// Full passes that ended within the steady window.
    pub(crate) steady_passes: usize,
    pub(crate) steady_cpu: Cpu,
    pub(crate) steady_rss_kib: u64,
    pub(crate) single: Latencies,
    pub(crate) single_ops: f64,
    pub(crate) single_cpu: Cpu,
    pub(crate) single_sync_ms: f64,
    pub(crate) single_sync_cpu_ms: f64,
    /// The median of the single changes' syncs' CPU (from the `synced` log lines).
    pub(crate) single_sync_cpu_p50_ms: f64,
    /// The longest stall of a spinning thread, no daemon: empty table, the table loaded, and
    /// with the kernel's rate estimation off.
    pub(crate) kernel_stalls: (f64, f64, f64),
    pub(crate) burst_sync_cpu_ms: f64,
    pub(crate) single_changes: usize,
    pub(crate) restart_total: f64,
    pub(crate) restart_adopt_ms: f64,
    pub(crate) restart_operations: u64,
    pub(crate) restart_log_operations: u64,
    pub(crate) restart_address_changes: u64,
    pub(crate) restart_hwm_kib: u64,
    pub(crate) burst: Latencies,
    pub(crate) burst_changes: usize,
    pub(crate) burst_ops: f64,
    pub(crate) burst_cpu: Cpu,
    pub(crate) burst_syncs: u64,
    pub(crate) burst_write_secs: f64,
    pub(crate) burst_kernel_ok: bool,
    pub(crate) peak_hwm_kib: u64,
    /// The cold start's nftables transactions, set elements written, seconds in transactions.
    pub(crate) cold_netfilter: (f64, f64, f64),
    /// Per single change: nftables transactions and set elements written.
    pub(crate) single_netfilter: (f64, f64),
    /// Per burst change: nftables transactions and set elements written.
    pub(crate) burst_netfilter: (f64, f64),
    /// The restart's nftables transactions (must be 0).
    pub(crate) restart_netfilter: f64,
    /// What the kernel frees when the daemon's table goes: unreclaimable slab, vmalloc and
    /// per-CPU memory, KiB; the table's elements.
    pub(crate) nft_memory_kib: i64,
    pub(crate) nft_elements: usize,
}

impl SizeResult {
    pub(crate) fn ratio(&self) -> f64 {
        self.cold_total / self.peer_library.max(1e-9)
    }
}

pub(crate) struct Scratch(PathBuf);

impl Scratch {
    /// On a tmpfs (`/dev/shm`) where there is one, as a node's manifests are (a ConfigMap
    /// volume): the VM's `/tmp` is an overlay over the host's 9p share, where every lookup
    /// of a file is a round trip to the host that a node never pays.
    pub(crate) fn new(services: usize) -> Self {
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
    pub(crate) fn manifests(&self) -> PathBuf {
        self.0.join("manifests")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn daemon_args(
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
pub(crate) fn start_daemon(
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
pub(crate) fn programmed(ipvs: &mut Ipvs, keys: &[ServiceKey], ip: Ipv4Addr, ready: bool) -> bool {
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

pub(crate) fn keys_of(cluster: &SyntheticCluster, service: usize) -> Vec<ServiceKey> {
    cluster
        .service(service)
        .virtual_servers(NODE_ADDR)
        .into_iter()
        .map(|(a, p)| ServiceKey::tcp(a, p))
        .collect()
}

pub(crate) fn run_size(n: usize, opts: &Options) -> SizeResult {
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
    let adopted_at = daemon.log_lines();
    let pid = daemon.pid();
    r.cold_hwm_kib = Memory::read(pid).peak_kib;
    let entries = log::entries(&log);
    r.cold_total = timestamp(&adopted) - unix_seconds(started);
    r.cold_adopt_ms = adopted["elapsed_ms"].as_f64().unwrap_or(f64::NAN);
    r.cold_compute_ms = adopted["compute_ms"].as_f64().unwrap_or(f64::NAN);
    r.cold_bind_ms = entries
        .iter()
        .filter(|v| message(v) == "VIPs bound to the dummy interface")
        .filter_map(|v| v["elapsed_ms"].as_f64())
        .sum();
    r.cold_loaded = find(&entries, "manifests loaded")
        .map_or(f64::NAN, |v| timestamp(v) - unix_seconds(started));
    r.cold_first_log = entries
        .first()
        .map_or(f64::NAN, |v| timestamp(v) - unix_seconds(started));
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
    r.cold_netfilter = phase.0.netfilter;
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

    // 3. Steady state, once the first full pass after the adoption (which reads the whole
    // table) and the first quiet one after it are over: the daemon paces the pass after a long
    // one later than the sync period (`full_pass_period`), so a window that started after the
    // reading pass could hold no pass at all on a large table. The window holds a quiet node's
    // passes, counted from their log lines.
    let first_pass = daemon
        .wait_for_log(adopted_at, &["full pass done", "work_ms"], SLOW)
        .expect("a full pass after the adoption");
    r.reading_pass_ms = work_ms(&first_pass);
    let quiet_pass = daemon
        .wait_for_log(daemon.log_lines(), &["full pass done", "work_ms"], SLOW)
        .expect("a quiet full pass after the reading one");
    r.quiet_pass_ms = work_ms(&quiet_pass);
    std::thread::sleep(Duration::from_secs(2));
    let passes_before = full_passes_logged(&log);
    let cpu0 = Cpu::read(pid);
    let t = Instant::now();
    std::thread::sleep(opts.steady);
    r.steady_secs = t.elapsed().as_secs_f64();
    r.steady_cpu = Cpu::read(pid).since(&cpu0);
    r.steady_rss_kib = Memory::read(pid).now_kib;
    r.steady_passes = full_passes_logged(&log).saturating_sub(passes_before);
    println!(
        "steady (after a reading pass of {:.0} ms of work and a quiet one of {:.0} ms): {:.3} \
         CPU s over {:.0} s ({:.2} %) holding {} full passes, engine {:.2} s, manifests {:.2} \
         s; RSS {}",
        r.reading_pass_ms,
        r.quiet_pass_ms,
        r.steady_cpu.total,
        r.steady_secs,
        100.0 * r.steady_cpu.total / r.steady_secs,
        r.steady_passes,
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
    let single_window = (
        unix_seconds(single_started),
        unix_seconds(SystemTime::now()),
    );
    r.single = lat;
    r.single_changes = changes;
    r.single_cpu = cpu;
    r.single_ops = (m1.total() - m0.total()) as f64 / changes as f64;
    let (tx, elements) = m1.netfilter_since(&m0);
    r.single_netfilter = (tx / changes as f64, elements / changes as f64);
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

    let syncs = SyncLines::between(&log::entries(&log), single_window);
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
    r.restart_total = timestamp(&adopted) - unix_seconds(started);
    r.restart_adopt_ms = adopted["elapsed_ms"].as_f64().unwrap_or(f64::NAN);
    r.restart_log_operations = adopted["operations"].as_u64().unwrap_or(u64::MAX);
    r.restart_address_changes = adopted["address_changes"].as_u64().unwrap_or(u64::MAX);
    let restarted = ns.run(Metrics::read).expect("metrics");
    r.restart_operations = restarted.total();
    r.restart_netfilter = restarted.netfilter.0;
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
        written.push(unix_seconds(SystemTime::now()));
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
    let (tx, elements) = m1.netfilter_since(&m0);
    r.burst_netfilter = (tx / burst.max(1) as f64, elements / burst.max(1) as f64);
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
    // 7. nftables' memory: the table outlives the daemon; what the kernel frees when it goes.
    let mut daemon = daemon;
    daemon
        .terminate(Duration::from_secs(120))
        .expect("the daemon stops on SIGTERM");
    drop(daemon);
    (r.nft_memory_kib, r.nft_elements) = ns.run(nft_memory).expect("nftables memory");
    println!(
        "netfilter: cold start {:.0} transactions, {:.0} elements, {:.3} s in transactions; per \
         single change {:.2} transactions, {:.2} elements; per burst change {:.3} transactions, \
         {:.2} elements; restart {:.0} transactions; the table ({} elements) held {} KiB of \
         kernel memory",
        r.cold_netfilter.0,
        r.cold_netfilter.1,
        r.cold_netfilter.2,
        r.single_netfilter.0,
        r.single_netfilter.1,
        r.burst_netfilter.0,
        r.burst_netfilter.1,
        r.restart_netfilter,
        r.nft_elements,
        r.nft_memory_kib
    );
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
pub(crate) fn burst_progress(
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

/// The kernel memory the daemon's nftables table holds, in the calling thread's namespace:
/// unreclaimable slab, vmalloc and per-CPU memory before and after deleting the table (and
/// a pause for the kernel's deferred freeing), KiB; and how many elements it held.
fn nft_memory() -> (i64, usize) {
    let read = || -> i64 {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        ["SUnreclaim:", "VmallocUsed:", "Percpu:"]
            .iter()
            .map(|key| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    };
    let elements = svc_controller::netfilter::NfnlSocket::open()
        .ok()
        .and_then(|mut s| {
            svc_controller::netfilter::Contents::read(&mut s)
                .ok()
                .flatten()
        })
        .map_or(0, |c| c.elements.len());
    std::thread::sleep(Duration::from_secs(2));
    let before = read();
    let status = Command::new("nft")
        .args(["delete", "table", "inet", "ipvs-proxy"])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        return (-1, elements);
    }
    std::thread::sleep(Duration::from_secs(3));
    (before - read(), elements)
}

/// The `work_ms` of a `full pass done` log line (NaN if the line has none).
fn work_ms(line: &str) -> f64 {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v["work_ms"].as_f64())
        .unwrap_or(f64::NAN)
}

/// How many full passes a daemon's log file says have ended.
fn full_passes_logged(path: &Path) -> usize {
    log::entries(path)
        .iter()
        .filter(|v| message(v) == "full pass done")
        .count()
}
