//! The Python front-end (`--language python`): socket-level HTTP/1.x
//! tracing with syscall tracepoints. Nothing here depends on the
//! interpreter: any process whose requests travel as plain HTTP/1.x over
//! stream sockets is traced the same way.
//!
//! ```text
//! python.bpf.c (claimed TGID? known socket? -> one event per read/write, first bytes)
//!   -> ring buffer (batched wake-ups + 10 ms poll; drops counted)
//!   -> events::decode -> tracker::Tracker (HTTP/1 framing, pairing, parents)
//!   -> RequestRecord -> RecordSink (the pipeline)
//! ```

pub mod events;
pub mod tracker;

use std::time::Duration;

use anyhow::Context as _;
use tracing::{debug, info, warn};

use crate::ebpf::{self, Claims, DropCounters, EventReader, LoadOptions};
use crate::frontend::{Frontend, FrontendContext};
use crate::targets::TargetEvent;
use crate::telemetry::RequestRecord;

pub use tracker::{Tracker, TrackerStats};

/// Program set name in errors, logs and metrics.
const SET: &str = "python";

/// Read-family syscalls: one enter program each (their arguments differ).
const ENTER_PROGRAMS: &[(&str, &str)] = &[
    ("py_enter_read", "sys_enter_read"),
    ("py_enter_recvfrom", "sys_enter_recvfrom"),
    ("py_enter_readv", "sys_enter_readv"),
    ("py_enter_recvmsg", "sys_enter_recvmsg"),
    ("py_enter_write", "sys_enter_write"),
    ("py_enter_sendto", "sys_enter_sendto"),
    ("py_enter_writev", "sys_enter_writev"),
    ("py_enter_sendmsg", "sys_enter_sendmsg"),
    ("py_enter_connect", "sys_enter_connect"),
    ("py_enter_close", "sys_enter_close"),
];

/// Exits of every data syscall share one program.
const EXIT_IO: &[&str] = &[
    "sys_exit_read",
    "sys_exit_recvfrom",
    "sys_exit_readv",
    "sys_exit_recvmsg",
    "sys_exit_write",
    "sys_exit_sendto",
    "sys_exit_writev",
    "sys_exit_sendmsg",
];

/// Pending ring-buffer bytes that wake the reader early (below this, the
/// poll timer picks events up).
const WAKEUP_BYTES: u64 = 64 * 1024;
const POLL: Duration = ebpf::DEFAULT_POLL;

/// The socket-level front-end.
#[derive(Debug, Default)]
pub struct PythonFrontend;

/// A loaded and attached program set, with the maps user space drives.
#[derive(Debug)]
pub struct Loaded {
    /// Keeps programs and links alive.
    pub ebpf: aya::Ebpf,
    pub claims: Claims,
    pub drops: DropCounters,
    pub events: EventReader,
}

/// Loads the socket-level program set and attaches every program. Needs a
/// tokio runtime (the ring buffer is registered with it).
#[allow(clippy::result_large_err)] // startup-only error path, see crate::ebpf
pub fn load(ring_buffer_bytes: u32, max_payload_bytes: u32) -> Result<Loaded, ebpf::EbpfError> {
    let max_payload = max_payload_bytes.clamp(64, ferrotel_probe_ebpf::python::PAYLOAD_CAP as u32);
    let options = LoadOptions {
        set: SET,
        ring_buffer_bytes,
        wakeup_bytes: WAKEUP_BYTES,
        // Standalone and Kubernetes discovery find processes themselves; the
        // kernel reports execs of claimed processes only.
        u32_globals: vec![("max_payload_bytes", max_payload), ("report_execs", 0)],
    };
    let mut ebpf = ebpf::load(ferrotel_probe_ebpf::PYTHON, &options)?;
    for (program, tracepoint) in ENTER_PROGRAMS {
        ebpf::attach_tracepoints(&mut ebpf, SET, program, &[("syscalls", tracepoint)])?;
    }
    let exits: Vec<(&str, &str)> = EXIT_IO.iter().map(|t| ("syscalls", *t)).collect();
    ebpf::attach_tracepoints(&mut ebpf, SET, "py_exit_io", &exits)?;
    ebpf::attach_tracepoints(
        &mut ebpf,
        SET,
        "py_exit_accept",
        &[
            ("syscalls", "sys_exit_accept4"),
            ("syscalls", "sys_exit_accept"),
        ],
    )?;
    ebpf::attach_tracepoints(
        &mut ebpf,
        SET,
        "py_exit_connect",
        &[("syscalls", "sys_exit_connect")],
    )?;
    let btf = ebpf::kernel_btf()?;
    ebpf::attach_process_tracking(&mut ebpf, SET, &btf)?;
    let claims = Claims::take(&mut ebpf, SET)?;
    let drops = DropCounters::take(&mut ebpf, SET)?;
    let events = EventReader::take(&mut ebpf, SET, POLL)?;
    Ok(Loaded {
        ebpf,
        claims,
        drops,
        events,
    })
}

/// Counts `n` ring-buffer events read and hands the requests they completed
/// to the span pipeline.
fn submit_drained(ctx: &FrontendContext, n: usize, records: &mut Vec<RequestRecord>) {
    ctx.health.events_received(n as u64);
    for record in records.drain(..) {
        ctx.sink.submit(record);
    }
}

enum Step {
    Shutdown,
    Target(Option<TargetEvent>),
    Drained(std::io::Result<usize>),
    Housekeeping,
}

impl Frontend for PythonFrontend {
    async fn run(self, mut ctx: FrontendContext) -> anyhow::Result<()> {
        let tuning = ctx.tuning().clone();
        let mut loaded = load(tuning.ring_buffer_bytes, tuning.max_payload_bytes)
            .context("starting the python front-end")?;
        info!(
            ring_buffer_bytes = tuning.ring_buffer_bytes,
            max_payload_bytes = tuning.max_payload_bytes,
            "Attached socket-level probes"
        );
        ctx.health.mark_ready();

        let mut tracker = Tracker::new(ctx.spans.clone());
        let mut records: Vec<RequestRecord> = Vec::new();
        let mut decode_errors = 0u64;
        let mut targets_open = true;
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        let mut reported = TrackerStats::default();
        loop {
            let step = tokio::select! {
                _ = ctx.shutdown.cancelled() => Step::Shutdown,
                event = ctx.targets.next(), if targets_open => Step::Target(event),
                drained = loaded.events.drain(|record| on_record(&mut tracker, record, &mut records, &mut decode_errors)) => Step::Drained(drained),
                _ = housekeeping.tick() => Step::Housekeeping,
            };
            match step {
                Step::Shutdown => break,
                Step::Target(None) => targets_open = false,
                Step::Target(Some(TargetEvent::Added(target))) => {
                    match loaded.claims.claim(target.pid, true) {
                        Ok(()) => {
                            info!(pid = target.pid, exe = %target.exe.display(), reason = target.reason, "Tracing process sockets")
                        }
                        Err(error) => {
                            warn!(pid = target.pid, %error, "Could not claim process");
                            ctx.health.attach_refused("claim_failed");
                        }
                    }
                }
                Step::Target(Some(TargetEvent::Removed(pid))) => {
                    // The resolver saw the process gone, but its last
                    // responses may still sit in the ring buffer (the reader
                    // is woken in batches, and select! picks ready branches
                    // at random): finish them before forgetting its
                    // connections, or the last request of a process that
                    // exits right after answering loses its span.
                    let n = loaded.events.drain_now(|record| {
                        on_record(&mut tracker, record, &mut records, &mut decode_errors)
                    });
                    submit_drained(&ctx, n, &mut records);
                    loaded.claims.release(pid);
                    tracker.forget_process(pid);
                    debug!(pid, "Released process");
                }
                Step::Drained(Ok(n)) => submit_drained(&ctx, n, &mut records),
                Step::Drained(Err(error)) => {
                    return Err(error).context("reading the python ring buffer");
                }
                Step::Housekeeping => {
                    report_health(&ctx, &loaded, &tracker, &mut reported, decode_errors);
                }
            }
        }
        // Deliver what the kernel already produced.
        loaded
            .events
            .drain_now(|record| on_record(&mut tracker, record, &mut records, &mut decode_errors));
        for record in records.drain(..) {
            ctx.sink.submit(record);
        }
        report_health(&ctx, &loaded, &tracker, &mut reported, decode_errors);
        info!("Detached socket-level probes");
        Ok(())
    }
}

fn on_record(
    tracker: &mut Tracker,
    record: &[u8],
    out: &mut Vec<RequestRecord>,
    decode_errors: &mut u64,
) {
    match events::decode(record) {
        Ok(event) => tracker.on_event(&event, out),
        Err(error) => {
            *decode_errors += 1;
            if *decode_errors == 1 {
                warn!(%error, "Undecodable ring buffer record (probe and eBPF object out of sync?)");
            }
        }
    }
}

fn report_health(
    ctx: &FrontendContext,
    loaded: &Loaded,
    tracker: &Tracker,
    reported: &mut TrackerStats,
    decode_errors: u64,
) {
    match loaded.drops.totals() {
        Ok(totals) => {
            for (reason, total) in totals {
                ctx.health.kernel_dropped_total(reason, total);
            }
        }
        Err(error) => debug!(%error, "Could not read drop counters"),
    }
    ctx.health
        .kernel_dropped_total("undecodable", decode_errors);
    let stats = tracker.stats();
    for _ in reported.not_http..stats.not_http {
        ctx.health.parse_error("http1");
    }
    *reported = stats;
    ctx.health
        .set_attached_processes(loaded.claims.pids().len());
}
