//! The Kubernetes source: watches of Services, EndpointSlices and this node's Node object.
//!
//! The watches filter on the server as kube-proxy's do: Services and EndpointSlices labelled
//! `service.kubernetes.io/service-proxy-name` (another proxy's) or
//! `service.kubernetes.io/headless` are never sent to this node (or, with
//! `--service-proxy-name`, only those labelled with that name are), and the Node watch selects
//! this node by name.
//!
//! Each watch is a `kube-runtime` watcher: it lists, then watches from the list's resource
//! version, follows bookmarks, relists when the server answers 410 Gone, and re-watches after
//! a dropped connection. After a failure it waits as [`super::backoff`] says (at most
//! [`WATCH_BACKOFF`]'s cap, so a recovered API server is followed within seconds); a 410
//! relists at once unless the server keeps answering 410. The waiting is this module's alone:
//! the client is built without `kube`'s own retry layer ([`client`]). A (re)list is passed on
//! only once complete, as one [`Change::Reset`], so a relist after an outage replaces what was
//! known in one step; until then the engine keeps its last good state and the IPVS table does
//! not move.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use svc_controller::SERVICE_PROXY_NAME_LABEL;
use tracing::{debug, info, warn};

use super::backoff::{Backoff, WATCH_BACKOFF};
use crate::telemetry::Metrics;
use svc_controller::desired::reads::{trim_service, trim_slice};
use svc_controller::runtime::{Change, Message, Sender};

/// The label the EndpointSlice controller puts on the slices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The label selector of the Service and EndpointSlice watches (kube-proxy's).
pub fn label_selector(service_proxy_name: Option<&str>) -> String {
    match service_proxy_name {
        None => format!("!{SERVICE_PROXY_NAME_LABEL},!{HEADLESS_LABEL}"),
        Some(name) => format!("{SERVICE_PROXY_NAME_LABEL}={name},!{HEADLESS_LABEL}"),
    }
}

/// A client for `config`, without the retry layer `kube` adds by default.
///
/// That layer retries a request answered 429, 503 or 504 up to 15 times, with delays that
/// double from 5 ms (jittered up to threefold, capped only at 1000 s), before the watch even
/// sees the failure: a burst of quick retries at first, then, behind a load balancer that
/// answers 503 while the API server is down, a wait that grows with the outage and can reach
/// minutes after the server is back. The watches' own backoff ([`WATCH_BACKOFF`]) handles these
/// answers like any other failure.
pub fn client(mut config: kube::Config) -> Result<Client, kube::Error> {
    config.default_retry = false;
    Client::try_from(config)
}

/// Watches Services, EndpointSlices and the Node named `node_name` and sends what changes to
/// `tx`, until `tx`'s receiver is gone. Never returns an error: a failing watch is logged,
/// counted in `ipvs_proxy_source_errors_total{source="kubernetes"}`, and retried with backoff.
pub async fn run(
    client: Client,
    node_name: String,
    service_proxy_name: Option<String>,
    tx: Sender,
    metrics: Arc<Metrics>,
) {
    let selector = label_selector(service_proxy_name.as_deref());
    let services = watch::<Service>(
        Api::all(client.clone()),
        watcher::Config::default().labels(&selector),
        tx.clone(),
        metrics.clone(),
        trim_service,
        Message::Services,
    );
    let slices = watch::<EndpointSlice>(
        Api::all(client.clone()),
        watcher::Config::default().labels(&selector),
        tx.clone(),
        metrics.clone(),
        trim_slice,
        Message::Slices,
    );
    let node = watch::<Node>(
        Api::all(client),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
        tx,
        metrics,
        trim_node,
        Message::Node,
    );
    tokio::join!(services, slices, node);
}

/// A Node reduced to what the daemon reads: its name, labels and deletion timestamp.
pub fn trim_node(node: Node) -> Node {
    Node {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: node.metadata.name,
            labels: node.metadata.labels,
            deletion_timestamp: node.metadata.deletion_timestamp,
            ..Default::default()
        },
        spec: None,
        status: None,
    }
}

/// Whether the server answered 410 Gone (a resource version older than its history: a watch
/// refused with HTTP 410, an `ERROR` event with a 410 `Status`, or an expired `continue` of a
/// paged list), which only a relist can get past.
fn expired(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        watcher::Error::WatchError(status) => status.code == 410,
        _ => false,
    }
}

async fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    tx: Sender,
    metrics: Arc<Metrics>,
    trim: fn(K) -> K,
    wrap: fn(Change<K>) -> Message,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let kind = K::kind(&()).into_owned();
    // No `kube-runtime` backoff on the stream: the loop below waits after errors itself, as
    // only it can tell a 410 (relist now) from a failure (wait).
    let start = || watcher::watcher(api.clone(), config.clone()).boxed();
    let mut stream = start();
    let mut backoff = Backoff::new(WATCH_BACKOFF);
    let mut initial: Option<Vec<K>> = None;
    while let Some(event) = stream.next().await {
        let change = match event {
            Ok(Event::Init) => {
                debug!(%kind, "listing");
                initial = Some(Vec::new());
                continue;
            }
            Ok(Event::InitApply(object)) => {
                initial.get_or_insert_with(Vec::new).push(trim(object));
                continue;
            }
            Ok(Event::InitDone) => {
                let all = initial.take().unwrap_or_default();
                info!(%kind, objects = all.len(), "listed");
                Change::Reset(all)
            }
            Ok(Event::Apply(object)) => Change::Applied(trim(object)),
            Ok(Event::Delete(object)) => Change::Deleted(trim(object)),
            Err(error) => {
                // The watcher retries on its next poll; the engine keeps what it has meanwhile.
                metrics.source_error("kubernetes");
                let delay = if expired(&error) {
                    // kube-runtime retries a watch refused with HTTP 410 at the same expired
                    // version forever (it relists only on a 410 ERROR event): a fresh watcher
                    // lists at once and watches from the new list, whatever the 410 was.
                    stream = start();
                    backoff.after_expired(Instant::now())
                } else {
                    backoff.after_failure(Instant::now())
                };
                warn!(%kind, %error, retry_in = ?delay, "watch failed; keeping the last known state");
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                continue;
            }
        };
        if tx.send(wrap(change)).is_err() {
            return; // the engine is gone: shutting down
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            Status::failure("too old resource version", "Expired").with_code(code),
        ))
    }

    #[test]
    fn every_kind_of_410_is_expired_and_nothing_else() {
        use watcher::Error::{InitialListFailed, WatchError, WatchFailed, WatchStartFailed};
        let gone = Status::failure("too old resource version", "Expired").with_code(410);
        assert!(expired(&WatchStartFailed(api(410))));
        assert!(expired(&InitialListFailed(api(410))));
        assert!(expired(&WatchError(Box::new(gone.clone()))));
        assert!(expired(&WatchFailed(api(410))));
        assert!(!expired(&WatchStartFailed(api(503))));
        assert!(!expired(&InitialListFailed(api(500))));
        assert!(!expired(&WatchError(Box::new(gone.with_code(500)))));
        assert!(!expired(&WatchFailed(api(429))));
        assert!(!expired(&watcher::Error::NoResourceVersion));
    }
}
