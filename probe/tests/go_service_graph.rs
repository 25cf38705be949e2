//! The service graph of two Go services on one host under one Go probe: a
//! chi front-end whose `/downstream` calls a `net/http` backend. The probe
//! sees both sides of every front → backend request and pairs them by the
//! connection, so each request is counted once on `chiapp → httpserver`
//! (the processes' own names) with both durations, instead of a client span
//! on `chiapp → 127.0.0.1` and a server span on `user → httpserver`.
//!
//! The Go client span learns its connection from the probe on
//! `(*persistConn).roundTrip`, so it pairs with propagation off (the default)
//! and with it on, where the propagation program (sk_msg on the test's own
//! cgroup v2 directory) reports it too; both are tested. Needs root (eBPF,
//! sockops, a bpffs for the pins); fails, does not skip, without it.

mod go_common;
mod prop_common;

use std::time::Duration;

use ferrotel_api::probe_config::Language;
use go_common::Probe;
use prop_common::{PinDir, Service, TestCgroup};

const REQUESTS: usize = 25;

const TOTAL: &str = "traces_service_graph_request_total";
const CLIENT_COUNT: &str = "traces_service_graph_request_client_seconds_count";
const SERVER_COUNT: &str = "traces_service_graph_request_server_seconds_count";

/// The Prometheus sample of one direct edge (standalone: no namespaces).
fn edge(metric: &str, client: &str, server: &str) -> String {
    format!("{metric}{{client=\"{client}\",server=\"{server}\"}}")
}

/// The probe's metrics once every request is observed: waits until the
/// edges count `all_counted` requests, then one pairing window more, and
/// reads again (a span observed twice would show up then). Also returns the
/// service-graph lines, for failure messages.
async fn settled_graph(go: &Probe, all_counted: f64) -> (String, String) {
    let deadline = std::time::Instant::now() + go_common::WAIT;
    let mut metrics = go.metrics().await;
    while Probe::metric_sum(&metrics, &format!("{TOTAL}{{")) < all_counted
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        metrics = go.metrics().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = go.metrics().await;
    let graph = metrics
        .lines()
        .filter(|l| l.starts_with("traces_service_graph"))
        .map(|l| format!("\n  {l}"))
        .collect();
    (metrics, graph)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_and_server_under_one_probe_count_each_request_once_on_their_own_names() {
    pairs_each_request_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_propagation_on_go_client_and_server_still_count_each_request_once() {
    pairs_each_request_once(true).await;
}

async fn pairs_each_request_once(propagation: bool) {
    let label = if propagation {
        "propagation on"
    } else {
        "propagation off"
    };
    let collector = go_common::collector().await;
    let apps = go_common::apps(go_common::TOOLCHAINS[0]);
    let pins = PinDir::new();
    let cgroup = TestCgroup::new("graph");
    let backend = Service::start(
        "Go httpserver (backend)",
        cgroup.command(&apps.bin("httpserver"), &[]),
    );
    let front = Service::start(
        "Go chiapp (front)",
        cgroup.command(&apps.bin("chiapp"), &["-downstream", &backend.url("")]),
    );
    let targets: Vec<(&str, String)> = [backend.pid(), front.pid()]
        .iter()
        .map(|p| ("--pid", p.to_string()))
        .collect();
    let mut go = Probe::launch(Language::Go, &collector.grpc_url(), &targets, |config| {
        if propagation {
            config.propagation = pins.config(false, true)
        }
    });
    go.wait_attached_until("2 processes", |v| v >= 2.0).await;

    let http = go_common::http_client();
    go_common::get_n(&http, &front.url("/downstream"), REQUESTS, &[]).await;

    let (metrics, graph) = settled_graph(&go, (2 * REQUESTS) as f64).await;

    let value = |prefix: String| Probe::metric_sum(&metrics, &prefix);
    let n = REQUESTS as f64;
    assert_eq!(
        value(edge(TOTAL, "chiapp", "httpserver")),
        n,
        "{label}: each front -> backend request counted once on the processes' own names:{graph}"
    );
    assert_eq!(
        (
            value(edge(CLIENT_COUNT, "chiapp", "httpserver")),
            value(edge(SERVER_COUNT, "chiapp", "httpserver")),
        ),
        (n, n),
        "{label}: both durations of every request on that edge:{graph}"
    );
    assert_eq!(
        value(format!(
            "{TOTAL}{{client=\"user\",server=\"chiapp\",connection_type=\"virtual_node\"}}"
        )),
        n,
        "{label}: the test's own (untraced) requests keep the single-span rule:{graph}"
    );
    assert_eq!(
        value(format!("{TOTAL}{{")),
        2.0 * n,
        "{label}: nothing else is counted (no request twice):{graph}"
    );
    for stray in [
        format!("{CLIENT_COUNT}{{client=\"chiapp\",server=\"127.0.0.1\""),
        format!("{SERVER_COUNT}{{client=\"user\",server=\"httpserver\""),
    ] {
        assert_eq!(
            value(stray.clone()),
            0.0,
            "{label}: no single-span leftovers of paired requests ({stray}):{graph}"
        );
    }
    go.assert_running();
    drop(go.stop().await);
}

/// gRPC: a Go gRPC server whose `downstream` service calls a second Go gRPC
/// server twice per call, over one HTTP/2 connection, propagation off. The
/// client's side reads its transport's ends; the server's side its caller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_grpc_client_and_server_under_one_probe_pair_without_propagation() {
    const CALLS: usize = 10;
    let collector = go_common::collector().await;
    let apps = go_common::apps(go_common::TOOLCHAINS[0]);
    // The backend under a name of its own, so that the edge's two ends
    // differ (a standalone probe names a service after its executable).
    let dir = tempfile::tempdir().expect("temp dir");
    let backend_bin = dir.path().join("grpcbackend");
    std::fs::copy(apps.bin("grpcserver"), &backend_bin).expect("copy grpcserver");
    let backend = Service::start("Go grpcbackend", std::process::Command::new(&backend_bin));
    let backend_addr = format!("127.0.0.1:{}", backend.port);
    let mut front_cmd = std::process::Command::new(apps.bin("grpcserver"));
    front_cmd.args(["-downstream", &backend_addr]);
    let front = Service::start("Go grpcserver (front)", front_cmd);
    let targets: Vec<(&str, String)> = [backend.pid(), front.pid()]
        .iter()
        .map(|p| ("--pid", p.to_string()))
        .collect();
    let mut go = Probe::launch(Language::Go, &collector.grpc_url(), &targets, |_| {});
    go.wait_attached_until("2 processes", |v| v >= 2.0).await;

    // The test's client is not traced: its calls are `user → grpcserver`.
    let output = std::process::Command::new(apps.bin("grpcclient"))
        .args([
            "-addr",
            &format!("127.0.0.1:{}", front.port),
            "-calls",
            &format!("downstream={CALLS}"),
        ])
        .output()
        .expect("run grpcclient");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(&format!("OK:{CALLS}")),
        "grpcclient: {stdout}"
    );

    let paired = (2 * CALLS) as f64;
    let all_counted = paired + CALLS as f64;
    let (metrics, graph) = settled_graph(&go, all_counted).await;
    let value = |prefix: String| Probe::metric_sum(&metrics, &prefix);
    assert_eq!(
        (
            value(edge(TOTAL, "grpcserver", "grpcbackend")),
            value(edge(CLIENT_COUNT, "grpcserver", "grpcbackend")),
            value(edge(SERVER_COUNT, "grpcserver", "grpcbackend")),
        ),
        (paired, paired, paired),
        "each front -> backend call counted once, with both durations, on the processes' own names:{graph}"
    );
    assert_eq!(
        value(format!("{TOTAL}{{")),
        all_counted,
        "nothing else is counted but the test's own calls (no call twice):{graph}"
    );
    go.assert_running();
    drop(go.stop().await);
}
