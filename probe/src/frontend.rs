//! The contract between the probe runtime and a front-end: what produces
//! [`RequestRecord`](crate::telemetry::RequestRecord)s.
//!
//! A front-end attaches to the processes announced on
//! [`FrontendContext::targets`], turns what it observes into records and
//! submits them to [`FrontendContext::sink`], until
//! [`FrontendContext::shutdown`] is cancelled. Everything after the record
//! (sampling decisions excepted, see [`SpanStarter`]) is the pipeline's.
//!
//! The probe's front-end is [`LanguageFrontend`](crate::languages::LanguageFrontend):
//! the language's eBPF program set under the [driver](crate::driver). This
//! seam stays narrow so the runtime can be tested with a synthetic one.

use std::future::Future;
use std::sync::Arc;

use ferrotel_api::probe_config::{Language, LanguageTuning, ProbeConfig};
use tokio_util::sync::CancellationToken;

use crate::health::FrontendHealth;
use crate::targets::TargetEvents;
use crate::telemetry::RecordSink;
use crate::telemetry::clock::ClockOffsets;
use crate::telemetry::resource::ResourceRegistry;
use crate::telemetry::sampling::SpanStarter;

/// Everything a front-end gets from the runtime.
#[derive(Debug)]
pub struct FrontendContext {
    /// The language this probe instruments (`--language`).
    pub language: Language,
    /// The whole resolved config (flags and environment applied).
    pub config: Arc<ProbeConfig>,
    /// Processes to attach to / detach from.
    pub targets: TargetEvents,
    /// Where completed requests go. Never blocks; drops are counted.
    pub sink: RecordSink,
    /// Span ids and sampling decisions, taken when a request starts.
    pub spans: SpanStarter,
    /// Counters the front-end reports (events, kernel drops, parse errors,
    /// attached processes) and its readiness.
    pub health: FrontendHealth,
    /// PID → resource; front-ends may read it (e.g. for logs).
    pub resources: ResourceRegistry,
    /// Kernel-clock → Unix-time offsets, if a front-end needs them.
    pub clock: ClockOffsets,
    /// Cancelled on SIGTERM/SIGINT: stop, detach, return `Ok(())`.
    pub shutdown: CancellationToken,
}

impl FrontendContext {
    /// This language's tuning section of the config.
    pub fn tuning(&self) -> &LanguageTuning {
        match self.language {
            Language::Go => &self.config.go,
            Language::Python => &self.config.python,
        }
    }
}

/// A front-end.
///
/// Implementors may write `async fn run(self, ctx: FrontendContext) -> anyhow::Result<()>`;
/// the future must be `Send` because the runtime spawns it on tokio.
/// Returning an error stops the probe with a non-zero exit code, so return
/// errors only for conditions the user must fix (e.g. "BTF not found at
/// /sys/kernel/btf/vmlinux; mount it into the probe"), and log and continue
/// for per-process failures.
pub trait Frontend: Send + 'static {
    fn run(self, ctx: FrontendContext) -> impl Future<Output = anyhow::Result<()>> + Send;
}
