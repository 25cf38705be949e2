//! The bounded export queue.
//!
//! Capacity counts queued items *and* items of the batch being exported
//! (retried), so memory stays bounded during a collector outage: a 30 s
//! outage loses nothing as long as what arrives meanwhile fits, and beyond
//! that the newest items are dropped and counted (`export_dropped_items`,
//! reason `queue_full`). Dropping the newest rather than the oldest keeps
//! the batch under retry intact and costs no extra copying.
//!
//! Items of one size (spans) weigh 1 each, so the capacity is a number of
//! items. Items whose size varies a lot (a profile window holds from one to
//! thousands of stacks) are weighed ([`BoundedQueue::weighed`]), and the
//! capacity is then in the weight's unit (bytes, estimated).

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::health::Health;
use crate::telemetry::pipeline::{QueuedSpan, SpanQueue};

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    /// Weight of `items`.
    queued_weight: usize,
    /// Items and weight of the batches taken and not yet completed.
    in_flight: usize,
    in_flight_weight: usize,
    closed: bool,
}

/// A bounded multi-producer queue drained in batches by one exporter.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
    batch_size: usize,
    batch_weight: usize,
    weigh: fn(&T) -> usize,
    /// Wakes the exporter when a full batch is ready or the queue closes.
    ready: Notify,
    health: Health,
    signal: &'static str,
}

impl<T> BoundedQueue<T> {
    /// A queue for `signal` (`traces`) holding at most `capacity` items,
    /// waking the exporter once `batch_size` items are waiting.
    pub fn new(capacity: usize, batch_size: usize, signal: &'static str, health: Health) -> Self {
        Self::weighed(capacity, batch_size, usize::MAX, signal, health, |_| 1)
    }

    /// Like [`BoundedQueue::new`], but the items held (queued and in
    /// flight) weigh at most `capacity` in total, each weighing `weigh(item)`
    /// (which must not change while the item is queued). A batch is at most
    /// `batch_size` items weighing at most `batch_weight`: a request has a
    /// size limit at the receiver, so an item heavier than that alone is
    /// refused and counted (`too_large`) rather than retried forever.
    pub fn weighed(
        capacity: usize,
        batch_size: usize,
        batch_weight: usize,
        signal: &'static str,
        health: Health,
        weigh: fn(&T) -> usize,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                queued_weight: 0,
                in_flight: 0,
                in_flight_weight: 0,
                closed: false,
            }),
            capacity: capacity.max(1),
            batch_size: batch_size.clamp(1, capacity.max(1)),
            batch_weight,
            weigh,
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

    /// Enqueues `item`; `false` (and counted) if it does not fit or the
    /// queue is closed.
    pub fn push(&self, item: T) -> bool {
        let weight = (self.weigh)(&item);
        if weight > self.batch_weight {
            self.health.export_dropped(self.signal, "too_large", 1);
            return false;
        }
        let (accepted, waiting, wake) = {
            let mut inner = self.inner.lock().expect("queue lock");
            if inner.closed {
                drop(inner);
                self.health.export_dropped(self.signal, "shutdown", 1);
                return false;
            }
            if inner.queued_weight + inner.in_flight_weight + weight > self.capacity {
                (false, inner.items.len() + inner.in_flight, false)
            } else {
                inner.items.push_back(item);
                inner.queued_weight += weight;
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
        let mut n = 0;
        let mut weight = 0;
        for item in inner.items.iter().take(self.batch_size) {
            let w = (self.weigh)(item);
            if n > 0 && weight + w > self.batch_weight {
                break;
            }
            n += 1;
            weight += w;
        }
        let batch: Vec<T> = inner.items.drain(..n).collect();
        inner.queued_weight -= weight;
        inner.in_flight += n;
        inner.in_flight_weight += weight;
        batch
    }

    /// The batches taken so far are done (exported or dropped): their room
    /// is free again. One exporter takes one batch at a time.
    pub fn complete(&self) {
        let waiting = {
            let mut inner = self.inner.lock().expect("queue lock");
            inner.in_flight = 0;
            inner.in_flight_weight = 0;
            inner.items.len()
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
        queue.complete();
        assert!(queue.push(5), "completing the batch frees room");
        assert_eq!(queue.take_batch(), vec![2, 3]);
        queue.close();
        assert!(!queue.push(6), "a closed queue rejects");
        assert_eq!(health.export_dropped_total("traces", "shutdown"), 1);
    }

    #[test]
    fn a_weighed_queue_holds_items_up_to_their_total_weight() {
        let health = Health::new();
        let queue: BoundedQueue<usize> =
            BoundedQueue::weighed(100, 3, 95, "profiles", health.clone(), |w| *w);
        assert!(queue.push(60), "60 of 100");
        assert!(queue.push(30), "90 of 100");
        assert!(!queue.push(20), "110 would exceed 100");
        assert!(queue.push(10), "exactly 100 fits");
        assert_eq!(
            health.export_dropped_total("profiles", "queue_full"),
            1,
            "the item that did not fit is counted, as one item"
        );
        assert_eq!(
            queue.take_batch(),
            vec![60, 30],
            "a batch stops before the item that would make it weigh over 95"
        );
        assert!(
            !queue.push(1),
            "the batch in flight still weighs against the capacity"
        );
        queue.complete();
        assert!(queue.push(90), "its weight is free once it is done");
        assert_eq!(queue.take_batch(), vec![10], "10 + 90 would weigh over 95");
        queue.complete();
        assert_eq!(queue.take_batch(), vec![90]);
        queue.complete();
        assert!(
            !queue.push(96),
            "an item heavier than a batch may weigh is refused"
        );
        assert_eq!(
            health.export_dropped_total("profiles", "too_large"),
            1,
            "and counted"
        );
    }
}
