//! The export path against the real OpenTelemetry Collector (our `otelcol`
//! distribution, run by `ferrotel_e2e::Collector`): synthetic request
//! records (and profile windows) go through the real pipeline and
//! exporter, and what the collector's file exporter wrote is checked.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ferrotel_api::probe_config::{ExporterConfig, OtlpProtocol, RoutesConfig};
use ferrotel_e2e::Collector;
use ferrotel_e2e::collector::{FileOutputs, read_profile_samples, read_spans};
use ferrotel_probe::export::client::OtlpClient;
use ferrotel_probe::export::queue::BoundedQueue;
use ferrotel_probe::export::settings::ExportSettings;
use ferrotel_probe::export::{Backoff, run_batch_exporter};
use ferrotel_probe::health::Health;
use ferrotel_probe::profile;
use ferrotel_probe::profile::model::{Frame, FrameKind, Profile};
use ferrotel_probe::telemetry::clock::{ClockOffsets, KernelClock};
use ferrotel_probe::telemetry::metrics::RedMetrics;
use ferrotel_probe::telemetry::pipeline::{Pipeline, QueuedSpan};
use ferrotel_probe::telemetry::record::{HttpInfo, Protocol, RequestRecord, SpanKind};
use ferrotel_probe::telemetry::resource::{BaseResource, ResourceRegistry};
use ferrotel_probe::telemetry::sampling::{Sampler, SpanStarter};
use ferrotel_probe::telemetry::trace_context::parse_traceparent;

const WAIT: Duration = Duration::from_secs(60);

fn settings(endpoint: &str, protocol: OtlpProtocol) -> ExportSettings {
    let config = ExporterConfig {
        endpoint: endpoint.to_owned(),
        protocol,
        timeout_millis: 2_000,
        max_queue_size: 1_000,
        max_export_batch_size: 64,
        scheduled_delay_millis: 100,
        ..Default::default()
    };
    ExportSettings::resolve(&config, &|_| None).expect("valid exporter settings")
}

fn registry(service: &str) -> ResourceRegistry {
    let attrs = BTreeMap::from([("deployment.environment".to_string(), "test".to_string())]);
    ResourceRegistry::new(BaseResource::resolve(&attrs, None, Some(service)))
}

fn http_record(
    starter: &SpanStarter,
    kind: SpanKind,
    path: &str,
    status: u16,
    parent: Option<&RequestRecord>,
) -> RequestRecord {
    let now = ClockOffsets::monotonic_now_ns();
    let span = match (kind, parent) {
        (SpanKind::Client, parent) => starter.start_client(parent.map(|p| &p.span)),
        (SpanKind::Server, _) => starter.start_server(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_ref(),
        ),
    };
    RequestRecord {
        kind,
        pid: std::process::id(),
        tid: 1,
        start_ns: now - 3_000_000,
        end_ns: now,
        clock: KernelClock::Monotonic,
        span,
        protocol: Protocol::Http(HttpInfo {
            method: "GET".into(),
            path: path.into(),
            query: None,
            status: Some(status),
            host: Some(
                if kind == SpanKind::Server {
                    "shop:8080"
                } else {
                    "inventory:9090"
                }
                .into(),
            ),
            protocol_version: Some("1.1".into()),
            user_agent: Some("export-test".into()),
            ..Default::default()
        }),
        local: Some("127.0.0.1:8080".parse().unwrap()),
        peer: Some("127.0.0.1:50000".parse().unwrap()),
        error: None,
    }
}

struct Harness {
    health: Health,
    metrics: RedMetrics,
    queue: Arc<BoundedQueue<QueuedSpan>>,
    pipeline: Pipeline,
    exporter: tokio::task::JoinHandle<()>,
    metrics_client: OtlpClient,
}

fn harness(settings: &ExportSettings, service: &str, backoff: Backoff) -> Harness {
    let health = Health::new();
    let metrics = RedMetrics::new();
    let queue = Arc::new(BoundedQueue::new(
        settings.max_queue_size,
        settings.max_export_batch_size,
        "traces",
        health.clone(),
    ));
    let pipeline = Pipeline::new(
        &RoutesConfig {
            patterns: vec!["/users/{id}".into()],
            ..Default::default()
        },
        registry(service),
        metrics.clone(),
        queue.clone(),
        ClockOffsets::measure(),
        health.clone(),
    );
    let client = OtlpClient::new(settings.traces.clone()).expect("trace client");
    let exporter = tokio::spawn(run_batch_exporter(
        queue.clone(),
        client,
        settings.scheduled_delay,
        backoff,
        Duration::from_secs(5),
        health.clone(),
    ));
    let metrics_client = OtlpClient::new(settings.metrics.clone()).expect("metrics client");
    Harness {
        health,
        metrics,
        queue,
        pipeline,
        exporter,
        metrics_client,
    }
}

async fn collector() -> Collector {
    Collector::start_with_file_exporter().await.unwrap_or_else(|e| {
        panic!("the real collector must start (install it with `make tools`; it lives in ~/.cache/ferrotel/bin/otelcol): {e}")
    })
}

async fn spans_and_metrics_arrive(protocol: OtlpProtocol) {
    let collector = collector().await;
    let endpoint = match protocol {
        OtlpProtocol::Grpc => collector.grpc_url(),
        OtlpProtocol::HttpProtobuf => collector.http_url(),
    };
    let service = format!("export-test-{protocol:?}").to_lowercase();
    let settings = settings(&endpoint, protocol);
    let mut h = harness(&settings, &service, Backoff::default());
    let starter = SpanStarter::new(Sampler::default());

    let requests = 40;
    let mut server_ids = HashSet::new();
    for i in 0..requests {
        let server = http_record(
            &starter,
            SpanKind::Server,
            &format!("/users/{i}"),
            if i % 8 == 0 { 503 } else { 200 },
            None,
        );
        let client = http_record(&starter, SpanKind::Client, "/stock", 200, Some(&server));
        server_ids.insert(hex::encode(server.span.span_id.0));
        // The child completes first, as in a real server.
        h.pipeline.process(&client);
        h.pipeline.process(&server);
    }
    h.queue.close();
    h.exporter.await.expect("exporter task");
    let snapshot = h.metrics.to_otlp().expect("metrics were observed");
    h.metrics_client
        .export_metrics(snapshot)
        .await
        .expect("metrics export succeeds");

    let spans = collector
        .wait_for_spans(2 * requests, WAIT, |s| {
            s.service_name() == Some(service.as_str())
        })
        .await
        .expect("spans reach the collector");
    assert_eq!(
        spans.len(),
        2 * requests,
        "exactly one span per request, no duplicates"
    );
    let servers: Vec<_> = spans.iter().filter(|s| s.kind == 2).collect();
    let clients: Vec<_> = spans.iter().filter(|s| s.kind == 3).collect();
    assert_eq!(servers.len(), requests, "server spans");
    assert_eq!(clients.len(), requests, "client spans");
    for s in &servers {
        assert_eq!(s.name, "GET /users/{id}", "server span name uses the route");
        assert_eq!(
            s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736",
            "incoming traceparent continued"
        );
        assert_eq!(
            s.parent_span_id, "00f067aa0ba902b7",
            "parent is the caller's span"
        );
        assert_eq!(s.attr_str("http.route"), Some("/users/{id}"));
        assert_eq!(s.attr_str("http.request.method"), Some("GET"));
        assert_eq!(s.attr_str("server.address"), Some("shop"));
        assert_eq!(s.attr_i64("server.port"), Some(8080));
        assert_eq!(s.attr_str("client.address"), Some("127.0.0.1"));
        assert_eq!(s.attr_str("user_agent.original"), Some("export-test"));
        assert!(
            s.attr_str("url.path")
                .is_some_and(|p| p.starts_with("/users/")),
            "url.path kept raw"
        );
        let status = s
            .attr_i64("http.response.status_code")
            .expect("status code attribute");
        assert_eq!(
            s.status_code == 2,
            status >= 500,
            "error status exactly for 5xx (span {:?})",
            s.name
        );
        assert_eq!(
            s.resource_str("deployment.environment"),
            Some("test"),
            "resource attributes exported"
        );
        assert!(s.end_ns > s.start_ns, "durations are positive");
    }
    for c in &clients {
        assert!(
            server_ids.contains(&c.parent_span_id),
            "client span {} is a child of a server span",
            c.span_id
        );
        assert_eq!(
            c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736",
            "same trace as its parent"
        );
        assert_eq!(c.attr_str("server.address"), Some("inventory"));
        assert_eq!(c.attr_str("url.full"), Some("http://inventory:9090/stock"));
    }
    assert_eq!(
        h.health.exported_total("traces"),
        2 * requests as u64,
        "health counts every exported span"
    );

    let points = ferrotel_e2e::wait_for("the metrics in the collector", WAIT, || {
        let points = collector.metrics().unwrap_or_default();
        let service = service.clone();
        async move {
            let ours: Vec<_> = points
                .into_iter()
                .filter(|p| {
                    p.resource.get("service.name").and_then(|v| v.as_str())
                        == Some(service.as_str())
                })
                .collect();
            if ours.is_empty() {
                Err("no metric points yet".to_string())
            } else {
                Ok(ours)
            }
        }
    })
    .await
    .expect("metrics reach the collector");
    let server_count: u64 = points
        .iter()
        .filter(|p| p.name == "http.server.request.duration")
        .filter_map(|p| p.count)
        .sum();
    let client_count: u64 = points
        .iter()
        .filter(|p| p.name == "http.client.request.duration")
        .filter_map(|p| p.count)
        .sum();
    assert_eq!(
        server_count, requests as u64,
        "histogram count equals the number of server requests"
    );
    assert_eq!(
        client_count, requests as u64,
        "histogram count equals the number of client requests"
    );
    let errors: u64 = points
        .iter()
        .filter(|p| {
            p.name == "http.server.request.duration" && p.attr_str("error.type") == Some("503")
        })
        .filter_map(|p| p.count)
        .sum();
    assert_eq!(
        errors,
        (requests as u64).div_ceil(8),
        "5xx requests carry error.type"
    );
    let unit = points
        .iter()
        .find(|p| p.name == "http.server.request.duration")
        .map(|p| p.unit.clone());
    assert_eq!(unit.as_deref(), Some("s"), "HTTP durations are in seconds");
}

#[tokio::test]
async fn spans_and_metrics_reach_the_real_collector_over_grpc() {
    spans_and_metrics_arrive(OtlpProtocol::Grpc).await;
}

#[tokio::test]
async fn spans_and_metrics_reach_the_real_collector_over_http_protobuf() {
    spans_and_metrics_arrive(OtlpProtocol::HttpProtobuf).await;
}

/// A collector on `port` writing spans to `traces` (restartable in place).
async fn file_collector(port: u16, traces: &std::path::Path) -> Collector {
    let outputs = FileOutputs {
        traces: traces.to_owned(),
        metrics: None,
        logs: None,
        profiles: None,
    };
    Collector::start_with_file_exporter_at(port, outputs)
        .await
        .unwrap_or_else(|e| panic!("the real collector must start: {e}"))
}

async fn wait_counter(what: &str, read: impl Fn() -> u64, expected: u64) {
    ferrotel_e2e::wait_for(what, WAIT, || {
        let value = read();
        async move {
            if value >= expected {
                Ok(())
            } else {
                Err(format!("{value} of {expected}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn collector_outage_loses_nothing_that_fits_the_queue_and_counts_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = ferrotel_e2e::free_port();
    let before_file = dir.path().join("traces-before.json");
    let after_file = dir.path().join("traces-after.json");
    let first = file_collector(port, &before_file).await;

    let mut settings = settings(&format!("http://127.0.0.1:{port}"), OtlpProtocol::Grpc);
    settings.max_queue_size = 200;
    settings.max_export_batch_size = 50;
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    let mut h = harness(&settings, "outage-test", backoff);
    let starter = SpanStarter::new(Sampler::default());
    let mut push = |n: usize, prefix: &str| {
        for i in 0..n {
            let record = http_record(
                &starter,
                SpanKind::Server,
                &format!("/{prefix}/{i}"),
                200,
                None,
            );
            h.pipeline.process(&record);
        }
    };

    // Phase 1: collector up.
    push(20, "before");
    wait_counter(
        "20 spans exported before the outage",
        || h.health.exported_total("traces"),
        20,
    )
    .await;

    // Accepted is not yet written: the file exporter flushes every 100 ms,
    // and a collector stopped before that loses what it held.
    ferrotel_e2e::wait_for("20 spans in the first collector's file", WAIT, || {
        let n = read_spans(&before_file).unwrap_or_default().len();
        async move {
            if n >= 20 {
                Ok(())
            } else {
                Err(format!("{n} spans so far"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Phase 2: collector down; 250 spans arrive, the queue holds 200.
    drop(first);
    push(150, "during");
    wait_counter(
        "the exporter to retry against the stopped collector",
        || retries(&h.health),
        1,
    )
    .await;
    push(100, "during");
    assert_eq!(
        h.health.export_dropped_total("traces", "queue_full"),
        50,
        "250 spans during the outage with room for 200: exactly 50 dropped and counted \
         (exported so far {}, queued {}, health:\n{})",
        h.health.exported_total("traces"),
        h.queue.queued(),
        health_text(&h.health)
    );

    // Phase 3: collector back on the same port.
    let second = file_collector(port, &after_file).await;
    wait_counter(
        "the queued spans to be exported after the outage",
        || h.health.exported_total("traces"),
        220,
    )
    .await;
    h.queue.close();
    h.exporter.await.expect("exporter task");

    let delivered = ferrotel_e2e::wait_for("200 spans in the restarted collector", WAIT, || {
        let spans = read_spans(&after_file).unwrap_or_default();
        async move {
            if spans.len() >= 200 {
                Ok(spans)
            } else {
                Err(format!("{} spans so far", spans.len()))
            }
        }
    })
    .await
    .expect("spans after the outage");
    let ids: HashSet<_> = delivered.iter().map(|s| s.span_id.clone()).collect();
    assert_eq!(
        delivered.len(),
        200,
        "every span that fitted the queue is delivered once"
    );
    assert_eq!(ids.len(), 200, "no duplicates");
    assert!(
        delivered.iter().all(|s| s
            .attr_str("url.path")
            .is_some_and(|p| p.starts_with("/during/"))),
        "only outage spans are in the restarted collector"
    );
    let before = read_spans(&before_file).unwrap_or_default();
    assert_eq!(
        before.len(),
        20,
        "the first collector got the 20 spans sent before the outage"
    );
    assert_eq!(
        h.health.exported_total("traces"),
        220,
        "health counts 20 + 200 exported"
    );
    assert_eq!(
        h.health.export_dropped_total("traces", "queue_full"),
        50,
        "no further drops"
    );
    drop(second);
}

fn health_text(health: &Health) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    health.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    text
}

fn retries(health: &Health) -> u64 {
    health_text(health)
        .lines()
        .filter(|l| l.starts_with("ferrotel_probe_export_retries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A window of this process whose one stack ends in `function`.
fn profile_window(resources: &ResourceRegistry, function: &str) -> Arc<Profile> {
    let pid = std::process::id();
    let start = ClockOffsets::measure()
        .to_unix_nanos(KernelClock::Monotonic, ClockOffsets::monotonic_now_ns());
    let mut window = Profile::new(pid, resources.get(pid), start, 1_000_000_000 / 19, 100);
    window.end_unix_ns = start + 1_000_000_000;
    window.add_frames(
        &[
            Frame::new(FrameKind::Go, "main.main", Some("main.go"), 10),
            Frame::new(FrameKind::Go, function, Some("main.go"), 20),
        ],
        None,
        7,
    );
    Arc::new(window)
}

/// A collector on `port` writing profiles to `profiles` (restartable in place).
async fn profiles_collector(
    port: u16,
    dir: &std::path::Path,
    profiles: &std::path::Path,
) -> Collector {
    let outputs = FileOutputs {
        traces: dir.join(format!("traces-{port}.json")),
        metrics: None,
        logs: None,
        profiles: Some(profiles.to_owned()),
    };
    Collector::start_with_file_exporter_at(port, outputs)
        .await
        .unwrap_or_else(|e| panic!("the real collector must start with a profiles pipeline: {e}"))
}

/// The leaf functions of the samples in a profiles file, once it holds `n`.
async fn profile_leaves(path: &std::path::Path, n: usize) -> Vec<String> {
    let path = path.to_owned();
    ferrotel_e2e::wait_for(
        &format!("{n} profile samples in {}", path.display()),
        WAIT,
        || {
            let samples = read_profile_samples(&path).unwrap_or_default();
            async move {
                if samples.len() >= n {
                    Ok(samples)
                } else {
                    Err(format!("{} samples so far", samples.len()))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .into_iter()
    .map(|s| {
        assert_eq!(s.count, 7, "sample counts survive the export");
        assert_eq!(
            s.service_name(),
            Some("profile-outage-test"),
            "resource kept"
        );
        s.functions.first().cloned().unwrap_or_default()
    })
    .collect()
}

#[tokio::test]
async fn profiles_outlive_a_collector_outage_within_the_queue_bound_and_the_rest_is_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = ferrotel_e2e::free_port();
    let before_file = dir.path().join("profiles-before.json");
    let after_file = dir.path().join("profiles-after.json");
    let first = profiles_collector(port, dir.path(), &before_file).await;

    let health = Health::new();
    let resources = registry("profile-outage-test");
    // The outage's windows have the same shape and name lengths, so the
    // same estimated size: room for exactly 10 of them, in flight
    // (retried) or queued.
    let weight = profile_window(&resources, "main.during_00").approx_bytes();
    let queue = Arc::new(profile::export_queue(10 * weight, health.clone()));
    let settings = settings(&format!("http://127.0.0.1:{port}"), OtlpProtocol::Grpc);
    let client = OtlpClient::new(settings.profiles.clone()).expect("profiles client");
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    let exporter = tokio::spawn(run_batch_exporter(
        queue.clone(),
        client,
        Duration::from_millis(100),
        backoff,
        Duration::from_secs(5),
        health.clone(),
    ));
    let push = |range: std::ops::Range<usize>, phase: &str| {
        for i in range {
            queue.push(profile_window(&resources, &format!("main.{phase}_{i:02}")));
        }
    };

    // Phase 1: collector up.
    push(0..3, "before");
    wait_counter(
        "3 windows exported before the outage",
        || health.exported_total("profiles"),
        3,
    )
    .await;
    let mut before = profile_leaves(&before_file, 3).await;
    before.sort();
    assert_eq!(
        before,
        ["main.before_00", "main.before_01", "main.before_02"]
    );

    // Phase 2: collector down; 13 windows arrive, the queue holds 10.
    drop(first);
    push(0..8, "during");
    wait_counter(
        "the exporter to retry against the stopped collector",
        || retries(&health),
        1,
    )
    .await;
    push(8..13, "during");
    assert_eq!(
        health.export_dropped_total("profiles", "queue_full"),
        3,
        "13 windows during the outage with room for 10: exactly 3 dropped and counted \
         (exported so far {}, queued {}, health:\n{})",
        health.exported_total("profiles"),
        queue.queued(),
        health_text(&health)
    );

    // Phase 3: collector back on the same port.
    let second = profiles_collector(port, dir.path(), &after_file).await;
    wait_counter(
        "the queued windows to be exported after the outage",
        || health.exported_total("profiles"),
        13,
    )
    .await;
    queue.close();
    exporter.await.expect("exporter task");
    let mut after = profile_leaves(&after_file, 10).await;
    after.sort();
    let expected: Vec<String> = (0..10).map(|i| format!("main.during_{i:02}")).collect();
    assert_eq!(
        after, expected,
        "the 10 windows that fitted are delivered once each, the newest 3 were the ones dropped"
    );
    assert_eq!(
        health.exported_total("profiles"),
        13,
        "health counts 3 + 10 exported"
    );
    assert_eq!(
        health.export_dropped_total("profiles", "queue_full"),
        3,
        "no further drops"
    );
    drop(second);
}
