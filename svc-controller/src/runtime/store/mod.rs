//! The objects the engine keeps: Services and EndpointSlices, trimmed to what the desired-state
//! computation reads ([`reads`](crate::desired::reads)), indexed by the Service they belong to.
//!
//! Sources feed it [`Change`]s; each change answers which Services it touched, so the engine
//! recomputes those and nothing else. An update that changes nothing the computation reads
//! (a status condition, a managed-fields entry, an unrelated annotation) is trimmed away
//! before comparison and costs no work at all.

mod compact_slice;

use std::collections::BTreeSet;

// foldhash: keys are object names (from the API server or files); its per-process random seed
// is the DoS resistance a map of names needs, at a fraction of SipHash's cost per lookup.
use foldhash::{HashMap, HashMapExt, HashSet};

use compact_slice::{CompactSlice, Interner};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::message::Change;
use crate::config::{TRIGGER_TIME_ANNOTATION, ZONE_LABEL};
use crate::desired::reads::{trim_service, trim_slice};
use crate::{
    DesiredState, NodeInfo, ProxyConfig, ServiceDesired, ServiceRef, compute_service, service_ref,
    slice_service,
};

/// The identity of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `metadata.namespace` (empty when missing).
    pub namespace: String,
    /// `metadata.name` (empty when missing).
    pub name: String,
}

impl ObjectKey {
    /// The key of an object's metadata.
    pub fn of(meta: &ObjectMeta) -> Self {
        Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// What the engine needs of its Node object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The zone label ([`ZONE_LABEL`]).
    pub zone: Option<String>,
    /// Whether the Node has a deletion timestamp (`/healthz` then reports unhealthy, as
    /// kube-proxy's does, so load balancers stop sending traffic to a node going away).
    pub deleting: bool,
}

impl NodeFacts {
    /// The facts of a Node object.
    pub fn of(node: &Node) -> Self {
        Self {
            zone: node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ZONE_LABEL))
                .cloned(),
            deleting: node.metadata.deletion_timestamp.is_some(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct StoredSlice {
    owner: Option<ServiceRef>,
    slice: CompactSlice,
}

/// Services and EndpointSlices, trimmed, with the slices indexed by their Service. Slices are
/// kept in a compact form (the endpoint's first address as an IP, node names and zones shared
/// between endpoints, boxed slices): they are most of what a node keeps.
#[derive(Debug, Default)]
pub struct ObjectStore {
    /// Boxed: a `Service` is 824 bytes inline, and a map's spare slots would each hold one.
    services: HashMap<ServiceRef, Box<Service>>,
    slices: HashMap<ObjectKey, StoredSlice>,
    /// The keys of each Service's slices (a vector: a Service has a few slices, and a
    /// one-entry `BTreeSet` allocates a node for eleven).
    slices_by_service: HashMap<ServiceRef, Vec<ObjectKey>>,
    interner: Interner,
}

impl ObjectStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many Services are kept.
    pub fn services_len(&self) -> usize {
        self.services.len()
    }

    /// How many EndpointSlices are kept.
    pub fn slices_len(&self) -> usize {
        self.slices.len()
    }

    /// Every Service known (for a full recomputation).
    pub fn service_refs(&self) -> impl Iterator<Item = &ServiceRef> + '_ {
        self.services.keys()
    }

    /// Applies a change to Services; returns the Services whose input changed.
    pub fn change_services(&mut self, change: Change<Service>) -> BTreeSet<ServiceRef> {
        let mut touched = BTreeSet::new();
        match change {
            Change::Applied(service) => {
                let service = Box::new(trim_service(service));
                let key = service_ref(&service);
                if self.services.get(&key) != Some(&service) {
                    self.services.insert(key.clone(), service);
                    touched.insert(key);
                }
            }
            Change::Deleted(service) => {
                let key = service_ref(&service);
                if self.services.remove(&key).is_some() {
                    touched.insert(key);
                }
            }
            Change::Synced => {}
            Change::Reset(services) => {
                let mut fresh: HashMap<ServiceRef, Box<Service>> =
                    HashMap::with_capacity(services.len());
                for service in services {
                    let service = Box::new(trim_service(service));
                    fresh.insert(service_ref(&service), service);
                }
                for key in self.services.keys() {
                    if !fresh.contains_key(key) {
                        touched.insert(key.clone());
                    }
                }
                for (key, service) in &fresh {
                    if self.services.get(key) != Some(service) {
                        touched.insert(key.clone());
                    }
                }
                self.services = fresh;
            }
        }
        touched
    }

    /// Applies a change to EndpointSlices; returns the Services whose input changed (a slice
    /// whose `kubernetes.io/service-name` label changed touches both Services).
    pub fn change_slices(&mut self, change: Change<EndpointSlice>) -> BTreeSet<ServiceRef> {
        let mut touched = BTreeSet::new();
        match change {
            Change::Applied(slice) => self.put_slice(slice, &mut touched),
            Change::Deleted(slice) => {
                self.remove_slice(&ObjectKey::of(&slice.metadata), &mut touched);
            }
            Change::Synced => self.interner.prune(),
            Change::Reset(slices) => {
                let fresh: HashSet<ObjectKey> =
                    slices.iter().map(|s| ObjectKey::of(&s.metadata)).collect();
                let gone: Vec<ObjectKey> = self
                    .slices
                    .keys()
                    .filter(|k| !fresh.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.remove_slice(&key, &mut touched);
                }
                for slice in slices {
                    self.put_slice(slice, &mut touched);
                }
                self.interner.prune();
            }
        }
        touched
    }

    fn put_slice(&mut self, slice: EndpointSlice, touched: &mut BTreeSet<ServiceRef>) {
        let slice = trim_slice(slice);
        let key = ObjectKey::of(&slice.metadata);
        let stored = StoredSlice {
            owner: slice_service(&slice),
            slice: CompactSlice::new(slice, &mut self.interner),
        };
        if self.slices.get(&key) == Some(&stored) {
            return;
        }
        self.remove_slice(&key, touched);
        if let Some(owner) = &stored.owner {
            let keys = self.slices_by_service.entry(owner.clone()).or_default();
            if let Err(at) = keys.binary_search(&key) {
                keys.insert(at, key.clone());
            }
            touched.insert(owner.clone());
        }
        self.slices.insert(key, stored);
    }

    fn remove_slice(&mut self, key: &ObjectKey, touched: &mut BTreeSet<ServiceRef>) {
        let Some(old) = self.slices.remove(key) else {
            return;
        };
        if let Some(owner) = old.owner {
            if let Some(set) = self.slices_by_service.get_mut(&owner) {
                set.retain(|k| k != key);
                if set.is_empty() {
                    self.slices_by_service.remove(&owner);
                }
            }
            touched.insert(owner);
        }
    }

    /// The EndpointSlices of one Service (trimmed).
    pub fn slices_of(&self, service: &ServiceRef) -> Vec<EndpointSlice> {
        self.slices_by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k))
            .map(|s| s.slice.expand())
            .collect()
    }

    /// One Service's desired virtual servers; `None` when the Service is not known (it was
    /// deleted, or never existed: its virtual servers must go).
    pub fn compute(
        &self,
        service: &ServiceRef,
        node: &NodeInfo,
        config: &ProxyConfig,
    ) -> Option<ServiceDesired> {
        let svc = self.services.get(service)?;
        let slices = self.slices_of(service);
        let slices: Vec<&EndpointSlice> = slices.iter().collect();
        Some(compute_service(svc, &slices, node, config))
    }

    /// The desired state of each of `services` (`None`: the Service is not stored), in
    /// order. Many at once (a first load's last part, an adoption) are computed on up to
    /// four threads: the store is only read, and the engine is the daemon's critical path
    /// once the sources have stopped reading and a CPU is free.
    pub fn compute_many<'a>(
        &self,
        services: impl IntoIterator<Item = &'a ServiceRef>,
        node: &NodeInfo,
        config: &ProxyConfig,
    ) -> Vec<Option<ServiceDesired>> {
        let services: Vec<&ServiceRef> = services.into_iter().collect();
        let one = |service: &&ServiceRef| self.compute(service, node, config);
        let threads = super::system::available_cpus()
            .min(4)
            .min(services.len() / (PARALLEL_COMPUTE_MIN / 2));
        if threads < 2 {
            return services.iter().map(one).collect();
        }
        let chunk = services.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let mut parts = services.chunks(chunk);
            let mine = parts.next().unwrap_or_default();
            let others: Vec<_> = parts
                .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
                .collect();
            let mut out: Vec<Option<ServiceDesired>> = mine.iter().map(one).collect();
            for other in others {
                match other.join() {
                    Ok(part) => out.extend(part),
                    // As if computed on this thread: a bug in the computation is not hidden.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            out
        })
    }

    /// The desired state of the whole node.
    pub fn compute_all(&self, node: &NodeInfo, config: &ProxyConfig) -> DesiredState {
        let mut state = DesiredState::new();
        for desired in self
            .compute_many(self.services.keys(), node, config)
            .into_iter()
            .flatten()
        {
            state.update(desired);
        }
        state
    }
}

/// Below this many Services, one thread computes their desired state (starting others costs
/// more than it saves).
const PARALLEL_COMPUTE_MIN: usize = 512;

/// The time of the change behind an EndpointSlice ([`TRIGGER_TIME_ANNOTATION`]), when present
/// and well-formed (RFC 3339).
pub fn trigger_time(slice: &EndpointSlice) -> Option<std::time::SystemTime> {
    let text = slice
        .metadata
        .annotations
        .as_ref()?
        .get(TRIGGER_TIME_ANNOTATION)?;
    humantime::parse_rfc3339(text.trim())
        .or_else(|_| humantime::parse_rfc3339_weak(text.trim()))
        .ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testing::{service, slice};

    #[test]
    fn irrelevant_updates_touch_nothing() {
        let mut store = ObjectStore::new();
        let a = ServiceRef::new("default", "a");
        assert_eq!(
            store.change_services(Change::Applied(service("default", "a", "10.0.0.1"))),
            BTreeSet::from([a.clone()])
        );
        let mut same = service("default", "a", "10.0.0.1");
        same.metadata.resource_version = Some("8".into());
        same.metadata.annotations = Some(BTreeMap::from([("other".into(), "y".into())]));
        assert!(store.change_services(Change::Applied(same)).is_empty());
        let mut slice_a = slice("default", "a-1", "a", &["10.1.0.1"]);
        assert_eq!(
            store.change_slices(Change::Applied(slice_a.clone())),
            BTreeSet::from([a.clone()])
        );
        slice_a.endpoints.as_mut().unwrap()[0].hostname = Some("other".into());
        assert!(store.change_slices(Change::Applied(slice_a)).is_empty());
    }

    #[test]
    fn relabelled_slice_touches_both_services() {
        let mut store = ObjectStore::new();
        store.change_slices(Change::Applied(slice("ns", "s", "a", &["10.1.0.1"])));
        let touched = store.change_slices(Change::Applied(slice("ns", "s", "b", &["10.1.0.1"])));
        assert_eq!(
            touched,
            BTreeSet::from([ServiceRef::new("ns", "a"), ServiceRef::new("ns", "b")])
        );
        assert!(store.slices_of(&ServiceRef::new("ns", "a")).is_empty());
        assert_eq!(store.slices_of(&ServiceRef::new("ns", "b")).len(), 1);
    }

    #[test]
    fn reset_reports_deleted_changed_and_new() {
        let mut store = ObjectStore::new();
        store.change_services(Change::Reset(vec![
            service("ns", "keep", "10.0.0.1"),
            service("ns", "gone", "10.0.0.2"),
            service("ns", "edit", "10.0.0.3"),
        ]));
        let touched = store.change_services(Change::Reset(vec![
            service("ns", "keep", "10.0.0.1"),
            service("ns", "edit", "10.0.0.4"),
            service("ns", "new", "10.0.0.5"),
        ]));
        assert_eq!(
            touched,
            BTreeSet::from([
                ServiceRef::new("ns", "edit"),
                ServiceRef::new("ns", "gone"),
                ServiceRef::new("ns", "new"),
            ])
        );
        assert_eq!(store.services_len(), 3);
        store.change_slices(Change::Reset(vec![
            slice("ns", "k-1", "keep", &["10.1.0.1"]),
            slice("ns", "g-1", "gone", &["10.1.0.2"]),
        ]));
        let touched = store.change_slices(Change::Reset(vec![slice(
            "ns",
            "k-1",
            "keep",
            &["10.1.0.1"],
        )]));
        assert_eq!(touched, BTreeSet::from([ServiceRef::new("ns", "gone")]));
    }

    #[test]
    fn many_services_computed_together_match_each_computed_alone() {
        let mut store = ObjectStore::new();
        let count = PARALLEL_COMPUTE_MIN * 2 + 7;
        let names: Vec<String> = (0..count).map(|i| format!("svc-{i:04}")).collect();
        for (i, name) in names.iter().enumerate() {
            let ip = format!("10.0.{}.{}", i / 250, i % 250 + 1);
            store.change_services(Change::Applied(service("ns", name, &ip)));
            let backend = format!("10.1.{}.{}", i / 250, i % 250 + 1);
            store.change_slices(Change::Applied(slice(
                "ns",
                &format!("{name}-1"),
                name,
                &[backend.as_str()],
            )));
        }
        let node = NodeInfo::new("n");
        let config = ProxyConfig::default();
        // Every other one, and one that is not stored.
        let mut wanted: Vec<ServiceRef> = names
            .iter()
            .step_by(2)
            .map(|n| ServiceRef::new("ns", n))
            .collect();
        wanted.insert(3, ServiceRef::new("ns", "missing"));
        let together = store.compute_many(&wanted, &node, &config);
        let alone: Vec<_> = wanted
            .iter()
            .map(|s| store.compute(s, &node, &config))
            .collect();
        assert_eq!(together.len(), wanted.len());
        assert!(together[3].is_none());
        assert_eq!(together, alone);
        assert_eq!(
            store.compute_all(&node, &config).virtual_servers().len(),
            count
        );
    }

    #[test]
    fn compute_joins_slices() {
        let mut store = ObjectStore::new();
        store.change_services(Change::Applied(service("ns", "a", "10.0.0.1")));
        store.change_slices(Change::Applied(slice(
            "ns",
            "a-1",
            "a",
            &["10.1.0.1", "10.1.0.2"],
        )));
        let node = NodeInfo::new("n");
        let desired = store
            .compute(&ServiceRef::new("ns", "a"), &node, &ProxyConfig::default())
            .unwrap();
        let vs = desired.virtual_servers.values().next().unwrap();
        assert_eq!(vs.real_servers.len(), 2);
        assert!(
            store
                .compute(&ServiceRef::new("ns", "b"), &node, &ProxyConfig::default())
                .is_none()
        );
        assert_eq!(
            store
                .compute_all(&node, &ProxyConfig::default())
                .virtual_servers()
                .len(),
            1
        );
    }

    #[test]
    fn trigger_time_parses_rfc3339() {
        let mut s = slice("ns", "a", "a", &[]);
        assert_eq!(trigger_time(&s), None);
        s.metadata.annotations = Some(BTreeMap::from([(
            TRIGGER_TIME_ANNOTATION.into(),
            "2026-11-22T08:00:00Z".into(),
        )]));
        let t = trigger_time(&s).unwrap();
        assert_eq!(
            humantime::format_rfc3339(t).to_string(),
            "2026-11-22T08:00:00Z"
        );
        s.metadata.annotations = Some(BTreeMap::from([(
            TRIGGER_TIME_ANNOTATION.into(),
            "yesterday".into(),
        )]));
        assert_eq!(trigger_time(&s), None);
    }
}
