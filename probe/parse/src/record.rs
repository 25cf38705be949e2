//! The one interface between the program sets and the telemetry pipeline:
//! a completed request, as a front-end observed it.
//!
//! A front-end (socket-level tracing, Go uprobes, ...) produces one
//! [`RequestRecord`] per request/response exchange and hands it to the
//! probe's pipeline. Everything after that — `http.route`,
//! semantic-convention attributes, RED metrics, export — is the pipeline's,
//! so front-ends only report facts. The span's identity and sampling
//! decision come with it, taken when the request started
//! ([`crate::sampling`]); its timestamps are kernel clocks ([`KernelClock`]),
//! which the probe converts to Unix time.

use std::net::SocketAddr;

use crate::trace_context::SpanContext;

/// A record's text: held inline up to 24 bytes, on the heap beyond. A
/// front-end decodes one record per request, and most of its text (a
/// method, a path, a route, a host) is short, so a record costs no
/// allocation for it.
pub type Text = compact_str::CompactString;

/// Which kernel clock the record's timestamps come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelClock {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    #[default]
    Monotonic,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME (counts suspend).
    Boottime,
}

/// Whether the traced process served the request or made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// The process received the request (an HTTP/gRPC server).
    Server,
    /// The process sent the request (an HTTP/gRPC client).
    Client,
}

/// An HTTP/1.x or HTTP/2 request/response, as parsed by the front-end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpInfo {
    /// Request method as sent (`GET`, `POST`, ...); the pipeline maps
    /// unknown methods to `_OTHER` per semconv.
    pub method: Text,
    /// Request target path, without the query string.
    pub path: Text,
    /// The query string without `?`, if any.
    pub query: Option<Text>,
    /// Response status; `None` if no response was seen (e.g. the connection
    /// was closed first — then set [`RequestRecord::error`]).
    pub status: Option<u16>,
    /// The route template if the front-end knows it (e.g. Go 1.22+
    /// `http.Request.Pattern`); otherwise the pipeline derives `http.route`.
    pub route: Option<Text>,
    /// `Host` header (HTTP/1.1) or `:authority` (HTTP/2), possibly with a port.
    pub host: Option<Text>,
    /// `http` or `https` if known (the probe usually sees plain text only).
    pub scheme: Option<Text>,
    /// `1.0`, `1.1` or `2`.
    pub protocol_version: Option<Text>,
    pub user_agent: Option<Text>,
    /// Request body bytes (`Content-Length` or counted).
    pub request_body_size: Option<u64>,
    /// Response body bytes (`Content-Length` or counted).
    pub response_body_size: Option<u64>,
    /// Set if the request travelled over TLS, with what is known of it.
    pub tls: Option<TlsInfo>,
}

/// What the probe knows of a request's TLS connection (from its hellos, or
/// the library's connection state). Every field may be unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// `tls.protocol.name`: `tls` (or `ssl` for SSL 3).
    pub protocol_name: Option<Text>,
    /// `tls.protocol.version`: `1.2`, `1.3`, ...
    pub protocol_version: Option<Text>,
    /// The server name the client asked for (SNI).
    pub server_name: Option<Text>,
}

impl TlsInfo {
    /// Sets the protocol from a wire version (`0x0303`: TLS 1.2, `0x0300`:
    /// SSL 3); an unknown value leaves it unknown.
    pub fn set_version(&mut self, version: u16) {
        let (name, number) = match version {
            0x0300 => ("ssl", "3"),
            0x0301 => ("tls", "1.0"),
            0x0302 => ("tls", "1.1"),
            0x0303 => ("tls", "1.2"),
            0x0304 => ("tls", "1.3"),
            _ => return,
        };
        self.protocol_name = Some(Text::const_new(name));
        self.protocol_version = Some(Text::const_new(number));
    }
}

/// A gRPC call (unary or streaming), as parsed by the front-end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcInfo {
    /// Fully qualified service, e.g. `helloworld.Greeter`.
    pub service: Text,
    /// Method, e.g. `SayHello`.
    pub method: Text,
    /// `grpc-status` of the call; `None` if none was seen.
    pub status_code: Option<i32>,
    /// `:authority`, if seen.
    pub authority: Option<Text>,
    pub user_agent: Option<Text>,
    /// Set if the call travelled over TLS.
    pub tls: Option<TlsInfo>,
}

/// What was spoken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http(HttpInfo),
    Grpc(GrpcInfo),
}

/// One completed request/response exchange seen in a traced process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub kind: SpanKind,
    /// Process id (tgid) in the host PID namespace: the key for the
    /// process's resource (service name, k8s attributes).
    pub pid: u32,
    /// Thread id (or goroutine id for Go) that handled the request; for
    /// debugging, not exported as an attribute.
    pub tid: u32,
    /// Kernel timestamp of the request start, in [`RequestRecord::clock`].
    pub start_ns: u64,
    /// Kernel timestamp of the response end.
    pub end_ns: u64,
    pub clock: KernelClock,
    /// Ids and sampling decision, from [`SpanStarter`](crate::sampling::SpanStarter) at request start.
    pub span: SpanContext,
    pub protocol: Protocol,
    /// Local side of the connection (the server's address for a server span).
    pub local: Option<SocketAddr>,
    /// Remote side of the connection (the client for a server span, the
    /// server for a client span).
    pub peer: Option<SocketAddr>,
    /// A transport-level failure (connection reset, timeout, protocol
    /// error); marks the span as an error regardless of the status code.
    pub error: Option<String>,
}

impl RequestRecord {
    /// Request duration in seconds (zero if the timestamps are inverted).
    pub fn duration_secs(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }
}
