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

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use foldhash::{HashMap, HashMapExt};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

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
    /// The folder each watch is on.
    folders: HashMap<WatchDescriptor, PathBuf>,
    buffer: Vec<u8>,
}

impl FolderWatch {
    /// Watches `folder` and every folder under it (following links, as ConfigMap volumes
    /// link their content through `..data`).
    pub(super) fn start(folder: &Path) -> io::Result<Self> {
        let mut watch = Self {
            inotify: Inotify::init()?,
            folders: HashMap::new(),
            buffer: vec![0; 64 * 1024],
        };
        watch.add_tree(folder)?;
        Ok(watch)
    }

    /// Watches `folder` and the folders under it. Only `folder` itself must succeed: a
    /// subfolder that vanished meanwhile is simply not watched.
    fn add_tree(&mut self, folder: &Path) -> io::Result<()> {
        let wd = self.inotify.watches().add(folder, content_events())?;
        self.folders.insert(wd, folder.to_owned());
        let mut stack = vec![folder.to_owned()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if std::fs::metadata(&path).is_ok_and(|m| m.is_dir())
                    && let Ok(wd) = self.inotify.watches().add(&path, content_events())
                    && self.folders.insert(wd, path.clone()).is_none()
                {
                    stack.push(path);
                }
            }
        }
        Ok(())
    }

    /// Waits at most `timeout` for a change and returns what the events read so far name;
    /// `None` if nothing happened.
    pub(super) fn wait(&mut self, timeout: Duration) -> Option<Seen> {
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) => None,
            // Ready, or interrupted: read whatever is there.
            Ok(_) | Err(_) => self.take(),
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
            let _ = self.add_tree(&folder);
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
            // The watched folder went away (its watch with it).
            if mask.contains(EventMask::IGNORED) {
                self.folders.remove(wd);
            }
            return None;
        }
        let (Some(folder), Some(name)) = (self.folders.get(wd), name) else {
            return None;
        };
        let path = folder.join(name);
        if mask.contains(EventMask::ISDIR) {
            if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
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
}
