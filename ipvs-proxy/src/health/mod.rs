//! Health, both kinds kube-proxy answers: the proxy's own ([`proxy`]: `/healthz` and
//! `/livez`, served with the metrics) and each `LoadBalancer` Service's on its
//! `healthCheckNodePort` ([`services`]), which says whether this node has a local endpoint
//! and a healthy proxy.

pub mod proxy;
pub mod services;

pub use proxy::Health;
pub use services::ServiceHealthChecks;
