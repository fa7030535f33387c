//! Thread priorities: background reading yields to the engine.
//!
//! On a node with few CPUs, the threads that parse a first load of thousands of manifests
//! compete with the engine, which programs each part as it arrives on a fresh node (and
//! whose work — the kernel's included — is the cold start's critical path). The parsing
//! threads run at a lower priority ([`lower_this_thread`]): while the engine has work, it
//! gets its CPU; while it waits for the next part, the parsers get every CPU.

/// How much lower than the process's priority the background threads run (a nice value
/// added to the process's): under the Linux scheduler, nice 10 weighs about a tenth of nice 0.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority by [`BACKGROUND_NICE`]; the other threads
/// keep theirs. Raising a nice value needs no privilege; a failure (it cannot fail on Linux
/// for the calling thread) leaves the priority as it was.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `getpriority` and `setpriority` take plain integers and touch no memory of
        // this program. On Linux a nice value belongs to a thread, and `who == 0` names the
        // calling thread alone.
        unsafe {
            let current = libc::getpriority(libc::PRIO_PROCESS, 0);
            libc::setpriority(libc::PRIO_PROCESS, 0, current + BACKGROUND_NICE);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn lowers_the_calling_thread_only() {
        let nice = || {
            // SAFETY: as in `lower_this_thread`.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        };
        let before = nice();
        let inside = std::thread::spawn(move || {
            let start = nice();
            super::lower_this_thread();
            (start, nice())
        })
        .join()
        .unwrap();
        assert_eq!(
            inside.0, before,
            "a new thread starts at its creator's priority"
        );
        assert_eq!(inside.1, (before + super::BACKGROUND_NICE).min(19));
        assert_eq!(nice(), before, "the calling thread is untouched");
    }
}
