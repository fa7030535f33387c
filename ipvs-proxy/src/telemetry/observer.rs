//! The daemon's view of the engine: kube-proxy's metrics, `/healthz`, and the Services'
//! health checks, kept up to date as the engine reports ([`Observer`]).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use svc_controller::ServiceRef;
use svc_controller::desired::HealthCheck;
use svc_controller::runtime::{EngineState, ObjectKind, Observer, SyncEnd, Work};

use super::Metrics;
use crate::health::{Health, ServiceHealthChecks};

/// What the daemon shows of the engine. Cheap to share: every part is behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// The Prometheus metrics (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// `/healthz` and `/livez`.
    pub health: Arc<Health>,
    /// The Services' health checks, answered on their `healthCheckNodePort`s.
    pub checks: Arc<ServiceHealthChecks>,
}

impl Telemetry {
    /// Telemetry over these parts.
    pub fn new(metrics: Arc<Metrics>, health: Arc<Health>) -> Self {
        Self {
            metrics,
            health,
            checks: Arc::new(ServiceHealthChecks::new()),
        }
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Observer for Telemetry {
    fn received(&self, kind: ObjectKind, objects: u64, pending: i64) {
        let (total, waiting) = match kind {
            ObjectKind::Services => (
                &self.metrics.service_changes,
                &self.metrics.service_changes_pending,
            ),
            ObjectKind::EndpointSlices => (
                &self.metrics.endpoint_changes,
                &self.metrics.endpoint_changes_pending,
            ),
        };
        total.inc_by(objects);
        waiting.inc_by(pending);
    }

    fn queued(&self, at: SystemTime) {
        self.health.queued(at);
        self.metrics.last_queued.set(unix_seconds(at));
    }

    fn caught_up(&self) {
        self.metrics.service_changes_pending.set(0);
        self.metrics.endpoint_changes_pending.set(0);
    }

    fn node_deleting(&self, deleting: bool) {
        self.health.set_node_deleting(deleting);
    }

    fn adopted(&self) {
        self.health.adopted();
    }

    fn synced(&self, sync: SyncEnd) {
        let elapsed = sync.elapsed.as_secs_f64();
        self.metrics.sync_duration.observe(elapsed);
        if sync.full {
            self.metrics.full_sync_duration.observe(elapsed);
        } else {
            self.metrics.partial_sync_duration.observe(elapsed);
        }
        // kube-proxy's gauge and `/healthz` say when the last successful sync ended.
        if sync.ok {
            self.health.updated(sync.ended);
            self.metrics.last_sync.set(unix_seconds(sync.ended));
        }
    }

    fn programmed(&self, latency: Duration) {
        self.metrics
            .network_programming
            .observe(latency.as_secs_f64());
    }

    fn engine_cpu(&self, work: Work, cpu: Duration) {
        self.metrics.engine_cpu(work.as_str(), cpu);
    }

    fn state(&self, state: &EngineState<'_>) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.record_reconciler(state.reconciler);
        self.metrics
            .virtual_servers
            .set(gauge(state.virtual_servers));
        self.metrics.draining.set(gauge(state.draining));
        self.metrics
            .services_invalid
            .set(gauge(state.services_invalid));
        self.metrics.set_no_local_endpoints(
            state.no_local_endpoints.internal,
            state.no_local_endpoints.external,
        );
    }

    fn health_check(&self, service: &ServiceRef, check: Option<HealthCheck>) {
        self.checks.set(service, check);
    }

    fn health_checks(&self, all: Vec<(ServiceRef, HealthCheck)>) {
        self.checks.replace_all(all);
    }

    fn health_check_addresses(&self, addresses: Option<BTreeSet<IpAddr>>) {
        self.checks.set_addresses(addresses);
    }
}

#[cfg(test)]
mod tests {
    //! The engine as the daemon shows it: kube-proxy's metrics, `/healthz` and the Services'
    //! health checks, driven by the controller's engine over the in-memory dataplane.

    use std::collections::BTreeSet;
    use std::ops::{Deref, DerefMut};
    use std::time::{Duration, Instant, SystemTime};

    use k8s_openapi::api::core::v1::Node;
    use svc_controller::dataplane::MemoryDataplane;
    use svc_controller::runtime::{Change, EARLY_SYNC_MAX, Engine, EngineConfig, Flow, Message};
    use svc_controller::testing::{first_load, service, slice};

    use super::*;

    /// An engine and what the daemon shows of it.
    struct Observed {
        engine: Engine<MemoryDataplane>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        checks: Arc<ServiceHealthChecks>,
    }

    impl Observed {
        fn health_checks(&self) -> Arc<ServiceHealthChecks> {
            self.checks.clone()
        }
    }

    impl Deref for Observed {
        type Target = Engine<MemoryDataplane>;
        fn deref(&self) -> &Self::Target {
            &self.engine
        }
    }

    impl DerefMut for Observed {
        fn deref_mut(&mut self) -> &mut Self::Target {
            &mut self.engine
        }
    }

    fn engine(wait_for_node: bool) -> Observed {
        engine_with(MemoryDataplane::new(), wait_for_node, |_| {})
    }

    fn engine_with(
        dp: MemoryDataplane,
        wait_for_node: bool,
        adjust: impl FnOnce(&mut EngineConfig),
    ) -> Observed {
        let mut config = EngineConfig {
            wait_for_node,
            ..EngineConfig::for_node("node-a")
        };
        adjust(&mut config);
        let telemetry = Telemetry::new(
            Arc::new(Metrics::new(false)),
            Arc::new(Health::new(Duration::from_secs(60))),
        );
        Observed {
            engine: Engine::new(dp, config, Arc::new(telemetry.clone())),
            metrics: telemetry.metrics,
            health: telemetry.health,
            checks: telemetry.checks,
        }
    }

    fn feed(e: &mut Observed, messages: Vec<Message>, now: Instant) {
        for m in messages {
            assert_eq!(e.handle(m, SystemTime::now()), Flow::Continue);
        }
        e.step(now, SystemTime::now());
    }

    fn initial() -> Vec<Message> {
        first_load()
    }

    #[test]
    fn nothing_is_touched_before_every_source_synced() {
        let now = Instant::now();
        let mut e = engine(true);
        let mut msgs = initial();
        let slices = msgs.pop().unwrap();
        feed(&mut e, msgs, now);
        assert!(!e.is_adopted());
        assert_eq!(
            e.next_deadline(),
            None,
            "nothing to do until the slices come"
        );
        feed(&mut e, vec![slices], now);
        assert!(!e.is_adopted(), "the Node has not been listed yet");
        assert!(e.reconciler().dataplane().journal().is_empty());
        assert!(!e.health.healthz(SystemTime::now()).healthy, "not ready");
        assert!(e.health.livez(SystemTime::now()).healthy, "but alive");
        feed(&mut e, vec![Message::Node(Change::Reset(vec![]))], now);
        assert!(e.is_adopted());
        assert_eq!(e.reconciler().dataplane().table().len(), 2);
        assert!(e.health.healthz(SystemTime::now()).healthy);
    }

    #[test]
    fn health_checks_follow_the_services() {
        let now = Instant::now();
        let mut e = engine(false);
        let checks = e.health_checks();
        let mut b = service("ns", "b", "10.96.0.2");
        if let Some(spec) = b.spec.as_mut() {
            spec.type_ = Some("LoadBalancer".into());
            spec.external_traffic_policy = Some("Local".into());
            spec.health_check_node_port = Some(32000);
        }
        let on = |node: &str, addrs: &[&str]| {
            let mut s = slice("ns", "b-1", "b", addrs);
            for ep in s.endpoints.iter_mut().flatten() {
                ep.node_name = Some(node.into());
            }
            s
        };
        let mut messages = initial();
        messages[0] = Message::Services(Change::Reset(vec![
            service("ns", "a", "10.96.0.1"),
            b.clone(),
        ]));
        messages[1] = Message::Slices(Change::Reset(vec![
            slice("ns", "a-1", "a", &["10.1.0.1"]),
            on("node-a", &["10.1.1.1", "10.1.1.2"]),
        ]));
        feed(&mut e, messages, now);
        assert!(e.is_adopted());
        let b_ref = ServiceRef::new("ns", "b");
        assert_eq!(
            checks.ports(),
            std::collections::BTreeMap::from([(32000, b_ref.clone())])
        );
        assert_eq!(checks.answer(32000, true).unwrap().local_endpoints, 2);
        // The endpoints move to another node: this one answers 503.
        let moved = on("node-b", &["10.1.1.1", "10.1.1.2"]);
        feed(&mut e, vec![Message::Slices(Change::Applied(moved))], now);
        let answer = checks.answer(32000, true).unwrap();
        assert_eq!(answer.local_endpoints, 0);
        assert_eq!(answer.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        // The Service goes: so does its health check.
        feed(&mut e, vec![Message::Services(Change::Deleted(b))], now);
        assert!(checks.ports().is_empty());
    }

    #[test]
    fn health_checks_listen_on_the_node_port_addresses_when_narrowed() {
        let node = |last: u8| std::net::IpAddr::from([192, 168, 1, last]);
        let other = std::net::IpAddr::from([10, 0, 0, 7]);
        let narrowed = |cidrs: &[&str]| {
            let dp = MemoryDataplane::new().with_node_addresses([node(10), other]);
            let mut e = engine_with(dp, false, |config| {
                config.proxy.node_port_cidrs = cidrs.iter().map(|c| c.parse().unwrap()).collect();
            });
            let before = e.health_checks().addresses();
            feed(&mut e, initial(), Instant::now());
            (before, e)
        };
        // Every address by default.
        let (_, e) = narrowed(&[]);
        assert_eq!(e.health_checks().addresses(), None);
        // Narrowed: nothing until the node's addresses are read, then the matching ones, and
        // they follow the node.
        let (before, mut e) = narrowed(&["192.168.0.0/16"]);
        assert_eq!(before, Some(BTreeSet::new()));
        assert_eq!(
            e.health_checks().addresses(),
            Some(BTreeSet::from([node(10)]))
        );
        e.dataplane_mut().set_node_addresses([node(11), other]);
        let later = Instant::now() + Duration::from_secs(30);
        e.step(later, SystemTime::now());
        assert_eq!(
            e.health_checks().addresses(),
            Some(BTreeSet::from([node(11)]))
        );
    }

    #[test]
    fn invalid_services_are_counted_and_others_work() {
        let now = Instant::now();
        let mut e = engine(false);
        let mut bad = service("ns", "bad", "10.96.0.9");
        bad.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 0;
        let mut msgs = initial();
        if let Message::Services(Change::Reset(v)) = &mut msgs[0] {
            v.push(bad);
        }
        feed(&mut e, msgs, now);
        assert_eq!(e.reconciler().dataplane().table().len(), 2);
        assert_eq!(e.metrics.services_invalid.get(), 1);
        feed(
            &mut e,
            vec![Message::Services(Change::Applied(service(
                "ns",
                "bad",
                "10.96.0.9",
            )))],
            now,
        );
        assert_eq!(e.metrics.services_invalid.get(), 0);
        assert_eq!(e.reconciler().dataplane().table().len(), 3);
    }

    #[test]
    fn network_programming_latency_is_measured_from_the_trigger_time() {
        let now = Instant::now();
        let mut e = engine(false);
        feed(&mut e, initial(), now);
        let mut s = slice("ns", "b-1", "b", &["10.1.1.1", "10.1.1.2"]);
        let trigger = SystemTime::now() - Duration::from_secs(3);
        s.metadata.annotations = Some(std::collections::BTreeMap::from([(
            svc_controller::config::TRIGGER_TIME_ANNOTATION.into(),
            humantime::format_rfc3339(trigger).to_string(),
        )]));
        feed(&mut e, vec![Message::Slices(Change::Applied(s))], now);
        let text = e.metrics.encode().unwrap();
        assert!(
            text.contains("kubeproxy_network_programming_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"2.0\"} 0"),
            "{text}"
        );
    }

    /// The value of `series` in the engine's metrics (0 when absent, as a counter not yet
    /// created).
    fn sample(e: &Observed, series: &str) -> f64 {
        e.metrics.sample(series).unwrap_or(0.0)
    }

    const SERVICE_TOTAL: &str = "kubeproxy_sync_proxy_rules_service_changes_total";
    const SERVICE_PENDING: &str = "kubeproxy_sync_proxy_rules_service_changes_pending";
    const ENDPOINT_TOTAL: &str = "kubeproxy_sync_proxy_rules_endpoint_changes_total";
    const ENDPOINT_PENDING: &str = "kubeproxy_sync_proxy_rules_endpoint_changes_pending";

    #[test]
    fn changes_are_counted_and_pending_until_synced() {
        let now = Instant::now();
        let mut e = engine(false);
        for m in initial() {
            e.handle(m, SystemTime::now());
        }
        // The first lists: two Services, two slices, all new.
        assert_eq!(sample(&e, SERVICE_TOTAL), 2.0);
        assert_eq!(sample(&e, SERVICE_PENDING), 2.0);
        assert_eq!(sample(&e, ENDPOINT_TOTAL), 2.0);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 2.0);
        e.step(now, SystemTime::now());
        assert!(e.is_adopted());
        assert_eq!(sample(&e, SERVICE_PENDING), 0.0);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 0.0);

        // A slice that changes, then the same slice again (no change): both received, one
        // pending.
        let b = slice("ns", "b-1", "b", &["10.1.1.1", "10.1.1.2"]);
        e.handle(
            Message::Slices(Change::Applied(b.clone())),
            SystemTime::now(),
        );
        e.handle(Message::Slices(Change::Applied(b)), SystemTime::now());
        assert_eq!(sample(&e, ENDPOINT_TOTAL), 4.0);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 1.0);
        // A Service that changes, and one deleted.
        e.handle(
            Message::Services(Change::Applied(service("ns", "a", "10.96.0.9"))),
            SystemTime::now(),
        );
        e.handle(
            Message::Services(Change::Deleted(service("ns", "b", "10.96.0.2"))),
            SystemTime::now(),
        );
        assert_eq!(sample(&e, SERVICE_TOTAL), 4.0);
        assert_eq!(sample(&e, SERVICE_PENDING), 2.0);
        e.step(now, SystemTime::now());
        assert_eq!(sample(&e, SERVICE_PENDING), 0.0);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 0.0);
        assert_eq!(sample(&e, SERVICE_TOTAL), 4.0, "totals only grow");
        assert_eq!(sample(&e, ENDPOINT_TOTAL), 4.0);
    }

    #[test]
    fn changes_stay_pending_while_the_sync_waits() {
        let now = Instant::now();
        let mut e = engine_with(MemoryDataplane::new(), false, |config| {
            config.min_sync_period = Duration::from_secs(1);
        });
        feed(&mut e, initial(), now);
        let b = slice("ns", "b-1", "b", &["10.1.1.1", "10.1.1.2"]);
        // Within the minimum interval since the adoption's sync: nothing is programmed yet.
        feed(&mut e, vec![Message::Slices(Change::Applied(b))], now);
        assert_eq!(e.pending(), 1);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 1.0);
        e.step(now + Duration::from_secs(1), SystemTime::now());
        assert_eq!(e.pending(), 0);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 0.0);
    }

    #[test]
    fn relists_count_each_object_and_each_service_they_change() {
        let now = Instant::now();
        let mut e = engine(false);
        feed(&mut e, initial(), now);
        // The same two Services and slices, one slice changed.
        let relist = Message::Slices(Change::Reset(vec![
            slice("ns", "a-1", "a", &["10.1.0.1", "10.1.0.2"]),
            slice("ns", "b-1", "b", &["10.1.1.9"]),
        ]));
        e.handle(relist, SystemTime::now());
        assert_eq!(sample(&e, ENDPOINT_TOTAL), 4.0);
        assert_eq!(sample(&e, ENDPOINT_PENDING), 1.0);
    }

    #[test]
    fn syncs_are_partial_or_full() {
        let now = Instant::now();
        let mut e = engine(false);
        feed(&mut e, initial(), now);
        let count = |e: &Observed, name: &str| sample(e, &format!("{name}_count"));
        const ALL: &str = "kubeproxy_sync_proxy_rules_duration_seconds";
        const PARTIAL: &str = "kubeproxy_sync_partial_proxy_rules_duration_seconds";
        const FULL: &str = "kubeproxy_sync_full_proxy_rules_duration_seconds";
        // The adoption is a full sync.
        assert_eq!(
            (count(&e, ALL), count(&e, PARTIAL), count(&e, FULL)),
            (1.0, 0.0, 1.0)
        );
        let b = slice("ns", "b-1", "b", &["10.1.1.1", "10.1.1.2"]);
        feed(&mut e, vec![Message::Slices(Change::Applied(b))], now);
        assert_eq!(
            (count(&e, ALL), count(&e, PARTIAL), count(&e, FULL)),
            (2.0, 1.0, 1.0)
        );
        // A full pass (its slices end at once on this small table).
        let later = now + Duration::from_secs(30);
        e.step(later, SystemTime::now());
        while e.full_pass_running() {
            let next = e.next_deadline().unwrap_or(later);
            e.step(next, SystemTime::now());
        }
        assert_eq!(
            (count(&e, ALL), count(&e, PARTIAL), count(&e, FULL)),
            (3.0, 1.0, 2.0)
        );
    }

    #[test]
    fn local_policies_without_local_endpoints_are_counted() {
        const INTERNAL: &str =
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"}";
        const EXTERNAL: &str =
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"}";
        let now = Instant::now();
        let mut e = engine(false);
        // a: internalTrafficPolicy Local. b: an external IP, externalTrafficPolicy Local.
        // c: both Local, but no endpoint anywhere (refused whatever the policy: not counted).
        let mut a = service("ns", "a", "10.96.0.1");
        let mut b = service("ns", "b", "10.96.0.2");
        let mut c = service("ns", "c", "10.96.0.3");
        if let Some(spec) = a.spec.as_mut() {
            spec.internal_traffic_policy = Some("Local".into());
        }
        for svc in [&mut b, &mut c] {
            if let Some(spec) = svc.spec.as_mut() {
                spec.external_ips = Some(vec!["203.0.113.7".into()]);
                spec.external_traffic_policy = Some("Local".into());
                spec.internal_traffic_policy = Some("Local".into());
            }
        }
        if let Some(spec) = b.spec.as_mut() {
            spec.internal_traffic_policy = None;
            spec.external_ips = Some(vec!["203.0.113.8".into()]);
        }
        let on = |svc: &str, node: &str| {
            let mut s = slice("ns", &format!("{svc}-1"), svc, &["10.1.0.1"]);
            for ep in s.endpoints.iter_mut().flatten() {
                ep.node_name = Some(node.into());
            }
            s
        };
        let messages = vec![
            Message::Services(Change::Reset(vec![a, b, c])),
            Message::Slices(Change::Reset(vec![on("a", "node-b"), on("b", "node-b")])),
        ];
        feed(&mut e, messages, now);
        assert!(e.is_adopted());
        assert_eq!(sample(&e, INTERNAL), 1.0);
        assert_eq!(sample(&e, EXTERNAL), 1.0);
        // An endpoint comes to this node: a has one.
        feed(
            &mut e,
            vec![Message::Slices(Change::Applied(on("a", "node-a")))],
            now,
        );
        assert_eq!(sample(&e, INTERNAL), 0.0);
        assert_eq!(sample(&e, EXTERNAL), 1.0);
        // b goes.
        feed(
            &mut e,
            vec![Message::Services(Change::Deleted(service(
                "ns",
                "b",
                "10.96.0.2",
            )))],
            now,
        );
        assert_eq!(sample(&e, EXTERNAL), 0.0);
    }

    #[test]
    fn node_deletion_fails_healthz_and_zone_changes_recompute() {
        let now = Instant::now();
        let mut e = engine(true);
        let mut msgs = initial();
        msgs.push(Message::Node(Change::Reset(vec![Node::default()])));
        feed(&mut e, msgs, now);
        assert!(e.health.healthz(SystemTime::now()).healthy);
        let mut node = Node::default();
        node.metadata.labels = Some(std::collections::BTreeMap::from([(
            svc_controller::config::ZONE_LABEL.into(),
            "zone-b".into(),
        )]));
        node.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert_eq!(
            e.handle(Message::Node(Change::Applied(node)), SystemTime::now()),
            Flow::Continue
        );
        assert_eq!(e.node().zone.as_deref(), Some("zone-b"));
        assert_eq!(
            e.pending(),
            2,
            "every Service is recomputed for the new zone"
        );
        assert!(!e.health.healthz(SystemTime::now()).healthy);
        assert!(e.health.livez(SystemTime::now()).healthy);
    }

    #[test]
    fn an_early_start_programs_a_bounded_share_per_step() {
        let now = Instant::now();
        let mut e = engine(false);
        let total = EARLY_SYNC_MAX + 6;
        for i in 0..total {
            let vip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
            let message = Message::Services(Change::Applied(service("ns", &format!("s{i}"), &vip)));
            assert_eq!(e.handle(message, SystemTime::now()), Flow::Continue);
        }
        e.step(now, SystemTime::now());
        assert_eq!(e.pending(), 6);
        // Changes stay pending until every Service they touched is programmed.
        assert_eq!(sample(&e, SERVICE_PENDING), total as f64);
        assert_eq!(e.reconciler().dataplane().table().len(), EARLY_SYNC_MAX);
        assert_eq!(e.next_deadline().map(|t| t <= Instant::now()), Some(true));
        e.step(now, SystemTime::now());
        assert_eq!(e.pending(), 0);
        assert_eq!(sample(&e, SERVICE_PENDING), 0.0);
        assert_eq!(e.reconciler().dataplane().table().len(), total);
        assert!(!e.is_adopted());
    }
}
