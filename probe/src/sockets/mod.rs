//! Socket-level HTTP/1.x tracing with syscall tracepoints (`--language
//! python`). Nothing here depends on the interpreter: any process whose
//! requests travel as plain HTTP/1.x over stream sockets is traced the same
//! way.
//!
//! ```text
//! sockets.bpf.c (claimed TGID? known socket? -> one event per read/write, first bytes)
//!   -> ring buffer (batched wake-ups + 10 ms poll; drops counted)   } the driver
//!   -> events::decode -> tracker::Tracker (HTTP/1 framing, pairing, parents)
//!   -> RequestRecord -> RecordSink (the pipeline)
//! ```
//!
//! TLS: the plaintext of OpenSSL connections comes from uprobes on the
//! libssl each process maps and joins the same path ([`tls`]).

// Record decoding and the HTTP/1 tracker read the workload's bytes: they
// live in `ferrotel-parse`, where they are fuzzed.
pub use ferrotel_parse::sockets::{events, tracker};

pub mod tls;

use std::sync::Arc;

use ferrotel_api::probe_config::LanguageTuning;
use ferrotel_probe_ebpf::contract::{defaults, globals, sockets};

use crate::driver::{self, Adding, DecodeError, Housekeeping, ProgramSet, Refusal};
use crate::ebpf::{EbpfError, Global, Kernel, Tuning};
use crate::propagation::events::PropagationEvent;
use crate::propagation::{self, Propagation, Served};
use crate::targets::ProcessTarget;
use crate::telemetry::RequestRecord;
use crate::telemetry::sampling::SpanStarter;
use tokio::sync::Notify;

pub use tracker::{Tracker, TrackerStats};

/// The socket-level program set.
#[derive(Debug)]
pub struct SocketSet {
    tuning: Tuning,
    tracker: Tracker,
    /// Tracker statistics already reported.
    reported: TrackerStats,
    propagation: Propagation,
    /// Set by `attach`.
    tls: Option<tls::TlsProbes>,
}

impl SocketSet {
    /// The set as `tuning` (the config's `python` section) asks for it;
    /// span ids and sampling decisions come from `spans`; no propagation.
    pub fn new(tuning: &LanguageTuning, spans: SpanStarter) -> Self {
        let off = propagation::Settings::off(spans.sampler());
        Self::with_propagation(tuning, spans, off)
    }

    /// The set with trace-context propagation as `propagation` says.
    pub fn with_propagation(
        tuning: &LanguageTuning,
        spans: SpanStarter,
        propagation: propagation::Settings,
    ) -> Self {
        // Every knob, named: a new one does not compile until it is used.
        // `http` and `grpc` select nothing here: HTTP/1.x is all this set
        // reads, so the schema refuses `python.http: false` and
        // `python.grpc: true`, and the probe config check does too.
        let LanguageTuning {
            http: _,
            grpc: _,
            ring_buffer_bytes,
            max_payload_bytes,
        } = *tuning;
        // The schema and the config check refuse values out of range; the
        // kernel side could not copy more than an event holds anyway.
        let max_payload_bytes = max_payload_bytes.clamp(
            defaults::MAX_PAYLOAD_BYTES_MIN,
            defaults::MAX_PAYLOAD_BYTES_MAX,
        );
        Self {
            tuning: Tuning::from_language(ring_buffer_bytes, max_payload_bytes)
                // Discovery finds processes; the kernel reports only the
                // execs of claimed ones (the tracker forgets them).
                .with_global(globals::REPORT_EXECS, Global::U32(0)),
            tracker: Tracker::new(spans),
            reported: TrackerStats::default(),
            propagation: Propagation::new(propagation, Served::Sockets),
            tls: None,
        }
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// TLS library files probed now.
    pub fn tls_library_count(&self) -> usize {
        self.tls.as_ref().map_or(0, tls::TlsProbes::library_count)
    }
}

impl ProgramSet for SocketSet {
    type Output = RequestRecord;

    fn name(&self) -> &'static str {
        "sockets"
    }

    fn object(&self) -> &'static [u8] {
        ferrotel_probe_ebpf::SOCKETS
    }

    fn tuning(&self) -> Tuning {
        self.propagation.tuning(self.tuning.clone())
    }

    fn attach(&mut self, kernel: &mut Kernel) -> Result<(), EbpfError> {
        kernel.attach_syscall_tracepoints(&sockets::TRACEPOINTS)?;
        kernel.attach_process_tracking()?;
        // Created now, so that a claim cannot fail for want of the map.
        kernel.claims()?;
        self.tls = Some(tls::TlsProbes::load(kernel)?);
        self.propagation.start(self.tuning.wakeup_bytes);
        Ok(())
    }

    async fn add_target(
        &mut self,
        kernel: &mut Kernel,
        target: &ProcessTarget,
    ) -> Result<Adding, Refusal> {
        driver::claim(kernel, target.pid, true)?;
        self.propagation.add(target.pid);
        // The libssl it maps now; one it loads later is found when it maps
        // it (FT_EV_EXEC_MAP) or opens a TLS connection; its children at
        // their fork.
        if let Some(tls) = self.tls.as_mut() {
            tls.scan(kernel, target.pid);
        }
        Ok(Adding::Traced)
    }

    fn remove_target(&mut self, kernel: &mut Kernel, pid: u32) {
        if let Ok(claims) = kernel.claims() {
            claims.release(pid);
        }
        self.propagation.remove(pid);
        self.tracker.forget_process(pid);
        if let Some(tls) = self.tls.as_mut() {
            tls.release(kernel, pid);
        }
    }

    fn decode(&mut self, record: &[u8], out: &mut Vec<RequestRecord>) -> Result<(), DecodeError> {
        let event = events::decode(record).map_err(DecodeError::new)?;
        if let events::KernelEvent::Propagation(PropagationEvent::Client(ctx)) = &event {
            self.propagation.on_client(ctx);
        }
        self.tracker.on_event(&event, out);
        if let Some(tls) = self.tls.as_mut() {
            match event {
                events::KernelEvent::ExecMap { pid } => tls.mapped(pid),
                events::KernelEvent::ProcExit { pid } => tls.exited(pid),
                // A new program: its own libraries, mapped from now on.
                events::KernelEvent::ProcExec { pid } => {
                    tls.exited(pid);
                    tls.mapped(pid);
                }
                // Claimed at fork; its uprobes are its own (per process).
                events::KernelEvent::ProcFork { pid, .. } => tls.mapped(pid),
                _ => {}
            }
            for pid in self.tracker.take_tls_processes() {
                tls.saw_tls(pid);
            }
        }
        Ok(())
    }

    fn settle(&mut self, kernel: &mut Kernel) {
        if let Some(tls) = self.tls.as_mut() {
            tls.settle(kernel);
        }
    }

    fn background(&self) -> Option<Arc<Notify>> {
        self.tls.as_ref().map(tls::TlsProbes::wakeup)
    }

    fn background_pending(&self) -> usize {
        self.tls.as_ref().map_or(0, tls::TlsProbes::pending_scans)
    }

    fn housekeeping(
        &mut self,
        _kernel: &mut Kernel,
        tick: &mut Housekeeping<'_>,
        _out: &mut Vec<RequestRecord>,
    ) {
        let stats = self.tracker.stats();
        tick.parse_errors("http1", stats.not_http - self.reported.not_http);
        tick.connections_untraced("connection_cap", stats.untracked - self.reported.untracked);
        tick.connections_untraced("abandoned", stats.abandoned - self.reported.abandoned);
        self.reported = stats;
        self.propagation.housekeeping(tick);
        if let Some(tls) = self.tls.as_mut() {
            for (reason, n) in tls.take_untraced() {
                tick.tls_untraced(reason, n);
            }
            tick.tls_probed(tls.library_count(), tls.process_count());
        }
    }
}
