//! `/livez`, `/readyz` and `/metrics` over plain HTTP.

use std::sync::Arc;

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Args, Context};

/// The running HTTP servers; [`Servers::stop`] shuts them down gracefully.
#[derive(Debug)]
pub struct Servers {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Servers {
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(ctx): State<Arc<Context>>) -> (StatusCode, String) {
    if ctx.readiness.is_ready() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "waiting for watches to sync: {}\n",
                ctx.readiness.pending().join(", ")
            ),
        )
    }
}

async fn metrics(
    State(ctx): State<Arc<Context>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.encode(),
    )
}

/// Binds both listeners (one if the addresses are equal) before returning,
/// so a port clash fails the start instead of a background task.
pub async fn spawn(args: &Args, ctx: Arc<Context>) -> anyhow::Result<Servers> {
    let health = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz));
    let metrics_router = Router::new().route("/metrics", get(metrics));
    let mut routers = Vec::new();
    if args.health_addr == args.metrics_addr {
        routers.push((args.health_addr, health.merge(metrics_router)));
    } else {
        routers.push((args.health_addr, health));
        routers.push((args.metrics_addr, metrics_router));
    }
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for (addr, router) in routers {
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr}; pick a free port with --health-addr/--metrics-addr")
        })?;
        let local = listener.local_addr()?;
        info!(addr = %local, "Serving health and metrics endpoints");
        let app = router.with_state(ctx.clone());
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
            {
                warn!(error = %err, addr = %local, "HTTP server failed");
            }
        }));
    }
    Ok(Servers { stop, tasks })
}
