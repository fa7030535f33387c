//! Reconciler unit tests over the in-memory dataplane.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipvs::model::{DestinationKey, Scheduler, Service};
use ipvs::table::{Errno, Fault, OperationKind};

use super::*;
use crate::dataplane::{AddressOp, Connections, MemoryDataplane};
use crate::mapping::desired_table;
use crate::model::ServiceRef;
use crate::testing;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn vs(addr: &str, protocol: Protocol, port: u16, backends: &[&str]) -> VirtualServer {
    let backends: Vec<(&str, u16)> = backends.iter().map(|b| (*b, 8080)).collect();
    testing::virtual_server(addr, protocol, port, &backends)
}

fn service(name: &str, vss: Vec<VirtualServer>) -> ServiceDesired {
    testing::desired(name, vss)
}

fn web(backends: &[&str]) -> ServiceDesired {
    service("web", vec![vs("10.96.0.10", Protocol::Tcp, 80, backends)])
}

fn web_key() -> ServiceKey {
    ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 10), 80)
}

fn dkey(addr: &str) -> DestinationKey {
    DestinationKey {
        addr: ip(addr),
        port: 8080,
    }
}

fn node() -> MemoryDataplane {
    MemoryDataplane::new()
        .with_node_addresses([ip("192.168.1.10"), ip("127.0.0.1")])
        .with_table(&testing::foreign_table())
        .unwrap()
}

fn started(
    dp: MemoryDataplane,
    services: Vec<ServiceDesired>,
    now: Instant,
) -> Reconciler<MemoryDataplane> {
    started_with(dp, services, now, ReconcilerConfig::default())
}

/// The drain deadline of the tests that set one.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

fn with_drain_timeout() -> ReconcilerConfig {
    ReconcilerConfig {
        drain_timeout: Some(DRAIN_TIMEOUT),
        ..ReconcilerConfig::default()
    }
}

fn started_with(
    dp: MemoryDataplane,
    services: Vec<ServiceDesired>,
    now: Instant,
    config: ReconcilerConfig,
) -> Reconciler<MemoryDataplane> {
    let mut r = Reconciler::new(dp, config);
    let mut desired = DesiredState::new();
    for s in services {
        desired.update(s);
    }
    r.set_desired(desired);
    let report = r.verify(now).unwrap();
    assert!(report.is_ok(), "{report:?}");
    r
}

/// The kernel's table without the foreign entries.
fn owned(r: &Reconciler<MemoryDataplane>) -> Table {
    let foreign = testing::foreign_table();
    r.dataplane()
        .table()
        .filtered(|s| !foreign.contains_service(&s.key()))
}

#[test]
fn programs_services_and_vips_and_keeps_foreign_entries() {
    let now = Instant::now();
    let r = started(node(), vec![web(&["10.244.0.1", "10.244.0.2"])], now);
    assert_eq!(owned(&r), desired_table(r.desired()));
    assert_eq!(r.view(), &owned(&r));
    assert!(r.dataplane().dummy().unwrap().contains(&ip("10.96.0.10")));
    for s in testing::foreign_table().iter() {
        assert_eq!(r.dataplane().table().get(&s.key()), Some(s));
    }
}

#[test]
fn sync_before_adoption_is_deferred() {
    let now = Instant::now();
    let mut r = Reconciler::new(node(), ReconcilerConfig::default());
    let report = r.sync_service(web(&["10.244.0.1"]), now);
    assert!(report.deferred);
    assert!(r.dataplane().journal().is_empty());
    r.verify(now).unwrap();
    assert_eq!(owned(&r), desired_table(r.desired()));
}

#[test]
fn incremental_sync_touches_only_that_service() {
    let now = Instant::now();
    let api = service(
        "api",
        vec![vs("10.96.0.20", Protocol::Tcp, 443, &["10.244.1.1"])],
    );
    let mut r = started(node(), vec![web(&["10.244.0.1"]), api], now);
    r.dataplane_mut().clear_logs();
    let address_calls = r.dataplane().address_calls();
    let report = r.sync_service(web(&["10.244.0.1", "10.244.0.2"]), now);
    assert_eq!(report.operations, 1);
    let journal = r.dataplane().journal();
    assert_eq!(journal.len(), 1);
    assert!(OperationKind::AddDestination.matches(&journal[0].operation));
    assert!(r.dataplane().address_log().is_empty());
    // Its VIP is bound already: no exchange about addresses at all.
    assert_eq!(r.dataplane().address_calls(), address_calls);
}

#[test]
fn restart_adopts_with_zero_operations() {
    let now = Instant::now();
    let services = || {
        vec![
            web(&["10.244.0.1", "10.244.0.2"]),
            service(
                "dns",
                vec![
                    vs("10.96.0.53", Protocol::Udp, 53, &["10.244.2.1"]),
                    vs("10.96.0.53", Protocol::Tcp, 53, &["10.244.2.1"]),
                ],
            ),
        ]
    };
    let config = ReconcilerConfig {
        sysctls: ReconcilerConfig::recommended_sysctls(None),
        ..ReconcilerConfig::default()
    };
    let mut r = Reconciler::new(node(), config.clone());
    for s in services() {
        r.sync_service(s, now);
    }
    r.verify(now).unwrap();
    let mut dp = r.into_dataplane();
    dp.clear_logs();

    let mut again = Reconciler::new(dp, config);
    for s in services() {
        assert!(again.sync_service(s, now).deferred);
    }
    let report = again.verify(now).unwrap();
    assert!(report.is_quiet(), "{report:?}");
    assert!(again.dataplane().journal().is_empty());
    assert!(again.dataplane().address_log().is_empty());
    assert!(again.dataplane().sysctl_writes().is_empty());
}

#[test]
fn repairs_drift_and_removes_stale_owned_entries() {
    let now = Instant::now();
    let mut r = started(node(), vec![web(&["10.244.0.1", "10.244.0.2"])], now);
    r.dataplane_mut()
        .tamper(|t| {
            let mut d = *t.destination(&web_key(), &dkey("10.244.0.1")).unwrap();
            d.weight = Weight::new(7).unwrap();
            t.insert_destination(&web_key(), d).unwrap();
            // A stale entry on our VIP, and a stale NodePort: ours by the ownership rule.
            t.insert_service(Service::new(
                ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 10), 8080),
                Scheduler::RoundRobin,
            ));
            t.insert_service(Service::new(
                ServiceKey::tcp(Ipv4Addr::new(192, 168, 1, 10), 30080),
                Scheduler::RoundRobin,
            ));
        })
        .unwrap();
    r.dataplane_mut().tamper_dummy(|d| {
        d.insert(ip("10.96.0.99"));
    });
    let report = r.verify(now).unwrap();
    assert_eq!(report.operations, 3, "{report:?}");
    assert_eq!(owned(&r), desired_table(r.desired()));
    assert!(!r.dataplane().dummy().unwrap().contains(&ip("10.96.0.99")));
    // The edited weight and the two stale entries.
    assert_eq!(r.metrics().drift_detected, 3);

    // A deleted virtual server comes back.
    r.dataplane_mut()
        .tamper(|t| {
            t.remove_service(&web_key());
        })
        .unwrap();
    r.verify(now).unwrap();
    assert_eq!(owned(&r), desired_table(r.desired()));
    assert!(r.verify(now).unwrap().is_quiet());
}

#[test]
fn cleanup_removes_only_what_is_ours() {
    let now = Instant::now();
    let mut r = started(node(), vec![web(&["10.244.0.1"])], now);
    let report = r.cleanup(Instant::now()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.interface_deleted);
    assert_eq!(r.dataplane().table(), testing::foreign_table());
    // The addresses, then the interface itself (kube-proxy's cleanup removes kube-ipvs0 too).
    assert!(r.dataplane().dummy().is_none());
    assert_eq!(
        r.dataplane().address_log().last(),
        Some(&AddressOp::DeleteInterface)
    );
    assert!(r.view().is_empty());

    // Nothing of ours is left: a second cleanup changes nothing and creates nothing.
    r.dataplane_mut().clear_logs();
    let report = r.cleanup(Instant::now()).unwrap();
    assert!(report.is_quiet() && !report.interface_deleted, "{report:?}");
    assert!(r.dataplane().address_log().is_empty());
    assert!(r.dataplane().dummy().is_none());
}

#[test]
fn excluded_cidrs_keep_foreign_entries_on_managed_addresses() {
    let now = Instant::now();
    let config = ReconcilerConfig {
        exclude_cidrs: vec!["10.96.0.10/32".parse().unwrap()],
        ..ReconcilerConfig::default()
    };
    let mut r = started_with(node(), vec![web(&["10.244.0.1"])], now, config.clone());
    // keepalived's entry on the Service's VIP, another port: excluded, so not ours.
    let keepalived = ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 10), 8443);
    r.dataplane_mut()
        .tamper(|t| {
            t.insert_service(Service::new(keepalived, Scheduler::RoundRobin));
        })
        .unwrap();
    assert!(r.verify(now).unwrap().is_quiet());
    assert!(r.dataplane().table().contains_service(&keepalived));
    // A restart adopts without touching it, and cleanup leaves it.
    let mut again = started_with(r.into_dataplane(), vec![web(&["10.244.0.1"])], now, config);
    assert!(again.dataplane().table().contains_service(&keepalived));
    assert_eq!(again.metrics().unrequested_deletions, 0);
    let report = again.cleanup(Instant::now()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(again.dataplane().table().contains_service(&keepalived));
    assert!(!again.dataplane().table().contains_service(&web_key()));
}

#[test]
fn cleanup_keeps_a_vip_until_its_virtual_server_is_gone() {
    let now = Instant::now();
    let mut r = started(node(), vec![web(&["10.244.0.1"])], now);
    r.dataplane_mut()
        .inject(Fault::new(Errno::ENOMEM).on(OperationKind::DeleteService));
    let report = r.cleanup(Instant::now()).unwrap();
    assert_eq!(report.failed, 1);
    assert!(!report.interface_deleted);
    // Unbinding the VIP now would leave the virtual server on an address that no longer
    // makes it ours: both stay, and the view holds exactly what is left.
    assert!(r.dataplane().table().contains_service(&web_key()));
    assert!(r.dataplane().dummy().unwrap().contains(&ip("10.96.0.10")));
    assert_eq!(r.view(), &owned(&r));

    // A second cleanup recognises it as ours and finishes.
    let report = r.cleanup(Instant::now()).unwrap();
    assert!(report.is_ok() && report.interface_deleted, "{report:?}");
    assert_eq!(r.dataplane().table(), testing::foreign_table());
    assert!(r.dataplane().dummy().is_none());
    assert!(r.view().is_empty());
}

#[test]
fn virtual_server_waits_for_its_vip() {
    let t0 = Instant::now();
    let vip = ip("10.96.0.10");
    let mut r = started(node(), vec![], t0);
    r.dataplane_mut().clear_logs();
    r.dataplane_mut().fail_address_changes(2);
    let report = r.sync_service(web(&["10.244.0.1"]), t0);
    // Reported, and not created: a virtual server off the dummy interface would not be
    // recognised as ours after a restart.
    assert!(
        report
            .errors
            .iter()
            .any(|e| matches!(
                e,
                SyncError::VipNotBound { service: Some(s), .. } if *s == ServiceRef::new("default", "web")
            ) && e.to_string().contains("not created")
                && e.to_string().contains("default/web")),
        "{report:?}"
    );
    assert!(
        r.dataplane().journal().is_empty(),
        "created without its VIP"
    );
    let web_vs = from_service_key(&web_key()).unwrap();
    assert_eq!(r.vips().blocked().collect::<Vec<_>>(), [web_vs]);
    assert_eq!(
        r.pending_retries(),
        1,
        "retried with the VIP, not on its own"
    );
    assert_eq!(r.metrics().blocked_on_vip, 1);

    // A second port on the same VIP waits too (the VIP is already wanted: no VIP change).
    let two = service(
        "web",
        vec![
            vs("10.96.0.10", Protocol::Tcp, 80, &["10.244.0.1"]),
            vs("10.96.0.10", Protocol::Tcp, 443, &["10.244.0.1"]),
        ],
    );
    assert!(!r.sync_service(two, t0).is_ok());
    assert!(r.dataplane().journal().is_empty());
    assert_eq!(r.vips().blocked().count(), 2);

    // The retry fails again (backoff doubles), then binds the VIP and creates both.
    let t1 = r.next_wakeup().unwrap();
    assert_eq!(t1, t0 + Duration::from_secs(1));
    assert!(!r.poll(t1).is_ok());
    assert!(r.dataplane().journal().is_empty());
    let t2 = r.next_wakeup().unwrap();
    assert_eq!(t2, t1 + Duration::from_secs(2));
    let report = r.poll(t2);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(r.dataplane().address_log(), [AddressOp::Add(vip)]);
    assert_eq!(owned(&r), desired_table(r.desired()));
    assert_eq!(r.view(), &owned(&r));
    assert_eq!(r.vips().blocked().count(), 0);
    assert_eq!(r.next_wakeup(), None);
}

#[test]
fn full_pass_does_not_create_a_virtual_server_without_its_vip() {
    let t0 = Instant::now();
    let mut r = Reconciler::new(node(), ReconcilerConfig::default());
    r.sync_service(web(&["10.244.0.1"]), t0);
    r.dataplane_mut().fail_address_changes(1);
    let report = r.verify(t0).unwrap();
    assert!(!report.is_ok());
    assert!(!r.dataplane().table().contains_service(&web_key()));
    assert_eq!(r.view(), &owned(&r));
    let t1 = r.next_wakeup().unwrap();
    assert!(r.poll(t1).is_ok());
    assert_eq!(owned(&r), desired_table(r.desired()));
    assert!(r.verify(t1).unwrap().is_quiet());
}

#[test]
fn drains_are_counted_once_and_only_when_they_happen() {
    let t0 = Instant::now();
    let mut r = started(node(), vec![web(&["10.244.0.1", "10.244.0.2"])], t0);
    let busy = Connections {
        active: 1,
        inactive: 0,
    };
    r.dataplane_mut()
        .set_connections(web_key(), dkey("10.244.0.2"), busy);
    // Quiescing fails: no drain has started.
    r.dataplane_mut()
        .inject(Fault::new(Errno::ENOMEM).on(OperationKind::EditDestination));
    r.sync_service(web(&["10.244.0.1"]), t0);
    assert_eq!(r.metrics().drains_started, 0);
    assert_eq!(r.draining().count(), 0);
    // The retry quiesces it.
    let t1 = r.next_wakeup().unwrap();
    r.poll(t1);
    assert_eq!(r.metrics().drains_started, 1);
    assert_eq!(r.draining().count(), 1);
    // Idle, but the deletion fails once: completed once, when it is really deleted.
    r.dataplane_mut()
        .set_connections(web_key(), dkey("10.244.0.2"), Connections::NONE);
    r.dataplane_mut()
        .inject(Fault::new(Errno::ENOMEM).on(OperationKind::DeleteDestination));
    let t2 = r.next_wakeup().unwrap();
    r.poll(t2);
    assert_eq!(r.metrics().drains_completed, 0);
    while let Some(next) = r.next_wakeup() {
        r.poll(next);
    }
    assert_eq!(r.metrics().drains_completed, 1);
    assert_eq!(r.metrics().drains_started, 1);
    assert_eq!(owned(&r), desired_table(r.desired()));
}

#[test]
fn vip_already_on_the_node_is_not_bound() {
    let now = Instant::now();
    let on_node = service(
        "ext",
        vec![vs("192.168.1.10", Protocol::Tcp, 80, &["10.244.0.1"])],
    );
    let r = started(node(), vec![on_node], now);
    assert!(!r.dataplane().dummy().unwrap().contains(&ip("192.168.1.10")));
    assert!(
        r.dataplane()
            .table()
            .contains_service(&ServiceKey::tcp(Ipv4Addr::new(192, 168, 1, 10), 80))
    );
}

#[test]
fn removed_service_loses_its_vip_after_its_virtual_servers() {
    let now = Instant::now();
    let mut r = started(node(), vec![web(&["10.244.0.1"])], now);
    r.dataplane_mut().clear_logs();
    r.remove_service(&ServiceRef::new("default", "web"), now);
    assert!(!r.dataplane().table().contains_service(&web_key()));
    assert_eq!(
        r.dataplane().address_log(),
        [AddressOp::Delete(ip("10.96.0.10"))]
    );

    // If deleting the virtual server fails, the VIP stays until it is gone.
    let mut r = started(node(), vec![web(&["10.244.0.1"])], now);
    r.dataplane_mut()
        .inject(Fault::new(Errno::ENOMEM).on(OperationKind::DeleteService));
    let report = r.remove_service(&ServiceRef::new("default", "web"), now);
    assert_eq!(report.failed, 1);
    assert!(r.dataplane().dummy().unwrap().contains(&ip("10.96.0.10")));
    // The retry deletes the virtual server, then (same poll, retries run in key order:
    // virtual servers before addresses) the VIP.
    let wake = r.next_wakeup().unwrap();
    r.poll(wake);
    assert!(!r.dataplane().table().contains_service(&web_key()));
    assert!(!r.dataplane().dummy().unwrap().contains(&ip("10.96.0.10")));
    assert_eq!(r.next_wakeup(), None);
}

#[test]
fn tcp_real_server_drains_then_goes_when_idle() {
    let t0 = Instant::now();
    let mut r = started(node(), vec![web(&["10.244.0.1", "10.244.0.2"])], t0);
    let busy = Connections {
        active: 1,
        inactive: 2,
    };
    r.dataplane_mut()
        .set_connections(web_key(), dkey("10.244.0.2"), busy);
    r.dataplane_mut().clear_logs();
    r.sync_service(web(&["10.244.0.1"]), t0);
    // Quiesced by an edit, not deleted.
    let journal = r.dataplane().journal();
    assert_eq!(journal.len(), 1);
    assert!(OperationKind::EditDestination.matches(&journal[0].operation));
    let d = r.dataplane().table();
    let d = d.destination(&web_key(), &dkey("10.244.0.2")).unwrap();
    assert_eq!(d.weight, Weight::QUIESCED);
    assert_eq!(r.draining().count(), 1);

    // Still busy at the next check: kept.
    let t1 = r.next_wakeup().unwrap();
    assert_eq!(t1, t0 + DEFAULT_DRAIN_CHECK_INTERVAL);
    assert!(r.poll(t1).is_quiet());
    // Idle: deleted at the next check.
    r.dataplane_mut()
        .set_connections(web_key(), dkey("10.244.0.2"), Connections::NONE);
    let t2 = r.next_wakeup().unwrap();
    r.poll(t2);
    assert!(
        r.dataplane()
            .table()
            .destination(&web_key(), &dkey("10.244.0.2"))
            .is_none()
    );
    assert_eq!(r.draining().count(), 0);
    assert_eq!(r.metrics().drains_completed, 1);
    assert_eq!(r.next_wakeup(), None);
}

#[test]
fn drain_ends_at_the_deadline_and_idle_servers_go_at_once() {
    let t0 = Instant::now();
    let mut r = started_with(
        node(),
        vec![web(&["10.244.0.1", "10.244.0.2", "10.244.0.3"])],
        t0,
        with_drain_timeout(),
    );
    r.dataplane_mut().set_connections(
        web_key(),
        dkey("10.244.0.2"),
        Connections {
            active: 5,
            inactive: 0,
        },
    );
    r.sync_service(web(&["10.244.0.1"]), t0);
    // .3 had no connection: deleted at once; .2 drains.
    let table = r.dataplane().table();
    assert!(table.destination(&web_key(), &dkey("10.244.0.3")).is_none());
    assert!(table.destination(&web_key(), &dkey("10.244.0.2")).is_some());
    let mut now = t0;
    while let Some(next) = r.next_wakeup() {
        assert!(next <= t0 + DRAIN_TIMEOUT);
        now = next;
        r.poll(now);
    }
    assert_eq!(now, t0 + DRAIN_TIMEOUT);
    assert!(
        r.dataplane()
            .table()
            .destination(&web_key(), &dkey("10.244.0.2"))
            .is_none()
    );
    assert_eq!(r.metrics().drains_expired, 1);
}

#[test]
fn by_default_a_busy_drain_is_never_cut() {
    assert_eq!(DEFAULT_DRAIN_TIMEOUT, None);
    let t0 = Instant::now();
    let mut r = started(node(), vec![web(&["10.244.0.1", "10.244.0.2"])], t0);
    let busy = Connections {
        active: 1,
        inactive: 0,
    };
    r.dataplane_mut()
        .set_connections(web_key(), dkey("10.244.0.2"), busy);
    r.sync_service(web(&["10.244.0.1"]), t0);
    // A day of checks: still quiesced, never deleted.
    let day = t0 + Duration::from_secs(24 * 3600);
    let mut now = t0;
    while now < day {
        now = r.next_wakeup().expect("a drain check is scheduled");
        assert!(now <= t0 + Duration::from_secs(24 * 3600) + DEFAULT_DRAIN_CHECK_INTERVAL);
        r.poll(now);
    }
    let table = r.dataplane().table();
    let d = table.destination(&web_key(), &dkey("10.244.0.2")).unwrap();
    assert_eq!(d.weight, Weight::QUIESCED);
    assert_eq!(r.metrics().drains_expired, 0);
    // Its last connection ends (or IPVS times it out): deleted at the next check.
    r.dataplane_mut()
        .set_connections(web_key(), dkey("10.244.0.2"), Connections::NONE);
    let next = r.next_wakeup().unwrap();
    r.poll(next);
    assert!(
        r.dataplane()
            .table()
            .destination(&web_key(), &dkey("10.244.0.2"))
            .is_none()
    );
    assert_eq!(r.metrics().drains_completed, 1);
    assert_eq!(r.next_wakeup(), None);
}

#[test]
fn endpoint_coming_back_gets_its_weight_restored() {
    let t0 = Instant::now();
    let mut r = started(node(), vec![web(&["10.244.0.1", "10.244.0.2"])], t0);
    r.dataplane_mut().set_connections(
        web_key(),
        dkey("10.244.0.2"),
        Connections {
            active: 1,
            inactive: 0,
        },
    );
    r.sync_service(web(&["10.244.0.1"]), t0);
    r.dataplane_mut().clear_logs();
    r.sync_service(
        web(&["10.244.0.1", "10.244.0.2"]),
        t0 + Duration::from_secs(1),
    );
    let journal = r.dataplane().journal();
    assert_eq!(journal.len(), 1);
    assert!(OperationKind::EditDestination.matches(&journal[0].operation));
    assert_eq!(owned(&r), desired_table(r.desired()));
    assert_eq!(r.draining().count(), 0);
    assert_eq!(r.next_wakeup(), None);
}

#[test]
fn udp_real_servers_go_at_once() {
    let t0 = Instant::now();
    let dns = |b: &[&str]| service("dns", vec![vs("10.96.0.53", Protocol::Udp, 53, b)]);
    let key = ServiceKey::udp(Ipv4Addr::new(10, 96, 0, 53), 53);
    let mut r = started(node(), vec![dns(&["10.244.0.1", "10.244.0.2"])], t0);
    r.dataplane_mut().set_connections(
        key,
        dkey("10.244.0.2"),
        Connections {
            active: 0,
            inactive: 9,
        },
    );
    r.sync_service(dns(&["10.244.0.1"]), t0);
    assert!(
        r.dataplane()
            .table()
            .destination(&key, &dkey("10.244.0.2"))
            .is_none()
    );
    assert_eq!(r.draining().count(), 0);
}

#[test]
fn restart_recognises_draining_real_servers() {
    let t0 = Instant::now();
    let mut r = started_with(
        node(),
        vec![web(&["10.244.0.1", "10.244.0.2"])],
        t0,
        with_drain_timeout(),
    );
    r.dataplane_mut().set_connections(
        web_key(),
        dkey("10.244.0.2"),
        Connections {
            active: 1,
            inactive: 0,
        },
    );
    r.sync_service(web(&["10.244.0.1"]), t0);
    let mut dp = r.into_dataplane();
    dp.clear_logs();

    // A new process: same inputs, no memory of the drain.
    let t1 = t0 + Duration::from_secs(100);
    let mut again = started_with(dp, vec![web(&["10.244.0.1"])], t1, with_drain_timeout());
    assert!(again.dataplane().journal().is_empty());
    assert_eq!(again.draining().count(), 1);
    // It finishes the drain like any other: here at the deadline counted from the restart.
    while let Some(next) = again.next_wakeup() {
        again.poll(next);
    }
    assert!(
        again
            .dataplane()
            .table()
            .destination(&web_key(), &dkey("10.244.0.2"))
            .is_none()
    );
    assert_eq!(owned(&again), desired_table(again.desired()));
}

#[test]
fn a_full_pass_sends_many_virtual_servers_per_batch_with_results_each() {
    // 2,000 virtual servers of 3 real servers: 8,000 operations in two batches (the first
    // closed once it holds MAX_BATCH_OPERATIONS), not one batch per virtual server.
    assert_eq!(MAX_BATCH_OPERATIONS, 4096);
    let services: Vec<ServiceDesired> = (0..2000u32)
        .map(|i| {
            let [_, _, hi, lo] = (0x0a60_0000 + i + 1).to_be_bytes();
            let addr = format!("10.96.{hi}.{lo}");
            service(
                &format!("s{i}"),
                vec![vs(
                    &addr,
                    Protocol::Tcp,
                    80,
                    &["10.244.0.1", "10.244.0.2", "10.244.0.3"],
                )],
            )
        })
        .collect();
    let broken = ServiceKey::tcp(Ipv4Addr::new(10, 96, 1, 245), 80);
    let mut dp = node();
    dp.inject(
        Fault::new(Errno::ENOMEM)
            .on(OperationKind::AddDestination)
            .when(move |op| matches!(op, Operation::AddDestination(s, _) if *s == broken)),
    );
    let t0 = Instant::now();
    let mut r = Reconciler::new(dp, ReconcilerConfig::default());
    let mut desired = DesiredState::new();
    for s in services {
        desired.update(s);
    }
    r.set_desired(desired);
    let report = r.verify(t0).unwrap();
    assert_eq!(report.operations, 8000);
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(r.dataplane().apply_calls(), 2);
    // Only the virtual server whose operation failed is retried, and the view follows each
    // result.
    assert_eq!(r.view(), &owned(&r));
    let due = r.next_wakeup().expect("a retry is scheduled");
    let report = r.poll(due);
    assert_eq!(report.operations, 1, "{report:?}");
    assert_eq!(owned(&r), desired_table(r.desired()));
}

#[test]
fn failed_operations_are_retried_with_backoff_and_never_believed() {
    let t0 = Instant::now();
    let mut r = started(node(), vec![], t0);
    r.dataplane_mut().inject(
        Fault::new(Errno::ENOMEM)
            .on(OperationKind::AddDestination)
            .times(3),
    );
    let report = r.sync_service(web(&["10.244.0.1"]), t0);
    assert_eq!(report.failed, 1);
    // The view holds the service (its addition succeeded) but not the destination.
    assert_eq!(r.view(), &owned(&r));
    assert!(
        r.view()
            .destination(&web_key(), &dkey("10.244.0.1"))
            .is_none()
    );
    let mut delays = Vec::new();
    let mut now = t0;
    while let Some(next) = r.next_wakeup() {
        delays.push(next - now);
        now = next;
        r.poll(now);
        assert_eq!(r.view(), &owned(&r));
    }
    assert_eq!(
        delays,
        [1, 2, 4].map(Duration::from_secs),
        "exponential backoff"
    );
    assert_eq!(owned(&r), desired_table(r.desired()));
    assert_eq!(r.metrics().operations_failed, 3);
    assert_eq!(r.metrics().retries, 3);
}

#[test]
fn a_behind_the_back_change_that_breaks_an_operation_is_reread() {
    let t0 = Instant::now();
    let mut r = started(node(), vec![web(&["10.244.0.1"])], t0);
    // Someone deletes the service; our view still has it, so the edit fails with ESRCH.
    r.dataplane_mut()
        .tamper(|t| {
            t.remove_service(&web_key());
        })
        .unwrap();
    let report = r.sync_service(web(&["10.244.0.1", "10.244.0.2"]), t0);
    assert_eq!(report.failed, 1);
    let next = r.next_wakeup().unwrap();
    r.poll(next);
    assert_eq!(owned(&r), desired_table(r.desired()));
    assert_eq!(r.view(), &owned(&r));
}

#[test]
fn failed_listing_schedules_a_full_pass() {
    let t0 = Instant::now();
    let mut r = Reconciler::new(node(), ReconcilerConfig::default());
    r.sync_service(web(&["10.244.0.1"]), t0);
    r.dataplane_mut().fail_listings(1);
    assert!(r.verify(t0).is_err());
    assert!(!r.is_adopted());
    let next = r.next_wakeup().unwrap();
    assert!(r.poll(next).is_ok());
    assert!(r.is_adopted());
    assert_eq!(owned(&r), desired_table(r.desired()));
}

#[test]
fn sysctls_are_held() {
    let t0 = Instant::now();
    let config = ReconcilerConfig {
        sysctls: ReconcilerConfig::recommended_sysctls(Some("5.4.0")),
        ..ReconcilerConfig::default()
    };
    let dp = node().with_sysctls([("net.ipv4.vs.conntrack", "0"), ("net.ipv4.ip_forward", "1")]);
    let mut r = Reconciler::new(dp, config);
    let report = r.verify(t0).unwrap();
    assert_eq!(report.sysctl_writes, 4);
    assert_eq!(
        r.dataplane().sysctl_value("net.ipv4.vs.conntrack"),
        Some("1")
    );
    assert_eq!(
        r.dataplane().sysctl_value("net.ipv4.vs.conn_reuse_mode"),
        Some("0")
    );
    assert_eq!(r.verify(t0).unwrap().sysctl_writes, 0);
}

/// Events captured on the current thread while [`capture_events`] runs.
type Events = Vec<(tracing::Level, String)>;

thread_local! {
    static SINK: std::cell::RefCell<Option<Events>> = const { std::cell::RefCell::new(None) };
}

/// A global `tracing` subscriber, always interested, that keeps each event as its level and
/// `name=value` fields in the emitting thread's sink (if one is open). Global rather than
/// scoped: with a scoped subscriber, callsites first hit by other tests' threads (running in
/// parallel) can keep a cached "never" interest and this test would miss events.
struct Capture;

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        SINK.with(|sink| {
            if let Some(events) = sink.borrow_mut().as_mut() {
                let mut fields = Fields(String::new());
                event.record(&mut fields);
                events.push((*event.metadata().level(), fields.0));
            }
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Runs `f` and returns the events it emitted on this thread.
fn capture_events(f: impl FnOnce()) -> Events {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Capture).expect("no other global subscriber");
    });
    SINK.with(|sink| *sink.borrow_mut() = Some(Vec::new()));
    f();
    SINK.with(|sink| sink.borrow_mut().take())
        .unwrap_or_default()
}

#[test]
fn logs_failures_drains_drift_and_adoption_with_the_service() {
    use tracing::Level;
    let events = capture_events(|| {
        let t0 = Instant::now();
        let mut r = started(node(), vec![web(&["10.244.0.1", "10.244.0.2"])], t0);
        r.dataplane_mut().set_connections(
            web_key(),
            dkey("10.244.0.2"),
            Connections {
                active: 1,
                inactive: 0,
            },
        );
        r.dataplane_mut()
            .inject(Fault::new(Errno::ENOMEM).on(OperationKind::AddDestination));
        // .2 drains, .3 cannot be added.
        r.sync_service(web(&["10.244.0.1", "10.244.0.3"]), t0);
        // A VIP that cannot be bound.
        r.dataplane_mut().fail_address_changes(1);
        r.sync_service(
            service(
                "api",
                vec![vs("10.96.0.20", Protocol::Tcp, 443, &["10.244.1.1"])],
            ),
            t0,
        );
        // Drift, then everything runs to the end of the drain.
        r.dataplane_mut()
            .tamper(|t| {
                t.remove_service(&web_key());
            })
            .unwrap();
        r.verify(t0).unwrap();
        while let Some(next) = r.next_wakeup() {
            r.poll(next);
        }
    });
    let has = |level, parts: &[&str]| {
        assert!(
            events
                .iter()
                .any(|(l, e)| *l == level && parts.iter().all(|p| e.contains(p))),
            "no {level} event with {parts:?} in {events:#?}"
        );
    };
    has(
        Level::INFO,
        &[
            "adopted the node",
            "owned_virtual_servers=0",
            "operations=3",
        ],
    );
    has(
        Level::WARN,
        &[
            "IPVS operation failed",
            "service=default/web",
            "errno=12",
            "10.244.0.3",
        ],
    );
    has(
        Level::WARN,
        &[
            "address change failed",
            "vip=10.96.0.20",
            "service=default/api",
            "os error",
        ],
    );
    has(
        Level::WARN,
        &[
            "not created",
            "virtual_server=TCP 10.96.0.20:443",
            "service=default/api",
        ],
    );
    has(
        Level::INFO,
        &[
            "drain started",
            "real_server=10.244.0.2:8080",
            "service=default/web",
        ],
    );
    has(Level::INFO, &["drift repaired", "service=default/web"]);
    has(
        Level::DEBUG,
        &["IPVS batch applied", "add_destination=1", "failed=1"],
    );
    has(Level::TRACE, &["IPVS operation", "10.244.0.3"]);
    // The drain ended when the service was re-created by the drift repair: no drain event
    // is left open, and nothing is logged at info per real server of a batch.
    let infos: Vec<&String> = events
        .iter()
        .filter(|(l, _)| *l == Level::INFO)
        .map(|(_, e)| e)
        .filter(|e| !e.contains("drain") && !e.contains("drift") && !e.contains("adopted"))
        .collect();
    assert!(infos.is_empty(), "{infos:#?}");
}

#[test]
fn deleting_what_no_service_of_this_run_asked_for_is_a_warning() {
    use tracing::Level;
    let mut unrequested = 0;
    let events = capture_events(|| {
        let now = Instant::now();
        // An earlier run programmed `web` and `gone`; `gone` was deleted while no controller
        // ran, and someone added entries on addresses the controller manages.
        let gone = || {
            service(
                "gone",
                vec![vs("10.96.0.30", Protocol::Tcp, 80, &["10.244.0.9"])],
            )
        };
        let earlier = started(node(), vec![web(&["10.244.0.1"]), gone()], now);
        let mut dp = earlier.into_dataplane();
        dp.tamper(|t| {
            t.insert_service(Service::new(
                ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 10), 8080),
                Scheduler::RoundRobin,
            ));
            t.insert_service(Service::new(
                ServiceKey::tcp(Ipv4Addr::new(192, 168, 1, 10), 30080),
                Scheduler::RoundRobin,
            ));
        })
        .unwrap();
        let mut r = started(dp, vec![web(&["10.244.0.1"])], now);
        assert_eq!(r.metrics().unrequested_deletions, 3);
        // What this run created, or a Service of this run asked for (the adopted `web`), is
        // deleted without a warning.
        r.sync_service(
            service(
                "api",
                vec![vs("10.96.0.20", Protocol::Tcp, 443, &["10.244.1.1"])],
            ),
            now,
        );
        r.remove_service(&ServiceRef::new("default", "api"), now);
        r.remove_service(&ServiceRef::new("default", "web"), now);
        assert_eq!(owned(&r), Table::new());
        unrequested = r.metrics().unrequested_deletions;
    });
    assert_eq!(unrequested, 3);
    let warnings: Vec<&String> = events
        .iter()
        .filter(|(l, e)| *l == Level::WARN && e.contains("did not create"))
        .map(|(_, e)| e)
        .collect();
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    let has = |parts: &[&str]| {
        assert!(
            warnings.iter().any(|e| parts.iter().all(|p| e.contains(p))),
            "no warning with {parts:?} in {warnings:#?}"
        );
    };
    has(&["virtual_server=TCP 10.96.0.10:8080", "dummy interface"]);
    has(&["virtual_server=TCP 10.96.0.30:80", "dummy interface"]);
    has(&["virtual_server=TCP 192.168.1.10:30080", "NodePort range"]);
}

/// `count` Services, each with one TCP virtual server of the given real servers.
fn many(count: u32, backends: &[&str]) -> Vec<ServiceDesired> {
    (0..count)
        .map(|i| {
            let [_, _, hi, lo] = (0x0a60_0000 + i + 1).to_be_bytes();
            let addr = format!("10.96.{hi}.{lo}");
            service(
                &format!("s{i}"),
                vec![vs(&addr, Protocol::Tcp, 80, backends)],
            )
        })
        .collect()
}

#[test]
fn a_burst_across_services_is_one_read_and_one_batch() {
    let t0 = Instant::now();
    let before = many(50, &["10.244.0.1", "10.244.0.2"]);
    let after = many(50, &["10.244.0.1"]);
    let mut together = started(node(), before.clone(), t0);
    let mut alone = started(node(), before, t0);
    // Half of the leaving real servers still have connections: they drain.
    for s in after.iter().step_by(2) {
        let key = to_service_key(s.virtual_servers.keys().next().unwrap());
        let busy = Connections {
            active: 1,
            inactive: 0,
        };
        together
            .dataplane_mut()
            .set_connections(key, dkey("10.244.0.2"), busy);
        alone
            .dataplane_mut()
            .set_connections(key, dkey("10.244.0.2"), busy);
    }
    let (reads, batches) = (
        together.dataplane().read_calls(),
        together.dataplane().apply_calls(),
    );
    let mut updates: Vec<ServiceUpdate> = after.iter().cloned().map(ServiceUpdate::Set).collect();
    // A removal in the same sync.
    updates.push(ServiceUpdate::Remove(ServiceRef::new("default", "s49")));
    let report = together.sync_services(updates, t0);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        together.dataplane().read_calls() - reads,
        1,
        "one read for all"
    );
    assert_eq!(
        together.dataplane().apply_calls() - batches,
        1,
        "one batch for all"
    );
    // 25 quiesced, 24 deleted, and the removed Service's virtual server.
    assert_eq!(report.operations, 50, "{report:?}");
    assert_eq!(together.draining().count(), 25);

    // The same as one sync per Service.
    for s in after {
        if s.service.name == "s49" {
            alone.remove_service(&s.service, t0);
        } else {
            alone.sync_service(s, t0);
        }
    }
    assert_eq!(together.dataplane().table(), alone.dataplane().table());
    assert_eq!(together.dataplane().dummy(), alone.dataplane().dummy());
    assert_eq!(together.view(), alone.view());
    assert!(
        !together
            .dataplane()
            .dummy()
            .unwrap()
            .contains(&ip("10.96.0.50"))
    );
}

#[test]
fn a_sweep_verifies_in_slices_and_lets_syncs_run_between_them() {
    let t0 = Instant::now();
    let mut r = started(node(), many(10, &["10.244.0.1", "10.244.0.2"]), t0);
    let first = ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 1), 80);
    let last = ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 10), 80);
    r.dataplane_mut()
        .tamper(|t| {
            let mut d = *t.destination(&first, &dkey("10.244.0.1")).unwrap();
            d.weight = Weight::new(7).unwrap();
            t.insert_destination(&first, d).unwrap();
            t.remove_service(&last);
            // A stale entry on an owned VIP.
            t.insert_service(Service::new(
                ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 5), 8080),
                Scheduler::RoundRobin,
            ));
        })
        .unwrap();
    r.dataplane_mut().tamper_dummy(|d| {
        d.insert(ip("10.96.0.99"));
    });
    let reads = r.dataplane().read_calls();
    let report = r.start_sweep(t0, true).unwrap();
    assert!(report.is_quiet(), "{report:?}");
    assert_eq!(
        r.sweep_remaining(),
        Some(11),
        "10 desired and the stale one"
    );
    assert_eq!(
        r.dataplane().read_calls() - reads,
        1,
        "only the keys are listed"
    );

    // First slice: the edited weight is repaired.
    let report = r.sweep_step(t0, 4);
    assert_eq!(report.operations, 1, "{report:?}");
    assert_eq!(r.sweep_remaining(), Some(7));
    assert_eq!(r.metrics().drift_detected, 1);
    // An incremental sync between slices, on a virtual server the sweep has not reached.
    let mut changed = many(10, &["10.244.0.1", "10.244.0.3"]).swap_remove(7);
    changed.problems.clear();
    let report = r.sync_service(changed, t0);
    assert_eq!(report.operations, 2, "{report:?}");
    // The rest: the stale entry is deleted, the missing one comes back, the changed one is
    // seen as it is now (no drift), and the stale VIP goes at the end.
    let report = r.sweep_step(t0, 4);
    assert_eq!(report.operations, 1, "{report:?}");
    assert!(r.dataplane().dummy().unwrap().contains(&ip("10.96.0.99")));
    let report = r.sweep_step(t0, 4);
    assert_eq!(report.operations, 3, "{report:?}");
    assert_eq!(r.sweep_remaining(), None);
    assert!(!r.dataplane().dummy().unwrap().contains(&ip("10.96.0.99")));
    assert_eq!(r.metrics().drift_detected, 3);
    assert_eq!(owned(&r), desired_table(r.desired()));
    assert_eq!(r.view(), &owned(&r));
    let step = r.sweep_step(t0, 4);
    assert!(
        step.is_quiet() && step.failed == 0 && !step.deferred,
        "no sweep, nothing done: {step:?}"
    );

    // A sweep over a table that is right changes nothing.
    r.start_sweep(t0, true).unwrap();
    let report = r.sweep_step(t0, 100);
    assert!(report.is_quiet(), "{report:?}");
    assert_eq!(r.sweep_remaining(), None);
}

#[test]
fn a_sweep_slice_that_cannot_be_read_is_retried() {
    let t0 = Instant::now();
    let mut r = started(node(), many(4, &["10.244.0.1"]), t0);
    let key = ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 2), 80);
    r.dataplane_mut()
        .tamper(|t| {
            t.remove_service(&key);
        })
        .unwrap();
    r.start_sweep(t0, true).unwrap();
    r.dataplane_mut().fail_listings(1);
    let report = r.sweep_step(t0, 2);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert_eq!(r.pending_retries(), 2);
    // The sweep goes on with the next slice.
    assert!(r.sweep_step(t0, 2).is_ok());
    assert_eq!(r.sweep_remaining(), None);
    // The retry re-reads the two and repairs the missing one.
    let due = r.next_wakeup().unwrap();
    let report = r.poll(due);
    assert_eq!(report.operations, 2, "{report:?}");
    assert_eq!(owned(&r), desired_table(r.desired()));
}

#[test]
fn a_sweep_without_discovery_skips_only_unknown_leftovers() {
    let t0 = Instant::now();
    let mut r = started(node(), many(3, &["10.244.0.1"]), t0);
    let first = ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 1), 80);
    let stale = ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 2), 8080);
    r.dataplane_mut()
        .tamper(|t| {
            t.remove_service(&first);
            t.insert_service(Service::new(stale, Scheduler::RoundRobin));
        })
        .unwrap();
    let reads = r.dataplane().read_calls();
    r.start_sweep(t0, false).unwrap();
    assert_eq!(r.dataplane().read_calls(), reads, "no dump of the table");
    assert_eq!(r.sweep_remaining(), Some(3));
    let report = r.sweep_step(t0, 10);
    // The missing desired one is repaired; the unknown leftover waits for a discovery.
    assert_eq!(report.operations, 2, "{report:?}");
    assert!(r.dataplane().table().get(&stale).is_some());
    r.start_sweep(t0, true).unwrap();
    assert_eq!(r.sweep_remaining(), Some(4));
    assert_eq!(r.sweep_step(t0, 10).operations, 1);
    assert_eq!(owned(&r), desired_table(r.desired()));
}

#[test]
fn a_sweep_that_cannot_start_changes_nothing() {
    let t0 = Instant::now();
    let mut r = started(node(), many(3, &["10.244.0.1"]), t0);
    r.dataplane_mut().fail_listings(1);
    assert!(r.start_sweep(t0, true).is_err());
    assert_eq!(r.sweep_remaining(), None);
    assert_eq!(r.next_wakeup(), None, "the caller tries again");
}

#[test]
fn a_full_pass_reads_the_nftables_table_only_when_it_may_have_changed() {
    let now = Instant::now();
    let mut r = started(node(), vec![web(&["10.0.0.1"])], now);
    // The adoption's own commit moved the generation: the next pass reads, finds the table
    // right, and the passes after read nothing.
    r.verify(now).unwrap();
    let reads = r.dataplane().netfilter().reads();
    for _ in 0..3 {
        assert!(r.verify(now).unwrap().is_quiet());
    }
    assert_eq!(r.dataplane().netfilter().reads(), reads, "quiet passes");
    assert_eq!(r.metrics().netfilter_reads_skipped, 3);

    // An element deleted behind the controller's back: a commit, so the next pass reads the
    // table and puts it back.
    r.dataplane_mut().netfilter_mut().tamper(|t| {
        t.as_mut().expect("the table").elements.vips.clear();
    });
    let report = r.verify(now).unwrap();
    assert_eq!(report.netfilter_changes, 1);
    assert_eq!(r.dataplane().netfilter().reads(), reads + 1);
    assert_eq!(nft(&r).unwrap().vips, [ip("10.96.0.10")].into());
    r.verify(now).unwrap();
    let reads = r.dataplane().netfilter().reads();

    // The node's addresses change (no commit): the elements may depend on them, so the
    // pass reads.
    r.dataplane_mut()
        .set_node_addresses([ip("192.168.1.11"), ip("127.0.0.1")]);
    r.verify(now).unwrap();
    assert_eq!(r.dataplane().netfilter().reads(), reads + 1);
    r.verify(now).unwrap();
    assert_eq!(r.dataplane().netfilter().reads(), reads + 1, "quiet again");

    // The sliced full pass of a daemon skips the same way.
    r.start_sweep(now, false).unwrap();
    assert_eq!(r.dataplane().netfilter().reads(), reads + 1);
    assert_eq!(r.metrics().netfilter_reads_skipped, 5);
    while r.sweep_remaining().is_some() {
        r.sweep_step(now, 64);
    }

    // A change of the desired state that commits nothing (an endpoint replaced: no set
    // element) still makes the next pass read: what the table should hold may have changed
    // in ways no commit shows (a hairpin element left behind, a sync deferred).
    let transactions = r.dataplane().netfilter().transactions();
    r.sync_service(web(&["10.0.0.2"]), now);
    assert_eq!(r.dataplane().netfilter().transactions(), transactions);
    r.verify(now).unwrap();
    assert_eq!(r.dataplane().netfilter().reads(), reads + 2);
    r.verify(now).unwrap();
    assert_eq!(r.dataplane().netfilter().reads(), reads + 2, "quiet again");

    // A whole new desired state, set without a sync (a library user's resync): the next
    // pass reads and writes what it wants.
    let mut desired = DesiredState::new();
    desired.update(service(
        "dns",
        vec![vs("10.96.0.53", Protocol::Udp, 53, &["10.0.0.9"])],
    ));
    desired.update(web(&["10.0.0.2"]));
    r.set_desired(desired);
    r.verify(now).unwrap();
    assert_eq!(r.dataplane().netfilter().reads(), reads + 3);
    assert!(nft(&r).unwrap().vips.contains(&ip("10.96.0.53")));
}

/// What the simulated nftables table's sets hold.
fn nft(r: &Reconciler<MemoryDataplane>) -> Option<crate::netfilter::Elements> {
    r.dataplane().netfilter().elements().cloned()
}

fn nft_port(addr: &str, protocol: Protocol, port: u16) -> crate::netfilter::ServicePort {
    crate::netfilter::ServicePort {
        addr: ip(addr),
        protocol,
        port,
    }
}

#[test]
fn the_nftables_sets_follow_the_vips_and_their_ports_one_transaction_a_round() {
    let now = Instant::now();
    let dns = service(
        "dns",
        vec![
            vs("10.96.0.53", Protocol::Udp, 53, &["10.0.0.9"]),
            vs("10.96.0.53", Protocol::Tcp, 53, &["10.0.0.9"]),
        ],
    );
    let mut r = started(node(), vec![web(&["10.0.0.1"])], now);
    let sets = nft(&r).expect("the full pass created the table");
    assert_eq!(
        r.dataplane().netfilter().after_batches(),
        [0],
        "the adoption wrote the sets before creating any virtual server"
    );
    assert_eq!(sets.vips, [ip("10.96.0.10")].into());
    assert_eq!(
        sets.ports,
        [nft_port("10.96.0.10", Protocol::Tcp, 80)].into()
    );
    assert_eq!(r.dataplane().netfilter().transactions(), 1);

    // A Service with two ports: one transaction for its VIP and both ports (VIP ports and
    // ClusterIP ports), before its virtual servers are created (or their first connections
    // would be dropped).
    let batches = r.dataplane().apply_calls();
    let report = r.sync_service(dns, now);
    assert_eq!(report.netfilter_changes, 5);
    assert_eq!(r.dataplane().netfilter().transactions(), 2);
    assert_eq!(
        r.dataplane().netfilter().after_batches().last(),
        Some(&batches)
    );
    assert!(r.dataplane().apply_calls() > batches);
    // An endpoint change touches no set: no transaction.
    let report = r.sync_service(web(&["10.0.0.1", "10.0.0.2"]), now);
    assert_eq!(report.netfilter_changes, 0);
    assert_eq!(r.dataplane().netfilter().transactions(), 2);
    // A Service that goes takes its VIP and ports along.
    r.remove_service(&ServiceRef::new("default", "web"), now);
    let sets = nft(&r).unwrap();
    assert_eq!(sets.vips, [ip("10.96.0.53")].into());
    assert_eq!(
        sets.ports,
        [
            nft_port("10.96.0.53", Protocol::Tcp, 53),
            nft_port("10.96.0.53", Protocol::Udp, 53)
        ]
        .into()
    );
    assert_eq!(r.metrics().netfilter_transactions, 3);
    assert_eq!(r.metrics().netfilter_changes, 3 + 5 + 3);

    // A restart with the same inputs: no transaction, a quiet pass.
    let desired = r.desired().clone();
    let mut again = Reconciler::new(r.into_dataplane(), ReconcilerConfig::default());
    again.set_desired(desired);
    let report = again.verify(now).unwrap();
    assert!(report.is_quiet(), "{report:?}");
    assert_eq!(again.dataplane().netfilter().transactions(), 3);
}

#[test]
fn the_full_pass_repairs_the_nftables_table_and_a_failed_transaction_is_retried() {
    let now = Instant::now();
    let mut r = started(node(), vec![web(&["10.0.0.1"])], now);
    let wanted = nft(&r).unwrap();
    // An element deleted and one added behind our back; then the whole table.
    r.dataplane_mut().netfilter_mut().tamper(|t| {
        let sets = &mut t.as_mut().unwrap().elements;
        sets.vips.clear();
        sets.ports.insert(nft_port("10.96.0.99", Protocol::Tcp, 22));
    });
    let report = r.verify(now).unwrap();
    assert_eq!(report.netfilter_changes, 2);
    assert_eq!(nft(&r).unwrap(), wanted);
    r.dataplane_mut().netfilter_mut().tamper(|t| *t = None);
    r.verify(now).unwrap();
    assert_eq!(nft(&r).unwrap(), wanted);
    // A table that cannot be read whole is replaced in one transaction.
    r.dataplane_mut().netfilter_mut().break_table();
    let transactions = r.dataplane().netfilter().transactions();
    let report = r.verify(now).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(r.dataplane().netfilter().transactions(), transactions + 1);
    assert_eq!(nft(&r).unwrap(), wanted);

    // A transaction that fails: reported, and retried with the backoff by a full
    // netfilter pass.
    r.dataplane_mut().netfilter_mut().fail_transactions(1);
    let dns = service(
        "dns",
        vec![vs("10.96.0.53", Protocol::Udp, 53, &["10.0.0.9"])],
    );
    let report = r.sync_service(dns, now);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert_eq!(r.metrics().netfilter_failures, 1);
    assert!(!nft(&r).unwrap().vips.contains(&ip("10.96.0.53")));
    let due = r.next_wakeup().expect("a retry is scheduled");
    let report = r.poll(due);
    assert!(report.is_ok(), "{report:?}");
    assert!(nft(&r).unwrap().vips.contains(&ip("10.96.0.53")));
    assert_eq!(r.pending_retries(), 0);
}

#[test]
fn the_full_pass_rewrites_rules_that_are_not_the_configurations() {
    let now = Instant::now();
    let mut r = started(node(), vec![web(&["10.0.0.1"])], now);
    let transactions = r.dataplane().netfilter().transactions();
    // A chain flushed behind our back: its rules are written again, the sets kept.
    r.dataplane_mut().netfilter_mut().tamper(|t| {
        t.as_mut().unwrap().rules.remove("nat-postrouting");
    });
    let report = r.verify(now).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(r.dataplane().netfilter().transactions(), transactions + 1);
    let contents = r.dataplane_mut().netfilter_read().unwrap().unwrap();
    assert_eq!(
        contents.rules,
        crate::netfilter::rules::comments(&crate::netfilter::RuleConfig::default())
    );
    assert!(r.verify(now).unwrap().is_quiet());
    assert_eq!(r.dataplane().netfilter().transactions(), transactions + 1);

    // A restart with another masquerade bit rewrites the rules, and only them.
    let desired = r.desired().clone();
    let config = ReconcilerConfig {
        netfilter_rules: crate::netfilter::RuleConfig {
            masquerade_bit: 13,
            ..Default::default()
        },
        ..ReconcilerConfig::default()
    };
    let mut again = Reconciler::new(r.into_dataplane(), config.clone());
    again.set_desired(desired);
    let report = again.verify(now).unwrap();
    assert_eq!(report.netfilter_changes, 0, "no element changed");
    assert_eq!(
        again.dataplane().netfilter().transactions(),
        transactions + 2
    );
    let contents = again.dataplane_mut().netfilter_read().unwrap().unwrap();
    assert_eq!(
        contents.rules,
        crate::netfilter::rules::comments(&config.netfilter_rules)
    );
}

#[test]
fn local_endpoints_enter_the_hairpin_set_and_leave_it_at_the_full_pass() {
    let now = Instant::now();
    let mut r = started(node(), vec![web(&["10.0.0.1"])], now);
    assert!(nft(&r).unwrap().hairpin.is_empty(), "no endpoint here");
    let mut here = web(&["10.0.0.1", "10.0.0.2"]);
    for vs in here.virtual_servers.values_mut() {
        vs.real_servers[1].local = true;
    }
    let report = r.sync_service(here, now);
    assert_eq!(report.netfilter_changes, 1);
    assert_eq!(nft(&r).unwrap().hairpin, [ip("10.0.0.2")].into());
    // The endpoint goes: harmless until the full pass deletes it.
    r.sync_service(web(&["10.0.0.1"]), now);
    assert_eq!(nft(&r).unwrap().hairpin, [ip("10.0.0.2")].into());
    let report = r.verify(now).unwrap();
    assert_eq!(report.netfilter_changes, 1);
    assert!(nft(&r).unwrap().hairpin.is_empty());
}

#[test]
fn cleanup_deletes_the_nftables_table_and_netfilter_can_be_left_alone() {
    let now = Instant::now();
    let mut r = started(node(), vec![web(&["10.0.0.1"])], now);
    assert!(nft(&r).is_some());
    let report = r.cleanup(now).unwrap();
    assert_eq!(
        report.netfilter_changes, 3,
        "its three elements went with it"
    );
    assert!(nft(&r).is_none());

    let off = ReconcilerConfig {
        netfilter: false,
        ..ReconcilerConfig::default()
    };
    let mut r = started_with(node(), vec![web(&["10.0.0.1"])], now, off);
    r.sync_service(
        service(
            "dns",
            vec![vs("10.96.0.53", Protocol::Udp, 53, &["10.0.0.9"])],
        ),
        now,
    );
    assert!(nft(&r).is_none());
    assert_eq!(r.dataplane().netfilter().transactions(), 0);
}

fn udp_flow(client: &str, frontend: &str, backend: &str) -> crate::netfilter::conntrack::UdpFlow {
    crate::netfilter::conntrack::UdpFlow {
        client: client.parse().unwrap(),
        frontend: frontend.parse().unwrap(),
        backend: ip(backend),
    }
}

#[test]
fn udp_flows_to_an_endpoint_that_left_are_deleted_after_its_real_server() {
    let now = Instant::now();
    let dns = |backends: &[&str]| {
        service(
            "dns",
            vec![
                vs("10.96.0.53", Protocol::Udp, 53, backends),
                vs("10.96.0.53", Protocol::Tcp, 53, backends),
            ],
        )
    };
    let mut r = started(node(), vec![dns(&["10.0.0.1"])], now);
    let old = udp_flow("10.0.5.5:40000", "10.96.0.53:53", "10.0.0.1");
    // From before the Service had an endpoint: never translated.
    let untranslated = udp_flow("10.0.5.6:40000", "10.96.0.53:53", "10.96.0.53");
    let elsewhere = udp_flow("10.0.5.5:40001", "10.96.0.99:53", "10.0.0.1");
    for flow in [old, untranslated, elsewhere] {
        r.dataplane_mut().netfilter_mut().add_udp_flow(flow);
    }

    // The endpoint is replaced: its flows and the untranslated one go, in the same round
    // as the real server, after it; other frontends' flows stay.
    let report = r.sync_service(dns(&["10.0.0.2"]), now);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.udp_flows_deleted, 2);
    assert_eq!(r.dataplane().netfilter().udp_flows(), [elsewhere]);
    assert_eq!(r.metrics().udp_flows_deleted, 2);

    // A flow to the new endpoint stays; a failure is retried.
    let new = udp_flow("10.0.5.5:40000", "10.96.0.53:53", "10.0.0.2");
    r.dataplane_mut().netfilter_mut().add_udp_flow(new);
    r.dataplane_mut().netfilter_mut().add_udp_flow(old);
    r.dataplane_mut().netfilter_mut().fail_flow_deletions(1);
    let report = r.sync_service(dns(&["10.0.0.2", "10.0.0.3"]), now);
    assert!(!report.is_ok());
    assert_eq!(r.metrics().udp_flow_failures, 1);
    let due = r.next_wakeup().expect("a retry is scheduled");
    let report = r.poll(due);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.udp_flows_deleted, 1);
    assert_eq!(r.dataplane().netfilter().udp_flows(), [elsewhere, new]);

    // A Service that goes takes all its flows.
    r.remove_service(&ServiceRef::new("default", "dns"), now);
    assert_eq!(r.dataplane().netfilter().udp_flows(), [elsewhere]);
}

#[test]
fn the_adoption_deletes_the_stale_udp_flows_of_every_udp_virtual_server() {
    let now = Instant::now();
    let mut dp = node();
    dp.netfilter_mut()
        .add_udp_flow(udp_flow("10.0.5.5:40000", "10.96.0.53:53", "10.0.0.7"));
    let dns = service(
        "dns",
        vec![vs("10.96.0.53", Protocol::Udp, 53, &["10.0.0.1"])],
    );
    let r = started(dp, vec![dns], now);
    assert!(r.dataplane().netfilter().udp_flows().is_empty());
    assert_eq!(r.metrics().udp_flows_deleted, 1);
}

#[test]
fn the_udp_flows_of_a_virtual_server_whose_operations_failed_wait_for_its_retry() {
    let now = Instant::now();
    let dns =
        |backends: &[&str]| service("dns", vec![vs("10.96.0.53", Protocol::Udp, 53, backends)]);
    let mut r = started(node(), vec![dns(&["10.0.0.1"])], now);
    let old = udp_flow("10.0.5.5:40000", "10.96.0.53:53", "10.0.0.1");
    r.dataplane_mut().netfilter_mut().add_udp_flow(old);
    r.dataplane_mut()
        .inject(Fault::new(Errno::ENOMEM).on(OperationKind::DeleteDestination));
    let report = r.sync_service(dns(&["10.0.0.2"]), now);
    assert!(!report.is_ok());
    assert_eq!(
        r.dataplane().netfilter().udp_flows(),
        [old],
        "kept while the old real server may still be in the kernel"
    );
    while let Some(next) = r.next_wakeup() {
        r.poll(next);
    }
    assert!(r.dataplane().netfilter().udp_flows().is_empty());
    assert_eq!(owned(&r), desired_table(r.desired()));
}

/// Runs a full pass in slices to its end; its operations.
fn sweep(r: &mut Reconciler<MemoryDataplane>, now: Instant, discover: bool) -> usize {
    let mut operations = r.start_sweep(now, discover).unwrap().operations;
    while r.sweep_remaining().is_some() {
        operations += r.sweep_step(now, 64).operations;
    }
    operations
}

/// Edits the weight of the web Service's real server 10.244.0.1 in `t`.
fn reweigh(t: &mut Table, weight: u32) {
    let mut d = *t.destination(&web_key(), &dkey("10.244.0.1")).unwrap();
    d.weight = Weight::new(weight).unwrap();
    t.insert_destination(&web_key(), d).unwrap();
}

#[test]
fn a_quiet_node_s_passes_skip_reading_the_ipvs_table_and_any_write_makes_the_next_read_it() {
    let now = Instant::now();
    let config = ReconcilerConfig {
        max_skipped_reads: 4,
        ..ReconcilerConfig::default()
    };
    let dp = node().watching_writes();
    let mut r = started_with(dp, vec![web(&["10.244.0.1", "10.244.0.2"])], now, config);
    // The adoption read the table whole; the first sliced pass reads it again (a kernel
    // dataplane starts its watch then), and finds it right.
    assert_eq!(sweep(&mut r, now, true), 0);
    let reads = r.dataplane().read_calls();
    for _ in 0..4 {
        assert_eq!(sweep(&mut r, now, true), 0);
    }
    assert_eq!(
        r.dataplane().read_calls(),
        reads,
        "quiet passes read nothing"
    );
    assert_eq!(r.metrics().ipvs_reads_skipped, 4);

    // The fifth pass in a row reads whatever the watch says: a write no watch sees (the old
    // setsockopt interface) waits at most that long.
    r.dataplane_mut().tamper_unseen(|t| reweigh(t, 7)).unwrap();
    assert_eq!(
        sweep(&mut r, now, true),
        1,
        "repaired by the pass that must read"
    );
    assert!(r.dataplane().read_calls() > reads);
    assert_eq!(owned(&r), desired_table(r.desired()));
    assert_eq!(r.metrics().ipvs_reads_skipped, 4);

    // Another program's write the watch sees: the next pass reads and repairs it (its own
    // repair is not a write it needs to read back).
    assert_eq!(sweep(&mut r, now, true), 0);
    assert_eq!(r.metrics().ipvs_reads_skipped, 5);
    r.dataplane_mut().tamper(|t| reweigh(t, 3)).unwrap();
    assert_eq!(sweep(&mut r, now, true), 1);
    assert_eq!(owned(&r), desired_table(r.desired()));
    assert_eq!(sweep(&mut r, now, true), 0);
    let reads = r.dataplane().read_calls();
    assert_eq!(sweep(&mut r, now, true), 0);
    assert_eq!(r.dataplane().read_calls(), reads);

    // A sync that changed the table: the controller knows what it wrote, and a busy node's
    // passes skip the read as a quiet one's do.
    r.sync_service(web(&["10.244.0.2", "10.244.0.3"]), now);
    let reads = r.dataplane().read_calls();
    sweep(&mut r, now, true);
    assert_eq!(
        r.dataplane().read_calls(),
        reads,
        "its own writes are not read back"
    );
    assert_eq!(owned(&r), desired_table(r.desired()));

    // A new desired state set without a sync writes nothing: the next pass still reads
    // the table and programs it.
    let mut desired = DesiredState::new();
    desired.update(web(&["10.244.0.9"]));
    r.set_desired(desired);
    assert_eq!(
        sweep(&mut r, now, true),
        3,
        "one real server added, two deleted"
    );
    assert_eq!(owned(&r), desired_table(r.desired()));

    // A pass that cannot read (a slice fails: its virtual servers wait for a retry) found
    // nothing right: the passes after it read, though nothing was written since.
    sweep(&mut r, now, true);
    r.dataplane_mut()
        .tamper(|t| {
            t.remove_service(&web_key());
        })
        .unwrap();
    r.dataplane_mut().fail_listings(1);
    r.start_sweep(now, false).unwrap();
    while r.sweep_remaining().is_some() {
        r.sweep_step(now, 64);
    }
    let skipped = r.metrics().ipvs_reads_skipped;
    assert_eq!(
        sweep(&mut r, now, false),
        2,
        "the virtual server and its real server"
    );
    assert_eq!(r.metrics().ipvs_reads_skipped, skipped);
    assert_eq!(owned(&r), desired_table(r.desired()));
}

#[test]
fn without_a_watch_every_pass_reads_the_ipvs_table() {
    let now = Instant::now();
    let mut r = started(node(), vec![web(&["10.244.0.1"])], now);
    for _ in 0..3 {
        let reads = r.dataplane().read_calls();
        sweep(&mut r, now, false);
        assert!(r.dataplane().read_calls() > reads);
    }
    assert_eq!(r.metrics().ipvs_reads_skipped, 0);
    // With the watch, a limit of 0 reads every time too.
    let config = ReconcilerConfig {
        max_skipped_reads: 0,
        ..ReconcilerConfig::default()
    };
    let mut r = started_with(
        node().watching_writes(),
        vec![web(&["10.244.0.1"])],
        now,
        config,
    );
    for _ in 0..3 {
        let reads = r.dataplane().read_calls();
        sweep(&mut r, now, false);
        assert!(r.dataplane().read_calls() > reads);
    }
}
