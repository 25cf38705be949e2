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

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use ferrotel_api::probe_config::ProbeConfig;
use ferrotel_e2e::{Collector, MetricPoint, Span};
use ferrotel_probe::config::{Cli, RuntimeConfig};
use ferrotel_probe::python::PythonFrontend;
use ferrotel_probe::runtime::{self, TargetSource};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(60);
const SERVER: i64 = 2;
const CLIENT: i64 = 3;
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

// ------------------------------------------------------------------ apps

fn apps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/apps/python")
}

fn venv_bin(name: &str) -> PathBuf {
    let cache = std::env::var_os("FERROTEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/ferrotel")
        });
    let path = cache.join("venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make tools` (e2e/tools/install.sh creates the Python venv)",
        path.display()
    );
    path
}

/// A Python server process, killed (with its process group) on drop.
struct App {
    child: Child,
    port: u16,
}

impl App {
    /// Starts `argv` (in its own process group) and waits for it to listen
    /// on `port` (0: read "READY <port>" from its stdout).
    fn start(what: &str, mut cmd: Command, port: u16) -> App {
        use std::os::unix::process::CommandExt;
        cmd.current_dir(apps_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{what} must start: {e}"));
        let port = if port == 0 {
            let stdout = child.stdout.take().expect("piped stdout");
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("{what}: reading READY: {e}"));
            line.trim()
                .strip_prefix("READY ")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{what} printed {line:?}, not READY <port>"))
        } else {
            port
        };
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{what} exited before listening on {port}: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not listen on {port} in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        App { child, port }
    }

    fn stdlib() -> App {
        let mut cmd = Command::new(venv_bin("python"));
        cmd.arg("stdlib_server.py");
        App::start("stdlib http.server", cmd, 0)
    }

    fn gunicorn_flask(port: u16) -> App {
        let mut cmd = Command::new(venv_bin("gunicorn"));
        cmd.args([
            "-k",
            "gthread",
            "-w",
            "2",
            "--threads",
            "4",
            "-b",
            &format!("127.0.0.1:{port}"),
            "flask_app:app",
        ]);
        App::start("Flask under gunicorn", cmd, port)
    }

    fn uvicorn_fastapi(port: u16) -> App {
        let mut cmd = Command::new(venv_bin("uvicorn"));
        cmd.args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--no-access-log",
            "fastapi_app:app",
        ]);
        App::start("FastAPI under uvicorn", cmd, port)
    }

    fn two_tier(backend: &App) -> App {
        let mut cmd = Command::new(venv_bin("python"));
        cmd.args(["two_tier.py", &backend.url("")]);
        App::start("two-tier frontend", cmd, 0)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn assert_alive(&mut self, what: &str) {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "{what} must still be running under the probe"
        );
    }

    fn stop(&mut self) {
        // The whole group: gunicorn and uvicorn workers too.
        ferrotel_e2e::process::signal_pgid(self.child.id() as i32, 9 /* SIGKILL */);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop();
    }
}

// ----------------------------------------------------------------- probe

struct Probe {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    metrics_url: String,
}

impl Probe {
    /// Starts the probe runtime with the Python front-end for `pids` and
    /// listening `ports`, and waits until at least `attached` processes are
    /// claimed.
    async fn start(collector: &Collector, pids: &[u32], ports: &[u16], attached: usize) -> Probe {
        let mut file = ProbeConfig::default();
        file.exporter.endpoint = collector.grpc_url();
        file.exporter.scheduled_delay_millis = 200;
        file.routes.patterns = [
            "/users/{id}",
            "/redirect/{id}",
            "/missing/{id}",
            "/fail/{id}",
            "/stream/{id}",
            "/checkout/{id}",
            "/users",
            "/health",
        ]
        .map(str::to_owned)
        .to_vec();
        let metrics_port = ferrotel_e2e::free_port();
        let mut args = vec![
            "ferrotel-probe".to_owned(),
            "--language".into(),
            "python".into(),
        ];
        args.extend([
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics_port}"),
            "--rescan-millis".into(),
            "100".into(),
        ]);
        for pid in pids {
            args.extend(["--pid".to_owned(), pid.to_string()]);
        }
        for port in ports {
            args.extend(["--open-port".to_owned(), port.to_string()]);
        }
        let cli = Cli::try_parse_from(&args).expect("valid probe flags");
        let config = RuntimeConfig::resolve(&cli, file, &|_| None).expect("valid probe config");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(runtime::run(
            config,
            PythonFrontend,
            TargetSource::Standalone,
            async move {
                let _ = stop_rx.await;
            },
        ));
        let mut probe = Probe {
            stop: Some(stop_tx),
            task: Some(task),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
        };
        probe.wait_attached(attached).await;
        probe
    }

    async fn metrics(&self) -> String {
        match reqwest::get(&self.metrics_url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => format!("(no /metrics: {e})"),
        }
    }

    fn metric(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Waits until the attached-processes gauge reads at least `n`; fails
    /// with the probe's error if it stopped (e.g. eBPF could not be loaded).
    async fn wait_attached(&mut self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.task.as_ref().is_some_and(JoinHandle::is_finished) {
                let result = self.task.take().expect("task").await;
                panic!(
                    "the Python probe stopped before attaching (it needs root and a kernel with BTF and syscall tracepoints): {result:?}"
                );
            }
            let text = self.metrics().await;
            if Self::metric(
                &text,
                "ferrotel_probe_attached_processes{language=\"python\"}",
            )
            .is_some_and(|v| v >= n as f64)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Python probe did not attach {n} processes in time:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn assert_running(&self) {
        assert!(
            self.task.as_ref().is_some_and(|t| !t.is_finished()),
            "the probe must still be running"
        );
    }

    /// Stops gracefully (flushing spans and metrics).
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("probe still running");
        let result = tokio::time::timeout(WAIT, task)
            .await
            .expect("probe stops in time")
            .expect("probe task");
        result.expect("the probe returns Ok after a graceful stop");
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn collector() -> Collector {
    Collector::start_with_file_exporter()
        .await
        .unwrap_or_else(|e| {
            panic!("the real collector must start (make tools builds otelcol): {e}")
        })
}

// --------------------------------------------------------------- traffic

/// One request the client made, and what it measured.
#[derive(Clone, Debug)]
struct Sent {
    method: &'static str,
    path: String,
    route: &'static str,
    status: u16,
    round_trip: Duration,
}

/// One planned request: method, path sent, expected `http.route`, expected status, body.
type PlannedRequest = (&'static str, String, &'static str, u16, Option<Vec<u8>>);

/// The mixed workload: every method, 2xx/3xx/4xx/5xx, bodies (one larger
/// than the kernel's payload capture), chunked responses, HEAD; half over
/// one keep-alive connection, half over fresh connections. Each request has
/// its own path (the id), so spans can be matched to requests one to one.
async fn mixed_workload(base: &str, first_id: usize) -> Vec<Sent> {
    let keep_alive = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let fresh = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let big = vec![b'x'; 3000];
    let mut sent = Vec::new();
    let mut id = first_id;
    for round in 0..2 {
        let client = if round == 0 { &keep_alive } else { &fresh };
        let plan: Vec<PlannedRequest> = vec![
            ("GET", format!("/users/{id}"), "/users/{id}", 200, None),
            (
                "GET",
                format!("/users/{}", id + 1),
                "/users/{id}",
                200,
                None,
            ),
            (
                "HEAD",
                format!("/users/{}", id + 2),
                "/users/{id}",
                200,
                None,
            ),
            (
                "POST",
                "/users".to_owned(),
                "/users",
                201,
                Some(b"{\"name\":\"ada\"}".to_vec()),
            ),
            (
                "POST",
                "/users".to_owned(),
                "/users",
                201,
                Some(big.clone()),
            ),
            (
                "PUT",
                format!("/users/{}", id + 3),
                "/users/{id}",
                200,
                Some(b"{\"name\":\"bob\"}".to_vec()),
            ),
            (
                "DELETE",
                format!("/users/{}", id + 4),
                "/users/{id}",
                204,
                None,
            ),
            (
                "GET",
                format!("/redirect/{}", id + 5),
                "/redirect/{id}",
                302,
                None,
            ),
            (
                "GET",
                format!("/missing/{}", id + 6),
                "/missing/{id}",
                404,
                None,
            ),
            ("GET", format!("/fail/{}", id + 7), "/fail/{id}", 500, None),
            (
                "GET",
                format!("/stream/{}", id + 8),
                "/stream/{id}",
                200,
                None,
            ),
        ];
        id += 10;
        for (method, path, route, status, body) in plan {
            let mut request =
                client.request(method.parse().expect("method"), format!("{base}{path}"));
            if let Some(body) = body {
                request = request.body(body);
            }
            let started = Instant::now();
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let got = response.status().as_u16();
            let _ = response
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("{method} {path} body: {e}"));
            let round_trip = started.elapsed();
            assert_eq!(got, status, "the app answers {method} {path} with {status}");
            sent.push(Sent {
                method,
                path,
                route,
                status,
                round_trip,
            });
        }
    }
    sent
}

fn of_pids(pids: &[u32]) -> impl Fn(&Span) -> bool + use<> {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    move |s: &Span| {
        s.resource_str("process.pid")
            .is_some_and(|p| pids.iter().any(|q| q == p))
    }
}

fn duration(span: &Span) -> Duration {
    Duration::from_nanos(span.end_ns.saturating_sub(span.start_ns))
}

/// Exactly one server span per request, each with the request's method,
/// path, route and status, lasting no longer than the client's round trip.
fn assert_spans_match(what: &str, spans: &[Span], sent: &[Sent]) {
    assert_eq!(
        spans.len(),
        sent.len(),
        "{what}: exactly one server span per request"
    );
    let key = |method: &str, path: &str| format!("{method} {path}");
    let mut by_key: HashMap<String, Vec<&Span>> = HashMap::new();
    for span in spans {
        by_key
            .entry(key(
                span.attr_str("http.request.method").unwrap_or("?"),
                span.attr_str("url.path").unwrap_or("?"),
            ))
            .or_default()
            .push(span);
    }
    let mut expected_counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in sent {
        *expected_counts.entry(key(s.method, &s.path)).or_default() += 1;
    }
    let counts: BTreeMap<String, usize> =
        by_key.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    assert_eq!(
        counts, expected_counts,
        "{what}: method and path of every server span"
    );
    for s in sent {
        let candidates = &by_key[&key(s.method, &s.path)];
        let fits = candidates.iter().any(|span| {
            span.attr_i64("http.response.status_code") == Some(i64::from(s.status))
                && span.attr_str("http.route") == Some(s.route)
                && span.end_ns > span.start_ns
                && duration(span) <= s.round_trip
        });
        assert!(
            fits,
            "{what}: no span for {} {} with status {}, route {} and a duration within {:?}: {:#?}",
            s.method, s.path, s.status, s.route, s.round_trip, candidates
        );
    }
}

/// Sum of the latest cumulative count of histogram `name` over every series of `pids`.
fn histogram_count(points: &[MetricPoint], name: &str, pids: &[u32]) -> u64 {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut latest: HashMap<String, (u64, u64)> = HashMap::new();
    for p in points.iter().filter(|p| p.name == name) {
        if !p
            .resource
            .get("process.pid")
            .and_then(|v| v.as_str())
            .is_some_and(|pid| pids.iter().any(|q| q == pid))
        {
            continue;
        }
        let series = format!("{:?}{:?}", p.resource, p.attributes);
        let entry = latest.entry(series).or_insert((0, 0));
        if p.time_ns >= entry.0 {
            *entry = (p.time_ns, p.count.unwrap_or(0));
        }
    }
    latest.values().map(|(_, count)| count).sum()
}

async fn wait_histogram(collector: &Collector, name: &str, pids: &[u32], expected: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let count = histogram_count(&collector.metrics().expect("read metrics"), name, pids);
        if count >= expected || Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The server-app scenario shared by the three frameworks.
/// `processes`: how many processes serve (master and workers).
async fn server_case(what: &str, mut app: App, by_port: bool, processes: usize) {
    let collector = collector().await;
    let probe = if by_port {
        Probe::start(&collector, &[], &[app.port], processes).await
    } else {
        Probe::start(&collector, &[app.pid()], &[], processes).await
    };
    let sent = mixed_workload(&app.url(""), 1000).await;
    app.assert_alive(what);
    let pids = claimed_pids(&app);
    probe.stop().await;

    let is_app = of_pids(&pids);
    let spans = collector
        .wait_for_spans(sent.len(), WAIT, |s| is_app(s) && s.kind == SERVER)
        .await
        .unwrap_or_else(|e| panic!("{what}: server spans: {e}"));
    assert_spans_match(what, &spans, &sent);
    let count = wait_histogram(
        &collector,
        "http.server.request.duration",
        &pids,
        sent.len() as u64,
    )
    .await;
    assert_eq!(
        count,
        sent.len() as u64,
        "{what}: http.server.request.duration counts every request"
    );
}

/// The app's process and its workers (children).
fn claimed_pids(app: &App) -> Vec<u32> {
    let mut pids = vec![app.pid()];
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", app.pid()))
        .unwrap_or_default();
    pids.extend(
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok()),
    );
    pids
}

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
    let mut probe = Probe::start(&collector, &[], &[port], 1).await;
    // Garbage, a TLS hello, a request cut short, a huge header: none may
    // crash the probe or produce a span.
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
    probe.wait_attached(1).await;
    // The resolver rescans every 100 ms: wait until the new process is claimed.
    let deadline = Instant::now() + WAIT;
    let sent_after = loop {
        let sent = mixed_workload(&second.url(""), 3000).await;
        let spans = collector.spans().expect("spans");
        if spans
            .iter()
            .any(|s| s.resource_str("process.pid") == Some(second.pid().to_string().as_str()))
            || Instant::now() > deadline
        {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    probe.assert_running();
    second.assert_alive("restarted app");
    let second_pid = second.pid();
    probe.stop().await;

    let is_first = of_pids(&[first_pid]);
    let spans = collector
        .wait_for_spans(sent_before.len(), WAIT, |s| is_first(s) && s.kind == SERVER)
        .await
        .expect("first spans");
    assert_spans_match("before the restart", &spans, &sent_before);
    let is_second = of_pids(&[second_pid]);
    let spans = collector
        .wait_for_spans(sent_after.len(), WAIT, |s| is_second(s) && s.kind == SERVER)
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
    assert!(!spans.is_empty(), "the restarted process is traced");
}
