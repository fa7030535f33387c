//! A process's CPU time and memory, from `/proc`.

use std::collections::BTreeMap;

/// `/proc` reports CPU times in USER_HZ, 100 on every Linux architecture we run on.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) of a process: the whole process, its threads by name (threads
/// of one name summed), and the children it has waited for (the programs it ran).
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    /// The whole process.
    pub total: f64,
    /// Its children that have ended and been waited for (`cutime` + `cstime`).
    pub children: f64,
    /// Per thread name.
    pub threads: BTreeMap<String, f64>,
}

impl Cpu {
    /// Reads process `pid`'s times now; a process that is gone reads as zero.
    pub fn read(pid: u32) -> Self {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let total = stat_ticks(&stat).map_or(0.0, |(_, t)| t);
        let children = stat_children(&stat).unwrap_or(0.0);
        let mut threads = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for entry in dir.flatten() {
                if let Some((comm, t)) = std::fs::read_to_string(entry.path().join("stat"))
                    .ok()
                    .and_then(|s| stat_ticks(&s))
                {
                    *threads.entry(comm).or_insert(0.0) += t;
                }
            }
        }
        Self {
            total,
            children,
            threads,
        }
    }

    /// The process and its children together.
    pub fn with_children(&self) -> f64 {
        self.total + self.children
    }

    /// The seconds of the threads named `name`.
    pub fn thread(&self, name: &str) -> f64 {
        self.threads.get(name).copied().unwrap_or(0.0)
    }

    /// The CPU time spent between `before` and this reading.
    pub fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            total: self.total - before.total,
            children: self.children - before.children,
            threads: self
                .threads
                .iter()
                .map(|(k, v)| (k.clone(), v - before.thread(k)))
                .collect(),
        }
    }
}

/// The command name and user + system seconds of a `stat` line (stat(5)).
fn stat_ticks(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime) are the 12th and 13th after the comm.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / USER_HZ))
}

/// The user + system seconds of a `stat` line's waited-for children (stat(5) fields 16, 17).
fn stat_children(stat: &str) -> Option<f64> {
    let close = stat.rfind(')')?;
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let cutime: f64 = fields.get(13)?.parse().ok()?;
    let cstime: f64 = fields.get(14)?.parse().ok()?;
    Some((cutime + cstime) / USER_HZ)
}

/// A process's resident memory, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// The peak so far (`VmHWM`).
    pub peak_kib: u64,
    /// Now (`VmRSS`).
    pub now_kib: u64,
}

impl Memory {
    /// Reads process `pid`'s; a process that is gone reads as zero.
    pub fn read(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Self {
            peak_kib: field("VmHWM:"),
            now_kib: field("VmRSS:"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use super::*;

    #[test]
    fn stat_ticks_reads_a_command_with_spaces_and_parentheses() {
        let line = "42 (tokio (rt) 1) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 15 5 20 0 3 0";
        let (comm, seconds) = stat_ticks(line).unwrap();
        assert_eq!(comm, "tokio (rt) 1");
        assert!((seconds - 3.25).abs() < 1e-9, "{seconds}");
        let children = stat_children(line).unwrap();
        assert!((children - 0.2).abs() < 1e-9, "{children}");
        assert_eq!(stat_ticks("42 (short) S 1"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let cpu = Cpu::read(pid);
        assert!(cpu.total > 0.0 && cpu.with_children() >= cpu.total);
        let memory = Memory::read(pid);
        assert!(memory.now_kib > 0 && memory.peak_kib >= memory.now_kib);
        assert_eq!(Memory::read(u32::MAX), Memory::default());
    }
}
