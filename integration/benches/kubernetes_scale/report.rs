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

pub(crate) fn report(results: &[SizeResult], opts: &Options, cluster: &Cluster) -> String {
    let Machine {
        description: machine,
        kernel,
    } = Machine::read();
    let mut md = String::new();
    md += "## Kubernetes mode: ipvs-proxy and kube-proxy on a real API server\n\n";
    md += &format!(
        "(`integration/benches/kubernetes_scale/`, run with `--sizes {} --samples {} --reference-samples {} --burst {} --steady-secs {}`.)\n\n",
        opts.sizes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
        opts.samples,
        opts.reference_samples,
        opts.burst,
        opts.steady_secs
    );
    md += &format!("- machine: {machine}\n- kernel: {kernel}\n");
    md += &format!(
        "- control plane: Kubernetes {} (kube-apiserver, kube-controller-manager, etcd) on the host, reached over QEMU's user-mode network; kube-proxy {} `--proxy-mode=ipvs`\n",
        cluster.test.version(),
        cluster.test.version()
    );
    md += "- cluster: the synthetic cluster above as API objects: selector-less Services with one EndpointSlice of 10 ready endpoints each, ClusterIPs and NodePorts given out by the API server\n";
    md += "- each proxy alone in a fresh node namespace (one address), as the same Node, with its own identity (the daemon bound to kube-proxy's `system:node-proxier`), the same kube-proxy flags (`--proxy-mode=ipvs --ipvs-scheduler=rr --cluster-cidr`) and otherwise each one's defaults (kube-proxy: at most one sync a second, a full sync every 30 s; ipvs-proxy: a sync as soon as a change comes, a full pass every 30 s)\n\n";

    let header = |md: &mut String| {
        *md += "| |";
        for r in results {
            *md += &format!(" {} Services: ipvs-proxy | kube-proxy | ratio |", r.n);
        }
        *md += "\n| --- |";
        for _ in results {
            *md += " --- | --- | --- |";
        }
        *md += "\n";
    };
    header(&mut md);
    let row = |md: &mut String,
               label: &str,
               cell: &dyn Fn(&ProxyResult) -> String,
               value: Option<&dyn Fn(&ProxyResult) -> f64>| {
        *md += &format!("| {label} |");
        // A proxy whose cold start hit the cap: the two cold-start times as far as they went
        // (a lower bound when not reached), nothing else.
        let capped = |g: &GaveUp| -> (String, Option<(f64, bool)>) {
            if label.starts_with("**cold start**") {
                match g.seen {
                    Some(seen) => (ms(seen), Some((seen, true))),
                    None => (
                        format!("not complete after {} ({})", ms(g.after), g.status),
                        Some((g.after, false)),
                    ),
                }
            } else if label.starts_with("cold start: spawn") {
                (
                    format!("not ended after {}", ms(g.after)),
                    Some((g.after, false)),
                )
            } else if label.contains("peak RSS") {
                // Taken when the cap came.
                (String::new(), None)
            } else {
                ("not measured (cold start capped)".into(), None)
            }
        };
        for r in results {
            let ours = r.proxies.get(&ProxyKind::IpvsProxy);
            let reference = r.proxies.get(&ProxyKind::KubeProxy);
            let show = |p: Option<&ProxyResult>| match p {
                None => "not run".into(),
                Some(p) => match &p.gave_up {
                    Some(g) if !label.contains("peak RSS") => capped(g).0,
                    _ => cell(p),
                },
            };
            let ratio = match (value, ours, reference) {
                (Some(_), Some(o), _) if o.gave_up.is_some() => String::new(),
                (Some(v), Some(o), Some(k)) => match &k.gave_up {
                    None => ratio(v(k), v(o)),
                    Some(g) => match capped(g).1 {
                        Some((theirs, true)) => ratio(theirs, v(o)),
                        Some((theirs, false)) => format!("> {}", ratio(theirs, v(o))),
                        // Its peak when the cap came: at least that much.
                        None if label.contains("peak RSS") => format!("> {}", ratio(v(k), v(o))),
                        None => String::new(),
                    },
                },
                _ => String::new(),
            };
            *md += &format!(" {} | {} | {ratio} |", show(ours), show(reference));
        }
        *md += "\n";
    };
    md += "| API objects loaded (Services + slices, seconds) |";
    for r in results {
        md += &format!(" {} ({:.0} s) | | |", r.n, r.load_secs);
    }
    md += "\n| virtual servers / ready real servers expected |";
    for r in results {
        md += &format!(" {} / {} | | |", r.table.0, r.table.1);
    }
    md += "\n";
    row(
        &mut md,
        "**cold start**: spawn → IPVS table complete",
        &|p| ms(p.cold),
        Some(&|p| p.cold),
    );
    row(
        &mut md,
        "cold start: spawn → end of the sync that completed it",
        &|p| ms(p.cold_sync),
        Some(&|p| p.cold_sync),
    );
    row(
        &mut md,
        "cold start: syncs until then (their time)",
        &|p| format!("{} ({})", p.cold_syncs.0, ms(p.cold_syncs.1)),
        None,
    );
    row(
        &mut md,
        "cold start: peak RSS (VmHWM)",
        &|p| mib(p.cold_hwm_kib),
        None,
    );
    row(
        &mut md,
        "**steady state**: CPU with no change",
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
        &mut md,
        "steady state: RSS",
        &|p| mib(p.steady_rss_kib),
        Some(&|p| p.steady_rss_kib as f64),
    );
    row(
        &mut md,
        "**one change at a time**: p50 / p99 / max",
        &|p| format!("{} ({} changes)", p.one.describe(), p.one.len()),
        None,
    );
    row(
        &mut md,
        "one change: p99",
        &|p| ms(p.one.quantile(0.99)),
        Some(&|p| p.one.quantile(0.99)),
    );
    row(
        &mut md,
        "one change: process CPU per change",
        &|p| ms(p.one_cpu_per_change),
        Some(&|p| p.one_cpu_per_change),
    );
    row(
        &mut md,
        "**burst**: p50 / p99 / max",
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
        &mut md,
        "burst: p99",
        &|p| ms(p.burst.quantile(0.99)),
        Some(&|p| p.burst.quantile(0.99)),
    );
    row(
        &mut md,
        "burst: process CPU per change",
        &|p| ms(p.burst_cpu_per_change),
        Some(&|p| p.burst_cpu_per_change),
    );
    row(
        &mut md,
        "**restart** (same inputs): start → end of its first complete sync",
        &|p| ms(p.restart),
        Some(&|p| p.restart),
    );
    row(
        &mut md,
        "restart: table unchanged / IPVS operations",
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
        &mut md,
        "peak RSS, whole run",
        &|p| mib(p.peak_kib),
        Some(&|p| p.peak_kib as f64),
    );
    md += "\nRatios are kube-proxy ÷ ipvs-proxy: above 1× ipvs-proxy is faster or smaller.\n\n";
    md += "How each figure is taken:\n\n";
    md += "- **cold start**: from just before the proxy is spawned to the end of the first listing of the kernel's table (polled about twenty times over the wait so far, at least every 250 ms) that holds every virtual server of the loaded Services with its ready real servers; and to the end of the sync that left it so (the `kubeproxy_sync_proxy_rules_last_timestamp_seconds` gauge, any IP family, read at most every 2 s once the table is complete: kube-proxy programs IPVS first and its ipsets and iptables rules after). The syncs are `kubeproxy_sync_proxy_rules_duration_seconds`' count and sum then.\n";
    md += "- **steady state**: the user + system CPU of the process and of the programs it ran (`/proc/PID/stat`: kube-proxy runs `ipset` and `iptables-restore`; ipvs-proxy runs nothing) over the window, starting 5 s after the cold start; RSS is `VmRSS` at its end, peaks `VmHWM` (the process's own).\n";
    md += "- **one change at a time**: endpoint 0 of a Service flipped unready (then ready again) by a merge patch of its EndpointSlice; from just before the request to the kernel showing the new count of ready real servers (weight above 0) on every virtual server of the Service, polled often at first and about twenty times over the wait after; then 100 ms of quiet. CPU per change: the process's CPU over the whole series ÷ changes (periodic work included).\n";
    md += "- **burst**: endpoint 1 of that many Services flipped unready, 16 requests in flight; each change from just before its own request to the kernel showing it (one watcher checks every pending Service in turn). Then every one flipped back, not measured.\n";
    md += "- **under emulation**: kube-proxy's IPVS mode adds each ipset entry by running the `ipset` program once per entry, and lists each set by running it again in every sync (`pkg/proxy/ipvs/ipset.go`); a process start costs far more under QEMU's software emulation than on hardware, so this part of kube-proxy's cost, which its cold start pays once per entry, weighs more here than it would on hardware.\n";
    md += "- **kube-router** (its IPVS service proxy alone: `--run-service-proxy=true --run-router=false --run-firewall=false`) is not in this series yet. It can run alone, and the Go module proxy here serves `github.com/cloudnativelabs/kube-router/v2` (v2.1.0, with security reports against that version, harmless in a throwaway VM), so it builds as kube-proxy does; what adding it takes is a signal for the end of its syncs, which this benchmark reads from kube-proxy's `kubeproxy_sync_proxy_rules_last_timestamp_seconds`.\n";
    md += &format!(
        "- **capped cold start**: a proxy whose cold start had not ended after `--cold-cap-secs` ({} s here) is stopped there and nothing else of it is measured at that size; its cells give how far it got, the ratios are then lower bounds (`>`), and the CPU profile below, taken while that first sync ran, says where its time went.\n",
        opts.cold_cap.as_secs()
    );
    md += "- **restart**: SIGTERM (both leave the table), the same command again: to the end of its first sync that leaves the table complete; the table compared with the one before (virtual servers, real servers, weights); ipvs-proxy's IPVS operations from `ipvs_proxy_operations_total` (kube-proxy does not count its own).\n\n";
    md
}
