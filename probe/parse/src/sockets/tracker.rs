//! From socket events to [`RequestRecord`]s: per-connection HTTP/1.x
//! framing, request/response pairing, and the per-thread "current server
//! span" that makes outgoing calls children of the request being served.
//!
//! Connections are keyed by (pid, fd): the byte stream belongs to the
//! socket, whichever thread reads it. Each exchange remembers the thread
//! that started it (the thread that read a server request, or wrote a
//! client request), which is what the parent/child logic is keyed on:
//! (pid, tid).
//!
//! A connection whose first bytes are a TLS record carries ciphertext at
//! the socket: the tracker reads only its hellos there (SNI and protocol
//! version, see [`super::tls::hello`]) and takes its HTTP from the
//! plaintext events of the OpenSSL probes ([`Layer::Tls`]), on the same
//! (pid, fd). Its records get `url.scheme` `https` and the TLS attributes.
//!
//! Pure logic over decoded events: unit-tested without a kernel.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

// Looked up several times per request; the keys are kernel-chosen numbers,
// so a fast hash (randomly seeded per process) serves.
use foldhash::{HashMap, HashMapExt};

use crate::http1::{Head, MessageParser, Parsed, RequestHead, ResponseHead, SegmentMeta, Side};
use crate::record::{HttpInfo, KernelClock, Protocol, RequestRecord, SpanKind, Text, TlsInfo};
use crate::sampling::SpanStarter;
use crate::trace_context::{SpanContext, parse_traceparent};

use super::events::{Direction, KernelEvent, Layer, RoleHint};
use super::kernel_context::KernelContexts;
use super::tls_hello::{self as hello, HelloReader};
use crate::propagation::events::PropagationEvent;

/// Connections tracked at most (all processes together); a connection
/// opened beyond it is not traced (counted in [`TrackerStats::untracked`]).
pub const MAX_CONNECTIONS: usize = 32_768;
/// Bytes of message heads held across all connections. A peer that drips
/// a head one byte at a time, on many connections at once, makes the
/// parsers accumulate; past this, the connection that grows is dropped
/// (counted in [`TrackerStats::abandoned`]) instead of the probe growing.
pub const MAX_BUFFERED_BYTES: usize = 16 << 20;
/// Requests waiting for their responses on one connection (HTTP/1.1
/// pipelining); a client that sends more without reading is not traced.
pub const MAX_PENDING_PER_CONNECTION: usize = 64;

/// Counters of what the tracker saw, for the front-end's health metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Connections no longer traced because they exceeded a cap
    /// ([`MAX_BUFFERED_BYTES`], [`MAX_PENDING_PER_CONNECTION`]).
    pub abandoned: u64,
    /// Connections not traced because [`MAX_CONNECTIONS`] were tracked.
    pub untracked: u64,
    /// Connections whose traffic was not HTTP/1.x (ignored from then on).
    pub not_http: u64,
    /// Requests that ended without a response (connection closed first).
    pub unanswered: u64,
    /// Responses for which no request had been seen.
    pub orphan_responses: u64,
    /// Connections whose first bytes were a TLS record.
    pub tls_connections: u64,
}

#[derive(Debug)]
struct Exchange {
    request: RequestHead,
    /// Server: exit of the read that began the request. Client: entry of the
    /// write that began it.
    start_ns: u64,
    tid: u32,
    span: SpanContext,
    request_body: Option<u64>,
    response: Option<ResponseHead>,
}

#[derive(Debug)]
struct Conn {
    role: Option<SpanKind>,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    requests: MessageParser,
    responses: MessageParser,
    /// Requests in order, waiting for (or receiving) their responses.
    pending: VecDeque<Exchange>,
    off: bool,
    /// What the two parsers hold, as counted in `Tracker::buffered`.
    buffered: usize,
    /// Some data was seen (the first bytes decide whether it is TLS).
    seen_data: bool,
    /// A TLS connection: its hellos, read from its ciphertext.
    tls: Option<HelloReader>,
}

impl Conn {
    fn new(hint: RoleHint, local: Option<SocketAddr>, peer: Option<SocketAddr>) -> Self {
        Self {
            role: match hint {
                RoleHint::Server => Some(SpanKind::Server),
                RoleHint::Client => Some(SpanKind::Client),
                RoleHint::Unknown => None,
            },
            local,
            peer,
            requests: MessageParser::new(Side::Request),
            responses: MessageParser::new(Side::Response),
            pending: VecDeque::new(),
            off: false,
            buffered: 0,
            seen_data: false,
            tls: None,
        }
    }

    fn tls_info(&self) -> Option<TlsInfo> {
        self.tls.as_ref().map(|hello| hello.info().clone())
    }

    fn request_direction(&self) -> Option<Direction> {
        self.role.map(|role| match role {
            SpanKind::Server => Direction::Ingress,
            SpanKind::Client => Direction::Egress,
        })
    }
}

/// Turns the socket events of every claimed process into request records.
#[derive(Debug)]
pub struct Tracker {
    spans: SpanStarter,
    conns: HashMap<(u32, i32), Conn>,
    /// (pid, tid) -> the server span that thread is serving.
    serving: HashMap<(u32, u32), SpanContext>,
    /// Span ids the kernel assigned (propagation on).
    kernel: KernelContexts,
    stats: TrackerStats,
    /// Sum of every connection's `buffered`.
    buffered: usize,
    /// Processes that opened a TLS connection since [`Tracker::take_tls_processes`].
    tls_processes: BTreeSet<u32>,
    /// What a data event's bytes completed, kept between events so that an
    /// event costs no allocation for it.
    found: Vec<Parsed>,
}

impl Tracker {
    pub fn new(spans: SpanStarter) -> Self {
        Self {
            spans,
            conns: HashMap::new(),
            serving: HashMap::new(),
            kernel: KernelContexts::default(),
            stats: TrackerStats::default(),
            buffered: 0,
            tls_processes: BTreeSet::new(),
            found: Vec::new(),
        }
    }

    /// Processes seen opening a TLS connection since the last call: the
    /// program set checks that their TLS library is probed.
    pub fn take_tls_processes(&mut self) -> BTreeSet<u32> {
        std::mem::take(&mut self.tls_processes)
    }

    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// Connections currently tracked.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Head bytes held across connections (at most about [`MAX_BUFFERED_BYTES`]).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    fn remove_conn(&mut self, key: (u32, i32)) -> Option<Conn> {
        let conn = self.conns.remove(&key)?;
        self.buffered -= conn.buffered;
        Some(conn)
    }

    /// Whether a new connection may be tracked.
    fn has_room(&mut self) -> bool {
        if self.conns.len() < MAX_CONNECTIONS {
            return true;
        }
        self.stats.untracked += 1;
        false
    }

    /// Handles one event; completed requests are appended to `out`.
    pub fn on_event(&mut self, event: &KernelEvent<'_>, out: &mut Vec<RequestRecord>) {
        match *event {
            KernelEvent::Open {
                pid,
                fd,
                role,
                local,
                peer,
                ..
            } => {
                // A reused fd number: whatever was there is over.
                if let Some(old) = self.remove_conn((pid, fd)) {
                    self.close_conn(pid, old, None, out);
                    self.kernel.forget_connection(pid, fd);
                }
                if self.has_room() {
                    self.conns.insert((pid, fd), Conn::new(role, local, peer));
                }
            }
            KernelEvent::Data {
                pid,
                tid,
                enter_ns,
                exit_ns,
                fd,
                direction,
                total_len,
                payload,
                layer,
            } => {
                let meta = SegmentMeta {
                    enter_ns,
                    exit_ns,
                    tid,
                };
                self.on_data(pid, fd, direction, payload, total_len, meta, layer, out);
            }
            KernelEvent::Close { pid, fd, ts_ns, .. } => {
                if let Some(conn) = self.remove_conn((pid, fd)) {
                    self.close_conn(pid, conn, Some(ts_ns), out);
                }
                self.kernel.forget_connection(pid, fd);
            }
            KernelEvent::Propagation(PropagationEvent::Server(ctx)) => self.kernel.server_read(ctx),
            KernelEvent::Propagation(PropagationEvent::Client(ctx)) => self.kernel.client_sent(ctx),
            KernelEvent::ProcExit { pid } => self.forget_process(pid),
            KernelEvent::ProcExec { .. }
            | KernelEvent::ProcFork { .. }
            | KernelEvent::ExecMap { .. } => {}
        }
    }

    /// Drops every connection and thread state of `pid` (it exited or was
    /// released); requests in flight are not reported.
    pub fn forget_process(&mut self, pid: u32) {
        let mut freed = 0;
        self.conns.retain(|(p, _), conn| {
            if *p == pid {
                freed += conn.buffered;
            }
            *p != pid
        });
        self.buffered -= freed;
        self.serving.retain(|(p, _), _| *p != pid);
        self.kernel.forget_process(pid);
        self.tls_processes.remove(&pid);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_data(
        &mut self,
        pid: u32,
        fd: i32,
        direction: Direction,
        payload: &[u8],
        total_len: usize,
        meta: SegmentMeta,
        layer: Layer,
        out: &mut Vec<RequestRecord>,
    ) {
        if !self.conns.contains_key(&(pid, fd)) && !self.has_room() {
            return;
        }
        let conn = self
            .conns
            .entry((pid, fd))
            .or_insert_with(|| Conn::new(RoleHint::Unknown, None, None));
        match layer {
            // Ciphertext: only the hellos come this way.
            Layer::Socket
                if conn.tls.is_some() || (!conn.seen_data && hello::is_record(payload)) =>
            {
                if conn.tls.is_none() {
                    conn.tls = Some(HelloReader::default());
                    conn.role = conn.role.or_else(|| tls_role(direction, payload));
                    self.stats.tls_connections += 1;
                    self.tls_processes.insert(pid);
                }
                conn.seen_data = true;
                let from_client = conn.request_direction() == Some(direction);
                if conn.role.is_some()
                    && let Some(reader) = conn.tls.as_mut()
                {
                    reader.feed(from_client, payload, total_len);
                }
                return;
            }
            Layer::Socket => {}
            // Plaintext of a TLS connection whose hellos we missed (it was
            // adopted mid-stream): still HTTPS.
            Layer::Tls => {
                if conn.tls.is_none() {
                    conn.tls = Some(HelloReader::default());
                }
            }
        }
        conn.seen_data = true;
        if conn.off {
            return;
        }
        if conn.role.is_none() {
            conn.role = infer_role(direction, payload);
            if conn.role.is_none() {
                conn.off = true;
                self.stats.not_http += 1;
                return;
            }
        }
        let (side, parser, other_side, other) = if Some(direction) == conn.request_direction() {
            (
                Side::Request,
                &mut conn.requests,
                Side::Response,
                &mut conn.responses,
            )
        } else {
            (
                Side::Response,
                &mut conn.responses,
                Side::Request,
                &mut conn.requests,
            )
        };
        // A message in one direction ends the other direction's message
        // whose length was unknown.
        let ended = if other.is_open_ended() {
            other.finish()
        } else {
            None
        };
        let mut found = std::mem::take(&mut self.found);
        found.clear();
        parser.feed(payload, total_len, meta, &mut found);
        // Account for what the parsers hold now; past the budget this
        // connection stops being traced rather than the probe growing.
        let held = conn.requests.buffered() + conn.responses.buffered();
        self.buffered = self.buffered - conn.buffered + held;
        conn.buffered = held;
        if self.buffered > MAX_BUFFERED_BYTES {
            self.abandon(pid, fd);
            return;
        }
        if let Some(done) = ended {
            self.apply(pid, fd, other_side, done, out);
        }
        for item in found.drain(..) {
            self.apply(pid, fd, side, item, out);
        }
        self.found = found;
    }

    /// Stops tracing a connection that exceeded a cap: its state is freed,
    /// its requests in flight are not reported, its fd stays known (as
    /// off) so later bytes are skipped cheaply.
    fn abandon(&mut self, pid: u32, fd: i32) {
        if let Some(conn) = self.remove_conn((pid, fd)) {
            self.stats.abandoned += 1;
            let mut off = Conn::new(RoleHint::Unknown, conn.local, conn.peer);
            off.off = true;
            self.conns.insert((pid, fd), off);
        }
    }

    fn apply(&mut self, pid: u32, fd: i32, side: Side, item: Parsed, out: &mut Vec<RequestRecord>) {
        let Some(conn) = self.conns.get_mut(&(pid, fd)) else {
            return;
        };
        let role = conn.role.unwrap_or(SpanKind::Server);
        match (side, item) {
            (_, Parsed::NotHttp) => {
                conn.off = true;
                conn.pending.clear();
                self.stats.not_http += 1;
            }
            (
                Side::Request,
                Parsed::Head {
                    head: Head::Request(request),
                    first,
                },
            ) => {
                // The kernel's ids when it assigned them (propagation on):
                // the requests this one causes went out with them.
                let (span, start_ns) = match role {
                    SpanKind::Server => {
                        let span = self.kernel.server_span(pid, fd, &first).unwrap_or_else(|| {
                            let incoming =
                                request.traceparent.as_deref().and_then(parse_traceparent);
                            self.spans.start_server(incoming.as_ref())
                        });
                        self.serving.insert((pid, first.tid), span);
                        (span, first.exit_ns)
                    }
                    SpanKind::Client => {
                        let span = self.kernel.client_span(pid, fd, &first).unwrap_or_else(|| {
                            let parent = self.serving.get(&(pid, first.tid));
                            self.spans.start_client(parent)
                        });
                        (span, first.enter_ns)
                    }
                };
                if conn.pending.len() >= MAX_PENDING_PER_CONNECTION {
                    self.abandon(pid, fd);
                    return;
                }
                conn.responses
                    .expect_response_to(request.method.eq_ignore_ascii_case("HEAD"));
                conn.pending.push_back(Exchange {
                    request,
                    start_ns,
                    tid: first.tid,
                    span,
                    request_body: None,
                    response: None,
                });
            }
            (Side::Request, Parsed::Complete { body_bytes, .. }) => {
                if let Some(exchange) = conn
                    .pending
                    .iter_mut()
                    .rev()
                    .find(|e| e.request_body.is_none())
                {
                    exchange.request_body = Some(body_bytes);
                }
            }
            (
                Side::Response,
                Parsed::Head {
                    head: Head::Response(response),
                    ..
                },
            ) => match conn.pending.iter_mut().find(|e| e.response.is_none()) {
                Some(exchange) => exchange.response = Some(response),
                None => self.stats.orphan_responses += 1,
            },
            (Side::Response, Parsed::Complete { body_bytes, last }) => {
                let answered = conn.pending.front().is_some_and(|e| e.response.is_some());
                if !answered {
                    return;
                }
                let exchange = conn.pending.pop_front().expect("front checked");
                let (local, peer, tls) = (conn.local, conn.peer, conn.tls_info());
                if role == SpanKind::Server
                    && self.serving.get(&(pid, exchange.tid)) == Some(&exchange.span)
                {
                    self.serving.remove(&(pid, exchange.tid));
                }
                out.push(record(
                    pid,
                    role,
                    exchange,
                    Some(body_bytes),
                    last.exit_ns,
                    local,
                    peer,
                    None,
                    tls,
                ));
            }
            // Heads of the wrong kind cannot come out of a parser of one side.
            (_, Parsed::Head { .. }) => {}
        }
    }

    fn close_conn(
        &mut self,
        pid: u32,
        mut conn: Conn,
        close_ns: Option<u64>,
        out: &mut Vec<RequestRecord>,
    ) {
        if conn.off {
            return;
        }
        let role = conn.role.unwrap_or(SpanKind::Server);
        let finished = conn.responses.finish();
        let _ = conn.requests.finish();
        if let Some(Parsed::Complete { body_bytes, last }) = finished
            && conn.pending.front().is_some_and(|e| e.response.is_some())
        {
            let exchange = conn.pending.pop_front().expect("front checked");
            self.clear_serving(pid, role, &exchange);
            out.push(record(
                pid,
                role,
                exchange,
                Some(body_bytes),
                last.exit_ns,
                conn.local,
                conn.peer,
                None,
                conn.tls_info(),
            ));
        }
        // Requests the peer never got an answer to: still a request served
        // (or attempted), reported as an error.
        while let Some(exchange) = conn.pending.pop_front() {
            self.stats.unanswered += 1;
            self.clear_serving(pid, role, &exchange);
            let end = close_ns.unwrap_or(exchange.start_ns).max(exchange.start_ns);
            out.push(record(
                pid,
                role,
                exchange,
                None,
                end,
                conn.local,
                conn.peer,
                Some("connection closed before the response completed"),
                conn.tls_info(),
            ));
        }
    }

    fn clear_serving(&mut self, pid: u32, role: SpanKind, exchange: &Exchange) {
        if role == SpanKind::Server
            && self.serving.get(&(pid, exchange.tid)) == Some(&exchange.span)
        {
            self.serving.remove(&(pid, exchange.tid));
        }
    }
}

/// The role of a TLS connection we did not see being opened: who sends the
/// ClientHello is the client, who sends the ServerHello the server.
fn tls_role(direction: Direction, payload: &[u8]) -> Option<SpanKind> {
    // Record header (5 bytes), then the handshake message type.
    let sent_by_client = match payload.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return None,
    };
    Some(match (direction, sent_by_client) {
        (Direction::Egress, true) | (Direction::Ingress, false) => SpanKind::Client,
        _ => SpanKind::Server,
    })
}

/// The role of a connection we did not see being opened, from its first bytes.
fn infer_role(direction: Direction, payload: &[u8]) -> Option<SpanKind> {
    let looks_request = {
        let mut probe = MessageParser::new(Side::Request);
        let mut out = Vec::new();
        probe.feed(payload, payload.len(), SegmentMeta::default(), &mut out);
        !payload.is_empty() && !probe.is_off()
    };
    let looks_response = payload.starts_with(b"HTTP/1.");
    match (direction, looks_request, looks_response) {
        (Direction::Ingress, true, _) | (Direction::Egress, _, true) => Some(SpanKind::Server),
        (Direction::Egress, true, _) | (Direction::Ingress, _, true) => Some(SpanKind::Client),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    pid: u32,
    kind: SpanKind,
    exchange: Exchange,
    response_body: Option<u64>,
    end_ns: u64,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    error: Option<&str>,
    tls: Option<TlsInfo>,
) -> RequestRecord {
    let Exchange {
        request,
        start_ns,
        tid,
        span,
        request_body,
        response,
    } = exchange;
    let (path, query) = split_target(&request.target);
    let http = HttpInfo {
        method: request.method,
        path,
        query,
        status: response.as_ref().map(|r| r.status),
        route: None,
        host: request.host,
        scheme: Some(Text::const_new(if tls.is_some() {
            "https"
        } else {
            "http"
        })),
        protocol_version: Some(Text::const_new(if request.version == 0 {
            "1.0"
        } else {
            "1.1"
        })),
        user_agent: request.user_agent,
        request_body_size: request_body.or(request.content_length),
        response_body_size: response
            .as_ref()
            .and_then(|r| r.content_length)
            .or(response_body.filter(|_| response.is_some())),
        tls,
    };
    RequestRecord {
        kind,
        pid,
        tid,
        start_ns,
        end_ns: end_ns.max(start_ns),
        clock: KernelClock::Monotonic,
        span,
        protocol: Protocol::Http(http),
        local,
        peer,
        error: error.map(str::to_owned),
    }
}

/// Splits a request target into path and query; absolute-form targets
/// (`http://host/p?q`, sent to proxies) lose their scheme and authority.
fn split_target(target: &str) -> (Text, Option<Text>) {
    let target = match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => target,
    };
    let target = target.split('#').next().unwrap_or(target);
    match target.split_once('?') {
        Some((path, query)) => (Text::from(path), Some(Text::from(query))),
        None => (Text::from(target), None),
    }
}

#[cfg(test)]
mod tests;
