//! # kube-standin: a stand-in Kubernetes API server for tests
//!
//! A small HTTP/1 server on `127.0.0.1` that speaks the parts of the Kubernetes API a
//! controller's watches use, so code built on the real `kube` client (its `watcher`, its
//! retries and backoff) can be tested without a cluster:
//!
//! - **Kinds**: core/v1 Services, Nodes, Namespaces and ConfigMaps, discovery.k8s.io/v1
//!   EndpointSlices ([`KINDS`]), at cluster-wide (`/api/v1/services`) and namespaced
//!   (`/api/v1/namespaces/{ns}/services`) paths, plus GET of one object.
//! - **Objects** are JSON, written by the test ([`StandIn::apply`], [`StandIn::create`],
//!   [`StandIn::delete`]). Every write takes the next global resource version, stamped into
//!   `metadata.resourceVersion`; `uid` and `creationTimestamp` are filled in on creation.
//! - **LIST** honours `labelSelector` (`key`, `!key`, `key=value`, `key!=value`, `in`,
//!   `notin`), `fieldSelector` (`metadata.name`, `metadata.namespace`), `limit` and `continue`
//!   (later pages are a consistent snapshot at the first page's version, served from the
//!   history; `resourceVersionMatch=Exact` likewise).
//! - **WATCH** (`?watch=true&resourceVersion=N`) streams newline-delimited
//!   `{"type", "object"}` events after `N` from the history, with the same selectors. As on
//!   the real server, an object that stops matching a filtered watch is sent as `DELETED`
//!   (its previous state, stamped with the event's version) and one that starts matching as
//!   `ADDED`. A watch from `""`/`"0"` (or with `sendInitialEvents=true`) starts with
//!   synthetic `ADDED` events for what exists (then, for `sendInitialEvents`, the
//!   `k8s.io/initial-events-end` bookmark). `BOOKMARK`s (with `allowWatchBookmarks=true`)
//!   carry only `metadata.resourceVersion`; they are sent every
//!   [`Builder::bookmark_interval`] and on demand ([`StandIn::send_bookmarks`]). A watch
//!   ends cleanly after `timeoutSeconds`.
//! - **Expiry**: [`StandIn::compact`] forgets the history; a watch (or `continue`) from an
//!   older version is answered with an `ERROR` event carrying a `Status` 410 `Expired` ("too
//!   old resource version"), or, with [`ExpiredStyle::HttpGone`], an HTTP 410 response.
//!   An open watch that fell behind a compaction gets the same `ERROR` event and ends.
//!   [`StandIn::expire_every_watch`] answers every watch from a version that way, as a server
//!   whose history never reaches back to what a client just listed.
//! - **Faults**: [`StandIn::drop_watches`] cuts the connections serving watches mid-stream,
//!   [`StandIn::drop_connections`] cuts all of them, [`StandIn::go_down`] makes the server
//!   answer every request with an error status or refuse connections, until
//!   [`StandIn::come_up`].
//! - **Request log**: [`StandIn::requests`] lists every request (method, path, query, when it
//!   arrived, what it was, the status answered), to assert that selectors were sent, a relist
//!   happened, or how often a client asked.
//!
//! Writes go through the test API only: HTTP requests other than GET are refused (405).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use k8s_openapi::api::core::v1::Service;
//! let server = kube_standin::StandIn::start().await?;
//! let client = server.client()?;
//! let mut svc = Service::default();
//! svc.metadata.name = Some("web".into());
//! svc.metadata.namespace = Some("default".into());
//! server.apply(&svc)?;
//! let listed = kube::Api::<Service>::all(client).list(&Default::default()).await?;
//! assert_eq!(listed.items.len(), 1);
//! # Ok(())
//! # }
//! ```

pub mod selector;
mod server;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use store::{Error, KINDS, Kind};

use server::{Control, Kill, Shared, State};
use store::Store;

/// A boxed error, for the few calls that can fail in several ways.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a watch from a version older than the kept history is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExpiredStyle {
    /// HTTP 200, then one `ERROR` event with a `Status` 410 `Expired`, then the end of the
    /// stream (what the real server's watch cache does).
    #[default]
    ErrorEvent,
    /// An HTTP 410 response with the same `Status` body.
    HttpGone,
}

/// How the server behaves while down ([`StandIn::go_down`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownMode {
    /// Every request is answered with this HTTP status and a `Status` body; open watches are
    /// cut. Note that the `kube` client retries 429, 503 and 504 by itself (with backoff)
    /// before reporting them.
    Status(u16),
    /// The listening socket is closed (connections are refused) and every open connection
    /// is cut; [`StandIn::come_up`] listens again on the same address.
    Refuse,
}

/// What a logged request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// A LIST of a collection.
    List,
    /// A WATCH of a collection.
    Watch,
    /// A GET of one object.
    Get,
    /// Anything else (including every request answered while down, and malformed ones).
    Other,
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Its place in the log (0 for the first request).
    pub seq: usize,
    /// The HTTP method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string (`""` when there is none).
    pub query: String,
    /// When it arrived.
    pub at: Instant,
    /// What it was (known once answered).
    pub verb: Verb,
    /// The resource (`services`) it addressed, when it addressed one.
    pub resource: Option<String>,
    /// The HTTP status answered (`None` while being answered).
    pub status: Option<u16>,
}

impl LoggedRequest {
    /// A query parameter, decoded (the last one when repeated).
    pub fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .last()
    }

    /// Whether this was a LIST or WATCH of `resource` (`services`) answered with 200.
    pub fn is_ok(&self, verb: Verb, resource: &str) -> bool {
        self.verb == verb && self.resource.as_deref() == Some(resource) && self.status == Some(200)
    }
}

/// Options for [`StandIn`].
#[derive(Debug, Clone)]
pub struct Builder {
    bookmark_interval: Option<Duration>,
    expired_style: ExpiredStyle,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            bookmark_interval: Some(Duration::from_secs(60)),
            expired_style: ExpiredStyle::default(),
        }
    }
}

impl Builder {
    /// How often open watches (that allow bookmarks) get a `BOOKMARK`; `None`: only on demand.
    /// Default one minute, like the real server.
    #[must_use]
    pub fn bookmark_interval(mut self, interval: Option<Duration>) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// How expired versions are answered (default [`ExpiredStyle::ErrorEvent`]).
    #[must_use]
    pub fn expired_style(mut self, style: ExpiredStyle) -> Self {
        self.expired_style = style;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    pub async fn start(self) -> std::io::Result<StandIn> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(State {
            store: Store::default(),
            log: Vec::new(),
            down: None,
            expired_style: self.expired_style,
            expire_every_watch: false,
            bookmark_interval: self.bookmark_interval,
            bookmark_epoch: 0,
            bookmarks_sent: Default::default(),
            open_watches: 0,
            watch_cuts: 0,
        }));
        let (kill, kill_rx) = watch::channel(Kill::default());
        let (control, control_rx) = mpsc::unbounded_channel();
        let server = tokio::spawn(server::accept_loop(
            listener,
            addr,
            shared.clone(),
            kill_rx,
            control_rx,
        ));
        Ok(StandIn {
            addr,
            shared,
            kill,
            control,
            server,
        })
    }
}

/// A running stand-in API server. Dropping it stops the server and cuts its connections.
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    kill: watch::Sender<Kill>,
    control: mpsc::UnboundedSender<Control>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn").field("addr", &self.addr).finish()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
        // Dropping `kill` (with self) ends every connection task.
    }
}

fn to_json<K: Serialize>(object: &K) -> Result<Value, Error> {
    serde_json::to_value(object).map_err(|e| Error::Serialize(e.to_string()))
}

impl StandIn {
    /// Starts a stand-in with the default options (see [`Builder`]).
    pub async fn start() -> std::io::Result<Self> {
        Builder::default().start().await
    }

    /// Options for a stand-in.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube` configuration for this server (plain HTTP, no credentials).
    pub fn config(&self) -> Result<kube::Config, BoxError> {
        let uri: http::Uri = self.url().parse()?;
        Ok(kube::Config::new(uri))
    }

    /// A `kube` client for this server.
    pub fn client(&self) -> Result<kube::Client, BoxError> {
        Ok(kube::Client::try_from(self.config()?)?)
    }

    fn write(&self, object: Value, must_not_exist: bool) -> Result<Value, Error> {
        let stored = self.shared.lock().store.write(object, must_not_exist)?;
        self.shared.wake();
        Ok(stored)
    }

    /// Creates an object (a `k8s-openapi` value or JSON with `apiVersion`, `kind` and
    /// `metadata.name`; a namespaced one without a namespace goes to `default`). Fails if it
    /// exists. Returns what was stored.
    pub fn create<K: Serialize>(&self, object: &K) -> Result<Value, Error> {
        self.write(to_json(object)?, true)
    }

    /// Creates or replaces an object (`ADDED` or `MODIFIED`); a replacement keeps the `uid`
    /// and `creationTimestamp`. Any `metadata.resourceVersion` given is ignored. Returns what
    /// was stored.
    pub fn apply<K: Serialize>(&self, object: &K) -> Result<Value, Error> {
        self.write(to_json(object)?, false)
    }

    /// Deletes the object with the kind, namespace and name of `object`. Returns its last
    /// state, stamped with the deletion's resource version.
    pub fn delete<K: Serialize>(&self, object: &K) -> Result<Value, Error> {
        let json = to_json(object)?;
        let text = |pointer: &str| json.pointer(pointer).and_then(Value::as_str);
        let name = text("/metadata/name")
            .ok_or_else(|| Error::Invalid("metadata.name is missing".into()))?;
        self.delete_named(
            text("/apiVersion").unwrap_or(""),
            text("/kind").unwrap_or(""),
            text("/metadata/namespace"),
            name,
        )
    }

    /// Deletes an object by `apiVersion`, `kind`, namespace (ignored for cluster-scoped kinds,
    /// `default` when `None`) and name.
    pub fn delete_named(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, Error> {
        let gone = self
            .shared
            .lock()
            .store
            .delete(api_version, kind, namespace, name)?;
        self.shared.wake();
        Ok(gone)
    }

    /// The resource version of the last write (0 before any).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().store.rv
    }

    /// Forgets the event history: from now on a watch or `continue` from an older version is
    /// answered 410 Expired (as [`ExpiredStyle`] says). Watches that have seen everything
    /// carry on.
    pub fn compact(&self) {
        self.shared.lock().store.compact();
        self.shared.wake();
    }

    /// Changes how expired versions are answered.
    pub fn set_expired_style(&self, style: ExpiredStyle) {
        self.shared.lock().expired_style = style;
    }

    /// While `on`, every watch from a resource version (not `""`/`"0"`) is answered 410 Expired
    /// (as [`ExpiredStyle`] says), whatever the history holds: a server that a client cannot
    /// follow however promptly it relists. Open watches carry on.
    pub fn expire_every_watch(&self, on: bool) {
        self.shared.lock().expire_every_watch = on;
    }

    /// Sends a `BOOKMARK` at the current version to every open watch that allows them.
    pub fn send_bookmarks(&self) {
        self.shared.lock().bookmark_epoch += 1;
        self.shared.wake();
    }

    /// How many `BOOKMARK` events have been written to watches (on demand and periodic).
    pub fn bookmarks_sent(&self) -> u64 {
        self.shared.lock().bookmarks_sent.values().sum()
    }

    /// How many `BOOKMARK` events have been written to watches of `resource` (`services`).
    pub fn bookmarks_sent_to(&self, resource: &str) -> u64 {
        self.shared
            .lock()
            .bookmarks_sent
            .get(resource)
            .copied()
            .unwrap_or(0)
    }

    /// How many watch streams are open.
    pub fn open_watches(&self) -> usize {
        self.shared.lock().open_watches
    }

    /// Cuts every connection serving a watch, mid-stream (no terminating chunk): what a
    /// client sees when a load balancer or the API server drops it.
    pub fn drop_watches(&self) {
        self.shared.lock().watch_cuts += 1;
        self.kill
            .send_modify(|k| k.watches = k.watches.wrapping_add(1));
    }

    /// Cuts every open connection, whatever it is doing.
    pub fn drop_connections(&self) {
        self.shared.lock().watch_cuts += 1;
        self.kill.send_modify(|k| k.all = k.all.wrapping_add(1));
    }

    /// Takes the server down until [`StandIn::come_up`].
    pub async fn go_down(&self, mode: DownMode) -> std::io::Result<()> {
        self.shared.lock().down = Some(mode);
        match mode {
            DownMode::Status(_) => self.drop_watches(),
            DownMode::Refuse => {
                let (done, closed) = oneshot::channel();
                self.control
                    .send(Control::Close(done))
                    .map_err(|_| std::io::Error::other("the stand-in server task is gone"))?;
                closed
                    .await
                    .map_err(|_| std::io::Error::other("the stand-in server task is gone"))?;
                self.drop_connections();
            }
        }
        Ok(())
    }

    /// Brings the server back after [`StandIn::go_down`] (listening again on the same
    /// address after [`DownMode::Refuse`]).
    pub async fn come_up(&self) -> std::io::Result<()> {
        let was = self.shared.lock().down;
        if was == Some(DownMode::Refuse) {
            let (done, opened) = oneshot::channel();
            self.control
                .send(Control::Open(done))
                .map_err(|_| std::io::Error::other("the stand-in server task is gone"))?;
            opened
                .await
                .map_err(|_| std::io::Error::other("the stand-in server task is gone"))??;
        }
        self.shared.lock().down = None;
        Ok(())
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.clone()
    }

    /// How many requests have been received so far (a mark for [`StandIn::requests_since`]).
    pub fn request_count(&self) -> usize {
        self.shared.lock().log.len()
    }

    /// The requests received since `mark` (an earlier [`StandIn::request_count`]).
    pub fn requests_since(&self, mark: usize) -> Vec<LoggedRequest> {
        self.shared
            .lock()
            .log
            .get(mark..)
            .map(<[LoggedRequest]>::to_vec)
            .unwrap_or_default()
    }
}

/// Polls `condition` every 10 ms until it holds (`true`) or `timeout` passes (`false`).
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
