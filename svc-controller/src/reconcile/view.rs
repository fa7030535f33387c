//! The view: what the reconciler believes the kernel holds for the virtual servers it owns.
//! It changes only on an operation's successful answer or on a read of the kernel; a virtual
//! server whose last change failed is suspect and read again before it is planned.

use super::*;

/// The kernel's state as the reconciler believes it.
#[derive(Debug, Default)]
pub(super) struct View {
    /// What the kernel holds for the virtual servers we own, from successful answers and reads.
    pub(super) table: Table,
    /// Virtual servers whose view must be re-read before planning.
    pub(super) suspect: BTreeSet<VirtualServerKey>,
    /// Virtual servers this process created, or that a Service asked for while it ran: the
    /// deletion of any other (a leftover of a Service deleted while no controller ran, or
    /// someone else's entry on an address it manages) is logged as a warning, with the rule
    /// that made it ours.
    pub(super) known: BTreeSet<VirtualServerKey>,
}

/// What following an accepted operation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Followed {
    /// Whether the view could follow the operation (it had the service the operation is
    /// about); when not, the virtual server is suspect.
    pub(super) in_view: bool,
    /// A virtual server deleted that this process did not create and no Service asked for.
    pub(super) unrequested: Option<VirtualServerKey>,
}

impl View {
    /// Takes in the kernel's state of `key`, just read (`None`: the kernel does not have it);
    /// the virtual server is no longer suspect.
    pub(super) fn take_read(&mut self, key: VirtualServerKey, state: Option<&ServiceState>) {
        match state {
            Some(s) => {
                self.table.insert(s.config.clone());
            }
            None => {
                self.table.remove_service(&to_service_key(&key));
            }
        }
        self.suspect.remove(&key);
    }

    /// Follows an operation the kernel accepted.
    pub(super) fn follow(&mut self, op: &Operation) -> Followed {
        let mut unrequested = None;
        let in_view = match op {
            Operation::AddService(s) => {
                if let Some(key) = from_service_key(&s.key) {
                    self.known.insert(key);
                }
                self.table.insert(ServiceConfig::new(s.clone()));
                true
            }
            Operation::EditService(s) => {
                self.table.insert_service(s.clone());
                true
            }
            Operation::DeleteService(k) => {
                if let Some(key) = from_service_key(k)
                    && !self.known.remove(&key)
                {
                    unrequested = Some(key);
                }
                self.table.remove_service(k);
                true
            }
            Operation::AddDestination(k, d) | Operation::EditDestination(k, d) => {
                self.table.insert_destination(k, *d).is_ok()
            }
            Operation::DeleteDestination(k, d) => {
                self.table.remove_destination(k, d);
                true
            }
            _ => true,
        };
        Followed {
            in_view,
            unrequested,
        }
    }

    /// Whether an owned virtual server on `addr` that is not desired is suspect (it may
    /// still be in the kernel).
    pub(super) fn suspect_undesired_on(&self, addr: IpAddr, desired: &DesiredState) -> bool {
        let (lo, hi) = vs_range(addr);
        self.suspect
            .range(lo..=hi)
            .any(|k| !desired.virtual_servers().contains_key(k))
    }
}
