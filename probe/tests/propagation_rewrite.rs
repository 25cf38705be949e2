//! Header injection never corrupts a request: random request streams
//! (Content-Length and chunked bodies, bodies that look like requests,
//! `Expect: 100-continue`, pipelining, heads past the scan window, requests
//! that carry their own context, Upgrade) cut into sends at random points
//! go through the real sk_msg program, and what the server receives is
//! exactly what was sent plus one `traceparent` line after the request line
//! of each head the program could follow — no more, no less (a model of the
//! program's rules says which) — and parses strictly.
//!
//! Needs root (eBPF, cgroup v2); fails, does not skip, without it.

mod prop_common;
// For its private tracefs (the socket-level set's tracepoint programs need
// one).
#[path = "probe_harness/mod.rs"]
mod probe_harness;

use std::io::Read;
use std::net::TcpListener;

use ferrotel_probe::propagation::Cgroup2;
use ferrotel_probe::targets::kubernetes::cgroup::read_cgroup_mounts;
use prop_common::{PinDir, SenderProcess, TestCgroup, load_sockets_with_propagation};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const WINDOW: usize = 4096;
const HEADS_PER_SEND: usize = 4;
/// The application's own context: a fixed trace id injected ones never have.
const APP_TRACEPARENT: &str =
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n";

#[derive(Clone, Debug)]
enum Body {
    None,
    Length(Vec<u8>),
    /// `Expect: 100-continue`: the body goes in a later send.
    Continue(Vec<u8>),
    Chunked(Vec<Vec<u8>>),
}

#[derive(Clone, Debug)]
struct Request {
    method: &'static str,
    target: String,
    headers: Vec<(String, String)>,
    body: Body,
    app_context: bool,
    upgrade: bool,
}

impl Request {
    fn request_line(&self) -> String {
        format!("{} {} HTTP/1.1\r\n", self.method, self.target)
    }

    fn head(&self) -> Vec<u8> {
        let mut head = self.request_line();
        head.push_str("Host: upstream.test\r\n");
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.app_context {
            head.push_str(APP_TRACEPARENT);
        }
        if self.upgrade {
            head.push_str("Connection: Upgrade\r\nUpgrade: websocket\r\n");
        }
        match &self.body {
            Body::None => {}
            Body::Length(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
            Body::Continue(b) => head.push_str(&format!(
                "Expect: 100-continue\r\nContent-Length: {}\r\n",
                b.len()
            )),
            Body::Chunked(_) => head.push_str("Transfer-Encoding: chunked\r\n"),
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    fn body(&self) -> Vec<u8> {
        match &self.body {
            Body::None => Vec::new(),
            Body::Length(b) | Body::Continue(b) => b.clone(),
            Body::Chunked(chunks) => {
                let mut out = Vec::new();
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    out.extend(format!("{:x}\r\n", c.len()).as_bytes());
                    out.extend(c);
                    out.extend(b"\r\n");
                }
                out.extend(b"0\r\n\r\n");
                out
            }
        }
    }

    /// After this head the program cannot know where the next one starts.
    fn unframed(&self) -> bool {
        self.upgrade || matches!(self.body, Body::Chunked(_))
    }
}

/// A request stream and where it is cut into sends.
#[derive(Clone, Debug)]
struct Case {
    requests: Vec<Request>,
    /// Byte offsets (into the whole stream) where a send ends.
    cuts: Vec<usize>,
}

struct Stream {
    bytes: Vec<u8>,
    /// Per request: where its head starts, its request line ends, its head
    /// ends, its body ends.
    spans: Vec<(usize, usize, usize, usize)>,
}

impl Case {
    fn stream(&self) -> Stream {
        let mut bytes = Vec::new();
        let mut spans = Vec::new();
        for r in &self.requests {
            let start = bytes.len();
            let head = r.head();
            bytes.extend(&head);
            let head_end = bytes.len();
            bytes.extend(r.body());
            spans.push((start, start + r.request_line().len(), head_end, bytes.len()));
        }
        Stream { bytes, spans }
    }

    /// The sends, as the cut points and the `Expect: 100-continue` split say.
    fn chunks(&self, stream: &Stream) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = self.cuts.clone();
        for (i, r) in self.requests.iter().enumerate() {
            if matches!(r.body, Body::Continue(_)) {
                cuts.push(stream.spans[i].2);
            }
        }
        cuts.retain(|c| *c > 0 && *c < stream.bytes.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut chunks = Vec::new();
        let mut from = 0;
        for cut in cuts.into_iter().chain([stream.bytes.len()]) {
            chunks.push(stream.bytes[from..cut].to_vec());
            from = cut;
        }
        chunks
    }
}

/// The program's rules (propagation/inject.h), as a model: which request
/// heads get a header, given the send boundaries the sender really used.
fn expected_injections(case: &Case, stream: &Stream, sends: &[usize]) -> Vec<usize> {
    #[derive(PartialEq)]
    enum State {
        Head,
        Body(usize),
        Off,
    }
    let mut state = State::Head;
    let mut injected = Vec::new();
    let mut next_request = 0;
    let mut send_start = 0;
    for &len in sends {
        let send_end = send_start + len;
        let mut pos = send_start;
        let mut heads = 0;
        loop {
            if let State::Body(left) = state {
                let rest = send_end - pos;
                if left >= rest {
                    state = State::Body(left - rest);
                    break;
                }
                pos += left;
                state = State::Head;
            }
            if state == State::Off || pos >= send_end {
                break;
            }
            if heads == HEADS_PER_SEND {
                state = State::Off;
                break;
            }
            heads += 1;
            let (start, _, head_end, body_end) = stream.spans[next_request];
            assert_eq!(start, pos, "the model lost the framing");
            let window_end = send_end.min(pos + WINDOW);
            if head_end > window_end {
                state = State::Off;
                break;
            }
            let request = &case.requests[next_request];
            if !request.app_context {
                injected.push(next_request);
            }
            if request.unframed() {
                state = State::Off;
                break;
            }
            let body = body_end - head_end;
            pos = head_end;
            next_request += 1;
            state = if body > 0 {
                State::Body(body)
            } else {
                State::Head
            };
        }
        send_start = send_end;
    }
    injected
}

/// Removes the injected `traceparent` lines: the stream that was sent, and
/// where (in it) each one was.
fn strip_injected(received: &[u8]) -> (Vec<u8>, Vec<usize>) {
    const PREFIX: &[u8] = b"traceparent: 00-";
    const LINE: usize = 70;
    let mut out = Vec::with_capacity(received.len());
    let mut at = Vec::new();
    let mut i = 0;
    while i < received.len() {
        let line = &received[i..received.len().min(i + LINE)];
        if line.len() == LINE
            && line.starts_with(PREFIX)
            && line.ends_with(b"\r\n")
            && line != APP_TRACEPARENT.as_bytes()
            && is_traceparent_value(&line[13..68])
        {
            at.push(out.len());
            i += LINE;
        } else {
            out.push(received[i]);
            i += 1;
        }
    }
    (out, at)
}

fn is_traceparent_value(v: &[u8]) -> bool {
    let hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    v.len() == 55
        && &v[..3] == b"00-"
        && hex(&v[3..35])
        && v[35] == b'-'
        && hex(&v[36..52])
        && v[52] == b'-'
        && (&v[53..] == b"01" || &v[53..] == b"00")
}

/// Parses every request of `received` strictly (httparse for heads,
/// Content-Length or chunked framing for bodies); the number parsed.
fn parse_strictly(received: &[u8]) -> Result<usize, String> {
    let mut rest = received;
    let mut count = 0;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return Err(format!("request {count}: truncated head"));
            }
            Err(e) => return Err(format!("request {count}: {e}")),
        };
        let mut length = None;
        let mut chunked = false;
        let mut upgrade = false;
        for h in request.headers.iter() {
            let value = std::str::from_utf8(h.value).map_err(|e| e.to_string())?;
            match h.name.to_ascii_lowercase().as_str() {
                "content-length" => {
                    length = Some(value.parse::<usize>().map_err(|e| e.to_string())?)
                }
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "upgrade" => upgrade = true,
                _ => {}
            }
        }
        rest = &rest[head_len..];
        count += 1;
        if upgrade {
            // The rest is the upgraded protocol's: not HTTP/1 any more.
            return Ok(count);
        }
        if chunked {
            loop {
                let line_end = rest
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .ok_or(format!("request {count}: chunk size line"))?;
                let size = usize::from_str_radix(
                    std::str::from_utf8(&rest[..line_end]).map_err(|e| e.to_string())?,
                    16,
                )
                .map_err(|e| format!("request {count}: chunk size: {e}"))?;
                rest = &rest[line_end + 2..];
                if size == 0 {
                    if !rest.starts_with(b"\r\n") {
                        return Err(format!("request {count}: chunked trailer"));
                    }
                    rest = &rest[2..];
                    break;
                }
                if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
                    return Err(format!("request {count}: chunk data"));
                }
                rest = &rest[size + 2..];
            }
        } else if let Some(n) = length {
            if rest.len() < n {
                return Err(format!("request {count}: body shorter than Content-Length"));
            }
            rest = &rest[n..];
        }
    }
    Ok(count)
}

// ------------------------------------------------------------ generation

fn header_name() -> impl Strategy<Value = String> {
    "[a-z]{1,12}".prop_map(|s| format!("x-{s}"))
}

fn request() -> impl Strategy<Value = Request> {
    let method = prop::sample::select(vec![
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
    ]);
    let target = "(/[a-zA-Z0-9._~-]{0,20}){1,4}(\\?[a-z]{1,8}=[a-z0-9]{0,8})?";
    // Mostly short values; sometimes long enough to push the head past the
    // scan window.
    let value = prop_oneof![
        8 => "[ -~&&[^:]]{0,40}".prop_map(|s| s.trim().to_owned()),
        1 => (500usize..3000).prop_map(|n| "v".repeat(n)),
    ];
    let headers = prop::collection::vec((header_name(), value), 0..8);
    // Bodies that look like request heads must stay body.
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2000),
        Just(b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (1usize..70_000).prop_map(|n| vec![b'b'; n]),
    ];
    let body = prop_oneof![
        4 => Just(Body::None),
        4 => bytes.clone().prop_map(Body::Length),
        1 => bytes.clone().prop_map(Body::Continue),
        1 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..4).prop_map(Body::Chunked),
    ];
    (
        method,
        target,
        headers,
        body,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.03),
    )
        .prop_map(
            |(method, target, headers, body, app_context, upgrade)| Request {
                method,
                target,
                headers,
                body,
                app_context,
                upgrade,
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(request(), 1..6)
        .prop_flat_map(|requests| {
            let total: usize = requests
                .iter()
                .map(|r| r.head().len() + r.body().len())
                .sum();
            // Requests one per send (the common shape), all in one send
            // (pipelined), or cut anywhere.
            let cuts = prop_oneof![
                Just(None),
                Just(Some(Vec::new())),
                prop::collection::vec(1..total.max(2), 0..6).prop_map(Some),
            ];
            (Just(requests), cuts)
        })
        .prop_map(|(requests, cuts)| {
            let cuts = cuts.unwrap_or_else(|| {
                let mut at = 0;
                requests
                    .iter()
                    .map(|r| {
                        at += r.head().len() + r.body().len();
                        at
                    })
                    .collect()
            });
            Case { requests, cuts }
        })
}

// ------------------------------------------------------------------ test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_headers_never_corrupt_a_request_whatever_its_shape_or_cut() {
    let cgroup = TestCgroup::new("rewrite");
    let sender = SenderProcess::start(&cgroup);
    let pins = PinDir::new();
    let mut driver = load_sockets_with_propagation(&pins, true, false, &[]);
    prop_common::trace(&mut driver, sender.pid()).await;
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let sender = std::cell::RefCell::new(sender);

    let mut runner = TestRunner::new(Config {
        cases: 160,
        failure_persistence: None,
        ..Config::default()
    });
    let cases = std::cell::Cell::new(0usize);
    let injected_total = std::cell::Cell::new(0usize);
    let not_injected_total = std::cell::Cell::new(0usize);
    let result = runner.run(&case(), |case| {
        let stream = case.stream();
        let chunks = case.chunks(&stream);
        let receiver = {
            let listener = listener.try_clone().expect("listener");
            std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().expect("accept");
                let mut received = Vec::new();
                conn.read_to_end(&mut received).expect("read");
                received
            })
        };
        let sends = sender.borrow_mut().send(port, &chunks);
        let received = receiver.join().expect("receiver");
        let (original, at) = strip_injected(&received);
        prop_assert!(
            original == stream.bytes,
            "the server must get exactly what was sent plus whole header lines: sent {} bytes, got {} ({} after removing {} injected lines)",
            stream.bytes.len(),
            received.len(),
            original.len(),
            at.len()
        );
        let expected: Vec<usize> = expected_injections(&case, &stream, &sends)
            .into_iter()
            .map(|i| stream.spans[i].1)
            .collect();
        prop_assert_eq!(
            &at,
            &expected,
            "headers go right after the request line of exactly the heads the program can follow (sends {:?})",
            sends
        );
        let parsed = parse_strictly(&received).map_err(|e| {
            TestCaseError::fail(format!("the received stream must parse strictly: {e}"))
        })?;
        let expected_requests = case
            .requests
            .iter()
            .position(|r| r.upgrade)
            .map_or(case.requests.len(), |i| i + 1);
        prop_assert_eq!(parsed, expected_requests, "every request is still there");
        cases.set(cases.get() + 1);
        injected_total.set(injected_total.get() + at.len());
        not_injected_total.set(not_injected_total.get() + case.requests.len() - at.len());
        Ok(())
    });
    drop(driver);
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let (cases, injected_total, not_injected_total) =
        (cases.get(), injected_total.get(), not_injected_total.get());
    assert!(cases > 0);
    assert!(
        injected_total > cases,
        "most requests are followable and must get a header: {injected_total} injected over {cases} cases"
    );
    assert!(
        not_injected_total > 0,
        "the generator must also produce requests the program leaves alone"
    );
}

/// A probe pod's own `/sys/fs/cgroup` shows only its container's cgroup, so
/// propagation mounts cgroup2 for itself (detached: no mount point, no
/// hostPath): that mount must show the whole hierarchy and open a traced
/// container's directory — the very one the host sees.
#[test]
fn the_probes_own_cgroup2_mount_opens_a_traced_containers_cgroup() {
    use std::os::unix::fs::MetadataExt;

    let cgroup = TestCgroup::new("detached");
    let root = Cgroup2::detached().unwrap_or_else(|e| {
        panic!("mounting cgroup2 detached needs CAP_SYS_ADMIN (run as root): {e}")
    });
    assert!(matches!(root, Cgroup2::Detached(_)), "{root:?}");
    let host_v2 = read_cgroup_mounts()
        .ok()
        .and_then(|m| m.v2)
        .expect("the host mounts cgroup v2");
    let relative = cgroup
        .dir()
        .strip_prefix(&host_v2)
        .expect("the test cgroup is under the host's cgroup2 mount");
    let opened = std::fs::File::from(
        root.open(relative)
            .unwrap_or_else(|e| panic!("opening {} in {root}: {e}", relative.display())),
    );
    let (via_own, via_host) = (
        opened.metadata().expect("fstat"),
        std::fs::metadata(cgroup.dir()).expect("stat"),
    );
    assert_eq!(
        (via_own.dev(), via_own.ino()),
        (via_host.dev(), via_host.ino()),
        "the probe's own mount opened another directory than the host's {}",
        cgroup.dir().display()
    );
    assert!(
        root.open(std::path::Path::new("ferrotel-test-no-such-cgroup"))
            .is_err(),
        "a cgroup that does not exist is not opened"
    );
}
