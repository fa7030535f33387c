//! What every control-plane test needs: the cluster, clients for its identities, the daemon's
//! RBAC, object builders, and one test at a time.
//!
//! The tests share one control plane, and one of them stops its API server: they take
//! [`serial`] so that none runs while another does. Each uses its own namespace and node
//! names, and looks only at its own objects (the others' Services are in every list).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use integration::cluster::{Identity, TestCluster};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, Node, Pod, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Deserialize;
use serde_json::json;

/// Generous: the VM is emulated and the machine small.
pub(super) const WAIT: Duration = Duration::from_secs(120);

static SERIAL: Mutex<()> = Mutex::new(());

/// One control-plane test at a time (a failed test's poison is not ours to inherit).
pub(super) fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The cluster, a runtime to drive the async client from plain tests, and the admin's client.
pub(super) struct Kube {
    pub(super) cluster: TestCluster,
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) admin: Client,
}

impl Kube {
    /// Connects as the admin and waits until the API server is ready.
    pub(super) fn connect() -> Self {
        let cluster = TestCluster::from_env().expect("the control plane's description");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let admin = rt.block_on(client_for(&cluster, Identity::Admin, None));
        let kube = Self { cluster, rt, admin };
        kube.wait_ready();
        kube
    }

    /// Runs a future to completion.
    pub(super) fn run<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// Waits until `/readyz` answers 200 (RBAC's bootstrap roles included).
    pub(super) fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
            match self.run(self.admin.request_text(request)) {
                Ok(text) if text.trim() == "ok" => return,
                outcome => {
                    assert!(
                        Instant::now() < deadline,
                        "the API server was not ready in time: {outcome:?}"
                    );
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    pub(super) fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.admin.clone(), namespace)
    }

    pub(super) fn cluster_api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>,
        K::DynamicType: Default,
    {
        Api::all(self.admin.clone())
    }

    /// Gives the daemon's identity exactly `deploy/rbac.yaml`'s ClusterRole, as the
    /// ClusterRoleBinding there gives it to the DaemonSet's ServiceAccount.
    pub(super) fn bind_daemon(&self) {
        let text = std::fs::read_to_string(deploy_dir().join("rbac.yaml")).unwrap();
        let role: ClusterRole = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
            .find(|v| v.get("kind").and_then(|k| k.as_str()) == Some("ClusterRole"))
            .map(|v| serde_yaml_ng::from_value(v).unwrap())
            .expect("deploy/rbac.yaml holds a ClusterRole");
        let role_name = role.metadata.name.clone().unwrap();
        let apply = PatchParams::apply("control-plane-tests").force();
        self.run(
            self.cluster_api::<ClusterRole>()
                .patch(&role_name, &apply, &Patch::Apply(&role)),
        )
        .unwrap();
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some("ipvs-proxy-under-test".into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: role_name,
            },
            subjects: Some(vec![Subject {
                kind: "User".into(),
                name: Identity::Daemon.user().into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                ..Default::default()
            }]),
        };
        self.run(self.cluster_api::<ClusterRoleBinding>().patch(
            "ipvs-proxy-under-test",
            &apply,
            &Patch::Apply(&binding),
        ))
        .unwrap();
    }

    /// A fresh namespace (deleted first if an earlier run left it).
    pub(super) fn namespace(&self, name: &str) {
        let api = self.cluster_api::<Namespace>();
        self.delete_namespace(name);
        let deadline = Instant::now() + WAIT;
        while self.run(api.get_opt(name)).unwrap().is_some() {
            assert!(Instant::now() < deadline, "namespace {name} not deleted");
            std::thread::sleep(Duration::from_millis(500));
        }
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        self.run(api.create(&PostParams::default(), &ns)).unwrap();
    }

    /// Deletes a namespace (and, through the namespace controller, what is in it). Its pods
    /// go at once: with no kubelet to confirm, a pod deleted with a grace period stays
    /// terminating, and so would the namespace.
    pub(super) fn delete_namespace(&self, name: &str) {
        let _ = self.run(self.api::<Pod>(name).delete_collection(
            &DeleteParams::background().grace_period(0),
            &Default::default(),
        ));
        let _ = self.run(
            self.cluster_api::<Namespace>()
                .delete(name, &DeleteParams::default()),
        );
    }

    /// A Node with an internal address (two, comma-separated, on a dual-stack node), as a
    /// kubelet registers it.
    pub(super) fn node(&self, name: &str, address: &str, zone: &str) {
        let api = self.cluster_api::<Node>();
        let _ = self.run(api.delete(name, &DeleteParams::default()));
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels(&[
                    ("topology.kubernetes.io/zone", zone),
                    ("kubernetes.io/hostname", name),
                ])),
                ..Default::default()
            },
            ..Default::default()
        };
        self.run(api.create(&PostParams::default(), &node)).unwrap();
        let addresses: Vec<_> = address
            .split(',')
            .map(|a| json!({"type": "InternalIP", "address": a}))
            .collect();
        let status = json!({"status": {
            "addresses": addresses,
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        self.run(api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)))
            .unwrap();
    }

    pub(super) fn delete_node(&self, name: &str) {
        let _ = self.run(
            self.cluster_api::<Node>()
                .delete(name, &DeleteParams::default()),
        );
    }

    /// A running pod on `node` with `labels`, its container port `http` at `port`, its status
    /// written through the status subresource as a kubelet writes it. `ip` is its address, or
    /// its two, comma-separated, when it is dual-stack.
    pub(super) fn pod(&self, ns: &str, name: &str, node: &str, app: &str, ip: &str, port: i32) {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels(&[("app", app)])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                containers: vec![Container {
                    name: "server".into(),
                    image: Some("registry.invalid/none".into()),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: port,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        self.run(self.api::<Pod>(ns).create(&PostParams::default(), &pod))
            .unwrap();
        self.set_pod_status(ns, name, ip, true);
    }

    /// Writes a pod's status: running at `ip` (one address, or two comma-separated), ready or
    /// not.
    pub(super) fn set_pod_status(&self, ns: &str, name: &str, ip: &str, ready: bool) {
        let ready = if ready { "True" } else { "False" };
        let ips: Vec<_> = ip.split(',').map(|a| json!({"ip": a})).collect();
        let status = json!({"status": {
            "phase": "Running",
            "podIP": ip.split(',').next(),
            "podIPs": ips,
            "conditions": [
                {"type": "Ready", "status": ready},
                {"type": "ContainersReady", "status": ready},
            ],
        }});
        self.run(self.api::<Pod>(ns).patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&status),
        ))
        .unwrap();
    }

    pub(super) fn create_service(&self, ns: &str, service: &Service) -> Service {
        self.run(
            self.api::<Service>(ns)
                .create(&PostParams::default(), service),
        )
        .unwrap()
    }

    pub(super) fn patch_service(&self, ns: &str, name: &str, patch: serde_json::Value) -> Service {
        self.run(self.api::<Service>(ns).patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ))
        .unwrap()
    }

    pub(super) fn delete_service(&self, ns: &str, name: &str) {
        self.run(
            self.api::<Service>(ns)
                .delete(name, &DeleteParams::default()),
        )
        .unwrap();
    }

    /// Waits for `probe` to give a value, failing with `what` after [`WAIT`].
    pub(super) fn wait_for<T>(&self, what: &str, probe: impl FnMut() -> Option<T>) -> T {
        self.try_wait_for(probe)
            .unwrap_or_else(|| panic!("timed out waiting for {what}"))
    }

    /// Waits up to [`WAIT`] for `probe` to give a value.
    pub(super) fn try_wait_for<T>(&self, probe: impl FnMut() -> Option<T>) -> Option<T> {
        integration::daemon::wait_until(WAIT, probe)
    }
}

/// A client for `identity`, dialling `server` (or the address the tests dial).
pub(super) async fn client_for(
    cluster: &TestCluster,
    identity: Identity,
    server: Option<&str>,
) -> Client {
    let text = cluster.kubeconfig(identity, server).unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&text).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

pub(super) fn deploy_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A Service of `kind` selecting `app` (none: selector-less), one TCP port `port` →
/// `target`.
pub(super) fn service(
    name: &str,
    kind: &str,
    app: Option<&str>,
    port: i32,
    target: IntOrString,
) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(kind.into()),
            selector: app.map(|a| labels(&[("app", a)])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(target),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The ClusterIP the API server allocated.
pub(super) fn cluster_ip(service: &Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .expect("a ClusterIP")
}
