//! `ferrotel-operator`: reconciles `TelemetryCollector` and `Instrumentation`.
//!
//! `main` only parses arguments and hands over to [`runtime::run`], which owns
//! logging, leader election, the health/metrics server and graceful shutdown,
//! and runs every controller concurrently.
#![forbid(unsafe_code)]

mod collector;
mod instrumentation;
mod runtime;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = runtime::Args::parse();
    // A workspace build enables both of rustls' providers (kube: ring; the
    // probe's exporter: aws-lc-rs) and rustls then refuses to pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime::init_logging(&args)?;
    runtime::run(
        args,
        &[
            ("collector", |ctx| Box::pin(collector::run(ctx))),
            ("instrumentation", |ctx| Box::pin(instrumentation::run(ctx))),
        ],
    )
    .await
}
