//! The manifests source: Services and EndpointSlices from a file or a folder of YAML (or
//! JSON) manifests, watched for changes. It lets the daemon run with no cluster at all: for
//! demos, tests, and declarative IPVS on a plain host.
//!
//! # What is read
//!
//! - The path given, if it is a file; else every `*.yaml`, `*.yml` and `*.json` file under the
//!   folder (recursively, in path order), skipping names that start with a dot (editor swap
//!   files, and the `..data` folder of a mounted ConfigMap, whose files are reached through
//!   their top-level links). Links are followed: links to files wherever they lead, links to
//!   folders only inside the folder, and each folder once, so a link to `.` is no loop (see
//!   the `folder_tree` module); a link not followed is reported once.
//! - Several documents per file (`---`), and `kind: List` documents (as `kubectl get -o yaml`
//!   writes them). A `*.json` file is read as JSON (one value or several one after the other),
//!   with a JSON parser many times faster than the YAML one: generated folders of thousands
//!   of Services load quickly as JSON.
//! - Documents of kind `Service` (`v1`) and `EndpointSlice` (`discovery.k8s.io/v1`); any
//!   other kind is reported and skipped. A missing namespace means `default`.
//! - Files within the [`Limits`]: a file larger than [`Limits::max_file_size`] is not read,
//!   and one nesting deeper than [`Limits::max_depth`] not parsed (both bound the time one
//!   file can hold the source).
//!
//! # Errors lose nothing
//!
//! A file that does not parse, whose documents do not match the Kubernetes types, or that is
//! over a limit, is reported with its path and line ([`ManifestError`]), once per content,
//! and **everything it defined before stays loaded** until it is fixed: a half-written file
//! never deletes Services. A file that cannot be read at all (too many open files, say) is
//! reported once and read again soon, with a growing delay (see [`retry`]). When the path
//! itself disappears (an unmounted volume), nothing is unloaded either.
//!
//! The same object defined in several files is reported, and the first of them in path order
//! defines it, whatever order they were written in; when that file goes or stops defining it,
//! the next one takes over with no deletion in between (see the `owners` module).
//!
//! # Watching
//!
//! [`watch`] follows inotify events under the path (through `FolderWatch`): it looks only at
//! the paths they name ([`ManifestFolder::rescan_paths`]), and rescans the whole folder when
//! an event cannot be pinned to files (a folder appeared or vanished, a mounted ConfigMap
//! swapped its `..data` link, events were lost) and once a minute as insurance. Without
//! inotify it rescans every few seconds. A rescan only reads files whose size, modification
//! time or inode changed, and reports only the objects that changed, so editing one file of
//! a large folder costs that file. Of a burst of changes, the files of [`LARGE_FILE`] bytes
//! or more are read last, each on its own, so that the others do not wait for them.
//!
//! # Where each part lives
//!
//! This module holds [`ManifestFolder`], which keeps what was loaded and turns scans into
//! changes. The folder is listed by `scan`, files are read by `read` and parsed by `parse`,
//! what changed is found by `diff`, and `watch` runs the whole as a source; `owners` decides
//! which file defines an object several define, `retry` when an unreadable file is read
//! again, and `limits` what a file may cost.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::{debug, info, warn};

mod diff;
mod limits;
mod owners;
mod parse;
mod read;
pub mod retry;
mod scan;
mod watch;

use diff::{confirm_missing, content_hash, diff_objects, text_hash};
pub use limits::{DEFAULT_MAX_DEPTH, DEFAULT_MAX_FILE_SIZE, Limits};
use owners::{Defined, Dropped, Owners};
use parse::parse_manifests;
use read::{Failure, ReadFile, Reader, is_json, read_all};
use retry::Retries;
use scan::{Listing, fingerprint_of, is_manifest_name, list_files, list_paths, sort_paths};
pub use watch::watch;

use super::folder_tree;
use super::folder_watch::{FolderWatch, Seen};
use crate::telemetry::Metrics;
use svc_controller::desired::reads::{trim_service, trim_slice};
use svc_controller::runtime::{Change, Message, ObjectKey, Sender};

/// How often the folder is rescanned when there is no file watcher (less often when a rescan
/// takes more than a quarter of this).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

/// How often the whole folder is rescanned, as insurance, when a file watcher reports
/// changes (between these, only the files it names are looked at); less often when a rescan
/// takes more than 1 % of this.
pub const WATCHED_RESCAN_INTERVAL: Duration = Duration::from_secs(60);

/// How many files one part of a first load reads at most (see
/// [`ManifestFolder::load_in_parts`]).
pub const LOAD_PART: usize = 1024;

/// How many files the first part of a first load reads: the parts grow from this to
/// [`LOAD_PART`], so that the engine gets work soon after the start (on a fresh node it
/// programs each part as it comes) while later parts keep the per-part costs small.
pub const FIRST_PART: usize = 128;

/// How many changed paths [`ManifestFolder::rescan_paths_in_parts`] looks at before it
/// delivers what they changed: a burst of changes (a thousand files replaced at once) reaches
/// the engine part by part, so that it programs one part while the next is read, instead of
/// waiting for the whole burst to be read.
pub const CHANGE_PART: usize = 64;

/// The size from which a changed file is a large one: of a burst of changes, such files are
/// read after the others, each on its own (see [`ManifestFolder::rescan_paths_in_parts`]).
/// Far above any single Service's or EndpointSlice's manifest, so only `List`s and
/// hand-merged folders of objects come near it.
pub const LARGE_FILE: u64 = 256 << 10;

/// The sizes of a first load's parts: [`FIRST_PART`], doubling up to [`LOAD_PART`].
fn part_sizes() -> impl Iterator<Item = usize> {
    std::iter::successors(Some(FIRST_PART), |n| Some((n * 2).min(LOAD_PART)))
}

/// A manifest that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ManifestError {
    /// The file.
    pub path: PathBuf,
    /// The line (1-based), when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The changes to send to the engine.
    pub messages: Vec<Message>,
    /// Files that could not be loaded (what they defined before is kept).
    pub errors: Vec<ManifestError>,
    /// Documents skipped (unknown kinds, duplicates), as readable notes.
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

#[derive(Debug, Default)]
struct LoadedFile {
    /// The fingerprint of the content loaded (or of the content that failed, so a broken file
    /// is reported once per change, not once per scan).
    fingerprint: Option<Fingerprint>,
    /// The content hash of each object it defines (whether its definition is the one in
    /// force or not, see [`owners`]): enough to tell a change. The
    /// objects themselves live in the engine's store, trimmed; a second full copy here would
    /// be most of the daemon's memory on a large folder.
    ///
    /// Sorted vectors, not maps: a file defines a handful of objects, and a `BTreeMap` of one
    /// entry allocates a node for eleven, which on a large folder would be most of the load's
    /// peak memory.
    services: Vec<(ObjectKey, u64)>,
    slices: Vec<(ObjectKey, u64)>,
}

/// The objects of one parsed file, in the order they appear (vectors, for the reason given
/// on [`LoadedFile`]).
#[derive(Debug, Default)]
struct Parsed {
    /// Each object with the hash of its content (see [`Document::text_hash`]).
    services: Vec<(ObjectKey, Service, u64)>,
    slices: Vec<(ObjectKey, EndpointSlice, u64)>,
    skipped: Vec<String>,
    /// The keys seen so far, to refuse an object defined twice; dropped once the file is
    /// parsed.
    seen: HashSet<(bool, ObjectKey)>,
}

/// How a first load ended (see [`ManifestFolder::load_in_parts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstLoad {
    /// Every readable file was delivered, then `Synced`.
    Complete,
    /// The path could not be listed: only its error was delivered, and no `Synced` (a
    /// receiver waiting for the first list changes nothing meanwhile). Try again later.
    Unreadable,
    /// The receiver is gone.
    Stopped,
}

/// A file or folder of manifests and what was loaded from it.
#[derive(Debug)]
pub struct ManifestFolder {
    root: PathBuf,
    /// By path; a hash map, as looking up and replacing a file is most of what a load does
    /// with it (a `BTreeMap` compared paths component by component at every step).
    files: HashMap<PathBuf, LoadedFile>,
    services: Owners,
    slices: Owners,
    /// Set while loading: the objects found go here, to be sent as one `Reset` of each kind,
    /// instead of per-object changes.
    loading: Option<(Vec<Service>, Vec<EndpointSlice>)>,
    limits: Limits,
    /// Files to read again (they could not be read).
    retries: Retries,
    /// What the last listing of the folder said of links it did not follow: each is reported
    /// when it appears, not at every rescan.
    link_notes: HashSet<String>,
    /// Opens a file to read it (a test replaces it to make reads fail).
    open: fn(&Path) -> std::io::Result<std::fs::File>,
}

impl ManifestFolder {
    /// Nothing loaded yet from `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: HashMap::new(),
            services: Owners::default(),
            slices: Owners::default(),
            loading: None,
            limits: Limits::default(),
            retries: Retries::default(),
            link_notes: HashSet::new(),
            open: |path| std::fs::File::open(path),
        }
    }

    /// With these limits on each file, instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// When a file that could not be read is next due to be read again (see
    /// [`ManifestFolder::retry_due`]); `None` if none waits.
    pub fn next_retry(&self) -> Option<std::time::Instant> {
        self.retries.next_due()
    }

    /// Reads again the files that could not be read and are due at `now`, as
    /// [`ManifestFolder::rescan_paths`] does (`None`: a full rescan is needed).
    pub fn retry_due(&mut self, now: std::time::Instant) -> Option<Scan> {
        let due = self.retries.due(now);
        self.rescan_paths(due)
    }

    /// Reports the notes of a listing of the folder that were not in the last one.
    fn take_link_notes(&mut self, notes: Vec<String>, scan: &mut Scan) {
        let notes: HashSet<String> = notes.into_iter().collect();
        let mut new: Vec<&String> = notes.difference(&self.link_notes).collect();
        new.sort();
        scan.skipped.extend(new.into_iter().cloned());
        self.link_notes = notes;
    }

    /// The path watched.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The first load: everything, as one `Reset` of each kind (also when some files fail:
    /// those are reported and the others loaded). [`ManifestFolder::load_in_parts`] is the
    /// same load delivered as it is read. A path that cannot be listed gives its error and no
    /// message (see [`FirstLoad::Unreadable`]).
    pub fn load(&mut self) -> Scan {
        let mut all = Scan::default();
        let (mut services, mut slices) = (Vec::new(), Vec::new());
        let outcome = self.load_in_parts(|scan| {
            all.errors.extend(scan.errors);
            all.skipped.extend(scan.skipped);
            for message in scan.messages {
                match message {
                    Message::Services(Change::Applied(s)) => services.push(s),
                    Message::Slices(Change::Applied(s)) => slices.push(s),
                    _ => {}
                }
            }
            true
        });
        if outcome == FirstLoad::Complete {
            all.messages = vec![
                Message::Services(Change::Reset(services)),
                Message::Slices(Change::Reset(slices)),
            ];
        }
        all
    }

    /// The first load, delivered in parts of files as they are read (growing from
    /// [`FIRST_PART`] to [`LOAD_PART`] files; the files in path order): each part's
    /// objects as `Applied` changes (with the part's errors and notes), then a last part with
    /// [`Change::Synced`] for both kinds. A receiver that stores each part while the next is
    /// parsed never holds a large folder's objects all at once in their parsed form (several
    /// times the size of the engine's compact store).
    /// Failing files are reported and the others loaded, as [`ManifestFolder::load`] does.
    ///
    /// A path that cannot be listed at all (missing, unreadable) delivers only its error and
    /// no `Synced` ([`FirstLoad::Unreadable`]): "no manifests could be read" must not be
    /// taken for "no Services", which would remove every virtual server the node has. `deliver`
    /// answers whether to go on (`false`: the receiver is gone, [`FirstLoad::Stopped`]).
    pub fn load_in_parts(&mut self, mut deliver: impl FnMut(Scan) -> bool) -> FirstLoad {
        // Everything is read again: only what is read can be sent.
        self.files.clear();
        self.services.clear();
        self.slices.clear();
        self.retries = Retries::default();
        // Names only: each file's fingerprint is taken from the open file as it is read,
        // which spares a `stat` of every file before the first one is parsed.
        let (files, notes) = match list_paths(&self.root) {
            Ok(listed) => listed,
            Err(error) => {
                let scan = Scan {
                    errors: vec![error],
                    ..Scan::default()
                };
                return if deliver(scan) {
                    FirstLoad::Unreadable
                } else {
                    FirstLoad::Stopped
                };
            }
        };
        self.link_notes.clear();
        let mut first = Scan::default();
        self.take_link_notes(notes, &mut first);
        let mut first = Some(first);
        let mut rest = files.as_slice();
        for size in part_sizes() {
            if rest.is_empty() {
                break;
            }
            let (part, after) = rest.split_at(size.min(rest.len()));
            rest = after;
            self.loading = Some((Vec::new(), Vec::new()));
            let mut scan = first.take().unwrap_or_default();
            self.take_read(read_all(part.to_vec(), self.reader()), &mut scan);
            let (services, slices) = self.loading.take().unwrap_or_default();
            scan.messages.extend(
                services
                    .into_iter()
                    .map(|s| Message::Services(Change::Applied(s))),
            );
            scan.messages.extend(
                slices
                    .into_iter()
                    .map(|s| Message::Slices(Change::Applied(s))),
            );
            if !deliver(scan) {
                return FirstLoad::Stopped;
            }
        }
        let mut end = first.take().unwrap_or_default();
        end.messages = vec![
            Message::Services(Change::Synced),
            Message::Slices(Change::Synced),
        ];
        if deliver(end) {
            FirstLoad::Complete
        } else {
            FirstLoad::Stopped
        }
    }

    /// Looks for changed, new and removed files and reports the objects that changed.
    pub fn rescan(&mut self) -> Scan {
        let listing = list_files(&self.root, || {});
        self.rescan_listed(listing)
    }

    /// [`ManifestFolder::rescan`] from a listing of the folder made by [`list_files`]
    /// (perhaps while other changes were taken in: a file changed since its `stat` is read
    /// again and found the same, a file that appeared is confirmed before it counts as
    /// missing, and one removed since counts as removed when it cannot be read).
    fn rescan_listed(&mut self, listing: Result<Listing, ManifestError>) -> Scan {
        let mut all = Scan::default();
        self.rescan_listed_in_parts(listing, |scan| {
            all.messages.extend(scan.messages);
            all.errors.extend(scan.errors);
            all.skipped.extend(scan.skipped);
            true
        });
        all
    }

    /// [`ManifestFolder::rescan_listed`] delivered in parts: first the removed files and the
    /// changed ones under [`LARGE_FILE`] bytes, then each larger changed file on its own (as
    /// [`ManifestFolder::rescan_paths_in_parts`] does). `deliver` answers whether to go on;
    /// false when it said no.
    fn rescan_listed_in_parts(
        &mut self,
        listing: Result<Listing, ManifestError>,
        mut deliver: impl FnMut(Scan) -> bool,
    ) -> bool {
        let mut scan = Scan::default();
        let (mut current, notes) = match listing {
            Ok(listed) => listed,
            Err(error) => {
                scan.errors.push(error);
                return deliver(scan);
            }
        };
        self.take_link_notes(notes, &mut scan);
        confirm_missing(&mut current, self.files.keys());
        self.retries.retain(|p| current.contains_key(p));
        let mut removed: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !current.contains_key(*p))
            .cloned()
            .collect();
        sort_paths(&mut removed);
        let mut again = Vec::new();
        for path in removed {
            if let Some(old) = self.files.remove(&path) {
                self.replace(&path, old, Parsed::default(), None, &mut scan, &mut again);
            }
        }
        let (mut changed, mut large) = (Vec::new(), Vec::new());
        for (path, fingerprint) in current {
            self.triage(path, fingerprint, &mut changed, &mut large);
        }
        changed.extend(again);
        sort_paths(&mut changed);
        changed.dedup();
        self.take_read(read_all(changed, self.reader()), &mut scan);
        if !deliver(scan) {
            return false;
        }
        sort_paths(&mut large);
        self.read_one_by_one(large, deliver)
    }

    /// Sorts a listed file by what it needs: nothing (its fingerprint is the one loaded), a
    /// read with the other `changed` files, or a read of its own (`large`).
    fn triage(
        &mut self,
        path: PathBuf,
        fingerprint: Fingerprint,
        changed: &mut Vec<PathBuf>,
        large: &mut Vec<PathBuf>,
    ) {
        if self.files.get(&path).and_then(|f| f.fingerprint) == Some(fingerprint) {
            self.retries.settled(&path);
        } else if fingerprint.len >= LARGE_FILE {
            large.push(path);
        } else {
            changed.push(path);
        }
    }

    /// Reads `paths` one file at a time, delivering each one's changes before the next is
    /// read. `deliver` answers whether to go on; false when it said no.
    fn read_one_by_one(
        &mut self,
        paths: Vec<PathBuf>,
        mut deliver: impl FnMut(Scan) -> bool,
    ) -> bool {
        for path in paths {
            let mut scan = Scan::default();
            self.take_read(read_all(vec![path], self.reader()), &mut scan);
            if !deliver(scan) {
                return false;
            }
        }
        true
    }

    /// Looks only at `paths` (what a file watcher reported) and reports the objects that
    /// changed, reading only the files among them whose fingerprint changed. `None` when the
    /// paths need a full [`ManifestFolder::rescan`]: a folder appeared or vanished, the root
    /// itself or a path outside it changed, or an entry starting with `..` changed (the
    /// folders and links through which Kubernetes swaps a mounted ConfigMap's content).
    /// Other names starting with a dot (editors' swap and temporary files) are never read,
    /// so they are ignored.
    pub fn rescan_paths(&mut self, paths: impl IntoIterator<Item = PathBuf>) -> Option<Scan> {
        let (mut scan, large) = self.rescan_small_paths(paths)?;
        self.take_read(read_all(large, self.reader()), &mut scan);
        Some(scan)
    }

    /// [`ManifestFolder::rescan_paths`] but for the changed files of [`LARGE_FILE`] bytes or
    /// more, which are left unread and returned.
    fn rescan_small_paths(
        &mut self,
        paths: impl IntoIterator<Item = PathBuf>,
    ) -> Option<(Scan, Vec<PathBuf>)> {
        if !std::fs::metadata(&self.root).is_ok_and(|m| m.is_dir()) {
            return None;
        }
        // In the order given, each path once.
        let mut check: indexmap::IndexMap<
            PathBuf,
            Option<Fingerprint>,
            foldhash::fast::RandomState,
        > = indexmap::IndexMap::default();
        for path in paths {
            let relative = path.strip_prefix(&self.root).ok()?;
            let mut names = relative.components().map(|c| c.as_os_str().to_str());
            if relative.as_os_str().is_empty()
                || names.clone().any(|n| n.is_none_or(|n| n.starts_with("..")))
            {
                return None;
            }
            if names.any(|n| n.is_some_and(|n| n.starts_with('.'))) {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => return None,
                Ok(meta) if meta.is_file() => {
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if is_manifest_name(name) {
                        check.insert(path, Some(fingerprint_of(&meta)));
                    }
                }
                Ok(_) => {}
                Err(_) if self.files.contains_key(&path) => {
                    check.insert(path, None);
                }
                // A vanished folder takes its files with it.
                Err(_) if self.files.keys().any(|f| f.starts_with(&path)) => return None,
                Err(_) => {
                    self.retries.settled(&path);
                }
            }
        }
        let mut scan = Scan::default();
        let (mut changed, mut large) = (Vec::new(), Vec::new());
        let mut again = Vec::new();
        for (path, fingerprint) in check {
            match fingerprint {
                None => {
                    if let Some(old) = self.files.remove(&path) {
                        self.replace(&path, old, Parsed::default(), None, &mut scan, &mut again);
                    }
                }
                Some(fingerprint) => self.triage(path, fingerprint, &mut changed, &mut large),
            }
        }
        // The files taking over from removed ones, after the changed ones (in the order given).
        for path in again {
            if !changed.contains(&path) {
                changed.push(path);
            }
        }
        self.take_read(read_all(changed, self.reader()), &mut scan);
        Some((scan, large))
    }

    /// [`ManifestFolder::rescan_paths`] over `paths` in parts of [`CHANGE_PART`] paths (in
    /// the order given), each part's changes delivered before the next part is read; the
    /// changed files of [`LARGE_FILE`] bytes or more are read last, each on its own, so that
    /// a large file does not hold back the others of the burst. `deliver` answers whether to
    /// go on. `Some(true)`: every part was delivered; `Some(false)`: the receiver is gone;
    /// `None`: a part needs a full rescan (the parts before it were delivered, and stay
    /// valid; the large files left are read by the full rescan).
    pub fn rescan_paths_in_parts(
        &mut self,
        paths: impl IntoIterator<Item = PathBuf>,
        mut deliver: impl FnMut(Scan) -> bool,
    ) -> Option<bool> {
        let mut paths = paths.into_iter().peekable();
        let mut large = Vec::new();
        while paths.peek().is_some() {
            let part: Vec<PathBuf> = paths.by_ref().take(CHANGE_PART).collect();
            let (scan, part_large) = self.rescan_small_paths(part)?;
            large.extend(part_large);
            if !deliver(scan) {
                return Some(false);
            }
        }
        Some(self.read_one_by_one(large, deliver))
    }

    /// How files are read.
    fn reader(&self) -> Reader {
        Reader {
            limits: self.limits,
            open: self.open,
        }
    }

    /// Takes in what [`read_all`] read: each file's objects replace what it defined. A file
    /// that could not be read is left as it was, to be read again (see [`retry`]); the files
    /// that take over an object from one that stopped defining it are read again at once.
    fn take_read(&mut self, mut read: Vec<ReadFile>, scan: &mut Scan) {
        loop {
            let mut again = Vec::new();
            for ReadFile {
                path,
                fingerprint,
                parsed,
            } in read
            {
                match parsed {
                    Err(Failure::Read(error)) => {
                        let now = std::time::Instant::now();
                        if self.retries.failed(&path, &error.message, now) {
                            scan.errors.push(error);
                        }
                    }
                    Err(Failure::Invalid(error)) => {
                        scan.errors.push(error);
                        self.retries.settled(&path);
                        self.files.entry(path).or_default().fingerprint = fingerprint;
                    }
                    Ok(parsed) => {
                        let old = self.files.remove(&path).unwrap_or_default();
                        self.replace(&path, old, parsed, fingerprint, scan, &mut again);
                    }
                }
            }
            if again.is_empty() {
                return;
            }
            sort_paths(&mut again);
            again.dedup();
            read = read_all(again, self.reader());
        }
    }

    /// Replaces what `path` defined (`old`, already taken out of `self.files`) with `new`,
    /// reporting the differences; the files that now define an object `path` defined before
    /// go into `again`, to be read again.
    fn replace(
        &mut self,
        path: &Path,
        old: LoadedFile,
        new: Parsed,
        fingerprint: Option<Fingerprint>,
        scan: &mut Scan,
        again: &mut Vec<PathBuf>,
    ) {
        self.retries.settled(path);
        scan.skipped.extend(new.skipped);
        let (loading_services, loading_slices) = match &mut self.loading {
            Some((services, slices)) => (Some(services), Some(slices)),
            None => (None, None),
        };
        let services = diff_objects(
            path,
            old.services,
            new.services,
            &mut self.services,
            &mut scan.skipped,
            "Service",
            loading_services,
            again,
        );
        let slices = diff_objects(
            path,
            old.slices,
            new.slices,
            &mut self.slices,
            &mut scan.skipped,
            "EndpointSlice",
            loading_slices,
            again,
        );
        scan.messages
            .extend(services.changes.into_iter().map(Message::Services));
        scan.messages
            .extend(slices.changes.into_iter().map(Message::Slices));
        if fingerprint.is_some() {
            self.files.insert(
                path.to_owned(),
                LoadedFile {
                    fingerprint,
                    services: services.kept,
                    slices: slices.kept,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scan::LISTING_PAUSE_EVERY;
    use super::watch::{rescan_interval, start_watcher};
    use super::*;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "ipvs-proxy-manifests-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
        fn write(&self, name: &str, text: &str) {
            let path = self.0.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            // Write beside and rename, as editors do, so the inode changes every time (the
            // size and mtime alone may not within one test).
            let tmp = self.0.join(format!(".{}.tmp", name.replace('/', "_")));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(tmp, path).unwrap();
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const WEB: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: 10.96.0.10
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- port: 8080
endpoints:
- addresses: [10.1.0.1]
  conditions: {ready: true}
";

    /// A first load in parts, every part kept.
    fn load_parts(folder: &mut ManifestFolder) -> (FirstLoad, Vec<Scan>) {
        let mut parts = Vec::new();
        let outcome = folder.load_in_parts(|part| {
            parts.push(part);
            true
        });
        (outcome, parts)
    }

    fn names(messages: &[Message]) -> Vec<String> {
        messages
            .iter()
            .map(|m| match m {
                Message::Services(Change::Applied(s)) => {
                    format!("+svc/{}", s.metadata.name.clone().unwrap_or_default())
                }
                Message::Services(Change::Deleted(s)) => {
                    format!("-svc/{}", s.metadata.name.clone().unwrap_or_default())
                }
                Message::Slices(Change::Applied(s)) => {
                    format!("+slice/{}", s.metadata.name.clone().unwrap_or_default())
                }
                Message::Slices(Change::Deleted(s)) => {
                    format!("-slice/{}", s.metadata.name.clone().unwrap_or_default())
                }
                Message::Services(Change::Reset(v)) => format!("svc*{}", v.len()),
                Message::Slices(Change::Reset(v)) => format!("slice*{}", v.len()),
                Message::Services(Change::Synced) => "svc synced".into(),
                Message::Slices(Change::Synced) => "slice synced".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn loads_multi_document_files_with_default_namespace() {
        let dir = TempDir::new("load");
        dir.write("web.yaml", WEB);
        dir.write("notes.txt", "not a manifest");
        dir.write(".web.yaml.swp", "garbage: [");
        let mut folder = ManifestFolder::new(&dir.0);
        let scan = folder.load();
        assert!(scan.errors.is_empty(), "{:?}", scan.errors);
        assert_eq!(names(&scan.messages), ["svc*1", "slice*1"]);
        if let Message::Services(Change::Reset(v)) = &scan.messages[0] {
            assert_eq!(v[0].metadata.namespace.as_deref(), Some("default"));
        }
        assert!(folder.rescan().messages.is_empty(), "nothing changed");
    }

    #[test]
    fn edits_report_only_what_changed() {
        let dir = TempDir::new("edit");
        dir.write("web.yaml", WEB);
        dir.write(
            "sub/db.yaml",
            &WEB.replace("web", "db").replace("10.96.0.10", "10.96.0.11"),
        );
        let mut folder = ManifestFolder::new(&dir.0);
        folder.load();
        dir.write("web.yaml", &WEB.replace("10.1.0.1]", "10.1.0.1, 10.1.0.2]"));
        assert_eq!(names(&folder.rescan().messages), ["+slice/web-1"]);
        std::fs::remove_file(dir.0.join("sub/db.yaml")).unwrap();
        assert_eq!(names(&folder.rescan().messages), ["-svc/db", "-slice/db-1"]);
        let only_service = WEB.split("---").next().unwrap();
        dir.write("web.yaml", only_service);
        assert_eq!(names(&folder.rescan().messages), ["-slice/web-1"]);
    }

    #[test]
    fn a_broken_file_is_reported_with_its_line_and_keeps_what_it_had() {
        let dir = TempDir::new("broken");
        dir.write("web.yaml", WEB);
        let mut folder = ManifestFolder::new(&dir.0);
        folder.load();
        // Line 19 of the file (the second document) gets a port that is not a number.
        dir.write("web.yaml", &WEB.replace("- port: 8080", "- port: eighty"));
        let scan = folder.rescan();
        assert!(
            scan.messages.is_empty(),
            "nothing unloaded: {:?}",
            names(&scan.messages)
        );
        assert_eq!(scan.errors.len(), 1);
        let error = scan.errors[0].to_string();
        assert!(error.contains("web.yaml:19:"), "{error}");
        assert!(
            folder.rescan().errors.is_empty(),
            "reported once per change"
        );
        // A syntax error in the first document.
        dir.write("web.yaml", &WEB.replace("  name: web\n", "  name: [web\n"));
        let error = folder.rescan().errors[0].to_string();
        assert!(error.contains("web.yaml:"), "{error}");
        // Fixed: the change since the last good state is reported.
        dir.write("web.yaml", &WEB.replace("10.96.0.10", "10.96.0.20"));
        let scan = folder.rescan();
        assert!(scan.errors.is_empty());
        assert_eq!(names(&scan.messages), ["+svc/web"]);
    }

    #[test]
    fn bad_documents_fail_the_file_with_a_reason() {
        let path = Path::new("x.yaml");
        let err =
            parse_manifests(path, "apiVersion: v1\nkind: Service\nmetadata: {}\n").unwrap_err();
        assert!(err.message.contains("metadata.name"), "{err}");
        let err = parse_manifests(path, "kind: Service\napiVersion: v2\nmetadata: {name: a}\n")
            .unwrap_err();
        assert!(err.message.contains("apiVersion"), "{err}");
        let err = parse_manifests(path, "metadata: {name: a}\n").unwrap_err();
        assert!(err.message.contains("kind"), "{err}");
        let twice = format!("{}---\n{}", WEB, WEB.split("---").next().unwrap());
        let err = parse_manifests(path, &twice).unwrap_err();
        assert!(err.message.contains("defined twice"), "{err}");
        let other = parse_manifests(
            path,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n",
        )
        .unwrap();
        assert_eq!(other.skipped.len(), 1);
    }

    const JSON_SERVICE: &str = r#"{"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "a", "namespace": "x"},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 53, "protocol": "UDP"}]}}"#;

    #[test]
    fn lists_and_json_are_read() {
        let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "a", "namespace": "x"},
             "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 53, "protocol": "UDP"}]}}
        ]}"#;
        let parsed = parse_manifests(Path::new("l.json"), list).unwrap();
        assert_eq!(parsed.services.len(), 1);
        let bad = list.replace("53", "\"dns\"");
        let err = parse_manifests(Path::new("l.json"), &bad).unwrap_err();
        assert!(err.message.contains("item 0"), "{err}");
        // The same text as YAML (JSON is YAML) reads the same.
        let as_yaml = parse_manifests(Path::new("l.yaml"), list).unwrap();
        let objects = |p: &Parsed| {
            p.services
                .iter()
                .map(|(k, s, _)| (k.clone(), s.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(objects(&as_yaml), objects(&parsed));
        // `items` is read in the same scan as the kind: only a List cares what it is.
        let not_array = r#"{"apiVersion": "v1", "kind": "List", "items": {"a": [1]}}"#;
        let err = parse_manifests(Path::new("l.json"), not_array).unwrap_err();
        assert!(err.message.contains("not an array"), "{err}");
        let null = r#"{"apiVersion": "v1", "kind": "List", "items": null}"#;
        assert!(
            parse_manifests(Path::new("l.json"), null)
                .unwrap()
                .services
                .is_empty()
        );
        for other in ["\"x\"", "7", "true", "{\"b\": {}}"] {
            let text = format!(r#"{{"apiVersion": "v1", "kind": "ConfigMap", "items": {other}}}"#);
            let parsed = parse_manifests(Path::new("c.json"), &text).unwrap();
            assert_eq!(parsed.skipped.len(), 1, "{text}");
        }
    }

    #[test]
    fn json_files_hold_several_values_and_errors_name_the_line() {
        let two = format!(
            "{}\n{}\n",
            JSON_SERVICE,
            JSON_SERVICE.replace("\"a\"", "\"b\"")
        );
        let parsed = parse_manifests(Path::new("two.json"), &two).unwrap();
        assert_eq!(parsed.services.len(), 2);
        let broken = format!("{JSON_SERVICE}\n{{\"kind\": x}}\n");
        let err = parse_manifests(Path::new("b.json"), &broken).unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        // Valid JSON that is no object fails too, named by its line.
        let not_object = format!("{JSON_SERVICE}\n[1, 2]\n");
        let err = parse_manifests(Path::new("o.json"), &not_object).unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.message.contains("invalid type"), "{err}");
        let not_list = r#"{"apiVersion": "v1", "kind": "List", "items": 3}"#;
        let err = parse_manifests(Path::new("n.json"), not_list).unwrap_err();
        assert!(err.message.contains("items"), "{err}");
        let wrong_type = JSON_SERVICE.replace("53", "\"dns\"");
        let err = parse_manifests(Path::new("w.json"), &wrong_type).unwrap_err();
        assert!(err.message.contains("invalid type"), "{err}");
        let no_kind = parse_manifests(Path::new("k.json"), r#"{"metadata": {"name": "a"}}"#);
        assert!(no_kind.unwrap_err().message.contains("kind"));
    }

    #[test]
    fn duplicates_across_files_keep_the_first() {
        let dir = TempDir::new("dup");
        dir.write("a.yaml", WEB);
        dir.write("b.yaml", &WEB.replace("10.96.0.10", "10.96.0.99"));
        let mut folder = ManifestFolder::new(&dir.0);
        let scan = folder.load();
        assert_eq!(scan.skipped.len(), 2, "{:?}", scan.skipped);
        if let Message::Services(Change::Reset(v)) = &scan.messages[0] {
            assert_eq!(v.len(), 1);
            let ip = v[0].spec.as_ref().unwrap().cluster_ip.as_deref();
            assert_eq!(ip, Some("10.96.0.10"), "a.yaml comes first");
        }
    }

    #[test]
    fn a_vanished_root_unloads_nothing() {
        let dir = TempDir::new("vanish");
        dir.write("web.yaml", WEB);
        // A first load of a path that cannot be listed sends nothing: "nothing could be read"
        // is not "no Services", which would empty the node.
        let mut folder = ManifestFolder::new(dir.0.join("missing"));
        let scan = folder.load();
        assert_eq!(scan.errors.len(), 1);
        assert!(scan.messages.is_empty());
        let (outcome, parts) = load_parts(&mut folder);
        assert_eq!(outcome, FirstLoad::Unreadable);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].messages.is_empty());
        // An empty folder is a complete first load of no Services.
        std::fs::create_dir_all(dir.0.join("empty")).unwrap();
        let scan = ManifestFolder::new(dir.0.join("empty")).load();
        assert!(scan.errors.is_empty());
        assert_eq!(names(&scan.messages), ["svc*0", "slice*0"]);
        let mut folder = ManifestFolder::new(&dir.0);
        folder.load();
        std::fs::remove_dir_all(&dir.0).unwrap();
        let scan = folder.rescan();
        assert_eq!(scan.errors.len(), 1);
        assert!(scan.messages.is_empty());
    }

    #[test]
    fn the_watcher_sends_changes() {
        let dir = TempDir::new("watch");
        dir.write("web.yaml", WEB);
        let (tx, rx) = std::sync::mpsc::channel();
        let folder = ManifestFolder::new(&dir.0);
        let metrics = Arc::new(Metrics::new(false));
        std::thread::spawn(move || watch(folder, tx, metrics));
        // The first load, in parts: the objects, then the end of the first list.
        let first: Vec<Message> = (0..4)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(
            names(&first),
            ["+svc/web", "+slice/web-1", "svc synced", "slice synced"]
        );
        dir.write("web.yaml", &WEB.replace("10.96.0.10", "10.96.0.30"));
        let change = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(names(&[change]), ["+svc/web"]);
    }

    #[test]
    fn a_first_load_in_parts_delivers_every_object_once_then_synced() {
        let dir = TempDir::new("parts");
        let count = LOAD_PART * 2 + 3;
        for i in 0..count {
            // Renames the Service, its slice and the slice's label.
            let text = WEB.replace("name: web", &format!("name: web-{i:04}"));
            dir.write(&format!("s{i:04}.yaml"), &text);
        }
        // The same Service in a later file: the first file keeps it, across parts.
        dir.write(
            "zz-duplicate.yaml",
            &WEB.replace("name: web", "name: web-0000"),
        );
        let mut folder = ManifestFolder::new(&dir.0);
        let (outcome, mut parts) = load_parts(&mut folder);
        assert_eq!(outcome, FirstLoad::Complete);
        // Parts of 128, 256, 512, 1024 and the 132 files left, then the end: the first part
        // is small, so the engine gets work soon.
        assert_eq!(parts.len(), 6);
        let last = parts.pop().unwrap();
        let services_in = |part: &Scan| {
            part.messages
                .iter()
                .filter(|m| matches!(m, Message::Services(Change::Applied(_))))
                .count()
        };
        assert_eq!(
            parts.iter().map(services_in).collect::<Vec<_>>(),
            [FIRST_PART, 256, 512, LOAD_PART, count - 1920]
        );
        assert_eq!(names(&last.messages), ["svc synced", "slice synced"]);
        let mut services = Vec::new();
        for part in &parts {
            assert!(part.errors.is_empty(), "{:?}", part.errors);
            for m in &part.messages {
                match m {
                    Message::Services(Change::Applied(s)) => {
                        services.push(s.metadata.name.clone().unwrap());
                    }
                    Message::Slices(Change::Applied(_)) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(services.len(), count, "each Service once");
        assert!(services.windows(2).all(|w| w[0] < w[1]), "in file order");
        assert!(parts[4].skipped.iter().any(|n| n.contains("also defined")));
        // The whole load as one message of each kind says the same.
        let scan = ManifestFolder::new(&dir.0).load();
        assert_eq!(
            names(&scan.messages),
            [format!("svc*{count}"), format!("slice*{count}")]
        );
        // A receiver that is gone stops the load.
        let mut calls = 0;
        let outcome = ManifestFolder::new(&dir.0).load_in_parts(|_| {
            calls += 1;
            false
        });
        assert_eq!(outcome, FirstLoad::Stopped);
        assert_eq!(calls, 1);
    }

    #[test]
    fn many_files_load_in_order_with_each_broken_one_reported() {
        // Enough files for the parallel reader; every 97th is broken.
        let dir = TempDir::new("many");
        for i in 0..600 {
            let text = if i % 97 == 5 {
                "kind: Service\n  bad: [\n".to_owned()
            } else {
                WEB.replace("name: web", &format!("name: web-{i:03}"))
            };
            dir.write(&format!("s{i:03}.yaml"), &text);
        }
        let mut folder = ManifestFolder::new(&dir.0);
        let scan = folder.load();
        let broken: Vec<String> = scan
            .errors
            .iter()
            .map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let want: Vec<String> = (0..600)
            .filter(|i| i % 97 == 5)
            .map(|i| format!("s{i:03}.yaml"))
            .collect();
        assert_eq!(broken, want);
        let Message::Services(Change::Reset(services)) = &scan.messages[0] else {
            panic!("{:?}", scan.messages[0]);
        };
        assert_eq!(services.len(), 600 - want.len());
        // Every file parsed into its own objects (an out-of-order join would mix them up).
        for i in (0..600).filter(|i| i % 97 != 5) {
            let key = ObjectKey {
                namespace: "default".into(),
                name: format!("web-{i:03}"),
            };
            assert_eq!(
                folder.services.owner.get(&key),
                Some(&dir.0.join(format!("s{i:03}.yaml")))
            );
        }
    }

    #[test]
    fn a_file_a_listing_missed_is_not_taken_for_removed() {
        let dir = TempDir::new("missed");
        dir.write("web.yaml", WEB);
        dir.write("db.yaml", &WEB.replace("name: web", "name: db"));
        let (mut listing, _) = list_files(&dir.0, || {}).unwrap();
        // As a listing raced by a rename over web.yaml could come back:
        listing.remove(&dir.0.join("web.yaml"));
        let known = [dir.0.join("web.yaml"), dir.0.join("gone.yaml")];
        confirm_missing(&mut listing, &known);
        assert!(listing.contains_key(&dir.0.join("web.yaml")));
        assert!(!listing.contains_key(&dir.0.join("gone.yaml")));
        assert_eq!(listing.len(), 2);
    }

    #[test]
    fn a_listing_pauses_for_changes_every_so_many_files() {
        let dir = TempDir::new("pauses");
        let files = 2 * LISTING_PAUSE_EVERY + 1;
        for i in 0..files {
            std::fs::write(dir.0.join(format!("s{i}.json")), "{}").unwrap();
        }
        let mut pauses = 0;
        let (listing, _) = list_files(&dir.0, || pauses += 1).unwrap();
        assert_eq!(listing.len(), files);
        assert_eq!(pauses, 2);
    }

    #[test]
    fn a_rescan_from_a_listing_overtaken_by_changes_reports_each_once() {
        // While a full rescan lists the folder, the watcher's changes are taken in: files
        // change, appear and vanish after the listing saw them.
        let dir = TempDir::new("overtaken");
        dir.write("web.yaml", WEB);
        dir.write("db.yaml", &WEB.replace("web", "db"));
        dir.write("old.yaml", &WEB.replace("web", "old"));
        let mut folder = ManifestFolder::new(&dir.0);
        assert!(folder.load().errors.is_empty());
        // Changes the watcher missed (what the rescan is for).
        dir.write(
            "db.yaml",
            &WEB.replace("web", "db").replace("10.1.0.1", "10.1.0.2"),
        );
        dir.write(
            "old.yaml",
            &WEB.replace("web", "old").replace("10.1.0.1", "10.1.0.3"),
        );
        let listing = list_files(&dir.0, || {});
        // Taken in during the listing, as the watcher named them: web changed, new appeared.
        dir.write("web.yaml", &WEB.replace("10.96.0.10", "10.96.0.30"));
        dir.write("new.yaml", &WEB.replace("web", "new"));
        let paths = [dir.0.join("web.yaml"), dir.0.join("new.yaml")];
        let meanwhile = folder.rescan_paths(paths).unwrap();
        assert_eq!(
            names(&meanwhile.messages),
            ["+svc/web", "+svc/new", "+slice/new-1"]
        );
        // Removed after the listing saw it changed, before the rescan reads it.
        std::fs::remove_file(dir.0.join("old.yaml")).unwrap();
        let scan = folder.rescan_listed(listing);
        assert!(scan.errors.is_empty(), "{:?}", scan.errors);
        let mut got = names(&scan.messages);
        got.sort();
        // web is read again and found as taken in; new is confirmed, not taken for removed.
        assert_eq!(got, ["+slice/db-1", "-slice/old-1", "-svc/old"]);
        // And the next rescan finds nothing more.
        assert!(folder.rescan().messages.is_empty());
    }

    #[test]
    fn reading_the_folder_does_not_wake_the_watcher() {
        // A rescan lists the folder and reads files; if that woke the watcher, every rescan
        // would trigger the next and an idle daemon would spin.
        let dir = TempDir::new("quiet");
        dir.write("web.yaml", WEB);
        dir.write("db.yaml", &WEB.replace("name: web", "name: db"));
        let mut watch = start_watcher(&dir.0).expect("inotify works here");
        let mut folder = ManifestFolder::new(&dir.0);
        assert!(folder.load().errors.is_empty());
        for _ in 0..3 {
            folder.rescan();
            for entry in std::fs::read_dir(&dir.0).unwrap() {
                std::fs::read_to_string(entry.unwrap().path()).unwrap();
            }
        }
        let woke = watch.wait(Duration::from_millis(300));
        assert_eq!(woke, None, "reads woke the watcher");
        // A write does wake it, naming the file (after the temporary it was written to).
        dir.write("web.yaml", &WEB.replace("10.96.0.10", "10.96.0.30"));
        let target = dir.0.join("web.yaml");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "the write of {} was not seen",
                target.display()
            );
            match watch.wait(left) {
                Some(Seen::Paths(paths)) if paths.contains(&target) => break,
                _ => {}
            }
        }
    }

    #[test]
    fn rescans_of_a_large_folder_come_less_often() {
        let minute = Duration::from_secs(60);
        assert_eq!(
            rescan_interval(minute, Duration::from_millis(100), true),
            minute
        );
        assert_eq!(
            rescan_interval(minute, Duration::from_secs(2), true),
            Duration::from_secs(200)
        );
        let poll = Duration::from_secs(2);
        assert_eq!(
            rescan_interval(poll, Duration::from_millis(100), false),
            poll
        );
        assert_eq!(
            rescan_interval(poll, Duration::from_secs(1), false),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn a_burst_of_changed_files_is_delivered_in_parts() {
        let dir = TempDir::new("burst");
        let count = CHANGE_PART * 3 + 5;
        let name = |i: usize| format!("svc-{i:04}.yaml");
        let text = |i: usize, ip: &str| {
            WEB.replace("name: web", &format!("name: web-{i}"))
                .replace("10.96.0.10", ip)
        };
        for i in 0..count {
            dir.write(&name(i), &text(i, "10.96.0.10"));
        }
        let mut folder = ManifestFolder::new(&dir.0);
        assert!(folder.load().errors.is_empty());
        for i in 0..count {
            dir.write(&name(i), &text(i, "10.96.0.30"));
        }
        let mut parts = Vec::new();
        let paths: Vec<PathBuf> = (0..count).map(|i| dir.0.join(name(i))).collect();
        let outcome = folder.rescan_paths_in_parts(paths, |scan| {
            parts.push(names(&scan.messages));
            true
        });
        assert_eq!(outcome, Some(true));
        // Only the Services changed: one message per file, CHANGE_PART files per part, in
        // the order given.
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert_eq!(sizes, [CHANGE_PART, CHANGE_PART, CHANGE_PART, 5]);
        assert_eq!(parts[0][0], "+svc/web-0");
        assert_eq!(parts[3][4], format!("+svc/web-{}", count - 1));
        // A receiver that is gone stops the parts.
        for i in 0..count {
            dir.write(&name(i), &text(i, "10.96.0.40"));
        }
        let mut calls = 0;
        let paths: Vec<PathBuf> = (0..count).map(|i| dir.0.join(name(i))).collect();
        let outcome = folder.rescan_paths_in_parts(paths, |_| {
            calls += 1;
            false
        });
        assert_eq!((outcome, calls), (Some(false), 1));
    }

    #[test]
    fn rescanning_named_paths_reads_only_those_and_knows_when_it_cannot() {
        let dir = TempDir::new("paths");
        dir.write("web.yaml", WEB);
        dir.write("db.yaml", &WEB.replace("name: web", "name: db"));
        let mut folder = ManifestFolder::new(&dir.0);
        assert!(folder.load().errors.is_empty());

        // An edit, written atomically through a dot-file: one change; the temporary is
        // ignored, and so is an unrelated file.
        let tmp = dir.0.join(".web.yaml.tmp");
        std::fs::write(&tmp, WEB.replace("10.96.0.10", "10.96.0.30")).unwrap();
        std::fs::rename(&tmp, dir.0.join("web.yaml")).unwrap();
        dir.write("notes.txt", "not a manifest");
        let scan = folder
            .rescan_paths([tmp, dir.0.join("web.yaml"), dir.0.join("notes.txt")])
            .expect("named files are enough");
        assert_eq!(names(&scan.messages), ["+svc/web"]);
        // Unchanged: nothing read, nothing reported.
        let scan = folder.rescan_paths([dir.0.join("web.yaml")]).unwrap();
        assert!(scan.messages.is_empty());
        // A removed file: its objects go.
        std::fs::remove_file(dir.0.join("db.yaml")).unwrap();
        let scan = folder.rescan_paths([dir.0.join("db.yaml")]).unwrap();
        assert_eq!(names(&scan.messages), ["-svc/db", "-slice/db-1"]);
        // A new file appears.
        dir.write("db.yaml", &WEB.replace("name: web", "name: db"));
        let scan = folder.rescan_paths([dir.0.join("db.yaml")]).unwrap();
        assert_eq!(names(&scan.messages), ["+svc/db", "+slice/db-1"]);

        // What named paths cannot settle: a full rescan.
        std::fs::create_dir(dir.0.join("team")).unwrap();
        assert!(
            folder.rescan_paths([dir.0.join("team")]).is_none(),
            "a new folder"
        );
        assert!(
            folder.rescan_paths([dir.0.join("..data")]).is_none(),
            "a ConfigMap swap"
        );
        assert!(folder.rescan_paths([dir.0.clone()]).is_none(), "the root");
        assert!(
            folder
                .rescan_paths([PathBuf::from("/elsewhere/x.yaml")])
                .is_none(),
            "outside the root"
        );
        dir.write("team/api.yaml", &WEB.replace("name: web", "name: api"));
        assert_eq!(folder.rescan().messages.len(), 2);
        // In parts, the parts before the one that needs a full rescan are delivered.
        let mut parts = 0;
        let mut named: Vec<PathBuf> = (0..CHANGE_PART)
            .map(|i| dir.0.join(format!("x{i}.yaml")))
            .collect();
        named.push(dir.0.join("..data"));
        assert!(
            folder
                .rescan_paths_in_parts(named, |_| {
                    parts += 1;
                    true
                })
                .is_none()
        );
        assert_eq!(parts, 1);
        std::fs::remove_dir_all(dir.0.join("team")).unwrap();
        assert!(
            folder.rescan_paths([dir.0.join("team")]).is_none(),
            "a vanished folder"
        );
    }

    /// The cluster IP of the Service `web` as `messages` apply it, if they do.
    fn applied_ip(messages: &[Message]) -> Option<String> {
        messages.iter().find_map(|m| match m {
            Message::Services(Change::Applied(s)) => s.spec.as_ref()?.cluster_ip.clone(),
            Message::Services(Change::Reset(v)) => v.first()?.spec.as_ref()?.cluster_ip.clone(),
            _ => None,
        })
    }

    #[test]
    fn a_deeply_nested_file_is_skipped_at_once_and_the_others_load() {
        let dir = TempDir::new("deep");
        dir.write("web.yaml", WEB);
        let db = WEB.replace("name: web", "name: db");
        dir.write("db.yaml", &db);
        // The parser's time grows with the square of this; the guard's with its length.
        let depth = 100_000;
        let deep = format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        dir.write("deep.yaml", &deep);
        dir.write("deep.json", &format!("{{\"a\": {}}}", deep[3..].trim_end()));
        let mut folder = ManifestFolder::new(&dir.0);
        let scan = folder.load();
        assert_eq!(names(&scan.messages), ["svc*2", "slice*2"]);
        let mut errors: Vec<String> = scan.errors.iter().map(|e| e.to_string()).collect();
        errors.sort();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("deep.json:1: nested more than 100 levels deep"));
        assert!(errors[1].contains("deep.yaml:1: nested more than 100 levels deep"));
        assert!(errors[1].contains("--manifests-max-depth"), "{}", errors[1]);
        // A file that goes over keeps what it defined, and is reported once.
        dir.write("db.yaml", &format!("{db}---\n{deep}"));
        let scan = folder.rescan();
        assert!(scan.messages.is_empty(), "{:?}", names(&scan.messages));
        assert_eq!(scan.errors.len(), 1);
        assert!(folder.rescan().errors.is_empty(), "reported once");
        // The setting is the limit.
        let nested = "a:\n  b:\n    c: [[1]]\n";
        dir.write("deep.yaml", nested);
        let limits = Limits {
            max_depth: 4,
            ..Limits::default()
        };
        let mut folder = ManifestFolder::new(&dir.0).with_limits(limits);
        let scan = folder.load();
        assert!(
            scan.errors
                .iter()
                .any(|e| e.to_string().contains("deep.yaml:3: nested more than 4")),
            "{:?}",
            scan.errors
        );
    }

    #[test]
    fn a_file_over_the_size_limit_is_skipped_and_the_others_load() {
        let dir = TempDir::new("large");
        dir.write("web.yaml", WEB);
        let big = WEB.replace("name: web", "name: big");
        let padding = format!("# {}\n", "x".repeat(4096));
        dir.write("big.yaml", &format!("{big}{padding}"));
        let limits = Limits {
            max_file_size: 4096,
            ..Limits::default()
        };
        let mut folder = ManifestFolder::new(&dir.0).with_limits(limits);
        let scan = folder.load();
        assert_eq!(names(&scan.messages), ["svc*1", "slice*1"]);
        assert_eq!(applied_ip(&scan.messages).as_deref(), Some("10.96.0.10"));
        assert_eq!(scan.errors.len(), 1, "{:?}", scan.errors);
        let error = scan.errors[0].to_string();
        assert!(error.contains("big.yaml: the file is"), "{error}");
        assert!(error.contains("over the limit of 4096"), "{error}");
        assert!(error.contains("--manifests-max-file-size"), "{error}");
        assert!(folder.rescan().errors.is_empty(), "reported once");
        // Once within the limit, it loads; over it again, what it defined is kept.
        dir.write("big.yaml", &big);
        assert_eq!(
            names(&folder.rescan().messages),
            ["+svc/big", "+slice/big-1"]
        );
        dir.write("big.yaml", &format!("{padding}{padding}"));
        let scan = folder.rescan();
        assert!(scan.messages.is_empty(), "{:?}", names(&scan.messages));
        assert_eq!(scan.errors.len(), 1);
    }

    #[test]
    fn links_to_the_folder_itself_load_once_and_are_reported_once() {
        let dir = TempDir::new("loops");
        dir.write("web.yaml", WEB);
        dir.write("team/db.yaml", &WEB.replace("name: web", "name: db"));
        std::os::unix::fs::symlink(".", dir.0.join("again")).unwrap();
        std::os::unix::fs::symlink("..", dir.0.join("team/up")).unwrap();
        let mut folder = ManifestFolder::new(&dir.0);
        let scan = folder.load();
        assert!(scan.errors.is_empty(), "{:?}", scan.errors);
        assert_eq!(names(&scan.messages), ["svc*2", "slice*2"]);
        // One note per link, and no duplicates read through them.
        assert_eq!(scan.skipped.len(), 2, "{:?}", scan.skipped);
        assert!(scan.skipped.iter().all(|n| n.contains("already read")));
        // Not again at every rescan; a new link is reported when it appears.
        let scan = folder.rescan();
        assert!(scan.skipped.is_empty() && scan.messages.is_empty());
        std::os::unix::fs::symlink(".", dir.0.join("team/self")).unwrap();
        let scan = folder.rescan();
        assert_eq!(scan.skipped.len(), 1, "{:?}", scan.skipped);
        assert!(scan.skipped[0].contains("team/self"), "{:?}", scan.skipped);
        assert!(folder.rescan().skipped.is_empty());
    }

    /// Opens files as `File::open` does, but fails for `flaky.yaml` while `FLAKY` is set.
    static FLAKY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static FLAKY_FAILED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    fn flaky_open(path: &Path) -> std::io::Result<std::fs::File> {
        use std::sync::atomic::Ordering;
        if path.ends_with("flaky.yaml") && FLAKY.load(Ordering::SeqCst) {
            FLAKY_FAILED.fetch_add(1, Ordering::SeqCst);
            // EMFILE: too many open files.
            return Err(std::io::Error::from_raw_os_error(24));
        }
        std::fs::File::open(path)
    }

    #[test]
    fn a_file_that_cannot_be_read_is_read_again_and_keeps_what_it_had() {
        use std::sync::atomic::Ordering;
        let dir = TempDir::new("unreadable");
        dir.write("flaky.yaml", WEB);
        let mut folder = ManifestFolder::new(&dir.0);
        folder.open = flaky_open;
        assert!(folder.load().errors.is_empty());
        FLAKY.store(true, Ordering::SeqCst);
        dir.write("flaky.yaml", &WEB.replace("10.96.0.10", "10.96.0.30"));
        let path = dir.0.join("flaky.yaml");
        let scan = folder.rescan_paths([path.clone()]).unwrap();
        assert!(
            scan.messages.is_empty(),
            "kept: {:?}",
            names(&scan.messages)
        );
        assert_eq!(scan.errors.len(), 1, "{:?}", scan.errors);
        assert!(
            scan.errors[0].message.contains("cannot read"),
            "{:?}",
            scan.errors
        );
        let due = folder.next_retry().expect("to be read again");
        assert!(due <= std::time::Instant::now() + retry::FIRST_RETRY);
        // Still failing: tried again, reported once.
        let scan = folder.retry_due(due).unwrap();
        assert!(scan.errors.is_empty() && scan.messages.is_empty());
        FLAKY.store(false, Ordering::SeqCst);
        // Readable again: the edit is applied at the next try (or rescan), not lost.
        let due = folder.next_retry().expect("still to be read again");
        let scan = folder.retry_due(due).unwrap();
        assert_eq!(names(&scan.messages), ["+svc/web"]);
        assert_eq!(applied_ip(&scan.messages).as_deref(), Some("10.96.0.30"));
        assert_eq!(folder.next_retry(), None);
        assert_eq!(folder.retries.len(), 0);
        // A parse error is not retried.
        dir.write("flaky.yaml", "kind: [");
        assert_eq!(folder.rescan().errors.len(), 1);
        assert_eq!(folder.next_retry(), None);
    }

    /// As `flaky_open`, for the test through `watch` (tests run in parallel).
    static FLAKY_WATCHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static FLAKY_WATCHED_FAILED: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);
    fn flaky_watched_open(path: &Path) -> std::io::Result<std::fs::File> {
        use std::sync::atomic::Ordering;
        if path.ends_with("flaky.yaml") && FLAKY_WATCHED.load(Ordering::SeqCst) {
            FLAKY_WATCHED_FAILED.fetch_add(1, Ordering::SeqCst);
            return Err(std::io::Error::from_raw_os_error(24));
        }
        std::fs::File::open(path)
    }

    #[test]
    fn the_watcher_reads_a_file_again_after_a_read_error() {
        use std::sync::atomic::Ordering;
        let dir = TempDir::new("watch-unreadable");
        dir.write("flaky.yaml", WEB);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut folder = ManifestFolder::new(&dir.0);
        folder.open = flaky_watched_open;
        let metrics = Arc::new(Metrics::new(false));
        std::thread::spawn(move || watch(folder, tx, metrics));
        for _ in 0..4 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        FLAKY_WATCHED.store(true, Ordering::SeqCst);
        dir.write("flaky.yaml", &WEB.replace("10.96.0.10", "10.96.0.30"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while FLAKY_WATCHED_FAILED.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the edit was not read"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        FLAKY_WATCHED.store(false, Ordering::SeqCst);
        // Well before the full rescan (a minute away).
        let change = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let change = [change];
        assert_eq!(names(&change), ["+svc/web"]);
        assert_eq!(applied_ip(&change).as_deref(), Some("10.96.0.30"));
    }

    #[test]
    fn the_first_file_in_path_order_defines_a_duplicate_whatever_the_order_of_changes() {
        let dir = TempDir::new("dup-order");
        let a = WEB.split("---").next().unwrap().to_owned();
        let b = a.replace("10.96.0.10", "10.96.0.99");
        // What a fresh load (a restart) makes of the folder as it is.
        let fresh = |dir: &TempDir| applied_ip(&ManifestFolder::new(&dir.0).load().messages);
        dir.write("b.yaml", &b);
        let mut folder = ManifestFolder::new(&dir.0);
        assert_eq!(
            applied_ip(&folder.load().messages).as_deref(),
            Some("10.96.0.99")
        );
        // A file earlier in path order appears: it takes over, as a restart would decide.
        dir.write("a.yaml", &a);
        let scan = folder.rescan_paths([dir.0.join("a.yaml")]).unwrap();
        assert_eq!(names(&scan.messages), ["+svc/web"]);
        assert_eq!(applied_ip(&scan.messages).as_deref(), Some("10.96.0.10"));
        assert!(scan.skipped.iter().any(|n| n.contains("comes first")));
        assert_eq!(fresh(&dir).as_deref(), Some("10.96.0.10"));
        // The later file changes: nothing changes.
        dir.write("b.yaml", &b.replace("10.96.0.99", "10.96.0.98"));
        let scan = folder.rescan_paths([dir.0.join("b.yaml")]).unwrap();
        assert!(scan.messages.is_empty(), "{:?}", names(&scan.messages));
        // The first file goes: the next one takes over, with no deletion in between, with
        // its current content.
        std::fs::remove_file(dir.0.join("a.yaml")).unwrap();
        let scan = folder.rescan_paths([dir.0.join("a.yaml")]).unwrap();
        assert_eq!(names(&scan.messages), ["+svc/web"]);
        assert_eq!(applied_ip(&scan.messages).as_deref(), Some("10.96.0.98"));
        assert_eq!(fresh(&dir).as_deref(), Some("10.96.0.98"));
        // And a full rescan agrees: nothing more to do.
        assert!(folder.rescan().messages.is_empty());
    }

    #[test]
    fn when_the_first_definition_stops_the_next_takes_over_without_a_deletion() {
        let dir = TempDir::new("dup-takeover");
        let only_service = |ip: &str| WEB.split("---").next().unwrap().replace("10.96.0.10", ip);
        dir.write("a.yaml", &only_service("10.96.0.1"));
        dir.write("b.yaml", &only_service("10.96.0.2"));
        dir.write("c.yaml", &only_service("10.96.0.3"));
        let mut folder = ManifestFolder::new(&dir.0);
        let scan = folder.load();
        assert_eq!(applied_ip(&scan.messages).as_deref(), Some("10.96.0.1"));
        assert_eq!(scan.skipped.len(), 2, "{:?}", scan.skipped);
        // a stops defining it (it defines another Service now): b takes over.
        dir.write(
            "a.yaml",
            &only_service("10.96.0.1").replace("name: web", "name: db"),
        );
        let scan = folder.rescan();
        assert_eq!(
            names(&scan.messages),
            ["+svc/db", "+svc/web"],
            "no -svc/web"
        );
        let ips: Vec<_> = scan
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::Services(Change::Applied(s)) => s.spec.as_ref()?.cluster_ip.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(ips, ["10.96.0.1", "10.96.0.2"]);
        // b goes: c takes over; c goes: it is deleted.
        std::fs::remove_file(dir.0.join("b.yaml")).unwrap();
        let scan = folder.rescan();
        assert_eq!(names(&scan.messages), ["+svc/web"]);
        assert_eq!(applied_ip(&scan.messages).as_deref(), Some("10.96.0.3"));
        std::fs::remove_file(dir.0.join("c.yaml")).unwrap();
        assert_eq!(names(&folder.rescan().messages), ["-svc/web"]);
    }

    #[test]
    fn a_large_file_of_a_burst_is_read_after_the_others() {
        let dir = TempDir::new("burst-large");
        let big = |ip: &str| {
            let padding = format!("# {}\n", "x".repeat(LARGE_FILE as usize));
            format!(
                "{}{padding}",
                WEB.replace("name: web", "name: big")
                    .replace("10.96.0.10", ip)
            )
        };
        dir.write("a-big.yaml", &big("10.96.0.10"));
        dir.write("b-small.yaml", WEB);
        let mut folder = ManifestFolder::new(&dir.0);
        assert!(folder.load().errors.is_empty());
        dir.write("a-big.yaml", &big("10.96.0.20"));
        dir.write("b-small.yaml", &WEB.replace("10.96.0.10", "10.96.0.20"));
        let mut parts = Vec::new();
        let paths = [dir.0.join("a-big.yaml"), dir.0.join("b-small.yaml")];
        let outcome = folder.rescan_paths_in_parts(paths, |scan| {
            parts.push(names(&scan.messages));
            true
        });
        assert_eq!(outcome, Some(true));
        // The small file's change is delivered first, though named second.
        assert_eq!(parts, [["+svc/web"], ["+svc/big"]]);
        // And so by a full rescan, where it comes first in path order.
        dir.write("a-big.yaml", &big("10.96.0.30"));
        dir.write("b-small.yaml", &WEB.replace("10.96.0.10", "10.96.0.30"));
        let mut parts = Vec::new();
        let listing = list_files(&dir.0, || {});
        assert!(folder.rescan_listed_in_parts(listing, |scan| {
            parts.push(names(&scan.messages));
            true
        }));
        assert_eq!(parts, [["+svc/web"], ["+svc/big"]]);
    }

    #[test]
    fn the_watch_goes_on_when_the_folder_is_removed_and_created_again() {
        let dir = TempDir::new("watch-recreated");
        dir.write("web.yaml", WEB);
        let (tx, rx) = std::sync::mpsc::channel();
        let folder = ManifestFolder::new(&dir.0);
        let metrics = Arc::new(Metrics::new(false));
        std::thread::spawn(move || watch(folder, tx, metrics));
        for _ in 0..4 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        // Removed (nothing unloaded), then created again, with an edit.
        std::fs::remove_dir_all(&dir.0).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        std::fs::create_dir_all(&dir.0).unwrap();
        dir.write("web.yaml", WEB);
        // The same content: nothing to send. Then an edit, which the watcher must see
        // (the full rescan is a minute away).
        std::thread::sleep(Duration::from_millis(100));
        dir.write("web.yaml", &WEB.replace("10.96.0.10", "10.96.0.30"));
        let change = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let change = [change];
        assert_eq!(names(&change), ["+svc/web"]);
        assert_eq!(applied_ip(&change).as_deref(), Some("10.96.0.30"));
    }

    #[test]
    fn a_mounted_config_map_is_read_through_its_links_and_its_swaps_followed() {
        // The layout the kubelet writes: the keys link through `..data` to a dot-folder.
        let dir = TempDir::new("configmap");
        dir.write("..2026_01_01/web.yaml", WEB);
        std::os::unix::fs::symlink("..2026_01_01", dir.0.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/web.yaml", dir.0.join("web.yaml")).unwrap();
        let mut folder = ManifestFolder::new(&dir.0);
        let scan = folder.load();
        assert!(
            scan.errors.is_empty() && scan.skipped.is_empty(),
            "{scan:?}"
        );
        assert_eq!(names(&scan.messages), ["svc*1", "slice*1"]);
        // An update: a new dot-folder, and `..data` swapped to it by a rename.
        dir.write(
            "..2026_01_02/web.yaml",
            &WEB.replace("10.96.0.10", "10.96.0.30"),
        );
        std::os::unix::fs::symlink("..2026_01_02", dir.0.join("..data_tmp")).unwrap();
        std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
        assert!(folder.rescan_paths([dir.0.join("..data")]).is_none());
        let scan = folder.rescan();
        assert_eq!(names(&scan.messages), ["+svc/web"]);
        assert!(scan.skipped.is_empty(), "{:?}", scan.skipped);
    }
}
