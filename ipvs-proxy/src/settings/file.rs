//! The config file: kube-proxy's `KubeProxyConfiguration` (YAML or JSON) with this daemon's own
//! fields, read as written, before the defaults and the flags are applied.

use super::*;

/// A size in a config file: a number of bytes, or text as [`parse_size`] reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum FileSize {
    Bytes(u64),
    Text(String),
}

/// The IPVS settings of a `KubeProxyConfiguration`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FileIpvs {
    pub(super) scheduler: Option<String>,
    pub(super) sync_period: Option<String>,
    pub(super) min_sync_period: Option<String>,
    #[serde(rename = "strictARP")]
    pub(super) strict_arp: Option<bool>,
    pub(super) tcp_timeout: Option<String>,
    pub(super) tcp_fin_timeout: Option<String>,
    pub(super) udp_timeout: Option<String>,
    #[serde(rename = "excludeCIDRs")]
    pub(super) exclude_cidrs: Option<Vec<String>>,
    #[serde(flatten)]
    pub(super) other: serde_json::Map<String, serde_json::Value>,
}

/// The iptables settings of a `KubeProxyConfiguration`: its masquerading ones apply to the
/// nftables table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FileIptables {
    pub(super) masquerade_all: Option<bool>,
    pub(super) masquerade_bit: Option<i64>,
    #[serde(flatten)]
    pub(super) other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FileClientConnection {
    pub(super) kubeconfig: Option<PathBuf>,
    #[serde(flatten)]
    pub(super) other: serde_json::Map<String, serde_json::Value>,
}

/// A config file: kube-proxy's `KubeProxyConfiguration` plus this daemon's own fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FileSettings {
    pub(super) api_version: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) mode: Option<String>,
    pub(super) bind_address: Option<String>,
    pub(super) hostname_override: Option<String>,
    pub(super) metrics_bind_address: Option<String>,
    pub(super) healthz_bind_address: Option<String>,
    pub(super) node_port_addresses: Option<Vec<String>>,
    pub(super) client_connection: Option<FileClientConnection>,
    pub(super) ipvs: Option<FileIpvs>,
    pub(super) iptables: Option<FileIptables>,
    #[serde(rename = "clusterCIDR")]
    pub(super) cluster_cidr: Option<String>,
    // This daemon's own settings.
    pub(super) manifests: Option<PathBuf>,
    pub(super) manifests_max_file_size: Option<FileSize>,
    pub(super) manifests_max_depth: Option<usize>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) log_level: Option<String>,
    pub(super) drain_timeout: Option<String>,
    pub(super) node_port_range: Option<String>,
    pub(super) service_proxy_name: Option<String>,
    pub(super) metrics_per_virtual_server: Option<bool>,
    pub(super) sysctls: Option<SysctlMode>,
    pub(super) ipvs_rate_estimation: Option<bool>,
    pub(super) ipvs_watch_writes: Option<bool>,
    #[serde(flatten)]
    pub(super) other: serde_json::Map<String, serde_json::Value>,
}

pub(super) fn read_file(path: &Path) -> Result<FileSettings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(path, &text)
}

pub(super) fn parse_file(path: &Path, text: &str) -> Result<FileSettings, SettingsError> {
    // YAML is a superset of JSON: one parser reads both.
    serde_yaml_ng::from_str::<Option<FileSettings>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| SettingsError::Parse {
            path: path.to_owned(),
            message: match e.location() {
                Some(l) => format!("line {}: {e}", l.line()),
                None => e.to_string(),
            },
        })
}

/// The file fields of kube-proxy's other ways to tell cluster traffic.
pub(super) const DETECT_LOCAL_FIELDS: &[&str] = &[
    "detectLocalMode",
    "detectLocal.bridgeInterface",
    "detectLocal.interfaceNamePrefix",
    "detectLocal.clusterCIDRs",
];

/// Adds to `out` the path of every field of `fields` that is set, i.e. not at its zero value,
/// looking into nested objects (`iptables.masqueradeAll`).
pub(super) fn set_fields(
    prefix: &str,
    fields: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    for (name, value) in fields {
        let path = format!("{prefix}{name}");
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                set_fields(&format!("{path}."), inner, out)
            }
            value if is_zero(value) => {}
            _ => out.push(path),
        }
    }
}

/// Whether a field holds its Go zero value as kube-proxy's YAML writes it: null, false, 0, "",
/// an empty list or object, or a zero duration or quantity (`0s`, `"0"`).
pub(super) fn is_zero(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || parse_duration(s).is_ok_and(|d| d.is_zero()),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.values().all(is_zero),
    }
}
