//! What the engine asks of the operating system: the CPUs its parallel work may use, its
//! thread's CPU time, and memory given back after large work.
//!
//! glibc's allocator keeps the memory that is freed in its arenas for the next allocations;
//! it returns only what lies at the top of a heap. A program whose large, short-lived work
//! (a first load's parsed objects, the adoption's read of the whole table, a full pass)
//! interleaves with its long-lived state keeps free holes resident, tens of MiB on a large
//! table that hold nothing. [`release_free_memory`] asks the allocator to give the free pages
//! of every arena back (`malloc_trim`); the engine calls it after such work. An allocator
//! that returns freed pages by itself (mimalloc, as the `ipvs-proxy` binary uses) makes the
//! call trim only what the C library itself allocated.

use std::sync::OnceLock;
use std::time::Duration;

/// The CPUs this process may run on (at least 1), asked once: the standard library reads the
/// affinity mask and the cgroup's quota from `/proc` and `/sys` every time, which costs a
/// one-Service sync more than its computation.
pub fn available_cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

/// The CPU time the calling thread has used (zero if the clock cannot be read).
pub fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Returns the allocator's free pages to the system (glibc's `malloc_trim(0)`, which also
/// releases whole free pages in the middle of its heaps). Takes a few milliseconds; a no-op
/// where the C library is not glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` has no preconditions: it takes each arena's lock and only
        // returns pages that hold no allocation; it is safe to call from any thread at any
        // time, and no memory this program uses is touched.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
