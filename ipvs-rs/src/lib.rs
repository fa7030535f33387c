//! # ipvs — Linux IPVS from Rust, complete, typed and fast
//!
//! IPVS (IP Virtual Server) is the kernel's layer-4 load balancer. A *service* (a virtual
//! server: an address, protocol and port, or a firewall mark) spreads connections over its
//! *destinations* (real servers) with a *scheduler*, forwarding them by NAT, direct routing,
//! tunnelling or local delivery. This crate drives it over its generic-netlink API (family
//! `IPVS`), the same API `ipvsadm` uses, without shelling out and without C.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`model`] | the typed table: [`Service`](model::Service), [`Destination`](model::Destination), [`Scheduler`](model::Scheduler), statistics, sync daemons, kernel features |
//! | [`client`] | the handles: [`Ipvs`] (blocking) and `AsyncIpvs` (tokio, feature `tokio`), and [`Error`]; every call is a sans-IO state machine both handles run, so they behave alike |
//! | [`table`] | desired state: a [`Table`](table::Table) snapshot, a minimal [`diff`](table::diff), an in-memory [`SimulatedKernel`](table::SimulatedKernel) |
//! | [`codec`] | sans-IO messages: every [`Operation`](codec::Operation) and read, encoded and decoded |
//! | [`transport`] | netlink sockets: one per handle, deadlines on every call, batching |
//!
//! Every call needs `CAP_NET_ADMIN` (in the initial user namespace, reads included), and acts
//! on the network namespace the handle was opened in.
//!
//! ## Program a service
//!
//! ```no_run
//! use std::net::Ipv4Addr;
//! use ipvs::Ipvs;
//! use ipvs::model::{Destination, Forwarding, Scheduler, Service, ServiceKey};
//!
//! let mut ipvs = Ipvs::open()?;
//! let web = ServiceKey::tcp(Ipv4Addr::new(198, 51, 100, 10), 80);
//! ipvs.add_service(&Service::new(web, Scheduler::WeightedRoundRobin))?;
//! for last in [2, 6] {
//!     let real = Destination::new(Ipv4Addr::new(203, 0, 113, last), 8080, Forwarding::Masquerade);
//!     ipvs.add_destination(&web, &real)?;
//! }
//! # Ok::<(), ipvs::Error>(())
//! ```
//!
//! ## Read the table, with statistics
//!
//! ```no_run
//! # let mut ipvs = ipvs::Ipvs::open()?;
//! for entry in ipvs.services()? {
//!     println!("{} {} ({} connections)", entry.service.key, entry.service.scheduler, entry.stats.connections);
//!     for dest in ipvs.destinations(&entry.service.key)? {
//!         let d = &dest.destination;
//!         println!("  -> {}:{} weight {} active {}", d.addr, d.port, d.weight.get(), dest.active_connections);
//!     }
//! }
//! # Ok::<(), ipvs::Error>(())
//! ```
//!
//! ## Change weights, drain, delete
//!
//! ```no_run
//! # use std::net::Ipv4Addr;
//! # use ipvs::model::{Destination, DestinationKey, Forwarding, ServiceKey, Weight};
//! # let mut ipvs = ipvs::Ipvs::open()?;
//! # let web = ServiceKey::tcp(Ipv4Addr::new(198, 51, 100, 10), 80);
//! let mut real = Destination::new(Ipv4Addr::new(203, 0, 113, 2), 8080, Forwarding::Masquerade);
//! real.weight = Weight::new(0).expect("0 is a valid weight"); // no new connections; existing ones stay
//! ipvs.edit_destination(&web, &real)?;
//! ipvs.delete_destination(&web, &DestinationKey { addr: real.addr, port: real.port })?;
//! ipvs.delete_service(&web)?;
//! # Ok::<(), ipvs::Error>(())
//! ```
//!
//! ## Push thousands of changes at once, and learn which failed
//!
//! [`Ipvs::apply_batch`] sends many requests per system call, each with its own sequence
//! number and result. The kernel has no transactions: a failure does not stop the rest.
//!
//! ```no_run
//! # use std::net::Ipv4Addr;
//! use ipvs::codec::Operation;
//! use ipvs::model::{Scheduler, Service, ServiceKey};
//! # let mut ipvs = ipvs::Ipvs::open()?;
//! let ops: Vec<Operation> = (0..10_000)
//!     .map(|i| ServiceKey::tcp(Ipv4Addr::from(0xC612_0000_u32 + i), 80))
//!     .map(|key| Operation::AddService(Service::new(key, Scheduler::RoundRobin)))
//!     .collect();
//! for (op, result) in ops.iter().zip(ipvs.apply_batch(&ops)?) {
//!     if let Err(e) = result {
//!         eprintln!("{op:?}: {e}");
//!     }
//! }
//! # Ok::<(), ipvs::Error>(())
//! ```
//!
//! ## Read many services at once
//!
//! [`Ipvs::services_with_destinations`] reads the whole table, spreading the per-service
//! destination dumps over a few sockets. Listings run on sockets the handle keeps for dumps
//! (opened on first use), whose replies are decoded straight from their bytes
//! ([`codec::ListingMessage`]); a service dump uses large receive buffers, so the kernel sends
//! it in few chunks (it resumes a service dump by walking past every service already sent).
//! To re-read only some services (those a controller
//! is about to change, a slice of a periodic check), [`Ipvs::services_by_key`] sends one
//! `GET_SERVICE` per key in a single batch (`None` where the kernel has no such service) and
//! [`Ipvs::destinations_of`] dumps the destinations of each:
//!
//! ```no_run
//! # use std::net::Ipv4Addr;
//! # use ipvs::model::ServiceKey;
//! # let mut ipvs = ipvs::Ipvs::open()?;
//! let keys: Vec<ServiceKey> = (1..=200)
//!     .map(|i| ServiceKey::tcp(Ipv4Addr::new(198, 51, 100, i), 80))
//!     .collect();
//! let services = ipvs.services_by_key(&keys)?; // a few system calls for all 200
//! let present: Vec<ServiceKey> = services.iter().flatten().map(|s| s.service.key).collect();
//! for (key, dests) in present.iter().zip(ipvs.destinations_of(&present)?) {
//!     println!("{key}: {} destinations", dests.len());
//! }
//! # Ok::<(), ipvs::Error>(())
//! ```
//!
//! ## Converge on a desired table
//!
//! Build the table you want, read the one you have, and apply the minimal
//! [`Plan`](table::Plan) between them: edits rather than delete + add, so established
//! connections keep their destination. Restrict both sides to what you own (see
//! [`Table::retain`](table::Table::retain)) to leave other tools' services alone.
//!
//! ```no_run
//! # use ipvs::table::{diff, Table};
//! # let mut ipvs = ipvs::Ipvs::open()?;
//! # let desired = Table::new();
//! let listing = ipvs
//!     .services()?
//!     .into_iter()
//!     .map(|s| { let d = ipvs.destinations(&s.service.key); d.map(|d| (s, d)) })
//!     .collect::<Result<Vec<_>, _>>()?;
//! let plan = diff(&Table::from_entries(listing), &desired);
//! println!("{plan}"); // one ipvsadm-style line per operation
//! for result in ipvs.apply_batch(plan.operations())? {
//!     result?;
//! }
//! # Ok::<(), ipvs::Error>(())
//! ```
//!
//! ## Another network namespace, async, deadlines
//!
//! [`Ipvs::in_namespace`] opens the socket in another namespace (`/run/netns/NAME`,
//! `/proc/PID/ns/net`) without moving the calling thread. `AsyncIpvs` (feature `tokio`) has the
//! same methods as async functions, written once with the blocking ones: the handles differ
//! only in how they wait (and a large listing's shares run on threads or on tasks). Every call has a deadline
//! ([`transport::Options::timeout`], 5 s by default, renewed by every datagram the kernel
//! sends, so a long dump of a huge table completes): no call waits forever on a lost reply.
//!
//! One kernel answer never comes: stopping a sync daemon whose thread has not run yet (a stop
//! right after the start, on a busy machine) makes the kernel's handler return `EINTR`, for
//! which netlink sends no acknowledgement at all, although the daemon is stopped. The handles
//! do not wait for a deadline there: the kernel answers inside `sendmsg` or never, so they read
//! what is queued once the request is sent and, finding nothing, list the daemons to see
//! whether the start or stop took effect
//! ([`transport::Connection::request_allowing_silence`]).
//!
//! ## Errors
//!
//! [`Error::kind`] says what went wrong in the operation's terms — [`ErrorKind::AlreadyExists`],
//! [`ErrorKind::NotFound`] (a missing service, destination or scheduler module),
//! [`ErrorKind::ModuleMissing`], [`ErrorKind::PermissionDenied`], [`ErrorKind::Unsupported`],
//! [`ErrorKind::TimedOut`], … — and [`Error::errno`] keeps the kernel's raw errno.
//!
//! ## Kernel versions
//!
//! The kernel silently ignores attributes it does not know, so a setting sent to an older
//! kernel would be dropped without an error. This crate refuses it instead, with
//! [`ErrorKind::Unsupported`] naming the feature. What the running kernel supports is known
//! from its release and confirmed by what its replies contain
//! ([`Ipvs::features`]).
//!
//! | feature | kernel |
//! | --- | --- |
//! | the IPVS generic-netlink API | 2.6.28 |
//! | destination address family (mixed IPv4/IPv6 behind tunnels) | 3.18 |
//! | 64-bit statistics (`STATS64`; older kernels report 32-bit counters, decoded the same) | 4.1 |
//! | sync daemon max length, multicast group, port and TTL | 4.3 |
//! | GUE tunnels (type and port) | 5.2 |
//! | GRE tunnels, tunnel checksum flags | 5.3 |
//! | the `IPVS` family autoloads the `ip_vs` module on first use | releases since late 2021 |
//!
//! On older kernels a missing module is reported as [`ErrorKind::ModuleMissing`].

pub mod client;
pub mod codec;
pub mod model;
pub mod table;
pub mod transport;

#[cfg(feature = "tokio")]
pub use client::AsyncIpvs;
pub use client::{BatchResults, Error, ErrorKind, Ipvs, Result};
