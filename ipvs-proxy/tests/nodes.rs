//! Several nodes, each running `ipvs-proxy` on the same manifests, in the network of
//! [`Nodes`]: pods behind each node's bridge, pod networks routed between nodes, a client
//! outside the cluster. Real TCP and UDP traffic shows where replies go and which client
//! address each pod saw: what the nodes' nftables tables masquerade, and what they keep.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod real_kernel {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
    use std::path::PathBuf;
    use std::time::Duration;

    use integration::Netns;
    use integration::daemon::{DaemonProcess, Scratch, http_get, write_atomically};
    use integration::nodes::{CLIENT_ADDR, CLUSTER_CIDR, Nodes, POD_PORT};
    use integration::witness::{Answer, ask_tcp, ask_udp};

    /// Waiting times are generous: the VM these tests run in here is emulated (TCG).
    const SLOW: Duration = Duration::from_secs(90);
    /// `web`: LoadBalancer, `externalTrafficPolicy: Cluster`.
    const WEB: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
    /// `web`'s external IP and load-balancer IP.
    const WEB_EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
    const WEB_LB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 60);
    /// `shop`: LoadBalancer, `externalTrafficPolicy: Local`.
    const SHOP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
    const SHOP_LB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);
    /// `echo`: ClusterIP.
    const ECHO: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
    const METRICS: &str = "127.0.0.1:10249";

    fn daemon_binary() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_ipvs-proxy"))
    }

    /// A Service `name` in namespace `shop`, its one EndpointSlice with `endpoints` (pod
    /// address, node), TCP port 80 and UDP port 53 to the pods' 8080. `spec` is the rest of
    /// the Service's spec, indented as a field of it.
    fn service(name: &str, spec: &str, endpoints: &[(Ipv4Addr, &str)]) -> String {
        let mut text = format!(
            "\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: shop
spec:
{spec}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: shop
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: http
  port: {POD_PORT}
  protocol: TCP
- name: dns
  port: {POD_PORT}
  protocol: UDP
endpoints:
"
        );
        for (addr, node) in endpoints {
            text.push_str(&format!(
                "- addresses: [{addr}]\n  conditions: {{ready: true}}\n  nodeName: {node}\n"
            ));
        }
        text
    }

    fn ports(node_ports: Option<(u16, u16)>) -> String {
        let (tcp, udp) = match node_ports {
            Some((tcp, udp)) => (
                format!("\n    nodePort: {tcp}"),
                format!("\n    nodePort: {udp}"),
            ),
            None => (String::new(), String::new()),
        };
        format!(
            "  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: {POD_PORT}{tcp}
  - name: dns
    port: 53
    protocol: UDP
    targetPort: {POD_PORT}{udp}"
        )
    }

    /// `web` with its `endpoints` (pod address, node).
    fn web(endpoints: &[(Ipv4Addr, &str)]) -> String {
        service(
            "web",
            &format!(
                "  type: LoadBalancer\n  clusterIP: {WEB}\n  externalIPs: [{WEB_EXTERNAL}]\n{}\n\
                 status:\n  loadBalancer:\n    ingress:\n    - ip: {WEB_LB}",
                ports(Some((30080, 30053)))
            ),
            endpoints,
        )
    }

    /// `shop` with its one pod at `pod` on node B, and `ranges` as its
    /// `loadBalancerSourceRanges`.
    fn shop(pod: Ipv4Addr, ranges: &[&str]) -> String {
        service(
            "shop",
            &format!(
                "  type: LoadBalancer\n  clusterIP: {SHOP}\n  externalTrafficPolicy: Local\n  \
                 healthCheckNodePort: 30500\n  loadBalancerSourceRanges: [{}]\n{}\nstatus:\n  \
                 loadBalancer:\n    ingress:\n    - ip: {SHOP_LB}",
                ranges.join(", "),
                ports(Some((30081, 30054)))
            ),
            &[(pod, "node-b")],
        )
    }

    /// The cluster: two nodes with one pod each, a daemon on each, the three Services.
    struct Cluster {
        net: Nodes,
        daemons: Vec<DaemonProcess>,
        scratch: Scratch,
        /// Arguments every daemon gets.
        extra: Vec<String>,
    }

    impl Cluster {
        fn start(name: &str) -> Self {
            Self::start_with(name, &[1, 1], &[])
        }

        /// As [`Cluster::start`], with `pods[i]` pods on node `i` (at least one on each) and
        /// `extra` arguments for every daemon.
        fn start_with(name: &str, pods: &[usize], extra: &[&str]) -> Self {
            let net = Nodes::build(pods).unwrap();
            let scratch = Scratch::new(name).unwrap();
            let (a1, b1) = (net.pod("a1").unwrap().addr, net.pod("b1").unwrap().addr);
            let web = web(&[(b1, "node-b")]);
            let shop = shop(b1, &[]);
            let echo = service(
                "echo",
                &format!("  clusterIP: {ECHO}\n{}", ports(None)),
                &[(a1, "node-a")],
            );
            for (file, text) in [("web", web), ("shop", shop), ("echo", echo)] {
                write_atomically(&scratch.manifests().join(format!("{file}.yaml")), &text).unwrap();
            }
            let mut cluster = Self {
                net,
                daemons: Vec::new(),
                scratch,
                extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            };
            for i in 0..cluster.net.nodes.len() {
                let daemon = cluster.daemon(i, &[]);
                cluster.daemons.push(daemon);
            }
            for daemon in &mut cluster.daemons {
                daemon.wait_for_log(0, &["node adopted"], SLOW).unwrap();
            }
            cluster
        }

        /// Starts a daemon on node `i` with the cluster's arguments and `more`.
        fn daemon(&self, i: usize, more: &[&str]) -> DaemonProcess {
            let node = &self.net.nodes[i];
            let mut args: Vec<String> = [
                "--manifests",
                self.scratch.manifests().to_str().unwrap(),
                "--hostname-override",
                &node.name,
                "--cluster-cidr",
                CLUSTER_CIDR,
                "--log-format",
                "json",
                "--metrics-bind-address",
                METRICS,
                "--healthz-bind-address",
                "127.0.0.1:10256",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend(self.extra.iter().cloned());
            args.extend(more.iter().map(|s| (*s).to_owned()));
            DaemonProcess::start(
                &node.netns,
                &daemon_binary(),
                &args,
                &self.scratch.log(&node.name),
            )
            .unwrap()
        }

        /// Rewrites the manifest `file`.
        fn write(&self, file: &str, text: &str) {
            write_atomically(&self.scratch.manifests().join(format!("{file}.yaml")), text).unwrap();
        }

        fn node(&self, name: &str) -> &Netns {
            &self
                .net
                .nodes
                .iter()
                .find(|n| n.name == name)
                .unwrap()
                .netns
        }
    }

    fn tcp(netns: &Netns, addr: IpAddr, port: u16) -> Answer {
        let target = SocketAddr::new(addr, port);
        netns
            .run(move || ask_tcp(target))
            .unwrap()
            .unwrap_or_else(|e| panic!("TCP to {target}: {e}"))
    }

    fn udp(netns: &Netns, addr: IpAddr, port: u16) -> Answer {
        let target = SocketAddr::new(addr, port);
        netns
            .run(move || {
                let socket = UdpSocket::bind("0.0.0.0:0")?;
                ask_udp(&socket, target, Duration::from_secs(3))
            })
            .unwrap()
            .unwrap_or_else(|e| panic!("UDP to {target}: {e}"))
    }

    fn ip(addr: Ipv4Addr) -> IpAddr {
        IpAddr::V4(addr)
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn outside_traffic_is_masqueraded_unless_its_policy_keeps_the_client_address() {
        let cluster = Cluster::start("outside");
        let client = &cluster.net.client;
        let (node_a, node_b) = (Nodes::node_addr(0), Nodes::node_addr(1));

        // A NodePort on node A whose only pod runs on node B: the pod answers node A (it
        // saw node A's address), which un-NATs the reply back to the client.
        for (answer, protocol) in [
            (tcp(client, ip(node_a), 30080), "TCP"),
            (udp(client, ip(node_a), 30053), "UDP"),
        ] {
            assert_eq!(answer.name, "b1", "{protocol}");
            assert_eq!(answer.client.ip(), ip(node_a), "{protocol}: {answer:?}");
        }
        // The same NodePort on node B: the pod is local, still masqueraded (Cluster policy).
        assert_eq!(
            tcp(client, ip(node_b), 30080).client.ip(),
            ip(cluster.net.nodes[1].gateway),
            "masqueraded to the address it leaves node B by"
        );

        // The same for an external IP and a load-balancer IP routed to node A.
        for addr in [WEB_EXTERNAL, WEB_LB] {
            cluster.net.route_from_client(addr, 0).unwrap();
            let answer = tcp(client, ip(addr), 80);
            assert_eq!(answer.name, "b1");
            assert_eq!(answer.client.ip(), ip(node_a), "{addr}: {answer:?}");
        }

        // `externalTrafficPolicy: Local`: the load balancer's address, routed to node B
        // where the pod runs, and node B's NodePort keep the client's address.
        cluster.net.route_from_client(SHOP_LB, 1).unwrap();
        for (answer, what) in [
            (tcp(client, ip(SHOP_LB), 80), "LB TCP"),
            (udp(client, ip(SHOP_LB), 53), "LB UDP"),
            (tcp(client, ip(node_b), 30081), "NodePort TCP"),
        ] {
            assert_eq!(answer.name, "b1", "{what}");
            assert_eq!(answer.client.ip(), ip(CLIENT_ADDR), "{what}: {answer:?}");
        }

        // A ClusterIP reached from outside the cluster's pod network (--cluster-cidr): the
        // pod on the other node answers node A.
        cluster.net.route_from_client(WEB, 0).unwrap();
        let answer = tcp(client, ip(WEB), 80);
        assert_eq!(answer.name, "b1");
        assert_eq!(answer.client.ip(), ip(node_a), "{answer:?}");
        drop(cluster);
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn pods_and_nodes_reach_services_wherever_the_endpoint_runs() {
        let cluster = Cluster::start("inside");
        let a1 = cluster.net.pod("a1").unwrap();
        let node_a = cluster.node("node-a");

        // A pod reaching a Service whose pod is on another node: its address is kept.
        for answer in [tcp(&a1.netns, ip(WEB), 80), udp(&a1.netns, ip(WEB), 53)] {
            assert_eq!(answer.name, "b1");
            assert_eq!(answer.client.ip(), ip(a1.addr), "{answer:?}");
        }

        // Hairpin: the pod reaches itself through its own Service, masqueraded to its
        // node's bridge address so the reply comes back through IPVS.
        for answer in [tcp(&a1.netns, ip(ECHO), 80), udp(&a1.netns, ip(ECHO), 53)] {
            assert_eq!(answer.name, "a1");
            assert_eq!(
                answer.client.ip(),
                ip(cluster.net.nodes[0].gateway),
                "{answer:?}"
            );
        }

        // The node itself (a host-network client) reaching a ClusterIP whose pod is on the
        // other node: it connects from the VIP, which is masqueraded to its own address.
        for answer in [tcp(node_a, ip(WEB), 80), udp(node_a, ip(WEB), 53)] {
            assert_eq!(answer.name, "b1");
            assert_eq!(answer.client.ip(), ip(Nodes::node_addr(0)), "{answer:?}");
        }
    }

    /// Whether a TCP connection from `netns` to `addr:port` is answered.
    fn answered(netns: &Netns, addr: Ipv4Addr, port: u16) -> bool {
        let target = SocketAddr::new(ip(addr), port);
        netns.run(move || ask_tcp(target).is_ok()).unwrap()
    }

    /// Waits until `probe` holds (the daemons took in a manifest change).
    fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
        integration::daemon::wait_until(SLOW, || probe().then_some(()))
            .unwrap_or_else(|| panic!("never: {what}"));
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn load_balancer_source_ranges_let_only_their_sources_through() {
        let cluster = Cluster::start("ranges");
        let client = &cluster.net.client;
        let node_b = cluster.node("node-b");
        let b1 = cluster.net.pod("b1").unwrap().addr;
        cluster.net.route_from_client(SHOP_LB, 1).unwrap();
        assert!(answered(client, SHOP_LB, 80), "no ranges: open");

        // A range without the client: the load balancer drops it; the Service's NodePort
        // and ClusterIP are not filtered.
        cluster.write("shop", &shop(b1, &["10.0.0.0/8"]));
        eventually("the client is dropped", || !answered(client, SHOP_LB, 80));
        assert!(answered(client, Nodes::node_addr(1), 30081));
        assert!(answered(&cluster.net.pod("a1").unwrap().netns, SHOP, 80));

        // The client's own address: it passes; the node, outside every range, does not.
        let own = format!("{CLIENT_ADDR}/32");
        cluster.write("shop", &shop(b1, &[&own]));
        eventually("the client passes", || answered(client, SHOP_LB, 80));
        assert!(
            !answered(node_b, SHOP_LB, 80),
            "the node is outside the ranges"
        );

        // A range holding the node's address lets the node through too.
        cluster.write("shop", &shop(b1, &["192.168.50.0/24"]));
        eventually("the node passes", || answered(node_b, SHOP_LB, 80));
        assert!(answered(client, SHOP_LB, 80));
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn a_udp_client_that_keeps_its_port_follows_its_backend_and_no_stale_flow_stays() {
        let cluster = Cluster::start_with("udp", &[2, 1], &[]);
        let a1 = cluster.net.pod("a1").unwrap();
        let a2 = cluster.net.pod("a2").unwrap().addr;
        let b1 = cluster.net.pod("b1").unwrap().addr;
        let target = SocketAddr::new(ip(WEB), 53);
        // One socket, one source port, for the whole test (a resolver's).
        let socket = a1
            .netns
            .run(|| UdpSocket::bind("0.0.0.0:40053"))
            .unwrap()
            .unwrap();
        let ask = || ask_udp(&socket, target, Duration::from_millis(500)).ok();
        assert_eq!(ask().map(|a| a.name).as_deref(), Some("b1"));

        // The backend is replaced: the same port reaches the new one, and node A keeps no
        // flow whose replies come from the old one.
        cluster.write("web", &web(&[(a2, "node-a")]));
        eventually("the new backend answers", || {
            ask().is_some_and(|a| a.name == "a2")
        });
        let stale = |node: &Netns, gone: Ipv4Addr| {
            node.run(move || {
                let mut socket = svc_controller::netfilter::NfnlSocket::open().unwrap();
                socket
                    .udp_flows_to(target)
                    .unwrap()
                    .into_iter()
                    .filter(|f| f.backend == ip(gone))
                    .count()
            })
            .unwrap()
        };
        assert_eq!(stale(cluster.node("node-a"), b1), 0);

        // No endpoint, then one again: the same port is served again.
        cluster.write("web", &web(&[]));
        eventually("nothing answers", || ask().is_none());
        cluster.write("web", &web(&[(b1, "node-b")]));
        eventually("the backend answers again", || {
            ask().is_some_and(|a| a.name == "b1")
        });
        assert_eq!(stale(cluster.node("node-a"), a2), 0);
    }

    /// Runs `nft` with `args` in `netns`; its output, or `None` when it failed.
    fn nft(netns: &Netns, args: &str) -> Option<String> {
        let args: Vec<String> = args.split(' ').map(str::to_owned).collect();
        let out = netns
            .run(move || std::process::Command::new("nft").args(&args).output())
            .unwrap()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The value of the metric `name` on node `netns`.
    fn metric(netns: &Netns, name: &str) -> Option<f64> {
        let (_, text) = http_get(netns, METRICS.parse().unwrap(), "/metrics").unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn the_table_is_the_daemons_alone_kept_across_restarts_and_repaired() {
        let mut cluster = Cluster::start_with("owned", &[1, 1], &["--ipvs-sync-period", "3s"]);
        let node_a = &cluster.net.nodes[0].netns;
        let client = &cluster.net.client;
        // The node's own server on every address, and a user's table.
        let _ssh = node_a
            .run(|| std::net::TcpListener::bind("0.0.0.0:2222").unwrap())
            .unwrap();
        for command in [
            "add table inet filter",
            "add chain inet filter input { type filter hook input priority 0 ; }",
            "add rule inet filter input tcp dport 2223 drop",
        ] {
            let args: Vec<String> = vec!["-f".into(), "-".into()];
            let text = command.to_owned();
            let ok = node_a
                .run(move || {
                    use std::io::Write;
                    let mut child = std::process::Command::new("nft")
                        .args(&args)
                        .stdin(std::process::Stdio::piped())
                        .spawn()
                        .unwrap();
                    child
                        .stdin
                        .take()
                        .unwrap()
                        .write_all(text.as_bytes())
                        .unwrap();
                    child.wait().unwrap().success()
                })
                .unwrap();
            assert!(ok, "nft {command}");
        }
        cluster.net.route_from_client(WEB, 0).unwrap();

        // A port no Service defines on a VIP reaches nothing; on the node's address, the
        // node's server.
        assert!(answered(client, WEB, 80));
        assert!(
            !answered(client, WEB, 2222),
            "an undefined VIP port answered"
        );
        let node_ssh = SocketAddr::new(ip(Nodes::node_addr(0)), 2222);
        assert!(
            client
                .run(move || std::net::TcpStream::connect_timeout(&node_ssh, SLOW).is_ok())
                .unwrap()
        );

        // Drift: a set element, then a chain's rules, deleted by hand; the full pass puts
        // them back and traffic follows.
        nft(
            node_a,
            "delete element inet ipvs-proxy cluster-ports-v4 { 10.96.0.10 . tcp . 80 }",
        )
        .unwrap();
        nft(node_a, "flush chain inet ipvs-proxy nat-postrouting").unwrap();
        eventually("the rules are written again", || {
            nft(node_a, "list chain inet ipvs-proxy nat-postrouting")
                .is_some_and(|t| t.contains("masquerade"))
        });
        eventually("the element is back", || {
            nft(node_a, "list set inet ipvs-proxy cluster-ports-v4")
                .is_some_and(|t| t.contains("10.96.0.10"))
        });
        assert!(answered(client, WEB, 80));
        assert!(nft(node_a, "list table inet filter").is_some_and(|t| t.contains("2223")));

        assert!(
            metric(node_a, "ipvs_proxy_netfilter_transaction_seconds_total").unwrap() > 0.0,
            "the transactions' time is counted"
        );

        // A restart with the same inputs changes nothing in netfilter.
        assert!(cluster.daemons[0].terminate(SLOW).unwrap().success());
        // The log file is the same: only the new process's lines count.
        let lines = cluster.daemons[0].log_lines();
        let mut again = cluster.daemon(0, &[]);
        again.wait_for_log(lines, &["node adopted"], SLOW).unwrap();
        assert_eq!(
            metric(node_a, "ipvs_proxy_netfilter_transactions_total"),
            Some(0.0)
        );
        assert_eq!(
            metric(node_a, "ipvs_proxy_netfilter_changes_total"),
            Some(0.0)
        );
        assert!(answered(client, WEB, 80));

        // --cleanup removes the daemon's table and nothing else.
        assert!(again.terminate(SLOW).unwrap().success());
        let mut cleanup = cluster.daemon(0, &["--cleanup"]);
        integration::daemon::wait_until(SLOW, || (!cleanup.is_running()).then_some(()))
            .expect("--cleanup exits");
        assert!(nft(node_a, "list table inet ipvs-proxy").is_none());
        assert!(nft(node_a, "list table inet filter").is_some_and(|t| t.contains("2223")));
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn node_port_addresses_narrow_node_ports_and_masquerade_all_masquerades_pods() {
        let cluster = Cluster::start_with(
            "nodeport-addresses",
            &[1, 1],
            &[
                "--nodeport-addresses",
                "192.168.50.0/24",
                "--masquerade-all",
            ],
        );
        let b1 = cluster.net.pod("b1").unwrap();
        let a1 = cluster.net.pod("a1").unwrap();
        let node_b = &cluster.net.nodes[1];
        // The LAN addresses serve the NodePort, the bridge's does not.
        assert!(answered(&cluster.net.client, node_b.addr, 30080));
        assert!(answered(&a1.netns, node_b.addr, 30080));
        assert!(!answered(&b1.netns, node_b.gateway, 30080));
        // The health check of `shop` (its pod is on node B): on the LAN address only.
        let lan = SocketAddr::new(ip(node_b.addr), 30500);
        let (status, _) = http_get(&cluster.net.client, lan, "/").unwrap();
        assert_eq!(status, 200);
        let bridge = SocketAddr::new(ip(node_b.gateway), 30500);
        assert!(http_get(&b1.netns, bridge, "/").is_err());
        // --masquerade-all: a pod's connection to a ClusterIP is masqueraded too.
        let answer = tcp(&a1.netns, ip(WEB), 80);
        assert_eq!(answer.name, "b1");
        assert_eq!(answer.client.ip(), ip(Nodes::node_addr(0)), "{answer:?}");
    }
}
