//! Closes uprobe links away from the event loop, many at once.
//!
//! Closing a uprobe makes the kernel wait for an RCU grace period before it
//! returns (`uprobe_unregister_sync`: a tasks-trace grace period and an SRCU
//! one), tens to hundreds of milliseconds on a busy node, once per link. A Go
//! process holds a couple of dozen links: detached on the event loop, one
//! link after the other, a process that exited stalled the loop for about
//! five seconds on a loaded two-core machine, the ring was not drained
//! meanwhile and processes that started then died before the probe could
//! read their executable (measured by `probe/tests/go_churn.rs`). Closing
//! them on threads of their own lets the loop go on, and closing them
//! concurrently lets the waits share grace periods.
//!
//! A link handed over here belongs to a process the program set has already
//! forgotten (its claim and map entries are gone), so a program it still
//! runs for a moment finds nothing to report.

use std::sync::mpsc;
use std::thread::JoinHandle;

use aya::programs::uprobe::UProbeLink;
use tracing::warn;

/// Threads closing one batch at most: each waits out its own grace
/// periods, and concurrent waits share them.
const MAX_CLOSERS: usize = 16;

/// The background closer of a program set's uprobe links.
#[derive(Debug)]
pub struct LinkReaper {
    batches: Option<mpsc::Sender<Vec<UProbeLink>>>,
    thread: Option<JoinHandle<()>>,
}

impl LinkReaper {
    /// Starts the closer thread; `set` names it in logs.
    pub fn start(set: &'static str) -> std::io::Result<Self> {
        let (batches, received) = mpsc::channel::<Vec<UProbeLink>>();
        let thread = std::thread::Builder::new()
            .name(format!("{set}-unlink"))
            .spawn(move || {
                while let Ok(first) = received.recv() {
                    let mut links = first;
                    // Everything handed over meanwhile goes in the same round.
                    while let Ok(more) = received.try_recv() {
                        links.extend(more);
                    }
                    close_concurrently(links);
                }
            })?;
        Ok(Self {
            batches: Some(batches),
            thread: Some(thread),
        })
    }

    /// Hands `links` over to be closed; returns at once.
    pub fn close(&self, links: Vec<UProbeLink>) {
        if links.is_empty() {
            return;
        }
        let count = links.len();
        let Some(batches) = &self.batches else {
            return;
        };
        if let Err(mpsc::SendError(links)) = batches.send(links) {
            // The thread is gone (it cannot panic short of a bug): close
            // here rather than keep the probes.
            warn!(
                links = count,
                "The uprobe closer stopped; closing on the caller's thread"
            );
            drop(links);
        }
    }
}

impl Drop for LinkReaper {
    /// Waits until every link handed over is closed: a stopping probe
    /// leaves no uprobe behind.
    fn drop(&mut self) {
        drop(self.batches.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn close_concurrently(mut links: Vec<UProbeLink>) {
    let per_thread = links.len().div_ceil(MAX_CLOSERS).max(1);
    std::thread::scope(|scope| {
        while !links.is_empty() {
            let rest = links.split_off(links.len().saturating_sub(per_thread));
            // A thread that cannot be started drops its closure, and the
            // links with it, here.
            let _ = std::thread::Builder::new().spawn_scoped(scope, move || drop(rest));
        }
    });
}
