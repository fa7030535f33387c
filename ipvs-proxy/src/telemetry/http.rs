//! The HTTP endpoints: `/metrics` on the metrics address, `/healthz` and `/livez` on the
//! health address (kube-proxy's ports: 10249 and 10256), and the one server that serves them
//! and the health check node ports ([`crate::health::services`]).
//!
//! # The server
//!
//! These ports are open to the network (`0.0.0.0:10256` by default, a load balancer's health
//! check port on every node address), so [`serve_listener`] bounds what any client can hold:
//!
//! - **Connections.** A listener holds at most [`MAX_CONNECTIONS_PER_LISTENER`] connections,
//!   and all listeners together at most the [`ConnectionBudget`], half the descriptor limit
//!   (see [`crate::descriptors`]): the other half stays for the daemon's own work (netlink
//!   sockets, manifests, sysctl files, the API server connection). At the cap a new connection
//!   is still accepted, and the oldest connection of that listener with no request in flight
//!   (idle, or still sending its request head) is closed to make room: a flood of idle
//!   connections only cycles through the slots, and a client that sends its request at once
//!   is answered. When every connection of the listener has a request in flight, the new one
//!   is closed at once: its descriptor is freed right away, its client learns at once instead
//!   of waiting in the kernel's backlog, and the listener keeps draining that backlog.
//! - **Time.** A connection with no request in flight (from its start, or from the end of the
//!   previous response) is closed after [`IDLE_TIMEOUT`]: that is the header-read timeout (a
//!   half-sent request head) and the keep-alive idle timeout in one clock. A request is cut
//!   off [`REQUEST_TIMEOUT`] after its head arrived if its response is not written by then
//!   (a body sent slowly, a client that does not read its answer).
//! - **Accept errors.** An error such as `EMFILE` (no descriptor left) is logged once and the
//!   listener waits [`ACCEPT_BACKOFF`] before accepting again, instead of spinning.
//! - **Memory.** A connection buffers at most [`MAX_BUFFER`] bytes of what it reads (a longer
//!   request head is refused) and of what it has yet to write.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::body::{Frame, SizeHint};
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Metrics;
use crate::descriptors;
use crate::health::Health;

/// The most connections one listener holds at once. Scrapers, the kubelet's probes and a
/// cloud's health checkers need a few each; the rest of a flood is turned away.
pub const MAX_CONNECTIONS_PER_LISTENER: usize = 128;

/// How long a connection may stay with no request in flight: before its first request head is
/// complete, or after a response until the next head is (header-read and keep-alive idle
/// timeout). Long enough for any client on a working network; a probe sends its request at once.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request may take from its complete head to the end of its response: the longest
/// `/metrics` encoding of a large table, with room to spare.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a listener waits before accepting again after an accept error such as `EMFILE`.
/// Short, so the endpoints come back as soon as descriptors do; long enough that a listener
/// whose backlog cannot be accepted does not spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The most bytes a connection buffers (hyper's read buffer, and its write buffer before it
/// waits for the client): a request head to these endpoints is a few hundred bytes.
pub const MAX_BUFFER: usize = 64 * 1024;

/// How often a listener at its cap says so, at most.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The `/metrics` router.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

/// The `/healthz` and `/livez` router. Each answer is counted in `metrics`
/// (`kubeproxy_proxy_healthz_total` and `kubeproxy_proxy_livez_total`, by status code).
pub fn health_router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(serve_healthz))
        .route("/livez", get(serve_livez))
        .with_state((health, metrics))
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    // Encoding may read IPVS statistics (a blocking netlink dump): keep it off the reactor.
    let encoded = tokio::task::spawn_blocking(move || metrics.encode()).await;
    match encoded {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

fn verdict_response(verdict: crate::health::proxy::Verdict) -> Response {
    let status = if verdict.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        verdict.body,
    )
        .into_response()
}

type HealthState = State<(Arc<Health>, Arc<Metrics>)>;

async fn serve_healthz(State((health, metrics)): HealthState) -> Response {
    let response = verdict_response(health.healthz(SystemTime::now()));
    metrics.healthz_answered(response.status().as_u16());
    response
}

async fn serve_livez(State((health, metrics)): HealthState) -> Response {
    let response = verdict_response(health.livez(SystemTime::now()));
    metrics.livez_answered(response.status().as_u16());
    response
}

/// Binds `addr` and serves `router` on it with [`serve_listener`] and the daemon's
/// [`ServerLimits`], until the process ends. Binding errors are returned (a port in use must
/// stop the start-up with a clear message).
pub async fn serve(
    addr: SocketAddr,
    router: Router,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(serve_listener(
        listener,
        router,
        ServerLimits::daemon(),
    )))
}

/// The connections all the HTTP listeners of a process hold together, and how many they may.
#[derive(Debug)]
pub struct ConnectionBudget {
    max: usize,
    open: AtomicUsize,
}

impl ConnectionBudget {
    /// A budget of `max` connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: AtomicUsize::new(0),
        })
    }

    /// The daemon's, shared by all its listeners: [`descriptors::http_connections`] of the
    /// descriptor limit in force when it is first asked for (after `main` raised it).
    pub fn daemon() -> Arc<Self> {
        static DAEMON: LazyLock<Arc<ConnectionBudget>> = LazyLock::new(|| {
            // Unreadable: the C library's usual soft limit.
            let limit = descriptors::current_limit().unwrap_or(1024);
            ConnectionBudget::new(descriptors::http_connections(limit))
        });
        DAEMON.clone()
    }

    /// The most connections.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn take(self: &Arc<Self>) -> Option<BudgetShare> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| BudgetShare(self.clone()))
    }

    fn is_spent(&self) -> bool {
        self.open() >= self.max
    }
}

/// One connection's share of a [`ConnectionBudget`], given back when dropped.
#[derive(Debug)]
struct BudgetShare(Arc<ConnectionBudget>);

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How [`serve_listener`] bounds its connections: the daemon's are [`ServerLimits::daemon`];
/// tests shorten them.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// The most connections this listener holds ([`MAX_CONNECTIONS_PER_LISTENER`]).
    pub per_listener: usize,
    /// [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// [`REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// Shared by every listener of the process.
    pub budget: Arc<ConnectionBudget>,
}

impl ServerLimits {
    /// The documented constants and the daemon's [`ConnectionBudget`].
    pub fn daemon() -> Self {
        let budget = ConnectionBudget::daemon();
        Self {
            per_listener: MAX_CONNECTIONS_PER_LISTENER.min(budget.max()),
            idle_timeout: IDLE_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            budget,
        }
    }
}

/// Serves `router` on `listener` within `limits` (see the [module](self) documentation) until
/// the task is aborted. Connections already open when it is keep being served until they end
/// or time out.
pub async fn serve_listener(listener: TcpListener, router: Router, limits: ServerLimits) {
    let address = listener.local_addr().ok();
    let connections = Arc::new(Connections {
        limits,
        address,
        state: Mutex::new(ConnectionsState::default()),
    });
    let mut failing = false;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                failing = false;
                connections.admit(stream, &router);
            }
            // The client gave up before it was accepted: nothing to do.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                if !failing {
                    warn!(
                        address = ?address,
                        error = %e,
                        retry_in_ms = ACCEPT_BACKOFF.as_millis() as u64,
                        "cannot accept HTTP connections; retrying"
                    );
                    failing = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Where a connection is: waiting for a request head, or answering requests (hyper may read a
/// pipelined request before the previous response is written whole), since when.
#[derive(Debug, Clone, Copy)]
struct Phase {
    in_flight: u32,
    since: Instant,
}

impl Phase {
    fn waiting() -> Self {
        Self {
            in_flight: 0,
            since: Instant::now(),
        }
    }

    fn is_waiting(&self) -> bool {
        self.in_flight == 0
    }
}

/// The open connections of one listener.
#[derive(Debug)]
struct Connections {
    limits: ServerLimits,
    address: Option<SocketAddr>,
    state: Mutex<ConnectionsState>,
}

#[derive(Debug, Default)]
struct ConnectionsState {
    /// By age: the oldest first.
    open: BTreeMap<u64, Slot>,
    next_id: u64,
    warned_at: Option<Instant>,
}

/// An open connection, as its listener sees it. Dropping it closes the connection and gives
/// its share of the budget back.
#[derive(Debug)]
struct Slot {
    phase: watch::Receiver<Phase>,
    _close: oneshot::Sender<()>,
    _budget: BudgetShare,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnectionsState> {
        // A poisoned lock only means a panic elsewhere while holding it; the map is whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves `stream`, making room for it if the listener or the budget is full; closes it at
    /// once when there is none.
    fn admit(self: &Arc<Self>, stream: TcpStream, router: &Router) {
        let mut state = self.lock();
        if state.open.len() >= self.limits.per_listener || self.limits.budget.is_spent() {
            let idle = state
                .open
                .iter()
                .find(|(_, slot)| slot.phase.borrow().is_waiting())
                .map(|(id, _)| *id);
            if let Some(id) = idle {
                state.open.remove(&id);
            }
            let now = Instant::now();
            if state
                .warned_at
                .is_none_or(|at| now.duration_since(at) >= CAP_WARNING_INTERVAL)
            {
                state.warned_at = Some(now);
                warn!(
                    address = ?self.address,
                    open = state.open.len(),
                    per_listener = self.limits.per_listener,
                    all_listeners = self.limits.budget.max(),
                    "too many HTTP connections: closing the oldest idle one for each new one, or the new one when all are busy (said at most once a minute)"
                );
            }
        }
        if state.open.len() >= self.limits.per_listener {
            // Every connection has a request in flight: this one is closed (dropped) at once.
            return;
        }
        let Some(budget) = self.limits.budget.take() else {
            return;
        };
        let id = state.next_id;
        state.next_id += 1;
        let (phase, phase_seen) = watch::channel(Phase::waiting());
        let (close, closed) = oneshot::channel();
        state.open.insert(
            id,
            Slot {
                phase: phase_seen,
                _close: close,
                _budget: budget,
            },
        );
        drop(state);
        tokio::spawn(
            self.clone()
                .serve_connection(id, stream, router.clone(), phase, closed),
        );
    }

    async fn serve_connection(
        self: Arc<Self>,
        id: u64,
        stream: TcpStream,
        router: Router,
        phase: watch::Sender<Phase>,
        closed: oneshot::Receiver<()>,
    ) {
        let phase = Arc::new(phase);
        let clock = phase.subscribe();
        let service = {
            let router = TowerToHyperService::new(router);
            hyper::service::service_fn(move |request| {
                phase.send_modify(|phase| {
                    if phase.is_waiting() {
                        phase.since = Instant::now();
                    }
                    phase.in_flight += 1;
                });
                let response = router.call(request);
                let phase = phase.clone();
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|body| RequestEnd { body, phase }))
                }
            })
        };
        let connection = hyper::server::conn::http1::Builder::new()
            // The idle clock below covers the request head; hyper's own would need a timer.
            .header_read_timeout(None)
            .max_buf_size(MAX_BUFFER)
            .serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            result = connection => {
                if let Err(e) = result {
                    debug!(address = ?self.address, error = %e, "HTTP connection failed");
                }
            }
            () = overdue(clock, self.limits.idle_timeout, self.limits.request_timeout) => {
                debug!(address = ?self.address, "HTTP connection timed out");
            }
            _ = closed => {
                debug!(address = ?self.address, "HTTP connection closed to make room");
            }
        }
        self.lock().open.remove(&id);
    }
}

/// Returns when the connection whose phase `phase` tells has waited too long for a request
/// head (`idle`) or for the end of its response (`request`).
async fn overdue(mut phase: watch::Receiver<Phase>, idle: Duration, request: Duration) {
    loop {
        let deadline = {
            let phase = phase.borrow_and_update();
            phase.since + if phase.is_waiting() { idle } else { request }
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return,
            changed = phase.changed() => {
                if changed.is_err() {
                    // The connection is gone, and so is whoever waits for this.
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// A response body that, once written whole (or dropped with its connection), ends its request:
/// with none left in flight, the connection is back to waiting for a request head.
struct RequestEnd {
    body: Body,
    phase: Arc<watch::Sender<Phase>>,
}

impl HttpBody for RequestEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for RequestEnd {
    fn drop(&mut self) {
        self.phase.send_modify(|phase| {
            phase.in_flight = phase.in_flight.saturating_sub(1);
            if phase.is_waiting() {
                phase.since = Instant::now();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Generous bounds for what must happen (a failing test waits this long, a passing one not).
    const SOON: Duration = Duration::from_secs(5);

    fn limits(per_listener: usize, idle: Duration, request: Duration) -> ServerLimits {
        ServerLimits {
            per_listener,
            idle_timeout: idle,
            request_timeout: request,
            budget: ConnectionBudget::new(1000),
        }
    }

    fn router() -> Router {
        slow_router(tokio::sync::mpsc::unbounded_channel().0)
    }

    /// The health router, and `/slow`, which tells `started` and never answers.
    fn slow_router(started: tokio::sync::mpsc::UnboundedSender<()>) -> Router {
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        health.adopted();
        health_router(health, Arc::new(Metrics::new(false))).route(
            "/slow",
            get(move || {
                let _ = started.send(());
                std::future::pending::<&'static str>()
            }),
        )
    }

    /// Waits until `budget` has `n` connections open.
    async fn until_open(budget: &ConnectionBudget, n: usize) {
        let deadline = Instant::now() + SOON;
        while budget.open() != n {
            assert!(Instant::now() < deadline, "{} open, not {n}", budget.open());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn start(router: Router, limits: ServerLimits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve_listener(listener, router, limits));
        address
    }

    /// Reads one response (head and `Content-Length` body) from `stream`: its status.
    async fn response(stream: &mut TcpStream) -> std::io::Result<u16> {
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            text.extend_from_slice(&buf[..n]);
            let s = String::from_utf8_lossy(&text);
            if let Some((head, body)) = s.split_once("\r\n\r\n") {
                let head = head.to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
                    return Ok(status.unwrap_or(0));
                }
            }
        }
    }

    /// A fresh connection's `GET path` answer, bounded by [`SOON`].
    async fn get_status(address: SocketAddr, path: &str) -> u16 {
        let answer = async {
            let mut stream = TcpStream::connect(address).await?;
            let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            response(&mut stream).await
        };
        tokio::time::timeout(SOON, answer)
            .await
            .expect("no answer in time")
            .expect("no answer")
    }

    /// Whether the server closes `stream` within `within` (reading and dropping what it says).
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let closed = async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(within, closed).await.is_ok()
    }

    #[tokio::test]
    async fn healthz_and_livez_answers_are_counted_by_status() {
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        let metrics = Arc::new(Metrics::new(false));
        let router = health_router(health.clone(), metrics.clone());
        let limits = limits(8, Duration::from_secs(60), Duration::from_secs(60));
        let address = start(router, limits).await;
        // Not adopted yet: /healthz fails, /livez does not.
        assert_eq!(get_status(address, "/healthz").await, 503);
        assert_eq!(get_status(address, "/livez").await, 200);
        health.adopted();
        assert_eq!(get_status(address, "/healthz").await, 200);
        assert_eq!(get_status(address, "/healthz").await, 200);
        for (series, value) in [
            ("kubeproxy_proxy_healthz_total{code=\"200\"}", Some(2.0)),
            ("kubeproxy_proxy_healthz_total{code=\"503\"}", Some(1.0)),
            ("kubeproxy_proxy_livez_total{code=\"200\"}", Some(1.0)),
            ("kubeproxy_proxy_livez_total{code=\"503\"}", None),
        ] {
            assert_eq!(metrics.sample(series), value, "{series}");
        }
    }

    #[tokio::test]
    async fn a_flood_of_idle_connections_is_capped_and_healthz_still_answers() {
        let limits = limits(8, Duration::from_secs(60), Duration::from_secs(60));
        let address = start(router(), limits.clone()).await;
        let mut flood = Vec::new();
        for _ in 0..40 {
            flood.push(TcpStream::connect(address).await.unwrap());
        }
        // Accepted after the whole flood (the backlog is first come, first served).
        assert_eq!(get_status(address, "/healthz").await, 200);
        // The server keeps no more than its cap of the flood: it closed the others, though
        // none of them timed out.
        let closed = futures_util::future::join_all(
            flood
                .iter_mut()
                .map(|s| closed_within(s, Duration::from_secs(2))),
        )
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
        assert!(
            closed >= 40 - 8,
            "only {closed} of 40 idle connections closed"
        );
        assert!(limits.budget.open() <= 8, "{} open", limits.budget.open());
    }

    #[tokio::test]
    async fn a_large_response_is_written_whole() {
        const SIZE: usize = 4 * MAX_BUFFER + 1;
        let router = router().route("/large", get(|| async { "x".repeat(SIZE) }));
        let address = start(
            router,
            limits(8, Duration::from_secs(60), Duration::from_secs(60)),
        )
        .await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /large HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        tokio::time::timeout(SOON, stream.read_to_string(&mut text))
            .await
            .unwrap()
            .unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body.len(), SIZE);
    }

    #[tokio::test]
    async fn a_half_sent_request_is_closed_after_the_idle_timeout() {
        let address = start(
            router(),
            limits(8, Duration::from_millis(300), Duration::from_secs(60)),
        )
        .await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
            .await
            .unwrap();
        assert!(closed_within(&mut stream, SOON).await, "still open");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
        let address = start(
            router(),
            limits(8, Duration::from_millis(300), Duration::from_secs(60)),
        )
        .await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        for _ in 0..2 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(response(&mut stream).await.unwrap(), 200);
        }
        assert!(closed_within(&mut stream, SOON).await, "still open");
    }

    #[tokio::test]
    async fn a_request_is_cut_off_after_the_request_timeout() {
        let address = start(
            router(),
            limits(8, Duration::from_secs(60), Duration::from_millis(300)),
        )
        .await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        assert!(closed_within(&mut stream, SOON).await, "still open");
    }

    #[tokio::test]
    async fn busy_connections_are_kept_and_a_new_one_is_closed_at_once() {
        let (started, mut requests) = tokio::sync::mpsc::unbounded_channel();
        let address = start(
            slow_router(started),
            limits(2, Duration::from_secs(60), Duration::from_secs(60)),
        )
        .await;
        let mut busy = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream
                .write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
                .await
                .unwrap();
            busy.push(stream);
        }
        for _ in 0..2 {
            requests.recv().await.unwrap();
        }
        let mut extra = TcpStream::connect(address).await.unwrap();
        assert!(closed_within(&mut extra, SOON).await, "kept over the cap");
        // The busy ones were not closed for it.
        for stream in &mut busy {
            assert!(!closed_within(stream, Duration::from_millis(50)).await);
        }
    }

    #[tokio::test]
    async fn all_listeners_together_stay_within_the_budget() {
        let budget = ConnectionBudget::new(3);
        let limits = ServerLimits {
            budget: budget.clone(),
            ..limits(3, Duration::from_secs(60), Duration::from_secs(60))
        };
        let (one, two) = (
            start(router(), limits.clone()).await,
            start(router(), limits).await,
        );
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(one).await.unwrap());
        }
        until_open(&budget, 3).await;
        // The second listener has nothing of its own to close to make room.
        let mut other = TcpStream::connect(two).await.unwrap();
        assert!(closed_within(&mut other, SOON).await, "over the budget");
        assert_eq!(budget.open(), 3);
        // The first listener's flood still cycles within its own share.
        assert_eq!(get_status(one, "/healthz").await, 200);
        assert!(budget.open() <= 3);
    }
}
