//! The files in `deploy/` are what operators apply: they must parse as the Kubernetes objects they
//! claim to be, grant no more than list and watch, and start the daemon with settings it accepts.

use std::path::{Path, PathBuf};

use clap::Parser;
use ipvs_proxy::settings::{Cli, Settings, SourceSettings, SysctlMode};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML document of `file`, as `T` when its `kind` is `kind`.
fn objects<T: serde::de::DeserializeOwned>(file: &str, kind: &str) -> Vec<T> {
    let path = deploy_dir().join(file);
    let text = std::fs::read_to_string(&path).expect("deploy file readable");
    let mut out = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_yaml_ng::Value::deserialize(document).expect("valid YAML");
        if value.get("kind").and_then(|k| k.as_str()) == Some(kind) {
            out.push(
                serde_yaml_ng::from_value(value)
                    .unwrap_or_else(|e| panic!("{file}: not a valid {kind}: {e}")),
            );
        }
    }
    out
}

fn one<T: serde::de::DeserializeOwned>(file: &str, kind: &str) -> T {
    let mut all = objects::<T>(file, kind);
    assert_eq!(all.len(), 1, "{file}: exactly one {kind}");
    all.remove(0)
}

fn daemon_set() -> DaemonSet {
    one("daemonset.yaml", "DaemonSet")
}

fn config_map() -> ConfigMap {
    one("config.yaml", "ConfigMap")
}

/// The settings a container of the DaemonSet starts with: its args (with the node name the
/// Downward API gives) and the config file from the ConfigMap.
fn settings_of(container: &Container) -> Settings {
    let args = container.args.clone().unwrap_or_default();
    let args = args
        .iter()
        .map(|a| a.replace("$(NODE_NAME)", "node-1"))
        .collect::<Vec<_>>();
    let cli = Cli::try_parse_from(std::iter::once("ipvs-proxy".to_owned()).chain(args))
        .expect("the DaemonSet's args parse");
    let config = cli.config.clone().expect("a --config file");
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| config.starts_with(&m.mount_path))
        .expect("the config file is on a mounted volume");
    let key = config
        .strip_prefix(&mount.mount_path)
        .expect("under the mount")
        .to_string_lossy()
        .into_owned();
    let data = config_map().data.unwrap_or_default();
    let text = data.get(&key).expect("the ConfigMap holds the config file");
    Settings::from_file_text(&cli, &config, text, || None).expect("the config file is accepted")
}

#[test]
fn the_cluster_role_only_lists_and_watches_services_slices_and_nodes() {
    let role: ClusterRole = one("rbac.yaml", "ClusterRole");
    let mut granted = Vec::new();
    for rule in role.rules.unwrap_or_default() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        let mut verbs = rule.verbs.clone();
        verbs.sort();
        assert_eq!(verbs, ["list", "watch"], "only list and watch");
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.iter().flatten() {
                granted.push(format!("{group}/{resource}"));
            }
        }
    }
    granted.sort();
    assert_eq!(
        granted,
        ["/nodes", "/services", "discovery.k8s.io/endpointslices"]
    );

    let account: ServiceAccount = one("rbac.yaml", "ServiceAccount");
    let binding: ClusterRoleBinding = one("rbac.yaml", "ClusterRoleBinding");
    assert_eq!(
        binding.role_ref.name,
        role.metadata.name.unwrap_or_default()
    );
    let subject = &binding.subjects.unwrap_or_default()[0];
    assert_eq!(Some(&subject.name), account.metadata.name.as_ref());
    assert_eq!(subject.namespace, account.metadata.namespace);
    let pod = daemon_set().spec.template.spec.expect("pod");
    assert_eq!(pod.service_account_name, account.metadata.name);
}

#[test]
fn the_daemon_runs_on_the_host_network_with_net_admin_alone() {
    let pod = daemon_set().spec.template.spec.expect("pod");
    assert_eq!(pod.host_network, Some(true));
    // Cluster DNS is a Service: the proxy that makes it reachable cannot depend on it.
    assert_eq!(pod.dns_policy.as_deref(), Some("Default"));
    let [daemon] = pod.containers.as_slice() else {
        panic!("one container");
    };
    let security = daemon.security_context.clone().expect("securityContext");
    assert_ne!(security.privileged, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let caps = security.capabilities.expect("capabilities");
    assert_eq!(caps.add, Some(vec!["NET_ADMIN".to_owned()]));
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));

    let settings = settings_of(daemon);
    assert_eq!(
        settings.sysctls,
        SysctlMode::Check,
        "it cannot write /proc/sys"
    );
    assert!(!settings.init_node && !settings.cleanup);
    assert!(
        settings.ignored_fields.is_empty(),
        "{:?}",
        settings.ignored_fields
    );
    let SourceSettings::Kubernetes { kubeconfig } = &settings.source else {
        panic!("the DaemonSet watches the API server");
    };
    let kubeconfig = kubeconfig.as_ref().expect("a kubeconfig");
    let key = kubeconfig.file_name().expect("a file").to_string_lossy();
    let data = config_map().data.unwrap_or_default();
    let parsed = kube::config::Kubeconfig::from_yaml(data.get(key.as_ref()).expect("in the map"))
        .expect("the kubeconfig parses");
    let user = parsed.auth_infos[0].auth_info.clone().expect("a user");
    assert_eq!(
        user.token_file.as_deref(),
        Some("/var/run/secrets/kubernetes.io/serviceaccount/token")
    );

    // Liveness asks /livez where the daemon serves it.
    let probe = daemon.liveness_probe.clone().expect("a liveness probe");
    let http = probe.http_get.expect("an HTTP probe");
    assert_eq!(http.path.as_deref(), Some("/livez"));
    let healthz = settings.healthz_bind_address.expect("healthz served");
    assert_eq!(http.port, IntOrString::Int(i32::from(healthz.port())));
    assert!(
        healthz.ip().is_unspecified(),
        "the kubelet reaches it on the node IP"
    );
}

#[test]
fn the_init_container_applies_node_settings_and_exits() {
    let pod = daemon_set().spec.template.spec.expect("pod");
    let [init] = pod.init_containers.as_deref().unwrap_or_default() else {
        panic!("one init container");
    };
    let settings = settings_of(init);
    assert!(settings.init_node);
    let [daemon] = pod.containers.as_slice() else {
        panic!("one container");
    };
    assert_eq!(init.image, daemon.image, "the same image");
    // The same node settings as the daemon checks.
    let daemon_settings = settings_of(daemon);
    assert_eq!(settings.strict_arp, daemon_settings.strict_arp);
    assert_eq!(settings.tcp_timeout, daemon_settings.tcp_timeout);
}

/// Bytes of a memory quantity in the binary suffixes the DaemonSet uses (`Mi`, `Gi`).
fn mebibytes(quantity: &str) -> u64 {
    let (number, unit) = quantity.split_at(quantity.len() - 2);
    let number: u64 = number.parse().expect("a whole number");
    match unit {
        "Mi" => number,
        "Gi" => number * 1024,
        other => panic!("unexpected unit {other} in {quantity}"),
    }
}

#[test]
fn the_memory_limit_covers_the_measured_peak_and_drains_are_not_cut() {
    let pod = daemon_set().spec.template.spec.expect("pod");
    let [daemon] = pod.containers.as_slice() else {
        panic!("one container");
    };
    let resources = daemon.resources.clone().expect("resources");
    let limit = resources
        .limits
        .and_then(|l| l.get("memory").cloned())
        .expect("a memory limit");
    let request = resources
        .requests
        .and_then(|r| r.get("memory").cloned())
        .expect("a memory request");
    // A limit below the daemon's peak RSS at the largest size the README promises (its
    // restart at 50,000 Services, in BENCHMARKS.md) is an OOM kill.
    assert!(mebibytes(&limit.0) >= 512, "limit {}", limit.0);
    assert!(mebibytes(&request.0) <= mebibytes(&limit.0));
    // The request covers the steady RSS at 10,000 Services (BENCHMARKS.md), so that the
    // scheduler counts it.
    assert!(mebibytes(&request.0) >= 128, "request {}", request.0);
    assert_eq!(settings_of(daemon).drain_timeout, None);
}
