//! The contract between the probe runtime and a language front-end.
//!
//! A front-end (`python`, `golang`) loads its eBPF program set, attaches to
//! the processes announced on [`FrontendContext::targets`], turns kernel
//! events into [`RequestRecord`](crate::telemetry::RequestRecord)s and
//! submits them to [`FrontendContext::sink`], until
//! [`FrontendContext::shutdown`] is cancelled. Everything after the record
//! (sampling decisions excepted, see [`SpanStarter`]) is the pipeline's.

use std::future::Future;
use std::sync::Arc;

use ferrotel_api::probe_config::{Language, LanguageTuning, ProbeConfig};
use tokio_util::sync::CancellationToken;

use crate::health::FrontendHealth;
use crate::targets::TargetEvents;
use crate::telemetry::RecordSink;
use crate::telemetry::record::{ClockOffsets, SpanStarter};
use crate::telemetry::resource::ResourceRegistry;

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

/// A language front-end.
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

/// Stands in for a front-end that is not compiled into this binary: fails
/// with a message that says so.
#[derive(Clone, Copy, Debug)]
pub struct Unavailable(pub Language);

impl Frontend for Unavailable {
    async fn run(self, _ctx: FrontendContext) -> anyhow::Result<()> {
        anyhow::bail!(
            "the {} front-end is not built into this ferrotel-probe yet; rebuild from a revision that has probe/src/{}",
            self.0,
            if self.0 == Language::Go {
                "golang"
            } else {
                "python"
            }
        )
    }
}
