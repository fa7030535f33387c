//! Which virtual servers this controller owns, known from the node alone.
//!
//! A controller that deletes what it does not recognise destroys other people's work: kube-proxy's
//! periodic pass deletes every virtual server outside `excludeCIDRs`, and its `--cleanup`
//! flushes the whole table, so keepalived, a MetalLB speaker in another mode or an admin's test
//! entry on the same node disappear. A controller that deletes only what it remembers creating
//! leaks after a restart unless it keeps a state file, and state files go stale.
//!
//! # The rule
//!
//! A virtual server is **ours** exactly when one of these holds:
//!
//! 1. its key is in the desired state (we are about to program it, whoever made it);
//! 2. its address is bound to the dummy interface we manage (`kube-ipvs0`: a local route
//!    through it, as the kernel dataplane binds IPv4 VIPs, or an address on it), and its
//!    protocol is TCP, UDP or SCTP;
//! 3. its address is one of the node's own addresses (the other interfaces), its protocol is
//!    TCP, UDP or SCTP, and its port is inside the configured NodePort range
//!    (`30000-32767` by default).
//!
//! Anything else is never touched, not by a sync, not by [`verify`], not by [`cleanup`]:
//! firewall-mark services, other protocols, services on addresses that are neither on the
//! dummy interface nor node addresses, services on node addresses outside the NodePort range,
//! and services on addresses inside the excluded CIDRs ([`Ownership::excluded`], kube-proxy's
//! `ipvs.excludeCIDRs`: an operator's way to keep, say, keepalived's virtual servers on a
//! `kube-ipvs0` address) unless rule 1 makes them ours.
//!
//! # Why this rule
//!
//! - **It needs no state file and survives restarts**: the kernel itself records it. The
//!   dummy interface is ours by name and by kind (kube-proxy's own implicit rule: VIPs live on
//!   `kube-ipvs0`); the NodePort range is reserved cluster-wide by the API server, so nothing
//!   but a Service proxy legitimately listens there on a node address.
//! - **It is kept true by construction**: the reconciler binds a VIP *before* creating its
//!   virtual servers and removes them *before* unbinding the VIP. A crash between the two
//!   steps leaves a bound address with or without virtual servers, which the next start
//!   recognises and cleans up; it never leaves a virtual server on an unbound address.
//! - **It is conservative where it cannot know**: a Service address that is already a node
//!   address is not bound on the dummy interface (binding it twice would break the other
//!   interface), so its virtual server on a non-NodePort port is ours only while desired. If
//!   such a Service is deleted while the controller is down, its virtual server is left in
//!   place rather than guessed at: a leak of one entry, never the deletion of someone else's.
//! - An address bound on the dummy interface by someone else is treated as ours: the
//!   interface is managed by this controller, and stale addresses are removed from it.
//!
//! [`verify`]: crate::reconcile::Reconciler::verify
//! [`cleanup`]: crate::reconcile::Reconciler::cleanup

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use ipnet::IpNet;
use ipvs::model::ServiceKey;

use crate::mapping::from_service_key;
use crate::model::VirtualServerKey;

/// The default Kubernetes NodePort range (`--service-node-port-range`).
pub const DEFAULT_NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;

/// The facts the ownership rule is decided from (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The addresses bound on the managed dummy interface.
    pub dummy_addresses: BTreeSet<IpAddr>,
    /// The node's addresses on its other interfaces.
    pub node_addresses: BTreeSet<IpAddr>,
    /// The cluster's NodePort range.
    pub node_port_range: RangeInclusive<u16>,
    /// Addresses whose virtual servers are never ours unless desired (rules 2 and 3 do not
    /// apply to them).
    pub excluded: Vec<IpNet>,
}

impl Ownership {
    /// Whether the virtual server `key`, found in the kernel and not in the desired state, is
    /// ours (rules 2 and 3; rule 1 is the caller's, which knows the desired state).
    pub fn owns(&self, key: &VirtualServerKey) -> bool {
        let ours = self.dummy_addresses.contains(&key.addr)
            || (self.node_addresses.contains(&key.addr)
                && self.node_port_range.contains(&key.port));
        ours && !self.excluded.iter().any(|net| net.contains(&key.addr))
    }

    /// [`Ownership::owns`] for a kernel key: never for firewall-mark services or protocols
    /// other than TCP, UDP and SCTP.
    pub fn owns_kernel_key(&self, key: &ServiceKey) -> bool {
        from_service_key(key).is_some_and(|k| self.owns(&k))
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use ipvs::model::{AddressFamily, Protocol};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_rule() {
        let o = Ownership {
            dummy_addresses: [ip("10.96.0.1")].into(),
            node_addresses: [ip("192.168.1.10")].into(),
            node_port_range: DEFAULT_NODE_PORT_RANGE,
            excluded: Vec::new(),
        };
        let key = |a: &str, p: Protocol, port| VirtualServerKey {
            addr: ip(a),
            protocol: p,
            port,
        };
        assert!(o.owns(&key("10.96.0.1", Protocol::Tcp, 80)));
        assert!(o.owns(&key("10.96.0.1", Protocol::Sctp, 1)));
        assert!(o.owns(&key("192.168.1.10", Protocol::Udp, 30000)));
        assert!(o.owns(&key("192.168.1.10", Protocol::Tcp, 32767)));
        assert!(!o.owns(&key("192.168.1.10", Protocol::Tcp, 80)));
        assert!(!o.owns(&key("192.168.1.10", Protocol::Tcp, 32768)));
        assert!(!o.owns(&key("10.96.0.2", Protocol::Tcp, 80)));
        assert!(!o.owns(&key("172.16.0.1", Protocol::Tcp, 30080)));

        let fwmark = ServiceKey::Fwmark {
            family: AddressFamily::Ipv4,
            mark: NonZeroU32::MIN,
        };
        assert!(!o.owns_kernel_key(&fwmark));
        let other = ServiceKey::Tuple {
            protocol: Protocol::Other(33),
            addr: ip("10.96.0.1"),
            port: 80,
        };
        assert!(!o.owns_kernel_key(&other));
        assert!(o.owns_kernel_key(&ServiceKey::tcp(ip("10.96.0.1"), 80)));
    }

    #[test]
    fn excluded_addresses_are_never_ours_by_rules_2_and_3() {
        let o = Ownership {
            dummy_addresses: [ip("10.96.0.1"), ip("10.96.0.9")].into(),
            node_addresses: [ip("192.168.1.10")].into(),
            node_port_range: DEFAULT_NODE_PORT_RANGE,
            excluded: vec![
                "10.96.0.8/30".parse().unwrap(),
                "192.168.1.10/32".parse().unwrap(),
            ],
        };
        let key = |a: &str, port| VirtualServerKey {
            addr: ip(a),
            protocol: Protocol::Tcp,
            port,
        };
        assert!(o.owns(&key("10.96.0.1", 80)));
        assert!(
            !o.owns(&key("10.96.0.9", 80)),
            "on kube-ipvs0, but excluded"
        );
        assert!(
            !o.owns(&key("192.168.1.10", 30080)),
            "a NodePort, but excluded"
        );
    }
}
