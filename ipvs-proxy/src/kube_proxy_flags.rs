//! kube-proxy's flags that ipvs-proxy has no setting of its own for.
//!
//! A kube-proxy DaemonSet's command line starts ipvs-proxy unchanged: every flag of kube-proxy
//! (Linux build) is accepted. The flags ipvs-proxy shares with kube-proxy (`--config`,
//! `--hostname-override`, `--ipvs-*`, `--kubeconfig`, `--cleanup`, the bind addresses, ...) are
//! ordinary settings in [`crate::settings::Cli`]; this module holds the rest:
//!
//! - honoured, mapped onto an existing setting: `--init-only` (= `--init-node`), `-v`/`--v`
//!   (a log level), `--logging-format` (= `--log-format`), and `--proxy-mode`, which must be
//!   `ipvs` or empty;
//! - honoured as kube-proxy does: the masquerading flags `--masquerade-all`, `--cluster-cidr`
//!   and `--iptables-masquerade-bit` (the netfilter table's rules, see the README);
//! - accepted and not needed: each one given is reported once at start-up with the reason
//!   ([`FlagNote`]), and changes nothing.
//!
//! The syntax is kube-proxy's (Go's pflag): `--flag value` or `--flag=value`; a boolean flag is
//! `--flag` or `--flag=true|false` (any spelling Go's `strconv.ParseBool` takes), never
//! `--flag false`; the klog flags also answer to their underscore names (`--log_dir`), as
//! kube-proxy normalises them; a flag given twice is not an error (the last one counts in
//! kube-proxy, and here these flags are not read).

use clap::Args;

use crate::settings::LogFormat;

/// Why the flags and fields of kube-proxy's other ways to tell cluster traffic are not needed.
pub const DETECT_LOCAL_REASON: &str = "ipvs-proxy tells cluster traffic from outside traffic by \
     --cluster-cidr (kube-proxy's ClusterCIDR mode) only, see the README";

/// A kube-proxy flag that was given and is not needed by ipvs-proxy, with the reason: reported
/// once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagNote {
    /// The flag's name, without the dashes (`masquerade-all`).
    pub flag: &'static str,
    /// Why ipvs-proxy does not need it.
    pub reason: &'static str,
}

/// Parses a boolean as Go's `strconv.ParseBool` does, which kube-proxy's flags go through.
pub fn parse_go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true or false)")),
    }
}

/// The flags of kube-proxy that are not settings of ipvs-proxy; flattened into
/// [`crate::settings::Cli`].
#[derive(Debug, Clone, Default, Args)]
pub struct KubeProxyFlags {
    /// kube-proxy's name of --init-node: apply the node settings and exit.
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = parse_go_bool
    )]
    pub init_only: Option<bool>,
    /// kube-proxy's log verbosity (klog's -v): 0 to 3 log at info, 4 at debug, 5 and more at
    /// trace, after the Kubernetes logging conventions (4 is their debug level). --log-level
    /// wins.
    #[arg(
        short = 'v',
        long = "v",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub verbosity: Option<i32>,
    /// kube-proxy's proxy mode: must be `ipvs` (or empty), the only mode ipvs-proxy has.
    #[arg(long, value_name = "MODE")]
    pub proxy_mode: Option<String>,
    /// kube-proxy's log format (`text` or `json`), used when --log-format is not given.
    #[arg(long, value_name = "FORMAT")]
    pub logging_format: Option<String>,
    /// Masquerade every connection to a ClusterIP, wherever it comes from (kube-proxy's flag).
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = parse_go_bool
    )]
    pub masquerade_all: Option<bool>,
    /// The cluster's pod networks, at most one per address family, comma-separated: a
    /// connection to a ClusterIP from outside them is masqueraded (kube-proxy's flag).
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub cluster_cidr: Option<Vec<String>>,
    /// The bit of the packet mark that marks connections to masquerade, 0 to 31 (kube-proxy's
    /// flag; 14 by default).
    #[arg(long, value_name = "BIT", allow_negative_numbers = true)]
    pub iptables_masquerade_bit: Option<i64>,
    /// The rest of kube-proxy's flags: accepted, not needed.
    #[command(flatten)]
    pub not_needed: NotNeededFlags,
}

impl KubeProxyFlags {
    /// Whether `--init-only` asks to apply the node settings and exit.
    pub fn init_only(&self) -> bool {
        self.init_only == Some(true)
    }

    /// The log filter that `--v` stands for, if given.
    pub fn log_level(&self) -> Option<String> {
        self.verbosity.map(|v| {
            match v {
                ..=3 => "info",
                4 => "debug",
                5.. => "trace",
            }
            .to_owned()
        })
    }

    /// The log format `--logging-format` names, if given (`text` is kube-proxy's name of
    /// `plain`).
    pub fn log_format(&self) -> Result<Option<LogFormat>, String> {
        match self.logging_format.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some("text") => Ok(Some(LogFormat::Plain)),
            Some("json") => Ok(Some(LogFormat::Json)),
            Some(other) => Err(format!("{other:?} is not a log format (text or json)")),
        }
    }

    /// Checks `--proxy-mode`: `ipvs`, empty or absent.
    pub fn check_proxy_mode(&self) -> Result<(), String> {
        match self.proxy_mode.as_deref().map(str::trim) {
            None | Some("") | Some("ipvs") => Ok(()),
            Some(mode) => Err(format!(
                "ipvs-proxy is an IPVS proxy; --proxy-mode={mode} asks for another one \
                 (set ipvs, or remove the flag)"
            )),
        }
    }

    /// The flags given that ipvs-proxy does not need, each once, in kube-proxy's
    /// (alphabetical) order.
    pub fn notes(&self) -> Vec<FlagNote> {
        self.not_needed.notes()
    }
}

/// Declares [`NotNeededFlags`] from one table: each flag's field, name (with its underscore
/// alias for klog's flags), and the reason reported when it is given.
macro_rules! not_needed_flags {
    (
        booleans { $( $bfield:ident = $bflag:literal $(| $balias:literal)? => $breason:expr; )* }
        values { $( $vfield:ident = $vflag:literal $(| $valias:literal)? => $vreason:expr; )* }
    ) => {
        /// kube-proxy's flags that ipvs-proxy accepts and does not need (hidden from `--help`;
        /// listed in the README).
        #[derive(Debug, Clone, Default, Args)]
        pub struct NotNeededFlags {
            $(
                #[arg(
                    long = $bflag,
                    $(alias = $balias,)?
                    hide = true,
                    num_args = 0..=1,
                    require_equals = true,
                    default_missing_value = "true",
                    value_parser = parse_go_bool,
                    action = clap::ArgAction::Append
                )]
                $bfield: Vec<bool>,
            )*
            $(
                #[arg(
                    long = $vflag,
                    $(alias = $valias,)?
                    hide = true,
                    allow_hyphen_values = true,
                    action = clap::ArgAction::Append
                )]
                $vfield: Vec<String>,
            )*
        }

        impl NotNeededFlags {
            /// The flags given, each once, sorted by name.
            pub fn notes(&self) -> Vec<FlagNote> {
                let mut notes = Vec::new();
                $(
                    if !self.$bfield.is_empty() {
                        notes.push(FlagNote { flag: $bflag, reason: $breason });
                    }
                )*
                $(
                    if !self.$vfield.is_empty() {
                        notes.push(FlagNote { flag: $vflag, reason: $vreason });
                    }
                )*
                notes.sort_by_key(|n| n.flag);
                notes
            }
        }
    };
}

const IPTABLES_ONLY: &str = "it concerns kube-proxy's iptables mode only";
const CONNTRACK: &str =
    "ipvs-proxy leaves the node's conntrack settings (nf_conntrack sysctls) as they are";
const KLOG: &str =
    "a klog setting: ipvs-proxy logs to stderr, set with --log-format and --log-level";
const API_CLIENT: &str = "ipvs-proxy's API client only lists and watches, with its own backoff";

not_needed_flags! {
    booleans {
        add_dir_header = "add-dir-header" | "add_dir_header" => KLOG;
        alsologtostderr = "alsologtostderr" => KLOG;
        bind_address_hard_fail = "bind-address-hard-fail" =>
            "an address ipvs-proxy cannot bind always stops it";
        conntrack_tcp_be_liberal = "conntrack-tcp-be-liberal" => CONNTRACK;
        iptables_localhost_nodeports = "iptables-localhost-nodeports" => IPTABLES_ONLY;
        log_json_split_stream = "log-json-split-stream" => KLOG;
        log_text_split_stream = "log-text-split-stream" => KLOG;
        logtostderr = "logtostderr" => KLOG;
        one_output = "one-output" | "one_output" => KLOG;
        profiling = "profiling" => "ipvs-proxy serves no /debug/pprof";
        skip_headers = "skip-headers" | "skip_headers" => KLOG;
        skip_log_headers = "skip-log-headers" | "skip_log_headers" => KLOG;
    }
    values {
        bind_address = "bind-address" =>
            "ipvs-proxy takes the node's addresses from its interfaces";
        config_sync_period = "config-sync-period" =>
            "the watches keep the objects current without a periodic resync";
        conntrack_max_per_core = "conntrack-max-per-core" => CONNTRACK;
        conntrack_min = "conntrack-min" => CONNTRACK;
        conntrack_tcp_timeout_close_wait = "conntrack-tcp-timeout-close-wait" => CONNTRACK;
        conntrack_tcp_timeout_established = "conntrack-tcp-timeout-established" => CONNTRACK;
        conntrack_udp_timeout = "conntrack-udp-timeout" => CONNTRACK;
        conntrack_udp_timeout_stream = "conntrack-udp-timeout-stream" => CONNTRACK;
        detect_local_mode = "detect-local-mode" => DETECT_LOCAL_REASON;
        feature_gates = "feature-gates" =>
            "kube-proxy's feature gates select kube-proxy's code; ipvs-proxy has none";
        healthz_port = "healthz-port" =>
            "deprecated by kube-proxy: set the port in --healthz-bind-address";
        iptables_min_sync_period = "iptables-min-sync-period" =>
            "it concerns kube-proxy's iptables mode only; --ipvs-min-sync-period applies";
        iptables_sync_period = "iptables-sync-period" =>
            "it concerns kube-proxy's iptables mode only; --ipvs-sync-period applies";
        kube_api_burst = "kube-api-burst" => API_CLIENT;
        kube_api_content_type = "kube-api-content-type" => API_CLIENT;
        kube_api_qps = "kube-api-qps" => API_CLIENT;
        log_backtrace_at = "log-backtrace-at" | "log_backtrace_at" => KLOG;
        log_dir = "log-dir" | "log_dir" => KLOG;
        log_file = "log-file" | "log_file" => KLOG;
        log_file_max_size = "log-file-max-size" | "log_file_max_size" => KLOG;
        log_flush_frequency = "log-flush-frequency" => KLOG;
        log_json_info_buffer_size = "log-json-info-buffer-size" => KLOG;
        log_text_info_buffer_size = "log-text-info-buffer-size" => KLOG;
        master = "master" =>
            "not supported: put the API server's address in the kubeconfig (--kubeconfig)";
        metrics_port = "metrics-port" =>
            "deprecated by kube-proxy: set the port in --metrics-bind-address";
        oom_score_adj = "oom-score-adj" =>
            "the kubelet sets the OOM score from the pod's priority and QoS class";
        pod_bridge_interface = "pod-bridge-interface" => DETECT_LOCAL_REASON;
        pod_interface_name_prefix = "pod-interface-name-prefix" => DETECT_LOCAL_REASON;
        show_hidden_metrics_for_version = "show-hidden-metrics-for-version" =>
            "ipvs-proxy has no hidden metrics";
        stderrthreshold = "stderrthreshold" => KLOG;
        vmodule = "vmodule" => KLOG;
        write_config_to = "write-config-to" =>
            "ipvs-proxy does not write kube-proxy's defaults; its README lists its settings";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_in_go_spelling() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_go_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_go_bool(f), Ok(false), "{f}");
        }
        for bad in ["", "yes", "tRuE", "2"] {
            assert!(parse_go_bool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verbosity_follows_the_kubernetes_logging_conventions() {
        let level = |v| {
            KubeProxyFlags {
                verbosity: Some(v),
                ..KubeProxyFlags::default()
            }
            .log_level()
        };
        assert_eq!(level(0).as_deref(), Some("info"));
        assert_eq!(
            level(2).as_deref(),
            Some("info"),
            "the usual --v=2 is not chatty"
        );
        assert_eq!(level(3).as_deref(), Some("info"));
        assert_eq!(level(4).as_deref(), Some("debug"));
        assert_eq!(level(9).as_deref(), Some("trace"));
        assert_eq!(KubeProxyFlags::default().log_level(), None);
    }
}
