//! The one event loop of every eBPF program set.
//!
//! A program set (Go uprobes, socket-level syscall tracing, process
//! discovery, and whatever comes next) says what is particular to it by
//! implementing [`ProgramSet`]; the driver does everything else, the same way
//! for every set:
//!
//! - **load with the tuning**: the set's [`Tuning`] sizes the ring buffer and
//!   sets the `volatile const` knobs; there is no load without one;
//! - **static attach**, once, then **ready** (`/readyz`);
//! - **ring draining**: batched wake-ups plus a poll ([`EventReader`]), every
//!   record through [`ProgramSet::decode`], outputs handed to the [`Sink`];
//!   records that do not decode are counted
//!   (`kernel_events_dropped{source="undecodable"}`) and logged once;
//! - **drop counting**: the kernel's per-reason counters, read every
//!   [`HOUSEKEEPING`] into `kernel_events_dropped`;
//! - **targets**: [`TargetEvent`]s become [`ProgramSet::add_target`] and
//!   [`ProgramSet::remove_target`]; refusals are counted by reason. A set
//!   whose attach needs work off the loop answers [`Adding::Pending`] and
//!   hands the outcome back later ([`ProgramSet::take_added`]): the ring is
//!   drained meanwhile, and the process is reported traced (or refused)
//!   only once it is;
//! - **drain before release**: before a process is released, what the
//!   kernel already wrote about it is decoded (its last response may still
//!   sit in the ring when its exit is seen);
//! - **the final drain** on shutdown, then every target removed;
//! - **health**: ready, events read, attached processes, refusals, parse
//!   errors the set reports.
//!
//! # Writing a program set
//!
//! The C side: a `src/c/<name>.bpf.c` that includes `common/ringbuf.h` (the
//! `events` ring and the `drop_counters` map every set has), declared in
//! `probe-ebpf/src/contract.rs` (its maps, globals and programs; the build
//! fails if the object and the declaration disagree). The Rust side: a type
//! implementing [`ProgramSet`], and a decoder for its records. How the
//! shapes we know of fit:
//!
//! - **uprobes on a binary, per process** (the Go set): nothing in
//!   [`attach`](ProgramSet::attach) but loading the programs;
//!   [`add_target`](ProgramSet::add_target) queues the analysis of
//!   `/proc/<pid>/exe` (a [`crate::analysis::Analyzer`], one at a time) and
//!   answers [`Adding::Pending`]; once the analysis is back,
//!   [`settle`](ProgramSet::settle) fills the per-process maps, attaches
//!   with `UProbeScope::OneProcess` and keeps the link ids it needs for
//!   [`remove_target`](ProgramSet::remove_target), and
//!   [`take_added`](ProgramSet::take_added) hands the outcome to the driver.
//! - **uprobes on a shared library** (TLS in `libssl.so`, the socket-level
//!   set's `sockets::tls`): find the library each target really maps
//!   (`/proc/<pid>/maps`, by device and inode), analyse each file once, and
//!   attach per process (`UProbeScope::OneProcess`): a uprobe scoped to the
//!   file traps in every process mapping it, which cost untraced processes
//!   ~4 µs per call here (`bench/results/tls.md`). Children forked after
//!   the claim get theirs when [`decode`](ProgramSet::decode) reads their
//!   fork. Each file is read off the loop (a [`crate::analysis::Analyzer`]
//!   whose wake-up the set hands over in
//!   [`background`](ProgramSet::background)); the attach runs in
//!   [`settle`](ProgramSet::settle), which has the kernel, once the answer
//!   is back.
//! - **syscall tracepoints filtered by claims** (the socket-level set):
//!   [`attach`](ProgramSet::attach) attaches every tracepoint; the default
//!   `add_target` claims the pid (children follow at fork).
//! - **cgroup-attached programs** (sockops, `sk_msg` on a sockhash):
//!   [`attach`](ProgramSet::attach) attaches them at the cgroup2 root (find
//!   it in `/proc/self/mountinfo`; with `CgroupAttachMode::Single` on this
//!   kernel) and takes the sockhash; targets are claims as above.
//! - **perf_event programs** (a CPU profiler): [`attach`](ProgramSet::attach)
//!   opens one sampling event per CPU; samples arrive as ring records
//!   ([`decode`](ProgramSet::decode)) or are read from a map in
//!   [`housekeeping`](ProgramSet::housekeeping), which runs every
//!   [`HOUSEKEEPING`] and once more at the end
//!   ([`Housekeeping::is_last`]: hand over what is held back). The profiler
//!   (`crate::profile`) is this shape: samples are decoded as they come,
//!   and a window's profile is an output when the window closes.
//! - **process lifecycles** (discovery): [`attach`](ProgramSet::attach)
//!   attaches `common/proc.h`'s programs; targets are the processes to
//!   follow; outputs go to a channel instead of the span pipeline.
//! - **sets that aggregate in maps** (pod network: `cgroup_skb` at the
//!   cgroup2 root; TCP health: BTF tracepoints on TCP events): no ring
//!   records and no process targets, so no loop to run. They are loaded
//!   with [`ebpf::load_maps_only`] under the same contract (names, attach
//!   helpers, [`Kernel`]), and the views sampler (`crate::views`) fills
//!   their cgroup maps and reads their counters on its own interval.
//!
//! Outputs need not be requests: [`ProgramSet::Output`] is the set's own
//! type, and the [`Sink`] says where it goes ([`RecordSink`] for
//! [`RequestRecord`]s). A set's errors from [`attach`](ProgramSet::attach)
//! stop the probe with the message (say what to fix); a refused target is
//! logged and counted, and the probe goes on.

// Attach errors carry aya's (large) errors unboxed: they happen at startup
// (see crate::ebpf).
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::ebpf::{self, DropCounters, EbpfError, EventReader, Kernel, Tuning};
use crate::frontend::FrontendContext;
use crate::health::{FrontendHealth, PropagationMetric};
use crate::ledger::ProcessLedger;
use crate::targets::{ProcessTarget, TargetEvent, TargetEvents};
use crate::telemetry::{RecordSink, RequestRecord};

/// How often drop counters are read and [`ProgramSet::housekeeping`] runs.
pub const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// A program set: its object, its knobs, how it attaches and what its
/// records mean. See the [module docs](self) for the shapes that fit.
pub trait ProgramSet: Send + 'static {
    /// What a record becomes: a [`RequestRecord`] for a language, anything
    /// for other sets.
    type Output: Send + 'static;

    /// Name in logs, errors and the contract (`go`, `sockets`, ...).
    fn name(&self) -> &'static str;

    /// The compiled object, e.g. [`ferrotel_probe_ebpf::GO`].
    fn object(&self) -> &'static [u8];

    /// How to load the object. A language set builds it from its config
    /// section ([`Tuning::from_language`]); it has no default on purpose.
    fn tuning(&self) -> Tuning;

    /// Attaches what does not depend on targets and takes the maps the set
    /// drives, once, right after loading.
    fn attach(&mut self, kernel: &mut Kernel) -> Result<(), EbpfError>;

    /// Starts tracing a process. The default claims it in `claimed_tgids`
    /// (its children follow at fork); a set that attaches per process
    /// overrides this. A refusal is logged and counted; the probe goes on.
    /// A set that must read the process's files first answers
    /// [`Adding::Pending`] and reports the outcome through
    /// [`take_added`](Self::take_added).
    fn add_target(
        &mut self,
        kernel: &mut Kernel,
        target: &ProcessTarget,
    ) -> impl Future<Output = Result<Adding, Refusal>> + Send {
        std::future::ready(claim(kernel, target.pid, true).map(|()| Adding::Traced))
    }

    /// Outcomes of the targets [`add_target`](Self::add_target) answered
    /// [`Adding::Pending`] for, known since the last call (the driver asks
    /// after each [`settle`](Self::settle)). A target removed before its
    /// outcome was known has none.
    fn take_added(&mut self) -> Vec<(u32, Result<(), Refusal>)> {
        Vec::new()
    }

    /// Stops tracing a process. The driver has drained the ring first, so
    /// everything the kernel wrote about it was decoded. The default
    /// releases the claim.
    fn remove_target(&mut self, kernel: &mut Kernel, pid: u32) {
        if let Ok(claims) = kernel.claims() {
            claims.release(pid);
        }
    }

    /// Turns one ring-buffer record into zero or more outputs.
    fn decode(&mut self, record: &[u8], out: &mut Vec<Self::Output>) -> Result<(), DecodeError>;

    /// Runs after each batch of records was decoded, and when work off the
    /// loop is back ([`background`](Self::background)), with the kernel:
    /// the work a record asked for that needs it (the TLS probes attach to
    /// a library a process just mapped). The ring waits meanwhile: keep it
    /// short, and read no workload file here (hand that to a
    /// [`crate::analysis::Analyzer`]).
    fn settle(&mut self, _kernel: &mut Kernel) {}

    /// A set that runs work off the loop: notified when a result is back,
    /// then the driver calls [`settle`](Self::settle) to apply it. Asked
    /// once, after [`attach`](Self::attach).
    fn background(&self) -> Option<Arc<Notify>> {
        None
    }

    /// Work of the set still running off the loop.
    fn background_pending(&self) -> usize {
        0
    }

    /// Runs every [`HOUSEKEEPING`] and once after the final drain: time-outs,
    /// map reads, statistics for [`Housekeeping::parse_errors`].
    fn housekeeping(
        &mut self,
        _kernel: &mut Kernel,
        _tick: &mut Housekeeping<'_>,
        _out: &mut Vec<Self::Output>,
    ) {
    }

    /// Processes traced now (the `attached_processes` gauge). The default is
    /// the kernel's view of `claimed_tgids`, children claimed at fork
    /// included; `targets` is what the driver added.
    fn attached(&self, kernel: &Kernel, targets: &BTreeSet<u32>) -> usize {
        kernel.claimed().map_or(targets.len(), |pids| pids.len())
    }
}

/// Where a set's outputs go. Must not block: the loop has a ring to drain.
pub trait Sink<T>: Send {
    fn deliver(&mut self, item: T);
}

impl Sink<RequestRecord> for RecordSink {
    fn deliver(&mut self, record: RequestRecord) {
        // A full pipeline counts the drop itself.
        self.submit(record);
    }
}

impl<T: Send> Sink<T> for tokio::sync::mpsc::UnboundedSender<T> {
    fn deliver(&mut self, item: T) {
        // The receiver gone means the consumer stopped; nothing to keep.
        let _ = self.send(item);
    }
}

/// Claims `pid` in the set's `claimed_tgids` map (`follow_children`: its
/// children are claimed at fork), as [`ProgramSet::add_target`] does by
/// default.
pub fn claim(kernel: &mut Kernel, pid: u32, follow_children: bool) -> Result<(), Refusal> {
    kernel
        .claims()
        .and_then(|claims| claims.claim(pid, follow_children))
        .map_err(|error| Refusal::new("claim_failed", error))
}

/// A record a set could not decode: a probe and eBPF object out of sync.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(error: impl std::fmt::Display) -> Self {
        Self(error.to_string())
    }
}

/// What [`ProgramSet::add_target`] did with a process it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adding {
    /// It is traced now.
    Traced,
    /// Its files are being read off the loop; the outcome comes back through
    /// [`ProgramSet::take_added`].
    Pending,
}

/// Why a process was not traced: a bounded `reason` for the
/// `attach_refused` metric, and the full error for the log.
#[derive(Debug)]
pub struct Refusal {
    pub reason: &'static str,
    pub error: anyhow::Error,
}

impl Refusal {
    pub fn new(reason: &'static str, error: impl Into<anyhow::Error>) -> Self {
        Self {
            reason,
            error: error.into(),
        }
    }
}

/// What the driver read this tick, and what the set reports back.
#[derive(Debug)]
pub struct Housekeeping<'a> {
    /// Kernel-side drop totals by reason (running totals, summed over CPUs).
    pub drops: &'a [(&'static str, u64)],
    parse_errors: Vec<(&'static str, u64)>,
    last: bool,
    untraced: Vec<(&'static str, u64)>,
    propagation: Vec<(PropagationMetric, &'static str, u64)>,
    propagation_cgroups: Option<usize>,
    tls_untraced: Vec<(&'static str, u64)>,
    tls_probed: Option<(usize, usize)>,
}

impl Housekeeping<'_> {
    /// This is the call after the final drain: the probe is stopping, so
    /// a set that holds outputs back (a profiler's open window) hands them
    /// over now.
    pub fn is_last(&self) -> bool {
        self.last
    }

    /// `n` more payloads of `protocol` failed to parse since the last tick.
    pub fn parse_errors(&mut self, protocol: &'static str, n: u64) {
        if n > 0 {
            self.parse_errors.push((protocol, n));
        }
    }

    /// `n` more connections were left untraced since the last tick because
    /// a memory cap was reached; `reason` names the cap.
    pub fn connections_untraced(&mut self, reason: &'static str, n: u64) {
        if n > 0 {
            self.untraced.push((reason, n));
        }
    }

    /// A propagation counter's running total (see `crate::propagation`).
    pub fn propagation_total(
        &mut self,
        metric: PropagationMetric,
        label: &'static str,
        total: u64,
    ) {
        self.propagation.push((metric, label, total));
    }

    /// cgroups the propagation sockops program is attached to.
    pub fn propagation_cgroups(&mut self, n: usize) {
        self.propagation_cgroups = Some(n);
    }

    /// `n` more processes were found whose TLS connections cannot be
    /// traced, for `reason`.
    pub fn tls_untraced(&mut self, reason: &'static str, n: u64) {
        if n > 0 {
            self.tls_untraced.push((reason, n));
        }
    }

    /// TLS library files probed now, and the processes they are probed in.
    pub fn tls_probed(&mut self, libraries: usize, processes: usize) {
        self.tls_probed = Some((libraries, processes));
    }
}

/// A loaded, attached program set with its ring and drop counters.
#[derive(Debug)]
pub struct Driver<S: ProgramSet> {
    set: S,
    kernel: Kernel,
    reader: EventReader,
    drops: DropCounters,
    targets: BTreeSet<u32>,
    /// Targets whose attach is under way off the loop ([`Adding::Pending`]).
    pending: BTreeMap<u32, ProcessTarget>,
    outputs: Vec<S::Output>,
    undecodable: u64,
    /// The set's [`ProgramSet::background`].
    background: Option<Arc<Notify>>,
}

impl<S: ProgramSet> Driver<S> {
    /// Loads `set` with its tuning and attaches it. Needs a tokio runtime
    /// (the ring buffer is registered with it).
    pub fn load(mut set: S) -> Result<Self, EbpfError> {
        let tuning = set.tuning();
        // One parse of the kernel's BTF for the object's CO-RE relocations
        // and the set's BTF tracepoints, freed before the ring is mapped:
        // the mapped ring (its data pages mapped twice) would otherwise be
        // resident under the parse's peak. What the programs write
        // meanwhile waits in the ring.
        let btf = ebpf::BtfHold::new();
        let mut kernel = ebpf::load(set.name(), set.object(), &tuning)?;
        set.attach(&mut kernel)?;
        drop(btf);
        let reader = EventReader::take(&mut kernel, tuning.poll)?;
        let drops = DropCounters::take(&mut kernel)?;
        let background = set.background();
        info!(
            set = set.name(),
            ring_buffer_bytes = kernel.ring_buffer_bytes(),
            globals = ?tuning.globals,
            "Loaded eBPF program set"
        );
        Ok(Self {
            set,
            kernel,
            reader,
            drops,
            targets: BTreeSet::new(),
            pending: BTreeMap::new(),
            outputs: Vec::new(),
            undecodable: 0,
            background,
        })
    }

    pub fn set(&self) -> &S {
        &self.set
    }

    pub fn kernel_mut(&mut self) -> &mut Kernel {
        &mut self.kernel
    }

    /// The set and its kernel side, for tests and measurements that drive
    /// a set by hand (add a target, then [`Driver::drain_raw`]).
    pub fn set_and_kernel_mut(&mut self) -> (&mut S, &mut Kernel) {
        (&mut self.set, &mut self.kernel)
    }

    /// The kernel's drop totals by reason.
    pub fn drop_totals(&self) -> Result<Vec<(&'static str, u64)>, EbpfError> {
        self.drops.totals()
    }

    /// Starts tracing `target`, as a target event would, and waits until it
    /// is traced, work off the loop included (tests of the kernel side drive
    /// targets directly). A refusal is returned.
    pub async fn add_target(&mut self, target: &ProcessTarget) -> Result<(), Refusal> {
        if self.set.add_target(&mut self.kernel, target).await? == Adding::Pending {
            self.settle_background().await;
            let outcome = self
                .set
                .take_added()
                .into_iter()
                .find_map(|(pid, outcome)| (pid == target.pid).then_some(outcome));
            // The set answered Pending and its work is done: an outcome
            // must be there.
            outcome.unwrap_or_else(|| {
                Err(Refusal::new(
                    "analysis_failed",
                    anyhow::anyhow!(
                        "the {} set reported no outcome for pid {}",
                        self.set.name(),
                        target.pid
                    ),
                ))
            })?;
        }
        self.targets.insert(target.pid);
        Ok(())
    }

    /// Waits until the set's work off the loop is done, applying each
    /// result as it comes (tests that drive a set by hand: after
    /// [`Driver::add_target`], the TLS libraries a process maps are probed
    /// once their scans are back).
    pub async fn settle_background(&mut self) {
        let Some(background) = self.background.clone() else {
            return;
        };
        self.set.settle(&mut self.kernel);
        while self.set.background_pending() > 0 {
            background.notified().await;
            self.set.settle(&mut self.kernel);
        }
    }

    /// Decodes every pending record into `out` (tests of a set's decoding
    /// with the real kernel). Returns the number of records.
    pub fn drain_decoded(&mut self, out: &mut Vec<S::Output>) -> usize {
        let Self {
            set,
            reader,
            undecodable,
            ..
        } = self;
        reader.drain_now(|record| decode(set, record, out, undecodable))
    }

    /// Hands every pending raw record to `on_record` without decoding it
    /// (tests of the kernel side). Returns the number of records.
    pub fn drain_raw(&mut self, on_record: impl FnMut(&[u8])) -> usize {
        self.reader.drain_now(on_record)
    }

    /// Runs the set until `shutdown`: see the [module docs](self).
    pub async fn run(
        mut self,
        mut targets: TargetEvents,
        mut sink: impl Sink<S::Output>,
        health: Option<FrontendHealth>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let health = health.as_ref();
        let ledger = targets.ledger().clone();
        if let Some(health) = health {
            health.set_ring_buffer_bytes(self.kernel.ring_buffer_bytes());
            health.mark_ready();
        }
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut targets_open = true;
        loop {
            // The branches borrow parts of the driver; act once they are done.
            let step = {
                let Self {
                    set,
                    reader,
                    outputs,
                    undecodable,
                    background,
                    ..
                } = &mut self;
                tokio::select! {
                    () = shutdown.cancelled() => Step::Stop,
                    event = targets.next(), if targets_open => Step::Target(event),
                    drained = reader.drain(|record| decode(set, record, outputs, undecodable)) => Step::Drained(drained),
                    () = notified(background.as_deref()) => Step::Background,
                    _ = tick.tick() => Step::Housekeeping,
                }
            };
            match step {
                Step::Stop => break,
                Step::Target(Some(TargetEvent::Added(target))) => {
                    self.add(&target, health, &ledger).await
                }
                Step::Target(Some(TargetEvent::Removed(pid))) => {
                    self.remove(pid, &mut sink, health);
                    ledger.released(pid);
                }
                Step::Target(None) => targets_open = false,
                Step::Drained(drained) => {
                    let n = drained
                        .with_context(|| format!("reading the {} ring buffer", self.set.name()))?;
                    self.deliver(n, &mut sink, health);
                    self.set.settle(&mut self.kernel);
                    self.take_added(health, &ledger);
                }
                // Work off the loop is back: apply it with the kernel.
                Step::Background => {
                    self.set.settle(&mut self.kernel);
                    self.take_added(health, &ledger);
                }
                Step::Housekeeping => self.housekeeping(&mut sink, health, false),
            }
        }
        // Deliver what the kernel already produced, then let go.
        self.drain_now(&mut sink, health);
        self.housekeeping(&mut sink, health, true);
        // Attaches still under way are abandoned (remove_target cancels them).
        let pending = std::mem::take(&mut self.pending);
        for pid in std::mem::take(&mut self.targets)
            .into_iter()
            .chain(pending.into_keys())
        {
            self.set.remove_target(&mut self.kernel, pid);
            ledger.released(pid);
        }
        info!(set = self.set.name(), "Detached eBPF program set");
        Ok(())
    }

    async fn add(
        &mut self,
        target: &ProcessTarget,
        health: Option<&FrontendHealth>,
        ledger: &ProcessLedger,
    ) {
        match self.set.add_target(&mut self.kernel, target).await {
            Ok(Adding::Traced) => self.added(target, Ok(()), health, ledger),
            Ok(Adding::Pending) => {
                debug!(set = self.set.name(), pid = target.pid, exe = %target.exe.display(), "Attach under way off the loop");
                self.pending.insert(target.pid, target.clone());
            }
            Err(refusal) => self.added(target, Err(refusal), health, ledger),
        }
        self.report_attached(health);
    }

    /// Records the outcomes of attaches that were under way.
    fn take_added(&mut self, health: Option<&FrontendHealth>, ledger: &ProcessLedger) {
        let outcomes = self.set.take_added();
        if outcomes.is_empty() {
            return;
        }
        for (pid, outcome) in outcomes {
            // Removed meanwhile: the set cancelled it, nothing to record.
            if let Some(target) = self.pending.remove(&pid) {
                self.added(&target, outcome, health, ledger);
            }
        }
        self.report_attached(health);
    }

    /// Records that `target` is traced, or why not.
    fn added(
        &mut self,
        target: &ProcessTarget,
        outcome: Result<(), Refusal>,
        health: Option<&FrontendHealth>,
        ledger: &ProcessLedger,
    ) {
        match outcome {
            Ok(()) => {
                self.targets.insert(target.pid);
                ledger.traced(target.pid, &target.exe, self.set.name());
                debug!(set = self.set.name(), pid = target.pid, exe = %target.exe.display(), reason = target.reason, "Tracing process");
            }
            Err(refusal) => {
                if let Some(health) = health {
                    health.attach_refused(refusal.reason);
                }
                // A process that exited while it was read or attached to
                // failed for that reason alone: nothing about it for a user
                // to fix, and `why` must not name it in place of the
                // processes that are still there. Counted all the same.
                if crate::targets::process_gone(target.pid) {
                    debug!(
                        set = self.set.name(),
                        pid = target.pid,
                        reason = refusal.reason,
                        error = format!("{:#}", refusal.error),
                        "Process exited before it could be traced"
                    );
                    ledger.released(target.pid);
                    return;
                }
                warn!(
                    set = self.set.name(),
                    pid = target.pid,
                    reason = refusal.reason,
                    error = format!("{:#}", refusal.error),
                    "Refusing to trace process"
                );
                ledger.refused(
                    target.pid,
                    &target.exe,
                    self.set.name(),
                    refusal.reason,
                    format!("{:#}", refusal.error),
                );
            }
        }
    }

    fn remove(
        &mut self,
        pid: u32,
        sink: &mut impl Sink<S::Output>,
        health: Option<&FrontendHealth>,
    ) {
        // The process's last records may still wait in the ring (wake-ups
        // are batched, and select! picks among ready branches at random):
        // decode them while the set still knows the process.
        self.drain_now(sink, health);
        self.set.remove_target(&mut self.kernel, pid);
        self.targets.remove(&pid);
        self.pending.remove(&pid);
        debug!(set = self.set.name(), pid, "Released process");
        self.report_attached(health);
    }

    fn drain_now(&mut self, sink: &mut impl Sink<S::Output>, health: Option<&FrontendHealth>) {
        let Self {
            set,
            reader,
            outputs,
            undecodable,
            ..
        } = self;
        let n = reader.drain_now(|record| decode(set, record, outputs, undecodable));
        self.deliver(n, sink, health);
        self.set.settle(&mut self.kernel);
    }

    fn deliver(
        &mut self,
        records: usize,
        sink: &mut impl Sink<S::Output>,
        health: Option<&FrontendHealth>,
    ) {
        if let Some(health) = health {
            health.events_received(records as u64);
        }
        for output in self.outputs.drain(..) {
            sink.deliver(output);
        }
    }

    fn housekeeping(
        &mut self,
        sink: &mut impl Sink<S::Output>,
        health: Option<&FrontendHealth>,
        last: bool,
    ) {
        let drops = match self.drops.totals() {
            Ok(totals) => totals,
            Err(error) => {
                debug!(set = self.set.name(), %error, "Could not read drop counters");
                Vec::new()
            }
        };
        let mut tick = Housekeeping {
            drops: &drops,
            parse_errors: Vec::new(),
            last,
            untraced: Vec::new(),
            propagation: Vec::new(),
            propagation_cgroups: None,
            tls_untraced: Vec::new(),
            tls_probed: None,
        };
        self.set
            .housekeeping(&mut self.kernel, &mut tick, &mut self.outputs);
        let parse_errors = std::mem::take(&mut tick.parse_errors);
        let untraced = std::mem::take(&mut tick.untraced);
        let propagation = std::mem::take(&mut tick.propagation);
        let propagation_cgroups = tick.propagation_cgroups;
        let tls_untraced = std::mem::take(&mut tick.tls_untraced);
        let tls_probed = tick.tls_probed;
        self.deliver(0, sink, health);
        let Some(health) = health else { return };
        for (reason, total) in &drops {
            health.kernel_dropped_total(reason, *total);
        }
        health.kernel_dropped_total("undecodable", self.undecodable);
        for (protocol, n) in parse_errors {
            health.parse_errors(protocol, n);
        }
        for (reason, n) in untraced {
            health.connections_untraced(reason, n);
        }
        for (metric, label, total) in propagation {
            health.propagation_total(metric, label, total);
        }
        if let Some(n) = propagation_cgroups {
            health.set_propagation_cgroups(n);
        }
        for (reason, n) in tls_untraced {
            health.tls_untraced(reason, n);
        }
        if let Some((libraries, processes)) = tls_probed {
            health.set_tls_probed(libraries, processes);
        }
        self.report_attached(Some(health));
    }

    fn report_attached(&self, health: Option<&FrontendHealth>) {
        if let Some(health) = health {
            health.set_attached_processes(self.set.attached(&self.kernel, &self.targets));
        }
    }
}

/// What woke the loop.
enum Step {
    Stop,
    Target(Option<TargetEvent>),
    Drained(std::io::Result<usize>),
    Background,
    Housekeeping,
}

/// Resolves when `background` is notified; never without one.
async fn notified(background: Option<&Notify>) {
    match background {
        Some(background) => background.notified().await,
        None => std::future::pending().await,
    }
}

fn decode<S: ProgramSet>(
    set: &mut S,
    record: &[u8],
    out: &mut Vec<S::Output>,
    undecodable: &mut u64,
) {
    if let Err(error) = set.decode(record, out) {
        *undecodable += 1;
        if *undecodable == 1 {
            warn!(set = set.name(), %error, "Undecodable ring buffer record (probe and eBPF object out of sync?)");
        }
    }
}

/// Loads a language's program set and runs it for the runtime: targets
/// from the context, records to the pipeline, health labelled with the
/// language.
pub async fn run_language<S>(set: S, ctx: FrontendContext) -> anyhow::Result<()>
where
    S: ProgramSet<Output = RequestRecord>,
{
    let name = set.name();
    let driver =
        Driver::load(set).with_context(|| format!("starting the {} front-end", ctx.language))?;
    debug!(set = name, language = %ctx.language, "Front-end ready");
    driver
        .run(ctx.targets, ctx.sink, Some(ctx.health), ctx.shutdown)
        .await
}
