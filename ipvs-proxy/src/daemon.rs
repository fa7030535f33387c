//! Start-up, shutdown and cleanup: what `main` runs.
//!
//! Start-up order: settings and logs; the kernel dataplane (refusing to start, with the reason,
//! when IPVS is unavailable); in cleanup mode, the cleanup and exit; otherwise the node
//! settings, the HTTP endpoints, the source, the signal handler, and the engine on its own
//! thread. SIGTERM and SIGINT stop the engine and leave the IPVS table in place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use svc_controller::dataplane::KernelDataplane;
use svc_controller::reconcile::{Reconciler, ReconcilerConfig};
use svc_controller::runtime::{Engine, EngineConfig, Message};
use tracing::{error, info, warn};

use crate::health::{self, Health};
use crate::node_setup;
use crate::settings::{Settings, SourceSettings, SysctlMode};
use crate::source;
use crate::telemetry::{self, Metrics, Telemetry};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// IPVS (or rtnetlink) cannot be opened on this node.
    #[error(
        "IPVS is not available on this node: {0} (load the ip_vs kernel module and run with CAP_NET_ADMIN)"
    )]
    Unavailable(#[source] svc_controller::dataplane::DataplaneError),
    /// A node setting could not be applied.
    #[error(transparent)]
    Sysctl(#[from] node_setup::SysctlError),
    /// The IPVS timeouts could not be set.
    #[error("cannot set the IPVS timeouts: {0}")]
    Timeouts(#[source] ipvs::Error),
    /// An HTTP endpoint could not be bound.
    #[error("cannot serve {what} on {address}: {source}")]
    Bind {
        /// `/metrics` or `/healthz`.
        what: &'static str,
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Kubernetes client could not be configured.
    #[error("cannot configure the Kubernetes client: {0}")]
    Kubernetes(String),
    /// The manifests path does not exist.
    #[error("the manifests path {0} does not exist")]
    NoManifests(std::path::PathBuf),
    /// Cleanup failed.
    #[error("cleanup failed: {0}")]
    Cleanup(#[source] svc_controller::dataplane::DataplaneError),
    /// A thread or the runtime could not be started.
    #[error("cannot start: {0}")]
    Start(#[source] std::io::Error),
    /// The engine thread panicked (a bug).
    #[error("the engine stopped unexpectedly")]
    EngineCrashed,
}

/// Runs the daemon with `settings` until SIGTERM (or, in cleanup mode, until done).
pub fn run(settings: Settings) -> Result<(), DaemonError> {
    for field in &settings.ignored_fields {
        warn!(field = %field, "config file setting ignored (not used by an IPVS proxy)");
    }
    for note in &settings.flag_notes {
        info!(
            flag = note.flag,
            reason = note.reason,
            "kube-proxy flag accepted, not needed"
        );
    }
    let mut dataplane = KernelDataplane::open(settings.dummy_interface.clone())
        .map_err(DaemonError::Unavailable)?;
    dataplane.set_watch_writes(settings.watch_writes);
    // Opening succeeds without the module on some kernels; reading tells.
    dataplane.ipvs().info().map_err(|e| {
        DaemonError::Unavailable(svc_controller::dataplane::DataplaneError::ipvs(
            "read IPVS info",
            e,
        ))
    })?;

    let release = node_setup::kernel_release();
    let reconciler_config = ReconcilerConfig {
        drain_timeout: settings.drain_timeout,
        node_port_range: settings.node_port_range.clone(),
        exclude_cidrs: settings.exclude_cidrs.clone(),
        netfilter_rules: settings.masquerade.clone(),
        sysctls: node_setup::sysctls(
            release.as_deref(),
            settings.strict_arp,
            settings.rate_estimation,
        ),
        ..ReconcilerConfig::default()
    };

    if settings.cleanup {
        let mut reconciler = Reconciler::new(dataplane, reconciler_config);
        let report = reconciler
            .cleanup(Instant::now())
            .map_err(DaemonError::Cleanup)?;
        info!(
            operations = report.operations,
            addresses = report.address_changes,
            interface_deleted = report.interface_deleted,
            "cleanup done: removed what this daemon owns"
        );
        return Ok(());
    }

    let mut reconciler_config = reconciler_config;
    match (settings.sysctls, settings.init_node) {
        (SysctlMode::Hold, _) | (SysctlMode::Check, true) => {
            let written = node_setup::apply_sysctls(&mut dataplane, &reconciler_config.sysctls)?;
            if !written.is_empty() {
                info!(sysctls = ?written, "node settings applied");
            }
        }
        (SysctlMode::Check, false) => {
            node_setup::check_sysctls(&mut dataplane, &reconciler_config.sysctls)?;
            // Checked once; the reconciler must not try to write them.
            reconciler_config.sysctls.clear();
        }
    }
    if let Some(timeouts) = node_setup::timeouts(
        settings.tcp_timeout,
        settings.tcpfin_timeout,
        settings.udp_timeout,
    ) {
        dataplane
            .ipvs()
            .set_timeouts(&timeouts)
            .map_err(DaemonError::Timeouts)?;
        info!(?timeouts, "IPVS timeouts set");
    }
    if settings.init_node {
        info!("node settings applied; exiting (--init-node)");
        return Ok(());
    }

    let metrics = Arc::new(Metrics::new(settings.metrics_per_virtual_server));
    let health = Arc::new(Health::new(settings.sync_period * 2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ipvs-proxy-io")
        .build()
        .map_err(DaemonError::Start)?;

    let (tx, rx) = std::sync::mpsc::channel::<Message>();
    runtime.block_on(async {
        if let Some(address) = settings.metrics_bind_address {
            telemetry::http::serve(address, telemetry::http::metrics_router(metrics.clone()))
                .await
                .map_err(|source| DaemonError::Bind {
                    what: "/metrics",
                    address,
                    source,
                })?;
            info!(%address, "serving /metrics");
        }
        if let Some(address) = settings.healthz_bind_address {
            telemetry::http::serve(
                address,
                telemetry::http::health_router(health.clone(), metrics.clone()),
            )
            .await
            .map_err(|source| DaemonError::Bind {
                what: "/healthz",
                address,
                source,
            })?;
            info!(%address, "serving /healthz and /livez");
        }
        Ok::<(), DaemonError>(())
    })?;

    let wait_for_node = match &settings.source {
        SourceSettings::Manifests(path) => {
            if !path.exists() {
                return Err(DaemonError::NoManifests(path.clone()));
            }
            let folder = source::manifests::ManifestFolder::new(path.clone())
                .with_limits(settings.manifest_limits);
            let (tx, metrics) = (tx.clone(), metrics.clone());
            std::thread::Builder::new()
                .name("manifests".into())
                .spawn(move || source::manifests::watch(folder, tx, metrics))
                .map_err(DaemonError::Start)?;
            info!(path = %path.display(), "reading Services from manifests");
            false
        }
        SourceSettings::Kubernetes { kubeconfig } => {
            let client = runtime.block_on(kube_client(kubeconfig.as_deref()))?;
            let (tx, metrics) = (tx.clone(), metrics.clone());
            let node = settings.node_name.clone();
            let proxy_name = settings.service_proxy_name.clone();
            runtime.spawn(source::kubernetes::run(
                client, node, proxy_name, tx, metrics,
            ));
            info!(node = %settings.node_name, "watching the Kubernetes API");
            true
        }
    };

    {
        let tx = tx.clone();
        runtime.spawn(async move {
            let signal = wait_for_signal().await;
            info!(%signal, "signal received");
            let _ = tx.send(Message::Shutdown);
        });
    }
    drop(tx);

    let engine_config = EngineConfig {
        node_name: settings.node_name.clone(),
        proxy: settings.proxy_config(),
        reconciler: reconciler_config,
        sync_period: settings.sync_period,
        min_sync_period: settings.min_sync_period,
        wait_for_node,
    };
    info!(
        node = %settings.node_name,
        scheduler = %settings.scheduler,
        sync_period = ?settings.sync_period,
        min_sync_period = ?settings.min_sync_period,
        kernel = release.as_deref().unwrap_or("unknown"),
        "started"
    );
    let telemetry = Telemetry::new(metrics, health.clone());
    runtime.spawn(health::services::serve(telemetry.checks.clone(), health));
    let engine = Engine::new(dataplane, engine_config, Arc::new(telemetry));
    let handle = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            engine.run(rx);
        })
        .map_err(DaemonError::Start)?;
    let result = handle.join().map_err(|_| DaemonError::EngineCrashed);
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, DaemonError> {
    let config = match kubeconfig {
        None => kube::Config::infer()
            .await
            .map_err(|e| DaemonError::Kubernetes(e.to_string()))?,
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| DaemonError::Kubernetes(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| DaemonError::Kubernetes(format!("{}: {e}", path.display())))?
        }
    };
    source::kubernetes::client(config).map_err(|e| DaemonError::Kubernetes(e.to_string()))
}

/// The host name, for the node name when none is configured.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}
