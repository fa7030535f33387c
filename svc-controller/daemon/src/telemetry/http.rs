//! The HTTP endpoints: `/metrics` on the metrics address, `/healthz` and `/livez` on the
//! health address (kube-proxy's ports: 10249 and 10256).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{Health, Metrics};

/// The `/metrics` router.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

/// The `/healthz` and `/livez` router.
pub fn health_router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(serve_healthz))
        .route("/livez", get(serve_livez))
        .with_state(health)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    // Encoding may read IPVS statistics (a blocking netlink dump): keep it off the reactor.
    let encoded = tokio::task::spawn_blocking(move || metrics.encode()).await;
    match encoded {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

fn verdict_response(verdict: super::health::Verdict) -> Response {
    let status = if verdict.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        verdict.body,
    )
        .into_response()
}

async fn serve_healthz(State(health): State<Arc<Health>>) -> Response {
    verdict_response(health.healthz(SystemTime::now()))
}

async fn serve_livez(State(health): State<Arc<Health>>) -> Response {
    verdict_response(health.livez(SystemTime::now()))
}

/// Binds `addr` and serves `router` until the process ends. Binding errors are returned
/// (a port in use must stop the start-up with a clear message).
pub async fn serve(
    addr: SocketAddr,
    router: Router,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(%addr, error = %e, "HTTP server stopped");
        }
    }))
}
