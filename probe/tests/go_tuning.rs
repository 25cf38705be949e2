//! Every knob of the Go section (`spec.go`, the probe config's `go`) end to
//! end, as root: set it, observe what it changes in the kernel or in the
//! spans. Real Go targets (machine Go), real uprobes, the real collector.

mod go_common;

use std::process::Command;

use ferrotel_e2e::Span;
use go_common::{
    GoApp, Probe, SERVER, TOOLCHAINS, WAIT, apps, collector, get_n, http_client, of_pid,
};

/// `n` unary health checks from `grpcclient` to `server`.
fn grpc_calls(client: &std::path::Path, server: &GoApp, n: usize) {
    let output = Command::new(client)
        .args([
            "-addr",
            &server.addr.to_string(),
            "-calls",
            &format!("ok={n}"),
        ])
        .output()
        .expect("run grpcclient");
    assert!(
        output.status.success(),
        "grpcclient failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn refused_disabled(text: &str) -> bool {
    text.lines()
        .any(|l| l == "ferrotel_probe_attach_refused_total{language=\"go\",reason=\"disabled\"} 1")
}

/// One probe with `go.<knob>: false` on an HTTP-only and a gRPC-only
/// target: the one whose protocol is off is refused as `disabled`, the
/// other is traced; only the other's requests become spans.
async fn switch_case(http: bool, grpc: bool) {
    let label = format!("go.http: {http}, go.grpc: {grpc}");
    let apps = apps(TOOLCHAINS[0]);
    let collector = collector().await;
    let mut http_app = GoApp::start(&apps.bin("httpserver"), &[]);
    let mut grpc_app = GoApp::start(&apps.bin("grpcserver"), &[]);
    let probe = Probe::start_with(
        &collector,
        &[http_app.pid(), grpc_app.pid()],
        &[],
        1,
        |file| {
            file.go.http = http;
            file.go.grpc = grpc;
        },
    )
    .await;
    let text = ferrotel_e2e::wait_for("the refusal of the switched-off target", WAIT, || {
        let metrics = probe.metrics();
        async move {
            let text = metrics.await;
            if refused_disabled(&text) {
                Ok(text)
            } else {
                Err("no disabled refusal yet".to_owned())
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{label}: the switched-off target must be refused: {e}"));
    assert!(
        text.lines()
            .any(|l| l == "ferrotel_probe_attached_processes{language=\"go\"} 1"),
        "{label}: exactly the other target is attached:\n{text}"
    );

    get_n(&http_client(), &http_app.url("/hello"), 4, &[]).await;
    grpc_calls(&apps.bin("grpcclient"), &grpc_app, 3);
    http_app.assert_alive();
    grpc_app.assert_alive();
    let probe_metrics = probe.stop().await;

    let (traced, dark, expected) = if http {
        (&http_app, &grpc_app, 4)
    } else {
        (&grpc_app, &http_app, 3)
    };
    let is_traced = of_pid(traced.pid());
    let spans = collector
        .wait_for_spans(expected, WAIT, |s| is_traced(s) && s.kind == SERVER)
        .await
        .unwrap_or_else(|e| panic!("{label}: spans of the traced target: {e}\n{probe_metrics}"));
    assert_eq!(spans.len(), expected, "{label}: one span per request");
    let is_dark = of_pid(dark.pid());
    let dark_spans: Vec<Span> = collector
        .spans()
        .expect("read spans")
        .into_iter()
        .filter(|s| is_dark(s))
        .collect();
    assert!(
        dark_spans.is_empty(),
        "{label}: the switched-off protocol is not traced: {dark_spans:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_http_false_leaves_http_servers_untraced_and_grpc_traced() {
    switch_case(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_grpc_false_leaves_grpc_servers_untraced_and_http_traced() {
    switch_case(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_ring_buffer_bytes_sizes_the_kernel_ring_and_max_payload_bytes_caps_each_string() {
    let apps = apps(TOOLCHAINS[0]);
    let collector = collector().await;
    let mut server = GoApp::start(&apps.bin("httpserver"), &[]);
    let probe = Probe::start_with(&collector, &[server.pid()], &[], 1, |file| {
        // Neither is the default (4 MiB, 512 B).
        file.go.ring_buffer_bytes = 64 << 10;
        file.go.max_payload_bytes = 64;
    })
    .await;
    let text = probe.metrics().await;
    assert!(
        text.lines()
            .any(|l| l == "ferrotel_probe_ring_buffer_bytes{language=\"go\"} 65536"),
        "the kernel made the ring buffer 64 KiB:\n{text}"
    );

    // 7 + 93 = 100 bytes: less than the event's 127 for a path, more than 64.
    let id = "x".repeat(93);
    let path = format!("/users/{id}");
    get_n(&http_client(), &server.url(&path), 2, &[]).await;
    server.assert_alive();
    let probe_metrics = probe.stop().await;

    let is_server = of_pid(server.pid());
    let spans = collector
        .wait_for_spans(2, WAIT, |s| is_server(s) && s.kind == SERVER)
        .await
        .unwrap_or_else(|e| panic!("server spans: {e}\n{probe_metrics}"));
    assert_eq!(spans.len(), 2, "one span per request");
    for span in &spans {
        assert_eq!(
            span.attr_str("url.path"),
            Some(&path[..64]),
            "maxPayloadBytes: 64 copies the first 64 bytes of the path"
        );
        assert_eq!(
            span.attr_str("http.route"),
            Some("/users/{id}"),
            "shorter strings are whole"
        );
    }
}
