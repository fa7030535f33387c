//! The typed model of the IPVS table: services, destinations, schedulers, statistics.
//!
//! These are plain data types, independent of any wire format. They are built to be
//! *correct by construction*: values that the kernel would refuse or silently misread
//! (a weight above `i32::MAX`, a lower threshold above the upper one, a scheduler name
//! longer than 15 bytes, an IPv6 persistence prefix of 0 or 129…) cannot be built, and
//! the constructors that check them return a typed [`ModelError`].
//!
//! Rules that span several values (a persistence netmask of the wrong family for its
//! service, a mixed-family destination without tunnel forwarding, a feature the running
//! kernel lacks) are checked when an operation is encoded, by
//! [`crate::codec::Operation::to_message`].
//!
//! Write-side types ([`Service`], [`Destination`], [`SyncDaemon`], [`Timeouts`]) describe
//! what a caller asks for; read-side types ([`ServiceEntry`], [`DestinationEntry`],
//! [`Stats`], [`Info`]) add what only the kernel reports.

mod daemon;
mod destination;
mod error;
mod features;
mod info;
mod name;
mod protocol;
mod scheduler;
mod service;
mod stats;
mod timeouts;

pub use daemon::{DaemonState, SyncDaemon};
pub use destination::{
    Destination, DestinationEntry, DestinationKey, Forwarding, Thresholds, Tunnel, Weight,
};
pub use error::ModelError;
pub use features::{Feature, KernelFeatures, KernelVersion};
pub use info::{Info, Version};
pub use name::{InterfaceName, PersistenceEngine};
pub use protocol::{AddressFamily, Protocol};
pub use scheduler::{CustomScheduler, Scheduler};
pub use service::{
    Ipv6PrefixLen, Persistence, PersistenceNetmask, Service, ServiceEntry, ServiceFlags, ServiceKey,
};
pub use stats::{Rates, Stats};
pub use timeouts::Timeouts;
