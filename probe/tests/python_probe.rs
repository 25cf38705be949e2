//! The Python front-end end to end, as root: the socket-level eBPF program
//! set in the real kernel, real Python servers (stdlib http.server, Flask
//! under gunicorn, FastAPI under uvicorn, a two-tier app calling its backend
//! with `requests`), real traffic, the whole probe runtime and the real
//! OpenTelemetry Collector. Every request must become exactly one server
//! span with the right method, route, status and a duration inside the
//! client's round trip; the duration histograms must count every request;
//! client calls made while serving must be children; an incoming
//! traceparent must be continued; the probe must survive malformed traffic
//! and its targets exiting and restarting.
//!
//! Needs the venv `e2e/tools/install.sh` creates (`~/.cache/ferrotel/venv`).

mod python_common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use ferrotel_e2e::Span;
use python_common::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

// ----------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdlib_http_server_requests_become_exact_server_spans_and_histogram_counts() {
    server_case("stdlib http.server", App::stdlib(), false, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_under_gunicorn_requests_become_exact_server_spans_and_histogram_counts() {
    let port = ferrotel_e2e::free_port();
    server_case("Flask under gunicorn", App::gunicorn_flask(port), true, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastapi_under_uvicorn_requests_become_exact_server_spans_and_histogram_counts() {
    let port = ferrotel_e2e::free_port();
    server_case("FastAPI under uvicorn", App::uvicorn_fastapi(port), true, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tier_calls_are_children_of_the_frontend_span_and_incoming_traceparent_is_continued() {
    let collector = collector().await;
    let mut backend = App::stdlib();
    let mut frontend = App::two_tier(&backend);
    let probe = Probe::start(&collector, &[frontend.pid(), backend.pid()], &[], 2).await;
    let client = reqwest::Client::new();
    let n = 6;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    for i in 0..n {
        let mut request = client.get(frontend.url(&format!("/checkout/{i}")));
        if i < 2 {
            request = request.header("traceparent", &traceparent);
        }
        let response = request.send().await.expect("checkout");
        assert_eq!(response.status().as_u16(), 200, "checkout {i}");
        let _ = response.bytes().await;
    }
    frontend.assert_alive("frontend");
    backend.assert_alive("backend");
    probe.stop().await;

    let is_front = of_pids(&[frontend.pid()]);
    let servers = collector
        .wait_for_spans(n, WAIT, |s| is_front(s) && s.kind == SERVER)
        .await
        .expect("frontend server spans");
    assert_eq!(servers.len(), n, "one frontend server span per checkout");
    let clients = collector
        .wait_for_spans(2 * n, WAIT, |s| is_front(s) && s.kind == CLIENT)
        .await
        .expect("frontend client spans");
    assert_eq!(clients.len(), 2 * n, "two backend calls per checkout");
    let by_id: HashMap<&str, &Span> = servers.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut children: HashMap<&str, usize> = HashMap::new();
    for client in &clients {
        let parent = by_id
            .get(client.parent_span_id.as_str())
            .unwrap_or_else(|| {
                panic!(
                    "client span {} ({:?}) is not a child of a frontend server span",
                    client.span_id,
                    client.attr_str("url.path")
                )
            });
        assert_eq!(
            client.trace_id, parent.trace_id,
            "a child shares its parent's trace"
        );
        assert!(
            client.start_ns >= parent.start_ns && client.end_ns <= parent.end_ns,
            "the call happens inside the request it serves"
        );
        *children.entry(parent.span_id.as_str()).or_default() += 1;
    }
    assert!(
        servers
            .iter()
            .all(|s| children.get(s.span_id.as_str()) == Some(&2)),
        "each checkout has exactly its two calls: {children:?}"
    );
    let continued: Vec<&Span> = servers.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    assert_eq!(
        continued.len(),
        2,
        "the two requests with a traceparent continue its trace"
    );
    assert!(
        continued.iter().all(|s| s.parent_span_id == PARENT_ID),
        "their parent is the caller's span"
    );

    let is_back = of_pids(&[backend.pid()]);
    let backend_spans = collector
        .wait_for_spans(2 * n, WAIT, |s| is_back(s) && s.kind == SERVER)
        .await
        .expect("backend spans");
    assert_eq!(backend_spans.len(), 2 * n, "the backend served every call");
    let client_count = wait_histogram(
        &collector,
        "http.client.request.duration",
        &[frontend.pid()],
        2 * n as u64,
    )
    .await;
    assert_eq!(
        client_count,
        2 * n as u64,
        "http.client.request.duration counts every call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_survives_malformed_traffic_and_its_target_exiting_and_restarting() {
    let collector = collector().await;
    let port = ferrotel_e2e::free_port();
    let mut first = App::uvicorn_fastapi(port);
    let probe = Probe::start(&collector, &[], &[port], 1).await;
    // A TLS hello, text that is not HTTP, a request cut short, binary
    // garbage: none may crash the probe or produce a span.
    for junk in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /users/1 HTTP/1.1\r\nHost: x\r\n",
        b"\x00\x01\x02\x03",
    ] {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.write_all(junk).expect("write junk");
        drop(stream);
    }
    let first_pid = first.pid();
    let sent_before = mixed_workload(&first.url(""), 2000).await;
    first.stop();
    let mut second = App::uvicorn_fastapi(port);
    let second_pid = second.pid();
    let is_second = of_pids(&[second_pid]);
    // The resolver finds the new process on its next rescan (every 100 ms).
    // Knock with one request per fresh connection until one is traced: the
    // claim then precedes every connection of the workload below, which must
    // be traced exactly, as before the restart. (Sending the workload until
    // *some* span of it appeared made the assertion race the claim: a
    // workload half of which ran before the claim was then expected whole.)
    let knocker = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let deadline = Instant::now() + WAIT;
    let mut knocks = 0;
    while !collector.spans().expect("spans").iter().any(&is_second) {
        assert!(
            Instant::now() < deadline,
            "the restarted process {second_pid} was not traced after {knocks} requests"
        );
        let response = knocker
            .get(second.url("/health"))
            .send()
            .await
            .expect("GET /health on the restarted app");
        assert_eq!(response.status().as_u16(), 200, "GET /health");
        let _ = response.bytes().await;
        knocks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent_after = mixed_workload(&second.url(""), 3000).await;
    probe.assert_running();
    second.assert_alive("restarted app");
    probe.stop().await;

    let is_first = of_pids(&[first_pid]);
    let spans = collector
        .wait_for_spans(sent_before.len(), WAIT, |s| is_first(s) && s.kind == SERVER)
        .await
        .expect("first spans");
    assert_spans_match("before the restart", &spans, &sent_before);
    let not_knock = |s: &Span| s.attr_str("url.path") != Some("/health");
    let spans = collector
        .wait_for_spans(sent_after.len(), WAIT, |s| {
            is_second(s) && s.kind == SERVER && not_knock(s)
        })
        .await
        .unwrap_or_else(|e| {
            let mut by_pid: BTreeMap<String, usize> = BTreeMap::new();
            for span in collector.spans().unwrap_or_default() {
                *by_pid
                    .entry(format!(
                        "{:?}/{:?}",
                        span.resource_str("process.pid"),
                        span.service_name()
                    ))
                    .or_default() += 1;
            }
            panic!(
                "spans of the restarted process {second_pid}: {e}; spans by pid/service: {by_pid:?}"
            )
        });
    assert_spans_match("after the restart", &spans, &sent_after);
}
