//! What operators see: logs ([`logging`]), Prometheus metrics ([`Metrics`]), the HTTP
//! endpoints serving them and `/healthz` ([`http`]), and the [`Telemetry`] that keeps them and
//! [`health`](crate::health) up to date as the engine reports.

pub mod http;
pub mod logging;
pub mod metrics;
pub mod observer;

pub use metrics::Metrics;
pub use observer::Telemetry;
