//! # ipvs-proxy: the node daemon
//!
//! The binary operators run on every node in place of kube-proxy's IPVS mode. It is thin:
//! the logic lives in [`svc_controller`] (what the table should be, and how to get it there
//! safely); this crate wires the parts a process needs:
//!
//! - [`settings`]: flags and an optional kube-proxy `KubeProxyConfiguration` file;
//! - [`kube_proxy_flags`]: the rest of kube-proxy's flags, so a kube-proxy DaemonSet's command
//!   line starts the daemon unchanged;
//! - [`source`]: Services, EndpointSlices and the Node from a Kubernetes API server
//!   ([`source::kubernetes`]) or from a folder of manifests ([`source::manifests`]);
//! - [`store`]: the objects kept, trimmed to what the computation reads;
//! - [`engine`]: the loop that turns source changes into incremental syncs;
//! - [`node_setup`]: the sysctls and IPVS timeouts set at start-up;
//! - [`service_health`]: the health checks load balancers ask on a Service's
//!   `healthCheckNodePort`;
//! - [`descriptors`]: the file descriptor limit raised at start, and the HTTP endpoints' share;
//! - [`memory`]: free memory given back to the system after large work;
//! - [`cpus`]: how many CPUs parallel work may use;
//! - [`telemetry`]: logs, `/metrics`, `/healthz` and `/livez`;
//! - [`daemon`]: start-up, shutdown on SIGTERM (the table stays) and cleanup mode.

pub mod cpus;
pub mod daemon;
pub mod descriptors;
pub mod engine;
pub mod kube_proxy_flags;
pub mod memory;
pub mod node_setup;
pub mod priority;
pub mod service_health;
pub mod settings;
pub mod source;
pub mod store;
pub mod telemetry;

#[cfg(test)]
mod testing;
