//! The API server and what it holds: the synthetic cluster loaded as API objects, and the changes written to it.

use super::*;

/// The admin's view of the control plane, and the synthetic cluster loaded into it so far.
pub(crate) struct Cluster {
    pub(crate) test: TestCluster,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) client: Client,
    pub(crate) synthetic: SyntheticCluster,
    /// The virtual servers of each loaded Service (ClusterIP, NodePort, ingress), in order.
    pub(crate) keys: Vec<Vec<ServiceKey>>,
}

impl Cluster {
    pub(crate) fn connect(largest: usize) -> Self {
        let test = TestCluster::from_env().expect("the control plane's description");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let kubeconfig = test
            .kubeconfig(Identity::Admin, None)
            .expect("the admin's kubeconfig");
        let client = rt.block_on(async {
            let config = Kubeconfig::from_yaml(&kubeconfig).expect("a kubeconfig");
            let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
                .await
                .expect("a client configuration");
            Client::try_from(config).expect("a client")
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        while let Err(e) = rt.block_on(client.apiserver_version()) {
            assert!(
                Instant::now() < deadline,
                "the API server never answered: {e}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Self {
            test,
            rt,
            client,
            synthetic: SyntheticCluster::new(largest, ENDPOINTS),
            keys: Vec::new(),
        }
    }

    /// The node, the namespaces, and the daemon's rights: those of kube-proxy
    /// (`system:node-proxier`), so that both proxies are authorized alike.
    pub(crate) fn prepare(&self) {
        let apply = PatchParams::apply(MANAGED_BY).force();
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "ipvs-proxy-bench"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:node-proxier"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": Identity::Daemon.user()}],
        }))
        .expect("a ClusterRoleBinding");
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        }))
        .expect("a Node");
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": NODE_IP.to_string()}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        self.rt.block_on(async {
            Api::<ClusterRoleBinding>::all(self.client.clone())
                .patch("ipvs-proxy-bench", &apply, &Patch::Apply(&binding))
                .await
                .expect("bind the daemon's identity");
            nodes
                .patch(NODE, &apply, &Patch::Apply(&node))
                .await
                .expect("the bench's Node");
            nodes
                .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("the bench's Node's status");
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            for i in 0..synthetic::NAMESPACES.min(self.synthetic.len()) {
                let name = self.synthetic.service(i).namespace.clone();
                let ns: Namespace = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                }))
                .expect("a Namespace");
                namespaces
                    .patch(&name, &apply, &Patch::Apply(&ns))
                    .await
                    .expect("a namespace");
            }
        });
    }

    /// Creates Services `self.keys.len()..n` with their slices; returns the seconds it took.
    pub(crate) fn load(&mut self, n: usize) -> f64 {
        let started = Instant::now();
        let from = self.keys.len();
        let client = &self.client;
        let synthetic = &self.synthetic;
        let created: Vec<(usize, Vec<ServiceKey>)> = self.rt.block_on(
            stream::iter(from..n)
                .map(|i| create_service(client, synthetic, i))
                .buffer_unordered(IN_FLIGHT)
                .collect(),
        );
        let mut created: BTreeMap<usize, Vec<ServiceKey>> = created.into_iter().collect();
        for i in from..n {
            self.keys
                .push(created.remove(&i).expect("every Service was created"));
        }
        started.elapsed().as_secs_f64()
    }

    /// What a complete table holds for the loaded Services: each virtual server and how many
    /// of its real servers are ready.
    pub(crate) fn expected(&self) -> Vec<(ServiceKey, usize)> {
        self.keys
            .iter()
            .enumerate()
            .flat_map(|(i, keys)| {
                let ready = (0..ENDPOINTS)
                    .filter(|&j| self.synthetic.is_ready(i, j))
                    .count();
                keys.iter().map(move |k| (*k, ready))
            })
            .collect()
    }

    /// Sets one endpoint's readiness in its EndpointSlice.
    pub(crate) fn set_ready(&mut self, service: usize, endpoint: usize, ready: bool) {
        self.synthetic
            .mark_ready(service, endpoint, ready)
            .expect("an endpoint of the cluster");
        let (ns, name, patch) = slice_patch(&self.synthetic, service);
        self.rt.block_on(async {
            Api::<EndpointSlice>::namespaced(self.client.clone(), &ns)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("update an EndpointSlice")
        });
    }

    /// Sets the readiness of endpoint `endpoint` of each of `services`, `IN_FLIGHT` writes at a
    /// time, telling `written` just before each write starts.
    pub(crate) fn set_ready_all(
        &mut self,
        services: &[usize],
        endpoint: usize,
        ready: bool,
        written: &(dyn Fn(usize) + Sync),
    ) {
        let mut patches = Vec::new();
        for (k, &s) in services.iter().enumerate() {
            self.synthetic
                .mark_ready(s, endpoint, ready)
                .expect("an endpoint of the cluster");
            patches.push((k, slice_patch(&self.synthetic, s)));
        }
        let client = &self.client;
        self.rt.block_on(
            stream::iter(patches)
                .map(|(k, (ns, name, patch))| async move {
                    written(k);
                    Api::<EndpointSlice>::namespaced(client.clone(), &ns)
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .expect("update an EndpointSlice");
                })
                .buffer_unordered(IN_FLIGHT)
                .collect::<Vec<()>>(),
        );
    }
}

/// Service `i` and its slice, as the API server should hold them: the ClusterIP and NodePort
/// left for the API server to give out.
pub(crate) fn objects(synthetic: &SyntheticCluster, i: usize) -> (Service, EndpointSlice) {
    let list: Value = serde_json::from_str(&synthetic.manifest(i)).expect("a synthetic manifest");
    let mut service = list["items"][0].clone();
    if let Some(spec) = service["spec"].as_object_mut() {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    if let Some(port) = service["spec"]["ports"][0].as_object_mut() {
        port.remove("nodePort");
    }
    if let Some(obj) = service.as_object_mut() {
        obj.remove("status");
    }
    let mut slice = list["items"][1].clone();
    slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] = json!(MANAGED_BY);
    (
        serde_json::from_value(service).expect("a Service"),
        serde_json::from_value(slice).expect("an EndpointSlice"),
    )
}

/// The namespace, name and merge patch that give Service `i`'s slice its endpoints' current
/// readiness.
pub(crate) fn slice_patch(synthetic: &SyntheticCluster, i: usize) -> (String, String, Value) {
    let list: Value = serde_json::from_str(&synthetic.manifest(i)).expect("a synthetic manifest");
    let slice = &list["items"][1];
    (
        slice["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        slice["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        json!({"endpoints": slice["endpoints"]}),
    )
}

pub(crate) async fn create_service(
    client: &Client,
    synthetic: &SyntheticCluster,
    i: usize,
) -> (usize, Vec<ServiceKey>) {
    let described = synthetic.service(i);
    let (service, slice) = objects(synthetic, i);
    let services: Api<Service> = Api::namespaced(client.clone(), &described.namespace);
    let created = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap_or_else(|e| panic!("create Service {}: {e}", described.name));
    if let Some(ip) = described.ingress_ip {
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string()}]}}});
        services
            .patch_status(
                &described.name,
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap_or_else(|e| panic!("Service {}'s status: {e}", described.name));
    }
    Api::<EndpointSlice>::namespaced(client.clone(), &described.namespace)
        .create(&PostParams::default(), &slice)
        .await
        .unwrap_or_else(|e| panic!("create {}'s EndpointSlice: {e}", described.name));
    let spec = created.spec.unwrap_or_default();
    let cluster_ip: IpAddr = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("Service {} got no ClusterIP", described.name));
    let first = spec
        .ports
        .as_ref()
        .and_then(|p| p.first())
        .unwrap_or_else(|| panic!("Service {} has no port", described.name));
    let port = u16::try_from(first.port).unwrap_or(0);
    let mut keys = vec![ServiceKey::tcp(cluster_ip, port)];
    if let Some(node_port) = first.node_port.and_then(|p| u16::try_from(p).ok()) {
        keys.push(ServiceKey::tcp(NODE_IP, node_port));
    }
    if let Some(ip) = described.ingress_ip {
        keys.push(ServiceKey::tcp(ip, port));
    }
    (i, keys)
}
