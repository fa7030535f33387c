//! The objects, the global resource version and the event history watches are served from.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

use crate::selector::{FieldSelector, LabelSelector};

/// A kind of object the stand-in serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The API version within the group.
    pub version: &'static str,
    /// The resource name in paths (`services`).
    pub plural: &'static str,
    /// The object kind (`Service`).
    pub kind: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

impl Kind {
    /// `apiVersion` as objects carry it (`v1`, `discovery.k8s.io/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Every kind served: core/v1 Services, Nodes, Namespaces and ConfigMaps, and
/// discovery.k8s.io/v1 EndpointSlices.
pub const KINDS: &[Kind] = &[
    Kind {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
    },
    Kind {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
    },
    Kind {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
    },
    Kind {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
    },
    Kind {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
    },
];

/// The index in [`KINDS`] of the kind served at `group/version/plural`.
pub(crate) fn kind_by_path(group: &str, version: &str, plural: &str) -> Option<usize> {
    KINDS
        .iter()
        .position(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The index in [`KINDS`] of `apiVersion` + `kind`.
pub(crate) fn kind_by_type(api_version: &str, kind: &str) -> Option<usize> {
    KINDS
        .iter()
        .position(|k| k.kind == kind && k.api_version() == api_version)
}

/// Where an object is stored: kind, namespace (empty for cluster-scoped kinds), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) kind: usize,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One write, as kept in the history.
#[derive(Debug, Clone)]
pub(crate) struct HistoryEvent {
    pub(crate) rv: u64,
    pub(crate) key: Key,
    pub(crate) kind: EventType,
    /// The object the event carries: the new state, or for a deletion the last state stamped
    /// with the deletion's resource version.
    pub(crate) object: Value,
    /// The stored object before the write (`None` for a creation).
    pub(crate) old: Option<Value>,
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The object is not a JSON object with `apiVersion`, `kind` and `metadata.name`.
    #[error("invalid object: {0}")]
    Invalid(String),
    /// `apiVersion` + `kind` is not one of [`KINDS`].
    #[error("kind {0} is not served by the stand-in")]
    UnknownKind(String),
    /// `create` of an object that exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// `delete` of an object that does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The object could not be turned into JSON.
    #[error("cannot serialize the object: {0}")]
    Serialize(String),
}

/// The answer when a resource version is older than the history kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expired {
    pub(crate) requested: u64,
    pub(crate) oldest: u64,
}

impl Expired {
    /// The `Status` object the real server sends (code 410, reason `Expired`).
    pub(crate) fn status(&self) -> Value {
        status_object(
            410,
            "Expired",
            &format!(
                "too old resource version: {} ({})",
                self.requested, self.oldest
            ),
        )
    }
}

/// A `Status` failure object.
pub(crate) fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// What a list or watch selects: a kind, maybe a namespace, and selectors.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub(crate) kind: usize,
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Filter {
    fn matches(&self, key: &Key, object: &Value) -> bool {
        key.kind == self.kind
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub(crate) resource_version: u64,
    pub(crate) items: Vec<Value>,
    pub(crate) continue_token: Option<String>,
    pub(crate) remaining: usize,
}

/// Objects, resource version and history.
#[derive(Debug, Default)]
pub(crate) struct Store {
    /// The resource version of the last write (0 before any).
    pub(crate) rv: u64,
    uids: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<HistoryEvent>,
    /// The history holds every event with a resource version above this.
    pub(crate) compacted: u64,
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(field.to_owned(), value);
    }
}

/// `object` with `metadata.resourceVersion` set to `rv`.
fn stamped(mut object: Value, rv: u64) -> Value {
    set_meta(
        &mut object,
        "resourceVersion",
        Value::String(rv.to_string()),
    );
    object
}

impl Store {
    /// Checks an object and finds its key; fills in the namespace of namespaced kinds.
    fn key_of(object: &mut Value) -> Result<Key, Error> {
        let map = object
            .as_object_mut()
            .ok_or_else(|| Error::Invalid("not a JSON object".into()))?;
        let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind_name = map.get("kind").and_then(Value::as_str).unwrap_or("");
        let kind = kind_by_type(api_version, kind_name)
            .ok_or_else(|| Error::UnknownKind(format!("{api_version}/{kind_name}")))?;
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .ok_or_else(|| Error::Invalid("metadata is not an object".into()))?;
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::Invalid("metadata.name is missing".into()))?
            .to_owned();
        let namespace = if KINDS[kind].namespaced {
            let ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_owned();
            meta.insert("namespace".into(), Value::String(ns.clone()));
            ns
        } else {
            meta.remove("namespace");
            String::new()
        };
        Ok(Key {
            kind,
            namespace,
            name,
        })
    }

    fn describe(key: &Key) -> String {
        let kind = KINDS[key.kind].kind;
        if key.namespace.is_empty() {
            format!("{kind} {}", key.name)
        } else {
            format!("{kind} {}/{}", key.namespace, key.name)
        }
    }

    /// Creates (`must_not_exist`) or creates-or-replaces an object; returns what was stored.
    pub(crate) fn write(
        &mut self,
        mut object: Value,
        must_not_exist: bool,
    ) -> Result<Value, Error> {
        let key = Self::key_of(&mut object)?;
        let old = self.objects.get(&key).cloned();
        if must_not_exist && old.is_some() {
            return Err(Error::AlreadyExists(Self::describe(&key)));
        }
        self.rv += 1;
        let rv = self.rv;
        match &old {
            Some(old) => {
                for field in ["uid", "creationTimestamp"] {
                    if let Some(value) = old.get("metadata").and_then(|m| m.get(field)) {
                        set_meta(&mut object, field, value.clone());
                    }
                }
            }
            None => {
                self.uids += 1;
                let uid = format!("5a11d000-0000-4000-8000-{:012x}", self.uids);
                set_meta(&mut object, "uid", Value::String(uid));
                let now = jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                set_meta(
                    &mut object,
                    "creationTimestamp",
                    Value::String(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
            }
        }
        let object = stamped(object, rv);
        self.objects.insert(key.clone(), object.clone());
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.history.push_back(HistoryEvent {
            rv,
            key,
            kind,
            object: object.clone(),
            old,
        });
        Ok(object)
    }

    /// Deletes an object; returns its last state, stamped with the deletion's version.
    pub(crate) fn delete(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, Error> {
        let kind_index = kind_by_type(api_version, kind)
            .ok_or_else(|| Error::UnknownKind(format!("{api_version}/{kind}")))?;
        let namespace = if KINDS[kind_index].namespaced {
            namespace.filter(|n| !n.is_empty()).unwrap_or("default")
        } else {
            ""
        };
        let key = Key {
            kind: kind_index,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let old = self
            .objects
            .remove(&key)
            .ok_or_else(|| Error::NotFound(Self::describe(&key)))?;
        self.rv += 1;
        let object = stamped(old.clone(), self.rv);
        self.history.push_back(HistoryEvent {
            rv: self.rv,
            key,
            kind: EventType::Deleted,
            object: object.clone(),
            old: Some(old),
        });
        Ok(object)
    }

    /// One stored object.
    pub(crate) fn get(&self, kind: usize, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&Key {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Forgets the history: a watch or continue from before now is answered 410 Expired.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Checks that the history still holds everything after `rv`.
    pub(crate) fn check_retained(&self, rv: u64) -> Result<(), Expired> {
        if rv < self.compacted {
            Err(Expired {
                requested: rv,
                oldest: self.compacted,
            })
        } else {
            Ok(())
        }
    }

    /// The objects of one kind as they were at `rv` (the current ones undone back to `rv`).
    fn snapshot(&self, kind: usize, rv: u64) -> Result<BTreeMap<Key, Value>, Expired> {
        self.check_retained(rv)?;
        let mut objects: BTreeMap<Key, Value> = self
            .objects
            .iter()
            .filter(|(k, _)| k.kind == kind)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for event in self.history.iter().rev().take_while(|e| e.rv > rv) {
            if event.key.kind != kind {
                continue;
            }
            match &event.old {
                Some(old) => objects.insert(event.key.clone(), old.clone()),
                None => objects.remove(&event.key),
            };
        }
        Ok(objects)
    }

    /// A page of the objects `filter` selects at `rv` (now when `None`), after `after`
    /// (namespace, name), at most `limit` (all when `None`).
    pub(crate) fn list(
        &self,
        filter: &Filter,
        rv: Option<u64>,
        after: Option<(&str, &str)>,
        limit: Option<usize>,
    ) -> Result<Page, Expired> {
        let at = rv.unwrap_or(self.rv);
        let objects = if at == self.rv {
            self.objects
                .iter()
                .filter(|(k, _)| k.kind == filter.kind)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            self.snapshot(filter.kind, at)?
        };
        let mut selected = objects.into_iter().filter(|(k, v)| {
            filter.matches(k, v)
                && after
                    .is_none_or(|(ns, name)| (k.namespace.as_str(), k.name.as_str()) > (ns, name))
        });
        let mut items = Vec::new();
        let mut last: Option<Key> = None;
        for (key, object) in selected.by_ref() {
            if limit.is_some_and(|l| items.len() >= l) {
                // One more exists: count it and the rest.
                let remaining = 1 + selected.count();
                let token = last.map(|k| format!("{at}|{}|{}", k.namespace, k.name));
                return Ok(Page {
                    resource_version: at,
                    items,
                    continue_token: token,
                    remaining,
                });
            }
            items.push(object);
            last = Some(key);
        }
        Ok(Page {
            resource_version: at,
            items,
            continue_token: None,
            remaining: 0,
        })
    }

    /// The objects `filter` selects now, as synthetic `ADDED` events (a watch from "0").
    pub(crate) fn initial_events(&self, filter: &Filter) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, v)| filter.matches(k, v))
            .map(|(_, v)| json!({"type": "ADDED", "object": v}))
            .collect()
    }

    /// The watch events after `rv` that `filter` selects. An object that stops matching is
    /// sent as `DELETED` (its previous state, stamped with the event's version), one that
    /// starts matching as `ADDED`, as the real server does for filtered watches.
    pub(crate) fn events_after(&self, rv: u64, filter: &Filter) -> Result<Vec<Value>, Expired> {
        self.check_retained(rv)?;
        let start = self.history.partition_point(|e| e.rv <= rv);
        let mut out = Vec::new();
        for event in self.history.iter().skip(start) {
            if event.key.kind != filter.kind {
                continue;
            }
            let now = event.kind != EventType::Deleted && filter.matches(&event.key, &event.object);
            let before = match event.kind {
                EventType::Deleted => filter.matches(&event.key, &event.object),
                _ => event
                    .old
                    .as_ref()
                    .is_some_and(|old| filter.matches(&event.key, old)),
            };
            let (kind, object) = match (event.kind, before, now) {
                (EventType::Deleted, true, _) => (EventType::Deleted, event.object.clone()),
                (_, false, true) => (EventType::Added, event.object.clone()),
                (_, true, true) => (EventType::Modified, event.object.clone()),
                (EventType::Modified, true, false) => {
                    let old = event.old.clone().unwrap_or(Value::Null);
                    (EventType::Deleted, stamped(old, event.rv))
                }
                _ => continue,
            };
            out.push(json!({"type": kind.as_str(), "object": object}));
        }
        Ok(out)
    }

    /// A `BOOKMARK` event for `kind` at `rv`.
    pub(crate) fn bookmark(kind: usize, rv: u64, initial_events_end: bool) -> Value {
        let k = &KINDS[kind];
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            set_meta_map(
                &mut metadata,
                "annotations",
                json!({"k8s.io/initial-events-end": "true"}),
            );
        }
        json!({
            "type": "BOOKMARK",
            "object": {"kind": k.kind, "apiVersion": k.api_version(), "metadata": metadata},
        })
    }
}

fn set_meta_map(metadata: &mut Value, field: &str, value: Value) {
    if let Some(map) = metadata.as_object_mut() {
        map.insert(field.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": "ns", "labels": labels}})
    }

    fn filter(labels: &str) -> Filter {
        Filter {
            kind: 0,
            namespace: None,
            labels: LabelSelector::parse(labels).expect("parses"),
            fields: FieldSelector::default(),
        }
    }

    fn types(events: &[Value]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or("").to_owned(),
                    e["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn writes_stamp_versions_uids_and_timestamps() {
        let mut store = Store::default();
        let a = store.write(service("a", json!({})), true).expect("create");
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        assert!(a["metadata"]["uid"].is_string());
        assert!(a["metadata"]["creationTimestamp"].is_string());
        let a2 = store
            .write(service("a", json!({"x": "y"})), false)
            .expect("update");
        assert_eq!(a2["metadata"]["resourceVersion"], "2");
        assert_eq!(a2["metadata"]["uid"], a["metadata"]["uid"]);
        assert!(matches!(
            store.write(service("a", json!({})), true),
            Err(Error::AlreadyExists(_))
        ));
        let gone = store
            .delete("v1", "Service", Some("ns"), "a")
            .expect("delete");
        assert_eq!(gone["metadata"]["resourceVersion"], "3");
        assert!(matches!(
            store.delete("v1", "Service", Some("ns"), "a"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            store.write(
                json!({"apiVersion": "v9", "kind": "Pod", "metadata": {"name": "p"}}),
                false
            ),
            Err(Error::UnknownKind(_))
        ));
    }

    #[test]
    fn history_expiry_answers_410_and_keeps_later_events() {
        let mut store = Store::default();
        store.write(service("a", json!({})), false).expect("write");
        store.write(service("b", json!({})), false).expect("write");
        assert_eq!(
            types(&store.events_after(0, &filter("")).expect("kept")).len(),
            2
        );
        store.compact();
        assert_eq!(
            store.events_after(1, &filter("")),
            Err(Expired {
                requested: 1,
                oldest: 2
            })
        );
        // A watch that has seen everything is not expired by a compaction.
        assert_eq!(store.events_after(2, &filter("")), Ok(vec![]));
        store.write(service("c", json!({})), false).expect("write");
        assert_eq!(
            types(&store.events_after(2, &filter("")).expect("kept")),
            vec![("ADDED".to_owned(), "c".to_owned())]
        );
        // A list at a version before the compaction cannot be served either.
        assert!(store.list(&filter(""), Some(1), None, None).is_err());
        let status = Expired {
            requested: 1,
            oldest: 2,
        }
        .status();
        assert_eq!(status["code"], 410);
        assert_eq!(status["reason"], "Expired");
    }

    #[test]
    fn filtered_events_follow_the_selector() {
        let mut store = Store::default();
        store.write(service("a", json!({})), false).expect("write"); // 1: ADDED
        store
            .write(service("a", json!({"hidden": "yes"})), false)
            .expect("write"); // 2: stops matching
        store.write(service("a", json!({})), false).expect("write"); // 3: matches again
        store
            .write(service("h", json!({"hidden": "yes"})), false)
            .expect("write"); // 4: never
        store
            .delete("v1", "Service", Some("ns"), "h")
            .expect("delete"); // 5: never matched
        store
            .delete("v1", "Service", Some("ns"), "a")
            .expect("delete"); // 6
        let events = store.events_after(0, &filter("!hidden")).expect("kept");
        assert_eq!(
            types(&events),
            vec![
                ("ADDED".to_owned(), "a".to_owned()),
                ("DELETED".to_owned(), "a".to_owned()),
                ("ADDED".to_owned(), "a".to_owned()),
                ("DELETED".to_owned(), "a".to_owned()),
            ]
        );
        assert_eq!(events[1]["object"]["metadata"]["resourceVersion"], "2");
    }

    #[test]
    fn pages_are_consistent_snapshots() {
        let mut store = Store::default();
        for name in ["a", "b", "c"] {
            store.write(service(name, json!({})), false).expect("write");
        }
        let first = store.list(&filter(""), None, None, Some(2)).expect("list");
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.remaining, 1);
        assert_eq!(first.resource_version, 3);
        let token = first.continue_token.expect("more to come");
        // Changes after the first page do not show in the next one.
        store
            .delete("v1", "Service", Some("ns"), "c")
            .expect("delete");
        store.write(service("d", json!({})), false).expect("write");
        let (rv, ns, name) = {
            let mut parts = token.splitn(3, '|');
            (
                parts.next().and_then(|p| p.parse().ok()),
                parts.next().unwrap_or_default().to_owned(),
                parts.next().unwrap_or_default().to_owned(),
            )
        };
        let second = store
            .list(&filter(""), rv, Some((&ns, &name)), Some(2))
            .expect("list");
        assert_eq!(second.continue_token, None);
        let names: Vec<_> = second
            .items
            .iter()
            .map(|i| i["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("c")]);
        assert_eq!(second.items[0]["metadata"]["resourceVersion"], "3");
    }
}
