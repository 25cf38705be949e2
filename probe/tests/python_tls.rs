//! HTTPS under the socket-level (Python) probe: real TLS servers and
//! clients over OpenSSL — the stdlib `ssl` server, gunicorn `--certfile`,
//! uvicorn `--ssl-*` (asyncio's memory BIOs), `requests`/urllib3 and
//! `http.client`, and a client with OpenSSL linked in statically — with a
//! CA and server certificate the test makes. Every request must become
//! exactly one span, with `url.scheme` `https`, children linked, incoming
//! traceparents continued, and no span or parse error from ciphertext.
//! Needs root (eBPF); fails, never skips, without it.

mod python_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrotel_api::probe_config::LanguageTuning;
use ferrotel_e2e::Span;
use ferrotel_probe::driver::Driver;
use ferrotel_probe::propagation::events::{ClientContext, PropagationEvent, ServerContext};
use ferrotel_probe::sockets::SocketSet;
use ferrotel_probe::sockets::events::{KernelEvent, Layer, decode};
use ferrotel_probe::targets::ProcessTarget;
use ferrotel_probe::telemetry::sampling::{Sampler, SpanStarter};
use python_common::*;

type Tls = TestTls;

fn tls() -> Tls {
    TestTls::new()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn https_client(tls: &Tls, port: u16) -> reqwest::ClientBuilder {
    tls.client(port)
}

fn https_url(app: &App, path: &str) -> String {
    format!("https://localhost:{}{path}", app.port())
}

fn python_app(what: &str, args: &[String]) -> App {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.args(args);
    App::start(what, cmd, 0)
}

fn tls_server(tls: &Tls) -> App {
    python_app(
        "HTTPS stdlib server",
        &[
            "tls_apps.py".into(),
            "server".into(),
            path(&tls.files.cert),
            path(&tls.files.key),
        ],
    )
}

/// Every span of `spans` went over TLS 1.3 to `localhost`, and none was
/// made from ciphertext.
fn assert_https(what: &str, spans: &[Span]) {
    for span in spans {
        assert_eq!(
            span.attr_str("url.scheme")
                .or_else(|| span.attr_str("url.full").map(|u| &u[..5])),
            Some("https"),
            "{what}: every span is HTTPS: {span:#?}"
        );
        assert_eq!(
            (
                span.attr_str("tls.protocol.name"),
                span.attr_str("tls.protocol.version"),
                span.attr_str("server.address"),
            ),
            (Some("tls"), Some("1.3"), Some("localhost")),
            "{what}: the TLS version and the server name come from the handshake: {span:#?}"
        );
    }
}

/// The probe read no ciphertext as HTTP and found nothing untraceable.
fn assert_no_ciphertext_parsed(what: &str, probe_metrics: &str) {
    assert_eq!(
        Probe::metric_sum(
            probe_metrics,
            "ferrotel_probe_parse_errors_total{language=\"python\",protocol=\"http1\"}"
        ),
        0.0,
        "{what}: ciphertext must never reach the HTTP parser:\n{probe_metrics}"
    );
    assert_eq!(
        Probe::metric_sum(probe_metrics, "ferrotel_probe_tls_untraced_processes_total"),
        0.0,
        "{what}: every TLS connection here is traceable:\n{probe_metrics}"
    );
}

/// The server scenario of the plaintext tests, over TLS: every span is
/// HTTPS and no ciphertext reached the parser.
async fn https_server_case(what: &str, tls: &Tls, app: App, by_port: bool, processes: usize) {
    let served = server_case_over(what, app, by_port, processes, Some(tls)).await;
    assert_https(what, &served.spans);
    assert_no_ciphertext_parsed(what, &served.probe_metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdlib_ssl_server_requests_become_exact_https_spans() {
    let tls = tls();
    let app = tls_server(&tls);
    https_server_case("stdlib ssl server", &tls, app, false, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gunicorn_with_a_certfile_serves_exact_https_spans_from_its_workers() {
    let tls = tls();
    let port = ferrotel_e2e::free_port();
    let (cert, key) = (path(&tls.files.cert), path(&tls.files.key));
    let app = App::gunicorn_flask_with(
        port,
        "Flask under gunicorn --certfile",
        &["--certfile", &cert, "--keyfile", &key],
    );
    // The master and its two workers (claimed at fork).
    https_server_case("gunicorn --certfile", &tls, app, true, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uvicorn_with_ssl_serves_exact_https_spans_through_asyncio_memory_bios() {
    let tls = tls();
    let port = ferrotel_e2e::free_port();
    let (cert, key) = (path(&tls.files.cert), path(&tls.files.key));
    let app = App::uvicorn_fastapi_with(
        port,
        "FastAPI under uvicorn --ssl-*",
        &["--ssl-certfile", &cert, "--ssl-keyfile", &key],
    );
    https_server_case("uvicorn --ssl-*", &tls, app, false, 1).await;
}

/// W3C traceparent of checkout `i` (every other one carries one).
fn traceparent(i: usize) -> Option<(String, String)> {
    i.is_multiple_of(2).then(|| {
        (
            format!("{:032x}", 0xabc0 + i),
            format!("{:016x}", 0x5150 + i),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_calls_from_requests_and_http_client_are_children_of_the_https_request_being_served()
{
    let tls = tls();
    let collector = collector().await;
    let backend = tls_server(&tls);
    let frontend = python_app(
        "HTTPS frontend",
        &[
            "tls_apps.py".into(),
            "frontend".into(),
            https_url(&backend, ""),
            path(&tls.files.ca_cert),
            path(&tls.files.cert),
            path(&tls.files.key),
        ],
    );
    let probe = Probe::start(&collector, &[frontend.pid(), backend.pid()], &[], 2).await;
    wait_tls_libraries(&probe, 1).await;
    let client = https_client(&tls, frontend.port()).build().expect("client");
    const CHECKOUTS: usize = 6;
    for i in 0..CHECKOUTS {
        let mut request = client.get(https_url(&frontend, &format!("/checkout/{}", 500 + i)));
        if let Some((trace, parent)) = traceparent(i) {
            request = request.header("traceparent", format!("00-{trace}-{parent}-01"));
        }
        let response = request.send().await.expect("checkout");
        assert_eq!(response.status().as_u16(), 200, "checkout {i}");
        let body = response.text().await.expect("body");
        assert_eq!(body, r#"{"user": 200, "order": 201}"#, "checkout {i}");
    }
    let probe_metrics = probe.stop().await;

    let of_frontend = of_pids(&[frontend.pid()]);
    let of_backend = of_pids(&[backend.pid()]);
    let spans = collector
        .wait_for_spans(4 * CHECKOUTS, WAIT, |s| of_frontend(s) || of_backend(s))
        .await
        .expect("spans of both apps");
    let servers: Vec<Span> = spans
        .iter()
        .filter(|s| of_frontend(s) && s.kind == SERVER)
        .cloned()
        .collect();
    let calls: Vec<Span> = spans
        .iter()
        .filter(|s| of_frontend(s) && s.kind == CLIENT)
        .cloned()
        .collect();
    let backend_spans: Vec<Span> = spans.iter().filter(|s| of_backend(s)).cloned().collect();
    assert_eq!(
        (servers.len(), calls.len(), backend_spans.len()),
        (CHECKOUTS, 2 * CHECKOUTS, 2 * CHECKOUTS),
        "one server span per checkout, two calls each, each call served once: {spans:#?}"
    );
    assert_https("frontend server", &servers);
    assert_https("frontend calls", &calls);
    assert_https("backend", &backend_spans);
    assert!(
        backend_spans.iter().all(|s| s.kind == SERVER),
        "the backend only serves"
    );

    for (i, server) in servers.iter().enumerate() {
        let path = server.attr_str("url.path").expect("url.path");
        let id: usize = path
            .strip_prefix("/checkout/")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("server span {i} has path {path}"));
        assert_eq!(server.attr_str("http.route"), Some("/checkout/{id}"));
        assert_eq!(server.attr_i64("http.response.status_code"), Some(200));
        match traceparent(id - 500) {
            Some((trace, parent)) => assert_eq!(
                (server.trace_id.as_str(), server.parent_span_id.as_str()),
                (trace.as_str(), parent.as_str()),
                "checkout {id} continues its incoming traceparent"
            ),
            None => assert!(
                server.parent_span_id.is_empty(),
                "checkout {id} starts a trace"
            ),
        }
        let children: BTreeMap<&str, &Span> = calls
            .iter()
            .filter(|c| c.parent_span_id == server.span_id)
            .map(|c| (c.attr_str("http.request.method").unwrap_or("?"), c))
            .collect();
        assert_eq!(
            children.keys().copied().collect::<Vec<_>>(),
            ["GET", "POST"],
            "checkout {id}: the requests GET and the http.client POST are its children"
        );
        for child in children.values() {
            assert_eq!(child.trace_id, server.trace_id, "checkout {id}: one trace");
        }
        let expected_get = format!("https://localhost:{}/users/{id}", backend.port());
        assert_eq!(
            children["GET"].attr_str("url.full"),
            Some(expected_get.as_str())
        );
        assert_eq!(
            children["GET"].attr_i64("http.response.status_code"),
            Some(200)
        );
        assert_eq!(
            children["POST"].attr_i64("http.response.status_code"),
            Some(201)
        );
    }
    assert_no_ciphertext_parsed("two tiers", &probe_metrics);
}

// ------------------------------------------------- statically linked OpenSSL

/// The static-OpenSSL client library, built into `dir` with a symbol table
/// (`strip: false`) or without.
fn build_static_client(dir: &Path, strip: bool) -> PathBuf {
    let source = apps_dir().join("tls_clients/ftstatictls.c");
    let library = dir.join(if strip {
        "libftstatictls-stripped.so"
    } else {
        "libftstatictls.so"
    });
    let mut cc = Command::new("cc");
    cc.args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&library)
        .arg(&source)
        // OpenSSL inside, its symbols hidden: nothing exported to probe.
        .args([
            "-Wl,-Bstatic",
            "-lssl",
            "-lcrypto",
            "-Wl,-Bdynamic",
            "-Wl,--exclude-libs,ALL",
        ]);
    if strip {
        cc.arg("-s");
    }
    let status = cc
        .status()
        .expect("run cc (install gcc and libssl-dev: e2e/tools/install.sh)");
    assert!(
        status.success(),
        "building {} with OpenSSL's static libraries failed: install libssl-dev (e2e/tools/install.sh)",
        source.display()
    );
    library
}

/// A Python client of `tls_clients/` that makes HTTPS requests through a
/// TLS library other than the interpreter's `ssl`; returned once the
/// library is loaded (the requests wait for stdin).
struct LibraryClient {
    child: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl LibraryClient {
    /// Through `library` (ftstatictls.c, OpenSSL linked in).
    fn static_openssl(library: &Path, server: &App, tls: &Tls, n: usize) -> LibraryClient {
        Self::start(
            "static_client.py",
            &[
                path(library),
                "localhost".into(),
                server.port().to_string(),
                path(&tls.files.ca_cert),
                n.to_string(),
            ],
        )
    }

    /// Through libcurl on GnuTLS: no OpenSSL in the process.
    fn gnutls(server: &App, tls: &Tls, n: usize) -> LibraryClient {
        Self::start(
            "gnutls_client.py",
            &[
                https_url(server, ""),
                path(&tls.files.ca_cert),
                n.to_string(),
            ],
        )
    }

    /// Forks after the go; the child makes the requests.
    fn forking(server: &App, tls: &Tls, n: usize) -> LibraryClient {
        Self::start(
            "fork_client.py",
            &[
                "localhost".into(),
                server.port().to_string(),
                path(&tls.files.ca_cert),
                n.to_string(),
            ],
        )
    }

    fn start(script: &str, args: &[String]) -> LibraryClient {
        let mut child = Command::new(venv_bin("python"))
            .arg(apps_dir().join("tls_clients").join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read LOADED");
        assert_eq!(line.trim(), "LOADED", "the client loads its library");
        LibraryClient { child, stdout }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the requests; returns their statuses.
    fn run(&mut self) -> Vec<u16> {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("start the requests");
        self.statuses()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read a line");
        line
    }

    fn statuses(&mut self) -> Vec<u16> {
        let line = self.line();
        line.trim()
            .strip_prefix("STATUS ")
            .unwrap_or_else(|| panic!("the client printed {line:?}"))
            .split(' ')
            .map(|s| s.parse().expect("a status"))
            .collect()
    }
}

impl Drop for LibraryClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statically_linked_openssl_is_traced_through_its_symbol_table_and_reported_when_stripped() {
    let tls = tls();
    let build = tempfile::tempdir().expect("temp dir");
    let with_symbols = build_static_client(build.path(), false);
    let stripped = build_static_client(build.path(), true);
    let server = tls_server(&tls);
    let collector = collector().await;
    const N: usize = 4;

    // Both clients have loaded their library when the probe starts.
    let mut traced = LibraryClient::static_openssl(&with_symbols, &server, &tls, N);
    let mut untraced = LibraryClient::static_openssl(&stripped, &server, &tls, N);
    let probe = Probe::start(
        &collector,
        &[server.pid(), traced.pid(), untraced.pid()],
        &[],
        3,
    )
    .await;
    // Two files: the server's libssl and the symbol-table client's library.
    wait_tls_libraries(&probe, 2).await;
    // With a symbol table: the functions are found by name and traced.
    assert_eq!(traced.run(), vec![200; N], "the static client's requests");
    // Stripped: nothing to attach to; reported once, with the reason.
    assert_eq!(
        untraced.run(),
        vec![200; N],
        "the stripped client's requests"
    );
    probe
        .wait_metric(
            "ferrotel_probe_tls_untraced_processes_total{language=\"python\",reason=\"static_libssl\"}",
            |v| v == 1.0,
        )
        .await;
    let probe_metrics = probe.stop().await;

    let of_traced = of_pids(&[traced.pid()]);
    let of_untraced = of_pids(&[untraced.pid()]);
    let of_server = of_pids(&[server.pid()]);
    let spans = collector
        .wait_for_spans(3 * N, WAIT, |s| {
            of_traced(s) || of_untraced(s) || of_server(s)
        })
        .await
        .expect("spans");
    let client_spans: Vec<Span> = spans.iter().filter(|s| of_traced(s)).cloned().collect();
    assert_eq!(
        client_spans.len(),
        N,
        "one client span per request of the symbol-table client: {spans:#?}"
    );
    assert!(client_spans.iter().all(|s| s.kind == CLIENT));
    assert_https("static OpenSSL client", &client_spans);
    assert!(
        !spans.iter().any(&of_untraced),
        "the stripped client yields no span (and no garbage from its ciphertext)"
    );
    assert_eq!(
        spans.iter().filter(|s| of_server(s)).count(),
        2 * N,
        "the server traced both clients' requests"
    );
    assert_no_ciphertext_parsed_except_untraced(&probe_metrics);
}

fn assert_no_ciphertext_parsed_except_untraced(probe_metrics: &str) {
    assert_eq!(
        Probe::metric_sum(
            probe_metrics,
            "ferrotel_probe_parse_errors_total{language=\"python\",protocol=\"http1\"}"
        ),
        0.0,
        "ciphertext never reaches the HTTP parser:\n{probe_metrics}"
    );
}

// ------------------------------------------------------------ the kernel

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_reports_a_tls_connections_hellos_and_plaintext_and_suppresses_the_rest() {
    let tls = tls();
    let server = tls_server(&tls);
    let mut driver = Driver::load(SocketSet::new(
        &LanguageTuning::default(),
        SpanStarter::new(Sampler::default()),
    ))
    .unwrap_or_else(|e| panic!("the python program set must load and attach (run as root): {e}"));
    driver
        .add_target(&ProcessTarget {
            pid: server.pid(),
            exe: PathBuf::from(format!("/proc/{}/exe", server.pid())),
            reason: "pid",
        })
        .await
        .unwrap_or_else(|r| panic!("tracing the server refused: {}: {:#}", r.reason, r.error));
    // Its libssl is read off the loop; the attach follows the answer.
    driver.settle_background().await;
    assert_eq!(
        driver.set().tls_library_count(),
        1,
        "the server's libssl is probed once its scan is back"
    );
    // Ten requests on one keep-alive TLS connection.
    const N: usize = 10;
    let client = https_client(&tls, server.port()).build().expect("client");
    for i in 0..N {
        let response = client
            .get(https_url(&server, &format!("/users/{i}")))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status().as_u16(), 200);
        let _ = response.bytes().await;
    }
    // A bystander: an unclaimed Python process doing HTTPS with the same
    // libssl (to the traced server). Nothing of its own may reach the ring.
    let bystander = Command::new(venv_bin("python"))
        .args([
            "-c",
            "import ssl, sys, urllib.request; \
             c = ssl.create_default_context(cafile=sys.argv[1]); \
             [urllib.request.urlopen(sys.argv[2], context=c).read() for _ in range(5)]",
        ])
        .arg(&tls.files.ca_cert)
        .arg(https_url(&server, "/users/99"))
        .output()
        .expect("run the bystander");
    assert!(
        bystander.status.success(),
        "the bystander's requests: {bystander:?}"
    );
    const ALL: usize = N + 5;
    // The server's ciphertext events per (fd, direction), its plaintext
    // events per direction, the requests seen, and anyone else's records.
    let mut ciphertext: BTreeMap<(i32, u32, String), usize> = BTreeMap::new();
    // Connections reuse fds: the nth connection on an fd, from its opens.
    let mut opened: BTreeMap<i32, u32> = BTreeMap::new();
    let mut plaintext: BTreeMap<String, usize> = BTreeMap::new();
    let mut requests = 0;
    let mut others: BTreeMap<u32, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while requests < ALL && tokio::time::Instant::now() < deadline {
        driver.drain_raw(|record| {
            let event = decode(record).expect("every record decodes");
            let pid = event_pid(&event);
            if pid != server.pid() {
                *others.entry(pid).or_default() += 1;
                return;
            }
            if let KernelEvent::Open { fd, .. } = event {
                *opened.entry(fd).or_default() += 1;
            }
            if let KernelEvent::Data {
                fd,
                direction,
                layer,
                payload,
                ..
            } = event
            {
                let direction = format!("{direction:?}");
                let nth = opened.get(&fd).copied().unwrap_or(0);
                match layer {
                    Layer::Socket => *ciphertext.entry((fd, nth, direction)).or_default() += 1,
                    Layer::Tls => {
                        if direction == "Ingress" {
                            requests += usize::from(payload.starts_with(b"GET /users/"));
                        }
                        *plaintext.entry(direction).or_default() += 1;
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        requests, ALL,
        "every request's plaintext (ours and the bystander's), read through SSL_read_ex: {plaintext:?}"
    );
    assert!(
        plaintext.get("Egress").copied().unwrap_or(0) >= ALL,
        "every response's plaintext, written through SSL_write_ex: {plaintext:?}"
    );
    let connections: std::collections::BTreeSet<(i32, u32)> =
        ciphertext.keys().map(|(fd, nth, _)| (*fd, *nth)).collect();
    // The client may open more than one connection for its ten requests
    // (its pool decides); the bystander opens one per request.
    let accepted: std::collections::BTreeSet<(i32, u32)> = opened
        .iter()
        .flat_map(|(fd, n)| (1..=*n).map(move |nth| (*fd, nth)))
        .collect();
    assert!(
        accepted.len() >= 6,
        "the server accepted our connection(s) and the bystander's 5: {opened:?}"
    );
    assert_eq!(
        connections, accepted,
        "the hellos of every accepted connection are reported: {ciphertext:?}"
    );
    for ((fd, _, direction), n) in &ciphertext {
        assert!(
            (1..=2).contains(n),
            "fd {fd} {direction}: only a connection's hellos reach user space as ciphertext \
             (at most two events), the rest is suppressed in the kernel: {ciphertext:?}"
        );
    }
    assert!(
        others.is_empty(),
        "no record from any other process (the bystander made 5 HTTPS requests): {others:?}"
    );
}

fn event_pid(event: &KernelEvent<'_>) -> u32 {
    match *event {
        KernelEvent::Open { pid, .. }
        | KernelEvent::Data { pid, .. }
        | KernelEvent::Close { pid, .. }
        | KernelEvent::ExecMap { pid }
        | KernelEvent::ProcExit { pid }
        | KernelEvent::ProcExec { pid }
        | KernelEvent::ProcFork { pid, .. } => pid,
        KernelEvent::Propagation(PropagationEvent::Client(ClientContext { pid, .. }))
        | KernelEvent::Propagation(PropagationEvent::Server(ServerContext { pid, .. })) => pid,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_speaking_tls_without_openssl_is_reported_as_no_libssl() {
    let tls = tls();
    let server = tls_server(&tls);
    let collector = collector().await;
    const N: usize = 3;
    let mut client = LibraryClient::gnutls(&server, &tls, N);
    let probe = Probe::start(&collector, &[server.pid(), client.pid()], &[], 2).await;
    wait_tls_libraries(&probe, 1).await;
    assert_eq!(client.run(), vec![200; N], "the GnuTLS client's requests");
    probe
        .wait_metric(
            "ferrotel_probe_tls_untraced_processes_total{language=\"python\",reason=\"no_libssl\"}",
            |v| v == 1.0,
        )
        .await;
    let probe_metrics = probe.stop().await;
    let of_client = of_pids(&[client.pid()]);
    let of_server = of_pids(&[server.pid()]);
    let spans = collector
        .wait_for_spans(N, WAIT, |s| of_client(s) || of_server(s))
        .await
        .expect("spans");
    assert!(
        !spans.iter().any(&of_client),
        "the GnuTLS client yields no span (and no garbage from its ciphertext): {spans:#?}"
    );
    assert_eq!(
        spans.iter().filter(|s| of_server(s)).count(),
        N,
        "the server traced the client's requests"
    );
    assert_no_ciphertext_parsed_except_untraced(&probe_metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_forked_by_a_traced_process_gets_its_own_tls_probes() {
    let tls = tls();
    let server = tls_server(&tls);
    let collector = collector().await;
    const N: usize = 3;
    let mut parent = LibraryClient::forking(&server, &tls, N);
    let probe = Probe::start(&collector, &[server.pid(), parent.pid()], &[], 2).await;
    wait_tls_libraries(&probe, 1).await;
    // The server and the parent have uprobes of their own.
    wait_tls_processes(&probe, 2).await;
    let stdin = parent.child.stdin.as_mut().expect("stdin");
    stdin.write_all(b"go\n").expect("fork");
    let child: u32 = parent
        .line()
        .trim()
        .strip_prefix("CHILD ")
        .and_then(|p| p.parse().ok())
        .expect("the child's pid");
    // The child calls only once the probe has attached to it too.
    wait_tls_processes(&probe, 3).await;
    let stdin = parent.child.stdin.as_mut().expect("stdin");
    stdin
        .write_all(b"go\n")
        .expect("start the child's requests");
    assert_eq!(parent.statuses(), vec![200; N], "the child's requests");
    let probe_metrics = probe.stop().await;
    let of_child = of_pids(&[child]);
    let of_server = of_pids(&[server.pid()]);
    let spans = collector
        .wait_for_spans(2 * N, WAIT, |s| of_child(s) || of_server(s))
        .await
        .unwrap_or_else(|e| panic!("spans: {e}\n{probe_metrics}"));
    let calls: Vec<Span> = spans.iter().filter(|s| of_child(s)).cloned().collect();
    assert_eq!(
        calls.len(),
        N,
        "the forked child's HTTPS calls are traced through uprobes of its own: {spans:#?}"
    );
    assert!(calls.iter().all(|s| s.kind == CLIENT));
    assert_https("forked child", &calls);
}
