//! The command line: every flag, and how a flag's value is read.

use super::*;

/// The command line. Every setting is optional here; see [`Settings`] for the defaults.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "ipvs-proxy",
    version,
    about = "Programs Kubernetes Services (or a folder of manifests) into IPVS on this node",
    long_about = "Programs Kubernetes Services (or a folder of manifests) into IPVS on this node, \
                  in place of kube-proxy's IPVS mode: incremental, owner-safe, with graceful \
                  termination. SIGTERM leaves the IPVS table in place; --cleanup removes what \
                  this daemon owns and nothing else."
)]
pub struct Cli {
    /// A KubeProxyConfiguration file (YAML or JSON); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read Services and EndpointSlices from this file or folder of YAML manifests (watched for
    /// changes) instead of a Kubernetes API server.
    #[arg(long, value_name = "PATH")]
    pub manifests: Option<PathBuf>,
    /// The largest manifest file read, in bytes, or with a suffix (`512Ki`, `8Mi`, `1Gi`);
    /// a larger file is reported and skipped, and what it defined before is kept (default:
    /// 8Mi).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub manifests_max_file_size: Option<u64>,
    /// The deepest nesting (indentation levels, list entries and brackets) a manifest may
    /// have; a deeper file is reported and skipped, and what it defined before is kept
    /// (default: 100).
    #[arg(long, value_name = "LEVELS")]
    pub manifests_max_depth: Option<usize>,
    /// The kubeconfig file (default: in-cluster configuration, then $KUBECONFIG, then
    /// ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The name of this node (default: the host name).
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub hostname_override: Option<String>,
    /// The IPVS scheduler of Services without the scheduler annotation (rr, wrr, lc, wlc,
    /// lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos).
    #[arg(long, value_name = "NAME")]
    pub ipvs_scheduler: Option<String>,
    /// The interval of full passes: the table is re-read and drift repaired (longer on a
    /// table whose pass takes more than a quarter of it, so passes never take more than a
    /// quarter of the engine's time).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ipvs_sync_period: Option<Duration>,
    /// The shortest interval between two syncs: changes arriving faster are coalesced.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ipvs_min_sync_period: Option<Duration>,
    /// Node addresses that get NodePort virtual servers, as CIDRs (default: every usable
    /// address of the node).
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub nodeport_addresses: Option<Vec<IpNet>>,
    /// Addresses whose virtual servers the daemon never touches unless a Service asks for them,
    /// even on kube-ipvs0 or in the NodePort range (kube-proxy's --ipvs-exclude-cidrs: keeps,
    /// say, keepalived's virtual servers on a VIP).
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub ipvs_exclude_cidrs: Option<Vec<IpNet>>,
    /// Set arp_ignore=1 and arp_announce=2 so the node does not answer ARP for VIPs bound on the
    /// dummy interface (needed by MetalLB in layer-2 mode).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub ipvs_strict_arp: Option<bool>,
    /// Switch IPVS's rate estimation on or off (the `run_estimation` sysctl, Linux 5.16 and
    /// later; default: left as the node has it). Before Linux 6.2 the kernel estimates every
    /// virtual and real server's rates in one timer every 2 s, which keeps a CPU for tens of
    /// milliseconds at tens of thousands of Services; off, only the rates stay at zero.
    #[arg(long, value_name = "BOOL")]
    pub ipvs_rate_estimation: Option<bool>,
    /// Watch IPVS writes through an `nlmon` interface (`nlmon-ipvs`, default: true), so that a
    /// full pass on a quiet node skips reading the table back; false: every full pass reads
    /// the whole table, and no interface is made.
    #[arg(long, value_name = "BOOL")]
    pub ipvs_watch_writes: Option<bool>,
    /// The IPVS timeout of idle TCP connections (0 keeps the kernel's).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ipvs_tcp_timeout: Option<Duration>,
    /// The IPVS timeout of TCP connections after a FIN (0 keeps the kernel's).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ipvs_tcpfin_timeout: Option<Duration>,
    /// The IPVS timeout of UDP flows (0 keeps the kernel's).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ipvs_udp_timeout: Option<Duration>,
    /// Remove what this daemon owns (its virtual servers, VIPs and dummy interface) and exit.
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        value_name = "BOOL",
        value_parser = parse_go_bool,
        action = clap::ArgAction::Set
    )]
    pub cleanup: bool,
    /// Apply the node settings (IPVS sysctls, strict ARP, IPVS timeouts) and exit: for a
    /// privileged init container, so the daemon itself can run with `--sysctls check`.
    #[arg(long)]
    pub init_node: bool,
    /// Whether the daemon sets the IPVS sysctls and holds them (`hold`, the default) or only checks
    /// them at start-up (`check`).
    #[arg(long, value_enum, value_name = "MODE")]
    pub sysctls: Option<SysctlMode>,
    /// Where /metrics is served (empty: nowhere; a bare address gets port 10249).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_bind_address: Option<String>,
    /// Where /healthz and /livez are served (empty: nowhere; a bare address gets port 10256).
    #[arg(long, value_name = "ADDR:PORT")]
    pub healthz_bind_address: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level or filter (`info`, `debug`, `svc_controller=trace,info`); default: $RUST_LOG,
    /// else `info`.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// The longest a removed TCP real server drains (weight 0) before it is deleted with its
    /// connections: a duration, or `none` (the default, as kube-proxy: it goes when its last
    /// connection ends, or IPVS times that connection out).
    #[arg(long, value_name = "DURATION|none", value_parser = parse_drain_timeout)]
    pub drain_timeout: Option<DrainTimeout>,
    /// The cluster's NodePort range (the API server's --service-node-port-range).
    #[arg(long, value_name = "FIRST-LAST")]
    pub node_port_range: Option<String>,
    /// Handle only the Services labelled service.kubernetes.io/service-proxy-name=NAME
    /// (default: only Services without that label, as kube-proxy).
    #[arg(long, value_name = "NAME")]
    pub service_proxy_name: Option<String>,
    /// Serve per-virtual-server traffic counters from IPVS statistics on /metrics.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub metrics_per_virtual_server: Option<bool>,
    /// kube-proxy's flags that are not settings of this daemon.
    #[command(flatten)]
    pub kube_proxy: KubeProxyFlags,
}

/// Parses a duration as kube-proxy writes them: `30s`, `1m0s`, `500ms`, `1h30m`, `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration: {e}"))
}

/// A drain deadline as set: `Some` duration, or `None` for no deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainTimeout(pub Option<Duration>);

/// Parses a drain deadline: a duration ([`parse_duration`]), or `none` for no deadline.
pub fn parse_drain_timeout(text: &str) -> Result<DrainTimeout, String> {
    match text.trim() {
        "none" | "never" => Ok(DrainTimeout(None)),
        other => parse_duration(other)
            .map(|d| DrainTimeout(Some(d)))
            .map_err(|e| format!("{e} (or `none` for no deadline)")),
    }
}

/// Parses a size in bytes: a number, or a number with a binary suffix (`Ki`, `Mi`, `Gi`), as
/// Kubernetes writes quantities.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let unit: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?} is not a size (bytes, or with Ki, Mi or Gi)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{text:?} is not a size (bytes, or with Ki, Mi or Gi)"))
}
