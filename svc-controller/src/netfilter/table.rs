//! The daemon's table: one `inet` table of its own, whose rules never change with the
//! Services; what changes is the content of its sets.
//!
//! | set (`-v4`, `-v6`) | key | holds |
//! | --- | --- | --- |
//! | `vips` | address | the addresses bound on the dummy interface |
//! | `service-ports` | `address . protocol . port` | every VIP port a Service defines |
//! | `masquerade-ports` | `address . protocol . port` | NodePorts, external and load-balancer IP ports whose traffic policy is `Cluster` |
//! | `cluster-ports` | `address . protocol . port` | every ClusterIP port |
//! | `hairpin` | `address . address` | each endpoint on this node, twice |
//! | `firewall-ports` | `address . protocol . port` | load-balancer IP ports whose Service lists `loadBalancerSourceRanges` |
//! | `firewall-allow` | `address . protocol . port . source range` | the sources each of them lets through |
//!
//! Its chains and rules, which use these sets, are in [`rules`].

use std::net::IpAddr;

use ipnet::IpNet;
use ipvs::model::Protocol;
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetAttribute, SetDescription,
    SetElementAttribute, SetElementList, SetElementMessage, SetFlags, SetMessage, TableAttribute,
    TableMessage,
};
use rtnetlink::packet_core::{DefaultNla, Nla};

use super::expr::Family;
use super::rules::{self, RuleConfig};
use super::transport::Change;

/// The table's name.
pub const TABLE: &str = "ipvs-proxy";

/// nftables' data types of set keys (userspace metadata, kept for `nft list`): an IPv4 and
/// an IPv6 address, a protocol number, a port, and the shift of a concatenation's fields.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;

/// Every set of the table.
pub const SETS: [&str; 14] = [
    "vips-v4",
    "service-ports-v4",
    "masquerade-ports-v4",
    "cluster-ports-v4",
    "hairpin-v4",
    "firewall-ports-v4",
    "firewall-allow-v4",
    "vips-v6",
    "service-ports-v6",
    "masquerade-ports-v6",
    "cluster-ports-v6",
    "hairpin-v6",
    "firewall-ports-v6",
    "firewall-allow-v6",
];

/// The sets of one address family.
pub(super) struct Sets {
    pub(super) family: Family,
    pub(super) vips: &'static str,
    pub(super) service_ports: &'static str,
    pub(super) masquerade_ports: &'static str,
    pub(super) cluster_ports: &'static str,
    pub(super) hairpin: &'static str,
    pub(super) firewall_ports: &'static str,
    pub(super) firewall_allow: &'static str,
}

const V4: Sets = Sets {
    family: Family::V4,
    vips: "vips-v4",
    service_ports: "service-ports-v4",
    masquerade_ports: "masquerade-ports-v4",
    cluster_ports: "cluster-ports-v4",
    hairpin: "hairpin-v4",
    firewall_ports: "firewall-ports-v4",
    firewall_allow: "firewall-allow-v4",
};

const V6: Sets = Sets {
    family: Family::V6,
    vips: "vips-v6",
    service_ports: "service-ports-v6",
    masquerade_ports: "masquerade-ports-v6",
    cluster_ports: "cluster-ports-v6",
    hairpin: "hairpin-v6",
    firewall_ports: "firewall-ports-v6",
    firewall_allow: "firewall-allow-v6",
};

impl Sets {
    /// Both families' sets.
    pub(super) fn all() -> [&'static Sets; 2] {
        [&V4, &V6]
    }

    fn of(addr: &IpAddr) -> &'static Sets {
        match addr {
            IpAddr::V4(_) => &V4,
            IpAddr::V6(_) => &V6,
        }
    }

    fn address_type(&self) -> u32 {
        match self.family {
            Family::V4 => TYPE_IPADDR,
            Family::V6 => TYPE_IP6ADDR,
        }
    }

    /// Each set with its key's type and length, and whether its last field is a range.
    fn keys(&self) -> [(&'static str, u32, u32, bool); 7] {
        let address = self.address_type();
        let len = self.family.address_len();
        let port = (
            (address << (2 * TYPE_BITS)) | (TYPE_INET_PROTOCOL << TYPE_BITS) | TYPE_INET_SERVICE,
            // Each field of a concatenation takes whole 32-bit registers.
            len + 4 + 4,
        );
        [
            (self.vips, address, len, false),
            (self.service_ports, port.0, port.1, false),
            (self.masquerade_ports, port.0, port.1, false),
            (self.cluster_ports, port.0, port.1, false),
            (
                self.hairpin,
                (address << TYPE_BITS) | address,
                2 * len,
                false,
            ),
            (self.firewall_ports, port.0, port.1, false),
            (
                self.firewall_allow,
                (port.0 << TYPE_BITS) | address,
                port.1 + len,
                true,
            ),
        ]
    }

    /// The lengths of the fields of a `firewall-allow` key, unpadded: what the kernel's
    /// concatenated-range set matches field by field.
    fn allow_fields(&self) -> [u32; 4] {
        let len = self.family.address_len();
        [len, 1, 2, len]
    }
}

/// A port of a virtual server: its address, protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// The address.
    pub addr: IpAddr,
    /// The protocol.
    pub protocol: Protocol,
    /// The port.
    pub port: u16,
}

/// The sets of [`port_elements`] and [`address_elements`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetKind {
    /// `vips`.
    Vips,
    /// `service-ports`.
    ServicePorts,
    /// `masquerade-ports`.
    MasqueradePorts,
    /// `cluster-ports`.
    ClusterPorts,
    /// `hairpin`.
    Hairpin,
    /// `firewall-ports`.
    FirewallPorts,
    /// `firewall-allow`.
    FirewallAllow,
}

impl SetKind {
    fn name(self, sets: &Sets) -> &'static str {
        match self {
            SetKind::Vips => sets.vips,
            SetKind::ServicePorts => sets.service_ports,
            SetKind::MasqueradePorts => sets.masquerade_ports,
            SetKind::ClusterPorts => sets.cluster_ports,
            SetKind::Hairpin => sets.hairpin,
            SetKind::FirewallPorts => sets.firewall_ports,
            SetKind::FirewallAllow => sets.firewall_allow,
        }
    }

    /// The kind and family of the set called `name`.
    pub(super) fn of_name(name: &str) -> Option<(SetKind, Family)> {
        let kinds = [
            SetKind::Vips,
            SetKind::ServicePorts,
            SetKind::MasqueradePorts,
            SetKind::ClusterPorts,
            SetKind::Hairpin,
            SetKind::FirewallPorts,
            SetKind::FirewallAllow,
        ];
        Sets::all().into_iter().find_map(|sets| {
            kinds
                .iter()
                .find(|k| k.name(sets) == name)
                .map(|k| (*k, sets.family))
        })
    }
}

/// The changes that create the table with its sets, chains and rules, empty sets, as one
/// transaction would (a table that exists is kept, with what its sets hold; its rules are
/// written anew).
pub fn create(config: &RuleConfig) -> Vec<Change> {
    let mut changes = vec![add(NfTablesMessage::NewTable(TableMessage {
        attributes: vec![TableAttribute::Name(TABLE.into())],
    }))];
    let mut id = 0;
    for sets in Sets::all() {
        for (name, key_type, key_len, ranges) in sets.keys() {
            id += 1;
            let mut attributes = vec![
                SetAttribute::Table(TABLE.into()),
                SetAttribute::Name(name.into()),
                SetAttribute::KeyType(key_type),
                SetAttribute::KeyLen(key_len),
                SetAttribute::Id(id),
            ];
            if ranges {
                // A concatenation whose fields may be ranges: the kernel needs each
                // field's length to match them one by one.
                attributes.push(SetAttribute::Flags(SetFlags::Interval | SetFlags::Concat));
                attributes.push(SetAttribute::Description(vec![SetDescription::Concat(
                    sets.allow_fields()
                        .iter()
                        .map(|len| field_length(*len))
                        .collect(),
                )]));
            }
            changes.push(add(NfTablesMessage::NewSet(SetMessage { attributes })));
        }
    }
    changes.extend(rules::write(config));
    changes
}

/// The change that deletes the table and everything in it.
pub fn delete() -> Change {
    Change::delete(
        NetfilterProtoFamily::Inet,
        NfTablesMessage::DeleteTable(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.into())],
        }),
    )
}

/// The changes that add the addresses `addrs` to the sets of `kind` (`add`) or delete
/// them: [`SetKind::Vips`] holds each address, [`SetKind::Hairpin`] each one twice.
pub fn address_elements(kind: SetKind, addrs: &[IpAddr], add: bool) -> Vec<Change> {
    let mut changes = Vec::new();
    for sets in Sets::all() {
        let keys: Vec<Vec<u8>> = addrs
            .iter()
            .filter(|a| Sets::of(a).family == sets.family)
            .map(|a| {
                let mut key = address_bytes(a);
                if kind == SetKind::Hairpin {
                    key.extend(address_bytes(a));
                }
                key
            })
            .collect();
        changes.extend(set_elements(kind.name(sets), keys, add));
    }
    changes
}

/// The changes that add `ports` to the sets of `kind` (`add`) or delete them.
pub fn port_elements(kind: SetKind, ports: &[ServicePort], add: bool) -> Vec<Change> {
    let mut changes = Vec::new();
    for sets in Sets::all() {
        let keys: Vec<Vec<u8>> = ports
            .iter()
            .filter(|p| Sets::of(&p.addr).family == sets.family)
            .filter_map(port_key)
            .collect();
        changes.extend(set_elements(kind.name(sets), keys, add));
    }
    changes
}

/// The changes that let the sources `range` through to `port` (`add`: else no longer), in
/// `firewall-allow`. A range of the other family than the port's is left out.
pub fn allow_elements(allowed: &[(ServicePort, IpNet)], add: bool) -> Vec<Change> {
    let mut changes = Vec::new();
    for sets in Sets::all() {
        // An element of a range set is its first key then its last, as one key here.
        let keys: Vec<Vec<u8>> = allowed
            .iter()
            .filter(|(p, range)| {
                Sets::of(&p.addr).family == sets.family
                    && Sets::of(&range.addr()).family == sets.family
            })
            .filter_map(|(port, range)| {
                let port = port_key(port)?;
                let mut key = port.clone();
                key.extend(address_bytes(&range.network()));
                key.extend(port);
                key.extend(address_bytes(&range.broadcast()));
                Some(key)
            })
            .collect();
        changes.extend(set_elements(sets.firewall_allow, keys, add));
    }
    changes
}

/// The key of a port: address, protocol and port, each field in whole registers; `None`
/// for a protocol number that is not an IP protocol's (it cannot match a packet).
fn port_key(p: &ServicePort) -> Option<Vec<u8>> {
    let protocol = u8::try_from(p.protocol.number()).ok()?;
    let mut key = address_bytes(&p.addr);
    key.extend([protocol, 0, 0, 0]);
    key.extend(p.port.to_be_bytes());
    key.extend([0, 0]);
    Some(key)
}

/// `NFTA_LIST_ELEM` holding `NFTA_SET_FIELD_LEN`: one field of a concatenation's description.
fn field_length(len: u32) -> DefaultNla {
    let mut inner = 8u16.to_ne_bytes().to_vec();
    inner.extend(1u16.to_ne_bytes());
    inner.extend(len.to_be_bytes());
    DefaultNla::new(1, inner)
}

/// The most elements in one message: 1,024, or fewer for long keys, as an attribute's length
/// is 16 bits and the list of a message must stay under 64 KiB.
const ELEMENTS_PER_MESSAGE: usize = 1024;

/// The bytes of one element in a message besides its key (and key end): the headers of the
/// list item, the key and its data, and of the key end and its data.
const ELEMENT_OVERHEAD: usize = 4 + 4 + 4 + 4 + 4;

/// How many elements of `key_len` bytes (key and key end) go in one message.
fn elements_per_message(key_len: usize) -> usize {
    (60_000 / (key_len + ELEMENT_OVERHEAD)).clamp(1, ELEMENTS_PER_MESSAGE)
}

/// The changes that add (or delete) `keys` in `set`, as many a message as fit.
fn set_elements(set: &str, keys: Vec<Vec<u8>>, add: bool) -> Vec<Change> {
    let longest = keys.iter().map(Vec::len).max().unwrap_or(0);
    keys.chunks(elements_per_message(longest))
        .map(|chunk| set_elements_message(set, chunk.to_vec(), add))
        .collect()
}

fn set_elements_message(set: &str, keys: Vec<Vec<u8>>, add: bool) -> Change {
    let ranges = matches!(SetKind::of_name(set), Some((SetKind::FirewallAllow, _)));
    let message = SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE.into()),
            SetElementList::Set(set.into()),
            SetElementList::Elements(
                keys.into_iter()
                    .map(|mut key| {
                        let mut attributes = Vec::with_capacity(2);
                        if ranges {
                            let end = key.split_off(key.len() / 2);
                            attributes.push(SetElementAttribute::Key(DataAttribute::Value(key)));
                            attributes.push(SetElementAttribute::KeyEnd(vec![DefaultNla::new(
                                DATA_VALUE, end,
                            )]));
                        } else {
                            attributes.push(SetElementAttribute::Key(DataAttribute::Value(key)));
                        }
                        ListAttribute::Element(attributes)
                    })
                    .collect(),
            ),
        ],
    };
    if add {
        Change::add(
            NetfilterProtoFamily::Inet,
            NfTablesMessage::NewSetElement(message),
        )
    } else {
        Change::delete(
            NetfilterProtoFamily::Inet,
            NfTablesMessage::DeleteSetElement(message),
        )
    }
}

/// The set a set-element message names, and its elements' keys: what [`address_elements`],
/// [`port_elements`] and [`allow_elements`] write, read back (a range's first key followed
/// by its last).
pub fn element_keys(message: &SetElementMessage) -> (Option<&str>, impl Iterator<Item = Vec<u8>>) {
    let set = message.attributes.iter().find_map(|a| match a {
        SetElementList::Set(name) => Some(name.as_str()),
        _ => None,
    });
    let keys = message
        .attributes
        .iter()
        .filter_map(|a| match a {
            SetElementList::Elements(list) => Some(list),
            _ => None,
        })
        .flatten()
        .filter_map(|element| match element {
            ListAttribute::Element(attributes) => Some(attributes),
            _ => None,
        })
        .filter_map(|attributes| {
            let mut key = attributes.iter().find_map(|a| match a {
                SetElementAttribute::Key(DataAttribute::Value(key)) => Some(key.clone()),
                _ => None,
            })?;
            let end = attributes.iter().find_map(|a| match a {
                SetElementAttribute::KeyEnd(data) => {
                    data.iter().find(|nla| nla.kind() == DATA_VALUE).map(|nla| {
                        let mut value = vec![0; nla.value_len()];
                        nla.emit_value(&mut value);
                        value
                    })
                }
                _ => None,
            });
            if let Some(end) = end {
                key.extend(end);
            }
            Some(key)
        });
    (set, keys)
}

/// `NFTA_DATA_VALUE`.
const DATA_VALUE: u16 = 1;

fn add(message: NfTablesMessage) -> Change {
    Change::add(NetfilterProtoFamily::Inet, message)
}

fn address_bytes(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn port(addr: &str, protocol: Protocol, port: u16) -> ServicePort {
        ServicePort {
            addr: addr.parse().unwrap(),
            protocol,
            port,
        }
    }

    /// The keys of a set-element change, and the set it is for.
    fn keys(change: &Change) -> (String, Vec<Vec<u8>>) {
        let Some(NfTablesMessage::NewSetElement(message)) = change.message.as_nftables() else {
            panic!("{change:?}");
        };
        let (set, keys) = element_keys(message);
        (set.unwrap_or_default().to_owned(), keys.collect())
    }

    #[test]
    fn keys_are_addresses_and_address_protocol_port_each_in_whole_registers() {
        let mut changes = address_elements(
            SetKind::Vips,
            &["10.96.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
            true,
        );
        changes.extend(port_elements(
            SetKind::ServicePorts,
            &[
                port("10.96.0.10", Protocol::Tcp, 80),
                port("10.96.0.10", Protocol::Udp, 53),
                port("fd00::10", Protocol::Sctp, 3868),
                // Not an IP protocol number: it cannot match, and is left out.
                port("10.96.0.10", Protocol::Other(300), 1),
            ],
            true,
        ));
        changes.extend(address_elements(
            SetKind::Hairpin,
            &["10.244.1.5".parse().unwrap()],
            true,
        ));
        let got: Vec<(String, Vec<Vec<u8>>)> = changes.iter().map(keys).collect();
        let v6 = Ipv6Addr::from([0xfd00, 0, 0, 0, 0, 0, 0, 0x10]).octets();
        let mut sctp = v6.to_vec();
        sctp.extend([132, 0, 0, 0, 0x0f, 0x1c, 0, 0]);
        assert_eq!(
            got,
            [
                ("vips-v4".to_string(), vec![vec![10, 96, 0, 10]]),
                ("vips-v6".to_string(), vec![v6.to_vec()]),
                (
                    "service-ports-v4".to_string(),
                    vec![
                        vec![10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0],
                        vec![10, 96, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0],
                    ]
                ),
                ("service-ports-v6".to_string(), vec![sctp]),
                (
                    "hairpin-v4".to_string(),
                    vec![vec![10, 244, 1, 5, 10, 244, 1, 5]]
                ),
            ]
        );
        assert!(
            port_elements(SetKind::MasqueradePorts, &[], true).is_empty(),
            "nothing to change, no message"
        );
        assert_eq!(
            SetKind::of_name("hairpin-v6"),
            Some((SetKind::Hairpin, Family::V6))
        );
        assert_eq!(SetKind::of_name("vips"), None);
    }

    #[test]
    fn long_keys_go_in_smaller_messages_each_under_the_attribute_limit() {
        let port = port("fd00::7", Protocol::Tcp, 443);
        let allowed: Vec<(ServicePort, IpNet)> = (0..1500u128)
            .map(|i| {
                let net = IpNet::new(IpAddr::V6((0xfd01_u128 << 112 | i << 64).into()), 64);
                (port, net.unwrap())
            })
            .collect();
        let changes = allow_elements(&allowed, true);
        assert_eq!(changes.len(), 3, "600 elements of 80 bytes a message");
        for change in &changes {
            let Some(NfTablesMessage::NewSetElement(message)) = change.message.as_nftables() else {
                panic!("{change:?}");
            };
            let list: usize = message
                .attributes
                .iter()
                .map(rtnetlink::packet_core::Emitable::buffer_len)
                .sum();
            assert!(list < 65_536, "{list} bytes");
        }
        assert_eq!(
            port_elements(SetKind::ServicePorts, &[port], true).len(),
            1,
            "short keys: one message"
        );
    }

    #[test]
    fn the_table_is_written_whole_and_its_rules_anew() {
        let kinds: Vec<&str> = create(&RuleConfig::default())
            .iter()
            .map(|c| match c.message.as_nftables() {
                Some(NfTablesMessage::NewTable(_)) => "table",
                Some(NfTablesMessage::NewSet(_)) => "set",
                Some(NfTablesMessage::NewChain(_)) => "chain",
                Some(NfTablesMessage::DeleteRule(_)) => "flush",
                Some(NfTablesMessage::NewRule(_)) => "rule",
                _ => "other",
            })
            .collect();
        let mut expected = vec!["table"];
        expected.extend(["set"; 14]);
        expected.extend(["chain", "flush"].repeat(5));
        expected.extend(["rule"; 16]);
        assert_eq!(kinds, expected);
    }

    /// Needs a network namespace and nf_tables: run in the VM by `cargo xtask test`.
    mod real_kernel {
        use std::net::{SocketAddr, TcpListener, TcpStream};
        use std::process::Command;
        use std::time::Duration;

        use integration::Netns;

        use super::super::super::transport::NfnlSocket;
        use super::*;

        const VIP: &str = "10.96.0.10";

        fn ip(args: &[&str]) {
            let status = Command::new("ip").args(args).status().expect("ip runs");
            assert!(status.success(), "ip {args:?}");
        }

        fn connects(addr: &str, port: u16) -> bool {
            let addr = SocketAddr::new(addr.parse().unwrap(), port);
            TcpStream::connect_timeout(&addr, Duration::from_millis(700)).is_ok()
        }

        #[test]
        #[ignore = "real kernel: run by cargo xtask test"]
        fn a_vip_answers_on_the_ports_services_define_and_no_other() {
            Netns::new("nft-vip-ports")
                .expect("a fresh namespace")
                .run(|| {
                    ip(&["link", "set", "lo", "up"]);
                    ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
                    // The node's own servers, on every address.
                    let _web = TcpListener::bind("0.0.0.0:80").unwrap();
                    let _ssh = TcpListener::bind("0.0.0.0:2222").unwrap();
                    assert!(connects(VIP, 2222), "without the table, every port answers");

                    let mut nft = NfnlSocket::open().unwrap();
                    let vip: IpAddr = VIP.parse().unwrap();
                    let web = port(VIP, Protocol::Tcp, 80);
                    let ssh = port(VIP, Protocol::Tcp, 2222);
                    let mut changes = create(&RuleConfig::default());
                    changes.extend(address_elements(SetKind::Vips, &[vip], true));
                    changes.extend(port_elements(SetKind::ServicePorts, &[web], true));
                    nft.transact(&changes).unwrap();
                    // A defined port answers: its first packet passes, and so do the
                    // replies to the node's own connection from the VIP to itself.
                    assert!(connects(VIP, 80));
                    assert!(!connects(VIP, 2222), "an undefined VIP port is dropped");
                    assert!(
                        connects("127.0.0.1", 2222),
                        "the node's own address is not a VIP"
                    );

                    // Ports come and go with the set's elements.
                    nft.transact(&port_elements(SetKind::ServicePorts, &[web], false))
                        .unwrap();
                    nft.transact(&port_elements(SetKind::ServicePorts, &[ssh], true))
                        .unwrap();
                    assert!(!connects(VIP, 80));
                    assert!(connects(VIP, 2222));

                    // Creating the table again keeps its elements and one copy of the rules.
                    nft.transact(&create(&RuleConfig::default())).unwrap();
                    assert!(connects(VIP, 2222));
                    assert!(!connects(VIP, 80));
                    let listed = Command::new("nft")
                        .args(["list", "chain", "inet", TABLE, "input"])
                        .output()
                        .expect("nft runs");
                    let listed = String::from_utf8_lossy(&listed.stdout);
                    assert_eq!(listed.matches("drop").count(), 4, "{listed}");

                    // Source ranges: the node reaches its VIP from the VIP itself, so a
                    // range holding it lets it through, and another range does not.
                    let own: IpNet = format!("{VIP}/32").parse().unwrap();
                    let elsewhere: IpNet = "192.0.2.0/24".parse().unwrap();
                    let mut changes = port_elements(SetKind::FirewallPorts, &[ssh], true);
                    changes.extend(allow_elements(&[(ssh, elsewhere)], true));
                    nft.transact(&changes).unwrap();
                    assert!(!connects(VIP, 2222), "a source outside the ranges passed");
                    nft.transact(&allow_elements(&[(ssh, own)], true)).unwrap();
                    assert!(connects(VIP, 2222), "a source in a range was dropped");

                    // The table goes whole.
                    nft.transact(&[delete()]).unwrap();
                    assert!(connects(VIP, 80));
                    assert!(connects(VIP, 2222));
                })
                .expect("the test body ran");
        }
    }
}
