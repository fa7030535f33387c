//! The svc-controller reconciler against the real kernel: IPVS, the `kube-ipvs0` dummy
//! interface and `/proc/sys`, each test in a fresh network namespace.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod real_kernel {
    use std::collections::BTreeSet;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    use integration::backend::{CLIENT_TIMEOUT, tally};
    use integration::topology::{BACKEND_PORT, LoadBalancerTopology};
    use integration::{Netns, link};
    use ipvs::Ipvs;
    use ipvs::model::{
        AddressFamily, Destination, DestinationKey, Forwarding, PersistenceNetmask, Service,
        ServiceKey, Weight,
    };
    use ipvs::table::Table;
    use svc_controller::dataplane::{Dataplane, KernelDataplane};
    use svc_controller::mapping::{desired_table, to_service_key};
    use svc_controller::reconcile::{Reconciler, ReconcilerConfig};
    use svc_controller::testing;
    use svc_controller::{
        DEFAULT_DUMMY_INTERFACE, DesiredState, Exposure, Persistence, Protocol, Scheduler,
        ServiceDesired, ServiceRef, VirtualServer, VirtualServerKey,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn vs(
        addr: &str,
        protocol: Protocol,
        port: u16,
        backends: &[(&str, u16)],
        exposure: Exposure,
    ) -> VirtualServer {
        VirtualServer {
            exposure,
            bind_address: exposure != Exposure::NodePort,
            ..testing::virtual_server(addr, protocol, port, backends)
        }
    }

    fn service(name: &str, vss: Vec<VirtualServer>) -> ServiceDesired {
        testing::desired(name, vss)
    }

    fn services() -> Vec<ServiceDesired> {
        let mut web = vs(
            "10.96.0.10",
            Protocol::Tcp,
            80,
            &[("10.244.0.1", 8080), ("10.244.0.2", 8080)],
            Exposure::ClusterIp,
        );
        web.persistence = Some(Persistence {
            timeout_secs: 10800,
            netmask: PersistenceNetmask::host(AddressFamily::Ipv4),
        });
        vec![
            service(
                "web",
                vec![
                    web,
                    vs(
                        "192.168.1.10",
                        Protocol::Tcp,
                        30080,
                        &[("10.244.0.1", 8080), ("10.244.0.2", 8080)],
                        Exposure::NodePort,
                    ),
                ],
            ),
            service(
                "dns",
                vec![
                    vs(
                        "10.96.0.53",
                        Protocol::Udp,
                        53,
                        &[("10.244.1.1", 53)],
                        Exposure::ClusterIp,
                    ),
                    vs(
                        "10.96.0.53",
                        Protocol::Tcp,
                        53,
                        &[("10.244.1.1", 53)],
                        Exposure::ClusterIp,
                    ),
                ],
            ),
            service(
                "v6",
                vec![vs(
                    "fd00::10",
                    Protocol::Tcp,
                    443,
                    &[("fd00:244::1", 8443)],
                    Exposure::ClusterIp,
                )],
            ),
            service(
                "sctp",
                vec![vs(
                    "10.96.0.77",
                    Protocol::Sctp,
                    9999,
                    &[("10.244.2.1", 9999)],
                    Exposure::ClusterIp,
                )],
            ),
        ]
    }

    fn desired() -> DesiredState {
        let mut d = DesiredState::new();
        for s in services() {
            d.update(s);
        }
        d
    }

    fn foreign_key() -> ServiceKey {
        ServiceKey::tcp(Ipv4Addr::new(172, 16, 0, 1), 80)
    }

    /// Another tool's virtual server, added with the library directly.
    fn add_foreign(ipvs: &mut Ipvs) {
        ipvs.add_service(&Service::new(
            foreign_key(),
            Scheduler::WeightedLeastConnection,
        ))
        .unwrap();
        ipvs.add_destination(
            &foreign_key(),
            &Destination::new(Ipv4Addr::new(172, 16, 0, 2), 80, Forwarding::DirectRouting),
        )
        .unwrap();
    }

    fn kernel_table(ipvs: &mut Ipvs) -> Table {
        let services = ipvs.services().unwrap();
        Table::from_entries(services.into_iter().map(|s| {
            let dests = ipvs.destinations(&s.service.key).unwrap();
            (s, dests)
        }))
    }

    fn owned(table: &Table) -> Table {
        table.filtered(|s| s.key() != foreign_key())
    }

    fn in_fresh_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
        Netns::new(name).unwrap().run(f).unwrap()
    }

    /// Node set-up: the node's own address on loopback (as if it were eth0's).
    fn node_address() {
        link::add_address("lo", ip("192.168.1.10"), 32).unwrap();
    }

    /// Whether the interface `name` is a dummy interface, and whether it is up (over
    /// rtnetlink: `/sys/class/net` shows the namespace sysfs was mounted in, not ours).
    fn link_state(name: &str) -> (bool, bool) {
        use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo};
        let name = name.to_owned();
        link::block_on_future(async move {
            let (connection, handle, _) = rtnetlink::new_connection().unwrap();
            let task = tokio::spawn(connection);
            let message = find_link(&handle, name).await;
            task.abort();
            let dummy = message.attributes.iter().any(|a| {
                matches!(a, LinkAttribute::LinkInfo(infos)
                    if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Dummy))))
            });
            (dummy, message.header.flags.contains(LinkFlags::Up))
        })
        .unwrap()
    }

    /// The link called `name` (it must exist).
    async fn find_link(
        handle: &rtnetlink::Handle,
        name: String,
    ) -> netlink_packet_route::link::LinkMessage {
        use futures_util::TryStreamExt;
        handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await
            .unwrap()
            .expect("the interface exists")
    }

    fn config() -> ReconcilerConfig {
        let mut sysctls = ReconcilerConfig::recommended_sysctls(None);
        // What `ipvs-proxy --ipvs-rate-estimation false` adds: per namespace, since 5.16.
        sysctls.push(("net/ipv4/vs/run_estimation".into(), "0".into()));
        ReconcilerConfig {
            sysctls,
            ..ReconcilerConfig::default()
        }
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn controller_programs_services_vips_and_sysctls() {
        in_fresh_netns("ctl-program", || {
            node_address();
            let mut ipvs = Ipvs::open().unwrap();
            add_foreign(&mut ipvs);
            let foreign = kernel_table(&mut ipvs);

            let dp = KernelDataplane::open(DEFAULT_DUMMY_INTERFACE).unwrap();
            let mut r = Reconciler::new(dp, config());
            r.set_desired(desired());
            let report = r.verify(Instant::now()).unwrap();
            assert!(report.is_ok(), "{report:?}");

            let table = kernel_table(&mut ipvs);
            assert_eq!(owned(&table), desired_table(r.desired()));
            assert_eq!(table.get(&foreign_key()), foreign.get(&foreign_key()));
            assert_eq!(r.view(), &owned(&table));

            // VIPs on kube-ipvs0 as /32 and /128, never the node's own address.
            let dp = r.dataplane_mut();
            let bound = dp.dummy_addresses().unwrap();
            let want: BTreeSet<IpAddr> = ["10.96.0.10", "10.96.0.53", "10.96.0.77", "fd00::10"]
                .map(ip)
                .into();
            assert_eq!(bound, want);
            assert!(dp.node_addresses().unwrap().contains(&ip("192.168.1.10")));
            assert!(!dp.node_addresses().unwrap().contains(&ip("10.96.0.10")));
            let (is_dummy, is_up) = link_state(DEFAULT_DUMMY_INTERFACE);
            assert!(is_dummy, "kube-ipvs0 is a dummy interface");
            assert!(!is_up, "kube-ipvs0 is left down");
            assert_eq!(
                dp.sysctl("net.ipv4.vs.expire_nodest_conn")
                    .unwrap()
                    .as_deref(),
                Some("1")
            );
            assert_eq!(
                dp.sysctl("net.ipv4.ip_forward").unwrap().as_deref(),
                Some("1")
            );
            assert_eq!(
                dp.sysctl("net.ipv4.vs.run_estimation").unwrap().as_deref(),
                Some("0")
            );

            // Removing a Service removes its virtual servers, then its VIP.
            let report = r.remove_service(&ServiceRef::new("default", "dns"), Instant::now());
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(owned(&kernel_table(&mut ipvs)), desired_table(r.desired()));
            assert!(
                !r.dataplane_mut()
                    .dummy_addresses()
                    .unwrap()
                    .contains(&ip("10.96.0.53"))
            );

            // Cleanup removes everything of ours and nothing else: the virtual servers, the
            // VIPs, then kube-ipvs0 itself.
            let report = r.cleanup(Instant::now()).unwrap();
            assert!(report.is_ok(), "{report:?}");
            assert!(report.interface_deleted, "{report:?}");
            assert_eq!(kernel_table(&mut ipvs), foreign);
            assert!(!link_exists(DEFAULT_DUMMY_INTERFACE));
            assert_eq!(r.dataplane_mut().existing_dummy_addresses().unwrap(), None);
            // Again: nothing to do, and the interface is not created again.
            let report = r.cleanup(Instant::now()).unwrap();
            assert!(report.is_quiet(), "{report:?}");
            assert!(!link_exists(DEFAULT_DUMMY_INTERFACE));
            assert_eq!(kernel_table(&mut ipvs), foreign);
        });
    }

    /// Whether an interface called `name` exists in this namespace.
    fn link_exists(name: &str) -> bool {
        use futures_util::TryStreamExt;
        let name = name.to_owned();
        link::block_on_future(async move {
            let (connection, handle, _) = rtnetlink::new_connection().unwrap();
            let task = tokio::spawn(connection);
            let found = handle
                .link()
                .get()
                .match_name(name)
                .execute()
                .try_next()
                .await;
            task.abort();
            match found {
                Ok(link) => link.is_some(),
                // ENODEV: no such interface.
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.code.is_some_and(|c| c.get().abs() == 19) =>
                {
                    false
                }
                Err(e) => panic!("look up {e}"),
            }
        })
        .unwrap()
    }

    /// The IPv4 addresses on `name` and the destinations of the local routes through it with
    /// the controller's protocol, read over rtnetlink.
    fn addresses_and_vip_routes(name: &str) -> (BTreeSet<IpAddr>, BTreeSet<IpAddr>) {
        use futures_util::TryStreamExt;
        use netlink_packet_route::address::AddressAttribute;
        use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
        use svc_controller::dataplane::VIP_ROUTE_PROTOCOL;
        let name = name.to_owned();
        link::block_on_future(async move {
            let (connection, handle, _) = rtnetlink::new_connection().unwrap();
            let task = tokio::spawn(connection);
            let link = find_link(&handle, name).await;
            let addresses: Vec<_> = handle
                .address()
                .get()
                .set_link_index_filter(link.header.index)
                .execute()
                .try_collect()
                .await
                .unwrap();
            let routes: Vec<_> = handle
                .route()
                .get(rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build())
                .execute()
                .try_collect()
                .await
                .unwrap();
            task.abort();
            let addresses = addresses
                .iter()
                .filter(|m| m.header.index == link.header.index)
                .flat_map(|m| &m.attributes)
                .filter_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(v4)) => Some(IpAddr::V4(*v4)),
                    _ => None,
                })
                .collect();
            let routes = routes
                .iter()
                .filter(|m| m.header.protocol == RouteProtocol::Other(VIP_ROUTE_PROTOCOL))
                .filter(|m| {
                    m.attributes
                        .iter()
                        .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == link.header.index))
                })
                .flat_map(|m| &m.attributes)
                .filter_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                    _ => None,
                })
                .collect();
            (addresses, routes)
        })
        .unwrap()
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn ipv4_vips_are_local_routes_and_addresses_left_by_older_versions_still_count() {
        in_fresh_netns("ctl-routes", || {
            let mut dp = KernelDataplane::open(DEFAULT_DUMMY_INTERFACE).unwrap();
            dp.add_dummy_addresses(&[ip("10.96.0.1"), ip("10.96.0.2"), ip("fd00::96:1")])
                .into_iter()
                .for_each(|r| r.unwrap());
            let (addresses, routes) = addresses_and_vip_routes(DEFAULT_DUMMY_INTERFACE);
            assert!(
                addresses.is_empty(),
                "IPv4 VIPs are no addresses: {addresses:?}"
            );
            assert_eq!(routes, [ip("10.96.0.1"), ip("10.96.0.2")].into());
            // The IPv6 VIP is an address (a route through a down link is refused).
            assert!(dp.dummy_addresses().unwrap().contains(&ip("fd00::96:1")));
            // Binding again is a success and adds nothing.
            dp.add_dummy_address(ip("10.96.0.1")).unwrap();
            assert_eq!(addresses_and_vip_routes(DEFAULT_DUMMY_INTERFACE).1.len(), 2);

            // An IPv4 VIP bound as an address (an older version, kube-proxy) counts as bound,
            // is not bound a second time, and unbinding it removes the address.
            link::add_address(DEFAULT_DUMMY_INTERFACE, ip("10.96.0.3"), 32).unwrap();
            let both = dp.node_and_dummy_addresses().unwrap();
            let want: BTreeSet<IpAddr> = ["10.96.0.1", "10.96.0.2", "10.96.0.3", "fd00::96:1"]
                .map(ip)
                .into();
            assert_eq!(both.1, want);
            assert!(
                !both.0.contains(&ip("10.96.0.1")),
                "a VIP is no node address"
            );
            assert_eq!(dp.dummy_addresses().unwrap(), want);
            dp.add_dummy_address(ip("10.96.0.3")).unwrap();
            assert_eq!(
                addresses_and_vip_routes(DEFAULT_DUMMY_INTERFACE),
                (
                    [ip("10.96.0.3")].into(),
                    [ip("10.96.0.1"), ip("10.96.0.2")].into()
                )
            );
            // 10.96.0.3 is the interface's last IPv4 address: the kernel flushes the routes
            // through it with it, and the dataplane binds 10.96.0.2 again.
            for vip in ["10.96.0.1", "10.96.0.3", "fd00::96:1"] {
                dp.delete_dummy_address(ip(vip)).unwrap();
                // Not bound any more: still a success.
                dp.delete_dummy_address(ip(vip)).unwrap();
            }
            assert_eq!(
                addresses_and_vip_routes(DEFAULT_DUMMY_INTERFACE),
                (BTreeSet::new(), [ip("10.96.0.2")].into())
            );
            assert_eq!(dp.dummy_addresses().unwrap(), [ip("10.96.0.2")].into());
        });
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn many_vips_are_bound_in_one_pipelined_call_with_a_result_each() {
        in_fresh_netns("ctl-vips", || {
            let mut dp = KernelDataplane::open(DEFAULT_DUMMY_INTERFACE).unwrap();
            // One already bound (success, as for a single bind), 600 IPv4 and one IPv6.
            dp.add_dummy_address(ip("10.96.0.1")).unwrap();
            let mut addrs: Vec<IpAddr> = (1..=600u32)
                .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a60_0000 + i)))
                .collect();
            addrs.push(ip("fd00::96:1"));
            let results = dp.add_dummy_addresses(&addrs);
            assert_eq!(results.len(), addrs.len());
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            let bound = dp.dummy_addresses().unwrap();
            for addr in &addrs {
                assert!(bound.contains(addr), "{addr} is not bound");
            }
            // On an interface that is not a dummy one, every address fails, each with an error.
            let mut other = KernelDataplane::open("lo").unwrap();
            let results = other.add_dummy_addresses(&addrs[..3]);
            assert_eq!(results.len(), 3);
            assert!(results.iter().all(Result::is_err), "{results:?}");
        });
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn controller_deletes_only_its_own_dummy_interface() {
        use svc_controller::dataplane::{DataplaneError, InterfaceRemoval};
        in_fresh_netns("ctl-iface", || {
            let mut dp = KernelDataplane::open(DEFAULT_DUMMY_INTERFACE).unwrap();
            assert_eq!(
                dp.delete_dummy_interface(&BTreeSet::new()).unwrap(),
                InterfaceRemoval::Absent
            );
            assert!(dp.dummy_addresses().unwrap().is_empty());
            dp.add_dummy_address(ip("10.96.0.10")).unwrap();
            // Someone else's address on it: kept, and so is everything on it.
            link::add_address(DEFAULT_DUMMY_INTERFACE, ip("10.1.2.3"), 32).unwrap();
            let ours: BTreeSet<IpAddr> = [ip("10.96.0.10")].into();
            assert_eq!(
                dp.delete_dummy_interface(&ours).unwrap(),
                InterfaceRemoval::Kept {
                    foreign: [ip("10.1.2.3")].into()
                }
            );
            assert!(link_exists(DEFAULT_DUMMY_INTERFACE));
            assert_eq!(dp.dummy_addresses().unwrap().len(), 2);
            // Once it is gone, the interface goes; the IPv6 link-local address the kernel
            // gives a link that was set up does not count.
            dp.delete_dummy_address(ip("10.1.2.3")).unwrap();
            link::set_up(DEFAULT_DUMMY_INTERFACE).unwrap();
            let link_local = |dp: &mut KernelDataplane| {
                dp.dummy_addresses()
                    .unwrap()
                    .iter()
                    .any(|a| matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local()))
            };
            let deadline = Instant::now() + Duration::from_secs(2);
            while !link_local(&mut dp) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                link_local(&mut dp),
                "the kernel gave the link an fe80:: address"
            );
            assert_eq!(
                dp.delete_dummy_interface(&ours).unwrap(),
                InterfaceRemoval::Deleted
            );
            assert!(!link_exists(DEFAULT_DUMMY_INTERFACE));
            assert_eq!(
                dp.delete_dummy_interface(&ours).unwrap(),
                InterfaceRemoval::Absent
            );

            // An interface of another kind with that name is never deleted.
            link::block_on_future(async {
                let (connection, handle, _) = rtnetlink::new_connection().unwrap();
                let task = tokio::spawn(connection);
                handle
                    .link()
                    .add(rtnetlink::LinkVeth::new(DEFAULT_DUMMY_INTERFACE, "ctl-peer").build())
                    .execute()
                    .await
                    .unwrap();
                task.abort();
            })
            .unwrap();
            let refused = dp.delete_dummy_interface(&BTreeSet::new());
            assert!(
                matches!(refused, Err(DataplaneError::NotDummy(_))),
                "{refused:?}"
            );
            assert!(link_exists(DEFAULT_DUMMY_INTERFACE));
        });
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn controller_restart_adopts_with_zero_changes() {
        in_fresh_netns("ctl-restart", || {
            node_address();
            let mut ipvs = Ipvs::open().unwrap();
            add_foreign(&mut ipvs);
            let mut first = Reconciler::new(
                KernelDataplane::open(DEFAULT_DUMMY_INTERFACE).unwrap(),
                config(),
            );
            for s in services() {
                first.sync_service(s, Instant::now());
            }
            assert!(first.verify(Instant::now()).unwrap().is_ok());
            let before = kernel_table(&mut ipvs);
            drop(first);

            let mut again = Reconciler::new(
                KernelDataplane::open(DEFAULT_DUMMY_INTERFACE).unwrap(),
                config(),
            );
            again.set_desired(desired());
            let report = again.verify(Instant::now()).unwrap();
            assert!(report.is_quiet(), "{report:?}");
            assert_eq!(again.metrics().operations_applied, 0);
            assert_eq!(kernel_table(&mut ipvs), before);
        });
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn controller_repairs_drift() {
        in_fresh_netns("ctl-drift", || {
            node_address();
            let mut ipvs = Ipvs::open().unwrap();
            add_foreign(&mut ipvs);
            let mut r = Reconciler::new(
                KernelDataplane::open(DEFAULT_DUMMY_INTERFACE).unwrap(),
                config(),
            );
            r.set_desired(desired());
            r.verify(Instant::now()).unwrap();

            // Behind its back: a virtual server deleted, a weight edited.
            let dns = ServiceKey::udp(Ipv4Addr::new(10, 96, 0, 53), 53);
            ipvs.delete_service(&dns).unwrap();
            let web = to_service_key(&VirtualServerKey {
                addr: ip("10.96.0.10"),
                protocol: Protocol::Tcp,
                port: 80,
            });
            let mut d =
                Destination::new(Ipv4Addr::new(10, 244, 0, 1), 8080, Forwarding::Masquerade);
            d.weight = Weight::new(9).unwrap();
            ipvs.edit_destination(&web, &d).unwrap();

            let report = r.verify(Instant::now()).unwrap();
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(
                report.operations, 3,
                "add the service and its destination, edit the weight"
            );
            assert_eq!(r.metrics().drift_detected, 2);
            assert_eq!(owned(&kernel_table(&mut ipvs)), desired_table(r.desired()));
            assert!(r.verify(Instant::now()).unwrap().is_quiet());

            // The nftables table: an element deleted, then a whole set.
            let nft = |command: &str| {
                let status = std::process::Command::new("nft")
                    .arg(command)
                    .status()
                    .unwrap();
                assert!(status.success(), "nft {command}");
            };
            let wanted = r.dataplane_mut().netfilter_read().unwrap().unwrap();
            assert!(
                wanted.elements.vips.contains(&ip("10.96.0.10")),
                "{wanted:?}"
            );
            nft("delete element inet ipvs-proxy vips-v4 { 10.96.0.10 }");
            let report = r.verify(Instant::now()).unwrap();
            assert_eq!(report.netfilter_changes, 1, "{report:?}");
            // A rule deleted: the chain's rules are written again.
            nft("flush chain inet ipvs-proxy nat-postrouting");
            let report = r.verify(Instant::now()).unwrap();
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(
                r.dataplane_mut().netfilter_read().unwrap(),
                Some(wanted.clone())
            );
            // A set can go only with the rules that look it up.
            nft("flush chain inet ipvs-proxy input");
            nft("flush chain inet ipvs-proxy nat-output");
            nft("delete chain inet ipvs-proxy input");
            nft("delete set inet ipvs-proxy service-ports-v4");
            let report = r.verify(Instant::now()).unwrap();
            assert!(report.is_ok(), "{report:?}");
            assert_eq!(r.dataplane_mut().netfilter_read().unwrap(), Some(wanted));
            nft("list chain inet ipvs-proxy input");
            assert!(r.verify(Instant::now()).unwrap().is_quiet());
        });
    }

    /// Runs a command of the node's tools (to write as another program would); it must
    /// succeed.
    fn run(program: &str, args: &[&str]) {
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "{program} {args:?}");
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn ipvs_writes_are_seen_through_the_nlmon_tap_and_nothing_else_is() {
        use svc_controller::dataplane::{IpvsWrites, WRITE_WATCH_INTERFACE};
        in_fresh_netns("ctl-watch", || {
            let mut dp = KernelDataplane::open(DEFAULT_DUMMY_INTERFACE).unwrap();
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Unwatched, "starts watching");
            assert!(link_exists(WRITE_WATCH_INTERFACE));
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Quiet);

            // Another program's writes, through libnl (ipvsadm): each is seen once.
            run("ipvsadm", &["-A", "-t", "10.1.0.1:80", "-s", "rr"]);
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Seen);
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Quiet);
            run(
                "ipvsadm",
                &["-a", "-t", "10.1.0.1:80", "-r", "10.2.0.1:80", "-m"],
            );
            run(
                "ipvsadm",
                &[
                    "-e",
                    "-t",
                    "10.1.0.1:80",
                    "-r",
                    "10.2.0.1:80",
                    "-m",
                    "-w",
                    "3",
                ],
            );
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Seen);
            run("ipvsadm", &["-d", "-t", "10.1.0.1:80", "-r", "10.2.0.1:80"]);
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Seen);
            // Reads, counters zeroed, timeouts, and the rest of netlink are not writes to
            // the table.
            run("ipvsadm", &["-Ln"]);
            run("ipvsadm", &["-Z"]);
            run("ipvsadm", &["--set", "900", "120", "300"]);
            run("ip", &["link", "add", "watch-d0", "type", "dummy"]);
            run("ip", &["addr", "add", "10.3.0.1/32", "dev", "watch-d0"]);
            run("nft", &["add", "table", "inet", "watch-test"]);
            let listing = dp.list().unwrap();
            assert_eq!(listing.table.len(), 1);
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Quiet);
            // The dataplane's own writes are left out: it knows what they did.
            let ops = [ipvs::codec::Operation::DeleteService(ServiceKey::tcp(
                Ipv4Addr::new(10, 1, 0, 1),
                80,
            ))];
            assert!(dp.apply(&ops).unwrap().iter().all(Result::is_ok));
            assert!(dp.list().unwrap().table.is_empty());
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Quiet);
            // A flush is a write; thousands of writes in a few messages leave one answer,
            // this crate's own included when they come from another handle (another socket).
            run("ipvsadm", &["-C"]);
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Seen);
            let mut ipvs = Ipvs::open().unwrap();
            let many: Vec<_> = (0..3000u32)
                .map(|i| {
                    ipvs::codec::Operation::AddService(Service::new(
                        ServiceKey::tcp(Ipv4Addr::from(0x0a05_0000 + i), 80),
                        ipvs::model::Scheduler::RoundRobin,
                    ))
                })
                .collect();
            assert!(ipvs.apply_batch(&many).unwrap().all_succeeded());
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Seen);
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Quiet);

            // The tap deleted under it: the watch says it may have missed writes, and
            // starts again.
            run("ip", &["link", "del", WRITE_WATCH_INTERFACE]);
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Seen);
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Unwatched);
            assert!(link_exists(WRITE_WATCH_INTERFACE));
            run("ipvsadm", &["-D", "-t", "10.5.0.1:80"]);
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Seen);
            assert_eq!(dp.ipvs_writes(), IpvsWrites::Quiet);

            // Dropped, the dataplane takes its tap away; a cleanup takes away one left
            // behind (a run that was killed).
            drop(dp);
            assert!(!link_exists(WRITE_WATCH_INTERFACE));
            run(
                "ip",
                &["link", "add", WRITE_WATCH_INTERFACE, "type", "nlmon"],
            );
            let mut r = Reconciler::new(
                KernelDataplane::open(DEFAULT_DUMMY_INTERFACE).unwrap(),
                config(),
            );
            let report = r.cleanup(Instant::now()).unwrap();
            assert!(report.errors.is_empty(), "{report:?}");
            assert!(!link_exists(WRITE_WATCH_INTERFACE));
        });
    }

    /// A client connection that closes with a reset (SO_LINGER 0), so that IPVS moves it to
    /// CLOSE (10 s) instead of TIME_WAIT (2 min).
    struct Client {
        reader: BufReader<TcpStream>,
        writer: TcpStream,
        backend: String,
    }

    impl Client {
        fn open(netns: &Netns, addr: SocketAddr) -> Client {
            let stream = netns
                .run(move || TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT))
                .unwrap()
                .unwrap();
            stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
            let writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut backend = String::new();
            reader.read_line(&mut backend).unwrap();
            Client {
                reader,
                writer,
                backend: backend.trim_end().to_owned(),
            }
        }

        fn echo(&mut self, text: &str) {
            writeln!(self.writer, "{text}").unwrap();
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert_eq!(line.trim_end(), text);
        }

        /// Whether `text` comes back (not when the connection was reset, closed or went
        /// silent for [`CLIENT_TIMEOUT`]).
        fn echoes(&mut self, text: &str) -> bool {
            if writeln!(self.writer, "{text}").is_err() {
                return false;
            }
            let mut line = String::new();
            matches!(self.reader.read_line(&mut line), Ok(n) if n > 0 && line.trim_end() == text)
        }

        fn reset(self) {
            let linger = nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            nix::sys::socket::setsockopt(
                &self.writer.as_fd(),
                nix::sys::socket::sockopt::Linger,
                &linger,
            )
            .unwrap();
        }
    }

    /// Service `web`: one TCP virtual server on `vip`:80 whose real servers are the
    /// [`LoadBalancerTopology`] backends numbered `which`.
    fn web_on_backends(vip: Ipv4Addr, which: &[usize]) -> ServiceDesired {
        let addrs: Vec<String> = which
            .iter()
            .map(|i| LoadBalancerTopology::backend_ip(*i).to_string())
            .collect();
        let backends: Vec<(&str, u16)> = addrs.iter().map(|a| (a.as_str(), BACKEND_PORT)).collect();
        service(
            "web",
            vec![vs(
                &vip.to_string(),
                Protocol::Tcp,
                80,
                &backends,
                Exposure::ClusterIp,
            )],
        )
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn controller_drains_a_live_connection_then_deletes_the_real_server() {
        let topo = LoadBalancerTopology::build(2).unwrap();
        let vip = Ipv4Addr::new(198, 51, 100, 20);
        let vip_addr = SocketAddr::new(vip.into(), 80);
        let svc = |which: &[usize]| web_on_backends(vip, which);
        let client = topo.client.clone();
        topo.director
            .run(|| {
                // The default: no drain deadline.
                let mut config = config();
                assert_eq!(config.drain_timeout, None);
                config.drain_check_interval = Duration::from_secs(1);
                let mut r = Reconciler::new(
                    KernelDataplane::open(DEFAULT_DUMMY_INTERFACE).unwrap(),
                    config,
                );
                r.sync_service(svc(&[0, 1]), Instant::now());
                assert!(r.verify(Instant::now()).unwrap().is_ok());
                assert!(
                    r.dataplane_mut()
                        .dummy_addresses()
                        .unwrap()
                        .contains(&IpAddr::V4(vip))
                );

                let mut conn = Client::open(&client, vip_addr);
                conn.echo("before");
                let leaving = if conn.backend == "backend-1" { 0 } else { 1 };
                let staying = 1 - leaving;
                let leaving_key = DestinationKey {
                    addr: LoadBalancerTopology::backend_ip(leaving).into(),
                    port: BACKEND_PORT,
                };
                let skey = ServiceKey::tcp(vip, 80);

                // The endpoint leaves: quiesced, not deleted; the connection keeps working.
                let report = r.sync_service(svc(&[staying]), Instant::now());
                assert!(report.is_ok(), "{report:?}");
                let state = r.dataplane_mut().service(&skey).unwrap().unwrap();
                let d = state.config.destination(&leaving_key).unwrap();
                assert_eq!(d.weight, Weight::QUIESCED);
                assert!(state.connections(&leaving_key).active >= 1);
                conn.echo("while draining");
                // New connections go to the other backend.
                let names = tally(&client, vip_addr, 4).unwrap();
                assert_eq!(
                    names.get(&format!("backend-{}", staying + 1)),
                    Some(&4),
                    "{names:?}"
                );

                // Still busy at the next checks: kept.
                std::thread::sleep(Duration::from_millis(1100));
                r.poll(Instant::now());
                assert!(r.view().destination(&skey, &leaving_key).is_some());
                conn.echo("still draining");

                // The connection ends: the real server goes once IPVS forgets it (CLOSE: 10 s).
                conn.reset();
                let start = Instant::now();
                while r.view().destination(&skey, &leaving_key).is_some() {
                    assert!(
                        start.elapsed() < Duration::from_secs(40),
                        "not deleted after the connection closed"
                    );
                    std::thread::sleep(Duration::from_millis(500));
                    r.poll(Instant::now());
                }
                let state = r.dataplane_mut().service(&skey).unwrap().unwrap();
                assert!(state.config.destination(&leaving_key).is_none());
                assert_eq!(r.metrics().drains_completed, 1);
                assert_eq!(r.metrics().drains_expired, 0);
                let names = tally(&client, vip_addr, 2).unwrap();
                assert_eq!(
                    names.get(&format!("backend-{}", staying + 1)),
                    Some(&2),
                    "{names:?}"
                );
            })
            .unwrap();
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn controller_cuts_a_busy_drain_at_the_deadline_when_one_is_set() {
        const DEADLINE: Duration = Duration::from_secs(4);
        let topo = LoadBalancerTopology::build(2).unwrap();
        let vip = Ipv4Addr::new(198, 51, 100, 21);
        let vip_addr = SocketAddr::new(vip.into(), 80);
        let svc = |which: &[usize]| web_on_backends(vip, which);
        let client = topo.client.clone();
        topo.director
            .run(|| {
                let mut config = config();
                config.drain_timeout = Some(DEADLINE);
                config.drain_check_interval = Duration::from_millis(500);
                let mut r = Reconciler::new(
                    KernelDataplane::open(DEFAULT_DUMMY_INTERFACE).unwrap(),
                    config,
                );
                r.sync_service(svc(&[0, 1]), Instant::now());
                assert!(r.verify(Instant::now()).unwrap().is_ok());

                let mut conn = Client::open(&client, vip_addr);
                conn.echo("before");
                let leaving = if conn.backend == "backend-1" { 0 } else { 1 };
                let leaving_key = DestinationKey {
                    addr: LoadBalancerTopology::backend_ip(leaving).into(),
                    port: BACKEND_PORT,
                };
                let skey = ServiceKey::tcp(vip, 80);

                let left = Instant::now();
                let report = r.sync_service(svc(&[1 - leaving]), left);
                assert!(report.is_ok(), "{report:?}");
                // Busy all along: the connection answers until the deadline deletes its
                // real server, never before.
                let mut echoed = 0;
                while r.view().destination(&skey, &leaving_key).is_some() {
                    assert!(
                        left.elapsed() < DEADLINE + Duration::from_secs(20),
                        "a busy drain outlived its deadline"
                    );
                    assert!(conn.echoes("busy"), "cut before the deadline");
                    echoed += 1;
                    std::thread::sleep(Duration::from_millis(200));
                    r.poll(Instant::now());
                }
                assert!(
                    left.elapsed() >= DEADLINE,
                    "deleted after {:?}, before the {DEADLINE:?} deadline",
                    left.elapsed()
                );
                assert!(echoed > 0);
                let state = r.dataplane_mut().service(&skey).unwrap().unwrap();
                assert!(state.config.destination(&leaving_key).is_none());
                assert_eq!(r.metrics().drains_expired, 1);
                assert_eq!(r.metrics().drains_completed, 0);
                // The kernel no longer carries that connection (expire_nodest_conn=1).
                assert!(!conn.echoes("after the deadline"), "still served");
            })
            .unwrap();
    }
}
