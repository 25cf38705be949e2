//! Smoke tests proving the collector in the test bed is the real
//! OpenTelemetry Collector: it starts from a config file, receives OTLP from
//! `telemetrygen` over gRPC and over HTTP, and its `file` exporter writes
//! exactly the spans that were sent.

use std::process::Command;
use std::time::Duration;

use ferrotel_e2e::{Collector, Span, tool_path, validate_config};

const TIMEOUT: Duration = Duration::from_secs(60);
const TRACES: usize = 25;
/// `--child-spans`: each trace is one root span plus this many children.
const CHILD_SPANS: usize = 2;

fn telemetrygen(endpoint: &str, service: &str, http: bool) {
    let mut cmd = Command::new(tool_path("telemetrygen"));
    cmd.args([
        "traces",
        "--otlp-endpoint",
        endpoint,
        "--otlp-insecure",
        "--traces",
        &TRACES.to_string(),
        "--child-spans",
        &CHILD_SPANS.to_string(),
        "--service",
        service,
        // The default is one trace per second.
        "--rate",
        "0",
    ]);
    if http {
        cmd.arg("--otlp-http");
    }
    let out = cmd.output().expect("run telemetrygen");
    assert!(
        out.status.success(),
        "telemetrygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn sends_and_counts(http: bool) {
    let collector = Collector::start_with_file_exporter()
        .await
        .unwrap_or_else(|e| panic!("collector: {e}"));
    let service = if http { "smoke-http" } else { "smoke-grpc" };
    let endpoint = if http {
        collector.http_endpoint()
    } else {
        collector.grpc_endpoint()
    };
    telemetrygen(&endpoint, service, http);

    let expected = TRACES * (1 + CHILD_SPANS);
    let spans = collector
        .wait_for_spans(expected, TIMEOUT, |s| s.service_name() == Some(service))
        .await
        .unwrap_or_else(|e| panic!("{e}; collector log: {}", collector.log_path().display()));
    assert_eq!(
        spans.len(),
        expected,
        "the file exporter should hold exactly the {expected} spans telemetrygen sent"
    );
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), TRACES, "one root span per trace");
    let mut trace_ids: Vec<&str> = roots.iter().map(|s| s.trace_id.as_str()).collect();
    trace_ids.sort_unstable();
    trace_ids.dedup();
    assert_eq!(trace_ids.len(), TRACES, "every trace has its own trace id");
    for child in spans.iter().filter(|s| !s.parent_span_id.is_empty()) {
        assert!(
            roots
                .iter()
                .any(|r| r.trace_id == child.trace_id && r.span_id == child.parent_span_id),
            "child span {} should point at a root span of its trace",
            child.span_id
        );
    }
    assert!(
        spans
            .iter()
            .all(|s| s.end_ns >= s.start_ns && s.start_ns > 0),
        "spans carry real timestamps"
    );
    let unrelated = collector.spans().expect("read spans").len() - spans.len();
    assert_eq!(unrelated, 0, "nothing else reached this collector");
}

#[tokio::test]
async fn collector_writes_exactly_the_spans_telemetrygen_sends_over_otlp_grpc() {
    sends_and_counts(false).await;
}

#[tokio::test]
async fn collector_writes_exactly_the_spans_telemetrygen_sends_over_otlp_http() {
    sends_and_counts(true).await;
}

#[tokio::test]
async fn collector_runs_an_arbitrary_config_file_and_exits_on_a_broken_one() {
    let good = r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
exporters:
  debug: {}
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
"#;
    let mut collector = Collector::start(good)
        .await
        .unwrap_or_else(|e| panic!("a valid config should start: {e}"));
    collector.check_running().expect("still running");
    let config = std::fs::read_to_string(collector.config_path()).expect("config file");
    assert_eq!(
        config, good,
        "the collector runs from the config file we wrote"
    );

    let broken = good.replace("exporters: [debug]", "exporters: [debug/missing]");
    let err = Collector::start(&broken)
        .await
        .expect_err("a pipeline naming an undefined exporter must not start");
    assert!(
        err.to_string().contains("debug/missing"),
        "the failure should quote the collector's complaint: {err}"
    );
}

#[test]
fn validate_config_accepts_a_good_config_and_names_what_is_wrong_in_a_bad_one() {
    let good = r#"
receivers: {otlp: {protocols: {grpc: {endpoint: 127.0.0.1:4317}}}}
exporters: {debug: {}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}
"#;
    validate_config(good).unwrap_or_else(|e| panic!("valid config refused: {e}"));

    let unknown = good
        .replace("debug: {}", "kafka: {}")
        .replace("[debug]", "[kafka]");
    let err = validate_config(&unknown).expect_err("kafka is not in our distribution");
    assert!(
        err.contains("kafka"),
        "the error should name the unknown component: {err}"
    );
}
