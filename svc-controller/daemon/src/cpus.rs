//! How many CPUs the daemon's parallel work (parsing a first load, computing many Services)
//! may use.

use std::sync::OnceLock;

/// The CPUs this process may run on (at least 1), asked once: the standard library reads the
/// affinity mask and the cgroup's quota from `/proc` and `/sys` every time, which costs a
/// one-Service sync more than its computation.
pub fn available() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}
