//! The compact form the store keeps an EndpointSlice in.
//!
//! A k8s-openapi `Endpoint` is about 340 bytes inline, almost all of it fields that are
//! empty once trimmed (target reference, hostname, deprecated topology), and each of its
//! strings is a heap block of its own, and slices are most of what a node keeps (the memory
//! figures are in BENCHMARKS.md). This form keeps exactly what
//! [`compute_service`](crate::compute_service) reads, in a fraction of the space: the endpoint's first address as an IP when it is one (the text otherwise), node
//! names and zones shared between endpoints, and the rest as is. [`CompactSlice::expand`]
//! gives back the (trimmed) EndpointSlice for the computation, which reads it the same way.

use std::collections::BTreeMap;

use foldhash::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{SERVICE_NAME_LABEL, TRIGGER_TIME_ANNOTATION};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// One shared copy of each string many endpoints repeat (node names, zones).
#[derive(Debug, Default)]
pub(crate) struct Interner {
    strings: HashSet<Arc<str>>,
    /// The size after the last pruning; the set is pruned when it has doubled since.
    pruned_at: usize,
}

impl Interner {
    /// The shared copy of `text`.
    pub(crate) fn share(&mut self, text: String) -> Arc<str> {
        if let Some(shared) = self.strings.get(text.as_str()) {
            return shared.clone();
        }
        if self.strings.len() >= 2 * self.pruned_at.max(64) {
            self.prune();
        }
        let shared: Arc<str> = Arc::from(text);
        self.strings.insert(shared.clone());
        shared
    }

    /// Forgets the strings nothing uses any more (nodes come and go over a cluster's life).
    pub(crate) fn prune(&mut self) {
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.pruned_at = self.strings.len();
    }

    /// How many strings are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.strings.len()
    }
}

/// An endpoint address: an IP when the text is one written canonically (so that writing it
/// back gives the same text), the text itself otherwise (the computation reports it).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Ip(IpAddr),
    Text(Box<str>),
}

impl Address {
    fn new(text: String) -> Self {
        match text.parse::<IpAddr>() {
            Ok(ip) if ip.to_string() == text => Address::Ip(ip),
            _ => Address::Text(text.into_boxed_str()),
        }
    }

    fn text(&self) -> String {
        match self {
            Address::Ip(ip) => ip.to_string(),
            Address::Text(text) => text.to_string(),
        }
    }
}

/// One endpoint: what the computation reads of it.
#[derive(Debug, Clone, PartialEq)]
struct CompactEndpoint {
    /// The first address (the computation uses the first one only, as kube-proxy does).
    address: Option<Address>,
    conditions: Option<EndpointConditions>,
    node_name: Option<Arc<str>>,
    zone: Option<Arc<str>>,
    hints: Option<Box<EndpointHints>>,
}

/// An EndpointSlice, trimmed (see [`trim_slice`](super::trim_slice): it keeps one label and
/// one annotation) and compacted. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CompactSlice {
    name: Option<String>,
    namespace: Option<String>,
    /// The one label kept ([`SERVICE_NAME_LABEL`]): a one-entry `BTreeMap` allocates a
    /// node for eleven.
    service_name: Option<String>,
    /// The one annotation kept ([`TRIGGER_TIME_ANNOTATION`]).
    trigger_time: Option<String>,
    address_type: String,
    ports: Option<Box<[EndpointPort]>>,
    /// A boxed slice, not a `Vec`: collecting the endpoints in place would keep the whole
    /// allocation of the k8s-openapi ones (a `Vec` reuses its source's buffer).
    endpoints: Option<Box<[CompactEndpoint]>>,
}

impl CompactSlice {
    /// The compact form of a trimmed slice.
    pub(crate) fn new(slice: EndpointSlice, interner: &mut Interner) -> Self {
        let endpoints = slice.endpoints.map(|endpoints| {
            endpoints
                .into_iter()
                .map(|e| CompactEndpoint {
                    address: e.addresses.into_iter().next().map(Address::new),
                    conditions: e.conditions,
                    node_name: e.node_name.map(|n| interner.share(n)),
                    zone: e.zone.map(|z| interner.share(z)),
                    hints: e.hints.map(Box::new),
                })
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        let take =
            |map: Option<BTreeMap<String, String>>, key: &str| map.and_then(|mut m| m.remove(key));
        Self {
            name: slice.metadata.name,
            namespace: slice.metadata.namespace,
            service_name: take(slice.metadata.labels, SERVICE_NAME_LABEL),
            trigger_time: take(slice.metadata.annotations, TRIGGER_TIME_ANNOTATION),
            address_type: slice.address_type,
            ports: slice.ports.map(Vec::into_boxed_slice),
            endpoints,
        }
    }

    /// The slice as the computation reads it.
    pub(crate) fn expand(&self) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                labels: self
                    .service_name
                    .as_ref()
                    .map(|v| BTreeMap::from([(SERVICE_NAME_LABEL.to_owned(), v.clone())])),
                annotations: self
                    .trigger_time
                    .as_ref()
                    .map(|v| BTreeMap::from([(TRIGGER_TIME_ANNOTATION.to_owned(), v.clone())])),
                ..ObjectMeta::default()
            },
            address_type: self.address_type.clone(),
            ports: self.ports.as_deref().map(<[EndpointPort]>::to_vec),
            endpoints: self.endpoints.as_ref().map(|endpoints| {
                endpoints
                    .iter()
                    .map(|e| Endpoint {
                        addresses: e.address.iter().map(Address::text).collect(),
                        conditions: e.conditions.clone(),
                        node_name: e.node_name.as_deref().map(str::to_owned),
                        zone: e.zone.as_deref().map(str::to_owned),
                        hints: e.hints.as_deref().cloned(),
                        ..Endpoint::default()
                    })
                    .collect()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::reads::trim_slice;
    use crate::testing::slice;
    use k8s_openapi::api::discovery::v1::ForZone;

    #[test]
    fn expands_to_the_trimmed_slice_with_the_first_address() {
        let mut interner = Interner::default();
        let mut s = slice("ns", "a-1", "a", &["10.1.0.1", "2001:db8::1", "10.1.0.3"]);
        let endpoints = s.endpoints.as_mut().unwrap();
        endpoints[0].node_name = Some("node-a".into());
        endpoints[1].node_name = Some("node-a".into());
        endpoints[1].zone = Some("zone-1".into());
        endpoints[1].hints = Some(EndpointHints {
            for_zones: Some(vec![ForZone {
                name: "zone-1".into(),
            }]),
            ..EndpointHints::default()
        });
        // Written in a way that does not come back the same from an IP: kept as text.
        endpoints[2].addresses = vec!["2001:DB8::0:1".into(), "10.9.9.9".into()];
        endpoints.push(Endpoint {
            addresses: vec!["not an address".into()],
            ..Endpoint::default()
        });
        endpoints.push(Endpoint::default());
        let trimmed = trim_slice(s);
        let compact = CompactSlice::new(trimmed.clone(), &mut interner);
        let expanded = compact.expand();
        let mut want = trimmed;
        for e in want.endpoints.as_mut().unwrap() {
            e.addresses.truncate(1);
        }
        assert_eq!(expanded, want);
        assert_eq!(
            expanded.endpoints.as_ref().unwrap()[2].addresses,
            ["2001:DB8::0:1"]
        );
        // One copy of "node-a" and one of "zone-1".
        assert_eq!(interner.len(), 2);
        // Equal slices compare equal, a changed condition does not.
        let mut other = want.clone();
        assert_eq!(CompactSlice::new(other.clone(), &mut interner), compact);
        other.endpoints.as_mut().unwrap()[0].conditions = Some(EndpointConditions {
            ready: Some(false),
            ..EndpointConditions::default()
        });
        assert_ne!(CompactSlice::new(other, &mut interner), compact);
    }

    #[test]
    fn the_interner_forgets_what_nothing_uses() {
        let mut interner = Interner::default();
        let kept = interner.share("node-a".into());
        drop(interner.share("node-b".into()));
        interner.prune();
        assert_eq!(interner.len(), 1);
        assert!(Arc::ptr_eq(&kept, &interner.share("node-a".into())));
        // Grows and prunes itself: never more than twice what is in use (and a floor).
        for i in 0..10_000 {
            drop(interner.share(format!("node-{i}")));
        }
        assert!(interner.len() <= 128, "{}", interner.len());
    }
}
