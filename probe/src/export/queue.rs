//! The bounded export queue.
//!
//! Capacity counts queued items *and* items of the batch being exported
//! (retried), so memory stays bounded during a collector outage: a 30 s
//! outage loses nothing as long as what arrives meanwhile fits, and beyond
//! that the newest items are dropped and counted (`export_dropped_items`,
//! reason `queue_full`). Dropping the newest rather than the oldest keeps
//! the batch under retry intact and costs no extra copying.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::health::Health;
use crate::telemetry::pipeline::{QueuedSpan, SpanQueue};

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    in_flight: usize,
    closed: bool,
}

/// A bounded multi-producer queue drained in batches by one exporter.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
    batch_size: usize,
    /// Wakes the exporter when a full batch is ready or the queue closes.
    ready: Notify,
    health: Health,
    signal: &'static str,
}

impl<T> BoundedQueue<T> {
    /// A queue for `signal` (`traces`) holding at most `capacity` items,
    /// waking the exporter once `batch_size` items are waiting.
    pub fn new(capacity: usize, batch_size: usize, signal: &'static str, health: Health) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                in_flight: 0,
                closed: false,
            }),
            capacity: capacity.max(1),
            batch_size: batch_size.clamp(1, capacity.max(1)),
            ready: Notify::new(),
            health,
            signal,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Enqueues `item`; `false` (and counted) if the queue is full or closed.
    pub fn push(&self, item: T) -> bool {
        let (accepted, waiting, wake) = {
            let mut inner = self.inner.lock().expect("queue lock");
            if inner.closed {
                drop(inner);
                self.health.export_dropped(self.signal, "shutdown", 1);
                return false;
            }
            if inner.items.len() + inner.in_flight >= self.capacity {
                (false, inner.items.len() + inner.in_flight, false)
            } else {
                inner.items.push_back(item);
                (
                    true,
                    inner.items.len() + inner.in_flight,
                    inner.items.len() >= self.batch_size,
                )
            }
        };
        if accepted {
            self.health.set_export_queue_items(self.signal, waiting);
        } else {
            self.health.export_dropped(self.signal, "queue_full", 1);
        }
        if wake {
            self.ready.notify_one();
        }
        accepted
    }

    /// Takes up to one batch; its items stay counted against the capacity
    /// until [`BoundedQueue::complete`].
    pub fn take_batch(&self) -> Vec<T> {
        let mut inner = self.inner.lock().expect("queue lock");
        let n = inner.items.len().min(self.batch_size);
        inner.in_flight += n;
        inner.items.drain(..n).collect()
    }

    /// The batch of `n` items taken last is done (exported or dropped).
    pub fn complete(&self, n: usize) {
        let waiting = {
            let mut inner = self.inner.lock().expect("queue lock");
            inner.in_flight = inner.in_flight.saturating_sub(n);
            inner.items.len() + inner.in_flight
        };
        self.health.set_export_queue_items(self.signal, waiting);
    }

    /// Items queued, not counting the batch in flight.
    pub fn queued(&self) -> usize {
        self.inner.lock().expect("queue lock").items.len()
    }

    /// Whether at least a full batch is waiting.
    pub fn has_full_batch(&self) -> bool {
        self.queued() >= self.batch_size
    }

    /// Stops accepting items and wakes the exporter for its final flush.
    pub fn close(&self) {
        self.inner.lock().expect("queue lock").closed = true;
        self.ready.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().expect("queue lock").closed
    }

    /// Resolves when a full batch is waiting or the queue was closed
    /// (possibly spuriously; callers re-check).
    pub async fn wait_ready(&self) {
        if self.has_full_batch() || self.is_closed() {
            return;
        }
        self.ready.notified().await;
    }
}

impl SpanQueue for BoundedQueue<QueuedSpan> {
    fn push(&self, span: QueuedSpan) {
        // A full queue counts the drop itself.
        BoundedQueue::push(self, span);
    }

    fn close(&self) {
        BoundedQueue::close(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_in_flight_count_against_the_capacity_and_overflow_is_counted() {
        let health = Health::new();
        let queue = BoundedQueue::new(4, 2, "traces", health.clone());
        for i in 0..3 {
            assert!(queue.push(i), "item {i} fits");
        }
        let batch = queue.take_batch();
        assert_eq!(
            batch,
            vec![0, 1],
            "a batch is at most batch_size, oldest first"
        );
        assert!(queue.push(3), "1 queued + 2 in flight + 1 = capacity 4");
        assert!(
            !queue.push(4),
            "the fifth item exceeds the capacity while the batch is in flight"
        );
        assert_eq!(
            health.export_dropped_total("traces", "queue_full"),
            1,
            "the drop is counted"
        );
        queue.complete(2);
        assert!(queue.push(5), "completing the batch frees room");
        assert_eq!(queue.take_batch(), vec![2, 3]);
        queue.close();
        assert!(!queue.push(6), "a closed queue rejects");
        assert_eq!(health.export_dropped_total("traces", "shutdown"), 1);
    }
}
