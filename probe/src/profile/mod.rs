//! CPU profiling of the traced processes (`profiling.enabled`).
//!
//! ```text
//! profile.bpf.c: cpu-clock perf event per CPU, claimed processes only
//!   -> one sample per tick: user stack (frame pointers), kernel stack,
//!      Go goroutine id | Python frame chain (code object + instruction)
//!   -> ring buffer (drops counted) -> the driver -> ProfileSet ([`set`])
//!   -> symbolize (Go: pclntab with inlining; Python: code objects, line
//!      tables; native: ELF symbols; kernel: kallsyms), bounded caches
//!   -> per-process window -> at the next window: samples joined with the
//!      spans that were active ([`link`])
//!   -> [`store`] (served as pprof / folded / SVG on `/debug/profile`,
//!      rendered by `ferrotel-flame`) + the OTLP profiles export queue
//!      (bounded, retried with backoff like spans)
//! ```
//!
//! The profiling set is a [`ProgramSet`](crate::driver::ProgramSet) run by
//! its own [`Driver`] beside the language's: it follows the same targets
//! (the runtime gives it a copy of the target events) and learns spans from
//! the record sink ([`SpanTap`]). It is not part of a language front-end:
//! which frames a process gets depends on what the process runs, found
//! here. See docs/probe-profiling.md.

pub mod cache;
pub mod elf;
pub mod flame;
pub mod gosym;
pub mod link;
pub mod maps;
pub mod model;
pub mod otlp;
pub mod pprof;
pub mod python;
pub mod set;
pub mod store;
pub mod symbolize;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrotel_api::probe_config::ProfilingConfig;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::driver::{Driver, Sink};
use crate::export::client::OtlpClient;
use crate::export::queue::BoundedQueue;
use crate::export::{Backoff, run_batch_exporter};
use crate::health::Health;
use crate::targets::TargetEvents;
use crate::telemetry::RequestRecord;
use crate::telemetry::clock::ClockOffsets;
use crate::telemetry::resource::ResourceRegistry;
use link::SpanInterval;
use model::Profile;
use set::{BpfOptions, ProfileSet};
use store::ProfileStore;

/// Spans buffered between the record sink and the profiler.
const SPAN_CHANNEL: usize = 16_384;
/// How long finished windows stay on `/debug/profile`.
const RETAIN: Duration = Duration::from_secs(600);
const RETAIN_PROFILES: usize = 4096;
/// What the process windows waiting for the collector may weigh
/// ([`Profile::approx_bytes`]). They are the objects the store holds too,
/// so an outage shorter than the store's retention costs nothing beyond
/// it; past this, the newest windows are dropped and counted
/// (`export_dropped_items{signal="profiles",reason="queue_full"}`).
pub const EXPORT_QUEUE_BYTES: usize = 32 << 20;
/// Process windows per export request, and what they may weigh: the
/// collector's gRPC receiver refuses messages over 4 MiB by default.
const EXPORT_BATCH_PROFILES: usize = 64;
const EXPORT_BATCH_BYTES: usize = 2 << 20;
/// The longest a closed window waits for the export loop.
pub const EXPORT_DELAY: Duration = Duration::from_secs(1);

/// The export queue of profile windows, holding at most `capacity_bytes`
/// of them (estimated); drained by [`crate::export::run_batch_exporter`].
pub fn export_queue(capacity_bytes: usize, health: Health) -> BoundedQueue<Arc<Profile>> {
    BoundedQueue::weighed(
        capacity_bytes,
        EXPORT_BATCH_PROFILES,
        EXPORT_BATCH_BYTES,
        "profiles",
        health,
        |profile| profile.approx_bytes(),
    )
}

/// Hands sampled spans from the record sink to the profiler. Never blocks:
/// when the profiler lags, spans are dropped (their samples stay unlinked)
/// and counted.
#[derive(Clone, Debug)]
pub struct SpanTap {
    tx: mpsc::Sender<SpanInterval>,
    dropped: Arc<AtomicU64>,
}

impl SpanTap {
    pub fn observe(&self, record: &RequestRecord) {
        if let Some(span) = SpanInterval::of(record)
            && self.tx.try_send(span).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The profiler's Prometheus metrics.
#[derive(Clone, Debug, Default)]
pub struct ProfilerMetrics {
    samples: Counter,
    dropped: Family<ReasonLabel, Counter>,
    processes: Gauge,
    cache_entries: Family<ReasonLabel, Gauge>,
    linked: Counter,
}

impl ProfilerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("ferrotel_probe_profile");
        r.register(
            "samples",
            "CPU samples received from the kernel",
            self.samples.clone(),
        );
        r.register(
            "samples_dropped",
            "CPU samples lost, by reason (ringbuf_full: kernel side; pending_full, stack_cap: probe side)",
            self.dropped.clone(),
        );
        r.register(
            "processes",
            "Processes being profiled",
            self.processes.clone(),
        );
        r.register(
            "cache_entries",
            "Entries of the bounded symbol caches (files, pcs, code_objects)",
            self.cache_entries.clone(),
        );
        r.register(
            "samples_linked",
            "CPU samples linked to the span active when they were taken",
            self.linked.clone(),
        );
    }

    fn drop_total(&self, reason: &'static str, total: u64) {
        let c = self.dropped.get_or_create(&ReasonLabel { reason });
        let now = c.get();
        if total > now {
            c.inc_by(total - now);
        }
    }
}

/// Everything the runtime keeps of an enabled profiler: the parts other
/// tasks use while it runs.
#[derive(Clone, Debug)]
pub struct ProfilerHandle {
    pub store: ProfileStore,
    pub spans: SpanTap,
    pub metrics: ProfilerMetrics,
}

/// The profiler: its program set, and where finished windows go.
pub struct Profiler {
    set: ProfileSet,
    client: Option<OtlpClient>,
    health: Health,
    store: ProfileStore,
}

impl std::fmt::Debug for Profiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profiler")
            .field("set", &self.set)
            .finish_non_exhaustive()
    }
}

impl Profiler {
    /// A profiler and the handle the runtime wires into the record sink and
    /// the HTTP endpoint. `client` exports OTLP profiles (none: keep them
    /// on the probe only).
    pub fn new(
        config: ProfilingConfig,
        client: Option<OtlpClient>,
        resources: ResourceRegistry,
        clock: ClockOffsets,
        health: Health,
    ) -> (Self, ProfilerHandle) {
        let (tx, span_rx) = mpsc::channel(SPAN_CHANNEL);
        let span_dropped = Arc::new(AtomicU64::new(0));
        let store = ProfileStore::new(RETAIN, RETAIN_PROFILES);
        let metrics = ProfilerMetrics::default();
        let options = BpfOptions {
            frequency_hz: config.frequency_hz.clamp(1, 1000),
            kernel_stacks: config.kernel_stacks,
            ..Default::default()
        };
        let interval = Duration::from_secs(u64::from(config.export_interval_seconds.max(1)));
        let set = ProfileSet::new(
            options,
            interval,
            resources,
            clock,
            span_rx,
            span_dropped.clone(),
            metrics.clone(),
        );
        let handle = ProfilerHandle {
            store: store.clone(),
            spans: SpanTap {
                tx,
                dropped: span_dropped,
            },
            metrics,
        };
        (
            Self {
                set,
                client,
                health,
                store,
            },
            handle,
        )
    }

    /// Overrides the kernel-side options (the measurement of user-space
    /// Python frame walking, tests).
    pub fn with_bpf_options(mut self, options: BpfOptions) -> Self {
        self.set.set_options(options);
        self
    }

    /// The program set, to run under a [`Driver`] by hand (measurements).
    pub fn into_set(self) -> ProfileSet {
        self.set
    }

    /// Samples the processes announced on `targets` until `shutdown`, then
    /// hands over the last windows and flushes the export queue (retrying
    /// for up to the exporter's timeout). Setup failures (no perf events,
    /// no BTF) are returned; the runtime logs them and keeps tracing.
    pub async fn run(
        self,
        targets: TargetEvents,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let driver = Driver::load(self.set)?;
        let queue = self.client.map(|client| {
            let queue = Arc::new(export_queue(EXPORT_QUEUE_BYTES, self.health.clone()));
            let grace = client.settings().timeout;
            let task = tokio::spawn(run_batch_exporter(
                queue.clone(),
                client,
                EXPORT_DELAY,
                Backoff::default(),
                grace,
                self.health.clone(),
            ));
            (queue, task)
        });
        let sink = ProfileSink {
            store: self.store,
            queue: queue.as_ref().map(|(queue, _)| queue.clone()),
        };
        // The profile set's health is its own metrics (`ProfilerMetrics`):
        // the language health and readiness belong to the tracing set.
        let result = driver.run(targets, sink, None, shutdown).await;
        if let Some((queue, task)) = queue {
            queue.close();
            let _ = task.await;
        }
        result
    }
}

/// Where a finished window goes: the `/debug/profile` store, and the
/// export queue when profiles are exported.
struct ProfileSink {
    store: ProfileStore,
    queue: Option<Arc<BoundedQueue<Arc<Profile>>>>,
}

impl Sink<Arc<Profile>> for ProfileSink {
    fn deliver(&mut self, profile: Arc<Profile>) {
        if let Some(queue) = &self.queue {
            // A full queue counts the drop itself; the store keeps it.
            queue.push(profile.clone());
        }
        self.store.push(profile);
    }
}
