//! Watching a folder of manifests for changes, with inotify.
//!
//! [`FolderWatch`] asks the kernel only for the events that can change what the files say:
//! a file written and closed, renamed in or out, created, deleted, its attributes changed,
//! the folder itself removed or moved. Opening or reading a file is not asked for: the
//! daemon's own reading would wake it (and a rescan would trigger the next, forever), and at
//! a first load of 10,000 files those events alone kept a thread busy. A file modified in
//! place and kept open is seen when it is closed, or by the periodic full rescan.
//!
//! The events are read on the caller's thread, many per `read`, and each is reduced to the
//! path it names; a folder that appears, an overflowed queue or the folder itself going
//! away asks for a full rescan instead ([`Seen::Everything`]).
//!
//! The folders watched are those [`super::folder_tree::walk`] reads, under the same paths. A
//! watch follows an inode, not a path: when the watched folder itself is removed or moved
//! away, or another folder takes its path (a volume unmounted and mounted again, a folder
//! renamed over it), the watch is started again on whatever folder has the path now, as soon
//! as there is one (its identity is checked every [`ROOT_CHECK`] while waiting), and a full
//! rescan is asked for.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use foldhash::{HashMap, HashMapExt};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::folder_tree::{self, FolderId};

/// How often, while waiting for events, the watcher checks that the watched folder is still
/// the one at its path (a folder mounted over it, or renamed over it, sends no event).
pub(super) const ROOT_CHECK: Duration = Duration::from_millis(500);

/// Paths in the order they were first seen, each once.
pub(super) type ChangedPaths = indexmap::IndexSet<PathBuf, foldhash::fast::RandomState>;

/// What the watcher saw.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// These paths may have changed, in the order the events named them first (a burst is
    /// then read first come, first served).
    Paths(ChangedPaths),
    /// Anything may have changed (events were lost, or a folder appeared or went away).
    Everything,
}

impl Seen {
    /// Both: paths are merged; anything wins.
    pub(super) fn merge(self, other: Seen) -> Seen {
        match (self, other) {
            (Seen::Paths(mut a), Seen::Paths(b)) => {
                a.extend(b);
                Seen::Paths(a)
            }
            _ => Seen::Everything,
        }
    }
}

/// The events that may change content (see the module documentation).
fn content_events() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

/// An inotify watch of a folder and every folder under it.
#[derive(Debug)]
pub(super) struct FolderWatch {
    inotify: Inotify,
    /// The folder watched, by path.
    root: PathBuf,
    /// The watch on the folder at `root` and its identity; `None` while there is none (the
    /// folder went away).
    armed: Option<(WatchDescriptor, FolderId)>,
    /// The folder each watch is on.
    folders: HashMap<WatchDescriptor, PathBuf>,
    buffer: Vec<u8>,
}

impl FolderWatch {
    /// Watches `folder` and every folder under it (following links, as ConfigMap volumes
    /// link their content through `..data`). A folder that does not exist (yet) is watched
    /// once it does.
    pub(super) fn start(folder: &Path) -> io::Result<Self> {
        let mut watch = Self {
            inotify: Inotify::init()?,
            root: folder.to_owned(),
            armed: None,
            folders: HashMap::new(),
            buffer: vec![0; 64 * 1024],
        };
        match watch.arm() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(watch)
    }

    /// Starts watching the folder now at the root's path, from scratch: a new inotify
    /// instance, so that no watch on a folder that had the path before is left (also when
    /// there is no folder at the path).
    fn arm(&mut self) -> io::Result<()> {
        if !self.folders.is_empty() || self.armed.is_some() {
            self.armed = None;
            match Inotify::init() {
                Ok(inotify) => {
                    self.inotify = inotify;
                    self.folders.clear();
                }
                Err(e) => {
                    // The old instance stays, without its watches.
                    for (wd, _) in self.folders.drain() {
                        let _ = self.inotify.watches().remove(wd);
                    }
                    return Err(e);
                }
            }
        }
        let meta = std::fs::metadata(&self.root)?;
        let wd = self.inotify.watches().add(&self.root, content_events())?;
        self.folders.insert(wd.clone(), self.root.clone());
        self.armed = Some((wd, folder_tree::id_of(&meta)));
        let root = self.root.clone();
        self.add_tree(&root);
        Ok(())
    }

    /// Whether the folder watched is the one at the root's path now.
    fn root_is_current(&self) -> bool {
        let Some((_, id)) = &self.armed else {
            return false;
        };
        std::fs::metadata(&self.root).is_ok_and(|m| folder_tree::id_of(&m) == *id)
    }

    /// Watches `folder` (already watched or not) and the folders under it that the reader
    /// reads. A folder that cannot be watched (it vanished meanwhile) is simply not watched;
    /// one already watched under another path that still leads to it (a second link to it)
    /// keeps that path.
    fn add_tree(&mut self, folder: &Path) {
        // A folder reached through a link from outside the root is not read, so not watched.
        if folder != self.root
            && !std::fs::canonicalize(folder).is_ok_and(|f| {
                std::fs::canonicalize(&self.root).is_ok_and(|root| f.starts_with(root))
            })
        {
            return;
        }
        let _ = folder_tree::walk(
            folder,
            false,
            |path, id| {
                let Ok(wd) = self.inotify.watches().add(path, content_events()) else {
                    return false;
                };
                if let Some(known) = self.folders.get(&wd)
                    && known != path
                    && std::fs::metadata(known).is_ok_and(|m| folder_tree::id_of(&m) == id)
                {
                    return false;
                }
                self.folders.insert(wd, path.to_owned());
                true
            },
            |_, _, _| {},
        );
    }

    /// Waits at most `timeout` for a change and returns what the events read so far name;
    /// `None` if nothing happened. When the watched folder was replaced or has come back
    /// (see the module documentation), the watch starts again and everything may have
    /// changed.
    pub(super) fn wait(&mut self, timeout: Duration) -> Option<Seen> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if !self.root_is_current() {
                let was_watching = self.armed.is_some() || !self.folders.is_empty();
                // On failure (the folder is gone, and not back yet), this has dropped the
                // watches of what was left.
                if self.arm().is_ok() || was_watching {
                    return Some(Seen::Everything);
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let slice = left.min(ROOT_CHECK);
            let millis = u16::try_from(slice.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(millis)) {
                Ok(0) if left > slice => continue,
                Ok(0) => return None,
                // Ready, or interrupted: read whatever is there.
                Ok(_) | Err(_) => match self.take() {
                    Some(seen) => return Some(seen),
                    None if left > slice => continue,
                    None => return None,
                },
            }
        }
    }

    /// What the events queued now name, without waiting; `None` if there are none.
    pub(super) fn take(&mut self) -> Option<Seen> {
        let mut paths = ChangedPaths::default();
        let mut everything = false;
        let mut new_folders = Vec::new();
        let mut buffer = std::mem::take(&mut self.buffer);
        loop {
            let events = match self.inotify.read_events(&mut buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A read error may hide a change.
                Err(_) => {
                    everything = true;
                    break;
                }
            };
            let mut any = false;
            for event in events {
                any = true;
                match self.reduce(&event.wd, event.mask, event.name, &mut new_folders) {
                    Some(path) => {
                        paths.insert(path);
                    }
                    None => everything = true,
                }
            }
            if !any {
                break;
            }
        }
        self.buffer = buffer;
        for folder in new_folders {
            // Events in it before the watch was added are covered by the full rescan its
            // appearance asked for.
            self.add_tree(&folder);
        }
        if everything {
            Some(Seen::Everything)
        } else if paths.is_empty() {
            None
        } else {
            Some(Seen::Paths(paths))
        }
    }

    /// What one event means: the path it names, or `None` when anything may have changed.
    fn reduce(
        &mut self,
        wd: &WatchDescriptor,
        mask: EventMask,
        name: Option<&OsStr>,
        new_folders: &mut Vec<PathBuf>,
    ) -> Option<PathBuf> {
        if mask.contains(EventMask::Q_OVERFLOW) {
            return None;
        }
        if mask.intersects(EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
            // A watched folder went away (its watch with it); the root's is started again
            // by `wait` (see `root_is_current`).
            if mask.contains(EventMask::IGNORED) {
                self.folders.remove(wd);
                if self.armed.as_ref().is_some_and(|(root, _)| root == wd) {
                    self.armed = None;
                }
            }
            return None;
        }
        let (Some(folder), Some(name)) = (self.folders.get(wd), name) else {
            return None;
        };
        let path = folder.join(name);
        let appeared = mask.intersects(EventMask::CREATE | EventMask::MOVED_TO);
        // A link to a folder is a folder to the reader.
        let folder_link = || {
            std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink())
                && std::fs::metadata(&path).is_ok_and(|m| m.is_dir())
        };
        if mask.contains(EventMask::ISDIR) || (appeared && folder_link()) {
            // Dot-folders are not read (see `folder_tree`), so not watched.
            if appeared && !name.to_str().is_some_and(|n| n.starts_with('.')) {
                new_folders.push(path);
            }
            return None;
        }
        Some(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_folder(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "ipvs-proxy-folder-watch-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// Waits up to 10 s for events, gathering them, until `done` says enough was seen.
    fn gather(watch: &mut FolderWatch, done: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut all = Seen::Paths(ChangedPaths::default());
        while !done(&all) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "not seen in time; so far {all:?}");
            if let Some(seen) = watch.wait(left) {
                all = all.merge(seen);
            }
        }
        all
    }

    #[test]
    fn reads_do_not_wake_it_and_writes_renames_and_deletes_name_their_file() {
        let dir = temp_folder("files");
        std::fs::write(dir.join("web.yaml"), "a").unwrap();
        let mut watch = FolderWatch::start(&dir).unwrap();
        for _ in 0..3 {
            std::fs::read_to_string(dir.join("web.yaml")).unwrap();
            std::fs::read_dir(&dir).unwrap().for_each(drop);
        }
        assert_eq!(
            watch.wait(Duration::from_millis(200)),
            None,
            "reads woke it"
        );

        // Written beside and renamed over, as editors and the benchmark do.
        std::fs::write(dir.join(".web.yaml.tmp"), "b").unwrap();
        std::fs::rename(dir.join(".web.yaml.tmp"), dir.join("web.yaml")).unwrap();
        std::fs::write(dir.join("db.yaml"), "c").unwrap();
        let seen = gather(
            &mut watch,
            |s| matches!(s, Seen::Paths(p) if p.contains(&dir.join("web.yaml")) && p.contains(&dir.join("db.yaml"))),
        );
        assert!(matches!(seen, Seen::Paths(_)));

        std::fs::remove_file(dir.join("db.yaml")).unwrap();
        gather(
            &mut watch,
            |s| matches!(s, Seen::Paths(p) if p.contains(&dir.join("db.yaml"))),
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_folder_asks_for_everything_and_is_watched_from_then_on() {
        let dir = temp_folder("folders");
        let mut watch = FolderWatch::start(&dir).unwrap();
        std::fs::create_dir(dir.join("team-a")).unwrap();
        gather(&mut watch, |s| *s == Seen::Everything);
        // Events of the new folder's files are seen from now on.
        std::fs::write(dir.join("team-a").join("web.yaml"), "a").unwrap();
        let file = dir.join("team-a").join("web.yaml");
        gather(
            &mut watch,
            |s| matches!(s, Seen::Paths(p) if p.contains(&file)),
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_folder_going_away_asks_for_everything() {
        let dir = temp_folder("gone");
        let mut watch = FolderWatch::start(&dir).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        gather(&mut watch, |s| *s == Seen::Everything);
    }

    #[test]
    fn a_folder_removed_and_created_again_is_watched_again() {
        let dir = temp_folder("recreated");
        let mut watch = FolderWatch::start(&dir).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        gather(&mut watch, |s| *s == Seen::Everything);
        std::fs::create_dir(&dir).unwrap();
        // The new folder is watched, and a full rescan asked for (it may hold anything).
        gather(&mut watch, |s| *s == Seen::Everything);
        std::fs::write(dir.join("web.yaml"), "a").unwrap();
        let file = dir.join("web.yaml");
        gather(
            &mut watch,
            |s| matches!(s, Seen::Paths(p) if p.contains(&file)),
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_renamed_over_the_watched_one_is_watched_instead() {
        let dir = temp_folder("renamed-over");
        let old = dir.join("manifests");
        let new = dir.join("manifests.new");
        std::fs::create_dir(&old).unwrap();
        std::fs::create_dir(&new).unwrap();
        let mut watch = FolderWatch::start(&old).unwrap();
        // As a volume remounted: another folder takes the path, without an event for it.
        std::fs::rename(&old, dir.join("manifests.old")).unwrap();
        std::fs::rename(&new, &old).unwrap();
        gather(&mut watch, |s| *s == Seen::Everything);
        // Writes in the folder that left are not taken for writes in the watched path.
        std::fs::write(dir.join("manifests.old/gone.yaml"), "a").unwrap();
        std::fs::write(old.join("web.yaml"), "a").unwrap();
        let file = old.join("web.yaml");
        let seen = gather(
            &mut watch,
            |s| matches!(s, Seen::Paths(p) if p.contains(&file)),
        );
        assert!(
            matches!(&seen, Seen::Paths(p) if !p.contains(&old.join("gone.yaml"))),
            "{seen:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_link_to_the_folder_itself_does_not_rename_its_events() {
        let dir = temp_folder("self-link");
        std::os::unix::fs::symlink(".", dir.join("again")).unwrap();
        std::fs::create_dir(dir.join("team")).unwrap();
        std::os::unix::fs::symlink("..", dir.join("team/up")).unwrap();
        let mut watch = FolderWatch::start(&dir).unwrap();
        std::fs::write(dir.join("web.yaml"), "a").unwrap();
        std::fs::write(dir.join("team/db.yaml"), "a").unwrap();
        let (web, db) = (dir.join("web.yaml"), dir.join("team/db.yaml"));
        let seen = gather(
            &mut watch,
            |s| matches!(s, Seen::Paths(p) if p.contains(&web) && p.contains(&db)),
        );
        let Seen::Paths(paths) = seen else {
            unreachable!()
        };
        assert_eq!(paths.len(), 2, "each file under its own path: {paths:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_that_does_not_exist_yet_is_watched_once_it_does() {
        let dir = temp_folder("later");
        let later = dir.join("manifests");
        let mut watch = FolderWatch::start(&later).unwrap();
        assert_eq!(watch.wait(Duration::from_millis(50)), None);
        std::fs::create_dir(&later).unwrap();
        gather(&mut watch, |s| *s == Seen::Everything);
        std::fs::write(later.join("web.yaml"), "a").unwrap();
        let file = later.join("web.yaml");
        gather(
            &mut watch,
            |s| matches!(s, Seen::Paths(p) if p.contains(&file)),
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
