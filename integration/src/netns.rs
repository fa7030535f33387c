//! Fresh network namespaces that belong to one test and vanish with it.
//!
//! A namespace is created on a short-lived thread with `unshare(CLONE_NEWNET)`; the thread opens
//! `/proc/thread-self/ns/net` and exits, and the open file keeps the namespace alive. Work is done
//! in it by [`Netns::run`], which runs a closure on a new thread that has joined the namespace with
//! `setns`. The caller's own thread never changes namespace, so tests can run side by side and can
//! never touch the host's IPVS table. Dropping the last [`Netns`] (and ending the threads and
//! sockets inside it) frees the namespace and everything in it, IPVS table included.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use nix::sched::{CloneFlags, setns, unshare};

/// A network namespace owned by this process.
#[derive(Debug, Clone)]
pub struct Netns {
    file: Arc<File>,
    name: Arc<str>,
}

impl Netns {
    /// Creates a new, empty network namespace with its loopback interface up.
    ///
    /// `name` is only used in messages and thread names.
    pub fn new(name: &str) -> io::Result<Self> {
        let file = thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(|| -> io::Result<File> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("unshare(CLONE_NEWNET) failed ({e}): creating a network namespace needs CAP_SYS_ADMIN"),
                    )
                })?;
                File::open("/proc/thread-self/ns/net")
            })?
            .join()
            .map_err(|_| io::Error::other("namespace thread panicked"))??;
        let netns = Self {
            file: Arc::new(file),
            name: name.into(),
        };
        netns.run(|| crate::link::set_up("lo"))??;
        Ok(netns)
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A path that names this namespace for as long as this process holds it open
    /// (`/proc/<pid>/fd/<fd>`), usable by other programs and by `setns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    /// Runs `f` on a new thread inside this namespace and returns its result.
    ///
    /// Sockets opened and programs spawned by `f` live in the namespace.
    pub fn run<T, F>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        thread::scope(|scope| {
            let handle = thread::Builder::new()
                .name(format!("in-{}", self.name))
                .spawn_scoped(scope, || -> io::Result<T> {
                    self.enter_current_thread()?;
                    Ok(f())
                })?;
            handle.join().map_err(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                io::Error::other(format!(
                    "thread in namespace {} panicked: {what}",
                    self.name
                ))
            })?
        })
    }

    /// Spawns a long-running thread inside this namespace (for servers).
    pub fn spawn<T, F>(&self, f: F) -> io::Result<thread::JoinHandle<io::Result<T>>>
    where
        F: FnOnce() -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let me = self.clone();
        thread::Builder::new()
            .name(format!("in-{}", self.name))
            .spawn(move || {
                me.enter_current_thread()?;
                f()
            })
    }

    /// Moves the calling thread into this namespace. Only for threads this crate creates.
    fn enter_current_thread(&self) -> io::Result<()> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| io::Error::other(format!("setns into {} failed: {e}", self.name)))
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// The inode of the calling thread's network namespace (to check that a thread did not move).
pub fn current_netns_inode() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}
