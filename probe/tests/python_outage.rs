//! A collector outage end to end, as root: real Python servers traced by the
//! probe runtime with the real socket-level eBPF programs, exporting to the
//! real OpenTelemetry Collector, which is killed for 30 s while requests keep
//! arriving and then restarted on the same port.
//!
//! Two probes run side by side through the same outage, one with the default
//! span queue and one with a queue far smaller than the outage's traffic:
//! - every span that fitted its queue reaches the collector exactly once;
//! - what did not fit is counted in `ferrotel_probe_export_dropped_items_total
//!   {reason="queue_full"}`, and that count equals the spans that are missing;
//! - the request-duration histograms still count every request (metrics are
//!   cumulative, so the first export after the outage carries them all).
//!
//! Needs the venv `e2e/tools/install.sh` creates (`~/.cache/ferrotel/venv`).

mod python_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use ferrotel_e2e::Collector;
use ferrotel_e2e::collector::{FileOutputs, read_metrics, read_spans};
use python_common::*;

/// How long the collector stays down: the scenario of the issue, not a limit.
const OUTAGE: Duration = Duration::from_secs(30);
/// Request waves during the outage, spread over it.
const WAVES: usize = 6;
/// Requests per app in each wave.
const PER_WAVE: usize = 10;
/// Requests per app while the collector is up, before the outage.
const BEFORE: usize = 12;
/// The small queue: far less than the WAVES * PER_WAVE spans of the outage.
const TIGHT_QUEUE: usize = 20;

async fn start_collector(port: u16, dir: &Path, name: &str) -> Collector {
    let outputs = FileOutputs {
        traces: dir.join(format!("{name}-traces.json")),
        metrics: Some(dir.join(format!("{name}-metrics.json"))),
        logs: None,
        profiles: None,
    };
    Collector::start_with_file_exporter_at(port, outputs)
        .await
        .unwrap_or_else(|e| panic!("the real collector ({name}) must start on port {port}: {e}"))
}

/// GET /users/<id> for each id over one keep-alive client; every answer must be 200.
async fn get_users(client: &reqwest::Client, app: &App, ids: std::ops::Range<usize>) {
    for id in ids {
        let path = format!("/users/{id}");
        let response = client
            .get(app.url(&path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        let _ = response.bytes().await;
    }
}

/// The probe's own counters, read from its /metrics endpoint.
struct Counters {
    exported: u64,
    queue_full: u64,
    other_drops: u64,
    retries: u64,
    records_dropped: u64,
}

async fn counters(probe: &Probe) -> Counters {
    let text = probe.metrics().await;
    let sum = |prefix: &str| Probe::metric_sum(&text, prefix) as u64;
    Counters {
        exported: sum("ferrotel_probe_exported_items_total{signal=\"traces\"}"),
        queue_full: sum(
            "ferrotel_probe_export_dropped_items_total{signal=\"traces\",reason=\"queue_full\"}",
        ),
        other_drops: sum("ferrotel_probe_export_dropped_items_total{signal=\"traces\"")
            - sum(
                "ferrotel_probe_export_dropped_items_total{signal=\"traces\",reason=\"queue_full\"}",
            ),
        retries: sum("ferrotel_probe_export_retries_total{signal=\"traces\"}"),
        records_dropped: sum("ferrotel_probe_records_dropped_total"),
    }
}

/// Waits until `probe` has exported `n` spans (fails after WAIT with its metrics).
async fn wait_exported(what: &str, probe: &Probe, n: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = counters(probe).await;
        if c.exported >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {n} spans exported in time; /metrics:\n{}",
            c.exported,
            probe.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the exporter has retried at least once against the dead collector.
async fn wait_retried(what: &str, probe: &Probe) {
    let deadline = Instant::now() + WAIT;
    while counters(probe).await.retries == 0 {
        assert!(
            Instant::now() < deadline,
            "{what}: the exporter never retried against the stopped collector; /metrics:\n{}",
            probe.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// url.path of every server span of `pid`, with how often each arrived.
fn paths_of(spans: &[ferrotel_e2e::Span], pid: u32) -> BTreeMap<String, usize> {
    let is_app = of_pids(&[pid]);
    let mut paths = BTreeMap::new();
    for span in spans.iter().filter(|s| is_app(s) && s.kind == SERVER) {
        *paths
            .entry(span.attr_str("url.path").unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    paths
}

fn users(ids: std::ops::Range<usize>) -> BTreeSet<String> {
    ids.map(|id| format!("/users/{id}")).collect()
}

/// Reads a file exporter's spans until their number stops changing.
async fn settled_spans(path: &Path) -> Vec<ferrotel_e2e::Span> {
    let mut last = usize::MAX;
    let mut stable = 0;
    loop {
        let spans = read_spans(path).unwrap_or_default();
        if spans.len() == last {
            stable += 1;
            if stable >= 5 {
                return spans;
            }
        } else {
            stable = 0;
            last = spans.len();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_s_collector_outage_loses_no_span_that_fits_the_queue_and_counts_every_span_that_does_not()
 {
    install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = ferrotel_e2e::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let first = start_collector(port, dir.path(), "before").await;

    let roomy_app = App::stdlib();
    let tight_app = App::stdlib();
    let fast_metrics = |c: &mut ferrotel_api::probe_config::ProbeConfig| {
        c.exporter.metrics_interval_millis = 500;
    };
    let roomy = Probe::start_with(&endpoint, &[roomy_app.pid()], &[], 1, fast_metrics).await;
    let tight = Probe::start_with(&endpoint, &[tight_app.pid()], &[], 1, |c| {
        fast_metrics(c);
        c.exporter.max_queue_size = TIGHT_QUEUE;
        c.exporter.max_export_batch_size = 8;
    })
    .await;
    let client = reqwest::Client::new();

    // Collector up: everything is exported at once.
    get_users(&client, &roomy_app, 0..BEFORE).await;
    get_users(&client, &tight_app, 0..BEFORE).await;
    wait_exported("before the outage (default queue)", &roomy, BEFORE as u64).await;
    wait_exported("before the outage (small queue)", &tight, BEFORE as u64).await;

    // The collector acknowledges an export before its file exporter flushes
    // (every 100 ms): kill it only once the file holds what it acknowledged,
    // or a SIGKILL would lose spans the probe rightly counted as delivered.
    let before_file = dir.path().join("before-traces.json");
    let deadline = Instant::now() + WAIT;
    loop {
        let spans = read_spans(&before_file).unwrap_or_default();
        let written = (
            paths_of(&spans, roomy_app.pid()).len(),
            paths_of(&spans, tight_app.pid()).len(),
        );
        if written == (BEFORE, BEFORE) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first collector wrote {written:?} of {BEFORE} spans per app"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Collector killed; requests keep coming in waves over 30 s.
    drop(first);
    let outage_started = Instant::now();
    let during = 1000..1000 + WAVES * PER_WAVE;
    for wave in 0..WAVES {
        let ids = during.start + wave * PER_WAVE..during.start + (wave + 1) * PER_WAVE;
        get_users(&client, &roomy_app, ids.clone()).await;
        get_users(&client, &tight_app, ids).await;
        let next_wave = outage_started + OUTAGE.mul_f64((wave + 1) as f64 / WAVES as f64);
        tokio::time::sleep_until(next_wave.into()).await;
    }
    wait_retried("default queue", &roomy).await;
    wait_retried("small queue", &tight).await;
    let during_outage = (counters(&roomy).await, counters(&tight).await);
    assert_eq!(
        (during_outage.0.exported, during_outage.1.exported),
        (BEFORE as u64, BEFORE as u64),
        "nothing can be exported while the collector is down"
    );

    // Collector back on the same port.
    let second = start_collector(port, dir.path(), "after").await;
    let sent_during = (WAVES * PER_WAVE) as u64;
    wait_exported(
        "after the outage (default queue)",
        &roomy,
        BEFORE as u64 + sent_during,
    )
    .await;
    let dropped = counters(&tight).await.queue_full;
    wait_exported(
        "after the outage (small queue)",
        &tight,
        BEFORE as u64 + sent_during - dropped.min(sent_during),
    )
    .await;
    let (roomy_pid, tight_pid) = (roomy_app.pid(), tight_app.pid());
    let (roomy_end, tight_end) = (counters(&roomy).await, counters(&tight).await);
    roomy.stop().await;
    tight.stop().await;

    let before = settled_spans(&before_file).await;
    let after = settled_spans(&dir.path().join("after-traces.json")).await;
    let expected_before = users(0..BEFORE);
    let expected_during = users(during.clone());
    for (what, pid) in [("default queue", roomy_pid), ("small queue", tight_pid)] {
        let got = paths_of(&before, pid);
        assert_eq!(
            got.keys().cloned().collect::<BTreeSet<_>>(),
            expected_before,
            "{what}: the first collector got every span from before the outage"
        );
        assert!(
            got.values().all(|&n| n == 1),
            "{what}: each span before the outage arrived once: {got:?}"
        );
    }

    // The default queue held the whole outage: every span arrives, once.
    let got = paths_of(&after, roomy_pid);
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        expected_during,
        "default queue: every span of the outage reached the restarted collector"
    );
    assert!(
        got.values().all(|&n| n == 1),
        "default queue: each span of the outage arrived exactly once: {got:?}"
    );
    assert_eq!(
        (
            roomy_end.queue_full,
            roomy_end.other_drops,
            roomy_end.records_dropped
        ),
        (0, 0, 0),
        "default queue: nothing dropped"
    );

    // The small queue overflowed: what arrived, arrived once; what is missing is counted.
    let got = paths_of(&after, tight_pid);
    assert!(
        got.values().all(|&n| n == 1),
        "small queue: each delivered span arrived exactly once: {got:?}"
    );
    let delivered: BTreeSet<String> = got.keys().cloned().collect();
    assert!(
        delivered.is_subset(&expected_during),
        "small queue: only spans of real requests arrive: {delivered:?}"
    );
    let missing = expected_during.difference(&delivered).count() as u64;
    assert!(
        tight_end.queue_full > 0,
        "small queue: {} spans during the outage with room for {TIGHT_QUEUE} must overflow",
        WAVES * PER_WAVE
    );
    assert_eq!(
        tight_end.queue_full, missing,
        "small queue: the queue_full drop count equals the spans missing at the collector"
    );
    assert_eq!(
        delivered.len(),
        TIGHT_QUEUE,
        "small queue: it held exactly its capacity through the outage"
    );
    assert_eq!(
        (tight_end.other_drops, tight_end.records_dropped),
        (0, 0),
        "small queue: no drops for any other reason"
    );

    // Metrics are cumulative: the histograms count every request, dropped spans included.
    let total = (BEFORE + WAVES * PER_WAVE) as u64;
    let metrics_file = dir.path().join("after-metrics.json");
    for (what, pid) in [("default queue", roomy_pid), ("small queue", tight_pid)] {
        let count = histogram_count(
            &read_metrics(&metrics_file).unwrap_or_default(),
            "http.server.request.duration",
            &[pid],
        );
        assert_eq!(
            count, total,
            "{what}: http.server.request.duration counts every request, outage included"
        );
    }
    drop(second);
}
