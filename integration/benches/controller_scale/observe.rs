//! What the benchmark reads of the daemon: its metrics and the `synced` lines of its log.

use super::*;

/// The daemon's metrics that matter here.
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    pub(crate) operations: BTreeMap<String, u64>,
    pub(crate) sync_seconds_sum: f64,
    pub(crate) sync_count: u64,
    /// Full passes, which the sync histogram also counts.
    pub(crate) full_seconds_sum: f64,
    pub(crate) full_count: u64,
    /// The engine thread's CPU time in incremental syncs (`ipvs_proxy_engine_cpu_seconds_total`).
    pub(crate) sync_cpu_seconds: f64,
    /// nftables transactions, set elements written, and seconds spent in transactions.
    pub(crate) netfilter: (f64, f64, f64),
}

impl Metrics {
    /// Reads /metrics; call from inside the daemon's namespace.
    pub(crate) fn read() -> Self {
        let addr: SocketAddr = METRICS.parse().expect("metrics address");
        let scrape = Scrape::read(addr).expect("GET /metrics");
        Metrics {
            operations: scrape
                .labelled("ipvs_proxy_operations_total")
                .filter_map(|(labels, v)| {
                    let kind = labels.strip_prefix("kind=\"")?.strip_suffix('"')?;
                    Some((kind.to_owned(), v as u64))
                })
                .collect(),
            sync_seconds_sum: scrape.sum("kubeproxy_sync_proxy_rules_duration_seconds_sum"),
            sync_count: scrape.sum("kubeproxy_sync_proxy_rules_duration_seconds_count") as u64,
            full_seconds_sum: scrape.sum("kubeproxy_sync_full_proxy_rules_duration_seconds_sum"),
            full_count: scrape.sum("kubeproxy_sync_full_proxy_rules_duration_seconds_count") as u64,
            sync_cpu_seconds: scrape
                .value("ipvs_proxy_engine_cpu_seconds_total{work=\"sync\"}")
                .unwrap_or(0.0),
            netfilter: (
                scrape.sum("ipvs_proxy_netfilter_transactions_total"),
                scrape.sum("ipvs_proxy_netfilter_changes_total"),
                scrape.sum("ipvs_proxy_netfilter_transaction_seconds_total"),
            ),
        }
    }

    /// nftables transactions and set elements written since `before`.
    pub(crate) fn netfilter_since(&self, before: &Metrics) -> (f64, f64) {
        (
            self.netfilter.0 - before.netfilter.0,
            self.netfilter.1 - before.netfilter.1,
        )
    }

    pub(crate) fn total(&self) -> u64 {
        self.operations.values().sum()
    }

    /// Incremental syncs since `before`: their count and total seconds (the sync histogram
    /// also counts full passes, which are taken out).
    pub(crate) fn incremental_syncs_since(&self, before: &Metrics) -> (u64, f64) {
        let count = (self.sync_count - before.sync_count)
            .saturating_sub(self.full_count - before.full_count);
        let seconds = (self.sync_seconds_sum - before.sync_seconds_sum)
            - (self.full_seconds_sum - before.full_seconds_sum);
        (count, seconds.max(0.0))
    }
}

/// The engine's `synced` lines (one per incremental sync) logged in a time window.
#[derive(Debug, Default)]
pub(crate) struct SyncLines {
    pub(crate) rows: Vec<SyncLine>,
}

/// One `synced` line's figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncLine {
    pub(crate) services: u64,
    pub(crate) operations: u64,
    pub(crate) cpu_us: u64,
    pub(crate) compute_cpu_us: u64,
    pub(crate) elapsed_us: u64,
}

impl SyncLines {
    pub(crate) fn between(entries: &[Value], (from, to): (f64, f64)) -> Self {
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
    pub(crate) fn cpu(&self) -> Latencies {
        self.rows.iter().map(|r| r.cpu_us as f64 / 1e6).collect()
    }

    /// Count, CPU per sync p50 / p90 / max and total, and the most expensive syncs.
    pub(crate) fn describe(&self) -> String {
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
