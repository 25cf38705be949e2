//! Golden output of every command's rendering, from fixed inputs: the
//! probes' real exposition format (scrapes differenced into a window),
//! status reports and tap spans. Pure logic; the end-to-end tests check the
//! numbers against real traffic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferrotel_api::probe_endpoints::TapSpan;
use ferrotel_cli::edges::{self, Peers};
use ferrotel_cli::output::{Format, Style};
use ferrotel_cli::promtext;
use ferrotel_cli::red::{GroupBy, Scope, SortBy};
use ferrotel_cli::resources;
use ferrotel_cli::source::{self, Scrape, Wants, Window};
use ferrotel_cli::stat::{self, StatFrame};
use ferrotel_cli::status::{
    self, CollectorReport, ConditionReport, InstrumentationReport, LanguageReport, OperatorReport,
    ProbeMetrics, ProbeReport, StatusReport,
};
use ferrotel_cli::tap;
use k8s_openapi::api::core::v1::{Pod, Service};

fn scrape(text: &str, at: Instant) -> Scrape {
    let (samples, errors) = promtext::parse(text);
    assert!(errors.is_empty(), "fixture parses: {errors:?}");
    Scrape {
        at,
        samples,
        failures: vec![],
        answered: 1,
    }
}

/// A window of `seconds` between two scrapes of the probes' text.
fn window(before: &str, after: &str, seconds: u64, wants: Wants<'_>) -> Window {
    let t0 = Instant::now();
    source::between(
        &scrape(before, t0),
        &scrape(after, t0 + Duration::from_secs(seconds)),
        wants,
    )
}

/// Cumulative buckets of the probes' HTTP bounds (seconds), from
/// per-bucket counts.
fn http_series(labels: &str, counts: &[(f64, u64)], sum: f64) -> String {
    let mut out = String::new();
    let mut cumulative = 0;
    for (le, n) in counts {
        cumulative += n;
        let le = if le.is_infinite() {
            "+Inf".to_owned()
        } else {
            le.to_string()
        };
        out.push_str(&format!(
            "http_server_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}\n"
        ));
    }
    out.push_str(&format!(
        "http_server_request_duration_seconds_sum{{{labels}}} {sum}\nhttp_server_request_duration_seconds_count{{{labels}}} {cumulative}\n"
    ));
    out
}

const WEB: &str = r#"http_request_method="GET",http_route="/items/{id}",k8s_namespace_name="shop",k8s_pod_name="web-7d4b9c-x2x9z",service_name="web""#;
const WEB_ERR: &str = r#"error_type="500",http_request_method="GET",http_route="/items/{id}",k8s_namespace_name="shop",k8s_pod_name="web-7d4b9c-x2x9z",service_name="web""#;
const WEB_HEALTH: &str = r#"http_request_method="GET",http_route="/healthz",k8s_namespace_name="shop",k8s_pod_name="web-7d4b9c-q8w2e",service_name="web""#;
const API: &str = r#"http_request_method="POST",http_route="/orders",k8s_namespace_name="shop",k8s_pod_name="api-0",service_name="api""#;

fn red_window() -> Window {
    let inf = f64::INFINITY;
    let before = [
        http_series(WEB, &[(0.005, 10), (0.01, 5), (0.025, 0), (inf, 0)], 0.1),
        http_series(
            WEB_ERR,
            &[(0.005, 0), (0.01, 0), (0.025, 1), (inf, 0)],
            0.02,
        ),
        http_series(API, &[(0.005, 0), (0.01, 0), (0.025, 0), (inf, 3)], 0.3),
    ]
    .concat();
    let after = [
        http_series(WEB, &[(0.005, 100), (0.01, 65), (0.025, 30), (inf, 0)], 1.5),
        http_series(
            WEB_ERR,
            &[(0.005, 0), (0.01, 0), (0.025, 6), (inf, 0)],
            0.12,
        ),
        http_series(
            WEB_HEALTH,
            &[(0.005, 40), (0.01, 0), (0.025, 0), (inf, 0)],
            0.04,
        ),
        http_series(API, &[(0.005, 0), (0.01, 0), (0.025, 0), (inf, 3)], 0.3),
    ]
    .concat();
    window(&before, &after, 10, ferrotel_cli::red::wants())
}

fn shop_scope() -> Scope {
    Scope {
        namespace: Some("shop".into()),
        workloads: [
            (
                ("shop".into(), "web-7d4b9c-x2x9z".into()),
                "deploy/web".into(),
            ),
            (
                ("shop".into(), "web-7d4b9c-q8w2e".into()),
                "deploy/web".into(),
            ),
            (("shop".into(), "api-0".into()), "sts/api".into()),
        ]
        .into(),
        ..Scope::default()
    }
}

#[test]
fn stat_by_workload_counts_the_window_only_and_colors_nothing_off_a_terminal() {
    let frame = StatFrame::new(&red_window(), GroupBy::Workloads, &shop_scope());
    let web = &frame.rows[0];
    assert_eq!(web.workload.as_deref(), Some("deploy/web"));
    // (100-10)+(65-5)+(30-0) ok + (6-1) failed + 40 health = 225 in 10 s.
    assert_eq!(web.red.requests, 225.0);
    assert_eq!(web.red.failures, 5.0);
    assert_eq!(web.total_requests, Some(241.0));
    let idle = &frame.rows[1];
    assert_eq!(idle.workload.as_deref(), Some("sts/api"));
    assert_eq!(idle.red.requests, 0.0, "no request in the window");
    insta::assert_snapshot!(
        "stat_workloads",
        stat::render(&frame, Format::Table, &Style::plain())
    );
    insta::assert_snapshot!(
        "stat_workloads_wide",
        stat::render(&frame, Format::Wide, &Style::plain())
    );
}

#[test]
fn stat_by_route_and_top_sorted_by_failures() {
    let mut frame = StatFrame::new(&red_window(), GroupBy::Routes, &shop_scope());
    insta::assert_snapshot!(
        "stat_routes",
        stat::render(&frame, Format::Table, &Style::plain())
    );
    ferrotel_cli::red::sort(&mut frame.rows, SortBy::Errors);
    assert_eq!(frame.rows[0].route.as_deref(), Some("/items/{id}"));
    insta::assert_snapshot!(
        "top_routes",
        format!(
            "{}\n{}",
            stat::top_header(&frame, &shop_scope(), SortBy::Errors, &Style::plain()),
            stat::render(&frame, Format::Table, &Style::plain())
        )
    );
}

#[test]
fn stat_json_carries_window_and_total_counts() {
    let frame = StatFrame::new(&red_window(), GroupBy::Pods, &shop_scope());
    insta::assert_snapshot!(
        "stat_pods_json",
        stat::render(&frame, Format::Json, &Style::plain())
    );
}

#[test]
fn an_empty_window_says_so() {
    let frame = StatFrame::new(
        &window("", "", 5, ferrotel_cli::red::wants()),
        GroupBy::Workloads,
        &shop_scope(),
    );
    assert_eq!(
        stat::render(&frame, Format::Table, &Style::plain()),
        "No requests seen in the last 5s by the probes.\n"
    );
}

#[test]
fn edges_without_a_service_graph_or_client_spans_name_no_source() {
    // Probes that export server spans only (and no service graph yet).
    let server = http_series(
        r#"k8s_namespace_name="shop",k8s_pod_name="web-1",service_name="web",http_request_method="GET",http_route="/",http_response_status_code="200""#,
        &[(0.005, 3), (f64::INFINITY, 0)],
        0.01,
    );
    let frame = edges::edges(
        &window(&server, &server, 5, edges::wants()),
        &shop_scope(),
        &Peers::default(),
    );
    assert_eq!(frame.source, edges::EdgeSource::None);
    assert!(frame.edges.is_empty());
    let json: serde_json::Value =
        serde_json::from_str(&edges::render(&frame, Format::Json, &Style::plain()))
            .expect("edges -o json is JSON");
    assert_eq!(json["source"], "none", "{json:#}");
    assert_eq!(
        edges::render(&frame, Format::Table, &Style::plain()),
        "No calls seen in the last 5s (the probes read export neither a service graph nor client spans yet).\n"
    );
    // A service graph with no call in the window is still the source.
    let graph = r#"traces_service_graph_request_total{client="frontend",client_service_namespace="shop",server="web",server_service_namespace="shop"} 7
"#;
    let frame = edges::edges(
        &window(graph, graph, 5, edges::wants()),
        &shop_scope(),
        &Peers::default(),
    );
    assert_eq!(frame.source, edges::EdgeSource::ServiceGraph);
    assert!(frame.edges.is_empty());
}

#[test]
fn edges_from_the_service_graph_take_server_latency_and_keep_virtual_nodes() {
    let graph = |n: u64, failed: u64, bucket: [u64; 3]| {
        format!(
            r#"traces_service_graph_request_total{{client="frontend",client_service_namespace="shop",server="web",server_service_namespace="shop"}} {n}
traces_service_graph_request_failed_total{{client="frontend",client_service_namespace="shop",server="web",server_service_namespace="shop"}} {failed}
traces_service_graph_request_server_seconds_bucket{{client="frontend",client_service_namespace="shop",server="web",server_service_namespace="shop",le="0.005"}} {}
traces_service_graph_request_server_seconds_bucket{{client="frontend",client_service_namespace="shop",server="web",server_service_namespace="shop",le="0.01"}} {}
traces_service_graph_request_server_seconds_bucket{{client="frontend",client_service_namespace="shop",server="web",server_service_namespace="shop",le="+Inf"}} {}
traces_service_graph_request_server_seconds_sum{{client="frontend",client_service_namespace="shop",server="web",server_service_namespace="shop"}} 1
traces_service_graph_request_total{{client="web",client_service_namespace="shop",connection_type="virtual_node",server="postgres.db:5432"}} {n}
traces_service_graph_request_failed_total{{client="web",client_service_namespace="shop",connection_type="virtual_node",server="postgres.db:5432"}} 0
traces_service_graph_request_client_seconds_bucket{{client="web",client_service_namespace="shop",connection_type="virtual_node",server="postgres.db:5432",le="0.005"}} {}
traces_service_graph_request_client_seconds_bucket{{client="web",client_service_namespace="shop",connection_type="virtual_node",server="postgres.db:5432",le="0.01"}} {}
traces_service_graph_request_client_seconds_bucket{{client="web",client_service_namespace="shop",connection_type="virtual_node",server="postgres.db:5432",le="+Inf"}} {}
"#,
            bucket[0],
            bucket[0] + bucket[1],
            bucket[0] + bucket[1] + bucket[2],
            bucket[0],
            bucket[0] + bucket[1],
            bucket[0] + bucket[1] + bucket[2],
        )
    };
    let w = window(
        &graph(100, 1, [90, 10, 0]),
        &graph(300, 5, [250, 40, 10]),
        20,
        edges::wants(),
    );
    let frame = edges::edges(&w, &shop_scope(), &Peers::default());
    assert_eq!(frame.source, edges::EdgeSource::ServiceGraph);
    assert_eq!(frame.edges.len(), 2);
    assert_eq!(frame.edges[0].red.requests, 200.0);
    assert_eq!(frame.edges[0].red.failures, 4.0);
    assert_eq!(frame.edges[1].connection_type, "virtual_node");
    insta::assert_snapshot!(
        "edges_service_graph",
        edges::render(&frame, Format::Wide, &Style::plain())
    );
}

#[test]
fn edges_from_client_spans_name_the_server_by_service_dns_name_and_pod_ip() {
    let client = |labels: &str, n: u64| {
        format!(
            "http_client_request_duration_seconds_bucket{{{labels},le=\"0.01\"}} {n}\n\
             http_client_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {n}\n\
             http_client_request_duration_seconds_sum{{{labels}}} 0.1\n"
        )
    };
    let by_dns = r#"http_request_method="GET",k8s_namespace_name="shop",k8s_pod_name="frontend-1",server_address="web.shop.svc.cluster.local",server_port="8080",service_name="frontend""#;
    let by_ip = r#"http_request_method="GET",k8s_namespace_name="shop",k8s_pod_name="frontend-1",server_address="10.0.0.7",server_port="8080",service_name="frontend""#;
    let failed = r#"error_type="503",http_request_method="GET",k8s_namespace_name="shop",k8s_pod_name="frontend-1",server_address="api.example.com",server_port="443",service_name="frontend""#;
    let before = [client(by_dns, 0), client(by_ip, 0)].concat();
    let after = [client(by_dns, 30), client(by_ip, 10), client(failed, 4)].concat();
    let w = window(&before, &after, 10, edges::wants());
    let pods: Vec<Pod> = vec![
        serde_yaml::from_str(
            "metadata: {name: web-1, namespace: shop, labels: {pod-template-hash: abc}, ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-abc, uid: u, controller: true}]}\nstatus: {podIP: 10.0.0.7}",
        )
        .expect("pod"),
    ];
    let services: Vec<Service> = vec![
        serde_yaml::from_str(
            "metadata: {name: web, namespace: shop}\nspec: {clusterIP: 10.96.0.10}",
        )
        .expect("service"),
    ];
    let mut scope = shop_scope();
    scope.workloads.insert(
        ("shop".into(), "frontend-1".into()),
        "deploy/frontend".into(),
    );
    let frame = edges::edges(&w, &scope, &Peers::new(&pods, &services));
    assert_eq!(frame.source, edges::EdgeSource::ClientSpans);
    let servers: Vec<&str> = frame.edges.iter().map(|e| e.server.as_str()).collect();
    assert_eq!(
        servers,
        vec!["api.example.com:443", "deploy/web", "svc/web"]
    );
    insta::assert_snapshot!(
        "edges_client_spans",
        edges::render(&frame, Format::Table, &Style::plain())
    );
}

#[test]
fn resources_take_the_largest_reading_per_pod_and_rates_over_the_window() {
    let text = |cpu: f64, rx: u64, probe: &str| {
        format!(
            r#"k8s_pod_cpu_time_seconds_total{{__p="{probe}",k8s_namespace_name="shop",k8s_pod_name="web-7d4b9c-x2x9z",service_name="web"}} {cpu}
k8s_pod_memory_working_set_bytes{{__p="{probe}",k8s_namespace_name="shop",k8s_pod_name="web-7d4b9c-x2x9z",service_name="web"}} 52428800
k8s_pod_memory_rss_bytes{{__p="{probe}",k8s_namespace_name="shop",k8s_pod_name="web-7d4b9c-x2x9z",service_name="web"}} 31457280
k8s_pod_network_io_bytes_total{{__p="{probe}",k8s_namespace_name="shop",k8s_pod_name="web-7d4b9c-x2x9z",network_io_direction="receive",service_name="web"}} {rx}
k8s_pod_network_io_bytes_total{{__p="{probe}",k8s_namespace_name="shop",k8s_pod_name="web-7d4b9c-x2x9z",network_io_direction="transmit",service_name="web"}} {}
"#,
            rx * 2
        )
    };
    // The same pod reported by two probes (two languages): not summed.
    let before = [text(10.0, 1000, "go"), text(10.0, 1000, "python")].concat();
    let after = [text(12.5, 11240, "go"), text(12.5, 11240, "python")].concat();
    let w = window(&before, &after, 10, resources::wants());
    assert!(resources::has_data(&w));
    let frame = resources::rows(&w, &shop_scope());
    assert_eq!(frame.pods.len(), 1);
    assert_eq!(frame.pods[0].cpu, Some(0.25));
    assert_eq!(frame.pods[0].network_receive, Some(1024.0));
    insta::assert_snapshot!(
        "resources",
        resources::render(&frame, Format::Wide, &Style::plain())
    );
    let none = window("", "", 10, resources::wants());
    assert!(!resources::has_data(&none), "no k8s_pod_* families");
}

fn tap_span(kind: &str, error: bool, attributes: &[(&str, &str)]) -> TapSpan {
    TapSpan {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
        parent_span_id: String::new(),
        name: "GET /items/{id}".into(),
        kind: kind.into(),
        // 2026-01-02T03:04:05.678Z
        start_time_unix_nano: 1_767_323_045_678_000_000,
        duration_nanos: 3_250_000,
        error,
        namespace: "shop".into(),
        pod: "web-7d4b9c-x2x9z".into(),
        service: "web".into(),
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[test]
fn tap_lines_show_time_kind_pod_route_status_duration_target_peer_and_trace() {
    let server = tap_span(
        "server",
        false,
        &[
            ("http.request.method", "GET"),
            ("http.route", "/items/{id}"),
            ("http.response.status_code", "200"),
            ("url.path", "/items/42"),
            ("url.query", "session=REDACTED"),
            ("client.address", "10.0.0.9"),
        ],
    );
    let client = tap_span(
        "client",
        true,
        &[
            ("http.request.method", "GET"),
            ("http.response.status_code", "503"),
            ("server.address", "inventory.shop"),
            ("server.port", "8080"),
            ("url.full", "http://inventory.shop:8080/stock/42"),
        ],
    );
    let grpc = tap_span(
        "server",
        false,
        &[
            ("rpc.service", "shop.Cart"),
            ("rpc.method", "Add"),
            ("rpc.grpc.status_code", "0"),
        ],
    );
    let text = [server, client, grpc]
        .iter()
        .map(|s| tap::render_span(s, &Style::plain()))
        .collect::<String>();
    insta::assert_snapshot!("tap_lines", text);
    let colored = tap::render_span(
        &tap_span("client", true, &[("http.response.status_code", "503")]),
        &Style { color: true },
    );
    assert!(
        colored.contains("\x1b[31m503\x1b[0m"),
        "errors in red: {colored:?}"
    );
}

fn status_report() -> StatusReport {
    let condition = |t: &str, s: &str, r: &str, m: &str| ConditionReport {
        type_: t.into(),
        status: s.into(),
        reason: r.into(),
        message: m.into(),
    };
    let mut report = StatusReport {
        operators: Some(vec![OperatorReport {
            namespace: "ferrotel-system".into(),
            name: "ferrotel-operator".into(),
            ready: 1,
            desired: 1,
            version: "0.1.0".into(),
        }]),
        operator_error: None,
        collectors: vec![CollectorReport {
            namespace: "obs".into(),
            name: "otel".into(),
            mode: "deployment".into(),
            ready: "1/1".into(),
            conditions: vec![
                condition("ConfigValid", "True", "Valid", ""),
                condition("Available", "True", "ReplicasReady", ""),
            ],
            endpoints: vec!["http://otel.obs.svc.cluster.local:4317".into()],
            stale: false,
        }],
        instrumentations: vec![InstrumentationReport {
            namespace: "obs".into(),
            name: "default".into(),
            exporter: "http://otel.obs.svc.cluster.local:4317".into(),
            languages: vec![
                LanguageReport {
                    language: "go".into(),
                    daemon_set: "default-probe-go".into(),
                    desired: 2,
                    ready: 2,
                    matched_namespaces: 1,
                    matched_pods: 3,
                },
                LanguageReport {
                    language: "python".into(),
                    daemon_set: "default-probe-python".into(),
                    desired: 2,
                    ready: 1,
                    matched_namespaces: 1,
                    matched_pods: 3,
                },
            ],
            conditions: vec![
                condition(
                    "Ready",
                    "False",
                    "ProbesNotReady",
                    "python: 1/2 probe pods ready",
                ),
                condition("Degraded", "False", "AsExpected", ""),
            ],
            stale: false,
        }],
        probes: vec![
            ProbeReport {
                namespace: "obs".into(),
                name: "default-probe-go-k2j4d".into(),
                instrumentation: "obs/default".into(),
                language: "go".into(),
                node: "node-1".into(),
                ready: true,
                problem: String::new(),
                restarts: 0,
                metrics: Some(ProbeMetrics {
                    attached: 2.0,
                    refused: [("no_functions".to_owned(), 1.0)].into(),
                    ..ProbeMetrics::default()
                }),
                metrics_error: None,
            },
            ProbeReport {
                namespace: "obs".into(),
                name: "default-probe-python-7hx2p".into(),
                instrumentation: "obs/default".into(),
                language: "python".into(),
                node: "node-2".into(),
                ready: false,
                problem: "CrashLoopBackOff: back-off 20s restarting failed container".into(),
                restarts: 4,
                metrics: None,
                metrics_error: Some("HTTP 503: no endpoints available".into()),
            },
            ProbeReport {
                namespace: "obs".into(),
                name: "default-probe-python-q9v8c".into(),
                instrumentation: "obs/default".into(),
                language: "python".into(),
                node: "node-1".into(),
                ready: true,
                problem: String::new(),
                restarts: 0,
                metrics: Some(ProbeMetrics {
                    attached: 1.0,
                    kernel_dropped: 12.0,
                    ..ProbeMetrics::default()
                }),
                metrics_error: None,
            },
        ],
        problems: vec![],
    };
    report.problems = status::problems(&report);
    report
}

#[test]
fn status_lists_the_install_and_says_what_is_wrong_with_the_fix() {
    let report = status_report();
    assert_eq!(report.problems.len(), 5, "{:#?}", report.problems);
    assert!(
        report.problems[0].contains("Ready=False (ProbesNotReady): python: 1/2 probe pods ready")
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("kubectl ferrotel why <pod>"))
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("ringBufferBytes"))
    );
    insta::assert_snapshot!(
        "status",
        status::render(&report, Format::Table, &Style::plain())
    );
    insta::assert_snapshot!(
        "status_wide",
        status::render(&report, Format::Wide, &Style::plain())
    );
}

#[test]
fn status_says_which_probes_refused_propagation_and_where_to_look() {
    use ferrotel_cli::promtext;

    let text = "# TYPE ferrotel_probe_propagation_refused_total counter\n\
        ferrotel_probe_propagation_refused_total{language=\"python\",reason=\"no_bpffs\"} 1\n\
        ferrotel_probe_propagation_refused_total{language=\"python\",reason=\"cgroup_namespace\"} 3\n\
        ferrotel_probe_propagation_refused_total{language=\"python\",reason=\"root_cgroup\"} 0\n\
        ferrotel_probe_attach_refused_total{language=\"python\",reason=\"disabled\"} 2\n";
    let (samples, errors) = promtext::parse(text);
    assert!(errors.is_empty(), "{errors:?}");
    let metrics = ProbeMetrics::from_samples(&samples);
    assert_eq!(
        metrics.propagation_refused,
        [
            ("cgroup_namespace".to_owned(), 3.0),
            ("no_bpffs".to_owned(), 1.0)
        ]
        .into(),
        "by reason, zero counts left out"
    );
    assert_eq!(
        metrics.refused,
        [("disabled".to_owned(), 2.0)].into(),
        "process refusals stay apart"
    );
    let mut report = status_report();
    let before = report.problems.len();
    let fixture = report.probes[2]
        .metrics
        .take()
        .expect("the fixture's metrics");
    report.probes[2].metrics = Some(ProbeMetrics {
        propagation_refused: metrics.propagation_refused,
        ..fixture
    });
    report.problems = status::problems(&report);
    let line = report
        .problems
        .iter()
        .find(|p| p.contains("trace context"))
        .unwrap_or_else(|| panic!("no propagation problem in {:#?}", report.problems));
    assert!(
        line.contains("default-probe-python-q9v8c")
            && line.contains("3 cgroup_namespace, 1 no_bpffs")
            && line.contains("kubectl -n obs logs default-probe-python-q9v8c"),
        "{line}"
    );
    assert_eq!(
        report.problems.len(),
        before + 1,
        "one line more, for propagation"
    );
}

#[test]
fn status_of_an_empty_cluster_tells_to_install_and_create_an_instrumentation() {
    let mut report = StatusReport {
        operators: Some(vec![]),
        ..StatusReport::default()
    };
    report.problems = status::problems(&report);
    insta::assert_snapshot!(
        "status_empty",
        status::render(&report, Format::Table, &Style::plain())
    );
}

#[test]
fn status_calls_export_failures_a_problem_only_when_data_was_lost_or_nothing_got_through() {
    use ferrotel_cli::promtext;

    let problems_for = |exposition: &str| -> Vec<String> {
        let (samples, errors) = promtext::parse(exposition);
        assert!(errors.is_empty(), "{errors:?}");
        let mut report = status_report();
        let fixture = report.probes[2]
            .metrics
            .take()
            .expect("the fixture's metrics");
        let read = ProbeMetrics::from_samples(&samples);
        report.probes[2].metrics = Some(ProbeMetrics {
            export_dropped: read.export_dropped,
            export_failures: read.export_failures,
            export_successes: read.export_successes,
            ..fixture
        });
        status::problems(&report)
            .into_iter()
            .filter(|p| p.contains("default-probe-python-q9v8c") && p.contains("export"))
            .collect()
    };
    // The collector came up after the probe: early requests failed, were
    // retried, and everything got through.
    let retried = problems_for(
        "ferrotel_probe_export_requests_total{signal=\"traces\",result=\"retryable\"} 34\n\
         ferrotel_probe_export_requests_total{signal=\"traces\",result=\"ok\"} 120\n\
         ferrotel_probe_export_dropped_items_total{reason=\"queue_full\"} 0\n",
    );
    assert!(retried.is_empty(), "nothing was lost: {retried:#?}");

    let lost = problems_for(
        "ferrotel_probe_export_requests_total{signal=\"traces\",result=\"retryable\"} 34\n\
         ferrotel_probe_export_requests_total{signal=\"traces\",result=\"ok\"} 120\n\
         ferrotel_probe_export_dropped_items_total{reason=\"queue_full\"} 7\n",
    );
    assert!(
        lost.len() == 1 && lost[0].contains("7 spans or data points dropped"),
        "{lost:#?}"
    );

    let never = problems_for(
        "ferrotel_probe_export_requests_total{signal=\"traces\",result=\"retryable\"} 5\n",
    );
    assert!(
        never.len() == 1 && never[0].contains("none of its 5 export requests succeeded"),
        "{never:#?}"
    );
}
