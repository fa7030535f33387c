//! Stale UDP flows: netfilter's connection-tracking entries that would keep sending a UDP
//! client's datagrams where they no longer belong, read and deleted over `ctnetlink`.
//!
//! A UDP "connection" is a conntrack entry keyed by the client's address and port: a client
//! that keeps its source port (a DNS resolver, a game) keeps the entry as long as it keeps
//! sending. Two cases leave one stale, as kube-proxy's `conntrack/cleanup.go` describes:
//!
//! - the endpoint it was translated to is gone (its reply source is no longer a real server
//!   of the virtual server);
//! - the client sent before the Service had an endpoint: the entry was made without
//!   translation, its reply source is the frontend itself.
//!
//! Both are "an entry to the frontend whose reply source is not one of its real servers",
//! which [`NfnlSocket::delete_stale_udp_flows`] deletes. TCP needs none of this: a reset ends
//! its connection.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use ipvs::transport::TransportError;
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    NetfilterSubsystem,
};
use rtnetlink::packet_core::{DefaultNla, Emitable, NLA_F_NESTED};

use super::transport::{Nfnl, NfnlError, NfnlSocket};

/// One UDP flow as conntrack keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UdpFlow {
    /// The client: the original direction's source.
    pub client: SocketAddr,
    /// Where it sent to: the original direction's destination (a Service's frontend).
    pub frontend: SocketAddr,
    /// Who answers: the reply direction's source (a real server, or the frontend itself
    /// when nothing translated the flow).
    pub backend: IpAddr,
}

/// `CTA_FILTER`, with `CTA_FILTER_ORIG_FLAGS` and the flags of the original tuple's
/// destination address, protocol number and destination port: the kernel (5.8 and later)
/// then dumps only the entries to one frontend; an older one ignores it and dumps all,
/// which the matching below narrows the same way.
const CTA_FILTER: u16 = 25;
/// `CTA_TUPLE_ORIG` and `IPCTNL_MSG_CT_GET`.
const CTA_TUPLE_ORIG: u16 = 1;
const IPCTNL_MSG_CT_GET: u8 = 1;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
const FILTER_IP_DST: u32 = 1 << 1;
const FILTER_PROTO_NUM: u32 = 1 << 3;
const FILTER_PROTO_DST_PORT: u32 = 1 << 5;

/// `ENOENT`: an entry that went before it could be deleted.
const ENOENT: i32 = 2;

fn family(addr: &IpAddr) -> NetfilterProtoFamily {
    match addr {
        IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
        IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
    }
}

fn conntrack(addr: &IpAddr, message: ConntrackMessage) -> Nfnl {
    Nfnl(NetfilterMessage::new(
        NetfilterHeader::new(family(addr), 0, 0),
        message,
    ))
}

fn tuple(src: Option<SocketAddr>, dst: SocketAddr) -> Vec<Tuple> {
    let mut ip = Vec::new();
    let mut proto = vec![ProtoTuple::Protocol(Protocol::Udp)];
    if let Some(src) = src {
        ip.push(IPTuple::SourceAddress(src.ip()));
        proto.push(ProtoTuple::SourcePort(src.port()));
    }
    ip.push(IPTuple::DestinationAddress(dst.ip()));
    proto.push(ProtoTuple::DestinationPort(dst.port()));
    vec![Tuple::Ip(ip), Tuple::Proto(proto)]
}

impl NfnlSocket {
    /// The UDP flows to `frontend`.
    pub fn udp_flows_to(&mut self, frontend: SocketAddr) -> Result<Vec<UdpFlow>, NfnlError> {
        let mut filter = 8u16.to_ne_bytes().to_vec();
        filter.extend(CTA_FILTER_ORIG_FLAGS.to_ne_bytes());
        // A host-order integer, unlike most of netfilter's.
        filter.extend((FILTER_IP_DST | FILTER_PROTO_NUM | FILTER_PROTO_DST_PORT).to_ne_bytes());
        // Sent as raw attributes: the kernel parses `CTA_FILTER` strictly, nested flag
        // included, which `ConntrackAttribute::Other` does not emit.
        let orig = tuple(None, frontend);
        let mut orig_bytes = vec![0; orig.as_slice().buffer_len()];
        orig.as_slice().emit(&mut orig_bytes);
        let request = Nfnl(NetfilterMessage::new(
            NetfilterHeader::new(family(&frontend.ip()), 0, 0),
            NetfilterMessageInner::Other {
                subsys: NetfilterSubsystem::Conntrack,
                message_type: IPCTNL_MSG_CT_GET,
                attributes: vec![
                    DefaultNla::new(CTA_TUPLE_ORIG | NLA_F_NESTED, orig_bytes),
                    DefaultNla::new(CTA_FILTER | NLA_F_NESTED, filter),
                ],
            },
        ));
        let replies = self.dump(&request, "listing conntrack's UDP flows")?;
        Ok(replies
            .iter()
            .filter_map(|reply| match &reply.0.inner {
                NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)) => {
                    flow(attributes)
                }
                _ => None,
            })
            .filter(|f| f.frontend == frontend)
            .collect())
    }

    /// Deletes the UDP flows to `frontend` whose reply source is not in `keep`; returns how
    /// many went.
    pub fn delete_stale_udp_flows(
        &mut self,
        frontend: SocketAddr,
        keep: &BTreeSet<IpAddr>,
    ) -> Result<usize, NfnlError> {
        let stale: Vec<UdpFlow> = self
            .udp_flows_to(frontend)?
            .into_iter()
            .filter(|f| !keep.contains(&f.backend))
            .collect();
        let mut deleted = 0;
        for chunk in stale.chunks(256) {
            let requests: Vec<Nfnl> = chunk
                .iter()
                .map(|f| {
                    conntrack(
                        &f.frontend.ip(),
                        ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple(
                            Some(f.client),
                            f.frontend,
                        ))]),
                    )
                })
                .collect();
            for result in self.acknowledged(&requests, "deleting conntrack's UDP flows")? {
                match result {
                    Ok(()) => deleted += 1,
                    Err(TransportError::Kernel(e)) if e.errno() == ENOENT => {}
                    Err(source) => {
                        return Err(NfnlError::Answers {
                            context: "deleting conntrack's UDP flows",
                            source,
                        });
                    }
                }
            }
        }
        Ok(deleted)
    }
}

/// A UDP flow from a conntrack entry's attributes; `None` for another protocol or an entry
/// without the addresses and ports.
fn flow(attributes: &[ConntrackAttribute]) -> Option<UdpFlow> {
    let mut orig = None;
    let mut reply = None;
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(t) => orig = Some(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = Some(t),
            _ => {}
        }
    }
    let (src, sport, dst, dport, udp) = endpoints(orig?)?;
    let (backend, _, _, _, _) = endpoints(reply?)?;
    udp.then_some(UdpFlow {
        client: SocketAddr::new(src, sport),
        frontend: SocketAddr::new(dst, dport),
        backend,
    })
}

/// A tuple's source address and port, destination address and port, and whether it is UDP.
fn endpoints(tuple: &[Tuple]) -> Option<(IpAddr, u16, IpAddr, u16, bool)> {
    let (mut src, mut dst, mut sport, mut dport, mut udp) = (None, None, None, None, false);
    for part in tuple {
        match part {
            Tuple::Ip(ip) => {
                for a in ip {
                    match a {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(proto) => {
                for p in proto {
                    match p {
                        ProtoTuple::Protocol(p) => udp = *p == Protocol::Udp,
                        ProtoTuple::SourcePort(p) => sport = Some(*p),
                        ProtoTuple::DestinationPort(p) => dport = Some(*p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((src?, sport?, dst?, dport?, udp))
}

#[cfg(test)]
mod tests {
    /// Needs a network namespace and conntrack: run in the VM by `cargo xtask test`.
    mod real_kernel {
        use std::collections::BTreeSet;
        use std::net::{SocketAddr, UdpSocket};
        use std::time::Duration;

        use integration::Netns;

        use super::super::super::RuleConfig;
        use super::super::super::table;
        use super::super::*;

        #[test]
        #[ignore = "real kernel: run by cargo xtask test"]
        fn udp_flows_are_listed_per_frontend_and_the_stale_ones_deleted() {
            Netns::new("ct-udp")
                .expect("a fresh namespace")
                .run(|| {
                    std::process::Command::new("ip")
                        .args(["link", "set", "lo", "up"])
                        .status()
                        .unwrap();
                    let mut socket = NfnlSocket::open().unwrap();
                    // The table's `ct` rule switches connection tracking on in the namespace.
                    socket
                        .transact(&table::create(&RuleConfig::default()))
                        .unwrap();
                    let server = UdpSocket::bind("127.0.0.1:5353").unwrap();
                    let other = UdpSocket::bind("127.0.0.1:5354").unwrap();
                    let client = UdpSocket::bind("127.0.0.1:40000").unwrap();
                    client
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    for target in [&server, &other] {
                        client.send_to(b"hi", target.local_addr().unwrap()).unwrap();
                    }
                    let frontend: SocketAddr = "127.0.0.1:5353".parse().unwrap();
                    let flows = socket.udp_flows_to(frontend).unwrap();
                    assert_eq!(
                        flows,
                        [UdpFlow {
                            client: "127.0.0.1:40000".parse().unwrap(),
                            frontend,
                            backend: "127.0.0.1".parse().unwrap(),
                        }],
                        "only the flows to that frontend"
                    );
                    // Its reply source is a real server: kept.
                    let keep = BTreeSet::from(["127.0.0.1".parse().unwrap()]);
                    assert_eq!(socket.delete_stale_udp_flows(frontend, &keep).unwrap(), 0);
                    assert_eq!(socket.udp_flows_to(frontend).unwrap().len(), 1);
                    // It is not: deleted, and only it.
                    let keep = BTreeSet::from(["10.244.1.5".parse().unwrap()]);
                    assert_eq!(socket.delete_stale_udp_flows(frontend, &keep).unwrap(), 1);
                    assert!(socket.udp_flows_to(frontend).unwrap().is_empty());
                    let other_frontend = other.local_addr().unwrap();
                    assert_eq!(socket.udp_flows_to(other_frontend).unwrap().len(), 1);
                })
                .expect("the test body ran");
        }
    }
}
