//! Every knob of the Python section (`spec.python`, the probe config's
//! `python`) end to end, as root: set it, observe what it changes in the
//! kernel or in the spans. (`http` and `grpc` select nothing for Python:
//! the schema and the config check refuse changing them, see
//! `config.rs` and `e2e/tests/instrumentation_controller.rs`.)
//!
//! Needs the venv `e2e/tools/install.sh` creates and syscall tracepoints
//! (tracefs mounted at /sys/kernel/tracing).

mod python_common;

use std::io::{Read, Write};
use std::net::TcpStream;

use python_common::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// A GET whose `traceparent` header starts past byte 100 of the request,
/// sent as one write over a fresh connection; the answer is read whole.
fn get_with_late_traceparent(app: &App, path: &str) {
    let port = app.url("").rsplit(':').next().expect("port").to_owned();
    let mut stream = TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nX-Padding: {}\r\ntraceparent: 00-{TRACE_ID}-{PARENT_ID}-01\r\nConnection: close\r\n\r\n",
        "p".repeat(64)
    );
    assert!(
        request.find("traceparent").expect("header") > 100,
        "the header must lie past 64 bytes"
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    assert!(
        answer.starts_with(b"HTTP/1."),
        "the app answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_ring_buffer_bytes_sizes_the_kernel_ring_and_max_payload_bytes_bounds_what_is_read()
{
    let collector = collector().await;
    let endpoint = collector.grpc_url();
    let mut short = App::stdlib();
    let mut long = App::stdlib();
    // Two probes side by side, one app each: 64 bytes see the request line
    // but not the traceparent; 1024 see it.
    let short_probe = Probe::start_with(&endpoint, &[short.pid()], &[], 1, |file| {
        file.python.ring_buffer_bytes = 64 << 10;
        file.python.max_payload_bytes = 64;
    })
    .await;
    let long_probe = Probe::start_with(&endpoint, &[long.pid()], &[], 1, |file| {
        file.python.max_payload_bytes = 1024;
    })
    .await;
    let text = short_probe.metrics().await;
    assert!(
        text.lines()
            .any(|l| l == "ferrotel_probe_ring_buffer_bytes{language=\"python\"} 65536"),
        "the kernel made the ring buffer 64 KiB:\n{text}"
    );

    for i in 0..3 {
        get_with_late_traceparent(&short, &format!("/users/{i}"));
        get_with_late_traceparent(&long, &format!("/users/{i}"));
    }
    short.assert_alive("the app under maxPayloadBytes: 64");
    long.assert_alive("the app under maxPayloadBytes: 1024");
    short_probe.stop().await;
    long_probe.stop().await;

    for (app, continued, what) in [(&short, false, "64 bytes"), (&long, true, "1024 bytes")] {
        let is_app = of_pids(&[app.pid()]);
        let spans = collector
            .wait_for_spans(3, WAIT, |s| is_app(s) && s.kind == SERVER)
            .await
            .unwrap_or_else(|e| panic!("{what}: server spans: {e}"));
        assert_eq!(spans.len(), 3, "{what}: one server span per request");
        for span in &spans {
            assert_eq!(
                span.attr_str("http.request.method"),
                Some("GET"),
                "{what}: the request line is read either way"
            );
            assert_eq!(
                span.trace_id == TRACE_ID && span.parent_span_id == PARENT_ID,
                continued,
                "{what}: the traceparent past byte 64 is read only with more than 64 bytes: {span:#?}"
            );
        }
    }
}
