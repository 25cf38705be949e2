//! Which connection a client span's request went out on, from the records
//! of the propagation sk_msg program ([`ClientContext`]): the pairing of a
//! client span with a connection tuple.
//!
//! # How to consume it
//!
//! Feed every [`ClientContext`] a propagation set reports to
//! [`Pairings::record`], then:
//!
//! - [`Pairings::connection_of`] (span id → the connection's two ends) gives
//!   a client span its `network.peer.*`/`client.*` addresses when its
//!   front-end does not read them (the Go set does this);
//! - [`Pairings::client_of`] (a server's peer address + the request's start
//!   → the client span) tells which client span sent the request a server
//!   span received, when both ends are traced by this probe. The server's
//!   peer is the client's local address even through a Service's DNAT; the
//!   client span must have started before the server span did.
//!
//! Across probes (a Python client and a Go server are traced by different
//! processes) there is nothing to pair in user space: with propagation on,
//! the server span's parent *is* the client span (carried in the request,
//! or joined in the kernel through the node-wide map), so a service-graph
//! edge is a parent/child link of one trace.
//!
//! Bounded: at most [`Pairings::CAPACITY`] spans are remembered, the oldest
//! forgotten first, and nothing older than [`Pairings::TTL_NS`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use super::events::ClientContext;
use crate::telemetry::trace_context::{SpanId, TraceId};

/// One client span and its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientEnd {
    pub pid: u32,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The client's end of the connection.
    pub local: SocketAddr,
    /// The address it connected to (a Service's, before DNAT).
    pub peer: Option<SocketAddr>,
    /// When the request head was sent (kernel monotonic ns).
    pub sent_ns: u64,
}

/// Recent client spans by span id and by client address.
#[derive(Debug, Default)]
pub struct Pairings {
    order: VecDeque<SpanId>,
    by_span: HashMap<SpanId, ClientEnd>,
    /// Client address -> span ids sent from it, oldest first.
    by_local: HashMap<SocketAddr, VecDeque<SpanId>>,
}

impl Pairings {
    /// Spans remembered at most.
    pub const CAPACITY: usize = 16_384;
    /// How long a span is remembered (a request plus its response, with a
    /// wide margin).
    pub const TTL_NS: u64 = 60_000_000_000;

    /// Remembers the span of an outgoing request head, if it had one and
    /// its connection's address is known.
    pub fn record(&mut self, ctx: &ClientContext) {
        let sent_ns = ctx.ts_ns;
        let Some(local) = ctx.local else { return };
        if !ctx.span_id.is_valid() {
            return;
        }
        self.expire(sent_ns);
        while self.by_span.len() >= Self::CAPACITY {
            self.forget_oldest();
        }
        let end = ClientEnd {
            pid: ctx.pid,
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            local,
            peer: ctx.peer,
            sent_ns,
        };
        if self.by_span.insert(ctx.span_id, end).is_none() {
            self.order.push_back(ctx.span_id);
        }
        self.by_local
            .entry(local)
            .or_default()
            .push_back(ctx.span_id);
    }

    /// The connection a client span's request went out on.
    pub fn connection_of(&self, span_id: SpanId) -> Option<&ClientEnd> {
        self.by_span.get(&span_id)
    }

    /// The latest client span sent from `server_peer` at or before
    /// `server_start_ns`: the one whose request the server received.
    pub fn client_of(&self, server_peer: SocketAddr, server_start_ns: u64) -> Option<&ClientEnd> {
        self.by_local
            .get(&server_peer)?
            .iter()
            .rev()
            .filter_map(|id| self.by_span.get(id))
            .find(|end| end.sent_ns <= server_start_ns)
    }

    /// Spans remembered now.
    pub fn len(&self) -> usize {
        self.by_span.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_span.is_empty()
    }

    fn expire(&mut self, now_ns: u64) {
        while let Some(oldest) = self.order.front().and_then(|id| self.by_span.get(id)) {
            if now_ns.saturating_sub(oldest.sent_ns) <= Self::TTL_NS {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some(id) = self.order.pop_front() else {
            return;
        };
        let Some(end) = self.by_span.remove(&id) else {
            return;
        };
        if let Some(ids) = self.by_local.get_mut(&end.local) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_local.remove(&end.local);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::events::Outcome;

    fn ctx(span: u8, local: &str, ts_ns: u64) -> ClientContext {
        ClientContext {
            cookie: 1,
            pid: 1,
            tid: 1,
            ts_ns,
            fd: Some(3),
            enter_ns: 0,
            outcome: Outcome::Injected,
            local: Some(local.parse().unwrap()),
            peer: Some("10.0.0.9:80".parse().unwrap()),
            trace_id: TraceId([7; 16]),
            span_id: SpanId([span; 8]),
            parent_span_id: None,
            sampled: true,
        }
    }

    #[test]
    fn a_server_finds_the_client_span_sent_from_its_peer_before_it_started() {
        let mut pairings = Pairings::default();
        pairings.record(&ctx(1, "10.0.0.1:40000", 100));
        pairings.record(&ctx(2, "10.0.0.1:40000", 300));
        pairings.record(&ctx(3, "10.0.0.2:40000", 150));
        let peer = "10.0.0.1:40000".parse().unwrap();
        assert_eq!(
            pairings.client_of(peer, 200).map(|e| e.span_id),
            Some(SpanId([1; 8])),
            "keep-alive: the request sent before the server started, not the later one"
        );
        assert_eq!(
            pairings.client_of(peer, 400).map(|e| e.span_id),
            Some(SpanId([2; 8]))
        );
        assert_eq!(pairings.client_of(peer, 50), None, "nothing was sent yet");
        assert_eq!(
            pairings
                .connection_of(SpanId([3; 8]))
                .map(|e| e.local.to_string()),
            Some("10.0.0.2:40000".to_owned())
        );
    }

    #[test]
    fn memory_is_bounded_by_capacity_and_age() {
        let mut pairings = Pairings::default();
        pairings.record(&ctx(1, "10.0.0.1:1", 0));
        pairings.record(&ctx(2, "10.0.0.1:2", Pairings::TTL_NS + 1));
        assert_eq!(pairings.len(), 1, "the expired span is forgotten");
        assert!(pairings.connection_of(SpanId([1; 8])).is_none());
        for i in 0..(Pairings::CAPACITY + 10) {
            let mut c = ctx(0, "10.0.0.3:3", Pairings::TTL_NS + 2);
            c.span_id = SpanId((i as u64 + 1).to_be_bytes());
            pairings.record(&c);
        }
        assert_eq!(pairings.len(), Pairings::CAPACITY);
    }
}
