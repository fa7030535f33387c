//! The real Kubernetes control plane of the control-plane tests, as the tests see it.
//!
//! `cargo xtask control-plane-tests` (and `cargo xtask test`) builds etcd, kube-apiserver,
//! kube-controller-manager and kube-proxy from their Go modules, starts the first three on the
//! host, and runs the tests with `IPVS_CONTROL_PLANE` naming a file that says how to reach
//! them: [`TestCluster::from_env`] reads it. The tests run in the VM, where the host is
//! `10.0.2.2`; a daemon under test runs in a network namespace of its own and reaches the API
//! server through a [`Relay`] on that namespace's loopback, which a test can also cut to hide
//! the API server from that one daemon. [`NodeNamespace`] builds such a namespace and
//! [`ProxyKind`] gives the command line of either proxy in it, so that the tests and the
//! Kubernetes-mode benchmark start ipvs-proxy and kube-proxy alike.

mod node;
mod relay;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

pub use node::{API_LISTEN, HEALTHZ, METRICS, NodeNamespace, ProxyKind};
pub use relay::Relay;

/// The variable that names the control plane's description.
pub const ENV: &str = "IPVS_CONTROL_PLANE";

/// The identities the control plane issued client certificates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The tests' administrator (`system:masters`).
    Admin,
    /// The daemon under test: user `ipvs-proxy`, no rights until bound to `deploy/rbac.yaml`'s
    /// ClusterRole.
    Daemon,
    /// kube-proxy, the reference (`system:kube-proxy`, which Kubernetes' default RBAC binds to
    /// `system:node-proxier`).
    KubeProxy,
}

impl Identity {
    fn key(self) -> &'static str {
        match self {
            Identity::Admin => "admin",
            Identity::Daemon => "daemon",
            Identity::KubeProxy => "kube-proxy",
        }
    }

    /// The user name RBAC sees.
    pub fn user(self) -> &'static str {
        match self {
            Identity::Admin => "test-admin",
            Identity::Daemon => "ipvs-proxy",
            Identity::KubeProxy => "system:kube-proxy",
        }
    }
}

/// A running control plane, described by the file in [`ENV`].
#[derive(Debug, Clone)]
pub struct TestCluster {
    info: serde_json::Value,
    server: String,
    api: SocketAddr,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl TestCluster {
    /// Reads the description the test harness wrote. Fails, saying how to run these tests,
    /// when there is none: a control-plane test never passes without a control plane.
    pub fn from_env() -> io::Result<Self> {
        let path = std::env::var_os(ENV).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{ENV} is not set: the control-plane tests run with a real control plane, \
                     through `cargo xtask control-plane-tests` (or `cargo xtask test`)"
                ),
            )
        })?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let info: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        let server = info["server"]
            .as_str()
            .ok_or_else(|| invalid("no server in the description".into()))?
            .to_owned();
        let api = server
            .trim_start_matches("https://")
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| invalid(format!("no address in {server}")))?;
        Ok(Self { info, server, api })
    }

    /// The API server's URL, as the tests dial it.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The API server's address, as the tests dial it (a [`Relay`]'s target).
    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    /// The Kubernetes release the control plane runs (`v1.37.2`, say).
    pub fn version(&self) -> &str {
        self.info["version"].as_str().unwrap_or("?")
    }

    /// The ClusterIP range.
    pub fn service_cidr(&self) -> &str {
        self.info["service_cidr"].as_str().unwrap_or("")
    }

    /// The kube-proxy binary built at the same release.
    pub fn kube_proxy_binary(&self) -> PathBuf {
        PathBuf::from(self.info["binaries"].as_str().unwrap_or("")).join("kube-proxy")
    }

    fn path(&self, value: &serde_json::Value, what: &str) -> io::Result<String> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("no {what} in the description")))
    }

    /// A kubeconfig (JSON, which is YAML) for `identity` at `server` (`None`: the address the
    /// tests dial; a relay's URL for a daemon in a namespace).
    pub fn kubeconfig(&self, identity: Identity, server: Option<&str>) -> io::Result<String> {
        let credential = &self.info["credentials"][identity.key()];
        let cert = self.path(&credential["cert"], "client certificate")?;
        let key = self.path(&credential["key"], "client key")?;
        let ca = self.path(&self.info["ca"], "CA")?;
        Ok(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": server.unwrap_or(&self.server),
                "certificate-authority": ca,
            }}],
            "users": [{"name": identity.key(), "user": {
                "client-certificate": cert,
                "client-key": key,
            }}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": identity.key()}}],
            "current-context": "test",
        })
        .to_string())
    }

    /// Asks the host to do something to the control plane: `stop apiserver`,
    /// `start apiserver` (returns once it listens again) or `compact` (etcd's history up to
    /// now, physically). Returns the answer's detail.
    pub fn control(&self, request: &str) -> io::Result<String> {
        let addr = self.path(&self.info["control"], "control channel")?;
        let mut stream = TcpStream::connect(addr.as_str())?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        writeln!(stream, "{request}")?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer)?;
        match answer.trim().split_once(' ') {
            Some(("ok", detail)) => Ok(detail.to_owned()),
            _ if answer.trim() == "ok" => Ok(String::new()),
            _ => Err(io::Error::other(format!(
                "control channel: {request:?} -> {:?}",
                answer.trim()
            ))),
        }
    }
}
