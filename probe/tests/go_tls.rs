//! Go `crypto/tls` under the Go probe, as root: net/http servers serving
//! TLS (`ServeTLS`, what `ListenAndServeTLS` does; HTTP/1.1 and HTTP/2 by
//! ALPN), `http.Client` over HTTPS and gRPC with TLS credentials, built
//! with each Go toolchain of the matrix, against a CA and certificate the
//! test makes. The uprobes are in the binaries only (net/http and grpc,
//! above crypto/tls): every request must give the spans plaintext gives,
//! with `url.scheme` `https` and the TLS version (gRPC: on the server side),
//! children linked and incoming traceparents continued.

mod go_common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use ferrotel_e2e::{Collector, Span};
use go_common::{
    Apps, CLIENT, GoApp, PARENT_ID, Probe, SERVER, TOOLCHAINS, TRACE_ID, TestTls, WAIT, apps,
    assert_children, collector, count_by, of_pid,
};

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// `-tls-cert`/`-tls-key` (serve TLS) and `-tls-ca` (trust the test CA).
fn tls_args(tls: &TestTls) -> Vec<&str> {
    vec![
        "-tls-cert",
        path(&tls.files.cert),
        "-tls-key",
        path(&tls.files.key),
        "-tls-ca",
        path(&tls.files.ca_cert),
    ]
}

fn https(app: &GoApp, path: &str) -> String {
    format!("https://localhost:{}{path}", app.addr.port())
}

/// HTTP spans over TLS 1.3: `url.scheme` (servers) or `url.full`
/// (clients) says https, and the version comes from the connection state.
fn assert_https(what: &str, spans: &[Span]) {
    for span in spans {
        let scheme = span.attr_str("url.scheme").or_else(|| {
            span.attr_str("url.full")
                .and_then(|u| u.split("://").next())
        });
        assert_eq!(scheme, Some("https"), "{what}: {span:#?}");
        assert_eq!(
            (
                span.attr_str("tls.protocol.name"),
                span.attr_str("tls.protocol.version")
            ),
            (Some("tls"), Some("1.3")),
            "{what}: the TLS version of the connection: {span:#?}"
        );
    }
}

/// Runs a test target client to completion once the probe attached to it
/// (the `attached`-th process).
async fn run_client(bin: &Path, args: &[&str], probe: &mut Probe, attached: usize) -> String {
    let mut child = Command::new(bin)
        .args(args)
        .arg("-wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    probe.wait_attached(attached).await;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release the client");
    let output = child.wait_with_output().expect("the client runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} failed: {stdout}",
        bin.display()
    );
    stdout
}

async fn https_case(apps: &Apps, tls: &TestTls) {
    let label = format!("HTTPS, {} ({})", apps.toolchain.name, apps.go_version);
    let collector = collector().await;
    let mut downstream = GoApp::start(&apps.bin("httpserver"), &tls_args(tls));
    let downstream_url = https(&downstream, "");
    let mut front_args = tls_args(tls);
    front_args.extend(["-downstream", &downstream_url]);
    // The front is stripped: its TLS offsets come from the offsets table,
    // the downstream's from its DWARF.
    let mut front = GoApp::start(&apps.bin("httpserver.stripped"), &front_args);
    let client_bin = apps.bin("httpclient");
    let client_glob = client_bin.to_string_lossy().into_owned();
    let mut probe = Probe::start(
        &collector,
        &[front.pid(), downstream.pid()],
        &[&client_glob],
        2,
    )
    .await;

    // HTTP/1.1 over TLS from an untraced client.
    let client = tls.client(front.addr.port()).build().expect("client");
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    for (path, n, headers) in [
        ("/hello", 5, &[][..]),
        ("/users/42", 3, &[][..]),
        ("/downstream", 4, &[][..]),
        ("/hello", 3, &[("traceparent", traceparent.as_str())][..]),
    ] {
        for _ in 0..n {
            let mut request = client.get(https(&front, path));
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(response.status().as_u16(), 200, "{label}: GET {path}");
            let _ = response.bytes().await;
        }
    }
    // HTTP/2 over TLS from a traced Go client.
    let url = https(&front, "/users/7");
    let client_args = [
        "-url",
        url.as_str(),
        "-n",
        "4",
        "-h2",
        "-tls-ca",
        path(&tls.files.ca_cert),
    ];
    let stdout = run_client(&client_bin, &client_args, &mut probe, 3).await;
    assert!(
        stdout.contains("STATUS map[200:4]") && stdout.contains("PROTO map[HTTP/2.0:4]"),
        "{label}: the Go client spoke HTTP/2 over TLS: {stdout}"
    );
    front.assert_alive();
    downstream.assert_alive();
    let probe_metrics = probe.stop().await;

    let is_front = of_pid(front.pid());
    let server = collector
        .wait_for_spans(19, WAIT, |s| is_front(s) && s.kind == SERVER)
        .await
        .unwrap_or_else(|e| panic!("{label}: server spans: {e}\n{probe_metrics}"));
    assert_eq!(
        server.len(),
        19,
        "{label}: exactly one server span per request"
    );
    let paths = count_by(&server, |s| {
        format!(
            "{} {} {}",
            s.attr_str("url.path").unwrap_or("?"),
            s.attr_i64("http.response.status_code").unwrap_or(-1),
            s.attr_str("server.address").unwrap_or("?"),
        )
    });
    assert_eq!(
        paths,
        BTreeMap::from([
            ("/hello 200 localhost".to_owned(), 8),
            ("/users/42 200 localhost".to_owned(), 3),
            ("/users/7 200 localhost".to_owned(), 4),
            ("/downstream 200 localhost".to_owned(), 4),
        ]),
        "{label}: path, status and server.address of every server span"
    );
    assert_https(&format!("{label}: server spans"), &server);
    let continued: Vec<&Span> = server.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    assert_eq!(continued.len(), 3, "{label}: traceparents continued");
    assert!(continued.iter().all(|s| s.parent_span_id == PARENT_ID));

    let all = collector.spans().expect("read spans");
    let calls: Vec<Span> = all
        .iter()
        .filter(|s| is_front(s) && s.kind == CLIENT)
        .cloned()
        .collect();
    let downstream_servers: Vec<Span> = server
        .iter()
        .filter(|s| s.attr_str("url.path") == Some("/downstream"))
        .cloned()
        .collect();
    assert_eq!(calls.len(), 8, "{label}: two HTTPS calls per /downstream");
    assert_children(&label, &calls, &downstream_servers, 2);
    assert_https(&format!("{label}: client calls"), &calls);
    // Each call's connection, read through the *tls.Conn; the front is
    // stripped, so which net.Conn it holds is told by its tlsState.
    for call in &calls {
        assert_eq!(
            (
                call.attr_str("network.peer.address"),
                call.attr_i64("network.peer.port")
            ),
            (
                Some(downstream.addr.ip().to_string().as_str()),
                Some(i64::from(downstream.addr.port()))
            ),
            "{label}: an HTTPS call's peer is its connection's server end"
        );
    }
    let is_downstream = of_pid(downstream.pid());
    let served: Vec<Span> = all
        .iter()
        .filter(|s| is_downstream(s) && s.kind == SERVER)
        .cloned()
        .collect();
    assert_eq!(
        served.len(),
        8,
        "{label}: the downstream served each call once"
    );
    assert_https(&format!("{label}: downstream"), &served);
    let go_client: Vec<Span> = all
        .iter()
        .filter(|s| s.kind == CLIENT && !is_front(s) && !is_downstream(s))
        .cloned()
        .collect();
    assert_eq!(
        go_client.len(),
        4,
        "{label}: the Go client's HTTP/2 requests"
    );
    assert_https(&format!("{label}: Go HTTP/2 client"), &go_client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_servers_and_clients_give_the_spans_of_plaintext_with_https_on_every_go_version() {
    let tls = TestTls::new();
    for toolchain in TOOLCHAINS {
        https_case(&apps(toolchain), &tls).await;
    }
}

/// Calls a cumulative histogram counted: the newest point of each series
/// (resource and attributes), summed, once the total reached `want` (the
/// caller asserts it is exactly that).
async fn histogram_calls(collector: &Collector, name: &str, want: u64) -> u64 {
    ferrotel_e2e::wait_for(&format!("{want} calls in {name}"), WAIT, || {
        let points = collector.metrics().unwrap_or_default();
        async move {
            let mut newest: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for p in points.iter().filter(|p| p.name == name) {
                let series = format!("{:?} {:?}", p.resource, p.attributes);
                let (time, count) = (p.time_ns, p.count.unwrap_or(0));
                let entry = newest.entry(series).or_insert((time, count));
                if time >= entry.0 {
                    *entry = (time, count);
                }
            }
            let total: u64 = newest.values().map(|(_, count)| count).sum();
            if total >= want {
                Ok(total)
            } else {
                Err(format!("{total} so far"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn grpc_tls_case(apps: &Apps, tls: &TestTls) {
    let label = format!(
        "gRPC over TLS, {} ({})",
        apps.toolchain.name, apps.go_version
    );
    let collector = collector().await;
    let backend = GoApp::start(&apps.bin("grpcserver"), &tls_args(tls));
    let backend_addr = format!("localhost:{}", backend.addr.port());
    let mut front_args = tls_args(tls);
    front_args.extend(["-downstream", &backend_addr]);
    let front = GoApp::start(&apps.bin("grpcserver"), &front_args);
    let client_bin = apps.bin("grpcclient");
    let client_glob = client_bin.to_string_lossy().into_owned();
    let mut probe = Probe::start(
        &collector,
        &[front.pid(), backend.pid()],
        &[&client_glob],
        2,
    )
    .await;
    let front_addr = format!("localhost:{}", front.addr.port());
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let stdout = run_client(
        &client_bin,
        &[
            "-addr",
            &front_addr,
            "-tls-ca",
            path(&tls.files.ca_cert),
            "-calls",
            "ok=4,notfound=2,downstream=2",
            "-traceparent",
            &traceparent,
            "-traced",
            "2",
        ],
        &mut probe,
        3,
    )
    .await;
    assert!(
        stdout.contains("NotFound:2") && stdout.contains("OK:6"),
        "{label}: the client's calls: {stdout}"
    );
    let probe_metrics = probe.stop().await;

    let is_front = of_pid(front.pid());
    let is_backend = of_pid(backend.pid());
    let spans = collector
        .wait_for_spans(8 + 8 + 4 + 4, WAIT, |s| {
            s.attr_str("rpc.system") == Some("grpc")
        })
        .await
        .unwrap_or_else(|e| panic!("{label}: spans: {e}\n{probe_metrics}"));
    let of = |kind: i64, who: &dyn Fn(&Span) -> bool| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| s.kind == kind && who(s))
            .cloned()
            .collect()
    };
    let served = of(SERVER, &is_front);
    let called = of(CLIENT, &|s: &Span| !is_front(s) && !is_backend(s));
    let downstream_calls = of(CLIENT, &is_front);
    let backend_served = of(SERVER, &is_backend);
    assert_eq!(
        (
            served.len(),
            called.len(),
            downstream_calls.len(),
            backend_served.len()
        ),
        (8, 8, 4, 4),
        "{label}: one span per call on each side: {spans:#?}"
    );
    let codes = count_by(&served, |s| {
        s.attr_i64("rpc.grpc.status_code")
            .map_or("none".into(), |c| c.to_string())
    });
    assert_eq!(
        codes,
        BTreeMap::from([("0".to_owned(), 6), ("5".to_owned(), 2)]),
        "{label}: status codes of the served calls"
    );
    let continued: Vec<&Span> = served.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    assert_eq!(
        continued.len(),
        2,
        "{label}: traceparent metadata continued over TLS"
    );
    assert!(continued.iter().all(|s| s.parent_span_id == PARENT_ID));
    let downstream_servers: Vec<Span> = served
        .iter()
        .filter(|s| {
            downstream_calls
                .iter()
                .any(|c| c.parent_span_id == s.span_id)
        })
        .cloned()
        .collect();
    assert_eq!(
        downstream_servers.len(),
        2,
        "{label}: the two downstream calls' parents"
    );
    assert_children(&label, &downstream_calls, &downstream_servers, 2);
    // The server side reads the version from the transport's TLS AuthInfo.
    // Client calls are not marked: the connection is chosen below Invoke.
    for span in served.iter().chain(&backend_served) {
        assert_eq!(
            (
                span.attr_str("tls.protocol.name"),
                span.attr_str("tls.protocol.version")
            ),
            (Some("tls"), Some("1.3")),
            "{label}: the TLS version of the served call's connection: {span:#?}"
        );
    }
    // The metrics of plain text: every call counted once on each side.
    assert_eq!(
        histogram_calls(&collector, "rpc.server.duration", 12).await,
        12,
        "{label}: the front's 8 and the backend's 4 served calls"
    );
    assert_eq!(
        histogram_calls(&collector, "rpc.client.duration", 12).await,
        12,
        "{label}: the client's 8 and the front's 4 downstream calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_with_tls_credentials_gives_the_spans_of_plaintext_on_every_go_version() {
    let tls = TestTls::new();
    for toolchain in TOOLCHAINS {
        grpc_tls_case(&apps(toolchain), &tls).await;
    }
}
