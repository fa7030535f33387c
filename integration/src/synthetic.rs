//! Deterministic synthetic clusters for the scale benchmarks: N Services with their
//! EndpointSlices, written as manifests the node daemon (`ipvs-proxy --manifests DIR`) reads.
//!
//! The mix follows a typical cluster: of every 50 Services, 40 are ClusterIP only (80 %), 9 are
//! NodePort (18 %) and 1 is LoadBalancer with an ingress IP (2 %). Each Service has one TCP port
//! (80 → 8080) and one EndpointSlice of [`SyntheticCluster::endpoints_per_service`] ready
//! endpoints. Nothing is random: Service `i` is the same in every run, so figures from two runs
//! describe the same table.
//!
//! Each Service is one JSON file (`svc-000042.json`, a `List` of the Service and its slice): a
//! readiness flip rewrites one small file, atomically (a temporary file renamed over it), as
//! a tool writing manifests would.
//!
//! Addresses (none of them needs to exist for IPVS to be programmed):
//!
//! | what | where |
//! |---|---|
//! | ClusterIPs | `10.96.0.0/12`, Service `i` at `10.96.0.0 + i + 1` |
//! | pod IPs | `10.128.0.0/9`, endpoint `j` of Service `i` at `10.128.0.0 + 16 i + j + 1` |
//! | load-balancer ingress IPs | `172.16.0.0/12`, Service `i` at `172.16.0.0 + i + 1` |
//! | NodePorts | `30000` upwards, one per NodePort or LoadBalancer Service, in order |

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::daemon::write_atomically;

/// The first NodePort handed out.
pub const FIRST_NODE_PORT: u16 = 30_000;
/// The Service port of every synthetic Service.
pub const SERVICE_PORT: u16 = 80;
/// The endpoints' (target) port.
pub const TARGET_PORT: u16 = 8080;
/// How many namespaces the Services are spread over.
pub const NAMESPACES: usize = 100;
/// The most endpoints a Service can have (the pod-IP layout leaves room for 15).
pub const MAX_ENDPOINTS: usize = 15;

/// The type of a synthetic Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// `type: ClusterIP`: one virtual server (ClusterIP:80).
    ClusterIp,
    /// `type: NodePort`: ClusterIP:80 and node-address:NodePort.
    NodePort,
    /// `type: LoadBalancer` with one ingress IP: ClusterIP:80, node-address:NodePort and
    /// ingress-IP:80.
    LoadBalancer,
}

/// One synthetic Service: everything needed to write its manifest and to know the virtual
/// servers it should produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticService {
    /// Its index in the cluster (also its file name).
    pub index: usize,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Its type.
    pub kind: ServiceKind,
    /// `spec.clusterIP`.
    pub cluster_ip: Ipv4Addr,
    /// `spec.ports[0].nodePort` (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
    /// `status.loadBalancer.ingress[0].ip` (LoadBalancer Services).
    pub ingress_ip: Option<Ipv4Addr>,
    /// The endpoints' pod IPs, in slice order.
    pub endpoints: Vec<Ipv4Addr>,
}

impl SyntheticService {
    /// The virtual servers (address, TCP port) this Service should have on a node whose only
    /// NodePort address is `node_address`.
    pub fn virtual_servers(&self, node_address: Ipv4Addr) -> Vec<(Ipv4Addr, u16)> {
        let mut out = vec![(self.cluster_ip, SERVICE_PORT)];
        if let Some(port) = self.node_port {
            out.push((node_address, port));
        }
        if let Some(ip) = self.ingress_ip {
            out.push((ip, SERVICE_PORT));
        }
        out
    }

    /// The file that holds this Service and its slice.
    pub fn file_name(&self) -> String {
        file_name(self.index)
    }
}

/// The file name of Service `index`.
pub fn file_name(index: usize) -> String {
    format!("svc-{index:06}.json")
}

/// A synthetic cluster and the readiness of each endpoint.
#[derive(Debug, Clone)]
pub struct SyntheticCluster {
    services: Vec<SyntheticService>,
    endpoints_per_service: usize,
    /// `(service, endpoint)` pairs currently not ready.
    not_ready: BTreeSet<(usize, usize)>,
}

impl SyntheticCluster {
    /// `services` Services of `endpoints_per_service` ready endpoints each (at most
    /// [`MAX_ENDPOINTS`]; more are cut to that).
    pub fn new(services: usize, endpoints_per_service: usize) -> Self {
        let endpoints_per_service = endpoints_per_service.min(MAX_ENDPOINTS);
        let mut next_node_port = u32::from(FIRST_NODE_PORT);
        let services = (0..services)
            .map(|i| {
                let kind = kind_of(i);
                let node_port = match kind {
                    ServiceKind::ClusterIp => None,
                    ServiceKind::NodePort | ServiceKind::LoadBalancer => {
                        let port = next_node_port;
                        next_node_port += 1;
                        // Past 65,535 NodePorts cannot be given out; such a cluster is too big.
                        Some(u16::try_from(port).unwrap_or(u16::MAX))
                    }
                };
                SyntheticService {
                    index: i,
                    namespace: format!("ns-{:03}", i % NAMESPACES),
                    name: format!("svc-{i:06}"),
                    kind,
                    cluster_ip: offset(Ipv4Addr::new(10, 96, 0, 0), i as u32 + 1),
                    node_port,
                    ingress_ip: (kind == ServiceKind::LoadBalancer)
                        .then(|| offset(Ipv4Addr::new(172, 16, 0, 0), i as u32 + 1)),
                    endpoints: (0..endpoints_per_service)
                        .map(|j| offset(Ipv4Addr::new(10, 128, 0, 0), (i * 16 + j + 1) as u32))
                        .collect(),
                }
            })
            .collect();
        Self {
            services,
            endpoints_per_service,
            not_ready: BTreeSet::new(),
        }
    }

    /// The Services, by index.
    pub fn services(&self) -> &[SyntheticService] {
        &self.services
    }

    /// Service `index`.
    pub fn service(&self, index: usize) -> &SyntheticService {
        &self.services[index]
    }

    /// How many Services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there is no Service.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Endpoints per Service.
    pub fn endpoints_per_service(&self) -> usize {
        self.endpoints_per_service
    }

    /// How many Services of each kind: (ClusterIP, NodePort, LoadBalancer).
    pub fn mix(&self) -> (usize, usize, usize) {
        let count = |k| self.services.iter().filter(|s| s.kind == k).count();
        (
            count(ServiceKind::ClusterIp),
            count(ServiceKind::NodePort),
            count(ServiceKind::LoadBalancer),
        )
    }

    /// The NodePort range the cluster needs: kube-proxy's default (30000-32767) when it fits,
    /// wider otherwise (pass it to the daemon's `--node-port-range`).
    pub fn node_port_range(&self) -> RangeInclusive<u16> {
        let last = self
            .services
            .iter()
            .filter_map(|s| s.node_port)
            .max()
            .unwrap_or(FIRST_NODE_PORT);
        FIRST_NODE_PORT..=last.max(32_767)
    }

    /// How many virtual servers and real servers the node's table should hold with every
    /// endpoint ready.
    pub fn table_size(&self) -> (usize, usize) {
        let vs: usize = self
            .services
            .iter()
            .map(|s| s.virtual_servers(Ipv4Addr::UNSPECIFIED).len())
            .sum();
        (vs, vs * self.endpoints_per_service)
    }

    /// Whether endpoint `endpoint` of Service `service` is ready.
    pub fn is_ready(&self, service: usize, endpoint: usize) -> bool {
        !self.not_ready.contains(&(service, endpoint))
    }

    /// The manifest of Service `index` (a JSON `List` of the Service and its EndpointSlice),
    /// with the current readiness of its endpoints.
    pub fn manifest(&self, index: usize) -> String {
        let s = &self.services[index];
        let (ty, node_port) = match s.kind {
            ServiceKind::ClusterIp => ("ClusterIP", String::new()),
            ServiceKind::NodePort => ("NodePort", String::new()),
            ServiceKind::LoadBalancer => ("LoadBalancer", String::new()),
        };
        let node_port = match s.node_port {
            Some(p) => format!(",\"nodePort\":{p}"),
            None => node_port,
        };
        let status = match s.ingress_ip {
            Some(ip) => {
                format!(",\"status\":{{\"loadBalancer\":{{\"ingress\":[{{\"ip\":\"{ip}\"}}]}}}}")
            }
            None => String::new(),
        };
        let endpoints: Vec<String> = s
            .endpoints
            .iter()
            .enumerate()
            .map(|(j, ip)| {
                let ready = self.is_ready(index, j);
                format!(
                    "{{\"addresses\":[\"{ip}\"],\"conditions\":{{\"ready\":{ready},\"serving\":{ready},\"terminating\":false}},\"nodeName\":\"node-{}\"}}",
                    (index + j) % 100
                )
            })
            .collect();
        format!(
            concat!(
                "{{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[\n",
                "{{\"apiVersion\":\"v1\",\"kind\":\"Service\",",
                "\"metadata\":{{\"name\":\"{name}\",\"namespace\":\"{ns}\"}},",
                "\"spec\":{{\"type\":\"{ty}\",\"clusterIP\":\"{cip}\",\"clusterIPs\":[\"{cip}\"],",
                "\"ports\":[{{\"name\":\"http\",\"protocol\":\"TCP\",\"port\":{port},\"targetPort\":{target}{node_port}}}]}}",
                "{status}}},\n",
                "{{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSlice\",",
                "\"metadata\":{{\"name\":\"{name}-abcde\",\"namespace\":\"{ns}\",",
                "\"labels\":{{\"kubernetes.io/service-name\":\"{name}\"}}}},",
                "\"addressType\":\"IPv4\",",
                "\"ports\":[{{\"name\":\"http\",\"protocol\":\"TCP\",\"port\":{target}}}],",
                "\"endpoints\":[{endpoints}]}}\n",
                "]}}\n"
            ),
            name = s.name,
            ns = s.namespace,
            ty = ty,
            cip = s.cluster_ip,
            port = SERVICE_PORT,
            target = TARGET_PORT,
            node_port = node_port,
            status = status,
            endpoints = endpoints.join(","),
        )
    }

    /// Writes every Service's file into `dir` (created if missing).
    pub fn write_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for i in 0..self.services.len() {
            write_atomically(&dir.join(file_name(i)), &self.manifest(i))?;
        }
        Ok(())
    }

    /// Sets the readiness of one endpoint, in this description only (see
    /// [`SyntheticCluster::set_ready`] for its file too).
    pub fn mark_ready(&mut self, service: usize, endpoint: usize, ready: bool) -> io::Result<()> {
        if service >= self.services.len() || endpoint >= self.endpoints_per_service {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no endpoint {endpoint} of Service {service}"),
            ));
        }
        if ready {
            self.not_ready.remove(&(service, endpoint));
        } else {
            self.not_ready.insert((service, endpoint));
        }
        Ok(())
    }

    /// Sets the readiness of one endpoint and rewrites its Service's file in `dir`
    /// atomically. Returns the file written.
    pub fn set_ready(
        &mut self,
        dir: &Path,
        service: usize,
        endpoint: usize,
        ready: bool,
    ) -> io::Result<PathBuf> {
        self.mark_ready(service, endpoint, ready)?;
        let path = dir.join(file_name(service));
        write_atomically(&path, &self.manifest(service))?;
        Ok(path)
    }

    /// Flips the readiness of one endpoint (see [`SyntheticCluster::set_ready`]); returns its
    /// new readiness.
    pub fn flip(&mut self, dir: &Path, service: usize, endpoint: usize) -> io::Result<bool> {
        let ready = !self.is_ready(service, endpoint);
        self.set_ready(dir, service, endpoint, ready)?;
        Ok(ready)
    }
}

/// The kind of Service `i`: 40 of every 50 ClusterIP, 9 NodePort, 1 LoadBalancer, interleaved.
fn kind_of(i: usize) -> ServiceKind {
    match i % 50 {
        25 => ServiceKind::LoadBalancer,
        r if r % 5 == 2 && r != 47 => ServiceKind::NodePort,
        _ => ServiceKind::ClusterIp,
    }
}

fn offset(base: Ipv4Addr, by: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add(by))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use super::*;

    #[test]
    fn the_mix_is_80_18_2() {
        let c = SyntheticCluster::new(1000, 10);
        assert_eq!(c.mix(), (800, 180, 20));
        let small = SyntheticCluster::new(50, 10);
        assert_eq!(small.mix(), (40, 9, 1));
    }

    #[test]
    fn it_is_deterministic_and_addresses_are_unique() {
        let a = SyntheticCluster::new(2000, 10);
        let b = SyntheticCluster::new(2000, 10);
        assert_eq!(a.services(), b.services());
        assert_eq!(a.manifest(1234), b.manifest(1234));
        let cluster_ips: BTreeSet<_> = a.services().iter().map(|s| s.cluster_ip).collect();
        assert_eq!(cluster_ips.len(), 2000);
        let pods: BTreeSet<_> = a.services().iter().flat_map(|s| &s.endpoints).collect();
        assert_eq!(pods.len(), 20_000);
        let node_ports: Vec<_> = a.services().iter().filter_map(|s| s.node_port).collect();
        let unique: BTreeSet<_> = node_ports.iter().collect();
        assert_eq!(unique.len(), node_ports.len());
        assert_eq!(a.node_port_range(), 30_000..=32_767);
    }

    #[test]
    fn big_clusters_widen_the_node_port_range() {
        let c = SyntheticCluster::new(50_000, 10);
        let (_, np, lb) = c.mix();
        assert_eq!(np + lb, 10_000);
        assert_eq!(c.node_port_range(), 30_000..=39_999);
        assert_eq!(c.table_size(), (61_000, 610_000));
    }

    #[test]
    fn virtual_servers_follow_the_kind() {
        let c = SyntheticCluster::new(50, 10);
        let node = Ipv4Addr::new(192, 0, 2, 1);
        for s in c.services() {
            let vs = s.virtual_servers(node);
            match s.kind {
                ServiceKind::ClusterIp => assert_eq!(vs, [(s.cluster_ip, 80)]),
                ServiceKind::NodePort => {
                    assert_eq!(vs, [(s.cluster_ip, 80), (node, s.node_port.unwrap())])
                }
                ServiceKind::LoadBalancer => assert_eq!(vs.len(), 3),
            }
        }
        assert_eq!(c.table_size(), (40 + 18 + 3, 610));
    }

    /// Each manifest is a valid Kubernetes List, and the controller's own computation gives
    /// exactly the virtual and real servers the generator announces.
    #[test]
    fn manifests_parse_and_compute_to_the_announced_table() {
        use k8s_openapi::api::core::v1::Service;
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        use svc_controller::{NodeInfo, ProxyConfig, compute_service};

        let mut c = SyntheticCluster::new(100, 10);
        let node_address = Ipv4Addr::new(192, 0, 2, 1);
        let mut node = NodeInfo::new("node-1");
        node.addresses = vec![node_address.into()];
        let config = ProxyConfig::default();
        let dir = std::env::temp_dir().join(format!("synthetic-compute-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        c.set_ready(&dir, 25, 4, false).unwrap();
        c.set_ready(&dir, 7, 9, false).unwrap();
        for s in c.clone().services() {
            let list: serde_json::Value = serde_json::from_str(&c.manifest(s.index)).unwrap();
            assert_eq!(list["kind"], "List");
            let service: Service = serde_json::from_value(list["items"][0].clone()).unwrap();
            let slice: EndpointSlice = serde_json::from_value(list["items"][1].clone()).unwrap();
            let desired = compute_service(&service, &[&slice], &node, &config);
            assert!(desired.problems.is_empty(), "{:?}", desired.problems);
            let mut got: Vec<(std::net::IpAddr, u16)> = desired
                .virtual_servers
                .keys()
                .map(|k| (k.addr, k.port))
                .collect();
            let mut want: Vec<(std::net::IpAddr, u16)> = s
                .virtual_servers(node_address)
                .into_iter()
                .map(|(a, p)| (a.into(), p))
                .collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "Service {}", s.index);
            for vs in desired.virtual_servers.values() {
                let expected = (0..10).filter(|j| c.is_ready(s.index, *j)).count();
                assert_eq!(vs.real_servers.len(), expected, "Service {}", s.index);
                assert!(
                    vs.real_servers
                        .iter()
                        .all(|r| r.port == TARGET_PORT && r.weight == 1)
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn manifests_are_valid_json_lists_and_flips_rewrite_one_file() {
        let dir = std::env::temp_dir().join(format!("synthetic-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = SyntheticCluster::new(60, 10);
        c.write_all(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 60);
        let lb = c
            .services()
            .iter()
            .position(|s| s.kind == ServiceKind::LoadBalancer);
        let text = std::fs::read_to_string(dir.join(file_name(lb.unwrap()))).unwrap();
        assert!(text.contains("\"kind\":\"List\""), "{text}");
        assert!(
            text.contains("\"ingress\":[{\"ip\":\"172.16.0.26\"}]"),
            "{text}"
        );
        assert!(text.contains("\"nodePort\":30005"), "{text}");
        assert_eq!(text.matches("\"ready\":true").count(), 10);
        // Balanced braces and brackets outside strings: a cheap JSON sanity check.
        let mut depth = 0i32;
        for ch in text.chars() {
            match ch {
                '{' | '[' => depth += 1,
                '}' | ']' => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0);
        }
        assert_eq!(depth, 0);

        let before = std::fs::read_to_string(dir.join(file_name(7))).unwrap();
        assert!(!c.flip(&dir, 7, 3).unwrap());
        let after = std::fs::read_to_string(dir.join(file_name(7))).unwrap();
        assert_eq!(after.matches("\"ready\":false").count(), 1);
        assert!(
            after.contains("{\"addresses\":[\"10.128.0.116\"],\"conditions\":{\"ready\":false")
        );
        assert!(c.flip(&dir, 7, 3).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join(file_name(7))).unwrap(),
            before
        );
        assert!(c.set_ready(&dir, 60, 0, true).is_err());
        assert!(c.set_ready(&dir, 0, 10, true).is_err());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 60);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
