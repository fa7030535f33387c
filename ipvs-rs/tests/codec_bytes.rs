//! Byte-exact tests, written from `include/uapi/linux/ip_vs.h` by hand, independently of the
//! encoder: what requests must look like on the wire, and what kernel-style replies decode to.
//!
//! Netlink integers are host order; these tests assume a little-endian host.
#![cfg(target_endian = "little")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::{NonZeroU8, NonZeroU16, NonZeroU32};

use ipvs::codec::{self, IpvsCommand, IpvsMessage, Operation, Request};
use ipvs::model::*;
use netlink_packet_core::{
    Emitable, NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;

/// The generic netlink payload (genlmsghdr + attributes) of `msg`.
fn genl_bytes(msg: IpvsMessage) -> Vec<u8> {
    let genl = GenlMessage::from_payload(msg);
    let mut buf = vec![0; genl.buffer_len()];
    genl.emit(&mut buf);
    buf
}

/// Parses a generic netlink payload (genlmsghdr + attributes) as the kernel would send it.
fn parse_genl(bytes: &[u8]) -> IpvsMessage {
    use netlink_packet_core::ParseableParametrized;
    GenlMessage::<IpvsMessage>::parse_with_param(bytes, 0x1d)
        .expect("parses")
        .payload
}

fn op_bytes(op: &Operation, features: KernelFeatures) -> Vec<u8> {
    genl_bytes(op.to_message(&features).expect("encodes"))
}

#[test]
fn new_service_ipv4_tcp_full_netlink_message() {
    let op = Operation::AddService(Service::new(
        ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80),
        Scheduler::WeightedLeastConnection,
    ));
    let mut genl = GenlMessage::from_payload(op.to_message(&KernelFeatures::all()).unwrap());
    genl.set_resolved_family_id(0x1d);
    let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(genl));
    nl.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    nl.header.sequence_number = 1;
    nl.finalize();
    let mut buf = vec![0; nl.buffer_len()];
    nl.serialize(&mut buf);

    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        // nlmsghdr: len 92 (u32), type 0x1d (resolved family id), flags REQUEST|ACK, seq 1, pid 0
        92, 0, 0, 0, 0x1d, 0, 0x05, 0x00, 1, 0, 0, 0, 0, 0, 0, 0,
        // genlmsghdr: cmd NEW_SERVICE (1), version 1, reserved
        1, 1, 0, 0,
        // IPVS_CMD_ATTR_SERVICE (1) | NLA_F_NESTED, len 72
        72, 0, 0x01, 0x80,
            // IPVS_SVC_ATTR_AF (1): u16 AF_INET = 2, padded
            6, 0, 1, 0, 2, 0, 0, 0,
            // IPVS_SVC_ATTR_PROTOCOL (2): u16 IPPROTO_TCP = 6
            6, 0, 2, 0, 6, 0, 0, 0,
            // IPVS_SVC_ATTR_ADDR (3): 4 bytes, 10.0.0.1
            8, 0, 3, 0, 10, 0, 0, 1,
            // IPVS_SVC_ATTR_PORT (4): 80 in network order
            6, 0, 4, 0, 0x00, 0x50, 0, 0,
            // IPVS_SVC_ATTR_SCHED_NAME (6): "wlc\0"
            8, 0, 6, 0, b'w', b'l', b'c', 0,
            // IPVS_SVC_ATTR_FLAGS (7): flags 0, mask 0xffffffff
            12, 0, 7, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
            // IPVS_SVC_ATTR_TIMEOUT (8): 0
            8, 0, 8, 0, 0, 0, 0, 0,
            // IPVS_SVC_ATTR_NETMASK (9): 255.255.255.255 (network order)
            8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff,
    ];
    assert_eq!(buf, expected);
}

#[test]
fn new_service_ipv6_persistent_sh_with_pe() {
    let op = Operation::AddService(Service {
        key: ServiceKey::Tuple {
            protocol: Protocol::Tcp,
            addr: "2001:db8::1".parse().unwrap(),
            port: 443,
        },
        scheduler: Scheduler::SourceHashing {
            fallback: true,
            port: true,
        },
        persistence: Some(Persistence {
            timeout_secs: 300,
            netmask: PersistenceNetmask::V6(Ipv6PrefixLen::new(64).unwrap()),
        }),
        one_packet: false,
        persistence_engine: Some(PersistenceEngine::new("sip").unwrap()),
    });
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        1, 1, 0, 0,
        // SERVICE nest, len 4 + 8 + 8 + 20 + 8 + 8 + 12 + 8 + 8 + 8 = 92
        92, 0, 0x01, 0x80,
            6, 0, 1, 0, 10, 0, 0, 0,                      // AF: AF_INET6 = 10
            6, 0, 2, 0, 6, 0, 0, 0,                       // PROTOCOL: TCP
            20, 0, 3, 0,                                  // ADDR: 16 bytes
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            6, 0, 4, 0, 0x01, 0xbb, 0, 0,                 // PORT: 443, network order
            7, 0, 6, 0, b's', b'h', 0, 0,                 // SCHED_NAME: "sh\0" + 1 pad
            // FLAGS: PERSISTENT (0x1) | SCHED1 (0x8) | SCHED2 (0x10) = 0x19, mask all ones
            12, 0, 7, 0, 0x19, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
            8, 0, 8, 0, 0x2c, 0x01, 0, 0,                 // TIMEOUT: 300
            8, 0, 9, 0, 64, 0, 0, 0,                      // NETMASK: prefix 64, host order
            8, 0, 11, 0, b's', b'i', b'p', 0,             // PE_NAME: "sip\0"
    ];
    assert_eq!(op_bytes(&op, KernelFeatures::all()), expected);
}

#[test]
fn new_dest_gue_tunnel_on_fwmark_service() {
    let service = ServiceKey::Fwmark {
        family: AddressFamily::Ipv4,
        mark: NonZeroU32::new(7).unwrap(),
    };
    let dest = Destination {
        addr: Ipv4Addr::new(192, 168, 1, 10).into(),
        port: 8080,
        forwarding: Forwarding::Tunnel(Tunnel::Gue {
            port: NonZeroU16::new(6080).unwrap(),
            checksum: true,
            remote_checksum: false,
        }),
        weight: Weight::new(5).unwrap(),
        thresholds: Thresholds::new(100, 10).unwrap(),
    };
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        5, 1, 0, 0,                                       // NEW_DEST, version 1
        20, 0, 0x01, 0x80,                                // SERVICE nest, len 20
            6, 0, 1, 0, 2, 0, 0, 0,                       // AF_INET
            8, 0, 5, 0, 7, 0, 0, 0,                       // FWMARK 7
        84, 0, 0x02, 0x80,                                // DEST nest, len 84
            8, 0, 1, 0, 192, 168, 1, 10,                  // ADDR
            6, 0, 2, 0, 0x1f, 0x90, 0, 0,                 // PORT 8080, network order
            8, 0, 3, 0, 2, 0, 0, 0,                       // FWD_METHOD: IP_VS_CONN_F_TUNNEL
            8, 0, 4, 0, 5, 0, 0, 0,                       // WEIGHT 5
            8, 0, 5, 0, 100, 0, 0, 0,                     // U_THRESH 100
            8, 0, 6, 0, 10, 0, 0, 0,                      // L_THRESH 10
            6, 0, 11, 0, 2, 0, 0, 0,                      // ADDR_FAMILY AF_INET
            5, 0, 13, 0, 1, 0, 0, 0,                      // TUN_TYPE GUE (u8)
            6, 0, 14, 0, 0x17, 0xc0, 0, 0,                // TUN_PORT 6080, network order
            6, 0, 15, 0, 1, 0, 0, 0,                      // TUN_FLAGS: ENCAP_FLAG_CSUM
    ];
    assert_eq!(
        op_bytes(
            &Operation::AddDestination(service, dest),
            KernelFeatures::all()
        ),
        expected
    );
}

#[test]
fn new_dest_masquerade_on_an_old_kernel_still_sends_thresholds() {
    let service = ServiceKey::udp(Ipv4Addr::new(10, 0, 0, 1), 53);
    let dest = Destination::new(Ipv4Addr::new(10, 0, 1, 2), 53, Forwarding::Masquerade);
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        5, 1, 0, 0,
        36, 0, 0x01, 0x80,
            6, 0, 1, 0, 2, 0, 0, 0,
            6, 0, 2, 0, 17, 0, 0, 0,                      // PROTOCOL: UDP
            8, 0, 3, 0, 10, 0, 0, 1,
            6, 0, 4, 0, 0, 53, 0, 0,
        52, 0, 0x02, 0x80,                                // no ADDR_FAMILY before 3.18
            8, 0, 1, 0, 10, 0, 1, 2,
            6, 0, 2, 0, 0, 53, 0, 0,
            8, 0, 3, 0, 0, 0, 0, 0,                       // MASQ
            8, 0, 4, 0, 1, 0, 0, 0,                       // WEIGHT 1
            8, 0, 5, 0, 0, 0, 0, 0,                       // U_THRESH 0, always sent
            8, 0, 6, 0, 0, 0, 0, 0,                       // L_THRESH 0, always sent
    ];
    assert_eq!(
        op_bytes(
            &Operation::AddDestination(service, dest),
            KernelFeatures::from_release("3.10.0")
        ),
        expected
    );
}

#[test]
fn del_dest_sends_only_the_key() {
    let service = ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80);
    let key = DestinationKey {
        addr: Ipv4Addr::new(10, 0, 1, 2).into(),
        port: 80,
    };
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        7, 1, 0, 0,                                       // DEL_DEST
        36, 0, 0x01, 0x80,
            6, 0, 1, 0, 2, 0, 0, 0,
            6, 0, 2, 0, 6, 0, 0, 0,
            8, 0, 3, 0, 10, 0, 0, 1,
            6, 0, 4, 0, 0, 80, 0, 0,
        28, 0, 0x02, 0x80,
            8, 0, 1, 0, 10, 0, 1, 2,
            6, 0, 2, 0, 0, 80, 0, 0,
            6, 0, 11, 0, 2, 0, 0, 0,                      // ADDR_FAMILY
    ];
    assert_eq!(
        op_bytes(
            &Operation::DeleteDestination(service, key),
            KernelFeatures::all()
        ),
        expected
    );
}

#[test]
fn new_daemon_with_4_3_settings() {
    let mut d = SyncDaemon::new(DaemonState::Master, InterfaceName::new("eth0").unwrap(), 9);
    d.group = Some(Ipv4Addr::new(239, 1, 2, 3).into());
    d.port = NonZeroU16::new(8848);
    d.ttl = NonZeroU8::new(2);
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        9, 1, 0, 0,                                       // NEW_DAEMON
        56, 0, 0x03, 0x80,                                // DAEMON nest, len 56
            8, 0, 1, 0, 1, 0, 0, 0,                       // STATE: MASTER
            9, 0, 2, 0, b'e', b't', b'h', b'0', 0, 0, 0, 0, // MCAST_IFN "eth0\0" + 3 pad
            8, 0, 3, 0, 9, 0, 0, 0,                       // SYNC_ID 9
            8, 0, 5, 0, 239, 1, 2, 3,                     // MCAST_GROUP, network order
            6, 0, 7, 0, 0x90, 0x22, 0, 0,                 // MCAST_PORT 8848, HOST order
            5, 0, 8, 0, 2, 0, 0, 0,                       // MCAST_TTL 2
    ];
    assert_eq!(
        op_bytes(&Operation::StartDaemon(d), KernelFeatures::all()),
        expected
    );
}

#[test]
fn small_commands() {
    let all = KernelFeatures::all();
    assert_eq!(op_bytes(&Operation::Flush, all), vec![17, 1, 0, 0]);
    assert_eq!(
        op_bytes(&Operation::ZeroCounters(None), all),
        vec![16, 1, 0, 0]
    );
    assert_eq!(
        op_bytes(&Operation::StopDaemon(DaemonState::Backup), all),
        vec![10, 1, 0, 0, 12, 0, 0x03, 0x80, 8, 0, 1, 0, 2, 0, 0, 0]
    );
    let t = Timeouts {
        tcp: NonZeroU32::new(900),
        tcp_fin: None,
        udp: NonZeroU32::new(300),
    };
    assert_eq!(
        op_bytes(&Operation::SetTimeouts(t), all),
        // SET_CONFIG; TIMEOUT_TCP (4) 900; TIMEOUT_UDP (6) 300; TCP_FIN left out
        vec![
            12, 1, 0, 0, 8, 0, 4, 0, 0x84, 0x03, 0, 0, 8, 0, 6, 0, 0x2c, 0x01, 0, 0
        ]
    );
    assert_eq!(genl_bytes(Request::GetInfo.to_message()), vec![15, 1, 0, 0]);
    assert_eq!(
        genl_bytes(Request::GetConfig.to_message()),
        vec![13, 1, 0, 0]
    );
    assert_eq!(
        genl_bytes(Request::DumpDaemons.to_message()),
        vec![11, 1, 0, 0]
    );
    assert_eq!(
        genl_bytes(Request::DumpServices.to_message()),
        vec![4, 1, 0, 0]
    );
    let fw = ServiceKey::Fwmark {
        family: AddressFamily::Ipv6,
        mark: NonZeroU32::new(0x100).unwrap(),
    };
    assert_eq!(
        genl_bytes(Request::DumpDestinations(fw).to_message()),
        vec![
            8, 1, 0, 0, 20, 0, 0x01, 0x80, 6, 0, 1, 0, 10, 0, 0, 0, 8, 0, 5, 0, 0, 1, 0, 0
        ]
    );
    assert!(Request::DumpDestinations(fw).is_dump() && !Request::GetService(fw).is_dump());
}

/// A `GET_SERVICE` reply as the kernel writes it: nests without NLA_F_NESTED, a 16-byte
/// IPv4 address, HASHED set, both statistics nests (with a PAD attribute) — STATS64 wins.
#[rustfmt::skip]
const SERVICE_REPLY: &[u8] = &[
    1, 1, 0, 0,                                           // NEW_SERVICE reply
    20, 1, 0x01, 0x00,                                    // SERVICE, len 4 + 80 + 88 + 104 = 276
        6, 0, 1, 0, 2, 0, 0, 0,                           // AF_INET
        6, 0, 2, 0, 6, 0, 0, 0,                           // TCP
        20, 0, 3, 0, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 16-byte address
        6, 0, 4, 0, 0x1f, 0x90, 0, 0,                     // port 8080
        7, 0, 6, 0, b'r', b'r', 0, 0,                     // "rr\0"
        12, 0, 7, 0, 0x02, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // flags HASHED, mask ~0
        8, 0, 8, 0, 0, 0, 0, 0,                           // TIMEOUT 0
        8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff,               // NETMASK
        88, 0, 10, 0,                                     // STATS (32-bit), len 88
            8, 0, 1, 0, 5, 0, 0, 0,                       // CONNS 5
            8, 0, 2, 0, 100, 0, 0, 0,                     // INPKTS 100
            8, 0, 3, 0, 90, 0, 0, 0,                      // OUTPKTS 90
            4, 0, 11, 0,                                  // PAD
            12, 0, 4, 0, 0x10, 0x27, 0, 0, 0, 0, 0, 0,    // INBYTES 10000 (u64)
            12, 0, 5, 0, 0x20, 0x4e, 0, 0, 0, 0, 0, 0,    // OUTBYTES 20000 (u64)
            8, 0, 6, 0, 1, 0, 0, 0,                       // CPS 1
            8, 0, 7, 0, 2, 0, 0, 0,                       // INPPS 2
            8, 0, 8, 0, 3, 0, 0, 0,                       // OUTPPS 3
            8, 0, 9, 0, 4, 0, 0, 0,                       // INBPS 4
        104, 0, 12, 0,                                    // STATS64, len 104 (no OUTBPS)
            12, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0,          // CONNS 2^32
            12, 0, 2, 0, 101, 0, 0, 0, 0, 0, 0, 0,
            12, 0, 3, 0, 91, 0, 0, 0, 0, 0, 0, 0,
            12, 0, 4, 0, 0x10, 0x27, 0, 0, 0, 0, 0, 0,
            12, 0, 5, 0, 0x20, 0x4e, 0, 0, 0, 0, 0, 0,
            12, 0, 6, 0, 1, 0, 0, 0, 0, 0, 0, 0,
            12, 0, 7, 0, 2, 0, 0, 0, 0, 0, 0, 0,
            12, 0, 8, 0, 3, 0, 0, 0, 0, 0, 0, 0,
            4, 0, 99, 0,                                  // unknown attribute: kept as Other
];

#[test]
fn decodes_a_kernel_service_reply_preferring_stats64() {
    let msg = parse_genl(SERVICE_REPLY);
    assert_eq!(msg.command, IpvsCommand::NewService);
    let entry = codec::decode_service(&msg).unwrap();
    assert_eq!(
        entry.service.key,
        ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 8080)
    );
    assert_eq!(entry.service.scheduler, Scheduler::RoundRobin);
    assert_eq!(entry.service.persistence, None);
    assert!(entry.flags.is_hashed());
    assert_eq!(entry.stats.connections, 1 << 32);
    assert_eq!(entry.stats.packets_in, 101);
    assert_eq!(entry.stats.packets_out, 91);
    assert_eq!(entry.stats.bytes_in, 10_000);
    assert_eq!(entry.stats.bytes_out, 20_000);
    assert_eq!(
        entry.stats.rates,
        Rates {
            cps: 1,
            in_pps: 2,
            out_pps: 3,
            in_bps: 0,
            out_bps: 0
        }
    );
}

#[test]
fn decodes_a_pre_4_1_service_reply_from_32_bit_stats() {
    // The same reply cut before STATS64, with the SERVICE length patched to 4 + 80 + 88.
    let mut bytes = SERVICE_REPLY[..4 + 172].to_vec();
    bytes[4] = 172;
    bytes[5] = 0;
    let entry = codec::decode_service(&parse_genl(&bytes)).unwrap();
    assert_eq!(entry.stats.connections, 5);
    assert_eq!(entry.stats.packets_in, 100);
    assert_eq!(entry.stats.bytes_out, 20_000);
    assert_eq!(entry.stats.rates.in_bps, 4);
}

#[test]
fn decodes_a_kernel_destination_reply() {
    #[rustfmt::skip]
    let bytes: Vec<u8> = vec![
        1 + 4, 1, 0, 0,                                   // NEW_DEST reply
        132, 0, 0x02, 0x00,                               // DEST, len 132
            20, 0, 1, 0, 10, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            6, 0, 2, 0, 0, 80, 0, 0,
            8, 0, 3, 0, 3, 0, 0, 0,                       // DROUTE
            8, 0, 4, 0, 7, 0, 0, 0,                       // weight 7
            5, 0, 13, 0, 0, 0, 0, 0,                      // TUN_TYPE 0 (ignored: not a tunnel)
            6, 0, 14, 0, 0, 0, 0, 0,                      // TUN_PORT 0
            6, 0, 15, 0, 0, 0, 0, 0,                      // TUN_FLAGS 0
            8, 0, 5, 0, 50, 0, 0, 0,                      // U_THRESH 50
            8, 0, 6, 0, 20, 0, 0, 0,                      // L_THRESH 20
            8, 0, 7, 0, 3, 0, 0, 0,                       // ACTIVE 3
            8, 0, 8, 0, 4, 0, 0, 0,                       // INACTIVE 4
            8, 0, 9, 0, 1, 0, 0, 0,                       // PERSIST 1
            6, 0, 11, 0, 2, 0, 0, 0,                      // ADDR_FAMILY AF_INET
            12, 0, 10, 0,                                 // STATS with only CONNS
                8, 0, 1, 0, 9, 0, 0, 0,
    ];
    let entry = codec::decode_destination(&parse_genl(&bytes), AddressFamily::Ipv4).unwrap();
    assert_eq!(
        entry.destination.addr,
        IpAddr::from(Ipv4Addr::new(10, 0, 1, 2))
    );
    assert_eq!(entry.destination.port, 80);
    assert_eq!(entry.destination.forwarding, Forwarding::DirectRouting);
    assert_eq!(entry.destination.weight.get(), 7);
    assert_eq!(
        (
            entry.destination.thresholds.upper(),
            entry.destination.thresholds.lower()
        ),
        (50, 20)
    );
    assert_eq!(entry.reported_family, Some(AddressFamily::Ipv4));
    assert_eq!(
        (
            entry.active_connections,
            entry.inactive_connections,
            entry.persistent_connections
        ),
        (3, 4, 1)
    );
    assert_eq!(entry.stats.connections, 9);
}

#[test]
fn decodes_info_config_and_daemon_replies() {
    // SET_INFO: VERSION 0x010201, CONN_TAB_SIZE 4096 — top-level, numbers 1 and 2.
    let info = parse_genl(&[
        14, 1, 0, 0, 8, 0, 1, 0, 0x01, 0x02, 0x01, 0x00, 8, 0, 2, 0, 0, 0x10, 0, 0,
    ]);
    let info = codec::decode_info(&info).unwrap();
    assert_eq!(info.version.to_string(), "1.2.1");
    assert_eq!(info.connection_table_size, 4096);

    // SET_CONFIG: 900 / 120 / 300.
    #[rustfmt::skip]
    let cfg = parse_genl(&[
        12, 1, 0, 0,
        8, 0, 4, 0, 0x84, 0x03, 0, 0,
        8, 0, 5, 0, 120, 0, 0, 0,
        8, 0, 6, 0, 0x2c, 0x01, 0, 0,
    ]);
    let t = codec::decode_timeouts(&cfg).unwrap();
    assert_eq!(
        t,
        Timeouts {
            tcp: NonZeroU32::new(900),
            tcp_fin: NonZeroU32::new(120),
            udp: NonZeroU32::new(300),
        }
    );

    // NEW_DAEMON: backup on "bond0", sync id 3, maxlen 1472, port 8848, ttl 1, group ff02::1.
    #[rustfmt::skip]
    let d = parse_genl(&[
        9, 1, 0, 0,
        76, 0, 3, 0,
            8, 0, 1, 0, 2, 0, 0, 0,
            10, 0, 2, 0, b'b', b'o', b'n', b'd', b'0', 0, 0, 0,
            8, 0, 3, 0, 3, 0, 0, 0,
            6, 0, 4, 0, 0xc0, 0x05, 0, 0,
            6, 0, 7, 0, 0x90, 0x22, 0, 0,
            5, 0, 8, 0, 1, 0, 0, 0,
            20, 0, 6, 0, 0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    ]);
    let d = codec::decode_daemon(&d).unwrap();
    assert_eq!(d.state, DaemonState::Backup);
    assert_eq!(d.interface.as_str(), "bond0");
    assert_eq!(d.sync_id, 3);
    assert_eq!(d.max_len, NonZeroU16::new(1472));
    assert_eq!(d.port, NonZeroU16::new(8848));
    assert_eq!(d.ttl, NonZeroU8::new(1));
    assert_eq!(
        d.group,
        Some(IpAddr::from("ff02::1".parse::<Ipv6Addr>().unwrap()))
    );
}

#[test]
fn refuses_what_the_kernel_would_drop_or_reject() {
    use codec::EncodeError;
    let svc4 = ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80);
    let gre = Destination::new(
        Ipv4Addr::new(10, 0, 1, 2),
        0,
        Forwarding::Tunnel(Tunnel::Gre { checksum: false }),
    );
    let k52 = KernelFeatures::from_release("5.2.0-1-amd64");
    assert_eq!(
        Operation::AddDestination(svc4, gre).to_message(&k52),
        Err(EncodeError::Unsupported {
            feature: Feature::TunnelGre
        })
    );
    let gue = |checksum| {
        Destination::new(
            Ipv4Addr::new(10, 0, 1, 2),
            0,
            Forwarding::Tunnel(Tunnel::Gue {
                port: NonZeroU16::new(5555).unwrap(),
                checksum,
                remote_checksum: false,
            }),
        )
    };
    assert!(
        Operation::AddDestination(svc4, gue(false))
            .to_message(&k52)
            .is_ok()
    );
    assert_eq!(
        Operation::AddDestination(svc4, gue(true)).to_message(&k52),
        Err(EncodeError::Unsupported {
            feature: Feature::TunnelFlags
        })
    );
    assert_eq!(
        Operation::AddDestination(svc4, gue(false))
            .to_message(&KernelFeatures::from_release("5.1.21")),
        Err(EncodeError::Unsupported {
            feature: Feature::TunnelGue
        })
    );
    let v6_masq = Destination::new(
        "2001:db8::2".parse::<Ipv6Addr>().unwrap(),
        80,
        Forwarding::Masquerade,
    );
    assert_eq!(
        Operation::AddDestination(svc4, v6_masq).to_message(&KernelFeatures::all()),
        Err(EncodeError::MixedFamilyNeedsTunnel {
            service: AddressFamily::Ipv4,
            destination: AddressFamily::Ipv6
        })
    );
    let v6_ipip = Destination {
        forwarding: Forwarding::Tunnel(Tunnel::Ipip),
        ..v6_masq
    };
    assert!(
        Operation::AddDestination(svc4, v6_ipip)
            .to_message(&KernelFeatures::all())
            .is_ok()
    );
    assert_eq!(
        Operation::AddDestination(svc4, v6_ipip)
            .to_message(&KernelFeatures::from_release("3.17.0")),
        Err(EncodeError::Unsupported {
            feature: Feature::DestinationAddressFamily
        })
    );
    let mut bad = Service::new(svc4, Scheduler::RoundRobin);
    bad.persistence = Some(Persistence {
        timeout_secs: 60,
        netmask: PersistenceNetmask::V6(Ipv6PrefixLen::HOST),
    });
    assert_eq!(
        Operation::AddService(bad).to_message(&KernelFeatures::all()),
        Err(EncodeError::NetmaskFamilyMismatch {
            service: AddressFamily::Ipv4,
            netmask: AddressFamily::Ipv6
        })
    );
    let mut d = SyncDaemon::new(DaemonState::Master, InterfaceName::new("eth0").unwrap(), 1);
    d.ttl = NonZeroU8::new(4);
    assert_eq!(
        Operation::StartDaemon(d.clone()).to_message(&KernelFeatures::from_release("4.2.8")),
        Err(EncodeError::Unsupported {
            feature: Feature::DaemonMulticastSettings
        })
    );
    d.group = Some(Ipv4Addr::new(10, 1, 1, 1).into());
    assert_eq!(
        Operation::StartDaemon(d).to_message(&KernelFeatures::all()),
        Err(EncodeError::NotMulticast(Ipv4Addr::new(10, 1, 1, 1).into()))
    );
}

#[test]
fn model_constructors_refuse_invalid_values() {
    assert!(Weight::new(i32::MAX as u32).is_ok());
    assert_eq!(
        Weight::new(1 << 31),
        Err(ModelError::WeightTooLarge(1 << 31))
    );
    assert!(Thresholds::new(10, 10).is_ok());
    assert!(
        Thresholds::new(0, 1).is_err(),
        "the kernel answers ERANGE even for upper 0"
    );
    assert!(Ipv6PrefixLen::new(0).is_err() && Ipv6PrefixLen::new(129).is_err());
    assert!(CustomScheduler::new("rr", 0).is_err());
    assert!(CustomScheduler::new("my_sched", 0x40).is_err());
    assert!(CustomScheduler::new("0123456789abcdef", 0).is_err());
    assert!(InterfaceName::new("eth\0").is_err());
    assert!(PersistenceEngine::new("").is_err());
    assert_eq!(
        "mh".parse::<Scheduler>().unwrap(),
        Scheduler::MaglevHashing {
            fallback: false,
            port: false
        }
    );
    assert_eq!("none".parse::<Scheduler>().unwrap(), Scheduler::None);
    assert_eq!(
        Scheduler::from_name_and_flags("sh", 0x08).unwrap().flags(),
        0x08
    );
    assert_eq!(Protocol::Other(6), Protocol::Tcp);
    assert_eq!(
        Protocol::Other(17).cmp(&Protocol::Udp),
        std::cmp::Ordering::Equal
    );
    assert!(Protocol::Tcp < Protocol::Udp && Protocol::Udp < Protocol::Sctp);
    assert!(Protocol::Sctp < Protocol::Other(200));
    // A scheduler is carried by every service entry of a table: an out-of-tree one's name is
    // boxed so that the in-tree ones stay two words.
    assert!(std::mem::size_of::<Scheduler>() <= 16);
}

#[test]
fn kernel_features_from_release_strings() {
    let f = KernelFeatures::from_release;
    assert_eq!(f("6.1.0-56-amd64"), KernelFeatures::all());
    assert_eq!(f("5.4.0"), KernelFeatures::all());
    let k52 = f("5.2.0");
    assert!(k52.supports(Feature::TunnelGue) && !k52.supports(Feature::TunnelGre));
    assert!(!k52.supports(Feature::TunnelFlags));
    let rhel = f("4.18.0-553.el8_10.x86_64");
    assert!(rhel.supports(Feature::DaemonMulticastSettings) && !rhel.supports(Feature::TunnelGue));
    assert_eq!(
        f("3.18").iter().collect::<Vec<_>>(),
        vec![Feature::DestinationAddressFamily]
    );
    assert_eq!(f("not a kernel"), KernelFeatures::baseline());
    assert_eq!(f(""), KernelFeatures::baseline());
    assert_eq!(f("99999999999.1"), KernelFeatures::baseline());
    assert_eq!(
        KernelVersion::parse(" 6.8.0+ "),
        Some(KernelVersion {
            major: 6,
            minor: 8,
            patch: 0
        })
    );
    assert!(Feature::TunnelGre.to_string().contains("5.3"));
}

#[test]
fn observe_features_from_replies() {
    let msg = parse_genl(SERVICE_REPLY);
    let f = codec::observe_features(&msg, KernelFeatures::baseline());
    assert_eq!(f, KernelFeatures::baseline().with(Feature::Stats64));
}

// Real kernel captures (tests/fixtures/kernel-*) are checked in codec_captured.rs.
