//! Traffic is input the workload's peers control. As root, with the real
//! socket-level probe and the real collector: one Python server receives
//! hostile traffic (malformed bytes, huge heads and bodies, heads dripped
//! slowly on hundreds of connections at once, a client pipelining far more
//! requests than it reads), then ordinary requests; another server gets
//! only ordinary requests. The probe must stay up, stay below the Python
//! probe's memory limit, and trace every ordinary request of both servers.

mod python_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ferrotel_e2e::Collector;
use python_common::{App, Probe, SERVER, WAIT, of_pids};

/// The Python probe's memory limit in the rendered DaemonSet.
const PYTHON_PROBE_MEMORY_LIMIT: u64 = 256 << 20;

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the victim");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// Sends hostile traffic to `port`; returns the connections still open
/// (slow-drip heads that never end), to close after the checks.
fn hostile(port: u16) -> Vec<TcpStream> {
    // Malformed: binary garbage, a method-like start with garbage after
    // it, a bad chunk size, a response-looking request.
    let malformed: [&[u8]; 5] = [
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0xff, 0xfe, 0x00, 0x00],
        b"GET \x00\x01\x02 HTTP/1.1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"GET /a HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    ];
    for _ in 0..40 {
        for bytes in malformed {
            let mut s = connect(port);
            let _ = s.write_all(bytes);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let _ = s.read_to_end(&mut Vec::new());
        }
    }
    // Huge: a 64 KiB head (past the parser's head limit) and an 8 MiB body.
    let mut s = connect(port);
    let mut head = b"GET /huge HTTP/1.1\r\nHost: victim\r\n".to_vec();
    for i in 0..1024 {
        head.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "a".repeat(48)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let _ = s.write_all(&head);
    let _ = s.read(&mut [0u8; 4096]);
    let mut s = connect(port);
    let body = vec![b'b'; 8 << 20];
    let _ = s.write_all(
        format!(
            "POST /users HTTP/1.1\r\nHost: victim\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let _ = s.write_all(&body);
    let _ = s.read(&mut [0u8; 4096]);
    // Pipelining: 500 requests sent before reading anything (the kernel
    // copies a prefix of each read, so the parser sees a few, then a gap).
    let mut s = connect(port);
    let pipelined = b"GET /health HTTP/1.1\r\nHost: victim\r\n\r\n".repeat(500);
    let _ = s.write_all(&pipelined);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.read_to_end(&mut Vec::new());
    // Slow drip: 400 connections, each sending 12 KiB of a head that never
    // ends, 512 bytes at a time, interleaved across connections.
    let mut dripping: Vec<TcpStream> = (0..400).map(|_| connect(port)).collect();
    for s in &mut dripping {
        let _ = s.write_all(b"GET /slow HTTP/1.1\r\nHost: victim\r\nX-Drip: ");
    }
    let chunk = [b'd'; 512];
    for _ in 0..24 {
        for s in &mut dripping {
            let _ = s.write_all(&chunk);
        }
    }
    dripping
}

fn get(port: u16, path: &str) -> String {
    let mut s = connect(port);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("send request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read response");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_traffic_leaves_the_probe_up_bounded_and_tracing() {
    let collector = Collector::start_with_file_exporter()
        .await
        .unwrap_or_else(|e| panic!("the real collector must start (make tools): {e}"));
    let mut victim = App::stdlib();
    let mut other = App::stdlib();
    let probe = Probe::start(&collector, &[victim.pid(), other.pid()], &[], 2).await;
    let victim_port: u16 = victim.url("").rsplit(':').next().unwrap().parse().unwrap();
    let other_port: u16 = other.url("").rsplit(':').next().unwrap().parse().unwrap();

    let dripping = tokio::task::spawn_blocking(move || hostile(victim_port))
        .await
        .expect("hostile client");
    // While the drips are still open: ordinary requests to both servers.
    let ordinary = tokio::task::spawn_blocking(move || {
        for i in 0..10 {
            assert!(get(victim_port, &format!("/users/{i}")).starts_with("HTTP/1.1 200"));
            assert!(get(other_port, &format!("/users/{i}")).starts_with("HTTP/1.1 200"));
        }
    });
    ordinary.await.expect("ordinary requests");
    probe.assert_running();
    victim.assert_alive("the victim server");
    other.assert_alive("the other server");
    let metrics = probe.metrics().await;
    drop(dripping);
    probe.stop().await;

    let ordinary_to = |pid: u32| {
        let of = of_pids(&[pid]);
        move |s: &ferrotel_e2e::Span| {
            of(s) && s.kind == SERVER && s.attr_str("http.route") == Some("/users/{id}")
        }
    };
    for (what, pid) in [("other", other.pid()), ("victim", victim.pid())] {
        let spans = collector
            .wait_for_spans(10, WAIT, ordinary_to(pid))
            .await
            .unwrap_or_else(|e| panic!("{what}: ordinary requests traced: {e}\n{metrics}"));
        assert_eq!(spans.len(), 10, "{what}: one span per ordinary request");
    }
    assert!(
        Probe::metric_sum(
            &metrics,
            "ferrotel_probe_parse_errors_total{language=\"python\""
        ) >= 1.0,
        "malformed connections are counted:\n{metrics}"
    );
    let peak = ferrotel_e2e::process::peak_rss_bytes();
    assert!(
        peak < PYTHON_PROBE_MEMORY_LIMIT,
        "peak RSS {} MiB, limit {} MiB",
        peak >> 20,
        PYTHON_PROBE_MEMORY_LIMIT >> 20
    );
}
