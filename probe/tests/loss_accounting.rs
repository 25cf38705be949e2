//! Loss accounting checked from the outside, as root: a Go server (e2e
//! httpserver) and a Python server (FastAPI on uvicorn), each traced by the
//! probe runtime of its language with the real eBPF programs, exporting to
//! the real OpenTelemetry Collector; ~20 s of load in which every request
//! carries its own sequence number in its path (`GET /users/<target>-<n>`).
//!
//! What the collector wrote must hold, per target:
//! - exactly one server span per sequence number that arrived (no duplicate
//!   export, no span for a request that was never sent);
//! - every request answered but without a span is counted by the probe's
//!   own drop counters (kernel events dropped, connections untraced, parse
//!   errors, records or spans dropped, spans unsampled): no uncounted loss.
//!
//! Drops are allowed (the machine may be loaded): only silent loss fails.
//! The long version, at the highest rate the machine holds, is
//! `bench/reliability/run.sh` (`make soak`).

// Both language harnesses include the probe harness, each for its own
// `Probe` type with that language's start helpers: the two copies are meant.
#![allow(clippy::duplicate_mod)]

mod go_common;
mod python_common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrotel_e2e::Span;
use tokio::time::Instant;

/// How long the load runs: long enough for many export batches and
/// housekeeping ticks, short enough for `make test`.
const LOAD: Duration = Duration::from_secs(20);
/// Concurrent clients per target.
const CLIENTS: usize = 3;
/// Pause between a client's requests: a moderate rate (a few hundred
/// requests per second per target on an idle machine).
const PAUSE: Duration = Duration::from_millis(8);

/// The requests of one target: how many were sent, which got no answer.
struct Sent {
    target: &'static str,
    issued: u64,
    unanswered: BTreeSet<u64>,
}

/// `CLIENTS` keep-alive clients sending `GET /users/<target>-<n>` for
/// `LOAD`, n = 1, 2, ... shared between them.
async fn drive(base: String, target: &'static str) -> Sent {
    let next = Arc::new(AtomicU64::new(1));
    let deadline = Instant::now() + LOAD;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let client = go_common::http_client();
        let next = next.clone();
        let base = base.clone();
        clients.spawn(async move {
            let mut unanswered = Vec::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let url = format!("{base}/users/{target}-{n}");
                match client.get(&url).send().await {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.bytes().await;
                        assert!(status.is_success(), "GET {url}: {status}");
                    }
                    // The server may not have read it: no span is owed.
                    Err(_) => unanswered.push(n),
                }
                tokio::time::sleep(PAUSE).await;
            }
            unanswered
        });
    }
    let mut unanswered = BTreeSet::new();
    while let Some(done) = clients.join_next().await {
        unanswered.extend(done.expect("load client"));
    }
    Sent {
        target,
        issued: next.load(Ordering::Relaxed) - 1,
        unanswered,
    }
}

/// The probe's counters of requests (or events of requests) it lost,
/// from its /metrics text.
fn loss_counters(text: &str) -> BTreeMap<&'static str, u64> {
    let sum = |prefix: &str| go_common::Probe::metric_sum(text, prefix) as u64;
    BTreeMap::from([
        (
            "kernel_events_dropped",
            sum("ferrotel_probe_kernel_events_dropped_total"),
        ),
        (
            "connections_untraced",
            sum("ferrotel_probe_connections_untraced_total"),
        ),
        ("parse_errors", sum("ferrotel_probe_parse_errors_total")),
        (
            "records_dropped",
            sum("ferrotel_probe_records_dropped_total"),
        ),
        (
            "spans_unsampled",
            sum("ferrotel_probe_spans_unsampled_total"),
        ),
        (
            "export_dropped_spans",
            sum("ferrotel_probe_export_dropped_items_total{signal=\"traces\""),
        ),
    ])
}

/// Waits until the probe has nothing left to export: the spans it exported
/// or dropped stay the same for 2 s and its export queue is empty.
async fn wait_exported(what: &str, metrics: impl AsyncFn() -> String) {
    let deadline = Instant::now() + go_common::WAIT;
    let mut last = -1.0;
    let mut since = Instant::now();
    loop {
        let text = metrics().await;
        let done = go_common::Probe::metric_sum(
            &text,
            "ferrotel_probe_exported_items_total{signal=\"traces\"",
        ) + go_common::Probe::metric_sum(
            &text,
            "ferrotel_probe_export_dropped_items_total{signal=\"traces\"",
        );
        let queued = go_common::Probe::metric_sum(
            &text,
            "ferrotel_probe_export_queue_items{signal=\"traces\"",
        );
        if done != last {
            last = done;
            since = Instant::now();
        } else if queued == 0.0 && since.elapsed() >= Duration::from_secs(2) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the probe's exports did not settle in time:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Server spans per sequence number of `target`, and spans of that target
/// whose number was never sent.
fn spans_per_number(spans: &[Span], target: &str) -> BTreeMap<u64, usize> {
    let prefix = format!("/users/{target}-");
    let mut counts = BTreeMap::new();
    for span in spans.iter().filter(|s| s.kind == go_common::SERVER) {
        let Some(n) = span
            .attr_str("url.path")
            .and_then(|p| p.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        *counts.entry(n).or_insert(0) += 1;
    }
    counts
}

/// The per-target verdict; returns a line for the report.
fn check(sent: &Sent, spans: &BTreeMap<u64, usize>, counters: &BTreeMap<&str, u64>) -> String {
    let t = sent.target;
    let duplicated: Vec<(u64, usize)> = spans
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, c)| (*n, *c))
        .collect();
    let never_sent: Vec<u64> = spans
        .keys()
        .copied()
        .filter(|n| *n == 0 || *n > sent.issued)
        .collect();
    let missing: Vec<u64> = (1..=sent.issued)
        .filter(|n| !spans.contains_key(n) && !sent.unanswered.contains(n))
        .collect();
    let counted: u64 = counters.values().sum();
    let report = format!(
        "{t}: sent {}, unanswered {}, received {}, duplicated {}, missing {}, counted drops {counted} {counters:?}",
        sent.issued,
        sent.unanswered.len(),
        spans.len(),
        duplicated.len(),
        missing.len(),
    );
    assert!(
        !spans.is_empty(),
        "{report}\n{t}: no server span at all arrived: the target was not traced"
    );
    assert!(
        duplicated.is_empty(),
        "{report}\n{t}: sequence numbers with more than one server span (number, spans), first ones: {:?}",
        &duplicated[..duplicated.len().min(10)]
    );
    assert!(
        never_sent.is_empty(),
        "{report}\n{t}: spans for sequence numbers never sent: {:?}",
        &never_sent[..never_sent.len().min(10)]
    );
    assert!(
        missing.len() as u64 <= counted,
        "{report}\n{t}: {} requests were answered but have no span and no drop counter accounts for them \
         (uncounted loss); first missing: {:?}",
        missing.len() as u64 - counted,
        &missing[..missing.len().min(10)]
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_has_exactly_one_span_or_is_counted_as_dropped() {
    python_common::install_crypto_provider();
    let collector = go_common::collector().await;

    let apps = go_common::apps(go_common::TOOLCHAINS[0]);
    let go_app = go_common::GoApp::start(&apps.bin("httpserver"), &["-addr", "127.0.0.1:0"]);
    let py_port = ferrotel_e2e::free_port();
    let mut py_app = python_common::App::uvicorn_fastapi(py_port);

    let go_probe = go_common::Probe::start(&collector, &[go_app.pid()], &[], 1).await;
    let py_probe =
        python_common::Probe::start(&collector, &[py_app.pid()], &[py_app.port()], 1).await;

    let (go_sent, py_sent) = tokio::join!(drive(go_app.url(""), "go"), drive(py_app.url(""), "py"));
    py_app.assert_alive("FastAPI under uvicorn");

    wait_exported("go", async || go_probe.metrics().await).await;
    wait_exported("python", async || py_probe.metrics().await).await;
    let go_counters = loss_counters(&go_probe.metrics().await);
    let py_counters = loss_counters(&py_probe.metrics().await);
    go_probe.stop().await;
    py_probe.stop().await;

    // Nothing exports any more: the file's count only has to settle.
    let spans = collector
        .wait_for_spans(0, go_common::WAIT, |s| s.kind == go_common::SERVER)
        .await
        .expect("read the collector's spans");
    let go_report = check(&go_sent, &spans_per_number(&spans, "go"), &go_counters);
    let py_report = check(&py_sent, &spans_per_number(&spans, "py"), &py_counters);
    eprintln!("{go_report}\n{py_report}");
}
