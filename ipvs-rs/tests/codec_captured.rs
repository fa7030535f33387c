//! Real kernel traffic: `tests/fixtures/kernel-*/` holds what ipvsadm sent to and received
//! from a Debian 6.1 kernel (see `fixtures/README.md`). Every IPVS message must parse and
//! decode; the table `capture.sh` programmed must come back as the model says; ipvsadm's own
//! requests must decode to operations that this crate re-encodes to the same meaning.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::{NonZeroU16, NonZeroU32};
use std::path::{Path, PathBuf};

use ipvs::codec::{self, IpvsCommand, IpvsMessage, Operation};
use ipvs::model::*;
use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;

/// nlctrl's fixed family id: family look-ups, not IPVS messages.
const GENL_ID_CTRL: u16 = 0x10;

fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter_map(|c| c.to_digit(16)))
        .map(|d| d as u8)
        .collect();
    digits
        .chunks(2)
        .map(|p| p.iter().fold(0u8, |acc, d| (acc << 4) | d))
        .collect()
}

fn hex_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            hex_files(&p, out);
        } else if p.extension().and_then(|e| e.to_str()) == Some("hex") {
            out.push(p);
        }
    }
}

/// Every IPVS message of every fixture, with its file name.
fn captured() -> Vec<(String, IpvsMessage)> {
    let mut files = Vec::new();
    hex_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &mut files,
    );
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let bytes = unhex(&text);
        let mut rest = bytes.as_slice();
        while rest.len() >= 16 {
            let buf = NetlinkBuffer::new_checked(rest).unwrap_or_else(|e| panic!("{name}: {e}"));
            let len = buf.length() as usize;
            let kind = buf.message_type();
            if kind != GENL_ID_CTRL {
                let msg = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(&rest[..len])
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                if let NetlinkPayload::InnerMessage(g) = msg.payload {
                    out.push((name.clone(), g.payload));
                }
            }
            rest = &rest[((len + 3) & !3).min(rest.len())..];
        }
    }
    out
}

#[test]
fn every_captured_message_decodes() {
    let msgs = captured();
    if msgs.is_empty() {
        return; // no fixtures in this checkout
    }
    for (name, m) in &msgs {
        let r = match m.command {
            _ if name.contains("send") => match m.command {
                IpvsCommand::GetService
                | IpvsCommand::GetDest
                | IpvsCommand::GetDaemon
                | IpvsCommand::GetInfo
                | IpvsCommand::GetConfig => Ok(()),
                _ => Operation::from_message(m).map(drop),
            },
            IpvsCommand::NewService => codec::decode_service(m).map(drop),
            IpvsCommand::NewDest => codec::decode_destination(m, AddressFamily::Ipv4).map(drop),
            IpvsCommand::NewDaemon => codec::decode_daemon(m).map(drop),
            IpvsCommand::SetInfo => codec::decode_info(m).map(drop),
            IpvsCommand::SetConfig => codec::decode_timeouts(m).map(drop),
            _ => Ok(()),
        };
        r.unwrap_or_else(|e| panic!("{name}: {e}: {m:?}"));
    }
}

#[test]
fn the_captured_table_decodes_as_programmed() {
    let msgs = captured();
    if msgs.is_empty() {
        return;
    }
    let services: Vec<ServiceEntry> = msgs
        .iter()
        .filter(|(n, m)| n.contains("recv") && m.command == IpvsCommand::NewService)
        .map(|(_, m)| codec::decode_service(m).unwrap())
        .collect();
    let find = |key: ServiceKey| {
        services
            .iter()
            .find(|s| s.service.key == key)
            .unwrap_or_else(|| panic!("{key} not in {services:#?}"))
    };
    let wrr = find(ServiceKey::tcp(Ipv4Addr::new(198, 51, 100, 10), 80));
    assert_eq!(wrr.service.scheduler, Scheduler::WeightedRoundRobin);
    assert!(wrr.flags.is_hashed());
    let sh = find(ServiceKey::udp(
        "2001:db8::10".parse::<Ipv6Addr>().unwrap(),
        53,
    ));
    assert_eq!(
        sh.service.scheduler,
        Scheduler::SourceHashing {
            fallback: true,
            port: true
        }
    );
    assert_eq!(
        sh.service.persistence,
        Some(Persistence {
            timeout_secs: 300,
            netmask: PersistenceNetmask::V6(Ipv6PrefixLen::new(64).unwrap())
        })
    );
    let fw = find(ServiceKey::Fwmark {
        family: AddressFamily::Ipv4,
        mark: NonZeroU32::new(42).unwrap(),
    });
    assert_eq!(fw.service.scheduler, Scheduler::RoundRobin);

    let dests: Vec<DestinationEntry> = msgs
        .iter()
        .filter(|(n, m)| n.contains("recv") && m.command == IpvsCommand::NewDest)
        .map(|(_, m)| {
            let e = codec::decode_destination(m, AddressFamily::Ipv4).unwrap();
            assert!(e.reported_family.is_some(), "6.1 reports ADDR_FAMILY");
            e
        })
        .collect();
    let dest = |a: IpAddr| {
        dests
            .iter()
            .find(|d| d.destination.addr == a)
            .unwrap_or_else(|| panic!("{a} not in {dests:#?}"))
    };
    let masq = dest(Ipv4Addr::new(203, 0, 113, 2).into());
    assert_eq!(masq.destination.forwarding, Forwarding::Masquerade);
    assert_eq!(masq.destination.port, 8080);
    assert_eq!(masq.destination.weight.get(), 3);
    assert_eq!(
        (
            masq.destination.thresholds.upper(),
            masq.destination.thresholds.lower()
        ),
        (100, 10)
    );
    assert_eq!(
        dest(Ipv4Addr::new(203, 0, 113, 6).into())
            .destination
            .forwarding,
        Forwarding::DirectRouting
    );
    assert_eq!(
        dest(Ipv4Addr::new(203, 0, 113, 10).into())
            .destination
            .forwarding,
        Forwarding::Tunnel(Tunnel::Gue {
            port: NonZeroU16::new(6080).unwrap(),
            checksum: false,
            remote_checksum: false
        })
    );
    assert_eq!(
        dest(Ipv4Addr::new(203, 0, 113, 11).into())
            .destination
            .forwarding,
        Forwarding::Tunnel(Tunnel::Gre { checksum: true })
    );
    assert_eq!(
        dest("2001:db8::2".parse::<Ipv6Addr>().unwrap().into())
            .destination
            .port,
        5353
    );

    let features = msgs
        .iter()
        .filter(|(n, _)| n.contains("recv"))
        .fold(KernelFeatures::baseline(), |f, (_, m)| {
            codec::observe_features(m, f)
        });
    assert_eq!(
        features,
        KernelFeatures::all(),
        "a 6.1 kernel shows every feature"
    );
}

#[test]
fn captured_daemon_and_timeouts() {
    let msgs = captured();
    if msgs.is_empty() {
        return;
    }
    let daemons: Vec<SyncDaemon> = msgs
        .iter()
        .filter(|(n, m)| n.contains("recv") && m.command == IpvsCommand::NewDaemon)
        .map(|(_, m)| codec::decode_daemon(m).unwrap())
        .collect();
    let master = daemons
        .iter()
        .find(|d| d.state == DaemonState::Master)
        .expect("master daemon");
    assert_eq!(master.interface.as_str(), "lo");
    assert_eq!(master.sync_id, 7);
    assert_eq!(
        master.port,
        NonZeroU16::new(8848),
        "the kernel's default port, host order"
    );
    let t = msgs
        .iter()
        .find(|(n, m)| n.contains("recv") && m.command == IpvsCommand::SetConfig)
        .map(|(_, m)| codec::decode_timeouts(m).unwrap())
        .expect("timeouts reply");
    assert_eq!(
        t,
        Timeouts {
            tcp: NonZeroU32::new(900),
            tcp_fin: NonZeroU32::new(120),
            udp: NonZeroU32::new(300)
        }
    );
}

#[test]
fn ipvsadm_requests_mean_what_we_encode() {
    let msgs = captured();
    for (name, m) in msgs.iter().filter(|(n, _)| n.contains("send")) {
        let Ok(op) = Operation::from_message(m) else {
            continue;
        };
        // Re-encoding ipvsadm's request must carry the same operation.
        let ours = op
            .to_message(&KernelFeatures::all())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(Operation::from_message(&ours).unwrap(), op, "{name}");
        if let Operation::AddService(s) = &op {
            assert_eq!(
                s.key,
                ServiceKey::udp(Ipv4Addr::new(198, 51, 100, 11), 443),
                "{name}"
            );
            assert_eq!(s.scheduler, Scheduler::LeastConnection);
            assert_eq!(s.persistence.map(|p| p.timeout_secs), Some(600));
            assert!(s.one_packet);
        }
    }
}
