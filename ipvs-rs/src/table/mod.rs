//! Desired state: the IPVS table as a value, the minimal plan between two tables, and an
//! in-memory kernel to test against.
//!
//! A controller that keeps IPVS in line with some source of truth works in three steps:
//!
//! 1. **Read** what the kernel has: list the services and each one's destinations, and build
//!    a [`Table`] with [`Table::from_entries`]. Only configuration is kept: the kernel's
//!    HASHED flag, statistics and connection counts are dropped, so two listings of the
//!    same configuration compare equal.
//! 2. **Compute** what it should have, as another [`Table`] (written by hand with
//!    [`Table::with_service`] and [`ServiceConfig::with_destination`], or built from the
//!    source of truth), and keep only the services the controller owns on both sides with
//!    [`Table::retain`] or [`Table::filtered`], so that it never touches what others put in
//!    the kernel.
//! 3. **Apply** [`diff`]`(&current, &desired)`: a [`Plan`] of [`Operation`]s, in an order
//!    the kernel accepts when they are sent one after the other.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use ipvs::model::{Destination, Forwarding, Scheduler, Service, ServiceKey, Weight};
//! use ipvs::table::{diff, ServiceConfig, SimulatedKernel, Table};
//!
//! let web = ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80);
//! let backend = |last| Destination::new(Ipv4Addr::new(10, 1, 0, last), 8080, Forwarding::Masquerade);
//!
//! let desired = Table::new().with_service_config(
//!     ServiceConfig::new(Service::new(web, Scheduler::RoundRobin))
//!         .with_destination(backend(1))
//!         .with_destination(backend(2)),
//! );
//!
//! let mut kernel = SimulatedKernel::new();
//! let plan = diff(&kernel.table(), &desired);
//! assert_eq!(plan.len(), 3); // one service, two destinations
//! for op in &plan {
//!     kernel.apply(op)?;
//! }
//! assert_eq!(kernel.table(), desired);
//!
//! // Draining a backend is one edit, not a delete and an add.
//! let drained = Destination { weight: Weight::QUIESCED, ..backend(2) };
//! let next = desired.clone().with_destination(&web, drained)?;
//! let plan = diff(&kernel.table(), &next);
//! assert_eq!(plan.to_string(), "-e -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 0\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Why edits, not delete and add
//!
//! The kernel keeps connections (and persistence templates) pointing at the destination
//! object they were scheduled to. Deleting a destination moves it to the kernel's trash: its
//! established connections lose their destination (with `expire_nodest_conn` they are
//! dropped), and for the time between the delete and the add, new connections cannot be
//! scheduled to it at all. Deleting a *service* is worse: every destination goes with it and,
//! until it is added back, packets for the virtual address are not load-balanced at all.
//! `SET_SERVICE` and `SET_DEST`, on the other hand, change everything but the key in place
//! (scheduler, flags, persistence and persistence engine; weight, forwarding, thresholds and
//! tunnel settings): traffic does not flap, connections keep their destination, counters are
//! kept. So [`diff`] only deletes what is gone from the desired table, only adds what is
//! new, and edits the rest.
//!
//! For the same reason, the order is *make before break*: within a service, destinations are
//! added, then edited, then deleted, so a service whose backends are being replaced never
//! goes through a moment with none; services that disappear are deleted last.
//!
//! # Testing without a kernel
//!
//! [`SimulatedKernel`] applies [`Operation`]s to an in-memory table with the kernel's
//! checks and errnos (EEXIST, ESRCH, ENOENT, EINVAL, ...), lists itself back as the entries
//! a real listing returns, and can be told to fail chosen operations with [`Fault`]s, so that
//! a controller's retry logic can be tested in a unit test.
//!
//! [`Operation`]: crate::codec::Operation

mod diff;
mod notation;
mod simulated;
mod snapshot;

pub use diff::{OperationKind, Plan, PlanSummary, diff, diff_service};
pub use notation::IpvsadmNotation;
pub use simulated::{Errno, Fault, JournalEntry, Rejected, SimulatedKernel};
pub use snapshot::{IntoIter, Iter, ServiceConfig, Table, TableError};
