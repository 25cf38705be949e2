//! Analysing a workload's files off the event loop, one at a time, where a
//! failure or a panic costs that analysis only.
//!
//! Inspecting a workload's files (ELF, symbols, DWARF, machine code, a
//! library searched for OpenSSL's code) takes from milliseconds to seconds
//! and reads bytes the workload controls. Done inside a program set's event
//! loop, it would stop the ring buffer from being drained meanwhile; a panic
//! in it would stop the probe. Both ways off the loop run the work on
//! tokio's blocking pool under `catch_unwind`:
//!
//! - [`off_loop`]: one analysis awaited by its caller;
//! - [`Analyzer`]: analyses keyed by what they read (a pid, a file), queued
//!   one at a time (so peak memory is one analysis's limits, whatever the
//!   number of new targets), at most one per key at once (a second request
//!   for a key under analysis joins it), with results handed back through
//!   [`Analyzer::try_next`] and a [`wake-up`](Analyzer::wakeup) the driver
//!   selects on next to the ring buffer, so they are applied on the loop,
//!   with the kernel (the Go set's executables, the socket-level set's
//!   OpenSSL scans).
//!
//! An analysis cancelled while it runs ([`Analyzer::cancel`]) comes back
//! stale and is dropped, so a stale analysis never attaches to a process
//! that is gone (or to a new process that reused its PID).

use std::collections::HashMap;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore, mpsc};

/// Analyses queued or running at most; submissions beyond are refused
/// (and counted by the caller), never buffered without bound.
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// Why an analysis produced nothing usable.
#[derive(Debug)]
pub enum Failure<E> {
    /// The analysis returned an error.
    Failed(E),
    /// The analysis panicked; the message is the panic's.
    Panicked(String),
}

impl<E: std::fmt::Display> std::fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Failed(error) => error.fmt(f),
            Failure::Panicked(message) => write!(f, "the analysis panicked: {message}"),
        }
    }
}

/// Runs `job` on tokio's blocking pool and waits for it; a panic in it is
/// its [`Failure::Panicked`]. Must be called inside a tokio runtime.
pub async fn off_loop<T: Send + 'static, E: Send + 'static>(
    job: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Failure<E>> {
    let outcome = tokio::task::spawn_blocking(move || {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(job));
        // What an analysis read (symbol tables, executables) is dropped by now.
        ferrotel_memory::release_free_heap();
        crate::ebpf::log_memory("analysis", "done");
        outcome
    })
    .await;
    match outcome {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(error))) => Err(Failure::Failed(error)),
        Ok(Err(panic)) => Err(Failure::Panicked(panic_message(panic.as_ref()))),
        Err(join) => Err(Failure::Panicked(join.to_string())),
    }
}

/// The outcome of one analysis.
#[derive(Debug)]
pub struct Analysed<K, T, E> {
    pub key: K,
    pub outcome: Result<T, Failure<E>>,
}

/// A submission was refused: [`DEFAULT_MAX_PENDING`] analyses are already waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pending} analyses are already pending; no more are queued")]
pub struct Busy {
    pub pending: usize,
}

/// Runs submitted analyses one at a time, off the caller's task.
pub struct Analyzer<K, T, E> {
    running: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<(u64, Analysed<K, T, E>)>,
    rx: mpsc::UnboundedReceiver<(u64, Analysed<K, T, E>)>,
    /// Rung after each result is sent (a permit is kept if nobody waits).
    wakeup: Arc<Notify>,
    /// key -> ticket of its submission; results of other tickets are stale.
    pending: HashMap<K, u64>,
    next_ticket: u64,
    max_pending: usize,
}

impl<K, T, E> std::fmt::Debug for Analyzer<K, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("pending", &self.pending.len())
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}

impl<K, T, E> Analyzer<K, T, E>
where
    K: Copy + Eq + Hash + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    /// An analyzer with at most `max_pending` analyses waiting or running.
    pub fn new(max_pending: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            running: Arc::new(Semaphore::new(1)),
            tx,
            rx,
            wakeup: Arc::default(),
            pending: HashMap::new(),
            next_ticket: 0,
            max_pending: max_pending.max(1),
        }
    }

    /// Queues `job`, the analysis of `key`. While `key` is pending, a new
    /// submission runs nothing and returns `Ok(false)`: the result under
    /// way answers it. Must be called inside a tokio runtime.
    pub fn submit(
        &mut self,
        key: K,
        job: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<bool, Busy> {
        if self.pending.contains_key(&key) {
            return Ok(false);
        }
        if self.pending.len() >= self.max_pending {
            return Err(Busy {
                pending: self.pending.len(),
            });
        }
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.pending.insert(key, ticket);
        let running = self.running.clone();
        let tx = self.tx.clone();
        let wakeup = self.wakeup.clone();
        tokio::spawn(async move {
            // One analysis at a time: its memory limits are the probe's
            // worst case, not a multiple of them.
            let Ok(_permit) = running.acquire_owned().await else {
                return;
            };
            let outcome = off_loop(job).await;
            // The receiver is gone only when the set stopped.
            let _ = tx.send((ticket, Analysed { key, outcome }));
            wakeup.notify_one();
        });
        Ok(true)
    }

    /// Whether `key` is being analysed (or queued).
    pub fn is_pending(&self, key: &K) -> bool {
        self.pending.contains_key(key)
    }

    /// Forgets `key`: a result still to come for it is dropped.
    pub fn cancel(&mut self, key: &K) {
        self.pending.remove(key);
    }

    /// Analyses submitted and not yet returned.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Notified after each analysis finishes: then [`try_next`](Self::try_next)
    /// has a result (or a stale one it drops). A notification that finds
    /// nobody waiting is kept for the next wait.
    pub fn wakeup(&self) -> Arc<Notify> {
        self.wakeup.clone()
    }

    /// A finished analysis of a key still wanted, if there is one now.
    pub fn try_next(&mut self) -> Option<Analysed<K, T, E>> {
        while let Ok((ticket, analysed)) = self.rx.try_recv() {
            if self.pending.get(&analysed.key) == Some(&ticket) {
                self.pending.remove(&analysed.key);
                return Some(analysed);
            }
        }
        None
    }

    /// The next finished analysis of a key still wanted. Pends forever when
    /// nothing is pending.
    pub async fn next(&mut self) -> Analysed<K, T, E> {
        loop {
            if let Some(analysed) = self.try_next() {
                return analysed;
            }
            if self.pending.is_empty() {
                return std::future::pending().await;
            }
            self.wakeup.notified().await;
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
    async fn a_panicking_analysis_costs_its_key_only() {
        let mut analyzer: Analyzer<u32, u32, String> = Analyzer::new(8);
        for pid in [1, 2, 3] {
            analyzer
                .submit(pid, move || {
                    if pid == 2 {
                        panic!("crafted binary {pid}");
                    }
                    Ok(pid * 10)
                })
                .expect("room in the queue");
        }
        let mut results = HashMap::new();
        for _ in 0..3 {
            let analysed = analyzer.next().await;
            results.insert(analysed.key, analysed.outcome);
        }
        assert!(matches!(results[&1], Ok(10)), "{results:?}");
        assert!(matches!(results[&3], Ok(30)), "{results:?}");
        match &results[&2] {
            Err(Failure::Panicked(message)) => assert!(message.contains("crafted binary 2")),
            other => panic!("the panic must be reported as the key's failure: {other:?}"),
        }
        assert_eq!(analyzer.pending(), 0);
    }

    #[tokio::test]
    async fn cancelled_keys_never_come_back_and_a_pending_key_is_analysed_once() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().expect("gate");
        let runs = Arc::new(Mutex::new(Vec::new()));
        let mut analyzer: Analyzer<u32, u32, ()> = Analyzer::new(8);
        let job = |pid: u32| {
            let gate = gate.clone();
            let runs = runs.clone();
            move || {
                drop(gate.lock().expect("gate"));
                runs.lock().expect("runs").push(pid);
                Ok(pid)
            }
        };
        assert_eq!(analyzer.submit(7, job(7)), Ok(true));
        assert_eq!(analyzer.submit(8, job(8)), Ok(true));
        assert_eq!(
            analyzer.submit(8, job(8)),
            Ok(false),
            "a key under analysis joins it"
        );
        analyzer.cancel(&7);
        assert_eq!(analyzer.pending(), 1);
        drop(held);
        let analysed = analyzer.next().await;
        assert_eq!(analysed.key, 8);
        assert_eq!(analyzer.pending(), 0);
        assert_eq!(
            *runs.lock().expect("runs"),
            [7, 8],
            "8 ran once; 7 ran (it had started) and its result was dropped"
        );
        assert!(analyzer.try_next().is_none(), "nothing else is in flight");
    }

    #[tokio::test]
    async fn submissions_beyond_the_bound_are_refused() {
        let mut analyzer: Analyzer<u32, (), ()> = Analyzer::new(2);
        analyzer.submit(1, || Ok(())).expect("first");
        analyzer.submit(2, || Ok(())).expect("second");
        assert_eq!(analyzer.submit(3, || Ok(())), Err(Busy { pending: 2 }));
        assert_eq!(
            analyzer.submit(2, || Ok(())),
            Ok(false),
            "a pending key may be asked for again"
        );
    }
}
