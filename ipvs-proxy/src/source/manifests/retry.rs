//! Files that could not be read (as opposed to files that were read and did not parse), to
//! be read again soon: an error such as running out of file descriptors passes, and the
//! change it hid must not wait for the next full rescan, nor for the next edit of the file.
//!
//! Each is tried again after a delay that doubles from [`FIRST_RETRY`] up to [`LAST_RETRY`],
//! and its error is reported once (again only when it changes), not at every try. Meanwhile
//! what the file defined before stays loaded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use foldhash::HashMap;

/// The delay before a file that could not be read is tried again the first time.
pub const FIRST_RETRY: Duration = Duration::from_millis(250);

/// The longest delay between two tries to read a file.
pub const LAST_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Retry {
    /// Failed reads in a row.
    failures: u32,
    due: Instant,
    /// The error last reported.
    reported: String,
}

/// The files to read again, and when (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct Retries {
    by_path: HashMap<PathBuf, Retry>,
}

/// The delay after `failures` failed reads in a row.
fn delay(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(LAST_RETRY)
}

impl Retries {
    /// Reading `path` failed with `message`: it is tried again later. True when the error is
    /// to be reported (the first of a run, or a different one).
    pub(super) fn failed(&mut self, path: &Path, message: &str, now: Instant) -> bool {
        let retry = self.by_path.entry(path.to_owned()).or_insert(Retry {
            failures: 0,
            due: now,
            reported: String::new(),
        });
        retry.failures += 1;
        retry.due = now + delay(retry.failures);
        if retry.reported == message {
            return false;
        }
        retry.reported = message.to_owned();
        true
    }

    /// `path` was read, or is gone: nothing to try again.
    pub(super) fn settled(&mut self, path: &Path) {
        self.by_path.remove(path);
    }

    /// Keeps only the files `keep` answers true for.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Path) -> bool) {
        self.by_path.retain(|path, _| keep(path));
    }

    /// When the next try is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.by_path.values().map(|r| r.due).min()
    }

    /// The files due for a try at `now`, in path order. Each is due again later, so that a
    /// file that is not read again (it is unchanged since it was last read whole) is not
    /// asked for at every turn.
    pub(super) fn due(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut due = Vec::new();
        for (path, retry) in &mut self.by_path {
            if retry.due <= now {
                retry.due = now + delay(retry.failures);
                due.push(path.clone());
            }
        }
        super::sort_paths(&mut due);
        due
    }

    /// How many files wait for a try.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_path.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_the_last_and_errors_are_reported_once() {
        assert_eq!(delay(1), FIRST_RETRY);
        assert_eq!(delay(2), FIRST_RETRY * 2);
        assert_eq!(delay(40), LAST_RETRY);
        let mut retries = Retries::default();
        let now = Instant::now();
        let path = Path::new("/m/web.yaml");
        assert!(retries.failed(path, "too many open files", now));
        assert!(!retries.failed(path, "too many open files", now));
        assert!(retries.failed(path, "permission denied", now));
        assert_eq!(retries.next_due(), Some(now + FIRST_RETRY * 4));
        assert!(retries.due(now).is_empty());
        assert_eq!(retries.due(now + LAST_RETRY), [path.to_owned()]);
        retries.settled(path);
        assert_eq!(retries.next_due(), None);
    }
}
