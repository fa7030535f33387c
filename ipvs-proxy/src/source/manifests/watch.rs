//! Watching: the loop that publishes each scan's changes, when the whole folder is rescanned,
//! and the inotify watcher.

use super::*;

/// Reports a scan: errors and skipped documents in the log and the metrics; sends the
/// changes. Returns `false` when the engine is gone.
pub(super) fn publish(scan: Scan, tx: &Sender, metrics: &Metrics) -> bool {
    for error in &scan.errors {
        warn!(%error, "manifest not loaded; what it defined before is kept");
        metrics.source_error("manifests");
    }
    for note in &scan.skipped {
        warn!("{note}");
    }
    for message in scan.messages {
        if tx.send(message).is_err() {
            return false;
        }
    }
    true
}

/// The time between two full rescans, given the configured `base` and how long the last one
/// took: with a watcher, the insurance rescan takes at most 1 % of the source's thread (a
/// `stat` of every file of a large folder takes seconds, and changes wait while it runs);
/// when polling without one, at most 25 %.
pub(super) fn rescan_interval(base: Duration, took: Duration, watched: bool) -> Duration {
    let share = if watched { 100 } else { 4 };
    base.max(took * share)
}

/// Starts watching `root` (a file is watched through its folder, since editors replace files
/// by renaming). `None` when the platform or file system has no watcher (the periodic rescan
/// covers it).
pub(super) fn start_watcher(root: &Path) -> Option<FolderWatch> {
    let target = if root.is_file() {
        root.parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| root.to_owned())
    } else {
        root.to_owned()
    };
    match FolderWatch::start(&target) {
        Ok(watch) => Some(watch),
        Err(error) => {
            warn!(path = %target.display(), %error, "cannot watch the manifests; rescanning every {RESCAN_INTERVAL:?}");
            None
        }
    }
}

/// Loads `folder` and then follows its changes until the engine is gone, on the calling
/// thread (blocking: run it on a thread of its own).
pub fn watch(mut folder: ManifestFolder, tx: Sender, metrics: Arc<Metrics>) {
    // inotify where available; the periodic rescan covers the rest.
    let mut watcher = start_watcher(folder.root());
    // The first load, tried again until the path can be listed: until then the engine has
    // no first list and leaves the node as it is.
    loop {
        let mut errors = 0;
        let outcome = folder.load_in_parts(|part| {
            errors += part.errors.len();
            publish(part, &tx, &metrics)
        });
        match outcome {
            FirstLoad::Complete => {
                info!(path = %folder.root().display(), errors, "manifests loaded");
                break;
            }
            FirstLoad::Stopped => return,
            FirstLoad::Unreadable => {
                warn!(
                    path = %folder.root().display(),
                    retry_in_ms = RESCAN_INTERVAL.as_millis() as u64,
                    "the manifests path cannot be listed; the node is left as it is until it can"
                );
                std::thread::sleep(RESCAN_INTERVAL);
            }
        }
    }
    // With a watcher, changes are read from the paths it names, and the whole folder is
    // rescanned now and then as insurance; without one, the folder is polled. Either way a
    // rescan takes at most a share of the thread's time (see `rescan_interval`).
    let base = if watcher.is_some() {
        WATCHED_RESCAN_INTERVAL
    } else {
        RESCAN_INTERVAL
    };
    let mut full_every = base;
    let mut last_full = std::time::Instant::now();
    // A full rescan is due at once (the watcher asked for one during the last).
    let mut again = false;
    // Sends what a scan found; false once the engine is gone.
    let deliver = |scan: Scan| {
        if !scan.messages.is_empty() {
            debug!(changes = scan.messages.len(), "manifests changed");
        }
        publish(scan, &tx, &metrics)
    };
    loop {
        // Until the next full rescan, or the next file to read again if sooner.
        let mut wait = full_every.saturating_sub(last_full.elapsed());
        if let Some(due) = folder.next_retry() {
            wait = wait.min(due.saturating_duration_since(std::time::Instant::now()));
        }
        let seen = match watcher.as_mut() {
            Some(_) if std::mem::take(&mut again) => Seen::Everything,
            Some(watch) => match watch.wait(wait) {
                Some(seen) => {
                    // Let a burst of events (an editor's write, a `cp -r`) settle, then scan
                    // once.
                    std::thread::sleep(Duration::from_millis(20));
                    match watch.take() {
                        Some(more) => seen.merge(more),
                        None => seen,
                    }
                }
                None if last_full.elapsed() >= full_every => Seen::Everything,
                None => Seen::Paths(Default::default()),
            },
            None => {
                // No watcher: poll.
                std::thread::sleep(wait);
                if last_full.elapsed() >= full_every {
                    Seen::Everything
                } else {
                    Seen::Paths(Default::default())
                }
            }
        };
        if let Seen::Paths(mut paths) = seen {
            // With the files due to be read again.
            let now = std::time::Instant::now();
            if folder.next_retry().is_some_and(|due| due <= now) {
                paths.extend(folder.retries.due(now));
            }
            if paths.is_empty() {
                continue;
            }
            match folder.rescan_paths_in_parts(paths, deliver) {
                Some(true) => continue,
                Some(false) => return,
                None => {}
            }
        }
        last_full = std::time::Instant::now();
        // The watcher's changes are taken in while the folder is listed (see `list_files`).
        let root = folder.root().to_owned();
        let mut gone = false;
        let mut paused = Duration::ZERO;
        let listing = list_files(&root, || {
            let Some(seen) = watcher.as_mut().and_then(FolderWatch::take) else {
                return;
            };
            let started = std::time::Instant::now();
            match seen {
                Seen::Paths(paths) if !gone => match folder.rescan_paths_in_parts(paths, deliver) {
                    Some(true) => {}
                    Some(false) => gone = true,
                    None => again = true,
                },
                Seen::Paths(_) => {}
                Seen::Everything => again = true,
            }
            paused += started.elapsed();
        });
        if gone {
            return;
        }
        let delivered = folder.rescan_listed_in_parts(listing, deliver);
        // The rescan's own time sets the next one's, not the changes taken in meanwhile.
        let took = last_full.elapsed().saturating_sub(paused);
        full_every = rescan_interval(base, took, watcher.is_some());
        if !delivered {
            return;
        }
    }
}
