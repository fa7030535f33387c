//! Prometheus metrics, with kube-proxy's names where kube-proxy has the metric.
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `kubeproxy_sync_proxy_rules_duration_seconds` | histogram | one sync (incremental or full) |
//! | `kubeproxy_sync_full_proxy_rules_duration_seconds` | histogram | one full pass (table re-read, drift repaired) |
//! | `kubeproxy_network_programming_duration_seconds` | histogram | from the change (EndpointSlice annotation `endpoints.kubernetes.io/last-change-trigger-time`) to programmed |
//! | `kubeproxy_sync_proxy_rules_last_timestamp_seconds` | gauge | last successful sync (Unix time) |
//! | `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds` | gauge | last change received (Unix time) |
//! | `ipvs_proxy_operations_total{kind}` | counter | IPVS operations applied, by kind (`add_service`, `edit_destination`, ...) |
//! | `ipvs_proxy_netlink_errors_total{during}` | counter | failed IPVS operations (`operation`) and reads (`read`), failed address changes (`address`) |
//! | `ipvs_proxy_real_servers_draining` | gauge | real servers at weight 0 waiting for their connections to end |
//! | `ipvs_proxy_services_invalid` | gauge | Services with at least one problem (a bad field skipped) |
//! | `ipvs_proxy_virtual_servers` | gauge | virtual servers desired on this node |
//! | `ipvs_proxy_drift_repaired_total` | counter | virtual servers found changed behind the daemon's back and repaired |
//! | `ipvs_proxy_unrequested_deletions_total` | counter | virtual servers deleted that this process did not create and no Service asked for while it ran (leftovers of Services deleted while it was down, or another's entries on its addresses; each logged as a warning) |
//! | `ipvs_proxy_source_errors_total{source}` | counter | failed watches or list calls (`kubernetes`), unreadable manifests (`manifests`) |
//! | `ipvs_proxy_engine_cpu_seconds_total{work}` | counter | CPU time of the engine's thread (user and system, so the kernel's work on its netlink requests too), by work: `sync` (incremental syncs), `full_pass`, `adoption`, `timers` (retries and drain checks) |
//! | `ipvs_proxy_virtual_server_{connections,packets_in,packets_out,bytes_in,bytes_out}_total` | counter | optional (`--metrics-per-virtual-server`): IPVS statistics of each virtual server on the node, labelled `address`, `protocol`, `port` or `fwmark` |

use std::sync::Mutex;

use ipvs::Ipvs;
use ipvs::model::ServiceKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `kubeproxy_sync_proxy_rules_duration_seconds`.
    pub sync_duration: Histogram,
    /// `kubeproxy_sync_full_proxy_rules_duration_seconds`.
    pub full_sync_duration: Histogram,
    /// `kubeproxy_network_programming_duration_seconds`.
    pub network_programming: Histogram,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`.
    pub last_sync: Gauge<f64, AtomicU64>,
    /// `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds`.
    pub last_queued: Gauge<f64, AtomicU64>,
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
        let full_sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        let network_programming = Histogram::new([
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
        ]);
        let this = Self {
            sync_duration,
            full_sync_duration,
            network_programming,
            last_sync: Gauge::default(),
            last_queued: Gauge::default(),
            operations: Family::default(),
            netlink_errors: Family::default(),
            draining: Gauge::default(),
            services_invalid: Gauge::default(),
            virtual_servers: Gauge::default(),
            drift_repaired: Counter::default(),
            unrequested_deletions: Counter::default(),
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
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "Latency of full passes in seconds (table re-read and drift repaired)",
            this.full_sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In-cluster network programming latency in seconds",
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
        Self { registry, ..this }
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
            "ipvs_proxy_source_errors_total{source=\"manifests\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("ipvs_proxy_virtual_server_connections"));
    }
}
