//! Pairing the two sides of one request when this probe traces both (same
//! node, same language): a client span and the server span of the request
//! it sent become one observation on `client → server`, each end named by
//! its own process's resource. When the node's other probe traces the other
//! side, each probe observes its half on that edge ([`super::exchange`]).
//!
//! # Which spans pair
//!
//! A client span whose connection's local end is `A` (its `local` address)
//! pairs with a server span whose caller is `A` (its `peer` address) when
//! the server started while the client's request was under way
//! (`client.start ≤ server.start ≤ client.end`, same kernel clock). The
//! server's own address is not compared: a client that dialled a Service's
//! ClusterIP has the ClusterIP as its peer, the server sees the client's
//! address unchanged (DNAT rewrites the destination only). Requests that
//! follow each other on a keep-alive connection share the tuple but not the
//! time: each server span starts within exactly one client span. Concurrent
//! streams of one HTTP/2 connection may pair crosswise, which changes
//! nothing: every span of one connection belongs to the same two processes,
//! so the edge, the count and the set of durations are the same. Records
//! carry no network namespace: two pods' loopback connections that use the
//! same port at the same time could pair with each other's spans; the
//! request is still counted once, on the wrong pair of names.
//!
//! # What a pair and a leftover observe
//!
//! A pair counts the request once, on `client's service.name → server's
//! service.name` (a direct edge): under the server's resource the count,
//! the failure (the server span's rule, as an unpaired server span counts
//! it) and the server's duration; under the client's resource the client's
//! duration. A span that finds no partner within [`Pairer::WINDOW`], or is
//! pushed out when [`Pairer::CAPACITY`] spans wait, is named from the
//! node's other probe's entry if one fits ([`super::exchange`]: its half of
//! the pair, on the pair's edge), else observes its single-span edge
//! ([`super::observe_record`], computed when it arrived) exactly as if
//! pairing did not exist; spans without the address pairing
//! needs observe it at once. Every span is observed once, paired or not.
//!
//! # Cost
//!
//! Waiting spans live in one ring in arrival order (a slot per span, the
//! slots of paired spans left empty until the ring's front passes them) and
//! are found through one hash map from (side, client address) to the
//! oldest and newest waiting span of that address, which link to each other
//! in arrival order. Once the ring and the map have grown to the traffic,
//! a span costs no allocation here.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::exchange::{End, EndKey, Exchange, ExchangeClient};
use super::{
    ConnectionType, Edge, EdgeObservation, GraphNode, PeerLookup, canonical_ip, observe_as,
    own_node,
};
use crate::telemetry::record::{KernelClock, RequestRecord, SpanKind};
use crate::telemetry::resource::ProcessResource;
use crate::telemetry::semconv;

/// A span waiting for its other side.
#[derive(Debug)]
struct Waiting {
    resource: Arc<ProcessResource>,
    /// This process as a graph node (its end of a pair).
    me: GraphNode,
    /// What it observes if it stays alone.
    single: Option<EdgeObservation>,
    kind: SpanKind,
    /// The client's address of the connection (the key it waits under).
    client_addr: SocketAddr,
    start_ns: u64,
    end_ns: u64,
    clock: KernelClock,
    seconds: f64,
    /// Its single-span failure: for a server span, what a pair counts.
    failed: bool,
    arrived: Instant,
    /// The next span waiting under the same key (a sequence number).
    next: Option<u64>,
}

/// The oldest and newest span waiting under one key (sequence numbers).
#[derive(Clone, Copy, Debug)]
struct Chain {
    head: u64,
    tail: u64,
}

type Key = (bool, SocketAddr);

/// Counts since start (tests, debugging).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairingStats {
    /// Requests observed as a pair (two spans each).
    pub pairs: u64,
    /// Spans observed alone after waiting (no partner in time, or pushed
    /// out by a full buffer).
    pub alone: u64,
    /// Spans observed alone at once (no client address to pair by).
    pub unpairable: u64,
    /// Spans that found no partner here but were named from the other
    /// side's entry in the node-wide exchange ([`super::exchange`]).
    pub exchanged: u64,
    /// Spans that found no partner here and no fitting entry in the
    /// exchange (counted in `alone` too; only with an exchange).
    pub exchange_misses: u64,
    /// Writes to and reads of the exchange's map (system calls).
    pub exchange_writes: u64,
    pub exchange_reads: u64,
}

/// The pairing stage in front of [`super::ServiceGraphMetrics`]: spans in,
/// observations out through `emit`, each with the resource that made it.
#[derive(Debug)]
pub struct Pairer {
    /// Slot of sequence number `base + i` at `ring[i]`; `None` once paired.
    ring: VecDeque<Option<Waiting>>,
    base: u64,
    chains: HashMap<Key, Chain, foldhash::fast::FixedState>,
    window: Duration,
    capacity: usize,
    /// Spans in the ring (not yet paired or observed alone).
    live: usize,
    /// Off: every span is observed alone at once (see [`Pairer::off`]).
    on: bool,
    stats: PairingStats,
    /// The node-wide exchange with the node's other probes, if open.
    exchange: Option<ExchangeClient>,
    /// The last resource's graph node: consecutive spans mostly come from
    /// one process, and naming its node copies two strings.
    last_node: Option<(Arc<ProcessResource>, GraphNode)>,
}

impl Default for Pairer {
    fn default() -> Self {
        Self::new(Self::WINDOW, Self::CAPACITY)
    }
}

impl Pairer {
    /// How long a span waits for its other side. Both sides of a request on
    /// one node complete within a round trip of each other and travel the
    /// same record stream, so a second is a wide margin; it is also how late
    /// an unpaired span's edge is observed at most.
    pub const WINDOW: Duration = Duration::from_secs(1);
    /// Slots of the ring at most (248 bytes each, paired ones included
    /// until the front passes them); past it the oldest is observed alone.
    pub const CAPACITY: usize = 8_192;

    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            ring: VecDeque::new(),
            base: 0,
            chains: HashMap::default(),
            window,
            capacity: capacity.max(1),
            live: 0,
            on: true,
            stats: PairingStats::default(),
            exchange: None,
            last_node: None,
        }
    }

    /// `resource`'s graph node ([`own_node`]), from the last one when the
    /// resource is the same.
    fn own_node(&mut self, resource: &Arc<ProcessResource>) -> GraphNode {
        match &self.last_node {
            Some((last, node)) if Arc::ptr_eq(last, resource) => node.clone(),
            _ => {
                let node = own_node(resource);
                self.last_node = Some((resource.clone(), node.clone()));
                node
            }
        }
    }

    /// Also exchanges the ends of waiting spans with the node's other
    /// probes ([`super::exchange`]): a span that finds no partner here is
    /// named from the other side's entry before it falls back. Turns a
    /// pairer that was [`Pairer::off`] on, since its server spans can now
    /// meet another probe's client spans.
    pub fn with_exchange(mut self, exchange: Box<dyn Exchange>) -> Self {
        if !self.on {
            self = Self::default();
        }
        self.exchange = Some(ExchangeClient::new(exchange));
        self
    }

    /// Whether an exchange is open.
    pub fn exchanging(&self) -> bool {
        self.exchange.is_some()
    }

    /// A pairer that pairs nothing and keeps nothing waiting: for a
    /// pipeline whose client spans cannot know their connection, where its
    /// server spans would wait for nothing.
    pub fn off() -> Self {
        Self {
            on: false,
            ..Self::new(Self::WINDOW, 1)
        }
    }

    /// Spans waiting now.
    pub fn waiting(&self) -> usize {
        self.live
    }

    /// How often the pipeline should tick while [`Pairer::needs_ticks`]:
    /// half a window; with an exchange open, every
    /// [`ExchangeClient::PUBLISH_EVERY`], so that an end held for writing
    /// is written within that much even when no record comes: the other
    /// probe looks it up a window after its own span arrived, and the
    /// margin is what is left for the two probes' records to reach their
    /// pipelines at different times.
    pub fn tick_interval(&self) -> Duration {
        if self.exchange.is_some() {
            ExchangeClient::PUBLISH_EVERY
        } else {
            self.window / 2
        }
    }

    /// The pipeline's clock tick: writes every end held for the exchange,
    /// so that none waits for traffic that may not come, then observes what
    /// waited too long ([`Pairer::expire`]).
    pub fn tick(
        &mut self,
        now: Instant,
        emit: &mut dyn FnMut(&Arc<ProcessResource>, &EdgeObservation),
    ) {
        if let Some(exchange) = &mut self.exchange {
            exchange.write_pending();
        }
        self.expire(now, emit);
    }

    /// Whether anything needs [`Pairer::tick`] on a clock tick with no
    /// record coming: spans waiting, or ends not yet written to the
    /// exchange.
    pub fn needs_ticks(&self) -> bool {
        self.live > 0
            || self
                .exchange
                .as_ref()
                .is_some_and(ExchangeClient::has_pending)
    }

    pub fn stats(&self) -> PairingStats {
        let calls = self
            .exchange
            .as_ref()
            .map(ExchangeClient::calls)
            .unwrap_or_default();
        PairingStats {
            exchange_writes: calls.writes,
            exchange_reads: calls.reads,
            ..self.stats
        }
    }

    /// Takes one completed request's span at `now`: observes it with its
    /// other side if that is waiting, else keeps it waiting (or observes it
    /// alone at once if it cannot pair). Observes what waited too long.
    pub fn offer(
        &mut self,
        record: &RequestRecord,
        resource: &Arc<ProcessResource>,
        peers: &dyn PeerLookup,
        now: Instant,
        emit: &mut dyn FnMut(&Arc<ProcessResource>, &EdgeObservation),
    ) {
        self.expire(now, emit);
        let me = self.own_node(resource);
        let client_addr = match record.kind {
            SpanKind::Client => record.local,
            SpanKind::Server => record.peer,
        }
        .map(|a| SocketAddr::new(canonical_ip(a.ip()), a.port()));
        let Some(client_addr) = client_addr.filter(|_| self.on) else {
            self.stats.unpairable += 1;
            if let Some(single) = observe_as(record, me, peers) {
                emit(resource, &single);
            }
            return;
        };
        let is_client = record.kind == SpanKind::Client;
        // The other side, waiting under the same client address.
        if let Some(other) = self.take_partner(!is_client, client_addr, record) {
            self.stats.pairs += 1;
            let mine = Side {
                resource,
                me: &me,
                seconds: record.duration_secs(),
                // Only the server's counts (a pair's client side never fails).
                failed: !is_client && semconv::is_error(record),
            };
            let theirs = Side {
                resource: &other.resource,
                me: &other.me,
                seconds: other.seconds,
                failed: other.failed,
            };
            let (client, server) = if is_client {
                (mine, theirs)
            } else {
                (theirs, mine)
            };
            emit_pair(&client, &server, emit);
            return;
        }
        if let Some(exchange) = &mut self.exchange
            && let Some(value) =
                End::encode_parts(&me, record.start_ns, record.end_ns, record.clock)
        {
            exchange.publish(EndKey::new(client_addr, record.kind), value);
        }
        let single = observe_as(record, me.clone(), peers);
        // A server span's single-span failure is the one a pair counts.
        let failed = single.as_ref().is_some_and(|s| s.failed);
        self.push(
            Waiting {
                resource: resource.clone(),
                me,
                single,
                kind: record.kind,
                client_addr,
                start_ns: record.start_ns,
                end_ns: record.end_ns,
                clock: record.clock,
                seconds: record.duration_secs(),
                failed,
                arrived: now,
                next: None,
            },
            emit,
        );
    }

    /// Observes alone every span that has waited longer than the window.
    fn expire(
        &mut self,
        now: Instant,
        emit: &mut dyn FnMut(&Arc<ProcessResource>, &EdgeObservation),
    ) {
        while let Some(front) = self.ring.front() {
            match front {
                None => {}
                Some(w) if now.saturating_duration_since(w.arrived) > self.window => {}
                Some(_) => break,
            }
            self.pop_front(now, emit);
        }
    }

    /// Observes alone every span still waiting (the record stream ended),
    /// after writing this probe's pending ends for the other probe.
    pub fn flush(
        &mut self,
        now: Instant,
        emit: &mut dyn FnMut(&Arc<ProcessResource>, &EdgeObservation),
    ) {
        if let Some(exchange) = &mut self.exchange {
            exchange.write_pending();
        }
        while !self.ring.is_empty() {
            self.pop_front(now, emit);
        }
    }

    fn push(
        &mut self,
        waiting: Waiting,
        emit: &mut dyn FnMut(&Arc<ProcessResource>, &EdgeObservation),
    ) {
        while self.ring.len() >= self.capacity {
            self.pop_front(waiting.arrived, emit);
        }
        let seq = self.base + self.ring.len() as u64;
        let key = (waiting.kind == SpanKind::Client, waiting.client_addr);
        self.ring.push_back(Some(waiting));
        self.live += 1;
        match self.chains.get_mut(&key) {
            Some(chain) => {
                let tail = chain.tail;
                chain.tail = seq;
                if let Some(w) = self.slot_mut(tail) {
                    w.next = Some(seq);
                }
            }
            None => {
                self.chains.insert(
                    key,
                    Chain {
                        head: seq,
                        tail: seq,
                    },
                );
            }
        }
    }

    /// Removes the ring's front; a span still in it is observed alone. The
    /// front is the oldest span of its chain, so it is the chain's head.
    fn pop_front(
        &mut self,
        now: Instant,
        emit: &mut dyn FnMut(&Arc<ProcessResource>, &EdgeObservation),
    ) {
        let Some(front) = self.ring.pop_front() else {
            return;
        };
        let seq = self.base;
        self.base += 1;
        let Some(w) = front else { return };
        self.live -= 1;
        let key = (w.kind == SpanKind::Client, w.client_addr);
        match w.next {
            Some(next) => {
                if let Some(chain) = self.chains.get_mut(&key) {
                    debug_assert_eq!(chain.head, seq, "the oldest span heads its chain");
                    chain.head = next;
                }
            }
            None => {
                self.chains.remove(&key);
            }
        }
        if let Some(exchange) = &mut self.exchange {
            let other = match w.kind {
                SpanKind::Client => SpanKind::Server,
                SpanKind::Server => SpanKind::Client,
            };
            let end = exchange
                .lookup(&EndKey::new(w.client_addr, other), now)
                .and_then(|value| End::decode(&value))
                .filter(|end| end.fits(w.kind, w.start_ns, w.clock));
            if let Some(end) = end {
                self.stats.exchanged += 1;
                emit(&w.resource, &exchanged(&w, end.node));
                return;
            }
            self.stats.exchange_misses += 1;
        }
        self.stats.alone += 1;
        if let Some(single) = &w.single {
            emit(&w.resource, single);
        }
    }

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Waiting> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.ring.get_mut(i)?.as_mut()
    }

    fn slot(&self, seq: u64) -> Option<&Waiting> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.ring.get(i)?.as_ref()
    }

    /// Takes the oldest span waiting on side `client` under `client_addr`
    /// that pairs with `record` in time, unlinking it from its chain.
    fn take_partner(
        &mut self,
        client: bool,
        client_addr: SocketAddr,
        record: &RequestRecord,
    ) -> Option<Waiting> {
        let key = (client, client_addr);
        let chain = *self.chains.get(&key)?;
        let mut prev: Option<u64> = None;
        let mut at = Some(chain.head);
        while let Some(seq) = at {
            let w = self.slot(seq)?;
            let next = w.next;
            let fits = w.clock == record.clock
                && if client {
                    contains(w.start_ns, w.end_ns, record.start_ns)
                } else {
                    contains(record.start_ns, record.end_ns, w.start_ns)
                };
            if fits {
                match (prev, next) {
                    (None, None) => {
                        self.chains.remove(&key);
                    }
                    (None, Some(next)) => {
                        if let Some(c) = self.chains.get_mut(&key) {
                            c.head = next;
                        }
                    }
                    (Some(prev), next) => {
                        if let Some(p) = self.slot_mut(prev) {
                            p.next = next;
                        }
                        if next.is_none()
                            && let Some(c) = self.chains.get_mut(&key)
                        {
                            c.tail = prev;
                        }
                    }
                }
                let i = usize::try_from(seq - self.base).ok()?;
                self.live -= 1;
                return self.ring.get_mut(i)?.take();
            }
            prev = Some(seq);
            at = next;
        }
        None
    }
}

/// The server of a request starts after its client started sending it and
/// before the client has the whole response.
fn contains(client_start: u64, client_end: u64, server_start: u64) -> bool {
    client_start <= server_start && server_start <= client_end
}

/// The observation of a waiting span whose other end another probe of the
/// node published: the half of a pair this probe holds, on the edge the
/// pair would be observed on (each end as its process names itself, a
/// direct edge). A server span counts the request (its failure, as alone)
/// with its duration; a client span adds its duration only.
fn exchanged(w: &Waiting, other: GraphNode) -> EdgeObservation {
    match w.kind {
        SpanKind::Server => EdgeObservation {
            edge: Edge {
                client: other,
                server: w.me.clone(),
                connection_type: ConnectionType::Direct,
            },
            counts_request: true,
            failed: w.failed,
            client_seconds: None,
            server_seconds: Some(w.seconds),
        },
        SpanKind::Client => EdgeObservation {
            edge: Edge {
                client: w.me.clone(),
                server: other,
                connection_type: ConnectionType::Direct,
            },
            counts_request: false,
            failed: false,
            client_seconds: Some(w.seconds),
            server_seconds: None,
        },
    }
}

/// One side of a pair.
struct Side<'a> {
    resource: &'a Arc<ProcessResource>,
    me: &'a GraphNode,
    seconds: f64,
    failed: bool,
}

/// A pair's two observations on one edge: the count, the failure and the
/// server's duration under the server's resource, the client's duration
/// under the client's.
fn emit_pair(
    client: &Side<'_>,
    server: &Side<'_>,
    emit: &mut dyn FnMut(&Arc<ProcessResource>, &EdgeObservation),
) {
    let edge = Edge {
        client: client.me.clone(),
        server: server.me.clone(),
        connection_type: ConnectionType::Direct,
    };
    let server_side = EdgeObservation {
        edge: edge.clone(),
        counts_request: true,
        failed: server.failed,
        client_seconds: None,
        server_seconds: Some(server.seconds),
    };
    emit(server.resource, &server_side);
    let client_side = EdgeObservation {
        edge,
        counts_request: false,
        failed: false,
        client_seconds: Some(client.seconds),
        server_seconds: None,
    };
    emit(client.resource, &client_side);
}

#[cfg(test)]
mod tests;
