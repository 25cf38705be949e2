use super::*;
use crate::sampling::{Sampler, SamplerKind};
use crate::trace_context::ParentKind;
use std::collections::BTreeSet;

const PID: u32 = 100;

fn tracker() -> Tracker {
    Tracker::new(SpanStarter::new(Sampler::new(SamplerKind::AlwaysOn, 1.0)))
}

fn open(t: &mut Tracker, fd: i32, role: RoleHint, out: &mut Vec<RequestRecord>) {
    let event = KernelEvent::Open {
        pid: PID,
        tid: 1,
        ts_ns: 0,
        fd,
        role,
        local: Some("127.0.0.1:8000".parse().unwrap()),
        peer: Some("127.0.0.1:40000".parse().unwrap()),
    };
    t.on_event(&event, out);
}

fn data(
    t: &mut Tracker,
    fd: i32,
    tid: u32,
    dir: Direction,
    ts: u64,
    bytes: &[u8],
    out: &mut Vec<RequestRecord>,
) {
    data_at(t, Layer::Socket, fd, tid, dir, ts, bytes, out);
}

/// Plaintext of a TLS connection, from the OpenSSL probes.
fn tls_data(
    t: &mut Tracker,
    fd: i32,
    tid: u32,
    dir: Direction,
    ts: u64,
    bytes: &[u8],
    out: &mut Vec<RequestRecord>,
) {
    data_at(t, Layer::Tls, fd, tid, dir, ts, bytes, out);
}

#[allow(clippy::too_many_arguments)]
fn data_at(
    t: &mut Tracker,
    layer: Layer,
    fd: i32,
    tid: u32,
    dir: Direction,
    ts: u64,
    bytes: &[u8],
    out: &mut Vec<RequestRecord>,
) {
    let event = KernelEvent::Data {
        pid: PID,
        tid,
        enter_ns: ts,
        exit_ns: ts + 1,
        fd,
        direction: dir,
        total_len: bytes.len(),
        payload: bytes,
        layer,
    };
    t.on_event(&event, out);
}

fn http(r: &RequestRecord) -> &HttpInfo {
    match &r.protocol {
        Protocol::Http(h) => h,
        other => panic!("expected HTTP, got {other:?}"),
    }
}

#[test]
fn a_keep_alive_server_connection_yields_one_record_per_exchange_with_read_to_write_timing() {
    let mut t = tracker();
    let mut out = Vec::new();
    open(&mut t, 5, RoleHint::Server, &mut out);
    data(
        &mut t,
        5,
        7,
        Direction::Ingress,
        100,
        b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
        &mut out,
    );
    data(
        &mut t,
        5,
        7,
        Direction::Egress,
        200,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
        &mut out,
    );
    assert!(out.is_empty(), "the body is still missing");
    data(&mut t, 5, 7, Direction::Egress, 300, b"ok", &mut out);
    data(
        &mut t,
        5,
        7,
        Direction::Ingress,
        400,
        b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        &mut out,
    );
    data(
        &mut t,
        5,
        7,
        Direction::Egress,
        500,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    assert_eq!(out.len(), 2, "two exchanges: {out:#?}");
    let (a, b) = (&out[0], &out[1]);
    assert_eq!(
        (a.kind, a.start_ns, a.end_ns),
        (SpanKind::Server, 101, 301),
        "read exit to last write exit"
    );
    assert_eq!(
        (
            http(a).method.as_str(),
            http(a).path.as_str(),
            http(a).query.as_deref(),
            http(a).status
        ),
        ("GET", "/a", Some("x=1"), Some(200))
    );
    assert_eq!(http(a).response_body_size, Some(2));
    assert_eq!(
        (
            http(b).method.as_str(),
            http(b).status,
            http(b).request_body_size
        ),
        ("POST", Some(404), Some(3))
    );
    assert_eq!(a.peer, Some("127.0.0.1:40000".parse().unwrap()));
    assert_ne!(
        a.span.trace_id, b.span.trace_id,
        "separate requests are separate traces"
    );
}

#[test]
fn an_incoming_traceparent_is_continued() {
    let mut t = tracker();
    let mut out = Vec::new();
    open(&mut t, 5, RoleHint::Server, &mut out);
    data(&mut t, 5, 7, Direction::Ingress, 1, b"GET / HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n", &mut out);
    data(
        &mut t,
        5,
        7,
        Direction::Egress,
        2,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    assert_eq!(
        out[0].span.trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        out[0].span.parent_span_id.map(|s| s.to_string()).as_deref(),
        Some("00f067aa0ba902b7")
    );
    assert_eq!(out[0].span.parent_kind, ParentKind::Remote);
}

#[test]
fn a_call_made_on_the_serving_thread_is_a_child_of_the_server_span_and_other_threads_are_not() {
    let mut t = tracker();
    let mut out = Vec::new();
    open(&mut t, 5, RoleHint::Server, &mut out);
    open(&mut t, 9, RoleHint::Client, &mut out);
    open(&mut t, 10, RoleHint::Client, &mut out);
    data(
        &mut t,
        5,
        7,
        Direction::Ingress,
        10,
        b"GET /front HTTP/1.1\r\n\r\n",
        &mut out,
    );
    // Thread 7 calls the backend while serving.
    data(
        &mut t,
        9,
        7,
        Direction::Egress,
        20,
        b"GET /back HTTP/1.1\r\nHost: backend\r\n\r\n",
        &mut out,
    );
    data(
        &mut t,
        9,
        7,
        Direction::Ingress,
        30,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    // Thread 8 is not serving anything.
    data(
        &mut t,
        10,
        8,
        Direction::Egress,
        35,
        b"GET /other HTTP/1.1\r\n\r\n",
        &mut out,
    );
    data(
        &mut t,
        10,
        8,
        Direction::Ingress,
        36,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    data(
        &mut t,
        5,
        7,
        Direction::Egress,
        40,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    assert_eq!(out.len(), 3);
    let (client, orphan, server) = (&out[0], &out[1], &out[2]);
    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(
        client.start_ns, 20,
        "a client span starts at the entry of the request write"
    );
    assert_eq!(
        client.span.parent_span_id,
        Some(server.span.span_id),
        "child of the server span"
    );
    assert_eq!(client.span.trace_id, server.span.trace_id);
    assert_eq!(http(client).host.as_deref(), Some("backend"));
    assert_eq!(
        orphan.span.parent_kind,
        ParentKind::Root,
        "another thread's call starts its own trace"
    );
    // After the server responded, thread 7 serves nothing.
    data(
        &mut t,
        9,
        7,
        Direction::Egress,
        50,
        b"GET /late HTTP/1.1\r\n\r\n",
        &mut out,
    );
    data(
        &mut t,
        9,
        7,
        Direction::Ingress,
        60,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    assert_eq!(
        out[3].span.parent_kind,
        ParentKind::Root,
        "a call after the response is not a child"
    );
}

#[test]
fn a_connection_adopted_mid_stream_takes_its_role_from_the_first_bytes() {
    let mut t = tracker();
    let mut out = Vec::new();
    data(
        &mut t,
        3,
        1,
        Direction::Egress,
        1,
        b"GET /x HTTP/1.1\r\n\r\n",
        &mut out,
    );
    data(
        &mut t,
        3,
        1,
        Direction::Ingress,
        2,
        b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].kind,
        SpanKind::Client,
        "a request written out makes the process the client"
    );
    assert_eq!(http(&out[0]).status, Some(503));
}

#[test]
fn early_close_reports_the_unanswered_request_as_an_error_and_until_close_bodies_end_at_the_last_write()
 {
    let mut t = tracker();
    let mut out = Vec::new();
    open(&mut t, 5, RoleHint::Server, &mut out);
    data(
        &mut t,
        5,
        7,
        Direction::Ingress,
        10,
        b"GET /slow HTTP/1.1\r\n\r\n",
        &mut out,
    );
    t.on_event(
        &KernelEvent::Close {
            pid: PID,
            tid: 7,
            ts_ns: 50,
            fd: 5,
        },
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(http(&out[0]).status, None);
    assert!(out[0].error.is_some(), "no response: an error");
    assert_eq!(t.stats().unanswered, 1);

    open(&mut t, 6, RoleHint::Server, &mut out);
    data(
        &mut t,
        6,
        7,
        Direction::Ingress,
        100,
        b"GET /old HTTP/1.0\r\n\r\n",
        &mut out,
    );
    data(
        &mut t,
        6,
        7,
        Direction::Egress,
        200,
        b"HTTP/1.0 200 OK\r\n\r\n",
        &mut out,
    );
    data(
        &mut t,
        6,
        7,
        Direction::Egress,
        300,
        b"body until close",
        &mut out,
    );
    t.on_event(
        &KernelEvent::Close {
            pid: PID,
            tid: 7,
            ts_ns: 900,
            fd: 6,
        },
        &mut out,
    );
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[1].end_ns, http(&out[1]).status, out[1].error.as_deref()),
        (301, Some(200), None)
    );
}

#[test]
fn non_http_connections_are_ignored_and_counted() {
    let mut t = tracker();
    let mut out = Vec::new();
    open(&mut t, 5, RoleHint::Client, &mut out);
    data(
        &mut t,
        5,
        7,
        Direction::Egress,
        1,
        b"*1\r\n$4\r\nPING\r\n",
        &mut out,
    );
    data(&mut t, 5, 7, Direction::Ingress, 2, b"+PONG\r\n", &mut out);
    data(
        &mut t,
        6,
        7,
        Direction::Ingress,
        3,
        // A PostgreSQL SSLRequest: binary, and not a TLS record either.
        &[0, 0, 0, 8, 4, 210, 22, 47],
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(t.stats().not_http, 2);
    assert_eq!(t.stats().tls_connections, 0);
}

#[test]
fn process_exit_forgets_its_connections() {
    let mut t = tracker();
    let mut out = Vec::new();
    open(&mut t, 5, RoleHint::Server, &mut out);
    data(
        &mut t,
        5,
        7,
        Direction::Ingress,
        1,
        b"GET / HTTP/1.1\r\n\r\n",
        &mut out,
    );
    t.on_event(&KernelEvent::ProcExit { pid: PID }, &mut out);
    assert_eq!(t.connections(), 0);
    assert!(
        out.is_empty(),
        "in-flight requests of a dead process are not reported"
    );
}

#[test]
fn targets_are_split_into_path_and_query() {
    assert_eq!(
        split_target("/a/b?c=d&e"),
        ("/a/b".into(), Some("c=d&e".into()))
    );
    assert_eq!(
        split_target("http://proxy.example:80/p?q"),
        ("/p".into(), Some("q".into()))
    );
    assert_eq!(split_target("http://host"), ("/".into(), None));
    assert_eq!(split_target("*"), ("*".into(), None));
}

#[test]
fn slow_drip_heads_on_many_connections_stay_within_the_buffer_budget() {
    let mut t = tracker();
    let mut out = Vec::new();
    // Each connection sends a head that never ends, a few hundred bytes a
    // read, like a client dripping headers to keep the server busy.
    let chunk = [b'a'; 512];
    let mut ts = 0;
    let connections = 2 * MAX_BUFFERED_BYTES / (16 * 1024) + 10;
    for fd in 0..connections as i32 {
        open(&mut t, fd, RoleHint::Server, &mut out);
        ts += 1;
        data(
            &mut t,
            fd,
            1,
            Direction::Ingress,
            ts,
            b"GET /slow HTTP/1.1\r\nX-Drip: ",
            &mut out,
        );
        for _ in 0..24 {
            ts += 1;
            data(&mut t, fd, 1, Direction::Ingress, ts, &chunk, &mut out);
            assert!(
                t.buffered_bytes() <= MAX_BUFFERED_BYTES,
                "{} bytes held",
                t.buffered_bytes()
            );
        }
    }
    assert!(
        t.stats().abandoned > 0,
        "connections past the budget are abandoned"
    );
    // Closing everything frees everything.
    for fd in 0..connections as i32 {
        t.on_event(
            &KernelEvent::Close {
                pid: PID,
                tid: 1,
                ts_ns: ts,
                fd,
            },
            &mut out,
        );
    }
    assert_eq!(t.buffered_bytes(), 0);
    assert_eq!(t.connections(), 0);
}

#[test]
fn a_client_pipelining_past_the_cap_is_no_longer_traced() {
    let mut t = tracker();
    let mut out = Vec::new();
    open(&mut t, 3, RoleHint::Server, &mut out);
    let request = b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n";
    for i in 0..(MAX_PENDING_PER_CONNECTION as u64 + 10) {
        data(&mut t, 3, 1, Direction::Ingress, i, request, &mut out);
    }
    assert_eq!(t.stats().abandoned, 1);
    // The connection stays known as off: its response costs nothing.
    data(
        &mut t,
        3,
        1,
        Direction::Egress,
        1000,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    assert!(out.is_empty(), "no record from an abandoned connection");
}

#[test]
fn connections_beyond_the_table_cap_are_not_tracked() {
    let mut t = tracker();
    let mut out = Vec::new();
    for fd in 0..(MAX_CONNECTIONS + 5) as i32 {
        open(&mut t, fd, RoleHint::Server, &mut out);
    }
    assert_eq!(t.connections(), MAX_CONNECTIONS);
    assert_eq!(t.stats().untracked, 5);
    data(
        &mut t,
        MAX_CONNECTIONS as i32 + 1,
        1,
        Direction::Ingress,
        1,
        b"GET / HTTP/1.1\r\n\r\n",
        &mut out,
    );
    assert_eq!(
        t.connections(),
        MAX_CONNECTIONS,
        "data on an untracked fd adopts nothing"
    );
}

// ------------------------------------------------------------------ TLS

/// A ClientHello for `shop.example` and a TLS 1.3 ServerHello, as OpenSSL
/// 3.0 wrote them.
fn hellos() -> (Vec<u8>, Vec<u8>) {
    use crate::sockets::tls_hello::fixtures::{CLIENT_HELLO_13, SERVER_HELLO_13};
    (
        hex::decode(CLIENT_HELLO_13).expect("hex"),
        hex::decode(SERVER_HELLO_13).expect("hex"),
    )
}

fn client_hello() -> Vec<u8> {
    hellos().0
}

#[test]
fn a_tls_server_connection_yields_https_records_from_plaintext_only() {
    let mut t = tracker();
    let mut out = Vec::new();
    open(&mut t, 5, RoleHint::Server, &mut out);
    let client = client_hello();
    let (_, server) = hellos();
    // OpenSSL reads the record header, then the body; then answers.
    data(&mut t, 5, 7, Direction::Ingress, 10, &client[..5], &mut out);
    data(&mut t, 5, 7, Direction::Ingress, 20, &client[5..], &mut out);
    data(&mut t, 5, 7, Direction::Egress, 30, &server, &mut out);
    assert_eq!(t.take_tls_processes(), BTreeSet::from([PID]));
    tls_data(
        &mut t,
        5,
        7,
        Direction::Ingress,
        100,
        b"GET /secure HTTP/1.1\r\nHost: shop.example:8443\r\n\r\n",
        &mut out,
    );
    tls_data(
        &mut t,
        5,
        7,
        Direction::Egress,
        200,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        &mut out,
    );
    assert_eq!(out.len(), 1, "one request, one record: {out:#?}");
    let http = http(&out[0]);
    assert_eq!(
        (http.path.as_str(), http.status, http.scheme.as_deref()),
        ("/secure", Some(200), Some("https"))
    );
    assert_eq!(
        http.tls,
        Some(TlsInfo {
            protocol_name: Some("tls".into()),
            protocol_version: Some("1.3".into()),
            server_name: Some("shop.example".into()),
        })
    );
    assert_eq!(
        (t.stats().not_http, t.stats().tls_connections),
        (0, 1),
        "ciphertext is not counted as a parse error"
    );
}

#[test]
fn ciphertext_past_the_hellos_never_becomes_a_record() {
    let mut t = tracker();
    let mut out = Vec::new();
    open(&mut t, 5, RoleHint::Server, &mut out);
    data(
        &mut t,
        5,
        7,
        Direction::Ingress,
        10,
        &client_hello(),
        &mut out,
    );
    // Application data records that reached user space anyway.
    data(
        &mut t,
        5,
        7,
        Direction::Ingress,
        20,
        &[23, 3, 3, 0, 2, 0xaa, 0xbb],
        &mut out,
    );
    data(
        &mut t,
        5,
        7,
        Direction::Egress,
        30,
        b"HTTP/1.1 200 OK\r\n\r\n",
        &mut out,
    );
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(t.stats().not_http, 0);
}

#[test]
fn plaintext_connections_are_not_taken_for_tls() {
    let mut t = tracker();
    let mut out = Vec::new();
    open(&mut t, 5, RoleHint::Server, &mut out);
    data(
        &mut t,
        5,
        7,
        Direction::Ingress,
        10,
        b"GET / HTTP/1.1\r\n\r\n",
        &mut out,
    );
    // A later body byte that looks like a record header changes nothing.
    data(
        &mut t,
        5,
        7,
        Direction::Egress,
        20,
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
        &mut out,
    );
    data(&mut t, 5, 7, Direction::Egress, 30, &[22, 3, 1], &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(http(&out[0]).scheme.as_deref(), Some("http"));
    assert_eq!(http(&out[0]).tls, None);
    assert!(t.take_tls_processes().is_empty());
}

#[test]
fn an_adopted_tls_connection_is_a_client_if_it_sent_the_client_hello() {
    let mut t = tracker();
    let mut out = Vec::new();
    // No open event: the socket existed before the probe attached.
    data(
        &mut t,
        9,
        7,
        Direction::Egress,
        10,
        &client_hello(),
        &mut out,
    );
    tls_data(
        &mut t,
        9,
        7,
        Direction::Egress,
        100,
        b"GET /api HTTP/1.1\r\nHost: api.example\r\n\r\n",
        &mut out,
    );
    tls_data(
        &mut t,
        9,
        7,
        Direction::Ingress,
        200,
        b"HTTP/1.1 204 No Content\r\n\r\n",
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, SpanKind::Client);
    assert_eq!(http(&out[0]).scheme.as_deref(), Some("https"));
    assert_eq!(
        http(&out[0])
            .tls
            .as_ref()
            .and_then(|t| t.server_name.as_deref()),
        Some("shop.example")
    );
}

#[test]
fn a_tls_call_made_while_serving_tls_is_a_child_of_the_server_span() {
    let mut t = tracker();
    let mut out = Vec::new();
    open(&mut t, 5, RoleHint::Server, &mut out);
    open(&mut t, 6, RoleHint::Client, &mut out);
    data(
        &mut t,
        5,
        7,
        Direction::Ingress,
        10,
        &client_hello(),
        &mut out,
    );
    data(
        &mut t,
        6,
        7,
        Direction::Egress,
        11,
        &client_hello(),
        &mut out,
    );
    tls_data(
        &mut t,
        5,
        7,
        Direction::Ingress,
        100,
        b"GET /front HTTP/1.1\r\nHost: f\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
        &mut out,
    );
    tls_data(
        &mut t,
        6,
        7,
        Direction::Egress,
        110,
        b"GET /back HTTP/1.1\r\nHost: b\r\n\r\n",
        &mut out,
    );
    tls_data(
        &mut t,
        6,
        7,
        Direction::Ingress,
        120,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    tls_data(
        &mut t,
        5,
        7,
        Direction::Egress,
        130,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    assert_eq!(out.len(), 2, "{out:#?}");
    let (client, server) = (&out[0], &out[1]);
    assert_eq!(
        (client.kind, server.kind),
        (SpanKind::Client, SpanKind::Server)
    );
    assert_eq!(
        server.span.trace_id.to_string(),
        "0af7651916cd43dd8448eb211c80319c",
        "the incoming traceparent is continued"
    );
    assert_eq!(client.span.trace_id, server.span.trace_id);
    assert_eq!(client.span.parent_span_id, Some(server.span.span_id));
}
