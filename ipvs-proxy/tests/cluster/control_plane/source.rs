//! The Kubernetes source (`ipvs_proxy::source::kubernetes::run`) with the daemon's own
//! credential (only `deploy/rbac.yaml`'s ClusterRole) against the real API server, whose
//! EndpointSlice controller writes the slices.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration::cluster::{Identity, Relay};
use ipvs_proxy::source::kubernetes::{client, run};
use ipvs_proxy::telemetry::Metrics;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use svc_controller::runtime::Change;
use svc_controller::runtime::Message;

use super::harness::{Kube, labels, serial, service};

const NS: &str = "cp-source";
const NODE: &str = "cp-source-node";
const OTHER_NODE: &str = "cp-source-other";

/// What the source has said about this test's namespace, as the engine's store would hold it.
#[derive(Debug, Default)]
struct View {
    services: BTreeSet<String>,
    /// Slice name → (owning Service, ready addresses).
    slices: BTreeMap<String, (String, Vec<String>)>,
    nodes: BTreeSet<String>,
    service_resets: usize,
    /// Every Service and slice name ever delivered, and every node.
    services_seen: BTreeSet<String>,
    slice_services_seen: BTreeSet<String>,
    nodes_seen: BTreeSet<String>,
    /// Node label values of this node, in order.
    node_zones: Vec<String>,
}

fn ours<K: kube::Resource>(object: &K) -> Option<String> {
    (object.meta().namespace.as_deref() == Some(NS))
        .then(|| object.meta().name.clone().unwrap_or_default())
}

impl View {
    fn apply(&mut self, message: Message) {
        match message {
            Message::Services(change) => {
                let (objects, deleted, reset) = split(change);
                if reset {
                    self.services.clear();
                    self.service_resets += 1;
                }
                for s in objects.iter().filter_map(ours) {
                    self.services_seen.insert(s.clone());
                    if deleted {
                        self.services.remove(&s);
                    } else {
                        self.services.insert(s);
                    }
                }
            }
            Message::Slices(change) => {
                let (objects, deleted, reset) = split(change);
                if reset {
                    self.slices.clear();
                }
                for slice in objects {
                    let Some(name) = ours(&slice) else { continue };
                    let owner = slice
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name").cloned())
                        .unwrap_or_default();
                    self.slice_services_seen.insert(owner.clone());
                    if deleted {
                        self.slices.remove(&name);
                        continue;
                    }
                    let ready = slice
                        .endpoints
                        .iter()
                        .flatten()
                        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                        .flat_map(|e| e.addresses.clone())
                        .collect();
                    self.slices.insert(name, (owner, ready));
                }
            }
            Message::Node(change) => {
                let (objects, deleted, reset) = split(change);
                if reset {
                    self.nodes.clear();
                }
                for node in objects {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    self.nodes_seen.insert(name.clone());
                    if let Some(zone) = node
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("topology.kubernetes.io/zone"))
                    {
                        self.node_zones.push(zone.clone());
                    }
                    if deleted {
                        self.nodes.remove(&name);
                    } else {
                        self.nodes.insert(name);
                    }
                }
            }
            Message::Shutdown => {}
        }
    }

    /// The ready addresses of `service`'s slices.
    fn ready_of(&self, service: &str) -> Vec<String> {
        let mut all: Vec<String> = self
            .slices
            .values()
            .filter(|(owner, _)| owner == service)
            .flat_map(|(_, ready)| ready.clone())
            .collect();
        all.sort();
        all
    }
}

/// A change's objects, whether they were deleted, and whether it replaces everything.
fn split<K>(change: Change<K>) -> (Vec<K>, bool, bool) {
    match change {
        Change::Applied(o) => (vec![o], false, false),
        Change::Deleted(o) => (vec![o], true, false),
        Change::Reset(all) => (all, false, true),
        Change::Synced => (Vec::new(), false, false),
    }
}

/// The source, running on the test's runtime with the daemon's credential through a relay
/// the test can cut; every message folded into a [`View`].
struct Source {
    view: Arc<Mutex<View>>,
    relay: Relay,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_source(kube: &Kube) -> Source {
    let relay = Relay::start_here(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        kube.cluster.api_addr(),
    )
    .unwrap();
    let text = kube
        .cluster
        .kubeconfig(Identity::Daemon, Some(&relay.url()))
        .unwrap();
    let config = kube
        .run(kube::Config::from_custom_kubeconfig(
            Kubeconfig::from_yaml(&text).unwrap(),
            &KubeConfigOptions::default(),
        ))
        .unwrap();
    // The client's buffer task starts on the runtime it is made in.
    let _runtime = kube.rt.enter();
    let client = client(config).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let view = Arc::new(Mutex::new(View::default()));
    let shared = view.clone();
    std::thread::spawn(move || {
        for message in rx {
            shared.lock().unwrap().apply(message);
        }
    });
    let task = kube.rt.spawn(run(
        client,
        NODE.into(),
        None,
        tx,
        Arc::new(Metrics::new(false)),
    ));
    Source { view, relay, task }
}

impl Source {
    fn wait(&self, kube: &Kube, what: &str, mut ok: impl FnMut(&View) -> bool) {
        kube.wait_for(what, || ok(&self.view.lock().unwrap()).then_some(()));
    }

    fn check(&self, f: impl FnOnce(&View)) {
        f(&self.view.lock().unwrap());
    }
}

#[test]
#[ignore = "needs a real control plane: cargo xtask control-plane-tests"]
fn the_source_lists_watches_relists_and_rides_out_an_outage() {
    let _one = serial();
    let kube = Kube::connect();
    kube.bind_daemon();
    kube.namespace(NS);
    kube.node(NODE, "192.0.2.1", "zone-a");
    kube.node(OTHER_NODE, "192.0.2.9", "zone-b");

    // What this node proxies, and what it must not see: a headless Service and one that
    // belongs to another proxy (their slices are labelled alike by the EndpointSlice
    // controller).
    kube.pod(NS, "web-0", NODE, "web", "10.244.0.5", 8080);
    kube.pod(NS, "web-1", OTHER_NODE, "web", "10.244.1.5", 8080);
    kube.create_service(
        NS,
        &service("web", "ClusterIP", Some("web"), 80, IntOrString::Int(8080)),
    );
    let mut headless = service(
        "headless",
        "ClusterIP",
        Some("web"),
        80,
        IntOrString::Int(8080),
    );
    headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    kube.create_service(NS, &headless);
    let mut other = service(
        "other",
        "ClusterIP",
        Some("web"),
        80,
        IntOrString::Int(8080),
    );
    other.metadata.labels = Some(labels(&[(
        "service.kubernetes.io/service-proxy-name",
        "other-proxy",
    )]));
    kube.create_service(NS, &other);

    let source = start_source(&kube);
    source.wait(
        &kube,
        "the initial lists (web and its two ready pods)",
        |v| {
            v.services.contains("web")
                && v.ready_of("web") == ["10.244.0.5", "10.244.1.5"]
                && v.nodes.contains(NODE)
        },
    );

    // Watch events: a new Service, a port change, a pod turning unready, a deletion.
    kube.create_service(
        NS,
        &service("api", "ClusterIP", Some("web"), 81, IntOrString::Int(8080)),
    );
    source.wait(&kube, "the new Service", |v| v.services.contains("api"));
    kube.set_pod_status(NS, "web-1", "10.244.1.5", false);
    source.wait(&kube, "web-1 unready", |v| {
        v.ready_of("web") == ["10.244.0.5"]
    });
    kube.delete_service(NS, "api");
    source.wait(&kube, "the deleted Service gone", |v| {
        !v.services.contains("api")
    });
    // This node's labels change; the other node's do not reach us.
    let zone = |z: &str| json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}});
    kube.run(kube.cluster_api::<Node>().patch(
        OTHER_NODE,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&zone("zone-c")),
    ))
    .unwrap();
    kube.run(kube.cluster_api::<Node>().patch(
        NODE,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&zone("zone-d")),
    ))
    .unwrap();
    source.wait(&kube, "this node's new zone", |v| {
        v.node_zones.last().map(String::as_str) == Some("zone-d")
    });

    // A partition while the history it would resume from is compacted away: the watch is
    // answered 410 and the source lists again, changes made meanwhile included.
    let resets_before = source.view.lock().unwrap().service_resets;
    source.relay.cut();
    kube.create_service(
        NS,
        &service("late", "ClusterIP", Some("web"), 82, IntOrString::Int(8080)),
    );
    kube.delete_service(NS, "web");
    let compacted = kube.cluster.control("compact").unwrap();
    println!("etcd compacted: {compacted}");
    std::thread::sleep(Duration::from_secs(2));
    source.relay.restore();
    source.wait(&kube, "the relist after 410 (late there, web gone)", |v| {
        v.service_resets > resets_before
            && v.services.contains("late")
            && !v.services.contains("web")
    });

    // The API server stops: nothing known is dropped while it is away, and after it is back a
    // change arrives as usual.
    kube.cluster.control("stop apiserver").unwrap();
    std::thread::sleep(Duration::from_secs(10));
    source.check(|v| {
        assert!(
            v.services.contains("late") && v.nodes.contains(NODE),
            "kept during the outage: {v:?}"
        )
    });
    kube.cluster.control("start apiserver").unwrap();
    kube.wait_ready();
    kube.create_service(
        NS,
        &service(
            "after",
            "ClusterIP",
            Some("web"),
            83,
            IntOrString::Int(8080),
        ),
    );
    source.wait(&kube, "a change after the outage", |v| {
        v.services.contains("after") && v.services.contains("late")
    });

    source.check(|v| {
        // A headless Service itself arrives (the label is on its slices, as kube-proxy's
        // selector expects: the desired state skips a Service without a ClusterIP).
        assert!(
            !v.services_seen.contains("other"),
            "the server-side selector keeps other proxies' Services away: {:?}",
            v.services_seen
        );
        assert!(
            !v.slice_services_seen.contains("headless") && !v.slice_services_seen.contains("other"),
            "and the slices of headless Services and of other proxies' Services: {:?}",
            v.slice_services_seen
        );
        assert_eq!(
            v.nodes_seen,
            BTreeSet::from([NODE.to_string()]),
            "the field selector shows this node only"
        );
    });
    kube.delete_namespace(NS);
    kube.delete_node(NODE);
    kube.delete_node(OTHER_NODE);
}
