//! What operators see: logs ([`logging`]), Prometheus metrics ([`Metrics`]), health
//! ([`Health`]) and the HTTP endpoints serving them ([`http`]).

pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;

pub use health::Health;
pub use metrics::Metrics;
