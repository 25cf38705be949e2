//! Span identities the kernel assigned, waiting for the request heads they
//! belong to.
//!
//! With propagation on, the kernel decides a server request's context when
//! it reads the head, and each outgoing request's client span when it sends
//! it (the probe's propagation set), before user space sees either: the requests
//! the application makes meanwhile already carry those ids. The tracker
//! gives its spans the very same ids: a record names the syscall (process,
//! fd, entry time) whose data event holds the head, and the head's first
//! segment is matched against it.

use std::collections::VecDeque;

// Looked up per request by (pid, fd).
use foldhash::HashMap;

use crate::http1::SegmentMeta;
use crate::propagation::events::{ClientContext, Origin, ServerContext};
use crate::trace_context::{ParentKind, SpanContext};

/// Records per connection kept while they wait (pipelined heads in one
/// send each have one); more are dropped oldest first.
const PER_CONNECTION: usize = 8;

/// Kernel-assigned contexts, by connection.
#[derive(Debug, Default)]
pub struct KernelContexts {
    server: HashMap<(u32, i32), VecDeque<ServerContext>>,
    client: HashMap<(u32, i32), VecDeque<ClientContext>>,
    /// Records that never met their head (for diagnostics).
    pub unmatched: u64,
}

fn push<T>(queue: &mut VecDeque<T>, item: T, unmatched: &mut u64) {
    if queue.len() >= PER_CONNECTION {
        queue.pop_front();
        *unmatched += 1;
    }
    queue.push_back(item);
}

/// Takes the entry recorded for the syscall that began the head; older
/// ones (whose heads were never parsed) are dropped.
fn take<T>(
    queue: Option<&mut VecDeque<T>>,
    enter_ns: u64,
    at: impl Fn(&T) -> u64,
    unmatched: &mut u64,
) -> Option<T> {
    let queue = queue?;
    while let Some(front) = queue.front() {
        let ns = at(front);
        if ns == enter_ns {
            return queue.pop_front();
        }
        if ns > enter_ns {
            return None;
        }
        queue.pop_front();
        *unmatched += 1;
    }
    None
}

impl KernelContexts {
    pub fn server_read(&mut self, ctx: ServerContext) {
        let queue = self.server.entry((ctx.pid, ctx.fd)).or_default();
        push(queue, ctx, &mut self.unmatched);
    }

    pub fn client_sent(&mut self, ctx: ClientContext) {
        let Some(fd) = ctx.fd else { return };
        let queue = self.client.entry((ctx.pid, fd)).or_default();
        push(queue, ctx, &mut self.unmatched);
    }

    /// The server span of the head whose first segment is `first`.
    pub fn server_span(&mut self, pid: u32, fd: i32, first: &SegmentMeta) -> Option<SpanContext> {
        let ctx = take(
            self.server.get_mut(&(pid, fd)),
            first.enter_ns,
            |c| c.enter_ns,
            &mut self.unmatched,
        )?;
        let parent_kind = match ctx.origin {
            Origin::NewTrace => ParentKind::Root,
            Origin::Traceparent | Origin::B3 | Origin::Joined => ParentKind::Remote,
        };
        Some(SpanContext {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_span_id: ctx
                .parent_span_id
                .filter(|_| parent_kind == ParentKind::Remote),
            parent_kind,
            sampled: ctx.sampled,
            flags: u8::from(ctx.sampled),
        })
    }

    /// The client span of the head whose first segment is `first`.
    pub fn client_span(&mut self, pid: u32, fd: i32, first: &SegmentMeta) -> Option<SpanContext> {
        let ctx = take(
            self.client.get_mut(&(pid, fd)),
            first.enter_ns,
            |c| c.enter_ns,
            &mut self.unmatched,
        )?;
        if !ctx.span_id.is_valid() {
            return None;
        }
        Some(SpanContext {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_span_id: ctx.parent_span_id,
            parent_kind: if ctx.parent_span_id.is_some() {
                ParentKind::Local
            } else {
                ParentKind::Root
            },
            sampled: ctx.sampled,
            flags: u8::from(ctx.sampled),
        })
    }

    /// The connection is gone (closed, or its fd reused).
    pub fn forget_connection(&mut self, pid: u32, fd: i32) {
        self.server.remove(&(pid, fd));
        self.client.remove(&(pid, fd));
    }

    pub fn forget_process(&mut self, pid: u32) {
        self.server.retain(|(p, _), _| *p != pid);
        self.client.retain(|(p, _), _| *p != pid);
    }
}
