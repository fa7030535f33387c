//! ipvs-proxy starts where a kube-proxy DaemonSet started: with kubeadm's `KubeProxyConfiguration`
//! as kubeadm writes it, and with any of kube-proxy's flags.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use ipvs_proxy::settings::{Cli, LogFormat, Settings, SettingsError, SourceSettings};
use svc_controller::Scheduler;

/// The `config.conf` of the `kube-proxy` ConfigMap that `kubeadm init` writes (Kubernetes 1.34)
/// for a ClusterConfiguration with `networking.podSubnet: 10.244.0.0/16` and a
/// KubeProxyConfiguration of only `mode: ipvs`: every field, zero values included, keys sorted.
const KUBEADM_CONFIG: &str = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ipvs
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#;

/// The command of kubeadm's kube-proxy DaemonSet (after the program name), with the node name
/// the kubelet substitutes for `$(NODE_NAME)`.
const DAEMONSET_ARGS: [&str; 2] = [
    "--config=/var/lib/kube-proxy/config.conf",
    "--hostname-override=node-1",
];

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("ipvs-proxy").chain(args.iter().copied()))
}

/// Settings from `args`, with `config` as the text of the `--config` file if one is named.
fn load(args: &[&str], config: &str) -> Result<Settings, SettingsError> {
    let cli = parse(args).unwrap_or_else(|e| panic!("{args:?} do not parse: {e}"));
    match cli.config.clone() {
        Some(path) => Settings::from_file_text(&cli, &path, config, || Some("host".into())),
        None => Settings::load(&cli, || Some("host".into())),
    }
}

fn addr(text: &str) -> Option<SocketAddr> {
    Some(text.parse().expect("a socket address"))
}

#[test]
fn the_command_line_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn kubeadms_ipvs_config_starts_with_kube_proxys_defaults() {
    let s = load(&DAEMONSET_ARGS, KUBEADM_CONFIG).expect("kubeadm's file is accepted");
    assert_eq!(s.node_name, "node-1");
    assert_eq!(
        s.source,
        SourceSettings::Kubernetes {
            kubeconfig: Some("/var/lib/kube-proxy/kubeconfig.conf".into())
        }
    );
    // kube-proxy's defaults for the zero values.
    assert_eq!(
        s.sync_period,
        Duration::from_secs(30),
        "ipvs.syncPeriod: 0s"
    );
    assert_eq!(s.min_sync_period, Duration::ZERO, "ipvs.minSyncPeriod: 0s");
    assert_eq!(s.scheduler, Scheduler::RoundRobin, "ipvs.scheduler: \"\"");
    assert_eq!(s.metrics_bind_address, addr("127.0.0.1:10249"));
    assert_eq!(s.healthz_bind_address, addr("0.0.0.0:10256"));
    assert!(s.nodeport_addresses.is_empty(), "every node address");
    assert!(!s.strict_arp);
    assert_eq!(s.tcp_timeout, Duration::ZERO, "the kernel's");
    assert_eq!(s.tcpfin_timeout, Duration::ZERO);
    assert_eq!(s.udp_timeout, Duration::ZERO);
    assert!(!s.init_node && !s.cleanup);
    assert_eq!(s.log_level, None);
    // Only what is set and not read is reported: the zero values ask for nothing, and
    // clusterCIDR is read (the netfilter table's masquerading).
    assert!(s.ignored_fields.is_empty(), "{:?}", s.ignored_fields);
    assert_eq!(
        s.masquerade.cluster_cidrs,
        vec!["10.244.0.0/16".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(s.masquerade.masquerade_bit, 14);
    assert!(s.flag_notes.is_empty());
}

#[test]
fn an_ipv6_bind_address_makes_the_default_addresses_ipv6() {
    let text = KUBEADM_CONFIG.replace("bindAddress: 0.0.0.0", "bindAddress: \"::\"");
    let s = load(&DAEMONSET_ARGS, &text).expect("accepted");
    assert_eq!(s.metrics_bind_address, addr("[::1]:10249"));
    assert_eq!(s.healthz_bind_address, addr("[::]:10256"));
    let text = KUBEADM_CONFIG.replace("healthzBindAddress: \"\"", "healthzBindAddress: 10.0.0.5");
    let s = load(&DAEMONSET_ARGS, &text).expect("accepted");
    assert_eq!(
        s.healthz_bind_address,
        addr("10.0.0.5:10256"),
        "kube-proxy appends the port"
    );
}

#[test]
fn an_empty_bind_address_flag_still_switches_the_server_off() {
    let s = load(
        &[
            DAEMONSET_ARGS[0],
            DAEMONSET_ARGS[1],
            "--metrics-bind-address=",
        ],
        KUBEADM_CONFIG,
    )
    .expect("accepted");
    assert_eq!(s.metrics_bind_address, None);
    assert_eq!(s.healthz_bind_address, addr("0.0.0.0:10256"));
}

/// Every flag of kube-proxy's reference page (Linux build, 1.34) with a plausible value, the
/// deprecated `--healthz-port`/`--metrics-port` and the JSON logging flags; `-h` and `--version`
/// print and exit, as kube-proxy's do.
const EVERY_FLAG: &[&str] = &[
    "--add_dir_header",
    "--alsologtostderr=false",
    "--bind-address=0.0.0.0",
    "--bind-address-hard-fail=false",
    "--cleanup=false",
    "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
    "--config=/var/lib/kube-proxy/config.conf",
    "--config-sync-period=15m0s",
    "--conntrack-max-per-core=32768",
    "--conntrack-min=131072",
    "--conntrack-tcp-be-liberal",
    "--conntrack-tcp-timeout-close-wait=1h0m0s",
    "--conntrack-tcp-timeout-established=24h0m0s",
    "--conntrack-udp-timeout=30s",
    "--conntrack-udp-timeout-stream=2m0s",
    "--detect-local-mode=ClusterCIDR",
    "--feature-gates=AllAlpha=false,NFTablesProxyMode=true",
    "--healthz-bind-address=0.0.0.0:10256",
    "--healthz-port=10256",
    "--hostname-override=node-1",
    "--init-only=false",
    "--iptables-localhost-nodeports=false",
    "--iptables-masquerade-bit=14",
    "--iptables-min-sync-period=1s",
    "--iptables-sync-period=30s",
    "--ipvs-exclude-cidrs=10.0.0.0/8,192.168.0.0/16",
    "--ipvs-min-sync-period=1s",
    "--ipvs-scheduler=wrr",
    "--ipvs-strict-arp",
    "--ipvs-sync-period=45s",
    "--ipvs-tcp-timeout=900s",
    "--ipvs-tcpfin-timeout=2m0s",
    "--ipvs-udp-timeout=0s",
    "--kube-api-burst=10",
    "--kube-api-content-type=application/vnd.kubernetes.protobuf",
    "--kube-api-qps=5",
    "--kubeconfig=/var/lib/kube-proxy/kubeconfig.conf",
    "--log-flush-frequency=5s",
    "--log-json-info-buffer-size=0",
    "--log-json-split-stream=false",
    "--log-text-info-buffer-size=0",
    "--log-text-split-stream=false",
    "--log_backtrace_at=:0",
    "--log_dir=/var/log/kube-proxy",
    "--log_file=/var/log/kube-proxy/kube-proxy.log",
    "--log_file_max_size=1800",
    "--logging-format=text",
    "--logtostderr=true",
    "--masquerade-all",
    "--master=https://10.0.0.1:6443",
    "--metrics-bind-address=0.0.0.0:10249",
    "--metrics-port=10249",
    "--nodeport-addresses=10.0.0.0/8",
    "--one_output",
    "--oom-score-adj=-999",
    "--pod-bridge-interface=cni0",
    "--pod-interface-name-prefix=veth",
    "--profiling=false",
    "--proxy-mode=ipvs",
    "--show-hidden-metrics-for-version=1.33",
    "--skip_headers",
    "--skip_log_headers=true",
    "--stderrthreshold=2",
    "--v=2",
    "--vmodule=proxier*=4",
    "--write-config-to=/tmp/kube-proxy-defaults.yaml",
];

#[test]
fn kube_proxys_whole_flag_set_is_accepted() {
    let s = load(EVERY_FLAG, KUBEADM_CONFIG).expect("every kube-proxy flag is accepted");
    // Honoured: the shared settings, and the ones mapped onto this daemon's.
    assert_eq!(s.node_name, "node-1");
    assert_eq!(s.scheduler, Scheduler::WeightedRoundRobin);
    assert_eq!(s.sync_period, Duration::from_secs(45));
    assert_eq!(s.min_sync_period, Duration::from_secs(1));
    assert!(s.strict_arp);
    assert_eq!(s.tcp_timeout, Duration::from_secs(900));
    assert_eq!(s.metrics_bind_address, addr("0.0.0.0:10249"));
    assert_eq!(s.nodeport_addresses.len(), 1);
    assert_eq!(
        s.exclude_cidrs,
        vec![
            "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
            "192.168.0.0/16".parse().unwrap()
        ],
        "--ipvs-exclude-cidrs is honoured"
    );
    assert!(!s.init_node && !s.cleanup);
    assert_eq!(s.log_level.as_deref(), Some("info"), "--v=2");
    assert_eq!(s.log_format, LogFormat::Plain, "--logging-format=text");
    // The rest: each named once, with a reason.
    let noted: Vec<&str> = s.flag_notes.iter().map(|n| n.flag).collect();
    assert_eq!(
        noted,
        [
            "add-dir-header",
            "alsologtostderr",
            "bind-address",
            "bind-address-hard-fail",
            "config-sync-period",
            "conntrack-max-per-core",
            "conntrack-min",
            "conntrack-tcp-be-liberal",
            "conntrack-tcp-timeout-close-wait",
            "conntrack-tcp-timeout-established",
            "conntrack-udp-timeout",
            "conntrack-udp-timeout-stream",
            "detect-local-mode",
            "feature-gates",
            "healthz-port",
            "iptables-localhost-nodeports",
            "iptables-min-sync-period",
            "iptables-sync-period",
            "kube-api-burst",
            "kube-api-content-type",
            "kube-api-qps",
            "log-backtrace-at",
            "log-dir",
            "log-file",
            "log-file-max-size",
            "log-flush-frequency",
            "log-json-info-buffer-size",
            "log-json-split-stream",
            "log-text-info-buffer-size",
            "log-text-split-stream",
            "logtostderr",
            "master",
            "metrics-port",
            "one-output",
            "oom-score-adj",
            "pod-bridge-interface",
            "pod-interface-name-prefix",
            "profiling",
            "show-hidden-metrics-for-version",
            "skip-headers",
            "skip-log-headers",
            "stderrthreshold",
            "vmodule",
            "write-config-to",
        ]
    );
    let reason = |flag: &str| {
        s.flag_notes
            .iter()
            .find(|n| n.flag == flag)
            .map(|n| n.reason)
            .unwrap_or_default()
    };
    assert!(reason("detect-local-mode").contains("--cluster-cidr"));
    assert!(s.masquerade.masquerade_all, "--masquerade-all is honoured");
    assert!(s.flag_notes.iter().all(|n| !n.reason.is_empty()));
}

#[test]
fn flags_take_go_syntax() {
    // A value after a space, a negative number, a flag given twice.
    let s = load(
        &[
            "--cluster-cidr",
            "10.244.0.0/16",
            "--oom-score-adj",
            "-999",
            "--feature-gates=A=true",
            "--feature-gates=B=false",
        ],
        "",
    )
    .expect("accepted");
    let noted: Vec<&str> = s.flag_notes.iter().map(|n| n.flag).collect();
    assert_eq!(noted, ["feature-gates", "oom-score-adj"]);
    assert_eq!(
        s.masquerade.cluster_cidrs.len(),
        1,
        "--cluster-cidr is honoured"
    );
    // Booleans: bare, or with `=` and any spelling Go takes; never a separate value.
    for ok in [
        "--masquerade-all",
        "--masquerade-all=true",
        "--masquerade-all=false",
        "--masquerade-all=T",
        "--masquerade-all=0",
        "--cleanup=false",
    ] {
        assert!(parse(&[ok]).is_ok(), "{ok}");
    }
    assert!(parse(&["--masquerade-all=maybe"]).is_err());
    assert!(
        parse(&["--masquerade-all", "false"]).is_err(),
        "pflag takes no separate value for a boolean"
    );
    assert!(parse(&["--cleanup"]).expect("parses").cleanup);
    assert!(parse(&["--cleanup=true"]).expect("parses").cleanup);
    assert!(!parse(&["--cleanup=false"]).expect("parses").cleanup);
}

#[test]
fn another_proxy_mode_is_refused_clearly() {
    let err = load(&["--proxy-mode=iptables"], "").unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("proxy-mode") && message.contains("iptables") && message.contains("ipvs"),
        "{message}"
    );
    // Also over a file that says ipvs, and the flag wins over a file that says otherwise.
    let err = load(
        &[DAEMONSET_ARGS[0], "--proxy-mode=nftables"],
        KUBEADM_CONFIG,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nftables"), "{err}");
    let iptables_file = KUBEADM_CONFIG.replace("mode: ipvs", "mode: iptables");
    assert!(load(&[DAEMONSET_ARGS[0]], &iptables_file).is_err());
    assert!(load(&[DAEMONSET_ARGS[0], "--proxy-mode=ipvs"], &iptables_file).is_ok());
    assert!(load(&["--proxy-mode=ipvs"], "").is_ok());
    assert!(load(&["--proxy-mode="], "").is_ok(), "empty: the default");
}

#[test]
fn init_only_is_init_node() {
    assert!(load(&["--init-only"], "").expect("loads").init_node);
    assert!(load(&["--init-only=true"], "").expect("loads").init_node);
    assert!(!load(&["--init-only=false"], "").expect("loads").init_node);
    assert!(!load(&[], "").expect("loads").init_node);
    for both in [["--init-only", "--cleanup"], ["--init-node", "--cleanup"]] {
        let err = load(&both, "").unwrap_err();
        assert!(err.to_string().contains("--cleanup"), "{err}");
    }
    assert!(load(&["--init-only", "--cleanup=false"], "").is_ok());
    // kube-proxy's init container: the same file, then --init-only.
    let s = load(
        &[DAEMONSET_ARGS[0], DAEMONSET_ARGS[1], "--init-only"],
        KUBEADM_CONFIG,
    )
    .expect("loads");
    assert!(s.init_node);
}

#[test]
fn verbosity_is_a_log_level_unless_one_is_given() {
    let level = |args: &[&str]| load(args, "").expect("loads").log_level;
    assert_eq!(level(&["--v=2"]).as_deref(), Some("info"));
    assert_eq!(level(&["--v", "4"]).as_deref(), Some("debug"));
    assert_eq!(level(&["-v", "6"]).as_deref(), Some("trace"));
    assert_eq!(level(&["-v=5"]).as_deref(), Some("trace"));
    assert_eq!(
        level(&["--v=4", "--log-level=warn"]).as_deref(),
        Some("warn"),
        "--log-level wins"
    );
    assert!(parse(&["--v=loud"]).is_err());
    // --logging-format is --log-format's kube-proxy name; --log-format wins.
    let format = |args: &[&str]| load(args, "").map(|s| s.log_format);
    assert_eq!(format(&["--logging-format=json"]).unwrap(), LogFormat::Json);
    assert_eq!(
        format(&["--logging-format=json", "--log-format=plain"]).unwrap(),
        LogFormat::Plain
    );
    assert!(format(&["--logging-format=xml"]).is_err());
}

#[test]
fn the_config_file_path_is_the_daemonsets() {
    let cli = parse(&DAEMONSET_ARGS).expect("parses");
    assert_eq!(
        cli.config.as_deref(),
        Some(Path::new("/var/lib/kube-proxy/config.conf"))
    );
}
