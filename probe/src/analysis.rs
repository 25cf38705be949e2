//! Analysing a target off the event loop, one at a time, where a failure
//! or a panic costs that target only.
//!
//! Inspecting a workload's executable (ELF, symbols, DWARF, machine code)
//! takes from milliseconds to seconds and reads bytes the workload
//! controls. Done inside a front-end's event loop, it would stop the ring
//! buffer from being drained meanwhile; a panic in it would stop the
//! probe. The [`Analyzer`] runs each analysis on tokio's blocking pool
//! under `catch_unwind`, one at a time (so peak memory is one analysis's
//! limits, whatever the number of new targets), and hands results back
//! through [`Analyzer::next`], which the event loop selects on next to the
//! ring buffer.
//!
//! A target removed while its analysis runs is forgotten
//! ([`Analyzer::cancel`]): its result is dropped, so a stale analysis never
//! attaches to a process that is gone (or to a new process that reused its
//! PID).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

/// Analyses queued or running at most; submissions beyond are refused
/// (and counted by the caller), never buffered without bound.
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// Why a target's analysis produced nothing usable.
#[derive(Debug)]
pub enum Failure<E> {
    /// The analysis returned an error.
    Failed(E),
    /// The analysis panicked; the message is the panic's.
    Panicked(String),
}

/// The outcome of one target's analysis.
#[derive(Debug)]
pub struct Analysed<T, E> {
    pub pid: u32,
    pub outcome: Result<T, Failure<E>>,
}

/// A submission was refused: [`DEFAULT_MAX_PENDING`] analyses are already waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pending} analyses are already pending; pid {pid} was not queued")]
pub struct Busy {
    pub pid: u32,
    pub pending: usize,
}

type AnalyzeFn<T, E> = dyn Fn(u32) -> Result<T, E> + Send + Sync;

/// Runs `analyze(pid)` for submitted targets, one at a time, off the
/// caller's task.
pub struct Analyzer<T, E> {
    analyze: Arc<AnalyzeFn<T, E>>,
    running: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<(u64, Analysed<T, E>)>,
    rx: mpsc::UnboundedReceiver<(u64, Analysed<T, E>)>,
    /// pid -> ticket of its newest submission; results of other tickets are stale.
    pending: HashMap<u32, u64>,
    next_ticket: u64,
    max_pending: usize,
}

impl<T, E> std::fmt::Debug for Analyzer<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("pending", &self.pending.len())
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static, E: Send + 'static> Analyzer<T, E> {
    /// An analyzer calling `analyze` with at most `max_pending` targets
    /// waiting or running.
    pub fn new(
        max_pending: usize,
        analyze: impl Fn(u32) -> Result<T, E> + Send + Sync + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            analyze: Arc::new(analyze),
            running: Arc::new(Semaphore::new(1)),
            tx,
            rx,
            pending: HashMap::new(),
            next_ticket: 0,
            max_pending: max_pending.max(1),
        }
    }

    /// Queues the analysis of `pid` (a newer submission for the same pid
    /// supersedes an older one). Must be called inside a tokio runtime.
    pub fn submit(&mut self, pid: u32) -> Result<(), Busy> {
        if !self.pending.contains_key(&pid) && self.pending.len() >= self.max_pending {
            return Err(Busy {
                pid,
                pending: self.pending.len(),
            });
        }
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.pending.insert(pid, ticket);
        let analyze = self.analyze.clone();
        let running = self.running.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // One analysis at a time: its memory limits are the probe's
            // worst case, not a multiple of them.
            let Ok(_permit) = running.acquire_owned().await else {
                return;
            };
            let outcome = tokio::task::spawn_blocking(move || {
                std::panic::catch_unwind(AssertUnwindSafe(|| analyze(pid)))
            })
            .await;
            let outcome = match outcome {
                Ok(Ok(Ok(value))) => Ok(value),
                Ok(Ok(Err(error))) => Err(Failure::Failed(error)),
                Ok(Err(panic)) => Err(Failure::Panicked(panic_message(panic.as_ref()))),
                Err(join) => Err(Failure::Panicked(join.to_string())),
            };
            // The receiver is gone only when the front-end stopped.
            let _ = tx.send((ticket, Analysed { pid, outcome }));
        });
        Ok(())
    }

    /// Forgets `pid`: a result still to come for it is dropped.
    pub fn cancel(&mut self, pid: u32) {
        self.pending.remove(&pid);
    }

    /// Targets submitted and not yet returned by [`next`](Self::next).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The next finished analysis of a target still wanted. Cancel-safe
    /// (usable in `tokio::select!`); pends forever when nothing is pending.
    pub async fn next(&mut self) -> Analysed<T, E> {
        loop {
            let Some((ticket, analysed)) = self.rx.recv().await else {
                // Unreachable while `self.tx` lives; pend like an idle branch.
                return std::future::pending().await;
            };
            if self.pending.get(&analysed.pid) == Some(&ticket) {
                self.pending.remove(&analysed.pid);
                return analysed;
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn a_panicking_analysis_costs_its_target_only() {
        let mut analyzer: Analyzer<u32, String> = Analyzer::new(8, |pid| {
            if pid == 2 {
                panic!("crafted binary {pid}");
            }
            Ok(pid * 10)
        });
        for pid in [1, 2, 3] {
            analyzer.submit(pid).expect("room in the queue");
        }
        let mut results = HashMap::new();
        for _ in 0..3 {
            let analysed = analyzer.next().await;
            results.insert(analysed.pid, analysed.outcome);
        }
        assert!(matches!(results[&1], Ok(10)), "{results:?}");
        assert!(matches!(results[&3], Ok(30)), "{results:?}");
        match &results[&2] {
            Err(Failure::Panicked(message)) => assert!(message.contains("crafted binary 2")),
            other => panic!("the panic must be reported as the target's failure: {other:?}"),
        }
        assert_eq!(analyzer.pending(), 0);
    }

    #[tokio::test]
    async fn cancelled_targets_never_come_back_and_resubmissions_supersede() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().expect("gate");
        let worker_gate = gate.clone();
        let mut analyzer: Analyzer<u32, ()> = Analyzer::new(8, move |pid| {
            drop(worker_gate.lock().expect("gate"));
            Ok(pid)
        });
        analyzer.submit(7).expect("queued");
        analyzer.submit(8).expect("queued");
        analyzer
            .submit(8)
            .expect("a resubmission replaces the first");
        analyzer.cancel(7);
        assert_eq!(analyzer.pending(), 1);
        drop(held);
        let analysed = analyzer.next().await;
        assert_eq!(analysed.pid, 8);
        assert_eq!(
            analyzer.pending(),
            0,
            "the superseded result of 8 is dropped too"
        );
        // Analyses run one at a time in submission order, so 7 and the
        // first 8 finished (and were dropped) before the last 8 came back.
        assert!(analyzer.rx.try_recv().is_err(), "nothing else is in flight");
    }

    #[tokio::test]
    async fn submissions_beyond_the_bound_are_refused() {
        let mut analyzer: Analyzer<(), ()> = Analyzer::new(2, |_| Ok(()));
        analyzer.submit(1).expect("first");
        analyzer.submit(2).expect("second");
        assert_eq!(analyzer.submit(3), Err(Busy { pid: 3, pending: 2 }));
        analyzer
            .submit(2)
            .expect("a pending pid may be resubmitted");
    }
}
