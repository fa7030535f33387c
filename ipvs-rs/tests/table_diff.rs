//! `ipvs::table::diff`: properties over random tables (applied to a `SimulatedKernel`) and
//! examples of each kind of change, with the plan's `ipvsadm` notation.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::{NonZeroU16, NonZeroU32};

use ipvs::codec::Operation;
use ipvs::model::*;
use ipvs::table::{
    IpvsadmNotation, OperationKind, Plan, PlanSummary, ServiceConfig, SimulatedKernel, Table, diff,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

// ---------------------------------------------------------------------------------------
// Strategies. Keys and addresses come from small pools so that two random tables share
// services and destinations, and settings vary so that edits happen.

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last))
}

fn service_key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        4 => (
            prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp), Just(Protocol::Sctp)],
            prop_oneof![Just(v4(10, 0, 0, 1)), Just(v4(10, 0, 0, 2)), Just(v6(1))],
            prop_oneof![Just(80u16), Just(443)],
        )
            .prop_map(|(protocol, addr, port)| ServiceKey::Tuple {
                protocol,
                addr,
                port,
            }),
        1 => (
            prop_oneof![Just(AddressFamily::Ipv4), Just(AddressFamily::Ipv6)],
            1u32..=2,
        )
            .prop_map(|(family, mark)| ServiceKey::Fwmark {
                family,
                mark: NonZeroU32::new(mark).expect("1..=2"),
            }),
    ]
}

fn scheduler() -> impl Strategy<Value = Scheduler> {
    prop_oneof![
        Just(Scheduler::RoundRobin),
        Just(Scheduler::WeightedLeastConnection),
        Just(Scheduler::None),
        (any::<bool>(), any::<bool>())
            .prop_map(|(fallback, port)| Scheduler::SourceHashing { fallback, port }),
        (any::<bool>(), any::<bool>())
            .prop_map(|(fallback, port)| Scheduler::MaglevHashing { fallback, port }),
    ]
}

fn persistence(family: AddressFamily) -> impl Strategy<Value = Option<Persistence>> {
    let netmask = match family {
        AddressFamily::Ipv4 => prop_oneof![
            Just(PersistenceNetmask::V4(Ipv4Addr::BROADCAST)),
            Just(PersistenceNetmask::V4(Ipv4Addr::new(255, 255, 255, 0))),
        ]
        .boxed(),
        AddressFamily::Ipv6 => prop_oneof![
            Just(PersistenceNetmask::V6(Ipv6PrefixLen::HOST)),
            Just(PersistenceNetmask::V6(
                Ipv6PrefixLen::new(64).expect("1..=128")
            )),
        ]
        .boxed(),
    };
    proptest::option::of((prop_oneof![Just(60u32), Just(300)], netmask).prop_map(
        |(timeout_secs, netmask)| Persistence {
            timeout_secs,
            netmask,
        },
    ))
}

fn service() -> impl Strategy<Value = Service> {
    service_key().prop_flat_map(|key| {
        (
            scheduler(),
            persistence(key.family()),
            any::<bool>(),
            proptest::option::weighted(0.2, Just(PersistenceEngine::new("sip").expect("name"))),
        )
            .prop_map(
                move |(scheduler, persistence, one_packet, persistence_engine)| Service {
                    key,
                    scheduler,
                    persistence,
                    one_packet,
                    persistence_engine,
                },
            )
    })
}

fn forwarding() -> impl Strategy<Value = Forwarding> {
    prop_oneof![
        3 => Just(Forwarding::Masquerade),
        2 => Just(Forwarding::DirectRouting),
        1 => Just(Forwarding::Local),
        1 => Just(Forwarding::Bypass),
        1 => Just(Forwarding::Tunnel(Tunnel::Ipip)),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(checksum, remote_checksum)| {
            Forwarding::Tunnel(Tunnel::Gue {
                port: NonZeroU16::new(6080).expect("non-zero"),
                checksum,
                remote_checksum,
            })
        }),
        1 => any::<bool>().prop_map(|checksum| Forwarding::Tunnel(Tunnel::Gre { checksum })),
    ]
}

fn destination_addr(family: AddressFamily) -> BoxedStrategy<IpAddr> {
    match family {
        AddressFamily::Ipv4 => (1u8..=3).prop_map(|i| v4(10, 1, 0, i)).boxed(),
        AddressFamily::Ipv6 => (0x101u16..=0x102).prop_map(v6).boxed(),
    }
}

fn thresholds() -> impl Strategy<Value = Thresholds> {
    prop_oneof![Just(0u32), Just(10), Just(100)]
        .prop_flat_map(|upper| (Just(upper), 0..=upper))
        .prop_map(|(upper, lower)| Thresholds::new(upper, lower).expect("lower <= upper"))
}

/// A destination the kernel accepts for a service of `family`: of another family only
/// with tunnel forwarding.
fn destination(family: AddressFamily) -> impl Strategy<Value = Destination> {
    forwarding().prop_flat_map(move |forwarding| {
        let addr = if matches!(forwarding, Forwarding::Tunnel(_)) {
            prop_oneof![
                3 => destination_addr(family),
                1 => destination_addr(match family {
                    AddressFamily::Ipv4 => AddressFamily::Ipv6,
                    AddressFamily::Ipv6 => AddressFamily::Ipv4,
                }),
            ]
            .boxed()
        } else {
            destination_addr(family)
        };
        (
            addr,
            prop_oneof![Just(80u16), Just(8080)],
            prop_oneof![0u32..=2, Just(i32::MAX as u32)],
            thresholds(),
        )
            .prop_map(move |(addr, port, weight, thresholds)| Destination {
                addr,
                port,
                forwarding,
                weight: Weight::new(weight).expect("<= i32::MAX"),
                thresholds,
            })
    })
}

fn service_config() -> impl Strategy<Value = ServiceConfig> {
    service().prop_flat_map(|s| {
        let family = s.key.family();
        proptest::collection::vec(destination(family), 0..5)
            .prop_map(move |ds| ServiceConfig::new(s.clone()).with_destinations(ds))
    })
}

fn table() -> impl Strategy<Value = Table> {
    proptest::collection::vec(service_config(), 0..6).prop_map(Table::from_iter)
}

// ---------------------------------------------------------------------------------------
// What a minimal plan must contain, computed independently of `diff`.

fn settings_differ(a: &ServiceConfig, b: &ServiceConfig) -> bool {
    a.service() != b.service()
}

/// The exact number of operations of a minimal plan, and a looser bound that does not
/// look at settings: per service, 1 + the destinations on either side.
fn minimal_count_and_bound(current: &Table, desired: &Table) -> (usize, usize) {
    let mut exact = 0;
    let mut bound = 0;
    let keys: BTreeSet<String> = current
        .keys()
        .chain(desired.keys())
        .map(|k| format!("{k:?}"))
        .collect();
    let mut seen = 0;
    for cfg in desired {
        seen += 1;
        match current.get(&cfg.key()) {
            None => {
                exact += 1 + cfg.destination_count();
                bound += 1 + cfg.destination_count();
            }
            Some(have) => {
                exact += usize::from(settings_differ(have, cfg));
                let mut union = 0;
                for d in cfg.destinations() {
                    union += 1;
                    match have.destination(&d.key()) {
                        None => exact += 1,
                        Some(old) => exact += usize::from(old != d),
                    }
                }
                for d in have.destinations() {
                    if !cfg.contains_destination(&d.key()) {
                        exact += 1;
                        union += 1;
                    }
                }
                bound += 1 + union;
            }
        }
    }
    for have in current {
        if !desired.contains_service(&have.key()) {
            seen += 1;
            exact += 1;
            bound += 1;
        }
    }
    assert_eq!(seen, keys.len());
    (exact, bound)
}

fn service_of(op: &Operation) -> Option<ServiceKey> {
    match op {
        Operation::AddService(s) | Operation::EditService(s) => Some(s.key),
        Operation::DeleteService(k)
        | Operation::AddDestination(k, _)
        | Operation::EditDestination(k, _)
        | Operation::DeleteDestination(k, _) => Some(*k),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Applying `diff(a, b)` to a kernel holding `a` succeeds at every step and leaves
    /// exactly `b`, and a listing of the result reads back as `b`.
    #[test]
    fn applying_the_plan_yields_the_desired_table(a in table(), b in table()) {
        let mut kernel = SimulatedKernel::with_table(&a).expect("random tables are valid");
        prop_assert_eq!(kernel.as_table(), &a);
        let plan = diff(&a, &b);
        for op in &plan {
            prop_assert_eq!(kernel.apply(op), Ok(()), "{}", IpvsadmNotation(op));
        }
        prop_assert_eq!(kernel.table(), b.clone());
        prop_assert_eq!(Table::from_entries(kernel.listing()), b.clone());
        prop_assert!(diff(&kernel.table(), &b).is_empty());
    }

    #[test]
    fn a_table_needs_nothing_to_become_itself(a in table()) {
        prop_assert!(diff(&a, &a).is_empty());
        prop_assert!(diff(&a, &a.clone()).is_empty());
    }

    /// The plan has exactly as many operations as the changes require, within the bound
    /// of one per service plus one per destination on either side.
    #[test]
    fn the_plan_is_minimal(a in table(), b in table()) {
        let plan = diff(&a, &b);
        let (exact, bound) = minimal_count_and_bound(&a, &b);
        prop_assert_eq!(plan.len(), exact);
        prop_assert!(plan.len() <= bound);
        prop_assert_eq!(plan.summary().total(), plan.len());
    }

    /// Nothing is deleted and added back: additions are for what `a` lacks, deletions for
    /// what `b` lacks, and destinations of a deleted service are never deleted one by one.
    #[test]
    fn nothing_is_deleted_and_added_back(a in table(), b in table()) {
        for op in &diff(&a, &b) {
            match op {
                Operation::AddService(s) => {
                    prop_assert!(!a.contains_service(&s.key));
                }
                Operation::DeleteService(k) => {
                    prop_assert!(!b.contains_service(k));
                }
                Operation::EditService(s) => {
                    prop_assert!(a.contains_service(&s.key) && b.contains_service(&s.key));
                }
                Operation::AddDestination(k, d) => {
                    prop_assert!(a.destination(k, &d.key()).is_none());
                }
                Operation::EditDestination(k, d) => {
                    prop_assert!(a.destination(k, &d.key()).is_some());
                }
                Operation::DeleteDestination(k, d) => {
                    prop_assert!(b.contains_service(k));
                    prop_assert!(b.destination(k, d).is_none());
                }
                other => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }

    /// A service that disappears costs one operation, however many destinations it has.
    #[test]
    fn deleting_a_service_is_one_operation(a in table(), b in table()) {
        let plan = diff(&a, &b);
        for gone in a.iter().filter(|s| !b.contains_service(&s.key())) {
            let ops: Vec<_> = plan
                .iter()
                .filter(|op| service_of(op) == Some(gone.key()))
                .collect();
            let delete = Operation::DeleteService(gone.key());
            prop_assert_eq!(ops, vec![&delete]);
        }
        // Emptying the table deletes each service once, destinations included.
        let empty = diff(&a, &Table::new());
        prop_assert_eq!(empty.len(), a.len());
        prop_assert_eq!(empty.count(OperationKind::DeleteService), a.len());
    }

    /// Make before break: each service's operations are together, the service first, then
    /// destination additions, edits and deletions; deleted services come last.
    #[test]
    fn the_order_is_make_before_break(a in table(), b in table()) {
        let plan = diff(&a, &b);
        let rank = |op: &Operation| match OperationKind::of(op) {
            OperationKind::AddService | OperationKind::EditService => 0,
            OperationKind::AddDestination => 1,
            OperationKind::EditDestination => 2,
            OperationKind::DeleteDestination => 3,
            _ => 4,
        };
        let mut deleting = false;
        let mut previous: Option<(ServiceKey, u8)> = None;
        let mut finished: Vec<ServiceKey> = Vec::new();
        for op in &plan {
            let key = service_of(op).expect("service operation");
            if let Operation::DeleteService(_) = op {
                deleting = true;
                continue;
            }
            prop_assert!(!deleting, "{} after a service deletion", IpvsadmNotation(op));
            let r = rank(op);
            match previous {
                Some((k, pr)) if k == key => prop_assert!(pr <= r, "{}", IpvsadmNotation(op)),
                Some((k, _)) => {
                    finished.push(k);
                    prop_assert!(!finished.contains(&key), "{} is split", key);
                }
                None => {}
            }
            if let Operation::AddDestination(k, _) = op
                && !a.contains_service(k)
            {
                prop_assert!(plan.iter().any(|o| o == &Operation::AddService(
                    b.service(k).expect("in desired").clone()
                )));
            }
            previous = Some((key, r));
        }
    }

    /// Same tables, same plan, whatever order they were built in.
    #[test]
    fn the_plan_is_deterministic(a in table(), b in table()) {
        let reversed = |t: &Table| -> Table { t.iter().rev().cloned().collect() };
        prop_assert_eq!(diff(&a, &b), diff(&reversed(&a), &reversed(&b)));
    }

    /// One line per operation, each in `ipvsadm` notation.
    #[test]
    fn display_writes_one_line_per_operation(a in table(), b in table()) {
        let plan = diff(&a, &b);
        let text = plan.to_string();
        prop_assert_eq!(text.lines().count(), plan.len());
        for (line, op) in text.lines().zip(&plan) {
            prop_assert_eq!(line, IpvsadmNotation(op).to_string());
            prop_assert!(line.starts_with('-'));
        }
    }

    /// A controller that owns some services diffs only those and never touches the others.
    #[test]
    fn retain_limits_the_plan_to_owned_services(a in table(), b in table()) {
        let owned = |s: &ServiceConfig| matches!(s.key(), ServiceKey::Tuple { protocol: Protocol::Tcp, .. });
        let plan = diff(&a.filtered(owned), &b.filtered(owned));
        let mut kernel = SimulatedKernel::with_table(&a).expect("valid");
        kernel.apply_plan(&plan).expect("plan applies");
        let result = kernel.table();
        prop_assert_eq!(result.filtered(owned), b.filtered(owned));
        prop_assert_eq!(result.filtered(|s| !owned(s)), a.filtered(|s| !owned(s)));
    }
}

/// The random tables do exercise every kind of change (so that the properties above are
/// not vacuous).
#[test]
fn random_pairs_cover_every_kind_of_change() {
    let mut runner = TestRunner::deterministic();
    let mut total = PlanSummary::default();
    for _ in 0..256 {
        let a = table().new_tree(&mut runner).expect("tree").current();
        let b = table().new_tree(&mut runner).expect("tree").current();
        let s = diff(&a, &b).summary();
        total.services_added += s.services_added;
        total.services_edited += s.services_edited;
        total.services_deleted += s.services_deleted;
        total.destinations_added += s.destinations_added;
        total.destinations_edited += s.destinations_edited;
        total.destinations_deleted += s.destinations_deleted;
    }
    assert!(total.services_added > 0, "{total}");
    assert!(total.services_edited > 0, "{total}");
    assert!(total.services_deleted > 0, "{total}");
    assert!(total.destinations_added > 0, "{total}");
    assert!(total.destinations_edited > 0, "{total}");
    assert!(total.destinations_deleted > 0, "{total}");
}

// ---------------------------------------------------------------------------------------
// Examples.

fn web() -> ServiceKey {
    ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80)
}

fn backend(last: u8) -> Destination {
    Destination::new(Ipv4Addr::new(10, 1, 0, last), 8080, Forwarding::Masquerade)
}

fn web_table(backends: &[u8]) -> Table {
    Table::new().with_service_config(
        ServiceConfig::new(Service::new(web(), Scheduler::RoundRobin))
            .with_destinations(backends.iter().map(|&i| backend(i))),
    )
}

#[test]
fn new_service_is_added_before_its_destinations() {
    let plan = diff(&Table::new(), &web_table(&[2, 1]));
    assert_eq!(
        plan.operations(),
        &[
            Operation::AddService(Service::new(web(), Scheduler::RoundRobin)),
            Operation::AddDestination(web(), backend(1)),
            Operation::AddDestination(web(), backend(2)),
        ]
    );
    assert_eq!(
        plan.to_string(),
        "-A -t 10.0.0.1:80 -s rr\n\
         -a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 1\n\
         -a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 1\n"
    );
}

#[test]
fn removed_service_is_one_deletion() {
    let plan = diff(&web_table(&[1, 2, 3]), &Table::new());
    assert_eq!(plan.operations(), &[Operation::DeleteService(web())]);
    assert_eq!(plan.to_string(), "-D -t 10.0.0.1:80\n");
}

#[test]
fn changed_settings_are_an_edit() {
    let mut desired = web_table(&[1]);
    desired.insert_service(Service {
        scheduler: Scheduler::MaglevHashing {
            fallback: true,
            port: true,
        },
        persistence: Some(Persistence {
            timeout_secs: 300,
            netmask: PersistenceNetmask::V4(Ipv4Addr::new(255, 255, 255, 0)),
        }),
        ..Service::new(web(), Scheduler::RoundRobin)
    });
    let plan = diff(&web_table(&[1]), &desired);
    assert_eq!(plan.len(), 1);
    assert_eq!(plan.count(OperationKind::EditService), 1);
    assert_eq!(
        plan.to_string(),
        "-E -t 10.0.0.1:80 -s mh -b mh-fallback,mh-port -p 300 -M 255.255.255.0\n"
    );
}

#[test]
fn destination_changes_are_add_edit_delete_in_that_order() {
    let current = web_table(&[1, 2]);
    let mut desired = web_table(&[2, 3]);
    desired
        .insert_destination(
            &web(),
            Destination {
                weight: Weight::new(5).expect("weight"),
                thresholds: Thresholds::new(100, 50).expect("thresholds"),
                ..backend(2)
            },
        )
        .expect("service exists");
    let plan = diff(&current, &desired);
    assert_eq!(
        plan.to_string(),
        "-a -t 10.0.0.1:80 -r 10.1.0.3:8080 -m -w 1\n\
         -e -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 5 -x 100 -y 50\n\
         -d -t 10.0.0.1:80 -r 10.1.0.1:8080\n"
    );
    assert_eq!(
        plan.summary(),
        PlanSummary {
            destinations_added: 1,
            destinations_edited: 1,
            destinations_deleted: 1,
            ..PlanSummary::default()
        }
    );
    assert_eq!(
        plan.summary().to_string(),
        "services: +0 ~0 -0, destinations: +1 ~1 -1"
    );
}

#[test]
fn forwarding_change_is_an_edit_not_a_replacement() {
    let current = web_table(&[1]);
    let tunnelled = Destination {
        forwarding: Forwarding::Tunnel(Tunnel::Gue {
            port: NonZeroU16::new(6080).expect("non-zero"),
            checksum: false,
            remote_checksum: true,
        }),
        ..backend(1)
    };
    let desired = current
        .clone()
        .with_destination(&web(), tunnelled)
        .expect("service exists");
    let plan = diff(&current, &desired);
    assert_eq!(
        plan.operations(),
        &[Operation::EditDestination(web(), tunnelled)]
    );
    assert_eq!(
        plan.to_string(),
        "-e -t 10.0.0.1:80 -r 10.1.0.1:8080 -i --tun-type gue --tun-port 6080 --tun-remcsum -w 1\n"
    );
}

#[test]
fn equal_tables_make_an_empty_plan() {
    let plan = diff(&web_table(&[1, 2]), &web_table(&[2, 1]));
    assert!(plan.is_empty());
    assert_eq!(plan.len(), 0);
    assert_eq!(plan.to_string(), "");
    assert_eq!(plan, Plan::new());
}

#[test]
fn services_to_delete_come_last() {
    let dns = ServiceKey::udp(Ipv4Addr::new(10, 0, 0, 1), 53);
    let current = Table::new().with_service(Service::new(dns, Scheduler::RoundRobin));
    let desired = web_table(&[1]);
    let plan = diff(&current, &desired);
    assert_eq!(
        plan.to_string(),
        "-A -t 10.0.0.1:80 -s rr\n\
         -a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 1\n\
         -D -u 10.0.0.1:53\n"
    );
}

#[test]
fn notation_of_every_operation() {
    let v6_svc = ServiceKey::Tuple {
        protocol: Protocol::Sctp,
        addr: v6(1),
        port: 443,
    };
    let fwmark6 = ServiceKey::Fwmark {
        family: AddressFamily::Ipv6,
        mark: NonZeroU32::new(7).expect("non-zero"),
    };
    let gre = Destination {
        weight: Weight::QUIESCED,
        ..Destination::new(
            v4(192, 0, 2, 1),
            0,
            Forwarding::Tunnel(Tunnel::Gre { checksum: true }),
        )
    };
    let daemon = SyncDaemon {
        group: Some(v4(239, 0, 0, 1)),
        port: NonZeroU16::new(8848),
        ..SyncDaemon::new(
            DaemonState::Master,
            InterfaceName::new("eth0").expect("name"),
            3,
        )
    };
    let cases = [
        (
            Operation::AddService(Service {
                one_packet: true,
                persistence_engine: Some(PersistenceEngine::new("sip").expect("name")),
                persistence: Some(Persistence {
                    timeout_secs: 60,
                    netmask: PersistenceNetmask::V6(Ipv6PrefixLen::new(64).expect("prefix")),
                }),
                ..Service::new(
                    v6_svc,
                    Scheduler::SourceHashing {
                        fallback: false,
                        port: true,
                    },
                )
            }),
            "-A --sctp-service [fd00::1]:443 -s sh -b sh-port -p 60 -M 64 -o --pe sip",
        ),
        (
            Operation::EditService(Service {
                persistence: Some(Persistence {
                    timeout_secs: 300,
                    netmask: PersistenceNetmask::host(AddressFamily::Ipv6),
                }),
                ..Service::new(fwmark6, Scheduler::None)
            }),
            "-E -f 7 -6 -s none -p 300",
        ),
        (Operation::DeleteService(fwmark6), "-D -f 7 -6"),
        (
            Operation::AddDestination(v6_svc, gre),
            "-a --sctp-service [fd00::1]:443 -r 192.0.2.1:0 -i --tun-type gre --tun-csum -w 0",
        ),
        (
            Operation::EditDestination(
                web(),
                Destination::new(v6(9), 80, Forwarding::DirectRouting),
            ),
            "-e -t 10.0.0.1:80 -r [fd00::9]:80 -g -w 1",
        ),
        (
            Operation::AddDestination(
                web(),
                Destination::new(v4(10, 1, 0, 1), 80, Forwarding::Local),
            ),
            "-a -t 10.0.0.1:80 -r 10.1.0.1:80 --local -w 1",
        ),
        (
            Operation::DeleteDestination(web(), backend(1).key()),
            "-d -t 10.0.0.1:80 -r 10.1.0.1:8080",
        ),
        (
            Operation::DeleteService(ServiceKey::Tuple {
                protocol: Protocol::Other(47),
                addr: v4(10, 0, 0, 1),
                port: 0,
            }),
            "-D --protocol 47 10.0.0.1:0",
        ),
        (Operation::Flush, "-C"),
        (Operation::ZeroCounters(None), "-Z"),
        (Operation::ZeroCounters(Some(web())), "-Z -t 10.0.0.1:80"),
        (
            Operation::SetTimeouts(Timeouts {
                tcp: NonZeroU32::new(900),
                tcp_fin: None,
                udp: NonZeroU32::new(60),
            }),
            "--set 900 0 60",
        ),
        (
            Operation::StartDaemon(daemon),
            "--start-daemon master --mcast-interface eth0 --syncid 3 --mcast-group 239.0.0.1 --mcast-port 8848",
        ),
        (
            Operation::StopDaemon(DaemonState::Backup),
            "--stop-daemon backup",
        ),
    ];
    for (op, expected) in cases {
        assert_eq!(IpvsadmNotation(&op).to_string(), expected);
    }
}

#[test]
fn table_display_is_ipvsadm_save() {
    let table = web_table(&[1]).with_service(Service::new(
        ServiceKey::udp(Ipv4Addr::new(10, 0, 0, 1), 53),
        Scheduler::WeightedLeastConnection,
    ));
    assert_eq!(
        table.to_string(),
        "-A -t 10.0.0.1:80 -s rr\n\
         -a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 1\n\
         -A -u 10.0.0.1:53 -s wlc\n"
    );
}

#[test]
fn plan_conversions() {
    let plan = diff(&Table::new(), &web_table(&[1]));
    let ops: Vec<Operation> = plan.clone().into();
    assert_eq!(Plan::from(ops.clone()), plan);
    assert_eq!(plan.iter().cloned().collect::<Plan>(), plan);
    assert_eq!(plan.clone().into_operations(), ops);
    assert_eq!(plan.into_iter().count(), 2);
}
