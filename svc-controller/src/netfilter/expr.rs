//! Rule expressions, as the kernel evaluates them: loads into registers, comparisons, set
//! lookups and verdicts. `netlink-packet-netfilter` types the common ones; the ones it lacks
//! (`ct`) are built here through its escape for other expression types, with the kernel's
//! attribute numbers.

use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute,
    Lookup, Meta, MetaKey, Operator, Payload, Register, Verdict, VerdictAttribute,
};
use rtnetlink::packet_core::DefaultNla;

/// An address family of a rule's match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The `nfproto` value of the family (`NFPROTO_IPV4`, `NFPROTO_IPV6`).
    fn nfproto(self) -> u8 {
        match self {
            Family::V4 => 2,
            Family::V6 => 10,
        }
    }

    /// The destination address's offset in the network header, and its length.
    fn daddr(self) -> (u32, u32) {
        match self {
            Family::V4 => (16, 4),
            Family::V6 => (24, 16),
        }
    }

    /// The source address's offset in the network header, and its length.
    fn saddr(self) -> (u32, u32) {
        match self {
            Family::V4 => (12, 4),
            Family::V6 => (8, 16),
        }
    }

    /// The family of `net`.
    pub fn of_net(net: &ipnet::IpNet) -> Self {
        match net {
            ipnet::IpNet::V4(_) => Family::V4,
            ipnet::IpNet::V6(_) => Family::V6,
        }
    }

    /// The length of an address, in bytes.
    pub fn address_len(self) -> u32 {
        self.daddr().1
    }
}

/// One expression of a rule.
pub type Expr = ListAttribute<ExpressionAttribute>;

/// `NFT_PAYLOAD_NETWORK_HEADER`, `NFT_PAYLOAD_TRANSPORT_HEADER`.
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;
/// `NF_DROP`.
const NF_DROP: u32 = 0;
/// `NFTA_MASQ_FLAGS`, and `NF_NAT_RANGE_PROTO_RANDOM_FULLY`: source ports drawn at random,
/// which avoids the races of sequential port allocation under many new connections
/// (kubernetes #76699).
const MASQ_FLAGS: u16 = 1;
const NAT_RANDOM_FULLY: u32 = 1 << 4;
/// `NFT_LOOKUP_F_INV`: the lookup matches when the key is *not* in the set.
const LOOKUP_INVERT: u32 = 1;
/// `NFTA_CT_DREG`, `NFTA_CT_KEY`, and `NFT_CT_STATE`.
const CT_DREG: u16 = 1;
const CT_KEY: u16 = 2;
const CT_STATE: u32 = 0;
/// The `ct state` bit of a connection's first packet (`NF_CT_STATE_BIT(IP_CT_NEW)`).
const CT_STATE_NEW: u32 = 1 << 3;

/// Matches packets of `family` (in an `inet` table, every address match needs it first).
pub fn family_is(family: Family) -> Vec<Expr> {
    vec![
        Expressions::Meta(vec![
            Meta::DestinationRegister(Register::Reg1),
            Meta::Key(MetaKey::Nfproto),
        ])
        .into(),
        compare(Operator::Equal, &[family.nfproto()]),
    ]
}

/// Matches a connection's first packet (`ct state new`).
pub fn ct_state_new() -> Vec<Expr> {
    vec![
        Expressions::Other {
            expression_type: "ct".into(),
            attributes: vec![
                u32_nla(CT_DREG, Register::Reg1.into()),
                u32_nla(CT_KEY, CT_STATE),
            ],
        }
        .into(),
        masked(&CT_STATE_NEW.to_ne_bytes(), &[0; 4]),
        compare(Operator::NotEqual, &[0; 4]),
    ]
}

/// Loads the destination address into `register`.
pub fn load_daddr(family: Family, register: Register) -> Expr {
    let (offset, len) = family.daddr();
    Expressions::Payload(vec![
        Payload::DestinationRegister(register),
        Payload::Base(NETWORK_HEADER),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

/// Loads the source address into `register`.
pub fn load_saddr(family: Family, register: Register) -> Expr {
    let (offset, len) = family.saddr();
    Expressions::Payload(vec![
        Payload::DestinationRegister(register),
        Payload::Base(NETWORK_HEADER),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

/// Matches when the source address is outside `network` (its bytes, already masked) with
/// the prefix `mask` (the same length).
pub fn saddr_outside(family: Family, network: &[u8], mask: &[u8]) -> Vec<Expr> {
    vec![
        load_saddr(family, Register::Reg1),
        masked(mask, &vec![0; mask.len()]),
        compare(Operator::NotEqual, network),
    ]
}

/// Sets the bits `bits` of the packet's mark (`meta mark set meta mark | bits`).
pub fn mark_set(bits: u32) -> Vec<Expr> {
    // `x | m` is `(x & !m) ^ m`: nftables' bitwise takes a mask and an xor.
    mark_rewrite(!bits, bits)
}

/// Clears the bits `bits` of the packet's mark (`meta mark set meta mark & !bits`).
pub fn mark_clear(bits: u32) -> Vec<Expr> {
    mark_rewrite(!bits, 0)
}

/// Matches packets none of whose mark bits `bits` is set.
pub fn mark_clear_of(bits: u32) -> Vec<Expr> {
    vec![
        load_mark(),
        // The mark is a host-order integer in the register.
        masked(&bits.to_ne_bytes(), &[0; 4]),
        compare(Operator::Equal, &[0; 4]),
    ]
}

fn load_mark() -> Expr {
    Expressions::Meta(vec![
        Meta::DestinationRegister(Register::Reg1),
        Meta::Key(MetaKey::Mark),
    ])
    .into()
}

/// `meta mark set (meta mark & mask) ^ xor`.
fn mark_rewrite(mask: u32, xor: u32) -> Vec<Expr> {
    vec![
        load_mark(),
        masked(&mask.to_ne_bytes(), &xor.to_ne_bytes()),
        Expressions::Meta(vec![
            Meta::Key(MetaKey::Mark),
            Meta::SourceRegister(Register::Reg1),
        ])
        .into(),
    ]
}

/// Masquerades the connection: its source becomes the address of the interface the packet
/// leaves by, with a source port drawn at random.
pub fn masquerade() -> Expr {
    Expressions::Other {
        expression_type: "masq".into(),
        attributes: vec![u32_nla(MASQ_FLAGS, NAT_RANDOM_FULLY)],
    }
    .into()
}

/// Leaves the chain (`return`).
pub fn return_() -> Expr {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
            Verdict::Return,
        )])),
    ])
    .into()
}

/// Loads the layer-4 protocol number into `register`.
pub fn load_l4proto(register: Register) -> Expr {
    Expressions::Meta(vec![
        Meta::DestinationRegister(register),
        Meta::Key(MetaKey::L4Proto),
    ])
    .into()
}

/// Loads the transport header's destination port into `register` (TCP, UDP and SCTP keep
/// it at the same offset).
pub fn load_dport(register: Register) -> Expr {
    Expressions::Payload(vec![
        Payload::DestinationRegister(register),
        Payload::Base(TRANSPORT_HEADER),
        Payload::Offset(2),
        Payload::Len(2),
    ])
    .into()
}

/// Matches when the key starting at `register` is in `set` (`invert`: is not).
pub fn lookup(set: &str, register: Register, invert: bool) -> Expr {
    let mut attributes = vec![Lookup::Set(set.into()), Lookup::SourceRegister(register)];
    if invert {
        attributes.push(Lookup::Flags(LOOKUP_INVERT));
    }
    Expressions::Lookup(attributes).into()
}

/// Drops the packet.
pub fn drop() -> Expr {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
            Verdict::Other(NF_DROP),
        )])),
    ])
    .into()
}

/// `reg1 = (reg1 & mask) ^ xor`, over `mask`'s length.
fn masked(mask: &[u8], xor: &[u8]) -> Expr {
    Expressions::Bitwise(vec![
        Bitwise::SourceRegister(Register::Reg1),
        Bitwise::DestinationRegister(Register::Reg1),
        Bitwise::Length(mask.len() as u32),
        Bitwise::Mask(DataAttribute::Value(mask.to_vec())),
        Bitwise::Xor(DataAttribute::Value(xor.to_vec())),
    ])
    .into()
}

/// Matches when register 1 compares to `value` by `op`.
fn compare(op: Operator, value: &[u8]) -> Expr {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(value.to_vec())),
    ])
    .into()
}

/// A 32-bit attribute in network byte order, as nftables' are.
fn u32_nla(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}
