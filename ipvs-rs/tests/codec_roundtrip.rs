//! Property tests: model → message → bytes → message → model is the identity, for every
//! operation and every reply kind.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::{NonZeroU8, NonZeroU16, NonZeroU32};

use ipvs::codec::{
    self, IpvsMessage, ListingMessage, Operation, Request, config_reply, daemon_reply,
    destination_reply, info_reply, service_flags, service_reply,
};
use ipvs::model::*;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use proptest::prelude::*;

/// Serialises `msg` as a full netlink message and parses it back.
fn wire(msg: &IpvsMessage) -> IpvsMessage {
    wire_as(msg)
}

/// Serialises `msg` as a full netlink message and parses it back as an `F` (an `IpvsMessage`,
/// or a `ListingMessage` for the listing decoder).
fn wire_as<F>(msg: &IpvsMessage) -> F
where
    F: netlink_packet_generic::GenlFamily
        + netlink_packet_core::Emitable
        + netlink_packet_core::ParseableParametrized<[u8], netlink_packet_generic::GenlHeader>
        + std::fmt::Debug,
{
    let mut genl = GenlMessage::from_payload(msg.clone());
    genl.set_resolved_family_id(0x1d);
    let mut nl = NetlinkMessage::from(genl);
    nl.finalize();
    let mut buf = vec![0; nl.buffer_len()];
    nl.serialize(&mut buf);
    let back = NetlinkMessage::<GenlMessage<F>>::deserialize(&buf).expect("parse back");
    match back.payload {
        NetlinkPayload::InnerMessage(g) => {
            assert_eq!(g.header.version, 1);
            g.payload
        }
        other => panic!("unexpected payload {other:?}"),
    }
}

/// Serialises `msg` as a full netlink message and parses it back for a listing.
fn wire_listed(msg: &IpvsMessage) -> ListingMessage {
    wire_as(msg)
}

fn ip_of(family: AddressFamily) -> BoxedStrategy<IpAddr> {
    match family {
        AddressFamily::Ipv4 => any::<[u8; 4]>()
            .prop_map(|b| IpAddr::from(Ipv4Addr::from(b)))
            .boxed(),
        AddressFamily::Ipv6 => any::<[u8; 16]>()
            .prop_map(|b| IpAddr::from(Ipv6Addr::from(b)))
            .boxed(),
    }
}

fn family() -> impl Strategy<Value = AddressFamily> {
    prop_oneof![Just(AddressFamily::Ipv4), Just(AddressFamily::Ipv6)]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Sctp),
        any::<u16>().prop_map(Protocol::from_number),
    ]
}

fn service_key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        (protocol(), family().prop_flat_map(ip_of), any::<u16>()).prop_map(
            |(protocol, addr, port)| ServiceKey::Tuple {
                protocol,
                addr,
                port
            }
        ),
        (family(), 1..=u32::MAX).prop_map(|(family, m)| ServiceKey::Fwmark {
            family,
            mark: NonZeroU32::new(m).expect("non-zero"),
        }),
    ]
}

fn scheduler() -> impl Strategy<Value = Scheduler> {
    let plain = prop_oneof![
        Just(Scheduler::RoundRobin),
        Just(Scheduler::WeightedRoundRobin),
        Just(Scheduler::LeastConnection),
        Just(Scheduler::WeightedLeastConnection),
        Just(Scheduler::LocalityBasedLeastConnection),
        Just(Scheduler::LocalityBasedLeastConnectionReplication),
        Just(Scheduler::DestinationHashing),
        Just(Scheduler::ShortestExpectedDelay),
        Just(Scheduler::NeverQueue),
        Just(Scheduler::WeightedFailover),
        Just(Scheduler::WeightedOverflow),
        Just(Scheduler::TwoChoice),
        Just(Scheduler::None),
    ];
    prop_oneof![
        plain,
        (any::<bool>(), any::<bool>())
            .prop_map(|(fallback, port)| Scheduler::SourceHashing { fallback, port }),
        (any::<bool>(), any::<bool>())
            .prop_map(|(fallback, port)| Scheduler::MaglevHashing { fallback, port }),
        ("[a-z][a-z0-9_]{0,14}", 0u32..8).prop_filter_map("in-tree name", |(name, f)| {
            CustomScheduler::new(name, f << 3)
                .ok()
                .map(|c| Scheduler::Other(Box::new(c)))
        }),
    ]
}

fn netmask(family: AddressFamily) -> BoxedStrategy<PersistenceNetmask> {
    match family {
        AddressFamily::Ipv4 => any::<[u8; 4]>()
            .prop_map(|b| PersistenceNetmask::V4(Ipv4Addr::from(b)))
            .boxed(),
        AddressFamily::Ipv6 => (1u8..=128)
            .prop_map(|l| PersistenceNetmask::V6(Ipv6PrefixLen::new(l).expect("1..=128")))
            .boxed(),
    }
}

fn service() -> impl Strategy<Value = Service> {
    service_key().prop_flat_map(|key| {
        let persistence = proptest::option::of((any::<u32>(), netmask(key.family())).prop_map(
            |(timeout_secs, netmask)| Persistence {
                timeout_secs,
                netmask,
            },
        ));
        let pe = proptest::option::of(
            "[a-z]{1,15}".prop_map(|n| PersistenceEngine::new(n).expect("valid")),
        );
        (Just(key), scheduler(), persistence, any::<bool>(), pe).prop_map(
            |(key, scheduler, persistence, one_packet, persistence_engine)| Service {
                key,
                scheduler,
                persistence,
                one_packet,
                persistence_engine,
            },
        )
    })
}

fn tunnel() -> impl Strategy<Value = Tunnel> {
    prop_oneof![
        Just(Tunnel::Ipip),
        (1..=u16::MAX, any::<bool>(), any::<bool>()).prop_map(|(p, checksum, remote_checksum)| {
            Tunnel::Gue {
                port: NonZeroU16::new(p).expect("non-zero"),
                checksum,
                remote_checksum,
            }
        }),
        any::<bool>().prop_map(|checksum| Tunnel::Gre { checksum }),
    ]
}

fn forwarding() -> impl Strategy<Value = Forwarding> {
    prop_oneof![
        Just(Forwarding::Masquerade),
        Just(Forwarding::Local),
        Just(Forwarding::DirectRouting),
        Just(Forwarding::Bypass),
        tunnel().prop_map(Forwarding::Tunnel),
    ]
}

fn thresholds() -> impl Strategy<Value = Thresholds> {
    any::<u32>().prop_flat_map(|upper| {
        (0..=upper).prop_map(move |lower| Thresholds::new(upper, lower).expect("lower <= upper"))
    })
}

/// A destination valid for a service of `family`: same family, or any with tunnels.
fn destination(family: AddressFamily) -> impl Strategy<Value = Destination> {
    forwarding().prop_flat_map(move |forwarding| {
        let addr = if matches!(forwarding, Forwarding::Tunnel(_)) {
            prop_oneof![ip_of(AddressFamily::Ipv4), ip_of(AddressFamily::Ipv6)].boxed()
        } else {
            ip_of(family)
        };
        (addr, any::<u16>(), 0..=i32::MAX as u32, thresholds()).prop_map(
            move |(addr, port, w, thresholds)| Destination {
                addr,
                port,
                forwarding,
                weight: Weight::new(w).expect("<= i32::MAX"),
                thresholds,
            },
        )
    })
}

fn stats() -> impl Strategy<Value = Stats> {
    (any::<[u64; 5]>(), any::<[u64; 5]>()).prop_map(|(c, r)| Stats {
        connections: c[0],
        packets_in: c[1],
        packets_out: c[2],
        bytes_in: c[3],
        bytes_out: c[4],
        rates: Rates {
            cps: r[0],
            in_pps: r[1],
            out_pps: r[2],
            in_bps: r[3],
            out_bps: r[4],
        },
    })
}

fn multicast() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (224u8..=239, any::<[u8; 3]>())
            .prop_map(|(a, [b, c, d])| IpAddr::from(Ipv4Addr::new(a, b, c, d))),
        any::<[u8; 15]>().prop_map(|rest| {
            let mut b = [0xffu8; 16];
            b[1..].copy_from_slice(&rest);
            IpAddr::from(Ipv6Addr::from(b))
        }),
    ]
}

fn daemon() -> impl Strategy<Value = SyncDaemon> {
    (
        prop_oneof![Just(DaemonState::Master), Just(DaemonState::Backup)],
        "[a-z][a-z0-9.]{0,14}".prop_map(|n| InterfaceName::new(n).expect("valid")),
        any::<u32>(),
        proptest::option::of(any::<NonZeroU16>()),
        proptest::option::of(multicast()),
        proptest::option::of(any::<NonZeroU16>()),
        proptest::option::of(any::<NonZeroU8>()),
    )
        .prop_map(
            |(state, interface, sync_id, max_len, group, port, ttl)| SyncDaemon {
                state,
                interface,
                sync_id,
                max_len,
                group,
                port,
                ttl,
            },
        )
}

fn timeouts() -> impl Strategy<Value = Timeouts> {
    let t = || proptest::option::of(any::<NonZeroU32>());
    (t(), t(), t()).prop_map(|(tcp, tcp_fin, udp)| Timeouts { tcp, tcp_fin, udp })
}

fn operation() -> impl Strategy<Value = Operation> {
    let with_dest = || service_key().prop_flat_map(|k| (Just(k), destination(k.family())));
    let dest_key = (
        service_key(),
        prop_oneof![ip_of(AddressFamily::Ipv4), ip_of(AddressFamily::Ipv6)],
        any::<u16>(),
    )
        .prop_map(|(k, addr, port)| Operation::DeleteDestination(k, DestinationKey { addr, port }));
    prop_oneof![
        service().prop_map(Operation::AddService),
        service().prop_map(Operation::EditService),
        service_key().prop_map(Operation::DeleteService),
        with_dest().prop_map(|(k, d)| Operation::AddDestination(k, d)),
        with_dest().prop_map(|(k, d)| Operation::EditDestination(k, d)),
        dest_key,
        Just(Operation::Flush),
        proptest::option::of(service_key()).prop_map(Operation::ZeroCounters),
        timeouts().prop_map(Operation::SetTimeouts),
        daemon().prop_map(Operation::StartDaemon),
        prop_oneof![Just(DaemonState::Master), Just(DaemonState::Backup)]
            .prop_map(Operation::StopDaemon),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn operations_round_trip(op in operation()) {
        let msg = op.to_message(&KernelFeatures::all()).expect("valid operation");
        let back = wire(&msg);
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(Operation::from_message(&back).expect("decodes"), op);
    }

    #[test]
    fn service_replies_round_trip(service in service(), stats in stats(), hashed in any::<bool>()) {
        let flags = ServiceFlags(service_flags(&service) | if hashed { ServiceFlags::HASHED } else { 0 });
        let entry = ServiceEntry { service, flags, stats };
        let msg = wire(&service_reply(&entry, &KernelFeatures::all()));
        prop_assert_eq!(ServiceEntry::try_from(&msg).expect("decodes"), entry.clone());
        // The listing decoder reads the same entry and learns the same features.
        for features in [KernelFeatures::all(), KernelFeatures::baseline()] {
            let reply = service_reply(&entry, &features);
            let ListingMessage::Service(fields) = wire_listed(&reply) else {
                panic!("a service reply is listed as a service");
            };
            prop_assert_eq!(fields.features(), codec::observe_features(&reply, KernelFeatures::baseline()));
            let plain = codec::decode_service(&wire(&reply)).map_err(|e| e.to_string());
            prop_assert_eq!(fields.finish().map_err(|e| e.to_string()), plain);
        }
    }

    #[test]
    fn service_replies_fall_back_to_32_bit_stats(service in service(), stats in stats()) {
        let entry = ServiceEntry { flags: ServiceFlags(service_flags(&service)), service, stats };
        let msg = wire(&service_reply(&entry, &KernelFeatures::baseline()));
        let got = codec::decode_service(&msg).expect("decodes");
        let t = |v: u64| u64::from(v as u32);
        let expected = Stats {
            connections: t(stats.connections),
            packets_in: t(stats.packets_in),
            packets_out: t(stats.packets_out),
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
            rates: Rates {
                cps: t(stats.rates.cps),
                in_pps: t(stats.rates.in_pps),
                out_pps: t(stats.rates.out_pps),
                in_bps: t(stats.rates.in_bps),
                out_bps: t(stats.rates.out_bps),
            },
        };
        prop_assert_eq!(got.stats, expected);
        prop_assert_eq!(got.service, entry.service);
    }

    #[test]
    fn destination_replies_round_trip(
        (family, destination) in family().prop_flat_map(|f| (Just(f), destination(f))),
        conns in any::<[u32; 3]>(),
        stats in stats(),
        reported in any::<bool>(),
    ) {
        // Without ADDR_FAMILY (< 3.18) a destination always has its service's family.
        let reported = reported || destination.family() != family;
        let entry = DestinationEntry {
            destination,
            reported_family: reported.then(|| destination.family()),
            active_connections: conns[0],
            inactive_connections: conns[1],
            persistent_connections: conns[2],
            stats,
        };
        let msg = wire(&destination_reply(&entry, &KernelFeatures::all()));
        prop_assert_eq!(codec::decode_destination(&msg, family).expect("decodes"), entry);
        // The listing decoder reads the same entry and learns the same features.
        for features in [KernelFeatures::all(), KernelFeatures::baseline()] {
            let reply = destination_reply(&entry, &features);
            let ListingMessage::Destination(fields) = wire_listed(&reply) else {
                panic!("a destination reply is listed as a destination");
            };
            prop_assert_eq!(fields.features(), codec::observe_features(&reply, KernelFeatures::baseline()));
            let plain = codec::decode_destination(&wire(&reply), family).map_err(|e| e.to_string());
            prop_assert_eq!(fields.finish(family).map_err(|e| e.to_string()), plain);
        }
    }

    #[test]
    fn daemon_replies_round_trip(d in daemon()) {
        let msg = wire(&daemon_reply(&d));
        prop_assert_eq!(SyncDaemon::try_from(&msg).expect("decodes"), d);
    }

    #[test]
    fn info_replies_round_trip(code in 0u32..=0xff_ffff, size in any::<u32>()) {
        let info = Info { version: Version::from_code(code), connection_table_size: size };
        let msg = wire(&info_reply(&info));
        prop_assert_eq!(Info::try_from(&msg).expect("decodes"), info);
    }

    #[test]
    fn config_replies_round_trip(t in timeouts()) {
        let msg = wire(&config_reply(&t));
        prop_assert_eq!(Timeouts::try_from(&msg).expect("decodes"), t);
    }

    #[test]
    fn read_requests_survive_the_wire(k in service_key()) {
        for r in [
            Request::GetService(k),
            Request::DumpServices,
            Request::DumpDestinations(k),
            Request::DumpDaemons,
            Request::GetInfo,
            Request::GetConfig,
        ] {
            let msg = r.to_message();
            prop_assert_eq!(wire(&msg), msg);
        }
    }

    #[test]
    fn scheduler_names_round_trip(s in scheduler()) {
        let back = Scheduler::from_name_and_flags(s.name(), s.flags()).expect("valid");
        prop_assert_eq!(back, s.clone());
        let parsed: Scheduler = s.to_string().parse().expect("valid");
        prop_assert_eq!(parsed.name(), s.name());
    }
}
