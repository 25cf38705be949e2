//! Whole traces across services with no SDK: real Python and Go clients and
//! servers, each traced by its language's probe (two probe runtimes, as on
//! a node), exporting to the real collector. With injection on, every call
//! a traced service makes carries its client span's `traceparent`, so the
//! server it calls continues the trace: one trace per incoming request,
//! each server span the child of the client span that called it.
//!
//! Needs root (eBPF, sockops on a cgroup v2 directory of the test's own, a
//! bpffs for the pins); fails, does not skip, without it.

mod go_common;
mod prop_common;

use std::collections::BTreeMap;
use std::time::Duration;

use ferrotel_api::probe_config::{Language, ProbeConfig};
use ferrotel_e2e::{Collector, Span, wait_for};
use go_common::{CLIENT, Probe, SERVER};
use prop_common::{PinDir, Service, TestCgroup};

const WAIT: Duration = Duration::from_secs(60);

async fn collector() -> Collector {
    ferrotel_e2e::stack::install_crypto_provider();
    Collector::start_with_file_exporter()
        .await
        .unwrap_or_else(|e| {
            panic!("the real collector must start (make tools builds otelcol): {e}")
        })
}

/// A probe of `language` for `pids`, with propagation as `pins` and the
/// flags say.
async fn probe(
    language: Language,
    collector: &Collector,
    pids: &[u32],
    edit: impl FnOnce(&mut ProbeConfig),
) -> Probe {
    let targets: Vec<(&str, String)> = pids.iter().map(|p| ("--pid", p.to_string())).collect();
    let mut probe = Probe::launch(language, &collector.grpc_url(), &targets, edit);
    let n = pids.len() as f64;
    probe
        .wait_attached_until(&format!("{n} processes"), |v| v >= n)
        .await;
    probe
}

fn pid_of(span: &Span) -> u32 {
    span.resource_str("process.pid")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn path_of(span: &Span) -> String {
    ["url.path", "url.full", "http.target"]
        .iter()
        .find_map(|k| span.attr_str(k))
        .unwrap_or(&span.name)
        .to_owned()
}

fn describe(spans: &[&Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "\n  kind {} pid {} {} trace {} span {} parent {:?}",
                s.kind,
                pid_of(s),
                path_of(s),
                s.trace_id,
                s.span_id,
                s.parent_span_id
            )
        })
        .collect()
}

/// The probes' propagation counters (what each outgoing request and each
/// server request got), for failure messages.
async fn propagation_counts(probes: &[&Probe]) -> String {
    let mut text = String::new();
    for probe in probes {
        for line in probe
            .metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("ferrotel_probe_propagation"))
        {
            text.push_str("\n  ");
            text.push_str(line);
        }
    }
    text
}

/// The spans of the trace whose server span, in process `pid`, served a
/// path ending in `path_end` — once `expected` spans of it arrived. A
/// failure names every span the collector has and the `probes`'
/// propagation counters.
async fn trace_of(
    collector: &Collector,
    probes: &[&Probe],
    pid: u32,
    path_end: &str,
    expected: usize,
) -> Vec<Span> {
    let result = wait_for(
        &format!("{expected} spans in the trace of {path_end} served by pid {pid}"),
        WAIT,
        || async {
            let spans = collector.spans().map_err(|e| e.to_string())?;
            let root = spans
                .iter()
                .find(|s| s.kind == SERVER && pid_of(s) == pid && path_of(s).ends_with(path_end))
                .ok_or_else(|| format!("no server span of {path_end} from pid {pid} yet"))?;
            let trace: Vec<Span> = spans
                .iter()
                .filter(|s| s.trace_id == root.trace_id)
                .cloned()
                .collect();
            if trace.len() >= expected {
                Ok(trace)
            } else {
                Err(format!(
                    "{} of {expected} spans so far:{}",
                    trace.len(),
                    describe(&trace.iter().collect::<Vec<_>>())
                ))
            }
        },
    )
    .await;
    match result {
        Ok(trace) => trace,
        Err(e) => {
            let all = collector.spans().unwrap_or_default();
            panic!(
                "{e}\nevery span the collector has:{}\nthe probes' propagation counters:{}",
                describe(&all.iter().collect::<Vec<_>>()),
                propagation_counts(probes).await
            )
        }
    }
}

/// Asserts that `trace` is: one server span in `front` for `front_path`,
/// and for each `(path, pid)` of `calls` a client span of `front`, child of
/// that server span, and a server span in `pid`, child of that client span.
fn assert_calls(trace: &[Span], front: u32, front_path: &str, calls: &[(&str, u32)]) {
    let all: Vec<&Span> = trace.iter().collect();
    let roots: Vec<&Span> = all
        .iter()
        .copied()
        .filter(|s| s.kind == SERVER && pid_of(s) == front && path_of(s).ends_with(front_path))
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "one server span of {front_path} in pid {front}:{}",
        describe(&all)
    );
    let root = roots[0];
    assert_eq!(
        trace.len(),
        1 + 2 * calls.len(),
        "the trace holds the server span, and a client and a server span per call, nothing else:{}",
        describe(&all)
    );
    for (path, server_pid) in calls {
        let client = all
            .iter()
            .find(|s| s.kind == CLIENT && pid_of(s) == front && path_of(s).ends_with(path))
            .unwrap_or_else(|| panic!("a client span of {path} in pid {front}:{}", describe(&all)));
        assert_eq!(
            client.parent_span_id,
            root.span_id,
            "the call to {path} is a child of the server span that made it:{}",
            describe(&all)
        );
        let server = all
            .iter()
            .find(|s| s.kind == SERVER && pid_of(s) == *server_pid && path_of(s).ends_with(path))
            .unwrap_or_else(|| {
                panic!(
                    "a server span of {path} in pid {server_pid}, in the same trace:{}",
                    describe(&all)
                )
            });
        assert_eq!(
            server.parent_span_id,
            client.span_id,
            "the server span of {path} (pid {server_pid}) is the child of the client span that called it:{}",
            describe(&all)
        );
    }
}

/// Waits until the probe's metric `prefix` (summed) reaches `at_least`:
/// the kernel's counts are read once a second.
async fn wait_metric(probe: &Probe, prefix: &str, at_least: f64, what: &str) {
    wait_for(what, WAIT, || async {
        let text = probe.metrics().await;
        let value = Probe::metric_sum(&text, prefix);
        if value >= at_least {
            Ok(())
        } else {
            Err(format!("{prefix} is {value}:\n{text}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

fn injection(pins: &PinDir) -> impl FnOnce(&mut ProbeConfig) + '_ {
    move |config: &mut ProbeConfig| config.propagation = pins.config(true, false)
}

/// Three calls across services, each traced by its language's probe (two
/// probe runtimes, as on a node), with propagation as `inject` and `join`
/// say: Go -> Python (the Go server's /downstream calls the Python backend
/// twice, from its own goroutine and from a spawned one), Python -> Python
/// and Python -> Go (two_tier calls GET /users/<id> then POST /users on its
/// backend). One cgroup per language, as containers are: each probe
/// attaches its sockops program to the cgroups of its own processes.
struct ThreeCalls {
    py_backend: Service,
    go_server: Service,
    py_to_py: Service,
    py_to_go: Service,
    python: Probe,
    go: Probe,
    _cgroups: (TestCgroup, TestCgroup),
}

impl ThreeCalls {
    async fn start(collector: &Collector, pins: &PinDir, inject: bool, join: bool) -> Self {
        let name = if inject { "traces" } else { "join" };
        let cgroup = TestCgroup::new(&format!("{name}-py"));
        let go_cgroup = TestCgroup::new(&format!("{name}-go"));
        let apps = go_common::apps(go_common::TOOLCHAINS[0]);
        let py_backend = Service::python(&cgroup, "stdlib_server.py", &[]);
        let go_server = Service::start(
            "Go httpserver",
            go_cgroup.command(
                &apps.bin("httpserver"),
                &["-addr", "127.0.0.1:0", "-downstream", &py_backend.url("")],
            ),
        );
        let py_to_py = Service::python(&cgroup, "two_tier.py", &[&py_backend.url("")]);
        let py_to_go = Service::python(&cgroup, "two_tier.py", &[&go_server.url("")]);
        let propagation = |config: &mut ProbeConfig| config.propagation = pins.config(inject, join);
        let python = probe(
            Language::Python,
            collector,
            &[py_backend.pid(), py_to_py.pid(), py_to_go.pid()],
            propagation,
        )
        .await;
        let go = probe(Language::Go, collector, &[go_server.pid()], propagation).await;
        Self {
            py_backend,
            go_server,
            py_to_py,
            py_to_go,
            python,
            go,
            _cgroups: (cgroup, go_cgroup),
        }
    }

    /// One request into each chain (`/checkout/<first>`, then the next id,
    /// and `/downstream`): each gives one trace, every server span the
    /// child of the client span that called it.
    async fn assert_one_trace_per_request(&self, collector: &Collector, first: u32) {
        let (py_py, py_go) = (first.to_string(), (first + 1).to_string());
        let probes = [&self.python, &self.go];
        let client = go_common::http_client();
        for (url, what) in [
            (
                self.py_to_py.url(&format!("/checkout/{py_py}")),
                "python -> python",
            ),
            (
                self.py_to_go.url(&format!("/checkout/{py_go}")),
                "python -> go",
            ),
            (self.go_server.url("/downstream"), "go -> python"),
        ] {
            let response = client
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: GET {url}: {e}"));
            assert_eq!(response.status().as_u16(), 200, "{what}: GET {url}");
        }
        for (server, id, backend) in [
            (&self.py_to_py, &py_py, &self.py_backend),
            (&self.py_to_go, &py_go, &self.go_server),
        ] {
            let path = format!("/checkout/{id}");
            let trace = trace_of(collector, &probes, server.pid(), &path, 5).await;
            assert_calls(
                &trace,
                server.pid(),
                &path,
                &[
                    (&format!("/users/{id}"), backend.pid()),
                    ("/users", backend.pid()),
                ],
            );
        }
        let trace = trace_of(collector, &probes, self.go_server.pid(), "/downstream", 5).await;
        assert_calls(
            &trace,
            self.go_server.pid(),
            "/downstream",
            &[
                ("/hello", self.py_backend.pid()),
                ("/users/7", self.py_backend.pid()),
            ],
        );
    }

    async fn stop(self) {
        self.go.assert_running();
        self.python.assert_running();
        drop(self.go.stop().await);
        drop(self.python.stop().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_go_calls_carry_their_context_to_the_next_service() {
    let collector = collector().await;
    let pins = PinDir::new();
    let calls = ThreeCalls::start(&collector, &pins, true, false).await;
    calls.assert_one_trace_per_request(&collector, 4101).await;
    wait_metric(
        &calls.python,
        "ferrotel_probe_propagation_requests_total{language=\"python\",outcome=\"injected\"}",
        4.0,
        "the Python probe counts the headers it wrote (4 calls)",
    )
    .await;
    wait_metric(
        &calls.go,
        "ferrotel_probe_propagation_requests_total{language=\"go\",outcome=\"injected\"}",
        2.0,
        "the Go probe counts the headers it wrote (2 calls)",
    )
    .await;
    calls.stop().await;
}

/// The headers the probe writes keep requests valid for a server that
/// refuses any header it does not know, or a trace header sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_unknown_headers_still_accepts_every_request() {
    let collector = collector().await;
    let pins = PinDir::new();
    let cgroup = TestCgroup::new("strict");
    let mut strict = Service::python(&cgroup, "strict_server.py", &[]);
    let front = Service::python(&cgroup, "two_tier.py", &[&strict.url("")]);
    let python = probe(
        Language::Python,
        &collector,
        &[front.pid()],
        injection(&pins),
    )
    .await;

    let client = go_common::http_client();
    let mut seen = BTreeMap::new();
    let mut gets = 0;
    for id in 4201..4211 {
        let body = client
            .get(front.url(&format!("/checkout/{id}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /checkout/{id}: {e}"))
            .text()
            .await
            .expect("body");
        assert_eq!(
            body, r#"{"user": 200, "order": 201}"#,
            "the strict server accepted both calls of request {id}"
        );
        for _ in 0..2 {
            let line = strict.line();
            let (traceparent, segments) = line
                .strip_prefix("SAW ")
                .and_then(|seen| seen.split_once(' '))
                .unwrap_or_else(|| panic!("the strict server refused a request: {line}"));
            assert_ne!(traceparent, "-", "every call carries a traceparent");
            // A server that parses the first read of a request (as the
            // probe's own server side does) sees the headers only if they
            // travel with the request line: the GET's head, headers
            // written in, reaches the server in one TCP segment.
            assert!(
                segments == "1" || segments == "-",
                "request {id}: a GET head with its traceparent arrived in {segments} TCP segments, not one: {line}"
            );
            gets += usize::from(segments == "1");
            *seen.entry(traceparent.to_owned()).or_insert(0) += 1;
        }
    }
    assert_eq!(
        gets, 10,
        "the strict server measured each request's GET head"
    );
    assert_eq!(
        seen.len(),
        20,
        "a traceparent of its own for each call: {seen:?}"
    );

    // Each traceparent names the client span that sent it.
    let clients = wait_for("the front's 20 client spans", WAIT, || async {
        let spans: Vec<Span> = collector
            .spans()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|s| s.kind == CLIENT && pid_of(s) == front.pid())
            .collect();
        if spans.len() >= 20 {
            Ok(spans)
        } else {
            Err(format!("{} client spans", spans.len()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for span in &clients {
        let sent = format!("00-{}-{}-01", span.trace_id, span.span_id);
        assert!(
            seen.contains_key(&sent),
            "the server got the client span's own context {sent}: {seen:?}"
        );
    }
    drop(python.stop().await);
}

/// Without injection (or where a request cannot carry it), a client
/// publishes its span for the connection, and a traced server on the same
/// node adopts it: the same trace, across processes and across probes (a
/// Go client and a Python server, a Python client and a Go server meet in
/// the node-wide join map).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_injection_a_server_on_the_same_node_joins_its_clients_trace() {
    let collector = collector().await;
    let pins = PinDir::new();
    let calls = ThreeCalls::start(&collector, &pins, false, true).await;
    calls.assert_one_trace_per_request(&collector, 4301).await;
    wait_metric(
        &calls.go,
        "ferrotel_probe_propagation_server_requests_total{language=\"go\",origin=\"joined\"}",
        2.0,
        "the Go server joined the two calls",
    )
    .await;
    wait_metric(
        &calls.python,
        "ferrotel_probe_propagation_server_requests_total{language=\"python\",origin=\"joined\"}",
        4.0,
        "the Python server joined the four calls",
    )
    .await;
    let metrics = calls.python.metrics().await;
    assert_eq!(
        Probe::metric_sum(
            &metrics,
            "ferrotel_probe_propagation_requests_total{language=\"python\",outcome=\"injected\"}"
        ),
        0.0,
        "nothing is written into requests when injection is off:\n{metrics}"
    );
    calls.stop().await;
}

/// Go gRPC services on one node, joining on and injection off (gRPC is
/// HTTP/2, never injected): a client calls a front server whose handler
/// calls a backend twice (from its goroutine and from a spawned one). Each
/// client call publishes its span under its end of the connection and its
/// HTTP/2 stream id, and the server that serves that stream adopts it:
/// every call is one trace of six spans, each server span the child of the
/// client span that called it. With each Go toolchain of the matrix, and
/// with the binaries stripped (offsets from the table, no itabs known).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_grpc_servers_on_the_same_node_join_their_clients_traces() {
    let collector = collector().await;
    for toolchain in go_common::TOOLCHAINS {
        let apps = go_common::apps(toolchain);
        for suffix in ["", ".stripped"] {
            let label = format!("{} ({}), binaries{suffix}", toolchain.name, apps.go_version);
            grpc_join_case(&collector, &apps, suffix, &label).await;
        }
    }
}

async fn grpc_join_case(collector: &Collector, apps: &go_common::Apps, suffix: &str, label: &str) {
    use std::process::Stdio;

    const CALLS: usize = 5;
    let pins = PinDir::new();
    let cgroup = TestCgroup::new("grpc");
    let bin = |app: &str| apps.bin(&format!("{app}{suffix}"));
    let backend = Service::start(
        "Go grpcserver (backend)",
        cgroup.command(&bin("grpcserver"), &[]),
    );
    let backend_addr = format!("127.0.0.1:{}", backend.port);
    let front = Service::start(
        "Go grpcserver (front)",
        cgroup.command(&bin("grpcserver"), &["-downstream", &backend_addr]),
    );
    let client_bin = bin("grpcclient");
    let front_addr = format!("127.0.0.1:{}", front.port);
    let calls = format!("downstream={CALLS}");
    let client = cgroup
        .command(
            &client_bin,
            &["-addr", &front_addr, "-wait", "-calls", &calls],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("grpcclient starts");
    let client_pid = client.id();
    // The cgroup's shell execs the client: trace the client, not the shell.
    wait_for("grpcclient to exec", WAIT, || async {
        match std::fs::read_link(format!("/proc/{client_pid}/exe")) {
            Ok(exe) if exe == client_bin => Ok(()),
            other => Err(format!("/proc/{client_pid}/exe is {other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let go = probe(
        Language::Go,
        collector,
        &[backend.pid(), front.pid(), client_pid],
        |config| config.propagation = pins.config(false, true),
    )
    .await;
    let (status, stdout) = go_common::release_and_wait(client);
    assert!(
        status.success() && stdout.contains(&format!("OK:{CALLS}")),
        "{label}: grpcclient: every call succeeds: {stdout}"
    );

    let probes = [&go];
    let spans = wait_for(
        "every span of the calls (one client span, one front server span, two front client spans and two backend server spans per call)",
        WAIT,
        || async {
            let spans = collector.spans().map_err(|e| e.to_string())?;
            let count =
                |pid: u32, kind: i64| spans.iter().filter(|s| pid_of(s) == pid && s.kind == kind).count();
            let counts = [
                count(client_pid, CLIENT),
                count(front.pid(), SERVER),
                count(front.pid(), CLIENT),
                count(backend.pid(), SERVER),
            ];
            if counts[0] >= CALLS && counts[1] >= CALLS && counts[2] >= 2 * CALLS && counts[3] >= 2 * CALLS {
                Ok(spans)
            } else {
                Err(format!(
                    "client, front server, front client, backend server spans: {counts:?}"
                ))
            }
        },
    )
    .await;
    let spans = match spans {
        Ok(spans) => spans,
        Err(e) => panic!(
            "{label}: {e}\nevery span:{}\ncounters:{}",
            describe(
                &collector
                    .spans()
                    .unwrap_or_default()
                    .iter()
                    .collect::<Vec<_>>()
            ),
            propagation_counts(&probes).await
        ),
    };
    let of = |pid: u32, kind: i64| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| pid_of(s) == pid && s.kind == kind)
            .collect()
    };
    let all: Vec<&Span> = spans.iter().collect();
    let (callers, front_servers) = (of(client_pid, CLIENT), of(front.pid(), SERVER));
    let (front_clients, backend_servers) = (of(front.pid(), CLIENT), of(backend.pid(), SERVER));
    assert_eq!(
        callers.len(),
        CALLS,
        "{label}: one client span per call:{}",
        describe(&all)
    );
    assert_eq!(
        front_servers.len(),
        CALLS,
        "{label}: one front server span per call:{}",
        describe(&all)
    );
    assert_eq!(
        front_clients.len(),
        2 * CALLS,
        "{label}: two backend calls per call:{}",
        describe(&all)
    );
    assert_eq!(
        backend_servers.len(),
        2 * CALLS,
        "{label}: one backend server span per backend call:{}",
        describe(&all)
    );
    // Every server span is the child of the client span that called it, in
    // its trace: exactly one per client span.
    for (clients, servers, hop) in [
        (&callers, &front_servers, "grpcclient -> front"),
        (&front_clients, &backend_servers, "front -> backend"),
    ] {
        for client in clients {
            let children: Vec<&Span> = servers
                .iter()
                .copied()
                .filter(|s| s.parent_span_id == client.span_id)
                .collect();
            assert_eq!(
                children.len(),
                1,
                "{label}, {hop}: exactly one server span is the child of client span {}:{}\ncounters:{}",
                client.span_id,
                describe(&all),
                propagation_counts(&probes).await
            );
            assert_eq!(
                children[0].trace_id,
                client.trace_id,
                "{label}, {hop}: the server span is in its caller's trace:{}",
                describe(&all)
            );
        }
    }
    // So each call is one trace of six spans, rooted at the client's span.
    for caller in &callers {
        assert!(
            caller.parent_span_id.is_empty(),
            "{label}: the client's calls are roots"
        );
        let trace: Vec<&Span> = all
            .iter()
            .copied()
            .filter(|s| s.trace_id == caller.trace_id)
            .collect();
        assert_eq!(
            trace.len(),
            6,
            "{label}: one trace of six spans per call:{}",
            describe(&trace)
        );
    }
    let joined =
        "ferrotel_probe_propagation_server_requests_total{language=\"go\",origin=\"joined\"}";
    wait_metric(
        &go,
        joined,
        (3 * CALLS) as f64,
        &format!("{label}: the Go servers joined every call"),
    )
    .await;
    let metrics = go.metrics().await;
    for (metric, expected) in [
        (joined, 3 * CALLS),
        (
            "ferrotel_probe_propagation_server_requests_total{language=\"go\",origin=\"new_trace\"}",
            0,
        ),
        (
            "ferrotel_probe_propagation_requests_total{language=\"go\",outcome=\"published\"}",
            3 * CALLS,
        ),
    ] {
        assert_eq!(
            Probe::metric_sum(&metrics, metric),
            expected as f64,
            "{label}: {metric}:\n{metrics}"
        );
    }
    go.assert_running();
    drop(go.stop().await);
}
