//! Node settings applied at start-up: the sysctls an IPVS proxy needs (and strict ARP when
//! asked), and IPVS's connection timeouts. The sysctls are then held by the reconciler: every
//! full pass checks them and writes back any that changed.

use ipvs::model::Timeouts;
use svc_controller::dataplane::Dataplane;
use svc_controller::reconcile::ReconcilerConfig;

/// The sysctls of strict ARP: answer ARP only for addresses of the receiving interface, and
/// announce with the best local address, so VIPs bound on the dummy interface are not
/// claimed on the network (what MetalLB's layer-2 mode needs).
pub const STRICT_ARP: [(&str, &str); 2] = [
    ("net/ipv4/conf/all/arp_ignore", "1"),
    ("net/ipv4/conf/all/arp_announce", "2"),
];

/// The kernel release (`uname -r`), read from `/proc`.
pub fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The sysctl that switches IPVS's rate estimation (Linux 5.16 and later). Before 6.2 the
/// kernel estimates the rates of every virtual and real server in one timer every 2 seconds,
/// which keeps a CPU for the whole walk: over 200 ms with 50,000 services by the patch that
/// added this switch (`BENCHMARKS.md` has this project's figure). Off, the counters still
/// count; only the rates
/// (`ipvsadm --rate`, the statistics' `*ps` fields) stay at zero.
pub const RUN_ESTIMATION: &str = "net/ipv4/vs/run_estimation";

/// The sysctls to hold for a kernel `release`, with strict ARP or not, and with IPVS's rate
/// estimation switched as asked (`None`: left as the node has it).
pub fn sysctls(
    release: Option<&str>,
    strict_arp: bool,
    rate_estimation: Option<bool>,
) -> Vec<(String, String)> {
    let mut out = ReconcilerConfig::recommended_sysctls(release);
    if strict_arp {
        out.extend(
            STRICT_ARP
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
    }
    if let Some(on) = rate_estimation {
        out.push((
            RUN_ESTIMATION.to_owned(),
            if on { "1" } else { "0" }.to_owned(),
        ));
    }
    out
}

/// A sysctl that could not be set.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot set {key}={value}: {message} (the daemon needs CAP_NET_ADMIN and a writable /proc/sys/net)"
)]
pub struct SysctlError {
    /// The key.
    pub key: String,
    /// The value wanted.
    pub value: String,
    /// Why.
    pub message: String,
}

/// Why `key` may be missing.
fn missing(key: &str) -> String {
    if key == RUN_ESTIMATION {
        "no such sysctl (it needs Linux 5.16 or later; leave --ipvs-rate-estimation unset on \
         older kernels)"
            .into()
    } else {
        "no such sysctl (is the ip_vs module loaded?)".into()
    }
}

/// Writes each sysctl that differs; returns the ones written. Stops at the first failure.
pub fn apply_sysctls(
    dataplane: &mut impl Dataplane,
    sysctls: &[(String, String)],
) -> Result<Vec<String>, SysctlError> {
    let mut written = Vec::new();
    for (key, value) in sysctls {
        let fail = |message: String| SysctlError {
            key: key.clone(),
            value: value.clone(),
            message,
        };
        let current = dataplane.sysctl(key).map_err(|e| fail(e.to_string()))?;
        match current {
            None => return Err(fail(missing(key))),
            Some(v) if v == *value => {}
            Some(_) => {
                dataplane
                    .set_sysctl(key, value)
                    .map_err(|e| fail(e.to_string()))?;
                written.push(format!("{key}={value}"));
            }
        }
    }
    Ok(written)
}

/// Checks the sysctls without writing any (`--sysctls check`): the first one that differs or
/// cannot be read is an error that says how to fix it.
pub fn check_sysctls(
    dataplane: &mut impl Dataplane,
    sysctls: &[(String, String)],
) -> Result<(), SysctlError> {
    for (key, value) in sysctls {
        let fail = |message: String| SysctlError {
            key: key.clone(),
            value: value.clone(),
            message,
        };
        match dataplane.sysctl(key).map_err(|e| fail(e.to_string()))? {
            None => return Err(fail(missing(key))),
            Some(v) if v == *value => {}
            Some(v) => {
                return Err(fail(format!(
                    "it is {v} and --sysctls check does not write it (run `ipvs-proxy --init-node` \
                     with the same settings first, or use --sysctls hold)"
                )));
            }
        }
    }
    Ok(())
}

/// The IPVS timeouts to set (zero durations keep the kernel's value), `None` when all are
/// zero. Durations are rounded up to whole seconds.
pub fn timeouts(
    tcp: std::time::Duration,
    tcp_fin: std::time::Duration,
    udp: std::time::Duration,
) -> Option<Timeouts> {
    let secs = |d: std::time::Duration| {
        let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        std::num::NonZeroU32::new(u32::try_from(whole).unwrap_or(u32::MAX))
    };
    let t = Timeouts {
        tcp: secs(tcp),
        tcp_fin: secs(tcp_fin),
        udp: secs(udp),
    };
    (t.tcp.is_some() || t.tcp_fin.is_some() || t.udp.is_some()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use svc_controller::dataplane::MemoryDataplane;

    #[test]
    fn only_differing_sysctls_are_written() {
        let mut dp = MemoryDataplane::new().with_sysctls([
            ("net/ipv4/vs/conntrack", "1"),
            ("net/ipv4/vs/expire_nodest_conn", "0"),
            ("net/ipv4/vs/expire_quiescent_template", "0"),
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv4/conf/all/arp_ignore", "0"),
            ("net/ipv4/conf/all/arp_announce", "0"),
        ]);
        let wanted = sysctls(Some("6.1.0"), true, None);
        let written = apply_sysctls(&mut dp, &wanted).unwrap();
        assert_eq!(
            written,
            [
                "net/ipv4/vs/expire_nodest_conn=1",
                "net/ipv4/vs/expire_quiescent_template=1",
                "net/ipv4/conf/all/arp_ignore=1",
                "net/ipv4/conf/all/arp_announce=2",
            ]
        );
        assert!(apply_sysctls(&mut dp, &wanted).unwrap().is_empty());
    }

    #[test]
    fn rate_estimation_is_held_only_when_asked() {
        let has = |rate| {
            sysctls(Some("6.1.0"), false, rate)
                .into_iter()
                .find(|(k, _)| k == RUN_ESTIMATION)
                .map(|(_, v)| v)
        };
        assert_eq!(has(None), None, "left as the node has it");
        assert_eq!(has(Some(false)).as_deref(), Some("0"));
        assert_eq!(has(Some(true)).as_deref(), Some("1"));
        let mut dp = MemoryDataplane::new().with_sysctls([(RUN_ESTIMATION, "1")]);
        let off = [(RUN_ESTIMATION.to_owned(), "0".to_owned())];
        assert_eq!(
            apply_sysctls(&mut dp, &off).unwrap(),
            ["net/ipv4/vs/run_estimation=0"]
        );
        assert_eq!(dp.sysctl_value(RUN_ESTIMATION), Some("0"));
    }

    #[test]
    fn check_mode_reads_and_never_writes() {
        let mut dp = MemoryDataplane::new().with_sysctls([
            ("net/ipv4/vs/conntrack", "1"),
            ("net/ipv4/vs/expire_nodest_conn", "1"),
            ("net/ipv4/vs/expire_quiescent_template", "0"),
            ("net/ipv4/ip_forward", "1"),
        ]);
        let wanted = sysctls(Some("6.1.0"), false, None);
        let err = check_sysctls(&mut dp, &wanted).unwrap_err();
        assert_eq!(err.key, "net/ipv4/vs/expire_quiescent_template");
        assert!(err.to_string().contains("--init-node"), "{err}");
        assert_eq!(
            dp.sysctl("net/ipv4/vs/expire_quiescent_template").unwrap(),
            Some("0".to_owned())
        );
        apply_sysctls(&mut dp, &wanted).unwrap();
        check_sysctls(&mut dp, &wanted).unwrap();
    }

    #[test]
    fn a_missing_sysctl_is_a_clear_error() {
        let mut dp = MemoryDataplane::new();
        let err = apply_sysctls(&mut dp, &sysctls(None, false, None)).unwrap_err();
        assert!(err.to_string().contains("net/ipv4/vs/conntrack"), "{err}");
        assert!(err.to_string().contains("ip_vs module"), "{err}");
        // An older kernel without the switch: say so, not "load the module".
        let mut dp = MemoryDataplane::new().with_sysctls([("net/ipv4/vs/conntrack", "1")]);
        let off = [(RUN_ESTIMATION.to_owned(), "0".to_owned())];
        let err = check_sysctls(&mut dp, &off).unwrap_err();
        assert!(err.to_string().contains("Linux 5.16"), "{err}");
    }

    #[test]
    fn zero_timeouts_keep_the_kernels() {
        assert_eq!(
            timeouts(Duration::ZERO, Duration::ZERO, Duration::ZERO),
            None
        );
        let t = timeouts(
            Duration::from_secs(900),
            Duration::ZERO,
            Duration::from_millis(1500),
        )
        .unwrap();
        assert_eq!(t.tcp.map(|v| v.get()), Some(900));
        assert_eq!(t.tcp_fin, None);
        assert_eq!(t.udp.map(|v| v.get()), Some(2));
    }
}
