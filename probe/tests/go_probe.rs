//! The Go front-end end to end, as root: real Go test targets built with
//! each Go toolchain of the matrix, real uprobes (entry + every RET), the
//! whole probe runtime and the real OpenTelemetry Collector. Every request
//! must become exactly one span with the right attributes; client calls made
//! while handling a request must be its children; an incoming traceparent
//! must be continued; the targets must survive the probe.

mod go_common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrotel_e2e::Span;
use go_common::{
    Apps, CLIENT, GoApp, PARENT_ID, Probe, SERVER, TOOLCHAINS, TRACE_ID, WAIT, apps,
    assert_children, collector, count_by, get_n, http_client, of_pid,
};

fn duration(span: &Span) -> Duration {
    Duration::from_nanos(span.end_ns.saturating_sub(span.start_ns))
}

/// Asserts the exact count of every "METHOD path status" among `spans`.
fn assert_method_path_status(label: &str, spans: &[Span], expected: &[(&str, usize)]) {
    let got = count_by(spans, |s| {
        format!(
            "{} {} {}",
            s.attr_str("http.request.method").unwrap_or("?"),
            s.attr_str("url.path").unwrap_or("?"),
            s.attr_i64("http.response.status_code").unwrap_or(-1)
        )
    });
    let expected: BTreeMap<String, usize> = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    assert_eq!(
        got, expected,
        "{label}: method, path and status of every server span"
    );
}

async fn net_http_case(apps: &Apps) {
    let label = format!("{} ({})", apps.toolchain.name, apps.go_version);
    let collector = collector().await;
    let mut downstream = GoApp::start(&apps.bin("httpserver"), &[]);
    let downstream_url = downstream.url("");
    let mut front = GoApp::start(&apps.bin("httpserver"), &["-downstream", &downstream_url]);
    let probe = Probe::start(&collector, &[front.pid(), downstream.pid()], &[], 2).await;

    let client = http_client();
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let mut longest = Duration::ZERO;
    longest = longest.max(get_n(&client, &front.url("/hello"), 10, &[]).await);
    longest = longest.max(get_n(&client, &front.url("/status/503"), 5, &[]).await);
    longest = longest.max(get_n(&client, &front.url("/users/42"), 5, &[]).await);
    longest = longest.max(get_n(&client, &front.url("/downstream"), 4, &[]).await);
    // Deep recursion copies the goroutine stack while the request is in
    // flight: the case that kills Go programs under uretprobes.
    longest = longest.max(get_n(&client, &front.url("/deep?depth=5000"), 5, &[]).await);
    longest = longest.max(
        get_n(
            &client,
            &front.url("/hello"),
            3,
            &[("traceparent", &traceparent)],
        )
        .await,
    );
    // The context among as many headers as a browser sends: the header map
    // grows past one group (swiss maps) or bucket (older Go), and the
    // kernel's search must look in every one of them.
    let mut headers: Vec<(String, String)> = (0..14)
        .map(|i| (format!("x-filler-{i}"), format!("value-{i}")))
        .collect();
    headers.push(("traceparent".into(), traceparent.clone()));
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    longest = longest.max(get_n(&client, &front.url("/hello"), 3, &headers).await);
    front.assert_alive();
    downstream.assert_alive();
    let probe_metrics = probe.stop().await;

    let is_front = of_pid(front.pid());
    let server = collector
        .wait_for_spans(35, WAIT, |s| is_front(s) && s.kind == SERVER)
        .await
        .unwrap_or_else(|e| {
            panic!("{label}: server spans of the front target: {e}\n{probe_metrics}")
        });
    assert_eq!(
        server.len(),
        35,
        "{label}: exactly one server span per request"
    );
    assert_method_path_status(
        &label,
        &server,
        &[
            ("GET /hello 200", 16),
            ("GET /status/503 503", 5),
            ("GET /users/42 200", 5),
            ("GET /downstream 200", 4),
            ("GET /deep 200", 5),
        ],
    );
    for span in &server {
        assert_eq!(
            span.attr_str("client.address"),
            Some("127.0.0.1"),
            "{label}: client.address from Request.RemoteAddr"
        );
        assert!(
            span.attr_i64("client.port").is_some_and(|p| p > 0),
            "{label}: client.port from Request.RemoteAddr"
        );
    }
    for span in server
        .iter()
        .filter(|s| s.attr_str("url.path") == Some("/users/42"))
    {
        assert_eq!(
            span.attr_str("http.route"),
            Some("/users/{id}"),
            "{label}: route from the ServeMux pattern"
        );
    }
    for span in &server {
        assert!(
            span.end_ns > span.start_ns,
            "{label}: span {} has a positive duration",
            span.span_id
        );
        assert!(
            duration(span) <= longest,
            "{label}: server span {:?} longer than the longest client round trip {longest:?}",
            duration(span)
        );
    }
    let continued: Vec<&Span> = server.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    assert_eq!(
        continued.len(),
        6,
        "{label}: the 6 requests with a traceparent (3 among 14 other headers) continue its trace"
    );
    assert!(
        continued.iter().all(|s| s.parent_span_id == PARENT_ID),
        "{label}: their parent is the caller's span"
    );

    let clients = collector.spans().expect("read spans");
    let clients: Vec<Span> = clients
        .into_iter()
        .filter(|s| is_front(s) && s.kind == CLIENT)
        .collect();
    assert_eq!(
        clients.len(),
        8,
        "{label}: two client calls per /downstream request"
    );
    let downstream_servers: Vec<Span> = server
        .iter()
        .filter(|s| s.attr_str("url.path") == Some("/downstream"))
        .cloned()
        .collect();
    // One call from the handler's goroutine, one from a grandchild goroutine.
    assert_children(&label, &clients, &downstream_servers, 2);
    let client_paths = count_by(&clients, |s| {
        format!(
            "{} {}",
            s.attr_str("url.path")
                .or(s.attr_str("url.full"))
                .unwrap_or("?"),
            s.attr_i64("http.response.status_code").unwrap_or(-1)
        )
    });
    assert_eq!(client_paths.values().sum::<usize>(), 8);
    assert!(
        client_paths.keys().all(|k| k.ends_with(" 200")),
        "{label}: client spans carry the response status: {client_paths:?}"
    );
    // The connection each request went out on, read from the
    // *persistConn: its server end is the downstream's listener.
    let downstream_port = downstream_url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<i64>().ok())
        .expect("the downstream URL ends in its port");
    for span in &clients {
        assert_eq!(
            (
                span.attr_str("network.peer.address"),
                span.attr_i64("network.peer.port")
            ),
            (Some("127.0.0.1"), Some(downstream_port)),
            "{label}: a client span's peer is the connection's server end"
        );
    }

    let is_downstream = of_pid(downstream.pid());
    let downstream_spans: Vec<Span> = collector
        .spans()
        .expect("read spans")
        .into_iter()
        .filter(|s| is_downstream(s) && s.kind == SERVER)
        .collect();
    assert_eq!(
        downstream_spans.len(),
        8,
        "{label}: the downstream target served 8 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net_http_requests_become_exact_spans_with_children_and_continued_traces_on_every_go_version()
 {
    for toolchain in TOOLCHAINS {
        net_http_case(&apps(toolchain)).await;
    }
}

async fn chi_case(apps: &Apps) {
    let label = format!("chi, {} ({})", apps.toolchain.name, apps.go_version);
    let collector = collector().await;
    let downstream = GoApp::start(&apps.bin("httpserver"), &[]);
    let mut chi = GoApp::start(&apps.bin("chiapp"), &["-downstream", &downstream.url("")]);
    let probe = Probe::start(&collector, &[chi.pid()], &[], 1).await;
    let client = http_client();
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let mut longest = get_n(&client, &chi.url("/hello"), 5, &[]).await;
    // Only the /users/9 requests carry a caller's trace context.
    longest = longest.max(
        get_n(
            &client,
            &chi.url("/users/9"),
            5,
            &[("traceparent", &traceparent)],
        )
        .await,
    );
    longest = longest.max(get_n(&client, &chi.url("/missing"), 2, &[]).await);
    longest = longest.max(get_n(&client, &chi.url("/downstream"), 3, &[]).await);
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let status = client
            .post(chi.url("/users"))
            .send()
            .await
            .expect("POST /users")
            .status();
        longest = longest.max(started.elapsed());
        assert_eq!(status.as_u16(), 201);
    }
    chi.assert_alive();
    let probe_metrics = probe.stop().await;

    let is_chi = of_pid(chi.pid());
    let server = collector
        .wait_for_spans(18, WAIT, |s| is_chi(s) && s.kind == SERVER)
        .await
        .unwrap_or_else(|e| panic!("{label}: chi server spans: {e}\n{probe_metrics}"));
    assert_eq!(server.len(), 18, "{label}: one span per request");
    assert_method_path_status(
        &label,
        &server,
        &[
            ("GET /hello 200", 5),
            ("GET /users/9 200", 5),
            ("GET /missing 404", 2),
            ("GET /downstream 200", 3),
            ("POST /users 201", 3),
        ],
    );
    assert!(
        server.iter().all(|s| duration(s) <= longest),
        "{label}: durations within client bounds"
    );
    let (continued, fresh): (Vec<&Span>, Vec<&Span>) =
        server.iter().partition(|s| s.trace_id == TRACE_ID);
    assert!(
        continued.len() == 5
            && continued.iter().all(
                |s| s.attr_str("url.path") == Some("/users/9") && s.parent_span_id == PARENT_ID
            ),
        "{label}: the 5 requests with a traceparent continue its trace under the caller's span: {continued:?}"
    );
    assert!(
        fresh.iter().all(|s| s.parent_span_id.is_empty()),
        "{label}: requests without a traceparent start their own traces"
    );
    let clients: Vec<Span> = collector
        .spans()
        .expect("spans")
        .into_iter()
        .filter(|s| is_chi(s) && s.kind == CLIENT)
        .collect();
    let parents: Vec<Span> = server
        .iter()
        .filter(|s| s.attr_str("url.path") == Some("/downstream"))
        .cloned()
        .collect();
    assert_eq!(clients.len(), 3, "{label}: one client call per /downstream");
    assert_children(&label, &clients, &parents, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chi_routes_become_exact_server_spans_on_every_go_version() {
    for toolchain in TOOLCHAINS {
        chi_case(&apps(toolchain)).await;
    }
}

async fn grpc_case(apps: &Apps) {
    let label = format!("gRPC, {} ({})", apps.toolchain.name, apps.go_version);
    let collector = collector().await;
    let mut backend = GoApp::start(&apps.bin("grpcserver"), &[]);
    let backend_addr = backend.addr.to_string();
    let mut front = GoApp::start(&apps.bin("grpcserver"), &["-downstream", &backend_addr]);
    let client_bin = apps.bin("grpcclient");
    let client_glob = client_bin.to_string_lossy().into_owned();
    let mut probe = Probe::start(
        &collector,
        &[front.pid(), backend.pid()],
        &[&client_glob],
        2,
    )
    .await;

    let client = Command::new(&client_bin)
        .args([
            "-addr",
            &front.addr.to_string(),
            "-wait",
            "-calls",
            "ok=6,notfound=3,downstream=2",
            "-watch",
            "3",
            "-traceparent",
            &format!("00-{TRACE_ID}-{PARENT_ID}-01"),
            "-traced",
            "3",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start grpcclient");
    let client_pid = client.id();
    probe.wait_attached(3).await;
    let started = std::time::Instant::now();
    let (status, stdout) = go_common::release_and_wait(client);
    let longest = started.elapsed();
    assert!(status.success(), "{label}: grpcclient failed: {stdout}");
    assert!(
        stdout.contains("NotFound:3") && stdout.contains("OK:8"),
        "{label}: client saw {stdout}"
    );
    // The test server does not implement Watch: each stream ends Unimplemented.
    assert!(
        stdout.contains("WATCH map[Unimplemented:3]"),
        "{label}: client streams saw {stdout}"
    );
    front.assert_alive();
    backend.assert_alive();
    let probe_metrics = probe.stop().await;

    let is_front = of_pid(front.pid());
    let server_all = collector
        .wait_for_spans(14, WAIT, |s| is_front(s) && s.kind == SERVER)
        .await
        .unwrap_or_else(|e| panic!("{label}: gRPC server spans: {e}\n{probe_metrics}"));
    assert_eq!(
        server_all.len(),
        14,
        "{label}: one server span per call (11 unary, 3 streams)"
    );
    let (server, watch_server): (Vec<Span>, Vec<Span>) = server_all
        .into_iter()
        .partition(|s| s.attr_str("rpc.method") != Some("Watch"));
    assert_eq!(watch_server.len(), 3, "{label}: one server span per stream");
    for span in &watch_server {
        assert_eq!(
            span.attr_i64("rpc.grpc.status_code"),
            Some(12),
            "{label}: an unimplemented stream is UNIMPLEMENTED on the server"
        );
    }
    for span in &server {
        assert_eq!(span.attr_str("rpc.system"), Some("grpc"), "{label}");
        assert_eq!(
            span.attr_str("rpc.service"),
            Some("grpc.health.v1.Health"),
            "{label}"
        );
        assert_eq!(span.attr_str("rpc.method"), Some("Check"), "{label}");
        assert!(
            duration(span) <= longest,
            "{label}: server span within the client's run"
        );
    }
    // The first 3 calls ("ok") sent a traceparent in their metadata.
    let (continued, fresh): (Vec<&Span>, Vec<&Span>) =
        server.iter().partition(|s| s.trace_id == TRACE_ID);
    assert_eq!(
        continued.len(),
        3,
        "{label}: the 3 calls with traceparent metadata continue its trace"
    );
    for span in &continued {
        assert_eq!(
            span.parent_span_id, PARENT_ID,
            "{label}: a continued server span's parent is the caller's span"
        );
        assert_eq!(
            span.attr_i64("rpc.grpc.status_code"),
            Some(0),
            "{label}: the traced calls are the first (ok) ones"
        );
    }
    for span in &fresh {
        assert!(
            span.parent_span_id.is_empty(),
            "{label}: a call without traceparent starts a trace, but {} has parent {}",
            span.span_id,
            span.parent_span_id
        );
    }
    let fresh_traces: std::collections::BTreeSet<&str> =
        fresh.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(
        fresh_traces.len(),
        fresh.len(),
        "{label}: every call without traceparent has its own trace"
    );
    let codes = count_by(&server, |s| {
        s.attr_i64("rpc.grpc.status_code")
            .map_or("none".into(), |c| c.to_string())
    });
    assert_eq!(
        codes,
        [("0".to_owned(), 8), ("5".to_owned(), 3)].into(),
        "{label}: gRPC status codes"
    );

    let all = collector.spans().expect("spans");
    let is_client = of_pid(client_pid);
    let (stream_spans, client_spans): (Vec<&Span>, Vec<&Span>) = all
        .iter()
        .filter(|s| is_client(s) && s.kind == CLIENT)
        .partition(|s| s.attr_str("rpc.method") == Some("Watch"));
    assert_eq!(
        stream_spans.len(),
        3,
        "{label}: one client span per stream (NewStream .. finish)"
    );
    for span in &stream_spans {
        assert_eq!(
            span.attr_str("rpc.service"),
            Some("grpc.health.v1.Health"),
            "{label}: stream service"
        );
        assert_eq!(
            span.attr_i64("rpc.grpc.status_code"),
            Some(12),
            "{label}: the stream's code comes from the error it ended with"
        );
        assert!(
            duration(span) <= longest,
            "{label}: stream span within the client's run"
        );
    }
    assert_eq!(
        client_spans.len(),
        11,
        "{label}: one client span per Invoke"
    );
    let client_codes = count_by(
        &client_spans
            .iter()
            .map(|s| (*s).clone())
            .collect::<Vec<_>>(),
        |s| {
            s.attr_i64("rpc.grpc.status_code")
                .map_or("none".into(), |c| c.to_string())
        },
    );
    assert_eq!(
        client_codes,
        [("0".to_owned(), 8), ("5".to_owned(), 3)].into(),
        "{label}: client-side codes"
    );

    let nested: Vec<Span> = all
        .iter()
        .filter(|s| is_front(s) && s.kind == CLIENT)
        .cloned()
        .collect();
    // The "downstream" calls are the 2 server spans with code 0 that have children.
    let parents: Vec<Span> = server
        .iter()
        .filter(|s| nested.iter().any(|c| c.parent_span_id == s.span_id))
        .cloned()
        .collect();
    assert_eq!(
        nested.len(),
        4,
        "{label}: two backend calls per downstream call"
    );
    assert_eq!(
        parents.len(),
        2,
        "{label}: both downstream calls parent their backend calls"
    );
    assert_children(&label, &nested, &parents, 2);
    let is_backend = of_pid(backend.pid());
    assert_eq!(
        all.iter()
            .filter(|s| is_backend(s) && s.kind == SERVER)
            .count(),
        4,
        "{label}: the backend served 4 calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_become_exact_server_and_client_spans_with_codes_on_every_go_version() {
    for toolchain in TOOLCHAINS {
        grpc_case(&apps(toolchain)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_binaries_are_traced_through_the_offsets_table_on_every_go_version() {
    for toolchain in TOOLCHAINS {
        let apps = apps(toolchain);
        let label = format!("stripped, {} ({})", apps.toolchain.name, apps.go_version);
        let collector = collector().await;
        let mut server = GoApp::start(&apps.bin("httpserver.stripped"), &[]);
        let probe = Probe::start(&collector, &[server.pid()], &[], 1).await;
        let client = http_client();
        get_n(&client, &server.url("/hello"), 5, &[]).await;
        get_n(&client, &server.url("/status/404"), 3, &[]).await;
        server.assert_alive();
        let probe_metrics = probe.stop().await;
        let is_server = of_pid(server.pid());
        let spans = collector
            .wait_for_spans(8, WAIT, |s| is_server(s) && s.kind == SERVER)
            .await
            .unwrap_or_else(|e| panic!("{label}: server spans: {e}\n{probe_metrics}"));
        assert_eq!(spans.len(), 8, "{label}: one span per request");
        let by = count_by(&spans, |s| {
            format!(
                "{} {}",
                s.attr_str("url.path").unwrap_or("?"),
                s.attr_i64("http.response.status_code").unwrap_or(-1)
            )
        });
        assert_eq!(
            by,
            [
                ("/hello 200".to_owned(), 5),
                ("/status/404 404".to_owned(), 3)
            ]
            .into(),
            "{label}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_replaced_on_disk_while_running_is_probed_with_its_own_offsets() {
    let apps = apps(TOOLCHAINS[0]);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("service");
    std::fs::copy(apps.bin("httpserver"), &path).expect("copy httpserver");
    let mut server = GoApp::start(&path, &[]);
    // Replace the file the way a deploy does: a new inode renamed over it,
    // with a different program (other functions, other layout).
    let staged = dir.path().join("service.new");
    std::fs::copy(apps.bin("grpcserver"), &staged).expect("copy grpcserver");
    std::fs::rename(&staged, &path).expect("replace the executable");

    let running = ferrotel_probe::go::binary::GoBinary::analyze(&std::path::PathBuf::from(
        format!("/proc/{}/exe", server.pid()),
    ))
    .expect("analyse the running (deleted) executable");
    let on_disk =
        ferrotel_probe::go::binary::GoBinary::analyze(&path).expect("analyse the new file");
    assert_ne!(
        running.key, on_disk.key,
        "the replaced binary must have another cache key (inode, build id)"
    );
    assert!(
        running
            .sites
            .contains_key(ferrotel_probe::go::binary::symbols::HTTP_SERVER),
        "the running binary is the HTTP server"
    );

    let collector = collector().await;
    let probe = Probe::start(&collector, &[server.pid()], &[], 1).await;
    let client = http_client();
    get_n(&client, &server.url("/hello"), 4, &[]).await;
    get_n(&client, &server.url("/users/3"), 2, &[]).await;
    server.assert_alive();
    let probe_metrics = probe.stop().await;
    let is_server = of_pid(server.pid());
    let spans = collector
        .wait_for_spans(6, WAIT, |s| is_server(s) && s.kind == SERVER)
        .await
        .unwrap_or_else(|e| panic!("replaced binary: server spans: {e}\n{probe_metrics}"));
    assert_eq!(
        spans.len(),
        6,
        "one span per request of the replaced binary"
    );
    let routes = count_by(&spans, |s| {
        s.attr_str("http.route").unwrap_or("none").to_owned()
    });
    assert_eq!(
        routes.get("/users/{id}"),
        Some(&2),
        "ServeMux patterns read with the running binary's offsets: {routes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_cannot_be_probed_is_refused_with_a_reason_metric() {
    let collector = collector().await;
    let mut sleeper = Command::new("sleep")
        .arg("120")
        .spawn()
        .expect("spawn a non-Go process");
    let probe = Probe::start(&collector, &[sleeper.id()], &[], 0).await;
    let line = "ferrotel_probe_attach_refused_total{language=\"go\",reason=\"not_go\"} 1";
    let text = ferrotel_e2e::wait_for("the refusal metric", WAIT, || {
        let metrics = probe.metrics();
        async move {
            let text = metrics.await;
            if text.lines().any(|l| l == line) {
                Ok(text)
            } else {
                Err(format!("no {line:?} yet"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("a non-Go process must be refused and counted: {e}"));
    assert!(
        text.lines()
            .any(|l| l == "ferrotel_probe_attached_processes{language=\"go\"} 0"),
        "nothing attached:\n{text}"
    );
    probe.stop().await;
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
