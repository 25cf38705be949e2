//! The whole probe runtime with a synthetic front-end against the real
//! collector: targets flow to the front-end, `/metrics` and `/readyz`
//! serve, and a graceful stop flushes every span and the metrics even though
//! neither the batch size nor any interval was reached.

use std::time::Duration;

use ferrotel_api::probe_config::Language;
use ferrotel_api::probe_endpoints;
use ferrotel_e2e::Collector;
use ferrotel_probe::frontend::{Frontend, FrontendContext};
use ferrotel_probe::targets::TargetEvent;
use ferrotel_probe::telemetry::clock::{ClockOffsets, KernelClock};
use ferrotel_probe::telemetry::record::{HttpInfo, Protocol, RequestRecord, SpanKind};
use tokio::sync::oneshot;

#[path = "probe_harness/mod.rs"]
mod probe_harness;
use probe_harness::Probe;

const WAIT: Duration = Duration::from_secs(60);

struct Synthetic {
    target: u32,
    requests: usize,
    submitted: oneshot::Sender<()>,
}

impl Frontend for Synthetic {
    async fn run(self, mut ctx: FrontendContext) -> anyhow::Result<()> {
        let event = tokio::time::timeout(WAIT, ctx.targets.next()).await?;
        match event {
            Some(TargetEvent::Added(t)) if t.pid == self.target => {}
            other => anyhow::bail!(
                "expected the target {} to be added first, got {other:?}",
                self.target
            ),
        }
        ctx.health.set_attached_processes(1);
        ctx.health.events_received(self.requests as u64);
        ctx.health.mark_ready();
        for i in 0..self.requests {
            let now = ClockOffsets::monotonic_now_ns();
            let accepted = ctx.sink.submit(RequestRecord {
                kind: SpanKind::Server,
                pid: self.target,
                tid: self.target,
                start_ns: now - 1_000_000,
                end_ns: now,
                clock: KernelClock::Monotonic,
                span: ctx.spans.start_server(None),
                protocol: Protocol::Http(HttpInfo {
                    method: "POST".into(),
                    path: format!("/orders/{}", 1000 + i).into(),
                    status: Some(201),
                    ..Default::default()
                }),
                local: Some("127.0.0.1:8080".parse().unwrap()),
                peer: Some("127.0.0.1:40000".parse().unwrap()),
                error: None,
            });
            anyhow::ensure!(accepted, "record {i} was not accepted by the sink");
        }
        let _ = self.submitted.send(());
        ctx.shutdown.cancelled().await;
        Ok(())
    }
}

async fn get(url: &str) -> (u16, String) {
    // reqwest has no bundled crypto provider in this workspace (ring only).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test]
async fn graceful_stop_flushes_spans_and_metrics_and_metrics_endpoint_serves() {
    let collector = Collector::start_with_file_exporter()
        .await
        .unwrap_or_else(|e| panic!("the real collector must start (make tools): {e}"));
    let mut target = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn a target process");
    let service = "runtime-test";
    let requests = 30;
    let (submitted_tx, submitted_rx) = oneshot::channel();
    let frontend = Synthetic {
        target: target.id(),
        requests,
        submitted: submitted_tx,
    };
    let probe = Probe::launch_frontend(
        Language::Python,
        frontend,
        &collector.grpc_url(),
        &[("--pid", target.id().to_string())],
        |file| {
            // Nothing is exported before the stop unless the stop flushes.
            file.exporter.scheduled_delay_millis = 600_000;
            file.exporter.max_export_batch_size = 1_000;
            file.exporter.metrics_interval_millis = 600_000;
            file.resource_attributes
                .insert("service.name".into(), service.into());
        },
    );

    tokio::time::timeout(WAIT, submitted_rx)
        .await
        .expect("front-end submits in time")
        .expect("front-end ran");
    let base = probe
        .metrics_url
        .strip_suffix("/metrics")
        .expect("a /metrics URL")
        .to_owned();
    let text = ferrotel_e2e::wait_for("the RED metrics on /metrics", WAIT, || {
        let url = format!("{base}/metrics");
        async move {
            let (status, body) = get(&url).await;
            let line = "http_server_request_duration_seconds_count{";
            let done = body
                .lines()
                .any(|l| l.starts_with(line) && l.ends_with(&format!(" {requests}")));
            if status == 200 && done {
                Ok(body)
            } else {
                Err(format!("status {status}, not all requests yet"))
            }
        }
    })
    .await
    .expect("/metrics serves the RED histogram");
    assert!(
        text.contains("http_route=\"/orders/*\""),
        "heuristic route on the metric:\n{text}"
    );
    assert!(
        text.contains("service_name=\"runtime-test\""),
        "service label:\n{text}"
    );
    assert!(
        text.contains("ferrotel_probe_records_total 30"),
        "records counter:\n{text}"
    );
    assert!(
        text.contains("ferrotel_probe_attached_processes{language=\"python\"} 1"),
        "attached gauge:\n{text}"
    );
    assert!(
        text.contains("ferrotel_probe_events_received_total{language=\"python\"} 30"),
        "events counter:\n{text}"
    );
    assert_eq!(
        get(&format!("{base}/readyz")).await.0,
        200,
        "ready once the front-end said so"
    );
    // The routes `kubectl ferrotel` reads are served next to /metrics.
    let (status, body) = get(&format!("{base}{}", probe_endpoints::PROCESSES_PATH)).await;
    assert_eq!(status, 200, "{body}");
    let report: probe_endpoints::ProcessesReport =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("a process report ({e}): {body}"));
    assert_eq!(report.language, Some(Language::Python));
    let (status, body) = get(&format!(
        "{base}{}?namespce=shop",
        probe_endpoints::TAP_PATH
    ))
    .await;
    assert_eq!(status, 400, "a bad tap filter is refused: {body}");
    assert!(
        body.contains("\"namespce\"") && body.contains("namespace="),
        "{body}"
    );
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert!(
        collector.spans().unwrap_or_default().is_empty(),
        "no span may be exported before the stop"
    );

    probe.assert_running();
    // Fails unless the runtime returns Ok after a graceful stop, in time.
    probe.stop().await;

    let spans = collector
        .wait_for_spans(requests, WAIT, |s| s.service_name() == Some(service))
        .await
        .expect("the stop flushed the spans");
    assert_eq!(spans.len(), requests, "every span flushed exactly once");
    assert!(
        spans.iter().all(|s| s.name == "POST /orders/*"),
        "span names use the route"
    );
    let count: u64 = ferrotel_e2e::wait_for("the final metrics snapshot", WAIT, || {
        let points = collector.metrics().unwrap_or_default();
        async move {
            let count: u64 = points
                .iter()
                .filter(|p| p.name == "http.server.request.duration")
                .filter(|p| {
                    p.resource.get("service.name").and_then(|v| v.as_str()) == Some(service)
                })
                .filter_map(|p| p.count)
                .sum();
            if count > 0 {
                Ok(count)
            } else {
                Err("no metrics yet".into())
            }
        }
    })
    .await
    .expect("the stop exported a metrics snapshot");
    assert_eq!(
        count, requests as u64,
        "the final snapshot counts every request"
    );
    let _ = target.kill();
    let _ = target.wait();
}
