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

// Record decoding and the HTTP/1 tracker read the workload's bytes: they
// live in `ferrotel-parse`, where they are fuzzed.
pub use ferrotel_parse::sockets::{events, tracker};

use ferrotel_api::probe_config::LanguageTuning;
use ferrotel_probe_ebpf::contract::{defaults, globals, sockets};

use crate::driver::{DecodeError, Housekeeping, ProgramSet};
use crate::ebpf::{EbpfError, Global, Kernel, Tuning};
use crate::telemetry::RequestRecord;
use crate::telemetry::sampling::SpanStarter;

pub use tracker::{Tracker, TrackerStats};

/// The socket-level program set.
#[derive(Debug)]
pub struct SocketSet {
    tuning: Tuning,
    tracker: Tracker,
    /// Tracker statistics already reported.
    reported: TrackerStats,
}

impl SocketSet {
    /// The set as `tuning` (the config's `python` section) asks for it;
    /// span ids and sampling decisions come from `spans`.
    pub fn new(tuning: &LanguageTuning, spans: SpanStarter) -> Self {
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
        }
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
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
        self.tuning.clone()
    }

    fn attach(&mut self, kernel: &mut Kernel) -> Result<(), EbpfError> {
        kernel.attach_syscall_tracepoints(&sockets::TRACEPOINTS)?;
        kernel.attach_process_tracking()?;
        // Created now, so that a claim cannot fail for want of the map.
        kernel.claims()?;
        Ok(())
    }

    fn remove_target(&mut self, kernel: &mut Kernel, pid: u32) {
        if let Ok(claims) = kernel.claims() {
            claims.release(pid);
        }
        self.tracker.forget_process(pid);
    }

    fn decode(&mut self, record: &[u8], out: &mut Vec<RequestRecord>) -> Result<(), DecodeError> {
        let event = events::decode(record).map_err(DecodeError::new)?;
        self.tracker.on_event(&event, out);
        Ok(())
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
    }
}
