//! OpenTelemetry semantic conventions for HTTP and gRPC: span names, span
//! attributes, span status, and the low-cardinality metric attributes.
//!
//! Pure functions from a [`RequestRecord`] (plus its derived `http.route`) so
//! that the mapping is tested without a collector.
//!
//! These run for every request, so attribute values borrow from the record
//! ([`Attr`]): the encoded span and the metric lookup copy no string into an
//! allocation of its own. Owned forms ([`Value`], [`span_attributes`]) are
//! for what is kept (metric series keys) and for the struct a tap shows.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use arrayvec::ArrayVec;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span, status};

pub use ferrotel_parse::url::split_host;

use super::clock::ClockOffsets;
use super::record::{GrpcInfo, HttpInfo, Protocol, RequestRecord, SpanKind, TlsInfo};

/// An attribute value before it becomes protobuf, owned: what a metric
/// series keeps.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl Value {
    /// The value as [`ValueRef`], which hashes and compares like it.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Str(s) => ValueRef::Str(s),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Bool(b) => ValueRef::Bool(*b),
        }
    }
}

/// Hashes as its [`ValueRef`], so that a borrowed attribute finds the owned
/// one in a map (see [`ValueRef`]'s `Equivalent`).
impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

/// A borrowed attribute value: the form values are hashed and compared in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueRef<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

impl hashbrown::Equivalent<Value> for ValueRef<'_> {
    fn equivalent(&self, key: &Value) -> bool {
        *self == key.as_ref()
    }
}

/// Text short enough to live on the stack: an IP address or a number as
/// text, which every server span carries.
#[derive(Clone, Copy)]
pub struct InlineText {
    len: u8,
    bytes: [u8; Self::CAPACITY],
}

impl InlineText {
    /// The longest IPv6 address text is 45 bytes.
    const CAPACITY: usize = 46;

    /// `value` as text, or `None` if it does not fit.
    fn display(value: impl std::fmt::Display) -> Option<Self> {
        use std::io::Write;
        let mut text = Self {
            len: 0,
            bytes: [0; Self::CAPACITY],
        };
        let mut rest = &mut text.bytes[..];
        write!(rest, "{value}").ok()?;
        let unused = rest.len();
        text.len = u8::try_from(Self::CAPACITY - unused).ok()?;
        Some(text)
    }

    pub fn as_str(&self) -> &str {
        // Written from `Display` output, so UTF-8; the fallback never runs.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for InlineText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// An attribute value borrowed from the record where it can be.
#[derive(Clone, Debug)]
pub enum Attr<'a> {
    Str(&'a str),
    /// An address or a number as text.
    Inline(InlineText),
    /// Text made for this span (a client's `url.full`).
    Owned(String),
    Int(i64),
    Bool(bool),
}

impl<'a> Attr<'a> {
    /// `value` as text, on the stack when it fits.
    fn text(value: impl std::fmt::Display) -> Self {
        match InlineText::display(&value) {
            Some(text) => Attr::Inline(text),
            None => Attr::Owned(value.to_string()),
        }
    }

    fn ip(address: IpAddr) -> Self {
        Self::text(address)
    }

    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Attr::Str(s) => ValueRef::Str(s),
            Attr::Inline(text) => ValueRef::Str(text.as_str()),
            Attr::Owned(s) => ValueRef::Str(s),
            Attr::Int(i) => ValueRef::Int(*i),
            Attr::Bool(b) => ValueRef::Bool(*b),
        }
    }

    /// The text of a text value.
    pub fn as_str(&self) -> Option<&str> {
        match self.as_ref() {
            ValueRef::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn to_value(&self) -> Value {
        match self.as_ref() {
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Bool(b) => Value::Bool(b),
        }
    }
}

impl<'a> From<&'a str> for Attr<'a> {
    fn from(s: &'a str) -> Self {
        Attr::Str(s)
    }
}
impl From<i64> for Attr<'_> {
    fn from(v: i64) -> Self {
        Attr::Int(v)
    }
}

/// Attributes in insertion order.
pub type Attributes = Vec<(&'static str, Value)>;

/// The most metric attributes a record has (an HTTP or gRPC client span
/// with an error: seven).
pub const MAX_METRIC_ATTRIBUTES: usize = 8;

/// A record's metric attributes, on the stack (see [`metric_attributes`]).
pub type MetricAttributes<'a> = ArrayVec<(&'static str, Attr<'a>), MAX_METRIC_ATTRIBUTES>;

pub fn key_value(key: &str, value: &Value) -> KeyValue {
    into_key_value(key, value.clone())
}

/// [`key_value`] that moves the value's string instead of copying it: a
/// span's attributes are built once and converted once.
pub fn into_key_value(key: &str, value: Value) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s),
        Value::Int(i) => any_value::Value::IntValue(i),
        Value::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub fn string_kv(key: &str, value: &str) -> KeyValue {
    key_value(key, &Value::Str(value.to_owned()))
}

const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// `http.request.method`: known methods as-is, everything else `_OTHER`
/// (semconv: unbounded method names must not reach metrics).
pub fn normalize_method(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .copied()
        .find(|m| *m == method)
        .unwrap_or("_OTHER")
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// The `(server.address, server.port)` of a request: the Host header for
/// HTTP if present, else the server side of the connection.
fn server_endpoint<'a>(
    record: &RequestRecord,
    authority: Option<&'a str>,
    scheme: &str,
) -> (Option<Attr<'a>>, Option<u16>) {
    let server_side: Option<SocketAddr> = match record.kind {
        SpanKind::Server => record.local,
        SpanKind::Client => record.peer,
    };
    match authority.filter(|h| !h.is_empty()) {
        Some(authority) => {
            let (host, port) = split_host(authority);
            let port = port
                .or_else(|| server_side.map(|a| a.port()))
                .or(Some(default_port(scheme)));
            (Some(Attr::Str(host)), port)
        }
        None => (
            server_side.map(|a| Attr::ip(a.ip())),
            server_side.map(|a| a.port()),
        ),
    }
}

/// gRPC status codes the server side treats as errors (semconv: the rest
/// are client faults and not errors of the server span).
fn grpc_server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Why a record failed, if it did: its `error.type` ([`Failure::attr`]).
#[derive(Clone, Copy)]
enum Failure {
    /// An HTTP or gRPC status code the conventions count as an error.
    Code(i64),
    /// A transport failure without a status.
    Other,
}

impl Failure {
    fn attr(self) -> Attr<'static> {
        match self {
            Failure::Code(code) => Attr::text(code),
            Failure::Other => Attr::Str("_OTHER"),
        }
    }
}

fn failure(record: &RequestRecord) -> Option<Failure> {
    match &record.protocol {
        Protocol::Http(http) => match http.status {
            Some(code) if code >= 500 || (record.kind == SpanKind::Client && code >= 400) => {
                Some(Failure::Code(code.into()))
            }
            _ if record.error.is_some() => Some(Failure::Other),
            _ => None,
        },
        Protocol::Grpc(grpc) => match grpc.status_code {
            Some(code) if record.kind == SpanKind::Server && grpc_server_error(code) => {
                Some(Failure::Code(code.into()))
            }
            Some(code) if record.kind == SpanKind::Client && code != 0 => {
                Some(Failure::Code(code.into()))
            }
            _ if record.error.is_some() => Some(Failure::Other),
            _ => None,
        },
    }
}

/// A span's name in up to three borrowed parts, written without building
/// the string (see [`span_name`]).
#[derive(Clone, Copy)]
struct SpanName<'a> {
    first: &'a str,
    separator: &'static str,
    second: &'a str,
}

impl SpanName<'_> {
    fn len(&self) -> usize {
        self.first.len() + self.separator.len() + self.second.len()
    }

    fn extend(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.first.as_bytes());
        out.extend_from_slice(self.separator.as_bytes());
        out.extend_from_slice(self.second.as_bytes());
    }

    fn to_owned_string(self) -> String {
        [self.first, self.separator, self.second].concat()
    }
}

/// The span name: `{method} {route}` (HTTP server), `{method}` (HTTP
/// client, or server without route), `{service}/{method}` (gRPC).
fn span_name_parts<'a>(record: &'a RequestRecord, route: Option<&'a str>) -> SpanName<'a> {
    match &record.protocol {
        Protocol::Http(http) => {
            let method = if normalize_method(&http.method) == "_OTHER" {
                "HTTP"
            } else {
                http.method.as_str()
            };
            match (record.kind, route) {
                (SpanKind::Server, Some(route)) => SpanName {
                    first: method,
                    separator: " ",
                    second: route,
                },
                _ => SpanName {
                    first: method,
                    separator: "",
                    second: "",
                },
            }
        }
        Protocol::Grpc(grpc) => SpanName {
            first: &grpc.service,
            separator: "/",
            second: &grpc.method,
        },
    }
}

/// The span name (see [`span_name_parts`]).
pub fn span_name(record: &RequestRecord, route: Option<&str>) -> String {
    span_name_parts(record, route).to_owned_string()
}

fn peer_attributes(record: &RequestRecord, emit: &mut impl FnMut(&'static str, Attr<'_>)) {
    if let Some(peer) = record.peer {
        let address = Attr::ip(peer.ip());
        if record.kind == SpanKind::Server {
            emit("client.address", address.clone());
            emit("client.port", i64::from(peer.port()).into());
        }
        emit("network.peer.address", address);
        emit("network.peer.port", i64::from(peer.port()).into());
    }
}

fn http_span_attributes<'a>(
    record: &'a RequestRecord,
    http: &'a HttpInfo,
    route: Option<&'a str>,
    emit: &mut impl FnMut(&'static str, Attr<'_>),
) {
    let method = normalize_method(&http.method);
    emit("http.request.method", method.into());
    if method == "_OTHER" {
        emit("http.request.method_original", http.method.as_str().into());
    }
    let scheme = http.scheme.as_deref().unwrap_or("http");
    let (server_address, server_port) = server_endpoint(
        record,
        authority(http.host.as_deref(), http.tls.as_ref()),
        scheme,
    );
    match record.kind {
        SpanKind::Server => {
            emit("url.path", http.path.as_str().into());
            if let Some(query) = http.query.as_deref().filter(|q| !q.is_empty()) {
                emit("url.query", query.into());
            }
            emit("url.scheme", scheme.into());
            if let Some(route) = route {
                emit("http.route", route.into());
            }
        }
        SpanKind::Client => {
            if let Some(address) = &server_address {
                let address = address.as_str().unwrap_or_default();
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address.to_owned()
                };
                let port = match server_port {
                    Some(p) if p != default_port(scheme) => format!(":{p}"),
                    _ => String::new(),
                };
                let query = http
                    .query
                    .as_deref()
                    .filter(|q| !q.is_empty())
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                emit(
                    "url.full",
                    Attr::Owned(format!("{scheme}://{host}{port}{}{query}", http.path)),
                );
            }
        }
    }
    if let Some(status) = http.status {
        emit("http.response.status_code", i64::from(status).into());
    }
    if let Some(address) = server_address {
        emit("server.address", address);
    }
    if let Some(port) = server_port {
        emit("server.port", i64::from(port).into());
    }
    peer_attributes(record, emit);
    if let Some(version) = &http.protocol_version {
        emit("network.protocol.name", "http".into());
        emit("network.protocol.version", version.as_str().into());
    }
    if let Some(ua) = &http.user_agent {
        emit("user_agent.original", ua.as_str().into());
    }
    if let Some(size) = http.request_body_size {
        emit(
            "http.request.body.size",
            i64::try_from(size).unwrap_or(i64::MAX).into(),
        );
    }
    if let Some(size) = http.response_body_size {
        emit(
            "http.response.body.size",
            i64::try_from(size).unwrap_or(i64::MAX).into(),
        );
    }
    if let Some(tls) = &http.tls {
        tls_attributes(tls, emit);
    }
}

/// The authority of a request: its `Host`/`:authority`, else the server
/// name the client asked for in the TLS handshake (SNI).
fn authority<'a>(host: Option<&'a str>, tls: Option<&'a TlsInfo>) -> Option<&'a str> {
    host.filter(|h| !h.is_empty())
        .or_else(|| tls.and_then(|t| t.server_name.as_deref()))
}

/// `tls.*` span attributes, where known.
fn tls_attributes(tls: &TlsInfo, emit: &mut impl FnMut(&'static str, Attr<'_>)) {
    if let Some(name) = &tls.protocol_name {
        emit("tls.protocol.name", name.as_str().into());
    }
    if let Some(version) = &tls.protocol_version {
        emit("tls.protocol.version", version.as_str().into());
    }
}

fn grpc_span_attributes(
    record: &RequestRecord,
    grpc: &GrpcInfo,
    emit: &mut impl FnMut(&'static str, Attr<'_>),
) {
    emit("rpc.system", "grpc".into());
    emit("rpc.service", grpc.service.as_str().into());
    emit("rpc.method", grpc.method.as_str().into());
    if let Some(code) = grpc.status_code {
        emit("rpc.grpc.status_code", i64::from(code).into());
    }
    let scheme = if grpc.tls.is_some() { "https" } else { "http" };
    let (server_address, server_port) = server_endpoint(
        record,
        authority(grpc.authority.as_deref(), grpc.tls.as_ref()),
        scheme,
    );
    if let Some(address) = server_address {
        emit("server.address", address);
    }
    if let Some(port) = server_port {
        emit("server.port", i64::from(port).into());
    }
    peer_attributes(record, emit);
    if let Some(ua) = &grpc.user_agent {
        emit("user_agent.original", ua.as_str().into());
    }
    if let Some(tls) = &grpc.tls {
        tls_attributes(tls, emit);
    }
}

/// Calls `emit` with every span attribute of a record, in order.
fn each_span_attribute(
    record: &RequestRecord,
    route: Option<&str>,
    mut emit: impl FnMut(&'static str, Attr<'_>),
) {
    match &record.protocol {
        Protocol::Http(http) => http_span_attributes(record, http, route, &mut emit),
        Protocol::Grpc(grpc) => grpc_span_attributes(record, grpc, &mut emit),
    }
    if let Some(failure) = failure(record) {
        emit("error.type", failure.attr());
    }
}

/// Every span attribute of a record, owned.
pub fn span_attributes(record: &RequestRecord, route: Option<&str>) -> Attributes {
    let mut attrs = Attributes::new();
    each_span_attribute(record, route, |key, value| {
        attrs.push((key, value.to_value()));
    });
    attrs
}

/// The low-cardinality attributes of the duration histograms (semconv's
/// required + recommended ones, without addresses of server-side peers),
/// borrowed from the record.
pub fn metric_attributes<'a>(
    record: &'a RequestRecord,
    route: Option<&'a str>,
) -> MetricAttributes<'a> {
    let mut attrs = MetricAttributes::new();
    // At most MAX_METRIC_ATTRIBUTES pushes on every path below.
    let mut push = |key: &'static str, value: Attr<'a>| {
        let _ = attrs.try_push((key, value));
    };
    match &record.protocol {
        Protocol::Http(http) => {
            push("http.request.method", normalize_method(&http.method).into());
            if let Some(status) = http.status {
                push("http.response.status_code", i64::from(status).into());
            }
            let scheme = http.scheme.as_deref().unwrap_or("http");
            match record.kind {
                SpanKind::Server => {
                    if let Some(route) = route {
                        push("http.route", route.into());
                    }
                }
                SpanKind::Client => {
                    let (address, port) = server_endpoint(
                        record,
                        authority(http.host.as_deref(), http.tls.as_ref()),
                        scheme,
                    );
                    if let Some(address) = address {
                        push("server.address", address);
                    }
                    if let Some(port) = port {
                        push("server.port", i64::from(port).into());
                    }
                }
            }
            push("url.scheme", scheme.into());
            if let Some(version) = &http.protocol_version {
                push("network.protocol.version", version.as_str().into());
            }
        }
        Protocol::Grpc(grpc) => {
            push("rpc.system", "grpc".into());
            push("rpc.service", grpc.service.as_str().into());
            push("rpc.method", grpc.method.as_str().into());
            if let Some(code) = grpc.status_code {
                push("rpc.grpc.status_code", i64::from(code).into());
            }
            if record.kind == SpanKind::Client {
                let scheme = if grpc.tls.is_some() { "https" } else { "http" };
                let (address, port) = server_endpoint(
                    record,
                    authority(grpc.authority.as_deref(), grpc.tls.as_ref()),
                    scheme,
                );
                if let Some(address) = address {
                    push("server.address", address);
                }
                if let Some(port) = port {
                    push("server.port", i64::from(port).into());
                }
            }
        }
    }
    if let Some(failure) = failure(record) {
        push("error.type", failure.attr());
    }
    attrs
}

/// Is the span an error? (5xx for servers, 4xx and 5xx for clients, gRPC
/// per semconv, or a transport failure.)
pub fn is_error(record: &RequestRecord) -> bool {
    failure(record).is_some()
}

/// Everything of a span but its ids and attributes, shared by the span as
/// a struct ([`to_span`], for taps) and as bytes ([`encode_span`], for
/// export), so that the two cannot disagree.
struct SpanFrame<'a> {
    name: SpanName<'a>,
    kind: span::SpanKind,
    flags: u32,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    /// The status code, and the message of an error (the record's error).
    status_code: status::StatusCode,
    status_message: &'a str,
}

fn span_frame<'a>(
    record: &'a RequestRecord,
    route: Option<&'a str>,
    clock: &ClockOffsets,
) -> SpanFrame<'a> {
    let ctx = &record.span;
    let (status_code, status_message) = if is_error(record) {
        (
            status::StatusCode::Error,
            record.error.as_deref().unwrap_or_default(),
        )
    } else {
        (status::StatusCode::Unset, "")
    };
    let kind = match record.kind {
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
    };
    // Bit 8/9 of OTLP span flags: "has is_remote" and "parent is remote".
    let remote_flags = match ctx.parent_kind {
        super::trace_context::ParentKind::Remote => 0x300,
        _ => 0x100,
    };
    SpanFrame {
        name: span_name_parts(record, route),
        kind,
        flags: u32::from(ctx.flags) | remote_flags,
        start_time_unix_nano: clock.to_unix_nanos(record.clock, record.start_ns),
        end_time_unix_nano: clock.to_unix_nanos(record.clock, record.end_ns.max(record.start_ns)),
        status_code,
        status_message,
    }
}

/// The OTLP span of a record.
pub fn to_span(record: &RequestRecord, route: Option<&str>, clock: &ClockOffsets) -> Span {
    let ctx = &record.span;
    let frame = span_frame(record, route, clock);
    Span {
        trace_id: ctx.trace_id.0.to_vec(),
        span_id: ctx.span_id.0.to_vec(),
        trace_state: String::new(),
        parent_span_id: ctx.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
        flags: frame.flags,
        name: frame.name.to_owned_string(),
        kind: frame.kind as i32,
        start_time_unix_nano: frame.start_time_unix_nano,
        end_time_unix_nano: frame.end_time_unix_nano,
        attributes: span_attributes(record, route)
            .into_iter()
            .map(|(k, v)| into_key_value(k, v))
            .collect(),
        status: Some(Status {
            message: frame.status_message.to_owned(),
            code: frame.status_code as i32,
        }),
        ..Default::default()
    }
}

/// The span of `record` as the protobuf bytes of an OTLP `Span` message,
/// the same bytes prost writes for [`to_span`]'s struct. Export encodes
/// each span once, here, straight from the record: no struct, and no
/// string copied on the way (one allocation per span, the bytes).
pub fn encode_span(record: &RequestRecord, route: Option<&str>, clock: &ClockOffsets) -> Vec<u8> {
    use prost::encoding::{self as pb, WireType};
    /// A length-delimited field: key, length, bytes.
    fn bytes_field(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
        pb::encode_key(tag, WireType::LengthDelimited, out);
        pb::encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    let ctx = &record.span;
    let frame = span_frame(record, route, clock);
    let mut out = Vec::with_capacity(640);
    bytes_field(1, &ctx.trace_id.0, &mut out);
    bytes_field(2, &ctx.span_id.0, &mut out);
    if let Some(parent) = ctx.parent_span_id {
        bytes_field(4, &parent.0, &mut out);
    }
    let name_len = frame.name.len();
    if name_len > 0 {
        pb::encode_key(5, WireType::LengthDelimited, &mut out);
        pb::encode_varint(name_len as u64, &mut out);
        frame.name.extend(&mut out);
    }
    pb::int32::encode(6, &(frame.kind as i32), &mut out);
    if frame.start_time_unix_nano != 0 {
        pb::fixed64::encode(7, &frame.start_time_unix_nano, &mut out);
    }
    if frame.end_time_unix_nano != 0 {
        pb::fixed64::encode(8, &frame.end_time_unix_nano, &mut out);
    }
    each_span_attribute(record, route, |key, value| {
        let value = value.as_ref();
        let value_len = match value {
            ValueRef::Str(s) => pb::key_len(1) + pb::encoded_len_varint(s.len() as u64) + s.len(),
            ValueRef::Int(i) => pb::int64::encoded_len(3, &i),
            ValueRef::Bool(b) => pb::bool::encoded_len(2, &b),
        };
        let key_value_len = pb::key_len(1)
            + pb::encoded_len_varint(key.len() as u64)
            + key.len()
            + pb::key_len(2)
            + pb::encoded_len_varint(value_len as u64)
            + value_len;
        pb::encode_key(9, WireType::LengthDelimited, &mut out);
        pb::encode_varint(key_value_len as u64, &mut out);
        // KeyValue.key (even empty: a span's keys are never empty) and
        // KeyValue.value, an AnyValue whose oneof is always written (even an
        // empty string, as prost does for a oneof).
        bytes_field(1, key.as_bytes(), &mut out);
        pb::encode_key(2, WireType::LengthDelimited, &mut out);
        pb::encode_varint(value_len as u64, &mut out);
        match value {
            ValueRef::Str(s) => bytes_field(1, s.as_bytes(), &mut out),
            ValueRef::Int(i) => pb::int64::encode(3, &i, &mut out),
            ValueRef::Bool(b) => pb::bool::encode(2, &b, &mut out),
        }
    });
    // Status: message (2) if not empty, code (3) if not Unset.
    let code = frame.status_code as i32;
    let message = frame.status_message;
    let status_len = if message.is_empty() {
        0
    } else {
        pb::key_len(2) + pb::encoded_len_varint(message.len() as u64) + message.len()
    } + if code == 0 {
        0
    } else {
        pb::int32::encoded_len(3, &code)
    };
    pb::encode_key(15, WireType::LengthDelimited, &mut out);
    pb::encode_varint(status_len as u64, &mut out);
    if !message.is_empty() {
        bytes_field(2, message.as_bytes(), &mut out);
    }
    if code != 0 {
        pb::int32::encode(3, &code, &mut out);
    }
    // prost writes fields in tag order, not declaration order.
    if frame.flags != 0 {
        pb::fixed32::encode(16, &frame.flags, &mut out);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::telemetry::clock::*;
    use crate::telemetry::sampling::*;

    pub(crate) fn http_record(
        kind: SpanKind,
        method: &str,
        path: &str,
        status: Option<u16>,
    ) -> RequestRecord {
        let starter = SpanStarter::new(Sampler::default());
        RequestRecord {
            kind,
            pid: 100,
            tid: 101,
            start_ns: 1_000_000_000,
            end_ns: 1_250_000_000,
            clock: KernelClock::Monotonic,
            span: starter.start_server(None),
            protocol: Protocol::Http(HttpInfo {
                method: method.into(),
                path: path.into(),
                query: Some("q=1".into()),
                status,
                host: Some("shop.example:8080".into()),
                protocol_version: Some("1.1".into()),
                user_agent: Some("curl/8.0".into()),
                request_body_size: Some(0),
                response_body_size: Some(12),
                ..Default::default()
            }),
            local: Some("10.0.0.1:8080".parse().unwrap()),
            peer: Some("10.0.0.2:51000".parse().unwrap()),
            error: None,
        }
    }

    /// Records that exercise every field and attribute kind a span has:
    /// server and client, HTTP and gRPC, a remote parent, a transport
    /// error, an unknown method, an empty path.
    pub(crate) fn varied_records() -> Vec<RequestRecord> {
        let starter = SpanStarter::new(Sampler::default());
        let mut records = vec![
            http_record(SpanKind::Server, "GET", "/users/42", Some(200)),
            http_record(SpanKind::Server, "BREW", "", Some(503)),
            http_record(SpanKind::Client, "POST", "/orders", Some(404)),
        ];
        let mut failed = http_record(SpanKind::Client, "GET", "/slow", None);
        failed.error = Some("connection reset".into());
        records.push(failed);
        let mut continued = http_record(SpanKind::Server, "PUT", "/items/7", Some(201));
        let parent = starter.start_server(None);
        continued.span = starter.start_client(Some(&parent));
        records.push(continued);
        let mut remote = http_record(SpanKind::Server, "GET", "/", Some(200));
        let incoming = crate::telemetry::trace_context::parse_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .expect("valid traceparent");
        remote.span = starter.start_server(Some(&incoming));
        records.push(remote);
        let mut grpc = http_record(SpanKind::Client, "POST", "/", Some(200));
        grpc.protocol = Protocol::Grpc(GrpcInfo {
            service: "helloworld.Greeter".into(),
            method: "SayHello".into(),
            status_code: Some(0),
            authority: Some("greeter:50051".into()),
            user_agent: None,
            tls: None,
        });
        records.push(grpc);
        records
    }

    #[test]
    fn an_encoded_span_is_byte_for_byte_what_prost_writes_for_the_span() {
        use prost::Message;
        let clock = ClockOffsets::fixed(1_000, 500);
        for record in varied_records() {
            for route in [None, Some("/users/{id}")] {
                let expected = to_span(&record, route, &clock);
                let encoded = encode_span(&record, route, &clock);
                assert_eq!(
                    encoded,
                    expected.encode_to_vec(),
                    "{:?} {route:?}: encoded span differs from prost's encoding",
                    record.protocol
                );
                assert_eq!(Span::decode(encoded.as_slice()).expect("decodes"), expected);
            }
        }
    }

    fn attr<'a>(attrs: &'a Attributes, key: &str) -> Option<&'a Value> {
        attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    #[test]
    fn http_server_span_follows_semantic_conventions() {
        let record = http_record(SpanKind::Server, "GET", "/users/42", Some(200));
        let attrs = span_attributes(&record, Some("/users/{id}"));
        assert_eq!(span_name(&record, Some("/users/{id}")), "GET /users/{id}");
        let expect = [
            ("http.request.method", Value::from("GET")),
            ("url.path", "/users/42".into()),
            ("url.query", "q=1".into()),
            ("url.scheme", "http".into()),
            ("http.route", "/users/{id}".into()),
            ("http.response.status_code", 200.into()),
            ("server.address", "shop.example".into()),
            ("server.port", 8080.into()),
            ("client.address", "10.0.0.2".into()),
            ("client.port", 51000.into()),
            ("network.peer.address", "10.0.0.2".into()),
            ("user_agent.original", "curl/8.0".into()),
            ("network.protocol.version", "1.1".into()),
        ];
        for (key, value) in expect {
            assert_eq!(attr(&attrs, key), Some(&value), "attribute {key}");
        }
        assert_eq!(attr(&attrs, "error.type"), None, "200 is not an error");
        assert!(!is_error(&record));
    }

    #[test]
    fn server_errors_are_5xx_and_client_errors_are_4xx_and_up() {
        assert!(
            !is_error(&http_record(SpanKind::Server, "GET", "/", Some(404))),
            "404 is the client's fault"
        );
        assert!(is_error(&http_record(
            SpanKind::Server,
            "GET",
            "/",
            Some(503)
        )));
        assert!(is_error(&http_record(
            SpanKind::Client,
            "GET",
            "/",
            Some(404)
        )));
        let mut reset = http_record(SpanKind::Client, "GET", "/", None);
        reset.error = Some("connection reset".into());
        assert_eq!(
            attr(&span_attributes(&reset, None), "error.type"),
            Some(&"_OTHER".into())
        );
        let span = to_span(&reset, None, &ClockOffsets::fixed(0, 0));
        assert_eq!(span.status.unwrap().code, status::StatusCode::Error as i32);
    }

    #[test]
    fn http_client_span_has_url_full_and_peer_but_no_route() {
        let mut record = http_record(SpanKind::Client, "POST", "/api/orders", Some(201));
        record.peer = Some("10.0.0.9:8080".parse().unwrap());
        let attrs = span_attributes(&record, None);
        assert_eq!(span_name(&record, None), "POST");
        assert_eq!(
            attr(&attrs, "url.full"),
            Some(&"http://shop.example:8080/api/orders?q=1".into())
        );
        assert_eq!(attr(&attrs, "server.address"), Some(&"shop.example".into()));
        assert_eq!(
            attr(&attrs, "network.peer.address"),
            Some(&"10.0.0.9".into())
        );
        assert_eq!(attr(&attrs, "http.route"), None);
        assert_eq!(
            attr(&attrs, "client.address"),
            None,
            "client.address is for server spans"
        );
    }

    #[test]
    fn unknown_methods_become_other() {
        let record = http_record(SpanKind::Server, "PURGE", "/", Some(200));
        let attrs = span_attributes(&record, Some("/"));
        assert_eq!(attr(&attrs, "http.request.method"), Some(&"_OTHER".into()));
        assert_eq!(
            attr(&attrs, "http.request.method_original"),
            Some(&"PURGE".into())
        );
        assert_eq!(span_name(&record, Some("/")), "HTTP /");
    }

    #[test]
    fn grpc_spans_use_rpc_attributes_and_grpc_error_rules() {
        let mut record = http_record(SpanKind::Server, "POST", "/", None);
        record.protocol = Protocol::Grpc(GrpcInfo {
            service: "helloworld.Greeter".into(),
            method: "SayHello".into(),
            status_code: Some(5),
            authority: Some("greeter:50051".into()),
            user_agent: None,
            tls: None,
        });
        let attrs = span_attributes(&record, None);
        assert_eq!(span_name(&record, None), "helloworld.Greeter/SayHello");
        assert_eq!(attr(&attrs, "rpc.system"), Some(&"grpc".into()));
        assert_eq!(
            attr(&attrs, "rpc.service"),
            Some(&"helloworld.Greeter".into())
        );
        assert_eq!(attr(&attrs, "rpc.method"), Some(&"SayHello".into()));
        assert_eq!(attr(&attrs, "rpc.grpc.status_code"), Some(&5.into()));
        assert!(!is_error(&record), "NOT_FOUND is not a server error");
        record.kind = SpanKind::Client;
        assert!(is_error(&record), "any non-OK code is a client error");
    }

    #[test]
    fn metric_attributes_leave_out_high_cardinality_fields() {
        let record = http_record(SpanKind::Server, "GET", "/users/42", Some(200));
        let attrs = metric_attributes(&record, Some("/users/{id}"));
        let keys: Vec<&str> = attrs.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "http.request.method",
                "http.response.status_code",
                "http.route",
                "url.scheme",
                "network.protocol.version"
            ]
        );
    }

    #[test]
    fn span_carries_ids_parent_and_converted_times() {
        let starter = SpanStarter::new(Sampler::default());
        let server = starter.start_server(None);
        let mut record = http_record(SpanKind::Client, "GET", "/", Some(200));
        record.span = starter.start_client(Some(&server));
        let span = to_span(
            &record,
            None,
            &ClockOffsets::fixed(1_700_000_000_000_000_000, 0),
        );
        assert_eq!(span.trace_id, server.trace_id.0.to_vec());
        assert_eq!(
            span.parent_span_id,
            server.span_id.0.to_vec(),
            "client span is a child of the server span"
        );
        assert_eq!(span.kind, span::SpanKind::Client as i32);
        assert_eq!(span.start_time_unix_nano, 1_700_000_001_000_000_000);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            250_000_000
        );
    }
}
