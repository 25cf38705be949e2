//! `ferrotel-operator`: reconciles `TelemetryCollector` and `Instrumentation`.
//!
//! `main` only parses arguments and hands over to [`runtime::run`], which owns
//! logging, leader election, the health/metrics server and graceful shutdown,
//! and runs every controller concurrently.
#![forbid(unsafe_code)]

mod collector;
mod instrumentation;
mod runtime;

use anyhow::Context as _;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    // Before the runtime starts its worker threads: they would each get a
    // malloc arena of their own, keeping its own free space.
    ferrotel_memory::use_one_arena();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime (threads, epoll); check the process limits")?
        .block_on(operator())
}

async fn operator() -> anyhow::Result<()> {
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
