//! The Markdown report (BENCHMARKS.md's section).

use super::*;

pub(crate) struct SizeResult {
    pub(crate) n: usize,
    pub(crate) load_secs: f64,
    pub(crate) table: (usize, usize),
    pub(crate) proxies: BTreeMap<ProxyKind, ProxyResult>,
}

pub(crate) fn ratio(reference: f64, ours: f64) -> String {
    if ours > 0.0 && reference.is_finite() && ours.is_finite() {
        format!("{:.1}×", reference / ours)
    } else {
        "n/a".into()
    }
}

/// The release `kube-router --version` names (`Running kube-router version v2.1.0, …`).
fn kube_router_version(path: &std::path::Path) -> String {
    std::process::Command::new(path)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            let (_, rest) = text.split_once("version ")?;
            Some(rest.split([',', ' ', '\n']).next()?.to_owned())
        })
        .unwrap_or_else(|| "(version unknown)".into())
}

pub(crate) fn report(results: &[SizeResult], opts: &Options, cluster: &Cluster) -> String {
    let Machine {
        description: machine,
        kernel,
    } = Machine::read();
    let mut md = String::new();
    md += "## Kubernetes mode: ipvs-proxy, kube-proxy and kube-router on a real API server\n\n";
    md += &format!(
        "(`integration/benches/kubernetes_scale/`, run with `--sizes {} --samples {} --reference-samples {} --kube-router-samples {} --burst {} --steady-secs {}`.)\n\n",
        opts.sizes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
        opts.samples,
        opts.reference_samples,
        opts.kube_router_samples,
        opts.burst,
        opts.steady_secs
    );
    md += &format!(
        "- machine: {machine}\n- kernel: {kernel}\n- date: {}\n",
        integration::bench::utc_minute()
    );
    md += &format!(
        "- control plane: Kubernetes {} (kube-apiserver, kube-controller-manager, etcd) on the host, reached over QEMU's user-mode network; kube-proxy {} `--proxy-mode=ipvs`\n",
        cluster.test.version(),
        cluster.test.version()
    );
    if let Some(path) = &opts.kube_router {
        md += &format!(
            "- kube-router {} (`github.com/cloudnativelabs/kube-router/v2`, built from its Go module), its IPVS service proxy alone: `--run-service-proxy=true --run-router=false --run-firewall=false`\n",
            kube_router_version(path)
        );
    }
    md += "- cluster: the synthetic cluster above as API objects: selector-less Services with one EndpointSlice of 10 ready endpoints each, ClusterIPs and NodePorts given out by the API server\n";
    md += "- each proxy alone in a fresh node namespace (one address), as the same Node, with its own identity (the daemon bound to kube-proxy's `system:node-proxier`), the same kube-proxy flags (`--proxy-mode=ipvs --ipvs-scheduler=rr --cluster-cidr`) and otherwise each one's defaults (kube-proxy: at most one sync a second, a full sync every 30 s; ipvs-proxy: a sync as soon as a change comes, a full pass every 30 s); kube-router with its own flags to the same effect (the Node, round robin, metrics on the node's loopback) and otherwise its defaults (a sync of the whole table at every change, a full sync every 5 minutes: a steady window may hold none), as the admin (its informers list pods, namespaces and network policies, which kube-proxy's role does not grant)\n\n";

    for r in results {
        size_table(&mut md, r);
    }
    md += "Ratios are the other proxy's figure ÷ ipvs-proxy's: above 1× ipvs-proxy is faster or smaller.\n\n";
    md += "How each figure is taken:\n\n";
    md += "- **cold start**: from just before the proxy is spawned to the end of the first listing of the kernel's table (polled about twenty times over the wait so far, at least every 250 ms) that holds every virtual server of the loaded Services with its ready real servers; and to the end of the sync that left it so (the `kubeproxy_sync_proxy_rules_last_timestamp_seconds` gauge, any IP family, read at most every 2 s once the table is complete: kube-proxy programs IPVS first and its ipsets and iptables rules after; kube-router's log line `sync ipvs services took …`, which `--v=1` writes at the end of each of its syncs, with its time). The syncs are `kubeproxy_sync_proxy_rules_duration_seconds`' count and sum then (kube-router's: those log lines and their durations).\n";
    md += "- **steady state**: the user + system CPU of the process and of the programs it ran (`/proc/PID/stat`: kube-proxy runs `ipset` and `iptables-restore`, kube-router `ipset`, `iptables` and one `ip route replace` per VIP in every sync; ipvs-proxy runs nothing) over the window, starting 5 s after the cold start (for ipvs-proxy, 5 s after its first full pass after the adoption, which reads the whole table: the passes after it, on this quiet node, do not, except one in ten); RSS is `VmRSS` at its end, peaks `VmHWM` (the process's own).\n";
    md += "- **one change at a time**: endpoint 0 of a Service flipped unready (then ready again) by a merge patch of its EndpointSlice; from just before the request to the kernel showing the new count of ready real servers (weight above 0) on every virtual server of the Service, polled often at first and about twenty times over the wait after; then 100 ms of quiet. CPU per change: the process's CPU over the whole series ÷ changes (periodic work included).\n";
    md += "- **burst**: endpoint 1 of that many Services flipped unready, 16 requests in flight; each change from just before its own request to the kernel showing it (one watcher checks every pending Service in turn). Then every one flipped back, not measured.\n";
    md += "- **under emulation**: kube-proxy's IPVS mode adds each ipset entry by running the `ipset` program once per entry, and lists each set by running it again in every sync (`pkg/proxy/ipvs/ipset.go`); a process start costs far more under QEMU's software emulation than on hardware, so this part of kube-proxy's cost, which its cold start pays once per entry, weighs more here than it would on hardware.\n";
    md += "- **kube-router** syncs the whole table at every change it learns of (at most two queued), and ignores the changes that come during its first sync; it counts an endpoint that is serving but not ready, which this cluster never has. In every sync it runs `ip route replace` once per VIP (`pkg/controllers/proxy/linux_networking.go`), which under emulation costs a process start each.\n";
    md += &format!(
        "- **capped cold start**: a proxy whose cold start had not ended after `--cold-cap-secs` ({} s here) is stopped there and nothing else of it is measured at that size; its cells give how far it got, the ratios are then lower bounds (`>`), and the CPU profile below, taken while that first sync ran, says where its time went.\n",
        opts.cold_cap.as_secs()
    );
    md += "- **restart**: SIGTERM (each leaves the table), the same command again: to the end of its first sync that leaves the table complete; the table compared with the one before (virtual servers, real servers, weights); ipvs-proxy's IPVS operations from `ipvs_proxy_operations_total` (the others do not count theirs).\n\n";
    md
}

/// What a row shows of a proxy whose cold start hit the cap.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Capped {
    /// Spawn → table complete: when the table was seen complete, else how far it got.
    TableComplete,
    /// Spawn → end of the completing sync: not ended after the cap.
    SyncEnded,
    /// A peak taken when the cap came: shown, a lower bound.
    Peak,
    /// Not measured.
    Not,
}

/// The table of one size: ipvs-proxy, then each other proxy that ran with its ratio to it.
fn size_table(md: &mut String, r: &SizeResult) {
    let others: Vec<ProxyKind> = r
        .proxies
        .keys()
        .copied()
        .filter(|k| *k != ProxyKind::IpvsProxy)
        .collect();
    *md += &format!(
        "### {} Services ({} virtual servers, {} ready real servers; API objects loaded in {:.0} s)\n\n",
        r.n, r.table.0, r.table.1, r.load_secs
    );
    *md += "| | ipvs-proxy |";
    for k in &others {
        *md += &format!(" {} | ratio |", k.name());
    }
    *md += "\n| --- | --- |";
    for _ in &others {
        *md += " --- | --- |";
    }
    *md += "\n";
    let row = |md: &mut String,
               label: &str,
               when_capped: Capped,
               cell: &dyn Fn(&ProxyResult) -> String,
               value: Option<&dyn Fn(&ProxyResult) -> f64>| {
        *md += &format!("| {label} |");
        // A proxy whose cold start hit the cap: the two cold-start times as far as they went
        // (a lower bound when not reached), nothing else.
        let capped = |g: &GaveUp| -> (String, Option<(f64, bool)>) {
            match when_capped {
                Capped::TableComplete => match g.seen {
                    Some(seen) => (ms(seen), Some((seen, true))),
                    None => (
                        format!("not complete after {} ({})", ms(g.after), g.status),
                        Some((g.after, false)),
                    ),
                },
                Capped::SyncEnded => (
                    format!("not ended after {}", ms(g.after)),
                    Some((g.after, false)),
                ),
                Capped::Peak => (String::new(), None),
                Capped::Not => ("not measured (cold start capped)".into(), None),
            }
        };
        let show = |p: &ProxyResult| match &p.gave_up {
            Some(g) if when_capped != Capped::Peak => capped(g).0,
            _ => cell(p),
        };
        let ours = r.proxies.get(&ProxyKind::IpvsProxy);
        *md += &format!(" {} |", ours.map_or_else(|| "not run".into(), show));
        for k in &others {
            let Some(theirs) = r.proxies.get(k) else {
                continue;
            };
            let ratio = match (value, ours) {
                (Some(_), Some(o)) if o.gave_up.is_some() => String::new(),
                (Some(v), Some(o)) => match &theirs.gave_up {
                    None => ratio(v(theirs), v(o)),
                    Some(g) => match capped(g).1 {
                        Some((seen, true)) => ratio(seen, v(o)),
                        Some((after, false)) => format!("> {}", ratio(after, v(o))),
                        // Its peak when the cap came: at least that much.
                        None if when_capped == Capped::Peak => {
                            format!("> {}", ratio(v(theirs), v(o)))
                        }
                        None => String::new(),
                    },
                },
                _ => String::new(),
            };
            *md += &format!(" {} | {ratio} |", show(theirs));
        }
        *md += "\n";
    };
    row(
        md,
        "**cold start**: spawn → IPVS table complete",
        Capped::TableComplete,
        &|p| ms(p.cold),
        Some(&|p| p.cold),
    );
    row(
        md,
        "cold start: spawn → end of the sync that completed it",
        Capped::SyncEnded,
        &|p| ms(p.cold_sync),
        Some(&|p| p.cold_sync),
    );
    row(
        md,
        "cold start: syncs until then (their time)",
        Capped::Not,
        &|p| format!("{} ({})", p.cold_syncs.0, ms(p.cold_syncs.1)),
        None,
    );
    row(
        md,
        "cold start: peak RSS (VmHWM)",
        Capped::Peak,
        &|p| mib(p.cold_hwm_kib),
        None,
    );
    row(
        md,
        "**steady state**: CPU with no change",
        Capped::Not,
        &|p| {
            format!(
                "{:.2} % ({:.2} s in {:.0} s)",
                100.0 * p.steady_cpu / p.steady_secs.max(1e-9),
                p.steady_cpu,
                p.steady_secs
            )
        },
        Some(&|p| p.steady_cpu / p.steady_secs.max(1e-9)),
    );
    row(
        md,
        "steady state: RSS",
        Capped::Not,
        &|p| mib(p.steady_rss_kib),
        Some(&|p| p.steady_rss_kib as f64),
    );
    row(
        md,
        "**one change at a time**: p50 / p99 / max",
        Capped::Not,
        &|p| format!("{} ({} changes)", p.one.describe(), p.one.len()),
        None,
    );
    row(
        md,
        "one change: p99",
        Capped::Not,
        &|p| ms(p.one.quantile(0.99)),
        Some(&|p| p.one.quantile(0.99)),
    );
    row(
        md,
        "one change: process CPU per change",
        Capped::Not,
        &|p| ms(p.one_cpu_per_change),
        Some(&|p| p.one_cpu_per_change),
    );
    row(
        md,
        "**burst**: p50 / p99 / max",
        Capped::Not,
        &|p| {
            format!(
                "{} ({} changes written in {})",
                p.burst.describe(),
                p.burst.len(),
                ms(p.burst_written)
            )
        },
        None,
    );
    row(
        md,
        "burst: p99",
        Capped::Not,
        &|p| ms(p.burst.quantile(0.99)),
        Some(&|p| p.burst.quantile(0.99)),
    );
    row(
        md,
        "burst: process CPU per change",
        Capped::Not,
        &|p| ms(p.burst_cpu_per_change),
        Some(&|p| p.burst_cpu_per_change),
    );
    row(
        md,
        "**restart** (same inputs): start → end of its first complete sync",
        Capped::Not,
        &|p| ms(p.restart),
        Some(&|p| p.restart),
    );
    row(
        md,
        "restart: table unchanged / IPVS operations",
        Capped::Not,
        &|p| {
            format!(
                "{} / {}",
                if p.restart_unchanged { "yes" } else { "**no**" },
                p.restart_operations
                    .map_or("not counted".into(), |o| o.to_string())
            )
        },
        None,
    );
    row(
        md,
        "peak RSS, whole run",
        Capped::Peak,
        &|p| mib(p.peak_kib),
        Some(&|p| p.peak_kib as f64),
    );
    *md += "\n";
}
