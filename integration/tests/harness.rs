//! Proof that the real-kernel harness works: the IPVS family resolves, `ipvsadm` can program a
//! virtual server in a fresh namespace, and veth pairs carry TCP between namespaces.

mod real_kernel {
    use std::net::{SocketAddr, TcpListener};
    use std::process::Command;

    use integration::{Netns, backend, current_netns_inode, link};
    use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
    use netlink_packet_generic::GenlMessage;
    use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs};
    use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_GENERIC};

    /// Asks the kernel's generic-netlink controller for a family id by name.
    fn resolve_family(name: &str) -> Result<u16, String> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(|e| e.to_string())?;
        socket.bind_auto().map_err(|e| e.to_string())?;
        socket
            .connect(&NlAddr::new(0, 0))
            .map_err(|e| e.to_string())?;
        let mut request = NetlinkMessage::from(GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
        }));
        request.header.flags = NLM_F_REQUEST;
        request.header.sequence_number = 1;
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        socket.send(&bytes, 0).map_err(|e| e.to_string())?;
        let (reply, _) = socket.recv_from_full().map_err(|e| e.to_string())?;
        let reply = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&reply)
            .map_err(|e| e.to_string())?;
        match reply.payload {
            NetlinkPayload::InnerMessage(genl) => genl
                .payload
                .nlas
                .iter()
                .find_map(|a| match a {
                    GenlCtrlAttrs::FamilyId(id) => Some(*id),
                    _ => None,
                })
                .ok_or_else(|| "reply without a family id".to_string()),
            NetlinkPayload::Error(e) => Err(format!("kernel error: {e:?}")),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn ipvs_generic_netlink_family_resolves() {
        let ns = Netns::new("family").unwrap();
        let id = ns.run(|| resolve_family("IPVS")).unwrap();
        let id = id.expect("the kernel knows the IPVS family (module autoloaded)");
        assert!(
            id >= 16,
            "generic netlink ids below 16 are reserved, got {id}"
        );
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn ipvsadm_creates_and_lists_a_virtual_server_in_a_fresh_namespace() {
        let ns = Netns::new("ipvsadm").unwrap();
        let before = current_netns_inode().unwrap();
        let listing = ns
            .run(|| {
                let run = |args: &[&str]| {
                    let out = Command::new("ipvsadm")
                        .args(args)
                        .output()
                        .expect("ipvsadm runs");
                    assert!(out.status.success(), "ipvsadm {args:?}: {out:?}");
                    String::from_utf8_lossy(&out.stdout).into_owned()
                };
                let empty = run(&["-Sn"]);
                assert_eq!(
                    empty.trim(),
                    "",
                    "a fresh namespace starts with an empty table"
                );
                run(&["-A", "-t", "198.51.100.7:80", "-s", "wrr"]);
                run(&[
                    "-a",
                    "-t",
                    "198.51.100.7:80",
                    "-r",
                    "203.0.113.2:8080",
                    "-m",
                    "-w",
                    "3",
                ]);
                run(&["-Sn"])
            })
            .unwrap();
        assert_eq!(
            listing,
            "-A -t 198.51.100.7:80 -s wrr\n-a -t 198.51.100.7:80 -r 203.0.113.2:8080 -m -w 3\n"
        );
        assert_eq!(
            current_netns_inode().unwrap(),
            before,
            "the test thread never moved"
        );
        // The namespace's table is its own: a second fresh namespace sees nothing.
        let other = Netns::new("other").unwrap();
        let out = other
            .run(|| Command::new("ipvsadm").arg("-Sn").output().unwrap())
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
    }

    #[test]
    #[ignore = "real kernel: run by cargo xtask test"]
    fn veth_pair_carries_tcp_between_namespaces() {
        let server = Netns::new("server").unwrap();
        let client = Netns::new("client").unwrap();
        client
            .run(|| -> std::io::Result<()> {
                link::add_veth("c0", "s0", &server)?;
                link::add_address("c0", "192.0.2.2".parse().unwrap(), 24)?;
                link::set_up("c0")
            })
            .unwrap()
            .unwrap();
        server
            .run(|| -> std::io::Result<()> {
                link::add_address("s0", "192.0.2.1".parse().unwrap(), 24)?;
                link::set_up("s0")
            })
            .unwrap()
            .unwrap();
        let addr: SocketAddr = "192.0.2.1:7000".parse().unwrap();
        let _backend = backend::Backend::start(&server, "server-ns", addr).unwrap();
        let answer = client.run(|| backend::ask_name(addr)).unwrap().unwrap();
        assert_eq!(answer, "server-ns");
        // The address exists only in the server's namespace.
        let bound_here = TcpListener::bind("192.0.2.1:0");
        assert!(
            bound_here.is_err(),
            "192.0.2.1 must not be an address of the test's namespace"
        );
    }
}
