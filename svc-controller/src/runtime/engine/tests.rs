//! The engine's unit tests, over the in-memory dataplane.

//!
//! What the engine reports to its observer (metrics, health) is tested where it is shown:
//! the daemon's telemetry tests run this engine with its observer.

use ipvs::table::OperationKind;

use super::pacing::{FULL_PASS_RETRY, discovers, next_slice};
use super::*;
use crate::dataplane::MemoryDataplane;
use crate::runtime::Silent;
use crate::testing::{first_load, service, slice};

fn engine(wait_for_node: bool) -> Engine<MemoryDataplane> {
    engine_over(MemoryDataplane::new(), wait_for_node)
}

fn engine_over(dp: MemoryDataplane, wait_for_node: bool) -> Engine<MemoryDataplane> {
    Engine::new(
        dp,
        EngineConfig {
            wait_for_node,
            ..EngineConfig::for_node("node-a")
        },
        Arc::new(Silent),
    )
}

fn feed(e: &mut Engine<MemoryDataplane>, messages: Vec<Message>, now: Instant) {
    for m in messages {
        assert_eq!(e.handle(m, SystemTime::now()), Flow::Continue);
    }
    e.step(now, SystemTime::now());
}

fn initial() -> Vec<Message> {
    first_load()
}

fn kinds(e: &Engine<MemoryDataplane>) -> Vec<OperationKind> {
    e.reconciler()
        .dataplane()
        .journal()
        .iter()
        .map(|j| OperationKind::of(&j.operation))
        .collect()
}

#[test]
fn a_change_programs_only_its_service() {
    let now = Instant::now();
    let mut e = engine(false);
    feed(&mut e, initial(), now);
    assert!(e.is_adopted());
    e.reconciler.dataplane_mut().clear_logs();
    feed(
        &mut e,
        vec![Message::Slices(Change::Applied(slice(
            "ns",
            "b-1",
            "b",
            &["10.1.1.1", "10.1.1.2"],
        )))],
        now,
    );
    assert_eq!(kinds(&e), [OperationKind::AddDestination]);
    assert_eq!(e.pending(), 0);
}

#[test]
fn node_ports_are_checked_against_the_reconcilers_range() {
    let node_address = std::net::IpAddr::from([192, 168, 1, 10]);
    let dp = MemoryDataplane::new().with_node_addresses([node_address]);
    let mut e = Engine::new(
        dp,
        EngineConfig {
            reconciler: ReconcilerConfig {
                node_port_range: 40000..=40100,
                ..ReconcilerConfig::default()
            },
            ..EngineConfig::for_node("node-a")
        },
        Arc::new(Silent),
    );
    let mut a = service("ns", "a", "10.96.0.1");
    if let Some(spec) = a.spec.as_mut() {
        spec.type_ = Some("NodePort".into());
        for (port, node_port) in spec.ports.iter_mut().flatten().zip([40001]) {
            port.node_port = Some(node_port);
        }
        // Inside the default range but outside the reconciler's: refused.
        spec.ports
            .get_or_insert_with(Vec::new)
            .push(k8s_openapi::api::core::v1::ServicePort {
                name: Some("default-range".into()),
                port: 81,
                node_port: Some(30081),
                ..Default::default()
            });
    }
    let mut messages = initial();
    messages[0] = Message::Services(Change::Reset(vec![a]));
    feed(&mut e, messages, Instant::now());
    assert!(e.is_adopted());
    let node_ports: Vec<u16> = e
        .reconciler()
        .dataplane()
        .table()
        .keys()
        .filter_map(|k| crate::mapping::from_service_key(&k))
        .filter(|k| k.addr == node_address)
        .map(|k| k.port)
        .collect();
    assert_eq!(node_ports, [40001]);
}

#[test]
fn a_restart_with_the_same_input_changes_nothing() {
    let now = Instant::now();
    let mut e = engine(false);
    feed(&mut e, initial(), now);
    let mut dp = e.reconciler.into_dataplane();
    dp.clear_logs();
    let mut e = engine_over(dp, false);
    feed(&mut e, initial(), now);
    assert!(e.is_adopted());
    assert!(kinds(&e).is_empty(), "{:?}", kinds(&e));
}

#[test]
fn a_relist_applies_what_was_missed_and_nothing_else() {
    let now = Instant::now();
    let mut e = engine(false);
    feed(&mut e, initial(), now);
    e.reconciler.dataplane_mut().clear_logs();
    // The watch was lost; meanwhile b was deleted. The relist says so.
    feed(
        &mut e,
        vec![
            Message::Services(Change::Reset(vec![service("ns", "a", "10.96.0.1")])),
            Message::Slices(Change::Reset(vec![slice(
                "ns",
                "a-1",
                "a",
                &["10.1.0.1", "10.1.0.2"],
            )])),
        ],
        now,
    );
    assert_eq!(kinds(&e), [OperationKind::DeleteService]);
    assert_eq!(e.reconciler().dataplane().table().len(), 1);
}

#[test]
fn syncs_respect_the_minimum_interval_and_coalesce() {
    let t0 = Instant::now();
    let mut e = engine(false);
    e.config.min_sync_period = Duration::from_secs(1);
    feed(&mut e, initial(), t0);
    e.reconciler.dataplane_mut().clear_logs();
    let flip = |addrs: &[&str]| Message::Slices(Change::Applied(slice("ns", "b-1", "b", addrs)));
    feed(&mut e, vec![flip(&["10.1.1.1", "10.1.1.2"])], t0);
    assert!(kinds(&e).is_empty(), "too soon after the adoption");
    assert_eq!(e.next_deadline(), Some(t0 + Duration::from_secs(1)));
    feed(
        &mut e,
        vec![flip(&["10.1.1.1", "10.1.1.3"])],
        t0 + Duration::from_millis(500),
    );
    e.step(t0 + Duration::from_secs(1), SystemTime::now());
    // Both changes in one sync: the table goes straight to the last state.
    assert_eq!(kinds(&e), [OperationKind::AddDestination]);
}

#[test]
fn shutdown_stops_and_leaves_the_table() {
    let (tx, rx) = std::sync::mpsc::channel();
    for m in initial() {
        tx.send(m).unwrap();
    }
    tx.send(Message::Shutdown).unwrap();
    let e = engine(false);
    let dp = e.run(rx);
    // The initial messages and the shutdown arrived together: the loop stops before
    // adopting, and whatever was in the kernel stays.
    assert!(dp.journal().is_empty());
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || engine(false).run(rx));
    for m in initial() {
        tx.send(m).unwrap();
    }
    // Wait until adopted: the table has both virtual servers.
    std::thread::sleep(Duration::from_millis(200));
    tx.send(Message::Shutdown).unwrap();
    let dp = handle.join().unwrap();
    assert_eq!(dp.table().len(), 2, "the table stays after a shutdown");
}
#[test]
fn the_full_pass_runs_in_slices_and_changes_go_between_them() {
    let t0 = Instant::now();
    let mut e = engine(false);
    let count = SWEEP_SLICE * 2 + 10;
    let services = (0..count)
        .map(|i| {
            service(
                "ns",
                &format!("s{i}"),
                &format!("10.96.{}.{}", i / 200, i % 200 + 1),
            )
        })
        .collect();
    let slices = (0..count)
        .map(|i| slice("ns", &format!("s{i}-1"), &format!("s{i}"), &["10.1.0.1"]))
        .collect();
    feed(
        &mut e,
        vec![
            Message::Services(Change::Reset(services)),
            Message::Slices(Change::Reset(slices)),
        ],
        t0,
    );
    assert!(e.is_adopted());
    assert_eq!(e.next_deadline(), Some(t0 + Duration::from_secs(30)));
    // Drift behind our back: the last virtual server is deleted.
    let last =
        ipvs::model::ServiceKey::tcp("10.96.2.122".parse::<std::net::Ipv4Addr>().unwrap(), 80);
    e.reconciler
        .dataplane_mut()
        .tamper(|t| {
            assert!(t.remove_service(&last).is_some());
        })
        .unwrap();
    e.reconciler.dataplane_mut().clear_logs();

    // The pass starts with its first slice, the next ones are spread over 15 s.
    let t1 = t0 + Duration::from_secs(30);
    e.step(t1, SystemTime::now());
    assert!(e.full_pass_running());
    assert_eq!(e.next_deadline(), Some(t1 + Duration::from_secs(5)));
    // A change between slices is programmed at once.
    feed(
        &mut e,
        vec![Message::Slices(Change::Applied(slice(
            "ns",
            "s0-1",
            "s0",
            &["10.1.0.1", "10.1.0.2"],
        )))],
        t1 + Duration::from_millis(1),
    );
    assert_eq!(kinds(&e), [OperationKind::AddDestination]);
    assert!(e.full_pass_running());
    // The later slices: the missing virtual server comes back.
    e.step(t1 + Duration::from_secs(5), SystemTime::now());
    assert!(e.full_pass_running());
    e.step(t1 + Duration::from_secs(10), SystemTime::now());
    assert!(!e.full_pass_running());
    assert_eq!(
        kinds(&e),
        [
            OperationKind::AddDestination,
            OperationKind::AddService,
            OperationKind::AddDestination
        ]
    );
    assert!(e.reconciler().dataplane().table().get(&last).is_some());
    // The next pass is one period after this one started.
    assert_eq!(e.next_deadline(), Some(t1 + Duration::from_secs(30)));
}

#[test]
fn full_passes_of_a_large_table_take_a_bounded_share_of_the_engine() {
    let period = Duration::from_secs(30);
    // A quick pass: the configured period.
    assert_eq!(full_pass_period(period, Duration::from_secs(2)), period);
    assert_eq!(full_pass_period(period, Duration::ZERO), period);
    // A pass that took 20 s of work: the next one 80 s after its start.
    assert_eq!(
        full_pass_period(period, Duration::from_secs(20)),
        Duration::from_secs(80)
    );
    // Slices: the planned interval, unless the last one took more than half of it.
    let t = Instant::now();
    let ms = Duration::from_millis;
    assert_eq!(next_slice(t, ms(60), ms(10)), t + ms(60));
    assert_eq!(next_slice(t, ms(60), ms(100)), t + ms(200));
}

#[test]
fn a_full_pass_that_cannot_read_the_node_is_tried_again() {
    let t0 = Instant::now();
    let mut e = engine(false);
    feed(&mut e, initial(), t0);
    e.reconciler.dataplane_mut().fail_listings(1);
    let t1 = t0 + Duration::from_secs(30);
    e.step(t1, SystemTime::now());
    assert!(!e.full_pass_running());
    assert_eq!(e.next_deadline(), Some(t1 + FULL_PASS_RETRY));
    e.step(t1 + FULL_PASS_RETRY, SystemTime::now());
    assert!(!e.full_pass_running(), "one slice covers this small table");
    assert_eq!(
        e.next_deadline(),
        Some(t1 + FULL_PASS_RETRY + Duration::from_secs(30))
    );
}
/// The first load of [`initial`] in two parts, as the manifests source streams it: the
/// Services and the first slice, then the second slice.
fn first_load_in_parts() -> (Vec<Message>, Vec<Message>) {
    (
        vec![
            Message::Services(Change::Applied(service("ns", "a", "10.96.0.1"))),
            Message::Slices(Change::Applied(slice(
                "ns",
                "a-1",
                "a",
                &["10.1.0.1", "10.1.0.2"],
            ))),
            Message::Services(Change::Applied(service("ns", "b", "10.96.0.2"))),
            Message::Services(Change::Synced),
        ],
        vec![
            Message::Slices(Change::Applied(slice("ns", "b-1", "b", &["10.1.1.1"]))),
            Message::Slices(Change::Synced),
        ],
    )
}

/// The kernel table an engine fed [`initial`] at once programs.
fn table_of_initial() -> ipvs::table::Table {
    let mut e = engine(false);
    feed(&mut e, initial(), Instant::now());
    e.reconciler().dataplane().table().clone()
}

#[test]
fn a_first_load_in_parts_on_a_fresh_node_is_programmed_as_it_arrives() {
    let now = Instant::now();
    let mut e = engine(true);
    let (first, rest) = first_load_in_parts();
    feed(&mut e, first, now);
    assert!(
        e.reconciler().dataplane().journal().is_empty(),
        "nothing before the Node is known"
    );
    feed(&mut e, vec![Message::Node(Change::Reset(vec![]))], now);
    assert!(!e.is_adopted(), "the slices are not all in");
    let table = e.reconciler().dataplane().table();
    assert_eq!(table.len(), 2, "both Services programmed early");
    let destinations = |vip: &str| {
        table
            .iter()
            .find(|s| s.key().to_string().contains(vip))
            .map(|s| s.destinations().len())
    };
    assert_eq!(destinations("10.96.0.1"), Some(2));
    assert_eq!(destinations("10.96.0.2"), Some(0), "its slice comes later");
    assert_eq!(e.pending(), 0);

    feed(&mut e, rest, now);
    assert!(e.is_adopted());
    assert_eq!(e.pending(), 0);
    assert_eq!(e.reconciler().dataplane().table(), table_of_initial());
    // The first full pass (a period later) finds nothing to repair.
    e.reconciler.dataplane_mut().clear_logs();
    let later = now + Duration::from_secs(30);
    for i in 0..100 {
        e.step(later + Duration::from_secs(i), SystemTime::now());
    }
    assert!(!e.full_pass_running());
    assert!(kinds(&e).is_empty(), "{:?}", kinds(&e));
}

#[test]
fn a_first_load_in_parts_on_a_node_with_our_state_waits_for_the_adoption() {
    let now = Instant::now();
    // A node that ran the daemon before: Service c is gone from the input since.
    let mut e = engine(false);
    let mut before = initial();
    before.push(Message::Services(Change::Applied(service(
        "ns",
        "c",
        "10.96.0.3",
    ))));
    feed(&mut e, before, now);
    assert_eq!(e.reconciler().dataplane().table().len(), 3);
    let mut dp = e.reconciler.into_dataplane();
    dp.clear_logs();

    let mut e = engine_over(dp, false);
    let (first, rest) = first_load_in_parts();
    feed(&mut e, first, now);
    assert!(!e.is_adopted(), "the slices are not all in");
    assert!(
        e.reconciler().dataplane().journal().is_empty(),
        "{:?}",
        kinds(&e)
    );
    assert_eq!(e.reconciler().dataplane().table().len(), 3, "untouched");
    feed(&mut e, rest, now);
    assert!(e.is_adopted());
    assert_eq!(e.reconciler().dataplane().table(), table_of_initial());
    assert_eq!(kinds(&e), vec![OperationKind::DeleteService]);
    assert_eq!(e.pending(), 0);
}

#[test]
fn a_full_pass_follows_the_node_addresses() {
    let t0 = Instant::now();
    let node = |last: u8| std::net::IpAddr::from([192, 168, 1, last]);
    let dp = MemoryDataplane::new().with_node_addresses([node(10)]);
    let mut e = engine_over(dp, false);
    let mut port = crate::testing::service("ns", "np", "10.96.0.9");
    if let Some(spec) = port.spec.as_mut() {
        spec.type_ = Some("NodePort".into());
        if let Some(p) = spec.ports.as_mut().and_then(|p| p.first_mut()) {
            p.node_port = Some(30080);
        }
    }
    feed(
        &mut e,
        vec![
            Message::Services(Change::Reset(vec![port])),
            Message::Slices(Change::Reset(vec![slice(
                "ns",
                "np-1",
                "np",
                &["10.1.0.1"],
            )])),
        ],
        t0,
    );
    let on = |e: &Engine<MemoryDataplane>, last: u8| {
        e.reconciler()
            .dataplane()
            .table()
            .get(&ipvs::model::ServiceKey::tcp(node(last), 30080))
            .is_some()
    };
    assert!(on(&e, 10));
    e.dataplane_mut().set_node_addresses([node(11)]);
    // The pass reads the new address; the NodePort moves at the next step.
    let t1 = t0 + Duration::from_secs(30);
    e.step(t1, SystemTime::now());
    e.step(t1, SystemTime::now());
    assert!(on(&e, 11), "{:?}", e.reconciler().dataplane().table());
    assert!(!on(&e, 10));
    assert_eq!(e.node().addresses, [node(11)]);
}
#[test]
fn large_tables_look_for_leftovers_on_one_pass_in_ten() {
    assert!((1..=30).all(|pass| discovers(pass, DISCOVER_ALWAYS_BELOW)));
    let large: Vec<u64> = (1..=30)
        .filter(|pass| discovers(*pass, DISCOVER_ALWAYS_BELOW + 1))
        .collect();
    assert_eq!(large, [10, 20, 30]);
}
