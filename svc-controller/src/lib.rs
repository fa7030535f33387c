//! # svc-controller: Kubernetes Services as IPVS virtual servers
//!
//! This crate computes, as a pure function, what the IPVS table of one node should contain for
//! a set of Kubernetes Services and EndpointSlices: the virtual servers, their real servers, and
//! the VIPs to bind on the dummy interface (`kube-ipvs0` by default); then keeps the node in
//! line with it.
//!
//! The crate has three layers, each usable alone:
//!
//! - **The desired state** (pure, talks to nothing): [`compute_service`] (one Service, for
//!   incremental work) and [`DesiredState`] (the whole node, updated Service by Service or
//!   computed at once). The rest of this page describes it; [`desired::reads`] says what it
//!   reads of each object, and [`mapping`] turns its virtual servers into the library's types.
//! - **The reconciler**: [`reconcile::Reconciler`] programs the desired state through a
//!   [`dataplane::Dataplane`] (the real node, [`dataplane::KernelDataplane`], or an in-memory
//!   one for tests, [`dataplane::MemoryDataplane`]), incrementally (work proportional to what
//!   changed), with graceful termination of TCP real servers, retries with backoff, periodic
//!   drift repair, and a restart that adopts the existing table without a single operation.
//!   What it may touch is decided by the rule in [`ownership`]: the virtual servers on the
//!   dummy interface's addresses and NodePorts on node addresses, never anyone else's.
//! - **The runtime**: [`runtime::Engine`] is the loop a node program runs: it keeps the
//!   Services and EndpointSlices its sources send, waits for their first state, adopts the
//!   node, then syncs each change incrementally and verifies the table every period, and
//!   reports what it does to an [`runtime::Observer`] (metrics, health). The `ipvs-proxy`
//!   daemon is this runtime plus sources, settings and telemetry.
//!
//! Builders for tests are in `testing` (feature `testing`).
//!
//! ## What becomes a virtual server
//! A virtual server is an (address, protocol, port) triple, [`VirtualServerKey`]. For each valid
//! entry of `spec.ports` (TCP, UDP or SCTP), a Service gets one for each of:
//!
//! | address | port | bound on the dummy interface | traffic policy |
//! |---|---|---|---|
//! | each `spec.clusterIPs` entry (one per family in dual-stack) | `port` | yes | internal |
//! | each NodePort address of this node (NodePort and LoadBalancer types) | `nodePort` | no | external |
//! | each `spec.externalIPs` entry | `port` | yes | external |
//! | each `status.loadBalancer.ingress[].ip` (LoadBalancer type, `ipMode` not `Proxy`) | `port` | yes | external |
//!
//! Nothing at all is made for `type: ExternalName`, for headless Services (`clusterIP: None`,
//! DNS points at the pods), and for Services labelled `service.kubernetes.io/service-proxy-name`
//! (another proxy owns them; see [`ProxyConfig::service_proxy_name`]).
//!
//! NodePort addresses are this node's addresses, narrowed by [`ProxyConfig::node_port_cidrs`],
//! never loopback nor IPv6 link-local: IPVS cannot serve NodePort on 127.0.0.1 (kubernetes
//! #56320, #67730), so it is not offered rather than silently broken
//! ([`ProxyConfig::node_port_addresses`] explains). A Service address that is already an address
//! of the node is not bound on the dummy interface a second time.
//!
//! The real servers of a virtual server are endpoints of the virtual server's own address
//! family only: an IPv6 ClusterIP of a dual-stack Service is served by the IPv6 EndpointSlices.
//! Endpoints come from the EndpointSlices labelled `kubernetes.io/service-name` in the
//! Service's namespace, whoever wrote them: Services without a selector, with hand-written
//! slices, work like any other. FQDN slices are skipped (IPVS needs addresses). Every real
//! server has weight 1. How the endpoint port is found from `targetPort` and the slice's ports
//! is described in [`desired::ports`]; endpoint choice in
//! [`desired::endpoints`].
//!
//! ## Which endpoints are used (KEP-1669)
//! Ready endpoints; when a set has none, the ones that are serving and terminating, so graceful
//! shutdowns of a whole Deployment do not refuse connections. The choice is made separately for
//! the cluster-wide set and for the node-local set (endpoints whose `nodeName` is this node).
//! When every chosen endpoint carries topology hints (`hints.forZones`) and the node has a zone,
//! the cluster-wide set is narrowed to the endpoints hinted for this zone, or left whole if no
//! endpoint is.
//!
//! ## Traffic policies
//! `externalTrafficPolicy: Local` makes the external addresses (NodePort, external IPs,
//! load-balancer IPs) use only the node-local set; `internalTrafficPolicy: Local` does the same
//! for ClusterIPs. **When the node-local set is empty, the virtual server is kept with no real
//! server.** The alternatives both hurt users:
//! - kube-proxy falls back to the cluster-wide set. External traffic under a `Local` policy is
//!   not source-NATed (keeping the client address is the point of the policy), so a remote pod
//!   answers the client directly, from an address the client never talked to, and the replies
//!   are lost: connections hang instead of failing (kubernetes #75262, #91812).
//! - kube-router deletes the virtual server. Packets to a VIP bound on the dummy interface are
//!   then delivered to the host itself: any host process listening on that port answers in the
//!   Service's name (the #72236 class of exposure), and the virtual server is created and
//!   deleted again each time the last local pod comes and goes.
//!
//! A virtual server without destinations makes IPVS answer each new connection with an ICMP
//! port unreachable at once: the failure is immediate and visible, the load balancer's health
//! check (`healthCheckNodePort`) steers traffic to nodes that have endpoints, and nothing on
//! the host is exposed. This matches what the KEPs specify for `Local` policies (drop when
//! there is no local endpoint) without losing replies.
//!
//! ## Scheduler and persistence
//! The scheduler is [`ProxyConfig::default_scheduler`] unless the Service has the annotation
//! [`SCHEDULER_ANNOTATION`] (`ipvs.kube-proxy.rs/scheduler: wlc`). Only the kernel's in-tree
//! schedulers are accepted ([`scheduler::in_tree`]); an unknown name is reported for that
//! Service and the default is used, so a typo degrades scheduling instead of taking the
//! Service down. `sessionAffinity: ClientIP` turns on IPVS persistence with
//! `sessionAffinityConfig.clientIP.timeoutSeconds` (default 10800), each client address its
//! own group.
//!
//! ## One vocabulary with the library
//! Protocols, address families, schedulers and persistence are the library's own types
//! ([`Protocol`], [`AddressFamily`], [`Scheduler`], [`Persistence`], re-exported here), so an
//! embedder reads one model; [`mapping`] owns every conversion between the desired state's
//! shapes and the library's services, destinations and keys.
//!
//! ## Problems, not panics
//! Invalid or inconsistent input (a port of 0, an address that does not parse, a slice whose
//! `addressType` does not match its addresses, a named port that resolves to nothing, ...) is
//! reported as a [`Problem`] naming the Service and the field; the bad part is skipped and the
//! rest of the Service, and every other Service, is computed as usual. What the API server
//! would refuse is refused here too (a loopback or broadcast ClusterIP, a ClusterIP on one of
//! the node's addresses, a `nodePort` outside [`ProxyConfig::node_port_range`], a link-local
//! endpoint, ...), since manifests never went through it: see [`desired::validate`].
//!
//! ## Kubernetes versions
//! The fields used exist in every Kubernetes version `k8s-openapi` supports (1.33 and later,
//! `ipMode` and `trafficDistribution` included). As a library, this crate enables no
//! `k8s-openapi` version feature: the final binary picks one (see `Cargo.toml`).

pub mod config;
pub mod dataplane;
pub mod desired;
pub mod mapping;
pub mod model;
pub mod netfilter;
pub mod node;
pub mod ownership;
pub mod problem;
pub mod reconcile;
pub mod runtime;
pub mod scheduler;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::{
    DEFAULT_AFFINITY_TIMEOUT_SECONDS, DEFAULT_DUMMY_INTERFACE, ProxyConfig, SCHEDULER_ANNOTATION,
    SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL,
};
pub use desired::{
    Changes, DesiredState, HealthCheck, NoLocalEndpoints, ServiceDesired, compute_service,
    group_slices, service_ref, slice_service,
};
pub use ipvs::model::{AddressFamily, Persistence, Protocol, Scheduler};
pub use model::{Exposure, RealServer, ServiceRef, VirtualServer, VirtualServerKey};
pub use node::NodeInfo;
pub use problem::Problem;
pub use scheduler::UnknownScheduler;
