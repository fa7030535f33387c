//! A real Kubernetes control plane for the control-plane tests: etcd, kube-apiserver and
//! kube-controller-manager built from their Go modules at one pinned release
//! (`integration/go/control-plane/`, `integration/go/etcd/`), started on the host.
//!
//! # Where it runs, and how the tests reach it
//! The API server runs on the host, not in the VM: under software emulation it would take
//! minutes to start. It listens on the host's loopback; the VM's user-mode network (QEMU's
//! slirp) turns the guest's connections to `10.0.2.2` into connections to the host's loopback,
//! so the tests in the guest dial `10.0.2.2` (on a host with IPVS they run beside it and dial
//! `127.0.0.1`). A daemon under test runs in a network namespace of its own; the tests give it
//! the API server on that namespace's loopback through a relay (`integration::cluster`).
//!
//! What the tests need to know is written to `cluster.json` in the control plane's folder,
//! whose path they get in `IPVS_CONTROL_PLANE`: the address, the CA, each identity's client
//! certificate, the binaries (kube-proxy among them), and the address of a small control
//! channel through which a test stops and starts the API server or compacts etcd's history.
//!
//! # Choices
//! - Authorization is RBAC. The tests' admin is in `system:masters`; the daemon's identity has
//!   no rights until a test binds it to `deploy/rbac.yaml`'s ClusterRole, so a permission the
//!   daemon lacks fails the test.
//! - The controller manager runs only the EndpointSlice controllers (and the namespace
//!   controller, so that a test's namespace can be deleted): there is no kubelet, so the tests
//!   write pods' status as a kubelet would.
//! - The API server's watch cache is off and etcd compacts only when asked: a watch resumed from
//!   a compacted resource version is then answered `410 Gone` every time, not only when the
//!   cache's window happens to have moved on.

mod certs;
mod components;
mod control;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::go_build::{self, GoProgram};
use crate::{Result, step};
use components::Component;

/// Kubernetes' programs at the pinned release.
const KUBERNETES: GoProgram = GoProgram {
    folder: "control-plane",
    module: "k8s.io/kubernetes",
    binaries: &[
        ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
        (
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-controller-manager",
        ),
        ("k8s.io/kubernetes/cmd/kube-proxy", "kube-proxy"),
    ],
    ldflags: kubernetes_version_stamp,
    why: "for the control-plane tests (about 6 minutes on two cores the first time)",
};

/// etcd at the release line the pinned Kubernetes uses.
const ETCD: GoProgram = GoProgram {
    folder: "etcd",
    module: "go.etcd.io/etcd/server/v3",
    binaries: &[("go.etcd.io/etcd/server/v3", "etcd")],
    ldflags: go_build::no_ldflags,
    why: "for the control-plane tests (Debian's etcd is older than Kubernetes supports)",
};

/// Without a stamp the programs report `v0.0.0-master`, and the API server derives its
/// emulated version from what it reports.
fn kubernetes_version_stamp(version: &str) -> String {
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("0");
    format!(
        "-X k8s.io/component-base/version.gitVersion={version} \
         -X k8s.io/component-base/version.gitMajor={major} \
         -X k8s.io/component-base/version.gitMinor={minor} \
         -X k8s.io/component-base/version.gitTreeState=clean"
    )
}

/// The service CIDRs the API server allocates ClusterIPs from: dual-stack, IPv4 first.
pub(crate) const SERVICE_CIDR: &str = "10.96.0.0/16,fd00:10:96::/108";

/// The built binaries: Kubernetes' folder and etcd's.
pub(crate) struct Binaries {
    kubernetes: go_build::Built,
    etcd: go_build::Built,
}

impl Binaries {
    /// The kube-proxy built with the control plane.
    pub(crate) fn kube_proxy(&self) -> PathBuf {
        self.kubernetes.binary("kube-proxy")
    }
}

/// Builds (or takes from the cache) the control plane's programs.
pub(crate) fn ensure_built() -> Result<Binaries> {
    let missing = || {
        "no `go` command (PATH, /usr/local/go/bin): the control-plane tests need Go to build \
         Kubernetes' programs"
            .to_string()
    };
    let kubernetes = go_build::ensure_built(&KUBERNETES)?.ok_or_else(missing)?;
    let etcd = go_build::ensure_built(&ETCD)?.ok_or_else(missing)?;
    Ok(Binaries { kubernetes, etcd })
}

/// The processes, shared with the control channel.
pub(crate) struct Processes {
    etcd: Component,
    apiserver: Component,
    controllers: Component,
    etcd_addr: SocketAddr,
    api_addr: SocketAddr,
}

impl Processes {
    /// Starts the API server and waits until it listens.
    fn start_apiserver(&mut self) -> Result<()> {
        self.apiserver.start()?;
        components::wait_for_port(&mut self.apiserver, self.api_addr, STARTUP)
    }
}

/// How long a component may take to start on a small, busy machine.
const STARTUP: Duration = Duration::from_secs(180);

/// A running control plane; stopped when dropped.
pub(crate) struct ControlPlane {
    dir: PathBuf,
    processes: Arc<Mutex<Processes>>,
    control: Option<control::Server>,
    /// The file the tests read (`IPVS_CONTROL_PLANE`).
    pub(crate) info: PathBuf,
}

/// A free TCP port on the loopback (free when asked; the components bind it right after).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn path_arg(flag: &str, path: &Path) -> String {
    format!("--{flag}={}", path.display())
}

/// A kubeconfig for `identity` at `server`.
fn kubeconfig(server: &str, ca: &Path, pair: &certs::Pair) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "user", "user": {
            "client-certificate": pair.cert,
            "client-key": pair.key,
        }}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
        "current-context": "test",
    })
    .to_string()
}

impl ControlPlane {
    /// Starts etcd, the API server and the controller manager in a fresh folder under `parent`;
    /// the tests will dial the API server at `dial_host` (the host's address as they see it).
    pub(crate) fn start(binaries: &Binaries, parent: &Path, dial_host: &str) -> Result<Self> {
        step(&format!(
            "starting a Kubernetes control plane ({} {}, etcd {}) on the host",
            KUBERNETES.module, binaries.kubernetes.version, binaries.etcd.version
        ));
        let dir = parent.join(format!("control-plane-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let issued = certs::issue(
            &dir,
            &[
                "127.0.0.1",
                dial_host,
                "10.96.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default.svc",
            ],
            &[
                certs::Identity {
                    name: "admin",
                    user: "test-admin",
                    groups: &["system:masters"],
                },
                certs::Identity {
                    name: "daemon",
                    user: "ipvs-proxy",
                    groups: &[],
                },
                certs::Identity {
                    name: "kube-proxy",
                    user: "system:kube-proxy",
                    groups: &[],
                },
            ],
        )?;
        let client = |name: &str| {
            issued
                .clients
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, pair)| pair.clone())
                .ok_or_else(|| format!("no {name} credential issued"))
        };
        let admin = client("admin")?;

        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let api_port = free_port()?;
        let etcd_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, etcd_port));
        let api_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, api_port));
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");

        let etcd = Component::new(
            "etcd",
            binaries.etcd.binary("etcd"),
            vec![
                "--name=test".into(),
                path_arg("data-dir", &dir.join("etcd-data")),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=test={peer_url}"),
                "--log-level=warn".into(),
                // A test cluster's data is thrown away: durability costs only time.
                "--unsafe-no-fsync".into(),
            ],
            &dir,
        );
        let apiserver = Component::new(
            "kube-apiserver",
            binaries.kubernetes.binary("kube-apiserver"),
            vec![
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                path_arg("cert-dir", &dir.join("apiserver-certs")),
                path_arg("tls-cert-file", &issued.serving.cert),
                path_arg("tls-private-key-file", &issued.serving.key),
                path_arg("client-ca-file", &issued.ca),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                path_arg("service-account-key-file", &issued.service_account_public),
                path_arg(
                    "service-account-signing-key-file",
                    &issued.service_account_key,
                ),
                // No ServiceAccount admission: the tests' pods need no token mounted.
                "--disable-admission-plugins=ServiceAccount".into(),
                // The address is never dialled through the `kubernetes` Service here; a
                // loopback one fails that Service's endpoint validation.
                format!("--advertise-address={}", advertise_address(dial_host)),
                "--endpoint-reconciler-type=none".into(),
                "--watch-cache=false".into(),
                "--etcd-compaction-interval=0".into(),
                "--profiling=false".into(),
                // As kubeadm sets it: a proxy's DaemonSet runs privileged.
                "--allow-privileged=true".into(),
            ],
            &dir,
        );
        let host_kubeconfig = dir.join("admin-host.kubeconfig");
        std::fs::write(
            &host_kubeconfig,
            kubeconfig(&format!("https://{api_addr}"), &issued.ca, &admin),
        )
        .map_err(|e| format!("{}: {e}", host_kubeconfig.display()))?;
        let controllers = Component::new(
            "kube-controller-manager",
            binaries.kubernetes.binary("kube-controller-manager"),
            vec![
                path_arg("kubeconfig", &host_kubeconfig),
                "--controllers=endpointslice-controller,endpointslice-mirroring-controller,\
                 namespace-controller"
                    .into(),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--use-service-account-credentials=false".into(),
            ],
            &dir,
        );
        let processes = Arc::new(Mutex::new(Processes {
            etcd,
            apiserver,
            controllers,
            etcd_addr,
            api_addr,
        }));
        let mut plane = ControlPlane {
            info: dir.join("cluster.json"),
            dir: dir.clone(),
            processes: processes.clone(),
            control: None,
        };
        {
            let mut p = processes
                .lock()
                .map_err(|_| "control plane lock poisoned")?;
            p.etcd.start()?;
            components::wait_for_etcd(&mut p.etcd, etcd_addr, STARTUP)?;
            p.start_apiserver()?;
            p.controllers.start()?;
        }
        let control = control::Server::start(processes)?;
        let control_port = control.port();
        plane.control = Some(control);

        let credentials: serde_json::Map<String, serde_json::Value> = issued
            .clients
            .iter()
            .map(|(name, pair)| {
                (
                    (*name).to_string(),
                    json!({"cert": pair.cert, "key": pair.key}),
                )
            })
            .collect();
        let info = json!({
            "version": binaries.kubernetes.version,
            "etcd_version": binaries.etcd.version,
            "server": format!("https://{dial_host}:{api_port}"),
            "ca": issued.ca,
            "credentials": credentials,
            "control": format!("{dial_host}:{control_port}"),
            "binaries": binaries.kubernetes.dir,
            "service_cidr": SERVICE_CIDR,
            "node_port_range": "30000-32767",
        });
        std::fs::write(&plane.info, info.to_string())
            .map_err(|e| format!("{}: {e}", plane.info.display()))?;
        println!(
            "    API server https://{api_addr} (tests dial {dial_host}:{api_port}), control \
             channel port {control_port}, folder {}",
            dir.display()
        );
        Ok(plane)
    }

    /// Prints the tail of every component's log (after a failure).
    pub(crate) fn print_logs(&self) {
        let Ok(p) = self.processes.lock() else {
            return;
        };
        for component in [&p.etcd, &p.apiserver, &p.controllers] {
            println!(
                "\n--- {} log (last 60 lines, {}):\n{}",
                component.name,
                self.dir.display(),
                component.log_tail(60)
            );
        }
    }

    /// Stops everything and removes the folder.
    pub(crate) fn stop(mut self) {
        self.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn shutdown(&mut self) {
        if let Some(control) = self.control.take() {
            control.stop();
        }
        if let Ok(mut p) = self.processes.lock() {
            p.controllers.stop(Duration::from_secs(10));
            p.apiserver.stop(Duration::from_secs(20));
            p.etcd.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The address the API server advertises: the one the tests dial when it is not loopback.
fn advertise_address(dial_host: &str) -> &str {
    match dial_host.parse::<std::net::IpAddr>() {
        Ok(ip) if !ip.is_loopback() => dial_host,
        _ => "192.0.2.1",
    }
}
