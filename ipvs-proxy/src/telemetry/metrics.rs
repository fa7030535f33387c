//! Prometheus metrics, with kube-proxy's names where kube-proxy has the metric.
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `kubeproxy_sync_proxy_rules_duration_seconds` | histogram | one sync, partial or full |
//! | `kubeproxy_sync_partial_proxy_rules_duration_seconds` | histogram | one partial sync: an incremental sync of the Services touched since the last one (kube-proxy's partial resync) |
//! | `kubeproxy_sync_full_proxy_rules_duration_seconds` | histogram | one full sync: the adoption, or a full pass (table re-read in slices, drift repaired; the time of its slices) |
//! | `kubeproxy_network_programming_duration_seconds` | histogram | from the change (EndpointSlice annotation `endpoints.kubernetes.io/last-change-trigger-time`) to programmed; kube-proxy's buckets (0, 0.25 s, 0.5 s, 1 s to 59 s by 1 s, 60 s to 115 s by 5 s, 120 s to 300 s by 30 s) |
//! | `kubeproxy_sync_proxy_rules_last_timestamp_seconds` | gauge | last successful sync (Unix time) |
//! | `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds` | gauge | last change received (Unix time) |
//! | `kubeproxy_sync_proxy_rules_service_changes_total` | counter | Service changes received (an added, updated or deleted Service; a relist counts each Service listed) |
//! | `kubeproxy_sync_proxy_rules_service_changes_pending` | gauge | Service changes received that changed a Service's input and are not programmed yet; 0 once every touched Service is programmed (counted per change: kube-proxy counts distinct Services, the same unless one Service changes twice between two syncs) |
//! | `kubeproxy_sync_proxy_rules_endpoint_changes_total` | counter | EndpointSlice changes received (an added, updated or deleted slice; a relist counts each slice listed) |
//! | `kubeproxy_sync_proxy_rules_endpoint_changes_pending` | gauge | EndpointSlice changes received that changed a Service's endpoints and are not programmed yet (a relist counts one per Service it changed); 0 once every touched Service is programmed |
//! | `kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy}` | gauge | Service ports with a `Local` policy (`internal`: `internalTrafficPolicy`, `external`: `externalTrafficPolicy`) and no endpoint on this node while the Service has endpoints elsewhere, once per port and address family; as of the last sync (a gauge despite its name, as kube-proxy's) |
//! | `kubeproxy_proxy_healthz_total{code}` | counter | `/healthz` answers, by HTTP status (`200`, `503`) |
//! | `kubeproxy_proxy_livez_total{code}` | counter | `/livez` answers, by HTTP status (`200`, `503`) |
//! | `ipvs_proxy_operations_total{kind}` | counter | IPVS operations applied, by kind (`add_service`, `edit_destination`, ...) |
//! | `ipvs_proxy_netlink_errors_total{during}` | counter | failed IPVS operations (`operation`) and reads (`read`), failed address changes (`address`), failed nftables transactions (`netfilter`), failed conntrack clean-ups (`conntrack`) |
//! | `ipvs_proxy_netfilter_transactions_total` | counter | nftables transactions applied to the daemon's table (`inet ipvs-proxy`) |
//! | `ipvs_proxy_netfilter_changes_total` | counter | set elements of the daemon's nftables table added or deleted |
//! | `ipvs_proxy_netfilter_reads_skipped_total` | counter | full passes that did not read the nftables table back: nothing was committed in the namespace, and neither the Services nor the node's addresses changed, since it was last found right |
//! | `ipvs_proxy_ipvs_reads_skipped_total` | counter | full passes that did not read the IPVS table back: no IPVS write was seen in the namespace (the `nlmon-ipvs` tap) and the Services did not change since it was last found right |
//! | `ipvs_proxy_netfilter_transaction_seconds_total` | counter | wall-clock time spent in nftables transactions, applied or refused |
//! | `ipvs_proxy_udp_flows_deleted_total` | counter | stale UDP conntrack entries deleted (to an endpoint that left, or from before a Service had one) |
//! | `ipvs_proxy_real_servers_draining` | gauge | real servers at weight 0 waiting for their connections to end |
//! | `ipvs_proxy_services_invalid` | gauge | Services with at least one problem (a bad field skipped) |
//! | `ipvs_proxy_virtual_servers` | gauge | virtual servers desired on this node |
//! | `ipvs_proxy_drift_repaired_total` | counter | virtual servers found changed behind the daemon's back and repaired |
//! | `ipvs_proxy_unrequested_deletions_total` | counter | virtual servers deleted that this process did not create and no Service asked for while it ran (leftovers of Services deleted while it was down, or another's entries on its addresses; each logged as a warning) |
//! | `ipvs_proxy_source_errors_total{source}` | counter | failed watches or list calls (`kubernetes`), unreadable manifests (`manifests`) |
//! | `ipvs_proxy_engine_cpu_seconds_total{work}` | counter | CPU time of the engine's thread (user and system, so the kernel's work on its netlink requests too), by work: `sync` (incremental syncs), `full_pass`, `adoption`, `timers` (retries and drain checks) |
//! | `ipvs_proxy_virtual_server_{connections,packets_in,packets_out,bytes_in,bytes_out}_total` | counter | optional (`--metrics-per-virtual-server`): IPVS statistics of each virtual server on the node, labelled `address`, `protocol`, `port` or `fwmark` |
//!
//! kube-proxy's metrics keep its names, help texts, labels and buckets, so that a dashboard
//! built for kube-proxy keeps working. Newer kube-proxy releases also label some of them with
//! `ip_family`; this daemon programs both families in one sync and does not.

use std::sync::Mutex;

use ipvs::Ipvs;
use ipvs::model::ServiceKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use svc_controller::reconcile::Metrics as ReconcilerMetrics;

/// A label naming a kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: String,
}

/// A label naming when an error happened.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DuringLabel {
    /// `operation`, `read` or `address`.
    pub during: String,
}

/// A label naming a source.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `kubernetes` or `manifests`.
    pub source: String,
}

/// A label naming a kind of work.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkLabel {
    /// `sync`, `full_pass`, `adoption` or `timers`.
    pub work: String,
}

/// A label naming a traffic policy.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficPolicyLabel {
    /// `internal` or `external`.
    pub traffic_policy: String,
}

/// A label naming an HTTP status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The status code, `200` or `503`.
    pub code: String,
}

/// kube-proxy's buckets of `kubeproxy_network_programming_duration_seconds` (its
/// `MergeBuckets` starts them with a 0).
pub fn network_programming_buckets() -> Vec<f64> {
    std::iter::once(0.0)
        .chain(linear_buckets(0.25, 0.25, 2))
        .chain(linear_buckets(1.0, 1.0, 59))
        .chain(linear_buckets(60.0, 5.0, 12))
        .chain(linear_buckets(120.0, 30.0, 7))
        .collect()
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `kubeproxy_sync_proxy_rules_duration_seconds`.
    pub sync_duration: Histogram,
    /// `kubeproxy_sync_partial_proxy_rules_duration_seconds`.
    pub partial_sync_duration: Histogram,
    /// `kubeproxy_sync_full_proxy_rules_duration_seconds`.
    pub full_sync_duration: Histogram,
    /// `kubeproxy_network_programming_duration_seconds`.
    pub network_programming: Histogram,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`.
    pub last_sync: Gauge<f64, AtomicU64>,
    /// `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds`.
    pub last_queued: Gauge<f64, AtomicU64>,
    /// `kubeproxy_sync_proxy_rules_service_changes_total`.
    pub service_changes: Counter,
    /// `kubeproxy_sync_proxy_rules_service_changes_pending`.
    pub service_changes_pending: Gauge,
    /// `kubeproxy_sync_proxy_rules_endpoint_changes_total`.
    pub endpoint_changes: Counter,
    /// `kubeproxy_sync_proxy_rules_endpoint_changes_pending`.
    pub endpoint_changes_pending: Gauge,
    /// `kubeproxy_sync_proxy_rules_no_local_endpoints_total`.
    pub no_local_endpoints: Family<TrafficPolicyLabel, Gauge>,
    /// Its `internal` and `external` series (created with it: kube-proxy sets both on every
    /// sync, so both always exist).
    no_local_by_policy: [Gauge; 2],
    /// `kubeproxy_proxy_healthz_total`.
    pub healthz: Family<CodeLabel, Counter>,
    /// `kubeproxy_proxy_livez_total`.
    pub livez: Family<CodeLabel, Counter>,
    /// `ipvs_proxy_operations_total`.
    pub operations: Family<KindLabel, Counter>,
    /// `ipvs_proxy_netlink_errors_total`.
    pub netlink_errors: Family<DuringLabel, Counter>,
    /// `ipvs_proxy_real_servers_draining`.
    pub draining: Gauge,
    /// `ipvs_proxy_services_invalid`.
    pub services_invalid: Gauge,
    /// `ipvs_proxy_virtual_servers`.
    pub virtual_servers: Gauge,
    /// `ipvs_proxy_drift_repaired_total`.
    pub drift_repaired: Counter,
    /// `ipvs_proxy_unrequested_deletions_total`.
    pub unrequested_deletions: Counter,
    /// `ipvs_proxy_netfilter_transactions_total`.
    pub netfilter_transactions: Counter,
    /// `ipvs_proxy_netfilter_changes_total`.
    pub netfilter_changes: Counter,
    /// `ipvs_proxy_netfilter_reads_skipped_total`.
    pub netfilter_reads_skipped: Counter,
    /// `ipvs_proxy_ipvs_reads_skipped_total`.
    pub ipvs_reads_skipped: Counter,
    /// `ipvs_proxy_udp_flows_deleted_total`.
    pub udp_flows_deleted: Counter,
    /// `ipvs_proxy_netfilter_transaction_seconds_total`.
    pub netfilter_seconds: Counter<f64, AtomicU64>,
    /// `ipvs_proxy_source_errors_total`.
    pub source_errors: Family<SourceLabel, Counter>,
    /// `ipvs_proxy_engine_cpu_seconds_total`.
    pub engine_cpu: Family<WorkLabel, Counter<f64, AtomicU64>>,
    /// What the reconciler's counters were at the last [`Metrics::record_reconciler`].
    seen: Mutex<ReconcilerMetrics>,
}

impl Metrics {
    /// Creates and registers every metric. With `per_virtual_server`, scrapes also read each
    /// virtual server's statistics from IPVS (through their own socket, opened on the calling
    /// thread's network namespace).
    pub fn new(per_virtual_server: bool) -> Self {
        let mut registry = Registry::default();
        let sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let partial_sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let full_sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        let network_programming = Histogram::new(network_programming_buckets());
        let no_local_endpoints: Family<TrafficPolicyLabel, Gauge> = Family::default();
        let no_local_by_policy = ["internal", "external"].map(|policy| {
            no_local_endpoints
                .get_or_create(&TrafficPolicyLabel {
                    traffic_policy: policy.to_owned(),
                })
                .clone()
        });
        let this = Self {
            sync_duration,
            partial_sync_duration,
            full_sync_duration,
            network_programming,
            last_sync: Gauge::default(),
            last_queued: Gauge::default(),
            service_changes: Counter::default(),
            service_changes_pending: Gauge::default(),
            endpoint_changes: Counter::default(),
            endpoint_changes_pending: Gauge::default(),
            no_local_endpoints,
            no_local_by_policy,
            healthz: Family::default(),
            livez: Family::default(),
            operations: Family::default(),
            netlink_errors: Family::default(),
            draining: Gauge::default(),
            services_invalid: Gauge::default(),
            virtual_servers: Gauge::default(),
            drift_repaired: Counter::default(),
            unrequested_deletions: Counter::default(),
            netfilter_transactions: Counter::default(),
            netfilter_changes: Counter::default(),
            netfilter_reads_skipped: Counter::default(),
            ipvs_reads_skipped: Counter::default(),
            udp_flows_deleted: Counter::default(),
            netfilter_seconds: Counter::default(),
            source_errors: Family::default(),
            engine_cpu: Family::default(),
            seen: Mutex::new(ReconcilerMetrics::default()),
            registry: Registry::default(),
        };
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds (one sync, incremental or full)",
            this.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            this.partial_sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            this.full_sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            this.network_programming.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time the IPVS table was successfully synced (Unix seconds)",
            this.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a change was queued for programming (Unix seconds)",
            this.last_queued.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            this.service_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            this.service_changes_pending.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            this.endpoint_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            this.endpoint_changes_pending.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            this.no_local_endpoints.clone(),
        );
        registry.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            this.healthz.clone(),
        );
        registry.register(
            "kubeproxy_proxy_livez",
            "Cumulative proxy livez HTTP status",
            this.livez.clone(),
        );
        registry.register(
            "ipvs_proxy_operations",
            "IPVS operations applied, by kind",
            this.operations.clone(),
        );
        registry.register(
            "ipvs_proxy_netlink_errors",
            "Failed IPVS operations and reads and failed address changes",
            this.netlink_errors.clone(),
        );
        registry.register(
            "ipvs_proxy_real_servers_draining",
            "Real servers at weight 0 waiting for their connections to end",
            this.draining.clone(),
        );
        registry.register(
            "ipvs_proxy_services_invalid",
            "Services with at least one invalid field (skipped, reported in the logs)",
            this.services_invalid.clone(),
        );
        registry.register(
            "ipvs_proxy_virtual_servers",
            "Virtual servers desired on this node",
            this.virtual_servers.clone(),
        );
        registry.register(
            "ipvs_proxy_drift_repaired",
            "Virtual servers found changed behind the daemon's back and repaired",
            this.drift_repaired.clone(),
        );
        registry.register(
            "ipvs_proxy_unrequested_deletions",
            "Virtual servers deleted that this process did not create and no Service asked for",
            this.unrequested_deletions.clone(),
        );
        registry.register(
            "ipvs_proxy_netfilter_transactions",
            "nftables transactions applied to the daemon's table",
            this.netfilter_transactions.clone(),
        );
        registry.register(
            "ipvs_proxy_netfilter_changes",
            "Set elements of the daemon's nftables table added or deleted",
            this.netfilter_changes.clone(),
        );
        registry.register(
            "ipvs_proxy_netfilter_reads_skipped",
            "Full passes that did not read the nftables table back: nothing in it or its inputs changed since it was last found right",
            this.netfilter_reads_skipped.clone(),
        );
        registry.register(
            "ipvs_proxy_ipvs_reads_skipped",
            "Full passes that did not read the IPVS table back: no IPVS write was seen and the Services did not change since it was last found right",
            this.ipvs_reads_skipped.clone(),
        );
        registry.register(
            "ipvs_proxy_netfilter_transaction_seconds",
            "Wall-clock time spent applying nftables transactions",
            this.netfilter_seconds.clone(),
        );
        registry.register(
            "ipvs_proxy_udp_flows_deleted",
            "Stale UDP conntrack entries deleted",
            this.udp_flows_deleted.clone(),
        );
        registry.register(
            "ipvs_proxy_source_errors",
            "Failed watches and unreadable manifests",
            this.source_errors.clone(),
        );
        registry.register(
            "ipvs_proxy_engine_cpu_seconds",
            "CPU time of the engine's thread, by work (sync, full_pass, adoption, timers)",
            this.engine_cpu.clone(),
        );
        if per_virtual_server {
            registry.register_collector(Box::new(VirtualServerStats::default()));
        }
        // Every operation kind and failure phase is served from the start, at zero: a series
        // that appears only with its first event is absent to `rate()` and to alerts until then.
        for (kind, _) in ReconcilerMetrics::default().applied_by_kind.by_name() {
            let _ = this.operations.get_or_create(&KindLabel {
                kind: kind.to_owned(),
            });
        }
        for during in ["operation", "read", "address", "netfilter", "conntrack"] {
            let _ = this.netlink_errors.get_or_create(&DuringLabel {
                during: during.to_owned(),
            });
        }
        Self { registry, ..this }
    }

    /// Sets `kubeproxy_sync_proxy_rules_no_local_endpoints_total`: `internal` and `external`
    /// Service ports.
    pub fn set_no_local_endpoints(&self, internal: u32, external: u32) {
        let [internal_gauge, external_gauge] = &self.no_local_by_policy;
        internal_gauge.set(i64::from(internal));
        external_gauge.set(i64::from(external));
    }

    /// Counts one `/healthz` answer with HTTP status `code`.
    pub fn healthz_answered(&self, code: u16) {
        Self::count_code(&self.healthz, code);
    }

    /// Counts one `/livez` answer with HTTP status `code`.
    pub fn livez_answered(&self, code: u16) {
        Self::count_code(&self.livez, code);
    }

    fn count_code(family: &Family<CodeLabel, Counter>, code: u16) {
        family
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// Adds `cpu` to the engine's CPU time spent on `work`.
    pub fn engine_cpu(&self, work: &str, cpu: std::time::Duration) {
        self.engine_cpu
            .get_or_create(&WorkLabel {
                work: work.to_owned(),
            })
            .inc_by(cpu.as_secs_f64());
    }

    /// Adds what the reconciler counted since the last call.
    pub fn record_reconciler(&self, now: &ReconcilerMetrics) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let delta = |a: u64, b: u64| a.saturating_sub(b);
        for ((name, count), (_, before)) in now
            .applied_by_kind
            .by_name()
            .iter()
            .zip(seen.applied_by_kind.by_name().iter())
        {
            let d = delta(*count, *before);
            if d > 0 {
                self.operations
                    .get_or_create(&KindLabel {
                        kind: (*name).to_owned(),
                    })
                    .inc_by(d);
            }
        }
        for (during, a, b) in [
            ("operation", now.operations_failed, seen.operations_failed),
            ("read", now.read_failures, seen.read_failures),
            ("address", now.address_failures, seen.address_failures),
            ("netfilter", now.netfilter_failures, seen.netfilter_failures),
            ("conntrack", now.udp_flow_failures, seen.udp_flow_failures),
        ] {
            let d = delta(a, b);
            if d > 0 {
                self.netlink_errors
                    .get_or_create(&DuringLabel {
                        during: during.to_owned(),
                    })
                    .inc_by(d);
            }
        }
        self.drift_repaired
            .inc_by(delta(now.drift_detected, seen.drift_detected));
        self.unrequested_deletions
            .inc_by(delta(now.unrequested_deletions, seen.unrequested_deletions));
        self.netfilter_transactions.inc_by(delta(
            now.netfilter_transactions,
            seen.netfilter_transactions,
        ));
        self.netfilter_changes
            .inc_by(delta(now.netfilter_changes, seen.netfilter_changes));
        self.netfilter_reads_skipped.inc_by(delta(
            now.netfilter_reads_skipped,
            seen.netfilter_reads_skipped,
        ));
        self.ipvs_reads_skipped
            .inc_by(delta(now.ipvs_reads_skipped, seen.ipvs_reads_skipped));
        self.udp_flows_deleted
            .inc_by(delta(now.udp_flows_deleted, seen.udp_flows_deleted));
        let micros = delta(now.netfilter_micros, seen.netfilter_micros);
        if micros > 0 {
            self.netfilter_seconds.inc_by(micros as f64 / 1e6);
        }
        *seen = *now;
    }

    /// Counts one failure of a source.
    pub fn source_error(&self, source: &str) {
        self.source_errors
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc();
    }

    /// The value of one series (`name{labels}` exactly as encoded) in [`Metrics::encode`]'s
    /// text, if it is there.
    #[cfg(test)]
    pub(crate) fn sample(&self, series: &str) -> Option<f64> {
        let text = self.encode().ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads every virtual server's statistics at scrape time.
#[derive(Debug, Default)]
struct VirtualServerStats {
    handle: Mutex<Option<Ipvs>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VirtualServerLabels {
    address: String,
    protocol: String,
    port: String,
    fwmark: String,
}

impl Collector for VirtualServerStats {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut guard = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            match Ipvs::open() {
                Ok(h) => *guard = Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open IPVS for per-virtual-server metrics");
                    return Ok(());
                }
            }
        }
        let Some(ipvs) = guard.as_mut() else {
            return Ok(());
        };
        let entries = match ipvs.services() {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read IPVS statistics for /metrics");
                *guard = None;
                return Ok(());
            }
        };
        let labelled: Vec<(VirtualServerLabels, ipvs::model::Stats)> = entries
            .iter()
            .map(|e| {
                let labels = match e.service.key {
                    ServiceKey::Tuple {
                        protocol,
                        addr,
                        port,
                    } => VirtualServerLabels {
                        address: addr.to_string(),
                        protocol: protocol.to_string().to_lowercase(),
                        port: port.to_string(),
                        fwmark: String::new(),
                    },
                    ServiceKey::Fwmark { mark, .. } => VirtualServerLabels {
                        address: String::new(),
                        protocol: String::new(),
                        port: String::new(),
                        fwmark: mark.to_string(),
                    },
                };
                (labels, e.stats)
            })
            .collect();
        type Read = fn(&ipvs::model::Stats) -> u64;
        let series: [(&str, &str, Read); 5] = [
            (
                "ipvs_proxy_virtual_server_connections",
                "Connections scheduled by the virtual server",
                |s| s.connections,
            ),
            (
                "ipvs_proxy_virtual_server_packets_in",
                "Packets received by the virtual server",
                |s| s.packets_in,
            ),
            (
                "ipvs_proxy_virtual_server_packets_out",
                "Packets sent by the virtual server",
                |s| s.packets_out,
            ),
            (
                "ipvs_proxy_virtual_server_bytes_in",
                "Bytes received by the virtual server",
                |s| s.bytes_in,
            ),
            (
                "ipvs_proxy_virtual_server_bytes_out",
                "Bytes sent by the virtual server",
                |s| s.bytes_out,
            ),
        ];
        for (name, help, value) in series {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, stats) in &labelled {
                let family = metric.encode_family(labels)?;
                ConstCounter::new(value(stats)).encode(family)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kube_proxys_and_deltas_add_up() {
        let m = Metrics::new(false);
        let mut r = ReconcilerMetrics::default();
        r.applied_by_kind.add_service = 3;
        r.applied_by_kind.add_destination = 9;
        r.operations_failed = 1;
        r.netfilter_transactions = 2;
        r.netfilter_changes = 7;
        r.netfilter_reads_skipped = 4;
        r.ipvs_reads_skipped = 6;
        r.netfilter_failures = 1;
        m.record_reconciler(&r);
        r.applied_by_kind.add_destination = 10;
        m.record_reconciler(&r);
        m.sync_duration.observe(0.002);
        m.source_error("manifests");
        let text = m.encode().unwrap();
        for needle in [
            "# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram",
            "kubeproxy_network_programming_duration_seconds_count 0",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "ipvs_proxy_operations_total{kind=\"add_service\"} 3",
            "ipvs_proxy_operations_total{kind=\"add_destination\"} 10",
            "ipvs_proxy_netlink_errors_total{during=\"operation\"} 1",
            "ipvs_proxy_netlink_errors_total{during=\"netfilter\"} 1",
            "ipvs_proxy_netfilter_transactions_total 2",
            "ipvs_proxy_netfilter_changes_total 7",
            "ipvs_proxy_netfilter_reads_skipped_total 4",
            "ipvs_proxy_ipvs_reads_skipped_total 6",
            "ipvs_proxy_source_errors_total{source=\"manifests\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("ipvs_proxy_virtual_server_connections"));
    }

    #[test]
    fn operation_and_failure_series_are_served_at_zero_from_the_start() {
        let text = Metrics::new(false).encode().unwrap();
        for needle in [
            "ipvs_proxy_operations_total{kind=\"add_service\"} 0",
            "ipvs_proxy_operations_total{kind=\"delete_destination\"} 0",
            "ipvs_proxy_netlink_errors_total{during=\"read\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn kube_proxys_metrics_have_its_names_help_types_and_labels() {
        let m = Metrics::new(false);
        m.healthz_answered(200);
        m.healthz_answered(503);
        m.healthz_answered(200);
        m.livez_answered(200);
        m.set_no_local_endpoints(2, 1);
        m.partial_sync_duration.observe(0.003);
        let text = m.encode().unwrap();
        for needle in [
            "# HELP kubeproxy_sync_partial_proxy_rules_duration_seconds SyncProxyRules latency in seconds for partial resyncs.",
            "# TYPE kubeproxy_sync_partial_proxy_rules_duration_seconds histogram",
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_bucket{le=\"0.001\"} 0",
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1",
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_bucket{le=\"16.384\"} 1",
            "# HELP kubeproxy_sync_full_proxy_rules_duration_seconds SyncProxyRules latency in seconds for full resyncs.",
            "# HELP kubeproxy_network_programming_duration_seconds In Cluster Network Programming Latency in seconds.",
            "# TYPE kubeproxy_sync_proxy_rules_service_changes counter",
            "# HELP kubeproxy_sync_proxy_rules_service_changes Cumulative proxy rules Service changes.",
            "kubeproxy_sync_proxy_rules_service_changes_total 0",
            "# TYPE kubeproxy_sync_proxy_rules_service_changes_pending gauge",
            "# HELP kubeproxy_sync_proxy_rules_service_changes_pending Pending proxy rules Service changes.",
            "kubeproxy_sync_proxy_rules_service_changes_pending 0",
            "# TYPE kubeproxy_sync_proxy_rules_endpoint_changes counter",
            "# HELP kubeproxy_sync_proxy_rules_endpoint_changes Cumulative proxy rules Endpoint changes.",
            "kubeproxy_sync_proxy_rules_endpoint_changes_total 0",
            "# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_pending gauge",
            "# HELP kubeproxy_sync_proxy_rules_endpoint_changes_pending Pending proxy rules Endpoint changes.",
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending 0",
            "# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge",
            "# HELP kubeproxy_sync_proxy_rules_no_local_endpoints_total Number of services with a Local traffic policy and no endpoints.",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"} 2",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"} 1",
            "# TYPE kubeproxy_proxy_healthz counter",
            "# HELP kubeproxy_proxy_healthz Cumulative proxy healthz HTTP status.",
            "kubeproxy_proxy_healthz_total{code=\"200\"} 2",
            "kubeproxy_proxy_healthz_total{code=\"503\"} 1",
            "# TYPE kubeproxy_proxy_livez counter",
            "# HELP kubeproxy_proxy_livez Cumulative proxy livez HTTP status.",
            "kubeproxy_proxy_livez_total{code=\"200\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("kubeproxy_proxy_livez_total{code=\"503\"}"));
    }

    #[test]
    fn the_no_local_endpoints_series_exist_from_the_start() {
        let m = Metrics::new(false);
        for policy in ["internal", "external"] {
            let series = format!(
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total{{traffic_policy=\"{policy}\"}}"
            );
            assert_eq!(m.sample(&series), Some(0.0), "{series}");
        }
    }

    #[test]
    fn network_programming_uses_kube_proxys_buckets() {
        // kube-proxy: MergeBuckets(LinearBuckets(0.25, 0.25, 2), LinearBuckets(1, 1, 59),
        // LinearBuckets(60, 5, 12), LinearBuckets(120, 30, 7)), MergeBuckets adding a 0.
        let mut expected = vec![0.0, 0.25, 0.5];
        expected.extend((1..=59).map(f64::from));
        expected.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
        expected.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
        assert_eq!(network_programming_buckets(), expected);
        assert_eq!(expected.len(), 81);

        let m = Metrics::new(false);
        m.network_programming.observe(0.3);
        m.network_programming.observe(61.0);
        let text = m.encode().unwrap();
        let les: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("kubeproxy_network_programming_duration_seconds_bucket{le=\"")
            })
            .filter_map(|l| l.split('"').next())
            .collect();
        let mut want: Vec<String> = expected.iter().map(|b| format!("{b:?}")).collect();
        want.push("+Inf".into());
        assert_eq!(les, want);
        for (le, count) in [
            ("0.25", 0.0),
            ("0.5", 1.0),
            ("60.0", 1.0),
            ("65.0", 2.0),
            ("300.0", 2.0),
        ] {
            let series =
                format!("kubeproxy_network_programming_duration_seconds_bucket{{le=\"{le}\"}}");
            assert_eq!(m.sample(&series), Some(count), "{series}");
        }
    }
}
