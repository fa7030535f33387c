//! [`diff`]: the minimal [`Plan`] that turns one [`Table`] into another.

use std::fmt;

use super::notation::IpvsadmNotation;
use super::snapshot::{ServiceConfig, Table};
use crate::codec::Operation;

/// The operations that make the kernel's table `current` into `desired`, fewest first and
/// in an order the kernel accepts when they are applied one after the other.
///
/// * A service only in `desired`: `AddService`, then `AddDestination` for each of its
///   destinations.
/// * A service only in `current`: a single `DeleteService` (its destinations go with it).
/// * A service in both: `EditService` if its settings differ (the kernel's `SET_SERVICE`
///   changes everything but the key); then `AddDestination` for destinations only in
///   `desired`, `EditDestination` for those whose settings differ (`SET_DEST` changes
///   weight, forwarding, thresholds and tunnel settings), `DeleteDestination` for those only
///   in `current`. Nothing for what is equal.
///
/// A service or destination is never deleted and added back: see the
/// [module documentation](super) for why edits matter.
///
/// The order is deterministic. Services come in [`Table`] order, each with all of its
/// operations (service first, then destinations: added, edited, deleted), and the services
/// to delete come last, so that nothing is removed before its replacement is in place.
///
/// `diff` does not check that `desired` is something the kernel accepts (a destination of
/// another family than its service without tunnel forwarding, say); applying the plan will
/// report it.
pub fn diff(current: &Table, desired: &Table) -> Plan {
    let mut ops = Vec::new();
    for want in desired {
        plan_service(&mut ops, current.get(&want.key()), Some(want));
    }
    for have in current {
        if !desired.contains_service(&have.key()) {
            plan_service(&mut ops, Some(have), None);
        }
    }
    Plan { operations: ops }
}

/// The operations that turn one service as the kernel holds it (`have`; `None`: absent) into
/// `want` (`None`: removed): what [`diff`] plans for that service, without building tables.
/// For a controller that reconciles one service at a time.
///
/// ```
/// use ipvs::table::{ServiceConfig, diff_service};
/// use ipvs::model::{Destination, Forwarding, Protocol, Scheduler, Service, ServiceKey};
///
/// let key = ServiceKey::Tuple { protocol: Protocol::Tcp, addr: "10.96.0.10".parse()?, port: 80 };
/// let want = ServiceConfig::new(Service::new(key, Scheduler::RoundRobin))
///     .with_destination(Destination::new("10.0.0.5".parse::<std::net::IpAddr>()?, 8080, Forwarding::Masquerade));
/// // Absent: the service and its destination are added.
/// assert_eq!(diff_service(None, Some(&want)).len(), 2);
/// // Equal: nothing to do. Removed: one delete.
/// assert!(diff_service(Some(&want), Some(&want)).is_empty());
/// assert_eq!(diff_service(Some(&want), None).len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn diff_service(have: Option<&ServiceConfig>, want: Option<&ServiceConfig>) -> Plan {
    let mut ops = Vec::new();
    plan_service(&mut ops, have, want);
    Plan { operations: ops }
}

fn plan_service(
    ops: &mut Vec<Operation>,
    have: Option<&ServiceConfig>,
    want: Option<&ServiceConfig>,
) {
    match (have, want) {
        (None, Some(want)) => add_service(ops, want),
        (Some(have), Some(want)) => update_service(ops, have, want),
        (Some(have), None) => ops.push(Operation::DeleteService(have.key())),
        (None, None) => {}
    }
}

fn add_service(ops: &mut Vec<Operation>, want: &ServiceConfig) {
    let key = want.key();
    ops.push(Operation::AddService(want.service().clone()));
    ops.extend(
        want.destinations()
            .map(|d| Operation::AddDestination(key, *d)),
    );
}

fn update_service(ops: &mut Vec<Operation>, have: &ServiceConfig, want: &ServiceConfig) {
    let key = want.key();
    if have.service() != want.service() {
        ops.push(Operation::EditService(want.service().clone()));
    }
    for d in want.destinations() {
        if !have.contains_destination(&d.key()) {
            ops.push(Operation::AddDestination(key, *d));
        }
    }
    for d in want.destinations() {
        if let Some(old) = have.destination(&d.key())
            && old != d
        {
            ops.push(Operation::EditDestination(key, *d));
        }
    }
    for d in have.destinations() {
        if !want.contains_destination(&d.key()) {
            ops.push(Operation::DeleteDestination(key, d.key()));
        }
    }
}

/// The kind of an [`Operation`], without its data: to count, filter or match operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OperationKind {
    /// [`Operation::AddService`].
    AddService,
    /// [`Operation::EditService`].
    EditService,
    /// [`Operation::DeleteService`].
    DeleteService,
    /// [`Operation::AddDestination`].
    AddDestination,
    /// [`Operation::EditDestination`].
    EditDestination,
    /// [`Operation::DeleteDestination`].
    DeleteDestination,
    /// [`Operation::Flush`].
    Flush,
    /// [`Operation::ZeroCounters`].
    ZeroCounters,
    /// [`Operation::SetTimeouts`].
    SetTimeouts,
    /// [`Operation::StartDaemon`].
    StartDaemon,
    /// [`Operation::StopDaemon`].
    StopDaemon,
}

impl OperationKind {
    /// The kind of an operation.
    pub fn of(operation: &Operation) -> Self {
        match operation {
            Operation::AddService(_) => Self::AddService,
            Operation::EditService(_) => Self::EditService,
            Operation::DeleteService(_) => Self::DeleteService,
            Operation::AddDestination(..) => Self::AddDestination,
            Operation::EditDestination(..) => Self::EditDestination,
            Operation::DeleteDestination(..) => Self::DeleteDestination,
            Operation::Flush => Self::Flush,
            Operation::ZeroCounters(_) => Self::ZeroCounters,
            Operation::SetTimeouts(_) => Self::SetTimeouts,
            Operation::StartDaemon(_) => Self::StartDaemon,
            Operation::StopDaemon(_) => Self::StopDaemon,
        }
    }

    /// Whether `operation` is of this kind.
    pub fn matches(self, operation: &Operation) -> bool {
        Self::of(operation) == self
    }
}

impl From<&Operation> for OperationKind {
    fn from(operation: &Operation) -> Self {
        Self::of(operation)
    }
}

/// An ordered list of operations, as [`diff`] computes it.
///
/// Apply them in order, stopping or re-planning at the first failure: the kernel has no
/// transactions, so after a failure the table is somewhere between `current` and
/// `desired`, and the simplest correct recovery is to list it again and `diff` anew.
///
/// `Display` writes one operation per line in `ipvsadm` notation (see
/// [`IpvsadmNotation`]), each line ending with a newline; an empty plan writes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    operations: Vec<Operation>,
}

impl Plan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// How many operations it has.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// The operations, in order.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The operations, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Operation> {
        self.operations.iter()
    }

    /// The operations, by value.
    pub fn into_operations(self) -> Vec<Operation> {
        self.operations
    }

    /// How many operations are of `kind`.
    pub fn count(&self, kind: OperationKind) -> usize {
        self.operations.iter().filter(|op| kind.matches(op)).count()
    }

    /// How many operations of each kind it has.
    pub fn summary(&self) -> PlanSummary {
        let mut s = PlanSummary::default();
        for op in &self.operations {
            let counter = match OperationKind::of(op) {
                OperationKind::AddService => &mut s.services_added,
                OperationKind::EditService => &mut s.services_edited,
                OperationKind::DeleteService => &mut s.services_deleted,
                OperationKind::AddDestination => &mut s.destinations_added,
                OperationKind::EditDestination => &mut s.destinations_edited,
                OperationKind::DeleteDestination => &mut s.destinations_deleted,
                _ => &mut s.other,
            };
            *counter += 1;
        }
        s
    }
}

impl From<Vec<Operation>> for Plan {
    fn from(operations: Vec<Operation>) -> Self {
        Self { operations }
    }
}

impl From<Plan> for Vec<Operation> {
    fn from(plan: Plan) -> Self {
        plan.operations
    }
}

impl FromIterator<Operation> for Plan {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        Self {
            operations: iter.into_iter().collect(),
        }
    }
}

impl IntoIterator for Plan {
    type Item = Operation;
    type IntoIter = std::vec::IntoIter<Operation>;

    fn into_iter(self) -> Self::IntoIter {
        self.operations.into_iter()
    }
}

impl<'a> IntoIterator for &'a Plan {
    type Item = &'a Operation;
    type IntoIter = std::slice::Iter<'a, Operation>;

    fn into_iter(self) -> Self::IntoIter {
        self.operations.iter()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for op in &self.operations {
            writeln!(f, "{}", IpvsadmNotation(op))?;
        }
        Ok(())
    }
}

/// How many operations of each kind a [`Plan`] has.
///
/// `Display` writes a one-line summary for logs, e.g.
/// `services: +1 ~0 -2, destinations: +3 ~1 -0`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PlanSummary {
    /// `AddService` operations.
    pub services_added: usize,
    /// `EditService` operations.
    pub services_edited: usize,
    /// `DeleteService` operations.
    pub services_deleted: usize,
    /// `AddDestination` operations.
    pub destinations_added: usize,
    /// `EditDestination` operations.
    pub destinations_edited: usize,
    /// `DeleteDestination` operations.
    pub destinations_deleted: usize,
    /// Any other operation (never produced by [`diff`]).
    pub other: usize,
}

impl PlanSummary {
    /// The number of operations counted.
    pub fn total(&self) -> usize {
        self.services_added
            + self.services_edited
            + self.services_deleted
            + self.destinations_added
            + self.destinations_edited
            + self.destinations_deleted
            + self.other
    }
}

impl fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "services: +{} ~{} -{}, destinations: +{} ~{} -{}",
            self.services_added,
            self.services_edited,
            self.services_deleted,
            self.destinations_added,
            self.destinations_edited,
            self.destinations_deleted
        )?;
        if self.other != 0 {
            write!(f, ", other: {}", self.other)?;
        }
        Ok(())
    }
}
