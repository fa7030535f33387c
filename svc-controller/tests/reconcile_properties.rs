//! Property tests of the reconciler over the in-memory dataplane: random sequences of Service
//! changes, injected faults, behind-the-back edits and connection counts, then full passes
//! until quiet. The node must end as the desired state plus the untouched foreign entries,
//! with drains that obey the rules on the way.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipvs::model::{Destination, DestinationKey, Forwarding, ServiceKey, Weight};
use ipvs::table::{Errno, Fault, OperationKind, Table};
use proptest::prelude::*;
use svc_controller::dataplane::{Connections, MemoryDataplane};
use svc_controller::mapping::{desired_table, from_service_key, to_service_key};
use svc_controller::reconcile::{Reconciler, ReconcilerConfig};
use svc_controller::{
    Exposure, Protocol, RealServer, Scheduler, ServiceDesired, ServiceRef, VirtualServer,
    VirtualServerKey,
};

const VIPS: [[u8; 4]; 3] = [[10, 96, 0, 1], [10, 96, 0, 2], [10, 96, 0, 3]];
const PORTS: [(Protocol, u16); 3] = [
    (Protocol::Tcp, 80),
    (Protocol::Udp, 53),
    (Protocol::Tcp, 443),
];
const BACKENDS: [[u8; 4]; 4] = [
    [10, 244, 0, 1],
    [10, 244, 0, 2],
    [10, 244, 0, 3],
    [10, 244, 0, 4],
];

/// One virtual server of a generated Service: (VIP index, port index, backend bitmask).
type VsSpec = (usize, usize, u8);

#[derive(Debug, Clone)]
enum Action {
    Sync(usize, Vec<VsSpec>, bool),
    Remove(usize),
    Fault(u8, usize),
    DeleteVs(usize),
    EditWeight(usize, usize, u32),
    AddDest(usize, usize),
    StrayAddress,
    Connections(usize, usize, u32),
    Advance(u64),
    Verify,
    FailListing,
    FailAddresses,
}

fn action() -> impl Strategy<Value = Action> {
    let vs = (0..VIPS.len(), 0..PORTS.len(), 0u8..16);
    prop_oneof![
        6 => (0usize..3, prop::collection::vec(vs, 0..3), any::<bool>())
            .prop_map(|(s, v, p)| Action::Sync(s, v, p)),
        1 => (0usize..3).prop_map(Action::Remove),
        2 => (0u8..6, 1usize..3).prop_map(|(k, n)| Action::Fault(k, n)),
        1 => (0usize..16).prop_map(Action::DeleteVs),
        1 => (0usize..16, 0usize..8, 0u32..4).prop_map(|(a, b, w)| Action::EditWeight(a, b, w)),
        1 => (0usize..16, 0usize..4).prop_map(|(a, b)| Action::AddDest(a, b)),
        1 => Just(Action::StrayAddress),
        3 => (0usize..16, 0usize..8, 0u32..3).prop_map(|(a, b, c)| Action::Connections(a, b, c)),
        3 => (0u64..20).prop_map(Action::Advance),
        1 => Just(Action::Verify),
        1 => Just(Action::FailListing),
        1 => Just(Action::FailAddresses),
    ]
}

fn service(index: usize, specs: &[VsSpec], persistent: bool) -> ServiceDesired {
    let sref = ServiceRef::new("default", format!("svc-{index}"));
    let mut virtual_servers = BTreeMap::new();
    for &(vip, port, mask) in specs {
        let (protocol, port) = PORTS[port];
        let key = VirtualServerKey {
            addr: IpAddr::from(VIPS[vip]),
            protocol,
            port,
        };
        let real_servers = BACKENDS
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, b)| RealServer {
                addr: IpAddr::from(*b),
                port: 8080,
                weight: 1,
                local: false,
            })
            .collect();
        virtual_servers.insert(
            key,
            VirtualServer {
                key,
                scheduler: Scheduler::RoundRobin,
                persistence: persistent.then_some(svc_controller::Persistence {
                    timeout_secs: 60,
                    netmask: ipvs::model::PersistenceNetmask::host(key.family()),
                }),
                real_servers,
                service: sref.clone(),
                port_name: String::new(),
                exposure: Exposure::ClusterIp,
                bind_address: true,
                local_policy: false,
                source_ranges: None,
            },
        );
    }
    ServiceDesired {
        service: sref,
        virtual_servers,
        problems: Vec::new(),
        health_check: None,
        no_local_endpoints: Default::default(),
    }
}

fn owned(table: &Table) -> Table {
    let foreign = svc_controller::testing::foreign_table();
    table.filtered(|s| !foreign.contains_service(&s.key()))
}

/// The foreign entries are exactly as they were.
fn foreign_intact(table: &Table) -> Result<(), TestCaseError> {
    for s in svc_controller::testing::foreign_table().iter() {
        prop_assert_eq!(table.get(&s.key()), Some(s));
    }
    Ok(())
}

fn fault(kind: u8, times: usize) -> Fault {
    let kind = [
        OperationKind::AddService,
        OperationKind::EditService,
        OperationKind::DeleteService,
        OperationKind::AddDestination,
        OperationKind::EditDestination,
        OperationKind::DeleteDestination,
    ][usize::from(kind) % 6];
    Fault::new(Errno::ENOMEM).on(kind).times(times)
}

/// Runs due work until nothing is due before `limit`.
fn settle(r: &mut Reconciler<MemoryDataplane>, now: &mut Instant, limit: Instant) {
    for _ in 0..200 {
        match r.next_wakeup() {
            Some(t) if t <= limit => {
                *now = (*now).max(t);
                r.poll(*now);
            }
            _ => return,
        }
    }
}

/// Every owned entry in the kernel is desired, or a TCP real server quiesced and draining.
fn drains_obey_the_rules(
    r: &Reconciler<MemoryDataplane>,
    now: Instant,
) -> Result<(), TestCaseError> {
    let table = r.dataplane().table();
    let want = desired_table(r.desired());
    let draining: Vec<(VirtualServerKey, DestinationKey)> =
        r.draining().map(|(k, d, _)| (k, d)).collect();
    for have in owned(&table).iter() {
        let Some(w) = want.get(&have.key()) else {
            return Err(TestCaseError::fail(format!(
                "undesired virtual server {}",
                have.key()
            )));
        };
        prop_assert_eq!(have.service(), w.service());
        for d in w.destinations() {
            prop_assert_eq!(have.destination(&d.key()), Some(d));
        }
        for d in have
            .destinations()
            .filter(|d| !w.contains_destination(&d.key()))
        {
            let vk = from_service_key(&have.key()).unwrap();
            prop_assert_eq!(vk.protocol, Protocol::Tcp, "only TCP drains");
            prop_assert_eq!(d.weight, Weight::QUIESCED);
            prop_assert!(
                draining.contains(&(vk, d.key())),
                "a drain record for {}",
                d.key()
            );
        }
    }
    for (_, _, drain) in r.draining() {
        prop_assert!(drain.deadline.is_some_and(|d| d <= now + DRAIN_TIMEOUT));
    }
    Ok(())
}

/// A drain deadline, so that every run ends with the desired state alone (the default, no
/// deadline, waits for connections that these runs never close).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

fn config() -> ReconcilerConfig {
    ReconcilerConfig {
        drain_timeout: Some(DRAIN_TIMEOUT),
        ..ReconcilerConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn converges_to_desired_plus_foreign(actions in prop::collection::vec(action(), 1..40)) {
        let t0 = Instant::now();
        let mut now = t0;
        let dp = MemoryDataplane::new()
            .with_node_addresses([IpAddr::from([192, 168, 1, 10])])
            .with_table(&svc_controller::testing::foreign_table())
            .unwrap();
        let mut r = Reconciler::new(dp, config());
        r.verify(now).unwrap();
        // Whether the table was changed behind the reconciler's back since its last full pass.
        let mut tampered = false;
        for a in actions {
            tampered |= matches!(a, Action::DeleteVs(_) | Action::EditWeight(..) | Action::AddDest(..));
            let owned_keys: Vec<ServiceKey> = owned(&r.dataplane().table()).keys().collect();
            let pick = |i: usize| owned_keys.get(i % owned_keys.len().max(1)).copied();
            match a {
                Action::Sync(s, specs, p) => {
                    r.sync_service(service(s, &specs, p), now);
                }
                Action::Remove(s) => {
                    r.remove_service(&ServiceRef::new("default", format!("svc-{s}")), now);
                }
                Action::Fault(kind, times) => {
                    r.dataplane_mut().inject(fault(kind, times));
                }
                Action::DeleteVs(i) => {
                    if let Some(k) = pick(i) {
                        r.dataplane_mut().tamper(|t| { t.remove_service(&k); }).unwrap();
                    }
                }
                Action::EditWeight(i, j, w) => {
                    if let Some(k) = pick(i) {
                        r.dataplane_mut().tamper(|t| {
                            let keys: Vec<DestinationKey> =
                                t.get(&k).map(|s| s.destination_keys().collect()).unwrap_or_default();
                            if let Some(dk) = keys.get(j % keys.len().max(1)) {
                                let mut d = *t.destination(&k, dk).unwrap();
                                d.weight = Weight::new(w).unwrap();
                                t.insert_destination(&k, d).unwrap();
                            }
                        }).unwrap();
                    }
                }
                Action::AddDest(i, b) => {
                    if let Some(k) = pick(i) {
                        r.dataplane_mut().tamper(|t| {
                            let d = Destination::new(IpAddr::from(BACKENDS[b]), 9090, Forwarding::Masquerade);
                            t.insert_destination(&k, d).unwrap();
                        }).unwrap();
                    }
                }
                Action::StrayAddress => {
                    r.dataplane_mut().tamper_dummy(|d| { d.insert(IpAddr::from([10, 96, 0, 200])); });
                }
                Action::Connections(i, j, c) => {
                    if let Some(k) = pick(i) {
                        let keys: Vec<DestinationKey> = r.dataplane().table().get(&k)
                            .map(|s| s.destination_keys().collect()).unwrap_or_default();
                        if let Some(dk) = keys.get(j % keys.len().max(1)) {
                            r.dataplane_mut().set_connections(k, *dk, Connections { active: c, inactive: 0 });
                        }
                    }
                }
                Action::Advance(secs) => {
                    now += Duration::from_secs(secs);
                    r.poll(now);
                }
                Action::Verify => {
                    if r.verify(now).is_ok() {
                        tampered = false;
                    }
                }
                Action::FailListing => {
                    r.dataplane_mut().fail_listings(1);
                }
                Action::FailAddresses => {
                    r.dataplane_mut().fail_address_changes(1);
                }
            }
            foreign_intact(&r.dataplane().table())?;
            // The ownership rule stays true at every step: each of our virtual servers off
            // the node's addresses sits on an address bound on the dummy interface (bound
            // before it is created, unbound only after it is gone).
            let bound = r.dataplane().dummy().cloned().unwrap_or_default();
            for key in owned(&r.dataplane().table()).keys() {
                let vk = from_service_key(&key).unwrap();
                prop_assert!(
                    vk.addr == IpAddr::from([192, 168, 1, 10]) || bound.contains(&vk.addr),
                    "{vk} exists while its VIP is not bound"
                );
            }
            // The view never believes what the kernel does not hold: it follows successful
            // answers only, so without edits behind its back it is exactly the owned table.
            if !tampered && r.is_adopted() {
                prop_assert_eq!(r.view(), &owned(&r.dataplane().table()));
            }
        }

        // Faults stop; full passes and due work until quiet.
        r.dataplane_mut().clear_faults();
        r.verify(now).unwrap();
        let limit = now + Duration::from_secs(1);
        settle(&mut r, &mut now, limit);
        let table = r.dataplane().table();
        foreign_intact(&table)?;
        prop_assert_eq!(r.view(), &owned(&table));
        drains_obey_the_rules(&r, now)?;
        let wanted: std::collections::BTreeSet<IpAddr> = r.desired().vips();
        prop_assert_eq!(r.dataplane().dummy().cloned().unwrap_or_default(), wanted.clone());

        // Past every drain deadline: exactly the desired state plus the foreign entries.
        let end = now + DRAIN_TIMEOUT + Duration::from_secs(120);
        settle(&mut r, &mut now, end);
        let report = r.verify(now).unwrap();
        prop_assert!(report.is_quiet(), "{report:?}");
        let table = r.dataplane().table();
        foreign_intact(&table)?;
        prop_assert_eq!(owned(&table), desired_table(r.desired()));
        prop_assert_eq!(r.view(), &owned(&table));
        prop_assert_eq!(r.draining().count(), 0);
        prop_assert_eq!(r.dataplane().dummy().cloned().unwrap_or_default(), wanted);
        for key in r.desired().virtual_servers().keys() {
            prop_assert!(table.contains_service(&to_service_key(key)));
        }

        // A restart with the same inputs makes no change at all.
        let desired = r.desired().clone();
        let mut dp = r.into_dataplane();
        dp.clear_logs();
        let mut again = Reconciler::new(dp, config());
        again.set_desired(desired);
        let report = again.verify(now).unwrap();
        prop_assert!(report.is_quiet(), "{report:?}");
        prop_assert!(again.dataplane().journal().is_empty());
        prop_assert!(again.dataplane().address_log().is_empty());
    }
}
