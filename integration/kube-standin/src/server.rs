//! The HTTP side: routing, LIST and WATCH responses, and the connections the faults cut.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Expired, Filter, KINDS, Store, kind_by_path, status_object};
use crate::{DownMode, ExpiredStyle, LoggedRequest, Verb};

/// How long a watch without `timeoutSeconds` lasts (the real server's minimum, 30 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Everything the handlers and the test share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Bumped after every write and on-demand bookmark: wakes the open watches.
    pub(crate) tick: watch::Sender<u64>,
}

/// The mutable part of [`Shared`].
pub(crate) struct State {
    pub(crate) store: Store,
    pub(crate) log: Vec<LoggedRequest>,
    pub(crate) down: Option<DownMode>,
    pub(crate) expired_style: ExpiredStyle,
    /// Every watch from a version is answered as expired ([`crate::StandIn::expire_every_watch`]).
    pub(crate) expire_every_watch: bool,
    pub(crate) bookmark_interval: Option<Duration>,
    pub(crate) bookmark_epoch: u64,
    /// Bookmarks written, by resource (`services`).
    pub(crate) bookmarks_sent: BTreeMap<&'static str, u64>,
    pub(crate) open_watches: usize,
    /// Bumped whenever open watches are cut: a watch opened before stops sending at once,
    /// even before its connection is closed.
    pub(crate) watch_cuts: u64,
}

impl Shared {
    pub(crate) fn new(state: State) -> Self {
        Self {
            state: Mutex::new(state),
            tick: watch::Sender::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the open watches.
    pub(crate) fn wake(&self) {
        self.tick.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Which connections to cut: a bump of `all` cuts every one, of `watches` those serving a watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Kill {
    pub(crate) all: u64,
    pub(crate) watches: u64,
}

/// What the test asks of the accept loop.
pub(crate) enum Control {
    /// Close the listening socket (connections are then refused).
    Close(oneshot::Sender<()>),
    /// Listen again on the same address.
    Open(oneshot::Sender<io::Result<()>>),
}

/// Per-connection facts the handlers see (a request extension).
#[derive(Clone, Default)]
struct ConnInfo {
    serving_watch: Arc<AtomicBool>,
}

/// Accepts connections until the stand-in is dropped, closing and reopening the listening
/// socket on request.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    kill: watch::Receiver<Kill>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let router = Router::new().fallback(handle).with_state(shared);
    let mut listener = Some(listener);
    loop {
        let command = match &listener {
            Some(l) => tokio::select! {
                accepted = l.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(serve_connection(stream, router.clone(), kill.clone()));
                    }
                    continue;
                }
                command = control.recv() => command,
            },
            None => control.recv().await,
        };
        match command {
            None => return,
            Some(Control::Close(done)) => {
                listener = None;
                let _ = done.send(());
            }
            Some(Control::Open(done)) => {
                let result = match listener {
                    Some(_) => Ok(()),
                    None => TcpListener::bind(addr).await.map(|l| listener = Some(l)),
                };
                let _ = done.send(result);
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, router: Router, mut kill: watch::Receiver<Kill>) {
    let info = ConnInfo::default();
    let mut seen = *kill.borrow_and_update();
    let request_info = info.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(request_info.clone());
        router.clone().oneshot(request)
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            changed = kill.changed() => {
                if changed.is_err() {
                    return; // the stand-in is gone
                }
                let now = *kill.borrow_and_update();
                let cut_watch =
                    now.watches != seen.watches && info.serving_watch.load(Ordering::SeqCst);
                if now.all != seen.all || cut_watch {
                    // Dropping the connection closes the socket mid-response: the client sees
                    // the chunked body end without its last chunk.
                    return;
                }
                seen = now;
            }
        }
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut response = (code, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn failure(code: StatusCode, reason: &str, message: &str) -> Response {
    json_response(code, &status_object(code.as_u16(), reason, message))
}

fn bad_request(message: &str) -> Response {
    failure(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn line(value: &Value) -> Bytes {
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, request: Request) -> Response {
    let info = request.extensions().get::<ConnInfo>().cloned();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let index = {
        let mut state = shared.lock();
        let seq = state.log.len();
        state.log.push(LoggedRequest {
            seq,
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            at: std::time::Instant::now(),
            verb: Verb::Other,
            resource: None,
            status: None,
        });
        state.log.len() - 1
    };
    let (verb, resource, response) = respond(&shared, &method, &path, &query, info);
    let mut state = shared.lock();
    if let Some(entry) = state.log.get_mut(index) {
        entry.verb = verb;
        entry.resource = resource;
        entry.status = Some(response.status().as_u16());
    }
    response
}

/// Where a path points: a kind, maybe a namespace, maybe an object name.
struct Target {
    kind: usize,
    namespace: Option<String>,
    name: Option<String>,
}

fn route(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural] => (None, *plural, None),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return None,
    };
    let kind = kind_by_path(group, version, plural)?;
    if namespace.is_some() && !KINDS[kind].namespaced {
        return None;
    }
    Some(Target {
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    })
}

fn respond(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    info: Option<ConnInfo>,
) -> (Verb, Option<String>, Response) {
    if let Some(mode) = shared.lock().down {
        let code = match mode {
            DownMode::Status(code) => code,
            // A request that slipped in as the listener closed.
            DownMode::Refuse => 503,
        };
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let response = failure(
            code,
            "ServiceUnavailable",
            "the stand-in API server is down",
        );
        return (Verb::Other, None, response);
    }
    if path == "/version" {
        let version = json!({"major": "1", "minor": "37", "gitVersion": "v1.37.0-standin"});
        return (Verb::Other, None, json_response(StatusCode::OK, &version));
    }
    let Some(target) = route(path) else {
        let response = failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
        return (Verb::Other, None, response);
    };
    let resource = Some(KINDS[target.kind].plural.to_owned());
    if method != Method::GET {
        let response = failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the stand-in serves reads only; tests write through StandIn",
        );
        return (Verb::Other, resource, response);
    }
    let params: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some(name) = &target.name {
        return (Verb::Get, resource, get(shared, &target, name));
    }
    let filter = match filter(&target, &params) {
        Ok(filter) => filter,
        Err(message) => return (Verb::Other, resource, bad_request(&message)),
    };
    let watching = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    if watching {
        (Verb::Watch, resource, watch(shared, filter, &params, info))
    } else {
        (Verb::List, resource, list(shared, &filter, &params))
    }
}

fn get(shared: &Shared, target: &Target, name: &str) -> Response {
    let state = shared.lock();
    let namespace = target.namespace.as_deref().unwrap_or("");
    match state.store.get(target.kind, namespace, name) {
        Some(object) => json_response(StatusCode::OK, object),
        None => failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} {name:?} not found", KINDS[target.kind].plural),
        ),
    }
}

/// The filter a request asks for, or why it is a bad request.
fn filter(target: &Target, params: &BTreeMap<String, String>) -> Result<Filter, String> {
    let text = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    let labels = LabelSelector::parse(text("labelSelector")).map_err(|e| e.to_string())?;
    let fields = FieldSelector::parse(text("fieldSelector")).map_err(|e| e.to_string())?;
    Ok(Filter {
        kind: target.kind,
        namespace: target.namespace.clone(),
        labels,
        fields,
    })
}

/// A resource version, or why it is a bad request.
fn parse_rv(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("invalid resource version {text:?}"))
}

fn list(shared: &Shared, filter: &Filter, params: &BTreeMap<String, String>) -> Response {
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None | Some(Ok(0)) => None,
        Some(Ok(limit)) => Some(limit),
        Some(Err(_)) => return bad_request("invalid limit"),
    };
    let state = shared.lock();
    let result = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let mut parts = token.splitn(3, '|');
            let (Some(rv), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                return bad_request("invalid continue token");
            };
            let rv = match parse_rv(rv) {
                Ok(rv) => rv,
                Err(message) => return bad_request(&message),
            };
            state.store.list(filter, Some(rv), Some((ns, name)), limit)
        }
        None => {
            // An exact version is served from history; any other request gets the latest
            // state (which satisfies "0", "not older than" and "most recent" alike).
            let exact = params.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
            let rv = match params.get("resourceVersion").filter(|_| exact) {
                Some(rv) => match parse_rv(rv) {
                    Ok(rv) => Some(rv),
                    Err(message) => return bad_request(&message),
                },
                None => None,
            };
            state.store.list(filter, rv, None, limit)
        }
    };
    let page = match result {
        Ok(page) => page,
        Err(expired) => return json_response(StatusCode::GONE, &expired.status()),
    };
    let kind = &KINDS[filter.kind];
    let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
    if let (Some(token), Some(meta)) = (&page.continue_token, metadata.as_object_mut()) {
        meta.insert("continue".into(), json!(token));
        meta.insert("remainingItemCount".into(), json!(page.remaining));
    }
    let body = json!({
        "kind": format!("{}List", kind.kind),
        "apiVersion": kind.api_version(),
        "metadata": metadata,
        "items": page.items,
    });
    json_response(StatusCode::OK, &body)
}

/// Counts an open watch and marks its connection; undoes both when the body is dropped.
struct WatchGuard {
    shared: Arc<Shared>,
    info: Option<ConnInfo>,
    counted: bool,
}

impl WatchGuard {
    /// Marks the connection (at once).
    fn new(shared: Arc<Shared>, info: Option<ConnInfo>) -> Self {
        if let Some(info) = &info {
            info.serving_watch.store(true, Ordering::SeqCst);
        }
        Self {
            shared,
            info,
            counted: false,
        }
    }

    /// Counts the watch as open: called under the same lock that fixes what the watch has
    /// seen (bookmark requests, cuts), so a test that sees it open knows it will see what
    /// comes next.
    fn count(&mut self, state: &mut State) {
        state.open_watches += 1;
        self.counted = true;
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if self.counted {
            state.open_watches = state.open_watches.saturating_sub(1);
        }
        if let Some(info) = &self.info {
            info.serving_watch.store(false, Ordering::SeqCst);
        }
    }
}

fn streaming<S>(stream: S) -> Response
where
    S: Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn watch(
    shared: &Arc<Shared>,
    filter: Filter,
    params: &BTreeMap<String, String>,
    info: Option<ConnInfo>,
) -> Response {
    let flag = |name: &str| matches!(params.get(name).map(String::as_str), Some("true" | "1"));
    let bookmarks = flag("allowWatchBookmarks");
    let send_initial_events = flag("sendInitialEvents");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    let rv_text = params
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    // Mark the connection as serving a watch before reading the cut count below, so a cut
    // racing with this request either is seen by the stream or closes its connection.
    let mut guard = WatchGuard::new(shared.clone(), info);
    let mut tick = shared.tick.subscribe();
    let mut state = shared.lock();
    let (initial, cursor) = if rv_text.is_empty() || rv_text == "0" || send_initial_events {
        (state.store.initial_events(&filter), state.store.rv)
    } else {
        let rv = match parse_rv(rv_text) {
            Ok(rv) => rv,
            Err(message) => return bad_request(&message),
        };
        let retained = if state.expire_every_watch {
            Err(Expired {
                requested: rv,
                oldest: state.store.rv.saturating_add(1),
            })
        } else {
            state.store.check_retained(rv)
        };
        if let Err(expired) = retained {
            if state.expired_style == ExpiredStyle::HttpGone {
                return json_response(StatusCode::GONE, &expired.status());
            }
            let event = line(&json!({"type": "ERROR", "object": expired.status()}));
            let once = async_stream::stream! { yield Ok::<_, Infallible>(event); };
            return streaming(once);
        }
        (Vec::new(), rv)
    };
    let bookmark_interval = state.bookmark_interval;
    let mut bookmark_epoch = state.bookmark_epoch;
    let cuts = state.watch_cuts;
    guard.count(&mut state);
    drop(state);

    let shared = shared.clone();
    let kind = filter.kind;
    let stream = async_stream::stream! {
        let _guard = guard;
        let mut cursor = cursor;
        for event in initial {
            yield Ok::<_, Infallible>(line(&event));
        }
        if send_initial_events {
            yield Ok(line(&Store::bookmark(kind, cursor, true)));
        }
        let deadline = Instant::now() + timeout;
        let mut next_bookmark = bookmark_interval.map(|d| Instant::now() + d);
        let mut periodic_due = false;
        loop {
            let (lines, end, cut) = {
                let mut state = shared.lock();
                if state.watch_cuts != cuts || state.down.is_some() {
                    (Vec::new(), false, true)
                } else {
                    match state.store.events_after(cursor, &filter) {
                        Ok(events) => {
                            let mut lines: Vec<Bytes> = events.iter().map(line).collect();
                            cursor = state.store.rv;
                            let asked = state.bookmark_epoch != bookmark_epoch;
                            bookmark_epoch = state.bookmark_epoch;
                            if bookmarks && (asked || periodic_due) {
                                lines.push(line(&Store::bookmark(kind, cursor, false)));
                                *state.bookmarks_sent.entry(KINDS[kind].plural).or_default() += 1;
                            }
                            (lines, false, false)
                        }
                        // Fell behind a compaction: the real server ends such a watch with 410.
                        Err(expired) => (
                            vec![line(&json!({"type": "ERROR", "object": expired.status()}))],
                            true,
                            false,
                        ),
                    }
                }
            };
            if cut {
                // Cut (or the server went down): send nothing more and wait for the
                // connection to be closed under this stream; never end it cleanly.
                std::future::pending::<()>().await;
            }
            periodic_due = false;
            for bytes in lines {
                yield Ok(bytes);
            }
            if end {
                break;
            }
            let far = deadline + Duration::from_secs(1);
            tokio::select! {
                changed = tick.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                () = tokio::time::sleep_until(deadline) => break,
                () = tokio::time::sleep_until(next_bookmark.unwrap_or(far)), if next_bookmark.is_some() => {
                    periodic_due = true;
                    next_bookmark = bookmark_interval.map(|d| Instant::now() + d);
                }
            }
        }
    };
    streaming(stream)
}
