//! Giving memory the process no longer uses back to the system.
//!
//! glibc's allocator keeps the memory that is freed in its arenas for the next allocations;
//! it returns only what lies at the top of a heap. A daemon whose large, short-lived work
//! (the first load's parsed parts, the adoption's read of the whole table, a full pass)
//! interleaves with its long-lived state keeps free holes resident, tens of MiB on a large
//! table that hold nothing. [`release_free_memory`] asks the
//! allocator to give the free pages of every arena back (`malloc_trim`), after such work.
//!
//! The `ipvs-proxy` binary allocates with mimalloc, which returns freed pages to the system by
//! itself shortly after they are freed; there the call only trims what the C library itself
//! allocated. It matters to programs that embed the engine and keep glibc's allocator.

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
