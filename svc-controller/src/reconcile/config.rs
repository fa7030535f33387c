//! How the reconciler behaves: drain deadline, retry backoff, NodePort range, sysctls.

use std::ops::RangeInclusive;
use std::time::Duration;

use ipvs::model::KernelVersion;

use crate::ownership::DEFAULT_NODE_PORT_RANGE;

/// The default drain deadline: none.
///
/// A TCP real server that leaves the desired set is quiesced (weight 0) and deleted when its
/// connections reach zero. kube-proxy never cuts a draining connection, and users replacing it
/// expect the same: a long download or a database session on a pod that is being replaced keeps
/// going for as long as the pod serves it. A connection whose peer vanished does not keep the
/// real server forever: IPVS expires its entry after its own TCP timeout (15 minutes for an
/// established connection by default, `--ipvs-tcp-timeout`), and the drain ends then.
/// Clusters that want an upper bound (for example their pods' termination grace period, after
/// which the kubelet has killed the pod) set [`ReconcilerConfig::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Option<Duration> = None;

/// How often the connection counts of a draining real server are read: every 5 seconds
/// (kube-router's figure), so an idle server is deleted soon after its last connection.
pub const DEFAULT_DRAIN_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The first retry delay after a failure (doubled at each further failure).
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);

/// The longest retry delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);

/// How many full passes in a row may skip reading the IPVS table when no write was seen
/// ([`ReconcilerConfig::max_skipped_reads`]).
pub const DEFAULT_MAX_SKIPPED_READS: u32 = 9;

/// The reconciler's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilerConfig {
    /// The longest a removed TCP real server is kept quiesced before being deleted, connections
    /// or not; `None`: until its last connection ends ([`DEFAULT_DRAIN_TIMEOUT`]). Zero deletes
    /// at once, like UDP and SCTP.
    pub drain_timeout: Option<Duration>,
    /// How often draining real servers' connection counts are read
    /// ([`DEFAULT_DRAIN_CHECK_INTERVAL`]).
    pub drain_check_interval: Duration,
    /// The first retry delay after a failed operation ([`DEFAULT_RETRY_INITIAL`]).
    pub retry_initial: Duration,
    /// The longest retry delay ([`DEFAULT_RETRY_MAX`]).
    pub retry_max: Duration,
    /// The cluster's NodePort range: virtual servers on node addresses with these ports are
    /// ours (see [`ownership`](crate::ownership)).
    pub node_port_range: RangeInclusive<u16>,
    /// Addresses whose virtual servers are never ours unless desired (kube-proxy's
    /// `ipvs.excludeCIDRs`; see [`Ownership::excluded`](crate::ownership::Ownership::excluded)).
    pub exclude_cidrs: Vec<ipnet::IpNet>,
    /// Whether the controller keeps its nftables table (see [`crate::netfilter`]); on by
    /// default. Off, it never reads nor writes netfilter (cleanup still deletes a table a
    /// run with it on left).
    pub netfilter: bool,
    /// What the nftables table's rules masquerade (see [`crate::netfilter::rules`]).
    pub netfilter_rules: crate::netfilter::RuleConfig,
    /// Sysctls to hold at these values (checked at every full pass, written only when they
    /// differ). Keys in dotted or slash form.
    pub sysctls: Vec<(String, String)>,
    /// How many sliced full passes ([`Reconciler::start_sweep`](super::Reconciler::start_sweep))
    /// in a row may skip reading the IPVS table because the dataplane saw no write to it
    /// since it was last found right ([`Dataplane::ipvs_writes`](crate::dataplane::Dataplane::ipvs_writes));
    /// the next one reads it whatever was seen, for the writes no watch sees (the kernel's old
    /// `setsockopt` interface). 0: every pass reads ([`DEFAULT_MAX_SKIPPED_READS`]).
    pub max_skipped_reads: u32,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            drain_check_interval: DEFAULT_DRAIN_CHECK_INTERVAL,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            node_port_range: DEFAULT_NODE_PORT_RANGE,
            exclude_cidrs: Vec::new(),
            netfilter: true,
            netfilter_rules: crate::netfilter::RuleConfig::default(),
            sysctls: Vec::new(),
            max_skipped_reads: DEFAULT_MAX_SKIPPED_READS,
        }
    }
}

impl ReconcilerConfig {
    /// The node settings an IPVS proxy needs, for the kernel `release` (`uname -r`; `None`
    /// when unknown, taken as a current kernel):
    ///
    /// - `net.ipv4.vs.conntrack=1`: keep netfilter connection tracking for IPVS connections,
    ///   which masquerading (SNAT of the replies) and NodePort need;
    /// - `net.ipv4.vs.expire_nodest_conn=1`: drop connections whose real server was deleted
    ///   at once instead of black-holing them until they time out;
    /// - `net.ipv4.vs.expire_quiescent_template=1`: let persistence templates pointing at a
    ///   quiesced (weight 0) real server expire, so sticky clients move on during a drain;
    /// - `net.ipv4.ip_forward=1`: masqueraded packets to pods are forwarded;
    /// - `net.ipv4.vs.conn_reuse_mode=0` only before Linux 5.9: mode 1 delayed reused
    ///   connections by a second there (kubernetes #70747, #93297); later kernels fixed it and
    ///   mode 1 is right.
    pub fn recommended_sysctls(release: Option<&str>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = [
            ("net/ipv4/vs/conntrack", "1"),
            ("net/ipv4/vs/expire_nodest_conn", "1"),
            ("net/ipv4/vs/expire_quiescent_template", "1"),
            ("net/ipv4/ip_forward", "1"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let old = release
            .and_then(KernelVersion::parse)
            .is_some_and(|v| (v.major, v.minor) < (5, 9));
        if old {
            out.push(("net/ipv4/vs/conn_reuse_mode".to_owned(), "0".to_owned()));
        }
        out
    }

    /// The retry delay after `attempts` consecutive failures (1 for the first).
    pub fn retry_delay(&self, attempts: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.retry_initial
            .checked_mul(factor)
            .unwrap_or(self.retry_max)
            .min(self.retry_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_reuse_mode_only_before_5_9() {
        let has = |r| {
            ReconcilerConfig::recommended_sysctls(r)
                .iter()
                .any(|(k, _)| k.ends_with("conn_reuse_mode"))
        };
        assert!(has(Some("5.4.0-150-generic")));
        assert!(has(Some("4.19.0")));
        assert!(!has(Some("5.9.0")));
        assert!(!has(Some("6.1.0-56-amd64")));
        assert!(!has(None));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let c = ReconcilerConfig::default();
        assert_eq!(c.retry_delay(1), Duration::from_secs(1));
        assert_eq!(c.retry_delay(2), Duration::from_secs(2));
        assert_eq!(c.retry_delay(4), Duration::from_secs(8));
        assert_eq!(c.retry_delay(7), Duration::from_secs(60));
        assert_eq!(c.retry_delay(100), Duration::from_secs(60));
    }
}
