//! The Kubernetes source (`ipvs_proxy::source::kubernetes::run`) driven through the real
//! `kube` client against a stand-in API server: initial lists, incremental changes,
//! bookmarks, dropped watches, expired history (410), an API server that goes away (and how
//! soon, and how often, the source asks again), and one that answers nothing but 410.
//!
//! No sleeps stand in for assertions: every wait is for a condition, with a timeout. The only
//! sleeps are outages, whose length is the scenario.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipvs_proxy::source::backoff::WATCH_BACKOFF;
use ipvs_proxy::source::kubernetes::{HEADLESS_LABEL, client, label_selector, run};
use ipvs_proxy::telemetry::Metrics;
use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube_standin::{DownMode, ExpiredStyle, LoggedRequest, StandIn, Verb, wait_until};
use svc_controller::runtime::Change;
use svc_controller::runtime::Message;
use tokio::sync::mpsc::{UnboundedReceiver, error::TryRecvError};

/// How long any one expected thing may take (generous: the machine is small and loaded, and
/// the watcher backs off up to a few seconds after errors).
const WAIT: Duration = Duration::from_secs(60);

const NODE: &str = "node-a";
const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

fn service(name: &str, port: i32, extra: &[(&str, &str)]) -> Service {
    let mut s = Service::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some("default".into());
    s.metadata.labels = labels(extra);
    s.spec = Some(ServiceSpec {
        cluster_ip: Some("10.96.0.10".into()),
        ports: Some(vec![ServicePort {
            port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    s
}

fn slice(name: &str, service: &str, address: &str, extra: &[(&str, &str)]) -> EndpointSlice {
    let mut all = vec![(SERVICE_NAME_LABEL, service)];
    all.extend_from_slice(extra);
    EndpointSlice {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: labels(&all),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![address.into()],
            ..Default::default()
        }]
        .into(),
        ports: None,
    }
}

fn node(name: &str, zone: &str) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = labels(&[(ZONE_LABEL, zone)]);
    n
}

fn name<K: kube::Resource>(object: &K) -> String {
    object.meta().name.clone().unwrap_or_default()
}

fn names<K: kube::Resource>(objects: &[K]) -> Vec<String> {
    let mut names: Vec<String> = objects.iter().map(name).collect();
    names.sort();
    names
}

/// A compact, order-independent description of a message, for assertions.
fn describe(message: &Message) -> String {
    fn change<K: kube::Resource>(kind: &str, change: &Change<K>) -> String {
        match change {
            Change::Applied(o) => format!("{kind} applied {}", name(o)),
            Change::Deleted(o) => format!("{kind} deleted {}", name(o)),
            Change::Reset(all) => format!("{kind} reset {:?}", names(all)),
            Change::Synced => format!("{kind} synced"),
        }
    }
    match message {
        Message::Services(c) => change("services", c),
        Message::Slices(c) => change("slices", c),
        Message::Node(c) => change("node", c),
        Message::Shutdown => "shutdown".into(),
    }
}

/// The source under test, running against a stand-in, with its messages forwarded to an
/// async channel.
struct Harness {
    server: StandIn,
    rx: UnboundedReceiver<Message>,
    metrics: Arc<Metrics>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Harness {
    async fn start(server: StandIn, service_proxy_name: Option<&str>) -> Self {
        let config = server.config().expect("a kube config for the stand-in");
        let client = client(config).expect("a kube client for the stand-in");
        let metrics = Arc::new(Metrics::new(false));
        let (tx, std_rx) = std::sync::mpsc::channel();
        let (fwd, rx) = tokio::sync::mpsc::unbounded_channel();
        // The source sends on a std channel; a thread forwards to something awaitable. It
        // ends when either side is gone.
        std::thread::spawn(move || {
            for message in std_rx {
                if fwd.send(message).is_err() {
                    break;
                }
            }
        });
        let task = tokio::spawn(run(
            client,
            NODE.into(),
            service_proxy_name.map(str::to_owned),
            tx,
            metrics.clone(),
        ));
        Self {
            server,
            rx,
            metrics,
            task,
        }
    }

    async fn next(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a message in time")
            .expect("the source is running")
    }

    /// The next `n` messages, described and sorted (their order across kinds is free).
    async fn next_n(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let message = self.next().await;
            out.push(describe(&message));
        }
        out.sort();
        out
    }

    /// The first three messages: one `Reset` per kind.
    async fn initial(&mut self) -> (Vec<Service>, Vec<EndpointSlice>, Vec<Node>) {
        let (mut services, mut slices, mut nodes) = (None, None, None);
        for _ in 0..3 {
            match self.next().await {
                Message::Services(Change::Reset(all)) if services.is_none() => {
                    services = Some(all);
                }
                Message::Slices(Change::Reset(all)) if slices.is_none() => slices = Some(all),
                Message::Node(Change::Reset(all)) if nodes.is_none() => nodes = Some(all),
                other => panic!("expected one Reset per kind, got {}", describe(&other)),
            }
        }
        (
            services.expect("services reset"),
            slices.expect("slices reset"),
            nodes.expect("node reset"),
        )
    }

    /// Nothing has been sent (and not yet received).
    fn assert_quiet(&mut self, when: &str) {
        match self.rx.try_recv() {
            Err(TryRecvError::Empty) => {}
            Ok(message) => panic!("{when}: unexpected message {}", describe(&message)),
            Err(TryRecvError::Disconnected) => panic!("{when}: the source stopped"),
        }
    }

    fn source_errors(&self) -> u64 {
        let text = self.metrics.encode().expect("metrics encode");
        text.lines()
            .find(|l| l.starts_with("ipvs_proxy_source_errors_total{source=\"kubernetes\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until all three watches are open on the stand-in.
    async fn wait_watching(&self) {
        assert!(
            wait_until(WAIT, || self.server.open_watches() == 3).await,
            "the three watches open (open: {})",
            self.server.open_watches()
        );
    }
}

fn of(requests: &[LoggedRequest], verb: Verb, resource: &str) -> Vec<LoggedRequest> {
    requests
        .iter()
        .filter(|r| r.is_ok(verb, resource))
        .cloned()
        .collect()
}

/// The usual cluster: what this node proxies, plus a headless Service and one that belongs
/// to another proxy (with their slices), and two nodes.
fn populate(server: &StandIn) {
    for object in [
        service("web", 80, &[]),
        service("db", 5432, &[]),
        service("headless", 80, &[(HEADLESS_LABEL, "")]),
        service("other", 80, &[(PROXY_NAME_LABEL, "other-proxy")]),
    ] {
        server.create(&object).expect("create service");
    }
    for object in [
        slice("web-1", "web", "10.0.0.1", &[]),
        slice("db-1", "db", "10.0.0.2", &[]),
        slice(
            "headless-1",
            "headless",
            "10.0.0.3",
            &[(HEADLESS_LABEL, "")],
        ),
        slice(
            "other-1",
            "other",
            "10.0.0.4",
            &[(PROXY_NAME_LABEL, "other-proxy")],
        ),
    ] {
        server.create(&object).expect("create slice");
    }
    server.create(&node(NODE, "z1")).expect("create node");
    server.create(&node("node-b", "z2")).expect("create node");
}

async fn started(server: StandIn) -> Harness {
    populate(&server);
    let mut h = Harness::start(server, None).await;
    let (services, slices, nodes) = h.initial().await;
    assert_eq!(names(&services), ["db", "web"]);
    assert_eq!(names(&slices), ["db-1", "web-1"]);
    assert_eq!(names(&nodes), [NODE]);
    h.wait_watching().await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_lists_arrive_as_one_reset_per_kind_filtered_on_the_server() {
    let server = StandIn::start().await.expect("stand-in starts");
    let h = started(server).await;
    let selector = label_selector(None);
    assert_eq!(
        selector,
        "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
    );
    let log = h.server.requests();
    for resource in ["services", "endpointslices"] {
        let lists = of(&log, Verb::List, resource);
        assert_eq!(lists.len(), 1, "one list of {resource}");
        assert_eq!(lists[0].path, format!("{}", path_of(resource)));
        assert_eq!(lists[0].param("labelSelector").as_deref(), Some(&*selector));
        let watches = of(&log, Verb::Watch, resource);
        assert!(!watches.is_empty(), "a watch of {resource}");
        for w in &watches {
            assert_eq!(w.param("labelSelector").as_deref(), Some(&*selector));
            assert_eq!(w.param("allowWatchBookmarks").as_deref(), Some("true"));
        }
    }
    let node_filter = format!("metadata.name={NODE}");
    for verb in [Verb::List, Verb::Watch] {
        let node_requests = of(&log, verb, "nodes");
        assert!(!node_requests.is_empty());
        for r in node_requests {
            assert_eq!(r.param("fieldSelector").as_deref(), Some(&*node_filter));
        }
    }
}

fn path_of(resource: &str) -> &'static str {
    match resource {
        "services" => "/api/v1/services",
        "endpointslices" => "/apis/discovery.k8s.io/v1/endpointslices",
        _ => "/api/v1/nodes",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_proxy_name_selects_only_the_services_labelled_for_it() {
    let server = StandIn::start().await.expect("stand-in starts");
    populate(&server);
    server
        .create(&service("mine", 80, &[(PROXY_NAME_LABEL, "ipvs-rs")]))
        .expect("create");
    server
        .create(&slice(
            "mine-1",
            "mine",
            "10.0.0.9",
            &[(PROXY_NAME_LABEL, "ipvs-rs")],
        ))
        .expect("create");
    let mut h = Harness::start(server, Some("ipvs-rs")).await;
    let (services, slices, _) = h.initial().await;
    assert_eq!(names(&services), ["mine"]);
    assert_eq!(names(&slices), ["mine-1"]);
    let lists = of(&h.server.requests(), Verb::List, "services");
    assert_eq!(
        lists[0].param("labelSelector").as_deref(),
        Some("service.kubernetes.io/service-proxy-name=ipvs-rs,!service.kubernetes.io/headless")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_updates_and_deletes_arrive_incrementally() {
    let server = StandIn::start().await.expect("stand-in starts");
    let mut h = started(server).await;

    h.server.create(&service("api", 8080, &[])).expect("create");
    assert_eq!(describe(&h.next().await), "services applied api");

    h.server.apply(&service("api", 9090, &[])).expect("update");
    match h.next().await {
        Message::Services(Change::Applied(s)) => {
            assert_eq!(name(&s), "api");
            let port = s.spec.and_then(|spec| spec.ports).map(|p| p[0].port);
            assert_eq!(port, Some(9090), "the update is what arrives");
        }
        other => panic!("expected the updated Service, got {}", describe(&other)),
    }

    h.server
        .create(&slice("api-1", "api", "10.0.1.1", &[]))
        .expect("create");
    assert_eq!(describe(&h.next().await), "slices applied api-1");
    h.server
        .apply(&slice("api-1", "api", "10.0.1.2", &[]))
        .expect("update");
    match h.next().await {
        Message::Slices(Change::Applied(s)) => {
            let address = s
                .endpoints
                .and_then(|e| e.first().map(|e| e.addresses[0].clone()));
            assert_eq!(address.as_deref(), Some("10.0.1.2"));
        }
        other => panic!("expected the updated slice, got {}", describe(&other)),
    }

    // A slice that becomes headless leaves the filtered watch: a deletion for this node.
    h.server
        .apply(&slice("api-1", "api", "10.0.1.2", &[(HEADLESS_LABEL, "")]))
        .expect("update");
    assert_eq!(describe(&h.next().await), "slices deleted api-1");

    // Objects this node never sees produce nothing; the next message is the next real one.
    h.server
        .create(&service(
            "elsewhere",
            80,
            &[(PROXY_NAME_LABEL, "other-proxy")],
        ))
        .expect("create");
    h.server.delete(&service("api", 0, &[])).expect("delete");
    assert_eq!(describe(&h.next().await), "services deleted api");
    h.assert_quiet("after the deletion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_are_silent_and_a_dropped_watch_resumes_from_the_bookmark() {
    let server = StandIn::builder()
        .bookmark_interval(None)
        .start()
        .await
        .expect("stand-in starts");
    let mut h = started(server).await;
    let mark = h.server.request_count();
    let listed_at = h.server.resource_version();

    // Another node changes: every watch's server-side filter drops it, so only a bookmark
    // can tell the watches that the version moved on.
    h.server.apply(&node("node-b", "z3")).expect("update");
    let bookmark_rv = h.server.resource_version();
    assert!(bookmark_rv > listed_at);
    let resources = ["services", "endpointslices", "nodes"];
    let before: Vec<u64> = resources
        .iter()
        .map(|r| h.server.bookmarks_sent_to(r))
        .collect();
    h.server.send_bookmarks();
    let all_bookmarked = wait_until(WAIT, || {
        resources
            .iter()
            .zip(&before)
            .all(|(r, n)| h.server.bookmarks_sent_to(r) > *n)
    })
    .await;
    assert!(
        all_bookmarked,
        "every watch got its bookmark: sent {:?}, open {}, log {:#?}",
        resources.map(|r| h.server.bookmarks_sent_to(r)),
        h.server.open_watches(),
        h.server.requests()
    );
    h.assert_quiet("after bookmarks");

    // Cut the watches: each resumes from the bookmark's version, without a relist.
    let cut = h.server.request_count();
    h.server.drop_watches();
    let rewatched = wait_until(WAIT, || {
        let since = h.server.requests_since(cut);
        resources
            .iter()
            .all(|r| !of(&since, Verb::Watch, r).is_empty())
    })
    .await;
    assert!(rewatched, "all three watches came back");
    let since = h.server.requests_since(cut);
    for resource in resources {
        let first = &of(&since, Verb::Watch, resource)[0];
        assert_eq!(
            first.param("resourceVersion"),
            Some(bookmark_rv.to_string()),
            "{resource} resumed from the bookmark"
        );
    }
    h.wait_watching().await;
    h.assert_quiet("after the watches were cut");

    // Changes made while the server is unreachable arrive once it is back, still without
    // a relist.
    h.server.go_down(DownMode::Refuse).await.expect("down");
    h.server.create(&service("late", 81, &[])).expect("create");
    h.server
        .apply(&slice("web-1", "web", "10.0.0.100", &[]))
        .expect("update");
    h.server.apply(&node(NODE, "z9")).expect("update");
    h.server.come_up().await.expect("up");
    assert_eq!(
        h.next_n(3).await,
        [
            "node applied node-a",
            "services applied late",
            "slices applied web-1"
        ]
    );
    let all = h.server.requests_since(mark);
    for resource in resources {
        assert!(
            of(&all, Verb::List, resource).is_empty(),
            "no relist of {resource}"
        );
    }
    h.wait_watching().await;
    h.assert_quiet("at the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_bookmarks_pass_silently() {
    let server = StandIn::builder()
        .bookmark_interval(Some(Duration::from_millis(50)))
        .start()
        .await
        .expect("stand-in starts");
    let mut h = started(server).await;
    let sent = h.server.bookmarks_sent();
    assert!(
        wait_until(WAIT, || h.server.bookmarks_sent() >= sent + 30).await,
        "bookmarks keep coming"
    );
    h.assert_quiet("after many bookmarks");
    // The watches are still the first ones: bookmarks did not break them.
    let log = h.server.requests();
    for resource in ["services", "endpointslices", "nodes"] {
        assert_eq!(of(&log, Verb::Watch, resource).len(), 1, "{resource}");
    }
    h.server.create(&service("after", 80, &[])).expect("create");
    assert_eq!(describe(&h.next().await), "services applied after");
}

/// The server forgets its history while the source is cut off: on its return, each watch is
/// told 410 (as `style` says), relists, and sends one `Reset` with the current state.
async fn expired_history_relists(style: ExpiredStyle) {
    let server = StandIn::builder()
        .bookmark_interval(None)
        .expired_style(style)
        .start()
        .await
        .expect("stand-in starts");
    let mut h = started(server).await;

    h.server.go_down(DownMode::Refuse).await.expect("down");
    h.server.delete(&service("web", 0, &[])).expect("delete");
    h.server
        .delete(&slice("web-1", "web", "", &[]))
        .expect("delete");
    h.server.create(&service("new", 80, &[])).expect("create");
    h.server.apply(&service("db", 5433, &[])).expect("update");
    h.server.compact();
    let mark = h.server.request_count();
    h.server.come_up().await.expect("up");

    let mut services = None;
    let mut slices = None;
    let mut nodes = None;
    for _ in 0..3 {
        match h.next().await {
            Message::Services(Change::Reset(all)) if services.is_none() => services = Some(all),
            Message::Slices(Change::Reset(all)) if slices.is_none() => slices = Some(all),
            Message::Node(Change::Reset(all)) if nodes.is_none() => nodes = Some(all),
            other => panic!(
                "expected one Reset per kind (no Deleted/Applied), got {}",
                describe(&other)
            ),
        }
    }
    let services = services.expect("services reset");
    assert_eq!(names(&services), ["db", "new"]);
    let db = services.iter().find(|s| name(*s) == "db").expect("db");
    let port = db
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|p| p[0].port);
    assert_eq!(port, Some(5433), "the reset has the current state");
    assert_eq!(names(&slices.expect("slices reset")), ["db-1"]);
    assert_eq!(names(&nodes.expect("node reset")), [NODE]);
    h.wait_watching().await;
    h.assert_quiet("after the relist");

    let since = h.server.requests_since(mark);
    for resource in ["services", "endpointslices", "nodes"] {
        let expired = since.iter().any(|r| {
            r.verb == Verb::Watch
                && r.resource.as_deref() == Some(resource)
                && r.status
                    == Some(match style {
                        ExpiredStyle::ErrorEvent => 200,
                        ExpiredStyle::HttpGone => 410,
                    })
        });
        assert!(expired, "{resource}: the watch was answered 410");
        assert_eq!(
            of(&since, Verb::List, resource).len(),
            1,
            "{resource} relisted once"
        );
    }
    // And the fresh watches carry on.
    h.server.create(&service("later", 80, &[])).expect("create");
    assert_eq!(describe(&h.next().await), "services applied later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_history_as_an_error_event_relists_into_one_reset() {
    expired_history_relists(ExpiredStyle::ErrorEvent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_history_as_http_410_relists_into_one_reset() {
    expired_history_relists(ExpiredStyle::HttpGone).await;
}

/// While the server is down nothing is sent (the node keeps its last state); changes made
/// meanwhile arrive once it is back.
async fn outage(mode: DownMode) {
    let server = StandIn::builder()
        .bookmark_interval(None)
        .start()
        .await
        .expect("stand-in starts");
    let mut h = started(server).await;
    let errors_before = h.source_errors();
    let mark = h.server.request_count();

    h.server.go_down(mode).await.expect("down");
    h.server
        .create(&service("during", 80, &[]))
        .expect("create");
    h.server
        .delete(&slice("db-1", "db", "", &[]))
        .expect("delete");
    h.server.apply(&node(NODE, "z5")).expect("update");
    // Failures (refused connections or error statuses) reach the source, which counts them.
    let counted = wait_until(WAIT, || h.source_errors() >= errors_before + 3).await;
    assert!(counted, "errors counted: {}", h.source_errors());
    if let DownMode::Status(code) = mode {
        let refused = h
            .server
            .requests_since(mark)
            .iter()
            .filter(|r| r.status == Some(code))
            .count();
        assert!(refused >= 3, "requests were answered {code}: {refused}");
    }
    h.assert_quiet("while the API server is down");

    h.server.come_up().await.expect("up");
    assert_eq!(
        h.next_n(3).await,
        [
            "node applied node-a",
            "services applied during",
            "slices deleted db-1"
        ]
    );
    h.wait_watching().await;
    h.assert_quiet("after the outage");
    let since = h.server.requests_since(mark);
    for resource in ["services", "endpointslices", "nodes"] {
        assert!(
            of(&since, Verb::List, resource).is_empty(),
            "{resource}: resumed without a relist"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_refusing_connections_keeps_the_last_state_and_counts_errors() {
    outage(DownMode::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_answering_503_keeps_the_last_state() {
    outage(DownMode::Status(503)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_watch_sees_only_this_node() {
    let server = StandIn::builder()
        .bookmark_interval(None)
        .start()
        .await
        .expect("stand-in starts");
    let mut h = started(server).await;

    // Another node's changes are filtered out on the server; ours arrive, in order.
    h.server.apply(&node("node-b", "z7")).expect("update");
    h.server.create(&node("node-c", "z1")).expect("create");
    h.server.apply(&node(NODE, "z2")).expect("update");
    match h.next().await {
        Message::Node(Change::Applied(n)) => {
            assert_eq!(name(&n), NODE);
            let zone = n.metadata.labels.and_then(|l| l.get(ZONE_LABEL).cloned());
            assert_eq!(zone.as_deref(), Some("z2"));
        }
        other => panic!("expected this node's update, got {}", describe(&other)),
    }
    h.server.delete(&node(NODE, "")).expect("delete");
    assert_eq!(describe(&h.next().await), "node deleted node-a");
    h.server.create(&node(NODE, "z3")).expect("create");
    assert_eq!(describe(&h.next().await), "node applied node-a");
    h.assert_quiet("at the end");
}

/// How long an outage lasts in the recovery tests: long enough for a backoff that doubles
/// without a low cap to be waiting well over ten seconds per retry by the time the server is
/// back (and for [`WATCH_BACKOFF`] to have reached its cap).
const LONG_OUTAGE: Duration = Duration::from_secs(15);

/// How soon after the API server is back the source must deliver the current state: one retry
/// at the backoff's cap, then a relist, with room for a loaded machine.
fn recovery_bound() -> Duration {
    WATCH_BACKOFF.max + Duration::from_secs(3)
}

/// The most requests among `times` that fall within any `window`.
fn most_within(times: &[Instant], window: Duration) -> usize {
    let mut times = times.to_vec();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Takes the server down (as `mode` says) for [`LONG_OUTAGE`], changes and compacts its
/// history meanwhile, and brings it back: the source must deliver the converged state, one
/// `Reset` per kind, within [`recovery_bound`]. Returns the requests the server received while
/// down and when it went down and came back.
async fn long_outage(mode: DownMode) -> (Vec<LoggedRequest>, Instant, Instant) {
    let server = StandIn::builder()
        .bookmark_interval(None)
        .start()
        .await
        .expect("stand-in starts");
    let mut h = started(server).await;

    let mark = h.server.request_count();
    h.server.go_down(mode).await.expect("down");
    let down_at = Instant::now();
    h.server.delete(&service("web", 0, &[])).expect("delete");
    h.server
        .delete(&slice("web-1", "web", "", &[]))
        .expect("delete");
    h.server.create(&service("new", 80, &[])).expect("create");
    h.server.apply(&node(NODE, "z8")).expect("update");
    // The real server's watch cache does not reach back that far: every watch is told 410.
    h.server.compact();
    tokio::time::sleep(LONG_OUTAGE).await;
    h.assert_quiet(&format!("{mode:?}: while the API server is down"));

    let during = h.server.requests_since(mark);
    h.server.come_up().await.expect("up");
    let up_at = Instant::now();
    let (mut services, mut slices, mut nodes) = (None, None, None);
    for _ in 0..3 {
        match h.next().await {
            Message::Services(Change::Reset(all)) if services.is_none() => services = Some(all),
            Message::Slices(Change::Reset(all)) if slices.is_none() => slices = Some(all),
            Message::Node(Change::Reset(all)) if nodes.is_none() => nodes = Some(all),
            other => panic!(
                "{mode:?}: expected one Reset per kind, got {}",
                describe(&other)
            ),
        }
    }
    let took = up_at.elapsed();
    assert!(
        took <= recovery_bound(),
        "{mode:?}: the converged state took {took:?} after the API server came back \
         (at most {:?}); requests since: {:#?}",
        recovery_bound(),
        h.server
            .requests_since(mark + during.len())
            .iter()
            .map(|r| (r.at - up_at, r.verb, r.resource.clone(), r.status))
            .collect::<Vec<_>>()
    );
    assert_eq!(names(&services.expect("services reset")), ["db", "new"]);
    assert_eq!(names(&slices.expect("slices reset")), ["db-1"]);
    let nodes = nodes.expect("node reset");
    let zone = nodes[0]
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ZONE_LABEL).cloned());
    assert_eq!(zone.as_deref(), Some("z8"), "{mode:?}: the node's change");
    h.wait_watching().await;
    h.assert_quiet(&format!("{mode:?}: after the relist"));
    (during, down_at, up_at)
}

/// An API server that refuses connections, and one that answers 503 (a load balancer with no
/// server behind it), each down for [`LONG_OUTAGE`]: once back, the source follows within
/// seconds; while down, it asks a few times a second at most, and keeps asking until the end.
/// (The two run at once, to keep the test's run time to one outage.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_api_server_is_followed_within_seconds_and_a_down_one_is_not_hammered() {
    let (refused, (during, down_at, up_at)) = tokio::join!(
        long_outage(DownMode::Refuse),
        long_outage(DownMode::Status(503))
    );
    // Refused connections never reach the server's log.
    assert!(refused.0.is_empty(), "{:#?}", refused.0);

    let times: Vec<Instant> = during.iter().map(|r| r.at).collect();
    assert!(during.iter().all(|r| r.status == Some(503)), "{during:#?}");
    // Three watches, each at most three requests in any second: the re-watch right after the
    // cut, then delays that start at a quarter of a second and double.
    let busiest = most_within(&times, Duration::from_secs(1));
    assert!(
        busiest <= 9,
        "{busiest} requests within a second while down: {:#?}",
        times.iter().map(|t| *t - down_at).collect::<Vec<_>>()
    );
    // Once the delays have reached the cap (after 0.5 + 1 + 2 s at most), each watch asks at
    // most once per half the cap, and at least once per cap: it has not given up or slowed
    // down further.
    let settled = down_at + Duration::from_secs(8);
    let late: Vec<_> = during.iter().filter(|r| r.at >= settled).collect();
    let span = (up_at - settled).as_secs_f64();
    let per_watch_most = (span / (WATCH_BACKOFF.max.as_secs_f64() / 2.0)).ceil() as usize + 1;
    assert!(
        late.len() <= 3 * per_watch_most,
        "{} requests in the last {span:.1} s of the outage (at most {})",
        late.len(),
        3 * per_watch_most
    );
    let last_cap = up_at - WATCH_BACKOFF.max - Duration::from_millis(1500);
    for resource in ["services", "endpointslices", "nodes"] {
        // (Requests answered while down are logged by path only.)
        assert!(
            late.iter()
                .any(|r| r.path == path_of(resource) && r.at >= last_cap),
            "{resource}: no request in the last {:?} of the outage",
            up_at - last_cap
        );
    }
}

/// A server that answers every watch with 410 (as `style` says) although it lists fine: the
/// first relist comes at once, later ones further and further apart (no list-watch loop), and
/// each relist is one `Reset` with the same state. Once the server behaves, the watches settle.
async fn endless_410(style: ExpiredStyle) {
    /// How long the server keeps answering 410.
    const SPELL: Duration = Duration::from_secs(10);
    let server = StandIn::builder()
        .bookmark_interval(None)
        .expired_style(style)
        .start()
        .await
        .expect("stand-in starts");
    let mut h = started(server).await;
    let mark = h.server.request_count();
    h.server.expire_every_watch(true);
    h.server.drop_watches();
    let end = Instant::now() + SPELL;
    let mut resets = 0;
    while let Ok(received) = tokio::time::timeout_at(end.into(), h.rx.recv()).await {
        let message = received.expect("the source is running");
        let text = describe(&message);
        assert!(
            [
                "services reset [\"db\", \"web\"]",
                "slices reset [\"db-1\", \"web-1\"]",
                "node reset [\"node-a\"]"
            ]
            .contains(&text.as_str()),
            "{style:?}: {text}"
        );
        resets += 1;
    }
    let log = h.server.requests_since(mark);
    for resource in ["services", "endpointslices", "nodes"] {
        let watches: Vec<_> = log
            .iter()
            .filter(|r| r.verb == Verb::Watch && r.resource.as_deref() == Some(resource))
            .collect();
        let lists = of(&log, Verb::List, resource);
        let first_410 = watches.first().expect("a watch after the cut").at;
        let first_list = lists
            .iter()
            .find(|r| r.at >= first_410)
            .expect("a relist")
            .at;
        // "At once": well under the backoff's first delay.
        assert!(
            first_list - first_410 < WATCH_BACKOFF.initial,
            "{style:?} {resource}: relisted {:?} after the first 410",
            first_list - first_410
        );
        // Relists 0.25-0.5, 0.5-1, 1-2, then 2-4 s apart: it keeps following the server,
        // no more often than the growing delays allow, and the delays reach the cap.
        let gaps: Vec<Duration> = lists.windows(2).map(|w| w[1].at - w[0].at).collect();
        assert!(
            (4..=8).contains(&lists.len()),
            "{style:?} {resource}: {} relists in {SPELL:?}, the first {:?} apart",
            lists.len(),
            &gaps[..gaps.len().min(10)]
        );
        let widest = gaps.iter().max().copied().unwrap_or_default();
        assert!(
            widest >= WATCH_BACKOFF.max / 2,
            "{style:?} {resource}: relists {gaps:?} apart"
        );
    }
    assert!(resets >= 9, "{style:?}: {resets} resets");

    h.server.expire_every_watch(false);
    h.wait_watching().await;
    h.server.create(&service("calm", 80, &[])).expect("create");
    // Resets from relists still in flight may come first.
    loop {
        match h.next().await {
            Message::Services(Change::Applied(s)) if name(&s) == "calm" => break,
            other if describe(&other).contains(" reset ") => {}
            other => panic!(
                "{style:?}: expected the new Service, got {}",
                describe(&other)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_answering_410_is_relisted_at_once_then_less_and_less_often() {
    tokio::join!(
        endless_410(ExpiredStyle::ErrorEvent),
        endless_410(ExpiredStyle::HttpGone)
    );
}
