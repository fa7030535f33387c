//! The health checks of `LoadBalancer` Services with `externalTrafficPolicy: Local`.
//!
//! Kubernetes gives such a Service a `healthCheckNodePort`, and the cloud's load balancer asks
//! every node on it whether to send the Service's external traffic there: only nodes with a
//! ready endpoint of the Service should get it, since the others have no real server for it
//! (see [`svc_controller`]'s documentation). Every node's proxy answers on that port, as
//! kube-proxy does, with the same answer:
//!
//! - `200` when the node has at least one ready endpoint of the Service and the proxy is
//!   healthy (`/healthz`), `503` otherwise (so a node being deleted, or whose proxy is stuck,
//!   is drained too);
//! - the headers `Content-Type: application/json`, `X-Content-Type-Options: nosniff` and
//!   `X-Load-Balancing-Endpoint-Weight: N` (the local endpoints);
//! - the body `{"service":{"namespace":…,"name":…},"localEndpoints":N,"serviceProxyHealthy":…}`,
//!   whatever the path asked.
//!
//! The engine records each Service's [`HealthCheck`] in [`ServiceHealthChecks`] as it computes
//! it, and the addresses to listen on: every address (IPv6 and IPv4, or IPv4 only where the
//! node has no IPv6) unless `nodePortAddresses` narrows the NodePorts to some node addresses,
//! in which case those addresses only, as kube-proxy does. [`serve`] opens a listener on each
//! port in use at each of those, closes the ones no longer wanted, and tries again every few
//! seconds to open one whose port is taken or whose address is gone, saying so once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use svc_controller::{HealthCheck, ServiceRef};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Health;
use crate::telemetry::http::{self, ServerLimits};

/// How long a port that could not be opened waits before the next try.
pub const BIND_RETRY: Duration = Duration::from_secs(5);

/// The health check of each Service that has one, shared by the engine (which records them)
/// and the listeners (which answer from them).
#[derive(Debug)]
pub struct ServiceHealthChecks {
    checks: Mutex<BTreeMap<ServiceRef, HealthCheck>>,
    /// Where to listen: `None` on every address, else on each of these.
    addresses: Mutex<Option<BTreeSet<IpAddr>>>,
    /// Bumped on every change of the ports in use or of the addresses, for [`serve`].
    ports_changed: watch::Sender<u64>,
}

impl Default for ServiceHealthChecks {
    fn default() -> Self {
        Self::new()
    }
}

/// One answer on a health check port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// 200 or 503.
    pub status: StatusCode,
    /// The ready endpoints on this node.
    pub local_endpoints: u32,
    /// The JSON body.
    pub body: String,
}

impl ServiceHealthChecks {
    /// No health check.
    pub fn new() -> Self {
        Self {
            checks: Mutex::new(BTreeMap::new()),
            addresses: Mutex::new(None),
            ports_changed: watch::Sender::new(0),
        }
    }

    /// Sets where the listeners listen: `None` on every address (the default), else on each of
    /// `addresses` (none: nowhere).
    pub fn set_addresses(&self, addresses: Option<BTreeSet<IpAddr>>) {
        let mut current = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        if *current != addresses {
            *current = addresses;
            drop(current);
            self.ports_changed.send_modify(|n| *n += 1);
        }
    }

    /// Where the listeners listen (see [`Self::set_addresses`]).
    pub fn addresses(&self) -> Option<BTreeSet<IpAddr>> {
        self.addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every listener wanted: each port in use at each address (`None`: every address), with
    /// the Service answering there.
    pub fn listeners(&self) -> BTreeMap<(u16, Option<IpAddr>), ServiceRef> {
        let ports = self.ports();
        let at: Vec<Option<IpAddr>> = match self.addresses() {
            None => vec![None],
            Some(addresses) => addresses.into_iter().map(Some).collect(),
        };
        ports
            .into_iter()
            .flat_map(|(port, service)| at.iter().map(move |a| ((port, *a), service.clone())))
            .collect()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<ServiceRef, HealthCheck>) -> T) -> T {
        // A poisoned lock only means a panic elsewhere while holding it; the map is whole.
        let mut guard = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Records `service`'s health check (`None`: it has none, or is gone).
    pub fn set(&self, service: &ServiceRef, check: Option<HealthCheck>) {
        let ports_changed = self.with(|checks| {
            let before = match check {
                Some(check) => checks.insert(service.clone(), check),
                None => checks.remove(service),
            };
            before.map(|c| c.node_port) != check.map(|c| c.node_port)
        });
        if ports_changed {
            self.ports_changed.send_modify(|n| *n += 1);
        }
    }

    /// Replaces every health check (after a whole-node computation).
    pub fn replace_all(&self, all: impl IntoIterator<Item = (ServiceRef, HealthCheck)>) {
        let all: BTreeMap<ServiceRef, HealthCheck> = all.into_iter().collect();
        let ports = |m: &BTreeMap<ServiceRef, HealthCheck>| -> BTreeSet<u16> {
            m.values().map(|c| c.node_port).collect()
        };
        let ports_changed = self.with(|checks| {
            let changed = ports(checks) != ports(&all);
            *checks = all;
            changed
        });
        if ports_changed {
            self.ports_changed.send_modify(|n| *n += 1);
        }
    }

    /// The Service answering on each port in use. Two Services given the same port (which
    /// the API server does not allocate) share it: the first by namespace and name answers.
    pub fn ports(&self) -> BTreeMap<u16, ServiceRef> {
        self.with(|checks| {
            let mut out = BTreeMap::new();
            for (service, check) in checks.iter() {
                out.entry(check.node_port)
                    .or_insert_with(|| service.clone());
            }
            out
        })
    }

    /// The answer on `port` when the proxy is healthy or not (`None`: no Service uses it).
    pub fn answer(&self, port: u16, proxy_healthy: bool) -> Option<Answer> {
        let (service, check) = self.with(|checks| {
            checks
                .iter()
                .find(|(_, c)| c.node_port == port)
                .map(|(s, c)| (s.clone(), *c))
        })?;
        let healthy = proxy_healthy && check.local_endpoints > 0;
        let body = serde_json::json!({
            "service": {"namespace": service.namespace, "name": service.name},
            "localEndpoints": check.local_endpoints,
            "serviceProxyHealthy": proxy_healthy,
        });
        Some(Answer {
            status: if healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            local_endpoints: check.local_endpoints,
            body: body.to_string(),
        })
    }
}

/// Keeps a listener open on each port of `checks`, answering from `checks` and `health`,
/// until the runtime ends. Each listener is served by the daemon's shared HTTP server, with
/// its connection cap and timeouts ([`http::serve_listener`] with [`ServerLimits::daemon`]):
/// these ports are open to the network like `/healthz`.
pub async fn serve(checks: Arc<ServiceHealthChecks>, health: Arc<Health>) {
    serve_within(checks, health, ServerLimits::daemon()).await;
}

/// [`serve`] within `limits`.
pub async fn serve_within(
    checks: Arc<ServiceHealthChecks>,
    health: Arc<Health>,
    limits: ServerLimits,
) {
    let mut changes = checks.ports_changed.subscribe();
    let mut open: HashMap<Listen, tokio::task::JoinHandle<()>> = HashMap::new();
    // Listeners that could not be opened, said once until they are.
    let mut failing: BTreeSet<Listen> = BTreeSet::new();
    loop {
        changes.borrow_and_update();
        let wanted = checks.listeners();
        let unwanted: Vec<Listen> = open
            .iter()
            .filter(|(listen, task)| !wanted.contains_key(*listen) || task.is_finished())
            .map(|(listen, _)| *listen)
            .collect();
        for (port, address) in unwanted {
            if let Some(task) = open.remove(&(port, address)) {
                task.abort();
                // Its listener is closed once the task is: wait, so the port is free to open
                // again (on another address) below.
                let _ = task.await;
                info!(port, address = ?address, "health check port closed");
            }
        }
        failing.retain(|listen| wanted.contains_key(listen));
        for (&(port, address), service) in &wanted {
            if open.contains_key(&(port, address)) {
                continue;
            }
            match bind(port, address).await {
                Ok(listener) => {
                    failing.remove(&(port, address));
                    info!(port, address = ?address, service = %service, "serving the Service's health check");
                    let router = router(checks.clone(), health.clone(), port);
                    open.insert(
                        (port, address),
                        tokio::spawn(http::serve_listener(listener, router, limits.clone())),
                    );
                }
                Err(e) => {
                    if failing.insert((port, address)) {
                        warn!(
                            port,
                            address = ?address,
                            service = %service,
                            error = %e,
                            retry_in_ms = BIND_RETRY.as_millis() as u64,
                            "cannot serve the Service's health check"
                        );
                    }
                }
            }
        }
        if failing.is_empty() {
            if changes.changed().await.is_err() {
                return;
            }
        } else {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(BIND_RETRY) => {}
            }
        }
    }
}

/// A listener: a port, on one address or (`None`) on every address.
type Listen = (u16, Option<IpAddr>);

/// A listener on `port` of `address`, or of every address: IPv6 and IPv4 together, or IPv4
/// alone where the node has no IPv6.
async fn bind(port: u16, address: Option<IpAddr>) -> std::io::Result<TcpListener> {
    if let Some(address) = address {
        return TcpListener::bind(SocketAddr::new(address, port)).await;
    }
    match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(e),
        Err(_) => TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).await,
    }
}

fn router(checks: Arc<ServiceHealthChecks>, health: Arc<Health>, port: u16) -> Router {
    Router::new()
        .fallback(answer)
        .with_state((checks, health, port))
}

async fn answer(
    State((checks, health, port)): State<(Arc<ServiceHealthChecks>, Arc<Health>, u16)>,
) -> Response {
    let healthy = health.healthz(SystemTime::now()).healthy;
    match checks.answer(port, healthy) {
        Some(answer) => (
            answer.status,
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                (
                    HeaderName::from_static("x-load-balancing-endpoint-weight"),
                    answer.local_endpoints.to_string(),
                ),
            ],
            answer.body,
        )
            .into_response(),
        // Closed meanwhile.
        None => (StatusCode::SERVICE_UNAVAILABLE, "no Service on this port\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(node_port: u16, local_endpoints: u32) -> Option<HealthCheck> {
        Some(HealthCheck {
            node_port,
            local_endpoints,
        })
    }

    #[test]
    fn answers_as_kube_proxy() {
        let checks = ServiceHealthChecks::new();
        let web = ServiceRef::new("shop", "web");
        checks.set(&web, check(31000, 2));
        let a = checks.answer(31000, true).unwrap();
        assert_eq!(a.status, StatusCode::OK);
        let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "service": {"namespace": "shop", "name": "web"},
                "localEndpoints": 2,
                "serviceProxyHealthy": true
            })
        );
        // No local endpoint, or an unhealthy proxy: 503.
        assert_eq!(
            checks.answer(31000, false).unwrap().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        checks.set(&web, check(31000, 0));
        assert_eq!(
            checks.answer(31000, true).unwrap().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(checks.answer(31001, true), None);
        checks.set(&web, None);
        assert_eq!(checks.answer(31000, true), None);
    }

    #[test]
    fn ports_change_only_when_a_port_does() {
        let checks = ServiceHealthChecks::new();
        let mut changes = checks.ports_changed.subscribe();
        let web = ServiceRef::new("shop", "web");
        checks.set(&web, check(31000, 1));
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        // A count changing keeps the listeners as they are.
        checks.set(&web, check(31000, 3));
        assert!(!changes.has_changed().unwrap());
        // Another Service on the same port shares it; the first by name answers.
        let api = ServiceRef::new("shop", "api");
        checks.set(&api, check(31000, 0));
        assert_eq!(checks.ports(), BTreeMap::from([(31000, api.clone())]));
        checks.replace_all([(
            web.clone(),
            HealthCheck {
                node_port: 31002,
                local_endpoints: 1,
            },
        )]);
        assert!(changes.has_changed().unwrap());
        assert_eq!(checks.ports(), BTreeMap::from([(31002, web)]));
    }

    /// A free TCP port on this machine (free when asked; the test binds it right after).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    async fn get(port: u16) -> std::io::Result<(u16, String, String)> {
        get_at(Ipv4Addr::LOCALHOST, port).await
    }

    async fn get_at(address: Ipv4Addr, port: u16) -> std::io::Result<(u16, String, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect((address, port)).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((status, head.to_ascii_lowercase(), body.to_owned()))
    }

    /// Polls `port` until `done` says yes of what it answers (or of the refusal).
    async fn until(
        port: u16,
        done: impl FnMut(&std::io::Result<(u16, String, String)>) -> bool,
    ) -> std::io::Result<(u16, String, String)> {
        until_at(Ipv4Addr::LOCALHOST, port, done).await
    }

    /// [`until`] on `address`.
    async fn until_at(
        address: Ipv4Addr,
        port: u16,
        mut done: impl FnMut(&std::io::Result<(u16, String, String)>) -> bool,
    ) -> std::io::Result<(u16, String, String)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = get_at(address, port).await;
            if done(&got) || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn listeners_follow_the_services() {
        let checks = Arc::new(ServiceHealthChecks::new());
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        health.adopted();
        tokio::spawn(serve(checks.clone(), health.clone()));
        let port = free_port();
        let web = ServiceRef::new("shop", "web");
        checks.set(&web, check(port, 2));
        let (status, head, body) = until(port, |r| r.is_ok()).await.unwrap();
        assert_eq!(status, 200);
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(
            head.contains("x-load-balancing-endpoint-weight: 2"),
            "{head}"
        );
        assert!(body.contains(r#""localEndpoints":2"#), "{body}");
        // The last local endpoint goes: the load balancer is told at once.
        checks.set(&web, check(port, 0));
        let (status, _, _) = get(port).await.unwrap();
        assert_eq!(status, 503);
        // The Service goes: so does the listener.
        checks.set(&web, None);
        let refused = until(port, |r| r.is_err()).await;
        assert!(refused.is_err(), "still answering: {refused:?}");
    }

    #[tokio::test]
    async fn health_check_ports_are_served_within_the_limits() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let checks = Arc::new(ServiceHealthChecks::new());
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        health.adopted();
        let limits = ServerLimits {
            per_listener: 4,
            idle_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(60),
            budget: http::ConnectionBudget::new(100),
        };
        tokio::spawn(serve_within(checks.clone(), health, limits.clone()));
        let port = free_port();
        checks.set(&ServiceRef::new("shop", "web"), check(port, 1));
        until(port, |r| r.is_ok()).await.unwrap();
        // A flood of connections that never finish their request head.
        let mut flood = Vec::new();
        for _ in 0..20 {
            let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            flood.push(stream);
        }
        // The load balancer is still answered, and the listener holds no more than its cap.
        let (status, _, _) = get(port).await.unwrap();
        assert_eq!(status, 200);
        assert!(limits.budget.open() <= 4, "{} open", limits.budget.open());
        // What was left of the flood is closed after the idle timeout.
        for stream in &mut flood {
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            assert!(matches!(read, Ok(Ok(0) | Err(_))), "still open: {read:?}");
        }
    }

    #[tokio::test]
    async fn a_taken_port_is_tried_again_until_free() {
        let taken = std::net::TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0))
            .or_else(|_| std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)))
            .unwrap();
        let port = taken.local_addr().unwrap().port();
        let checks = Arc::new(ServiceHealthChecks::new());
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        health.adopted();
        tokio::spawn(serve(checks.clone(), health));
        checks.set(&ServiceRef::new("shop", "web"), check(port, 1));
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Whoever holds the port answers, not us (the listener here never accepts).
        drop(taken);
        let (status, _, _) = until(port, |r| r.is_ok()).await.unwrap();
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn listeners_follow_the_addresses_when_narrowed() {
        let (one, two) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
        let only = |a: Ipv4Addr| Some(BTreeSet::from([IpAddr::V4(a)]));
        let checks = Arc::new(ServiceHealthChecks::new());
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        health.adopted();
        checks.set_addresses(only(one));
        tokio::spawn(serve(checks.clone(), health));
        let port = free_port();
        checks.set(&ServiceRef::new("shop", "web"), check(port, 1));
        let (status, _, _) = until_at(one, port, |r| r.is_ok()).await.unwrap();
        assert_eq!(status, 200);
        assert!(get_at(two, port).await.is_err(), "answering on {two}");
        // The address moves: the listener follows.
        checks.set_addresses(only(two));
        let (status, _, _) = until_at(two, port, |r| r.is_ok()).await.unwrap();
        assert_eq!(status, 200);
        let refused = until_at(one, port, |r| r.is_err()).await;
        assert!(refused.is_err(), "still answering on {one}: {refused:?}");
        // Every address again.
        checks.set_addresses(None);
        for address in [one, two] {
            let (status, _, _) = until_at(address, port, |r| r.is_ok()).await.unwrap();
            assert_eq!(status, 200, "on {address}");
        }
        assert_eq!(checks.listeners().len(), 1);
    }
}
