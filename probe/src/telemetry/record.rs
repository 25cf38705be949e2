//! The one interface between the language front-ends and the telemetry
//! pipeline: a completed request, as a front-end observed it.
//!
//! A front-end (Python socket tracing, Go uprobes, ...) produces one
//! [`RequestRecord`] per request/response exchange and hands it to the
//! [`RecordSink`](crate::telemetry::RecordSink). Everything after that —
//! sampling, `http.route`, semantic-convention attributes, RED metrics,
//! export — is the pipeline's job, so front-ends only report facts.
//!
//! # Span identity is assigned at request *start*
//!
//! A client call made while a server request is being handled must become a
//! child of that server span, and the client call usually completes *before*
//! the server request does. So the front-end cannot wait for the server
//! record to learn its ids: it asks a [`SpanStarter`] for a [`SpanContext`]
//! when it sees the request begin (e.g. when the request head is read),
//! remembers it per thread/goroutine/task, and when it sees a client call on
//! the same thread it calls [`SpanStarter::start_client`] with that context
//! as the parent. The sampling decision is taken at start too (like an
//! OpenTelemetry SDK does), so a trace is kept or dropped as a whole.
//!
//! ```
//! use ferrotel_probe::telemetry::record::*;
//! use ferrotel_api::probe_config::SamplerConfig;
//!
//! let starter = SpanStarter::new(&SamplerConfig::default());
//! // Request head read; it carried a `traceparent` header.
//! let incoming = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! let server = starter.start_server(incoming.as_ref());
//! // The same thread later connects out: a child client span.
//! let client = starter.start_client(Some(&server));
//! assert_eq!(client.trace_id, server.trace_id);
//! assert_eq!(client.parent_span_id, Some(server.span_id));
//! ```
//!
//! # Timestamps
//!
//! `start_ns`/`end_ns` are what the kernel gives eBPF programs:
//! `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) by default, or
//! `bpf_ktime_get_boot_ns()` (CLOCK_BOOTTIME) if the record says so in
//! [`RequestRecord::clock`]. The pipeline converts them to Unix time with a
//! [`ClockOffsets`] computed once at startup.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use ferrotel_api::probe_config::{SamplerConfig, SamplerType};

/// Whether the traced process served the request or made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// The process received the request (an HTTP/gRPC server).
    Server,
    /// The process sent the request (an HTTP/gRPC client).
    Client,
}

/// A W3C trace id (16 bytes, never all zero when valid).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// A W3C span id (8 bytes, never all zero when valid).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A fresh random, non-zero trace id.
    pub fn random() -> Self {
        loop {
            let id: [u8; 16] = rand::random();
            if id != [0; 16] {
                return TraceId(id);
            }
        }
    }
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }
    /// The low 8 bytes as a big-endian number; the ratio sampler compares
    /// this with its threshold, so a trace's decision is the same wherever
    /// it is taken.
    pub fn low_u64(&self) -> u64 {
        u64::from_be_bytes(self.0[8..].try_into().expect("8 bytes"))
    }
}

impl SpanId {
    /// A fresh random, non-zero span id.
    pub fn random() -> Self {
        loop {
            let id: [u8; 8] = rand::random();
            if id != [0; 8] {
                return SpanId(id);
            }
        }
    }
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({})", hex::encode(self.0))
    }
}
impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({})", hex::encode(self.0))
    }
}
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The trace context a request carried in from another process (W3C
/// `traceparent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncomingTraceContext {
    pub trace_id: TraceId,
    /// The caller's span: the parent of our server span.
    pub parent_span_id: SpanId,
    /// W3C trace flags; bit 0 = sampled.
    pub flags: u8,
}

impl IncomingTraceContext {
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }
}

/// Parses a W3C `traceparent` header value
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`).
///
/// Returns `None` for anything invalid (wrong lengths, non-hex, all-zero ids,
/// version `ff`), in which case the request starts a new trace, as the W3C
/// spec asks. Future versions (> 00) are accepted if their first four fields
/// parse, also per the spec.
pub fn parse_traceparent(value: &str) -> Option<IncomingTraceContext> {
    let value = value.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    if version.len() != 2 || trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    let version = u8::from_str_radix(version, 16).ok()?;
    if version == 0xff || (version == 0 && rest.is_some()) {
        return None;
    }
    // Uppercase hex is invalid per the spec.
    let is_lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !is_lower_hex(trace) || !is_lower_hex(parent) || !is_lower_hex(flags) {
        return None;
    }
    let mut trace_id = [0u8; 16];
    hex::decode_to_slice(trace, &mut trace_id).ok()?;
    let mut span_id = [0u8; 8];
    hex::decode_to_slice(parent, &mut span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let ctx = IncomingTraceContext {
        trace_id: TraceId(trace_id),
        parent_span_id: SpanId(span_id),
        flags,
    };
    (ctx.trace_id.is_valid() && ctx.parent_span_id.is_valid()).then_some(ctx)
}

/// Formats a `traceparent` value for a span (what a downstream service would
/// receive if the probe could inject it).
pub fn format_traceparent(ctx: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        ctx.trace_id,
        ctx.span_id,
        u8::from(ctx.sampled)
    )
}

/// Who the parent of a span is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentKind {
    /// No parent: the span starts a trace.
    Root,
    /// The parent lives in another process (from an incoming `traceparent`).
    Remote,
    /// The parent is a span of the same process (e.g. the server span that
    /// was active on the thread that made this client call).
    Local,
}

/// The identity of a span, fixed when the request starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub parent_kind: ParentKind,
    /// The head-sampling decision; unsampled spans still feed RED metrics
    /// but are not exported as spans.
    pub sampled: bool,
    /// Trace flags to report on the span (bit 0 = sampled).
    pub flags: u8,
}

/// Hands out span ids and takes the sampling decision, at request start.
/// Cheap to clone; one per probe, shared by every front-end task.
#[derive(Clone, Debug)]
pub struct SpanStarter {
    sampler: Arc<Sampler>,
}

impl SpanStarter {
    pub fn new(config: &SamplerConfig) -> Self {
        Self {
            sampler: Arc::new(Sampler::from_config(config)),
        }
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Starts a server span: continues `incoming` if the request carried a
    /// valid `traceparent`, else starts a new trace.
    pub fn start_server(&self, incoming: Option<&IncomingTraceContext>) -> SpanContext {
        match incoming {
            Some(remote) => {
                let sampled = self.sampler.should_sample(
                    remote.trace_id,
                    Some((ParentKind::Remote, remote.sampled())),
                );
                SpanContext {
                    trace_id: remote.trace_id,
                    span_id: SpanId::random(),
                    parent_span_id: Some(remote.parent_span_id),
                    parent_kind: ParentKind::Remote,
                    sampled,
                    flags: (remote.flags & !0x01) | u8::from(sampled),
                }
            }
            None => self.start_root(),
        }
    }

    /// Starts a client span: a child of the in-process `parent` (the server
    /// span active on the calling thread/goroutine/task), or a new trace.
    pub fn start_client(&self, parent: Option<&SpanContext>) -> SpanContext {
        match parent {
            Some(parent) => {
                let sampled = self
                    .sampler
                    .should_sample(parent.trace_id, Some((ParentKind::Local, parent.sampled)));
                SpanContext {
                    trace_id: parent.trace_id,
                    span_id: SpanId::random(),
                    parent_span_id: Some(parent.span_id),
                    parent_kind: ParentKind::Local,
                    sampled,
                    flags: (parent.flags & !0x01) | u8::from(sampled),
                }
            }
            None => self.start_root(),
        }
    }

    fn start_root(&self) -> SpanContext {
        let trace_id = TraceId::random();
        let sampled = self.sampler.should_sample(trace_id, None);
        SpanContext {
            trace_id,
            span_id: SpanId::random(),
            parent_span_id: None,
            parent_kind: ParentKind::Root,
            sampled,
            flags: u8::from(sampled),
        }
    }
}

/// Head sampler, with the OpenTelemetry SDK's semantics for
/// `OTEL_TRACES_SAMPLER` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampler {
    kind: SamplerType,
    /// Traces whose id's low 64 bits are below this are kept (ratio samplers).
    threshold: u64,
    ratio: f64,
}

impl Sampler {
    pub fn from_config(config: &SamplerConfig) -> Self {
        let ratio = if config.ratio.is_nan() {
            1.0
        } else {
            config.ratio.clamp(0.0, 1.0)
        };
        // Compare in the u64 domain; ratio 1.0 must keep everything, so it
        // maps to u64::MAX and the test is `<=` minus the zero-ratio case.
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio * (u64::MAX as f64)) as u64
        };
        Self {
            kind: config.kind,
            threshold,
            ratio,
        }
    }

    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    fn ratio_keeps(&self, trace_id: TraceId) -> bool {
        if self.ratio <= 0.0 {
            return false;
        }
        trace_id.low_u64() <= self.threshold
    }

    /// The sampling decision for a span of `trace_id` whose parent is
    /// `parent` (`(kind, parent sampled)`), `None` for a root span.
    pub fn should_sample(&self, trace_id: TraceId, parent: Option<(ParentKind, bool)>) -> bool {
        let parent_sampled = parent.map(|(_, sampled)| sampled);
        match self.kind {
            SamplerType::AlwaysOn => true,
            SamplerType::AlwaysOff => false,
            SamplerType::TraceIdRatio => self.ratio_keeps(trace_id),
            SamplerType::ParentbasedAlwaysOn => parent_sampled.unwrap_or(true),
            SamplerType::ParentbasedAlwaysOff => parent_sampled.unwrap_or(false),
            SamplerType::ParentbasedTraceIdRatio => match parent_sampled {
                Some(sampled) => sampled,
                None => self.ratio_keeps(trace_id),
            },
        }
    }
}

/// Which kernel clock the record's timestamps come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelClock {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    #[default]
    Monotonic,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME (counts suspend).
    Boottime,
}

/// Offsets from the kernel clocks to Unix time, measured once at startup so
/// that every span of a run is converted consistently (NTP steps of the wall
/// clock after startup do not reorder spans).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockOffsets {
    /// Unix ns minus CLOCK_MONOTONIC ns.
    monotonic: i128,
    /// Unix ns minus CLOCK_BOOTTIME ns.
    boottime: i128,
}

impl ClockOffsets {
    /// Reads the three clocks back to back.
    pub fn measure() -> Self {
        use rustix::time::{ClockId, DynamicClockId, clock_gettime, clock_gettime_dynamic};
        let as_ns =
            |t: rustix::time::Timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        let mono = as_ns(clock_gettime(ClockId::Monotonic));
        let real = as_ns(clock_gettime(ClockId::Realtime));
        let boot = clock_gettime_dynamic(DynamicClockId::Boottime)
            .map(as_ns)
            .unwrap_or(mono);
        Self {
            monotonic: real - mono,
            boottime: real - boot,
        }
    }

    /// Offsets given explicitly (tests).
    pub fn fixed(monotonic_to_unix: i128, boottime_to_unix: i128) -> Self {
        Self {
            monotonic: monotonic_to_unix,
            boottime: boottime_to_unix,
        }
    }

    /// The current CLOCK_MONOTONIC in ns: what `bpf_ktime_get_ns()` would say
    /// now. Handy for synthetic records in tests.
    pub fn monotonic_now_ns() -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }

    /// Converts a kernel timestamp to Unix ns.
    pub fn to_unix_nanos(&self, clock: KernelClock, kernel_ns: u64) -> u64 {
        let offset = match clock {
            KernelClock::Monotonic => self.monotonic,
            KernelClock::Boottime => self.boottime,
        };
        (kernel_ns as i128 + offset).clamp(0, u64::MAX as i128) as u64
    }
}

/// An HTTP/1.x or HTTP/2 request/response, as parsed by the front-end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpInfo {
    /// Request method as sent (`GET`, `POST`, ...); the pipeline maps
    /// unknown methods to `_OTHER` per semconv.
    pub method: String,
    /// Request target path, without the query string.
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// Response status; `None` if no response was seen (e.g. the connection
    /// was closed first — then set [`RequestRecord::error`]).
    pub status: Option<u16>,
    /// The route template if the front-end knows it (e.g. Go 1.22+
    /// `http.Request.Pattern`); otherwise the pipeline derives `http.route`.
    pub route: Option<String>,
    /// `Host` header (HTTP/1.1) or `:authority` (HTTP/2), possibly with a port.
    pub host: Option<String>,
    /// `http` or `https` if known (the probe usually sees plain text only).
    pub scheme: Option<String>,
    /// `1.0`, `1.1` or `2`.
    pub protocol_version: Option<String>,
    pub user_agent: Option<String>,
    /// Request body bytes (`Content-Length` or counted).
    pub request_body_size: Option<u64>,
    /// Response body bytes (`Content-Length` or counted).
    pub response_body_size: Option<u64>,
}

/// A gRPC call (unary or streaming), as parsed by the front-end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcInfo {
    /// Fully qualified service, e.g. `helloworld.Greeter`.
    pub service: String,
    /// Method, e.g. `SayHello`.
    pub method: String,
    /// `grpc-status` of the call; `None` if none was seen.
    pub status_code: Option<i32>,
    /// `:authority`, if seen.
    pub authority: Option<String>,
    pub user_agent: Option<String>,
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
    /// Ids and sampling decision, from [`SpanStarter`] at request start.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(kind: SamplerType, ratio: f64) -> SpanStarter {
        SpanStarter::new(&SamplerConfig { kind, ratio })
    }

    #[test]
    fn valid_traceparent_is_parsed_into_ids_and_flags() {
        let ctx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("the W3C example traceparent must parse");
        assert_eq!(
            ctx.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "trace id"
        );
        assert_eq!(
            ctx.parent_span_id.to_string(),
            "00f067aa0ba902b7",
            "parent span id"
        );
        assert!(ctx.sampled(), "flags 01 means sampled");
    }

    #[test]
    fn invalid_traceparents_are_rejected() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?} must be rejected");
        }
    }

    #[test]
    fn future_traceparent_versions_with_extra_fields_are_accepted() {
        let ctx = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more");
        assert!(
            ctx.is_some(),
            "a version 01 header with extra fields must still parse"
        );
        assert!(!ctx.unwrap().sampled(), "flags 00 means not sampled");
    }

    #[test]
    fn traceparent_round_trips_through_format() {
        let starter = sampler(SamplerType::AlwaysOn, 1.0);
        let span = starter.start_server(None);
        let parsed =
            parse_traceparent(&format_traceparent(&span)).expect("formatted traceparent parses");
        assert_eq!(parsed.trace_id, span.trace_id);
        assert_eq!(parsed.parent_span_id, span.span_id);
        assert!(parsed.sampled());
    }

    #[test]
    fn server_span_continues_the_incoming_trace() {
        let starter = sampler(SamplerType::ParentbasedTraceIdRatio, 1.0);
        let incoming =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let server = starter.start_server(Some(&incoming));
        assert_eq!(
            server.trace_id, incoming.trace_id,
            "same trace as the caller"
        );
        assert_eq!(
            server.parent_span_id,
            Some(incoming.parent_span_id),
            "parent is the caller's span"
        );
        assert_eq!(server.parent_kind, ParentKind::Remote);
        assert_ne!(
            server.span_id, incoming.parent_span_id,
            "the server span gets its own id"
        );
    }

    #[test]
    fn client_call_becomes_a_child_of_the_active_server_span() {
        let starter = sampler(SamplerType::ParentbasedTraceIdRatio, 1.0);
        let server = starter.start_server(None);
        let client = starter.start_client(Some(&server));
        assert_eq!(client.trace_id, server.trace_id, "same trace");
        assert_eq!(
            client.parent_span_id,
            Some(server.span_id),
            "parent is the server span"
        );
        assert_eq!(client.parent_kind, ParentKind::Local);
        let orphan = starter.start_client(None);
        assert_eq!(
            orphan.parent_kind,
            ParentKind::Root,
            "a client call outside any request starts a trace"
        );
        assert_eq!(orphan.parent_span_id, None);
    }

    #[test]
    fn parent_based_sampler_follows_the_caller_decision() {
        let starter = sampler(SamplerType::ParentbasedTraceIdRatio, 1.0);
        let unsampled =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        let server = starter.start_server(Some(&unsampled));
        assert!(
            !server.sampled,
            "an unsampled caller keeps the trace unsampled even at ratio 1.0"
        );
        let child = starter.start_client(Some(&server));
        assert!(!child.sampled, "children follow their local parent");

        let starter = sampler(SamplerType::ParentbasedAlwaysOff, 0.0);
        let sampled =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert!(
            starter.start_server(Some(&sampled)).sampled,
            "a sampled caller wins over always_off for roots"
        );
        assert!(
            !starter.start_server(None).sampled,
            "roots follow the root sampler"
        );
    }

    #[test]
    fn always_on_and_always_off_ignore_the_parent() {
        let unsampled =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(
            sampler(SamplerType::AlwaysOn, 0.0)
                .start_server(Some(&unsampled))
                .sampled
        );
        let sampled = IncomingTraceContext {
            flags: 1,
            ..unsampled
        };
        assert!(
            !sampler(SamplerType::AlwaysOff, 1.0)
                .start_server(Some(&sampled))
                .sampled
        );
    }

    #[test]
    fn ratio_sampler_keeps_about_the_ratio_and_is_deterministic_per_trace() {
        let starter = sampler(SamplerType::TraceIdRatio, 0.25);
        let total = 20_000;
        let kept = (0..total)
            .filter(|_| starter.start_server(None).sampled)
            .count();
        let fraction = kept as f64 / total as f64;
        // 20k Bernoulli(0.25) trials: standard deviation ~0.003; 0.02 is > 6 sigma.
        assert!(
            (fraction - 0.25).abs() < 0.02,
            "kept fraction {fraction} should be close to 0.25"
        );

        let trace = TraceId::random();
        let first = starter.sampler().should_sample(trace, None);
        for _ in 0..10 {
            assert_eq!(
                starter.sampler().should_sample(trace, None),
                first,
                "same trace id, same decision"
            );
        }
    }

    #[test]
    fn ratio_zero_keeps_nothing_and_ratio_one_keeps_everything() {
        let none = Sampler::from_config(&SamplerConfig {
            kind: SamplerType::TraceIdRatio,
            ratio: 0.0,
        });
        let all = Sampler::from_config(&SamplerConfig {
            kind: SamplerType::TraceIdRatio,
            ratio: 1.0,
        });
        let max = TraceId([0xff; 16]);
        let min = TraceId([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(
            !none.should_sample(min, None),
            "ratio 0 must drop even the smallest id"
        );
        assert!(
            all.should_sample(max, None),
            "ratio 1 must keep even the largest id"
        );
    }

    #[test]
    fn kernel_timestamps_convert_with_the_clock_offsets() {
        let offsets = ClockOffsets::fixed(1_000, 500);
        assert_eq!(offsets.to_unix_nanos(KernelClock::Monotonic, 10), 1_010);
        assert_eq!(offsets.to_unix_nanos(KernelClock::Boottime, 10), 510);
        let measured = ClockOffsets::measure();
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        let converted = measured
            .to_unix_nanos(KernelClock::Monotonic, ClockOffsets::monotonic_now_ns())
            as i128;
        // Generous: the two reads are microseconds apart; a minute would mean a wrong clock.
        assert!(
            (converted - now_unix).abs() < 60_000_000_000,
            "monotonic now converts to about wall-clock now"
        );
    }
}
