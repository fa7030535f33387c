//! Parsing a file's text into Services and EndpointSlices: JSON values one after the other,
//! YAML documents, `List`s, and each object's key and content hash.

use super::*;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TypeMeta {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// A top-level JSON value as one scan reads it: its kind and, for a `List`, its items (each
/// kept as its raw text); every other field is skipped. Reading the items in the same scan as
/// the kind spares a scan of the whole file (a generated folder is mostly `List`s).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TopLevel<'a> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(borrow, default)]
    items: Items<'a>,
}

/// The `items` field of a top-level JSON value.
#[derive(Debug, Default)]
pub(super) enum Items<'a> {
    /// Absent, or `null`.
    #[default]
    Absent,
    /// An array: each item's raw text.
    Array(Vec<&'a RawValue>),
    /// Anything else (an error for a `List`; other kinds do not read it).
    NotArray,
}

impl<'de: 'a, 'a> Deserialize<'de> for Items<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct ItemsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ItemsVisitor<'a> {
            type Value = Items<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items<'a>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    items.push(item);
                }
                Ok(Items::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Items<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Items::NotArray)
            }
            fn visit_unit<E>(self) -> Result<Items<'a>, E> {
                Ok(Items::Absent)
            }
            fn visit_none<E>(self) -> Result<Items<'a>, E> {
                Ok(Items::Absent)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Items<'a>, E> {
                Ok(Items::NotArray)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Items<'a>, E> {
                Ok(Items::NotArray)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Items<'a>, E> {
                Ok(Items::NotArray)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Items<'a>, E> {
                Ok(Items::NotArray)
            }
            fn visit_str<E>(self, _: &str) -> Result<Items<'a>, E> {
                Ok(Items::NotArray)
            }
        }
        deserializer.deserialize_any(ItemsVisitor(std::marker::PhantomData))
    }
}

/// One YAML document of a file: its text and the line it starts on (1-based).
pub(super) fn documents(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_marker =
            line == "---" || line.starts_with("--- ") || line.starts_with("---\t") || line == "...";
        if is_marker {
            out.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    out.push((start, current));
    out.retain(|(_, doc)| {
        doc.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    out
}

/// Parses one manifest file's text (JSON for `*.json`, else YAML). Any error fails the whole
/// file (nothing of it is used).
pub(super) fn parse_manifests(path: &Path, text: &str) -> Result<Parsed, ManifestError> {
    let mut parsed = if is_json(path) {
        parse_json(path, text)
    } else {
        parse_yaml(path, text)
    }?;
    parsed.seen = HashSet::new();
    Ok(parsed)
}

/// A JSON file: one or more JSON values one after the other, each an object or a `List`.
/// Parsed by `serde_json`, many times faster than the YAML parser on the same text (which
/// matters for folders of thousands of generated files).
pub(super) fn parse_json(path: &Path, text: &str) -> Result<Parsed, ManifestError> {
    let mut parsed = Parsed::default();
    let syntax = |e: serde_json::Error| ManifestError {
        path: path.to_owned(),
        line: Some(e.line().max(1)),
        message: e.to_string(),
    };
    // Each value's kind (and a List's items) is read as the value is scanned (no tree is
    // built); its text, from where the scan started to where it ended, is then decoded once
    // into its type.
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<TopLevel<'_>>();
    let mut from = 0;
    while let Some(meta) = values.next() {
        let to = values.byte_offset();
        // The line the value ends on; good enough to find it in a file of a few values.
        let start = text[..to].lines().count().max(1);
        let meta = meta.map_err(syntax)?;
        let value = text.get(from..to).unwrap_or_default();
        from = to;
        let kind = meta.kind.unwrap_or_default();
        let api_version = meta.api_version.unwrap_or_default();
        if kind == "List" {
            let items = match meta.items {
                Items::Array(items) => items,
                Items::Absent => Vec::new(),
                Items::NotArray => {
                    return Err(ManifestError {
                        path: path.to_owned(),
                        line: Some(start),
                        message: "a List whose `items` is not an array".into(),
                    });
                }
            };
            for (i, item) in items.into_iter().enumerate() {
                let item_meta: TypeMeta =
                    serde_json::from_str(item.get()).map_err(|e| ManifestError {
                        path: path.to_owned(),
                        line: Some(start),
                        message: format!("item {i} of the List: {e}"),
                    })?;
                add_list_item(&mut parsed, path, start, i, item_meta, || {
                    Document::Json(item.get())
                })?;
            }
            continue;
        }
        add_document(&mut parsed, path, start, &kind, &api_version, || {
            Document::Json(value)
        })?;
    }
    Ok(parsed)
}

/// Adds item `index` of a `List` document that starts on line `start`; its errors say which
/// item.
pub(super) fn add_list_item<'a>(
    parsed: &mut Parsed,
    path: &Path,
    start: usize,
    index: usize,
    meta: TypeMeta,
    doc: impl FnOnce() -> Document<'a>,
) -> Result<(), ManifestError> {
    let kind = meta.kind.unwrap_or_default();
    let api_version = meta.api_version.unwrap_or_default();
    add_document(parsed, path, start, &kind, &api_version, doc).map_err(|e| ManifestError {
        message: format!("item {index} of the List: {}", e.message),
        ..e
    })
}

/// A YAML file: documents separated by `---`.
pub(super) fn parse_yaml(path: &Path, text: &str) -> Result<Parsed, ManifestError> {
    let mut parsed = Parsed::default();
    let located = |start: usize, e: &serde_yaml_ng::Error| ManifestError {
        path: path.to_owned(),
        line: Some(start + e.location().map_or(0, |l| l.line().saturating_sub(1))),
        message: e.to_string(),
    };
    for (start, doc) in documents(text) {
        let meta: TypeMeta = serde_yaml_ng::from_str(&doc).map_err(|e| located(start, &e))?;
        let kind = meta.kind.unwrap_or_default();
        let api_version = meta.api_version.unwrap_or_default();
        if kind == "List" {
            #[derive(Deserialize)]
            struct List {
                #[serde(default)]
                items: Vec<serde_yaml_ng::Value>,
            }
            let list: List = serde_yaml_ng::from_str(&doc).map_err(|e| located(start, &e))?;
            for (i, item) in list.items.into_iter().enumerate() {
                let item_meta: TypeMeta = serde_yaml_ng::from_value(item.clone())
                    .map_err(|e| in_list(path, start, i, &e))?;
                add_list_item(&mut parsed, path, start, i, item_meta, || {
                    Document::Value(item.clone())
                })?;
            }
            continue;
        }
        add_document(&mut parsed, path, start, &kind, &api_version, || {
            Document::Text(doc.clone())
        })?;
    }
    Ok(parsed)
}

pub(super) fn in_list(
    path: &Path,
    start: usize,
    index: usize,
    e: &serde_yaml_ng::Error,
) -> ManifestError {
    ManifestError {
        path: path.to_owned(),
        line: Some(start),
        message: format!("item {index} of the List: {e}"),
    }
}

pub(super) enum Document<'a> {
    Text(String),
    Value(serde_yaml_ng::Value),
    /// The raw text of one JSON value.
    Json(&'a str),
}

impl Document<'_> {
    /// The hash of the document's own text, which tells a re-read object changed without
    /// serialising it again (a visible share of a first load's parsing): any edit of the
    /// text counts, even of a field the computation does not read (the engine then finds
    /// nothing to do). `None` for an item of a YAML `List`, which has no text of its own.
    fn text_hash(&self) -> Option<u64> {
        match self {
            Document::Text(text) => Some(text_hash(text)),
            Document::Json(text) => Some(text_hash(text)),
            Document::Value(_) => None,
        }
    }
}

pub(super) fn decode<K: serde::de::DeserializeOwned>(
    path: &Path,
    start: usize,
    doc: Document<'_>,
) -> Result<K, ManifestError> {
    match doc {
        Document::Text(text) => serde_yaml_ng::from_str(&text).map_err(|e| ManifestError {
            path: path.to_owned(),
            line: Some(start + e.location().map_or(0, |l| l.line().saturating_sub(1))),
            message: e.to_string(),
        }),
        Document::Value(value) => serde_yaml_ng::from_value(value).map_err(|e| ManifestError {
            path: path.to_owned(),
            line: Some(start),
            message: e.to_string(),
        }),
        Document::Json(text) => serde_json::from_str(text).map_err(|e| ManifestError {
            path: path.to_owned(),
            line: Some(start),
            message: e.to_string(),
        }),
    }
}

pub(super) fn add_document<'a>(
    parsed: &mut Parsed,
    path: &Path,
    start: usize,
    kind: &str,
    api_version: &str,
    doc: impl FnOnce() -> Document<'a>,
) -> Result<(), ManifestError> {
    let error = |message: String| ManifestError {
        path: path.to_owned(),
        line: Some(start),
        message,
    };
    match (kind, api_version) {
        ("Service", "v1") => {
            let doc = doc();
            let hash = doc.text_hash();
            let mut service: Service = decode(path, start, doc)?;
            let key = keyed(&mut service.metadata).map_err(error)?;
            if !parsed.seen.insert((true, key.clone())) {
                return Err(error(format!(
                    "Service {}/{} is defined twice in this file",
                    key.namespace, key.name
                )));
            }
            // Trimmed at once, on the parsing thread: a folder's objects are never all held
            // whole.
            let service = trim_service(service);
            let hash = hash.unwrap_or_else(|| content_hash(&service));
            parsed.services.push((key, service, hash));
        }
        ("EndpointSlice", "discovery.k8s.io/v1") => {
            let doc = doc();
            let hash = doc.text_hash();
            let mut slice: EndpointSlice = decode(path, start, doc)?;
            let key = keyed(&mut slice.metadata).map_err(error)?;
            if !parsed.seen.insert((false, key.clone())) {
                return Err(error(format!(
                    "EndpointSlice {}/{} is defined twice in this file",
                    key.namespace, key.name
                )));
            }
            let slice = trim_slice(slice);
            let hash = hash.unwrap_or_else(|| content_hash(&slice));
            parsed.slices.push((key, slice, hash));
        }
        ("Service" | "EndpointSlice", _) => {
            return Err(error(format!(
                "{kind} with apiVersion {api_version:?}: expected {}",
                if kind == "Service" {
                    "v1"
                } else {
                    "discovery.k8s.io/v1"
                }
            )));
        }
        ("", _) => return Err(error("a document without `kind`".into())),
        (other, _) => parsed.skipped.push(format!(
            "{}:{start}: kind {other} skipped (only Service and EndpointSlice are read)",
            path.display()
        )),
    }
    Ok(())
}

/// Defaults the namespace to `default`; a name is required.
pub(super) fn keyed(
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<ObjectKey, String> {
    if meta.name.as_deref().is_none_or(str::is_empty) {
        return Err("an object without metadata.name".into());
    }
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".into());
    }
    Ok(ObjectKey::of(meta))
}
