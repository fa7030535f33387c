//! Which file's definition of an object is in force when several files define it: the first
//! file in path order (by bytes, as [`super::sort_paths`] sorts), always: at the first load,
//! at every change, and after a restart, whatever order the changes came in.
//!
//! When that file goes or stops defining the object, the next file in path order takes over
//! without a deletion in between. Only content hashes are kept of the files' objects, so the
//! file taking over is read again ([`Dropped::HandedTo`]); until its definition has been sent,
//! the engine keeps the previous one.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashSet};

use svc_controller::runtime::ObjectKey;

/// The order of paths: by bytes (see [`super::sort_paths`]).
pub(super) fn path_order(a: &Path, b: &Path) -> Ordering {
    a.as_os_str().cmp(b.as_os_str())
}

/// The files defining each object of one kind.
#[derive(Debug, Default)]
pub(super) struct Owners {
    /// The file whose definition is in force, per object.
    pub(super) owner: HashMap<ObjectKey, PathBuf>,
    /// The other files defining an object, in path order (only objects defined twice).
    others: HashMap<ObjectKey, Vec<PathBuf>>,
    /// Objects whose owner's definition has not been sent yet (it took over from a file that
    /// no longer defines them, and is being read again).
    unsent: HashSet<ObjectKey>,
}

/// What [`Owners::define`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Defined {
    /// The file's definition is in force; `unsent` when the engine does not have it yet
    /// whatever its hash (it was another file's until now).
    Owner {
        /// The engine has another file's definition.
        unsent: bool,
    },
    /// The file now comes first in path order: its definition replaces this file's.
    TookOver(PathBuf),
    /// An earlier file defines it and keeps it.
    Shadowed(PathBuf),
}

/// What [`Owners::undefine`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Dropped {
    /// The file's definition was not in force: nothing changes.
    Nothing,
    /// No file defines it any more: delete it.
    Last,
    /// This file defines it next: read it again to send its definition.
    HandedTo(PathBuf),
}

impl Owners {
    /// Forgets everything.
    pub(super) fn clear(&mut self) {
        self.owner.clear();
        self.others.clear();
        self.unsent.clear();
    }

    /// `path` defines `key`.
    pub(super) fn define(&mut self, key: &ObjectKey, path: &Path) -> Defined {
        let Some(owner) = self.owner.get_mut(key) else {
            self.owner.insert(key.clone(), path.to_owned());
            return Defined::Owner {
                unsent: self.unsent.remove(key),
            };
        };
        match path_order(path, owner) {
            Ordering::Equal => Defined::Owner {
                unsent: self.unsent.remove(key),
            },
            Ordering::Less => {
                let before = std::mem::replace(owner, path.to_owned());
                self.unsent.remove(key);
                let others = self.others.entry(key.clone()).or_default();
                others.retain(|p| p != path);
                insert_sorted(others, before.clone());
                Defined::TookOver(before)
            }
            Ordering::Greater => {
                let owner = owner.clone();
                insert_sorted(self.others.entry(key.clone()).or_default(), path.to_owned());
                Defined::Shadowed(owner)
            }
        }
    }

    /// `path` no longer defines `key`.
    pub(super) fn undefine(&mut self, key: &ObjectKey, path: &Path) -> Dropped {
        if self.owner.get(key).is_none_or(|owner| owner != path) {
            if let Some(others) = self.others.get_mut(key) {
                others.retain(|p| p != path);
                if others.is_empty() {
                    self.others.remove(key);
                }
            }
            return Dropped::Nothing;
        }
        let mut next = None;
        if let Some(others) = self.others.get_mut(key) {
            if !others.is_empty() {
                next = Some(others.remove(0));
            }
            if others.is_empty() {
                self.others.remove(key);
            }
        }
        match next {
            Some(next) => {
                self.owner.insert(key.clone(), next.clone());
                self.unsent.insert(key.clone());
                Dropped::HandedTo(next)
            }
            None => {
                self.owner.remove(key);
                self.unsent.remove(key);
                Dropped::Last
            }
        }
    }
}

fn insert_sorted(paths: &mut Vec<PathBuf>, path: PathBuf) {
    if let Err(at) = paths.binary_search_by(|p| path_order(p, &path)) {
        paths.insert(at, path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_path_wins_whatever_the_order_and_the_next_takes_over() {
        let key = ObjectKey {
            namespace: "default".into(),
            name: "web".into(),
        };
        let (a, b, c) = (Path::new("/m/a"), Path::new("/m/b"), Path::new("/m/c"));
        let mut owners = Owners::default();
        assert_eq!(owners.define(&key, b), Defined::Owner { unsent: false });
        assert_eq!(owners.define(&key, c), Defined::Shadowed(b.to_owned()));
        assert_eq!(owners.define(&key, a), Defined::TookOver(b.to_owned()));
        assert_eq!(owners.define(&key, c), Defined::Shadowed(a.to_owned()));
        assert_eq!(owners.undefine(&key, c), Dropped::Nothing);
        assert_eq!(owners.undefine(&key, a), Dropped::HandedTo(b.to_owned()));
        assert_eq!(owners.define(&key, b), Defined::Owner { unsent: true });
        assert_eq!(owners.define(&key, b), Defined::Owner { unsent: false });
        assert_eq!(owners.undefine(&key, b), Dropped::Last);
        assert!(owners.owner.is_empty() && owners.others.is_empty());
    }
}
