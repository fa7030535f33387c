//! Listing the folder: which files are manifests, their fingerprints, and the walk in path
//! order.

use super::*;

pub(super) fn fingerprint_of(meta: &std::fs::Metadata) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    Fingerprint {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
    }
}

pub(super) fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// A listing of the folder: each manifest file with its fingerprint, and the notes of links
/// not followed.
pub(super) type Listing = (HashMap<PathBuf, Fingerprint>, Vec<String>);

/// The manifest files under `root` with their fingerprints (a `stat` of each), calling
/// `pause` after every [`LISTING_PAUSE_EVERY`] files (the watcher's changes are taken in
/// there: listing tens of thousands of files can take seconds on a slow machine, and a change
/// should not wait for it).
///
/// A hash map: a rescan of a large folder looks up every path in it and in the files loaded,
/// and a `BTreeMap` would compare paths component by component at every step.
pub(super) fn list_files(root: &Path, mut pause: impl FnMut()) -> Result<Listing, ManifestError> {
    let mut out = HashMap::new();
    let notes = walk(root, true, |path, meta| {
        if let Some(meta) = meta {
            out.insert(path, fingerprint_of(&meta));
            if out.len().is_multiple_of(LISTING_PAUSE_EVERY) {
                pause();
            }
        }
    })?;
    Ok((out, notes))
}

/// How many files a full rescan lists between two looks at the watcher's changes.
pub(super) const LISTING_PAUSE_EVERY: usize = 1024;

/// The manifest files under `root`, in path order, without a `stat` of each regular file
/// (the type comes with the folder's entries): for a first load, which reads every file
/// anyway. With the notes of links not followed.
pub(super) fn list_paths(root: &Path) -> Result<(Vec<PathBuf>, Vec<String>), ManifestError> {
    let mut out = Vec::new();
    let notes = walk(root, false, |path, _| out.push(path))?;
    sort_paths(&mut out);
    Ok((out, notes))
}

/// Sorts paths by their bytes: the order files are read in, which decides which of two
/// files defining the same object keeps it (see [`owners`]). Any fixed order would do;
/// bytes compare several times faster than `Path`'s component by component.
pub(super) fn sort_paths(paths: &mut [PathBuf]) {
    paths.sort_unstable_by(|a, b| owners::path_order(a, b));
}

/// Calls `found` with each manifest file under `root` (following links as
/// [`folder_tree::walk`] does) and, if `stat` or the file is reached through a link, its
/// metadata. Returns the notes of the links not followed. A folder that cannot be listed
/// fails the whole listing: taking its files for removed would unload them.
pub(super) fn walk(
    root: &Path,
    stat: bool,
    mut found: impl FnMut(PathBuf, Option<std::fs::Metadata>),
) -> Result<Vec<String>, ManifestError> {
    let error = |path: &Path, e: std::io::Error| ManifestError {
        path: path.to_owned(),
        line: None,
        message: format!("cannot read: {e}; keeping what was loaded"),
    };
    let meta = std::fs::metadata(root).map_err(|e| error(root, e))?;
    if meta.is_file() {
        found(root.to_owned(), Some(meta));
        return Ok(Vec::new());
    }
    let walked = folder_tree::walk(
        root,
        stat,
        |_, _| true,
        |path, name, meta| {
            let is_file = meta.as_ref().is_none_or(std::fs::Metadata::is_file);
            if is_file && is_manifest_name(name) {
                found(path, meta);
            }
        },
    )
    .map_err(|e| error(root, e))?;
    if let Some((path, e)) = walked.errors.into_iter().next() {
        return Err(error(&path, e));
    }
    Ok(walked.notes)
}
