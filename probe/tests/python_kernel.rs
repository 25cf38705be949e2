//! The socket-level program set in the real kernel, without the pipeline:
//! what the programs emit for a real Python server, and that losses are
//! counted. Needs root; fails (does not skip) without it.

// For its private tracefs (the tracepoint programs need one).
#[path = "probe_harness/mod.rs"]
mod probe_harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrotel_api::probe_config::LanguageTuning;
use ferrotel_probe::driver::Driver;
use ferrotel_probe::ebpf::EbpfError;
use ferrotel_probe::sockets::SocketSet;
use ferrotel_probe::sockets::events::{Direction, KernelEvent, decode};
use ferrotel_probe::telemetry::sampling::{Sampler, SpanStarter};

/// The socket-level set, loaded and attached the way the probe does it.
#[allow(clippy::result_large_err)]
fn load(ring_buffer_bytes: u32, max_payload_bytes: u32) -> Result<Driver<SocketSet>, EbpfError> {
    let tuning = LanguageTuning {
        ring_buffer_bytes,
        max_payload_bytes,
        ..LanguageTuning::default()
    };
    Driver::load(SocketSet::new(
        &tuning,
        SpanStarter::new(Sampler::default()),
    ))
}

fn venv_python() -> PathBuf {
    let cache = std::env::var_os("FERROTEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/ferrotel")
        });
    let path = cache.join("venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run `make tools` (e2e/tools/install.sh creates the Python venv)",
        path.display()
    );
    path
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(venv_python())
            .arg(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../e2e/apps/python/stdlib_server.py"),
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("the stdlib test server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("READY line");
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected {line:?}"));
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The set loaded with these knobs, and a stdlib server it has claimed.
fn claimed_server(ring_buffer_bytes: u32, max_payload_bytes: u32) -> (Driver<SocketSet>, Server) {
    let mut loaded = load(ring_buffer_bytes, max_payload_bytes).unwrap_or_else(|e| {
        panic!("the python program set must load and attach (run as root): {e}")
    });
    let server = Server::start();
    loaded
        .kernel_mut()
        .claims()
        .expect("the set has a claimed_tgids map")
        .claim(server.child.id(), true)
        .expect("claim the server");
    (loaded, server)
}

/// `n` GETs over one keep-alive connection, each answer read fully.
fn get_keep_alive(port: u16, n: usize) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    for i in 0..n {
        // One write: `write!` on a raw stream would send the pieces separately.
        stream
            .write_all(format!("GET /users/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .expect("send");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("read head");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).expect("read body");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_server_yields_open_request_response_and_close_events_with_payload_prefixes() {
    let (mut loaded, server) = claimed_server(1 << 20, 64);
    get_keep_alive(server.port, 3);
    let mut opens = 0;
    let mut requests = Vec::new();
    let mut responses = 0;
    let mut closes = 0;
    let mut other_pid = 0;
    // The server closes its side after reading our EOF: drain until then.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while closes == 0 && tokio::time::Instant::now() < deadline {
        loaded.drain_raw(
            |record| match decode(record).expect("every record decodes") {
                KernelEvent::Open { pid, .. } if pid == server.child.id() => opens += 1,
                KernelEvent::Data {
                    pid,
                    direction,
                    payload,
                    total_len,
                    ..
                } if pid == server.child.id() => {
                    assert!(
                        payload.len() <= 64 && payload.len() <= total_len,
                        "at most max_payload_bytes are copied"
                    );
                    match direction {
                        Direction::Ingress => {
                            requests.push(String::from_utf8_lossy(payload).into_owned())
                        }
                        Direction::Egress => {
                            responses += usize::from(payload.starts_with(b"HTTP/1.1 200"))
                        }
                    }
                }
                KernelEvent::Close { pid, .. } if pid == server.child.id() => closes += 1,
                _ => other_pid += 1,
            },
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(opens, 1, "one accepted connection");
    assert_eq!(requests.len(), 3, "one read per request: {requests:?}");
    assert!(
        requests
            .iter()
            .enumerate()
            .all(|(i, r)| r.starts_with(&format!("GET /users/{i} HTTP/1.1"))),
        "payload prefixes: {requests:?}"
    );
    assert_eq!(responses, 3, "each response head is written once");
    assert_eq!(closes, 1, "the server closed the connection");
    assert_eq!(other_pid, 0, "nothing from unclaimed processes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ring_buffer_counts_its_losses() {
    // One page of ring buffer, never drained while traffic flows.
    let (mut loaded, server) = claimed_server(4096, 1024);
    get_keep_alive(server.port, 200);
    let drops = loaded.drop_totals().expect("read drop counters");
    let full = drops
        .iter()
        .find(|(reason, _)| *reason == "ringbuf_full")
        .map(|(_, n)| *n)
        .expect("ringbuf_full is reported");
    let mut delivered = 0u64;
    loaded.drain_raw(|_| delivered += 1);
    assert!(
        full > 0,
        "400+ events cannot fit one page: drops must be counted ({drops:?})"
    );
    assert!(
        delivered + full >= 400,
        "every event is delivered or counted: {delivered} delivered + {full} dropped"
    );
}
