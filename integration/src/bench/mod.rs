//! What the real-kernel benchmarks measure a process and a machine with, and how they write
//! figures, shared by every benchmark program so that two tables mean the same thing by the
//! same words.

mod figures;
pub mod klog;
pub mod log;
mod machine;
mod process;
pub mod scrape;

pub use figures::{Latencies, mib, ms};
pub use machine::Machine;
pub use process::{Cpu, Memory};
pub use scrape::Scrape;

use std::path::{Path, PathBuf};

/// The release `ipvs-proxy` beside the running benchmark: `target/release/ipvs-proxy` for a
/// benchmark built as `target/release/deps/NAME-HASH` (where `cargo xtask bench` builds both).
///
/// # Panics
///
/// When the benchmark's own path cannot be read or has no such folder above it.
pub fn release_daemon() -> PathBuf {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    exe.parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("ipvs-proxy"))
        .expect("the benchmark runs from a target folder")
}

/// Now, to the minute, in UTC (`2026-12-07 09:50 UTC`), as a report's date line gives it
/// (empty when `date` cannot run).
pub fn utc_minute() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A wall-clock time as Unix seconds (0 before the epoch), as logs and metrics write times.
pub fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
