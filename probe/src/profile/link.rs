//! Trace ↔ profile links, joined in user space: a sample taken on thread
//! (Python) or goroutine (Go) T at time t belongs to the innermost sampled
//! span that the same thread or goroutine served around t.
//!
//! The tracers report a span only when its request ends, after the samples
//! taken during it, so a window's samples are linked when the window is
//! closed, a grace period after its end. Python spans are known only in
//! user space (ids are assigned by the tracker), so a kernel-side link
//! (the upstream profiler's `traces_ctx_v1` map, keyed by thread) could not
//! serve them; the join here serves both languages alike.

use std::collections::{HashMap, VecDeque};

use super::model::SpanLink;
use crate::telemetry::RequestRecord;

/// One sampled span's lifetime on one thread or goroutine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanInterval {
    pub pid: u32,
    /// Thread id (Python) or goroutine id truncated to 32 bits (Go), as the
    /// front-ends report in [`RequestRecord::tid`].
    pub thread: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub link: SpanLink,
}

impl SpanInterval {
    /// The interval of a sampled record; `None` for unsampled ones (they
    /// are never exported, so nothing could follow a link to them).
    pub fn of(record: &RequestRecord) -> Option<Self> {
        record.span.sampled.then_some(Self {
            pid: record.pid,
            thread: record.tid,
            start_ns: record.start_ns,
            end_ns: record.end_ns,
            link: SpanLink {
                trace_id: record.span.trace_id.0,
                span_id: record.span.span_id.0,
            },
        })
    }
}

/// Recent spans by (pid, thread), bounded.
#[derive(Debug)]
pub struct SpanIndex {
    by_thread: HashMap<(u32, u32), VecDeque<SpanInterval>>,
    len: usize,
    capacity: usize,
    /// Spans not indexed because the index was full.
    pub dropped: u64,
}

impl SpanIndex {
    pub fn new(capacity: usize) -> Self {
        Self {
            by_thread: HashMap::new(),
            len: 0,
            capacity,
            dropped: 0,
        }
    }

    pub fn insert(&mut self, span: SpanInterval) {
        if self.len >= self.capacity {
            self.dropped += 1;
            return;
        }
        self.by_thread
            .entry((span.pid, span.thread))
            .or_default()
            .push_back(span);
        self.len += 1;
    }

    /// The innermost span on (pid, thread) that contains `ts_ns`.
    pub fn find(&self, pid: u32, thread: u32, ts_ns: u64) -> Option<SpanLink> {
        self.by_thread
            .get(&(pid, thread))?
            .iter()
            .filter(|s| s.start_ns <= ts_ns && ts_ns <= s.end_ns)
            .max_by_key(|s| s.start_ns)
            .map(|s| s.link)
    }

    /// Forgets spans that ended before `ts_ns`.
    pub fn expire(&mut self, ts_ns: u64) {
        let mut removed = 0;
        self.by_thread.retain(|_, spans| {
            let before = spans.len();
            spans.retain(|s| s.end_ns >= ts_ns);
            removed += before - spans.len();
            !spans.is_empty()
        });
        self.len -= removed;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(thread: u32, start: u64, end: u64, id: u8) -> SpanInterval {
        SpanInterval {
            pid: 1,
            thread,
            start_ns: start,
            end_ns: end,
            link: SpanLink {
                trace_id: [id; 16],
                span_id: [id; 8],
            },
        }
    }

    #[test]
    fn the_innermost_span_of_the_same_thread_wins() {
        let mut index = SpanIndex::new(10);
        index.insert(span(5, 100, 500, 1)); // server span
        index.insert(span(5, 200, 300, 2)); // client call inside it
        index.insert(span(6, 100, 500, 3)); // another thread
        assert_eq!(index.find(1, 5, 250).map(|l| l.span_id[0]), Some(2));
        assert_eq!(index.find(1, 5, 400).map(|l| l.span_id[0]), Some(1));
        assert_eq!(index.find(1, 5, 600), None, "after the span");
        assert_eq!(index.find(1, 7, 250), None, "no span on that thread");
        index.expire(450);
        assert_eq!(index.len(), 2, "the client span ended before 450");
    }

    #[test]
    fn a_full_index_drops_and_counts() {
        let mut index = SpanIndex::new(1);
        index.insert(span(1, 0, 1, 1));
        index.insert(span(1, 0, 1, 2));
        assert_eq!(index.dropped, 1);
        assert_eq!(index.len(), 1);
    }
}
