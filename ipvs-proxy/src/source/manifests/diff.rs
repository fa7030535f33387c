//! What changed between two loads: content hashes, and the per-object diff of a file's old and
//! new definitions.

use super::*;

pub(super) struct Diffed<K> {
    pub(super) changes: Vec<Change<K>>,
    pub(super) kept: Vec<(ObjectKey, u64)>,
}

/// The hasher of content hashes: fast, with a fixed seed. The hashes are compared within one
/// process only, and guarding against crafted collisions buys nothing here (a collision would
/// only make an edit look like no change until the next one).
pub(super) fn content_hasher() -> foldhash::quality::FoldHasher<'static> {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x1f5).build_hasher()
}

/// A hash of a document's text, to tell whether a re-read object changed.
pub(super) fn text_hash(text: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = content_hasher();
    hasher.write(text.as_bytes());
    hasher.finish()
}

/// A hash of an object's content, for an object that has no text of its own (an item of a
/// YAML `List`). Computed by serialising into the hasher: nothing is allocated.
pub(super) fn content_hash<K: serde::Serialize>(object: &K) -> u64 {
    use std::hash::Hasher;
    struct HashWriter(foldhash::quality::FoldHasher<'static>);
    impl std::io::Write for HashWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut writer = HashWriter(content_hasher());
    // Serialising these types cannot fail (string keys, no I/O error from the writer).
    let _ = serde_json::to_writer(&mut writer, object);
    writer.0.finish()
}

/// An object with only its name and namespace: what a deletion needs.
pub(super) fn stub<K>(key: &ObjectKey) -> K
where
    K: Default
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    let mut object = K::default();
    let meta = object.metadata_mut();
    meta.name = Some(key.name.clone());
    meta.namespace = Some(key.namespace.clone());
    object
}

/// What `path` now defines against what it defined: the changes to report (or, while
/// loading, the objects to send, into `loading`), and the hashes to keep. Which file's
/// definition of an object is in force is for [`Owners`] to say: a file that takes over an
/// object from one that stopped defining it goes into `again`, to be read again (its
/// definition is needed, and only hashes are kept).
#[allow(clippy::too_many_arguments)]
pub(super) fn diff_objects<K>(
    path: &Path,
    old: Vec<(ObjectKey, u64)>,
    mut new: Vec<(ObjectKey, K, u64)>,
    owners: &mut Owners,
    skipped: &mut Vec<String>,
    kind: &str,
    mut loading: Option<&mut Vec<K>>,
    again: &mut Vec<PathBuf>,
) -> Diffed<K>
where
    K: serde::Serialize
        + Default
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    let mut changes = Vec::new();
    // Both sorted by key (`old` is a previous `kept`), for lookups by binary search.
    new.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, _) in &old {
        if new.binary_search_by(|(k, _, _)| k.cmp(key)).is_ok() {
            continue;
        }
        match owners.undefine(key, path) {
            Dropped::Nothing => {}
            Dropped::Last => {
                if loading.is_none() {
                    changes.push(Change::Deleted(stub(key)));
                }
            }
            Dropped::HandedTo(next) => again.push(next),
        }
    }
    let old_hash = |key: &ObjectKey| {
        old.binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| old[i].1)
    };
    let mut kept = Vec::with_capacity(new.len());
    for (key, object, hash) in new {
        let send = match owners.define(&key, path) {
            Defined::Owner { unsent } => unsent || old_hash(&key) != Some(hash),
            Defined::TookOver(before) => {
                skipped.push(format!(
                    "{}: {kind} {}/{} is also defined in {}; this file comes first and \
                     keeps it",
                    path.display(),
                    key.namespace,
                    key.name,
                    before.display()
                ));
                true
            }
            Defined::Shadowed(owner) => {
                skipped.push(format!(
                    "{}: {kind} {}/{} is also defined in {}, which comes first and keeps it",
                    path.display(),
                    key.namespace,
                    key.name,
                    owner.display()
                ));
                false
            }
        };
        if send {
            match loading.as_deref_mut() {
                Some(loading) => loading.push(object),
                None => changes.push(Change::Applied(object)),
            }
        }
        kept.push((key, hash));
    }
    Diffed { changes, kept }
}

/// Adds to a folder `listing` the `known` files it lacks that still exist. Reading a folder
/// while files in it are renamed over (the atomic way to write a file) can miss a name: the
/// kernel moves the entry within the folder, behind the reader's position. Taking such a
/// file for removed would delete its Services until the next rescan.
pub(super) fn confirm_missing<'a>(
    listing: &mut HashMap<PathBuf, Fingerprint>,
    known: impl IntoIterator<Item = &'a PathBuf>,
) {
    for path in known {
        if !listing.contains_key(path)
            && let Ok(meta) = std::fs::metadata(path)
            && meta.is_file()
        {
            listing.insert(path.clone(), fingerprint_of(&meta));
        }
    }
}
