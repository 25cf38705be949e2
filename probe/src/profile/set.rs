//! The profiling program set under the [driver](crate::driver): one
//! CPU-clock perf event per online CPU running `ft_profile_tick`, plus the
//! process-lifecycle programs every set has (fork, exit, exec; BTF
//! tracepoints, no tracefs) that keep the set of profiled processes right. The driver loads it, drains its ring and hands it its
//! targets; this module turns samples into per-process windows and hands
//! a window's [`Profile`] over when the window closes.
//!
//! Targets: a new process's maps and binaries (ELF symbols, pclntab, the
//! interpreter's offsets) are read off the event loop, one process at a
//! time (an [`Analyzer`]), so the ring is drained and other processes'
//! samples are symbolized meanwhile; `settle` installs what was found,
//! describes the process to the kernel program and claims it. A process
//! that exec'd is read again the same way.
//!
//! Windows: samples are symbolized as they are decoded and wait in the open
//! window of their process. Every `exportIntervalSeconds` the open windows
//! close, and the windows closed one interval earlier are linked to the
//! spans that were active when their samples fired (a span is reported when
//! its request ends, after its samples) and become outputs. On shutdown
//! both are handed over ([`Housekeeping::is_last`]).

// Attach errors carry aya's (large) errors unboxed: they happen at startup
// (see crate::ebpf).
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData};
use ferrotel_probe_ebpf::Wire;
use ferrotel_probe_ebpf::contract::{self, globals, maps};
use ferrotel_probe_ebpf::profile::{ProfProc, ProfileSample, SAMPLE_KIND};
use ferrotel_probe_ebpf::wire::{EventHeader, ProcEvent, kind};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use super::link::{SpanIndex, SpanInterval};
use super::model::Profile;
use super::symbolize::{Examined, Limits, ProcError, Symbolizer};
use super::{ProfilerMetrics, ReasonLabel};
use crate::analysis::{Analysed, Analyzer, DEFAULT_MAX_PENDING, Failure};
use crate::driver::{Adding, DecodeError, Housekeeping, ProgramSet, Refusal};
use crate::ebpf::{EbpfError, Global, Kernel, Tuning};
use crate::targets::ProcessTarget;
use crate::telemetry::clock::ClockOffsets;
use crate::telemetry::resource::ResourceRegistry;

const SET: &str = "profile";

/// Spans indexed for linking at once.
const SPAN_INDEX_CAP: usize = 65_536;
/// Samples waiting for their window to be linked, all processes.
const PENDING_CAP: usize = 200_000;
/// Distinct stacks per process window.
const MAX_STACKS: usize = 20_000;
/// How long after an exec a process is read again: the dynamic loader
/// maps the new binary's libraries (`libpython`) in its first
/// milliseconds; before, it would look like a native process.
const EXEC_SETTLE: Duration = Duration::from_millis(500);

/// Load-time settings.
#[derive(Clone, Copy, Debug)]
pub struct BpfOptions {
    pub frequency_hz: u32,
    pub kernel_stacks: bool,
    /// Walk Python frames in the kernel (normal) or leave it to user space
    /// (only for the measurement that chose the kernel).
    pub python_frames_in_kernel: bool,
    pub ring_buffer_bytes: u32,
}

impl Default for BpfOptions {
    fn default() -> Self {
        Self {
            frequency_hz: 19,
            kernel_stacks: contract::defaults::KERNEL_STACKS != 0,
            python_frames_in_kernel: contract::defaults::PYTHON_FRAMES != 0,
            ring_buffer_bytes: contract::defaults::PROFILE_RING_BUFFER_BYTES,
        }
    }
}

/// The profiling program set: what the driver runs.
pub struct ProfileSet {
    options: BpfOptions,
    /// `profile_procs`, taken at attach.
    procs: Option<BpfHashMap<MapData, u32, ProfProc>>,
    state: State,
    spans: mpsc::Receiver<SpanInterval>,
    span_dropped: Arc<AtomicU64>,
    metrics: ProfilerMetrics,
    interval: Duration,
    next_rotation: Instant,
    /// Processes that exec'd, waiting to be read again.
    execs: Vec<(u32, Instant)>,
    /// Processes being examined, by pid: one at a time, off the loop.
    examinations: Analyzer<u32, Examined, ProcError>,
    /// The examinations a target waits for; the others read a process
    /// again after an exec.
    adding: HashSet<u32>,
    /// Outcomes of targets whose examination is back, for `take_added`.
    added: Vec<(u32, Result<(), Refusal>)>,
}

impl std::fmt::Debug for ProfileSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileSet")
            .field("options", &self.options)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl ProfileSet {
    /// A set that closes a window every `interval`, learning spans from
    /// `spans` (filled by a [`super::SpanTap`]).
    pub(super) fn new(
        options: BpfOptions,
        interval: Duration,
        resources: ResourceRegistry,
        clock: ClockOffsets,
        spans: mpsc::Receiver<SpanInterval>,
        span_dropped: Arc<AtomicU64>,
        metrics: ProfilerMetrics,
    ) -> Self {
        let period_ns = 1_000_000_000 / u64::from(options.frequency_hz.max(1));
        Self {
            options,
            procs: None,
            state: State {
                symbolizer: Symbolizer::new(Limits::default()),
                windows: HashMap::new(),
                closed: Vec::new(),
                pending: 0,
                dropped_pending: 0,
                index: SpanIndex::new(SPAN_INDEX_CAP),
                period_ns,
                clock,
                resources,
                window_start: clock
                    .to_unix_nanos(Default::default(), ClockOffsets::monotonic_now_ns()),
                samples: 0,
                linked: 0,
            },
            spans,
            span_dropped,
            metrics,
            interval,
            next_rotation: Instant::now() + interval,
            execs: Vec::new(),
            examinations: Analyzer::new(DEFAULT_MAX_PENDING),
            adding: HashSet::new(),
            added: Vec::new(),
        }
    }

    pub(super) fn set_options(&mut self, options: BpfOptions) {
        self.state.period_ns = 1_000_000_000 / u64::from(options.frequency_hz.max(1));
        self.options = options;
    }

    pub fn options(&self) -> &BpfOptions {
        &self.options
    }

    /// Tells the kernel program what `pid` runs (which frames to add).
    /// Without it the process is sampled with native frames only.
    fn describe(&mut self, pid: u32, view: ProfProc) {
        let Some(procs) = &mut self.procs else { return };
        if let Err(error) = procs.insert(&pid, &view, 0) {
            warn!(pid, %error, "Cannot describe the process to the profiler; native frames only");
        }
    }

    /// Forgets what `pid` ran, here and in the kernel's description.
    fn forget(&mut self, pid: u32) {
        if let Some(procs) = &mut self.procs {
            // Absent when the process was never described or already gone.
            let _ = procs.remove(&pid);
        }
        self.state.forget(pid);
    }

    /// A claimed process exec'd (a shell wrapper's `exec python app.py`):
    /// what it runs is new. Forget the old view now (the kernel must not
    /// walk Python frames with another binary's offsets), read the new one
    /// once the dynamic loader has mapped its libraries ([`EXEC_SETTLE`]).
    fn exec_seen(&mut self, pid: u32) {
        self.forget(pid);
        // A reading under way saw the old binary.
        if !self.adding.contains(&pid) {
            self.examinations.cancel(&pid);
        }
        self.execs.push((pid, Instant::now()));
    }

    /// Reads again the processes that exec'd at least [`EXEC_SETTLE`] ago,
    /// off the loop like a new target.
    fn reexamine_settled(&mut self) {
        let now = Instant::now();
        let (settled, waiting) = std::mem::take(&mut self.execs)
            .into_iter()
            .partition(|(_, at)| now.duration_since(*at) >= EXEC_SETTLE);
        self.execs = waiting;
        for (pid, _) in settled {
            self.reexamine(pid);
        }
    }

    fn reexamine(&mut self, pid: u32) {
        self.forget(pid);
        let examiner = self.state.symbolizer.examiner();
        if let Err(busy) = self.examinations.submit(pid, move || examiner.examine(pid)) {
            debug!(pid, %busy, "Cannot examine a process after exec; native frames only");
        }
    }

    /// A re-reading after an exec is back.
    fn reexamined(&mut self, pid: u32, outcome: Result<Examined, Failure<ProcError>>) {
        match outcome {
            Ok(examined) => {
                let (view, kind) = self.state.symbolizer.install(pid, examined);
                self.describe(pid, view);
                debug!(pid, ?kind, "Profiling process after exec");
            }
            // Gone already: its exit follows.
            Err(error) => debug!(pid, %error, "Cannot examine a process after exec"),
        }
    }

    /// Starts profiling `pid` from its examination: installs it, describes
    /// it to the kernel program, claims it.
    fn start(
        &mut self,
        kernel: &mut Kernel,
        pid: u32,
        outcome: Result<Examined, Failure<ProcError>>,
    ) -> Result<(), Refusal> {
        let examined = outcome.map_err(|failure| match failure {
            Failure::Failed(error) => Refusal::new("process_gone", error),
            Failure::Panicked(message) => Refusal::new(
                "examine_failed",
                anyhow::anyhow!("examining process {pid} panicked: {message}"),
            ),
        })?;
        let (view, kind) = self.state.symbolizer.install(pid, examined);
        self.describe(pid, view);
        if let Err(refusal) = crate::driver::claim(kernel, pid, true) {
            // Refused: the driver never removes it, so forget it here.
            self.forget(pid);
            return Err(refusal);
        }
        info!(pid, ?kind, "Profiling process");
        if let Some(py) = self.state.symbolizer.python(pid) {
            debug!(pid, version = ?py.version, source = ?py.source, "Python frames from the interpreter");
        }
        Ok(())
    }

    /// Spans the record sink saw since the last call. Called on every
    /// decoded record and every tick: samples only come while traced
    /// processes run, which is when spans come too, so the channel is
    /// emptied at the pace it fills.
    fn learn_spans(&mut self) {
        while let Ok(span) = self.spans.try_recv() {
            self.state.index.insert(span);
        }
    }

    fn report(&self, drops: &[(&'static str, u64)]) {
        let state = &self.state;
        if let Some((_, total)) = drops.iter().find(|(reason, _)| *reason == "ringbuf_full") {
            self.metrics.drop_total("ringbuf_full", *total);
        }
        self.metrics
            .drop_total("pending_full", state.dropped_pending);
        self.metrics
            .drop_total("span_tap_full", self.span_dropped.load(Ordering::Relaxed));
        self.metrics
            .processes
            .set(state.symbolizer.processes() as i64);
        let stats = state.symbolizer.stats();
        for (name, n) in [
            ("files", stats.files),
            ("pcs", stats.pcs),
            ("code_objects", stats.code_objects),
        ] {
            self.metrics
                .cache_entries
                .get_or_create(&ReasonLabel { reason: name })
                .set(n as i64);
        }
        let now = self.metrics.samples.get();
        if state.samples > now {
            self.metrics.samples.inc_by(state.samples - now);
        }
        let linked = self.metrics.linked.get();
        if state.linked > linked {
            self.metrics.linked.inc_by(state.linked - linked);
        }
    }
}

impl ProgramSet for ProfileSet {
    type Output = Arc<Profile>;

    fn name(&self) -> &'static str {
        SET
    }

    fn object(&self) -> &'static [u8] {
        ferrotel_probe_ebpf::PROFILE
    }

    fn tuning(&self) -> Tuning {
        let flag = |on: bool| Global::U32(u32::from(on));
        Tuning {
            ring_buffer_bytes: self.options.ring_buffer_bytes,
            // A sample is 2.5 KiB: the reader is woken per ~25 samples and
            // polls for the rest; nothing here is latency-sensitive.
            wakeup_bytes: contract::defaults::WAKEUP_BYTES,
            poll: Duration::from_millis(100),
            globals: vec![
                (globals::KERNEL_STACKS, flag(self.options.kernel_stacks)),
                (
                    globals::PYTHON_FRAMES,
                    flag(self.options.python_frames_in_kernel),
                ),
                // Exits and forks of claimed processes only.
                (globals::REPORT_EXECS, Global::U32(0)),
            ],
            map_sizes: Vec::new(),
            map_pins: Vec::new(),
        }
    }

    fn attach(&mut self, kernel: &mut Kernel) -> Result<(), EbpfError> {
        kernel.attach_process_tracking()?;
        let frequency_hz = self.options.frequency_hz.max(1);
        let cpus = kernel.attach_cpu_clock(contract::profile::TICK, frequency_hz)?;
        self.procs = Some(kernel.take_map(maps::PROFILE_PROCS)?);
        info!(
            frequency_hz,
            cpus,
            kernel_stacks = self.options.kernel_stacks,
            "Profiling traced processes"
        );
        Ok(())
    }

    async fn add_target(
        &mut self,
        _kernel: &mut Kernel,
        target: &ProcessTarget,
    ) -> Result<Adding, Refusal> {
        let pid = target.pid;
        // Reading a process's binaries (ELF symbols, pclntab, the
        // interpreter's offsets) is file I/O that can take seconds: off the
        // event loop (the ring is drained and the symbolizer decodes other
        // processes' samples meanwhile), and a panic in it costs this
        // target only. `settle` claims.
        let examiner = self.state.symbolizer.examiner();
        self.examinations
            .submit(pid, move || examiner.examine(pid))
            .map_err(|busy| Refusal::new("analysis_busy", busy))?;
        self.adding.insert(pid);
        Ok(Adding::Pending)
    }

    fn settle(&mut self, kernel: &mut Kernel) {
        while let Some(Analysed { key: pid, outcome }) = self.examinations.try_next() {
            if self.adding.remove(&pid) {
                let started = self.start(kernel, pid, outcome);
                self.added.push((pid, started));
            } else {
                self.reexamined(pid, outcome);
            }
        }
    }

    fn background(&self) -> Option<Arc<Notify>> {
        Some(self.examinations.wakeup())
    }

    fn background_pending(&self) -> usize {
        self.examinations.pending()
    }

    fn take_added(&mut self) -> Vec<(u32, Result<(), Refusal>)> {
        std::mem::take(&mut self.added)
    }

    fn remove_target(&mut self, kernel: &mut Kernel, pid: u32) {
        // An examination under way, an outcome not handed over yet or an
        // exec waiting to be read belong to the process that left (its pid
        // may come back as another).
        self.examinations.cancel(&pid);
        self.adding.remove(&pid);
        self.added.retain(|(added, _)| *added != pid);
        self.execs.retain(|(exec, _)| *exec != pid);
        if let Ok(claims) = kernel.claims() {
            claims.release(pid);
        }
        self.forget(pid);
    }

    fn decode(&mut self, record: &[u8], _out: &mut Vec<Arc<Profile>>) -> Result<(), DecodeError> {
        self.learn_spans();
        let header = EventHeader::read(record)
            .ok_or_else(|| DecodeError::new(format!("{}-byte record", record.len())))?;
        match header.kind {
            SAMPLE_KIND => {
                let sample = ProfileSample::read(record).ok_or_else(|| {
                    DecodeError::new(format!("{}-byte profile sample", record.len()))
                })?;
                self.state.on_sample(&sample);
            }
            kind::PROC_FORK => {
                let event = ProcEvent::read(record)
                    .ok_or_else(|| DecodeError::new(format!("{}-byte fork event", record.len())))?;
                if let Some(view) = self.state.symbolizer.fork(event.parent_tgid, header.tgid) {
                    self.describe(header.tgid, view);
                    debug!(
                        pid = header.tgid,
                        parent = event.parent_tgid,
                        "Profiling forked child"
                    );
                }
            }
            kind::PROC_EXIT => self.forget(header.tgid),
            kind::PROC_EXEC => self.exec_seen(header.tgid),
            other => {
                return Err(DecodeError::new(format!(
                    "unknown event kind {other} in the profile ring"
                )));
            }
        }
        Ok(())
    }

    fn housekeeping(
        &mut self,
        _kernel: &mut Kernel,
        tick: &mut Housekeeping<'_>,
        out: &mut Vec<Arc<Profile>>,
    ) {
        self.learn_spans();
        self.reexamine_settled();
        if tick.is_last() {
            // The open window and the one waiting for its spans.
            out.extend(self.state.rotate());
            out.extend(self.state.rotate());
        } else if Instant::now() >= self.next_rotation {
            out.extend(self.state.rotate());
            self.next_rotation = Instant::now() + self.interval;
        }
        self.report(tick.drops);
    }

    fn attached(&self, _kernel: &Kernel, _targets: &std::collections::BTreeSet<u32>) -> usize {
        self.state.symbolizer.processes()
    }
}

/// A sample symbolized but not yet linked to a span.
struct Pending {
    stack: Box<[u32]>,
    thread: u32,
    ts_ns: u64,
}

/// One process's samples of one window.
struct Window {
    profile: Profile,
    pending: Vec<Pending>,
}

struct State {
    symbolizer: Symbolizer,
    /// The open window, per process.
    windows: HashMap<u32, Window>,
    /// The previous window, waiting one interval for its spans to end.
    closed: Vec<Window>,
    pending: usize,
    dropped_pending: u64,
    index: SpanIndex,
    period_ns: u64,
    clock: ClockOffsets,
    resources: ResourceRegistry,
    window_start: u64,
    samples: u64,
    linked: u64,
}

impl State {
    fn forget(&mut self, pid: u32) {
        self.symbolizer.remove_process(pid);
    }

    fn on_sample(&mut self, sample: &ProfileSample) {
        self.samples += 1;
        let pid = sample.header.tgid;
        if self.pending >= PENDING_CAP {
            self.dropped_pending += 1;
            return;
        }
        let frames = self.symbolizer.stack(sample);
        let window = self.windows.entry(pid).or_insert_with(|| Window {
            profile: Profile::new(
                pid,
                self.resources.get(pid),
                self.window_start,
                self.period_ns,
                MAX_STACKS,
            ),
            pending: Vec::new(),
        });
        let stack: Box<[u32]> = frames.iter().map(|f| window.profile.intern(f)).collect();
        // Go spans are per goroutine, the others per thread.
        let thread = if sample.goid != 0 {
            sample.goid as u32
        } else {
            sample.header.tid
        };
        window.pending.push(Pending {
            stack,
            thread,
            ts_ns: sample.header.ts_ns,
        });
        self.pending += 1;
    }

    /// Closes the open windows and links and returns the previous ones,
    /// whose spans have had a whole interval to end.
    fn rotate(&mut self) -> Vec<Arc<Profile>> {
        let now = self
            .clock
            .to_unix_nanos(Default::default(), ClockOffsets::monotonic_now_ns());
        let mut ready = Vec::new();
        for mut window in std::mem::take(&mut self.closed) {
            for p in std::mem::take(&mut window.pending) {
                let link = self.index.find(window.profile.pid, p.thread, p.ts_ns);
                if link.is_some() {
                    self.linked += 1;
                }
                window.profile.add(&p.stack, link, 1);
                self.pending -= 1;
            }
            ready.push(Arc::new(window.profile));
        }
        for (_, mut window) in self.windows.drain() {
            window.profile.end_unix_ns = now;
            self.closed.push(window);
        }
        // Spans that ended before the oldest window still waiting are of no use.
        let horizon = ClockOffsets::monotonic_now_ns()
            .saturating_sub(2 * (now.saturating_sub(self.window_start)).max(1));
        self.index.expire(horizon);
        self.window_start = now;
        ready
    }
}
