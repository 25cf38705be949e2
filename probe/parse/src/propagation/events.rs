//! Propagation records from the kernel: the context each outgoing request
//! head went out with, and the context each server request was given.

use std::net::SocketAddr;

use ferrotel_probe_ebpf::Wire;
use ferrotel_probe_ebpf::propagation::{PropClientEvent, PropServerEvent, kind, origin, outcome};
use ferrotel_probe_ebpf::wire::EventHeader;

use crate::sockets::events::socket_addr;
use crate::trace_context::{SpanId, TraceId};

/// What became of an outgoing request head in the sk_msg program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its context headers were written after the request line.
    Injected,
    /// Published for a same-node server to join (injection off).
    Published,
    /// It carried trace context of its own: left as it was.
    AppContext,
    /// No span was known for the sending thread.
    NoContext,
    /// The connection could no longer be followed (or the kernel refused to
    /// grow the message): left as it was, and the connection from then on.
    LeftAlone(&'static str),
}

impl Outcome {
    fn from_wire(value: u32) -> Self {
        match value {
            outcome::INJECTED => Self::Injected,
            outcome::PUBLISHED => Self::Published,
            outcome::APP_CONTEXT => Self::AppContext,
            outcome::NO_CONTEXT => Self::NoContext,
            other => Self::LeftAlone(outcome::name(other)),
        }
    }

    /// The request's span context went to the server (in the request, or
    /// through the join map).
    pub fn carried(self) -> bool {
        matches!(self, Self::Injected | Self::Published)
    }

    /// The program lets go of the connection: user space takes the socket
    /// out of the sockhash.
    pub fn releases(self) -> bool {
        matches!(self, Self::LeftAlone(_))
    }
}

/// Where a server request's parent came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    NewTrace,
    Traceparent,
    B3,
    /// A client on this node published it for this connection.
    Joined,
}

/// The span an outgoing request went out for, as the sk_msg program chose
/// (socket-level set) or took it (Go set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientContext {
    /// The socket's cookie (its key in the sockhash).
    pub cookie: u64,
    pub pid: u32,
    pub tid: u32,
    /// When the head was sent (kernel monotonic ns).
    pub ts_ns: u64,
    /// The fd and the entry time of the send syscall, when the set traces
    /// syscalls: they name the data event that carries this head.
    pub fd: Option<i32>,
    pub enter_ns: u64,
    pub outcome: Outcome,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// Zero ids when no span was known ([`Outcome::NoContext`],
    /// [`Outcome::AppContext`]).
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub sampled: bool,
}

/// The context the kernel gave a server request when it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerContext {
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    /// Entry time of the read syscall: the data event with the same entry
    /// time holds the request head.
    pub enter_ns: u64,
    pub origin: Origin,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub sampled: bool,
}

/// A propagation record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropagationEvent {
    Client(ClientContext),
    Server(ServerContext),
}

/// Decoding failed: a probe and eBPF object out of sync.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("propagation record of {len} bytes is too short for its kind {kind}")]
pub struct DecodeError {
    pub kind: u32,
    pub len: usize,
}

fn parent(id: [u8; 8]) -> Option<SpanId> {
    let id = SpanId(id);
    id.is_valid().then_some(id)
}

/// Decodes `record` if it is a propagation record (`None` for other kinds).
pub fn decode(record: &[u8]) -> Option<Result<PropagationEvent, DecodeError>> {
    let header = EventHeader::read(record)?;
    let short = DecodeError {
        kind: header.kind,
        len: record.len(),
    };
    match header.kind {
        kind::CLIENT => Some(
            PropClientEvent::read(record)
                .map(|e| {
                    PropagationEvent::Client(ClientContext {
                        cookie: e.cookie,
                        pid: header.tgid,
                        tid: header.tid,
                        ts_ns: header.ts_ns,
                        fd: (e.fd >= 0).then_some(e.fd),
                        enter_ns: e.enter_ns,
                        outcome: Outcome::from_wire(e.outcome),
                        local: socket_addr(&e.local),
                        peer: socket_addr(&e.peer),
                        trace_id: TraceId(e.trace_id),
                        span_id: SpanId(e.span_id),
                        parent_span_id: parent(e.parent_id),
                        sampled: e.flags & 1 != 0,
                    })
                })
                .ok_or(short),
        ),
        kind::SERVER => Some(
            PropServerEvent::read(record)
                .map(|e| {
                    PropagationEvent::Server(ServerContext {
                        pid: header.tgid,
                        tid: header.tid,
                        fd: e.fd,
                        enter_ns: e.enter_ns,
                        origin: match e.origin {
                            origin::TRACEPARENT => Origin::Traceparent,
                            origin::B3 => Origin::B3,
                            origin::JOINED => Origin::Joined,
                            _ => Origin::NewTrace,
                        },
                        trace_id: TraceId(e.trace_id),
                        span_id: SpanId(e.span_id),
                        parent_span_id: parent(e.parent_id),
                        sampled: e.flags & 1 != 0,
                    })
                })
                .ok_or(short),
        ),
        _ => None,
    }
}
