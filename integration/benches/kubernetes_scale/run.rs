//! One proxy at one size: cold start, steady state, changes, burst and restart.

use super::*;

#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyResult {
    /// Spawn → a listing found the table complete.
    pub(crate) cold: f64,
    /// Spawn → the end of the sync that left it complete.
    pub(crate) cold_sync: f64,
    /// Syncs until the table was complete, and their seconds.
    pub(crate) cold_syncs: (u64, f64),
    pub(crate) cold_hwm_kib: u64,
    pub(crate) steady_cpu: f64,
    pub(crate) steady_secs: f64,
    pub(crate) steady_rss_kib: u64,
    pub(crate) one: Latencies,
    pub(crate) one_cpu_per_change: f64,
    pub(crate) burst: Latencies,
    pub(crate) burst_cpu_per_change: f64,
    pub(crate) burst_written: f64,
    pub(crate) restart: f64,
    pub(crate) restart_unchanged: bool,
    pub(crate) restart_operations: Option<u64>,
    pub(crate) peak_kib: u64,
    /// Set when the cold start did not complete within `--cold-cap-secs`: nothing after it
    /// was measured.
    pub(crate) gave_up: Option<GaveUp>,
}

/// A cold start that was not complete when the cap came.
#[derive(Debug, Clone)]
pub(crate) struct GaveUp {
    /// Seconds from the spawn.
    pub(crate) after: f64,
    /// What the last listing found (what was missing).
    pub(crate) status: String,
    /// Seconds from the spawn to the listing that first found the table complete, when one
    /// did (kube-proxy programs IPVS before its ipsets and iptables rules).
    pub(crate) seen: Option<f64>,
}

pub(crate) struct Running {
    pub(crate) kind: ProxyKind,
    pub(crate) node: NodeNamespace,
    pub(crate) process: DaemonProcess,
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) log: PathBuf,
}

impl Running {
    pub(crate) fn start(cluster: &Cluster, kind: ProxyKind, opts: &Options, n: usize) -> Self {
        let node = NodeNamespace::new(kind.name(), NODE_IP, None, cluster.test.api_addr())
            .expect("a node namespace");
        let kubeconfig = opts.logs.join(format!("{}-{n}.kubeconfig", kind.name()));
        node.write_kubeconfig(&cluster.test, kind.identity(), &kubeconfig)
            .expect("write a kubeconfig");
        let program = match kind {
            ProxyKind::IpvsProxy => opts.daemon.clone(),
            ProxyKind::KubeProxy => cluster.test.kube_proxy_binary(),
            ProxyKind::KubeRouter => opts
                .kube_router
                .clone()
                .expect("kube-router is run only with --kube-router"),
        };
        // kube-proxy serves its Go profiles on the metrics address when asked to.
        let extra = if kind == ProxyKind::KubeProxy && opts.profile_secs > 0 {
            vec!["--profiling".to_string()]
        } else {
            Vec::new()
        };
        let args = kind.args(&kubeconfig, NODE, CLUSTER_CIDR, &extra);
        let log = opts.logs.join(format!("{}-{n}.log", kind.name()));
        let _ = std::fs::remove_file(&log);
        let process = DaemonProcess::start(node.netns(), &program, &args, &log)
            .unwrap_or_else(|e| panic!("start {} ({e})", program.display()));
        Self {
            kind,
            node,
            process,
            program,
            args,
            log,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What the proxy says of its syncs: from `/metrics`, or kube-router's log.
    pub(crate) fn metrics(&self) -> Option<Metrics> {
        match self.kind {
            ProxyKind::KubeRouter => Metrics::from_kube_router_log(&self.process.log()),
            ProxyKind::IpvsProxy | ProxyKind::KubeProxy => Metrics::read(self.node.netns()),
        }
    }

    pub(crate) fn alive(&mut self) {
        assert!(
            self.process.is_running(),
            "{} exited; its log ({}) ends:\n{}",
            self.kind.name(),
            self.log.display(),
            tail(&self.process.log(), 40)
        );
    }

    /// Waits until the table is complete and a sync that ended at or after `since` (Unix
    /// seconds) has left it so. The table can be complete before the sync that fills it ends
    /// (kube-proxy programs IPVS first, then its ipsets and iptables rules).
    pub(crate) fn wait_complete(
        &mut self,
        expected: &[(ServiceKey, usize)],
        since: f64,
    ) -> Completed {
        self.wait_complete_within(expected, since, SLOW)
            .unwrap_or_else(|g| {
                panic!(
                    "{}: the table was not complete after {:.0} s: {}",
                    self.kind.name(),
                    g.after,
                    g.status
                )
            })
    }

    /// [`Running::wait_complete`], giving up after `limit`.
    pub(crate) fn wait_complete_within(
        &mut self,
        expected: &[(ServiceKey, usize)],
        since: f64,
        limit: Duration,
    ) -> Result<Completed, GaveUp> {
        let started = Instant::now();
        let mut told = Instant::now();
        let mut seen: Option<f64> = None;
        // The start of the last look that found the table incomplete: the sync that completed
        // it ended after that.
        let mut last_incomplete = since;
        let mut last_scrape: Option<Instant> = None;
        loop {
            self.alive();
            let look = unix_seconds(SystemTime::now());
            let mut status = incomplete(self.node.netns(), expected);
            match (&status, seen) {
                (Some(_), None) => last_incomplete = look,
                (None, None) => seen = Some(unix_seconds(SystemTime::now())),
                _ => {}
            }
            // A scrape of /metrics costs the proxy (kube-proxy's is large): only once the
            // table is complete, and at most every 2 s.
            if let Some(seen) = seen
                && last_scrape.is_none_or(|t| t.elapsed() >= Duration::from_secs(2))
            {
                last_scrape = Some(Instant::now());
                if let Some(m) = self.metrics()
                    && m.last_sync >= last_incomplete.max(since)
                {
                    return Ok(Completed {
                        seen,
                        synced: m.last_sync.min(unix_seconds(SystemTime::now())),
                        metrics: m,
                    });
                }
                status = Some("complete; waiting for the end of the sync".into());
            }
            if unix_seconds(SystemTime::now()) - since > limit.as_secs_f64() {
                return Err(GaveUp {
                    after: unix_seconds(SystemTime::now()) - since,
                    status: status.unwrap_or_else(|| "complete".into()),
                    seen: seen.map(|at| at - since),
                });
            }
            if told.elapsed() > Duration::from_secs(60) {
                println!(
                    "  {}: after {:.0} s: {}",
                    self.kind.name(),
                    started.elapsed().as_secs_f64(),
                    status.as_deref().unwrap_or("complete")
                );
                told = Instant::now();
            }
            std::thread::sleep(poll_interval(started.elapsed()).max(Duration::from_millis(100)));
        }
    }

    /// Waits until every virtual server of `keys` shows `ready` ready real servers; returns
    /// the seconds from `from`.
    pub(crate) fn wait_shows(&mut self, keys: &[ServiceKey], ready: usize, from: Instant) -> f64 {
        let netns = self.node.netns().clone();
        let seen = netns
            .run(|| {
                let mut ipvs = Ipvs::open().expect("IPVS handle");
                loop {
                    if shows(&mut ipvs, keys, ready) {
                        return Some(from.elapsed().as_secs_f64());
                    }
                    if from.elapsed() > SLOW {
                        return None;
                    }
                    std::thread::sleep(poll_interval(from.elapsed()));
                }
            })
            .expect("enter the node's namespace");
        self.alive();
        seen.unwrap_or_else(|| panic!("{}: a change never showed", self.kind.name()))
    }

    pub(crate) fn stop(mut self) {
        let _ = self.process.terminate(Duration::from_secs(30));
    }
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Services spread over the cluster, `count` of them, distinct when `count <= n`.
pub(crate) fn spread(n: usize, count: usize, salt: usize) -> Vec<usize> {
    let step = (n / count.max(1)).max(1);
    (0..count).map(|k| (k * step + salt) % n).collect()
}

pub(crate) fn run_proxy(
    cluster: &mut Cluster,
    kind: ProxyKind,
    n: usize,
    opts: &Options,
) -> ProxyResult {
    let mut r = ProxyResult::default();
    let name = kind.name();
    let expected = cluster.expected();

    // Cold start.
    let spawned = unix_seconds(SystemTime::now());
    let mut proxy = Running::start(cluster, kind, opts, n);
    let done = match proxy.wait_complete_within(&expected, spawned, opts.cold_cap) {
        Ok(done) => done,
        Err(gave_up) => {
            println!(
                "  {name}: cold start: not complete after {} ({}); nothing else measured",
                ms(gave_up.after),
                gave_up.status
            );
            r.cold_hwm_kib = Memory::read(proxy.pid()).peak_kib;
            r.peak_kib = r.cold_hwm_kib;
            r.gave_up = Some(gave_up);
            // Where the time goes: the sync under way.
            profile(&proxy, kind, n, opts, "cold");
            proxy.stop();
            return r;
        }
    };
    r.cold = done.seen - spawned;
    r.cold_sync = done.synced - spawned;
    r.cold_syncs = (done.metrics.syncs, done.metrics.sync_seconds);
    r.cold_hwm_kib = Memory::read(proxy.pid()).peak_kib;
    println!(
        "  {name}: cold start: table complete after {}, its sync ended after {} ({} syncs taking {})",
        ms(r.cold),
        ms(r.cold_sync),
        done.metrics.syncs,
        ms(done.metrics.sync_seconds)
    );

    // Steady state. ipvs-proxy's first full pass after the adoption reads the whole table
    // (and starts its watch of IPVS writes); the window holds the passes after it, which on
    // this quiet node do not read the table back.
    if kind == ProxyKind::IpvsProxy {
        let before = proxy.metrics().map_or(0, |m| m.full_syncs);
        let waited = Instant::now();
        while proxy.metrics().map_or(0, |m| m.full_syncs) <= before && waited.elapsed() < SLOW {
            proxy.alive();
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    let before = Cpu::read(proxy.pid());
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(opts.steady_secs));
    r.steady_cpu = Cpu::read(proxy.pid()).since(&before).with_children();
    r.steady_secs = window.elapsed().as_secs_f64();
    r.steady_rss_kib = Memory::read(proxy.pid()).now_kib;
    println!(
        "  {name}: steady {:.2} s CPU in {:.0} s",
        r.steady_cpu, r.steady_secs
    );

    // One change at a time: a Service's endpoint 0 goes unready, then ready again.
    let samples = opts.samples(kind);
    let services = spread(n, samples / 2, 7);
    let before = Cpu::read(proxy.pid());
    for k in 0..samples {
        let service = services[k / 2];
        let ready = k % 2 == 1;
        let keys = cluster.keys[service].clone();
        let want = (0..ENDPOINTS)
            .filter(|&j| (j == 0 && ready) || (j != 0 && cluster.synthetic.is_ready(service, j)))
            .count();
        let from = Instant::now();
        cluster.set_ready(service, 0, ready);
        r.one.push(proxy.wait_shows(&keys, want, from));
        std::thread::sleep(Duration::from_millis(100));
    }
    r.one_cpu_per_change =
        Cpu::read(proxy.pid()).since(&before).with_children() / samples.max(1) as f64;
    println!(
        "  {name}: one change at a time p50/p99/max {}",
        r.one.describe()
    );

    // A burst: endpoint 1 of `burst` Services goes unready at once.
    let count = opts.burst.min(n);
    let services = spread(n, count, 3);
    let watch: Vec<(Vec<ServiceKey>, usize)> = services
        .iter()
        .map(|&s| (cluster.keys[s].clone(), ENDPOINTS - 1))
        .collect();
    let writes: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; count]));
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let writes = Arc::clone(&writes);
        let done = Arc::clone(&done);
        proxy
            .node
            .netns()
            .spawn(move || {
                let mut ipvs = Ipvs::open().map_err(std::io::Error::other)?;
                let mut seen: Vec<Option<f64>> = vec![None; watch.len()];
                let started = Instant::now();
                while seen.iter().any(Option::is_none) && started.elapsed() < SLOW {
                    let written: Vec<Option<Instant>> =
                        writes.lock().map(|w| w.clone()).unwrap_or_default();
                    for (k, (keys, ready)) in watch.iter().enumerate() {
                        if seen[k].is_none()
                            && let Some(at) = written.get(k).copied().flatten()
                            && shows(&mut ipvs, keys, *ready)
                        {
                            seen[k] = Some(at.elapsed().as_secs_f64());
                        }
                    }
                    // Often while the writes go on, then less and less.
                    let pause = if done.load(Ordering::Relaxed) {
                        poll_interval(started.elapsed())
                    } else {
                        Duration::from_millis(5)
                    };
                    std::thread::sleep(pause);
                }
                Ok(seen)
            })
            .expect("a thread in the node's namespace")
    };
    let before = Cpu::read(proxy.pid());
    let burst_start = Instant::now();
    cluster.set_ready_all(&services, 1, false, &|k| {
        if let Ok(mut w) = writes.lock() {
            w[k] = Some(Instant::now());
        }
    });
    r.burst_written = burst_start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let seen = poller
        .join()
        .expect("the burst's watcher")
        .expect("the burst's watcher");
    proxy.alive();
    r.burst_cpu_per_change =
        Cpu::read(proxy.pid()).since(&before).with_children() / count.max(1) as f64;
    for (k, s) in seen.iter().enumerate() {
        r.burst
            .push(s.unwrap_or_else(|| panic!("{name}: burst change {k} never showed")));
    }
    println!(
        "  {name}: burst of {count} written in {}, p50/p99/max {}",
        ms(r.burst_written),
        r.burst.describe()
    );
    // Back to ready, not measured.
    let since = unix_seconds(SystemTime::now());
    cluster.set_ready_all(&services, 1, true, &|_| {});
    let expected = cluster.expected();
    let _ = proxy.wait_complete(&expected, since);

    // Restart with unchanged inputs.
    std::thread::sleep(Duration::from_secs(2));
    let table_before = listing(proxy.node.netns()).expect("list the IPVS table");
    r.peak_kib = Memory::read(proxy.pid()).peak_kib;
    // kube-router stops once the sync under way has ended: minutes at 1,000 Services.
    proxy.process.terminate(SLOW).expect("stop the proxy");
    let restarted = unix_seconds(SystemTime::now());
    proxy.process =
        DaemonProcess::start(proxy.node.netns(), &proxy.program, &proxy.args, &proxy.log)
            .expect("restart the proxy");
    r.restart = proxy.wait_complete(&expected, restarted).synced - restarted;
    r.restart_operations = proxy.metrics().and_then(|m| m.operations);
    r.restart_unchanged = listing(proxy.node.netns()).expect("list the IPVS table") == table_before;
    r.peak_kib = r.peak_kib.max(Memory::read(proxy.pid()).peak_kib);
    println!(
        "  {name}: restart {}, table unchanged: {}",
        ms(r.restart),
        r.restart_unchanged
    );

    // Where kube-proxy's time goes, after every figure is taken: its periodic syncs, whose
    // work is a full sync's, as every one of its syncs is.
    profile(&proxy, kind, n, opts, "steady");
    proxy.stop();
    r
}

/// Takes kube-proxy's CPU profile for `--profile-secs` into the logs' folder, as
/// `kube-proxy-N-WHAT.pprof` (`cargo xtask bench` summarizes it in BENCHMARKS.md).
fn profile(proxy: &Running, kind: ProxyKind, n: usize, opts: &Options, what: &str) {
    if kind != ProxyKind::KubeProxy || opts.profile_secs == 0 {
        return;
    }
    let name = kind.name();
    let path = opts.logs.join(format!("{name}-{n}-{what}.pprof"));
    match cpu_profile(proxy.node.netns(), opts.profile_secs) {
        Ok(bytes) => {
            std::fs::write(&path, bytes).expect("write the profile");
            println!(
                "  {name}: CPU profile of {} s in {}",
                opts.profile_secs,
                path.display()
            );
        }
        Err(e) => println!("  {name}: no CPU profile: {e}"),
    }
}
