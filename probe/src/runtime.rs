//! The probe process: wires config, target resolution, the language
//! front-end, the telemetry pipeline, the exporters and the `/metrics`
//! endpoint, and shuts them down in order on SIGTERM/SIGINT so that
//! nothing already observed is lost:
//! front-end stops → pipeline drains the records → span queue flushes
//! (retrying for up to the exporter timeout) → final metrics snapshot.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::RuntimeConfig;
use crate::export::client::OtlpClient;
use crate::export::queue::BoundedQueue;
use crate::export::{Backoff, run_batch_exporter, run_metrics_exporter};
use crate::frontend::{Frontend, FrontendContext};
use crate::health::Health;
use crate::profile::Profiler;
use crate::tap::SpanTap;
use crate::targets::standalone::{self, StandaloneSelector};
use crate::targets::{TargetContext, TargetSource, target_channel};
use crate::telemetry::RecordSink;
use crate::telemetry::clock::ClockOffsets;
use crate::telemetry::metrics::RedMetrics;
use crate::telemetry::pipeline::Pipeline;
use crate::telemetry::resource::ResourceRegistry;
use crate::telemetry::sampling::SpanStarter;
use crate::views::Views;

/// Records buffered between the front-end and the pipeline.
pub const RECORD_CHANNEL_CAPACITY: usize = 16_384;

/// Tokio worker threads the probe starts unless `TOKIO_WORKER_THREADS` says
/// otherwise. The probe's async work (the pipeline, the exporters, the
/// Kubernetes watches) takes a few percent of one core even under load, so
/// it does not grow with the node: tokio's default of one worker per core
/// would start 64 threads on a 64-core node, each with its own stack and
/// its own thread cache of freed memory.
pub const DEFAULT_WORKER_THREADS: usize = 2;

/// The worker count: `TOKIO_WORKER_THREADS` (`from_env`) when it is a
/// positive number (tokio reads the same variable when no count is given),
/// else [`DEFAULT_WORKER_THREADS`], never more than the CPUs the process
/// may run on (`cpus`).
pub fn worker_threads(from_env: Option<&str>, cpus: usize) -> usize {
    match from_env.and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(n) if n > 0 => n,
        _ => DEFAULT_WORKER_THREADS.min(cpus.max(1)),
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM", "Shutting down"),
        _ = int.recv() => info!(signal = "SIGINT", "Shutting down"),
    }
}

/// Runs the probe with `frontend` until `stop` resolves (normally
/// [`termination_signal`]) or the front-end returns.
pub async fn run<F: Frontend>(
    config: RuntimeConfig,
    frontend: F,
    targets: TargetSource,
    stop: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let health = Health::new();
    let resources = ResourceRegistry::new(config.resource.clone());
    let red = RedMetrics::with_health(health.clone());
    let views = Views::new(&config.probe.views);
    let clock = ClockOffsets::measure();
    let shutdown = CancellationToken::new();
    let config = Arc::new(config);

    // Profiling (off by default) runs beside the front-end on the same
    // targets; it exports OTLP profiles and serves /debug/profile.
    let profiler = if config.probe.profiling.enabled {
        let client = OtlpClient::new(config.export.profiles.clone())
            .context("setting up the OTLP profiles exporter")?;
        Some(Profiler::new(
            config.probe.profiling.clone(),
            Some(client),
            resources.clone(),
            clock,
            health.clone(),
        ))
    } else {
        None
    };

    // Both ends share the process ledger that `/debug/processes` serves.
    let (mut publisher, target_events) = target_channel();
    let tap = SpanTap::new();

    // The metrics endpoint first: a taken port fails fast.
    let mut registry = Registry::default();
    health.register(&mut registry);
    registry.register_collector(Box::new(red.clone()));
    views.register(&mut registry);
    let mut routes = axum::Router::new();
    if let Some((_, handle)) = &profiler {
        handle.metrics.register(&mut registry);
        routes = crate::profile::store::router(handle.store.clone());
    }
    let server_stop = CancellationToken::new();
    let server = if config.probe.metrics.enabled {
        let (addr, task) = crate::export::prometheus::serve(
            &config.probe.metrics.listen,
            registry,
            health.clone(),
            routes.merge(crate::export::debug::routes(
                crate::export::debug::DebugState {
                    ledger: publisher.ledger().clone(),
                    tap: tap.clone(),
                    language: config.language,
                    node: std::env::var("NODE_NAME").unwrap_or_default(),
                },
            )),
            server_stop.clone(),
        )
        .await?;
        info!(%addr, "Serving /metrics, /healthz, /readyz and /debug/processes, /debug/tap");
        Some(task)
    } else {
        None
    };

    let export = &config.export;
    let trace_client =
        OtlpClient::new(export.traces.clone()).context("setting up the OTLP trace exporter")?;
    let metrics_client =
        OtlpClient::new(export.metrics.clone()).context("setting up the OTLP metrics exporter")?;
    info!(
        traces = %export.traces.endpoint, traces_protocol = ?export.traces.protocol, traces_from = %export.traces.endpoint_source,
        metrics = %export.metrics.endpoint, metrics_protocol = ?export.metrics.protocol,
        "Exporting OTLP"
    );
    let queue = Arc::new(BoundedQueue::new(
        export.max_queue_size,
        export.max_export_batch_size,
        "traces",
        health.clone(),
    ));
    let trace_task = tokio::spawn(run_batch_exporter(
        queue.clone(),
        trace_client,
        export.scheduled_delay,
        Backoff::default(),
        export.traces.timeout,
        health.clone(),
    ));
    let metrics_stop = CancellationToken::new();
    let mut producers: Vec<Arc<dyn crate::telemetry::metrics::MetricProducer>> =
        vec![Arc::new(red.clone())];
    producers.extend(views.producers());
    let metrics_task = tokio::spawn(run_metrics_exporter(
        producers,
        metrics_client,
        export.metrics_interval,
        health.clone(),
        metrics_stop.clone(),
    ));

    let (mut sink, records) = RecordSink::channel(RECORD_CHANNEL_CAPACITY, health.clone());
    if let Some((_, handle)) = &profiler {
        sink = sink.with_span_tap(handle.spans.clone());
    }
    let pipeline = Pipeline::new(
        &config.probe.routes,
        resources.clone(),
        red.clone(),
        queue.clone(),
        clock,
        health.clone(),
    )
    .with_redaction(&config.probe.redaction)
    .with_tap(tap)
    .with_service_graph(views.service_graph());
    let pipeline = match graph_exchange(&config.probe, views.graph.is_some(), &health) {
        Some(exchange) => pipeline.with_exchange(Box::new(exchange)),
        None => pipeline,
    };
    let pipeline_task = tokio::spawn(pipeline.run(records));

    let profiler_task = match profiler {
        Some((profiler, _)) => {
            let (mirrored, profiler_targets) = publisher.mirrored();
            publisher = mirrored;
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = profiler.run(profiler_targets, stop).await {
                    error!(
                        error = format!("{e:#}"),
                        "Profiling stopped; tracing continues"
                    );
                }
            }))
        }
        None => None,
    };
    let targets_task = match targets {
        TargetSource::Standalone => {
            let t = &config.probe.targets;
            let selector = StandaloneSelector::new(&t.pids, &t.exe_paths, &t.open_ports)?;
            info!(pids = ?t.pids, exe_paths = ?t.exe_paths, open_ports = ?t.open_ports, "Selecting targets from /proc");
            let task = standalone::run(
                selector,
                "/proc".into(),
                config.rescan,
                publisher,
                resources.clone(),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                task.await;
                Ok(())
            })
        }
        TargetSource::Custom(start) => tokio::spawn(start(TargetContext {
            publisher,
            registry: resources.clone(),
            peers: views.peers.clone(),
            pods: views.pods.clone(),
            shutdown: shutdown.clone(),
        })),
    };

    let ctx = FrontendContext {
        language: config.language,
        config: Arc::new(config.probe.clone()),
        targets: target_events,
        sink,
        spans: SpanStarter::new(crate::config::sampler(&config.probe.sampler)),
        health: health.frontend(config.language),
        resources: resources.clone(),
        clock,
        shutdown: shutdown.clone(),
    };
    let views_sampler = views.start_sampler(
        crate::views::sampler::Reporter {
            language: config.language,
            covered: covered_languages(&config.probe, config.language),
            node_name: std::env::var("NODE_NAME").unwrap_or_default(),
        },
        health.clone(),
    );
    info!(language = %config.language, "Starting front-end");
    let mut frontend_task = tokio::spawn(frontend.run(ctx));

    let mut result: anyhow::Result<()> = Ok(());
    tokio::select! {
        () = stop => {}
        joined = &mut frontend_task => {
            result = flatten(joined).context("the front-end stopped");
            if let Err(e) = &result { error!(error = format!("{e:#}"), "Front-end failed"); }
        }
    }
    shutdown.cancel();
    if !frontend_task.is_finished() {
        match tokio::time::timeout(Duration::from_secs(10), &mut frontend_task).await {
            Ok(joined) => {
                if let Err(e) = flatten(joined) {
                    warn!(
                        error = format!("{e:#}"),
                        "Front-end returned an error while stopping"
                    );
                }
            }
            Err(_) => {
                warn!("Front-end did not stop within 10 s; aborting it");
                frontend_task.abort();
            }
        }
    }
    if let Some(task) = profiler_task {
        // Its last windows, then its export queue (retried up to the
        // exporter timeout while the collector fails).
        let grace = config.export.profiles.timeout + Duration::from_secs(5);
        if tokio::time::timeout(grace, task).await.is_err() {
            warn!("Profiler did not stop in time; its last profiles are lost");
        }
    }
    if let Ok(Err(e)) = targets_task.await {
        warn!(
            error = format!("{e:#}"),
            "Target discovery stopped with an error"
        );
    }
    if let Some(sampler) = views_sampler {
        sampler.stop();
    }
    // The pipeline ends when the last sink clone is dropped; a front-end
    // that leaked one must not block the exit forever.
    if tokio::time::timeout(Duration::from_secs(5), pipeline_task)
        .await
        .is_err()
    {
        warn!("Pipeline still had senders after the front-end stopped; closing the span queue");
        queue.close();
    }
    let _ = trace_task.await;
    metrics_stop.cancel();
    let _ = metrics_task.await;
    server_stop.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    info!(
        exported_spans = health.exported_total("traces"),
        dropped_spans = health.export_dropped_total("traces", "queue_full")
            + health.export_dropped_total("traces", "shutdown")
            + health.export_dropped_total("traces", "permanent_error"),
        "Stopped"
    );
    result
}

/// The languages of this probe's Instrumentation (who reports node-level
/// views when several probes share a node); just `language` standalone.
fn covered_languages(
    probe: &ferrotel_api::probe_config::ProbeConfig,
    language: ferrotel_api::probe_config::Language,
) -> Vec<ferrotel_api::probe_config::Language> {
    probe
        .instrumentation
        .as_ref()
        .and_then(|own| {
            probe
                .cluster_instrumentations
                .iter()
                .find(|c| c.namespace == own.namespace && c.name == own.name)
        })
        .map(|c| c.languages.clone())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| vec![language])
}

fn flatten(joined: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match joined {
        Ok(result) => result,
        Err(join) => Err(anyhow::anyhow!(
            "front-end task panicked or was cancelled: {join}"
        )),
    }
}

/// The service graph's node-wide exchange with the node's other probes
/// (see [`crate::telemetry::servicegraph::exchange`]), opened when the
/// service graph is on:
/// - pinned in propagation's pin directory when that is meant to be used
///   (propagation on, which is when the operator mounts the node's bpffs,
///   or `propagation.pinDir` set);
/// - else, in Kubernetes mode, found by its kernel name (no bpffs needed);
/// - else (a standalone probe without propagation) not at all.
///
/// A map that cannot be opened leaves edges across probes to the
/// single-span rule: logged, counted, never fatal.
fn graph_exchange(
    probe: &ferrotel_api::probe_config::ProbeConfig,
    graph_enabled: bool,
    health: &Health,
) -> Option<crate::telemetry::servicegraph::exchange::PinnedExchange> {
    use crate::telemetry::servicegraph::exchange::PinnedExchange;
    let propagation = &probe.propagation;
    if !graph_enabled {
        return None;
    }
    let opened = if propagation.enabled() || propagation.pin_dir.is_some() {
        let dir = std::path::PathBuf::from(
            propagation
                .pin_dir
                .as_deref()
                .unwrap_or(ferrotel_api::probe_config::PropagationConfig::DEFAULT_PIN_DIR),
        );
        PinnedExchange::open(&dir).inspect(|exchange| {
            info!(dir = %dir.display(), map_id = exchange.id(), "Exchanging service-graph connection ends with the node's other probes");
        })
    } else if probe.targets.kubernetes {
        PinnedExchange::open_by_name().inspect(|exchange| {
            info!(map_id = exchange.id(), "Exchanging service-graph connection ends with the node's other probes (map found by name, no bpffs)");
        })
    } else {
        return None;
    };
    match opened {
        Ok(exchange) => Some(exchange),
        Err(e) => {
            warn!(
                error = %e,
                "Service-graph edges between this probe's processes and another probe's are built from single spans"
            );
            health.service_graph_exchange("unavailable", 1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DEFAULT_WORKER_THREADS, worker_threads};

    #[test]
    fn the_worker_count_stays_small_on_a_big_node_unless_the_environment_asks() {
        assert_eq!(worker_threads(None, 64), DEFAULT_WORKER_THREADS);
        assert_eq!(worker_threads(None, 1), 1, "never more workers than CPUs");
        assert_eq!(worker_threads(Some("8"), 64), 8);
        assert_eq!(worker_threads(Some(" 3 "), 2), 3, "an explicit count wins");
        for ignored in ["0", "", "many", "-1"] {
            assert_eq!(
                worker_threads(Some(ignored), 64),
                DEFAULT_WORKER_THREADS,
                "{ignored:?}"
            );
        }
    }
}
