//! Real-kernel test support for this workspace.
//!
//! IPVS lives in the kernel, so the library and the controller are proven against the real
//! thing. This crate gives those tests what they need and nothing more:
//!
//! - [`Netns`]: a fresh network namespace per test (an empty IPVS table, no way to touch the
//!   host's), entered on helper threads so the test's own thread never moves;
//! - [`link`]: veth pairs, addresses, routes and sysctls inside a namespace, over rtnetlink;
//! - [`backend`]: tiny TCP servers that answer with their name, and clients that count answers;
//! - [`table`]: a namespace's IPVS table as text, for comparing;
//! - [`topology`]: a client → director → backends network ready for IPVS;
//! - [`nodes`]: a small cluster's network: nodes on a LAN, pods behind each node's bridge,
//!   a client outside; [`witness`]: backends that answer with their name and the client
//!   address they saw;
//! - [`daemon`]: the node daemon as a real process in a namespace (log, HTTP, signals);
//! - [`bench`](mod@bench): what the benchmark programs measure a process and a machine with;
//! - [`synthetic`]: deterministic synthetic clusters (Services and EndpointSlices as manifests)
//!   for the scale benchmarks.
//!
//! # The real-kernel marker
//!
//! A test that needs the real kernel (IPVS, veth, namespaces) lives in a module named
//! `real_kernel` and is marked `#[ignore = "real kernel: run by cargo xtask test"]`. Plain
//! `cargo test` lists it as ignored; the harness (`cargo xtask test`) runs exactly the ignored
//! tests under `real_kernel`, on the host when its kernel has IPVS and we hold CAP_NET_ADMIN, and
//! otherwise inside a QEMU VM booted with a Debian kernel. It never counts a skipped test as passed.

pub mod backend;
pub mod bench;
pub mod cluster;
pub mod daemon;
pub mod link;
mod netns;
pub mod nodes;
pub mod synthetic;
pub mod table;
pub mod topology;
pub mod witness;

pub use netns::{Netns, current_netns_inode};
