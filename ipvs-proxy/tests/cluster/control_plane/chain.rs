//! The whole chain in the real kernel: a user's objects go into the real API server, its
//! EndpointSlice controller writes the slices, ipvs-proxy (with the daemon's credential only)
//! programs IPVS in a node's namespace, and real connections from a client's namespace reach
//! the backends listening on the pods' addresses in their own namespaces.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use integration::Netns;
use integration::backend::{LongLivedConnection, tally};
use integration::cluster::{Identity, Relay};
use integration::daemon::{DaemonProcess, http_get};
use integration::table::{self, Table};
use integration::topology::{BACKEND_PORT, DIRECTOR_ADDR, LoadBalancerTopology, VIP};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::harness::{Kube, cluster_ip, labels, serial, service};

const NS: &str = "cp-chain";
const NODE: &str = "cp-chain-node";
const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const HEALTHZ: &str = "127.0.0.1:10256";

/// The IPVS table of `netns`.
fn listing(netns: &Netns) -> Table {
    table::listing(netns).unwrap()
}

fn backend(i: usize, weight: u32) -> String {
    format!(
        "{}:{BACKEND_PORT} w{weight}",
        LoadBalancerTopology::backend_ip(i)
    )
}

fn vs(ip: impl Into<IpAddr>, port: u16) -> String {
    format!("TCP {}", SocketAddr::new(ip.into(), port))
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// Which backends answered `count` connections to `to` from the client.
fn answered(topo: &LoadBalancerTopology, to: SocketAddr, count: usize) -> Vec<String> {
    tally(&topo.client, to, count)
        .unwrap()
        .into_keys()
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
#[ignore = "needs a real control plane: cargo xtask control-plane-tests"]
fn a_users_objects_become_ipvs_and_traffic_follows_every_change() {
    let _one = serial();
    let kube = Kube::connect();
    kube.bind_daemon();
    kube.namespace(NS);
    kube.node(NODE, &DIRECTOR_ADDR.to_string(), "zone-a");
    let topo = LoadBalancerTopology::build(3).unwrap();
    for i in 0..3 {
        let ip = LoadBalancerTopology::backend_ip(i).to_string();
        kube.pod(
            NS,
            &format!("web-{i}"),
            NODE,
            "web",
            &ip,
            i32::from(BACKEND_PORT),
        );
    }

    // Every kind of Service.
    let target = || IntOrString::Int(i32::from(BACKEND_PORT));
    let web = kube.create_service(
        NS,
        &service(
            "web",
            "ClusterIP",
            Some("web"),
            80,
            IntOrString::String("http".into()),
        ),
    );
    let mut node_port = service("web-np", "NodePort", Some("web"), 81, target());
    node_port.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30081);
    kube.create_service(NS, &node_port);
    let lb = kube.create_service(
        NS,
        &service("web-lb", "LoadBalancer", Some("web"), 82, target()),
    );
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": VIP.to_string()}]}}});
    kube.run(kube.api::<Service>(NS).patch_status(
        "web-lb",
        &PatchParams::default(),
        &Patch::Merge(&status),
    ))
    .unwrap();
    let mut external = service("web-ext", "ClusterIP", Some("web"), 83, target());
    external.spec.as_mut().unwrap().external_ips = Some(vec![EXTERNAL_IP.to_string()]);
    kube.create_service(NS, &external);
    let mut name_only = service("elsewhere", "ExternalName", None, 85, target());
    name_only.spec.as_mut().unwrap().external_name = Some("example.invalid".into());
    kube.create_service(NS, &name_only);
    let mut headless = service("web-headless", "ClusterIP", Some("web"), 86, target());
    headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    kube.create_service(NS, &headless);
    let manual = kube.create_service(NS, &service("manual", "ClusterIP", None, 84, target()));
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some("manual-1".into()),
            labels: Some(labels(&[("kubernetes.io/service-name", "manual")])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![LoadBalancerTopology::backend_ip(1).to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..Default::default()
            }),
            node_name: Some(NODE.into()),
            ..Default::default()
        }]),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(i32::from(BACKEND_PORT)),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    };
    kube.run(
        kube.api::<EndpointSlice>(NS)
            .create(&PostParams::default(), &slice),
    )
    .unwrap();
    let web_ip = cluster_ip(&web);
    let lb_ip = cluster_ip(&lb);
    let manual_ip = cluster_ip(&manual);

    // The daemon, in the node's namespace, reaching the API server through a relay there.
    let scratch = Scratch(std::env::temp_dir().join(format!("cp-chain-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).unwrap();
    let relay = Relay::start(
        &topo.director,
        SocketAddr::from(([127, 0, 0, 1], 6443)),
        kube.cluster.api_addr(),
    )
    .unwrap();
    let kubeconfig = scratch.0.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        kube.cluster
            .kubeconfig(Identity::Daemon, Some(&relay.url()))
            .unwrap(),
    )
    .unwrap();
    let args: Vec<String> = [
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--hostname-override",
        NODE,
        "--log-format",
        "json",
        "--metrics-bind-address",
        "127.0.0.1:10249",
        "--healthz-bind-address",
        HEALTHZ,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut daemon = DaemonProcess::start(
        &topo.director,
        std::path::Path::new(env!("CARGO_BIN_EXE_ipvs-proxy")),
        &args,
        &scratch.0.join("daemon.log"),
    )
    .unwrap();

    // Sorted as `listing` sorts them.
    let mut all = vec![backend(0, 1), backend(1, 1), backend(2, 1)];
    all.sort();
    let wait_table = |what: &str, ok: &dyn Fn(&Table) -> bool| {
        let mut last = BTreeMap::new();
        kube.try_wait_for(|| {
            last = listing(&topo.director);
            ok(&last).then(|| last.clone())
        })
        .unwrap_or_else(|| {
            panic!(
                "the table never showed {what}; last seen: {last:#?}\nthe daemon's log:\n{}",
                std::fs::read_to_string(scratch.0.join("daemon.log")).unwrap_or_default()
            )
        })
    };
    let lb_node_port = kube
        .run(kube.api::<Service>(NS).get("web-lb"))
        .unwrap()
        .spec
        .unwrap()
        .ports
        .unwrap()[0]
        .node_port
        .unwrap() as u16;
    let table = wait_table("every Service programmed", &|t| {
        t.get(&vs(web_ip.parse::<IpAddr>().unwrap(), 80)) == Some(&all)
            && t.get(&vs(DIRECTOR_ADDR, 30081)) == Some(&all)
            && t.get(&vs(VIP, 82)) == Some(&all)
            && t.get(&vs(EXTERNAL_IP, 83)) == Some(&all)
            && t.get(&vs(DIRECTOR_ADDR, lb_node_port)) == Some(&all)
            && t.get(&vs(manual_ip.parse::<IpAddr>().unwrap(), 84)) == Some(&vec![backend(1, 1)])
    });
    assert!(
        table
            .keys()
            .all(|k| !k.ends_with(":85") && !k.ends_with(":86")),
        "nothing for the ExternalName and headless Services: {table:#?}"
    );
    let _ = lb_ip;
    let everyone = names(&["backend-1", "backend-2", "backend-3"]);
    assert_eq!(
        answered(&topo, addr(&web_ip, 80), 12),
        everyone,
        "ClusterIP, named targetPort"
    );
    assert_eq!(
        answered(&topo, SocketAddr::new(DIRECTOR_ADDR.into(), 30081), 12),
        everyone,
        "NodePort"
    );
    assert_eq!(
        answered(&topo, SocketAddr::new(VIP.into(), 82), 12),
        everyone,
        "load balancer"
    );
    assert_eq!(
        answered(&topo, SocketAddr::new(EXTERNAL_IP.into(), 83), 12),
        everyone,
        "external IP"
    );
    assert_eq!(
        answered(&topo, addr(&manual_ip, 84), 4),
        names(&["backend-2"]),
        "hand-written slice"
    );
    let (code, _) = http_get(&topo.director, HEALTHZ.parse().unwrap(), "/healthz").unwrap();
    assert_eq!(code, 200, "healthy once the table is programmed");

    // A pod turns unready: no new connection reaches it.
    kube.set_pod_status(
        NS,
        "web-2",
        &LoadBalancerTopology::backend_ip(2).to_string(),
        false,
    );
    kube.wait_for("web-2 out of rotation", || {
        (answered(&topo, addr(&web_ip, 80), 9) == names(&["backend-1", "backend-2"])).then_some(())
    });

    // A pod is deleted while a connection to it is open: while it terminates, and after it is
    // gone, the connection keeps working and no new one goes there; the real server leaves
    // once the connection ends.
    let mut held = LongLivedConnection::open(&topo.client, addr(&web_ip, 80)).unwrap();
    let index: usize = held
        .backend()
        .trim_start_matches("backend-")
        .parse::<usize>()
        .unwrap()
        - 1;
    let pod = format!("web-{index}");
    kube.run(kube.api::<Pod>(NS).delete(&pod, &DeleteParams::default()))
        .unwrap();
    let key = vs(web_ip.parse::<IpAddr>().unwrap(), 80);
    wait_table("the terminating endpoint at weight 0", &|t| {
        t.get(&key).is_some_and(|d| d.contains(&backend(index, 0)))
    });
    held.echo("while terminating").unwrap();
    kube.run(
        kube.api::<Pod>(NS)
            .delete(&pod, &DeleteParams::background().grace_period(0)),
    )
    .unwrap();
    kube.wait_for("the pod gone", || {
        kube.run(kube.api::<Pod>(NS).get_opt(&pod))
            .unwrap()
            .is_none()
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    held.echo("after the pod is gone").unwrap();
    assert!(
        listing(&topo.director)
            .get(&key)
            .is_some_and(|d| d.contains(&backend(index, 0))),
        "the real server drains while its connection lives"
    );
    let survivor = names(&[&format!("backend-{}", if index == 0 { 2 } else { 1 })]);
    assert_eq!(
        answered(&topo, addr(&web_ip, 80), 6),
        survivor,
        "new connections avoid it"
    );
    held.reset();
    wait_table("the drained real server removed", &|t| {
        t.get(&key).is_some_and(|d| {
            d.iter()
                .all(|b| !b.starts_with(&format!("{}:", LoadBalancerTopology::backend_ip(index))))
        })
    });

    // A Service's port changes.
    kube.patch_service(
        NS,
        "web",
        json!({"spec": {"ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]}}),
    );
    wait_table("web on its new port only", &|t| {
        t.contains_key(&vs(web_ip.parse::<IpAddr>().unwrap(), 8000)) && !t.contains_key(&key)
    });
    assert_eq!(
        answered(&topo, addr(&web_ip, 8000), 4),
        survivor,
        "the new port carries traffic"
    );

    // Everything so far was read with the daemon's credential alone. (After the restart below
    // the API server may answer 403 for a moment, until its authorizer has read the roles
    // again: that is the server's, and the daemon keeps its table through it.)
    let log = daemon.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the daemon's credential was enough: {log}"
    );

    // The API server goes away: the table stays as it is; after it is back, changes follow.
    let before = listing(&topo.director);
    kube.cluster.control("stop apiserver").unwrap();
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(
        listing(&topo.director),
        before,
        "the table is kept during the outage"
    );
    assert_eq!(
        answered(&topo, addr(&web_ip, 8000), 4),
        survivor,
        "and traffic flows"
    );
    kube.cluster.control("start apiserver").unwrap();
    kube.wait_ready();

    // A Service is deleted.
    kube.delete_service(NS, "web-ext");
    wait_table("the external IP's virtual server gone", &|t| {
        !t.contains_key(&vs(EXTERNAL_IP, 83))
    });

    daemon.terminate(Duration::from_secs(30)).unwrap();
    drop(relay);
    kube.delete_namespace(NS);
    kube.delete_node(NODE);
}
