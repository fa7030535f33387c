//! # ipvs-proxy: the node daemon
//!
//! The binary operators run on every node in place of kube-proxy's IPVS mode. It is thin:
//! the logic lives in [`svc_controller`] (what the table should be, how to get it there
//! safely, and the [runtime](svc_controller::runtime) that turns changes into syncs); this
//! crate wires what a process needs around it:
//!
//! - [`settings`]: flags and an optional kube-proxy `KubeProxyConfiguration` file;
//! - [`kube_proxy_flags`]: the rest of kube-proxy's flags, so a kube-proxy DaemonSet's command
//!   line starts the daemon unchanged;
//! - [`source`]: Services, EndpointSlices and the Node from a Kubernetes API server
//!   ([`source::kubernetes`]) or from a folder of manifests ([`source::manifests`]);
//! - [`node_setup`]: the sysctls and IPVS timeouts set at start-up;
//! - [`health`]: `/healthz` and `/livez`, and the health checks load balancers ask on a
//!   Service's `healthCheckNodePort`;
//! - [`descriptors`]: the file descriptor limit raised at start, and the HTTP endpoints' share;
//! - [`telemetry`]: logs, `/metrics` and the HTTP endpoints, kept up to date (with
//!   [`health`]) by observing the engine;
//! - [`daemon`]: start-up, shutdown on SIGTERM (the table stays) and cleanup mode.

pub mod daemon;
pub mod descriptors;
pub mod health;
pub mod kube_proxy_flags;
pub mod node_setup;
pub mod settings;
pub mod source;
pub mod telemetry;
