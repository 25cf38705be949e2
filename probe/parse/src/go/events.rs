//! Kernel events of the Go program set -> [`RequestRecord`]s.
//!
//! Span ids are assigned in the kernel at request start (a client call ends
//! before the server request that caused it, so the child must be able to
//! name its parent without waiting for user space). The sampling decision
//! is recomputed here from the trace id and the chain's root, which makes
//! it the same for every span of a trace: the sampler's ratio test depends
//! only on the trace id, and a parent-based decision follows the incoming
//! `traceparent` flags carried in `root_flags`.

use std::net::{Ipv6Addr, SocketAddr};

use ferrotel_probe_ebpf::go::{self, GoRequestEvent, ROOT_REMOTE, ROOT_SAMPLED, kind, parent_kind};

use crate::record::{
    GrpcInfo, HttpInfo, KernelClock, Protocol, RequestRecord, SpanKind, Text, TlsInfo,
};
use crate::sampling::Sampler;
use crate::trace_context::{ParentKind, SpanContext, SpanId, TraceId};

/// Why an event could not become a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring-buffer record of {0} bytes is shorter than a Go request event")]
    Short(usize),
    #[error("unknown Go event kind {0}")]
    Kind(u32),
}

fn text(bytes: &[u8], len: u16) -> Text {
    Text::from(text_ref(bytes, len).as_ref())
}

/// [`text`] borrowed, for text that is cut before it is kept.
fn text_ref(bytes: &[u8], len: u16) -> std::borrow::Cow<'_, str> {
    let len = usize::from(len).min(bytes.len());
    String::from_utf8_lossy(&bytes[..len])
}

/// The sampling decision of the chain's local root (a server span, or a
/// root client span), from what the kernel recorded about it.
fn root_sampled(sampler: &Sampler, trace_id: TraceId, root_flags: u32) -> bool {
    if root_flags & ROOT_REMOTE != 0 {
        sampler.should_sample(
            trace_id,
            Some((ParentKind::Remote, root_flags & ROOT_SAMPLED != 0)),
        )
    } else {
        sampler.should_sample(trace_id, None)
    }
}

/// The span identity of an event, with the sampling decision.
pub fn span_context(sampler: &Sampler, trace: &go::GoTrace) -> SpanContext {
    let trace_id = TraceId(trace.trace_id);
    let parent = SpanId(trace.parent_span_id);
    let (parent_kind, parent_span_id, sampled) = match trace.parent_kind {
        parent_kind::REMOTE => (
            ParentKind::Remote,
            Some(parent),
            root_sampled(sampler, trace_id, trace.root_flags),
        ),
        parent_kind::LOCAL => {
            let parent_sampled = root_sampled(sampler, trace_id, trace.root_flags);
            (
                ParentKind::Local,
                Some(parent),
                sampler.should_sample(trace_id, Some((ParentKind::Local, parent_sampled))),
            )
        }
        _ => (
            ParentKind::Root,
            None,
            sampler.should_sample(trace_id, None),
        ),
    };
    SpanContext {
        trace_id,
        span_id: SpanId(trace.span_id),
        parent_span_id,
        parent_kind,
        sampled,
        flags: u8::from(sampled),
    }
}

/// Splits `/pkg.Service/Method` into (`pkg.Service`, `Method`).
pub fn split_grpc_method(full: &str) -> (Text, Text) {
    let trimmed = full.strip_prefix('/').unwrap_or(full);
    match trimmed.rsplit_once('/') {
        Some((service, method)) => (Text::from(service), Text::from(method)),
        None => (Text::default(), Text::from(trimmed)),
    }
}

/// The path part of a Go 1.22+ ServeMux pattern (`GET /users/{id}` ->
/// `/users/{id}`); host-qualified patterns keep only the path.
fn route_of_pattern(pattern: &str) -> Option<Text> {
    let path = pattern.rsplit_once(' ').map_or(pattern, |(_, p)| p);
    let path = &path[path.find('/')?..];
    Some(Text::from(path))
}

/// An address as the kernel side writes it (16 bytes, IPv4-mapped for
/// IPv4), IPv4 ones as IPv4, as every other source of addresses has them.
fn socket_addr(ip: [u8; 16], port: u16) -> SocketAddr {
    SocketAddr::new(Ipv6Addr::from(ip).to_canonical(), port)
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8], sampler: &Sampler) -> Result<RequestRecord, DecodeError> {
    let event: GoRequestEvent =
        ferrotel_probe_ebpf::Wire::read(bytes).ok_or(DecodeError::Short(bytes.len()))?;
    to_record(&event, sampler)
}

/// Turns a decoded event into the pipeline's record.
pub fn to_record(event: &GoRequestEvent, sampler: &Sampler) -> Result<RequestRecord, DecodeError> {
    let span_kind = match event.header.kind {
        kind::HTTP_SERVER | kind::GRPC_SERVER => SpanKind::Server,
        kind::HTTP_CLIENT | kind::GRPC_CLIENT => SpanKind::Client,
        other => return Err(DecodeError::Kind(other)),
    };
    let path = text(&event.path, event.path_len);
    let host = text(&event.host, event.host_len);
    let tls = (event.flags & go::EVENT_TLS != 0).then(|| {
        let mut tls = TlsInfo::default();
        tls.set_version(event.tls_version);
        tls
    });
    let conn = &event.conn;
    let local =
        (conn.known & go::CONN_LOCAL != 0).then(|| socket_addr(conn.local, conn.local_port));
    let remote =
        (conn.known & go::CONN_REMOTE != 0).then(|| socket_addr(conn.remote, conn.remote_port));
    let mut error = None;
    let protocol = match event.header.kind {
        kind::HTTP_SERVER | kind::HTTP_CLIENT => {
            let status = u16::try_from(event.status)
                .ok()
                .filter(|s| (100..=599).contains(s));
            if status.is_none() && span_kind == SpanKind::Client {
                error = Some("round trip failed before a response arrived".to_owned());
            }
            let route = route_of_pattern(&text_ref(&event.route, event.route_len));
            Protocol::Http(HttpInfo {
                method: text(&event.method, event.method_len),
                path,
                query: None,
                status,
                route,
                host: (!host.is_empty()).then_some(host),
                scheme: Some(Text::const_new(if tls.is_some() {
                    "https"
                } else {
                    "http"
                })),
                protocol_version: None,
                user_agent: None,
                request_body_size: u64::try_from(event.content_length).ok().filter(|n| *n > 0),
                response_body_size: None,
                tls,
            })
        }
        _ => {
            let (service, method) = split_grpc_method(&path);
            Protocol::Grpc(GrpcInfo {
                service,
                method,
                // gRPC defines codes 0..=16; anything else read from the
                // process is not a status (and must not become a label).
                status_code: i32::try_from(event.status)
                    .ok()
                    .filter(|c| (0..=16).contains(c)),
                authority: None,
                user_agent: None,
                // Server side: the transport's AuthInfo was a TLSInfo.
                tls,
            })
        }
    };
    Ok(RequestRecord {
        kind: span_kind,
        pid: event.header.tgid,
        tid: event.goid as u32,
        start_ns: event.start_ns,
        end_ns: event.header.ts_ns,
        clock: KernelClock::Monotonic,
        span: span_context(sampler, &event.trace),
        protocol,
        // The connection's ends where the kernel side read them (HTTP/1 and
        // gRPC clients, the caller of a gRPC server); a net/http server's
        // caller is its Request.RemoteAddr ("ip:port"), and unix sockets
        // and anything unparsable leave it unset.
        local,
        peer: remote.or_else(|| {
            (event.header.kind == kind::HTTP_SERVER)
                .then(|| text_ref(&event.peer, event.peer_len).parse().ok())
                .flatten()
        }),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SamplerKind;

    fn sampler(kind: SamplerKind, ratio: f64) -> Sampler {
        Sampler::new(kind, ratio)
    }

    fn event(kind: u32) -> GoRequestEvent {
        let mut e = GoRequestEvent::default();
        e.header.kind = kind;
        e.header.tgid = 42;
        e.header.ts_ns = 2_000;
        e.start_ns = 1_000;
        e.goid = 7;
        e.trace.trace_id = [1; 16];
        e.trace.span_id = [2; 8];
        e
    }

    fn put(dst: &mut [u8], s: &str) -> u16 {
        dst[..s.len()].copy_from_slice(s.as_bytes());
        s.len() as u16
    }

    #[test]
    fn the_ends_of_the_connection_that_were_read_become_local_and_peer() {
        let mut e = event(kind::HTTP_CLIENT);
        e.conn.local[10..].copy_from_slice(&[0xff, 0xff, 10, 1, 2, 3]);
        e.conn.local_port = 50312;
        e.conn.remote = "fd00::7".parse::<Ipv6Addr>().unwrap().octets();
        e.conn.remote_port = 8080;
        e.conn.known = go::CONN_LOCAL | go::CONN_REMOTE;
        let always = sampler(SamplerKind::AlwaysOn, 1.0);
        let r = to_record(&e, &always).expect("decodes");
        assert_eq!(
            r.local,
            Some("10.1.2.3:50312".parse().unwrap()),
            "IPv4 as IPv4"
        );
        assert_eq!(r.peer, Some("[fd00::7]:8080".parse().unwrap()));

        e.conn.known = 0;
        let r = to_record(&e, &always).expect("decodes");
        assert_eq!((r.local, r.peer), (None, None), "not read: no connection");

        // A gRPC server knows its caller's end only.
        let mut grpc = event(kind::GRPC_SERVER);
        grpc.conn = e.conn;
        grpc.conn.known = go::CONN_REMOTE;
        let r = to_record(&grpc, &always).expect("decodes");
        assert_eq!(
            (r.local, r.peer),
            (None, Some("[fd00::7]:8080".parse().unwrap()))
        );

        // A net/http server's caller is its RemoteAddr text.
        let mut http = event(kind::HTTP_SERVER);
        http.peer_len = put(&mut http.peer, "10.9.8.7:4242");
        let r = to_record(&http, &always).expect("decodes");
        assert_eq!(r.peer, Some("10.9.8.7:4242".parse().unwrap()));
    }

    #[test]
    fn http_server_event_becomes_a_server_record_with_route_from_the_pattern() {
        let mut e = event(kind::HTTP_SERVER);
        e.method_len = put(&mut e.method, "GET");
        e.path_len = put(&mut e.path, "/users/7");
        e.route_len = put(&mut e.route, "GET /users/{id}");
        e.host_len = put(&mut e.host, "127.0.0.1:8080");
        e.peer_len = put(&mut e.peer, "10.1.2.3:50312");
        e.status = 404;
        let r = to_record(&e, &sampler(SamplerKind::AlwaysOn, 1.0)).expect("decodes");
        assert_eq!(r.kind, SpanKind::Server);
        assert_eq!((r.pid, r.start_ns, r.end_ns), (42, 1_000, 2_000));
        let Protocol::Http(http) = r.protocol else {
            panic!("expected HTTP, got {:?}", r.protocol)
        };
        assert_eq!(http.method, "GET");
        assert_eq!(http.path, "/users/7");
        assert_eq!(http.route.as_deref(), Some("/users/{id}"));
        assert_eq!(http.status, Some(404));
        assert_eq!(http.host.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(r.span.parent_kind, ParentKind::Root);
        assert_eq!(r.span.parent_span_id, None);
        assert_eq!(
            r.peer,
            Some("10.1.2.3:50312".parse().unwrap()),
            "the server's peer comes from Request.RemoteAddr"
        );
    }

    #[test]
    fn a_tls_request_is_https_with_its_protocol_version() {
        let mut e = event(kind::HTTP_SERVER);
        e.method_len = put(&mut e.method, "GET");
        e.status = 200;
        let plain = to_record(&e, &sampler(SamplerKind::AlwaysOn, 1.0)).expect("decodes");
        let Protocol::Http(http) = plain.protocol else {
            panic!("expected HTTP")
        };
        assert_eq!((http.scheme.as_deref(), http.tls), (Some("http"), None));
        e.flags = go::EVENT_TLS;
        e.tls_version = 0x0304;
        let secure = to_record(&e, &sampler(SamplerKind::AlwaysOn, 1.0)).expect("decodes");
        let Protocol::Http(http) = secure.protocol else {
            panic!("expected HTTP")
        };
        assert_eq!(http.scheme.as_deref(), Some("https"));
        let tls = http.tls.expect("TLS info");
        assert_eq!(
            (
                tls.protocol_name.as_deref(),
                tls.protocol_version.as_deref()
            ),
            (Some("tls"), Some("1.3"))
        );
        e.tls_version = 0;
        let unknown = to_record(&e, &sampler(SamplerKind::AlwaysOn, 1.0)).expect("decodes");
        let Protocol::Http(http) = unknown.protocol else {
            panic!("expected HTTP")
        };
        assert_eq!(
            (http.scheme.as_deref(), http.tls.map(|t| t.protocol_version)),
            (Some("https"), Some(None)),
            "a failed round trip to an https URL is HTTPS without a version"
        );
    }

    #[test]
    fn a_grpc_call_over_tls_carries_its_protocol_version() {
        let mut e = event(kind::GRPC_SERVER);
        e.path_len = put(&mut e.path, "/echo.Echo/Say");
        e.status = 0;
        let plain = to_record(&e, &sampler(SamplerKind::AlwaysOn, 1.0)).expect("decodes");
        let Protocol::Grpc(grpc) = plain.protocol else {
            panic!("expected gRPC")
        };
        assert_eq!(grpc.tls, None);
        e.flags = go::EVENT_TLS;
        e.tls_version = 0x0304;
        let secure = to_record(&e, &sampler(SamplerKind::AlwaysOn, 1.0)).expect("decodes");
        let Protocol::Grpc(grpc) = secure.protocol else {
            panic!("expected gRPC")
        };
        assert_eq!(
            grpc.tls.and_then(|t| t.protocol_version).as_deref(),
            Some("1.3")
        );
    }

    #[test]
    fn failed_client_round_trip_has_no_status_and_an_error() {
        let e = event(kind::HTTP_CLIENT);
        let r = to_record(&e, &sampler(SamplerKind::AlwaysOn, 1.0)).expect("decodes");
        assert_eq!(r.kind, SpanKind::Client);
        assert!(r.error.is_some(), "no response means an error");
    }

    #[test]
    fn grpc_method_is_split_into_service_and_method_with_the_code() {
        let mut e = event(kind::GRPC_SERVER);
        e.path_len = put(&mut e.path, "/grpc.health.v1.Health/Check");
        e.status = 5;
        let r = to_record(&e, &sampler(SamplerKind::AlwaysOn, 1.0)).expect("decodes");
        let Protocol::Grpc(grpc) = r.protocol else {
            panic!("expected gRPC")
        };
        assert_eq!(grpc.service, "grpc.health.v1.Health");
        assert_eq!(grpc.method, "Check");
        assert_eq!(grpc.status_code, Some(5));
    }

    #[test]
    fn local_child_follows_the_remote_roots_sampling_decision() {
        let mut e = event(kind::HTTP_CLIENT);
        e.trace.parent_kind = parent_kind::LOCAL;
        e.trace.parent_span_id = [3; 8];
        e.trace.root_flags = ROOT_REMOTE; // the caller said "not sampled"
        let s = sampler(SamplerKind::ParentBasedTraceIdRatio, 1.0);
        let r = to_record(&e, &s).expect("decodes");
        assert_eq!(r.span.parent_span_id, Some(SpanId([3; 8])));
        assert_eq!(r.span.parent_kind, ParentKind::Local);
        assert!(
            !r.span.sampled,
            "an unsampled remote root keeps the whole local chain unsampled"
        );
        e.trace.root_flags = ROOT_REMOTE | ROOT_SAMPLED;
        assert!(to_record(&e, &s).unwrap().span.sampled);
    }

    #[test]
    fn short_records_and_unknown_kinds_are_errors() {
        let s = sampler(SamplerKind::AlwaysOn, 1.0);
        assert_eq!(decode(&[0u8; 10], &s), Err(DecodeError::Short(10)));
        assert_eq!(to_record(&event(99), &s), Err(DecodeError::Kind(99)));
    }
}
