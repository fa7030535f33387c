//! The node this controller runs on.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What the desired-state computation needs to know about this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// The node's name, compared with `EndpointSlice.endpoints[].nodeName` to find the node-local
    /// endpoints used by the `Local` traffic policies.
    pub name: String,
    /// The node's zone (label `topology.kubernetes.io/zone`), compared with the endpoints'
    /// `hints.forZones`. `None` disables topology-aware routing on this node.
    #[serde(default)]
    pub zone: Option<String>,
    /// The node's local addresses: candidates for NodePort virtual servers (see
    /// [`ProxyConfig::node_port_addresses`](crate::ProxyConfig::node_port_addresses) for which
    /// ones are used). The caller must leave out the addresses of the dummy interface itself, or
    /// every bound VIP would also become a NodePort address. A Service address that is one of
    /// these is not bound on the dummy interface again.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

impl NodeInfo {
    /// A node named `name` with no zone and no addresses.
    pub fn new(name: impl Into<String>) -> Self {
        NodeInfo {
            name: name.into(),
            zone: None,
            addresses: Vec::new(),
        }
    }
}
