//! What the table's sets hold, what they should hold for a desired state, and the changes
//! from one to the other: the netfilter counterpart of [`mapping`](crate::mapping).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use ipvs::model::Protocol;

use super::table::{self, ServicePort, SetKind};
use super::transport::Change;
use crate::desired::DesiredState;
use crate::model::{Exposure, VirtualServer};
use netlink_packet_netfilter::nftables::NfTablesMessage;

/// The content of the table's sets (see [`table`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elements {
    /// The VIPs bound on the dummy interface (`vips`).
    pub vips: BTreeSet<IpAddr>,
    /// The VIP ports Services define (`service-ports`).
    pub ports: BTreeSet<ServicePort>,
    /// The ports of NodePorts, external and load-balancer IPs whose traffic policy is
    /// `Cluster` (`masquerade-ports`).
    pub masquerade: BTreeSet<ServicePort>,
    /// The ClusterIP ports (`cluster-ports`).
    pub cluster: BTreeSet<ServicePort>,
    /// The addresses of the node's endpoints (`hairpin`).
    pub hairpin: BTreeSet<IpAddr>,
    /// The load-balancer ports that let only some sources through (`firewall-ports`).
    pub firewall: BTreeSet<ServicePort>,
    /// The sources each of them lets through (`firewall-allow`).
    pub allowed: BTreeSet<(ServicePort, IpNet)>,
}

impl Elements {
    /// What the sets hold for `desired` on a node whose other addresses are
    /// `node_addresses`: the VIPs to bind (a desired address the node already has is not a
    /// VIP: its ports are the node's), and the ports and endpoints of every virtual server.
    pub fn wanted(desired: &DesiredState, node_addresses: &BTreeSet<IpAddr>) -> Self {
        let mut out = Self {
            vips: desired
                .vips()
                .into_iter()
                .filter(|a| !node_addresses.contains(a))
                .collect(),
            ..Self::default()
        };
        for vs in desired.virtual_servers().values() {
            let bound = out.vips.contains(&vs.key.addr);
            out.add_virtual_server(vs, bound, node_addresses);
        }
        out
    }

    /// Adds the elements of `vs`, whose address is a bound VIP when `bound`, on a node with
    /// the addresses `node_addresses`.
    pub fn add_virtual_server(
        &mut self,
        vs: &VirtualServer,
        bound: bool,
        node_addresses: &BTreeSet<IpAddr>,
    ) {
        let port = ServicePort::of(vs);
        if bound {
            self.ports.insert(port);
        }
        if vs.exposure.is_external() && !vs.local_policy {
            self.masquerade.insert(port);
        }
        if vs.exposure == Exposure::ClusterIp {
            self.cluster.insert(port);
        }
        self.hairpin.extend(
            vs.real_servers
                .iter()
                .filter(|rs| rs.local)
                .map(|rs| rs.addr),
        );
        if let Some(ranges) = &vs.source_ranges {
            self.firewall.insert(port);
            // The set refuses a range inside another of the same port: only the widest of
            // nested ranges is written (two CIDRs nest or are apart). A range of the other
            // family could never match (the desired state has none).
            let mut widest: Vec<IpNet> = ranges
                .iter()
                .filter(|r| r.addr().is_ipv4() == vs.key.addr.is_ipv4())
                .copied()
                .collect();
            widest.sort_by_key(IpNet::prefix_len);
            let mut kept: Vec<IpNet> = Vec::with_capacity(widest.len());
            for range in widest {
                if !kept.iter().any(|k| k.contains(&range)) {
                    kept.push(range);
                }
            }
            // The node connects to the load balancer from its VIP: let it through when one
            // of the node's addresses is in a range, as kube-proxy does.
            let node_in_range = node_addresses
                .iter()
                .any(|a| kept.iter().any(|r| r.contains(a)));
            if node_in_range && !kept.iter().any(|r| r.contains(&vs.key.addr)) {
                kept.push(IpNet::from(vs.key.addr));
            }
            self.allowed.extend(kept.into_iter().map(|r| (port, r)));
        }
    }

    /// The elements of `self` that concern the virtual server `port` or the endpoint
    /// addresses `endpoints`: the part of a view an incremental change replaces.
    pub fn part(&self, port: ServicePort, endpoints: impl Iterator<Item = IpAddr>) -> Self {
        let pick = |set: &BTreeSet<ServicePort>| {
            set.contains(&port)
                .then_some(port)
                .into_iter()
                .collect::<BTreeSet<_>>()
        };
        // The smallest net of all (`0.0.0.0/0`): the port's ranges follow it.
        let first = (port, IpNet::V4(ipnet::Ipv4Net::default()));
        Self {
            vips: BTreeSet::new(),
            ports: pick(&self.ports),
            masquerade: pick(&self.masquerade),
            cluster: pick(&self.cluster),
            hairpin: endpoints.filter(|a| self.hairpin.contains(a)).collect(),
            firewall: pick(&self.firewall),
            allowed: self
                .allowed
                .range(first..)
                .take_while(|(p, _)| *p == port)
                .copied()
                .collect(),
        }
    }

    /// Adds every element of `other`.
    pub fn extend(&mut self, other: Elements) {
        self.vips.extend(other.vips);
        self.ports.extend(other.ports);
        self.masquerade.extend(other.masquerade);
        self.cluster.extend(other.cluster);
        self.hairpin.extend(other.hairpin);
        self.firewall.extend(other.firewall);
        self.allowed.extend(other.allowed);
    }

    /// Removes every element of `other`.
    pub fn remove(&mut self, other: &Elements) {
        self.vips.retain(|a| !other.vips.contains(a));
        self.ports.retain(|p| !other.ports.contains(p));
        self.masquerade.retain(|p| !other.masquerade.contains(p));
        self.cluster.retain(|p| !other.cluster.contains(p));
        self.hairpin.retain(|a| !other.hairpin.contains(a));
        self.firewall.retain(|p| !other.firewall.contains(p));
        self.allowed.retain(|a| !other.allowed.contains(a));
    }

    /// The sets of ports, by kind.
    fn port_sets(&self) -> [(SetKind, &BTreeSet<ServicePort>); 4] {
        [
            (SetKind::ServicePorts, &self.ports),
            (SetKind::MasqueradePorts, &self.masquerade),
            (SetKind::ClusterPorts, &self.cluster),
            (SetKind::FirewallPorts, &self.firewall),
        ]
    }

    /// The changes that make the sets hold `wanted` instead of `self`: nothing when they are
    /// equal, else one message per set and direction (more for a large set).
    pub fn changes_to(&self, wanted: &Elements) -> Vec<Change> {
        let mut changes = Vec::new();
        for (from, to, add) in [(self, wanted, false), (wanted, self, true)] {
            let addresses = |a: &BTreeSet<IpAddr>, b: &BTreeSet<IpAddr>| -> Vec<IpAddr> {
                a.difference(b).copied().collect()
            };
            changes.extend(table::address_elements(
                SetKind::Vips,
                &addresses(&from.vips, &to.vips),
                add,
            ));
            for ((kind, a), (_, b)) in from.port_sets().into_iter().zip(to.port_sets()) {
                let ports: Vec<ServicePort> = a.difference(b).copied().collect();
                changes.extend(table::port_elements(kind, &ports, add));
            }
            changes.extend(table::address_elements(
                SetKind::Hairpin,
                &addresses(&from.hairpin, &to.hairpin),
                add,
            ));
            let allowed: Vec<(ServicePort, IpNet)> =
                from.allowed.difference(&to.allowed).copied().collect();
            changes.extend(table::allow_elements(&allowed, add));
        }
        changes
    }

    /// Takes in one key of a set as the kernel lists it; a key of the wrong length for its
    /// set, or of a set the table does not have, is ignored (and so deleted by nothing: it
    /// was not written by this table's code).
    pub(super) fn insert_key(&mut self, set: &str, key: &[u8]) -> bool {
        let Some((kind, family)) = SetKind::of_name(set) else {
            return false;
        };
        let len = family.address_len() as usize;
        let decoded = match kind {
            SetKind::Vips if key.len() == len => address(key).map(|a| self.vips.insert(a)),
            SetKind::Hairpin if key.len() == 2 * len && key[..len] == key[len..] => {
                address(&key[..len]).map(|a| self.hairpin.insert(a))
            }
            SetKind::ServicePorts
            | SetKind::MasqueradePorts
            | SetKind::ClusterPorts
            | SetKind::FirewallPorts
                if key.len() == len + 8 =>
            {
                let set = match kind {
                    SetKind::ServicePorts => &mut self.ports,
                    SetKind::MasqueradePorts => &mut self.masquerade,
                    SetKind::ClusterPorts => &mut self.cluster,
                    _ => &mut self.firewall,
                };
                port(key).map(|p| set.insert(p))
            }
            // A range's first key, then its last: the same port, a range's two ends.
            SetKind::FirewallAllow if key.len() == 2 * (2 * len + 8) => {
                let (first, last) = key.split_at(key.len() / 2);
                let (port_key, start) = first.split_at(len + 8);
                let (same_port, end) = last.split_at(len + 8);
                match (port(port_key), address(start), address(end)) {
                    (Some(p), Some(start), Some(end)) if port_key == same_port => {
                        range(start, end).map(|r| self.allowed.insert((p, r)))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        decoded.unwrap_or(false)
    }

    /// How many elements differ between `self` and `other`.
    pub fn difference_len(&self, other: &Elements) -> usize {
        self.vips.symmetric_difference(&other.vips).count()
            + self.ports.symmetric_difference(&other.ports).count()
            + self
                .masquerade
                .symmetric_difference(&other.masquerade)
                .count()
            + self.cluster.symmetric_difference(&other.cluster).count()
            + self.hairpin.symmetric_difference(&other.hairpin).count()
            + self.firewall.symmetric_difference(&other.firewall).count()
            + self.allowed.symmetric_difference(&other.allowed).count()
    }

    /// How many elements the sets hold.
    pub fn len(&self) -> usize {
        self.difference_len(&Elements::default())
    }

    /// Whether the sets are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
            if !one.insert_key(set, &key) {
                return false;
            }
        }
        if add {
            self.extend(one);
        } else {
            self.remove(&one);
        }
        true
    }
}

impl ServicePort {
    /// The port of a virtual server.
    pub fn of(vs: &VirtualServer) -> Self {
        ServicePort {
            addr: vs.key.addr,
            protocol: vs.key.protocol,
            port: vs.key.port,
        }
    }
}

/// A port from its key (address, protocol, port, in whole registers).
fn port(key: &[u8]) -> Option<ServicePort> {
    let (addr, rest) = key.split_at_checked(key.len().checked_sub(8)?)?;
    Some(ServicePort {
        addr: address(addr)?,
        protocol: Protocol::from_number(u16::from(rest[0])),
        port: u16::from_be_bytes([rest[4], rest[5]]),
    })
}

/// The CIDR whose first and last addresses are `start` and `end`; `None` when they do not
/// bound one (a range this table's code did not write).
fn range(start: IpAddr, end: IpAddr) -> Option<IpNet> {
    let (start_bits, end_bits, width) = match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) => (u128::from(u32::from(s)), u128::from(u32::from(e)), 32),
        (IpAddr::V6(s), IpAddr::V6(e)) => (u128::from(s), u128::from(e), 128),
        _ => return None,
    };
    let host = start_bits ^ end_bits;
    let prefix = u8::try_from(width - (128 - host.leading_zeros())).ok()?;
    let net = IpNet::new(start, prefix).ok()?;
    (net.network() == start && net.broadcast() == end).then_some(net)
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

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
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
        let mut shop = web.clone();
        shop.metadata.name = Some("shop".into());
        let spec = shop.spec.as_mut().unwrap();
        spec.cluster_ip = Some("10.96.0.11".into());
        spec.cluster_ips = Some(vec!["10.96.0.11".into()]);
        spec.external_ips = None;
        spec.external_traffic_policy = Some("Local".into());
        spec.ports.as_mut().unwrap()[0].node_port = Some(30081);
        let dns = testing::service("kube-system", "dns", "fd00::a");
        let mut node = NodeInfo::new("node-a");
        node.addresses = vec![ip("192.168.1.10")];
        // One endpoint here, one elsewhere.
        let mut slice = testing::slice("default", "web-1", "web", &["10.0.0.1", "10.0.1.1"]);
        slice.endpoints.as_mut().unwrap()[0].node_name = Some("node-a".into());
        let mut shop_slice = slice.clone();
        shop_slice.metadata.name = Some("shop-1".into());
        shop_slice.metadata.labels =
            Some([("kubernetes.io/service-name".to_owned(), "shop".to_owned())].into());
        let desired = DesiredState::compute(
            &[web, shop, dns],
            &[slice, shop_slice],
            &node,
            &ProxyConfig::default(),
        );
        let node_addresses = BTreeSet::from([ip("192.168.1.10")]);
        let wanted = Elements::wanted(&desired, &node_addresses);
        assert_eq!(
            wanted.vips,
            BTreeSet::from([
                ip("10.96.0.10"),
                ip("10.96.0.11"),
                ip("203.0.113.5"),
                ip("fd00::a")
            ])
        );
        assert_eq!(
            wanted.ports,
            BTreeSet::from([
                port("10.96.0.10", Protocol::Tcp, 80),
                port("10.96.0.11", Protocol::Tcp, 80),
                port("203.0.113.5", Protocol::Tcp, 80),
                port("fd00::a", Protocol::Tcp, 80),
            ]),
            "no NodePort and no port of the node's own address"
        );
        assert_eq!(
            wanted.masquerade,
            BTreeSet::from([
                port("192.168.1.10", Protocol::Tcp, 80),
                port("192.168.1.10", Protocol::Tcp, 30080),
                port("203.0.113.5", Protocol::Tcp, 80),
            ]),
            "the Cluster policy's external ports, not the Local one's"
        );
        assert_eq!(
            wanted.cluster,
            BTreeSet::from([
                port("10.96.0.10", Protocol::Tcp, 80),
                port("10.96.0.11", Protocol::Tcp, 80),
                port("fd00::a", Protocol::Tcp, 80),
            ])
        );
        assert_eq!(
            wanted.hairpin,
            BTreeSet::from([ip("10.0.0.1")]),
            "the node's endpoints only"
        );
    }

    #[test]
    fn a_load_balancer_with_source_ranges_lets_the_node_through_when_it_is_in_one() {
        let lb = |ranges: &[&str]| crate::VirtualServer {
            exposure: Exposure::LoadBalancer,
            bind_address: true,
            source_ranges: Some(ranges.iter().map(|r| net(r)).collect()),
            ..testing::virtual_server("203.0.113.7", Protocol::Tcp, 443, &[])
        };
        let port = port("203.0.113.7", Protocol::Tcp, 443);
        let node = BTreeSet::from([ip("192.168.1.10")]);
        let mut elements = Elements::default();
        elements.add_virtual_server(&lb(&["10.0.0.0/8"]), true, &node);
        assert_eq!(elements.firewall, BTreeSet::from([port]));
        assert_eq!(
            elements.allowed,
            BTreeSet::from([(port, net("10.0.0.0/8"))])
        );
        assert_eq!(
            elements.masquerade,
            BTreeSet::from([port]),
            "Cluster policy"
        );
        let mut elements = Elements::default();
        elements.add_virtual_server(&lb(&["192.168.0.0/16"]), true, &node);
        assert_eq!(
            elements.allowed,
            BTreeSet::from([(port, net("192.168.0.0/16")), (port, net("203.0.113.7/32"))]),
            "the node connects from the VIP"
        );
        // Nested ranges: only the widest is written (the kernel's set refuses the others),
        // and the VIP only when no range holds it.
        let mut elements = Elements::default();
        elements.add_virtual_server(
            &lb(&["10.1.0.0/16", "0.0.0.0/0", "10.0.0.0/8"]),
            true,
            &node,
        );
        assert_eq!(elements.allowed, BTreeSet::from([(port, net("0.0.0.0/0"))]));
        // A view's part for the port holds that range too (it sorts first of all).
        assert_eq!(
            elements.part(port, std::iter::empty()).allowed,
            elements.allowed
        );
        // Closed to all: the port is filtered, nothing allowed.
        let mut elements = Elements::default();
        elements.add_virtual_server(&lb(&[]), true, &node);
        assert_eq!(elements.firewall.len(), 1);
        assert!(elements.allowed.is_empty());
        // What a listing reads back: a range's ends become the CIDR again (one of the
        // other family cannot match, and is not written).
        let mut read = Elements::default();
        let mut want = Elements::default();
        want.add_virtual_server(&lb(&["192.168.0.0/16", "fd00::/64"]), true, &node);
        for change in Elements::default().changes_to(&want) {
            assert!(read.apply(&change));
        }
        assert_eq!(read, want);
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
            hairpin: BTreeSet::from([ip("10.244.1.5")]),
            ..Elements::default()
        };
        let want = Elements {
            vips: BTreeSet::from([ip("10.96.0.1"), ip("10.96.0.3"), ip("fd00::2")]),
            ports: BTreeSet::from([
                port("10.96.0.1", Protocol::Tcp, 443),
                port("10.96.0.1", Protocol::Tcp, 80),
                port("10.96.0.3", Protocol::Udp, 53),
                port("fd00::2", Protocol::Sctp, 3868),
            ]),
            masquerade: BTreeSet::from([port("192.168.1.10", Protocol::Tcp, 30080)]),
            cluster: BTreeSet::from([port("10.96.0.1", Protocol::Tcp, 443)]),
            hairpin: BTreeSet::from([ip("10.244.1.6")]),
            firewall: BTreeSet::from([port("203.0.113.7", Protocol::Tcp, 443)]),
            allowed: BTreeSet::from([
                (port("203.0.113.7", Protocol::Tcp, 443), net("192.0.2.0/24")),
                (
                    port("203.0.113.7", Protocol::Tcp, 443),
                    net("198.51.100.7/32"),
                ),
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
            ..Elements::default()
        };
        let changes = Elements::default().changes_to(&many);
        assert_eq!(changes.len(), 3);
        let mut got = Elements::default();
        apply(&mut got, &changes);
        assert_eq!(got, many);
        let changes = have.changes_to(&want);
        // Deletions and additions, each set once per direction.
        assert_eq!(changes.len(), 14);
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
        use crate::netfilter::rules::{self, RuleConfig};
        use crate::netfilter::{Contents, NfnlSocket};

        fn read(nft: &mut NfnlSocket) -> Option<Elements> {
            Contents::read(nft).unwrap().map(|c| c.elements)
        }

        #[test]
        #[ignore = "real kernel: run by cargo xtask test"]
        fn the_sets_read_back_as_written_and_drift_is_seen() {
            Netns::new("nft-elements")
                .expect("a fresh namespace")
                .run(|| {
                    let mut nft = NfnlSocket::open().unwrap();
                    assert_eq!(read(&mut nft), None, "no table yet");
                    let want = Elements {
                        vips: BTreeSet::from([ip("10.96.0.10"), ip("fd00::a")]),
                        ports: BTreeSet::from([
                            port("10.96.0.10", Protocol::Tcp, 80),
                            port("10.96.0.10", Protocol::Udp, 53),
                            port("fd00::a", Protocol::Sctp, 3868),
                        ]),
                        masquerade: BTreeSet::from([port("192.168.1.10", Protocol::Tcp, 30080)]),
                        cluster: BTreeSet::from([port("fd00::a", Protocol::Sctp, 3868)]),
                        hairpin: BTreeSet::from([ip("10.244.1.5"), ip("fd00:244::5")]),
                        firewall: BTreeSet::from([port("203.0.113.7", Protocol::Tcp, 443)]),
                        allowed: BTreeSet::from([
                            (port("203.0.113.7", Protocol::Tcp, 443), net("192.0.2.0/24")),
                            (
                                port("203.0.113.7", Protocol::Tcp, 443),
                                net("203.0.113.7/32"),
                            ),
                            (port("fd00::a", Protocol::Sctp, 3868), net("fd00:1::/64")),
                        ]),
                    };
                    let config = RuleConfig {
                        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
                        ..RuleConfig::default()
                    };
                    let mut changes = table::create(&config);
                    changes.extend(Elements::default().changes_to(&want));
                    nft.transact(&changes).unwrap();
                    let contents = Contents::read(&mut nft).unwrap().unwrap();
                    assert_eq!(contents.rules, rules::comments(&config));
                    assert_eq!(contents.elements, want);
                    assert!(
                        contents.elements.changes_to(&want).is_empty(),
                        "a restart changes nothing"
                    );

                    // Someone deletes an element behind our back: the read shows it.
                    let status = Command::new("nft")
                        .args(["delete element inet ipvs-proxy vips-v4 { 10.96.0.10 }"])
                        .status()
                        .expect("nft runs");
                    assert!(status.success());
                    let drifted = read(&mut nft).unwrap();
                    assert!(!drifted.vips.contains(&ip("10.96.0.10")));
                    nft.transact(&drifted.changes_to(&want)).unwrap();
                    assert_eq!(read(&mut nft).unwrap(), want);

                    // Someone deletes a rule: the listing shows it.
                    let status = Command::new("nft")
                        .args(["flush chain inet ipvs-proxy nat-postrouting"])
                        .status()
                        .expect("nft runs");
                    assert!(status.success());
                    let contents = Contents::read(&mut nft).unwrap().unwrap();
                    assert_ne!(contents.rules, rules::comments(&config));
                    nft.transact(&rules::write(&config)).unwrap();
                    let contents = Contents::read(&mut nft).unwrap().unwrap();
                    assert_eq!(contents.rules, rules::comments(&config));
                })
                .expect("the test body ran");
        }

        #[test]
        #[ignore = "real kernel: run by cargo xtask test"]
        fn nested_source_ranges_are_written_as_the_widest_which_every_kernel_takes() {
            Netns::new("nft-nested")
                .expect("a fresh namespace")
                .run(|| {
                    let mut nft = NfnlSocket::open().unwrap();
                    // Recent kernels refuse a range inside another of the same port (Linux
                    // 6.18 does; Debian's 6.1 takes it): the table never writes one.
                    let vs = crate::VirtualServer {
                        exposure: Exposure::LoadBalancer,
                        source_ranges: Some(vec![net("0.0.0.0/0"), net("10.0.0.0/8")].into()),
                        ..testing::virtual_server("203.0.113.7", Protocol::Tcp, 443, &[])
                    };
                    let mut want = Elements::default();
                    want.add_virtual_server(&vs, true, &BTreeSet::from([ip("192.168.1.10")]));
                    let lb = port("203.0.113.7", Protocol::Tcp, 443);
                    assert_eq!(want.allowed, BTreeSet::from([(lb, net("0.0.0.0/0"))]));
                    let mut changes = table::create(&RuleConfig::default());
                    changes.extend(Elements::default().changes_to(&want));
                    nft.transact(&changes).unwrap();
                    assert_eq!(read(&mut nft).unwrap(), want);
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
                        ..Elements::default()
                    };
                    let mut nft = NfnlSocket::open().unwrap();
                    let mut changes = table::create(&RuleConfig::default());
                    changes.extend(Elements::default().changes_to(&want));
                    nft.transact(&changes).unwrap();
                    let read = read(&mut nft).unwrap();
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
