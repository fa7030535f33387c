//! What the table's sets hold, what they should hold for a desired state, and the changes
//! from one to the other: the netfilter counterpart of [`mapping`](crate::mapping).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipvs::model::Protocol;

use super::table::{self, ServicePort};
use super::transport::{Change, NftError, NftSocket};
use crate::desired::DesiredState;
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::NfTablesMessage;

/// The content of the table's sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elements {
    /// The VIPs bound on the dummy interface.
    pub vips: BTreeSet<IpAddr>,
    /// The VIP ports Services define.
    pub ports: BTreeSet<ServicePort>,
}

impl Elements {
    /// What the sets hold for `desired` on a node whose other addresses are
    /// `node_addresses`: the VIPs to bind (a desired address the node already has is not a
    /// VIP: its ports are the node's), and every port of a virtual server on one of them.
    pub fn wanted(desired: &DesiredState, node_addresses: &BTreeSet<IpAddr>) -> Self {
        let vips: BTreeSet<IpAddr> = desired
            .vips()
            .into_iter()
            .filter(|a| !node_addresses.contains(a))
            .collect();
        let ports = desired
            .virtual_servers()
            .keys()
            .filter(|k| vips.contains(&k.addr))
            .map(|k| ServicePort {
                addr: k.addr,
                protocol: k.protocol,
                port: k.port,
            })
            .collect();
        Self { vips, ports }
    }

    /// The changes that make the sets hold `wanted` instead of `self`: nothing when they are
    /// equal, else one message per set and direction.
    pub fn changes_to(&self, wanted: &Elements) -> Vec<Change> {
        let gone_vips: Vec<IpAddr> = self.vips.difference(&wanted.vips).copied().collect();
        let gone_ports: Vec<ServicePort> = self.ports.difference(&wanted.ports).copied().collect();
        let new_vips: Vec<IpAddr> = wanted.vips.difference(&self.vips).copied().collect();
        let new_ports: Vec<ServicePort> = wanted.ports.difference(&self.ports).copied().collect();
        let mut changes = table::elements(&gone_vips, &gone_ports, false);
        changes.extend(table::elements(&new_vips, &new_ports, true));
        changes
    }

    /// Takes in one key of a set as the kernel lists it; a key of the wrong length for its
    /// set, or of a set the table does not have, is ignored (and so deleted by nothing: it
    /// was not written by this table's code).
    pub(super) fn insert_key(&mut self, set: &str, key: &[u8]) -> bool {
        let decoded = match (set, key.len()) {
            ("vips-v4", 4) | ("vips-v6", 16) => address(key).map(|a| self.vips.insert(a)),
            ("service-ports-v4", 12) | ("service-ports-v6", 24) => {
                let (addr, rest) = key.split_at(key.len() - 8);
                address(addr).map(|addr| {
                    self.ports.insert(ServicePort {
                        addr,
                        protocol: Protocol::from_number(u16::from(rest[0])),
                        port: u16::from_be_bytes([rest[4], rest[5]]),
                    })
                })
            }
            _ => None,
        };
        decoded.unwrap_or(false)
    }

    /// How many elements differ between `self` and `other`.
    pub fn difference_len(&self, other: &Elements) -> usize {
        self.vips.symmetric_difference(&other.vips).count()
            + self.ports.symmetric_difference(&other.ports).count()
    }

    /// Applies a set-element change as the kernel would; `false` when `change` is not one
    /// (or names a key of the wrong length).
    pub(crate) fn apply(&mut self, change: &Change) -> bool {
        let (add, message) = match change.message.as_nftables() {
            Some(NfTablesMessage::NewSetElement(m)) => (true, m),
            Some(NfTablesMessage::DeleteSetElement(m)) => (false, m),
            _ => return false,
        };
        let (Some(set), keys) = table::element_keys(message) else {
            return false;
        };
        let mut one = Elements::default();
        for key in keys {
            if !one.insert_key(set, key) {
                return false;
            }
        }
        if add {
            self.vips.extend(one.vips);
            self.ports.extend(one.ports);
        } else {
            self.vips.retain(|v| !one.vips.contains(v));
            self.ports.retain(|p| !one.ports.contains(p));
        }
        true
    }

    /// Reads what the table's sets hold; `None` when the node has no such table.
    pub fn read(nft: &mut NftSocket) -> Result<Option<Self>, NftError> {
        let ours = nft
            .tables()?
            .iter()
            .any(|(family, name)| *family == NetfilterProtoFamily::Inet && name == table::TABLE);
        if !ours {
            return Ok(None);
        }
        let mut elements = Elements::default();
        for set in table::SETS {
            for key in nft.set_keys(NetfilterProtoFamily::Inet, table::TABLE, set)? {
                elements.insert_key(set, &key);
            }
        }
        Ok(Some(elements))
    }
}

/// An address from its 4 or 16 bytes.
fn address(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|v6| IpAddr::V6(Ipv6Addr::from(v6)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use crate::{NodeInfo, ProxyConfig};

    fn port(addr: &str, protocol: Protocol, port: u16) -> ServicePort {
        ServicePort {
            addr: addr.parse().unwrap(),
            protocol,
            port,
        }
    }

    fn ip(addr: &str) -> IpAddr {
        addr.parse().unwrap()
    }

    /// Applies `changes` to `elements` as the kernel would.
    fn apply(elements: &mut Elements, changes: &[Change]) {
        for change in changes {
            assert!(elements.apply(change), "{change:?}");
        }
    }

    #[test]
    fn the_sets_hold_the_vips_and_their_ports_not_the_nodes_addresses() {
        let mut web = testing::service("default", "web", "10.96.0.10");
        let spec = web.spec.as_mut().unwrap();
        spec.type_ = Some("NodePort".into());
        // One external IP the node has itself: its port is the node's, not a VIP's.
        spec.external_ips = Some(vec!["203.0.113.5".into(), "192.168.1.10".into()]);
        spec.ports.as_mut().unwrap()[0].node_port = Some(30080);
        let dns = testing::service("kube-system", "dns", "fd00::a");
        let mut node = NodeInfo::new("node-a");
        node.addresses = vec![ip("192.168.1.10")];
        let desired = DesiredState::compute(
            &[web, dns],
            &[testing::slice("default", "web-1", "web", &["10.0.0.1"])],
            &node,
            &ProxyConfig::default(),
        );
        let node_addresses = BTreeSet::from([ip("192.168.1.10")]);
        let wanted = Elements::wanted(&desired, &node_addresses);
        assert_eq!(
            wanted.vips,
            BTreeSet::from([ip("10.96.0.10"), ip("203.0.113.5"), ip("fd00::a")])
        );
        assert_eq!(
            wanted.ports,
            BTreeSet::from([
                port("10.96.0.10", Protocol::Tcp, 80),
                port("203.0.113.5", Protocol::Tcp, 80),
                port("fd00::a", Protocol::Tcp, 80),
            ]),
            "no NodePort and no port of the node's own address"
        );
    }

    #[test]
    fn the_changes_between_two_contents_turn_one_into_the_other() {
        let have = Elements {
            vips: BTreeSet::from([ip("10.96.0.1"), ip("10.96.0.2"), ip("fd00::1")]),
            ports: BTreeSet::from([
                port("10.96.0.1", Protocol::Tcp, 443),
                port("10.96.0.2", Protocol::Udp, 53),
                port("fd00::1", Protocol::Sctp, 3868),
            ]),
        };
        let want = Elements {
            vips: BTreeSet::from([ip("10.96.0.1"), ip("10.96.0.3"), ip("fd00::2")]),
            ports: BTreeSet::from([
                port("10.96.0.1", Protocol::Tcp, 443),
                port("10.96.0.1", Protocol::Tcp, 80),
                port("10.96.0.3", Protocol::Udp, 53),
                port("fd00::2", Protocol::Sctp, 3868),
            ]),
        };
        assert!(
            have.changes_to(&have).is_empty(),
            "nothing to do, no message"
        );
        // A large set goes in messages of a bounded size.
        let many = Elements {
            vips: (0..2500u32)
                .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i)))
                .collect(),
            ports: BTreeSet::new(),
        };
        let changes = Elements::default().changes_to(&many);
        assert_eq!(changes.len(), 3);
        let mut got = Elements::default();
        apply(&mut got, &changes);
        assert_eq!(got, many);
        let changes = have.changes_to(&want);
        // Deletions and additions, each set once per direction.
        assert_eq!(changes.len(), 8);
        let mut got = have.clone();
        apply(&mut got, &changes);
        assert_eq!(got, want);
        let mut back = want.clone();
        apply(&mut back, &want.changes_to(&have));
        assert_eq!(back, have);
    }

    #[test]
    fn keys_of_the_wrong_length_or_set_are_ignored() {
        let mut elements = Elements::default();
        assert!(!elements.insert_key("vips-v4", &[10, 96, 0]));
        assert!(!elements.insert_key("vips-v6", &[0; 4]));
        assert!(!elements.insert_key("service-ports-v4", &[0; 24]));
        assert!(!elements.insert_key("someone-elses", &[10, 96, 0, 1]));
        assert_eq!(elements, Elements::default());
        assert!(elements.insert_key(
            "service-ports-v4",
            &[10, 96, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0]
        ));
        assert_eq!(
            elements.ports,
            BTreeSet::from([port("10.96.0.1", Protocol::Udp, 53)])
        );
    }

    /// Needs a network namespace and nf_tables: run in the VM by `cargo xtask test`.
    mod real_kernel {
        use std::process::Command;

        use integration::Netns;

        use super::*;

        #[test]
        #[ignore = "real kernel: run by cargo xtask test"]
        fn the_sets_read_back_as_written_and_drift_is_seen() {
            Netns::new("nft-elements")
                .expect("a fresh namespace")
                .run(|| {
                    let mut nft = NftSocket::open().unwrap();
                    assert_eq!(Elements::read(&mut nft).unwrap(), None, "no table yet");
                    let want = Elements {
                        vips: BTreeSet::from([ip("10.96.0.10"), ip("fd00::a")]),
                        ports: BTreeSet::from([
                            port("10.96.0.10", Protocol::Tcp, 80),
                            port("10.96.0.10", Protocol::Udp, 53),
                            port("fd00::a", Protocol::Sctp, 3868),
                        ]),
                    };
                    let mut changes = table::create();
                    changes.extend(Elements::default().changes_to(&want));
                    nft.transact(&changes).unwrap();
                    let read = Elements::read(&mut nft).unwrap().unwrap();
                    assert_eq!(read, want);
                    assert!(
                        read.changes_to(&want).is_empty(),
                        "a restart changes nothing"
                    );

                    // Someone deletes an element behind our back: the read shows it.
                    let status = Command::new("nft")
                        .args(["delete element inet ipvs-proxy vips-v4 { 10.96.0.10 }"])
                        .status()
                        .expect("nft runs");
                    assert!(status.success());
                    let drifted = Elements::read(&mut nft).unwrap().unwrap();
                    assert!(!drifted.vips.contains(&ip("10.96.0.10")));
                    nft.transact(&drifted.changes_to(&want)).unwrap();
                    assert_eq!(Elements::read(&mut nft).unwrap().unwrap(), want);
                })
                .expect("the test body ran");
        }

        #[test]
        #[ignore = "real kernel: run by cargo xtask test"]
        fn a_cold_start_of_thousands_of_services_is_one_transaction() {
            Netns::new("nft-large")
                .expect("a fresh namespace")
                .run(|| {
                    // 4,000 VIPs with two ports each: a datagram larger than a default send
                    // buffer, and sets larger than one attribute's 64 KiB.
                    let vips: Vec<IpAddr> = (0..4_000u32)
                        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i)))
                        .collect();
                    let want = Elements {
                        ports: vips
                            .iter()
                            .flat_map(|a| {
                                [Protocol::Tcp, Protocol::Udp].map(|protocol| ServicePort {
                                    addr: *a,
                                    protocol,
                                    port: 53,
                                })
                            })
                            .collect(),
                        vips: vips.into_iter().collect(),
                    };
                    let mut nft = NftSocket::open().unwrap();
                    let mut changes = table::create();
                    changes.extend(Elements::default().changes_to(&want));
                    nft.transact(&changes).unwrap();
                    let read = Elements::read(&mut nft).unwrap().unwrap();
                    // Compared by counts and differences: the sets are too large to print.
                    let missing = want.difference_len(&read);
                    assert_eq!(
                        (read.vips.len(), read.ports.len(), missing),
                        (want.vips.len(), want.ports.len(), 0)
                    );
                })
                .expect("the test body ran");
        }
    }
}
