//! The table's chains and rules: a constant number of them, written when the table is
//! created and again only when they differ from what the configuration wants.
//!
//! | chain | hook, priority | rules, per address family |
//! | --- | --- | --- |
//! | `input` | filter input, -10 | a new connection to a VIP on a port no Service defines: drop; a source a load balancer's ranges leave out: drop |
//! | `output` | filter output, -110 | the node's own connections to a load balancer whose ranges leave the node out: drop |
//! | `nat-prerouting` | nat prerouting, -100 | mark what must be masqueraded (below) |
//! | `nat-output` | nat output, -100 | the same, and a connection the node makes from a VIP |
//! | `nat-postrouting` | nat postrouting, 100 | masquerade hairpin connections and marked ones |
//!
//! What is masqueraded, with kube-proxy's meaning:
//! - connections to a NodePort, external IP or load-balancer IP whose traffic policy is
//!   `Cluster` (set `masquerade-ports`): the endpoint may be on another node, whose reply must
//!   come back through this one to be un-NATed; `Local` ones keep the client's address;
//! - connections to a ClusterIP port (set `cluster-ports`) from outside the cluster's pod
//!   network ([`RuleConfig::cluster_cidrs`]), or from anywhere with
//!   [`RuleConfig::masquerade_all`];
//! - connections the node itself makes from a VIP (it picks the VIP as source when it
//!   connects to one): a reply to a VIP would stay on the endpoint's node, which has it too;
//! - hairpin connections, an endpoint reaching itself through its Service (set `hairpin`:
//!   `address . address` of the node's endpoints): unmasqueraded, its reply would not come
//!   back through IPVS.
//!
//! Marking happens before IPVS sees the packet (prerouting, output), masquerading after it
//! rewrote the destination (postrouting), as kube-proxy does with its `KUBE-MARK-MASQ` and
//! `KUBE-POSTROUTING` chains: the mark bit is kube-proxy's `--iptables-masquerade-bit`, and
//! is cleared before the packet leaves so a packet that comes back is not masqueraded twice.
//!
//! A load balancer whose Service lists `loadBalancerSourceRanges` (set `firewall-ports`) lets
//! through only the sources in its ranges (set `firewall-allow`), and the node itself when
//! one of its addresses is in one (the node connects from the VIP, which the set then holds
//! for that port); NodePorts and ClusterIPs of the same Service are not filtered, as in
//! kube-proxy. Every packet is checked, not only a connection's first: a range removed cuts
//! the connections it let in.
//!
//! Each rule carries a comment (rule user data, shown by `nft list`) naming its place and a
//! digest of every rule: the full pass lists the comments, and rewrites the rules when they
//! are not exactly the ones the configuration wants (a rule deleted behind the daemon's
//! back, a daemon started with another masquerade bit).

use std::collections::BTreeMap;

use ipnet::IpNet;
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, HookNumber, InetHookNumber, NfTablesMessage, Register,
    RuleAttribute, RuleMessage,
};
use rtnetlink::packet_core::Emitable;

use super::expr::{self, Expr, Family};
use super::table::{Sets, TABLE};
use super::transport::Change;

/// What the rules depend on: kube-proxy's masquerading settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleConfig {
    /// The bit of the packet mark that says "masquerade" (kube-proxy's
    /// `--iptables-masquerade-bit`, 14 by default), 0 to 31 (a larger one is taken modulo
    /// 32; the daemon refuses it).
    pub masquerade_bit: u8,
    /// Masquerade every connection to a ClusterIP (kube-proxy's `--masquerade-all`).
    pub masquerade_all: bool,
    /// The cluster's pod networks, at most one per address family (kube-proxy's
    /// `--cluster-cidr`): a connection to a ClusterIP from outside them is masqueraded.
    /// Empty: none is (unless [`masquerade_all`](Self::masquerade_all)).
    pub cluster_cidrs: Vec<IpNet>,
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            masquerade_bit: 14,
            masquerade_all: false,
            cluster_cidrs: Vec::new(),
        }
    }
}

impl RuleConfig {
    fn mark(&self) -> u32 {
        1u32 << (self.masquerade_bit % 32)
    }
}

/// A base chain of the table.
struct Chain {
    name: &'static str,
    kind: &'static str,
    hook: InetHookNumber,
    priority: i32,
}

/// The chains, in the order they are created and listed.
const CHAINS: [Chain; 5] = [
    // Before IPVS takes the packet (`LOCAL_IN` at 99) and before the usual filter chains (0),
    // so a dropped connection never reaches them.
    Chain {
        name: "input",
        kind: "filter",
        hook: InetHookNumber::LocalIn,
        priority: -10,
    },
    // Before IPVS takes the node's own connections (`LOCAL_OUT` at -98).
    Chain {
        name: "output",
        kind: "filter",
        hook: InetHookNumber::LocalOut,
        priority: -110,
    },
    // `dstnat`: before IPVS (`LOCAL_IN` 99, `LOCAL_OUT` -98) sees the packet.
    Chain {
        name: "nat-prerouting",
        kind: "nat",
        hook: InetHookNumber::PreRouting,
        priority: -100,
    },
    Chain {
        name: "nat-output",
        kind: "nat",
        hook: InetHookNumber::LocalOut,
        priority: -100,
    },
    // `srcnat`: IPVS re-injects the packet it rewrote at `LOCAL_OUT`, so it comes here.
    Chain {
        name: "nat-postrouting",
        kind: "nat",
        hook: InetHookNumber::PostRouting,
        priority: 100,
    },
];

/// `NF_ACCEPT`: every chain's policy (they only drop or mark what their rules say).
const ACCEPT: u32 = 1;

/// One rule: its chain and expressions.
struct Rule {
    chain: &'static str,
    exprs: Vec<Expr>,
}

/// The rules `config` wants, in order.
fn rules(config: &RuleConfig) -> Vec<Rule> {
    let mark = config.mark();
    let mut out = Vec::new();
    for sets in Sets::all() {
        out.push(Rule {
            chain: "input",
            exprs: undefined_port_rule(sets),
        });
    }
    for chain in ["input", "output"] {
        for sets in Sets::all() {
            out.push(Rule {
                chain,
                exprs: firewall_rule(sets),
            });
        }
    }
    for chain in ["nat-prerouting", "nat-output"] {
        for sets in Sets::all() {
            let mut exprs = expr::family_is(sets.family);
            exprs.extend(destination_in(sets, sets.masquerade_ports, false));
            exprs.extend(expr::mark_set(mark));
            out.push(Rule { chain, exprs });
            let cidr = config
                .cluster_cidrs
                .iter()
                .find(|c| Family::of_net(c) == sets.family);
            if config.masquerade_all || cidr.is_some() {
                let mut exprs = expr::family_is(sets.family);
                if let (false, Some(cidr)) = (config.masquerade_all, cidr) {
                    exprs.extend(expr::saddr_outside(
                        sets.family,
                        &address_bytes(cidr.network()),
                        &address_bytes(cidr.netmask()),
                    ));
                }
                exprs.extend(destination_in(sets, sets.cluster_ports, false));
                exprs.extend(expr::mark_set(mark));
                out.push(Rule { chain, exprs });
            }
        }
    }
    for sets in Sets::all() {
        let mut exprs = expr::family_is(sets.family);
        exprs.push(expr::load_saddr(sets.family, Register::Reg1));
        exprs.push(expr::lookup(sets.vips, Register::Reg1, false));
        exprs.extend(destination_in(sets, sets.service_ports, false));
        exprs.extend(expr::mark_set(mark));
        out.push(Rule {
            chain: "nat-output",
            exprs,
        });
    }
    for sets in Sets::all() {
        let mut exprs = expr::family_is(sets.family);
        exprs.push(expr::load_saddr(sets.family, Register::Reg32_00));
        exprs.push(expr::load_daddr(
            sets.family,
            register32(sets.family.address_len() / 4),
        ));
        exprs.push(expr::lookup(sets.hairpin, Register::Reg32_00, false));
        exprs.push(expr::masquerade());
        out.push(Rule {
            chain: "nat-postrouting",
            exprs,
        });
    }
    let mut exprs = expr::mark_clear_of(mark);
    exprs.push(expr::return_());
    out.push(Rule {
        chain: "nat-postrouting",
        exprs,
    });
    let mut exprs = expr::mark_clear(mark);
    exprs.push(expr::masquerade());
    out.push(Rule {
        chain: "nat-postrouting",
        exprs,
    });
    out
}

/// `meta nfproto F ct state new ip daddr @vips ip daddr . meta l4proto . th dport !=
/// @service-ports drop`.
fn undefined_port_rule(sets: &Sets) -> Vec<Expr> {
    let mut exprs = expr::family_is(sets.family);
    exprs.extend(expr::ct_state_new());
    exprs.push(expr::load_daddr(sets.family, Register::Reg1));
    exprs.push(expr::lookup(sets.vips, Register::Reg1, false));
    exprs.extend(destination_in(sets, sets.service_ports, true));
    exprs.push(expr::drop());
    exprs
}

/// `meta nfproto F ip daddr . meta l4proto . th dport @firewall-ports ip daddr . meta
/// l4proto . th dport . ip saddr != @firewall-allow drop`.
fn firewall_rule(sets: &Sets) -> Vec<Expr> {
    let mut exprs = expr::family_is(sets.family);
    exprs.extend(destination_in(sets, sets.firewall_ports, false));
    // The registers still hold the destination, protocol and port: the source follows.
    let address_registers = sets.family.address_len() / 4;
    exprs.push(expr::load_saddr(
        sets.family,
        register32(address_registers + 2),
    ));
    exprs.push(expr::lookup(sets.firewall_allow, Register::Reg32_00, true));
    exprs.push(expr::drop());
    exprs
}

/// `ip daddr . meta l4proto . th dport @set` (`invert`: `!=`).
fn destination_in(sets: &Sets, set: &str, invert: bool) -> Vec<Expr> {
    let next = |n: u32| register32(sets.family.address_len() / 4 + n);
    vec![
        expr::load_daddr(sets.family, Register::Reg32_00),
        expr::load_l4proto(next(0)),
        expr::load_dport(next(1)),
        expr::lookup(set, Register::Reg32_00, invert),
    ]
}

/// The 32-bit register `n` places after the first.
fn register32(n: u32) -> Register {
    const REGISTERS: [Register; 16] = [
        Register::Reg32_00,
        Register::Reg32_01,
        Register::Reg32_02,
        Register::Reg32_03,
        Register::Reg32_04,
        Register::Reg32_05,
        Register::Reg32_06,
        Register::Reg32_07,
        Register::Reg32_08,
        Register::Reg32_09,
        Register::Reg32_10,
        Register::Reg32_11,
        Register::Reg32_12,
        Register::Reg32_13,
        Register::Reg32_14,
        Register::Reg32_15,
    ];
    // The longest key, an IPv6 port and source (10 registers), fits.
    REGISTERS[(n as usize).min(REGISTERS.len() - 1)]
}

fn address_bytes(addr: std::net::IpAddr) -> Vec<u8> {
    match addr {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `NFTNL_UDATA_RULE_COMMENT`: the user-data type `nft` shows as a rule's comment.
const COMMENT: u8 = 0;

/// The comments of the rules, per chain in order: what a listing of a table with exactly
/// these rules shows.
pub type RuleComments = BTreeMap<String, Vec<Vec<u8>>>;

/// The rules with their comments.
fn commented(config: &RuleConfig) -> Vec<(Rule, Vec<u8>)> {
    let rules = rules(config);
    // FNV-1a over every rule's chain and encoded expressions: stable across builds.
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    for rule in &rules {
        let attribute = RuleAttribute::Expressions(rule.exprs.clone());
        let mut bytes = rule.chain.as_bytes().to_vec();
        let at = bytes.len();
        bytes.resize(at + attribute.buffer_len(), 0);
        attribute.emit(&mut bytes[at..]);
        for byte in bytes {
            digest = (digest ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let count = rules.len();
    rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| {
            let text = format!("ipvs-proxy rule {} of {count}, {digest:016x}\0", i + 1);
            let mut data = vec![COMMENT, text.len() as u8];
            data.extend(text.as_bytes());
            (rule, data)
        })
        .collect()
}

/// The comments a table with `config`'s rules lists.
pub fn comments(config: &RuleConfig) -> RuleComments {
    let mut out = RuleComments::new();
    for (rule, comment) in commented(config) {
        out.entry(rule.chain.to_owned()).or_default().push(comment);
    }
    out
}

/// The changes that create the chains (kept when they exist) and write their rules anew.
pub fn write(config: &RuleConfig) -> Vec<Change> {
    let mut changes = Vec::new();
    for chain in &CHAINS {
        changes.push(Change::add(
            NetfilterProtoFamily::Inet,
            NfTablesMessage::NewChain(ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(TABLE.into()),
                    ChainAttribute::Name(chain.name.into()),
                    ChainAttribute::Hook(vec![
                        Hook::Number(HookNumber::Inet(chain.hook)),
                        // The attribute carries the signed priority's bits.
                        Hook::Priority(chain.priority as u32),
                    ]),
                    ChainAttribute::Type(chain.kind.into()),
                    ChainAttribute::Policy(ACCEPT),
                ],
            }),
        ));
        // Deleting the rules of a chain (no handle) flushes it: rewriting a table that
        // exists adds no second copy.
        changes.push(Change::delete(
            NetfilterProtoFamily::Inet,
            NfTablesMessage::DeleteRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(TABLE.into()),
                    RuleAttribute::Chain(chain.name.into()),
                ],
            }),
        ));
    }
    for (rule, comment) in commented(config) {
        changes.push(Change::add(
            NetfilterProtoFamily::Inet,
            NfTablesMessage::NewRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(TABLE.into()),
                    RuleAttribute::Chain(rule.chain.into()),
                    RuleAttribute::Expressions(rule.exprs),
                    RuleAttribute::UserData(comment),
                ],
            }),
        ));
    }
    changes
}

/// The chain a rule message is for, and its comment (empty without one).
pub(crate) fn rule_comment(message: &RuleMessage) -> Option<(&str, &[u8])> {
    let chain = message.attributes.iter().find_map(|a| match a {
        RuleAttribute::Chain(name) => Some(name.as_str()),
        _ => None,
    })?;
    let comment = message
        .attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::UserData(data) => Some(data.as_slice()),
            _ => None,
        })
        .unwrap_or_default();
    Some((chain, comment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_are_constant_and_their_comments_change_with_the_configuration() {
        let plain = comments(&RuleConfig::default());
        let counts: Vec<(&str, usize)> = plain.iter().map(|(c, r)| (c.as_str(), r.len())).collect();
        assert_eq!(
            counts,
            [
                ("input", 4),
                ("nat-output", 4),
                ("nat-postrouting", 4),
                ("nat-prerouting", 2),
                ("output", 2)
            ]
        );
        let first = String::from_utf8_lossy(&plain["input"][0][2..]).into_owned();
        assert!(first.starts_with("ipvs-proxy rule 1 of 16, "), "{first}");
        assert_eq!(plain["input"][0][1] as usize, first.len());
        assert_eq!(plain, comments(&RuleConfig::default()), "deterministic");

        let other_bit = RuleConfig {
            masquerade_bit: 15,
            ..RuleConfig::default()
        };
        assert_ne!(comments(&other_bit), plain);
        let cidr = RuleConfig {
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            ..RuleConfig::default()
        };
        let with_cidr = comments(&cidr);
        assert_eq!(with_cidr["nat-prerouting"].len(), 3, "one family's rule");
        let all = RuleConfig {
            masquerade_all: true,
            ..cidr
        };
        assert_eq!(comments(&all)["nat-prerouting"].len(), 4);
    }

    #[test]
    fn written_rules_list_as_their_comments() {
        let config = RuleConfig::default();
        let mut listed = RuleComments::new();
        for change in write(&config) {
            if let Some(NfTablesMessage::NewRule(rule)) = change.message.as_nftables() {
                let (chain, comment) = rule_comment(rule).unwrap();
                listed
                    .entry(chain.to_owned())
                    .or_default()
                    .push(comment.to_vec());
            }
        }
        assert_eq!(listed, comments(&config));
    }
}
