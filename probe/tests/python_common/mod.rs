//! Shared harness of the Python probe tests: the Python apps (e2e/apps/python,
//! run from the venv `e2e/tools/install.sh` creates), the probe runtime with
//! the socket-level program set, the mixed HTTP workload and the span
//! assertions.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrotel_api::probe_config::{Language, ProbeConfig};
use ferrotel_e2e::{Collector, MetricPoint, Span};

pub const WAIT: Duration = Duration::from_secs(60);
pub const SERVER: i64 = 2;
pub const CLIENT: i64 = 3;

// ------------------------------------------------------------------ apps

/// reqwest is built without a bundled TLS provider (the workspace uses
/// rustls with ring): install it before any test client is built.
pub fn install_crypto_provider() {
    ferrotel_e2e::stack::install_crypto_provider();
}

pub fn apps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/apps/python")
}

pub fn venv_bin(name: &str) -> PathBuf {
    ferrotel_e2e::tools::venv_bin(name)
}

/// A Python server process, killed (with its process group) on drop.
pub struct App {
    child: Child,
    port: u16,
}

impl App {
    /// Starts `argv` (in its own process group) and waits for it to listen
    /// on `port` (0: read "READY <port>" from its stdout).
    pub fn start(what: &str, mut cmd: Command, port: u16) -> App {
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

    pub fn stdlib() -> App {
        let mut cmd = Command::new(venv_bin("python"));
        cmd.arg("stdlib_server.py");
        App::start("stdlib http.server", cmd, 0)
    }

    pub fn gunicorn_flask(port: u16) -> App {
        App::gunicorn_flask_with(port, "Flask under gunicorn", &[])
    }

    /// Flask under gunicorn (two gthread workers) with `extra` arguments
    /// (e.g. `--certfile`).
    pub fn gunicorn_flask_with(port: u16, what: &str, extra: &[&str]) -> App {
        let mut cmd = Command::new(venv_bin("gunicorn"));
        cmd.args(["-k", "gthread", "-w", "2", "--threads", "4"])
            .args(extra)
            .args(["-b", &format!("127.0.0.1:{port}"), "flask_app:app"]);
        App::start(what, cmd, port)
    }

    pub fn uvicorn_fastapi(port: u16) -> App {
        App::uvicorn_fastapi_with(port, "FastAPI under uvicorn", &[])
    }

    /// FastAPI under uvicorn with `extra` arguments (e.g. `--ssl-*`).
    pub fn uvicorn_fastapi_with(port: u16, what: &str, extra: &[&str]) -> App {
        let mut cmd = Command::new(venv_bin("uvicorn"));
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--no-access-log"])
            .args(extra)
            .arg("fastapi_app:app");
        App::start(what, cmd, port)
    }

    pub fn two_tier(backend: &App) -> App {
        let mut cmd = Command::new(venv_bin("python"));
        cmd.args(["two_tier.py", &backend.url("")]);
        App::start("two-tier frontend", cmd, 0)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn assert_alive(&mut self, what: &str) {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "{what} must still be running under the probe"
        );
    }

    pub fn stop(&mut self) {
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

#[path = "../probe_harness/mod.rs"]
mod probe_harness;
pub use probe_harness::Probe;
#[allow(unused_imports)] // the TLS tests use it
pub use probe_harness::TestTls;

impl Probe {
    /// Starts the probe runtime with the socket-level program set for
    /// `pids` and listening `ports`, and waits until at least `attached`
    /// processes are claimed.
    pub async fn start(
        collector: &Collector,
        pids: &[u32],
        ports: &[u16],
        attached: usize,
    ) -> Probe {
        Self::start_with(&collector.grpc_url(), pids, ports, attached, |_| {}).await
    }

    /// [`Probe::start`] exporting to `endpoint` (OTLP/gRPC URL), with the
    /// config file adjusted by `edit` (e.g. the span queue size).
    pub async fn start_with(
        endpoint: &str,
        pids: &[u32],
        ports: &[u16],
        attached: usize,
        edit: impl FnOnce(&mut ProbeConfig),
    ) -> Probe {
        let targets: Vec<(&str, String)> = pids
            .iter()
            .map(|pid| ("--pid", pid.to_string()))
            .chain(ports.iter().map(|port| ("--open-port", port.to_string())))
            .collect();
        let mut probe = Probe::launch(Language::Python, endpoint, &targets, |file| {
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
            edit(file);
        });
        probe.wait_attached(attached).await;
        probe
    }

    /// Waits until the attached-processes gauge reads at least `n`.
    pub async fn wait_attached(&mut self, n: usize) {
        self.wait_attached_until(&format!("{n} processes"), |v| v >= n as f64)
            .await;
    }
}

pub async fn collector() -> Collector {
    install_crypto_provider();
    Collector::start_with_file_exporter()
        .await
        .unwrap_or_else(|e| {
            panic!("the real collector must start (make tools builds otelcol): {e}")
        })
}

// --------------------------------------------------------------- traffic

/// One request the client made, and what it measured.
#[derive(Clone, Debug)]
pub struct Sent {
    pub method: &'static str,
    pub path: String,
    pub route: &'static str,
    pub status: u16,
    pub round_trip: Duration,
}

/// One planned request: method, path sent, expected `http.route`, expected status, body.
pub type PlannedRequest = (&'static str, String, &'static str, u16, Option<Vec<u8>>);

/// The mixed workload: every method, 2xx/3xx/4xx/5xx, bodies (one larger
/// than the kernel's payload capture), chunked responses, HEAD; half over
/// one keep-alive connection, half over fresh connections. Each request has
/// its own path (the id), so spans can be matched to requests one to one.
pub async fn mixed_workload(base: &str, first_id: usize) -> Vec<Sent> {
    mixed_workload_with(base, first_id, reqwest::Client::builder).await
}

/// [`mixed_workload`] with clients from `builder` (e.g. trusting a test CA).
pub async fn mixed_workload_with(
    base: &str,
    first_id: usize,
    builder: impl Fn() -> reqwest::ClientBuilder,
) -> Vec<Sent> {
    let keep_alive = builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let fresh = builder()
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

pub fn of_pids(pids: &[u32]) -> impl Fn(&Span) -> bool + use<> {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    move |s: &Span| {
        s.resource_str("process.pid")
            .is_some_and(|p| pids.iter().any(|q| q == p))
    }
}

pub fn duration(span: &Span) -> Duration {
    Duration::from_nanos(span.end_ns.saturating_sub(span.start_ns))
}

/// Exactly one server span per request, each with the request's method,
/// path, route and status, lasting no longer than the client's round trip.
pub fn assert_spans_match(what: &str, spans: &[Span], sent: &[Sent]) {
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
pub fn histogram_count(points: &[MetricPoint], name: &str, pids: &[u32]) -> u64 {
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

pub async fn wait_histogram(collector: &Collector, name: &str, pids: &[u32], expected: u64) -> u64 {
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
pub async fn server_case(what: &str, app: App, by_port: bool, processes: usize) {
    server_case_over(what, app, by_port, processes, None).await;
}

/// What [`server_case_over`] saw: the app's server spans (already matched
/// against the requests sent) and the probe's own metrics at its stop.
pub struct Served {
    pub spans: Vec<Span>,
    pub probe_metrics: String,
}

/// [`server_case`] over plain HTTP (`tls` None) or HTTPS with clients
/// trusting the test CA (the probe's libssl uprobes awaited first): the
/// mixed workload (every method, bodies larger than the capture, chunked
/// responses, keep-alive and fresh connections) gives exactly one server
/// span and one histogram sample per request.
pub async fn server_case_over(
    what: &str,
    mut app: App,
    by_port: bool,
    processes: usize,
    tls: Option<&TestTls>,
) -> Served {
    let collector = collector().await;
    let probe = if by_port {
        // Workers forked before the probe started: claimed by their port.
        Probe::start(&collector, &[], &[app.port], processes).await
    } else {
        Probe::start(&collector, &[app.pid()], &[], processes).await
    };
    let port = app.port;
    let sent = match tls {
        Some(tls) => {
            wait_tls_libraries(&probe, 1).await;
            let base = format!("https://localhost:{port}");
            mixed_workload_with(&base, 1000, || tls.client(port)).await
        }
        None => mixed_workload(&app.url(""), 1000).await,
    };
    app.assert_alive(what);
    let pids = claimed_pids(&app);
    let probe_metrics = probe.stop().await;

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
        "{what}: http.server.request.duration counts every request once"
    );
    Served {
        spans,
        probe_metrics,
    }
}

/// Waits until the probe has uprobes on at least `n` TLS library files.
pub async fn wait_tls_libraries(probe: &Probe, n: usize) {
    probe
        .wait_metric("ferrotel_probe_tls_libraries{language=\"python\"}", |v| {
            v >= n as f64
        })
        .await;
}

/// Waits until the probe has TLS uprobes in at least `n` processes.
pub async fn wait_tls_processes(probe: &Probe, n: usize) {
    probe
        .wait_metric("ferrotel_probe_tls_processes{language=\"python\"}", |v| {
            v >= n as f64
        })
        .await;
}

/// The app's process and its workers (children).
pub fn claimed_pids(app: &App) -> Vec<u32> {
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
