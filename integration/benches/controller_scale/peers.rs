//! The peers: the same table loaded by the library and by `ipvsadm-restore`, and the kernel's own stalls.

use super::*;

/// The table the daemon should build, as library operations (rr, masquerading, weight 1: what
/// the daemon programs for these Services).
pub(crate) fn peer_operations(cluster: &SyntheticCluster) -> Vec<Operation> {
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

pub(crate) fn restore_script(cluster: &SyntheticCluster) -> String {
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
pub(crate) fn kernel_counts() -> (usize, usize) {
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
pub(crate) fn longest_stall(spell: Duration) -> f64 {
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
pub(crate) fn measure_peers(
    cluster: &SyntheticCluster,
    want: (usize, usize),
) -> (f64, f64, (f64, f64, f64)) {
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
pub(crate) const STALL_SPELL: Duration = Duration::from_secs(6);
