//! Process lifecycle events for discovery: the kernel tells us when a
//! process execs, and when a container process forks or exits, so that a new
//! process in an opted-in pod is examined at once and an exited one is
//! released at once, instead of on the next `/proc` scan.
//!
//! Discovery loads its own small program set (`probe-ebpf/src/c/discovery.bpf.c`,
//! just the shared `common/proc.h` programs) rather than reading these events
//! out of a front-end's ring buffer: the Go program set has no process
//! programs, the Python one reports execs of claimed processes only, and
//! discovery must work the same for both. Its `claimed_tgids` map holds the
//! container processes discovery tracks ([`ProcessEvents::watch`]); the kernel
//! adds their children at fork and removes them at exit, reporting both.
//!
//! The set runs under the [driver](crate::driver) like the language sets,
//! in a task of its own: watching a process is adding a target, and its
//! events come out of a channel.
//!
//! Events can still be lost (ring buffer full: counted in `drop_counters`;
//! the map full; a process moved between cgroups without exec), so discovery
//! keeps a slow full rescan, and rescans at once when events were lost
//! ([`ProcessEvent::Lost`]).

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrotel_probe_ebpf::contract::globals;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::warn;

pub use ferrotel_parse::process_events::{ProcessEvent, decode};

use crate::driver::{DecodeError, Driver, Housekeeping, ProgramSet, Sink};
use crate::ebpf::{EbpfError, Global, Kernel, Tuning};
use crate::targets::{ProcessTarget, TargetEvent, TargetPublisher, target_channel};

/// Upper bound on how long a reported event waits in the ring buffer.
const POLL: Duration = Duration::from_millis(50);

/// Pending bytes that wake the reader early (about 85 events).
const WAKEUP_BYTES: u64 = 4096;

/// Ring buffer size: process events are 48 bytes; 256 KiB holds a burst of
/// about 5,000 execs between two polls.
const RING_BYTES: u32 = 256 * 1024;

/// Mirrors `FT_MAX_CLAIMED_TGIDS`: processes beyond it are still found by
/// the rescan, only later.
const MAX_WATCHED: usize = 4096;

/// Events decoded but not yet taken by discovery; past it they are dropped
/// and a rescan is asked for instead.
const CHANNEL_CAPACITY: usize = 8192;

/// The discovery program set (`discovery.bpf.c`): process lifecycles. Its
/// targets are the container processes to follow; the kernel adds their
/// children at fork and removes them at exit.
#[derive(Debug, Default)]
pub struct DiscoverySet {
    /// Kernel drops already turned into [`ProcessEvent::Lost`].
    dropped_seen: u64,
}

impl ProgramSet for DiscoverySet {
    type Output = ProcessEvent;

    fn name(&self) -> &'static str {
        "discovery"
    }

    fn object(&self) -> &'static [u8] {
        ferrotel_probe_ebpf::DISCOVERY
    }

    /// Small and slow: process events are rare next to requests, and a
    /// rescan backs them up.
    fn tuning(&self) -> Tuning {
        Tuning {
            ring_buffer_bytes: RING_BYTES,
            wakeup_bytes: WAKEUP_BYTES,
            poll: POLL,
            // Every exec on the node: a process becomes a container's only
            // when the runtime execs the entrypoint inside its cgroup.
            globals: vec![(globals::REPORT_EXECS, Global::U32(1))],
        }
    }

    fn attach(&mut self, kernel: &mut Kernel) -> Result<(), EbpfError> {
        kernel.attach_process_tracking()?;
        kernel.claims()?;
        Ok(())
    }

    fn decode(&mut self, record: &[u8], out: &mut Vec<ProcessEvent>) -> Result<(), DecodeError> {
        let event = decode(record).ok_or_else(|| {
            DecodeError::new(format!("not a process event ({} bytes)", record.len()))
        })?;
        out.push(event);
        Ok(())
    }

    fn housekeeping(
        &mut self,
        _kernel: &mut Kernel,
        tick: &mut Housekeeping<'_>,
        out: &mut Vec<ProcessEvent>,
    ) {
        let total: u64 = tick.drops.iter().map(|(_, n)| n).sum();
        if total > self.dropped_seen {
            out.push(ProcessEvent::Lost);
        }
        self.dropped_seen = total;
    }

    fn attached(&self, _kernel: &Kernel, targets: &BTreeSet<u32>) -> usize {
        targets.len()
    }
}

/// Hands events to discovery without blocking the driver; when discovery
/// falls behind, events are dropped and one rescan is asked for.
#[derive(Debug)]
struct EventSink {
    tx: mpsc::Sender<ProcessEvent>,
    overflowed: Arc<AtomicBool>,
}

impl Sink<ProcessEvent> for EventSink {
    fn deliver(&mut self, event: ProcessEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(event) {
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }
}

/// The discovery program set, running under the driver in its own task.
#[derive(Debug)]
pub struct ProcessEvents {
    events: mpsc::Receiver<ProcessEvent>,
    overflowed: Arc<AtomicBool>,
    publisher: TargetPublisher,
    watched: HashSet<u32>,
    // Stops the driver when discovery is done with it.
    _stop: DropGuard,
}

impl ProcessEvents {
    /// Loads and attaches the programs. Needs root or CAP_BPF + CAP_PERFMON
    /// and kernel BTF, like the front-ends; must run inside tokio.
    // aya's error is large; this runs once, at startup.
    #[allow(clippy::result_large_err)]
    pub fn start() -> Result<Self, EbpfError> {
        let driver = Driver::load(DiscoverySet::default())?;
        let (publisher, targets) = target_channel();
        let (tx, events) = mpsc::channel(CHANNEL_CAPACITY);
        let overflowed = Arc::new(AtomicBool::new(false));
        let sink = EventSink {
            tx,
            overflowed: overflowed.clone(),
        };
        let stop = CancellationToken::new();
        let run = driver.run(targets, sink, None, stop.clone());
        tokio::spawn(async move {
            if let Err(error) = run.await {
                warn!(error = format!("{error:#}"), "Process events stopped");
            }
        });
        Ok(Self {
            events,
            overflowed,
            publisher,
            watched: HashSet::new(),
            _stop: stop.drop_guard(),
        })
    }

    /// Waits for events and appends them to `out`; an error means the
    /// kernel side stopped (then scan `/proc` instead).
    pub async fn next_batch(&mut self, out: &mut Vec<ProcessEvent>) -> std::io::Result<()> {
        let first = self
            .events
            .recv()
            .await
            .ok_or_else(|| std::io::Error::other("the process event reader stopped"))?;
        out.push(first);
        while let Ok(event) = self.events.try_recv() {
            out.push(event);
        }
        if self.overflowed.swap(false, Ordering::Relaxed) {
            out.push(ProcessEvent::Lost);
        }
        for event in out.iter() {
            match event {
                // The kernel removed it from the map already.
                ProcessEvent::Exit(pid) => {
                    self.watched.remove(pid);
                }
                ProcessEvent::Fork(pid) => {
                    self.watched.insert(*pid);
                }
                ProcessEvent::Exec(_) | ProcessEvent::Lost => {}
            }
        }
        Ok(())
    }

    /// Asks the kernel to report `pid`'s forks and exit.
    pub fn watch(&mut self, pid: u32) {
        if self.watched.contains(&pid) || self.watched.len() >= MAX_WATCHED {
            return;
        }
        self.watched.insert(pid);
        self.publisher.publish(TargetEvent::Added(ProcessTarget {
            pid,
            exe: PathBuf::new(),
            reason: "discovery",
        }));
    }

    /// Makes the watched set exactly `pids` (after a full rescan).
    pub fn sync(&mut self, pids: impl IntoIterator<Item = u32>) {
        let wanted: HashSet<u32> = pids.into_iter().collect();
        let gone: Vec<u32> = self.watched.difference(&wanted).copied().collect();
        for pid in gone {
            self.watched.remove(&pid);
            self.publisher.publish(TargetEvent::Removed(pid));
        }
        for pid in wanted {
            self.watch(pid);
        }
    }
}
