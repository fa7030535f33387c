//! `ipvs::table::SimulatedKernel` as a fake kernel: fault injection, batches, the journal,
//! and a controller-style retry loop that converges despite failures.

use std::net::Ipv4Addr;

use ipvs::codec::Operation;
use ipvs::model::{Destination, Forwarding, Scheduler, Service, ServiceKey, Weight};
use ipvs::table::{
    Errno, Fault, OperationKind, Rejected, ServiceConfig, SimulatedKernel, Table, diff,
};
use proptest::prelude::*;

fn web() -> ServiceKey {
    ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80)
}

fn dns() -> ServiceKey {
    ServiceKey::udp(Ipv4Addr::new(10, 0, 0, 1), 53)
}

fn backend(last: u8) -> Destination {
    Destination::new(Ipv4Addr::new(10, 1, 0, last), 80, Forwarding::Masquerade)
}

fn desired() -> Table {
    Table::new()
        .with_service_config(
            ServiceConfig::new(Service::new(web(), Scheduler::RoundRobin)).with_destinations([
                backend(1),
                backend(2),
                backend(3),
            ]),
        )
        .with_service_config(
            ServiceConfig::new(Service::new(dns(), Scheduler::RoundRobin))
                .with_destination(backend(4)),
        )
}

#[test]
fn the_next_n_matching_operations_fail() {
    let mut kernel = SimulatedKernel::new();
    kernel.fail_next(2, Errno::ENOMEM, |op| {
        matches!(op, Operation::AddDestination(..))
    });
    let plan = diff(&kernel.table(), &desired());
    let results = kernel.apply_all(&plan);
    assert_eq!(
        results,
        vec![
            Ok(()),
            Err(Errno::ENOMEM),
            Err(Errno::ENOMEM),
            Ok(()),
            Ok(()),
            Ok(()),
        ]
    );
    // The failed operations changed nothing; the others went through (no transaction).
    assert_eq!(kernel.as_table().destination_count(), 2);
    assert!(kernel.pending_faults().is_empty());
    let injected: Vec<bool> = kernel.journal().iter().map(|e| e.injected).collect();
    assert_eq!(injected, vec![false, true, true, false, false, false]);
}

#[test]
fn faults_narrow_by_kind_and_service() {
    let mut kernel = SimulatedKernel::new();
    kernel.inject(
        Fault::new(Errno::EBUSY)
            .on(OperationKind::AddDestination)
            .on_service(dns()),
    );
    let plan = diff(&kernel.table(), &desired());
    let failures: Vec<_> = plan
        .iter()
        .filter_map(|op| kernel.apply(op).err().map(|e| (op.clone(), e)))
        .collect();
    assert_eq!(
        failures,
        vec![(Operation::AddDestination(dns(), backend(4)), Errno::EBUSY)]
    );
}

#[test]
fn an_injected_fault_wins_over_the_real_answer() {
    let mut kernel = SimulatedKernel::with_table(&desired()).expect("valid");
    kernel.inject(Fault::new(Errno::EPERM));
    // The service exists: the kernel would say EEXIST, but the fault answers first.
    let add = Operation::AddService(Service::new(web(), Scheduler::RoundRobin));
    assert_eq!(kernel.apply(&add), Err(Errno::EPERM));
    assert_eq!(kernel.apply(&add), Err(Errno::EEXIST));
    // A fault on a valid deletion leaves the table alone.
    kernel.inject(Fault::new(Errno::EAGAIN));
    assert_eq!(
        kernel.apply(&Operation::DeleteService(web())),
        Err(Errno::EAGAIN)
    );
    assert_eq!(kernel.table(), desired());
}

#[test]
fn forever_faults_fire_until_cleared() {
    let mut kernel = SimulatedKernel::with_table(&desired()).expect("valid");
    kernel.inject(
        Fault::new(Errno::ENOBUFS)
            .forever()
            .on(OperationKind::EditDestination),
    );
    let heavier = Destination {
        weight: Weight::new(9).expect("weight"),
        ..backend(1)
    };
    let edit = Operation::EditDestination(web(), heavier);
    for _ in 0..5 {
        assert_eq!(kernel.apply(&edit), Err(Errno::ENOBUFS));
    }
    assert_eq!(kernel.pending_faults().len(), 1);
    assert_eq!(kernel.pending_faults()[0].remaining(), None);
    kernel.clear_faults();
    assert_eq!(kernel.apply(&edit), Ok(()));
    assert_eq!(
        kernel.as_table().destination(&web(), &heavier.key()),
        Some(&heavier)
    );
}

#[test]
fn faults_are_tried_in_injection_order_and_dropped_when_spent() {
    let mut kernel = SimulatedKernel::new();
    kernel
        .inject(Fault::new(Errno::ENOENT).times(0))
        .inject(Fault::new(Errno::EBUSY).times(2))
        .inject(Fault::new(Errno::EINVAL));
    assert_eq!(
        kernel.pending_faults().len(),
        2,
        "a fault for 0 times is not kept"
    );
    let flush = Operation::Flush;
    assert_eq!(kernel.apply(&flush), Err(Errno::EBUSY));
    assert_eq!(kernel.apply(&flush), Err(Errno::EBUSY));
    assert_eq!(kernel.apply(&flush), Err(Errno::EINVAL));
    assert_eq!(kernel.apply(&flush), Ok(()));
    assert!(kernel.pending_faults().is_empty());
}

#[test]
fn apply_plan_stops_at_the_first_failure() {
    let mut kernel = SimulatedKernel::new();
    kernel.inject(Fault::new(Errno::ENOMEM).on(OperationKind::AddDestination));
    let plan = diff(&kernel.table(), &desired());
    let err = kernel.apply_plan(&plan).expect_err("the fault fires");
    assert_eq!(
        err,
        Rejected {
            operation: Operation::AddDestination(web(), backend(1)),
            errno: Errno::ENOMEM,
        }
    );
    assert_eq!(
        err.to_string(),
        "`-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1` failed: ENOMEM (cannot allocate memory)"
    );
    assert_eq!(kernel.journal().len(), 2);
    // Re-planning from what the kernel now has finishes the job.
    let rest = diff(&kernel.table(), &desired());
    assert_eq!(rest.len(), plan.len() - 1);
    kernel.apply_plan(&rest).expect("no more faults");
    assert_eq!(kernel.table(), desired());
}

#[test]
fn loading_ignores_faults_and_the_journal() {
    let mut kernel = SimulatedKernel::new();
    kernel.inject(Fault::new(Errno::new(5)).forever()); // EIO, not a named constant
    kernel.load(&desired()).expect("set-up is not under test");
    assert_eq!(kernel.table(), desired());
    assert!(kernel.journal().is_empty());
    assert_eq!(kernel.pending_faults().len(), 1);
}

#[test]
fn loading_an_invalid_table_is_rejected() {
    let bad = Table::new().with_service_config(
        ServiceConfig::new(Service::new(web(), Scheduler::RoundRobin)).with_destination(
            Destination::new(Ipv4Addr::new(224, 0, 0, 1), 80, Forwarding::Masquerade),
        ),
    );
    let err = SimulatedKernel::with_table(&bad).expect_err("multicast destination");
    assert_eq!(err.errno, Errno::EINVAL);
    assert_eq!(
        OperationKind::of(&err.operation),
        OperationKind::AddDestination
    );
}

#[test]
fn the_journal_records_every_request() {
    let mut kernel = SimulatedKernel::new();
    let delete = Operation::DeleteService(web());
    assert_eq!(kernel.apply(&delete), Err(Errno::ESRCH));
    let journal = kernel.take_journal();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].operation, delete);
    assert_eq!(journal[0].result, Err(Errno::ESRCH));
    assert!(!journal[0].injected);
    assert!(kernel.journal().is_empty());
}

#[test]
fn the_kernel_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<SimulatedKernel>();
    shareable::<Fault>();
}

fn small_table() -> impl Strategy<Value = Table> {
    let service = (
        0u8..4,
        prop_oneof![
            Just(Scheduler::RoundRobin),
            Just(Scheduler::WeightedLeastConnection)
        ],
    );
    let dest = (1u8..6, 0u32..3);
    proptest::collection::vec((service, proptest::collection::vec(dest, 0..4)), 0..4).prop_map(
        |services| {
            services
                .into_iter()
                .map(|((i, scheduler), dests)| {
                    let key = ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, i), 80);
                    ServiceConfig::new(Service::new(key, scheduler)).with_destinations(
                        dests.into_iter().map(|(d, w)| Destination {
                            weight: Weight::new(w).expect("small"),
                            ..backend(d)
                        }),
                    )
                })
                .collect()
        },
    )
}

fn kind() -> impl Strategy<Value = OperationKind> {
    prop_oneof![
        Just(OperationKind::AddService),
        Just(OperationKind::EditService),
        Just(OperationKind::DeleteService),
        Just(OperationKind::AddDestination),
        Just(OperationKind::EditDestination),
        Just(OperationKind::DeleteDestination),
    ]
}

proptest! {
    /// A controller that re-lists and re-plans after each failure reaches the desired table
    /// once the injected faults are spent: one more round than there are failures.
    #[test]
    fn replanning_after_failures_converges(
        a in small_table(),
        b in small_table(),
        kind in kind(),
        count in 1usize..4,
        errno in prop_oneof![Just(Errno::ENOMEM), Just(Errno::EBUSY), Just(Errno::EAGAIN)],
    ) {
        let mut kernel = SimulatedKernel::with_table(&a).expect("valid");
        kernel.inject(Fault::new(errno).on(kind).times(count));
        let mut rounds = 0;
        loop {
            rounds += 1;
            prop_assert!(rounds <= count + 1, "did not converge");
            let plan = diff(&kernel.table(), &b);
            match kernel.apply_plan(&plan) {
                Ok(()) => break,
                Err(rejected) => prop_assert_eq!(rejected.errno, errno),
            }
        }
        prop_assert_eq!(kernel.table(), b);
        let failures = kernel.journal().iter().filter(|e| e.injected).count();
        prop_assert_eq!(failures, rounds - 1);
    }
}
