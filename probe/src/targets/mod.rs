//! Which processes a probe instruments.
//!
//! A resolver (standalone: [`standalone`], scanning `/proc`; Kubernetes: the
//! discovery module) publishes [`TargetEvent`]s; the language front-end
//! consumes them from [`TargetEvents`] and attaches to / detaches from the
//! processes. The resolver sends `Added` once per process and `Removed` when
//! it exits or stops matching, so a front-end can keep a plain set.

pub mod kubernetes;
pub mod standalone;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ledger::ProcessLedger;
use crate::targets::kubernetes::peers::PeerIndex;
use crate::telemetry::resource::ResourceRegistry;
use crate::views::pods::NodePods;

/// Whether process `pid` has exited: it is gone from `/proc`, or it is a
/// zombie (its `exe` link reads ENOENT once the process has released its
/// memory). A PID the kernel has given to a new process counts as running.
pub fn process_gone(pid: u32) -> bool {
    matches!(
        std::fs::read_link(format!("/proc/{pid}/exe")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    )
}

/// A process the front-end should instrument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessTarget {
    /// Host PID (tgid).
    pub pid: u32,
    /// `/proc/<pid>/exe` as resolved when the process was claimed (used to
    /// open the ELF for uprobes; may be `(deleted)` if replaced on disk).
    pub exe: PathBuf,
    /// Why it was claimed, for logs: `pid`, `exe_path`, `open_port`, `kubernetes`.
    pub reason: &'static str,
}

/// A change in the set of claimed processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetEvent {
    Added(ProcessTarget),
    Removed(u32),
}

/// The front-end's end of the target stream.
#[derive(Debug)]
pub struct TargetEvents {
    rx: mpsc::UnboundedReceiver<TargetEvent>,
    ledger: ProcessLedger,
}

/// The resolver's end of the target stream. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TargetPublisher {
    tx: mpsc::UnboundedSender<TargetEvent>,
    /// A second consumer of the same events (the profiler).
    mirror: Option<mpsc::UnboundedSender<TargetEvent>>,
    ledger: ProcessLedger,
}

/// A connected publisher/receiver pair. Unbounded because events are rare
/// (process starts and exits) and a resolver must never block on a busy
/// front-end. Both ends share one [`ProcessLedger`]: the resolver writes
/// its decisions there, the front-end what it did with each claim.
pub fn target_channel() -> (TargetPublisher, TargetEvents) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ledger = ProcessLedger::new();
    (
        TargetPublisher {
            tx,
            mirror: None,
            ledger: ledger.clone(),
        },
        TargetEvents { rx, ledger },
    )
}

impl TargetEvents {
    /// The next change; `None` once every publisher is gone.
    pub async fn next(&mut self) -> Option<TargetEvent> {
        self.rx.recv().await
    }

    /// A change if one is queued, without waiting.
    pub fn try_next(&mut self) -> Option<TargetEvent> {
        self.rx.try_recv().ok()
    }

    /// Where the front-end records what it did with each target.
    pub fn ledger(&self) -> &ProcessLedger {
        &self.ledger
    }
}

impl TargetPublisher {
    /// Sends `event`; returns `false` if the front-end is gone.
    pub fn publish(&self, event: TargetEvent) -> bool {
        if let Some(mirror) = &self.mirror {
            let _ = mirror.send(event.clone());
        }
        self.tx.send(event).is_ok()
    }

    /// Also delivers every event to a second stream, returned. Its ledger is
    /// its own: `/debug/processes` reports what the front-end did, and a
    /// mirror (the profiler) must not overwrite that.
    pub fn mirrored(mut self) -> (Self, TargetEvents) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.mirror = Some(tx);
        (
            self,
            TargetEvents {
                rx,
                ledger: ProcessLedger::new(),
            },
        )
    }

    /// Where the resolver records its per-process decisions.
    pub fn ledger(&self) -> &ProcessLedger {
        &self.ledger
    }
}

/// A boxed target source task.
pub type TargetTask = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// How processes are selected: the standalone `/proc` resolver, or another
/// source (Kubernetes discovery) given as a closure that receives a
/// [`TargetContext`].
pub enum TargetSource {
    Standalone,
    Custom(Box<dyn FnOnce(TargetContext) -> TargetTask + Send>),
}

/// What a custom target source gets from the runtime.
#[derive(Debug)]
pub struct TargetContext {
    pub publisher: TargetPublisher,
    /// Where claimed processes' resource attributes go.
    pub registry: ResourceRegistry,
    /// Where peer addresses' names go (the service graph reads it).
    pub peers: PeerIndex,
    /// Where this node's pods go (pod resources and TCP health read it).
    pub pods: NodePods,
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for TargetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSource::Standalone => f.write_str("Standalone"),
            TargetSource::Custom(_) => f.write_str("Custom"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_gone_once_reaped_or_a_zombie_and_not_while_it_runs() {
        assert!(!process_gone(std::process::id()), "this test's own process");
        assert!(process_gone(crate::telemetry::metrics::exited_pid()));

        // A zombie: exited, not reaped yet. Its /proc entry is still there.
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn `true`");
        let pid = child.id();
        let stat = format!("/proc/{pid}/stat");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(&stat).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.starts_with(" Z"))
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "pid {pid} never became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(process_gone(pid), "a zombie has exited");
        child.wait().expect("reap `true`");
    }
}
