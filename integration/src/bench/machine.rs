//! The machine a benchmark ran on, as its report names it.

/// The CPU, its count, the memory and the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// `QEMU TCG CPU version 2.5+, 2 CPUs, 5.8 GiB memory, virtual machine`.
    pub description: String,
    /// The kernel release (`6.1.0-57-amd64`).
    pub kernel: String,
}

impl Machine {
    /// Reads this machine's from `/proc`.
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Self::from_proc(&cpuinfo, &meminfo, &kernel)
    }

    fn from_proc(cpuinfo: &str, meminfo: &str, kernel: &str) -> Self {
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let mem_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let virt = if cpuinfo.contains("hypervisor") {
            ", virtual machine"
        } else {
            ""
        };
        Self {
            description: format!(
                "{model}, {cores} CPUs, {:.1} GiB memory{virt}",
                mem_kib as f64 / 1048576.0
            ),
            kernel: kernel.trim().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_machine_is_named_so() {
        let cpuinfo = "processor\t: 0\nmodel name\t: QEMU TCG CPU\nflags\t: fpu hypervisor\n\
                       processor\t: 1\nmodel name\t: QEMU TCG CPU\n";
        let m = Machine::from_proc(cpuinfo, "MemTotal:  2097152 kB\n", "6.1.0-57-amd64\n");
        assert_eq!(
            m.description,
            "QEMU TCG CPU, 2 CPUs, 2.0 GiB memory, virtual machine"
        );
        assert_eq!(m.kernel, "6.1.0-57-amd64");
    }
}
