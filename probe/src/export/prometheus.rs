//! The probe's HTTP endpoint: Prometheus `/metrics` (RED metrics and probe
//! health), `/healthz` (the process runs), `/readyz` (the front-end has
//! loaded and attached its eBPF programs), and the `/debug/*` routes passed
//! in ([`super::debug`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::health::Health;

#[derive(Clone, Debug)]
struct AppState {
    registry: Arc<Registry>,
    health: Health,
}

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr:?} for /metrics; pick a free address with --metrics-addr or pass --metrics-addr off"
)]
pub struct ServeError {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` now (so a bad address fails startup) and serves until
/// `shutdown`, with `extra` (routers with their state applied: the
/// `/debug/processes` and `/debug/tap` endpoints, the profiler's
/// `/debug/profile`) merged in.
pub async fn serve(
    addr: &str,
    registry: Registry,
    health: Health,
    extra: Router,
    shutdown: CancellationToken,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError {
            addr: addr.to_owned(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError {
        addr: addr.to_owned(),
        source,
    })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            registry: Arc::new(registry),
            health,
        })
        .merge(extra);
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "Metrics endpoint failed");
        }
    });
    Ok((local, task))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "encoding failed".into(),
        ),
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "front-end not attached yet",
        )
    }
}
