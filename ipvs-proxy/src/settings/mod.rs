//! Settings: command-line flags, an optional config file, and the defaults.
//!
//! Where kube-proxy has a setting with the same meaning, the flag and the config-file field
//! carry kube-proxy's name (`--ipvs-scheduler`, `ipvs.scheduler`, ...), so a node's existing
//! configuration carries over. The config file is kube-proxy's own `KubeProxyConfiguration`
//! (YAML or JSON): its IPVS-mode fields are read, fields that only concern other modes are
//! reported once at start-up and ignored, and this daemon's own settings are extra top-level
//! fields (`manifests`, `logFormat`, `drainTimeout`, ...). Flags override the file, which
//! overrides the defaults.
//!
//! A file field left at its zero value (`ipvs.syncPeriod: 0s`, `metricsBindAddress: ""`, ...)
//! gets kube-proxy's default, as kube-proxy's own defaulting does: the file kubeadm writes, where
//! every field is present, starts ipvs-proxy as it starts kube-proxy. kube-proxy's flags that
//! ipvs-proxy has no setting for are in [`crate::kube_proxy_flags`].
//!
//! Durations are written as kube-proxy writes them (`30s`, `1m0s`, `500ms`, `2h`).
//!
//! The flags are declared in `cli` ([`Cli`]), the file's fields in `file`; this module resolves
//! both with the defaults into [`Settings`], checking every value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use serde::Deserialize;
use svc_controller::netfilter::RuleConfig;
use svc_controller::{DEFAULT_DUMMY_INTERFACE, Scheduler, scheduler};

use crate::kube_proxy_flags::{DETECT_LOCAL_REASON, FlagNote, KubeProxyFlags, parse_go_bool};

mod cli;
mod file;

pub use cli::{Cli, DrainTimeout, parse_drain_timeout, parse_duration, parse_size};
use file::{
    DETECT_LOCAL_FIELDS, FileIptables, FileSettings, FileSize, parse_file, read_file, set_fields,
};

/// An error in the flags or the config file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not a valid configuration.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line when known.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid setting {name}: {message}")]
    Invalid {
        /// The flag or field.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line (for log collectors).
    Json,
}

/// What the daemon does with the node's IPVS sysctls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SysctlMode {
    /// Set them at start-up and set them back whenever they drift (needs a writable
    /// `/proc/sys/net`, which a container has only when privileged).
    #[default]
    Hold,
    /// Only read them: refuse to start if one differs (set them with `--init-node` in a privileged
    /// init container, then run the daemon itself with CAP_NET_ADMIN alone).
    Check,
}

/// Where Services and EndpointSlices come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSettings {
    /// A Kubernetes API server.
    Kubernetes {
        /// The kubeconfig file, `None` for the default chain.
        kubeconfig: Option<PathBuf>,
    },
    /// A file or folder of manifests.
    Manifests(PathBuf),
}

/// The daemon's complete settings, after flags, file and defaults are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where Services come from.
    pub source: SourceSettings,
    /// Limits on each manifest file (when the source is a manifests folder).
    pub manifest_limits: crate::source::manifests::Limits,
    /// This node's name.
    pub node_name: String,
    /// The default scheduler.
    pub scheduler: Scheduler,
    /// Full-pass interval (default 30 s, kube-proxy's).
    pub sync_period: Duration,
    /// Shortest interval between syncs (default 0: every change is programmed as soon as the
    /// previous sync is done, and a burst arriving meanwhile is taken in one go).
    pub min_sync_period: Duration,
    /// NodePort address filter.
    pub nodeport_addresses: Vec<IpNet>,
    /// Addresses never ours unless desired (`--ipvs-exclude-cidrs`, `ipvs.excludeCIDRs`).
    pub exclude_cidrs: Vec<IpNet>,
    /// What the nftables table masquerades (`--masquerade-all`, `--cluster-cidr`,
    /// `--iptables-masquerade-bit`, and their config-file fields).
    pub masquerade: RuleConfig,
    /// Strict ARP.
    pub strict_arp: bool,
    /// IPVS rate estimation on or off (`None`: left as the node has it).
    pub rate_estimation: Option<bool>,
    /// Whether IPVS writes are watched (`--ipvs-watch-writes`, `ipvsWatchWrites`; see
    /// [`svc_controller::dataplane::IpvsWrites`]).
    pub watch_writes: bool,
    /// IPVS TCP timeout (zero: keep).
    pub tcp_timeout: Duration,
    /// IPVS TCP FIN timeout (zero: keep).
    pub tcpfin_timeout: Duration,
    /// IPVS UDP timeout (zero: keep).
    pub udp_timeout: Duration,
    /// Cleanup mode.
    pub cleanup: bool,
    /// Apply the node settings and exit.
    pub init_node: bool,
    /// Hold or only check the IPVS sysctls.
    pub sysctls: SysctlMode,
    /// `/metrics` address.
    pub metrics_bind_address: Option<SocketAddr>,
    /// `/healthz` and `/livez` address.
    pub healthz_bind_address: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter, `None` for `$RUST_LOG` or `info`.
    pub log_level: Option<String>,
    /// Drain deadline; `None`: none.
    pub drain_timeout: Option<Duration>,
    /// NodePort range.
    pub node_port_range: RangeInclusive<u16>,
    /// Service proxy name.
    pub service_proxy_name: Option<String>,
    /// Per-virtual-server traffic metrics.
    pub metrics_per_virtual_server: bool,
    /// The dummy interface.
    pub dummy_interface: String,
    /// Config-file fields that were ignored (other proxy modes' settings), to report once.
    pub ignored_fields: Vec<String>,
    /// kube-proxy flags given that this daemon does not need, to report once.
    pub flag_notes: Vec<FlagNote>,
}

/// kube-proxy's metrics address.
pub const DEFAULT_METRICS_BIND_ADDRESS: &str = "127.0.0.1:10249";
/// kube-proxy's health address.
pub const DEFAULT_HEALTHZ_BIND_ADDRESS: &str = "0.0.0.0:10256";

impl Settings {
    /// Merges the command line, the config file it names (if any) and the defaults.
    /// `hostname` is used when neither names the node.
    pub fn load(
        cli: &Cli,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let file = match &cli.config {
            Some(path) => Some((path.clone(), read_file(path)?)),
            None => None,
        };
        Self::merge(cli, file.as_ref().map(|(p, f)| (p.as_path(), f)), hostname)
    }

    /// Parses a config file's text (for tests and `load`).
    pub fn from_file_text(
        cli: &Cli,
        path: &Path,
        text: &str,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let file = parse_file(path, text)?;
        Self::merge(cli, Some((path, &file)), hostname)
    }

    fn merge(
        cli: &Cli,
        file: Option<(&Path, &FileSettings)>,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let f = file.map(|(_, f)| f.clone()).unwrap_or_default();
        let ipvs = f.ipvs.clone().unwrap_or_default();
        let iptables = f.iptables.clone().unwrap_or_default();
        let mut ignored = Vec::new();
        cli.kube_proxy
            .check_proxy_mode()
            .map_err(|m| invalid("proxy-mode", m))?;
        let init_node = cli.init_node || cli.kube_proxy.init_only();
        // Checked here rather than by the parser, so that `--cleanup=false` goes with it.
        if init_node && cli.cleanup {
            return Err(invalid(
                "init-node",
                "--init-node (--init-only) and --cleanup cannot go together".into(),
            ));
        }
        if let Some((_, file)) = file {
            if let Some(kind) = &file.kind
                && kind != "KubeProxyConfiguration"
            {
                return Err(invalid(
                    "kind",
                    format!("expected KubeProxyConfiguration, found {kind:?}"),
                ));
            }
            // The flag wins over the file, as every flag does.
            if let Some(mode) = &file.mode
                && cli.kube_proxy.proxy_mode.is_none()
                && !mode.is_empty()
                && mode != "ipvs"
            {
                return Err(invalid(
                    "mode",
                    format!("this daemon is an IPVS proxy; the file asks for mode {mode:?}"),
                ));
            }
            let _ = &file.api_version;
            // A field at its zero value asks for kube-proxy's default, which an IPVS proxy
            // does not miss: only set fields are reported (kubeadm writes every field).
            set_fields("", &file.other, &mut ignored);
            set_fields("ipvs.", &ipvs.other, &mut ignored);
            set_fields("iptables.", &iptables.other, &mut ignored);
            // The modes ipvs-proxy has (ClusterCIDR) and kube-proxy's list of CIDRs are read.
            ignored.retain(|field| {
                !(field == "detectLocal.clusterCIDRs"
                    || (field == "detectLocalMode"
                        && file.other.get("detectLocalMode").and_then(|v| v.as_str())
                            == Some("ClusterCIDR")))
            });
            if let Some(cc) = &file.client_connection {
                set_fields("clientConnection.", &cc.other, &mut ignored);
            }
            if let Some(bind) = &file.bind_address
                && !bind
                    .trim()
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_unspecified())
                && !bind.trim().is_empty()
            {
                ignored.push(
                    "bindAddress (not needed: ipvs-proxy takes the node's addresses from its \
                     interfaces)"
                        .into(),
                );
            }
            for field in &mut ignored {
                if DETECT_LOCAL_FIELDS.contains(&field.as_str()) {
                    *field = format!("{field} (not needed: {DETECT_LOCAL_REASON})");
                }
            }
        }
        let file_duration = |name: &'static str,
                             value: &Option<String>|
         -> Result<Option<Duration>, SettingsError> {
            value
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|m| invalid(name, m))
        };

        let source = match cli.manifests.clone().or(f.manifests.clone()) {
            Some(path) => SourceSettings::Manifests(path),
            None => SourceSettings::Kubernetes {
                kubeconfig: cli
                    .kubeconfig
                    .clone()
                    .or(f
                        .client_connection
                        .as_ref()
                        .and_then(|c| c.kubeconfig.clone()))
                    .filter(|p| !p.as_os_str().is_empty()),
            },
        };
        let manifest_limits = {
            let default = crate::source::manifests::Limits::default();
            let file_size = match &f.manifests_max_file_size {
                Some(FileSize::Bytes(n)) => Some(*n),
                Some(FileSize::Text(text)) => {
                    Some(parse_size(text).map_err(|m| invalid("manifestsMaxFileSize", m))?)
                }
                None => None,
            };
            let limits = crate::source::manifests::Limits {
                max_file_size: cli
                    .manifests_max_file_size
                    .or(file_size)
                    .unwrap_or(default.max_file_size),
                max_depth: cli
                    .manifests_max_depth
                    .or(f.manifests_max_depth)
                    .unwrap_or(default.max_depth),
            };
            if limits.max_file_size == 0 {
                return Err(invalid(
                    "manifests-max-file-size",
                    "must be greater than 0".into(),
                ));
            }
            if limits.max_depth == 0 {
                return Err(invalid(
                    "manifests-max-depth",
                    "must be greater than 0".into(),
                ));
            }
            limits
        };
        let node_name = cli
            .hostname_override
            .clone()
            .or(f.hostname_override.clone())
            .filter(|s| !s.trim().is_empty())
            .or_else(hostname)
            .ok_or_else(|| {
                invalid(
                    "hostname-override",
                    "the host name is unknown: set --hostname-override".into(),
                )
            })?
            .trim()
            .to_lowercase();
        let scheduler = match cli.ipvs_scheduler.clone().or(ipvs.scheduler.clone()) {
            None => scheduler::KUBE_PROXY_DEFAULT,
            Some(s) if s.is_empty() => scheduler::KUBE_PROXY_DEFAULT,
            Some(s) => scheduler::in_tree(&s).map_err(|_| {
                invalid(
                    "ipvs-scheduler",
                    format!(
                        "unknown scheduler {s:?}; known: {}",
                        scheduler::IN_TREE_NAMES.join(", ")
                    ),
                )
            })?,
        };
        let sync_period = cli
            .ipvs_sync_period
            // kube-proxy's defaulting: a zero period in the file means the default.
            .or(file_duration("ipvs.syncPeriod", &ipvs.sync_period)?.filter(|d| !d.is_zero()))
            .unwrap_or(Duration::from_secs(30));
        if sync_period.is_zero() {
            return Err(invalid("ipvs-sync-period", "must be greater than 0".into()));
        }
        let min_sync_period = cli
            .ipvs_min_sync_period
            .or(file_duration("ipvs.minSyncPeriod", &ipvs.min_sync_period)?)
            .unwrap_or(Duration::ZERO);
        if min_sync_period > sync_period {
            return Err(invalid(
                "ipvs-min-sync-period",
                "must not exceed --ipvs-sync-period".into(),
            ));
        }
        let nodeport_addresses = cidrs(
            "nodePortAddresses",
            &cli.nodeport_addresses,
            &f.node_port_addresses,
            "; the \"primary\" keyword is not supported",
        )?;
        let exclude_cidrs = cidrs(
            "ipvs.excludeCIDRs",
            &cli.ipvs_exclude_cidrs,
            &ipvs.exclude_cidrs,
            "",
        )?;
        let masquerade = masquerade(cli, &f, &iptables)?;
        // An empty flag switches the server off (kube-proxy's flags do); an empty file field
        // means the default (kube-proxy's defaulting does), which follows the family of the
        // file's bindAddress.
        let ipv6 = f
            .bind_address
            .as_deref()
            .and_then(|b| b.trim().parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.is_ipv6());
        let (default_metrics, default_healthz) = default_bind_addresses(ipv6);
        let bind = |name: &'static str,
                    cli: &Option<String>,
                    file: &Option<String>,
                    default: SocketAddr| {
            let file = file.as_deref().filter(|t| !t.trim().is_empty());
            match cli.as_deref().or(file) {
                Some(text) => {
                    parse_bind_address(text, default.port()).map_err(|m| invalid(name, m))
                }
                None => Ok(Some(default)),
            }
        };
        let node_port_range = cli
            .node_port_range
            .clone()
            .or(f.node_port_range.clone())
            .map(|s| parse_port_range(&s).map_err(|m| invalid("node-port-range", m)))
            .transpose()?
            .unwrap_or(30000..=32767);
        Ok(Settings {
            source,
            manifest_limits,
            node_name,
            scheduler,
            sync_period,
            min_sync_period,
            nodeport_addresses,
            exclude_cidrs,
            masquerade,
            strict_arp: cli.ipvs_strict_arp.or(ipvs.strict_arp).unwrap_or(false),
            rate_estimation: cli.ipvs_rate_estimation.or(f.ipvs_rate_estimation),
            watch_writes: cli
                .ipvs_watch_writes
                .or(f.ipvs_watch_writes)
                .unwrap_or(true),
            tcp_timeout: cli
                .ipvs_tcp_timeout
                .or(file_duration("ipvs.tcpTimeout", &ipvs.tcp_timeout)?)
                .unwrap_or_default(),
            tcpfin_timeout: cli
                .ipvs_tcpfin_timeout
                .or(file_duration("ipvs.tcpFinTimeout", &ipvs.tcp_fin_timeout)?)
                .unwrap_or_default(),
            udp_timeout: cli
                .ipvs_udp_timeout
                .or(file_duration("ipvs.udpTimeout", &ipvs.udp_timeout)?)
                .unwrap_or_default(),
            cleanup: cli.cleanup,
            init_node,
            sysctls: cli.sysctls.or(f.sysctls).unwrap_or_default(),
            metrics_bind_address: bind(
                "metrics-bind-address",
                &cli.metrics_bind_address,
                &f.metrics_bind_address,
                default_metrics,
            )?,
            healthz_bind_address: bind(
                "healthz-bind-address",
                &cli.healthz_bind_address,
                &f.healthz_bind_address,
                default_healthz,
            )?,
            log_format: cli
                .log_format
                .or(cli
                    .kube_proxy
                    .log_format()
                    .map_err(|m| invalid("logging-format", m))?)
                .or(f.log_format)
                .unwrap_or_default(),
            log_level: cli
                .log_level
                .clone()
                .or(cli.kube_proxy.log_level())
                .or(f.log_level.clone()),
            drain_timeout: match cli.drain_timeout {
                Some(DrainTimeout(set)) => set,
                None => match f.drain_timeout.as_deref() {
                    Some(text) => {
                        parse_drain_timeout(text)
                            .map_err(|m| invalid("drainTimeout", m))?
                            .0
                    }
                    None => svc_controller::reconcile::DEFAULT_DRAIN_TIMEOUT,
                },
            },
            node_port_range,
            service_proxy_name: cli
                .service_proxy_name
                .clone()
                .or(f.service_proxy_name.clone())
                .filter(|s| !s.is_empty()),
            metrics_per_virtual_server: cli
                .metrics_per_virtual_server
                .or(f.metrics_per_virtual_server)
                .unwrap_or(false),
            dummy_interface: DEFAULT_DUMMY_INTERFACE.to_owned(),
            ignored_fields: ignored,
            flag_notes: cli.kube_proxy.notes(),
        })
    }

    /// The controller's configuration from these settings.
    pub fn proxy_config(&self) -> svc_controller::ProxyConfig {
        svc_controller::ProxyConfig {
            default_scheduler: self.scheduler.clone(),
            node_port_cidrs: self.nodeport_addresses.clone(),
            dummy_interface: self.dummy_interface.clone(),
            service_proxy_name: self.service_proxy_name.clone(),
            ..svc_controller::ProxyConfig::default()
        }
    }
}

/// A list of CIDRs: the flag's when given, else the file field `name`'s, parsed (`hint` ends
/// the message of one that is not a CIDR).
fn cidrs(
    name: &'static str,
    flag: &Option<Vec<IpNet>>,
    file: &Option<Vec<String>>,
    hint: &str,
) -> Result<Vec<IpNet>, SettingsError> {
    if let Some(flag) = flag {
        return Ok(flag.clone());
    }
    file.iter()
        .flatten()
        .map(|s| {
            s.parse::<IpNet>()
                .map_err(|e| invalid(name, format!("{s:?} is not a CIDR ({e}){hint}")))
        })
        .collect()
}

/// The masquerading settings: flags first, then the file, then kube-proxy's defaults.
fn masquerade(
    cli: &Cli,
    f: &FileSettings,
    iptables: &FileIptables,
) -> Result<RuleConfig, SettingsError> {
    let flags = &cli.kube_proxy;
    let bit = flags
        .iptables_masquerade_bit
        .or(iptables.masquerade_bit)
        .unwrap_or(14);
    let masquerade_bit = u8::try_from(bit).ok().filter(|b| *b <= 31).ok_or_else(|| {
        invalid(
            "iptables-masquerade-bit",
            format!("{bit} is not a bit of the packet mark (0 to 31)"),
        )
    })?;
    // kube-proxy's newer list form (`detectLocal.clusterCIDRs`) says the same as `clusterCIDR`.
    let listed: Option<Vec<String>> = match f
        .other
        .get("detectLocal")
        .and_then(|d| d.get("clusterCIDRs"))
    {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(
            value
                .as_array()
                .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_owned)).collect())
                .ok_or_else(|| {
                    invalid(
                        "detectLocal.clusterCIDRs",
                        format!("expected a list of CIDRs, found {value}"),
                    )
                })?,
        ),
    };
    let texts: Vec<String> = match (&flags.cluster_cidr, &f.cluster_cidr, listed) {
        (Some(flag), _, _) => flag.clone(),
        (None, Some(text), _) => text.split(',').map(str::to_owned).collect(),
        (None, None, Some(list)) => list,
        (None, None, None) => Vec::new(),
    };
    let mut cluster_cidrs: Vec<IpNet> = Vec::new();
    for text in texts.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let net: IpNet = text
            .parse()
            .map_err(|e| invalid("cluster-cidr", format!("{text:?} is not a CIDR ({e})")))?;
        if cluster_cidrs.iter().any(|c| {
            matches!(
                (c, &net),
                (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
            )
        }) {
            return Err(invalid(
                "cluster-cidr",
                format!("{text}: at most one CIDR per address family"),
            ));
        }
        cluster_cidrs.push(net.trunc());
    }
    Ok(RuleConfig {
        masquerade_bit,
        masquerade_all: flags
            .masquerade_all
            .or(iptables.masquerade_all)
            .unwrap_or(false),
        cluster_cidrs,
    })
}

fn invalid(name: &'static str, message: String) -> SettingsError {
    SettingsError::Invalid { name, message }
}

/// kube-proxy's default metrics and health addresses, for an IPv4 or IPv6 bindAddress.
fn default_bind_addresses(ipv6: bool) -> (SocketAddr, SocketAddr) {
    let (metrics, healthz): (IpAddr, IpAddr) = if ipv6 {
        (Ipv6Addr::LOCALHOST.into(), Ipv6Addr::UNSPECIFIED.into())
    } else {
        (Ipv4Addr::LOCALHOST.into(), Ipv4Addr::UNSPECIFIED.into())
    };
    // kube-proxy's ports (`ports.ProxyStatusPort`, `ports.ProxyHealthzPort`).
    (
        SocketAddr::new(metrics, 10249),
        SocketAddr::new(healthz, 10256),
    )
}

/// `""` disables; `ADDR:PORT` or `[V6]:PORT`; a bare `:PORT` means every address; a bare
/// address gets `default_port` (kube-proxy appends its port the same way).
fn parse_bind_address(text: &str, default_port: u16) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(Some(SocketAddr::new(ip, default_port)));
    }
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    full.parse()
        .map(Some)
        .map_err(|_| format!("{text:?} is not ADDRESS:PORT"))
}

fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not FIRST-LAST"))?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a port"))?;
    if a == 0 || a > b {
        return Err(format!("{text:?} is not a range of ports"));
    }
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Option<String> {
        Some("Node-A".into())
    }

    #[test]
    fn defaults_are_kube_proxys() {
        let s = Settings::load(&Cli::default(), host).unwrap();
        assert_eq!(s.node_name, "node-a");
        assert_eq!(s.scheduler, Scheduler::RoundRobin);
        assert_eq!(s.sync_period, Duration::from_secs(30));
        assert_eq!(s.min_sync_period, Duration::ZERO);
        assert_eq!(
            s.metrics_bind_address,
            Some("127.0.0.1:10249".parse().unwrap())
        );
        assert_eq!(
            s.healthz_bind_address,
            Some("0.0.0.0:10256".parse().unwrap())
        );
        assert_eq!(s.node_port_range, 30000..=32767);
        assert_eq!(s.source, SourceSettings::Kubernetes { kubeconfig: None });
        assert_eq!(
            s.drain_timeout, None,
            "kube-proxy never cuts a draining connection"
        );
    }

    #[test]
    fn exclude_cidrs_come_from_the_file_or_the_flag() {
        let file = |value: &str| {
            let text = format!("kind: KubeProxyConfiguration\nipvs:\n  excludeCIDRs: {value}\n");
            Settings::from_file_text(&Cli::default(), Path::new("kp.yaml"), &text, host)
                .map(|s| s.exclude_cidrs)
        };
        assert_eq!(
            file("[10.96.0.8/30]").unwrap(),
            vec!["10.96.0.8/30".parse::<IpNet>().unwrap()]
        );
        assert_eq!(file("null").unwrap(), Vec::<IpNet>::new());
        assert!(file("[10.96.0.300/30]").is_err());
        let cli = Cli::try_parse_from(["ipvs-proxy", "--ipvs-exclude-cidrs=fd00::/64,10.0.0.1/32"])
            .unwrap();
        let s = Settings::load(&cli, host).unwrap();
        assert_eq!(s.exclude_cidrs.len(), 2);
        assert!(s.ignored_fields.is_empty());
    }

    #[test]
    fn masquerading_comes_from_kube_proxys_flags_or_file() {
        let load = |args: &[&str]| {
            let cli =
                Cli::try_parse_from(std::iter::once("ipvs-proxy").chain(args.iter().copied()))
                    .unwrap();
            Settings::load(&cli, host).map(|s| s.masquerade)
        };
        let default = load(&[]).unwrap();
        assert_eq!(default, RuleConfig::default());
        assert_eq!(default.masquerade_bit, 14, "kube-proxy's");
        let set = load(&[
            "--masquerade-all",
            "--cluster-cidr=10.244.0.0/16, fd00:244::/56",
            "--iptables-masquerade-bit",
            "5",
        ])
        .unwrap();
        assert!(set.masquerade_all);
        assert_eq!(set.masquerade_bit, 5);
        assert_eq!(set.cluster_cidrs.len(), 2);
        assert!(!load(&["--masquerade-all=false"]).unwrap().masquerade_all);
        // Host bits are dropped, as kube-proxy's parsing does.
        assert_eq!(
            load(&["--cluster-cidr=10.244.1.7/16"])
                .unwrap()
                .cluster_cidrs,
            vec!["10.244.0.0/16".parse::<IpNet>().unwrap()]
        );
        for bad in [
            "--iptables-masquerade-bit=32",
            "--iptables-masquerade-bit=-1",
            "--cluster-cidr=10.244.0.0/16,10.245.0.0/16",
            "--cluster-cidr=pods",
        ] {
            let err = load(&[bad]).unwrap_err().to_string();
            assert!(
                err.contains("masquerade-bit") || err.contains("cluster-cidr"),
                "{bad}: {err}"
            );
        }
        let file = |text: &str| {
            let text = format!("kind: KubeProxyConfiguration\n{text}");
            Settings::from_file_text(&Cli::default(), Path::new("kp.yaml"), &text, host)
        };
        let s = file("clusterCIDR: 10.244.0.0/16\ndetectLocalMode: ClusterCIDR\niptables:\n  masqueradeBit: 3\n").unwrap();
        assert_eq!(s.masquerade.masquerade_bit, 3);
        assert_eq!(s.masquerade.cluster_cidrs.len(), 1);
        assert!(s.ignored_fields.is_empty(), "{:?}", s.ignored_fields);
        let s = file("detectLocal:\n  clusterCIDRs: [10.244.0.0/16]\n").unwrap();
        assert_eq!(s.masquerade.cluster_cidrs.len(), 1);
        for bad in ["10.244.0.0/16", "[10.244.0.0/16, 7]"] {
            let err = file(&format!("detectLocal:\n  clusterCIDRs: {bad}\n")).unwrap_err();
            assert!(err.to_string().contains("a list of CIDRs"), "{bad}: {err}");
        }
        let s = file("detectLocalMode: NodeCIDR\n").unwrap();
        assert!(
            s.ignored_fields
                .iter()
                .any(|f| f.starts_with("detectLocalMode (not needed: ipvs-proxy tells")),
            "{:?}",
            s.ignored_fields
        );
    }

    #[test]
    fn drain_timeout_is_a_duration_or_none() {
        let load = |args: &[&str]| {
            let cli =
                Cli::try_parse_from(std::iter::once("ipvs-proxy").chain(args.iter().copied()))
                    .unwrap();
            Settings::load(&cli, host).map(|s| s.drain_timeout)
        };
        assert_eq!(load(&[]).unwrap(), None);
        assert_eq!(load(&["--drain-timeout", "none"]).unwrap(), None);
        assert_eq!(
            load(&["--drain-timeout", "2m"]).unwrap(),
            Some(Duration::from_secs(120))
        );
        assert_eq!(load(&["--drain-timeout=0"]).unwrap(), Some(Duration::ZERO));
        assert!(Cli::try_parse_from(["ipvs-proxy", "--drain-timeout", "soon"]).is_err());
        let file = |value: &str| {
            let text = format!("kind: KubeProxyConfiguration\ndrainTimeout: {value}\n");
            Settings::from_file_text(&Cli::default(), Path::new("kp.yaml"), &text, host)
                .map(|s| s.drain_timeout)
        };
        assert_eq!(file("none").unwrap(), None);
        assert_eq!(file("15m").unwrap(), Some(Duration::from_secs(900)));
        assert!(file("later").is_err());
    }

    #[test]
    fn kube_proxy_config_file_is_read_and_flags_win() {
        let text = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
hostnameOverride: worker-1
metricsBindAddress: 0.0.0.0:10249
nodePortAddresses: ["192.168.0.0/16"]
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 5
iptables:
  masqueradeAll: true
  syncPeriod: 0s
ipvs:
  scheduler: wlc
  syncPeriod: 1m0s
  minSyncPeriod: 500ms
  strictARP: true
  tcpTimeout: 900s
  tcpFinTimeout: 2m
  udpTimeout: 0s
drainTimeout: 1m
ipvsRateEstimation: false
ipvsWatchWrites: false
"#;
        let cli = Cli {
            ipvs_scheduler: Some("sh".into()),
            ..Cli::default()
        };
        let s = Settings::from_file_text(&cli, Path::new("kp.yaml"), text, host).unwrap();
        assert_eq!(s.node_name, "worker-1");
        assert_eq!(
            s.scheduler,
            Scheduler::SourceHashing {
                fallback: false,
                port: false,
            },
            "the flag wins"
        );
        assert_eq!(s.sync_period, Duration::from_secs(60));
        assert_eq!(s.min_sync_period, Duration::from_millis(500));
        assert!(s.strict_arp);
        assert_eq!(s.rate_estimation, Some(false));
        assert!(!s.watch_writes);
        assert_eq!(s.tcp_timeout, Duration::from_secs(900));
        assert_eq!(s.tcpfin_timeout, Duration::from_secs(120));
        assert_eq!(s.udp_timeout, Duration::ZERO);
        assert_eq!(s.drain_timeout, Some(Duration::from_secs(60)));
        assert_eq!(
            s.nodeport_addresses,
            vec!["192.168.0.0/16".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            s.metrics_bind_address,
            Some("0.0.0.0:10249".parse().unwrap())
        );
        assert_eq!(
            s.source,
            SourceSettings::Kubernetes {
                kubeconfig: Some("/var/lib/kube-proxy/kubeconfig.conf".into())
            }
        );
        assert!(s.masquerade.masquerade_all, "honoured, not ignored");
        assert!(
            !s.ignored_fields.iter().any(|f| f.contains("masquerade")),
            "{:?}",
            s.ignored_fields
        );
        assert!(
            !s.ignored_fields.iter().any(|f| f.contains("syncPeriod")),
            "a zero value asks for nothing: {:?}",
            s.ignored_fields
        );
        assert!(
            s.ignored_fields
                .contains(&"clientConnection.qps".to_owned())
        );
    }

    #[test]
    fn bad_values_are_named() {
        let cli = Cli::default();
        let err = Settings::from_file_text(&cli, Path::new("kp.yaml"), "mode: iptables\n", host)
            .unwrap_err();
        assert!(err.to_string().contains("mode"), "{err}");
        let err = Settings::from_file_text(
            &cli,
            Path::new("kp.yaml"),
            "ipvs:\n  syncPeriod: soon\n",
            host,
        )
        .unwrap_err();
        assert!(err.to_string().contains("ipvs.syncPeriod"), "{err}");
        let err = Settings::from_file_text(&cli, Path::new("kp.yaml"), "ipvs: [1, 2\n", host)
            .unwrap_err();
        assert!(err.to_string().starts_with("kp.yaml: line"), "{err}");
        let err = Settings::load(
            &Cli {
                ipvs_scheduler: Some("roundrobin".into()),
                ..Cli::default()
            },
            host,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown scheduler"), "{err}");
        let err = Settings::load(
            &Cli {
                node_port_range: Some("3000".into()),
                ..Cli::default()
            },
            host,
        )
        .unwrap_err();
        assert!(err.to_string().contains("node-port-range"), "{err}");
        let err = Settings::load(&Cli::default(), || None).unwrap_err();
        assert!(err.to_string().contains("hostname-override"), "{err}");
    }

    #[test]
    fn durations_in_go_notation() {
        assert_eq!(parse_duration("1m0s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn bind_addresses() {
        assert_eq!(parse_bind_address("", 1).unwrap(), None);
        assert_eq!(
            parse_bind_address(":10256", 1).unwrap(),
            Some("0.0.0.0:10256".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address("[::1]:9", 1).unwrap(),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address("0.0.0.0", 10256).unwrap(),
            Some("0.0.0.0:10256".parse().unwrap()),
            "a bare address gets the default port, as kube-proxy appends it"
        );
        assert_eq!(
            parse_bind_address("::", 10249).unwrap(),
            Some("[::]:10249".parse().unwrap())
        );
        assert!(parse_bind_address("localhost", 1).is_err());
    }

    #[test]
    fn cli_parses_kube_proxy_flags() {
        let cli = Cli::try_parse_from([
            "ipvs-proxy",
            "--ipvs-scheduler=wrr",
            "--ipvs-sync-period",
            "45s",
            "--nodeport-addresses=10.0.0.0/8,192.168.1.0/24",
            "--ipvs-strict-arp",
            "--ipvs-rate-estimation",
            "false",
            "--manifests",
            "/etc/ipvs-proxy/manifests",
            "--manifests-max-file-size=512Ki",
            "--manifests-max-depth=40",
            "--log-format",
            "json",
        ])
        .unwrap();
        let s = Settings::load(&cli, host).unwrap();
        assert_eq!(s.scheduler, Scheduler::WeightedRoundRobin);
        assert_eq!(s.sync_period, Duration::from_secs(45));
        assert_eq!(s.nodeport_addresses.len(), 2);
        assert!(s.strict_arp);
        assert_eq!(s.rate_estimation, Some(false));
        assert!(s.watch_writes, "on unless asked");
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(
            s.source,
            SourceSettings::Manifests("/etc/ipvs-proxy/manifests".into())
        );
        assert_eq!(s.manifest_limits.max_file_size, 512 << 10);
        assert_eq!(s.manifest_limits.max_depth, 40);
    }

    #[test]
    fn manifest_limits_from_the_file_and_their_defaults() {
        let cli = Cli::default();
        let s = Settings::load(&cli, host).unwrap();
        assert_eq!(
            s.manifest_limits,
            crate::source::manifests::Limits::default()
        );
        let text = "manifests: /m\nmanifestsMaxFileSize: 2Mi\nmanifestsMaxDepth: 50\n";
        let s = Settings::from_file_text(&cli, Path::new("kp.yaml"), text, host).unwrap();
        assert_eq!(s.manifest_limits.max_file_size, 2 << 20);
        assert_eq!(s.manifest_limits.max_depth, 50);
        let text = "manifestsMaxFileSize: 1000\n";
        let s = Settings::from_file_text(&cli, Path::new("kp.yaml"), text, host).unwrap();
        assert_eq!(s.manifest_limits.max_file_size, 1000);
        for bad in ["manifestsMaxFileSize: 8MB\n", "manifestsMaxDepth: 0\n"] {
            let err = Settings::from_file_text(&cli, Path::new("kp.yaml"), bad, host).unwrap_err();
            assert!(err.to_string().contains("anifests"), "{err}");
        }
        assert_eq!(parse_size("8Mi"), Ok(8 << 20));
        assert_eq!(parse_size("12"), Ok(12));
        assert!(parse_size("99999999999Gi").is_err());
        assert!(parse_size("Mi").is_err());
    }
}
