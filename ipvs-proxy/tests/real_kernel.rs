//! The `ipvs-proxy` binary end to end, in the real kernel: a "node" namespace (the director of
//! [`LoadBalancerTopology`]) runs the daemon on a folder of manifests; a client namespace sends
//! real traffic to the ClusterIP and to node-IP:NodePort; three backend namespaces answer with
//! their names.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod real_kernel {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use integration::Netns;
    use integration::backend::tally;
    use integration::daemon::{DaemonProcess, Scratch, http_get, wait_until, write_atomically};
    use integration::topology::{DIRECTOR_ADDR, LoadBalancerTopology};
    use ipvs::Ipvs;
    use ipvs::model::{Destination, Forwarding, Scheduler, Service, ServiceKey};

    /// Waiting times are generous: the VM these tests run in here is emulated (TCG).
    const SLOW: Duration = Duration::from_secs(90);
    const CLUSTER_IP: &str = "10.96.0.10";
    const METRICS: &str = "127.0.0.1:10249";
    const HEALTHZ: &str = "127.0.0.1:10256";

    fn daemon_binary() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_ipvs-proxy"))
    }

    /// A NodePort Service `web` (ClusterIP 10.96.0.10:80, NodePort 30080) with one slice; each
    /// endpoint is (backend index, ready).
    fn web_manifest(endpoints: &[(usize, bool)]) -> String {
        let mut text = format!(
            "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: NodePort
  clusterIP: {CLUSTER_IP}
  ports:
  - name: http
    port: 80
    targetPort: 8080
    nodePort: 30080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
endpoints:
"
        );
        for (i, ready) in endpoints {
            text.push_str(&format!(
                "- addresses: [{}]\n  conditions: {{ready: {ready}}}\n  nodeName: node-a\n",
                LoadBalancerTopology::backend_ip(*i)
            ));
        }
        text
    }

    /// The IPVS table of `netns`.
    fn listing(netns: &Netns) -> BTreeMap<String, Vec<String>> {
        integration::table::listing(netns).unwrap()
    }

    fn start(node: &Netns, scratch: &Scratch, extra: &[&str]) -> DaemonProcess {
        let mut args: Vec<String> = [
            "--manifests",
            scratch.manifests().to_str().unwrap(),
            "--hostname-override",
            "node-a",
            "--log-format",
            "json",
            "--metrics-bind-address",
            METRICS,
            "--healthz-bind-address",
            HEALTHZ,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        DaemonProcess::start(node, &daemon_binary(), &args, &scratch.log("daemon")).unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn wait_for_table(
        node: &Netns,
        what: &str,
        mut ok: impl FnMut(&BTreeMap<String, Vec<String>>) -> bool,
    ) -> BTreeMap<String, Vec<String>> {
        let mut last = BTreeMap::new();
        wait_until(SLOW, || {
            last = listing(node);
            ok(&last).then(|| last.clone())
        })
        .unwrap_or_else(|| panic!("the table never showed {what}; last seen: {last:#?}"))
    }

    fn json_field(line: &str, field: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v.get(field).cloned().unwrap_or(serde_json::Value::Null)
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn daemon_follows_manifests_survives_restart_and_leaves_the_table_on_sigterm() {
        let topo = LoadBalancerTopology::build(3).unwrap();
        let node = &topo.director;
        let scratch = Scratch::new("lifecycle").unwrap();
        let manifest = scratch.manifests().join("web.yaml");
        write_atomically(&manifest, &web_manifest(&[(0, true), (1, true), (2, true)])).unwrap();

        let mut daemon = start(node, &scratch, &["--ipvs-sync-period", "5s"]);
        let adopted = daemon.wait_for_log(0, &["node adopted"], SLOW).unwrap();
        assert_eq!(
            json_field(&adopted, "virtual_servers")
                .as_u64()
                .map(|n| n > 1),
            Some(true),
            "{adopted}"
        );

        // The ClusterIP and the NodePort on the node's address, three real servers each.
        let cluster = format!("TCP {CLUSTER_IP}:80");
        let node_port = format!("TCP {DIRECTOR_ADDR}:30080");
        let table = wait_for_table(node, "the Service", |t| {
            t.get(&cluster).is_some_and(|d| d.len() == 3)
                && t.get(&node_port).is_some_and(|d| d.len() == 3)
        });
        assert_eq!(
            table[&cluster],
            [
                "203.0.113.10:8080 w1",
                "203.0.113.2:8080 w1",
                "203.0.113.6:8080 w1"
            ]
        );

        // Real traffic: by ClusterIP and by node address and NodePort.
        let by_cluster_ip = tally(&topo.client, addr(&format!("{CLUSTER_IP}:80")), 30).unwrap();
        assert_eq!(
            by_cluster_ip,
            BTreeMap::from([
                ("backend-1".to_owned(), 10),
                ("backend-2".to_owned(), 10),
                ("backend-3".to_owned(), 10)
            ])
        );
        let by_node_port = tally(&topo.client, addr(&format!("{DIRECTOR_ADDR}:30080")), 9).unwrap();
        assert_eq!(by_node_port.values().sum::<usize>(), 9);
        assert!(
            by_node_port.keys().all(|k| k.starts_with("backend-")),
            "{by_node_port:?}"
        );

        // Metrics and health.
        let (status, metrics) = http_get(node, addr(METRICS), "/metrics").unwrap();
        assert_eq!(status, 200);
        for needle in [
            "kubeproxy_sync_proxy_rules_duration_seconds_count",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "ipvs_proxy_operations_total{kind=\"add_destination\"}",
            "ipvs_proxy_virtual_servers",
        ] {
            assert!(metrics.contains(needle), "no {needle} in\n{metrics}");
        }
        let (status, body) = http_get(node, addr(HEALTHZ), "/healthz").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("lastUpdated"), "{body}");
        assert_eq!(http_get(node, addr(HEALTHZ), "/livez").unwrap().0, 200);

        // An endpoint becomes not ready: it leaves (quiesced, then deleted once IPVS forgets the
        // tally's reset connections) and traffic follows.
        write_atomically(
            &manifest,
            &web_manifest(&[(0, true), (1, false), (2, true)]),
        )
        .unwrap();
        wait_for_table(node, "backend-2 gone", |t| {
            t.get(&cluster)
                .is_some_and(|d| d.len() == 2 && !d.iter().any(|x| x.starts_with("203.0.113.6:")))
        });
        let after = tally(&topo.client, addr(&format!("{CLUSTER_IP}:80")), 20).unwrap();
        assert_eq!(
            after,
            BTreeMap::from([("backend-1".to_owned(), 10), ("backend-3".to_owned(), 10)])
        );

        // A malformed edit is reported with its line and changes nothing.
        let lines = daemon.log_lines();
        write_atomically(
            &manifest,
            &web_manifest(&[(0, true)]).replace("port: 8080", "port: [8080"),
        )
        .unwrap();
        let reported = daemon
            .wait_for_log(lines, &["manifest not loaded"], SLOW)
            .unwrap();
        assert!(reported.contains("web.yaml:"), "{reported}");
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            listing(node)[&cluster].len(),
            2,
            "a broken file unloads nothing"
        );

        // SIGTERM: the daemon exits 0 and the table stays.
        write_atomically(&manifest, &web_manifest(&[(0, true), (2, true)])).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let before = listing(node);
        let status = daemon.terminate(SLOW).unwrap();
        assert!(status.success(), "{status}; log:\n{}", daemon.log());
        assert_eq!(listing(node), before, "SIGTERM leaves the table in place");
        let served = tally(&topo.client, addr(&format!("{CLUSTER_IP}:80")), 4).unwrap();
        assert_eq!(
            served.values().sum::<usize>(),
            4,
            "traffic flows with the daemon stopped: {served:?}"
        );

        // A restart on the same manifests adopts the table with zero operations.
        let lines = daemon.log_lines();
        drop(daemon);
        let mut daemon = start(node, &scratch, &[]);
        let adopted = daemon.wait_for_log(lines, &["node adopted"], SLOW).unwrap();
        assert_eq!(
            json_field(&adopted, "operations").as_u64(),
            Some(0),
            "{adopted}"
        );
        assert_eq!(listing(node), before);

        // The Service is deleted: its virtual servers and VIP go.
        std::fs::remove_file(&manifest).unwrap();
        wait_for_table(node, "no virtual server", BTreeMap::is_empty);
        let vip_bound = node
            .run(|| {
                std::fs::read_to_string("/proc/net/fib_trie")
                    .unwrap()
                    .contains(CLUSTER_IP)
            })
            .unwrap();
        assert!(!vip_bound, "the ClusterIP is no longer a local address");
        assert!(daemon.terminate(SLOW).unwrap().success());
    }

    /// A LoadBalancer Service `lb` with `externalTrafficPolicy: Local` and health check port
    /// 32001, its one endpoint (backend 0) on `node`.
    fn local_lb_manifest(node: &str) -> String {
        format!(
            "\
apiVersion: v1
kind: Service
metadata:
  name: lb
  namespace: shop
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.11
  externalTrafficPolicy: Local
  healthCheckNodePort: 32001
  ports:
  - port: 80
    targetPort: 8080
    nodePort: 30081
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-1
  namespace: shop
  labels:
    kubernetes.io/service-name: lb
addressType: IPv4
ports:
- port: 8080
endpoints:
- addresses: [{}]
  nodeName: {node}
",
            LoadBalancerTopology::backend_ip(0)
        )
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn load_balancers_health_checks_follow_the_local_endpoints() {
        let topo = LoadBalancerTopology::build(1).unwrap();
        let node = &topo.director;
        let scratch = Scratch::new("health-check").unwrap();
        let manifest = scratch.manifests().join("lb.yaml");
        write_atomically(&manifest, &local_lb_manifest("node-a")).unwrap();
        let mut daemon = start(node, &scratch, &[]);
        daemon.wait_for_log(0, &["node adopted"], SLOW).unwrap();
        // Asked from outside, as the cloud's load balancer does, on the node's address.
        let check = addr(&format!("{DIRECTOR_ADDR}:32001"));
        let answer = |want: u16| {
            wait_until(SLOW, || {
                http_get(&topo.client, check, "/")
                    .ok()
                    .filter(|(status, _)| *status == want)
            })
            .unwrap_or_else(|| panic!("the health check never answered {want}"))
        };
        let (_, body) = answer(200);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "service": {"namespace": "shop", "name": "lb"},
                "localEndpoints": 1,
                "serviceProxyHealthy": true
            })
        );
        // The endpoint moves to another node: this one is no longer a target.
        write_atomically(&manifest, &local_lb_manifest("node-b")).unwrap();
        let (_, body) = answer(503);
        assert!(body.contains(r#""localEndpoints":0"#), "{body}");
        // The Service goes: so does the listener.
        std::fs::remove_file(&manifest).unwrap();
        let closed = wait_until(SLOW, || http_get(&topo.client, check, "/").err());
        assert!(closed.is_some(), "the health check port stayed open");
        assert!(daemon.terminate(SLOW).unwrap().success());
    }

    /// The descriptors `pid` has open.
    fn open_descriptors(pid: u32) -> usize {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn a_flood_of_idle_connections_leaves_the_daemon_working_under_a_low_descriptor_limit() {
        const LIMIT: usize = 1024;
        const FLOOD: usize = 1100;
        // The flood's client ends are this process's descriptors.
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 8192, 8192)
            .unwrap();
        let topo = LoadBalancerTopology::build(3).unwrap();
        let node = &topo.director;
        let scratch = Scratch::new("flood").unwrap();
        let manifest = scratch.manifests().join("web.yaml");
        write_atomically(&manifest, &web_manifest(&[(0, true), (1, true), (2, true)])).unwrap();
        // Soft and hard limit 1,024: the daemon cannot raise it.
        let script = format!(r#"ulimit -n {LIMIT} && exec "$0" "$@""#);
        let mut args: Vec<String> =
            vec!["-c".into(), script, daemon_binary().display().to_string()];
        args.extend(
            [
                "--manifests",
                scratch.manifests().to_str().unwrap(),
                "--hostname-override",
                "node-a",
                "--log-format",
                "json",
                "--metrics-bind-address",
                METRICS,
                "--healthz-bind-address",
                HEALTHZ,
            ]
            .map(str::to_owned),
        );
        let mut daemon =
            DaemonProcess::start(node, Path::new("/bin/sh"), &args, &scratch.log("daemon"))
                .unwrap();
        daemon.wait_for_log(0, &["node adopted"], SLOW).unwrap();
        let low = daemon
            .wait_for_log(0, &["file descriptor limit is low"], SLOW)
            .unwrap();
        assert_eq!(
            json_field(&low, "soft").as_u64(),
            Some(LIMIT as u64),
            "{low}"
        );
        let cluster = format!("TCP {CLUSTER_IP}:80");
        wait_for_table(node, "the Service", |t| {
            t.get(&cluster).is_some_and(|d| d.len() == 3)
        });

        // More idle connections than the daemon has descriptors, held open by the client.
        let flood = node
            .run(|| {
                (0..FLOOD)
                    .filter_map(|_| {
                        std::net::TcpStream::connect_timeout(&addr(HEALTHZ), Duration::from_secs(2))
                            .ok()
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap();
        assert!(flood.len() > LIMIT, "only {} connections made", flood.len());
        let held = open_descriptors(daemon.pid());
        assert!(
            held < LIMIT / 2,
            "the daemon holds {held} descriptors under the flood"
        );

        // The daemon still answers, and still follows its manifests.
        let (status, body) = http_get(node, addr(HEALTHZ), "/healthz").unwrap();
        assert_eq!(status, 200, "{body}");
        write_atomically(
            &manifest,
            &web_manifest(&[(0, true), (1, false), (2, true)]),
        )
        .unwrap();
        wait_for_table(node, "backend-2 gone", |t| {
            t.get(&cluster).is_some_and(|d| d.len() == 2)
        });
        assert_eq!(http_get(node, addr(METRICS), "/metrics").unwrap().0, 200);
        drop(flood);
        assert!(daemon.terminate(SLOW).unwrap().success());
    }

    /// The node's nftables tables, as `nft list tables` prints them.
    fn nft_tables(node: &Netns) -> String {
        let output = node
            .run(|| {
                std::process::Command::new("nft")
                    .args(["list", "tables"])
                    .output()
                    .unwrap()
            })
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn a_vip_answers_only_on_the_ports_its_services_define() {
        let topo = LoadBalancerTopology::build(1).unwrap();
        let node = &topo.director;
        let scratch = Scratch::new("vip-ports").unwrap();
        write_atomically(
            &scratch.manifests().join("web.yaml"),
            &web_manifest(&[(0, true)]),
        )
        .unwrap();
        // The node's own server (its SSH, say), listening on every address.
        let _ssh = node
            .run(|| std::net::TcpListener::bind("0.0.0.0:2222").unwrap())
            .unwrap();
        let connects = |target: String| {
            topo.client
                .run(move || {
                    std::net::TcpStream::connect_timeout(&addr(&target), Duration::from_secs(1))
                        .is_ok()
                })
                .unwrap()
        };
        let mut daemon = start(node, &scratch, &[]);
        daemon.wait_for_log(0, &["node adopted"], SLOW).unwrap();
        assert!(nft_tables(node).contains("table inet ipvs-proxy"));

        // The Service's port is served by IPVS; another port of its VIP reaches nothing;
        // the node's own address still reaches the node's server.
        let served = tally(&topo.client, addr(&format!("{CLUSTER_IP}:80")), 3).unwrap();
        assert_eq!(served, BTreeMap::from([("backend-1".to_owned(), 3)]));
        assert!(
            !connects(format!("{CLUSTER_IP}:2222")),
            "an undefined VIP port answered"
        );
        assert!(connects(format!("{DIRECTOR_ADDR}:2222")));

        let (_, metrics) = http_get(node, addr(METRICS), "/metrics").unwrap();
        assert!(
            !metrics.contains("ipvs_proxy_netfilter_transactions_total 0"),
            "{metrics}"
        );
        assert!(daemon.terminate(SLOW).unwrap().success());
        // The table outlives the daemon: a restart does not open the ports meanwhile.
        assert!(!connects(format!("{CLUSTER_IP}:2222")));
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn cleanup_removes_only_what_the_daemon_owns() {
        let topo = LoadBalancerTopology::build(1).unwrap();
        let node = &topo.director;
        let scratch = Scratch::new("cleanup").unwrap();
        write_atomically(
            &scratch.manifests().join("web.yaml"),
            &web_manifest(&[(0, true)]),
        )
        .unwrap();
        // Someone else's virtual server (keepalived, say) on the same node.
        let foreign = ServiceKey::tcp(integration::topology::VIP, 443);
        node.run(|| {
            let mut ipvs = Ipvs::open().unwrap();
            ipvs.add_service(&Service::new(foreign, Scheduler::WeightedLeastConnection))
                .unwrap();
            ipvs.add_destination(
                &foreign,
                &Destination::new(
                    LoadBalancerTopology::backend_ip(0),
                    8080,
                    Forwarding::Masquerade,
                ),
            )
            .unwrap();
        })
        .unwrap();
        // Another tool's nftables table (iptables-nft's).
        let iptables = node
            .run(|| {
                std::process::Command::new("iptables")
                    .args(["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"])
                    .status()
                    .unwrap()
            })
            .unwrap();
        assert!(iptables.success());
        let mut daemon = start(node, &scratch, &[]);
        daemon.wait_for_log(0, &["node adopted"], SLOW).unwrap();
        assert!(daemon.terminate(SLOW).unwrap().success());
        assert!(listing(node).len() > 1);
        assert!(nft_tables(node).contains("table inet ipvs-proxy"));

        let output = node
            .run(|| {
                std::process::Command::new(daemon_binary())
                    .args(["--cleanup", "--hostname-override", "node-a"])
                    .output()
                    .unwrap()
            })
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let left = listing(node);
        assert_eq!(
            left.keys().collect::<Vec<_>>(),
            [&foreign.to_string()],
            "only the foreign one stays"
        );
        let has_dummy = node
            .run(|| Path::new("/sys/class/net/kube-ipvs0").exists())
            .unwrap();
        assert!(!has_dummy, "the dummy interface is removed");
        let tables = nft_tables(node);
        assert!(!tables.contains("ipvs-proxy"), "{tables}");
        assert!(tables.contains("table ip filter"), "{tables}");
    }

    fn read_sysctl(node: &Netns, key: &str) -> String {
        let path = format!("/proc/sys/{key}");
        node.run(move || std::fs::read_to_string(path).unwrap().trim().to_owned())
            .unwrap()
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn init_node_applies_the_sysctls_and_check_mode_refuses_a_drifted_one() {
        let node = Netns::new("node-settings").unwrap();
        let scratch = Scratch::new("sysctls").unwrap();
        let run = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            node.run(move || {
                std::process::Command::new(daemon_binary())
                    .args(&args)
                    .output()
                    .unwrap()
            })
            .unwrap()
        };
        let key = "net/ipv4/vs/expire_quiescent_template";
        // The namespace starts with the kernel's defaults (0 here).
        let output = run(&["--init-node", "--hostname-override", "node-a"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(read_sysctl(&node, key), "1");
        assert_eq!(read_sysctl(&node, "net/ipv4/vs/conntrack"), "1");
        assert_eq!(read_sysctl(&node, "net/ipv4/ip_forward"), "1");

        // Someone sets one back: check mode names it and does not start (nor write it).
        let path = format!("/proc/sys/{key}");
        node.run(move || std::fs::write(path, "0"))
            .unwrap()
            .unwrap();
        let manifests = scratch.manifests();
        let manifests = manifests.to_str().unwrap();
        let check = [
            "--sysctls",
            "check",
            "--manifests",
            manifests,
            "--hostname-override",
            "node-a",
            "--metrics-bind-address",
            "",
            "--healthz-bind-address",
            "",
        ];
        let output = run(&check);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "check mode started anyway");
        assert!(stderr.contains(key), "{stderr}");
        assert_eq!(read_sysctl(&node, key), "0", "check mode wrote it");

        // Applied again, check mode starts.
        assert!(
            run(&["--init-node", "--hostname-override", "node-a"])
                .status
                .success()
        );
        let args: Vec<String> = check.iter().map(|a| (*a).to_owned()).collect();
        let mut daemon =
            DaemonProcess::start(&node, &daemon_binary(), &args, &scratch.log("daemon")).unwrap();
        daemon.wait_for_log(0, &["node adopted"], SLOW).unwrap();
        assert!(daemon.terminate(SLOW).unwrap().success());
    }

    /// A counter or gauge of the daemon's `/metrics` in `netns`.
    fn metric(netns: &Netns, name: &str) -> Option<f64> {
        let (_, text) = http_get(netns, addr(METRICS), "/metrics").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Whether `ip link show NAME` finds the interface in `netns`.
    fn has_link(netns: &Netns, name: &str) -> bool {
        let name = name.to_owned();
        netns
            .run(move || {
                std::process::Command::new("ip")
                    .args(["link", "show", &name])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .unwrap()
                    .success()
            })
            .unwrap()
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn a_quiet_daemon_does_not_read_the_table_back_and_still_repairs_anothers_write_at_once() {
        const SKIPPED: &str = "ipvs_proxy_ipvs_reads_skipped_total";
        let topo = LoadBalancerTopology::build(3).unwrap();
        let node = &topo.director;
        let scratch = Scratch::new("quiet").unwrap();
        let manifest = scratch.manifests().join("web.yaml");
        write_atomically(&manifest, &web_manifest(&[(0, true), (1, true), (2, true)])).unwrap();
        let mut daemon = start(node, &scratch, &["--ipvs-sync-period", "2s"]);
        daemon.wait_for_log(0, &["node adopted"], SLOW).unwrap();
        let cluster = format!("TCP {CLUSTER_IP}:80");
        wait_for_table(node, "the Service", |t| {
            t.get(&cluster).is_some_and(|d| d.len() == 3)
        });
        assert!(has_link(node, "nlmon-ipvs"), "the tap is up");

        // Nothing happens: passes go by without reading the table.
        wait_until(SLOW, || (metric(node, SKIPPED)? >= 2.0).then_some(()))
            .expect("quiet passes skip the read");

        // Another program quiesces a real server (ipvsadm, through netlink): the next pass
        // reads the table and puts the weight back, without waiting for the pass in ten
        // that reads whatever was seen.
        let skipped = metric(node, SKIPPED).unwrap();
        let quiesced = node
            .run(|| {
                std::process::Command::new("ipvsadm")
                    .args([
                        "-e",
                        "-t",
                        "10.96.0.10:80",
                        "-r",
                        "203.0.113.6:8080",
                        "-m",
                        "-w",
                        "0",
                    ])
                    .status()
                    .unwrap()
                    .success()
            })
            .unwrap();
        assert!(quiesced);
        wait_for_table(node, "the weight repaired", |t| {
            t.get(&cluster)
                .is_some_and(|d| d.iter().any(|x| x == "203.0.113.6:8080 w1"))
        });
        let skipped_meanwhile = metric(node, SKIPPED).unwrap() - skipped;
        assert!(
            skipped_meanwhile <= 1.0,
            "{skipped_meanwhile} passes skipped the read after the write"
        );
        assert!(metric(node, "ipvs_proxy_drift_repaired_total").unwrap() >= 1.0);
        // Traffic reaches the real server again.
        let served = tally(&topo.client, addr(&format!("{CLUSTER_IP}:80")), 30).unwrap();
        assert_eq!(
            served,
            BTreeMap::from([
                ("backend-1".to_owned(), 10),
                ("backend-2".to_owned(), 10),
                ("backend-3".to_owned(), 10)
            ])
        );
        // And the node is quiet again.
        let skipped = metric(node, SKIPPED).unwrap();
        wait_until(SLOW, || {
            (metric(node, SKIPPED)? >= skipped + 2.0).then_some(())
        })
        .expect("quiet again");

        // The tap goes with the daemon, and is never made when switched off.
        assert!(daemon.terminate(SLOW).unwrap().success());
        assert!(!has_link(node, "nlmon-ipvs"), "the tap outlived the daemon");
        let lines = daemon.log_lines();
        drop(daemon);
        let mut daemon = start(
            node,
            &scratch,
            &["--ipvs-sync-period", "1s", "--ipvs-watch-writes", "false"],
        );
        daemon.wait_for_log(lines, &["node adopted"], SLOW).unwrap();
        wait_until(SLOW, || {
            (metric(
                node,
                "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
            )? >= 4.0)
                .then_some(())
        })
        .expect("passes run");
        assert_eq!(metric(node, SKIPPED), Some(0.0));
        assert!(!has_link(node, "nlmon-ipvs"));
        assert!(daemon.terminate(SLOW).unwrap().success());
    }
}
