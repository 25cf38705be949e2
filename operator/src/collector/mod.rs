//! The `TelemetryCollector` controller.

use std::sync::Arc;

use crate::runtime::Context;

/// Runs the TelemetryCollector controller until shutdown.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    ctx.readiness.mark_synced("collector");
    ctx.shutdown.cancelled().await;
    Ok(())
}
