//! The daemon's table: one `inet` table of its own, whose rules never change; what changes
//! with the Services is the content of its sets.
//!
//! | object | what it holds or does |
//! | --- | --- |
//! | set `vips-v4`, `vips-v6` | the addresses bound on the dummy interface |
//! | set `service-ports-v4`, `service-ports-v6` | `address . protocol . port` of every VIP port a Service defines |
//! | chain `input` (filter, hook input) | drops a new connection to a VIP on a port no Service defines |
//!
//! Without the `input` rule, every VIP answers on every port the node listens on (its SSH
//! server, the kubelet): the VIP is a local address. kube-proxy rejects such connections
//! (its `KUBE-IPVS-FILTER`); this table drops them. Only a connection's first packet is
//! looked at, so the replies to connections the node makes from a VIP (it picks the VIP as
//! source when it connects to one) pass.

use std::net::IpAddr;

use ipvs::model::Protocol;
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, DataAttribute, Hook, HookNumber, InetHookNumber, ListAttribute,
    NfTablesMessage, Register, RuleAttribute, RuleMessage, SetAttribute, SetElementAttribute,
    SetElementList, SetElementMessage, SetMessage, TableAttribute, TableMessage,
};

use super::expr::{self, Family};
use super::transport::Change;

/// The table's name.
pub const TABLE: &str = "ipvs-proxy";

/// The input chain's priority: before IPVS takes the packet (`LOCAL_IN` at 99) and before
/// the usual filter chains (0), so a dropped connection never reaches them.
const INPUT_PRIORITY: i32 = -10;

/// `NF_ACCEPT`: the base chain's policy (it only drops what its rule says).
const ACCEPT: u32 = 1;

/// nftables' data types of set keys (userspace metadata, kept for `nft list`): an IPv4 and
/// an IPv6 address, a protocol number, a port, and the shift of a concatenation's fields.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;

/// Every set of the table.
pub const SETS: [&str; 4] = ["vips-v4", "service-ports-v4", "vips-v6", "service-ports-v6"];

/// The sets of one address family.
struct Sets {
    family: Family,
    vips: &'static str,
    service_ports: &'static str,
}

const V4: Sets = Sets {
    family: Family::V4,
    vips: "vips-v4",
    service_ports: "service-ports-v4",
};

const V6: Sets = Sets {
    family: Family::V6,
    vips: "vips-v6",
    service_ports: "service-ports-v6",
};

impl Sets {
    fn of(addr: &IpAddr) -> &'static Sets {
        match addr {
            IpAddr::V4(_) => &V4,
            IpAddr::V6(_) => &V6,
        }
    }

    fn address(&self) -> (u32, u32) {
        match self.family {
            Family::V4 => (TYPE_IPADDR, 4),
            Family::V6 => (TYPE_IP6ADDR, 16),
        }
    }
}

/// A VIP port a Service defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// The VIP.
    pub addr: IpAddr,
    /// The protocol.
    pub protocol: Protocol,
    /// The port.
    pub port: u16,
}

/// The changes that create the table with its sets, chains and rules, empty sets, as one
/// transaction would (a table that exists is kept, with what it holds).
pub fn create() -> Vec<Change> {
    let mut changes = vec![add(NfTablesMessage::NewTable(TableMessage {
        attributes: vec![TableAttribute::Name(TABLE.into())],
    }))];
    let mut id = 0;
    for sets in [&V4, &V6] {
        let (address_type, address_len) = sets.address();
        for (name, key_type, key_len) in [
            (sets.vips, address_type, address_len),
            (
                sets.service_ports,
                (address_type << (2 * TYPE_BITS))
                    | (TYPE_INET_PROTOCOL << TYPE_BITS)
                    | TYPE_INET_SERVICE,
                // Each field of a concatenation takes whole 32-bit registers.
                address_len + 4 + 4,
            ),
        ] {
            id += 1;
            changes.push(add(NfTablesMessage::NewSet(SetMessage {
                attributes: vec![
                    SetAttribute::Table(TABLE.into()),
                    SetAttribute::Name(name.into()),
                    SetAttribute::KeyType(key_type),
                    SetAttribute::KeyLen(key_len),
                    SetAttribute::Id(id),
                ],
            })));
        }
    }
    changes.push(add(NfTablesMessage::NewChain(ChainMessage {
        attributes: vec![
            ChainAttribute::Table(TABLE.into()),
            ChainAttribute::Name("input".into()),
            ChainAttribute::Hook(vec![
                Hook::Number(HookNumber::Inet(InetHookNumber::LocalIn)),
                // The attribute carries the signed priority's bits.
                Hook::Priority(INPUT_PRIORITY as u32),
            ]),
            ChainAttribute::Type("filter".into()),
            ChainAttribute::Policy(ACCEPT),
        ],
    })));
    // The chain's rules are written anew: creating a table that exists adds no second copy.
    changes.push(Change::delete(
        NetfilterProtoFamily::Inet,
        NfTablesMessage::DeleteRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(TABLE.into()),
                RuleAttribute::Chain("input".into()),
            ],
        }),
    ));
    for sets in [&V4, &V6] {
        changes.push(add(NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(TABLE.into()),
                RuleAttribute::Chain("input".into()),
                RuleAttribute::Expressions(undefined_port_rule(sets)),
            ],
        })));
    }
    changes
}

/// `meta nfproto F ct state new ip daddr @vips ip daddr . meta l4proto . th dport !=
/// @service-ports drop`.
fn undefined_port_rule(sets: &Sets) -> Vec<expr::Expr> {
    let mut exprs = expr::family_is(sets.family);
    exprs.extend(expr::ct_state_new());
    exprs.push(expr::load_daddr(sets.family, Register::Reg1));
    exprs.push(expr::lookup(sets.vips, Register::Reg1, false));
    exprs.push(expr::load_daddr(sets.family, Register::Reg32_00));
    let (_, address_len) = sets.address();
    let next = |n: u32| register32(address_len / 4 + n);
    exprs.push(expr::load_l4proto(next(0)));
    exprs.push(expr::load_dport(next(1)));
    exprs.push(expr::lookup(sets.service_ports, Register::Reg32_00, true));
    exprs.push(expr::drop());
    exprs
}

/// The 32-bit register `n` places after the first.
fn register32(n: u32) -> Register {
    const REGISTERS: [Register; 8] = [
        Register::Reg32_00,
        Register::Reg32_01,
        Register::Reg32_02,
        Register::Reg32_03,
        Register::Reg32_04,
        Register::Reg32_05,
        Register::Reg32_06,
        Register::Reg32_07,
    ];
    // An IPv6 key is the longest: 4 registers of address, then protocol and port.
    REGISTERS[(n as usize).min(REGISTERS.len() - 1)]
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

/// The changes that add `vips` and `ports` to the sets (`add`) or delete them.
pub fn elements(vips: &[IpAddr], ports: &[ServicePort], add: bool) -> Vec<Change> {
    let mut changes = Vec::new();
    for sets in [&V4, &V6] {
        let keys: Vec<Vec<u8>> = vips
            .iter()
            .filter(|a| Sets::of(a).family == sets.family)
            .map(address_bytes)
            .collect();
        changes.extend(set_elements(sets.vips, keys, add));
        let keys: Vec<Vec<u8>> = ports
            .iter()
            .filter(|p| Sets::of(&p.addr).family == sets.family)
            .filter_map(|p| {
                // An IP protocol number is one byte; another cannot match a packet.
                let protocol = u8::try_from(p.protocol.number()).ok()?;
                let mut key = address_bytes(&p.addr);
                key.extend([protocol, 0, 0, 0]);
                key.extend(p.port.to_be_bytes());
                key.extend([0, 0]);
                Some(key)
            })
            .collect();
        changes.extend(set_elements(sets.service_ports, keys, add));
    }
    changes
}

/// The most elements in one message: an attribute's length is 16 bits, so the list of a
/// message must stay under 64 KiB (an IPv6 port element takes 40 bytes).
const ELEMENTS_PER_MESSAGE: usize = 1024;

/// The changes that add (or delete) `keys` in `set`, [`ELEMENTS_PER_MESSAGE`] a message.
fn set_elements(set: &str, keys: Vec<Vec<u8>>, add: bool) -> Vec<Change> {
    keys.chunks(ELEMENTS_PER_MESSAGE)
        .map(|chunk| set_elements_message(set, chunk.to_vec(), add))
        .collect()
}

fn set_elements_message(set: &str, keys: Vec<Vec<u8>>, add: bool) -> Change {
    let message = SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE.into()),
            SetElementList::Set(set.into()),
            SetElementList::Elements(
                keys.into_iter()
                    .map(|key| {
                        ListAttribute::Element(vec![SetElementAttribute::Key(
                            DataAttribute::Value(key),
                        )])
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

/// The set a set-element message names, and its elements' keys: what [`elements`] writes,
/// read back.
pub fn element_keys(message: &SetElementMessage) -> (Option<&str>, impl Iterator<Item = &[u8]>) {
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
        .flatten()
        .filter_map(|a| match a {
            SetElementAttribute::Key(DataAttribute::Value(key)) => Some(key.as_slice()),
            _ => None,
        });
    (set, keys)
}

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
        (
            set.unwrap_or_default().to_owned(),
            keys.map(<[u8]>::to_vec).collect(),
        )
    }

    #[test]
    fn service_ports_are_address_protocol_port_each_in_whole_registers() {
        let changes = elements(
            &["10.96.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
            &[
                port("10.96.0.10", Protocol::Tcp, 80),
                port("10.96.0.10", Protocol::Udp, 53),
                port("fd00::10", Protocol::Sctp, 3868),
                // Not an IP protocol number: it cannot match, and is left out.
                port("10.96.0.10", Protocol::Other(300), 1),
            ],
            true,
        );
        let got: Vec<(String, Vec<Vec<u8>>)> = changes.iter().map(keys).collect();
        let v6 = Ipv6Addr::from([0xfd00, 0, 0, 0, 0, 0, 0, 0x10]).octets();
        let mut sctp = v6.to_vec();
        sctp.extend([132, 0, 0, 0, 0x0f, 0x1c, 0, 0]);
        assert_eq!(
            got,
            [
                ("vips-v4".to_string(), vec![vec![10, 96, 0, 10]]),
                (
                    "service-ports-v4".to_string(),
                    vec![
                        vec![10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0],
                        vec![10, 96, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0],
                    ]
                ),
                ("vips-v6".to_string(), vec![v6.to_vec()]),
                ("service-ports-v6".to_string(), vec![sctp]),
            ]
        );
        assert!(
            elements(&[], &[], true).is_empty(),
            "nothing to change, no message"
        );
    }

    #[test]
    fn the_table_is_written_whole_and_its_rules_anew() {
        let kinds: Vec<&str> = create()
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
        assert_eq!(
            kinds,
            [
                "table", "set", "set", "set", "set", "chain", "flush", "rule", "rule"
            ]
        );
    }

    /// Needs a network namespace and nf_tables: run in the VM by `cargo xtask test`.
    mod real_kernel {
        use std::net::{SocketAddr, TcpListener, TcpStream};
        use std::process::Command;
        use std::time::Duration;

        use integration::Netns;

        use super::super::super::transport::NftSocket;
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

                    let mut nft = NftSocket::open().unwrap();
                    let vip: IpAddr = VIP.parse().unwrap();
                    let web = port(VIP, Protocol::Tcp, 80);
                    let ssh = port(VIP, Protocol::Tcp, 2222);
                    let mut changes = create();
                    changes.extend(elements(&[vip], &[web], true));
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
                    nft.transact(&elements(&[], &[web], false)).unwrap();
                    nft.transact(&elements(&[], &[ssh], true)).unwrap();
                    assert!(!connects(VIP, 80));
                    assert!(connects(VIP, 2222));

                    // Creating the table again keeps its elements and one copy of the rules.
                    nft.transact(&create()).unwrap();
                    assert!(connects(VIP, 2222));
                    assert!(!connects(VIP, 80));
                    let listed = Command::new("nft")
                        .args(["list", "chain", "inet", TABLE, "input"])
                        .output()
                        .expect("nft runs");
                    let listed = String::from_utf8_lossy(&listed.stdout);
                    assert_eq!(listed.matches("drop").count(), 2, "{listed}");

                    // The table goes whole.
                    nft.transact(&[delete()]).unwrap();
                    assert!(connects(VIP, 80));
                    assert!(connects(VIP, 2222));
                })
                .expect("the test body ran");
        }
    }
}
