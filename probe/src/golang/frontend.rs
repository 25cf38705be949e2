//! The Go front-end's event loop: targets in, records out.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tracing::{debug, warn};

use super::attach::GoProbes;
use super::binary::AnalysisCache;
use super::events;
use crate::ebpf::{self, DropCounters, EventReader, LoadOptions};
use crate::frontend::{Frontend, FrontendContext};
use crate::targets::TargetEvent;

/// `--language go`: loads only the Go program set.
#[derive(Debug, Default)]
pub struct GoFrontend {
    cache: Arc<AnalysisCache>,
}

impl GoFrontend {
    pub fn new() -> Self {
        Self::default()
    }
}

/// How often the kernel drop counters are read into the metrics.
const DROP_POLL: Duration = Duration::from_secs(2);

impl Frontend for GoFrontend {
    async fn run(self, mut ctx: FrontendContext) -> anyhow::Result<()> {
        let mut ebpf = ebpf::load(ferrotel_probe_ebpf::GO, &LoadOptions::new("go"))
            .context("loading the Go eBPF program set")?;
        let mut reader = EventReader::take(&mut ebpf, "go", Duration::from_millis(10))?;
        let drops = DropCounters::take(&mut ebpf, "go")?;
        let mut probes =
            GoProbes::new(ebpf, self.cache.clone()).context("verifying the Go eBPF programs")?;
        ctx.health.mark_ready();

        let sampler = ctx.spans.sampler().clone();
        let sink = ctx.sink.clone();
        let health = ctx.health.clone();
        let on_record = |bytes: &[u8]| match events::decode(bytes, &sampler) {
            Ok(record) => {
                sink.submit(record);
            }
            Err(error) => {
                debug!(%error, "Undecodable Go event");
                health.parse_error("go_event");
            }
        };
        let mut drop_tick = tokio::time::interval(DROP_POLL);
        let mut targets_open = true;
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                event = ctx.targets.next(), if targets_open => match event {
                    Some(TargetEvent::Added(target)) => {
                        let pid = target.pid;
                        let cache = self.cache.clone();
                        let exe = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
                        let analysed = tokio::task::spawn_blocking(move || cache.get(&exe)).await?;
                        let outcome = analysed.map_err(Into::into).and_then(|binary| probes.attach(pid, binary).map(|_| ()));
                        if let Err(error) = outcome {
                            warn!(pid, reason = error.category(), error = %error, "Refusing to attach Go probes");
                            ctx.health.attach_refused(error.category());
                        }
                        ctx.health.set_attached_processes(probes.attached_count());
                    }
                    Some(TargetEvent::Removed(pid)) => {
                        probes.detach(pid);
                        ctx.health.set_attached_processes(probes.attached_count());
                    }
                    None => targets_open = false,
                },
                drained = reader.drain(|bytes| on_record(bytes)) => {
                    let n = drained.context("reading the Go ring buffer")?;
                    ctx.health.events_received(n as u64);
                }
                _ = drop_tick.tick() => {
                    if let Ok(totals) = drops.totals() {
                        for (reason, total) in totals {
                            ctx.health.kernel_dropped_total(reason, total);
                        }
                    }
                }
            }
        }
        let n = reader.drain_now(|bytes| on_record(bytes));
        ctx.health.events_received(n as u64);
        for pid in probes.pids() {
            probes.detach(pid);
        }
        Ok(())
    }
}
