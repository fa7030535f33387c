//! The folders under a manifests path, as the reader ([`super::manifests`]) and the watcher
//! ([`super::folder_watch`]) both walk them: one walk, so that the watcher watches exactly
//! the folders whose files are read, under the same paths.
//!
//! Links are followed, as a mounted ConfigMap links each key to `..data/`, with these rules,
//! which keep a walk finite and its outcome the same at every rescan:
//!
//! - Names starting with a dot are skipped (editors' swap files; a ConfigMap's `..data` and
//!   `..2024_…` folders, whose files are reached through their top-level links).
//! - Each folder is read once, identified by device and inode. A folder reached again (a link
//!   to `.` or to a parent, which would loop; a second link to one folder; a bind mount) is
//!   skipped and reported ([`Walked::notes`]). Folders reached by their own path are walked
//!   before those reached through links, and each folder's subfolders in name order, so the
//!   path a folder is read through does not depend on the order the file system lists
//!   entries in.
//! - A link to a folder outside the root is refused and reported: the root is what the
//!   daemon reads and watches, and a link to `/` would make every rescan walk (and the
//!   watcher watch) the whole file system. Mount the other folder inside the root instead.
//!   A link to a *file* is followed wherever it leads: one file costs one read, bounded by
//!   the size limit.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A folder's identity: its device and inode.
pub(super) type FolderId = (u64, u64);

/// The identity of the folder (or file) `meta` describes.
pub(super) fn id_of(meta: &Metadata) -> FolderId {
    (meta.dev(), meta.ino())
}

/// What a walk found besides files and folders.
#[derive(Debug, Default)]
pub(super) struct Walked {
    /// Links not followed, and why (one line each, naming the link).
    pub notes: Vec<String>,
    /// Folders that could not be listed (the walk went on without them).
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// Walks the folders under `root` (see the module documentation): `folder` is called with
/// each folder to be read (the root first) and answers whether to read it; `file` is called
/// with each entry that is not a folder, its name, and its metadata (following links) when
/// `stat` is set or the entry is a link (the type of a plain file comes with the folder's
/// listing). An error listing the root itself is returned; errors below it are gathered in
/// [`Walked::errors`].
pub(super) fn walk(
    root: &Path,
    stat: bool,
    mut folder: impl FnMut(&Path, FolderId) -> bool,
    mut file: impl FnMut(PathBuf, &str, Option<Metadata>),
) -> io::Result<Walked> {
    let mut walked = Walked::default();
    let meta = std::fs::metadata(root)?;
    let canonical_root = std::fs::canonicalize(root)?;
    let mut seen: HashMap<FolderId, PathBuf> = HashMap::new();
    // Folders reached by their own path first, then those reached through links; each a
    // stack, filled in reverse name order so that names come out in order.
    let mut own = vec![(root.to_owned(), id_of(&meta))];
    let mut linked: Vec<(PathBuf, FolderId)> = Vec::new();
    let mut first = true;
    while let Some((dir, id)) = own.pop().or_else(|| linked.pop()) {
        let is_root = std::mem::take(&mut first);
        if let Some(earlier) = seen.get(&id) {
            walked.notes.push(format!(
                "{}: a link to a folder already read as {}; not followed again",
                dir.display(),
                earlier.display()
            ));
            continue;
        }
        seen.insert(id, dir.clone());
        if !folder(&dir, id) {
            continue;
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if is_root => return Err(e),
            Err(e) => {
                walked.errors.push((dir, e));
                continue;
            }
        };
        let mut subfolders: Vec<(String, PathBuf, FolderId, bool)> = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    walked.errors.push((dir.clone(), e));
                    break;
                }
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue; // removed meanwhile
            };
            if kind.is_dir() {
                if let Ok(meta) = entry.metadata() {
                    subfolders.push((name.to_owned(), path, id_of(&meta), false));
                }
                continue;
            }
            if kind.is_file() && !stat {
                file(path, name, None);
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue; // a dangling link, or a file removed meanwhile
            };
            if meta.is_dir() {
                match std::fs::canonicalize(&path) {
                    Ok(target) if target.starts_with(&canonical_root) => {
                        subfolders.push((name.to_owned(), path, id_of(&meta), true));
                    }
                    Ok(target) => walked.notes.push(format!(
                        "{}: a link to the folder {}, outside {}; not followed (links to \
                         folders must stay inside the manifests folder)",
                        path.display(),
                        target.display(),
                        root.display()
                    )),
                    Err(_) => {} // gone meanwhile
                }
            } else {
                file(path, name, Some(meta));
            }
        }
        subfolders.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        for (_, path, id, link) in subfolders {
            if link {
                linked.push((path, id));
            } else {
                own.push((path, id));
            }
        }
    }
    Ok(walked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_folder(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "ipvs-proxy-folder-tree-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    fn files_of(root: &Path) -> (Vec<PathBuf>, Walked) {
        let mut files = Vec::new();
        let walked = walk(root, false, |_, _| true, |path, _, _| files.push(path)).unwrap();
        files.sort();
        (files, walked)
    }

    #[test]
    fn loops_are_walked_once_and_reported_once_each() {
        let dir = temp_folder("loops");
        std::fs::write(dir.join("web.yaml"), "a").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/db.yaml"), "b").unwrap();
        std::os::unix::fs::symlink(".", dir.join("self-1")).unwrap();
        std::os::unix::fs::symlink(".", dir.join("self-2")).unwrap();
        std::os::unix::fs::symlink("..", dir.join("sub/up")).unwrap();
        let (files, walked) = files_of(&dir);
        assert_eq!(files, [dir.join("sub/db.yaml"), dir.join("web.yaml")]);
        assert_eq!(walked.notes.len(), 3, "{:?}", walked.notes);
        assert!(walked.notes.iter().all(|n| n.contains("already read")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_is_read_through_its_own_path_before_a_link() {
        let dir = temp_folder("own");
        std::fs::create_dir(dir.join("team")).unwrap();
        std::fs::write(dir.join("team/web.yaml"), "a").unwrap();
        // `a-link` comes first in name order, but `team` is the folder's own path.
        std::os::unix::fs::symlink("team", dir.join("a-link")).unwrap();
        // A folder under a dot-folder is read through a link to it.
        std::fs::create_dir_all(dir.join(".versions/v2")).unwrap();
        std::fs::write(dir.join(".versions/v2/db.yaml"), "b").unwrap();
        std::os::unix::fs::symlink(".versions/v2", dir.join("current")).unwrap();
        let (files, walked) = files_of(&dir);
        assert_eq!(
            files,
            [dir.join("current/db.yaml"), dir.join("team/web.yaml")]
        );
        assert_eq!(walked.notes.len(), 1);
        assert!(walked.notes[0].contains("a-link"), "{:?}", walked.notes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_to_folders_outside_are_refused_and_links_to_files_followed() {
        let dir = temp_folder("outside");
        let elsewhere = temp_folder("outside-target");
        std::fs::write(elsewhere.join("web.yaml"), "a").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("other")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("web.yaml"), dir.join("linked.yaml")).unwrap();
        let (files, walked) = files_of(&dir);
        assert_eq!(files, [dir.join("linked.yaml")]);
        assert_eq!(walked.notes.len(), 1);
        assert!(walked.notes[0].contains("outside"), "{:?}", walked.notes);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&elsewhere).unwrap();
    }
}
